//! Sending marks without ever blocking the sender.
//!
//! A client that measures something must not be slowed by the measuring tool, so sends are
//! non-blocking: with no recorder listening the FIFO cannot be opened (`ENXIO`) and the mark
//! is dropped; with the pipe full the write fails (`EAGAIN`) and the mark is dropped and
//! counted. Each mark is one `write(2)` of at most 4096 bytes, which the kernel keeps atomic,
//! so concurrent clients never interleave.
//!
//! ```no_run
//! use flinch_core::marks::client::MarkClient;
//! let mut c = MarkClient::open_default().expect("a recorder is running");
//! c.mark("infer_start", &[("req", "42")]).unwrap();
//! ```

use super::paths::client_marks_path;
use super::{MarkParseError, format_mark};
use crate::clock::monotonic_ns;
use rustix::fs::OFlags;
use rustix::io::Errno;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Why a mark could not be sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The FIFO exists but no recorder has it open.
    #[error(
        "no recorder is listening on {0}: start one with `flinch record` (it creates and reads this FIFO)"
    )]
    NoRecorder(PathBuf),
    /// Nothing at the path.
    #[error(
        "no marks FIFO or file at {0}: start `flinch record` first, or pass --fifo/--file with the path it printed"
    )]
    NotFound(PathBuf),
    /// The path is something else (a directory, a symlink, ...).
    #[error("{0} is not a FIFO or a regular file: refusing to write marks there")]
    NotAFifo(PathBuf),
    /// The FIFO belongs to another user: a recorder's FIFO is private to the user who runs
    /// it, so this one was planted (and whoever reads it would get the marks).
    #[error(
        "FIFO {path} belongs to uid {owner}, not to you (uid {me}): refusing to send marks \
         into it; check $FLINCH_MARKS / --fifo"
    )]
    NotOurs {
        /// The path.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// This process's effective uid.
        me: u32,
    },
    /// The mark is malformed.
    #[error("invalid mark: {0}")]
    Format(#[from] MarkParseError),
    /// Another OS error.
    #[error("cannot write marks to {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// What became of a mark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendOutcome {
    /// Written whole.
    Sent,
    /// The pipe was full: dropped rather than wait.
    Dropped,
}

/// A non-blocking mark sender holding a FIFO (or marks file) open.
#[derive(Debug)]
pub struct MarkClient {
    file: File,
    path: PathBuf,
    is_fifo: bool,
    dropped: u64,
}

impl MarkClient {
    /// Opens the FIFO (or regular marks file) at `path` for non-blocking writes, never
    /// following a symlink.
    pub fn open(path: &Path) -> Result<Self, ClientError> {
        let md = std::fs::symlink_metadata(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ClientError::NotFound(path.to_owned()),
            _ => ClientError::Io {
                path: path.to_owned(),
                source: e,
            },
        })?;
        let is_fifo = md.file_type().is_fifo();
        if !is_fifo && !md.is_file() {
            return Err(ClientError::NotAFifo(path.to_owned()));
        }
        let not_ours = |owner: u32| {
            let me = rustix::process::geteuid().as_raw();
            (is_fifo && owner != me).then(|| ClientError::NotOurs {
                path: path.to_owned(),
                owner,
                me,
            })
        };
        if let Some(e) = not_ours(md.uid()) {
            return Err(e);
        }
        let file = std::fs::OpenOptions::new()
            .write(true)
            .append(!is_fifo)
            .custom_flags((OFlags::NONBLOCK | OFlags::NOFOLLOW | OFlags::CLOEXEC).bits() as i32)
            .open(path)
            .map_err(|e| match e.raw_os_error() {
                Some(c) if c == Errno::NXIO.raw_os_error() => {
                    ClientError::NoRecorder(path.to_owned())
                }
                Some(c) if c == Errno::LOOP.raw_os_error() => {
                    ClientError::NotAFifo(path.to_owned())
                }
                _ => ClientError::Io {
                    path: path.to_owned(),
                    source: e,
                },
            })?;
        // What was opened, not what the path said a moment before.
        let opened = file.metadata().map_err(|e| ClientError::Io {
            path: path.to_owned(),
            source: e,
        })?;
        if let Some(e) = not_ours(opened.uid()) {
            return Err(e);
        }
        Ok(MarkClient {
            file,
            path: path.to_owned(),
            is_fifo,
            dropped: 0,
        })
    }

    /// Opens `$FLINCH_MARKS`, or the per-user default FIFO.
    pub fn open_default() -> Result<Self, ClientError> {
        Self::open(&client_marks_path())
    }

    /// The path written to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the path is a FIFO (else an append-only file).
    pub fn is_fifo(&self) -> bool {
        self.is_fifo
    }

    /// The recorder reading this FIFO, as it describes itself next to it (its pid and
    /// trace; see [`super::owner`]). `None` for a marks file, or when no trustworthy
    /// description is there (a recorder of an older flinch, or one that just stopped).
    pub fn recorder(&self) -> Option<super::owner::RecorderInfo> {
        if !self.is_fifo {
            return None;
        }
        let md = self.file.metadata().ok()?;
        super::owner::read_recorder_info(&self.path, Some((md.dev(), md.ino())))
    }

    /// Marks dropped so far because the pipe was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Sends a mark stamped now (`t=` = `CLOCK_MONOTONIC` ns).
    pub fn mark(
        &mut self,
        label: &str,
        fields: &[(&str, &str)],
    ) -> Result<SendOutcome, ClientError> {
        let line = format_mark(label, Some(monotonic_ns()), fields)?;
        self.send_line(&line)
    }

    /// Sends a preformatted line (it must end with a newline and be at most 4096 bytes).
    pub fn send_line(&mut self, line: &str) -> Result<SendOutcome, ClientError> {
        match self.file.write(line.as_bytes()) {
            Ok(n) if n == line.len() => Ok(SendOutcome::Sent),
            Ok(n) => Err(ClientError::Io {
                path: self.path.clone(),
                source: std::io::Error::other(format!(
                    "short write of {n} of {} bytes",
                    line.len()
                )),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                self.dropped += 1;
                Ok(SendOutcome::Dropped)
            }
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                Err(ClientError::NoRecorder(self.path.clone()))
            }
            Err(e) => Err(ClientError::Io {
                path: self.path.clone(),
                source: e,
            }),
        }
    }
}

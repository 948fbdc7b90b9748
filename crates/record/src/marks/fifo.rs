//! Receiving marks through a FIFO the recorder creates.
//!
//! The FIFO is private to its user: its default home is a `0700` directory the user owns
//! (checked, never trusted), the FIFO itself is `0600`, and an existing path is reused only
//! if it is a FIFO owned by the user, not a symlink, accessible to nobody else, and nobody
//! is reading it (a FIFO left behind by a recorder that was killed is reused that way). The
//! checks are made again on what was actually opened, so a path swapped in between is
//! refused too. A recorder claims the FIFO's path before it touches it and says who it is
//! next to it ([`flinch_core::marks::owner`]), so that two recorders never read one FIFO and a client can
//! tell which recorder takes its marks. The recorder
//! holds a write end open itself, so reads never see end-of-file when clients come and go,
//! and raises the pipe buffer to 1 MiB so that bursts of marks from non-blocking clients fit
//! while the reader catches up.

use flinch_core::clock::Clock;
use flinch_core::error::{Error, Result};
use flinch_core::marks::{Line, LineSplitter, MarkSink, MarkVia, deliver_line};
use rustix::event::{PollFd, PollFlags, poll};
use rustix::fs::{FileType, Mode, OFlags};
use rustix::io::Errno;
use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Makes sure `dir` is a directory owned by this user that nobody else can enter: creates it
/// `0700` if missing; refuses a symlink, another owner, or group/other permissions.
pub fn ensure_private_dir(dir: &Path) -> Result<()> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io("cannot create the marks directory", dir, e)),
    }
    let md = std::fs::symlink_metadata(dir)
        .map_err(|e| Error::io("cannot inspect the marks directory", dir, e))?;
    if md.file_type().is_symlink() || !md.is_dir() {
        return Err(Error::Invalid(format!(
            "{} is not a plain directory (a symlink or a file): refusing to use it for the marks \
             FIFO; remove it or pass --marks-fifo PATH",
            dir.display()
        )));
    }
    if md.uid() != euid() {
        return Err(Error::Invalid(format!(
            "{} belongs to uid {}, not to you (uid {}): another user could read or plant marks \
             there; remove it or pass --marks-fifo PATH in a directory you own",
            dir.display(),
            md.uid(),
            euid()
        )));
    }
    if md.mode() & 0o077 != 0 {
        return Err(Error::Invalid(format!(
            "{} has mode {:o}: other users can reach it; run `chmod 700 {}` or pass --marks-fifo PATH",
            dir.display(),
            md.mode() & 0o777,
            dir.display()
        )));
    }
    Ok(())
}

fn check_fifo_metadata(path: &Path, md: &std::fs::Metadata) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    if md.file_type().is_symlink() {
        return Err(Error::Invalid(format!(
            "{} is a symlink: refusing to follow it for the marks FIFO; remove it or choose another path",
            path.display()
        )));
    }
    if !md.file_type().is_fifo() {
        return Err(Error::Invalid(format!(
            "{} exists and is not a FIFO: refusing to use it for marks; remove it or choose another path",
            path.display()
        )));
    }
    if md.uid() != euid() {
        return Err(Error::Invalid(format!(
            "FIFO {} belongs to uid {}, not to you (uid {}): refusing it; remove it or choose another path",
            path.display(),
            md.uid(),
            euid()
        )));
    }
    if md.mode() & 0o077 != 0 {
        // Another user may already hold it open (a reader steals marks, a writer plants
        // them), and changing the mode now would not close what they opened.
        return Err(Error::Invalid(format!(
            "FIFO {} has mode {:o}: other users may have opened it; remove it (`rm {}`) so \
             that flinch creates a private one, or choose another path",
            path.display(),
            md.mode() & 0o777,
            path.display()
        )));
    }
    Ok(())
}

/// Opens a path for writing without following a symlink, without blocking and without
/// creating it.
fn open_write_nonblocking(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags((OFlags::NONBLOCK | OFlags::NOFOLLOW | OFlags::CLOEXEC).bits() as i32)
        .open(path)
}

/// Creates (or validates and reuses) the FIFO at `path`. Returns whether it was created.
fn prepare_fifo(path: &Path) -> Result<bool> {
    match std::fs::symlink_metadata(path) {
        Ok(md) => {
            check_fifo_metadata(path, &md)?;
            // Is somebody (another recorder) reading it? A non-blocking open for writing
            // succeeds only if a reader exists.
            match open_write_nonblocking(path) {
                Ok(_) => Err(Error::Invalid(format!(
                    "another recorder is already listening on {}; stop it or pass --marks-fifo \
                     with another path",
                    path.display()
                ))),
                Err(e) if e.raw_os_error() == Some(Errno::NXIO.raw_os_error()) => Ok(false),
                Err(e) => Err(Error::io("cannot probe the marks FIFO", path, e)),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            rustix::fs::mknodat(
                rustix::fs::CWD,
                path,
                FileType::Fifo,
                Mode::from_raw_mode(0o600),
                0,
            )
            .map_err(|e| Error::io("cannot create the marks FIFO", path, e.into()))?;
            Ok(true)
        }
        Err(e) => Err(Error::io("cannot inspect the marks FIFO path", path, e)),
    }
}

/// The receiving end of a marks FIFO, read by a thread of its own.
pub struct FifoReceiver {
    path: PathBuf,
    claim: Option<flinch_core::marks::owner::FifoClaim>,
    created: bool,
    stale: Option<(u64, u64)>,
    stop: Arc<AtomicBool>,
    /// Written to on stop: wakes the reader, which otherwise sleeps until a mark comes.
    wake: Option<std::os::fd::OwnedFd>,
    thread: Option<JoinHandle<()>>,
}

impl FifoReceiver {
    /// Creates or validates the FIFO at `path` (see the module docs), then reads marks from
    /// it on a thread, passing each line to `sink` stamped with `clock`.
    pub fn start(path: &Path, clock: Arc<dyn Clock>, sink: MarkSink) -> Result<Self> {
        let mut claim = flinch_core::marks::owner::FifoClaim::acquire(path)?;
        let created = prepare_fifo(path)?;
        let cleanup = |e: Error| {
            if created {
                let _ = std::fs::remove_file(path);
            }
            e
        };
        let read = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags((OFlags::NONBLOCK | OFlags::NOFOLLOW | OFlags::CLOEXEC).bits() as i32)
            .open(path)
            .map_err(|e| cleanup(Error::io("cannot open the marks FIFO", path, e)))?;
        // What an earlier recorder left unread, counted first thing: from this open on,
        // new clients can write too. A FIFO just created holds nothing old.
        let stale_bytes = if created {
            0
        } else {
            rustix::io::ioctl_fionread(&read).unwrap_or(0)
        };
        // Check what was actually opened, not what the path said a moment ago.
        let md = read
            .metadata()
            .map_err(|e| cleanup(Error::io("cannot inspect the marks FIFO", path, e)))?;
        check_fifo_metadata(path, &md).map_err(cleanup)?;
        let keepalive = open_write_nonblocking(path)
            .map_err(|e| cleanup(Error::io("cannot hold the marks FIFO open", path, e)))?;
        let kmd = keepalive
            .metadata()
            .map_err(|e| cleanup(Error::io("cannot inspect the marks FIFO", path, e)))?;
        if (kmd.dev(), kmd.ino()) != (md.dev(), md.ino()) {
            return Err(cleanup(Error::Invalid(format!(
                "{} was replaced while being opened; refusing it",
                path.display()
            ))));
        }
        // Room for bursts: 1 MiB is the unprivileged maximum by default.
        for size in [1 << 20, 256 << 10] {
            if rustix::pipe::fcntl_setpipe_size(&read, size).is_ok() {
                break;
            }
        }
        let stale = discard_stale(&read, stale_bytes);
        claim.publish(path, None).map_err(cleanup)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let (wake_r, wake_w) = rustix::pipe::pipe_with(
            rustix::pipe::PipeFlags::CLOEXEC | rustix::pipe::PipeFlags::NONBLOCK,
        )
        .map_err(|e| {
            cleanup(Error::io(
                "cannot create a wake-up pipe for",
                path,
                e.into(),
            ))
        })?;
        let thread = std::thread::Builder::new()
            .name("flinch-marks-fifo".into())
            .spawn(move || read_loop(read, keepalive, wake_r, stop2, clock, sink))
            .map_err(|e| cleanup(Error::io("cannot start the marks reader for", path, e)))?;
        Ok(FifoReceiver {
            path: path.to_owned(),
            claim: Some(claim),
            created,
            stale,
            stop,
            wake: Some(wake_w),
            thread: Some(thread),
        })
    }

    /// The FIFO's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Says, next to the FIFO, that this recorder writes `trace` (see [`flinch_core::marks::owner`]).
    pub fn publish_trace(&mut self, trace: &Path) -> Result<()> {
        match &mut self.claim {
            Some(c) => c.publish(&self.path, Some(trace)),
            None => Ok(()),
        }
    }

    /// `(bytes, lines)` found in the FIFO when this receiver opened it, and discarded.
    ///
    /// A pipe keeps its data while any writer holds it open, so marks sent to an earlier
    /// recorder that stopped reading (it was frozen, then killed) wait in a reused FIFO.
    /// They were never received by any recording and predate this one, so they are
    /// discarded, as the marks file's old content is, and the recording says how much.
    pub fn stale_discarded(&self) -> Option<(u64, u64)> {
        self.stale
    }

    /// Stops reading: everything written before this call is read and delivered first.
    /// Removes the FIFO if this receiver created it.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(w) = self.wake.take() {
            let _ = rustix::io::write(&w, &[1]);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if self.created {
            let _ = std::fs::remove_file(&self.path);
            self.created = false;
        }
        self.claim = None;
    }
}

impl Drop for FifoReceiver {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Reads and drops the `left` bytes that were in the pipe when it was opened (counted right
/// after the open: a client that opened the FIFO and wrote within the microseconds between
/// the two calls would see its line counted as stale, which only a client polling for the
/// recorder's start can do).
fn discard_stale(read: &File, mut left: u64) -> Option<(u64, u64)> {
    if left == 0 {
        return None;
    }
    let (total, mut lines) = (left, 0u64);
    let mut buf = vec![0u8; 64 * 1024];
    while left > 0 {
        let want = buf.len().min(left as usize);
        match rustix::io::read(read.as_fd(), &mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => {
                lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
                left -= n as u64;
            }
            Err(Errno::INTR) => continue,
            Err(_) => break,
        }
    }
    Some((total - left, lines))
}

fn read_loop(
    read: File,
    _keepalive: File,
    wake: std::os::fd::OwnedFd,
    stop: Arc<AtomicBool>,
    clock: Arc<dyn Clock>,
    sink: MarkSink,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut splitter = LineSplitter::default();
    // Sleeps until a mark or the stop comes: no periodic wake-ups while the FIFO is quiet.
    // A second's timeout only guards against a lost wake-up.
    let timeout = rustix::time::Timespec {
        tv_sec: 1,
        tv_nsec: 0,
    };
    loop {
        // Read the flag before draining, so that everything written before stop() is read.
        let stopping = stop.load(Ordering::SeqCst);
        if !stopping {
            let mut fds = [
                PollFd::new(&read, PollFlags::IN),
                PollFd::new(&wake, PollFlags::IN),
            ];
            match poll(&mut fds, Some(&timeout)) {
                Ok(_) | Err(Errno::INTR) => {}
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
            }
        }
        loop {
            match rustix::io::read(read.as_fd(), &mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let now = clock.now_ns();
                    splitter.feed(&buf[..n], |line| deliver(&sink, line, now));
                }
                Err(Errno::INTR) => continue,
                Err(_) => break, // EAGAIN: drained
            }
        }
        if stopping {
            let now = clock.now_ns();
            splitter.finish(|line| deliver(&sink, line, now));
            return;
        }
    }
}

fn deliver(sink: &MarkSink, line: Line<'_>, now: u64) {
    deliver_line(sink, line, now, MarkVia::Fifo)
}

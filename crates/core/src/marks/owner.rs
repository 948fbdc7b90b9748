//! Which recorder reads a marks FIFO: published by the recorder next to its FIFO, read by
//! clients, so that a mark never lands in a recorder the user did not mean silently.
//!
//! A recorder holds `<fifo>.recorder` open with an exclusive `flock` for as long as it reads
//! the FIFO, and writes into it one JSON object ([`RecorderInfo`]): its pid, the trace it
//! writes, and the FIFO's device and inode. The file is created `0600` (readable by its
//! owner only: a trace path can say what someone works on), never through a symlink, and
//! removed when the recorder stops. The lock is what makes a FIFO taken: a second recorder
//! asking for the same path (two recordings started with the per-user default, say) is
//! refused at once with the first one's pid and trace, even when both start in the same
//! instant, instead of both reading the same pipe and splitting the marks between them.
//!
//! A client ([`read_recorder_info`], `flinch mark`, the Python client's `Marks.recorder()`)
//! trusts the file only if it belongs to the user, describes the very FIFO it opened
//! (device and inode), and names a live process.
//!
//! ```no_run
//! use flinch_core::marks::owner::read_recorder_info;
//! use std::path::Path;
//! if let Some(r) = read_recorder_info(Path::new("/run/user/1000/flinch/marks.fifo"), None) {
//!     println!("marks go to pid {} writing {}", r.pid, r.trace.as_deref().unwrap_or("?"));
//! }
//! ```

use crate::error::{Error, Result};
use rustix::fs::{FlockOperation, OFlags};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// What a recorder publishes about itself next to its FIFO.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecorderInfo {
    /// The recorder's process id.
    pub pid: u32,
    /// The trace it writes (absolute when it could be made so); `None` while starting.
    pub trace: Option<String>,
    /// The FIFO it reads.
    pub fifo: String,
    /// The FIFO's device number, to tell a stale file from a current one.
    pub fifo_dev: u64,
    /// The FIFO's inode number.
    pub fifo_ino: u64,
}

/// The path of the file describing the recorder that reads `fifo`: `<fifo>.recorder`.
pub fn info_path(fifo: &Path) -> PathBuf {
    let mut s = fifo.as_os_str().to_owned();
    s.push(".recorder");
    PathBuf::from(s)
}

fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

fn pid_alive(pid: u32) -> bool {
    match rustix::process::Pid::from_raw(pid as i32) {
        Some(p) => match rustix::process::test_kill_process(p) {
            Ok(()) => true,
            Err(e) => e == Errno::PERM,
        },
        None => false,
    }
}

fn open_nofollow(path: &Path, create: bool) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(create)
        .create(create)
        .mode(0o600)
        .custom_flags((OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK).bits() as i32)
        .open(path)
}

fn read_info(f: &mut File) -> Option<RecorderInfo> {
    let mut text = String::new();
    f.seek(std::io::SeekFrom::Start(0)).ok()?;
    f.take(64 * 1024).read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}

/// Reads the recorder description next to `fifo`, if one is there that can be trusted: a
/// regular file owned by this user, not a symlink, naming a live process and, when
/// `opened` (the `(dev, ino)` of the FIFO the caller opened) is given, that very FIFO.
pub fn read_recorder_info(fifo: &Path, opened: Option<(u64, u64)>) -> Option<RecorderInfo> {
    let path = info_path(fifo);
    let mut f = open_nofollow(&path, false).ok()?;
    let md = f.metadata().ok()?;
    if !md.is_file() || md.uid() != euid() {
        return None;
    }
    let info = read_info(&mut f)?;
    if let Some((dev, ino)) = opened
        && (info.fifo_dev, info.fifo_ino) != (dev, ino)
    {
        return None;
    }
    pid_alive(info.pid).then_some(info)
}

/// The claim a recorder holds on a FIFO path while it reads it (see the module docs). The
/// description file is removed when this is dropped.
#[derive(Debug)]
pub struct FifoClaim {
    file: File,
    path: PathBuf,
}

impl FifoClaim {
    /// Claims `fifo` for this process: creates (or reuses) `<fifo>.recorder`, private to
    /// this user, and locks it. Refused, naming the holder, while another recorder holds
    /// it.
    pub fn acquire(fifo: &Path) -> Result<Self> {
        let path = info_path(fifo);
        // A file removed by its holder between our open and our lock is not the claim any
        // more: open again (the usual lock-file dance). Bounded, in case of a pathological
        // race.
        for _ in 0..16 {
            let mut file = open_nofollow(&path, true).map_err(|e| {
                if e.raw_os_error() == Some(Errno::LOOP.raw_os_error()) {
                    Error::Invalid(format!(
                        "{} is a symlink: refusing to follow it; remove it or choose another \
                         --marks-fifo path",
                        path.display()
                    ))
                } else {
                    Error::io("cannot create the recorder file", &path, e)
                }
            })?;
            let md = file
                .metadata()
                .map_err(|e| Error::io("cannot inspect", &path, e))?;
            if !md.is_file() || md.uid() != euid() || md.mode() & 0o077 != 0 {
                return Err(Error::Invalid(format!(
                    "{} is not a private file of yours (uid {}, mode {:o}): another user could \
                     read or fake which recorder takes the marks; remove it or choose another \
                     --marks-fifo path",
                    path.display(),
                    md.uid(),
                    md.mode() & 0o7777
                )));
            }
            match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {}
                Err(Errno::WOULDBLOCK) => {
                    let holder = match read_info(&mut file) {
                        Some(i) => format!(
                            "recorder pid {} (writing {})",
                            i.pid,
                            i.trace.as_deref().unwrap_or("a trace it has not named yet")
                        ),
                        None => "another recorder (it is starting)".to_owned(),
                    };
                    return Err(Error::Invalid(format!(
                        "{holder} is already reading marks from {}: two recorders on one FIFO \
                         would split the marks between them; stop it, or give this recording a \
                         FIFO of its own with --marks-fifo PATH",
                        fifo.display()
                    )));
                }
                Err(e) => return Err(Error::io("cannot lock", &path, e.into())),
            }
            match std::fs::symlink_metadata(&path) {
                Ok(now) if (now.dev(), now.ino()) == (md.dev(), md.ino()) => {
                    file.set_len(0)
                        .map_err(|e| Error::io("cannot write", &path, e))?;
                    return Ok(FifoClaim { file, path });
                }
                _ => continue,
            }
        }
        Err(Error::Invalid(format!(
            "{} keeps being replaced: cannot claim the marks FIFO",
            path.display()
        )))
    }

    /// Publishes which recorder this is: this process, the trace `trace`, and the FIFO
    /// (by its device and inode).
    pub fn publish(&mut self, fifo: &Path, trace: Option<&Path>) -> Result<()> {
        let md = std::fs::symlink_metadata(fifo)
            .map_err(|e| Error::io("cannot inspect the marks FIFO", fifo, e))?;
        let abs = |p: &Path| {
            std::path::absolute(p)
                .unwrap_or_else(|_| p.to_owned())
                .display()
                .to_string()
        };
        let info = RecorderInfo {
            pid: std::process::id(),
            trace: trace.map(abs),
            fifo: abs(fifo),
            fifo_dev: md.dev(),
            fifo_ino: md.ino(),
        };
        let json = serde_json::to_string(&info).map_err(|e| Error::Invalid(e.to_string()))?;
        let w = (|| -> std::io::Result<()> {
            self.file.set_len(0)?;
            self.file.seek(std::io::SeekFrom::Start(0))?;
            self.file.write_all(json.as_bytes())?;
            self.file.write_all(b"\n")
        })();
        w.map_err(|e| Error::io("cannot write", &self.path, e))
    }

    /// The description file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for FifoClaim {
    fn drop(&mut self) {
        // Removed while still locked, and only if the path is still our file.
        if let (Ok(ours), Ok(now)) = (self.file.metadata(), std::fs::symlink_metadata(&self.path))
            && (ours.dev(), ours.ino()) == (now.dev(), now.ino())
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_is_exclusive_names_its_holder_and_is_removed_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("marks.fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let mut a = FifoClaim::acquire(&fifo).unwrap();
        let e = FifoClaim::acquire(&fifo).unwrap_err().to_string();
        assert!(e.contains("is starting"), "{e}");
        a.publish(&fifo, Some(Path::new("run.flinch.csv"))).unwrap();
        let e = FifoClaim::acquire(&fifo).unwrap_err().to_string();
        assert!(
            e.contains(&format!("recorder pid {} (writing /", std::process::id())),
            "{e}"
        );
        assert!(e.contains("run.flinch.csv"), "{e}");
        let md = std::fs::metadata(a.path()).unwrap();
        assert_eq!(md.mode() & 0o777, 0o600);

        let ino = std::fs::metadata(&fifo).unwrap().ino();
        let dev = std::fs::metadata(&fifo).unwrap().dev();
        let r = read_recorder_info(&fifo, Some((dev, ino))).unwrap();
        assert_eq!(r.pid, std::process::id());
        assert!(r.trace.unwrap().ends_with("/run.flinch.csv"));
        // A description of another FIFO (a stale file) is not trusted.
        assert!(read_recorder_info(&fifo, Some((dev, ino + 1))).is_none());

        drop(a);
        assert!(!info_path(&fifo).exists());
        assert!(read_recorder_info(&fifo, None).is_none());
        let _b = FifoClaim::acquire(&fifo).unwrap();
    }

    #[test]
    fn a_symlink_or_a_shared_file_is_never_used() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("marks.fifo");
        std::fs::write(dir.path().join("victim"), "keep").unwrap();
        std::os::unix::fs::symlink(dir.path().join("victim"), info_path(&fifo)).unwrap();
        let e = FifoClaim::acquire(&fifo).unwrap_err().to_string();
        assert!(e.contains("is a symlink"), "{e}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("victim")).unwrap(),
            "keep"
        );
        std::fs::remove_file(info_path(&fifo)).unwrap();
        std::fs::write(info_path(&fifo), "").unwrap();
        std::fs::set_permissions(
            info_path(&fifo),
            std::os::unix::fs::PermissionsExt::from_mode(0o644),
        )
        .unwrap();
        let e = FifoClaim::acquire(&fifo).unwrap_err().to_string();
        assert!(e.contains("not a private file"), "{e}");
    }

    #[test]
    fn a_dead_recorders_description_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("marks.fifo");
        let info = RecorderInfo {
            pid: i32::MAX as u32, // no such process
            trace: Some("/x.flinch.csv".into()),
            fifo: fifo.display().to_string(),
            fifo_dev: 0,
            fifo_ino: 0,
        };
        std::fs::write(info_path(&fifo), serde_json::to_string(&info).unwrap()).unwrap();
        assert!(read_recorder_info(&fifo, None).is_none());
    }
}

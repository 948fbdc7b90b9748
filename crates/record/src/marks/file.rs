//! Receiving marks from a plain file that clients append to (portable: works where a FIFO
//! cannot be shared, e.g. across a bind mount or from a language without non-blocking I/O).
//!
//! The recorder tails the file from its end at the time the recording starts (so old marks
//! of an earlier run are not taken as new), every 10 ms. A line is taken only once its
//! newline has arrived. If the file shrinks (someone truncated it) reading restarts from the
//! beginning and the event is reported.

use flinch_core::clock::Clock;
use flinch_core::error::{Error, Result};
use flinch_core::marks::deliver_line;
use flinch_core::marks::{LineSplitter, MarkEvent, MarkParseError, MarkSink, MarkVia};
use rustix::fs::OFlags;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// Tails a marks file on a thread of its own.
pub struct FileReceiver {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FileReceiver {
    /// Opens (creating it `0600` if missing, never through a symlink) and tails `path`.
    pub fn start(path: &Path, clock: Arc<dyn Clock>, sink: MarkSink) -> Result<Self> {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags((OFlags::NOFOLLOW | OFlags::CLOEXEC).bits() as i32)
            .open(path)
            .map_err(|e| {
                if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
                    Error::Invalid(format!(
                        "marks file {} is a symlink: refusing to follow it; pass the real path",
                        path.display()
                    ))
                } else {
                    Error::io("cannot open the marks file", path, e)
                }
            })?;
        let md = file
            .metadata()
            .map_err(|e| Error::io("cannot inspect the marks file", path, e))?;
        if !md.is_file() {
            return Err(Error::Invalid(format!(
                "marks file {} is not a regular file; pass a regular file (or use --marks-fifo for a FIFO)",
                path.display()
            )));
        }
        let start = file
            .seek(SeekFrom::End(0))
            .map_err(|e| Error::io("cannot seek the marks file", path, e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("flinch-marks-file".into())
            .spawn(move || tail_loop(file, start, stop2, clock, sink))
            .map_err(|e| Error::io("cannot start the marks reader for", path, e))?;
        Ok(FileReceiver {
            path: path.to_owned(),
            stop,
            thread: Some(thread),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops tailing after a last read of everything appended so far.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for FileReceiver {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn tail_loop(
    mut file: File,
    mut offset: u64,
    stop: Arc<AtomicBool>,
    clock: Arc<dyn Clock>,
    sink: MarkSink,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut splitter = LineSplitter::default();
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        if let Ok(md) = file.metadata()
            && md.len() < offset
        {
            // Truncated under us: start again from the top.
            sink(MarkEvent::Bad {
                via: MarkVia::File,
                recv_ns: clock.now_ns(),
                line: format!("<file truncated from {offset} to {} bytes>", md.len()),
                error: MarkParseError::Empty,
            });
            offset = 0;
            splitter = LineSplitter::default();
            let _ = file.seek(SeekFrom::Start(0));
        }
        loop {
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    offset += n as u64;
                    let now = clock.now_ns();
                    splitter.feed(&buf[..n], |line| {
                        deliver_line(&sink, line, now, MarkVia::File)
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        if stopping {
            // An unfinished last line is left alone: its writer may still be writing it.
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

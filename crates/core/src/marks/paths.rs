//! Where marks go: the environment variable a wrapped command reads, and the per-user default
//! FIFO path shared by recorders and clients.

use std::path::{Path, PathBuf};

/// The environment variable holding the marks path for clients (set by `flinch record` for
/// the wrapped command, read by `flinch mark` and the Python client).
pub const MARKS_ENV: &str = "FLINCH_MARKS";

/// The per-user directory the default FIFO lives in: `$XDG_RUNTIME_DIR/flinch` when that is
/// set (systemd makes it `0700` per user), else `/tmp/flinch-<uid>`.
pub fn default_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() && Path::new(&d).is_absolute() => Path::new(&d).join("flinch"),
        _ => PathBuf::from(format!(
            "/tmp/flinch-{}",
            rustix::process::geteuid().as_raw()
        )),
    }
}

/// The default FIFO path: `<default_dir>/marks.fifo`.
pub fn default_fifo_path() -> PathBuf {
    default_dir().join("marks.fifo")
}

/// Where a client should send marks: `$FLINCH_MARKS` if set, else the per-user default FIFO.
pub fn client_marks_path() -> PathBuf {
    match std::env::var_os(MARKS_ENV) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => default_fifo_path(),
    }
}

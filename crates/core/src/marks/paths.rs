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

/// Every place a client may look for the per-user default FIFO, the current default first:
/// `$XDG_RUNTIME_DIR/flinch/marks.fifo` (when set), systemd's `/run/user/<uid>/flinch/marks.fifo`
/// and `/tmp/flinch-<uid>/marks.fifo`. A client started without `XDG_RUNTIME_DIR` (cron, ssh
/// without a login session, sudo) uses the last one while a recorder started in a desktop
/// session uses the first.
pub fn default_fifo_candidates() -> Vec<PathBuf> {
    let uid = rustix::process::geteuid().as_raw();
    let mut v = vec![default_fifo_path()];
    for p in [
        PathBuf::from(format!("/run/user/{uid}/flinch/marks.fifo")),
        PathBuf::from(format!("/tmp/flinch-{uid}/marks.fifo")),
    ] {
        if !v.contains(&p) {
            v.push(p);
        }
    }
    v
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

//! The error kinds a caller acts on, shared by every backend.
//!
//! Each backend keeps its own detailed error and maps it into a [`SourceError`] with one of
//! the few [`ErrorKind`]s below: whether the hardware or library is absent, permission is
//! missing, a feature is not supported, the device was lost, or the failure is transient.
//! Whether to retry is data on the error, not a guess by the caller.

use std::fmt;
use std::path::PathBuf;

/// The kind of a source failure, chosen for what the caller does about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The library, driver, sysfs tree or device is not present on this machine.
    NotAvailable,
    /// Present, but this user may not read it.
    PermissionDenied,
    /// Present, but this device or driver does not offer the requested reading.
    NotSupported,
    /// The device disappeared while in use (GPU fell off the bus, file vanished).
    Lost,
    /// A failure worth retrying on the next poll.
    Transient,
    /// The caller's input (a path, an option) is wrong.
    InvalidInput,
    /// Anything else.
    Other,
}

impl ErrorKind {
    /// Short name, as written in traces (`gap` rows) and JSON.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::NotAvailable => "not-available",
            ErrorKind::PermissionDenied => "permission-denied",
            ErrorKind::NotSupported => "not-supported",
            ErrorKind::Lost => "lost",
            ErrorKind::Transient => "transient",
            ErrorKind::InvalidInput => "invalid-input",
            ErrorKind::Other => "other",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A failure of a source or backend: a kind, the backend's name and a message that says
/// what happened and what to do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{backend}: {message}")]
pub struct SourceError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// The backend (`nvml`, `rapl`, ...) that failed.
    pub backend: String,
    /// What happened and what to do about it.
    pub message: String,
    /// Whether polling again may succeed.
    pub retryable: bool,
}

impl SourceError {
    /// A new error; `retryable` defaults to true for `Transient` and `Lost` (a lost device
    /// may come back after a driver reload), false otherwise.
    pub fn new(kind: ErrorKind, backend: impl Into<String>, message: impl Into<String>) -> Self {
        SourceError {
            kind,
            backend: backend.into(),
            message: message.into(),
            retryable: matches!(kind, ErrorKind::Transient | ErrorKind::Lost),
        }
    }
    /// Overrides whether the failure is worth retrying.
    pub fn with_retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }
}

/// Errors of the core library's own work (traces, marks, recording).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done ("cannot create trace", ...).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A trace could not be parsed.
    #[error("{path}:{line}: {message}")]
    TraceParse {
        /// The trace file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// What is wrong and what to do.
        message: String,
    },
    /// A source failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Invalid configuration or arguments.
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// An I/O error with the file and what was being attempted.
    pub fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            what,
            path: path.into(),
            source,
        }
    }
}

/// Result with the core [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

//! The error kinds a caller acts on, shared by every backend.
//!
//! Each backend keeps its own detailed error and maps it into a [`SourceError`] with one of
//! the few [`ErrorKind`]s below: whether the hardware or library is absent, permission is
//! missing, a feature is not supported, the device was lost, or the failure is transient.
//! Whether to retry is data on the error, not a guess by the caller.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

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

/// A failure of a source or backend: a kind, the backend's name, a message that says what
/// happened and what to do, and the underlying error when there is one (kept as the
/// [`std::error::Error::source`] chain, shared so that the error stays `Clone`).
#[derive(Clone, Debug)]
pub struct SourceError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// The backend (`nvml`, `rapl`, ...) that failed.
    pub backend: String,
    /// What happened and what to do about it.
    pub message: String,
    /// Whether polling again may succeed.
    pub retryable: bool,
    /// The underlying error, if any.
    pub cause: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.backend, self.message)
    }
}

impl std::error::Error for SourceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Equal when kind, backend, message and retryability are (the cause is not compared).
impl PartialEq for SourceError {
    fn eq(&self, o: &Self) -> bool {
        self.kind == o.kind
            && self.backend == o.backend
            && self.message == o.message
            && self.retryable == o.retryable
    }
}

impl Eq for SourceError {}

impl SourceError {
    /// A new error; `retryable` defaults to true for `Transient` and `Lost` (a lost device
    /// may come back after a driver reload), false otherwise.
    pub fn new(kind: ErrorKind, backend: impl Into<String>, message: impl Into<String>) -> Self {
        SourceError {
            kind,
            backend: backend.into(),
            message: message.into(),
            retryable: matches!(kind, ErrorKind::Transient | ErrorKind::Lost),
            cause: None,
        }
    }
    /// Overrides whether the failure is worth retrying.
    pub fn with_retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }
    /// Keeps the underlying error as this one's source.
    pub fn with_cause(mut self, cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.cause = Some(Arc::new(cause));
        self
    }
}

/// Writes an error and its whole [`source`](std::error::Error::source) chain on one line:
/// `outer: inner: innermost`, skipping a cause whose text the outer message already ends
/// with.
pub fn display_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.ends_with(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cause_travels_as_the_source_chain() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no /proc/stat");
        let e = SourceError::new(ErrorKind::NotAvailable, "cpu", "cannot read host CPU time")
            .with_cause(io);
        let c = e.clone();
        assert_eq!(c, e);
        assert_eq!(
            std::error::Error::source(&c).map(|s| s.to_string()),
            Some("no /proc/stat".to_owned())
        );
        let wrapped = Error::Source(c);
        assert_eq!(
            display_chain(&wrapped),
            "cpu: cannot read host CPU time: no /proc/stat"
        );
    }
}

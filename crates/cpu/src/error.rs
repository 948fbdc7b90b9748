//! The CPU backend's errors.

use flinch_core::{ErrorKind, SourceError};
use procfs::ProcError;

/// A failure reading CPU time through procfs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CpuError {
    /// A procfs file could not be read.
    #[error("cannot read {what}{}", hint(.source))]
    Read {
        /// What was being read (`/proc/stat`, `the process tree`).
        what: String,
        /// What procfs said.
        #[source]
        source: ProcError,
    },
    /// The process to follow does not exist.
    #[error("process {pid} does not exist: give the pid of a running process")]
    NoSuchProcess {
        /// The pid asked for.
        pid: u32,
        /// What procfs said.
        #[source]
        source: ProcError,
    },
    /// A number that cannot be a pid.
    #[error("{pid} is not a process id")]
    BadPid {
        /// The number given.
        pid: u32,
    },
}

fn hint(e: &ProcError) -> &'static str {
    match e {
        ProcError::PermissionDenied(_) => {
            " (permission denied: run as the process's owner or as root)"
        }
        _ => "",
    }
}

impl CpuError {
    pub(crate) fn read(what: &str, source: ProcError) -> Self {
        CpuError::Read {
            what: what.to_owned(),
            source,
        }
    }

    /// What a caller does about it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            CpuError::Read { source, .. } => match source {
                ProcError::PermissionDenied(_) => ErrorKind::PermissionDenied,
                ProcError::NotFound(_) => ErrorKind::NotAvailable,
                ProcError::Incomplete(_) | ProcError::Io(..) => ErrorKind::Transient,
                _ => ErrorKind::Other,
            },
            CpuError::NoSuchProcess { .. } | CpuError::BadPid { .. } => ErrorKind::InvalidInput,
        }
    }
}

impl From<CpuError> for SourceError {
    fn from(e: CpuError) -> Self {
        SourceError::new(e.kind(), crate::BACKEND, e.to_string()).with_cause(e)
    }
}

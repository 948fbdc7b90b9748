//! NVML errors mapped onto the core's error kinds, with messages that say what to do.

use flinch_core::{ErrorKind, SourceError};
use nvml_wrapper::error::NvmlError as WrapperError;
use std::path::{Path, PathBuf};

/// The library name loaded by default.
pub const NVML_LIB: &str = "libnvidia-ml.so.1";

/// A failure of the NVML backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NvmlError {
    /// An NVML call failed.
    #[error("{hint}")]
    Call {
        /// What kind of failure, for the caller.
        kind: ErrorKind,
        /// What happened and what to do.
        hint: String,
        /// What NVML said.
        #[source]
        source: WrapperError,
    },
    /// `--nvml-lib` names a file that does not exist.
    #[error(
        "--nvml-lib {}: no such file; point it at {NVML_LIB} (e.g. /usr/lib/x86_64-linux-gnu/{NVML_LIB})",
        path.display()
    )]
    MissingLibrary {
        /// The path given.
        path: PathBuf,
    },
}

impl NvmlError {
    /// What a caller does about it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            NvmlError::Call { kind, .. } => *kind,
            NvmlError::MissingLibrary { .. } => ErrorKind::NotAvailable,
        }
    }

    /// An NVML error from `what` (the call that failed), with what to do about it.
    pub fn call(e: WrapperError, what: &str) -> Self {
        let (kind, hint) = match &e {
            WrapperError::LibloadingError(_) | WrapperError::LibraryNotFound => (
                ErrorKind::NotAvailable,
                format!(
                    "cannot load {NVML_LIB}: the NVIDIA driver is not installed here (it provides \
                     {NVML_LIB}); install it, or pass --nvml-lib PATH if the library is elsewhere"
                ),
            ),
            WrapperError::FailedToLoadSymbol(s) => (
                ErrorKind::NotAvailable,
                format!("{NVML_LIB} lacks symbol {s}: the NVIDIA driver is too old for flinch"),
            ),
            WrapperError::DriverNotLoaded => (
                ErrorKind::NotAvailable,
                "the NVIDIA kernel driver is not loaded (no GPU, or `modprobe nvidia` needed)"
                    .into(),
            ),
            WrapperError::NoPermission => (
                ErrorKind::PermissionDenied,
                format!("{what}: no permission (run as a user allowed to query the GPU)"),
            ),
            WrapperError::NotSupported => (
                ErrorKind::NotSupported,
                format!("{what}: not supported by this GPU or driver"),
            ),
            WrapperError::FunctionNotFound => (
                ErrorKind::NotSupported,
                format!("{what}: this driver's NVML lacks the function"),
            ),
            WrapperError::GpuLost => (
                ErrorKind::Lost,
                format!(
                    "{what}: the GPU is lost (fell off the bus or was reset); recording goes on without it"
                ),
            ),
            WrapperError::ResetRequired => {
                (ErrorKind::Lost, format!("{what}: the GPU needs a reset"))
            }
            WrapperError::Timeout | WrapperError::InUse | WrapperError::NoData => {
                (ErrorKind::Transient, what.to_owned())
            }
            WrapperError::Uninitialized => (
                ErrorKind::NotAvailable,
                format!("{what}: NVML is not initialised"),
            ),
            _ => (ErrorKind::Other, what.to_owned()),
        };
        NvmlError::Call {
            kind,
            hint,
            source: e,
        }
    }
}

impl From<NvmlError> for SourceError {
    fn from(e: NvmlError) -> Self {
        SourceError::new(e.kind(), "nvml", e.to_string()).with_cause(e)
    }
}

/// Maps an NVML error from `what` (the call that failed) onto a [`SourceError`], keeping it
/// as the cause.
pub fn map(e: WrapperError, what: &str) -> SourceError {
    NvmlError::call(e, what).into()
}

/// The error for a library path given with `--nvml-lib` that does not exist.
pub fn missing_lib(path: &Path) -> SourceError {
    NvmlError::MissingLibrary {
        path: path.to_owned(),
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_hints() {
        let e = map(WrapperError::LibraryNotFound, "init");
        assert_eq!(e.kind, ErrorKind::NotAvailable);
        assert!(e.message.contains("libnvidia-ml.so.1") && e.message.contains("--nvml-lib"));
        assert_eq!(
            map(WrapperError::NoPermission, "x").kind,
            ErrorKind::PermissionDenied
        );
        assert_eq!(
            map(WrapperError::NotSupported, "x").kind,
            ErrorKind::NotSupported
        );
        let lost = map(WrapperError::GpuLost, "power");
        assert_eq!(lost.kind, ErrorKind::Lost);
        assert!(lost.retryable);
        assert_eq!(map(WrapperError::Timeout, "x").kind, ErrorKind::Transient);
        assert_eq!(map(WrapperError::Unknown, "x").kind, ErrorKind::Other);
    }

    #[test]
    fn what_nvml_said_is_the_cause() {
        let e = map(WrapperError::Timeout, "energy counter");
        assert_eq!(e.message, "energy counter");
        let chain = flinch_core::error::display_chain(&e);
        assert!(chain.starts_with("nvml: energy counter: "), "{chain}");
        assert!(chain.len() > "nvml: energy counter: ".len(), "{chain}");
        let m = missing_lib(Path::new("/nope/libnvidia-ml.so.1"));
        assert!(
            m.message.contains("/nope/libnvidia-ml.so.1"),
            "{}",
            m.message
        );
    }
}

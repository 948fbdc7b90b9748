//! NVML errors mapped onto the core's error kinds, with messages that say what to do.

use flinch_core::{ErrorKind, SourceError};
use nvml_wrapper::error::NvmlError;
use std::path::Path;

/// The library name loaded by default.
pub const NVML_LIB: &str = "libnvidia-ml.so.1";

/// Maps an NVML error from `what` (the call that failed) onto a [`SourceError`].
pub fn map(e: &NvmlError, what: &str) -> SourceError {
    let (kind, hint) = match e {
        NvmlError::LibloadingError(_) | NvmlError::LibraryNotFound => (
            ErrorKind::NotAvailable,
            format!(
                "cannot load {NVML_LIB}: the NVIDIA driver is not installed here (it provides \
                 {NVML_LIB}); install it, or pass --nvml-lib PATH if the library is elsewhere"
            ),
        ),
        NvmlError::FailedToLoadSymbol(s) => (
            ErrorKind::NotAvailable,
            format!("{NVML_LIB} lacks symbol {s}: the NVIDIA driver is too old for flinch"),
        ),
        NvmlError::DriverNotLoaded => (
            ErrorKind::NotAvailable,
            "the NVIDIA kernel driver is not loaded (no GPU, or `modprobe nvidia` needed)".into(),
        ),
        NvmlError::NoPermission => (
            ErrorKind::PermissionDenied,
            format!("{what}: no permission (run as a user allowed to query the GPU)"),
        ),
        NvmlError::NotSupported => (
            ErrorKind::NotSupported,
            format!("{what}: not supported by this GPU or driver"),
        ),
        NvmlError::FunctionNotFound => (
            ErrorKind::NotSupported,
            format!("{what}: this driver's NVML lacks the function"),
        ),
        NvmlError::GpuLost => (
            ErrorKind::Lost,
            format!(
                "{what}: the GPU is lost (fell off the bus or was reset); recording goes on without it"
            ),
        ),
        NvmlError::ResetRequired => (ErrorKind::Lost, format!("{what}: the GPU needs a reset")),
        NvmlError::Timeout | NvmlError::InUse | NvmlError::NoData => {
            (ErrorKind::Transient, format!("{what}: {e}"))
        }
        NvmlError::Uninitialized => (
            ErrorKind::NotAvailable,
            format!("{what}: NVML is not initialised"),
        ),
        _ => (ErrorKind::Other, format!("{what}: {e}")),
    };
    SourceError::new(kind, "nvml", hint)
}

/// The error for a library path given with `--nvml-lib` that does not exist.
pub fn missing_lib(path: &Path) -> SourceError {
    SourceError::new(
        ErrorKind::NotAvailable,
        "nvml",
        format!(
            "--nvml-lib {}: no such file; point it at libnvidia-ml.so.1 (e.g. /usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1)",
            path.display()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_hints() {
        let e = map(&NvmlError::LibraryNotFound, "init");
        assert_eq!(e.kind, ErrorKind::NotAvailable);
        assert!(e.message.contains("libnvidia-ml.so.1") && e.message.contains("--nvml-lib"));
        assert_eq!(
            map(&NvmlError::NoPermission, "x").kind,
            ErrorKind::PermissionDenied
        );
        assert_eq!(
            map(&NvmlError::NotSupported, "x").kind,
            ErrorKind::NotSupported
        );
        let lost = map(&NvmlError::GpuLost, "power");
        assert_eq!(lost.kind, ErrorKind::Lost);
        assert!(lost.retryable);
        assert_eq!(map(&NvmlError::Timeout, "x").kind, ErrorKind::Transient);
        assert_eq!(map(&NvmlError::Unknown, "x").kind, ErrorKind::Other);
    }
}

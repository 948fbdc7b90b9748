//! The backend's detailed error, and its mapping onto flinch's [`SourceError`] kinds.

use crate::ffi;
use flinch_core::{ErrorKind, SourceError};
use std::fmt;
use std::path::PathBuf;

/// What went wrong with DCGM.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DcgmError {
    /// No DCGM library could be loaded.
    LibraryNotFound {
        /// Each name or path tried, with the loader's reason.
        tried: Vec<(String, String)>,
        /// The path the user gave (`--dcgm-lib`), if any.
        user_path: Option<PathBuf>,
    },
    /// A library was loaded but lacks a symbol this backend needs.
    SymbolMissing {
        /// The missing symbol.
        symbol: &'static str,
        /// The library it was looked up in.
        library: String,
        /// The loader's message.
        detail: String,
    },
    /// A DCGM call returned an error.
    Call {
        /// The C function.
        function: &'static str,
        /// Its `dcgmReturn_t`.
        code: i32,
        /// DCGM's text for the code.
        message: String,
    },
    /// Connecting to a host engine failed.
    Connect {
        /// The address as given.
        address: String,
        /// The failed call.
        cause: Box<DcgmError>,
    },
    /// An option is wrong (an address with a NUL byte, an unknown GPU id, ...).
    InvalidInput(String),
    /// DCGM runs but reports no GPU it supports.
    NoGpus,
}

impl DcgmError {
    /// The `dcgmReturn_t` of a failed call, if this is one.
    pub fn code(&self) -> Option<i32> {
        match self {
            DcgmError::Call { code, .. } => Some(*code),
            DcgmError::Connect { cause, .. } => cause.code(),
            _ => None,
        }
    }

    /// The kind a caller acts on.
    pub fn kind(&self) -> ErrorKind {
        match self {
            DcgmError::LibraryNotFound { .. } | DcgmError::NoGpus => ErrorKind::NotAvailable,
            DcgmError::SymbolMissing { .. } => ErrorKind::NotSupported,
            DcgmError::Connect { .. } => ErrorKind::NotAvailable,
            DcgmError::InvalidInput(_) => ErrorKind::InvalidInput,
            DcgmError::Call { code, .. } => match *code {
                ffi::ST_NO_PERMISSION | ffi::ST_REQUIRES_ROOT => ErrorKind::PermissionDenied,
                ffi::ST_NOT_SUPPORTED
                | ffi::ST_GPU_NOT_SUPPORTED
                | ffi::ST_UNKNOWN_FIELD
                | ffi::ST_MODULE_NOT_LOADED
                | ffi::ST_PROFILING_NOT_SUPPORTED
                | ffi::ST_PROFILING_LIBRARY_ERROR
                | ffi::ST_PROFILING_MULTI_PASS
                | ffi::ST_INSUFFICIENT_DRIVER_VERSION
                | ffi::ST_VER_MISMATCH => ErrorKind::NotSupported,
                ffi::ST_GPU_IS_LOST => ErrorKind::Lost,
                ffi::ST_TIMEOUT | ffi::ST_STALE_DATA | ffi::ST_CONNECTION_NOT_VALID => {
                    ErrorKind::Transient
                }
                ffi::ST_INIT_ERROR | ffi::ST_UNINITIALIZED => ErrorKind::NotAvailable,
                _ => ErrorKind::Other,
            },
        }
    }
}

impl fmt::Display for DcgmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DcgmError::LibraryNotFound { tried, user_path } => {
                let list: Vec<String> = tried
                    .iter()
                    .map(|(n, why)| format!("{n} ({why})"))
                    .collect();
                match user_path {
                    Some(p) => write!(
                        f,
                        "cannot load the DCGM library given with --dcgm-lib {}: tried {}; \
                         point --dcgm-lib at libdcgm.so.4 (or .so.3) of a DCGM installation",
                        p.display(),
                        list.join("; ")
                    ),
                    None => write!(
                        f,
                        "DCGM is not installed: tried {}; install DCGM (e.g. the \
                         datacenter-gpu-manager-4 package) or give its library with --dcgm-lib PATH",
                        list.join("; ")
                    ),
                }
            }
            DcgmError::SymbolMissing {
                symbol, library, ..
            } => write!(
                f,
                "{library} lacks the required symbol {symbol}: it is not a DCGM 3.x/4.x \
                 library (or too old); point --dcgm-lib at libdcgm.so.4 of DCGM 4, or libdcgm.so.3"
            ),
            DcgmError::Call {
                function,
                code,
                message,
            } => {
                write!(f, "{function} failed: {message} (DCGM code {code})")?;
                match *code {
                    ffi::ST_NO_PERMISSION | ffi::ST_REQUIRES_ROOT => {
                        f.write_str("; run as root or ask for profiling permission")
                    }
                    ffi::ST_PROFILING_NOT_SUPPORTED => {
                        f.write_str("; this GPU or DCGM build has no profiling metrics")
                    }
                    _ => Ok(()),
                }
            }
            DcgmError::Connect { address, cause } => write!(
                f,
                "cannot connect to the DCGM host engine at {address}: {cause}; is nv-hostengine \
                 running there? (omit --dcgm-host to start an embedded engine instead)"
            ),
            DcgmError::InvalidInput(m) => f.write_str(m),
            DcgmError::NoGpus => f.write_str("DCGM reports no supported GPU on this machine"),
        }
    }
}

impl std::error::Error for DcgmError {}

impl From<DcgmError> for SourceError {
    fn from(e: DcgmError) -> Self {
        SourceError::new(e.kind(), "dcgm", e.to_string()).with_cause(e)
    }
}

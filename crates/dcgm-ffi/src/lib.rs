#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod backend;
pub mod error;
pub mod ffi;
mod session;
pub mod source;
#[cfg(feature = "testing")]
pub mod testing;

pub use backend::{Dcgm, MIN_UPDATE_PERIOD};
pub use error::DcgmError;
pub use ffi::DcgmLib;
pub use session::Connection;
pub use source::{DcgmConfig, DcgmSource, FIELDS, FieldDef, device_name};

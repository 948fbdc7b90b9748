#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod metrics;
pub mod push;
pub mod server;
#[cfg(feature = "testing")]
pub mod testing;

pub use flinch_analysis::live::{SpanConfig, SpanSpec};
pub use metrics::{Exporter, ExporterConfig};
pub use push::{PushConfig, PushConfigError};
pub use server::{MetricsServer, ServeError, ServerConfig};

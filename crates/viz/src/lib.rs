#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod idle;
pub mod output;
pub mod parquet_export;
pub mod perfetto;
pub mod perfetto_proto;
pub mod plot;
pub mod series;
pub mod spans;
pub mod table;
#[cfg(feature = "testing")]
pub mod testing;

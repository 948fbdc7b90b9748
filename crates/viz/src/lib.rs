#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod idle;
pub mod output;
pub mod perfetto;
pub mod plot;
pub mod series;
pub mod spans;
pub mod table;
#[cfg(feature = "testing")]
pub mod testing;

//! Integration tests of `flinch-cli`: one binary, a module per area.

mod analyze;
mod common;
mod dcgm;
mod rapl;
mod readme;
mod record;
mod reliability;
mod soak;
mod viz;

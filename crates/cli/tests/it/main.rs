//! Integration tests of `flinch-cli`: one binary, a module per area.

mod analyze;
mod common;
mod dcgm;
mod fidelity;
mod pinned;
mod prometheus;
mod rapl;
mod readme;
mod record;
mod reliability;
mod soak;
mod stream;
mod viz;

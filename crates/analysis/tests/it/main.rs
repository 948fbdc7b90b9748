//! Integration tests of `flinch-analysis`: one binary, a module per area.

mod analysis;
mod fidelity;
mod stream;
mod summary;

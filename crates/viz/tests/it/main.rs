//! Integration tests of `flinch-viz`: one binary, a module per area.

mod export_scale;
mod viz;

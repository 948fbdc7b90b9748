//! Integration tests of `flinch-nvml`: one binary, a module per area.

mod gpu;
mod missing_library;

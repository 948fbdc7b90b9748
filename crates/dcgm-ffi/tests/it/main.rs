//! Integration tests of `flinch-dcgm`: one binary, a module per area.

mod fake_dcgm;

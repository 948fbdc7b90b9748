//! Integration tests of `flinch-rapl`: one binary, a module per area.

mod rapl;

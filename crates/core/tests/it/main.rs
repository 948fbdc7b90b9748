//! Integration tests of `flinch-core`: one binary, a module per area.

mod common;
mod hostile_input;
mod trace_io;

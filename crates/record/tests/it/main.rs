//! Integration tests of `flinch-record`: one binary, a module per area.

mod alloc;
mod recording;
mod reliability;

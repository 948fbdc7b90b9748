//! Integration tests of `flinch-record`: one binary, a module per area.

mod alloc;
mod observe;
mod recording;
mod reliability;
mod stream;

//! flinch-prometheus's integration tests: one binary, a module per subject.

mod abuse;
mod common;
mod live;

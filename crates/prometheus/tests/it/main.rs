//! flinch-prometheus's integration tests: one binary, a module per subject.

mod abuse;
mod common;
mod final_scrape;
mod live;

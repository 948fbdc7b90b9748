//! Shared helpers for the flinch benches.

//! flinch backend: Linux powercap RAPL energy counters, wraparound-safe. (Filled by its own issue.)
#![deny(missing_docs)]

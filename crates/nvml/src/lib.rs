//! flinch backend: NVIDIA GPUs through NVML. (Filled by its own issue.)
#![deny(missing_docs)]

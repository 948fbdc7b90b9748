//! flinch backend: NVIDIA DCGM through its C library, loaded at run time. (Filled by its own issue.)
#![deny(missing_docs)]

//! The compiled half of the `flinch` Python package (`flinch._flinch`): flinch's recorder,
//! trace reader and analysis, called from the thin Python layer in `python/flinch/`.
//!
//! Nothing here holds the GIL while it samples, reads or analyses: sampling runs on the
//! recorder's own threads, and long calls release the GIL (`Python::detach`).

mod analyze;
mod backends;
mod errors;
mod record;
mod trace;
mod windows;

use pyo3::prelude::*;

/// Rust's allocations in the extension (Python's own are untouched) go to mimalloc: a
/// window's marks and state are allocated on the caller's thread and often freed on the
/// recorder's writer thread, which glibc's malloc handles with arena locks and a per-thread
/// cache the allocating thread never gets back (a third of the caller's time in
/// `rec.window()` was in malloc and free; see python/README.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// flinch's Rust core, for the `flinch` package (use `import flinch`, not this module).
#[pymodule]
fn _flinch(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(trace::read_trace, m)?)?;
    m.add_function(wrap_pyfunction!(analyze::analyze_json, m)?)?;
    m.add_function(wrap_pyfunction!(record::calibrate, m)?)?;
    m.add_class::<record::NativeRecorder>()?;
    m.add_class::<record::NativeWindow>()?;
    Ok(())
}

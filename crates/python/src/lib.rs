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

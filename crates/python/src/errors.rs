//! Rust errors as Python exceptions: the message of the Rust error, its `source()` chain as
//! the exception's `__cause__` chain, and a class a caller can catch.
//!
//! The classes are defined in Python (`flinch/_errors.py`, so they can also derive from
//! `ValueError` or `OSError` and carry docstrings); an I/O error becomes the matching
//! built-in `OSError` subclass (`FileNotFoundError`, `PermissionError`, ...) with the path
//! as `filename`.

use flinch_core::{Error, SourceError};
use pyo3::IntoPyObjectExt;
use pyo3::exceptions::{
    PyFileNotFoundError, PyIsADirectoryError, PyOSError, PyPermissionError, PyRuntimeError,
};
use pyo3::prelude::*;
use std::error::Error as StdError;
use std::path::Path;

/// A flinch exception class by name (`FlinchError`, `TraceFormatError`, ...).
fn class<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    py.import("flinch._errors")?.getattr(name)
}

/// An instance of a flinch exception class with `message`, falling back to `RuntimeError`
/// when the Python half of the package cannot be imported.
fn instance(py: Python<'_>, name: &str, message: &str) -> PyErr {
    match class(py, name).and_then(|c| c.call1((message,))) {
        Ok(v) => PyErr::from_value(v),
        Err(_) => PyRuntimeError::new_err(message.to_owned()),
    }
}

fn set<'py>(err: &PyErr, py: Python<'py>, key: &str, value: impl IntoPyObjectExt<'py>) {
    if let Ok(v) = value.into_bound_py_any(py) {
        let _ = err.value(py).setattr(key, v);
    }
}

/// An `OSError` of the class matching `e`'s kind, with `message` as its text and `path`
/// as its `filename`.
pub fn os_error(message: String, path: Option<&Path>, e: &std::io::Error) -> PyErr {
    use std::io::ErrorKind::*;
    let args = |errno: i32| {
        (
            errno,
            message.clone(),
            path.map(|p| p.display().to_string()),
        )
    };
    let errno = e.raw_os_error().unwrap_or(0);
    match e.kind() {
        NotFound => PyFileNotFoundError::new_err(args(errno)),
        PermissionDenied => PyPermissionError::new_err(args(errno)),
        IsADirectory => PyIsADirectoryError::new_err(args(errno)),
        _ => PyOSError::new_err(args(errno)),
    }
}

/// The exception for one error, without its chain.
fn one(py: Python<'_>, e: &(dyn StdError + 'static)) -> PyErr {
    if let Some(fe) = e.downcast_ref::<Error>() {
        return match fe {
            Error::Io { path, source, .. } => os_error(fe.to_string(), Some(path), source),
            Error::TraceParse { path, line, .. } => {
                let err = instance(py, "TraceFormatError", &fe.to_string());
                set(&err, py, "path", path.display().to_string());
                set(&err, py, "line", *line);
                err
            }
            Error::Source(s) => source_error(py, s),
            Error::Invalid(m) => instance(py, "InvalidInput", m),
            other => instance(py, "FlinchError", &other.to_string()),
        };
    }
    if let Some(s) = e.downcast_ref::<SourceError>() {
        return source_error(py, s);
    }
    if let Some(io) = e.downcast_ref::<std::io::Error>() {
        return os_error(io.to_string(), None, io);
    }
    instance(py, "FlinchError", &e.to_string())
}

/// A `flinch.SourceError` with `backend`, `kind` and `retryable`.
///
/// An unknown backend or a bad option is a `flinch.InvalidInput` (a `ValueError`) with the
/// same attributes.
pub fn source_error(py: Python<'_>, s: &SourceError) -> PyErr {
    let class = if s.kind == flinch_core::ErrorKind::InvalidInput {
        "InvalidInput"
    } else {
        "SourceError"
    };
    let err = instance(py, class, &s.to_string());
    set(&err, py, "backend", s.backend.clone());
    set(&err, py, "kind", s.kind.name());
    set(&err, py, "retryable", s.retryable);
    err
}

/// `e` as a Python exception whose `__cause__` chain is `e`'s `source()` chain.
pub fn to_py(e: &(dyn StdError + 'static)) -> PyErr {
    Python::attach(|py| {
        let top = one(py, e);
        let mut chain = Vec::new();
        let mut next = e.source();
        while let Some(s) = next {
            chain.push(one(py, s));
            next = s.source();
        }
        // Link from the innermost outwards: top.__cause__ = chain[0], chain[0].__cause__ = ...
        let mut cause: Option<PyErr> = None;
        for err in chain.into_iter().rev() {
            err.set_cause(py, cause.take());
            cause = Some(err);
        }
        top.set_cause(py, cause);
        top
    })
}

/// `flinch.InvalidInput` (a `ValueError`) with `message`.
pub fn invalid(message: impl AsRef<str>) -> PyErr {
    Python::attach(|py| instance(py, "InvalidInput", message.as_ref()))
}

/// Maps a flinch result into a Python one.
pub trait IntoPy<T> {
    /// The error as a Python exception (see [`to_py`]).
    fn py_err(self) -> PyResult<T>;
}

impl<T, E: StdError + 'static> IntoPy<T> for Result<T, E> {
    fn py_err(self) -> PyResult<T> {
        self.map_err(|e| to_py(&e))
    }
}

//! `read_trace`: a trace as flinch's own reader sees it, handed to Python as column buffers
//! (little-endian bytes that `numpy.frombuffer` wraps without copying) and small lists.

use crate::errors::IntoPy;
use flinch_core::trace::{Trace, read_trace as read};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};
use std::path::PathBuf;

fn bytes_u64<'py>(py: Python<'py>, xs: impl Iterator<Item = u64>, n: usize) -> Bound<'py, PyBytes> {
    let mut b = Vec::with_capacity(n * 8);
    for x in xs {
        b.extend_from_slice(&x.to_le_bytes());
    }
    PyBytes::new(py, &b)
}

fn bytes_f64<'py>(py: Python<'py>, xs: impl Iterator<Item = f64>, n: usize) -> Bound<'py, PyBytes> {
    let mut b = Vec::with_capacity(n * 8);
    for x in xs {
        b.extend_from_slice(&x.to_le_bytes());
    }
    PyBytes::new(py, &b)
}

fn bytes_u32<'py>(py: Python<'py>, xs: impl Iterator<Item = u32>, n: usize) -> Bound<'py, PyBytes> {
    let mut b = Vec::with_capacity(n * 4);
    for x in xs {
        b.extend_from_slice(&x.to_le_bytes());
    }
    PyBytes::new(py, &b)
}

/// An event row for Python: t_ns, kind, channel, value, label, text, line.
type EventRow<'a> = (u64, &'a str, &'a str, Option<f64>, &'a str, &'a str, u64);

/// Reads a trace with flinch's reader (the GIL released while it parses) and returns its
/// parts: `header`/`footer` as JSON text, `channels` (names in header order), the samples
/// as three column buffers in the reader's order (channel by channel in header order, each
/// sorted by time), marks, anchors, gaps, other events and the reader's warnings.
#[pyfunction]
pub fn read_trace(py: Python<'_>, path: PathBuf) -> PyResult<Bound<'_, PyDict>> {
    let trace: Trace = py.detach(|| read(&path)).py_err()?;
    trace_dict(py, &trace)
}

/// The parts of a trace in memory (see [`read_trace`]).
pub fn trace_dict<'py>(py: Python<'py>, trace: &Trace) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    let header = serde_json::to_string(&trace.header)
        .map_err(|e| crate::errors::invalid(format!("cannot encode the header: {e}")))?;
    d.set_item("path", trace.path.display().to_string())?;
    d.set_item("header", header)?;
    d.set_item(
        "footer",
        trace
            .footer
            .as_ref()
            .and_then(|f| serde_json::to_string(f).ok()),
    )?;
    let names: Vec<&str> = trace
        .channels
        .iter()
        .map(|c| c.spec.name.as_str())
        .collect();
    d.set_item("channels", names)?;
    let n = trace.sample_count();
    let codes = trace
        .channels
        .iter()
        .enumerate()
        .flat_map(|(i, c)| std::iter::repeat_n(i as u32, c.t_ns.len()));
    d.set_item("sample_channel", bytes_u32(py, codes, n))?;
    let t = trace.channels.iter().flat_map(|c| c.t_ns.iter().copied());
    d.set_item("sample_t_ns", bytes_u64(py, t, n))?;
    let v = trace.channels.iter().flat_map(|c| c.values.iter().copied());
    d.set_item("sample_value", bytes_f64(py, v, n))?;

    let m = &trace.marks;
    d.set_item(
        "mark_t_ns",
        bytes_u64(py, m.iter().map(|x| x.t_ns), m.len()),
    )?;
    d.set_item(
        "mark_recv_ns",
        bytes_u64(py, m.iter().map(|x| x.recv_ns), m.len()),
    )?;
    let labels: Vec<&str> = m.iter().map(|x| x.label.as_str()).collect();
    d.set_item("mark_label", labels)?;
    let via: Vec<&str> = m.iter().map(|x| x.via.name()).collect();
    d.set_item("mark_via", via)?;
    let from_client: Vec<bool> = m.iter().map(|x| x.t_from_client).collect();
    d.set_item("mark_t_from_client", from_client)?;
    let fields = PyList::empty(py);
    for x in m {
        let f = PyDict::new(py);
        for (k, v) in &x.fields {
            f.set_item(k, v)?;
        }
        fields.append(f)?;
    }
    d.set_item("mark_fields", fields)?;

    let anchors: Vec<(u64, i64)> = trace
        .anchors
        .iter()
        .map(|a| (a.mono_ns, a.real_ns))
        .collect();
    d.set_item("anchors", anchors)?;
    let gaps: Vec<(&str, u64, Option<u64>, &str)> = trace
        .gaps
        .iter()
        .map(|g| (g.source.as_str(), g.start_ns, g.end_ns, g.reason.as_str()))
        .collect();
    d.set_item("gaps", gaps)?;
    let events: Vec<EventRow<'_>> = trace
        .events
        .iter()
        .map(|e| {
            (
                e.t_ns,
                e.kind.name(),
                e.channel.as_str(),
                e.value,
                e.label.as_str(),
                e.text.as_str(),
                e.line,
            )
        })
        .collect();
    d.set_item("events", events)?;
    d.set_item("warnings", trace.warnings.clone())?;
    Ok(d)
}

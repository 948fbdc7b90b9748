//! `analyze`: the report of `flinch analyze --json`, computed by the same code.

use crate::errors::{IntoPy, invalid};
use flinch_core::analysis::{Analyzer, Thresholds, describe_labels, parse_window, resolve_window};
use flinch_core::idle::IdleProfile;
use flinch_core::trace::{Trace, read_trace};
use pyo3::prelude::*;
use std::path::PathBuf;

/// Where the idle level comes from, in the CLI's order of precedence.
pub enum IdleFrom {
    /// `idle_window="A..B"`: a stretch of the trace itself.
    Window(String),
    /// `idle=PATH`: a profile written by `flinch calibrate`.
    File(PathBuf),
    /// `idle={...}`: a profile already in memory (as `flinch.calibrate` returns it).
    Json(String),
    /// The profile embedded in the trace's header, if any.
    Embedded,
}

/// The idle profile for `trace`, as `flinch analyze` picks it, with how it came.
pub fn idle_for(
    trace: &Trace,
    from: &IdleFrom,
) -> Result<Option<(IdleProfile, &'static str)>, String> {
    match from {
        IdleFrom::Window(w) => {
            let (x, y) = parse_window(w).map_err(|e| format!("idle_window {e}"))?;
            let (s, e) = resolve_window(trace, &x, &y).map_err(|e| e.to_string())?;
            let origin = format!("window {w} of {}", trace.path.display());
            let mut p = IdleProfile::from_trace(trace, s, e, &origin).map_err(|e| e.to_string())?;
            if p.channels.is_empty() {
                let o = trace.header.start_anchor.mono_ns;
                return Err(format!(
                    "idle_window {w}: no channel has samples between {:.3} s and {:.3} s of the trace",
                    s.saturating_sub(o) as f64 / 1e9,
                    e.saturating_sub(o) as f64 / 1e9
                ));
            }
            p.assess();
            Ok(Some((p, "window")))
        }
        IdleFrom::File(path) => IdleProfile::read(path)
            .map(|p| Some((p, "file")))
            .map_err(|e| format!("idle {e}")),
        IdleFrom::Json(text) => IdleProfile::from_json(text)
            .map(|p| Some((p, "profile")))
            .map_err(|e| format!("idle: {e}")),
        IdleFrom::Embedded => match &trace.header.idle {
            Some(v) => IdleProfile::from_value(v)
                .map(|p| Some((p, "embedded")))
                .map_err(|e| {
                    format!(
                        "{}: the idle profile embedded in the header is not usable ({e}); \
                         pass idle=FILE or idle_window='A..B' instead",
                        trace.path.display()
                    )
                }),
            None => Ok(None),
        },
    }
}

/// Analyses the spans from marks `from` to marks `to` of the trace at `path` and returns
/// the report as JSON, exactly as `flinch analyze --json` prints it. Without `from` and
/// `to`, returns `{"trace", "labels"}` as the CLI does. The idle level: `idle_window`
/// (`"A..B"`), else `idle` (a profile file), else `idle_json` (a profile as JSON text),
/// else the profile embedded in the trace.
#[pyfunction]
#[pyo3(signature = (path, from_=None, to=None, idle=None, idle_json=None, idle_window=None))]
pub fn analyze_json(
    py: Python<'_>,
    path: PathBuf,
    from_: Option<String>,
    to: Option<String>,
    idle: Option<PathBuf>,
    idle_json: Option<String>,
    idle_window: Option<String>,
) -> PyResult<String> {
    let trace = py.detach(|| read_trace(&path)).py_err()?;
    let (from, to) = match (from_, to) {
        (Some(f), Some(t)) => (f, t),
        (None, None) => {
            let v = serde_json::json!({
                "trace": path.display().to_string(),
                "labels": trace.labels(),
            });
            return Ok(v.to_string());
        }
        _ => {
            return Err(invalid(format!(
                "give both from_ and to (mark labels); labels present in {}: {}",
                path.display(),
                describe_labels(&trace)
            )));
        }
    };
    let idle_from = match (idle_window, idle, idle_json) {
        (Some(w), _, _) => IdleFrom::Window(w),
        (None, Some(p), _) => IdleFrom::File(p),
        (None, None, Some(j)) => IdleFrom::Json(j),
        (None, None, None) => IdleFrom::Embedded,
    };
    py.detach(|| -> Result<String, PyErr> {
        let labels = trace.labels();
        for l in [&from, &to] {
            if !labels.contains_key(l) {
                return Err(invalid(format!(
                    "no mark labelled {l:?} in {}; labels present: {}",
                    path.display(),
                    describe_labels(&trace)
                )));
            }
        }
        let idle = idle_for(&trace, &idle_from).map_err(invalid)?;
        let analyzer = Analyzer::new(
            &trace,
            idle.as_ref().map(|(p, via)| (p, *via)),
            Thresholds::default(),
        );
        let report = analyzer.run(&from, &to, &mut |_, _| {}).py_err()?;
        serde_json::to_string(&report).map_err(|e| invalid(format!("cannot encode: {e}")))
    })
}

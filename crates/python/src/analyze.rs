//! `analyze`: the report of `flinch analyze --json`, computed by the same code.

use crate::errors::{IntoPy, invalid};
use flinch_analysis::idle::IdleProfile;
use flinch_analysis::{Analyzer, IdleFrom, Thresholds, choose_idle, describe_labels};
use flinch_core::trace::read_trace;
use pyo3::prelude::*;
use std::path::PathBuf;

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
    let profile = match (&idle_window, &idle, idle_json) {
        (None, None, Some(j)) => {
            Some(IdleProfile::from_json(&j).map_err(|e| invalid(format!("idle: {e}")))?)
        }
        _ => None,
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
        let idle_from = match (&idle_window, &idle, profile) {
            (Some(w), _, _) => IdleFrom::Window(w),
            (None, Some(p), _) => IdleFrom::File(p),
            (None, None, Some(p)) => IdleFrom::Profile(Box::new(p)),
            (None, None, None) => IdleFrom::Embedded,
        };
        let idle = choose_idle(&trace, idle_from, ("idle_window", "idle")).map_err(invalid)?;
        let analyzer = Analyzer::new(
            &trace,
            idle.as_ref().map(|(p, via)| (p, *via)),
            Thresholds::default(),
        );
        let report = analyzer.run(&from, &to, &mut |_, _| {}).py_err()?;
        serde_json::to_string(&report).map_err(|e| invalid(format!("cannot encode: {e}")))
    })
}

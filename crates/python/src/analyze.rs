//! `analyze`: the report of `flinch analyze --json`, computed by the same code (the trace
//! streamed by [`SpanStream`], spans written by the CLI's [`JsonSink`]).

use crate::errors::{IntoPy, invalid};
use flinch_analysis::idle::IdleProfile;
use flinch_analysis::output::JsonSink;
use flinch_analysis::stream::SpanStream;
use flinch_analysis::{IdleFrom, Thresholds, choose_idle, describe_label_counts};
use pyo3::prelude::*;
use std::path::PathBuf;

/// Analyses the spans from marks `from` to marks `to` of the trace at `path` and returns
/// the report as JSON, exactly as `flinch analyze --json` prints it. Without `from` and
/// `to`, returns `{"trace", "labels", "warnings"}` as the CLI does. The idle level:
/// `idle_window` (`"A..B"`), else `idle` (a profile file), else `idle_json` (a profile as
/// JSON text), else the profile embedded in the trace.
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
    let profile = match (&idle_window, &idle, idle_json) {
        (None, None, Some(j)) => {
            Some(IdleProfile::from_json(&j).map_err(|e| invalid(format!("idle: {e}")))?)
        }
        _ => None,
    };
    py.detach(|| -> PyResult<String> {
        let stream = SpanStream::open(&path).py_err()?;
        let (from, to) = match (from_, to) {
            (Some(f), Some(t)) => (f, t),
            (f, t) => {
                let (labels, warnings) = stream.labels(&mut |_, _| {}).py_err()?;
                if f.is_some() || t.is_some() {
                    return Err(invalid(format!(
                        "give both from_ and to (mark labels); labels present in {}: {}",
                        path.display(),
                        describe_label_counts(&labels)
                    )));
                }
                let v = serde_json::json!({
                    "trace": path.display().to_string(),
                    "labels": labels,
                    "warnings": warnings,
                });
                return Ok(v.to_string());
            }
        };
        let header = stream.header().clone();
        let idle_from = match (&idle_window, &idle, profile) {
            (Some(w), _, _) => IdleFrom::Window(w),
            (None, Some(p), _) => IdleFrom::File(p),
            (None, None, Some(p)) => IdleFrom::Profile(Box::new(p)),
            (None, None, None) => IdleFrom::Embedded,
        };
        let idle = choose_idle(
            &path,
            &header,
            idle_from,
            ("idle_window", "idle"),
            &mut |_, _| {},
        )
        .py_err()?;
        let mut sink = JsonSink::new();
        let outcome = stream
            .run(
                &from,
                &to,
                idle.as_ref().map(|(p, via)| (p, *via)),
                Thresholds::default(),
                &mut sink,
                &mut |_, _| {},
            )
            .py_err()?;
        let mut out = Vec::new();
        sink.finish(&outcome, &mut out)
            .map_err(|e| invalid(format!("cannot encode the analysis: {e}")))?;
        String::from_utf8(out).map_err(|e| invalid(format!("cannot encode the analysis: {e}")))
    })
}

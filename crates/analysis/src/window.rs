//! Windows given on the command line (`--idle-window A..B`, `--window A..B`): parsing and
//! resolving them on a trace.

use flinch_core::error::{Error, Result};
use flinch_core::trace::Trace;
use std::collections::BTreeMap;
use std::path::Path;

/// What resolving a window needs to know about a trace: a whole [`Trace`] knows it, and so
/// does a summary of one kept while it streams by.
pub trait MarkIndex {
    /// The trace file.
    fn path(&self) -> &Path;
    /// Where seconds count from: the start anchor's `CLOCK_MONOTONIC` ns.
    fn origin_ns(&self) -> u64;
    /// Earliest and latest sample or mark time.
    fn time_range_ns(&self) -> Option<(u64, u64)>;
    /// The time of the first mark (in time order) labelled `label` at or after `after`.
    fn first_mark(&self, label: &str, after: u64) -> Option<u64>;
    /// Each mark label with its count.
    fn label_counts(&self) -> BTreeMap<String, usize>;
}

impl MarkIndex for Trace {
    fn path(&self) -> &Path {
        &self.path
    }
    fn origin_ns(&self) -> u64 {
        self.header.start_anchor.mono_ns
    }
    fn time_range_ns(&self) -> Option<(u64, u64)> {
        Trace::time_range_ns(self)
    }
    fn first_mark(&self, label: &str, after: u64) -> Option<u64> {
        self.marks
            .iter()
            .find(|m| m.label == label && m.t_ns >= after)
            .map(|m| m.t_ns)
    }
    fn label_counts(&self) -> BTreeMap<String, usize> {
        self.labels()
    }
}

/// Where an idle window starts or ends, as given on the command line.
#[derive(Clone, Debug, PartialEq)]
pub enum WindowEdge {
    /// Seconds from the trace's start (its start anchor).
    Seconds(f64),
    /// The first mark with this label (for the end: the first at or after the start).
    Label(String),
}

/// Parses `A..B`, each side a mark label or seconds from the trace's start (`12.5`,
/// `12.5s`); `A..` and `..B` leave that side open (`None`).
pub fn parse_open_window(
    s: &str,
) -> std::result::Result<(Option<WindowEdge>, Option<WindowEdge>), String> {
    let (a, b) = s.split_once("..").ok_or_else(|| {
        format!("{s:?} is not A..B (A and B are mark labels or seconds from the trace start)")
    })?;
    let edge = |x: &str| -> std::result::Result<Option<WindowEdge>, String> {
        let x = x.trim();
        if x.is_empty() {
            return Ok(None);
        }
        let num = x.strip_suffix('s').unwrap_or(x);
        if let Ok(v) = num.parse::<f64>() {
            if !v.is_finite() {
                return Err(format!("{s:?}: {x} is not a time in seconds"));
            }
            return Ok(Some(WindowEdge::Seconds(v)));
        }
        if flinch_core::marks::is_valid_label(x) {
            Ok(Some(WindowEdge::Label(x.to_owned())))
        } else {
            Err(format!(
                "{s:?}: {x:?} is neither a number of seconds nor a mark label"
            ))
        }
    };
    Ok((edge(a)?, edge(b)?))
}

/// Parses `A..B` (both sides needed), where each side is a mark label or a time in seconds
/// from the trace's start (`12.5` or `12.5s`), not before it.
pub fn parse_window(s: &str) -> std::result::Result<(WindowEdge, WindowEdge), String> {
    match parse_open_window(s)? {
        (Some(a), Some(b)) => {
            for e in [&a, &b] {
                if let WindowEdge::Seconds(v) = e
                    && *v < 0.0
                {
                    return Err(format!("{s:?}: {v} is not a time ≥ 0 s"));
                }
            }
            Ok((a, b))
        }
        _ => Err(format!("{s:?}: both ends of A..B are needed")),
    }
}

/// Resolves a window on a trace into `(start_ns, end_ns)`: a label is its first mark (for
/// the end, the first at or after the start), seconds count from the trace's start, and an
/// open side is the trace's first or last sample or mark. `what` names the option in
/// messages.
pub fn resolve_open_window<T: MarkIndex + ?Sized>(
    trace: &T,
    a: Option<&WindowEdge>,
    b: Option<&WindowEdge>,
    what: &str,
) -> std::result::Result<(u64, u64), String> {
    let origin = trace.origin_ns();
    let (lo, hi) = trace.time_range_ns().unwrap_or((origin, origin));
    let find = |e: &WindowEdge, after: u64| -> std::result::Result<u64, String> {
        match e {
            WindowEdge::Seconds(s) => Ok((origin as i128)
                .saturating_add((s * 1e9).round() as i128)
                .clamp(0, u64::MAX as i128) as u64),
            WindowEdge::Label(l) => trace.first_mark(l, after).ok_or_else(|| {
                format!(
                    "{what}: no mark {l:?}{} in {}; labels present: {}",
                    if after > 0 {
                        " after the window's start"
                    } else {
                        ""
                    },
                    trace.path().display(),
                    describe_label_counts(&trace.label_counts())
                )
            }),
        }
    };
    let start = match a {
        Some(e) => find(e, 0)?,
        None => lo,
    };
    let end = match b {
        Some(e) => find(e, start)?,
        None => hi,
    };
    if end <= start {
        let secs = |t: u64| (t as i128 - origin as i128) as f64 / 1e9;
        return Err(format!(
            "{what}: the window ends ({:.3} s) before it starts ({:.3} s); times are seconds \
             from the trace's start, which spans {:.3} s to {:.3} s",
            secs(end),
            secs(start),
            secs(lo),
            secs(hi)
        ));
    }
    Ok((start, end))
}

/// Resolves an idle window (`--idle-window A..B`) on a trace into `(start_ns, end_ns)`.
pub fn resolve_window<T: MarkIndex + ?Sized>(
    trace: &T,
    a: &WindowEdge,
    b: &WindowEdge,
) -> Result<(u64, u64)> {
    resolve_open_window(trace, Some(a), Some(b), "--idle-window").map_err(Error::Invalid)
}

/// The labels in a trace with their counts, for messages: `a (3), b (3)` or `none`.
pub fn describe_labels(trace: &Trace) -> String {
    describe_label_counts(&trace.labels())
}

/// Labels with their counts, for messages: `a (3), b (3)` or `none`.
pub fn describe_label_counts(labels: &BTreeMap<String, usize>) -> String {
    if labels.is_empty() {
        return "none (the trace has no marks)".into();
    }
    labels
        .iter()
        .map(|(l, n)| format!("{l} ({n})"))
        .collect::<Vec<_>>()
        .join(", ")
}

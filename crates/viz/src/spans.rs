//! Which spans a picture shades, and the colour (verdict) of each.
//!
//! Spans run from a mark labelled `from` to a mark labelled `to`, paired within their
//! request id (`req`) first in, first out, the rule of `flinch analyze`. Without
//! `--from/--to`, every pair of labels `X_start` / `X_end` in the trace gives spans named
//! `X`.
//!
//! Verdicts are those of `flinch analyze` ([`flinch_analysis::Analyzer`]): the same
//! idle profile, thresholds and evidence, so a picture and a report never disagree.

use crate::idle::Idle;
use flinch_analysis::{Analyzer, Thresholds};
use flinch_core::trace::Trace;

pub use flinch_analysis::{Composition, Verdict, describe_labels, pair_marks};

/// One span between two marks.
#[derive(Clone, Debug, PartialEq)]
pub struct Span {
    /// What it is called in pictures: `X` for `X_start`/`X_end`, else `from→to`.
    pub name: String,
    /// The start mark's label.
    pub from: String,
    /// The end mark's label.
    pub to: String,
    /// The request id both marks carry, if any.
    pub req: Option<String>,
    /// Start, `CLOCK_MONOTONIC` ns.
    pub start_ns: u64,
    /// End, `CLOCK_MONOTONIC` ns.
    pub end_ns: u64,
    /// Indices of the two marks in `trace.marks`.
    pub marks: (usize, usize),
}

impl Span {
    /// Duration in seconds.
    pub fn duration_s(&self) -> f64 {
        (self.end_ns - self.start_ns) as f64 / 1e9
    }
    /// A short label: `phase req=3`.
    pub fn label(&self) -> String {
        match &self.req {
            Some(r) => format!("{} req={r}", self.name),
            None => self.name.clone(),
        }
    }
}

/// Which spans to find.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SpanSpec {
    /// From every mark labelled `from` to the matching `to`.
    Labels {
        /// Start label.
        from: String,
        /// End label.
        to: String,
    },
    /// Every `X_start` / `X_end` label pair present.
    Auto,
}

/// The spans found, and the marks left unpaired.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SpanSet {
    /// In start order.
    pub spans: Vec<Span>,
    /// Start marks never closed.
    pub unmatched_starts: usize,
    /// End marks with nothing open.
    pub unmatched_ends: usize,
}

/// Finds the spans of `spec` in a trace. Asking for a label the trace lacks is an error
/// that lists the labels present.
pub fn find_spans(trace: &Trace, spec: &SpanSpec) -> Result<SpanSet, String> {
    let labels = trace.labels();
    let pairs: Vec<(String, String, String)> = match spec {
        SpanSpec::Labels { from, to } => {
            for l in [from, to] {
                if !labels.contains_key(l.as_str()) {
                    return Err(format!(
                        "no mark labelled {l:?} in {}; labels present: {}",
                        trace.path.display(),
                        describe_labels(trace)
                    ));
                }
            }
            let name = if from == to {
                from.clone()
            } else {
                format!("{from}→{to}")
            };
            vec![(name, from.clone(), to.clone())]
        }
        SpanSpec::Auto => labels
            .keys()
            .filter_map(|l| {
                let stem = l.strip_suffix("_start")?;
                let end = format!("{stem}_end");
                labels
                    .contains_key(&end)
                    .then(|| (stem.to_owned(), l.clone(), end))
            })
            .collect(),
    };
    let mut set = SpanSet::default();
    for (name, from, to) in pairs {
        let p = pair_marks(&trace.marks, &from, &to);
        set.unmatched_starts += p.unmatched_starts.len();
        set.unmatched_ends += p.unmatched_ends.len();
        for (a, b) in p.pairs {
            let (ma, mb) = (&trace.marks[a], &trace.marks[b]);
            set.spans.push(Span {
                name: name.clone(),
                from: from.clone(),
                to: to.clone(),
                req: ma.req().map(str::to_owned),
                start_ns: ma.t_ns,
                end_ns: mb.t_ns.max(ma.t_ns),
                marks: (a, b),
            });
        }
    }
    set.spans.sort_by_key(|s| (s.start_ns, s.end_ns));
    Ok(set)
}

/// The verdict of every span, from `flinch analyze`'s analysis with `idle` (without an
/// idle level power cannot speak, and activity alone decides).
pub fn verdicts(trace: &Trace, spans: &SpanSet, idle: Option<&Idle>) -> Vec<Verdict> {
    let analyzer = Analyzer::new(
        trace,
        idle.map(|i| (&i.profile, i.via.as_str())),
        Thresholds::default(),
    );
    spans
        .spans
        .iter()
        .map(|s| {
            analyzer
                .span(&trace.marks[s.marks.0], &trace.marks[s.marks.1])
                .verdict
        })
        .collect()
}

/// What `flinch analyze` says of each span, and of the machine moment by moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Judgement {
    /// One per span.
    pub verdicts: Vec<Verdict>,
    /// One per span: its time by state.
    pub compositions: Vec<Composition>,
    /// The state timeline over the range asked for: `(start_ns, end_ns, state)`.
    pub states: Vec<(u64, u64, Verdict)>,
}

/// The verdict and composition of every span and the state timeline over `range` (ns),
/// from `flinch analyze`'s analysis with `idle`.
pub fn judge(
    trace: &Trace,
    spans: &SpanSet,
    idle: Option<&Idle>,
    range: Option<(u64, u64)>,
) -> Judgement {
    let analyzer = Analyzer::new(
        trace,
        idle.map(|i| (&i.profile, i.via.as_str())),
        Thresholds::default(),
    );
    let mut j = Judgement::default();
    for s in &spans.spans {
        let r = analyzer.span(&trace.marks[s.marks.0], &trace.marks[s.marks.1]);
        j.verdicts.push(r.verdict);
        j.compositions.push(r.composition);
    }
    if let Some((a, b)) = range {
        j.states = analyzer.state_timeline(a, b);
    }
    j
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x_start_and_x_end_pair_by_req() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.flinch.csv");
        crate::testing::write_demo_trace(&p).unwrap();
        let t = flinch_core::trace::read_trace(&p).unwrap();
        let set = find_spans(&t, &SpanSpec::Auto).unwrap();
        let names: Vec<String> = set.spans.iter().map(Span::label).collect();
        assert_eq!(names[0], "calib");
        assert_eq!(
            names[1..],
            [
                "phase req=1",
                "phase req=2",
                "phase req=3",
                "phase req=4",
                "phase req=5",
                "phase req=6"
            ]
        );
        assert_eq!((set.unmatched_starts, set.unmatched_ends), (0, 0));
        let set = find_spans(
            &t,
            &SpanSpec::Labels {
                from: "infer_start".into(),
                to: "first_token".into(),
            },
        )
        .unwrap();
        assert_eq!(set.spans.len(), 2);
        assert!(
            set.spans
                .iter()
                .all(|s| s.duration_s() == 0.324 && s.name == "infer_start→first_token")
        );
        let e = find_spans(
            &t,
            &SpanSpec::Labels {
                from: "nope".into(),
                to: "done".into(),
            },
        )
        .unwrap_err();
        assert!(
            e.contains("no mark labelled \"nope\"") && e.contains("phase_start (6)"),
            "{e}"
        );
    }
}

//! Which spans a picture shades, and the colour (verdict) of each.
//!
//! Spans run from a mark labelled `from` to a mark labelled `to`, paired within their
//! request id (`req`) first in, first out, the rule of `flinch analyze`. Without
//! `--from/--to`, every pair of labels `X_start` / `X_end` in the trace gives spans named
//! `X`.
//!
//! The verdict here is a **placeholder** until the analysis (`flinch analyze`) is on main:
//! a device is busy when its mean power over the span exceeds its idle level by
//! `max(3 W, 5 %)`, or one of its utilisation / activity gauges averages over 10 %; a
//! channel speaks only with at least two samples inside the span (a 100-ms utilisation
//! reading cannot see a 50-ms span). A span is `gpu-compute` when a GPU is busy, else
//! `cpu-compute` when another device is busy, else `idle-wait` when some device was seen
//! idle, else `unresolved` (too short for every sensor, or no idle level and no activity
//! gauge).

use crate::idle::IdleLevels;
use crate::series::Series;
use flinch_core::marks::Mark;
use flinch_core::trace::Trace;
use std::collections::{BTreeMap, HashMap, VecDeque};

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

/// Pairs marks (sorted by time) from `from` to `to`: within a request id (marks without
/// one pair among themselves) each `to` closes the oldest open `from`; when `from == to`,
/// consecutive marks of a request delimit spans. Returns (pairs, unmatched starts,
/// unmatched ends).
pub fn pair_marks(marks: &[Mark], from: &str, to: &str) -> (Vec<(usize, usize)>, usize, usize) {
    let mut pairs = Vec::new();
    let mut open: HashMap<Option<&str>, VecDeque<usize>> = HashMap::new();
    let mut unmatched_ends = 0;
    for (i, m) in marks.iter().enumerate() {
        let q = open.entry(m.req()).or_default();
        if from == to {
            if m.label == from {
                if let Some(j) = q.pop_front() {
                    pairs.push((j, i));
                }
                q.push_back(i);
            }
        } else if m.label == from {
            q.push_back(i);
        } else if m.label == to {
            match q.pop_front() {
                Some(j) => pairs.push((j, i)),
                None => unmatched_ends += 1,
            }
        }
    }
    let unmatched_starts = if from == to {
        0
    } else {
        open.values().map(VecDeque::len).sum()
    };
    pairs.sort_unstable();
    (pairs, unmatched_starts, unmatched_ends)
}

/// The labels in a trace with their counts, for messages: `a (3), b (3)`.
pub fn describe_labels(trace: &Trace) -> String {
    let labels = trace.labels();
    if labels.is_empty() {
        return "none (the trace has no marks)".into();
    }
    labels
        .iter()
        .map(|(l, n)| format!("{l} ({n})"))
        .collect::<Vec<_>>()
        .join(", ")
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
        let (p, us, ue) = pair_marks(&trace.marks, &from, &to);
        set.unmatched_starts += us;
        set.unmatched_ends += ue;
        for (a, b) in p {
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

/// What a span was: the machine computing (on a GPU or elsewhere), or waiting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verdict {
    /// A GPU was busy.
    GpuCompute,
    /// A CPU (or another non-GPU device) was busy, no GPU.
    CpuCompute,
    /// Every device that could be seen was at its idle level.
    IdleWait,
    /// The sensors could not tell (too short, no idle level, no activity).
    Unresolved,
}

impl Verdict {
    /// All verdicts, in legend order.
    pub const ALL: [Verdict; 4] = [
        Verdict::GpuCompute,
        Verdict::CpuCompute,
        Verdict::IdleWait,
        Verdict::Unresolved,
    ];
    /// As `flinch analyze` writes it.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::GpuCompute => "gpu-compute",
            Verdict::CpuCompute => "cpu-compute",
            Verdict::IdleWait => "idle-wait",
            Verdict::Unresolved => "unresolved",
        }
    }
}

/// Whether a device name is a GPU's (`gpu0`, `dcgm-gpu1`).
pub fn is_gpu_device(device: &str) -> bool {
    device.contains("gpu")
}

/// The placeholder verdict of one span (see the module docs).
pub fn classify(span: &Span, power: &[Series], activity: &[Series], idle: &IdleLevels) -> Verdict {
    // device -> Some(busy) / None (could not tell)
    let mut seen: BTreeMap<&str, bool> = BTreeMap::new();
    for s in power {
        let Some(idle_w) = idle.watts(&s.device) else {
            continue;
        };
        let (mean, n) = s.mean_in(span.start_ns, span.end_ns);
        let Some(mean) = mean.filter(|_| n >= 2) else {
            continue;
        };
        let busy = mean - idle_w > (0.05 * idle_w).max(3.0);
        let e = seen.entry(&s.device).or_insert(false);
        *e |= busy;
    }
    for s in activity {
        let (mean, n) = s.mean_in(span.start_ns, span.end_ns);
        let Some(mean) = mean.filter(|_| n >= 2) else {
            continue;
        };
        let e = seen.entry(&s.device).or_insert(false);
        *e |= mean > 10.0;
    }
    if seen.iter().any(|(d, &b)| b && is_gpu_device(d)) {
        Verdict::GpuCompute
    } else if seen.values().any(|&b| b) {
        Verdict::CpuCompute
    } else if !seen.is_empty() {
        Verdict::IdleWait
    } else {
        Verdict::Unresolved
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flinch_core::marks::MarkVia;

    fn mark(t: u64, label: &str, req: Option<&str>) -> Mark {
        Mark {
            t_ns: t,
            recv_ns: t,
            t_from_client: true,
            label: label.into(),
            fields: req
                .map(|r| vec![("req".to_string(), r.to_string())])
                .unwrap_or_default(),
            via: MarkVia::Api,
        }
    }

    #[test]
    fn pairing_is_fifo_within_a_request() {
        let m = vec![
            mark(1, "a", Some("1")),
            mark(2, "a", Some("2")),
            mark(3, "b", Some("2")),
            mark(4, "a", Some("1")),
            mark(5, "b", Some("1")),
            mark(6, "b", Some("1")),
            mark(7, "b", Some("3")),
        ];
        let (p, us, ue) = pair_marks(&m, "a", "b");
        assert_eq!(p, vec![(0, 4), (1, 2), (3, 5)]);
        assert_eq!((us, ue), (0, 1));
        let (p, us, _) = pair_marks(&m, "a", "a");
        assert_eq!(p, vec![(0, 3)]);
        assert_eq!(us, 0);
    }

    fn series(device: &str, t: Vec<u64>, v: Vec<f64>) -> Series {
        Series {
            channel: format!("{device}.x"),
            device: device.into(),
            label: String::new(),
            unit: "W".into(),
            t_ns: t,
            values: v,
        }
    }

    #[test]
    fn placeholder_verdicts_follow_power_over_idle() {
        let span = |a, b| Span {
            name: "s".into(),
            from: "a".into(),
            to: "b".into(),
            req: None,
            start_ns: a,
            end_ns: b,
            marks: (0, 1),
        };
        let gpu = series("gpu0", (0..10).map(|i| i * 10).collect(), {
            let mut v = vec![100.0; 5];
            v.extend([400.0; 5]);
            v
        });
        let idle = IdleLevels::uniform(100.0, "test");
        let none = IdleLevels::default();
        let p = std::slice::from_ref(&gpu);
        assert_eq!(classify(&span(0, 40), p, &[], &idle), Verdict::IdleWait);
        assert_eq!(classify(&span(50, 90), p, &[], &idle), Verdict::GpuCompute);
        // one sample inside: cannot tell
        assert_eq!(classify(&span(55, 65), p, &[], &idle), Verdict::Unresolved);
        // no idle level, no activity: cannot tell
        assert_eq!(classify(&span(50, 90), p, &[], &none), Verdict::Unresolved);
        let cpu = series("package-0", vec![0, 10, 20], vec![80.0, 80.0, 80.0]);
        assert_eq!(
            classify(
                &span(0, 20),
                &[cpu],
                &[],
                &IdleLevels::uniform(20.0, "test")
            ),
            Verdict::CpuCompute
        );
        let util = series("gpu0", vec![0, 10, 20], vec![90.0, 95.0, 99.0]);
        assert_eq!(
            classify(&span(0, 20), &[], std::slice::from_ref(&util), &none),
            Verdict::GpuCompute
        );
        // one utilisation reading inside the span says nothing
        assert_eq!(
            classify(&span(5, 15), &[], &[util], &none),
            Verdict::Unresolved
        );
    }
}

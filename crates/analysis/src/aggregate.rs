//! Energy over many spans at once, from the **union** of their time: spans that overlap (four
//! requests batched into one prefill) are never counted twice, and spans too short for any
//! sensor (a 14 ms decode step) are measurable together.
//!
//! Spans are added in start order ([`Aggregator::add`]); the union is built as they come, and
//! each stretch of it is measured as soon as a later span starts after its end, so nothing
//! per span is kept: memory stays bounded by the number of devices, whatever the number of
//! spans.
//!
//! ```
//! use flinch_analysis::aggregate::SpanUnion;
//! let mut u = SpanUnion::default();
//! assert_eq!(u.add(0, 10), None);
//! assert_eq!(u.add(5, 20), None); // overlaps: the stretch grows to [0, 20]
//! assert_eq!(u.add(30, 40), Some((0, 20))); // [0, 20] is closed
//! assert_eq!(u.finish(), Some((30, 40)));
//! assert_eq!((u.spans(), u.covered_ns()), (3, 30));
//! ```
//!
//! # The bound of a total
//!
//! Each stretch of the union has two edges and an interior, with the limits of
//! [`crate::bound`]. Over many stretches, edge errors that come from where a sample fell
//! relative to an edge have no preferred sign and add like independent errors
//! (`√3 × √Σ e²`); what does not average out is a sensor that lags: a delay `s` moves
//! `s × (P(a⁻) − P(b⁻))` out of a stretch `[a, b]` (`P(x⁻)`: the power just before `x`),
//! which is summed with its sign over all stretches. The half-width of the total is the
//! smaller of that (`τ × |Σ (P(a⁻) − P(b⁻))| + √3 × √Σ e²`) and the worst case (every edge at
//! its limit), widened to take in the energy counter's total when the counter resolved the
//! union; active energy adds the idle level's uncertainty × the union's length. The bound
//! of the mean per span is the total's divided by the count: it narrows as spans are added
//! wherever their edges do not all fall on the same kind of power step.

use crate::analyzer::Analyzer;
use crate::bound::{Bound, idle_uncertainty_w};
use crate::report::ChannelStatus;
use flinch_core::integrate::{Method, resolves};
use serde::Serialize;
use std::collections::BTreeMap;

/// The union of spans added in start order, as closed stretches.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpanUnion {
    cur: Option<(u64, u64)>,
    spans: u64,
    covered_ns: u64,
    last_start: u64,
}

impl SpanUnion {
    /// Adds the span `[start, end]` (spans must come in start order; a span that starts
    /// before the previous one is taken as starting with it). Returns the stretch of the
    /// union that this span closes: one that ends before it starts.
    pub fn add(&mut self, start: u64, end: u64) -> Option<(u64, u64)> {
        let start = start.max(self.last_start);
        let end = end.max(start);
        self.last_start = start;
        self.spans += 1;
        match &mut self.cur {
            Some((_, b)) if start <= *b => {
                *b = (*b).max(end);
                None
            }
            cur => {
                let closed = cur.replace((start, end));
                if let Some((a, b)) = closed {
                    self.covered_ns += b - a;
                }
                closed
            }
        }
    }

    /// Closes the last stretch and returns it.
    pub fn finish(&mut self) -> Option<(u64, u64)> {
        let closed = self.cur.take();
        if let Some((a, b)) = closed {
            self.covered_ns += b - a;
        }
        closed
    }

    /// The stretch still open.
    pub fn open(&self) -> Option<(u64, u64)> {
        self.cur
    }

    /// Spans added.
    pub fn spans(&self) -> u64 {
        self.spans
    }

    /// Time covered by the closed stretches, ns.
    pub fn covered_ns(&self) -> u64 {
        self.covered_ns
    }
}

/// A total over the union and the mean per span, each with its bound, J.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Totals {
    /// Over the union of span time.
    pub total: f64,
    /// `[lo, hi]` of the total.
    pub total_bound: Bound,
    /// `total / count`: per span (`null` when part of the union was not measured).
    pub mean: Option<f64>,
    /// `[lo, hi]` of the mean.
    pub mean_bound: Option<Bound>,
}

/// One device over the union of the spans.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeviceAggregate {
    /// The method that measured most of the union.
    pub method: Option<Method>,
    /// Time of the union no channel of the device measured, s.
    pub unmeasured_s: f64,
    /// Energy.
    pub energy_j: Totals,
    /// Energy above idle (`null` without an idle level).
    pub active_energy_j: Option<Totals>,
}

/// Energy of all spans of a label pair, over the union of their time.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Aggregate {
    /// Spans.
    pub count: u64,
    /// Length of the union of span time, s.
    pub union_s: f64,
    /// Sum of span durations, s (more than `union_s` when spans overlap).
    pub span_time_s: f64,
    /// Stretches the union is made of.
    pub stretches: u64,
    /// Per device.
    pub devices: BTreeMap<String, DeviceAggregate>,
}

#[derive(Clone, Debug, Default)]
struct Acc {
    energy_j: f64,
    active_j: f64,
    has_idle: bool,
    idle_j: f64,
    measured_ns: u64,
    unmeasured_ns: u64,
    worst_half: f64,
    interior_sq: f64,
    rand_sq: f64,
    sys_w: f64,
    tau_s: f64,
    counter_j: f64,
    counter_updates: u32,
    counter_period_ns: Option<u64>,
    counter_complete: bool,
    by_method: BTreeMap<Method, u64>,
}

/// Adds spans in start order and measures the union of their time: see the module docs.
///
/// Each call takes the [`Analyzer`] to measure with, so that a caller streaming a trace can
/// hand over one over the samples it holds at the time (they must cover the stretch that
/// is open, from [`Aggregator::open_stretch`] on).
pub struct Aggregator {
    union: SpanUnion,
    span_time_ns: u64,
    stretches: u64,
    acc: BTreeMap<String, Acc>,
}

impl Aggregator {
    /// An empty aggregate over the devices of `an`'s trace.
    pub fn new(an: &Analyzer<'_>) -> Self {
        let acc = an
            .devices
            .keys()
            .map(|d| {
                (
                    d.clone(),
                    Acc {
                        counter_complete: true,
                        ..Acc::default()
                    },
                )
            })
            .collect();
        Aggregator {
            union: SpanUnion::default(),
            span_time_ns: 0,
            stretches: 0,
            acc,
        }
    }

    /// Adds the span `[start_ns, end_ns]`; spans must come in start order. A stretch of the
    /// union that this span closes is measured with `an`.
    pub fn add(&mut self, an: &Analyzer<'_>, start_ns: u64, end_ns: u64) {
        self.span_time_ns += end_ns.saturating_sub(start_ns);
        if let Some((a, b)) = self.union.add(start_ns, end_ns) {
            self.stretch(an, a, b);
        }
    }

    /// The stretch of the union still open, `[start, end]` so far: what the next
    /// measurement needs samples of.
    pub fn open_stretch(&self) -> Option<(u64, u64)> {
        self.union.open()
    }

    /// The totals over everything added (the open stretch measured with `an`).
    pub fn finish(mut self, an: &Analyzer<'_>) -> Aggregate {
        if let Some((a, b)) = self.union.finish() {
            self.stretch(an, a, b);
        }
        let count = self.union.spans();
        let n = count.max(1) as f64;
        let devices = self
            .acc
            .into_iter()
            .map(|(dev, x)| {
                let sys_rand = x.tau_s * x.sys_w.abs() + 3f64.sqrt() * x.rand_sq.sqrt();
                let worst = x.worst_half + 3f64.sqrt() * x.interior_sq.sqrt();
                let half = worst.min(sys_rand);
                let mut b = Bound::around(x.energy_j, half);
                let union_ns = x.measured_ns;
                if x.counter_complete
                    && x.counter_updates > 0
                    && resolves(x.counter_updates, union_ns, x.counter_period_ns)
                {
                    b = b.hull(x.counter_j);
                }
                let complete = x.unmeasured_ns == 0 && x.measured_ns > 0;
                let totals = |total: f64, bound: Bound| Totals {
                    total,
                    total_bound: bound,
                    mean: complete.then(|| total / n),
                    mean_bound: complete.then(|| bound.per(n)),
                };
                let active = x.has_idle.then(|| {
                    let ab = b.shift(x.active_j - x.energy_j, x.idle_j);
                    totals(x.active_j, ab)
                });
                (
                    dev,
                    DeviceAggregate {
                        method: x.by_method.iter().max_by_key(|(_, t)| **t).map(|(m, _)| *m),
                        unmeasured_s: x.unmeasured_ns as f64 / 1e9,
                        energy_j: totals(x.energy_j, b),
                        active_energy_j: active,
                    },
                )
            })
            .collect();
        Aggregate {
            count,
            union_s: self.union.covered_ns() as f64 / 1e9,
            span_time_s: self.span_time_ns as f64 / 1e9,
            stretches: self.stretches,
            devices,
        }
    }

    fn stretch(&mut self, an: &Analyzer<'_>, a: u64, b: u64) {
        self.stretches += 1;
        let d_ns = b - a;
        let d_s = d_ns as f64 / 1e9;
        for (dev, (_, idx)) in &an.devices {
            let Some(x) = self.acc.get_mut(dev) else {
                continue;
            };
            let chosen = idx
                .iter()
                .copied()
                .map(|i| (i, an.measure(i, a, b)))
                .find(|(_, m)| m.status == ChannelStatus::Ok);
            let Some((ci, m)) = chosen else {
                x.unmeasured_ns += d_ns;
                x.counter_complete = false;
                continue;
            };
            let method = an.chans[ci].method.unwrap_or(Method::Average);
            *x.by_method.entry(method).or_default() += d_ns;
            x.measured_ns += d_ns;
            x.energy_j += m.value;
            if let Some((_, l)) = &an.chans[ci].idle {
                x.has_idle = true;
                x.active_j += m.value - l.mean * d_s;
                x.idle_j += d_s
                    * idle_uncertainty_w(
                        l,
                        an.idle_duration_s,
                        an.trace.channels[ci].spec.update_period_ns,
                    );
            }
            let lim = an.limits(ci, a, b);
            x.worst_half += lim.start.mag_j + lim.end.mag_j;
            x.interior_sq += lim.interior_sq;
            x.rand_sq += lim.start.mag_j.powi(2) + lim.end.mag_j.powi(2) + lim.interior_sq;
            let lag = lim.start.before_w - lim.end.before_w;
            if lag.is_finite() {
                x.sys_w += lag;
            }
            x.tau_s = x.tau_s.max(lim.start.tau_s);
            // the energy counter's own answer, when it is not the preferred channel
            let counter = idx
                .iter()
                .copied()
                .find(|&i| i != ci && an.chans[i].method == Some(Method::Counter));
            match counter.map(|i| (i, an.measure(i, a, b))) {
                Some((i, cm)) if cm.status == ChannelStatus::Ok => {
                    x.counter_j += cm.value;
                    x.counter_updates += cm.changes;
                    x.counter_period_ns = an.trace.channels[i].spec.update_period_ns;
                }
                _ => x.counter_complete = false,
            }
        }
    }
}

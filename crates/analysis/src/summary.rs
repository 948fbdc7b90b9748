//! The summary over many spans, all at once ([`summarize`]) or a span at a time in bounded
//! memory ([`SummaryBuilder`]).
//!
//! Up to [`EXACT_LIMIT`] values per distribution the builder keeps every value and gives
//! exactly what [`summarize`] gives (the values are put back in span start order first, so
//! even sums come out bit for bit the same). Beyond that it switches, for that
//! distribution, to:
//!
//! - count, min, max and total kept exactly (the total then sums in the order spans were
//!   measured: rounding aside, the same);
//! - mean and standard deviation from running sums (Welford's method): rounding only;
//! - p50, p90, p99 from a DDSketch ([`sketches_ddsketch`], mergeable) with relative accuracy
//!   [`QUANTILE_RELATIVE_ERROR`]: each of the two order statistics the exact quantile
//!   interpolates between is known within 0.5 % of its value, and so is their
//!   interpolation (when both have the same sign; else within 0.5 % of the larger
//!   magnitude);
//! - the histogram from [`HISTOGRAM_FINE_BINS`] fine equal-width bins that widen as values
//!   come in, folded into the final bins at the end: a value closer than
//!   [`HISTOGRAM_EDGE_TOLERANCE`] of a final bin's width to one of its edges may be
//!   counted in the neighbouring bin.
//!
//! So the memory a summary needs is bounded by the number of devices, not by the number of
//! spans.

use crate::aggregate::Aggregate;
use crate::report::{Approximation, EnergyStats, SpanReport, Summary, Verdict};
use crate::stats::{Distribution, Histogram};
use sketches_ddsketch::{Config, DDSketch};
use std::collections::BTreeMap;

/// Values per distribution kept exactly before the summary approximates it.
pub const EXACT_LIMIT: usize = 1 << 16;
/// Relative accuracy of the quantiles past [`EXACT_LIMIT`] values.
pub const QUANTILE_RELATIVE_ERROR: f64 = 0.005;
/// Fine bins the histogram is kept in past [`EXACT_LIMIT`] values.
pub const HISTOGRAM_FINE_BINS: usize = 4096;
/// Past [`EXACT_LIMIT`] values: how close to a bin edge, as a share of a final bin's
/// width, a value may be counted in the neighbouring bin (fine bins are at most
/// 2 / [`HISTOGRAM_FINE_BINS`] of the range wide, final bins 1/20 of it).
pub const HISTOGRAM_EDGE_TOLERANCE: f64 = 0.01;

/// The summary over spans. With the `aggregate` of the same spans, the energy totals are
/// those over the union of span time (overlapping spans counted once); without it they are
/// the sums over spans.
pub fn summarize(
    spans: &[SpanReport],
    aggregate: Option<Aggregate>,
    unmatched_starts: usize,
    unmatched_ends: usize,
) -> Summary {
    let durations: Vec<f64> = spans.iter().map(|s| s.duration_s).collect();
    let mut verdicts: BTreeMap<&'static str, usize> =
        Verdict::ALL.iter().map(|v| (v.name(), 0)).collect();
    for s in spans {
        *verdicts.entry(s.verdict.name()).or_insert(0) += 1;
    }
    let mut active: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut total: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for s in spans {
        for (dev, d) in &s.devices {
            if let Some(a) = d.active_energy_j {
                active.entry(dev.clone()).or_default().push(a);
            }
            if let Some(e) = d.energy_j {
                total.entry(dev.clone()).or_default().push(e);
            }
        }
    }
    let stats = |m: BTreeMap<String, Vec<f64>>, active: bool| -> BTreeMap<String, EnergyStats> {
        m.into_iter()
            .filter_map(|(k, v)| {
                let mut s = EnergyStats::of(&v)?;
                s.total = union_total(aggregate.as_ref(), &k, active).unwrap_or(s.total);
                Some((k, s))
            })
            .collect()
    };
    Summary {
        count: spans.len(),
        duration_s: Distribution::of(&durations),
        histogram: Histogram::of(&durations, Histogram::default_bins(durations.len())),
        verdicts,
        active_energy_j: stats(active, true),
        energy_j: stats(total, false),
        unmatched_starts,
        unmatched_ends,
        aggregate,
        approximate: None,
    }
}

/// A device's total over the union of span time, from the aggregate.
fn union_total(aggregate: Option<&Aggregate>, dev: &str, active: bool) -> Option<f64> {
    aggregate.and_then(|a| a.devices.get(dev)).and_then(|d| {
        if active {
            d.active_energy_j.as_ref().map(|t| t.total)
        } else {
            Some(d.energy_j.total)
        }
    })
}

impl EnergyStats {
    fn of(xs: &[f64]) -> Option<Self> {
        let sum = xs.iter().sum();
        Some(EnergyStats {
            count: xs.len(),
            total: sum,
            sum_of_spans: sum,
            dist: Distribution::of(xs)?,
        })
    }
}

/// What the summary takes from a span: small, so it can be taken where the span is
/// measured and the report itself passed on.
#[derive(Clone, Debug, PartialEq)]
pub struct SpanFigures {
    /// Length, s.
    pub duration_s: f64,
    /// Its verdict.
    pub verdict: Verdict,
    /// Per device: (active energy, energy), J.
    pub devices: Vec<(String, Option<f64>, Option<f64>)>,
}

impl SpanFigures {
    /// The figures of a span.
    pub fn of(s: &SpanReport) -> Self {
        SpanFigures {
            duration_s: s.duration_s,
            verdict: s.verdict,
            devices: s
                .devices
                .iter()
                .map(|(k, d)| (k.clone(), d.active_energy_j, d.energy_j))
                .collect(),
        }
    }
}

/// Builds the [`Summary`] a span at a time, in any order: each span comes with its place
/// in start order (`order`, any key that sorts like the spans' starts), which puts the
/// exactly kept values back in the order [`summarize`] sees them.
#[derive(Clone)]
pub struct SummaryBuilder {
    limit: usize,
    count: usize,
    verdicts: BTreeMap<&'static str, usize>,
    durations: Values,
    active: BTreeMap<String, Values>,
    energy: BTreeMap<String, Values>,
}

impl Default for SummaryBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl SummaryBuilder {
    /// Exact up to [`EXACT_LIMIT`] values per distribution.
    pub fn new() -> Self {
        Self::with_exact_limit(EXACT_LIMIT)
    }

    /// Exact up to `limit` values per distribution (tests use small limits).
    pub fn with_exact_limit(limit: usize) -> Self {
        SummaryBuilder {
            limit,
            count: 0,
            verdicts: Verdict::ALL.iter().map(|v| (v.name(), 0)).collect(),
            durations: Values::default(),
            active: BTreeMap::new(),
            energy: BTreeMap::new(),
        }
    }

    /// Spans added.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Adds a span whose place in start order is `order`.
    pub fn add(&mut self, order: (u64, u64), s: &SpanFigures) {
        self.count += 1;
        *self.verdicts.entry(s.verdict.name()).or_insert(0) += 1;
        let limit = self.limit;
        self.durations.add(order, s.duration_s, limit);
        // One look-up per value (a new device's name is copied once).
        fn add(
            m: &mut BTreeMap<String, Values>,
            dev: &str,
            order: (u64, u64),
            x: f64,
            limit: usize,
        ) {
            match m.get_mut(dev) {
                Some(v) => v.add(order, x, limit),
                None => {
                    let mut v = Values::default();
                    v.add(order, x, limit);
                    m.insert(dev.to_owned(), v);
                }
            }
        }
        for (dev, a, e) in &s.devices {
            if let Some(a) = a {
                add(&mut self.active, dev, order, *a, limit);
            }
            if let Some(e) = e {
                add(&mut self.energy, dev, order, *e, limit);
            }
        }
    }

    /// The summary; with the `aggregate` of the same spans, totals over the union of their
    /// time.
    pub fn finish(
        mut self,
        aggregate: Option<Aggregate>,
        unmatched_starts: usize,
        unmatched_ends: usize,
    ) -> Summary {
        let approximate = std::iter::once(&self.durations)
            .chain(self.active.values())
            .chain(self.energy.values())
            .any(|v| v.approx.is_some());
        let (duration_s, histogram) = self.durations.finish_durations();
        let stats = |m: BTreeMap<String, Values>, active: bool| -> BTreeMap<String, EnergyStats> {
            m.into_iter()
                .filter_map(|(k, v)| {
                    let mut s = v.finish_energy()?;
                    s.total = union_total(aggregate.as_ref(), &k, active).unwrap_or(s.total);
                    Some((k, s))
                })
                .collect()
        };
        let active = std::mem::take(&mut self.active);
        let energy = std::mem::take(&mut self.energy);
        Summary {
            count: self.count,
            duration_s,
            histogram,
            verdicts: self.verdicts,
            active_energy_j: stats(active, true),
            energy_j: stats(energy, false),
            unmatched_starts,
            unmatched_ends,
            aggregate,
            approximate: approximate.then_some(Approximation {
                exact_up_to: self.limit,
                quantile_relative_error: QUANTILE_RELATIVE_ERROR,
                histogram_edge_tolerance: HISTOGRAM_EDGE_TOLERANCE,
            }),
        }
    }
}

/// One distribution: every value (with its order) up to the limit, then running figures.
#[derive(Clone, Default)]
struct Values {
    exact: Vec<((u64, u64), f64)>,
    approx: Option<Box<Approx>>,
}

#[derive(Clone)]
struct Approx {
    count: usize,
    total: f64,
    /// Finite values: their count, Welford's mean and sum of squared deviations.
    finite: usize,
    mean: f64,
    m2: f64,
    min: f64,
    max: f64,
    sketch: DDSketch,
    grid: Grid,
}

impl Values {
    fn add(&mut self, order: (u64, u64), x: f64, limit: usize) {
        if let Some(a) = &mut self.approx {
            a.add(x);
            return;
        }
        self.exact.push((order, x));
        if self.exact.len() > limit {
            self.exact.sort_by_key(|(o, _)| *o);
            let mut a = Approx::new(&self.exact);
            for (_, x) in &self.exact {
                a.add(*x);
            }
            // The first values are summed in span order, as `summarize` would.
            a.total = self.exact.iter().map(|(_, x)| x).sum();
            self.exact = Vec::new();
            self.approx = Some(Box::new(a));
        }
    }

    fn sorted_exact(&mut self) -> Vec<f64> {
        self.exact.sort_by_key(|(o, _)| *o);
        self.exact.iter().map(|(_, x)| *x).collect()
    }

    fn finish_durations(mut self) -> (Option<Distribution>, Histogram) {
        match self.approx {
            Some(a) => (a.distribution(), a.histogram()),
            None => {
                let xs = self.sorted_exact();
                (
                    Distribution::of(&xs),
                    Histogram::of(&xs, Histogram::default_bins(xs.len())),
                )
            }
        }
    }

    fn finish_energy(mut self) -> Option<EnergyStats> {
        match self.approx {
            Some(a) => Some(EnergyStats {
                count: a.count,
                total: a.total,
                sum_of_spans: a.total,
                dist: a.distribution()?,
            }),
            None => EnergyStats::of(&self.sorted_exact()),
        }
    }
}

impl Approx {
    fn new(first: &[((u64, u64), f64)]) -> Self {
        let finite = || first.iter().map(|(_, x)| *x).filter(|x| x.is_finite());
        let lo = finite().fold(f64::INFINITY, f64::min);
        let hi = finite().fold(f64::NEG_INFINITY, f64::max);
        Approx {
            count: 0,
            total: 0.0,
            finite: 0,
            mean: 0.0,
            m2: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            sketch: DDSketch::new(Config::new(QUANTILE_RELATIVE_ERROR, 8192, 1e-9)),
            grid: Grid::new(lo, hi),
        }
    }

    fn add(&mut self, x: f64) {
        self.count += 1;
        self.total += x;
        if !x.is_finite() {
            return;
        }
        self.finite += 1;
        let d = x - self.mean;
        self.mean += d / self.finite as f64;
        self.m2 += d * (x - self.mean);
        self.min = self.min.min(x);
        self.max = self.max.max(x);
        self.sketch.add(x);
        self.grid.add(x);
    }

    /// The value of rank `i` (0-based, ascending) as the sketch knows it.
    fn rank(&self, i: usize) -> f64 {
        let n = self.finite;
        if i == 0 {
            return self.min;
        }
        if i + 1 >= n {
            return self.max;
        }
        // The sketch's rank of q is ⌊q (n − 1)⌋; aim at the middle of rank i.
        let q = (i as f64 + 0.5) / (n - 1) as f64;
        self.sketch
            .quantile(q)
            .ok()
            .flatten()
            .unwrap_or(f64::NAN)
            .clamp(self.min, self.max)
    }

    fn quantile(&self, q: f64) -> f64 {
        let n = self.finite;
        let pos = q.clamp(0.0, 1.0) * (n - 1) as f64;
        let i = pos.floor() as usize;
        let frac = pos - i as f64;
        if i + 1 >= n {
            return self.max;
        }
        let (a, b) = (self.rank(i), self.rank(i + 1));
        a + (b - a) * frac
    }

    fn distribution(&self) -> Option<Distribution> {
        if self.finite == 0 {
            return None;
        }
        let std = if self.finite < 2 {
            0.0
        } else {
            (self.m2 / (self.finite - 1) as f64).sqrt()
        };
        Some(Distribution {
            min: self.min,
            p50: self.quantile(0.5),
            p90: self.quantile(0.9),
            p99: self.quantile(0.99),
            max: self.max,
            mean: self.mean,
            std,
        })
    }

    fn histogram(&self) -> Histogram {
        self.grid
            .fold(self.min, self.max, Histogram::default_bins(self.count))
    }
}

/// Equal-width fine bins over a range that doubles (merging neighbours) to take in values
/// outside it.
#[derive(Clone, Debug)]
struct Grid {
    lo: f64,
    width: f64,
    counts: Vec<u64>,
}

impl Grid {
    fn new(lo: f64, hi: f64) -> Self {
        let (lo, hi) = if lo.is_finite() && hi.is_finite() {
            (lo, hi)
        } else {
            (0.0, 1.0)
        };
        let span = if hi > lo { hi - lo } else { lo.abs().max(1e-9) };
        Grid {
            lo,
            width: span / (HISTOGRAM_FINE_BINS / 2) as f64,
            counts: vec![0; HISTOGRAM_FINE_BINS],
        }
    }

    fn hi(&self) -> f64 {
        self.lo + self.width * self.counts.len() as f64
    }

    /// Doubles the range: to the right keeping `lo`, or to the left keeping the top.
    fn widen(&mut self, right: bool) {
        let k = self.counts.len();
        let mut merged = vec![0u64; k];
        for (i, c) in self.counts.iter().enumerate() {
            let j = if right { i / 2 } else { (i + k) / 2 };
            merged[j] += c;
        }
        if !right {
            self.lo -= self.width * k as f64;
        }
        self.width *= 2.0;
        self.counts = merged;
    }

    fn add(&mut self, x: f64) {
        while x < self.lo {
            self.widen(false);
        }
        while x >= self.hi() {
            self.widen(true);
        }
        let i = (((x - self.lo) / self.width) as usize).min(self.counts.len() - 1);
        self.counts[i] += 1;
    }

    /// Folds the fine bins into `bins` equal bins from `min` to `max` (the last closed), each
    /// fine bin into the final bin holding its centre.
    fn fold(&self, min: f64, max: f64, bins: usize) -> Histogram {
        let total: u64 = self.counts.iter().sum();
        if total == 0 {
            return Histogram::default();
        }
        if max <= min {
            return Histogram {
                edges: vec![min, max],
                counts: vec![total],
            };
        }
        let bins = bins.max(1);
        let width = (max - min) / bins as f64;
        let edges: Vec<f64> = (0..=bins)
            .map(|i| {
                if i == bins {
                    max
                } else {
                    min + width * i as f64
                }
            })
            .collect();
        let mut counts = vec![0u64; bins];
        for (i, c) in self.counts.iter().enumerate() {
            if *c == 0 {
                continue;
            }
            let centre = (self.lo + self.width * (i as f64 + 0.5)).clamp(min, max);
            let j = (((centre - min) / width) as usize).min(bins - 1);
            counts[j] += c;
        }
        Histogram { edges, counts }
    }
}

//! How far a measured energy can be from the truth: a bound `[lo, hi]` from what limits it.
//!
//! For one channel over `[a, b]` (see `docs/analysis.md`, *Bounds*):
//!
//! - **Edges.** A sensor places a change up to `τ` (one and a half update periods:
//!   [`response_ns`]) away from where it happened, so the energy within `τ` of each edge may
//!   belong on the other side of it. At each edge the error is at most `τ × ΔP`, with `ΔP`
//!   the range of the power the channel saw within `τ` of the edge (for a counter, the range
//!   of its rates over `τ / 2` windows there).
//! - **Interior.** Between two samples the power curve is taken as a straight line; a
//!   change between them may have happened anywhere in the interval, which misplaces at most
//!   `|Δv| × max(dt, update period) / 2`. These errors have no preferred sign and are
//!   independent, so they add as `√3 × √Σ eₖ²` (three standard deviations of a sum of
//!   uniform errors). A counter has no interior error: it is exact between its reads.
//!
//! A device's bound is the preferred channel's value ± (edges + interior), widened to take in
//! the answer of every other channel that is a counter and resolved the span (the
//! disagreement between channels); active energy also carries the idle level's own
//! uncertainty times the duration ([`idle_uncertainty_w`]).

use crate::analyzer::Analyzer;
use crate::idle::ChannelIdle;
use flinch_core::channel::{ChannelKind, ChannelSpec};
use flinch_core::integrate::{integrate_counter, integrate_gauge, partition_from_front};
use serde::{Serialize, Serializer};

/// An interval `[lo, hi]`, written as a two-element array.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bound {
    /// Lower end.
    pub lo: f64,
    /// Upper end.
    pub hi: f64,
}

impl Bound {
    /// `[x − half, x + half]`.
    pub fn around(x: f64, half: f64) -> Self {
        Bound {
            lo: x - half,
            hi: x + half,
        }
    }
    /// The smallest interval holding this one and `x`.
    pub fn hull(self, x: f64) -> Self {
        Bound {
            lo: self.lo.min(x),
            hi: self.hi.max(x),
        }
    }
    /// Whether `x` lies in it (ends included).
    pub fn contains(&self, x: f64) -> bool {
        self.lo <= x && x <= self.hi
    }
    /// `hi − lo`.
    pub fn width(&self) -> f64 {
        self.hi - self.lo
    }
    /// Shifted by `dx` and widened by `pad` on both sides.
    pub fn shift(self, dx: f64, pad: f64) -> Self {
        Bound {
            lo: self.lo + dx - pad,
            hi: self.hi + dx + pad,
        }
    }
    /// Divided by a positive `n` (a total's bound → a mean's).
    pub fn per(self, n: f64) -> Self {
        Bound {
            lo: self.lo / n,
            hi: self.hi / n,
        }
    }
}

impl Serialize for Bound {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        [self.lo, self.hi].serialize(s)
    }
}

/// What makes a device's energy bound as wide as it is: half-widths, J.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct BoundTerms {
    /// The sensor's response time × the power step at the span's edges.
    pub edges_j: f64,
    /// Changes between samples inside the span (0 for a counter).
    pub interior_j: f64,
    /// How far the bound was widened to take in other channels' answers.
    pub channels_j: f64,
    /// The idle level's uncertainty × duration (active energy only).
    pub idle_j: f64,
}

/// How far from where it happened a channel may place a change, ns: one update period (a
/// reading may describe the power up to one period before its stamp) plus half a period
/// (the straight line between two readings can misplace a change by that much); `None` when
/// the channel states no period.
pub fn response_ns(spec: &ChannelSpec) -> Option<u64> {
    spec.update_period_ns.map(|p| p.saturating_mul(3) / 2)
}

/// How uncertain an idle level is, W: three standard errors of its mean (over as many
/// independent values as the profile's length holds update periods) plus its drift between
/// the first and last third of the profile.
pub fn idle_uncertainty_w(l: &ChannelIdle, duration_s: f64, update_period_ns: Option<u64>) -> f64 {
    let by_time = update_period_ns
        .filter(|&p| p > 0 && duration_s > 0.0)
        .map(|p| (duration_s / (p as f64 / 1e9)).floor().max(1.0));
    let n = match by_time {
        Some(t) => t.min(l.samples.max(1) as f64),
        None => l.samples.max(1) as f64,
    };
    3.0 * l.std / n.sqrt() + l.drift.unwrap_or(0.0).abs()
}

/// One edge of a measured stretch.
/// The response time `τ` a bound of channel `spec` from `a` on uses, ns: [`response_ns`],
/// or, for a channel that states no period, 1.5 × the spacing of its samples `t` around
/// `a` (the same from all the samples held or from those [`crate::measure::Near::around`]
/// a span starting at `a` that the channel measured).
pub(crate) fn response_at(spec: &ChannelSpec, t: &[u64], a: u64) -> u64 {
    response_ns(spec).unwrap_or_else(|| {
        let k = t.partition_point(|&x| x <= a).clamp(1, t.len().max(2) - 1);
        t.get(k)
            .zip(t.get(k - 1))
            .map(|(x, y)| 3 * (x - y) / 2)
            .unwrap_or(0)
    })
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Edge {
    /// The most energy misplaced across this edge, J (`τ × ΔP`).
    pub(crate) mag_j: f64,
    /// Mean power over the response time before the edge, W (for the systematic part of
    /// an aggregate's bound).
    pub(crate) before_w: f64,
    /// The response time used, s.
    pub(crate) tau_s: f64,
}

/// A channel's sensor limits over one stretch.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Limits {
    pub(crate) start: Edge,
    pub(crate) end: Edge,
    /// Σ eₖ² of the interior errors, J².
    pub(crate) interior_sq: f64,
}

impl Limits {
    /// Worst-case half-width of one stretch: both edges plus the interior.
    pub(crate) fn half_j(&self) -> f64 {
        self.start.mag_j + self.end.mag_j + 3f64.sqrt() * self.interior_sq.sqrt()
    }
}

impl Analyzer<'_> {
    /// The sensor limits of channel `i` over `[a, b]` (a channel that measured it).
    pub(crate) fn limits(&self, i: usize, a: u64, b: u64) -> Limits {
        let ch = &self.trace.channels[i];
        self.limits_in(i, &ch.t_ns, &ch.values, a, b)
    }

    /// [`Analyzer::limits`] over samples `t`, `v` of channel `i`: all of them, or those
    /// [`crate::measure::Near::around`] `[a − τ, b + τ]` ([`response_at`]).
    pub(crate) fn limits_in(&self, i: usize, t: &[u64], v: &[f64], a: u64, b: u64) -> Limits {
        let ch = &self.trace.channels[i];
        let (Some(&first), Some(&last)) = (t.first(), t.last()) else {
            return Limits::default();
        };
        let tau = response_at(&ch.spec, t, a);
        // Everything below reads the samples within `tau` of the span and the one on
        // either side of them: searched in those alone, they are found at the same
        // places (`first` and `last` stay the channel's).
        let from = t
            .partition_point(|&y| y < a.saturating_sub(tau))
            .saturating_sub(1);
        let to = (from + partition_from_front(&t[from..], |&y| y <= b.saturating_add(tau)) + 1)
            .min(t.len());
        let (t, v) = (&t[from..to], &v[from..to]);
        let edge = |x: u64| -> Edge {
            let lo = x.saturating_sub(tau).max(first);
            let hi = x.saturating_add(tau).min(last);
            let tau_s = tau as f64 / 1e9;
            let (range, before) = match &ch.spec.kind {
                ChannelKind::Gauge => {
                    let i0 = t.partition_point(|&y| y < lo);
                    let i1 = t.partition_point(|&y| y <= hi);
                    let mut mn = f64::INFINITY;
                    let mut mx = f64::NEG_INFINITY;
                    for &y in v[i0..i1]
                        .iter()
                        .chain([value_at(t, v, lo), value_at(t, v, hi)].iter())
                    {
                        mn = mn.min(y);
                        mx = mx.max(y);
                    }
                    let before = if x > lo {
                        integrate_gauge(t, v, lo, x)
                            .map(|w| w.integral / ((x - lo) as f64 / 1e9))
                            .unwrap_or(f64::NAN)
                    } else {
                        value_at(t, v, x)
                    };
                    (if mx >= mn { mx - mn } else { 0.0 }, before)
                }
                ChannelKind::Counter(spec) => {
                    let rate = |p: u64, q: u64| -> Option<f64> {
                        (q > p)
                            .then(|| {
                                integrate_counter(t, v, spec, ch.spec.update_period_ns, p, q)
                                    .ok()
                                    .filter(|w| w.resets == 0 && w.flagged == 0)
                                    .map(|w| w.increase / ((q - p) as f64 / 1e9))
                            })
                            .flatten()
                    };
                    let half = (tau / 2).max(1);
                    let mut mn = f64::INFINITY;
                    let mut mx = f64::NEG_INFINITY;
                    let mut p = lo;
                    while p < hi {
                        let q = (p + half).min(hi);
                        if let Some(r) = rate(p, q) {
                            mn = mn.min(r);
                            mx = mx.max(r);
                        }
                        p = q;
                    }
                    let before = rate(lo, x).unwrap_or(f64::NAN);
                    (if mx >= mn { mx - mn } else { 0.0 }, before)
                }
            };
            Edge {
                mag_j: tau_s * range,
                before_w: before,
                tau_s,
            }
        };
        let interior_sq = match &ch.spec.kind {
            ChannelKind::Counter(_) => 0.0,
            ChannelKind::Gauge => {
                let i0 = t.partition_point(|&y| y < a);
                let i1 = t.partition_point(|&y| y <= b);
                let period = ch.spec.update_period_ns.unwrap_or(0);
                let mut sq = 0.0;
                if i1 > i0 + 1 {
                    for k in i0..i1 - 1 {
                        let dv = (v[k + 1] - v[k]).abs();
                        if dv > 0.0 {
                            let dt = (t[k + 1] - t[k]).max(period) as f64 / 1e9;
                            let e = dv * dt / 2.0;
                            sq += e * e;
                        }
                    }
                }
                sq
            }
        };
        Limits {
            start: edge(a),
            end: edge(b),
            interior_sq,
        }
    }
}

/// The piecewise-linear curve through the samples at `x` (clamped to the first and last
/// sample).
fn value_at(t: &[u64], v: &[f64], x: u64) -> f64 {
    let k = t.partition_point(|&y| y <= x);
    if k == 0 {
        return v[0];
    }
    if k >= t.len() {
        return v[t.len() - 1];
    }
    let (t0, t1) = (t[k - 1], t[k]);
    if t1 == t0 {
        return v[k];
    }
    v[k - 1] + (v[k] - v[k - 1]) * ((x - t0) as f64 / (t1 - t0) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_serialize_as_pairs_and_combine() {
        let b = Bound::around(10.0, 2.0).hull(13.0);
        assert_eq!(serde_json::to_string(&b).unwrap(), "[8.0,13.0]");
        assert!(b.contains(8.0) && b.contains(13.0) && !b.contains(13.01));
        assert_eq!(b.width(), 5.0);
        assert_eq!(b.shift(-1.0, 0.5), Bound { lo: 6.5, hi: 12.5 });
        assert_eq!(b.per(2.0), Bound { lo: 4.0, hi: 6.5 });
        assert_eq!(value_at(&[0, 10], &[0.0, 100.0], 3), 30.0);
        assert_eq!(value_at(&[0, 10], &[0.0, 100.0], 30), 100.0);
    }
}

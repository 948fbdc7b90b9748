//! The integrator: what one channel says about one window `[start_ns, end_ns]`.
//!
//! - **Gauges** (power, utilisation, ...) are read as the piecewise-linear curve through
//!   their samples and integrated with the trapezoid rule; at the window's edges the curve
//!   is interpolated exactly, so a window that starts and ends between samples gets exactly
//!   the part of the first and last segments that lies inside it. For power the integral
//!   is energy in J; divided by the duration it is the mean.
//! - **Counters** (energy, CPU time) give the increase between the edges: the
//!   wrap-corrected sum of the steps of the samples that bracket the window (through
//!   [`CounterTracker`], the one place for wrap arithmetic), less the parts of the first
//!   and last steps that fall outside it (the counter is interpolated linearly within a
//!   step). A reset or an implausible step inside is counted and reported, never hidden.
//! - A window is only measured where the data covers it: it must lie between the first and
//!   the last sample. Nothing is extrapolated.
//!
//! Both functions find the edges by binary search and then walk the samples inside in a
//! tight loop; they never allocate, so analysing many windows costs only the samples in
//! them.
//!
//! Resolution is part of the answer: [`GaugeWindow::changes_inside`] counts the distinct
//! sensor updates seen inside the window (a polled sensor that updates every 100 ms shows
//! the same value ten times at 10 ms polls), and [`resolves`] says whether a window is
//! long enough for its sensor.
//!
//! ```
//! use flinch_core::integrate::integrate_gauge;
//! // 100 W sampled every 10 ms for 1 s; a 724 ms window starting between two samples.
//! let t: Vec<u64> = (0..=100).map(|i| i * 10_000_000).collect();
//! let p = vec![100.0; t.len()];
//! let w = integrate_gauge(&t, &p, 3_300_000, 727_300_000).unwrap();
//! assert!((w.integral - 72.4).abs() < 1e-9);
//! assert_eq!(w.samples_inside, 72);
//! ```

use crate::channel::{ChannelKind, ChannelSpec, CounterSpec, PowerMethod, Quantity};
use crate::counter::{CounterStep, CounterTracker};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a channel cannot measure a window at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Uncovered {
    /// The channel has no samples.
    NoSamples,
    /// The window starts before the channel's first sample.
    BeforeFirstSample {
        /// The first sample's time.
        first_ns: u64,
    },
    /// The window ends after the channel's last sample.
    AfterLastSample {
        /// The last sample's time.
        last_ns: u64,
    },
    /// The window ends before it starts.
    Reversed,
}

impl fmt::Display for Uncovered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Uncovered::NoSamples => f.write_str("the channel has no samples"),
            Uncovered::BeforeFirstSample { first_ns } => write!(
                f,
                "the window starts before the channel's first sample (t_ns {first_ns})"
            ),
            Uncovered::AfterLastSample { last_ns } => write!(
                f,
                "the window ends after the channel's last sample (t_ns {last_ns})"
            ),
            Uncovered::Reversed => f.write_str("the window ends before it starts"),
        }
    }
}

/// What a gauge says about a window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GaugeWindow {
    /// ∫ value dt over the window, in the channel's unit × seconds (J for power).
    pub integral: f64,
    /// Samples with `start ≤ t ≤ end`.
    pub samples_inside: u32,
    /// Samples inside whose value differs from the sample before: the distinct sensor
    /// updates seen inside.
    pub changes_inside: u32,
    /// The data used: the last sample at or before the start and the first at or after the
    /// end.
    pub bracket_ns: (u64, u64),
    /// The longest spacing between consecutive samples used, ns.
    pub max_spacing_ns: u64,
}

impl GaugeWindow {
    /// The time-weighted mean over a window of `duration_s` (`None` for a zero duration).
    pub fn mean(&self, duration_s: f64) -> Option<f64> {
        (duration_s > 0.0).then(|| self.integral / duration_s)
    }
}

/// What a counter says about a window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CounterWindow {
    /// The increase over the window, in the counter's unit (J for energy, s for CPU time),
    /// from accepted steps only: not to be used when `resets` or `flagged` is non-zero.
    pub increase: f64,
    /// Samples with `start ≤ t ≤ end`.
    pub samples_inside: u32,
    /// Samples inside whose value differs from the sample before: the distinct sensor
    /// updates seen inside.
    pub changes_inside: u32,
    /// The data used: the last sample at or before the start and the first at or after the
    /// end.
    pub bracket_ns: (u64, u64),
    /// The longest spacing between consecutive samples used, ns.
    pub max_spacing_ns: u64,
    /// Wraps corrected within the data used.
    pub wraps: u32,
    /// Resets (the counter started again from zero) within the data used.
    pub resets: u32,
    /// Implausible or out-of-range readings within the data used.
    pub flagged: u32,
}

/// Finds the data a window needs: `lo`, the last sample at or before `start_ns`, and `hi`,
/// the first at or after `end_ns`.
pub fn bracket(t_ns: &[u64], start_ns: u64, end_ns: u64) -> Result<(usize, usize), Uncovered> {
    if end_ns < start_ns {
        return Err(Uncovered::Reversed);
    }
    let (Some(&first), Some(&last)) = (t_ns.first(), t_ns.last()) else {
        return Err(Uncovered::NoSamples);
    };
    if start_ns < first {
        return Err(Uncovered::BeforeFirstSample { first_ns: first });
    }
    if end_ns > last {
        return Err(Uncovered::AfterLastSample { last_ns: last });
    }
    let lo = t_ns.partition_point(|&x| x <= start_ns) - 1;
    let hi = t_ns.partition_point(|&x| x < end_ns);
    Ok((lo, hi))
}

/// The samples inside `[start_ns, end_ns]`, and how many of them differ from the sample
/// before them (the sensor updated between the two).
fn updates_inside(t_ns: &[u64], values: &[f64], start_ns: u64, end_ns: u64) -> (u32, u32) {
    let a = t_ns.partition_point(|&x| x < start_ns);
    let b = t_ns.partition_point(|&x| x <= end_ns).max(a);
    let from = a.max(1);
    let changes = if b > from {
        values[from - 1..b]
            .windows(2)
            .filter(|w| w[1] != w[0])
            .count()
    } else {
        0
    };
    ((b - a) as u32, changes as u32)
}

/// The value of segment `i` (from sample `i` to `i + 1`) at `x_ns`.
#[inline]
fn interp(t_ns: &[u64], v: &[f64], i: usize, x_ns: u64) -> f64 {
    let (t0, t1) = (t_ns[i], t_ns[i + 1]);
    if t1 == t0 {
        return v[i + 1];
    }
    v[i] + (v[i + 1] - v[i]) * ((x_ns - t0) as f64 / (t1 - t0) as f64)
}

fn max_spacing(t_ns: &[u64]) -> u64 {
    t_ns.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0)
}

/// Integrates a gauge over `[start_ns, end_ns]` (trapezoid rule, exact interpolation at the
/// edges). `t_ns` must be non-decreasing and as long as `values`.
pub fn integrate_gauge(
    t_ns: &[u64],
    values: &[f64],
    start_ns: u64,
    end_ns: u64,
) -> Result<GaugeWindow, Uncovered> {
    debug_assert_eq!(t_ns.len(), values.len());
    let n = t_ns.len().min(values.len());
    let (t_ns, values) = (&t_ns[..n], &values[..n]);
    let (lo, hi) = bracket(t_ns, start_ns, end_ns)?;
    // Accumulate (v0 + v1) × dt in value·ns; halve and scale once at the end.
    let mut acc = 0.0;
    if hi > lo && end_ns > start_ns {
        if hi == lo + 1 {
            let va = interp(t_ns, values, lo, start_ns);
            let vb = interp(t_ns, values, lo, end_ns);
            acc = (va + vb) * (end_ns - start_ns) as f64;
        } else {
            let va = interp(t_ns, values, lo, start_ns);
            acc += (va + values[lo + 1]) * (t_ns[lo + 1] - start_ns) as f64;
            let tt = &t_ns[lo + 1..hi];
            let vv = &values[lo + 1..hi];
            for (tw, vw) in tt.windows(2).zip(vv.windows(2)) {
                acc += (vw[0] + vw[1]) * (tw[1] - tw[0]) as f64;
            }
            let vb = interp(t_ns, values, hi - 1, end_ns);
            acc += (values[hi - 1] + vb) * (end_ns - t_ns[hi - 1]) as f64;
        }
    }
    let (samples_inside, changes_inside) = updates_inside(t_ns, values, start_ns, end_ns);
    Ok(GaugeWindow {
        integral: acc * 0.5e-9,
        samples_inside,
        changes_inside,
        bracket_ns: (t_ns[lo], t_ns[hi.max(lo)]),
        max_spacing_ns: max_spacing(&t_ns[lo..=hi.max(lo)]),
    })
}

/// The increase of a cumulative counter over `[start_ns, end_ns]`: wrap-corrected steps of
/// the bracketing samples, interpolated linearly at the edges. `t_ns` must be
/// non-decreasing and as long as `values`.
pub fn integrate_counter(
    t_ns: &[u64],
    values: &[f64],
    spec: &CounterSpec,
    update_period_ns: Option<u64>,
    start_ns: u64,
    end_ns: u64,
) -> Result<CounterWindow, Uncovered> {
    debug_assert_eq!(t_ns.len(), values.len());
    let n = t_ns.len().min(values.len());
    let (t_ns, values) = (&t_ns[..n], &values[..n]);
    let (lo, hi) = bracket(t_ns, start_ns, end_ns)?;
    let hi = hi.max(lo);
    let mut tracker = CounterTracker::new(*spec, update_period_ns);
    let mut wraps = 0u32;
    let (mut first_delta, mut last_delta) = (0.0, 0.0);
    tracker.update(t_ns[lo], values[lo]);
    for i in lo + 1..=hi {
        if let CounterStep::Delta { delta, wrapped } = tracker.update(t_ns[i], values[i]) {
            wraps += wrapped as u32;
            if i == lo + 1 {
                first_delta = delta;
            }
            if i == hi {
                last_delta = delta;
            }
        }
    }
    let increase = if hi == lo || end_ns == start_ns {
        0.0
    } else if hi == lo + 1 {
        first_delta * ((end_ns - start_ns) as f64 / (t_ns[hi] - t_ns[lo]) as f64)
    } else {
        let before = (start_ns - t_ns[lo]) as f64 / (t_ns[lo + 1] - t_ns[lo]).max(1) as f64;
        let after = (t_ns[hi] - end_ns) as f64 / (t_ns[hi] - t_ns[hi - 1]).max(1) as f64;
        tracker.total() - first_delta * before - last_delta * after
    };
    let (samples_inside, changes_inside) = updates_inside(t_ns, values, start_ns, end_ns);
    Ok(CounterWindow {
        increase,
        samples_inside,
        changes_inside,
        bracket_ns: (t_ns[lo], t_ns[hi]),
        max_spacing_ns: max_spacing(&t_ns[lo..=hi]),
        wraps,
        resets: tracker.resets(),
        flagged: tracker.flagged(),
    })
}

/// How a device's energy over a window was measured, in the order the integrator prefers
/// them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Method {
    /// Driver-buffered, driver-stamped power samples (NVML `nvmlDeviceGetSamples`).
    DriverSamples,
    /// A short-window instantaneous power reading polled by flinch.
    Instant,
    /// Modelled power (the synthetic source).
    Modelled,
    /// The difference of a cumulative energy counter.
    Counter,
    /// A moving average of power: it lags steps by up to its window, so a short window's
    /// energy from it is flagged as lagging.
    Average,
}

impl Method {
    /// The method of an energy-bearing channel: power gauges by their [`PowerMethod`] (a
    /// power gauge without one counts as instant), energy counters as [`Method::Counter`];
    /// `None` for every other channel.
    pub fn of(spec: &ChannelSpec) -> Option<Method> {
        match (spec.quantity, &spec.kind) {
            (Quantity::Power, ChannelKind::Gauge) => Some(match spec.method {
                Some(PowerMethod::DriverSamples) => Method::DriverSamples,
                Some(PowerMethod::Instant) | None => Method::Instant,
                Some(PowerMethod::Modelled) => Method::Modelled,
                Some(PowerMethod::Average { .. }) => Method::Average,
            }),
            (Quantity::Energy, ChannelKind::Counter(_)) => Some(Method::Counter),
            _ => None,
        }
    }

    /// As written in analysis output: `driver-samples`, `instant`, `modelled`, `counter`,
    /// `average`.
    pub fn name(self) -> &'static str {
        match self {
            Method::DriverSamples => "driver-samples",
            Method::Instant => "instant",
            Method::Modelled => "modelled",
            Method::Counter => "counter",
            Method::Average => "average",
        }
    }

    /// Whether the method lags load steps (a moving average).
    pub fn lagging(self) -> bool {
        self == Method::Average
    }

    /// Whether every sample is a distinct reading (driver-stamped samples, a model), as
    /// opposed to a polled value that repeats until the sensor updates.
    pub fn samples_are_updates(self) -> bool {
        matches!(self, Method::DriverSamples | Method::Modelled)
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The fewest distinct sensor updates inside a window for its energy to count as resolved.
pub const MIN_UPDATES: u32 = 2;

/// Whether a window of `duration_ns` with `updates` distinct sensor updates inside is
/// resolved by a sensor that updates every `update_period_ns`: at least [`MIN_UPDATES`]
/// updates, and no shorter than one update period.
pub fn resolves(updates: u32, duration_ns: u64, update_period_ns: Option<u64>) -> bool {
    updates >= MIN_UPDATES && update_period_ns.is_none_or(|p| duration_ns >= p)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn grid(step_ns: u64, until_ns: u64) -> Vec<u64> {
        (0..=until_ns / step_ns).map(|i| i * step_ns).collect()
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn constant_power_between_samples() {
        let t = grid(10 * MS, 1000 * MS);
        let p = vec![100.0; t.len()];
        // 3.3 ms .. 727.3 ms: 0.724 s at 100 W
        let w = integrate_gauge(&t, &p, 3_300_000, 727_300_000).unwrap();
        assert!(close(w.integral, 72.4, 1e-9), "{w:?}");
        assert_eq!(w.samples_inside, 72); // 10 ms .. 720 ms
        assert_eq!(w.changes_inside, 0); // never changed
        assert_eq!(w.bracket_ns, (0, 730 * MS));
        assert_eq!(w.max_spacing_ns, 10 * MS);
        assert!(close(w.mean(0.724).unwrap(), 100.0, 1e-9));
    }

    #[test]
    fn stepped_power_is_the_piecewise_linear_integral() {
        // 20 W up to the sample at 490 ms, 100 W from the sample at 500 ms: the curve ramps
        // from 20 to 100 W between 490 and 500 ms.
        let t = grid(10 * MS, 1000 * MS);
        let p: Vec<f64> = t
            .iter()
            .map(|&x| if x < 500 * MS { 20.0 } else { 100.0 })
            .collect();
        // 255..490 ms at 20 W (4.7 J) + 490..500 ms mean 60 W (0.6 J) + 500..745 ms at
        // 100 W (24.5 J)
        let w = integrate_gauge(&t, &p, 255 * MS, 745 * MS).unwrap();
        assert!(close(w.integral, 29.8, 1e-9), "{}", w.integral);
        assert_eq!(w.changes_inside, 1);
        // Both edges inside the ramp: p(493 ms) = 44 W, p(497 ms) = 76 W, mean 60 W over
        // 4 ms = 0.24 J.
        let w = integrate_gauge(&t, &p, 493 * MS, 497 * MS).unwrap();
        assert!(close(w.integral, 0.24, 1e-12), "{}", w.integral);
        assert_eq!((w.samples_inside, w.changes_inside), (0, 0));
        // Edges on samples exactly.
        let w = integrate_gauge(&t, &p, 500 * MS, 600 * MS).unwrap();
        assert!(close(w.integral, 10.0, 1e-12), "{}", w.integral);
        assert_eq!(w.samples_inside, 11);
    }

    #[test]
    fn ramped_power_on_an_irregular_grid() {
        // p(t) = 50 + 200 t W: linear, so the trapezoid rule is exact on any grid.
        let p_of = |t_s: f64| 50.0 + 200.0 * t_s;
        let mut t = Vec::new();
        let mut x = 0u64;
        let mut k = 0u64;
        while x <= 1000 * MS {
            t.push(x);
            k += 1;
            x += 3 * MS + (k * 7_919_993) % (11 * MS); // 3..14 ms, irregular
        }
        let v: Vec<f64> = t.iter().map(|&x| p_of(x as f64 / 1e9)).collect();
        let (a, b) = (0.1234, 0.8765);
        let exact = 50.0 * (b - a) + 100.0 * (b * b - a * a);
        let w = integrate_gauge(&t, &v, 123_400_000, 876_500_000).unwrap();
        assert!(close(w.integral, exact, 1e-9), "{} vs {exact}", w.integral);
        // every sample of a ramp is a new value
        assert_eq!(w.changes_inside, w.samples_inside);
    }

    #[test]
    fn a_window_with_no_sample_inside_interpolates_both_edges() {
        // 0 W at 0 s to 100 W at 1 s: on [0.2, 0.6] the curve goes 20 → 60 W: 16 J.
        let t = [0, 1000 * MS];
        let v = [0.0, 100.0];
        let w = integrate_gauge(&t, &v, 200 * MS, 600 * MS).unwrap();
        assert!(close(w.integral, 16.0, 1e-12), "{}", w.integral);
        assert_eq!((w.samples_inside, w.changes_inside), (0, 0));
        assert_eq!(w.bracket_ns, (0, 1000 * MS));
        // and the same for a counter: 0 J at 0 s, 100 J at 1 s → 25 J over 0.25 s
        let spec = CounterSpec::default();
        let c = integrate_counter(&t, &v, &spec, None, 250 * MS, 500 * MS).unwrap();
        assert!(close(c.increase, 25.0, 1e-12), "{}", c.increase);
        assert_eq!((c.samples_inside, c.changes_inside), (0, 0));
        // a zero-length window
        let w = integrate_gauge(&t, &v, 300 * MS, 300 * MS).unwrap();
        assert_eq!(w.integral, 0.0);
    }

    #[test]
    fn windows_outside_the_data_are_not_extrapolated() {
        let t = [100, 200, 300];
        let v = [1.0, 2.0, 3.0];
        assert_eq!(
            integrate_gauge(&t, &v, 50, 150),
            Err(Uncovered::BeforeFirstSample { first_ns: 100 })
        );
        assert_eq!(
            integrate_gauge(&t, &v, 150, 301),
            Err(Uncovered::AfterLastSample { last_ns: 300 })
        );
        assert_eq!(integrate_gauge(&[], &[], 1, 2), Err(Uncovered::NoSamples));
        assert_eq!(integrate_gauge(&t, &v, 250, 150), Err(Uncovered::Reversed));
        let spec = CounterSpec::default();
        assert!(integrate_counter(&t, &v, &spec, None, 0, 150).is_err());
        // the whole range is fine
        let w = integrate_gauge(&t, &v, 100, 300).unwrap();
        assert!(close(w.integral, 2.0 * 200e-9, 1e-18));
    }

    #[test]
    fn duplicate_timestamps_do_not_divide_by_zero() {
        let t = [0, 10 * MS, 10 * MS, 20 * MS];
        let v = [10.0, 10.0, 30.0, 30.0];
        let w = integrate_gauge(&t, &v, 5 * MS, 15 * MS).unwrap();
        // 5 ms at 10 W + 5 ms at 30 W
        assert!(close(w.integral, 0.2, 1e-12), "{}", w.integral);
        assert!(w.integral.is_finite());
    }

    /// A counter of `power_w` watts from `start_j`, wrapping at `range_j`, read every 10 ms.
    fn wrapping_counter(power_w: f64, start_j: f64, range_j: f64) -> (Vec<u64>, Vec<f64>) {
        let t = grid(10 * MS, 1000 * MS);
        let v = t
            .iter()
            .map(|&x| (start_j + power_w * x as f64 / 1e9) % range_j)
            .collect();
        (t, v)
    }

    #[test]
    fn counters_that_wrap_inside_a_window() {
        let spec = |r| CounterSpec {
            wrap_range: Some(r),
            max_rate: Some(500.0),
        };
        // 100 W from 950 J of a 1000 J range: one wrap at 0.5 s. 0.724 s → 72.4 J.
        let (t, v) = wrapping_counter(100.0, 950.0, 1000.0);
        let c = integrate_counter(&t, &v, &spec(1000.0), None, 203_500_000, 927_500_000).unwrap();
        assert!(close(c.increase, 72.4, 1e-6), "{c:?}");
        assert_eq!((c.wraps, c.resets, c.flagged), (1, 0, 0));
        assert_eq!(c.changes_inside, c.samples_inside);
        // a 30 J range wraps every 0.3 s: three wraps (at 0.3, 0.6, 0.9 s) inside
        let (t, v) = wrapping_counter(100.0, 0.0, 30.0);
        let c = integrate_counter(&t, &v, &spec(30.0), None, 203_500_000, 927_500_000).unwrap();
        assert!(close(c.increase, 72.4, 1e-6), "{c:?}");
        assert_eq!(c.wraps, 3);
    }

    #[test]
    fn counter_steps_slower_than_polls_are_interpolated_and_counted_once() {
        // A counter updating every 100 ms by 10 J (100 W), polled every 10 ms: 10 polls
        // see each value.
        let t = grid(10 * MS, 1000 * MS);
        let v: Vec<f64> = t.iter().map(|&x| (x / (100 * MS)) as f64 * 10.0).collect();
        let spec = CounterSpec {
            wrap_range: None,
            max_rate: Some(500.0),
        };
        // [100 ms, 800 ms] on update instants: exactly 70 J, seven updates inside.
        let c = integrate_counter(&t, &v, &spec, Some(100 * MS), 100 * MS, 800 * MS).unwrap();
        assert!(close(c.increase, 70.0, 1e-9), "{c:?}");
        assert_eq!(c.changes_inside, 8); // 100, 200, ..., 800 ms
        assert_eq!(c.samples_inside, 71);
        assert!(resolves(c.changes_inside, 700 * MS, Some(100 * MS)));
        assert!(!resolves(1, 700 * MS, Some(100 * MS)));
        assert!(!resolves(5, 50 * MS, Some(100 * MS)));
        assert!(resolves(2, 50 * MS, None));
    }

    #[test]
    fn resets_and_flagged_readings_inside_are_reported() {
        let t = grid(10 * MS, 100 * MS);
        let mut v: Vec<f64> = (0..t.len()).map(|i| 1000.0 + i as f64).collect();
        v[5] = 2.0; // the counter restarted from zero (no wrap range: any fall is a reset)
        for x in &mut v[6..] {
            *x -= 1000.0 - 2.0 + 5.0;
        }
        let spec = CounterSpec::default();
        let c = integrate_counter(&t, &v, &spec, None, 15 * MS, 85 * MS).unwrap();
        assert_eq!(c.resets, 1, "{c:?}");
        // a window entirely before the reset is clean
        let c = integrate_counter(&t, &v, &spec, None, 5 * MS, 35 * MS).unwrap();
        assert_eq!((c.resets, c.flagged), (0, 0));
        assert!(close(c.increase, 3.0, 1e-9), "{c:?}");
        // an implausible jump is flagged
        let spec = CounterSpec {
            wrap_range: None,
            max_rate: Some(200.0),
        };
        let mut v: Vec<f64> = (0..t.len()).map(|i| i as f64).collect();
        for x in &mut v[4..] {
            *x += 1e4;
        }
        let c = integrate_counter(&t, &v, &spec, None, 15 * MS, 85 * MS).unwrap();
        assert_eq!(c.flagged, 1, "{c:?}");
    }

    #[test]
    fn methods_rank_as_documented() {
        let mut m = vec![
            Method::Average,
            Method::Counter,
            Method::Instant,
            Method::DriverSamples,
            Method::Modelled,
        ];
        m.sort();
        assert_eq!(
            m,
            vec![
                Method::DriverSamples,
                Method::Instant,
                Method::Modelled,
                Method::Counter,
                Method::Average
            ]
        );
        let avg = ChannelSpec::power(
            "gpu0",
            "power_avg",
            PowerMethod::Average { window_ms: 1000 },
        );
        assert_eq!(Method::of(&avg), Some(Method::Average));
        assert!(Method::Average.lagging());
        let util = ChannelSpec::gauge("gpu0", "util", Quantity::Utilization);
        assert_eq!(Method::of(&util), None);
        assert_eq!(
            serde_json::to_string(&Method::DriverSamples).unwrap(),
            "\"driver-samples\""
        );
    }
}

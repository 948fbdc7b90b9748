//! The one place where cumulative-counter arithmetic lives: wrap correction, reset
//! detection and a plausibility guard.
//!
//! Existing tools get this wrong in every possible way (negative totals on a wrap, silently
//! dropped intervals, zeros on a permission error); every flinch component that turns counter
//! readings into energy goes through [`CounterTracker`], so there is one implementation to
//! test.
//!
//! Rules, for a reading `cur` after `prev`, `dt` apart:
//! - `cur >= prev`: the step is `cur − prev`, unless it implies more than the channel's
//!   `max_rate` over `max(dt, update_period)`, in which case it is **implausible**: flagged,
//!   not used, and the counter is re-based on `cur`.
//! - `cur < prev` on a counter with a wrap range `R`: a **wrap** with step
//!   `R − prev + cur`, if that step is at most `R/2` (the sampler polls often enough that a
//!   counter never moves half its range between polls) and plausible under `max_rate`;
//!   otherwise a **reset** (the counter started again from zero: driver reload, suspend).
//! - `cur < prev` on a counter without a wrap range: a **reset**.
//! - A value below zero or above the wrap range is **out of range** and ignored.
//!
//! ```
//! use flinch_core::channel::CounterSpec;
//! use flinch_core::counter::{CounterStep, CounterTracker};
//!
//! // A RAPL-like counter wrapping at 1000 J, at most 500 W.
//! let spec = CounterSpec { wrap_range: Some(1000.0), max_rate: Some(500.0) };
//! let mut c = CounterTracker::new(spec, None);
//! assert_eq!(c.update(0, 990.0), CounterStep::First);
//! // 1 s later it reads 40 J: it wrapped, and 50 J were used.
//! assert_eq!(c.update(1_000_000_000, 40.0), CounterStep::Delta { delta: 50.0, wrapped: true });
//! assert_eq!(c.total(), 50.0);
//! ```

use crate::channel::CounterSpec;

/// What one new counter reading means.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CounterStep {
    /// The first reading: nothing to difference against yet.
    First,
    /// A usable step.
    Delta {
        /// The increase since the previous reading, in the counter's unit (never negative).
        delta: f64,
        /// Whether the counter wrapped to get there.
        wrapped: bool,
    },
    /// The counter restarted from zero; the energy between the two readings is unknown.
    Reset {
        /// The reading before the reset.
        from: f64,
        /// The reading after it.
        to: f64,
    },
    /// The step implies more than the channel's maximum rate: flagged, not used.
    Implausible {
        /// The step that was rejected.
        delta: f64,
        /// The largest step that would have been accepted.
        limit: f64,
    },
    /// The value is negative or above the wrap range: ignored.
    OutOfRange {
        /// The offending value.
        value: f64,
    },
}

impl CounterStep {
    /// The usable increase, if any.
    pub fn delta(&self) -> Option<f64> {
        match self {
            CounterStep::Delta { delta, .. } => Some(*delta),
            _ => None,
        }
    }
}

/// Classifies a single step from `prev` to `cur`, `dt_ns` apart. See the module docs.
pub fn classify_step(
    spec: &CounterSpec,
    update_period_ns: u64,
    prev: f64,
    cur: f64,
    dt_ns: u64,
) -> CounterStep {
    if cur < 0.0 || spec.wrap_range.is_some_and(|r| cur > r * (1.0 + 1e-12)) || !cur.is_finite() {
        return CounterStep::OutOfRange { value: cur };
    }
    // The span over which a step could have accumulated: at least one sensor update (a
    // counter that updates every 100 ms delivers 100 ms of energy at once), at least 1 ms.
    let span_s = dt_ns.max(update_period_ns).max(1_000_000) as f64 / 1e9;
    let limit = spec.max_rate.map(|rate| rate * span_s);
    if cur >= prev {
        let delta = cur - prev;
        return match limit {
            Some(limit) if delta > limit => CounterStep::Implausible { delta, limit },
            _ => CounterStep::Delta {
                delta,
                wrapped: false,
            },
        };
    }
    match spec.wrap_range {
        Some(range) => {
            let delta = (range - prev).max(0.0) + cur;
            let plausible = delta <= range / 2.0 && limit.is_none_or(|l| delta <= l);
            if plausible {
                CounterStep::Delta {
                    delta,
                    wrapped: true,
                }
            } else {
                CounterStep::Reset {
                    from: prev,
                    to: cur,
                }
            }
        }
        None => CounterStep::Reset {
            from: prev,
            to: cur,
        },
    }
}

/// Follows one counter reading by reading, keeping the previous value and the running total
/// of accepted steps.
#[derive(Clone, Debug)]
pub struct CounterTracker {
    spec: CounterSpec,
    update_period_ns: u64,
    prev: Option<(u64, f64)>,
    total: f64,
    resets: u32,
    flagged: u32,
}

impl CounterTracker {
    /// A tracker for a counter with this arithmetic and sensor update period.
    pub fn new(spec: CounterSpec, update_period_ns: Option<u64>) -> Self {
        CounterTracker {
            spec,
            update_period_ns: update_period_ns.unwrap_or(0),
            prev: None,
            total: 0.0,
            resets: 0,
            flagged: 0,
        }
    }

    /// Takes a reading at `t_ns` and says what it means. Out-of-range readings leave the
    /// state untouched; every other reading becomes the new baseline.
    pub fn update(&mut self, t_ns: u64, value: f64) -> CounterStep {
        let step = match self.prev {
            None => {
                if value < 0.0
                    || !value.is_finite()
                    || self
                        .spec
                        .wrap_range
                        .is_some_and(|r| value > r * (1.0 + 1e-12))
                {
                    self.flagged += 1;
                    return CounterStep::OutOfRange { value };
                }
                CounterStep::First
            }
            Some((pt, pv)) => classify_step(
                &self.spec,
                self.update_period_ns,
                pv,
                value,
                t_ns.saturating_sub(pt),
            ),
        };
        match step {
            CounterStep::OutOfRange { .. } => {
                self.flagged += 1;
                return step;
            }
            CounterStep::Delta { delta, .. } => self.total += delta,
            CounterStep::Reset { .. } => self.resets += 1,
            CounterStep::Implausible { .. } => self.flagged += 1,
            CounterStep::First => {}
        }
        self.prev = Some((t_ns, value));
        step
    }

    /// Sum of accepted steps since the first reading.
    pub fn total(&self) -> f64 {
        self.total
    }
    /// Resets seen.
    pub fn resets(&self) -> u32 {
        self.resets
    }
    /// Implausible or out-of-range readings seen.
    pub fn flagged(&self) -> u32 {
        self.flagged
    }
    /// The last accepted reading (time, raw value).
    pub fn last(&self) -> Option<(u64, f64)> {
        self.prev
    }
}

/// The longest interval between polls for which a counter with range `wrap_range` cannot
/// move more than half its range at `max_rate` (so a wrap is never missed or mistaken for a
/// reset). `None` when either is unknown.
pub fn max_poll_interval_s(spec: &CounterSpec) -> Option<f64> {
    let range = spec.wrap_range?;
    let rate = spec.max_rate?;
    (rate > 0.0).then(|| range / 2.0 / rate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: u64 = 1_000_000_000;

    fn spec(wrap: Option<f64>, max_rate: Option<f64>) -> CounterSpec {
        CounterSpec {
            wrap_range: wrap,
            max_rate,
        }
    }

    #[test]
    fn first_reading_is_only_a_baseline() {
        let mut c = CounterTracker::new(spec(None, None), None);
        assert_eq!(c.update(5, 123.0), CounterStep::First);
        assert_eq!(c.total(), 0.0);
        assert_eq!(c.last(), Some((5, 123.0)));
        assert_eq!(c.update(6, 124.5).delta(), Some(1.5));
    }

    #[test]
    fn wraps_are_corrected_for_several_range_sizes() {
        // Intel package (61 µJ unit), AMD Zen (15.3 µJ), Intel server DRAM, a bare u32 µJ
        // counter, and a tiny 1000 J range.
        for range in [
            262_143.328_85,
            65_532.610_987,
            65_712.999_613,
            4_294.967_295,
            1000.0,
        ] {
            let mut c = CounterTracker::new(spec(Some(range), Some(1000.0)), None);
            let start = range - 3.0;
            assert_eq!(c.update(0, start), CounterStep::First);
            let step = c.update(S / 10, 2.0);
            let CounterStep::Delta { delta, wrapped } = step else {
                panic!("range {range}: {step:?}");
            };
            assert!(wrapped);
            assert!((delta - 5.0).abs() < 1e-6, "range {range}: delta {delta}");
            assert!(c.total() > 0.0);
        }
    }

    #[test]
    fn a_fall_far_below_a_wrap_is_a_reset() {
        // Counter at 100 J of a 262 kJ range falls to 5 J: a wrap would mean 262 kJ in
        // 100 ms. Reset, not energy.
        let mut c = CounterTracker::new(spec(Some(262_143.328_85), Some(1000.0)), None);
        c.update(0, 100.0);
        assert_eq!(
            c.update(S / 10, 5.0),
            CounterStep::Reset {
                from: 100.0,
                to: 5.0
            }
        );
        assert_eq!(c.resets(), 1);
        assert_eq!(c.total(), 0.0);
        // Without a max rate, the half-range rule still tells the two apart.
        let mut c = CounterTracker::new(spec(Some(1000.0), None), None);
        c.update(0, 300.0);
        assert!(matches!(c.update(S, 200.0), CounterStep::Reset { .. }));
        c.update(2 * S, 900.0);
        assert_eq!(
            c.update(3 * S, 100.0),
            CounterStep::Delta {
                delta: 200.0,
                wrapped: true
            }
        );
        // Without a wrap range any decrease is a reset (NVML after a driver reload), and
        // counting continues from the new value.
        let mut c = CounterTracker::new(spec(None, Some(1000.0)), None);
        c.update(0, 5_000.0);
        assert!(matches!(c.update(S, 10.0), CounterStep::Reset { .. }));
        assert_eq!(c.update(2 * S, 20.0).delta(), Some(10.0));
        assert_eq!(c.total(), 10.0);
    }

    #[test]
    fn implausible_jumps_are_flagged_not_used() {
        let mut c = CounterTracker::new(spec(None, Some(1000.0)), None);
        c.update(0, 0.0);
        // 5 kJ in 1 s at a 1 kW maximum.
        assert_eq!(
            c.update(S, 5_000.0),
            CounterStep::Implausible {
                delta: 5_000.0,
                limit: 1000.0
            }
        );
        assert_eq!(c.total(), 0.0);
        assert_eq!(c.flagged(), 1);
        // Re-based: the next step is measured from 5000.
        assert_eq!(c.update(2 * S, 5_400.0).delta(), Some(400.0));
    }

    #[test]
    fn a_counter_updating_every_100ms_is_not_flagged_when_polled_at_10ms() {
        // 700 W delivered as 70 J steps every 100 ms, polled every 10 ms.
        let mut c = CounterTracker::new(spec(None, Some(1000.0)), Some(100_000_000));
        c.update(0, 0.0);
        assert_eq!(c.update(10_000_000, 70.0).delta(), Some(70.0));
        // Without the update period the same step would be implausible.
        let mut c = CounterTracker::new(spec(None, Some(1000.0)), None);
        c.update(0, 0.0);
        assert!(matches!(
            c.update(10_000_000, 70.0),
            CounterStep::Implausible { .. }
        ));
    }

    #[test]
    fn out_of_range_values_are_ignored() {
        let mut c = CounterTracker::new(spec(Some(1000.0), None), None);
        assert!(matches!(
            c.update(0, 1500.0),
            CounterStep::OutOfRange { .. }
        ));
        assert_eq!(c.last(), None);
        c.update(1, 10.0);
        assert!(matches!(c.update(2, -1.0), CounterStep::OutOfRange { .. }));
        assert!(matches!(
            c.update(2, f64::NAN),
            CounterStep::OutOfRange { .. }
        ));
        assert_eq!(c.update(3, 11.0).delta(), Some(1.0));
        assert_eq!(c.flagged(), 3);
    }

    #[test]
    fn poll_bound_keeps_steps_under_half_the_range() {
        let s = spec(Some(262_143.328_85), Some(500.0));
        let bound = max_poll_interval_s(&s).unwrap();
        assert!((bound - 262.143_328_85).abs() < 1e-9);
        assert_eq!(max_poll_interval_s(&spec(None, Some(1.0))), None);
    }

    proptest! {
        /// Any power series, sampled fast enough, integrates to the same energy through a
        /// wrapping counter as the sum of its steps: never negative, nothing dropped.
        #[test]
        fn wrapped_counter_total_equals_true_energy(
            powers in proptest::collection::vec(0.0f64..400.0, 1..400),
            range in prop_oneof![Just(1000.0f64), Just(4_294.967_295), Just(65_532.610_987)],
            start_frac in 0.0f64..1.0,
        ) {
            let dt_ns = 100_000_000u64; // 100 ms polls: at most 40 J per step
            let mut c = CounterTracker::new(spec(Some(range), Some(500.0)), None);
            let mut raw = start_frac * range * 0.999;
            let mut truth = 0.0;
            c.update(0, raw);
            for (i, p) in powers.iter().enumerate() {
                let e = p * 0.1;
                truth += e;
                raw = (raw + e) % range;
                let step = c.update((i as u64 + 1) * dt_ns, raw);
                let d = step.delta().expect("every step usable");
                prop_assert!(d >= 0.0);
            }
            prop_assert!((c.total() - truth).abs() < 1e-6 * (1.0 + truth));
        }
    }
}

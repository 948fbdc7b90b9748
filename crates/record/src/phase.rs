//! Following a sensor's updates: one poll per update, just after it.
//!
//! A polled sensor that refreshes every period `P` (NVML's instant power: every 100 ms)
//! shows the same value to every poll in between: polling it every 10 ms reads each value
//! ten times, and still stamps a change up to 10 ms late. [`PhaseLock`] instead learns *when*
//! the sensor updates, from the values it reads, and asks for one poll per update, a small
//! margin after it: a tenth of the polls, and a change stamped within a few ms of the
//! update.
//!
//! It keeps a bracket `(lo, hi]` around the last update's time and predicts the next one a
//! period later, widened by a small drift allowance. The poll of each period comes after
//! the predicted window (plus a margin), so it sees the new value. Now and then a *probe*
//! poll lands in the middle of the window instead: whether it already sees the new value
//! halves the bracket, keeping it narrow. A poll that still sees the old value means the
//! update came late (or repeated its value): a few *retries* a short step apart pin it
//! again, tightly. Tight brackets a known number of periods apart measure the real period,
//! so a sensor clock that runs slightly fast or slow is followed. At the start, and after
//! several updates in a row were not found, it *acquires*: polls every `P/20` until a value
//! changes. A sensor whose value does not change at all is polled once per period.
//!
//! ```
//! use flinch_record::phase::PhaseLock;
//! // A sensor that updates every 100 ms, 37 ms after a multiple of 100 ms.
//! let sensor = |t: u64| ((t + 100_000_000 - 37_000_000) / 100_000_000) as f64;
//! let mut lock = PhaseLock::new(100_000_000);
//! let mut t = 0;
//! for _ in 0..200 {
//!     t = lock.observe(t, Some(sensor(t)));
//! }
//! let s = lock.stats();
//! assert!(s.polls < 2 * s.updates, "{s:?}"); // about one poll per update once locked
//! assert!(lock.is_locked());
//! ```

use flinch_core::trace::PhaseStats;

#[derive(Clone, Copy, Debug, PartialEq)]
enum State {
    /// Polling every `step` until a value changes; gives up at `until`.
    Acquire { until: u64 },
    /// A guard poll just before the predicted window `(lo, hi]` was asked for: a change
    /// there means the updates came earlier than predicted.
    Guard { lo: u64, hi: u64 },
    /// A probe inside the predicted window `(lo, hi]` was asked for.
    Probe { lo: u64, hi: u64 },
    /// The poll after the predicted window `(lo, hi]` was asked for.
    Main { lo: u64, hi: u64 },
    /// The update was not there yet at `after`; `n` retries made; `(lo, hi]` was the
    /// predicted window.
    Retry {
        n: u32,
        after: u64,
        lo: u64,
        hi: u64,
    },
    /// No change found while acquiring: poll once per period; acquire again at `again`.
    Free { again: u64 },
}

/// Follows a sensor's update phase from the values read (see the module docs).
#[derive(Clone, Debug)]
pub struct PhaseLock {
    declared_ns: u64,
    /// The period, as measured (ns, fractional so that long baselines keep their precision).
    period: f64,
    margin_ns: u64,
    guard_ns: u64,
    retry_ns: u64,
    step_ns: u64,
    drift_ns: u64,
    state: State,
    /// The bracket of the last update seen: it happened in `(lo, hi]`.
    lo: u64,
    hi: u64,
    last: Option<f64>,
    last_poll: Option<u64>,
    periods_since_probe: u32,
    misses_in_row: u32,
    /// The middle of the first tight bracket since the lock was acquired, for measuring
    /// the period over the longest baseline.
    pinned: Option<u64>,
    /// Whether the period was measured (else the declared one is used, with a wider
    /// allowance for drift).
    measured: bool,
    stats: PhaseStats,
}

/// Retries after a poll that found no update, before the period counts as a miss.
const RETRIES: u32 = 3;
/// Periods between guards (each followed by a probe when the bracket is wide).
const PROBE_EVERY: u32 = 32;
/// Misses in a row after which the lock acquires again.
const MISSES_TO_REACQUIRE: u32 = 3;
/// The shortest baseline, in periods, over which the period is measured.
const MEASURE_PERIODS: f64 = 50.0;
/// How long acquisition polls before giving up, in periods.
const ACQUIRE_PERIODS: u64 = 3;
/// How long a lock that found no change waits before trying again, in periods.
const FREE_PERIODS: u64 = 300;

impl PhaseLock {
    /// A lock on a sensor that updates every `period_ns` (as declared).
    pub fn new(period_ns: u64) -> Self {
        let p = period_ns.max(1_000);
        PhaseLock {
            declared_ns: p,
            period: p as f64,
            margin_ns: p / 40,
            guard_ns: p / 80,
            retry_ns: p / 40,
            step_ns: p / 20,
            drift_ns: (p / 10_000).max(1),
            state: State::Acquire { until: 0 },
            lo: 0,
            hi: 0,
            last: None,
            last_poll: None,
            periods_since_probe: 0,
            misses_in_row: 0,
            pinned: None,
            measured: false,
            stats: PhaseStats {
                declared_period_ns: p,
                period_ns: p,
                acquisitions: 1,
                ..Default::default()
            },
        }
    }

    /// Whether the phase is known (one poll per update).
    pub fn is_locked(&self) -> bool {
        matches!(
            self.state,
            State::Guard { .. } | State::Probe { .. } | State::Main { .. } | State::Retry { .. }
        )
    }

    /// What the lock did so far.
    pub fn stats(&self) -> PhaseStats {
        PhaseStats {
            period_ns: self.period.round() as u64,
            bracket_ns: self.hi.saturating_sub(self.lo),
            ..self.stats
        }
    }

    /// The period as measured so far, ns.
    pub fn period_ns(&self) -> u64 {
        self.period.round() as u64
    }

    /// Takes the value read by a poll at `t_ns` (`None`: the poll gave no value) and
    /// returns when to poll next (`CLOCK_MONOTONIC` ns; may be at or before `t_ns` only if
    /// the caller was late).
    pub fn observe(&mut self, t_ns: u64, value: Option<f64>) -> u64 {
        self.stats.polls += 1;
        let prev_poll = self.last_poll.replace(t_ns);
        let Some(v) = value else {
            // Nothing learnt: keep the prediction and go on to the next window.
            return match self.state {
                State::Acquire { until } if until == 0 || t_ns < until => {
                    if until == 0 {
                        self.state = State::Acquire {
                            until: t_ns + ACQUIRE_PERIODS * self.declared_ns,
                        };
                    }
                    t_ns + self.step_ns
                }
                State::Free { .. } | State::Acquire { .. } => t_ns + self.declared_ns,
                State::Guard { lo, hi }
                | State::Probe { lo, hi }
                | State::Main { lo, hi }
                | State::Retry { lo, hi, .. } => {
                    self.lo = lo;
                    self.hi = hi;
                    self.plan(t_ns)
                }
            };
        };
        let changed = self.last.is_some_and(|l| l != v);
        self.last = Some(v);
        if changed {
            self.stats.updates += 1;
        }
        match self.state {
            State::Acquire { until } => {
                let until = if until == 0 {
                    t_ns + ACQUIRE_PERIODS * self.declared_ns
                } else {
                    until
                };
                match (changed, prev_poll) {
                    (true, Some(p)) => {
                        self.lock_on(p, t_ns);
                        self.periods_since_probe = PROBE_EVERY; // narrow it at once
                        self.plan(t_ns)
                    }
                    _ if t_ns >= until => {
                        self.state = State::Free {
                            again: t_ns + FREE_PERIODS * self.declared_ns,
                        };
                        t_ns + self.declared_ns
                    }
                    _ => {
                        self.state = State::Acquire { until };
                        t_ns + self.step_ns
                    }
                }
            }
            State::Free { again } => {
                if changed || t_ns >= again {
                    self.acquire(t_ns)
                } else {
                    t_ns + self.declared_ns
                }
            }
            State::Guard { hi, .. } => {
                if changed {
                    // The update came before the window: the phase was lost.
                    self.acquire(t_ns)
                } else {
                    // Honest from here on: no update by the guard's time.
                    self.narrow_or_wait(t_ns, t_ns.min(hi), hi)
                }
            }
            State::Probe { lo, hi } => {
                if changed {
                    // The update came in (lo, t]: the lower half of the window.
                    self.lock_on(lo, t_ns);
                    self.periods_since_probe = 0;
                    self.misses_in_row = 0;
                    self.plan(t_ns)
                } else {
                    // Still to come, in (t, hi].
                    self.state = State::Main {
                        lo: t_ns.max(lo),
                        hi,
                    };
                    hi + self.margin_ns
                }
            }
            State::Main { lo, hi } => {
                if changed {
                    self.lo = lo;
                    self.hi = hi;
                    self.periods_since_probe += 1;
                    self.misses_in_row = 0;
                    self.plan(t_ns)
                } else {
                    self.stats.retries += 1;
                    self.state = State::Retry {
                        n: 1,
                        after: t_ns,
                        lo,
                        hi,
                    };
                    t_ns + self.retry_ns
                }
            }
            State::Retry { n, after, lo, hi } => {
                if changed {
                    // Late, and now pinned to one retry step.
                    self.lock_on(after, t_ns);
                    self.periods_since_probe = 0;
                    self.misses_in_row = 0;
                    self.plan(t_ns)
                } else if n < RETRIES {
                    self.stats.retries += 1;
                    self.state = State::Retry {
                        n: n + 1,
                        after: t_ns,
                        lo,
                        hi,
                    };
                    t_ns + self.retry_ns
                } else {
                    // No change: the sensor repeated its value, or the update is far off.
                    self.stats.misses += 1;
                    self.misses_in_row += 1;
                    if self.misses_in_row >= MISSES_TO_REACQUIRE {
                        return self.acquire(t_ns);
                    }
                    self.lo = lo;
                    self.hi = hi;
                    self.periods_since_probe += 1;
                    self.plan(t_ns)
                }
            }
        }
    }

    fn acquire(&mut self, t_ns: u64) -> u64 {
        self.stats.acquisitions += 1;
        self.misses_in_row = 0;
        self.pinned = None;
        // The lock was lost: the measured period may be why (a phase jump inside its
        // baseline makes it wrong, and a wrong period loses the sensor again within a few
        // dozen periods, before a new measurement could replace it). Start again from the
        // declared one.
        self.period = self.declared_ns as f64;
        self.measured = false;
        self.state = State::Acquire {
            until: t_ns + ACQUIRE_PERIODS * self.declared_ns,
        };
        t_ns + self.step_ns
    }

    /// An update was seen in `(lo, hi]`: take it as the bracket, and as a measurement of
    /// the period when it is tight.
    fn lock_on(&mut self, lo: u64, hi: u64) {
        let lo = lo.min(hi);
        self.lo = lo;
        self.hi = hi;
        if hi - lo <= 2 * self.retry_ns {
            let mid = lo + (hi - lo) / 2;
            match self.pinned {
                None => self.pinned = Some(mid),
                Some(first) => {
                    // A pin is off by at most half its bracket; over n periods that error
                    // is spread n ways: the first pin since acquisition is the reference,
                    // and only a long baseline is trusted.
                    let n = ((mid - first) as f64 / self.period).round();
                    // The sensor's phase can jump (an H200's moved 6-13 ms at once, now and
                    // then): a pin further from where the reference and the period put it
                    // than two brackets and the period's own uncertainty allow starts a
                    // new baseline instead of bending the period.
                    let expected = first as f64 + n * self.period;
                    let per_period = if self.measured {
                        self.declared_ns as f64 / 1_000.0
                    } else {
                        self.declared_ns as f64 / 200.0
                    };
                    let allowed = 2.0 * self.retry_ns as f64 + n * per_period;
                    if (mid as f64 - expected).abs() > allowed {
                        self.pinned = Some(mid);
                        return;
                    }
                    if n >= MEASURE_PERIODS {
                        let measured = (mid - first) as f64 / n;
                        let declared = self.declared_ns as f64;
                        if (measured - declared).abs() < 0.02 * declared {
                            self.period = measured;
                            self.measured = true;
                        }
                    }
                }
            }
        }
    }

    /// After a guard found no update yet: a probe in the middle of the window when it is
    /// wide, else the poll after it.
    fn narrow_or_wait(&mut self, now: u64, lo: u64, hi: u64) -> u64 {
        let width = hi.saturating_sub(lo);
        let mid = lo + width / 2;
        if width > self.guard_ns && mid > now {
            self.stats.probes += 1;
            self.state = State::Probe { lo, hi };
            mid
        } else {
            self.state = State::Main { lo, hi };
            hi + self.margin_ns
        }
    }

    /// Plans the next period from the bracket: every few periods (and while the bracket is
    /// wide) a guard just before the predicted window and a probe inside it, else one poll
    /// just after it.
    fn plan(&mut self, now: u64) -> u64 {
        let p = self.period.round() as u64;
        // A declared period may be off by a part in a thousand; a measured one by far less.
        let drift = if self.measured {
            self.drift_ns
        } else {
            10 * self.drift_ns
        };
        let (mut lo, mut hi) = (self.lo, self.hi);
        // The next update, a period on; skip periods already past (a late thread).
        loop {
            lo = (lo + p).saturating_sub(drift);
            hi += p + drift;
            if hi + self.margin_ns > now {
                break;
            }
        }
        let width = hi - lo;
        let guard = lo.saturating_sub(self.guard_ns);
        if (self.periods_since_probe >= PROBE_EVERY || width > 2 * self.guard_ns) && guard > now {
            self.periods_since_probe = 0;
            self.stats.guards += 1;
            self.state = State::Guard { lo, hi };
            guard
        } else {
            self.state = State::Main { lo, hi };
            hi + self.margin_ns
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// A sensor updating every `period` ns from `phase`, each update with a new value
    /// (`repeat_every`: every n-th update repeats the previous value), with deterministic
    /// jitter of up to `jitter` ns on each update's time.
    struct Sensor {
        period: u64,
        phase: u64,
        jitter: u64,
        repeat_every: u64,
        /// (from update k on, the phase moves later by ns), cumulative: the sensor's
        /// update phase jumps now and then (seen on an H200: +12 ms at once).
        jumps: Vec<(u64, u64)>,
    }

    impl Sensor {
        fn update_time(&self, k: u64) -> u64 {
            // a fixed pseudo-random jitter per update
            let j = (k.wrapping_mul(2_654_435_761) % 1000) * self.jitter / 1000;
            let moved: u64 = self
                .jumps
                .iter()
                .filter(|&&(from, _)| k >= from)
                .map(|&(_, ns)| ns)
                .sum();
            self.phase + k * self.period + j + moved
        }
        /// The number of the last update at or before t.
        fn index(&self, t: u64) -> Option<u64> {
            if t < self.update_time(0) {
                return None;
            }
            let mut k = (t - self.phase) / self.period;
            while self.update_time(k) > t {
                k -= 1;
            }
            while self.update_time(k + 1) <= t {
                k += 1;
            }
            Some(k)
        }
        fn value(&self, t: u64) -> f64 {
            match self.index(t) {
                None => -1.0,
                Some(k) if self.repeat_every > 0 && k % self.repeat_every == 0 && k > 0 => {
                    (k - 1) as f64
                }
                Some(k) => k as f64,
            }
        }
    }

    /// Runs a lock against a sensor for `secs` and returns (polls per update, the lags of
    /// the first reading of each update after `settle` ns, updates never read).
    fn run(s: &Sensor, secs: u64, start: u64, settle: u64) -> (PhaseLock, Vec<u64>, u64) {
        let mut lock = PhaseLock::new(100 * MS);
        let mut t = start;
        let end = start + secs * 1_000_000_000;
        let mut seen: Vec<(u64, u64)> = Vec::new(); // (update index, first read time)
        while t < end {
            let v = s.value(t);
            if let Some(k) = s.index(t)
                && seen.last().is_none_or(|&(last, _)| last != k)
            {
                seen.push((k, t));
            }
            let next = lock.observe(t, Some(v));
            assert!(next > t, "the next poll must come later ({next} after {t})");
            t = next;
        }
        let mut lags = Vec::new();
        let mut unseen = 0;
        for w in seen.windows(2) {
            let ((k0, _), (k1, t1)) = (w[0], w[1]);
            if t1 >= start + settle {
                unseen += k1 - k0 - 1;
                lags.push(t1 - s.update_time(k1));
            }
        }
        (lock, lags, unseen)
    }

    fn p99(v: &mut [u64]) -> u64 {
        v.sort_unstable();
        v[(v.len() * 99 / 100).min(v.len() - 1)]
    }

    #[test]
    fn locks_onto_a_steady_sensor_reads_every_update_once_and_soon() {
        let s = Sensor {
            period: 100 * MS,
            phase: 1_000_000_000 + 37 * MS,
            jitter: 0,
            repeat_every: 0,
            jumps: vec![],
        };
        let (lock, mut lags, unseen) = run(&s, 60, 1_000_000_000, 2_000_000_000);
        let st = lock.stats();
        assert_eq!(unseen, 0, "{st:?}");
        assert!(lock.is_locked());
        // One poll per update, and a guard and a probe (and sometimes the poll after the
        // window) every 32nd period: under 1.1 polls per update after the acquisition.
        assert!(st.polls * 100 < st.updates * 115, "{st:?}");
        assert_eq!(st.acquisitions, 1, "{st:?}");
        // Read after the margin (2.5 ms) plus at most the bracket (kept under 2.5 ms):
        // under the 10 ms a 10-ms poll gives at worst.
        assert!(
            p99(&mut lags) < 11 * MS / 2,
            "{:?}",
            &lags[lags.len() - 5..]
        );
    }

    #[test]
    fn follows_a_sensor_whose_clock_runs_fast_or_slow_and_jitters() {
        for period in [99_700_000, 100_400_000] {
            let s = Sensor {
                period,
                phase: 1_000_000_000 + 61 * MS,
                jitter: 400_000,
                repeat_every: 0,
                jumps: vec![],
            };
            let (lock, mut lags, unseen) = run(&s, 120, 1_000_000_000, 10_000_000_000);
            let st = lock.stats();
            assert_eq!(unseen, 0, "period {period}: {st:?}");
            assert!(
                st.period_ns.abs_diff(period) < 100_000,
                "period {period} measured as {}",
                st.period_ns
            );
            assert!(st.polls * 100 < st.updates * 130, "{st:?}");
            assert!(p99(&mut lags) < 6 * MS, "period {period}: {st:?}");
            assert!(st.acquisitions <= 2, "period {period}: {st:?}");
        }
    }

    #[test]
    fn a_sensor_whose_phase_jumps_does_not_corrupt_the_period() {
        // What an H200 did (issue 15, side1): a period a little over 100 ms, and the phase
        // of the updates jumping later now and then. A jump inside the baseline of a period
        // measurement once made the lock take 100.28 ms as the period and lose the sensor
        // every two seconds from then on (18 acquisitions in 50 s). Jumps the retries
        // reach (under 7.5 ms) keep the lock, so nothing else resets the baseline.
        let s = Sensor {
            period: 100_040_000,
            phase: 1_000_000_000 + 21 * MS,
            jitter: 300_000,
            repeat_every: 0,
            jumps: vec![(60, 6 * MS), (185, 7 * MS), (420, 6 * MS)],
        };
        let (lock, mut lags, unseen) = run(&s, 120, 1_000_000_000, 50_000_000_000);
        let st = lock.stats();
        assert_eq!(unseen, 0, "{st:?}");
        // at most one acquisition per jump, not one every few seconds
        assert!(st.acquisitions <= 4, "{st:?}");
        assert!(
            st.period_ns.abs_diff(s.period) < 30_000,
            "period {} measured as {}: {st:?}",
            s.period,
            st.period_ns
        );
        assert!(st.polls * 100 < st.updates * 125, "{st:?}");
        assert!(p99(&mut lags) < 6 * MS, "{st:?}");
    }

    #[test]
    fn a_repeated_value_costs_a_few_retries_not_the_lock() {
        let s = Sensor {
            period: 100 * MS,
            phase: 1_000_000_000 + 5 * MS,
            jitter: 0,
            repeat_every: 7,
            jumps: vec![],
        };
        let (lock, _lags, _unseen) = run(&s, 60, 1_000_000_000, 2_000_000_000);
        let st = lock.stats();
        assert!(lock.is_locked(), "{st:?}");
        assert_eq!(st.acquisitions, 1, "{st:?}");
        // one period in seven repeats its value: a miss after 3 retries each
        let periods = 600;
        assert!(st.misses * 10 >= periods / 7 * 8, "{st:?}");
        assert!(st.polls < periods * 16 / 10, "{st:?}");
    }

    #[test]
    fn a_constant_sensor_is_polled_once_per_period() {
        let mut lock = PhaseLock::new(100 * MS);
        let mut t = 5 * MS;
        let mut polls = 0;
        while t < 60_000 * MS {
            t = lock.observe(t, Some(42.0));
            polls += 1;
        }
        assert!(!lock.is_locked());
        // acquisition (3 periods at P/20), then one per period, with a retry of the
        // acquisition every 30 s: about 600 + 2 × 60.
        assert!((600..800).contains(&polls), "{polls}");
    }

    #[test]
    fn a_lock_that_loses_its_sensor_reacquires() {
        // In phase for 20 s, then the sensor's phase jumps by 50 ms (a driver reset).
        let a = Sensor {
            period: 100 * MS,
            phase: 20 * MS,
            jitter: 0,
            repeat_every: 0,
            jumps: vec![],
        };
        let b = Sensor {
            period: 100 * MS,
            phase: 70 * MS,
            jitter: 0,
            repeat_every: 0,
            jumps: vec![],
        };
        let mut lock = PhaseLock::new(100 * MS);
        let mut t = 0;
        while t < 20_000 * MS {
            t = lock.observe(t, Some(a.value(t)));
        }
        let locked_polls = lock.stats().polls;
        let mut lags = Vec::new();
        let mut last_k = None;
        while t < 40_000 * MS {
            let k = b.index(t);
            if t > 25_000 * MS && k != last_k {
                lags.push(t - b.update_time(k.unwrap()));
            }
            last_k = k;
            t = lock.observe(t, Some(b.value(t) + 1e6));
        }
        assert!(lock.is_locked());
        assert!(
            lock.stats().polls - locked_polls < 260,
            "{:?}",
            lock.stats()
        );
        assert!(p99(&mut lags) < 11 * MS / 2, "{:?}", lock.stats());
    }

    #[test]
    fn a_poll_without_a_value_keeps_the_prediction() {
        let s = Sensor {
            period: 100 * MS,
            phase: 30 * MS,
            jitter: 0,
            repeat_every: 0,
            jumps: vec![],
        };
        let mut lock = PhaseLock::new(100 * MS);
        let mut t = 0;
        while t < 5_000 * MS {
            t = lock.observe(t, Some(s.value(t)));
        }
        assert!(lock.is_locked());
        let t2 = lock.observe(t, None);
        assert!(t2 > t && t2 - t <= 110 * MS, "{}", t2 - t);
        assert!(lock.is_locked());
    }
}

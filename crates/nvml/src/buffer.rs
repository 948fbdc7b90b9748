//! Turning drains of the driver's power sample buffer into readings: de-duplicated by
//! timestamp, mapped from CLOCK_REALTIME µs onto the monotonic base, and with overruns
//! detected and reported, never papered over.
//!
//! The driver keeps a ring of about 119 total-power samples, one every ~20 ms (≈ 2.4 s on
//! the H100 measured here). Drained every 0.5 s, each drain returns the ~25 samples newer
//! than the last one seen. If drains stall for longer than the ring holds, the oldest
//! unseen samples are overwritten: the first sample of the next drain then lies far more
//! than one sample period after the last one seen, and that stretch is reported as a gap.

use flinch_core::clock::ClockAnchor;

/// Follows the buffer from drain to drain.
#[derive(Clone, Debug, Default)]
pub struct BufferTracker {
    last_seen_us: u64,
    last_emitted_ns: u64,
    last_mapped_ns: u64,
    spacing_us: Option<u64>,
    drains: u64,
    gaps: u64,
}

/// A drain's verdict on continuity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Overrun {
    /// The last sample seen before the gap, monotonic ns.
    pub start_ns: u64,
    /// The first sample after it.
    pub end_ns: u64,
}

/// The smallest stretch between two consecutive samples that counts as lost data: a few
/// sample periods (a late sample or two is jitter, not loss).
const GAP_PERIODS: u64 = 4;
/// Never call less than this a gap, whatever the estimated spacing.
const MIN_GAP_US: u64 = 100_000;

impl BufferTracker {
    /// A tracker that has seen nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The timestamp (µs since 1970) to pass to the next drain as "last seen".
    pub fn last_seen_us(&self) -> u64 {
        self.last_seen_us
    }

    /// The median spacing of samples in recent drains, µs.
    pub fn spacing_us(&self) -> Option<u64> {
        self.spacing_us
    }

    /// Overruns detected so far.
    pub fn gaps(&self) -> u64 {
        self.gaps
    }

    /// Takes one drain: `samples` as (driver µs timestamp, value), oldest first, and the
    /// anchor taken at the drain. Calls `emit(monotonic ns, value)` for each new sample and
    /// returns an overrun if the drain does not continue where the last one ended.
    pub fn ingest(
        &mut self,
        samples: impl IntoIterator<Item = (u64, f64)>,
        anchor: ClockAnchor,
        mut emit: impl FnMut(u64, f64),
    ) -> Option<Overrun> {
        let offset_ns = anchor.offset_ns();
        let map = |us: u64| -> u64 { ((us as i64).saturating_mul(1000) - offset_ns).max(0) as u64 };
        let mut prev_us = self.last_seen_us;
        let mut overrun = None;
        let mut deltas = [0u64; 8];
        let mut n_deltas = 0;
        let mut first = true;
        for (ts_us, value) in samples {
            if ts_us <= self.last_seen_us {
                continue; // already seen (or out of order): de-duplicated
            }
            if first && self.last_seen_us > 0 {
                let jump = ts_us - self.last_seen_us;
                let limit = self
                    .spacing_us
                    .map_or(MIN_GAP_US, |s| (s * GAP_PERIODS).max(MIN_GAP_US));
                if jump > limit {
                    self.gaps += 1;
                    overrun = Some(Overrun {
                        start_ns: self.last_mapped_ns,
                        end_ns: map(ts_us).max(self.last_emitted_ns),
                    });
                }
            }
            if !first && n_deltas < deltas.len() {
                deltas[n_deltas] = ts_us - prev_us;
                n_deltas += 1;
            }
            first = false;
            prev_us = ts_us;
            // Anchors taken at different drains differ by a few µs: never let that step a
            // channel backwards.
            let t = map(ts_us).max(self.last_emitted_ns);
            emit(t, value);
            self.last_emitted_ns = t;
            self.last_mapped_ns = t;
            self.last_seen_us = ts_us;
        }
        if n_deltas > 0 {
            let d = &mut deltas[..n_deltas];
            d.sort_unstable();
            self.spacing_us = Some(d[n_deltas / 2]);
        }
        self.drains += 1;
        overrun
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANCHOR: ClockAnchor = ClockAnchor {
        mono_ns: 5_000_000_000,
        real_ns: 1_795_000_000_000_000_000,
    };

    fn drain(
        t: &mut BufferTracker,
        us: &[u64],
        anchor: ClockAnchor,
    ) -> (Vec<(u64, f64)>, Option<Overrun>) {
        let mut out = Vec::new();
        let gap = t.ingest(us.iter().map(|&u| (u, u as f64)), anchor, |ns, v| {
            out.push((ns, v))
        });
        (out, gap)
    }

    #[test]
    fn maps_realtime_microseconds_onto_monotonic_and_dedupes() {
        let mut t = BufferTracker::new();
        let base = 1_795_000_000_000_000u64; // µs; realtime of the anchor
        let s: Vec<u64> = (0..5).map(|i| base - 100_000 + i * 20_000).collect();
        let (out, gap) = drain(&mut t, &s, ANCHOR);
        assert_eq!(gap, None);
        assert_eq!(out.len(), 5);
        // 100 ms before the anchor's realtime = 100 ms before its monotonic time
        assert_eq!(out[0].0, 5_000_000_000 - 100_000_000);
        assert_eq!(out[4].0, 5_000_000_000 - 20_000_000);
        assert_eq!(t.spacing_us(), Some(20_000));
        // The next drain repeats two old samples (NVML given a stale cursor): skipped.
        let s2: Vec<u64> = vec![s[3], s[4], s[4] + 20_000, s[4] + 40_000];
        let (out2, gap2) = drain(&mut t, &s2, ANCHOR);
        assert_eq!(gap2, None);
        assert_eq!(
            out2.iter().map(|o| o.1 as u64).collect::<Vec<_>>(),
            vec![s[4] + 20_000, s[4] + 40_000]
        );
        assert_eq!(t.last_seen_us(), s[4] + 40_000);
    }

    #[test]
    fn a_drain_that_does_not_continue_is_an_overrun() {
        let mut t = BufferTracker::new();
        let base = 1_795_000_000_000_000u64;
        let s: Vec<u64> = (0..10).map(|i| base + i * 20_000).collect();
        drain(&mut t, &s, ANCHOR);
        // 3 s later: the ring (2.4 s) was overwritten; the next drain starts 3 s on.
        let later: Vec<u64> = (0..10).map(|i| s[9] + 3_000_000 + i * 20_000).collect();
        let (out, gap) = drain(&mut t, &later, ANCHOR);
        let gap = gap.expect("an overrun is reported");
        assert_eq!(gap.start_ns, out[0].0 - 3_000_000_000);
        assert_eq!(gap.end_ns, out[0].0);
        assert_eq!(t.gaps(), 1);
        // Jitter of a late sample (45 ms instead of 20 ms) is not a gap.
        let next = [later[9] + 45_000, later[9] + 65_000];
        assert_eq!(drain(&mut t, &next, ANCHOR).1, None);
    }

    #[test]
    fn anchor_jitter_never_steps_time_backwards() {
        let mut t = BufferTracker::new();
        let base = 1_795_000_000_000_000u64;
        let (a, _) = drain(&mut t, &[base, base + 20_000], ANCHOR);
        // A second anchor 30 µs "later" in offset makes the mapped time of the next sample
        // fall before the last one emitted.
        let shifted = ClockAnchor {
            mono_ns: ANCHOR.mono_ns + 30_000,
            real_ns: ANCHOR.real_ns,
        };
        let (b, _) = drain(&mut t, &[base + 20_010], shifted);
        assert!(b[0].0 >= a[1].0);
    }

    #[test]
    fn an_empty_drain_changes_nothing() {
        let mut t = BufferTracker::new();
        let (out, gap) = drain(&mut t, &[], ANCHOR);
        assert!(out.is_empty() && gap.is_none());
        assert_eq!(t.last_seen_us(), 0);
    }
}

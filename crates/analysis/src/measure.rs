//! What one channel saw over a stretch of a span, and how long a channel takes to settle.

use crate::analyzer::Analyzer;
use crate::report::ChannelStatus;
use flinch_core::channel::{ChannelKind, ChannelSpec, Quantity};
use flinch_core::integrate::{integrate_counter, integrate_gauge};
use flinch_core::trace::RowKind;

/// How long after a change a channel shows it: two sensor updates (a sample describes the
/// interval before it, so the first one wholly after a change comes up to two periods
/// later). Verdicts skip this much of the start of a span, so the tail of the previous state
/// (a busy phase's power still ramping down in the sensor, a 100 ms activity window
/// straddling the edge) is not taken for this span's. Energies always cover the whole span.
///
/// Measured power also has a physical tail: after a load step an H100's or H200's power
/// takes 60–90 ms to come within a few watts of its new level (724 → 424 → 181 → 131 →
/// 123.5 W at 11, 31, 56 and 89 ms after a busy phase ended, `docs/hardware.md`). So a
/// power channel whose sensor period is known settles for at least [`POWER_TAIL_NS`].
pub fn settle_ns(spec: &ChannelSpec) -> u64 {
    match spec.update_period_ns {
        None => 0,
        Some(p) if spec.quantity == Quantity::Power => p.saturating_mul(2).max(POWER_TAIL_NS),
        Some(p) => p.saturating_mul(2),
    }
}

/// The least settle time of a measured power channel (see [`settle_ns`]).
pub const POWER_TAIL_NS: u64 = 80_000_000;

/// What a gauge's samples say about `[a, b]`: their mean, their number and how many differ
/// from the one before; `None` when there is none. For a channel whose repeated readings
/// were elided (`held`), see [`held_inside`].
pub(crate) fn gauge_inside(
    held: bool,
    t: &[u64],
    v: &[f64],
    a: u64,
    b: u64,
) -> Option<(f64, u32, u32)> {
    if held {
        held_inside(t, v, a, b)
    } else {
        samples_inside(t, v, a, b)
    }
}

/// [`samples_inside`] for a channel whose repeated readings were elided
/// ([`flinch_core::channel::ChannelSpec::heartbeat_ns`]): each row stands for the polls since the
/// row before it, so the mean is weighted by that time (clipped to the window), and a row
/// after `b` that repeats the one before it (the value was held across `b`) covers the
/// window's end. On rows written at every poll this is the mean of the samples (polls a
/// steady interval apart), and it does not change when repeats are elided; the count is
/// of rows, plus one for a held value reaching in from after `b`.
fn held_inside(t: &[u64], v: &[f64], a: u64, b: u64) -> Option<(f64, u32, u32)> {
    let lo = t.partition_point(|&x| x < a);
    let hi = t.partition_point(|&x| x <= b);
    let (mut sum, mut weight) = (0.0, 0u64);
    for i in lo..hi {
        let from = if i == 0 { a } else { t[i - 1].max(a) };
        let w = t[i].saturating_sub(from);
        sum += v[i] * w as f64;
        weight += w;
    }
    let mut n = hi.saturating_sub(lo) as u32;
    if hi < t.len() && hi > 0 && v[hi] == v[hi - 1] {
        let from = t[hi - 1].max(a);
        let w = b.saturating_sub(from);
        if w > 0 {
            sum += v[hi] * w as f64;
            weight += w;
            n += 1;
        }
    }
    if n == 0 {
        return None;
    }
    let changes = if hi > lo {
        v[lo.max(1) - 1..hi]
            .windows(2)
            .filter(|w| w[0] != w[1])
            .count() as u32
    } else {
        0
    };
    let mean = if weight > 0 {
        sum / weight as f64
    } else {
        v[lo..hi].iter().sum::<f64>() / (hi - lo).max(1) as f64
    };
    Some((mean, n, changes))
}

/// The mean of a gauge's samples stamped in `[a, b]`, their number and how many differ from
/// the one before. `None` when there is none.
pub(crate) fn samples_inside(t: &[u64], v: &[f64], a: u64, b: u64) -> Option<(f64, u32, u32)> {
    let lo = t.partition_point(|&x| x < a);
    let hi = t.partition_point(|&x| x <= b);
    if hi <= lo {
        return None;
    }
    let xs = &v[lo..hi];
    let changes = xs.windows(2).filter(|w| w[0] != w[1]).count() as u32;
    Some((
        xs.iter().sum::<f64>() / xs.len() as f64,
        xs.len() as u32,
        changes,
    ))
}

pub(crate) struct Measured {
    pub(crate) status: ChannelStatus,
    pub(crate) note: Option<String>,
    /// Gauges: integral; counters: increase.
    pub(crate) value: f64,
    pub(crate) samples: u32,
    pub(crate) changes: u32,
}

impl Analyzer<'_> {
    pub(crate) fn measure(&self, i: usize, start: u64, end: u64) -> Measured {
        let ch = &self.trace.channels[i];
        let c = &self.chans[i];
        let fail = |status, note: String| Measured {
            status,
            note: Some(note),
            value: 0.0,
            samples: 0,
            changes: 0,
        };
        let (value, samples, changes, bracket, resets, flagged) = match &ch.spec.kind {
            ChannelKind::Gauge => match integrate_gauge(&ch.t_ns, &ch.values, start, end) {
                Ok(w) => (
                    w.integral,
                    w.samples_inside,
                    w.changes_inside,
                    w.bracket_ns,
                    0,
                    0,
                ),
                Err(e) => return fail(ChannelStatus::NoData, e.to_string()),
            },
            ChannelKind::Counter(spec) => match integrate_counter(
                &ch.t_ns,
                &ch.values,
                spec,
                ch.spec.update_period_ns,
                start,
                end,
            ) {
                Ok(w) => (
                    w.increase,
                    w.samples_inside,
                    w.changes_inside,
                    w.bracket_ns,
                    w.resets,
                    w.flagged,
                ),
                Err(e) => return fail(ChannelStatus::NoData, e.to_string()),
            },
        };
        let (lo, hi) = bracket;
        for (a, b, why) in &c.holes {
            // A hole matters when it overlaps the stretch between the samples used.
            if (*a < hi && *b > lo) || (*a == *b && *a >= lo && *a <= hi) {
                return fail(ChannelStatus::Gap, why.clone());
            }
        }
        let written_reset = c
            .marks
            .iter()
            .any(|(t, k)| *k == RowKind::Reset && *t > lo && *t <= hi);
        if resets > 0 || written_reset {
            return fail(
                ChannelStatus::CounterReset,
                "the counter restarted during the span: its energy there is unknown".into(),
            );
        }
        let written_flag = c
            .marks
            .iter()
            .any(|(t, k)| *k == RowKind::Flag && *t >= lo && *t <= hi);
        if flagged > 0 || written_flag {
            return fail(
                ChannelStatus::Flagged,
                "an implausible or out-of-range reading falls in the span".into(),
            );
        }
        Measured {
            status: ChannelStatus::Ok,
            note: None,
            value,
            samples,
            changes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: u64 = 1_000_000;

    /// Keeps what the recorder writes for a held channel: the first and the last reading of
    /// each run of equal values.
    fn elide(t: &[u64], v: &[f64]) -> (Vec<u64>, Vec<f64>) {
        let mut out = (Vec::new(), Vec::new());
        for i in 0..t.len() {
            let first = i == 0 || v[i - 1] != v[i];
            let last = i + 1 == t.len() || v[i + 1] != v[i];
            if first || last {
                out.0.push(t[i]);
                out.1.push(v[i]);
            }
        }
        out
    }

    #[test]
    fn a_held_mean_is_the_sample_mean_of_steady_polls() {
        // 10 ms polls: 0 % for 200 ms, then 100 % for 300 ms.
        let t: Vec<u64> = (0..50).map(|i| i * 10 * MS).collect();
        let v: Vec<f64> = (0..50).map(|i| if i < 20 { 0.0 } else { 100.0 }).collect();
        // Samples stamped in [105, 405] ms: 11..=40, 9 of them 0 % and 21 of them 100 %.
        let (m, n, c) = samples_inside(&t, &v, 105 * MS, 405 * MS).unwrap();
        assert_eq!((n, c), (30, 1));
        assert!((m - 70.0).abs() < 1e-9);
        // Held: the first row counts from the window's start (5 ms), the held 100 %
        // reaches to its end (5 ms more): (5 × 0 + 80 × 0 + 210 × 100 + 5 × 100) / 300.
        let (h, hn, hc) = held_inside(&t, &v, 105 * MS, 405 * MS).unwrap();
        assert!((h - 21_500.0 / 300.0).abs() < 1e-9, "{h}");
        assert_eq!((hn, hc), (31, 1));
        // Elided, the same mean and changes from 4 rows.
        let (te, ve) = elide(&t, &v);
        assert_eq!(te.len(), 4);
        let (e, en, ec) = held_inside(&te, &ve, 105 * MS, 405 * MS).unwrap();
        assert!((e - h).abs() < 1e-9);
        // the last 0 % row, the change to 100 %, and the held value reaching the end
        assert_eq!((en, ec), (3, 1));
        // A window inside a run has no row inside but is covered by the held value.
        let (e, en, _) = held_inside(&te, &ve, 250 * MS, 300 * MS).unwrap();
        assert_eq!((e, en), (100.0, 1));
        // Nothing after the last row: not covered.
        assert_eq!(held_inside(&te, &ve, 495 * MS, 600 * MS), None);
    }

    proptest! {
        #[test]
        fn a_held_mean_does_not_change_when_repeats_are_elided(
            steps in proptest::collection::vec((0u8..4, 1u64..30), 1..40),
            windows in proptest::collection::vec((0.0f64..1.0, 0.0f64..1.0), 1..20),
        ) {
            let (mut t, mut v) = (Vec::new(), Vec::new());
            let mut now = 1_000 * MS;
            for (x, n) in steps {
                for _ in 0..n {
                    t.push(now);
                    v.push(x as f64 * 25.0);
                    now += 10 * MS;
                }
            }
            let (te, ve) = elide(&t, &v);
            let span = (now - 1_000 * MS) as f64;
            for (x, y) in windows {
                let a = 1_000 * MS - 20 * MS + (x.min(y) * span) as u64;
                let b = 1_000 * MS - 20 * MS + (x.max(y) * span) as u64;
                let dense = held_inside(&t, &v, a, b);
                let held = held_inside(&te, &ve, a, b);
                prop_assert_eq!(dense.is_some(), held.is_some(), "window {}..{}", a, b);
                if let (Some(d), Some(h)) = (dense, held) {
                    prop_assert!((d.0 - h.0).abs() < 1e-9 * d.0.abs().max(1.0), "{:?} vs {:?}", d, h);
                    prop_assert_eq!(d.2, h.2);
                }
            }
        }
    }
}

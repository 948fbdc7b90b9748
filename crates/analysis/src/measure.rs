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

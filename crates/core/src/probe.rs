//! What a source's sensors can resolve, measured on the spot (`flinch sources --probe`): the
//! cost of one poll and, per channel, how often its value actually changes. One probe for
//! every backend: it only polls the [`Source`].

use crate::clock::Clock;
use crate::source::{Reading, Readings, Source};
use std::time::Duration;

/// What was measured for one channel.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct ChannelProbe {
    /// The channel (`gpu0.power_instant`).
    pub channel: String,
    /// Median interval between changes of its value, by the readings' own timestamps, ns
    /// (`None`: it changed fewer than twice).
    pub change_interval_ns: Option<u64>,
    /// Value changes seen.
    pub changes: usize,
    /// Readings received.
    pub readings: usize,
}

/// What was measured for one source.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct SourceProbe {
    /// The source.
    pub source: String,
    /// Polls made.
    pub polls: usize,
    /// Polls that failed, and the first error.
    pub failures: usize,
    /// The first failure's message.
    pub first_error: Option<String>,
    /// Median wall time of one poll, ns.
    pub poll_cost_ns: u64,
    /// Per channel, in the source's order.
    pub channels: Vec<ChannelProbe>,
}

fn median(v: &mut [u64]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    Some(v[v.len() / 2])
}

/// Polls `src` for about `duration` (at most `max_polls` times, at least `min_gap` apart),
/// timing each poll and noting when each channel's value changes.
pub fn probe_source(
    src: &mut dyn Source,
    clock: &dyn Clock,
    duration: Duration,
    min_gap: Duration,
    max_polls: usize,
) -> SourceProbe {
    let n = src.info().channels.len();
    let mut buf: Vec<Reading> = Vec::with_capacity(src.max_readings_per_poll().max(1));
    let mut costs = Vec::new();
    let mut last: Vec<Option<(u64, f64)>> = vec![None; n];
    let mut change_at: Vec<Vec<u64>> = vec![Vec::new(); n];
    let mut readings = vec![0usize; n];
    let mut p = SourceProbe {
        source: src.info().name.clone(),
        ..Default::default()
    };
    let end = clock.now_ns() + duration.as_nanos() as u64;
    while p.polls < max_polls && clock.now_ns() < end {
        buf.clear();
        let a = clock.now_ns();
        let r = {
            let mut out = Readings::new(clock, &mut buf, 0, n as u32);
            src.poll(&mut out)
        };
        let b = clock.now_ns();
        p.polls += 1;
        costs.push(b - a);
        if let Err(e) = r {
            p.failures += 1;
            p.first_error.get_or_insert_with(|| e.to_string());
        }
        for rd in &buf {
            let c = rd.channel as usize;
            readings[c] += 1;
            match last[c] {
                Some((t, v)) if rd.t_ns > t && v != rd.value => change_at[c].push(rd.t_ns),
                _ => {}
            }
            if last[c].is_none_or(|(t, _)| rd.t_ns >= t) {
                last[c] = Some((rd.t_ns, rd.value));
            }
        }
        let next = a + min_gap.as_nanos() as u64;
        while clock.now_ns() < next && clock.now_ns() < end {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    p.poll_cost_ns = median(&mut costs).unwrap_or(0);
    p.channels = src
        .info()
        .channels
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut gaps: Vec<u64> = change_at[i].windows(2).map(|w| w[1] - w[0]).collect();
            ChannelProbe {
                channel: c.name.clone(),
                change_interval_ns: median(&mut gaps),
                changes: change_at[i].len(),
                readings: readings[i],
            }
        })
        .collect();
    p
}

#[cfg(all(test, feature = "testing"))]
mod tests {
    use super::*;
    use crate::channel::{ChannelSpec, PowerMethod};
    use crate::clock::ManualClock;
    use crate::testing::ScriptedSource;

    #[test]
    fn changes_are_timed_by_the_readings_own_stamps() {
        // A value that changes every 20 ms of its own timestamps, whatever the poll rate.
        let mut s = ScriptedSource::new(
            "s",
            vec![ChannelSpec::power("d", "p", PowerMethod::DriverSamples)],
        );
        for k in 0..5i64 {
            s = s.then(vec![(0, k * 20_000_000, k as f64)]);
        }
        // A clock that stands still: the probe stops at its poll limit.
        let p = probe_source(
            &mut s,
            &ManualClock::new(1_000_000_000, 0),
            Duration::from_secs(1),
            Duration::ZERO,
            5,
        );
        assert_eq!(p.polls, 5);
        assert_eq!(p.failures, 0);
        assert_eq!(p.channels[0].readings, 5);
        assert_eq!(p.channels[0].changes, 4);
        assert_eq!(p.channels[0].change_interval_ns, Some(20_000_000));
    }
}

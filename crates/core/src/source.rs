//! The trait every backend implements, and the buffer a poll fills.
//!
//! One trait, [`Source`], rather than one per quantity: a GPU handle serves power, energy and
//! activity alike, and the sampler only needs to know how often to poll. What a source
//! offers is described by its channels ([`crate::channel`]): power gauges, cumulative energy
//! counters (with their wrap range or reset-on-decrease) and activity gauges. A poll may
//! yield several readings per channel, each with its own timestamp (the NVML driver buffer
//! returns ~25 samples per drain), so readings carry timestamps rather than taking the
//! time of the poll.
//!
//! Optional capabilities arrive as default methods, so existing sources keep compiling.

use crate::channel::SourceInfo;
use crate::clock::Clock;
use crate::error::SourceError;
use std::time::Duration;

/// One value of one channel at one instant. `channel` is the recording-wide channel index.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reading {
    /// Index of the channel in the recording's channel table.
    pub channel: u32,
    /// `CLOCK_MONOTONIC` ns at which the value was valid.
    pub t_ns: u64,
    /// The value, in the channel's unit.
    pub value: f64,
}

/// A stretch of time for which a source knows it has no data although its polls succeeded
/// (a driver buffer that overran between two drains).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataGap {
    /// Last time covered by data before the gap (`CLOCK_MONOTONIC` ns).
    pub start_ns: u64,
    /// First time covered by data after it.
    pub end_ns: u64,
    /// Why.
    pub reason: &'static str,
}

/// Where a poll puts its readings. Preallocated and reused: pushing does not allocate once
/// the buffer has grown to the source's largest poll.
pub struct Readings<'a> {
    clock: &'a dyn Clock,
    out: &'a mut Vec<Reading>,
    base: u32,
    n_channels: u32,
    rejected: u32,
    gap: Option<DataGap>,
}

impl<'a> Readings<'a> {
    /// A buffer for a source whose channels start at recording index `base`.
    pub fn new(
        clock: &'a dyn Clock,
        out: &'a mut Vec<Reading>,
        base: u32,
        n_channels: u32,
    ) -> Self {
        Readings {
            clock,
            out,
            base,
            n_channels,
            rejected: 0,
            gap: None,
        }
    }
    /// Reports that the source has no data between `start_ns` and `end_ns` although this
    /// poll succeeded (one per poll; a later report in the same poll replaces it). It is
    /// written as a gap of this source.
    pub fn report_gap(&mut self, start_ns: u64, end_ns: u64, reason: &'static str) {
        self.gap = Some(DataGap {
            start_ns,
            end_ns,
            reason,
        });
    }
    /// The gap reported by this poll, if any.
    pub fn reported_gap(&self) -> Option<DataGap> {
        self.gap
    }
    /// The recording's clock.
    pub fn clock(&self) -> &dyn Clock {
        self.clock
    }
    /// Now, in `CLOCK_MONOTONIC` ns.
    pub fn now_ns(&self) -> u64 {
        self.clock.now_ns()
    }
    /// Adds a reading of the source's `channel`-th channel (index into
    /// [`SourceInfo::channels`]). Non-finite values and unknown channels are rejected and
    /// counted, never written.
    pub fn push(&mut self, channel: usize, t_ns: u64, value: f64) {
        if channel >= self.n_channels as usize || !value.is_finite() {
            self.rejected += 1;
            return;
        }
        self.out.push(Reading {
            channel: self.base + channel as u32,
            t_ns,
            value,
        });
    }
    /// Adds a reading stamped now.
    pub fn push_now(&mut self, channel: usize, value: f64) {
        let t = self.now_ns();
        self.push(channel, t, value);
    }
    /// How many pushes were rejected (unknown channel or non-finite value).
    pub fn rejected(&self) -> u32 {
        self.rejected
    }
    /// How many readings the buffer holds.
    pub fn len(&self) -> usize {
        self.out.len()
    }
    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.out.is_empty()
    }
}

/// Poll a source once per update of one of its channels, just after the update, instead of on
/// a fixed grid: what [`Source::phase_lock`] asks for. The sampler follows the sensor's
/// phase from the values it reads (`crate::phase::PhaseLock`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhaseLockSpec {
    /// The source's channel (index into [`SourceInfo::channels`]) whose value changes at
    /// every sensor update.
    pub channel: usize,
    /// The sensor's update period, as declared (the lock measures the real one).
    pub period: Duration,
}

/// A backend's view of one device (or one cadence of one device).
///
/// A backend whose readings have very different costs splits them into several sources, so
/// that the sampler can poll each on its own cadence: NVML's instant power (0.5 µs) is read
/// ten times a second, its energy counter (4.5 ms, the driver spins) rarely and on a
/// thread of its own ([`Source::slow`]).
pub trait Source: Send {
    /// Name, backend, channels and device facts.
    fn info(&self) -> &SourceInfo;

    /// Reads the current values into `out`. An error makes the sampler record a gap for
    /// this source (once, with the reason) until a poll succeeds again; other sources go on.
    fn poll(&mut self, out: &mut Readings<'_>) -> Result<(), SourceError>;

    /// How often this source wants polling; `None` means the recording's fast interval
    /// (`--interval`). Every source that is not [`slow`](Source::slow) shares one sampler
    /// thread, whatever its interval.
    fn interval(&self) -> Option<Duration> {
        None
    }

    /// Whether one poll takes long (milliseconds: a driver call that spins, like NVML's
    /// energy counter). Slow sources are polled on a thread of their own, so they never
    /// delay the others.
    fn slow(&self) -> bool {
        false
    }

    /// Poll once per sensor update, just after it, rather than on a fixed grid: the
    /// channel whose changes mark the updates, and their period. `None` (the default): a
    /// fixed grid at [`interval`](Source::interval).
    fn phase_lock(&self) -> Option<PhaseLockSpec> {
        None
    }

    /// The most readings one poll can produce, used to size the buffer up front.
    fn max_readings_per_poll(&self) -> usize {
        self.info().channels.len()
    }

    /// The last poll, when the recording stops. Defaults to an ordinary poll (a counter read
    /// at the stop is what the energy of the last window needs).
    fn finish(&mut self, out: &mut Readings<'_>) -> Result<(), SourceError> {
        self.poll(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn readings_map_local_channels_and_reject_garbage() {
        let clock = ManualClock::new(7, 0);
        let mut buf = Vec::with_capacity(4);
        let mut r = Readings::new(&clock, &mut buf, 10, 2);
        r.push_now(1, 3.5);
        r.push(0, 3, 1.0);
        r.push(2, 3, 1.0); // no such channel
        r.push(0, 3, f64::NAN);
        r.push(0, 3, f64::INFINITY);
        assert_eq!(r.rejected(), 3);
        assert_eq!(r.len(), 2);
        assert_eq!(
            buf,
            vec![
                Reading {
                    channel: 11,
                    t_ns: 7,
                    value: 3.5
                },
                Reading {
                    channel: 10,
                    t_ns: 3,
                    value: 1.0
                }
            ]
        );
    }
}

//! Test kit for backends (feature `testing`): scripted sources, a do-nothing source, and the
//! conformance suite every backend's tests run against their sources.
//!
//! ```
//! use flinch_core::testing::{check_source, NullSource};
//! use flinch_core::clock::MonotonicClock;
//! let mut s = NullSource::new("null0", 3);
//! let report = check_source(&mut s, &MonotonicClock, 5);
//! assert!(report.ok(), "{report}");
//! ```

use crate::channel::{ChannelKind, ChannelSpec, PowerMethod, Quantity, SourceInfo};
use crate::clock::Clock;
use crate::counter::{CounterStep, CounterTracker};
use crate::device::DeviceClass;
use crate::error::SourceError;
use crate::marks::is_valid_label;
use crate::source::{Reading, Readings, Source};
use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::time::Duration;

/// A source that pushes a constant into each channel every poll: the sampler-overhead
/// baseline. With `push = false` it pushes nothing at all.
#[derive(Debug)]
pub struct NullSource {
    info: SourceInfo,
    push: bool,
}

impl NullSource {
    /// A source with `channels` power gauges named `<name>.c<i>`.
    pub fn new(name: &str, channels: usize) -> Self {
        NullSource {
            info: SourceInfo::new(name, "null", DeviceClass::Other).with_channels(
                (0..channels)
                    .map(|i| ChannelSpec::power(name, &format!("c{i}"), PowerMethod::Modelled))
                    .collect(),
            ),
            push: true,
        }
    }
    /// A source that pushes no readings.
    pub fn silent(name: &str, channels: usize) -> Self {
        NullSource {
            push: false,
            ..Self::new(name, channels)
        }
    }
}

impl Source for NullSource {
    fn info(&self) -> &SourceInfo {
        &self.info
    }
    fn poll(&mut self, out: &mut Readings<'_>) -> Result<(), SourceError> {
        if self.push {
            let t = out.now_ns();
            for i in 0..self.info.channels.len() {
                out.push(i, t, 1.0);
            }
        }
        Ok(())
    }
}

/// One step of a [`ScriptedSource`].
#[derive(Clone, Debug)]
pub enum Step {
    /// Readings as (local channel, offset from the poll time in ns (may be negative), value).
    Readings(Vec<(usize, i64, f64)>),
    /// The poll fails.
    Fail(SourceError),
}

/// A source that plays back a script, one step per poll; when the script runs out it
/// returns no readings.
#[derive(Debug)]
pub struct ScriptedSource {
    info: SourceInfo,
    script: VecDeque<Step>,
    interval: Option<Duration>,
    polls: usize,
}

impl ScriptedSource {
    /// A source with these channels and no script yet.
    pub fn new(name: &str, channels: Vec<ChannelSpec>) -> Self {
        ScriptedSource {
            info: SourceInfo::new(name, "scripted", DeviceClass::Other).with_channels(channels),
            script: VecDeque::new(),
            interval: None,
            polls: 0,
        }
    }
    /// Appends a step of readings.
    pub fn then(mut self, readings: Vec<(usize, i64, f64)>) -> Self {
        self.script.push_back(Step::Readings(readings));
        self
    }
    /// Appends a failing step.
    pub fn then_fail(mut self, e: SourceError) -> Self {
        self.script.push_back(Step::Fail(e));
        self
    }
    /// Sets the class of the device it pretends to measure (default: other).
    pub fn with_class(mut self, class: DeviceClass) -> Self {
        self.info.class = Some(class);
        self
    }
    /// Sets the interval the source asks for.
    pub fn with_interval(mut self, d: Duration) -> Self {
        self.interval = Some(d);
        self
    }
    /// Polls made so far.
    pub fn polls(&self) -> usize {
        self.polls
    }
}

impl Source for ScriptedSource {
    fn info(&self) -> &SourceInfo {
        &self.info
    }
    fn poll(&mut self, out: &mut Readings<'_>) -> Result<(), SourceError> {
        self.polls += 1;
        match self.script.pop_front() {
            None => Ok(()),
            Some(Step::Fail(e)) => Err(e),
            Some(Step::Readings(rs)) => {
                let now = out.now_ns() as i64;
                for (ch, dt, v) in rs {
                    out.push(ch, (now + dt).max(0) as u64, v);
                }
                Ok(())
            }
        }
    }
    fn interval(&self) -> Option<Duration> {
        self.interval
    }
    fn max_readings_per_poll(&self) -> usize {
        self.script
            .iter()
            .map(|s| match s {
                Step::Readings(r) => r.len(),
                Step::Fail(_) => 0,
            })
            .max()
            .unwrap_or(0)
            .max(self.info.channels.len())
    }
}

/// What [`check_source`] found.
#[derive(Debug, Default)]
pub struct ConformanceReport {
    /// Every rule broken, one line each.
    pub failures: Vec<String>,
    /// Readings seen per channel name.
    pub readings: HashMap<String, usize>,
    /// Polls that failed (allowed: hardware can be flaky), with their errors.
    pub poll_errors: Vec<SourceError>,
}

impl ConformanceReport {
    /// Whether no rule was broken.
    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }
}

impl fmt::Display for ConformanceReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.failures.is_empty() {
            write!(f, "conformant; readings per channel: {:?}", self.readings)
        } else {
            writeln!(f, "{} conformance failures:", self.failures.len())?;
            for x in &self.failures {
                writeln!(f, "  - {x}")?;
            }
            Ok(())
        }
    }
}

/// How far back a reading's timestamp may lie behind the poll that returned it (driver
/// buffers return samples up to a few seconds old).
pub const MAX_READING_AGE_NS: u64 = 10_000_000_000;

/// Checks a source against the rules every backend must keep, polling it `polls` times with
/// `clock` (between polls a real clock is slept 10 ms; a manual clock is advanced 10 ms).
///
/// Rules: a named source with at least one channel; unique, valid channel names of the form
/// `<device>.<what>`; units matching quantities; power channels with a method; energy and CPU
/// time as counters with positive ranges and rates; positive update periods and interval;
/// every reading for a declared channel, finite, plausible for its quantity, stamped no
/// later than the poll and no more than 10 s before it, non-decreasing per channel across
/// polls, within `max_readings_per_poll`; counters that never step implausibly; failed polls
/// carry a message; `finish` works.
pub fn check_source(src: &mut dyn Source, clock: &dyn Clock, polls: usize) -> ConformanceReport {
    let mut rep = ConformanceReport::default();
    let info = src.info().clone();
    let fail = |rep: &mut ConformanceReport, s: String| rep.failures.push(s);
    if info.name.is_empty() {
        fail(&mut rep, "source name is empty".into());
    }
    if info.backend.is_empty() {
        fail(&mut rep, "backend name is empty".into());
    }
    if info.channels.is_empty() {
        fail(&mut rep, "source has no channels".into());
    }
    let mut names = HashSet::new();
    for c in &info.channels {
        check_channel(c, &mut rep);
        if !names.insert(c.name.clone()) {
            fail(&mut rep, format!("channel {:?} is declared twice", c.name));
        }
    }
    if let Some(iv) = src.interval()
        && iv.is_zero()
    {
        fail(&mut rep, "interval() is zero".into());
    }
    let max_per_poll = src.max_readings_per_poll();
    let n = info.channels.len();
    let mut trackers: Vec<Option<CounterTracker>> = info
        .channels
        .iter()
        .map(|c| {
            c.counter_spec()
                .map(|s| CounterTracker::new(*s, c.update_period_ns))
        })
        .collect();
    let mut last_t: Vec<Option<u64>> = vec![None; n];
    let mut buf: Vec<Reading> = Vec::with_capacity(max_per_poll);
    for i in 0..=polls {
        buf.clear();
        let before = clock.now_ns();
        let mut out = Readings::new(clock, &mut buf, 0, n as u32);
        let res = if i == polls {
            src.finish(&mut out)
        } else {
            src.poll(&mut out)
        };
        let rejected = out.rejected();
        let after = clock.now_ns();
        if rejected > 0 {
            fail(
                &mut rep,
                format!(
                    "poll {i}: {rejected} readings pushed for undeclared channels or with non-finite values"
                ),
            );
        }
        if let Err(e) = res {
            if e.message.trim().is_empty() {
                fail(
                    &mut rep,
                    format!("poll {i}: error without a message ({:?})", e.kind),
                );
            }
            rep.poll_errors.push(e);
        }
        if buf.len() > max_per_poll {
            fail(
                &mut rep,
                format!(
                    "poll {i}: {} readings, more than max_readings_per_poll() = {max_per_poll} (the buffer reallocates)",
                    buf.len()
                ),
            );
        }
        for r in &buf {
            let c = &info.channels[r.channel as usize];
            *rep.readings.entry(c.name.clone()).or_insert(0) += 1;
            if r.t_ns > after {
                fail(
                    &mut rep,
                    format!(
                        "{}: reading stamped {} ns after its poll returned",
                        c.name,
                        r.t_ns - after
                    ),
                );
            }
            if r.t_ns + MAX_READING_AGE_NS < before {
                fail(
                    &mut rep,
                    format!(
                        "{}: reading stamped {} ns before its poll",
                        c.name,
                        before - r.t_ns
                    ),
                );
            }
            if let Some(prev) = last_t[r.channel as usize]
                && r.t_ns < prev
            {
                fail(
                    &mut rep,
                    format!(
                        "{}: timestamps go backwards ({} after {prev})",
                        c.name, r.t_ns
                    ),
                );
            }
            last_t[r.channel as usize] = Some(r.t_ns);
            if let Some(msg) = implausible_value(c, r.value) {
                fail(&mut rep, format!("{}: value {} {}", c.name, r.value, msg));
            }
            if let Some(t) = trackers[r.channel as usize].as_mut() {
                match t.update(r.t_ns, r.value) {
                    CounterStep::Implausible { delta, limit } => fail(
                        &mut rep,
                        format!(
                            "{}: counter step {delta} above the plausible {limit}",
                            c.name
                        ),
                    ),
                    CounterStep::OutOfRange { value } => fail(
                        &mut rep,
                        format!("{}: counter value {value} out of range", c.name),
                    ),
                    _ => {}
                }
            }
        }
        if i < polls {
            let now = clock.now_ns();
            clock.sleep_until(now + 10_000_000);
        }
    }
    rep
}

fn check_channel(c: &ChannelSpec, rep: &mut ConformanceReport) {
    let mut fail = |s: String| rep.failures.push(format!("channel {:?}: {s}", c.name));
    if !is_valid_label(&c.name) {
        fail("name must be [A-Za-z0-9_.:/-]+".into());
    }
    if c.device.is_empty() || !c.name.starts_with(&format!("{}.", c.device)) {
        fail(format!(
            "name must start with its device {:?} and a dot",
            c.device
        ));
    }
    if c.unit != c.quantity.unit() {
        fail(format!(
            "unit {} does not match quantity {:?} ({})",
            c.unit,
            c.quantity,
            c.quantity.unit()
        ));
    }
    if c.quantity == Quantity::Power && c.method.is_none() {
        fail("a power channel must say its method (driver samples, instant, average)".into());
    }
    if c.quantity != Quantity::Power && c.method.is_some() {
        fail("only power channels have a method".into());
    }
    match (&c.kind, c.quantity) {
        (ChannelKind::Gauge, Quantity::Energy | Quantity::CpuTime) => {
            fail("energy and CPU time must be counters".into())
        }
        (ChannelKind::Counter(_), Quantity::Power | Quantity::Utilization | Quantity::Activity) => {
            fail("power, utilisation and activity are gauges".into())
        }
        _ => {}
    }
    if let Some(spec) = c.counter_spec() {
        if spec.wrap_range.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
            fail("wrap range must be positive".into());
        }
        if spec.max_rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
            fail("max rate must be positive".into());
        }
    }
    if c.update_period_ns == Some(0) {
        fail("update period must be positive when given".into());
    }
}

fn implausible_value(c: &ChannelSpec, v: f64) -> Option<&'static str> {
    match c.quantity {
        Quantity::Power if !(0.0..100_000.0).contains(&v) => {
            Some("is not a plausible power (0 to 100 kW)")
        }
        Quantity::Utilization | Quantity::Activity if !(0.0..=100.0).contains(&v) => {
            Some("is not a percentage (0 to 100)")
        }
        Quantity::Temperature if !(-60.0..=200.0).contains(&v) => {
            Some("is not a plausible temperature")
        }
        Quantity::Clock if !(0.0..100_000.0).contains(&v) => {
            Some("is not a plausible clock in MHz")
        }
        Quantity::Energy | Quantity::CpuTime if v < 0.0 => Some("is negative"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::CounterSpec;
    use crate::clock::ManualClock;
    use crate::error::ErrorKind;

    #[test]
    fn a_good_scripted_source_conforms() {
        let mut s = ScriptedSource::new(
            "dev",
            vec![
                ChannelSpec::power("dev", "p", PowerMethod::DriverSamples),
                ChannelSpec::energy_counter(
                    "dev",
                    "e",
                    CounterSpec {
                        wrap_range: Some(100.0),
                        max_rate: Some(1000.0),
                    },
                ),
            ],
        )
        .then(vec![
            (0, -20_000_000, 50.0),
            (0, -10_000_000, 60.0),
            (1, 0, 99.0),
        ])
        .then_fail(SourceError::new(ErrorKind::Transient, "x", "busy"))
        .then(vec![(1, 0, 3.0)]);
        let clock = ManualClock::new(1_000_000_000, 0);
        let rep = check_source(&mut s, &clock, 4);
        assert!(rep.ok(), "{rep}");
        assert_eq!(rep.poll_errors.len(), 1);
        assert_eq!(rep.readings["dev.p"], 2);
    }

    #[test]
    fn the_suite_catches_broken_sources() {
        let bad_channels = vec![
            ChannelSpec::power("dev", "p", PowerMethod::Instant),
            ChannelSpec::power("dev", "p", PowerMethod::Instant), // duplicate
            ChannelSpec {
                name: "dev.x".into(), // not prefixed by its device
                ..ChannelSpec::gauge("other", "x", Quantity::Utilization)
            },
        ];
        let mut s = ScriptedSource::new("dev", bad_channels)
            .then(vec![(0, 5_000_000_000, 1.0)]) // from the future
            .then(vec![(2, -20_000_000_000, 150.0)]) // too old, not a percentage
            .then(vec![(0, -1_000_000_000, -5.0)]) // backwards, negative power
            .then(vec![(7, 0, 1.0)]) // undeclared channel
            .then_fail(SourceError::new(ErrorKind::Other, "x", " "));
        let clock = ManualClock::new(100_000_000_000, 0);
        let rep = check_source(&mut s, &clock, 6);
        let all = rep.failures.join("\n");
        for needle in [
            "declared twice",
            "must start with its device",
            "after its poll",
            "before its poll",
            "not a percentage",
            "backwards",
            "plausible power",
            "undeclared",
            "without a message",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
        // counters that jump
        let mut s = ScriptedSource::new(
            "d",
            vec![ChannelSpec::energy_counter(
                "d",
                "e",
                CounterSpec {
                    wrap_range: None,
                    max_rate: Some(10.0),
                },
            )],
        )
        .then(vec![(0, 0, 0.0)])
        .then(vec![(0, 0, 1e6)]);
        let rep = check_source(&mut s, &clock, 2);
        assert!(
            rep.failures.iter().any(|f| f.contains("counter step")),
            "{rep}"
        );
    }
}

//! The sampler: one thread per cadence, absolute deadlines, no allocation per tick.
//!
//! Sources are grouped by the interval they want ([`Source::interval`], else the
//! recording's fast interval). Each group runs on a thread of its own, so a slow read (NVML's
//! 4.5 ms energy counter on its 1-s thread) never delays a fast one (instant power every
//! 10 ms). Each tick is scheduled at `start + k × interval` on `CLOCK_MONOTONIC` and slept to
//! with an absolute `clock_nanosleep`, so lateness never accumulates; a tick that overran
//! the next deadline skips it (counted) instead of firing a burst.
//!
//! Readings go to a [`Sink`] (in a recording, a bounded channel to the writer thread). A
//! full channel drops readings and counts them rather than stalling the schedule.
//!
//! A source that panics inside [`Source::poll`] does not take the recording down: the panic
//! is caught, recorded as a gap whose reason carries the panic message, and the source is
//! not polled again (its state may be broken half-way through an update), while the other
//! sources go on. This needs the default `panic = "unwind"`; a build with
//! `panic = "abort"` loses this guarantee.

use flinch_core::clock::Clock;
use flinch_core::error::{ErrorKind, SourceError};
use flinch_core::source::{DataGap, Reading, Readings, Source};
use flinch_core::trace::CadenceStats;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Where a sampler group delivers what it reads.
pub trait Sink: Send {
    /// One reading. Returns false if it could not be taken (queue full): it is then counted
    /// as dropped.
    fn reading(&mut self, r: &Reading) -> bool;
    /// Source `source` stopped answering (`error` is `Some`) or answered again (`None`).
    fn gap(&mut self, t_ns: u64, source: u32, error: Option<&SourceError>);
    /// `count` readings of `source` were dropped since the last report.
    fn dropped(&mut self, t_ns: u64, source: u32, count: u64);
    /// Source `source` has no data between the two times although its polls succeeded.
    fn data_gap(&mut self, source: u32, gap: &DataGap) {
        let _ = (source, gap);
    }
}

/// A sink that keeps everything in memory (tests, benches).
#[derive(Debug, Default)]
pub struct VecSink {
    /// Readings received.
    pub readings: Vec<Reading>,
    /// (time, source, error message or `None` for the end of a gap).
    pub gaps: Vec<(u64, u32, Option<String>)>,
    /// (time, source, count).
    pub dropped: Vec<(u64, u32, u64)>,
    /// Accept at most this many readings (then report drops); `None` = unlimited.
    pub capacity: Option<usize>,
}

impl Sink for VecSink {
    fn reading(&mut self, r: &Reading) -> bool {
        if self.capacity.is_some_and(|c| self.readings.len() >= c) {
            return false;
        }
        self.readings.push(*r);
        true
    }
    fn gap(&mut self, t_ns: u64, source: u32, error: Option<&SourceError>) {
        self.gaps.push((t_ns, source, error.map(|e| e.to_string())));
    }
    fn dropped(&mut self, t_ns: u64, source: u32, count: u64) {
        self.dropped.push((t_ns, source, count));
    }
    fn data_gap(&mut self, source: u32, gap: &DataGap) {
        self.gaps
            .push((gap.start_ns, source, Some(gap.reason.to_owned())));
        self.gaps.push((gap.end_ns, source, None));
    }
}

/// A sink that only counts (the framework-overhead bench baseline).
#[derive(Debug, Default)]
pub struct CountingSink {
    /// Readings received.
    pub readings: u64,
}

impl Sink for CountingSink {
    fn reading(&mut self, _r: &Reading) -> bool {
        self.readings += 1;
        true
    }
    fn gap(&mut self, _t_ns: u64, _source: u32, _error: Option<&SourceError>) {}
    fn dropped(&mut self, _t_ns: u64, _source: u32, _count: u64) {}
}

/// Deviations of poll starts from their deadlines, 1 µs buckets up to 10 ms, allocated once.
#[derive(Clone, Debug)]
pub struct LagHistogram {
    buckets: Vec<u32>,
    overflow: u64,
    max_ns: u64,
    count: u64,
}

const LAG_BUCKETS: usize = 10_000;

impl Default for LagHistogram {
    fn default() -> Self {
        LagHistogram {
            buckets: vec![0; LAG_BUCKETS],
            overflow: 0,
            max_ns: 0,
            count: 0,
        }
    }
}

impl LagHistogram {
    /// Records one deviation.
    pub fn record(&mut self, lag_ns: u64) {
        let us = (lag_ns / 1000) as usize;
        if us < LAG_BUCKETS {
            self.buckets[us] = self.buckets[us].saturating_add(1);
        } else {
            self.overflow += 1;
        }
        self.max_ns = self.max_ns.max(lag_ns);
        self.count += 1;
    }
    /// The `q`-quantile (0–1), to the µs bucket's upper edge; `max` when it lies beyond
    /// 10 ms.
    pub fn quantile_ns(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0u64;
        for (us, &n) in self.buckets.iter().enumerate() {
            seen += n as u64;
            if seen >= rank {
                return ((us as u64 + 1) * 1000).min(self.max_ns);
            }
        }
        self.max_ns
    }
    /// Largest deviation seen.
    pub fn max_ns(&self) -> u64 {
        self.max_ns
    }
    /// Number of recorded values.
    pub fn count(&self) -> u64 {
        self.count
    }
}

struct Slot {
    src: Box<dyn Source>,
    index: u32,
    base: u32,
    n: u32,
    buf: Vec<Reading>,
    failing: bool,
    /// Panicked once: never polled again.
    retired: bool,
    dropped_pending: u64,
}

/// The text of a caught panic.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "a panic without a message"
    }
}

/// The sources polled at one interval, and the schedule that polls them.
pub struct SamplerGroup<S: Sink> {
    interval_ns: u64,
    slots: Vec<Slot>,
    clock: Arc<dyn Clock>,
    sink: S,
    lag: LagHistogram,
    ticks: u64,
    missed: u64,
}

impl<S: Sink> SamplerGroup<S> {
    /// An empty group polling every `interval`.
    pub fn new(interval: Duration, clock: Arc<dyn Clock>, sink: S) -> Self {
        SamplerGroup {
            interval_ns: (interval.as_nanos() as u64).max(1),
            slots: Vec::new(),
            clock,
            sink,
            lag: LagHistogram::default(),
            ticks: 0,
            missed: 0,
        }
    }

    /// Adds a source whose recording-wide index is `index` and whose first channel has
    /// recording-wide index `channel_base`.
    pub fn add(&mut self, src: Box<dyn Source>, index: u32, channel_base: u32) {
        let n = src.info().channels.len() as u32;
        let cap = src.max_readings_per_poll().max(n as usize);
        self.slots.push(Slot {
            src,
            index,
            base: channel_base,
            n,
            buf: Vec::with_capacity(cap),
            failing: false,
            retired: false,
            dropped_pending: 0,
        });
    }

    /// The group's interval, ns.
    pub fn interval_ns(&self) -> u64 {
        self.interval_ns
    }

    /// The sink.
    pub fn sink(&self) -> &S {
        &self.sink
    }

    /// Consumes the group, returning its sink.
    pub fn into_sink(self) -> S {
        self.sink
    }

    /// Polls every source once and delivers the readings. Does not allocate once each
    /// source's buffer has grown to its largest poll.
    pub fn tick(&mut self) {
        self.poll_all(false);
        self.ticks += 1;
    }

    /// The last poll of every source ([`Source::finish`]).
    pub fn finish(&mut self) {
        self.poll_all(true);
    }

    fn poll_all(&mut self, last: bool) {
        let clock = &*self.clock;
        for slot in &mut self.slots {
            if slot.retired {
                continue;
            }
            slot.buf.clear();
            // A panicking source must not end the recording. The source is not used again
            // after a panic, so state it left half-updated is never observed: that is what
            // makes asserting unwind safety sound here.
            let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let mut out = Readings::new(clock, &mut slot.buf, slot.base, slot.n);
                let res = if last {
                    slot.src.finish(&mut out)
                } else {
                    slot.src.poll(&mut out)
                };
                (res, out.reported_gap())
            }));
            let (res, data_gap) = match polled {
                Ok(polled) => polled,
                Err(payload) => {
                    slot.retired = true;
                    slot.buf.clear();
                    let e = SourceError::new(
                        ErrorKind::Other,
                        slot.src.info().backend.clone(),
                        format!(
                            "source {} panicked in {}: {}; it is not polled again in this \
                             recording (a bug in its backend: please report it)",
                            slot.src.info().name,
                            if last { "finish" } else { "poll" },
                            panic_message(payload.as_ref())
                        ),
                    )
                    .with_retryable(false);
                    slot.failing = true;
                    self.sink.gap(clock.now_ns(), slot.index, Some(&e));
                    continue;
                }
            };
            if let Some(g) = data_gap {
                self.sink.data_gap(slot.index, &g);
            }
            match res {
                Ok(()) => {
                    if slot.failing {
                        slot.failing = false;
                        self.sink.gap(clock.now_ns(), slot.index, None);
                    }
                }
                Err(e) => {
                    if !slot.failing {
                        slot.failing = true;
                        self.sink.gap(clock.now_ns(), slot.index, Some(&e));
                    }
                }
            }
            for r in &slot.buf {
                if !self.sink.reading(r) {
                    slot.dropped_pending += 1;
                }
            }
            if slot.dropped_pending > 0 && slot.buf.len() as u64 > slot.dropped_pending {
                // The queue has room again: say how many were lost.
                self.sink
                    .dropped(clock.now_ns(), slot.index, slot.dropped_pending);
                slot.dropped_pending = 0;
            }
        }
    }

    /// Runs the schedule until `stop` is set, then polls once more with
    /// [`Source::finish`]. Returns the group's timing.
    pub fn run(mut self, stop: &AtomicBool) -> (CadenceStats, S) {
        // The kernel may defer a timer by the thread's "timer slack" (50 µs by default) to
        // batch wake-ups; a sampler wants its deadline, so ask for 1 ns.
        let _ = rustix::thread::set_current_timer_slack(std::num::NonZeroU64::new(1));
        let cpu_start = thread_cpu_ns();
        let clock = self.clock.clone();
        let start = clock.now_ns();
        let mut k: u64 = 0;
        // The kernel wakes a sleeper some tens of µs after its deadline (more in a VM).
        // Aim that much early, learnt as a running average of the lateness, so the poll
        // itself lands on the deadline; no spinning, so no CPU is burnt waiting.
        let mut lead_ns: u64 = 0;
        let max_lead = (self.interval_ns / 4).min(1_000_000);
        'schedule: loop {
            let deadline = start + k * self.interval_ns;
            let target = deadline.saturating_sub(lead_ns).max(start);
            loop {
                if stop.load(Ordering::Relaxed) {
                    break 'schedule;
                }
                let now = clock.now_ns();
                if now >= target {
                    break;
                }
                // Sleep in slices of at most 50 ms so a stop is noticed promptly.
                clock.sleep_until(target.min(now + 50_000_000));
            }
            let woke = clock.now_ns();
            self.lag.record(woke.abs_diff(deadline));
            let late = woke.saturating_sub(target) as i64;
            lead_ns =
                (lead_ns as i64 + (late - lead_ns as i64) / 16).clamp(0, max_lead as i64) as u64;
            self.tick();
            k += 1;
            let now = clock.now_ns();
            let next = start + k * self.interval_ns;
            if now > next {
                let behind = (now - next) / self.interval_ns + 1;
                self.missed += behind;
                k += behind;
            }
        }
        self.finish();
        for slot in &mut self.slots {
            if slot.dropped_pending > 0 {
                self.sink
                    .dropped(clock.now_ns(), slot.index, slot.dropped_pending);
                slot.dropped_pending = 0;
            }
        }
        let stats = CadenceStats {
            interval_ns: self.interval_ns,
            sources: self
                .slots
                .iter()
                .map(|s| s.src.info().name.clone())
                .collect(),
            ticks: self.ticks,
            missed_ticks: self.missed,
            deviation_p50_ns: self.lag.quantile_ns(0.5),
            deviation_p99_ns: self.lag.quantile_ns(0.99),
            deviation_max_ns: self.lag.max_ns(),
            cpu_ns: thread_cpu_ns().saturating_sub(cpu_start),
        };
        (stats, self.sink)
    }
}

/// CPU time used by the calling thread, ns.
pub fn thread_cpu_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// How sources are split into cadence groups: `(interval, [(source index, channel base)])`,
/// fastest first.
pub fn plan_groups(sources: &[Box<dyn Source>], fast: Duration) -> Vec<(Duration, Vec<usize>)> {
    let mut groups: Vec<(Duration, Vec<usize>)> = Vec::new();
    for (i, s) in sources.iter().enumerate() {
        let iv = s.interval().unwrap_or(fast);
        match groups.iter_mut().find(|(d, _)| *d == iv) {
            Some((_, v)) => v.push(i),
            None => groups.push((iv, vec![i])),
        }
    }
    groups.sort_by_key(|(d, _)| *d);
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use flinch_core::channel::{ChannelSpec, PowerMethod, SourceInfo};
    use flinch_core::clock::{ManualClock, MonotonicClock};
    use flinch_core::error::ErrorKind;

    struct Counter {
        info: SourceInfo,
        n: u64,
        fail_on: Vec<u64>,
        interval: Option<Duration>,
    }
    impl Counter {
        fn new(name: &str, fail_on: Vec<u64>, interval: Option<Duration>) -> Self {
            Counter {
                info: SourceInfo::new(name, "test", flinch_core::DeviceClass::Other)
                    .with_channels(vec![ChannelSpec::power(name, "p", PowerMethod::Instant)]),
                n: 0,
                fail_on,
                interval,
            }
        }
    }
    impl Source for Counter {
        fn info(&self) -> &SourceInfo {
            &self.info
        }
        fn poll(&mut self, out: &mut Readings<'_>) -> Result<(), SourceError> {
            self.n += 1;
            if self.fail_on.contains(&self.n) {
                return Err(SourceError::new(ErrorKind::Lost, "test", "gone"));
            }
            out.push_now(0, self.n as f64);
            Ok(())
        }
        fn interval(&self) -> Option<Duration> {
            self.interval
        }
    }

    #[test]
    fn errors_open_one_gap_and_recovery_closes_it() {
        let clock = Arc::new(ManualClock::new(0, 0));
        let mut g = SamplerGroup::new(Duration::from_millis(10), clock.clone(), VecSink::default());
        g.add(Box::new(Counter::new("a", vec![2, 3, 4], None)), 0, 0);
        g.add(Box::new(Counter::new("b", vec![], None)), 1, 1);
        for _ in 0..6 {
            g.tick();
            clock.advance(10_000_000);
        }
        let sink = g.into_sink();
        // a: polls 1,5,6 succeed; b: all 6
        assert_eq!(sink.readings.iter().filter(|r| r.channel == 0).count(), 3);
        assert_eq!(sink.readings.iter().filter(|r| r.channel == 1).count(), 6);
        assert_eq!(sink.gaps.len(), 2, "{:?}", sink.gaps);
        assert_eq!(sink.gaps[0].1, 0);
        assert!(sink.gaps[0].2.as_deref().unwrap().contains("gone"));
        assert_eq!(sink.gaps[1], (40_000_000, 0, None));
    }

    struct Overrun(SourceInfo);
    impl Source for Overrun {
        fn info(&self) -> &SourceInfo {
            &self.0
        }
        fn poll(&mut self, out: &mut Readings<'_>) -> Result<(), SourceError> {
            out.push(0, 500, 1.0);
            out.report_gap(100, 400, "driver buffer overran");
            Ok(())
        }
    }

    #[test]
    fn a_reported_data_gap_reaches_the_sink_with_its_own_times() {
        let clock = Arc::new(ManualClock::new(1_000, 0));
        let mut g = SamplerGroup::new(Duration::from_millis(10), clock, VecSink::default());
        g.add(
            Box::new(Overrun(Counter::new("b", vec![], None).info)),
            3,
            0,
        );
        g.tick();
        let sink = g.into_sink();
        assert_eq!(sink.readings.len(), 1);
        assert_eq!(
            sink.gaps,
            vec![
                (100, 3, Some("driver buffer overran".into())),
                (400, 3, None)
            ]
        );
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let clock = Arc::new(ManualClock::new(0, 0));
        let sink = VecSink {
            capacity: Some(2),
            ..Default::default()
        };
        let mut g = SamplerGroup::new(Duration::from_millis(10), clock, sink);
        g.add(Box::new(Counter::new("a", vec![], None)), 0, 0);
        for _ in 0..5 {
            g.tick();
        }
        let stop = AtomicBool::new(true);
        let (_, sink) = g.run(&stop); // finish() polls once more and reports pending drops
        assert_eq!(sink.readings.len(), 2);
        assert_eq!(sink.dropped.iter().map(|d| d.2).sum::<u64>(), 4);
    }

    #[test]
    fn groups_by_interval_fastest_first() {
        let srcs: Vec<Box<dyn Source>> = vec![
            Box::new(Counter::new("slow", vec![], Some(Duration::from_secs(1)))),
            Box::new(Counter::new("fast1", vec![], None)),
            Box::new(Counter::new("fast2", vec![], None)),
            Box::new(Counter::new(
                "mid",
                vec![],
                Some(Duration::from_millis(500)),
            )),
        ];
        let plan = plan_groups(&srcs, Duration::from_millis(10));
        assert_eq!(
            plan,
            vec![
                (Duration::from_millis(10), vec![1, 2]),
                (Duration::from_millis(500), vec![3]),
                (Duration::from_secs(1), vec![0]),
            ]
        );
    }

    /// A source that takes `work_ns[i]` of (manual) time on its i-th poll and stops the
    /// schedule after its last.
    struct Busy {
        info: SourceInfo,
        clock: Arc<ManualClock>,
        work_ns: Vec<u64>,
        polls: usize,
        stop: Arc<AtomicBool>,
    }
    impl Source for Busy {
        fn info(&self) -> &SourceInfo {
            &self.info
        }
        fn poll(&mut self, out: &mut Readings<'_>) -> Result<(), SourceError> {
            out.push_now(0, self.polls as f64);
            if let Some(w) = self.work_ns.get(self.polls) {
                self.clock.advance(*w);
            }
            self.polls += 1;
            if self.polls >= self.work_ns.len() {
                self.stop.store(true, Ordering::SeqCst);
            }
            Ok(())
        }
    }

    #[test]
    fn the_schedule_keeps_absolute_deadlines_and_skips_overrun_ticks() {
        let clock = Arc::new(ManualClock::new(1_000_000_000, 0));
        let stop = Arc::new(AtomicBool::new(false));
        let ms = 1_000_000;
        // Polls take 3 ms, except the 4th, which takes 25 ms: deadlines at +40 and +50 ms
        // are missed, and the schedule resumes at +60 ms, not at 28+10.
        let work = vec![3 * ms, 3 * ms, 3 * ms, 25 * ms, 3 * ms, 3 * ms];
        let src = Busy {
            info: Counter::new("busy", vec![], None).info,
            clock: clock.clone(),
            work_ns: work,
            polls: 0,
            stop: stop.clone(),
        };
        let mut g = SamplerGroup::new(Duration::from_millis(10), clock.clone(), VecSink::default());
        g.add(Box::new(src), 0, 0);
        let (stats, sink) = g.run(&stop);
        let t: Vec<u64> = sink
            .readings
            .iter()
            .map(|r| (r.t_ns - 1_000_000_000) / ms)
            .collect();
        // Each tick starts exactly on its deadline; the final poll comes after the stop.
        assert_eq!(t[..6], [0, 10, 20, 30, 60, 70]);
        assert_eq!(stats.ticks, 6);
        assert_eq!(stats.missed_ticks, 2);
        assert_eq!(stats.deviation_max_ns, 0);
    }

    #[test]
    fn the_schedule_runs_on_the_real_clock_and_stops_promptly() {
        let clock: Arc<dyn Clock> = Arc::new(MonotonicClock);
        let mut g = SamplerGroup::new(Duration::from_secs(3600), clock.clone(), VecSink::default());
        g.add(Box::new(Counter::new("a", vec![], None)), 0, 0);
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let h = std::thread::spawn(move || g.run(&stop2));
        std::thread::sleep(Duration::from_millis(20));
        stop.store(true, Ordering::SeqCst);
        // An hour-long interval must not hold the stop back: join returns.
        let (stats, sink) = h.join().unwrap();
        assert_eq!(stats.ticks, 1);
        assert_eq!(sink.readings.len(), 2); // the first tick and the final poll
    }

    /// Panics on its `panic_on`-th poll (with a `String` payload, as `panic!("{x}")` does),
    /// and counts every poll it gets.
    struct Panicky {
        info: SourceInfo,
        polls: Arc<std::sync::atomic::AtomicU64>,
        panic_on: u64,
    }
    impl Source for Panicky {
        fn info(&self) -> &SourceInfo {
            &self.info
        }
        fn poll(&mut self, out: &mut Readings<'_>) -> Result<(), SourceError> {
            let n = self.polls.fetch_add(1, Ordering::SeqCst) + 1;
            out.push_now(0, n as f64);
            if n == self.panic_on {
                let what = "index out of bounds";
                panic!("driver returned garbage: {what}");
            }
            Ok(())
        }
    }

    #[test]
    fn a_panicking_source_becomes_a_gap_with_its_message_and_the_others_go_on() {
        let clock = Arc::new(ManualClock::new(0, 0));
        let polls = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut g = SamplerGroup::new(Duration::from_millis(10), clock.clone(), VecSink::default());
        g.add(
            Box::new(Panicky {
                info: Counter::new("bad", vec![], None).info,
                polls: polls.clone(),
                panic_on: 3,
            }),
            0,
            0,
        );
        g.add(Box::new(Counter::new("good", vec![], None)), 1, 1);
        for _ in 0..10 {
            g.tick();
            clock.advance(10_000_000);
        }
        let stop = AtomicBool::new(true);
        let (stats, sink) = g.run(&stop);
        // Polled until it panicked, never again (not even by finish).
        assert_eq!(polls.load(Ordering::SeqCst), 3);
        // The readings of the poll that panicked are discarded; the two before are kept.
        assert_eq!(sink.readings.iter().filter(|r| r.channel == 0).count(), 2);
        // The healthy source: 10 ticks and the final poll.
        assert_eq!(sink.readings.iter().filter(|r| r.channel == 1).count(), 11);
        assert_eq!(sink.gaps.len(), 1, "{:?}", sink.gaps);
        let (t, src, reason) = &sink.gaps[0];
        assert_eq!((*t, *src), (20_000_000, 0));
        let reason = reason.as_deref().unwrap();
        assert!(
            reason.contains("panicked in poll")
                && reason.contains("driver returned garbage: index out of bounds")
                && reason.contains("not polled again"),
            "{reason}"
        );
        assert_eq!(stats.ticks, 10); // run() added none: stop was already set
    }

    #[test]
    fn a_panic_in_finish_is_caught_too() {
        struct FinishPanics(SourceInfo);
        impl Source for FinishPanics {
            fn info(&self) -> &SourceInfo {
                &self.0
            }
            fn poll(&mut self, _out: &mut Readings<'_>) -> Result<(), SourceError> {
                Ok(())
            }
            fn finish(&mut self, _out: &mut Readings<'_>) -> Result<(), SourceError> {
                panic!("static message")
            }
        }
        let clock = Arc::new(ManualClock::new(0, 0));
        let mut g = SamplerGroup::new(Duration::from_millis(10), clock, VecSink::default());
        g.add(
            Box::new(FinishPanics(Counter::new("f", vec![], None).info)),
            0,
            0,
        );
        g.tick();
        g.finish();
        let sink = g.into_sink();
        assert_eq!(sink.gaps.len(), 1);
        let reason = sink.gaps[0].2.as_deref().unwrap();
        assert!(
            reason.contains("panicked in finish: static message"),
            "{reason}"
        );
    }

    #[test]
    fn lag_histogram_quantiles() {
        let mut h = LagHistogram::default();
        assert_eq!(h.quantile_ns(0.5), 0);
        for us in 1..=100u64 {
            h.record(us * 1000 - 500);
        }
        h.record(50_000_000);
        assert_eq!(h.count(), 101);
        assert_eq!(h.quantile_ns(0.5), 51_000);
        assert_eq!(h.quantile_ns(0.99), 100_000);
        assert_eq!(h.quantile_ns(1.0), 50_000_000);
        assert_eq!(h.max_ns(), 50_000_000);
    }
}

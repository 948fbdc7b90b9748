//! The sampler: one thread for every cheap source, each on its own cadence; slow sources on
//! threads of their own; absolute deadlines, no allocation per tick.
//!
//! Waking a thread costs far more than a cheap read (30–40 µs of CPU per wake-up in the
//! VMs measured, against 1 µs for NVML's instant power), so the sources that read fast
//! share one thread: a timer wheel that sleeps until the earliest deadline and polls every
//! source due then. Each source keeps its own cadence ([`Source::interval`], else the
//! recording's fast interval), or follows its sensor's updates ([`Source::phase_lock`],
//! [`crate::phase`]); grid sources due shortly before or after another wake-up join it, so
//! sources on compatible cadences come to share their wake-ups. A slow source (NVML's
//! energy counter, 4.5 ms of a spinning driver call: [`Source::slow`]) gets a thread of its
//! own, so it never delays the rest. Deadlines are absolute on `CLOCK_MONOTONIC`, slept to
//! with an absolute `clock_nanosleep`, so lateness never accumulates; a deadline the
//! thread was too busy to meet is skipped (counted) instead of firing a burst.
//!
//! Readings go to a [`Sink`] (in a recording, a bounded channel to the writer thread). A
//! full channel drops readings and counts them rather than stalling the schedule.
//!
//! A source that panics inside [`Source::poll`] does not take the recording down: the panic
//! is caught, recorded as a gap whose reason carries the panic message, and the source is
//! not polled again (its state may be broken half-way through an update), while the other
//! sources go on. This needs the default `panic = "unwind"`; a build with
//! `panic = "abort"` loses this guarantee.

use crate::phase::PhaseLock;
use flinch_core::clock::Clock;
use flinch_core::clock::WakeFlag;
use flinch_core::error::{ErrorKind, SourceError};
use flinch_core::source::{DataGap, Reading, Readings, Source};
use flinch_core::trace::{CadenceStats, ThreadStats};
use std::sync::Arc;
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

/// One source on its own schedule: a fixed grid, or following its sensor's updates.
struct Lane {
    slot: Slot,
    interval_ns: u64,
    /// When it is due next (`CLOCK_MONOTONIC` ns).
    next_ns: u64,
    /// When it was last polled.
    last_ns: Option<u64>,
    /// The local channel followed and the lock, for a phase-locked source.
    lock: Option<(usize, PhaseLock)>,
    ticks: u64,
    missed: u64,
    lag: LagHistogram,
    cpu_ns: u64,
    poll_ns: u64,
}

impl Lane {
    fn locked(&self) -> bool {
        self.lock.is_some()
    }
}

/// The sources polled by one thread, each on its own cadence, and the schedule that polls
/// them (a timer wheel: one sleep until the earliest deadline, every source due then polled
/// in one wake-up).
pub struct SamplerGroup<S: Sink> {
    interval_ns: u64,
    lanes: Vec<Lane>,
    clock: Arc<dyn Clock>,
    sink: S,
    wakeups: u64,
    precise: bool,
    name: String,
    /// The thread's CPU time when the last poll ended (or the wake-up began).
    cpu_mark: u64,
}

/// What [`SamplerGroup::run`] measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GroupStats {
    /// One entry per source, in the order added.
    pub cadences: Vec<CadenceStats>,
    /// The thread.
    pub thread: ThreadStats,
}

/// Two-stage sleeps wake the thread this long before a deadline, then sleep again for the
/// rest: a short sleep ends far more punctually than a long one in a VM.
const PRECISE_STAGE_NS: u64 = 400_000;

impl<S: Sink> SamplerGroup<S> {
    /// An empty group whose sources without an interval of their own are polled every
    /// `interval`.
    pub fn new(interval: Duration, clock: Arc<dyn Clock>, sink: S) -> Self {
        SamplerGroup {
            interval_ns: (interval.as_nanos() as u64).max(1),
            lanes: Vec::new(),
            clock,
            sink,
            wakeups: 0,
            precise: false,
            name: "flinch-sample".into(),
            cpu_mark: 0,
        }
    }

    /// Names the thread in the statistics.
    pub fn with_name(mut self, name: &str) -> Self {
        self.name = name.to_owned();
        self
    }

    /// Sleeps in two stages (a long sleep to shortly before each deadline, then a short
    /// one), which ends closer to the deadline in a VM at the cost of a second wake-up.
    pub fn with_precise_sleep(mut self, precise: bool) -> Self {
        self.precise = precise;
        self
    }

    /// Adds a source whose recording-wide index is `index` and whose first channel has
    /// recording-wide index `channel_base`. It is polled every [`Source::interval`] (else
    /// the group's interval), or once per sensor update if it asks for a
    /// [`Source::phase_lock`].
    pub fn add(&mut self, src: Box<dyn Source>, index: u32, channel_base: u32) {
        let n = src.info().channels.len() as u32;
        let cap = src.max_readings_per_poll().max(n as usize);
        let interval_ns = src
            .interval()
            .map_or(self.interval_ns, |d| (d.as_nanos() as u64).max(1));
        let lock = src
            .phase_lock()
            .filter(|l| l.channel < n as usize && !l.period.is_zero())
            .map(|l| (l.channel, PhaseLock::new(l.period.as_nanos() as u64)));
        let interval_ns = match &lock {
            Some((_, l)) => l.period_ns(),
            None => interval_ns,
        };
        self.lanes.push(Lane {
            slot: Slot {
                src,
                index,
                base: channel_base,
                n,
                buf: Vec::with_capacity(cap),
                failing: false,
                retired: false,
                dropped_pending: 0,
            },
            interval_ns,
            next_ns: 0,
            last_ns: None,
            lock,
            ticks: 0,
            missed: 0,
            lag: LagHistogram::default(),
            cpu_ns: 0,
            poll_ns: 0,
        });
    }

    /// The group's default interval, ns.
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
        let t = self.clock.now_ns();
        for lane in &mut self.lanes {
            poll_slot(&mut lane.slot, &*self.clock, &mut self.sink, false, t);
            lane.ticks += 1;
        }
    }

    /// The last poll of every source ([`Source::finish`]).
    pub fn finish(&mut self) {
        let t = self.clock.now_ns();
        for lane in &mut self.lanes {
            poll_slot(&mut lane.slot, &*self.clock, &mut self.sink, true, t);
        }
    }

    /// When to wake next: the earliest deadline, except that grid sources due shortly
    /// before a phase-locked one wait for it (at most half their interval), so that they
    /// share its wake-up. `None` when no source is left to poll.
    fn next_wake(&self) -> Option<u64> {
        let mut locked = u64::MAX;
        let mut grid = u64::MAX;
        for l in self.lanes.iter().filter(|l| !l.slot.retired) {
            if l.locked() {
                locked = locked.min(l.next_ns);
            } else {
                grid = grid.min(l.next_ns);
            }
        }
        if locked == u64::MAX && grid == u64::MAX {
            return None;
        }
        if grid < locked
            && locked != u64::MAX
            && self
                .lanes
                .iter()
                .filter(|l| !l.slot.retired && !l.locked() && l.next_ns < locked)
                .all(|l| locked - l.next_ns <= l.interval_ns / 2)
        {
            return Some(locked);
        }
        Some(locked.min(grid))
    }

    /// Polls lane `i` in a wake-up aimed at `target` that began at `woke`.
    fn poll_lane(&mut self, i: usize, target: u64, woke: u64) {
        let clock = &*self.clock;
        let lane = &mut self.lanes[i];
        let t0 = clock.now_ns();
        poll_slot(&mut lane.slot, clock, &mut self.sink, false, t0);
        let t1 = clock.now_ns();
        // The thread's own CPU clock, read once per poll: what this source cost, whatever
        // it waited for (a wall-time share would charge it for a wait in the driver).
        let cpu = thread_cpu_ns();
        lane.cpu_ns += cpu.saturating_sub(self.cpu_mark);
        self.cpu_mark = cpu;
        lane.poll_ns += t1 - t0;
        lane.ticks += 1;
        lane.lag.record(woke.abs_diff(target));
        lane.last_ns = Some(t0);
        match &mut lane.lock {
            Some((ch, lock)) => {
                let want = lane.slot.base + *ch as u32;
                let value = lane
                    .slot
                    .buf
                    .iter()
                    .rev()
                    .find(|r| r.channel == want)
                    .map(|r| r.value);
                lane.next_ns = lock.observe(t0, value);
            }
            None => {
                // From the wake-up it shared (its own deadline, or another source's that
                // it joined early or late): so sources on compatible cadences keep sharing.
                lane.next_ns = target + lane.interval_ns;
                if lane.next_ns <= t1 {
                    let behind = (t1 - lane.next_ns) / lane.interval_ns + 1;
                    lane.missed += behind;
                    lane.next_ns += behind * lane.interval_ns;
                }
            }
        }
    }

    /// Runs the schedule until `stop` is set, then polls once more with
    /// [`Source::finish`]. Every source is first due at the start. The thread sleeps until
    /// its next deadline in one sleep, however far off (the energy counter's thread: 30 s);
    /// setting `stop` wakes it.
    pub fn run(mut self, stop: &WakeFlag) -> (GroupStats, S) {
        // The kernel may defer a timer by the thread's "timer slack" (50 µs by default) to
        // batch wake-ups; a sampler wants its deadline, so ask for 1 ns.
        let _ = rustix::thread::set_current_timer_slack(std::num::NonZeroU64::new(1));
        let cpu_start = thread_cpu_ns();
        let clock = self.clock.clone();
        let start = clock.now_ns();
        for lane in &mut self.lanes {
            lane.next_ns = start;
        }
        // The kernel wakes a sleeper some tens of µs after its deadline (more in a VM). Aim
        // that much early, learnt as a running average of the lateness, so the poll itself
        // lands on the deadline; no spinning, so no CPU is burnt waiting.
        let mut lead_ns: u64 = 0;
        let mut due: Vec<usize> = Vec::with_capacity(self.lanes.len());
        'schedule: loop {
            let Some(target) = self.next_wake() else {
                // Every source retired: wait for the stop.
                while !stop.is_set() {
                    clock.sleep_until_or(clock.now_ns().saturating_add(3_600_000_000_000), stop);
                }
                break;
            };
            let max_lead = self
                .lanes
                .iter()
                .map(|l| l.interval_ns / 4)
                .min()
                .unwrap_or(0)
                .min(1_000_000);
            let aim = target.saturating_sub(lead_ns.min(max_lead));
            let coarse = if self.precise {
                aim.saturating_sub(PRECISE_STAGE_NS)
            } else {
                aim
            };
            // One sleep to the deadline: a stop wakes it (no slices to look at the flag,
            // which cost a wake-up each: 20 a second on the 30-s energy thread).
            clock.sleep_until_or(coarse, stop);
            if stop.is_set() {
                break 'schedule;
            }
            if self.precise && clock.now_ns() < aim {
                clock.sleep_until_or(aim, stop);
            }
            let woke = clock.now_ns();
            self.wakeups += 1;
            let late = woke.saturating_sub(aim) as i64;
            lead_ns =
                (lead_ns as i64 + (late - lead_ns as i64) / 16).clamp(0, max_lead as i64) as u64;
            self.cpu_mark = thread_cpu_ns();
            // Due now: phase-locked sources first (their timing is the point), then the
            // grid sources at or before the target.
            due.clear();
            for pass_locked in [true, false] {
                for (i, l) in self.lanes.iter().enumerate() {
                    if !l.slot.retired && l.locked() == pass_locked && l.next_ns <= target {
                        due.push(i);
                    }
                }
            }
            // By index: polling borrows the group mutably.
            let mut k = 0;
            while k < due.len() {
                self.poll_lane(due[k], target, woke);
                k += 1;
            }
            // A grid source due within half its interval joins this wake-up instead of
            // needing one of its own, when its deadline is nearer to it than to the next
            // other deadline (else it waits for that one). Grid sources not yet polled in
            // this wake-up and due at the same instant as it (activity and GPM, both every
            // 100 ms) are not that other deadline: they decide alike and go together.
            // (Counting each other as the next deadline, they once never joined, and woke
            // the thread on their own 10 times a second.)
            loop {
                let mut joined = false;
                for i in 0..self.lanes.len() {
                    let l = &self.lanes[i];
                    if l.slot.retired
                        || l.locked()
                        || l.next_ns <= target
                        || l.next_ns - target > l.interval_ns / 2
                        || l.last_ns
                            .is_some_and(|p| woke - p.min(woke) < l.interval_ns / 2)
                    {
                        continue;
                    }
                    let others = self
                        .lanes
                        .iter()
                        .enumerate()
                        .filter(|&(j, o)| {
                            j != i
                                && !o.slot.retired
                                && (o.next_ns != l.next_ns
                                    || o.locked()
                                    || o.last_ns.is_some_and(|p| p >= woke))
                        })
                        .map(|(_, o)| o.next_ns)
                        .min()
                        .unwrap_or(u64::MAX);
                    if l.next_ns - target < others.saturating_sub(l.next_ns) {
                        self.poll_lane(i, target, woke);
                        joined = true;
                    }
                }
                if !joined {
                    break;
                }
            }
        }
        self.finish();
        for lane in &mut self.lanes {
            if lane.slot.dropped_pending > 0 {
                self.sink
                    .dropped(clock.now_ns(), lane.slot.index, lane.slot.dropped_pending);
                lane.slot.dropped_pending = 0;
            }
        }
        let cadences = self
            .lanes
            .iter()
            .map(|l| CadenceStats {
                interval_ns: match &l.lock {
                    Some((_, lock)) => lock.stats().declared_period_ns,
                    None => l.interval_ns,
                },
                sources: vec![l.slot.src.info().name.clone()],
                thread: self.name.clone(),
                ticks: l.ticks,
                missed_ticks: l.missed,
                deviation_p50_ns: l.lag.quantile_ns(0.5),
                deviation_p99_ns: l.lag.quantile_ns(0.99),
                deviation_max_ns: l.lag.max_ns(),
                cpu_ns: l.cpu_ns,
                poll_ns: l.poll_ns,
                phase_lock: l.lock.as_ref().map(|(_, lock)| lock.stats()),
            })
            .collect();
        let stats = GroupStats {
            cadences,
            thread: ThreadStats {
                name: self.name.clone(),
                wakeups: self.wakeups,
                cpu_ns: thread_cpu_ns().saturating_sub(cpu_start),
            },
        };
        (stats, self.sink)
    }
}

/// Polls one source (or makes its last poll) and delivers what it read. `t_poll`: when the
/// poll started (the caller's clock read, shared by the sources of one tick): gaps are
/// stamped then, as a panic's unwinding can take a long while and no data came from then
/// on.
#[inline]
fn poll_slot<S: Sink>(slot: &mut Slot, clock: &dyn Clock, sink: &mut S, last: bool, t_poll: u64) {
    if slot.retired {
        return;
    }
    slot.buf.clear();
    // A panicking source must not end the recording. The source is not used again after a
    // panic, so state it left half-updated is never observed: that is what makes asserting
    // unwind safety sound here.
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
            sink.gap(t_poll, slot.index, Some(&e));
            return;
        }
    };
    if let Some(g) = data_gap {
        sink.data_gap(slot.index, &g);
    }
    match res {
        Ok(()) => {
            if slot.failing {
                slot.failing = false;
                sink.gap(t_poll, slot.index, None);
            }
        }
        Err(e) => {
            if !slot.failing {
                slot.failing = true;
                sink.gap(t_poll, slot.index, Some(&e));
            }
        }
    }
    for r in &slot.buf {
        if !sink.reading(r) {
            slot.dropped_pending += 1;
        }
    }
    if slot.dropped_pending > 0 && slot.buf.len() as u64 > slot.dropped_pending {
        // The queue has room again: say how many were lost.
        sink.dropped(clock.now_ns(), slot.index, slot.dropped_pending);
        slot.dropped_pending = 0;
    }
}

/// CPU time used by the calling thread, ns.
pub fn thread_cpu_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// How sources are split between sampler threads: the cheap sources of one backend share
/// a thread, whatever their cadences (a driver that hangs stalls only its own backend's
/// sources); [`slow`](Source::slow) sources get a thread per interval (theirs, else `fast`),
/// so that a read that takes milliseconds never delays the others. Returns one
/// `(thread name, slow, interval, source indices)` per thread, cheap ones first, in the
/// order their backends first appear.
pub fn plan_threads(sources: &[Box<dyn Source>], fast: Duration) -> Vec<ThreadPlan> {
    let mut cheap: Vec<ThreadPlan> = Vec::new();
    let mut slow: Vec<ThreadPlan> = Vec::new();
    for (i, s) in sources.iter().enumerate() {
        let iv = s.interval().unwrap_or(fast);
        if s.slow() {
            match slow.iter_mut().find(|p| p.interval == iv) {
                Some(p) => p.sources.push(i),
                None => slow.push(ThreadPlan {
                    name: format!("flinch-slow-{}", short_duration(iv)),
                    slow: true,
                    interval: iv,
                    sources: vec![i],
                }),
            }
        } else {
            let name = format!("flinch-{}", s.info().backend);
            match cheap.iter_mut().find(|p| p.name == name) {
                Some(p) => p.sources.push(i),
                None => cheap.push(ThreadPlan {
                    name,
                    slow: false,
                    interval: fast,
                    sources: vec![i],
                }),
            }
        }
    }
    slow.sort_by_key(|p| p.interval);
    cheap.extend(slow);
    cheap
}

/// One sampler thread of a recording ([`plan_threads`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadPlan {
    /// The thread's name (`flinch-<backend>`, `flinch-slow-<interval>`).
    pub name: String,
    /// Whether it polls slow sources.
    pub slow: bool,
    /// The default interval of its sources (the recording's fast interval for cheap ones).
    pub interval: Duration,
    /// Indices of the sources it polls.
    pub sources: Vec<usize>,
}

/// `30s`, `500ms`.
fn short_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms >= 1000 && ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flinch_core::channel::{ChannelSpec, PowerMethod, SourceInfo};
    use flinch_core::clock::{ManualClock, MonotonicClock};
    use flinch_core::error::ErrorKind;
    use std::sync::atomic::Ordering;

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
        let stop = WakeFlag::new();
        stop.set();
        let (_, sink) = g.run(&stop); // finish() polls once more and reports pending drops
        assert_eq!(sink.readings.len(), 2);
        assert_eq!(sink.dropped.iter().map(|d| d.2).sum::<u64>(), 4);
    }

    /// A source that says its polls are slow.
    struct Slow(Counter);
    impl Source for Slow {
        fn info(&self) -> &SourceInfo {
            self.0.info()
        }
        fn poll(&mut self, out: &mut Readings<'_>) -> Result<(), SourceError> {
            self.0.poll(out)
        }
        fn interval(&self) -> Option<Duration> {
            self.0.interval()
        }
        fn slow(&self) -> bool {
            true
        }
    }

    #[test]
    fn cheap_sources_share_a_thread_per_backend_and_slow_ones_get_their_own() {
        let mut other = Counter::new("other", vec![], None);
        other.info.backend = "other".into();
        let srcs: Vec<Box<dyn Source>> = vec![
            Box::new(Slow(Counter::new(
                "energy",
                vec![],
                Some(Duration::from_secs(30)),
            ))),
            Box::new(Counter::new("fast1", vec![], None)),
            Box::new(other),
            Box::new(Counter::new(
                "mid",
                vec![],
                Some(Duration::from_millis(500)),
            )),
            Box::new(Slow(Counter::new("slow2", vec![], None))),
        ];
        let plan: Vec<(String, bool, Duration, Vec<usize>)> =
            plan_threads(&srcs, Duration::from_millis(10))
                .into_iter()
                .map(|p| (p.name, p.slow, p.interval, p.sources))
                .collect();
        let ms = Duration::from_millis;
        assert_eq!(
            plan,
            vec![
                ("flinch-test".into(), false, ms(10), vec![1, 3]),
                ("flinch-other".into(), false, ms(10), vec![2]),
                ("flinch-slow-10ms".into(), true, ms(10), vec![4]),
                ("flinch-slow-30s".into(), true, ms(30_000), vec![0]),
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
        stop: Arc<WakeFlag>,
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
                self.stop.set();
            }
            Ok(())
        }
    }

    #[test]
    fn the_schedule_keeps_absolute_deadlines_and_skips_overrun_ticks() {
        let clock = Arc::new(ManualClock::new(1_000_000_000, 0));
        let stop = Arc::new(WakeFlag::new());
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
        let stats = &stats.cadences[0];
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
        let stop = Arc::new(WakeFlag::new());
        let stop2 = stop.clone();
        let h = std::thread::spawn(move || g.run(&stop2));
        std::thread::sleep(Duration::from_millis(20));
        stop.set();
        // An hour-long interval must not hold the stop back: join returns.
        let (stats, sink) = h.join().unwrap();
        assert_eq!(stats.cadences[0].ticks, 1);
        assert_eq!(stats.thread.wakeups, 1);
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
        let stop = WakeFlag::new();
        stop.set();
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
        assert_eq!(stats.cadences[0].ticks, 10); // run() added none: stop was already set
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

    /// Reads a sensor that changes value every `period` ns from `phase` (on the manual
    /// clock), optionally phase-locked to it, and stops the schedule at `end`.
    struct Sensor {
        info: SourceInfo,
        clock: Arc<ManualClock>,
        period: u64,
        phase: u64,
        lock: bool,
        interval: Option<Duration>,
        end: u64,
        stop: Arc<WakeFlag>,
    }
    impl Source for Sensor {
        fn info(&self) -> &SourceInfo {
            &self.info
        }
        fn poll(&mut self, out: &mut Readings<'_>) -> Result<(), SourceError> {
            let t = self.clock.now_ns();
            let v = (t + self.period - self.phase) / self.period;
            out.push(0, t, v as f64);
            if t >= self.end {
                self.stop.set();
            }
            Ok(())
        }
        fn interval(&self) -> Option<Duration> {
            self.interval
        }
        fn phase_lock(&self) -> Option<flinch_core::source::PhaseLockSpec> {
            self.lock.then(|| flinch_core::source::PhaseLockSpec {
                channel: 0,
                period: Duration::from_nanos(self.period),
            })
        }
    }

    fn sensor(
        name: &str,
        clock: &Arc<ManualClock>,
        stop: &Arc<WakeFlag>,
        interval_ms: u64,
        lock: bool,
    ) -> Box<Sensor> {
        Box::new(Sensor {
            info: Counter::new(name, vec![], None).info,
            clock: clock.clone(),
            period: 100_000_000,
            phase: 1_037_000_000,
            lock,
            interval: Some(Duration::from_millis(interval_ms)),
            end: 61_000_000_000,
            stop: stop.clone(),
        })
    }

    #[test]
    fn grid_sources_keep_their_own_rates_and_share_wakeups() {
        let clock = Arc::new(ManualClock::new(1_000_000_000, 0));
        let stop = Arc::new(WakeFlag::new());
        let mut g = SamplerGroup::new(Duration::from_millis(10), clock.clone(), VecSink::default());
        g.add(sensor("a10", &clock, &stop, 10, false), 0, 0);
        g.add(sensor("b20", &clock, &stop, 20, false), 1, 1);
        g.add(sensor("c1000", &clock, &stop, 1000, false), 2, 2);
        let (stats, _) = g.run(&stop);
        let ticks: Vec<u64> = stats.cadences.iter().map(|c| c.ticks).collect();
        // 60 s: every 10 ms, 20 ms and 1 s, and one wake-up per 10 ms for all three.
        assert!(ticks[0].abs_diff(6000) <= 2, "{ticks:?}");
        assert!(ticks[1].abs_diff(3000) <= 2, "{ticks:?}");
        assert!(ticks[2].abs_diff(60) <= 2, "{ticks:?}");
        assert!(stats.thread.wakeups.abs_diff(6000) <= 2, "{stats:?}");
        assert!(stats.cadences.iter().all(|c| c.missed_ticks == 0));
    }

    #[test]
    fn a_phase_locked_source_reads_each_update_and_grid_sources_join_its_wakeups() {
        let clock = Arc::new(ManualClock::new(1_000_000_000, 0));
        let stop = Arc::new(WakeFlag::new());
        let mut g = SamplerGroup::new(Duration::from_millis(10), clock.clone(), VecSink::default());
        g.add(sensor("locked", &clock, &stop, 100, true), 0, 0);
        g.add(sensor("grid100", &clock, &stop, 100, false), 1, 1);
        g.add(sensor("grid1000", &clock, &stop, 1000, false), 2, 2);
        let (stats, sink) = g.run(&stop);
        let lock = stats.cadences[0].phase_lock.expect("lock statistics");
        // Every update of the 60 s seen once, at about one poll each.
        let values: Vec<f64> = sink
            .readings
            .iter()
            .filter(|r| r.channel == 0)
            .map(|r| r.value)
            .collect();
        let mut distinct = values.clone();
        distinct.dedup();
        let first = distinct[0] as u64;
        let last = *distinct.last().unwrap() as u64;
        assert_eq!(
            distinct.len() as u64,
            last - first + 1,
            "an update was never read"
        );
        assert!(last - first >= 595, "{first}..{last}");
        assert!(lock.polls < 700, "{lock:?}");
        // Each update read within 5.5 ms of it: value v is valid from phase + (v-1) × 100 ms.
        let mut seen = None;
        for r in sink.readings.iter().filter(|r| r.channel == 0) {
            if seen != Some(r.value) && r.t_ns > 3_000_000_000 {
                let update = 1_037_000_000 + (r.value as u64 - 1) * 100_000_000;
                assert!(
                    r.t_ns - update < 5_500_000,
                    "update {} read {} ns late",
                    r.value,
                    r.t_ns - update
                );
            }
            seen = Some(r.value);
        }
        // The grid sources kept their rates and rode the lock's wake-ups: about 11
        // wake-ups a second, not 21.
        assert!(stats.cadences[1].ticks.abs_diff(600) <= 3, "{stats:?}");
        assert!(stats.cadences[2].ticks.abs_diff(60) <= 2, "{stats:?}");
        assert!(stats.thread.wakeups < 700, "{stats:?}");
    }

    #[test]
    fn grid_sources_due_together_ride_the_locked_wakeups() {
        // NVML's layout: instant power phase-locked to its updates, activity and GPM every
        // 100 ms (due at the same instants), the driver buffer every second. Activity and
        // GPM once counted each other as the next deadline, never joined the lock's
        // wake-ups, and woke the thread on their own: 26 wake-ups a second, not 11.
        for phase_ms in [1_037, 1_062, 1_088] {
            let clock = Arc::new(ManualClock::new(1_000_000_000, 0));
            let stop = Arc::new(WakeFlag::new());
            let mut g =
                SamplerGroup::new(Duration::from_millis(10), clock.clone(), VecSink::default());
            let mut locked = sensor("instant", &clock, &stop, 100, true);
            locked.phase = phase_ms * 1_000_000;
            g.add(locked, 0, 0);
            g.add(sensor("activity", &clock, &stop, 100, false), 1, 1);
            g.add(sensor("gpm", &clock, &stop, 100, false), 2, 2);
            g.add(sensor("samples", &clock, &stop, 1000, false), 3, 3);
            let (stats, _) = g.run(&stop);
            let c = &stats.cadences;
            assert!(c[1].ticks.abs_diff(600) <= 3, "{phase_ms}: {stats:?}");
            assert!(c[2].ticks.abs_diff(600) <= 3, "{phase_ms}: {stats:?}");
            assert!(c[3].ticks.abs_diff(60) <= 2, "{phase_ms}: {stats:?}");
            // every wake-up is one the lock asked for (or the start)
            assert!(
                stats.thread.wakeups <= c[0].ticks + 2,
                "{phase_ms}: {} wake-ups for {} lock polls",
                stats.thread.wakeups,
                c[0].ticks
            );
        }
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

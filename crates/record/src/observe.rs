//! Watching a recording live: what the trace writer sees, handed to observers on the
//! writer's thread.
//!
//! An exporter (Prometheus), a live printer or a language binding needs the same stream the
//! trace gets: readings (with what each meant for a counter channel), marks, gaps, drops,
//! and flinch's own cost. The writer thread already sees all of them, off the sampling and
//! marks paths, so observers hang there: the samplers and the mark readers never wait for
//! an observer. An observer must still be quick (it delays the trace by what it spends),
//! and it is called in batches: readings arrive when the writer drains its sample queue
//! (with every mark, when a flush is due — at least every second — and at the end), so a
//! live value is at most about a second old.
//!
//! A panicking observer is dropped and the recording goes on (an `observer_panicked`
//! event row says so). Every method has a default that does nothing, so an observer
//! implements only what it needs and new methods can be added without breaking it.
//!
//! ```
//! use flinch_record::observe::{Observed, Observer};
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU64, Ordering};
//!
//! /// Counts readings.
//! struct Count(Arc<AtomicU64>);
//! impl Observer for Count {
//!     fn readings(&mut self, batch: &[Observed]) {
//!         self.0.fetch_add(batch.len() as u64, Ordering::Relaxed);
//!     }
//! }
//! ```

use flinch_core::counter::CounterStep;
use flinch_core::marks::{Mark, MarkParseError, MarkVia};
use flinch_core::source::Reading;
use flinch_core::trace::{Footer, Header};
use std::sync::atomic::{AtomicI32, Ordering};

/// One reading as the writer took it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Observed {
    /// The reading (its `channel` indexes the header's channels, in source order).
    pub reading: Reading,
    /// For a counter channel, what the step from the previous reading meant (wrap-corrected
    /// increase, reset, implausible or out-of-range), from the recording's one
    /// [`CounterTracker`](flinch_core::counter::CounterTracker) per channel; `None` for gauges.
    pub counter: Option<CounterStep>,
}

/// One sampler thread of a running recording: its name, the default interval of its
/// sources, its sources, and its CPU time read live.
#[derive(Debug)]
pub struct LiveThread {
    /// The thread's name (`flinch-<backend>`, `flinch-slow-<interval>`), as in the footer's
    /// `threads`.
    pub name: String,
    /// The default interval of its sources, ns.
    pub interval_ns: u64,
    /// The sources it polls.
    pub sources: Vec<String>,
    tid: AtomicI32,
}

impl LiveThread {
    /// A sampler thread that has not started yet.
    pub fn new(name: String, interval_ns: u64, sources: Vec<String>) -> Self {
        LiveThread {
            name,
            interval_ns,
            sources,
            tid: AtomicI32::new(0),
        }
    }

    /// Called on the sampler thread itself when it starts.
    pub fn set_current_thread(&self) {
        self.tid.store(
            rustix::thread::gettid().as_raw_nonzero().get(),
            Ordering::Release,
        );
    }

    /// CPU time the thread has used so far, ns (the kernel's `sum_exec_runtime`, the clock
    /// the footer's `cpu_ns` reads too). `None` before it started, after it ended, or where
    /// `/proc` does not say.
    pub fn cpu_ns(&self) -> Option<u64> {
        let tid = self.tid.load(Ordering::Acquire);
        if tid == 0 {
            return None;
        }
        let s = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
        s.split_ascii_whitespace().next()?.parse().ok()
    }
}

/// Sees a recording as the trace writer does. See the module docs.
#[allow(unused_variables)]
pub trait Observer: Send {
    /// The recording started: its header (sources and channels in reading-index order, the
    /// idle profile given with `--idle`) and its sampler threads.
    fn start(&mut self, header: &Header, threads: &[std::sync::Arc<LiveThread>]) {}
    /// A batch of readings, in the order they were written.
    fn readings(&mut self, batch: &[Observed]) {}
    /// A mark (given before the readings drained with it, so a mark can arrive ahead of the
    /// readings around it: the driver's buffer and the writer's batching make readings up
    /// to a second or two late).
    fn mark(&mut self, mark: &Mark) {}
    /// A malformed mark line.
    fn bad_mark(&mut self, via: MarkVia, recv_ns: u64, error: &MarkParseError) {}
    /// Source `source` stopped answering (`reason` is `Some`) or answered again (`None`).
    fn gap(&mut self, t_ns: u64, source: &str, reason: Option<&str>) {}
    /// `count` readings of `source` were dropped because the writer fell behind.
    fn dropped(&mut self, t_ns: u64, source: &str, count: u64) {}
    /// An event row (command start and exit, stuck samplers, ...).
    fn event(&mut self, t_ns: u64, label: &str, text: &str) {}
    /// The writer finished a pass that took readings; `now_ns` is the time.
    fn flushed(&mut self, now_ns: u64) {}
    /// Asked every time before the writer sleeps (also before its first sleep): the
    /// `CLOCK_MONOTONIC` time, ns, by which this observer wants the readings queued until
    /// then, or `None` when the writer's own schedule will do. The writer sleeps until a
    /// mark or event arrives, a flush or anchor is due, or the earliest time the observers
    /// returned; then it takes the queued readings and calls [`Observer::readings`] and
    /// [`Observer::flushed`]. Without this, readings come at least every
    /// [`RecorderConfig::flush_interval`](crate::recorder::RecorderConfig::flush_interval)
    /// and with every mark: an observer waiting on a deadline (a window measured once the
    /// sensors have covered its end) returns that deadline, or a short recheck period
    /// while it waits, and `None` once it waits for nothing. The writer waits at least a
    /// millisecond between passes whatever is returned, and the trace is flushed on its own
    /// schedule only (an early pass writes the readings into the buffer, not the file).
    fn next_wake_ns(&mut self, now_ns: u64) -> Option<u64> {
        None
    }
    /// The recording ended; the footer has the final counts and every sampler thread's timing and CPU.
    fn finish(&mut self, footer: &Footer) {}
}

/// The observers of one recording, each called under `catch_unwind`.
pub(crate) struct Observers {
    list: Vec<(String, Box<dyn Observer>)>,
    /// Observers that panicked, with the panic message, not yet reported.
    pub(crate) panicked: Vec<(String, String)>,
}

impl Observers {
    pub(crate) fn new(list: Vec<Box<dyn Observer>>) -> Self {
        Observers {
            list: list
                .into_iter()
                .enumerate()
                .map(|(i, o)| (format!("observer {i}"), o))
                .collect(),
            panicked: Vec::new(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The earliest time any observer wants the queued readings by ([`Observer::next_wake_ns`]),
    /// `u64::MAX` when none does.
    pub(crate) fn next_wake_ns(&mut self, now_ns: u64) -> u64 {
        let mut due = u64::MAX;
        self.each(|o| {
            if let Some(t) = o.next_wake_ns(now_ns) {
                due = due.min(t);
            }
        });
        due
    }

    /// Calls `f` on every observer; one that panics is dropped.
    pub(crate) fn each(&mut self, mut f: impl FnMut(&mut dyn Observer)) {
        let mut i = 0;
        while i < self.list.len() {
            let o = &mut self.list[i].1;
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(o.as_mut())));
            match r {
                Ok(()) => i += 1,
                Err(payload) => {
                    let (name, _) = self.list.remove(i);
                    self.panicked.push((
                        name,
                        crate::sampler::panic_message(payload.as_ref()).to_owned(),
                    ));
                }
            }
        }
    }
}

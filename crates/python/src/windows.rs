//! Windows measured in-process: the recorder's [`Observer`] keeps the recent samples in a
//! [`Trace`] of its own, and once the sensors have covered a window's end, measures the
//! window with flinch's analysis (`Analyzer::span`, the code behind `flinch analyze`).
//!
//! The caller's thread only stamps the window's edges, posts its two marks on the
//! recorder's in-process lane and hands the observer a shared reference: no sensor I/O, no
//! lock, no wake-up of another thread (`result()` wakes the writer once, if it must). The observer runs on
//! the recorder's writer thread; while a window waits for its samples it asks the writer
//! ([`Observer::next_wake_ns`]) to hand them over every few milliseconds rather than at the
//! next flush.

use crossbeam_channel::{Receiver, Sender};
use flinch_analysis::idle::IdleProfile;
use flinch_analysis::{Analyzer, SpanReport, Thresholds};
use flinch_core::channel::Quantity;
use flinch_core::counter::CounterStep;
use flinch_core::integrate::Method;
use flinch_core::marks::{Mark, MarkVia};
use flinch_core::trace::{ChannelData, Footer, Gap, Header, RowKind, Trace, TraceEvent};
use flinch_record::MarkSpec;
use flinch_record::observe::{LiveThread, Observed, Observer};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// How often the writer comes back while a window waits for its samples.
const RECHECK_NS: u64 = 5_000_000;
/// The longest a window waits for a channel to cover its end, beyond three of the
/// channel's update periods: a channel that has not delivered by then (a stalled source)
/// is left out of the measurement (status `no-data`) rather than holding the result.
const MAX_WAIT_NS: u64 = 2_000_000_000;
/// The longest a window waits for a channel that has delivered nothing at all so far (NVML
/// drains its driver sample buffer about twice a second).
const SILENT_WAIT_NS: u64 = 1_000_000_000;
/// Samples older than this before the oldest open window are dropped from memory.
const KEEP_NS: u64 = 5_000_000_000;

/// What a window's result is: the measurement as JSON, or why there is none.
pub type Outcome = Result<String, String>;

/// Where a window's result appears, shared by the caller's handle and the observer.
#[derive(Default)]
pub struct Slot {
    value: Mutex<Option<Outcome>>,
    ready: Condvar,
}

impl Slot {
    /// Sets the result (once) and wakes the waiters.
    pub fn fill(&self, o: Outcome) {
        let mut v = self.value.lock().unwrap_or_else(|e| e.into_inner());
        if v.is_none() {
            *v = Some(o);
            self.ready.notify_all();
        }
    }
    /// Waits up to `timeout` (forever: `None`) for the result.
    pub fn wait(&self, timeout: Option<Duration>) -> Option<Outcome> {
        let mut v = self.value.lock().unwrap_or_else(|e| e.into_inner());
        let deadline = timeout.map(|t| std::time::Instant::now() + t);
        while v.is_none() {
            match deadline {
                None => v = self.ready.wait(v).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = std::time::Instant::now();
                    if now >= d {
                        return None;
                    }
                    v = self
                        .ready
                        .wait_timeout(v, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
        v.clone()
    }
    /// The result if there is one already.
    pub fn peek(&self) -> Option<Outcome> {
        self.value.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Set once every source has delivered its first reading (or reported a gap), so that a
/// window opened right after the recorder starts has samples before it.
#[derive(Default)]
pub struct Primed {
    done: Mutex<bool>,
    ready: Condvar,
}

impl Primed {
    fn set(&self) {
        *self.done.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.ready.notify_all();
    }
    /// Waits up to `timeout`; whether every source delivered.
    pub fn wait(&self, timeout: Duration) -> bool {
        let g = self.done.lock().unwrap_or_else(|e| e.into_inner());
        let (g, _) = self
            .ready
            .wait_timeout_while(g, timeout, |done| !*done)
            .unwrap_or_else(|e| e.into_inner());
        *g
    }
}

/// From the caller's thread to the observer.
pub enum WinMsg {
    /// A window opened at `t_ns`.
    Open {
        /// The window's id.
        id: u64,
        /// Its start.
        t_ns: u64,
    },
    /// A window closed.
    Close(Arc<WindowState>),
}

/// A window, shared by the caller's handle and (once closed) the observer.
pub struct WindowState {
    /// The window's id.
    pub id: u64,
    /// The request id its marks carry.
    pub req: String,
    /// Its start and end marks (labels and fields, checked).
    pub start: MarkSpec,
    /// ..
    pub end: MarkSpec,
    /// `CLOCK_MONOTONIC` ns of its start.
    pub start_ns: u64,
    /// Of its end (0 while open).
    pub end_ns: AtomicU64,
    /// Where its result goes.
    pub slot: Slot,
    /// Someone asked for the result and the writer was woken for it.
    pub asked: AtomicBool,
}

impl WindowState {
    /// A window opened at `start_ns`.
    pub fn new(id: u64, req: String, start: MarkSpec, end: MarkSpec, start_ns: u64) -> Self {
        WindowState {
            id,
            req,
            start,
            end,
            start_ns,
            end_ns: AtomicU64::new(0),
            slot: Slot::default(),
            asked: AtomicBool::new(false),
        }
    }
    fn end_ns(&self) -> u64 {
        self.end_ns.load(Ordering::Acquire)
    }
}

/// The observer: the recent samples, the open and closed windows.
pub struct LiveWindows {
    rx: Receiver<WinMsg>,
    trace: Trace,
    idle: Option<IdleProfile>,
    /// Per channel: the latest sample time seen.
    latest: Vec<u64>,
    /// Per channel: its source's index in `sources`.
    source_of: Vec<usize>,
    /// Source names, and whether each is in an open gap.
    sources: Vec<(String, bool)>,
    /// Per source: whether it has delivered anything yet (until all have: `primed`).
    heard: Vec<bool>,
    primed: Arc<Primed>,
    /// Channels a window waits for, with how long at most (ns past its end).
    needed: Vec<(usize, u64)>,
    open: HashMap<u64, u64>,
    pending: Vec<Arc<WindowState>>,
}

impl LiveWindows {
    /// An observer fed by `rx`, for a recording into `out`.
    pub fn new(rx: Receiver<WinMsg>, out: PathBuf, primed: Arc<Primed>) -> Self {
        LiveWindows {
            heard: Vec::new(),
            primed,
            rx,
            trace: Trace {
                path: out,
                header: Header::default(),
                footer: None,
                channels: Vec::new(),
                marks: Vec::new(),
                anchors: Vec::new(),
                gaps: Vec::new(),
                events: Vec::new(),
                warnings: Vec::new(),
            },
            idle: None,
            latest: Vec::new(),
            source_of: Vec::new(),
            sources: Vec::new(),
            needed: Vec::new(),
            open: HashMap::new(),
            pending: Vec::new(),
        }
    }

    fn take_messages(&mut self) {
        while let Ok(m) = self.rx.try_recv() {
            match m {
                WinMsg::Open { id, t_ns } => {
                    self.open.insert(id, t_ns);
                }
                WinMsg::Close(c) => {
                    self.open.remove(&c.id);
                    self.pending.push(c);
                }
            }
        }
    }

    /// Whether every needed channel has a sample at or after `end_ns` (or its source is
    /// not answering), or the longest wait is over.
    fn covered(&self, end_ns: u64, now_ns: u64) -> bool {
        self.needed.iter().all(|&(i, wait)| {
            // A channel that has delivered nothing yet (a device that never fills it, or a
            // driver buffer not drained yet) is waited for at most `SILENT_WAIT_NS`.
            let wait = if self.latest[i] == 0 {
                wait.min(SILENT_WAIT_NS)
            } else {
                wait
            };
            self.latest[i] >= end_ns
                || self.sources[self.source_of[i]].1
                || now_ns >= end_ns.saturating_add(wait)
        })
    }

    fn measure(&self, ready: Vec<Arc<WindowState>>) {
        let idle = self.idle.as_ref().map(|p| (p, "embedded"));
        let analyzer = Analyzer::new(&self.trace, idle, Thresholds::default());
        for c in ready {
            let mark = |label: &str, t_ns: u64| Mark {
                t_ns,
                recv_ns: t_ns,
                t_from_client: true,
                label: label.to_owned(),
                fields: vec![("req".to_owned(), c.req.clone())],
                via: MarkVia::Api,
            };
            let span = analyzer.span(
                &mark(c.start.label(), c.start_ns),
                &mark(c.end.label(), c.end_ns()),
            );
            c.slot.fill(encode(&self.trace, &span));
        }
    }

    /// Drops samples, gaps and events no open or waiting window can need.
    fn prune(&mut self, now_ns: u64) {
        let oldest = self
            .open
            .values()
            .copied()
            .chain(self.pending.iter().map(|p| p.start_ns))
            .chain(std::iter::once(now_ns))
            .min()
            .unwrap_or(now_ns);
        let cut = oldest.saturating_sub(KEEP_NS);
        for ch in &mut self.trace.channels {
            // Keep one sample before the cut: a window's edge is interpolated from it.
            let n = ch.t_ns.partition_point(|&t| t < cut).saturating_sub(1);
            if n >= 4096 && n * 2 >= ch.t_ns.len() {
                ch.t_ns.drain(..n);
                ch.values.drain(..n);
            }
        }
        if self.trace.events.len() > 1024 {
            self.trace.events.retain(|e| e.t_ns >= cut);
        }
        if self.trace.gaps.len() > 1024 {
            self.trace
                .gaps
                .retain(|g| g.end_ns.is_none_or(|e| e >= cut));
        }
    }

    fn event(&mut self, t_ns: u64, kind: RowKind, channel: String) {
        self.trace.events.push(TraceEvent {
            t_ns,
            kind,
            channel,
            value: None,
            label: String::new(),
            text: String::new(),
            line: 0,
        });
    }
}

/// The measurement of a window as JSON: the span as `flinch analyze --json` reports it,
/// and whether the sensors resolved it (with the reason when not).
fn encode(trace: &Trace, span: &SpanReport) -> Outcome {
    let (resolved, reason) = resolution(trace, span);
    let v = serde_json::json!({
        "span": span,
        "resolved": resolved,
        "reason": reason,
    });
    serde_json::to_string(&v).map_err(|e| format!("cannot encode the measurement: {e}"))
}

/// Resolved: at least one device measured the window, and the channel each device's energy
/// came from saw at least 2 sensor updates in it and spans one update period.
fn resolution(trace: &Trace, span: &SpanReport) -> (bool, Option<String>) {
    let dur = if span.duration_s < 1e-3 {
        format!("{:.1} µs", span.duration_s * 1e6)
    } else {
        format!("{:.1} ms", span.duration_s * 1e3)
    };
    let mut why = Vec::new();
    let mut measured = 0;
    for (dev, d) in &span.devices {
        let Some(ch) = &d.channel else {
            let notes: Vec<String> = span
                .energy
                .iter()
                .filter(|(_, e)| &e.device == dev)
                .map(|(n, e)| format!("{n}: {}", e.note.as_deref().unwrap_or("no data")))
                .collect();
            why.push(format!(
                "{dev}: no channel measured the window ({})",
                notes.join("; ")
            ));
            continue;
        };
        measured += 1;
        let Some(e) = span.energy.get(ch) else {
            continue;
        };
        if !e.resolved {
            let period = trace
                .channel(ch)
                .and_then(|c| c.spec.update_period_ns)
                .map(|p| format!(" and a window of at least {:.1} ms", p as f64 / 1e6))
                .unwrap_or_default();
            why.push(format!(
                "{dev}: {ch} saw {} sensor update(s) in {dur}; resolving a window needs \
                 at least 2{period}; the energy given is interpolated",
                e.updates_in_span
            ));
        }
    }
    if span.devices.is_empty() {
        why.push("no power or energy channel is recorded".into());
    }
    let resolved = measured > 0 && why.is_empty();
    (resolved, (!why.is_empty()).then(|| why.join("; ")))
}

/// Channels a window waits for, each with its longest wait: per device the best non-lagging
/// power or energy channel (the one its energy comes from when it covers the window) and
/// every activity channel.
fn needed_channels(header: &Header) -> Vec<(usize, u64)> {
    let mut best: BTreeMap<String, (Method, usize, u64)> = BTreeMap::new();
    let mut out = Vec::new();
    let channels = header.sources.iter().flat_map(|s| s.channels.iter());
    for (i, c) in channels.enumerate() {
        let wait = MAX_WAIT_NS.saturating_add(c.update_period_ns.unwrap_or(0).saturating_mul(3));
        match Method::of(c) {
            Some(m) if !m.lagging() => {
                let e = best.entry(c.device.clone()).or_insert((m, i, wait));
                if m < e.0 {
                    *e = (m, i, wait);
                }
            }
            Some(_) => {}
            None if matches!(
                c.quantity,
                Quantity::Utilization | Quantity::Activity | Quantity::CpuTime
            ) =>
            {
                out.push((i, wait))
            }
            None => {}
        }
    }
    out.extend(best.values().map(|&(_, i, wait)| (i, wait)));
    out.sort_unstable();
    out
}

impl LiveWindows {
    /// Takes one reading into the samples kept.
    fn push(&mut self, o: &Observed) {
        let r = &o.reading;
        let i = r.channel as usize;
        let Some(ch) = self.trace.channels.get_mut(i) else {
            return;
        };
        if ch.t_ns.last().is_none_or(|&l| l <= r.t_ns) {
            ch.t_ns.push(r.t_ns);
            ch.values.push(r.value);
        } else {
            // Late samples (a driver buffer) go where they belong: the reader sorts too.
            let at = ch.t_ns.partition_point(|&t| t <= r.t_ns);
            ch.t_ns.insert(at, r.t_ns);
            ch.values.insert(at, r.value);
        }
        self.latest[i] = self.latest[i].max(r.t_ns);
        self.heard[self.source_of[i]] = true;
        // A counter's reset or implausible step: the row the trace gets next to the sample.
        let kind = match o.counter {
            Some(CounterStep::Reset { .. }) => RowKind::Reset,
            Some(CounterStep::Implausible { .. } | CounterStep::OutOfRange { .. }) => RowKind::Flag,
            _ => return,
        };
        let name = ch.spec.name.clone();
        self.event(r.t_ns, kind, name);
    }

    /// Raises `primed` once every source has delivered (or reported a gap); whether it
    /// still waits for one.
    fn priming(&self) -> bool {
        let priming = !self.heard.iter().all(|&h| h);
        if !priming {
            self.primed.set();
        }
        priming
    }
}

impl Observer for LiveWindows {
    fn start(&mut self, header: &Header, _threads: &[Arc<LiveThread>]) {
        self.trace.header = header.clone();
        self.idle = header
            .idle
            .as_ref()
            .and_then(|v| IdleProfile::from_value(v).ok());
        for s in &header.sources {
            let si = self.sources.len();
            self.sources.push((s.name.clone(), false));
            self.heard.push(s.channels.is_empty());
            for c in &s.channels {
                self.trace.channels.push(ChannelData {
                    spec: c.clone(),
                    source: s.name.clone(),
                    t_ns: Vec::new(),
                    values: Vec::new(),
                });
                self.source_of.push(si);
                self.latest.push(0);
            }
        }
        self.needed = needed_channels(header);
    }

    fn readings(&mut self, batch: &[Observed]) {
        for o in batch {
            self.push(o);
        }
    }

    fn gap(&mut self, t_ns: u64, source: &str, reason: Option<&str>) {
        if let Some(k) = self.sources.iter().position(|s| s.0 == source) {
            self.sources[k].1 = reason.is_some();
            self.heard[k] = true;
        }
        match reason {
            Some(reason) => self.trace.gaps.push(Gap {
                source: source.to_owned(),
                start_ns: t_ns,
                end_ns: None,
                reason: reason.to_owned(),
            }),
            None => {
                if let Some(g) = self
                    .trace
                    .gaps
                    .iter_mut()
                    .rev()
                    .find(|g| g.source == source && g.end_ns.is_none())
                {
                    g.end_ns = Some(t_ns.max(g.start_ns));
                }
            }
        }
    }

    fn dropped(&mut self, t_ns: u64, source: &str, _count: u64) {
        self.event(t_ns, RowKind::Drop, source.to_owned())
    }

    /// New readings are in: measure the windows the sensors now cover.
    fn flushed(&mut self, now_ns: u64) {
        self.priming();
        self.take_messages();
        if !self.pending.is_empty() {
            let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
                .into_iter()
                .partition(|c| self.covered(c.end_ns(), now_ns));
            self.pending = waiting;
            // A window whose handle Python has dropped (`with rec.window(..):` without
            // `as w`) has nobody to read its result: it is in the trace, and not measured
            // here, so that many small windows cost the writer nothing.
            let ready: Vec<_> = ready
                .into_iter()
                .filter(|c| Arc::strong_count(c) > 1)
                .collect();
            if !ready.is_empty() {
                self.measure(ready);
            }
        }
        self.prune(now_ns);
    }

    /// While a source has not delivered yet or a closed window waits for its samples, the
    /// writer comes back every `RECHECK_NS`.
    fn next_wake_ns(&mut self, now_ns: u64) -> Option<u64> {
        let priming = self.priming();
        self.take_messages();
        (priming || !self.pending.is_empty()).then_some(now_ns + RECHECK_NS)
    }

    /// The recording ended: measure what waits with the samples there are (the last poll
    /// of every source is in).
    fn finish(&mut self, _footer: &Footer) {
        self.take_messages();
        let ready = std::mem::take(&mut self.pending);
        if !ready.is_empty() {
            self.measure(ready);
        }
    }
}

impl Drop for LiveWindows {
    /// Dropped without `finish` (the writer failed, or this observer panicked and was
    /// dropped): every window still waiting says so rather than waiting forever.
    fn drop(&mut self) {
        self.take_messages();
        for c in self.pending.drain(..) {
            c.slot.fill(Err(
                "the recording ended before the window could be measured (see the trace's \
                 events)"
                    .into(),
            ));
        }
    }
}

/// The sender the caller's thread uses, the observer to hand to the recorder, and the
/// flag it raises once every source has delivered.
pub fn channel(out: PathBuf) -> (Sender<WinMsg>, LiveWindows, Arc<Primed>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let primed = Arc::new(Primed::default());
    (tx, LiveWindows::new(rx, out, primed.clone()), primed)
}

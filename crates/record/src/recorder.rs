//! A recording: sources sampled on their cadences, marks from every transport, one writer
//! thread appending to the trace.
//!
//! ```no_run
//! use flinch_record::recorder::{Recorder, RecorderConfig, RecordingSetup};
//! use flinch_record::synthetic::{SyntheticConfig, SyntheticSource};
//! use flinch_core::clock::MonotonicClock;
//! use std::sync::Arc;
//!
//! let clock = Arc::new(MonotonicClock);
//! let src = SyntheticSource::new(SyntheticConfig::default(), clock.as_ref());
//! let setup = RecordingSetup::new("run.flinch.csv".into(), vec![Box::new(src)]);
//! let rec = Recorder::start(setup, RecorderConfig::default(), clock).unwrap();
//! let marks = rec.mark_sender();
//! marks.mark("infer_start", &[("req", "1")]).unwrap();
//! std::thread::sleep(std::time::Duration::from_millis(100));
//! marks.mark("first_token", &[("req", "1")]).unwrap();
//! let footer = rec.stop("stopped", None).unwrap();
//! println!("{} samples", footer.samples);
//! ```

use crate::marks::fifo::FifoReceiver;
use crate::marks::file::FileReceiver;
use crate::queue::{ByteBoundedReceiver, ByteBoundedSender, TrySendError, byte_bounded};
use crate::sampler::{SamplerGroup, Sink, plan_groups};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded};
use flinch_core::channel::SourceInfo;
use flinch_core::clock::Clock;
use flinch_core::counter::{CounterStep, CounterTracker};
use flinch_core::error::{Error, Result, SourceError};
use flinch_core::marks::{
    Mark, MarkEvent, MarkParseError, MarkSink, MarkVia, format_mark, parse_mark,
};
use flinch_core::source::{Reading, Source};
use flinch_core::trace::{CadenceStats, Footer, Header, MarksInfo, TraceWriter, create_trace_file};
use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Timing and sizing of a recording.
#[derive(Clone, Debug)]
pub struct RecorderConfig {
    /// The fast sampling interval (sources without an interval of their own).
    pub interval: Duration,
    /// The longest a written row may wait in the buffer before it reaches the file.
    pub flush_interval: Duration,
    /// How often a (monotonic, realtime) anchor row is written.
    pub anchor_interval: Duration,
    /// Readings the queue to the writer holds before the sampler starts dropping (and
    /// counting) them.
    pub queue_capacity: usize,
    /// Memory the marks (and gaps and events) waiting for the writer may hold. Marks are
    /// never dropped once received: past this, the marks readers stop reading and the
    /// FIFO's pipe fills (clients then drop and count), so a flood cannot grow the
    /// recorder's memory.
    pub marks_queue_bytes: usize,
    /// How long stopping waits for each sampler thread's last poll. A source stuck inside a
    /// poll (a hung driver call) would otherwise hold the end of the recording forever; past
    /// this the recording ends without it and says so in an `event` row.
    pub stop_timeout: Duration,
}

impl Default for RecorderConfig {
    fn default() -> Self {
        RecorderConfig {
            interval: Duration::from_millis(10),
            flush_interval: Duration::from_secs(1),
            anchor_interval: Duration::from_secs(10),
            queue_capacity: 1 << 16,
            marks_queue_bytes: 2 << 20,
            stop_timeout: Duration::from_secs(5),
        }
    }
}

/// What to record and where.
pub struct RecordingSetup {
    /// The trace file to create.
    pub out: PathBuf,
    /// Replace an existing file.
    pub force: bool,
    /// The sources.
    pub sources: Vec<Box<dyn Source>>,
    /// FIFO to create and read marks from.
    pub marks_fifo: Option<PathBuf>,
    /// File to tail for marks.
    pub marks_file: Option<PathBuf>,
    /// flinch's command line, for the header.
    pub argv: Vec<String>,
    /// The wrapped command, for the header.
    pub command: Vec<String>,
    /// `--meta key=value` pairs.
    pub meta: BTreeMap<String, String>,
    /// An idle profile to embed.
    pub idle: Option<serde_json::Value>,
    /// Sees every row as the writer writes it (see [`Observer`]).
    pub observer: Option<Box<dyn Observer>>,
}

impl RecordingSetup {
    /// A setup with only an output path and sources.
    pub fn new(out: PathBuf, sources: Vec<Box<dyn Source>>) -> Self {
        RecordingSetup {
            out,
            force: false,
            sources,
            marks_fifo: None,
            marks_file: None,
            argv: Vec::new(),
            command: Vec::new(),
            meta: BTreeMap::new(),
            idle: None,
            observer: None,
        }
    }
}

/// A row other than a sample or a mark, as an [`Observer`] sees it. Channels are numbered
/// in header order (the index into [`flinch_core::trace::Trace::channels`]).
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum ObservedRow<'a> {
    /// A source stopped (`start`) or resumed answering.
    Gap {
        /// When.
        t_ns: u64,
        /// The source's name.
        source: &'a str,
        /// Whether the gap starts here (else it ends).
        start: bool,
        /// Why, at the start.
        reason: &'a str,
    },
    /// A counter restarted (a `reset` row).
    Reset {
        /// When.
        t_ns: u64,
        /// The channel.
        channel: u32,
    },
    /// An implausible or out-of-range counter reading.
    Flag {
        /// When.
        t_ns: u64,
        /// The channel.
        channel: u32,
    },
    /// Readings of a source were dropped (the writer fell behind).
    Dropped {
        /// When.
        t_ns: u64,
        /// The source's name.
        source: &'a str,
        /// How many.
        count: u64,
    },
}

/// A live consumer of a recording: called on the writer thread with every row right after
/// it is written, in the order written (samples arrive in batches: see
/// [`RecorderConfig::flush_interval`]). Every method has a default that does nothing, so the
/// trait can grow. An observer must be quick: the writer waits for it (the queues in front of
/// the writer absorb short delays).
pub trait Observer: Send {
    /// The recording starts with this header.
    fn start(&mut self, _header: &Header) {}
    /// A sample was written.
    fn sample(&mut self, _r: &Reading) {}
    /// A mark was written.
    fn mark(&mut self, _m: &Mark) {}
    /// A gap, reset, flag or drop row was written.
    fn row(&mut self, _row: ObservedRow<'_>) {}
    /// The writer has passed on everything it had (also called once before its first
    /// sleep); it sleeps next until a mark or event arrives, a flush is due, or the
    /// `CLOCK_MONOTONIC` time returned here (when the observer needs the samples queued by
    /// then sooner than the next flush).
    fn idle(&mut self, _now_ns: u64) -> Option<u64> {
        None
    }
}

/// Everything but samples: marks, gaps, drops, events. The writer sleeps on this channel,
/// so a mark is written and flushed as soon as it arrives, while samples (on their own
/// channel) never wake it: they are written when a flush is due (at least every flush
/// interval, so a crash loses no more than before), with every mark, at the end, and when a
/// sampler finds the sample queue a quarter full ([`Msg::Drain`]). On a 100 Hz recording
/// the writer wakes about once a second instead of hundreds of times.
enum Msg {
    Mark(Box<Mark>),
    BadMark(Box<(MarkVia, u64, String, MarkParseError)>),
    Gap(Box<(u64, u32, Option<String>)>),
    Dropped(u64, u32, u64),
    Event(Box<(u64, String, String)>),
    /// The sample queue is a quarter full: write it out now.
    Drain,
    Stop,
}

/// About how much heap memory a queued message holds, for the queue's budget: every
/// allocation is counted with a typical allocator overhead, so that a mark of a thousand
/// tiny fields counts for what it costs.
fn msg_bytes(msg: &Msg) -> usize {
    const ALLOC: usize = 16;
    let s = |x: &String| x.capacity() + ALLOC;
    std::mem::size_of::<(Msg, usize)>()
        + match msg {
            Msg::Mark(m) => {
                std::mem::size_of::<Mark>()
                    + ALLOC
                    + s(&m.label)
                    + m.fields.capacity() * std::mem::size_of::<(String, String)>()
                    + ALLOC
                    + m.fields.iter().map(|(k, v)| s(k) + s(v)).sum::<usize>()
            }
            Msg::BadMark(b) => {
                std::mem::size_of::<(MarkVia, u64, String, MarkParseError)>() + ALLOC + s(&b.2) + 64
            }
            Msg::Gap(g) => {
                std::mem::size_of::<(u64, u32, Option<String>)>()
                    + ALLOC
                    + g.2.as_ref().map_or(0, s)
            }
            Msg::Event(e) => {
                std::mem::size_of::<(u64, String, String)>() + ALLOC + s(&e.1) + s(&e.2)
            }
            Msg::Dropped(..) | Msg::Drain | Msg::Stop => 0,
        }
}

/// Queues `msg`, waiting while the queue is over its budget (fails only once the writer is
/// gone).
fn send(tx: &ByteBoundedSender<Msg>, msg: Msg) {
    let bytes = msg_bytes(&msg);
    let _ = tx.send(msg, bytes);
}

struct ChannelSink {
    data: Sender<Reading>,
    tx: ByteBoundedSender<Msg>,
    dropped: Arc<AtomicU64>,
    /// Set when a drain was asked for and not yet done (shared with the writer).
    drain_asked: Arc<AtomicBool>,
    /// Queue length above which a drain is asked for.
    drain_at: usize,
}

impl Sink for ChannelSink {
    fn reading(&mut self, r: &Reading) -> bool {
        match self.data.try_send(*r) {
            Ok(()) => {
                if self.data.len() > self.drain_at && !self.drain_asked.swap(true, Ordering::AcqRel)
                {
                    send(&self.tx, Msg::Drain);
                }
                true
            }
            Err(_) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }
    fn gap(&mut self, t_ns: u64, source: u32, error: Option<&SourceError>) {
        send(
            &self.tx,
            Msg::Gap(Box::new((
                t_ns,
                source,
                error.map(|e| format!("{}: {}", e.kind, e)),
            ))),
        );
    }
    fn dropped(&mut self, t_ns: u64, source: u32, count: u64) {
        send(&self.tx, Msg::Dropped(t_ns, source, count));
    }
    fn data_gap(&mut self, source: u32, gap: &flinch_core::source::DataGap) {
        let reason = format!("data-gap: {}", gap.reason);
        send(
            &self.tx,
            Msg::Gap(Box::new((gap.start_ns, source, Some(reason)))),
        );
        send(&self.tx, Msg::Gap(Box::new((gap.end_ns, source, None))));
    }
}

/// Counters that the live status line shows.
#[derive(Debug, Default)]
pub struct LiveStats {
    /// Sample rows written.
    pub samples: AtomicU64,
    /// Marks written.
    pub marks: AtomicU64,
    /// Malformed mark lines.
    pub bad_marks: AtomicU64,
    /// Readings dropped (writer behind).
    pub dropped: AtomicU64,
    /// Gaps opened.
    pub gaps: AtomicU64,
    /// The most memory the marks queue ever held while waiting for the writer (bounded by
    /// [`RecorderConfig::marks_queue_bytes`], give or take one mark).
    pub marks_queue_peak_bytes: AtomicU64,
}

/// Sends marks into a running recording from the same process. Never blocks: a full queue
/// drops the mark and says so.
#[derive(Clone)]
pub struct MarkSender {
    tx: ByteBoundedSender<Msg>,
    clock: Arc<dyn Clock>,
}

/// Why an in-process mark was not taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MarkSendError {
    /// The label or a field is malformed.
    #[error("invalid mark: {0}")]
    Invalid(#[from] MarkParseError),
    /// The queue to the writer is full: the mark was dropped rather than block.
    #[error("the recorder's queue is full: mark dropped")]
    Full,
    /// The recording has stopped.
    #[error("the recording has stopped")]
    Closed,
}

impl MarkSender {
    /// Sends a mark stamped now.
    pub fn mark(&self, label: &str, fields: &[(&str, &str)]) -> Result<(), MarkSendError> {
        self.mark_at(label, self.clock.now_ns(), fields)
    }

    /// Sends a mark stamped `t_ns` (`CLOCK_MONOTONIC`).
    pub fn mark_at(
        &self,
        label: &str,
        t_ns: u64,
        fields: &[(&str, &str)],
    ) -> Result<(), MarkSendError> {
        let line = format_mark(label, Some(t_ns), fields)?;
        let parsed = parse_mark(line.as_bytes())?;
        let m = Mark::received(parsed, self.clock.now_ns(), MarkVia::Api);
        let msg = Msg::Mark(Box::new(m));
        let bytes = msg_bytes(&msg);
        match self.tx.try_send(msg, bytes) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(MarkSendError::Full),
            Err(TrySendError::Closed(_)) => Err(MarkSendError::Closed),
        }
    }
}

/// A running recording.
pub struct Recorder {
    tx: ByteBoundedSender<Msg>,
    clock: Arc<dyn Clock>,
    stop: Arc<AtomicBool>,
    stop_timeout: Duration,
    /// Each sampler thread with the names of the sources it polls.
    samplers: Vec<(JoinHandle<CadenceStats>, Vec<String>)>,
    writer: Option<JoinHandle<WriterOutcome>>,
    fifo: Option<FifoReceiver>,
    file: Option<FileReceiver>,
    stats: Arc<LiveStats>,
    start_ns: u64,
    out: PathBuf,
    stopped: bool,
}

struct WriterOutcome {
    writer: TraceWriter<File>,
    error: Option<std::io::Error>,
}

fn check_channels(sources: &[Box<dyn Source>]) -> Result<()> {
    let mut names = HashSet::new();
    let mut source_names = HashSet::new();
    if sources.is_empty() {
        return Err(Error::Invalid("nothing to record: no sources".into()));
    }
    for s in sources {
        let info = s.info();
        if !flinch_core::marks::is_valid_label(&info.name) {
            return Err(Error::Invalid(format!(
                "source name {:?} (backend {}) must be [A-Za-z0-9_.:/-]+",
                info.name, info.backend
            )));
        }
        if !source_names.insert(info.name.clone()) {
            return Err(Error::Invalid(format!(
                "two sources are named {:?}",
                info.name
            )));
        }
        for c in &info.channels {
            if !flinch_core::marks::is_valid_label(&c.name) {
                return Err(Error::Invalid(format!(
                    "channel name {:?} of source {:?} must be [A-Za-z0-9_.:/-]+",
                    c.name, info.name
                )));
            }
            if !names.insert(c.name.clone()) {
                return Err(Error::Invalid(format!(
                    "two channels are named {:?}",
                    c.name
                )));
            }
        }
    }
    Ok(())
}

impl Recorder {
    /// Starts recording: opens the marks transports, creates the trace (nothing is created
    /// if anything before fails), writes the header, and starts the sampler threads.
    pub fn start(
        setup: RecordingSetup,
        config: RecorderConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        check_channels(&setup.sources)?;
        let (tx, rx) = byte_bounded::<Msg>(config.marks_queue_bytes);
        let (data_tx, data_rx) = bounded::<Reading>(config.queue_capacity.max(16));
        let drain_asked = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(LiveStats::default());

        let mark_sink = |tx: ByteBoundedSender<Msg>| -> MarkSink {
            Box::new(move |ev| {
                let msg = match ev {
                    MarkEvent::Mark(m) => Msg::Mark(Box::new(m)),
                    MarkEvent::Bad {
                        via,
                        recv_ns,
                        line,
                        error,
                    } => Msg::BadMark(Box::new((via, recv_ns, line, error))),
                };
                // Blocking: a received mark is never dropped, and the queue is bounded by
                // memory; while it is full the reader stops reading, the pipe fills and
                // clients (which never block) drop and count instead.
                send(&tx, msg);
            })
        };
        let fifo = match &setup.marks_fifo {
            Some(p) => Some(FifoReceiver::start(
                p,
                clock.clone(),
                mark_sink(tx.clone()),
            )?),
            None => None,
        };
        if let Some((bytes, lines)) = fifo.as_ref().and_then(|f| f.stale_discarded()) {
            send(
                &tx,
                Msg::Event(Box::new((
                    clock.now_ns(),
                    "stale_marks_discarded".to_owned(),
                    format!(
                        "{bytes} bytes ({lines} lines) sent to an earlier recorder that stopped \
                         reading were waiting in the FIFO; discarded"
                    ),
                ))),
            );
        }
        let file = match &setup.marks_file {
            Some(p) => Some(FileReceiver::start(
                p,
                clock.clone(),
                mark_sink(tx.clone()),
            )?),
            None => None,
        };
        let out_file = create_trace_file(&setup.out, setup.force)?;

        let infos: Vec<SourceInfo> = setup.sources.iter().map(|s| s.info().clone()).collect();
        let mut header = Header::new(
            config.interval.as_nanos() as u64,
            clock.anchor(),
            infos.clone(),
        );
        header.argv = setup.argv;
        header.command = setup.command;
        header.meta = setup.meta;
        header.idle = setup.idle;
        header.marks = MarksInfo {
            fifo: setup.marks_fifo.as_ref().map(|p| p.display().to_string()),
            file: setup.marks_file.as_ref().map(|p| p.display().to_string()),
        };
        let mut writer = TraceWriter::new(
            out_file,
            &header,
            clock.clone(),
            config.flush_interval.as_nanos() as u64,
        )
        .map_err(|e| Error::io("cannot write trace", &setup.out, e))?;
        writer
            .anchor(header.start_anchor)
            .map_err(|e| Error::io("cannot write trace", &setup.out, e))?;

        let start_ns = clock.now_ns();
        let mut observer = setup.observer;
        if let Some(o) = observer.as_mut() {
            o.start(&header);
        }
        let writer_thread = {
            let clock = clock.clone();
            let stats = stats.clone();
            let infos = infos.clone();
            let anchor_ns = config.anchor_interval.as_nanos() as u64;
            let queues = WriterQueues {
                data: data_rx,
                ctl: rx,
                drain_asked: drain_asked.clone(),
                observer,
            };
            std::thread::Builder::new()
                .name("flinch-writer".into())
                .spawn(move || writer_loop(writer, queues, clock, stats, infos, anchor_ns))
                .map_err(|e| Error::io("cannot start the writer thread for", &setup.out, e))?
        };

        // Channel bases in source order.
        let mut bases = Vec::with_capacity(setup.sources.len());
        let mut next = 0u32;
        for s in &setup.sources {
            bases.push(next);
            next += s.info().channels.len() as u32;
        }
        let plan = plan_groups(&setup.sources, config.interval);
        let mut sources: Vec<Option<Box<dyn Source>>> =
            setup.sources.into_iter().map(Some).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let mut samplers = Vec::new();
        for (interval, members) in plan {
            let sink = ChannelSink {
                data: data_tx.clone(),
                tx: tx.clone(),
                dropped: Arc::new(AtomicU64::new(0)),
                drain_asked: drain_asked.clone(),
                drain_at: config.queue_capacity.max(16) / 4,
            };
            let dropped = sink.dropped.clone();
            let mut group = SamplerGroup::new(interval, clock.clone(), sink);
            let names: Vec<String> = members
                .iter()
                .filter_map(|&i| sources[i].as_ref().map(|s| s.info().name.clone()))
                .collect();
            for i in members {
                let src = sources[i].take().expect("each source is planned once");
                group.add(src, i as u32, bases[i]);
            }
            let stop = stop.clone();
            let stats = stats.clone();
            let h = std::thread::Builder::new()
                .name(format!("flinch-sample-{}ms", interval.as_millis()))
                .spawn(move || {
                    let (cs, _) = group.run(&stop);
                    stats
                        .dropped
                        .fetch_add(dropped.load(Ordering::Relaxed), Ordering::Relaxed);
                    cs
                })
                .map_err(|e| Error::io("cannot start a sampler thread for", &setup.out, e))?;
            samplers.push((h, names));
        }
        Ok(Recorder {
            tx,
            clock,
            stop,
            stop_timeout: config.stop_timeout,
            samplers,
            writer: Some(writer_thread),
            fifo,
            file,
            stats,
            start_ns,
            out: setup.out,
            stopped: false,
        })
    }

    /// A handle for sending marks from this process.
    pub fn mark_sender(&self) -> MarkSender {
        MarkSender {
            tx: self.tx.clone(),
            clock: self.clock.clone(),
        }
    }

    /// Writes an event row (e.g. `command_start`).
    pub fn event(&self, label: &str, text: &str) {
        send(
            &self.tx,
            Msg::Event(Box::new((
                self.clock.now_ns(),
                label.to_owned(),
                text.to_owned(),
            ))),
        );
    }

    /// Live counters.
    pub fn stats(&self) -> &LiveStats {
        &self.stats
    }

    /// Nanoseconds since the recording started.
    pub fn elapsed_ns(&self) -> u64 {
        self.clock.now_ns().saturating_sub(self.start_ns)
    }

    /// The trace path.
    pub fn out(&self) -> &std::path::Path {
        &self.out
    }

    /// The FIFO marks are read from, if any.
    pub fn fifo_path(&self) -> Option<&std::path::Path> {
        self.fifo.as_ref().map(|f| f.path())
    }

    /// Stops the recording: a last poll of every source, every mark already written to the
    /// FIFO or file taken, everything flushed, and the footer written.
    pub fn stop(mut self, ended_by: &str, command_exit: Option<i32>) -> Result<Footer> {
        self.shutdown(ended_by, command_exit)
    }

    fn shutdown(&mut self, ended_by: &str, command_exit: Option<i32>) -> Result<Footer> {
        self.stopped = true;
        self.stop.store(true, Ordering::SeqCst);
        let mut cadences = Vec::new();
        // Each sampler gets until the deadline for its last poll; one stuck inside a source
        // (a hung driver call) is left behind rather than holding the trace open forever.
        let deadline = Instant::now() + self.stop_timeout;
        for (h, names) in std::mem::take(&mut self.samplers) {
            while !h.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            if !h.is_finished() {
                self.event(
                    "sampler_stuck",
                    &format!(
                        "the sampler thread of {} did not stop within {:.1} s: a source is \
                         stuck in a poll; the recording ended without its last readings",
                        names.join(", "),
                        self.stop_timeout.as_secs_f64()
                    ),
                );
                continue; // detached: it ends with the process
            }
            match h.join() {
                Ok(cs) => cadences.push(cs),
                Err(payload) => self.event(
                    "sampler_panicked",
                    &format!(
                        "the sampler thread of {} panicked: {}",
                        names.join(", "),
                        crate::sampler::panic_message(payload.as_ref())
                    ),
                ),
            }
        }
        if let Some(f) = self.fifo.take() {
            f.stop();
        }
        if let Some(f) = self.file.take() {
            f.stop();
        }
        send(&self.tx, Msg::Stop);
        let outcome = self
            .writer
            .take()
            .and_then(|h| h.join().ok())
            .ok_or_else(|| Error::Invalid("the trace writer thread panicked".into()))?;
        if let Some(e) = outcome.error {
            return Err(Error::io("writing failed for", &self.out, e));
        }
        let footer = Footer {
            complete: true,
            ended_by: ended_by.to_owned(),
            end_anchor: self.clock.anchor(),
            dropped_readings: self.stats.dropped.load(Ordering::Relaxed),
            cadences,
            command_exit,
            ..Default::default()
        };
        let mut w = outcome.writer;
        w.anchor(footer.end_anchor)
            .map_err(|e| Error::io("cannot write trace", &self.out, e))?;
        let samples = w.samples();
        let marks = w.marks();
        let bad = w.bad_marks();
        let gaps = w.gaps();
        let file = w
            .finish(footer.clone())
            .map_err(|e| Error::io("cannot finish trace", &self.out, e))?;
        let _ = file.sync_all();
        Ok(Footer {
            samples,
            marks,
            bad_marks: bad,
            gaps,
            ..footer
        })
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if !self.stopped {
            let _ = self.shutdown("dropped", None);
        }
    }
}

/// The writer's ends of the two queues, and the flag samplers raise to ask for a drain.
struct WriterQueues {
    data: Receiver<Reading>,
    ctl: ByteBoundedReceiver<Msg>,
    drain_asked: Arc<AtomicBool>,
    observer: Option<Box<dyn Observer>>,
}

fn writer_loop(
    mut w: TraceWriter<File>,
    q: WriterQueues,
    clock: Arc<dyn Clock>,
    stats: Arc<LiveStats>,
    infos: Vec<SourceInfo>,
    anchor_interval_ns: u64,
) -> WriterOutcome {
    let WriterQueues {
        data,
        ctl,
        drain_asked,
        mut observer,
    } = q;
    // When the observer wants the queued samples next (CLOCK_MONOTONIC ns).
    let mut observer_due = observer
        .as_mut()
        .and_then(|o| o.idle(clock.now_ns()))
        .unwrap_or(u64::MAX);
    let mut counters: Vec<Option<CounterTracker>> = infos
        .iter()
        .flat_map(|s| s.channels.iter())
        .map(|c| {
            c.counter_spec()
                .map(|spec| CounterTracker::new(*spec, c.update_period_ns))
        })
        .collect();
    let mut next_anchor = clock.now_ns() + anchor_interval_ns;
    let mut error: Option<std::io::Error> = None;
    let mut stopping = false;
    loop {
        let now = clock.now_ns();
        let wait = w
            .next_flush_ns()
            .min(next_anchor)
            .min(observer_due)
            .saturating_sub(now)
            .max(1_000_000);
        let first = if stopping {
            ctl.try_recv()
        } else {
            match ctl.recv_timeout(Duration::from_nanos(wait)) {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    stopping = true;
                    None
                }
            }
        };
        let mut wrote_mark = false;
        let mut drain = false;
        let mut batch = 0;
        let mut next_msg = first;
        while let Some(msg) = next_msg {
            if matches!(msg, Msg::Stop) {
                stopping = true;
            } else if matches!(msg, Msg::Drain) {
                drain = true;
            } else if error.is_none() {
                let r = handle(&mut w, msg, &infos, &mut wrote_mark, &mut observer);
                if let Err(e) = r {
                    error = Some(e);
                }
            }
            batch += 1;
            next_msg = if batch < 4096 || stopping {
                ctl.try_recv()
            } else {
                None
            };
        }
        let now = clock.now_ns();
        if stopping || drain || wrote_mark || now >= w.next_flush_ns() || now >= observer_due {
            // Samples reach the file here: when a flush is due, with a mark, when the
            // queue filled a quarter, and at the end.
            drain_asked.store(false, Ordering::Release);
            while let Ok(r) = data.try_recv() {
                if error.is_none()
                    && let Err(e) = write_sample(&mut w, &r, &mut counters, &mut observer)
                {
                    error = Some(e);
                }
            }
        }
        if error.is_none() {
            let r = (|| -> std::io::Result<()> {
                if now >= next_anchor {
                    w.anchor(clock.anchor())?;
                    next_anchor = now + anchor_interval_ns;
                }
                if wrote_mark {
                    w.flush()?;
                } else {
                    w.maybe_flush()?;
                }
                Ok(())
            })();
            if let Err(e) = r {
                error = Some(e);
            }
        }
        if let Some(o) = observer.as_mut() {
            observer_due = o.idle(now).unwrap_or(u64::MAX);
        }
        stats.samples.store(w.samples(), Ordering::Relaxed);
        stats.marks.store(w.marks(), Ordering::Relaxed);
        stats.bad_marks.store(w.bad_marks(), Ordering::Relaxed);
        stats.gaps.store(w.gaps(), Ordering::Relaxed);
        stats
            .marks_queue_peak_bytes
            .store(ctl.peak_bytes() as u64, Ordering::Relaxed);
        if stopping && ctl.is_empty() && data.is_empty() {
            break;
        }
    }
    if error.is_none()
        && let Err(e) = w.flush()
    {
        error = Some(e);
    }
    WriterOutcome { writer: w, error }
}

fn write_sample(
    w: &mut TraceWriter<File>,
    r: &Reading,
    counters: &mut [Option<CounterTracker>],
    observer: &mut Option<Box<dyn Observer>>,
) -> std::io::Result<()> {
    w.sample(r)?;
    if let Some(o) = observer.as_mut() {
        o.sample(r);
    }
    if let Some(Some(tracker)) = counters.get_mut(r.channel as usize) {
        let step = tracker.update(r.t_ns, r.value);
        if let Some(o) = observer.as_mut() {
            let (t_ns, channel) = (r.t_ns, r.channel);
            match step {
                CounterStep::Reset { .. } => o.row(ObservedRow::Reset { t_ns, channel }),
                CounterStep::Implausible { .. } | CounterStep::OutOfRange { .. } => {
                    o.row(ObservedRow::Flag { t_ns, channel })
                }
                CounterStep::First | CounterStep::Delta { .. } => {}
            }
        }
        match step {
            CounterStep::Reset { from, to } => w.reset(r.t_ns, r.channel, from, to)?,
            CounterStep::Implausible { delta, limit } => w.flag(
                r.t_ns,
                r.channel,
                r.value,
                "implausible",
                &format!("step {delta} exceeds the plausible maximum {limit}"),
            )?,
            CounterStep::OutOfRange { value } => w.flag(
                r.t_ns,
                r.channel,
                value,
                "out-of-range",
                "below zero or above the wrap range",
            )?,
            CounterStep::First | CounterStep::Delta { .. } => {}
        }
    }
    Ok(())
}

fn source_name(infos: &[SourceInfo], i: u32) -> &str {
    infos
        .get(i as usize)
        .map(|s| s.name.as_str())
        .unwrap_or("?")
}

fn handle(
    w: &mut TraceWriter<File>,
    msg: Msg,
    infos: &[SourceInfo],
    wrote_mark: &mut bool,
    observer: &mut Option<Box<dyn Observer>>,
) -> std::io::Result<()> {
    match msg {
        Msg::Mark(m) => {
            w.mark_buffered(&m)?;
            *wrote_mark = true;
            if let Some(o) = observer.as_mut() {
                o.mark(&m);
            }
        }
        Msg::BadMark(b) => {
            let (via, recv, line, err) = *b;
            w.bad_mark(recv, via.name(), &line, &err.to_string())?;
        }
        Msg::Gap(g) => {
            let (t, src, reason) = *g;
            let name = source_name(infos, src).to_owned();
            match &reason {
                Some(r) => w.gap(t, &name, true, r)?,
                None => w.gap(t, &name, false, "")?,
            }
            if let Some(o) = observer.as_mut() {
                o.row(ObservedRow::Gap {
                    t_ns: t,
                    source: &name,
                    start: reason.is_some(),
                    reason: reason.as_deref().unwrap_or(""),
                });
            }
        }
        Msg::Dropped(t, src, n) => {
            let name = source_name(infos, src).to_owned();
            w.dropped(t, &name, n)?;
            if let Some(o) = observer.as_mut() {
                o.row(ObservedRow::Dropped {
                    t_ns: t,
                    source: &name,
                    count: n,
                });
            }
        }
        Msg::Event(e) => {
            let (t, label, text) = *e;
            w.event(t, &label, &text)?;
        }
        Msg::Stop | Msg::Drain => {}
    }
    Ok(())
}

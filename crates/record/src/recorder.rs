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

use crate::lane::{LaneReceiver, LaneSender, MarkSpec, PostError, lane};
use crate::marks::fifo::FifoReceiver;
use crate::marks::file::FileReceiver;
use crate::observe::{LiveThread, Observed, Observer, Observers};
use crate::queue::{ByteBoundedReceiver, ByteBoundedSender, TrySendError, byte_bounded};
use crate::sampler::{GroupStats, SamplerGroup, Sink, ThreadPlan, plan_threads};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded};
use flinch_core::channel::SourceInfo;
use flinch_core::clock::{Clock, WakeFlag};
use flinch_core::counter::{CounterStep, CounterTracker};
use flinch_core::error::{Error, Result, SourceError};
use flinch_core::marks::{
    Mark, MarkEvent, MarkParseError, MarkSink, MarkVia, format_mark, parse_mark,
};
use flinch_core::source::{Reading, Source};
use flinch_core::trace::{CutBack, Footer, Header, MarksInfo, TraceWriter, create_trace_file};
use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The finest sampling interval a recording takes. A tick of the sampler costs some 20 µs
/// of CPU (the synthetic source on the development VM, `docs/performance.md`) and the
/// fastest sensors update about every millisecond (RAPL; NVML's power buffer every 20 ms),
/// so polling faster measures nothing new and cannot keep its schedule: at 1 µs the
/// sampler missed 915 827 of its 1 000 000 ticks in a second.
pub const MIN_INTERVAL: Duration = Duration::from_millis(1);

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
    /// Sleep in two stages to each deadline (closer to it in a VM, at the cost of a second
    /// wake-up per poll).
    pub precise_sleep: bool,
    /// When the trace cannot be written (a full disk, a file-size limit), how long samples
    /// and marks are held in memory while the write is retried. Past this (or
    /// [`RecorderConfig::write_hold_bytes`]) the recording gives up
    /// ([`WriteTrouble::gave_up`]): the file then holds every whole row written before.
    pub write_hold: Duration,
    /// How much a failing trace may hold in memory.
    pub write_hold_bytes: usize,
    /// How often a failing write is retried.
    pub write_retry_interval: Duration,
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
            precise_sleep: false,
            write_hold: Duration::from_secs(30),
            write_hold_bytes: 64 << 20,
            write_retry_interval: Duration::from_secs(1),
        }
    }
}

/// Where the trace goes.
#[derive(Debug)]
#[non_exhaustive]
pub enum TraceTarget {
    /// A file to create (refused if it exists, unless [`RecordingSetup::force`]).
    File(PathBuf),
    /// An open stream: standard output, a pipe, a socket. `name` is what messages call it
    /// (`standard output`). When its reader goes away (`EPIPE`), the trace stops there and
    /// the recording goes on: [`Recorder::output_closed`] says so, and the caller decides
    /// whether to end it.
    Stream {
        /// What messages call it.
        name: String,
        /// The stream (written with plain blocking writes).
        out: File,
    },
    /// No trace: only observers see the recording.
    None,
}

impl TraceTarget {
    /// The trace on standard output (a duplicate of file descriptor 1, so nothing else
    /// written through `std::io::stdout()` shares a buffer with it).
    pub fn stdout() -> std::io::Result<Self> {
        use std::os::fd::AsFd;
        let fd = std::io::stdout().as_fd().try_clone_to_owned()?;
        Ok(TraceTarget::Stream {
            name: "standard output".into(),
            out: File::from(fd),
        })
    }

    /// The file path, when the trace goes to a file.
    pub fn path(&self) -> Option<&Path> {
        match self {
            TraceTarget::File(p) => Some(p),
            _ => None,
        }
    }

    /// What errors and messages call it.
    fn shown(&self) -> PathBuf {
        match self {
            TraceTarget::File(p) => p.clone(),
            TraceTarget::Stream { name, .. } => PathBuf::from(name),
            TraceTarget::None => PathBuf::from("(no trace)"),
        }
    }
}

/// What to record and where.
pub struct RecordingSetup {
    /// Where the trace goes.
    pub out: TraceTarget,
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
    /// Observers fed on the writer's thread ([`crate::observe`]).
    pub observers: Vec<Box<dyn Observer>>,
}

impl RecordingSetup {
    /// A setup with only an output path and sources.
    pub fn new(out: PathBuf, sources: Vec<Box<dyn Source>>) -> Self {
        RecordingSetup {
            out: TraceTarget::File(out),
            force: false,
            sources,
            marks_fifo: None,
            marks_file: None,
            argv: Vec::new(),
            command: Vec::new(),
            meta: BTreeMap::new(),
            idle: None,
            observers: Vec::new(),
        }
    }

    /// A setup that writes no trace: observers (an exporter) are the only output.
    pub fn without_trace(sources: Vec<Box<dyn Source>>) -> Self {
        RecordingSetup {
            out: TraceTarget::None,
            ..Self::new(PathBuf::new(), sources)
        }
    }
}

/// Where the trace writer writes: a file, a stream, or nowhere (a recording watched only
/// by observers).
#[non_exhaustive]
pub enum TraceOut {
    /// The trace file.
    File(File),
    /// A stream whose reader may go away: past `EPIPE` everything is discarded and
    /// `closed` is set (a closed pipe ends the trace, it is not a write error).
    Stream {
        /// The stream.
        out: File,
        /// Set once its reader has gone.
        closed: Arc<AtomicBool>,
    },
    /// No trace.
    Discard,
}

impl Write for TraceOut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            TraceOut::File(f) => f.write(buf),
            TraceOut::Stream { out, closed } => {
                if closed.load(Ordering::Relaxed) {
                    return Ok(buf.len());
                }
                match out.write(buf) {
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                        closed.store(true, Ordering::Release);
                        Ok(buf.len())
                    }
                    r => r,
                }
            }
            TraceOut::Discard => Ok(buf.len()),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            TraceOut::File(f) => f.flush(),
            TraceOut::Stream { .. } | TraceOut::Discard => Ok(()),
        }
    }
}

impl CutBack for TraceOut {
    fn cut_back(&mut self, len: u64) -> std::io::Result<bool> {
        match self {
            TraceOut::File(f) => f.cut_back(len),
            TraceOut::Stream { .. } | TraceOut::Discard => Ok(false),
        }
    }
}

impl TraceOut {
    /// Pushes a file's data to its disk (nothing for the others).
    fn sync(self) {
        if let TraceOut::File(f) = self {
            let _ = f.sync_all();
        }
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
    BadMark(Box<BadMarkMsg>),
    Gap(Box<GapMsg>),
    /// `count` readings of source number `source` were lost at `t_ns` (the sample queue
    /// was full).
    Dropped {
        t_ns: u64,
        source: u32,
        count: u64,
    },
    Event(Box<EventMsg>),
    /// The sample queue is a quarter full: write it out now.
    Drain,
    Stop,
}

/// A mark line that did not parse, as received.
struct BadMarkMsg {
    via: MarkVia,
    recv_ns: u64,
    line: String,
    error: MarkParseError,
}

/// A source stopped answering (`reason` given: the gap starts) or answers again (`None`:
/// the gap ends) at `t_ns`.
struct GapMsg {
    t_ns: u64,
    /// The source's index in the recording's source list.
    source: u32,
    reason: Option<String>,
}

/// An event row (`command_start`, `stale_marks_discarded`, ...).
struct EventMsg {
    t_ns: u64,
    label: String,
    text: String,
}

impl EventMsg {
    fn boxed(t_ns: u64, label: &str, text: String) -> Msg {
        Msg::Event(Box::new(EventMsg {
            t_ns,
            label: label.to_owned(),
            text,
        }))
    }
}

impl GapMsg {
    fn boxed(t_ns: u64, source: u32, reason: Option<String>) -> Msg {
        Msg::Gap(Box::new(GapMsg {
            t_ns,
            source,
            reason,
        }))
    }
}

/// A typical allocator's overhead per allocation, counted with every allocation a queued
/// item holds, so that a mark of a thousand tiny fields counts for what it costs.
const ALLOC: usize = 16;

/// About how much heap memory a mark's label and fields hold, in an allocation of
/// `boxed_bytes` (the box, `Arc` or struct that holds them), the label's buffer holding
/// `label_capacity` bytes: what a queued or posted mark counts against its queue's byte
/// budget.
pub(crate) fn mark_heap_bytes(
    boxed_bytes: usize,
    label_capacity: usize,
    fields: &Vec<(String, String)>,
) -> usize {
    let s = |x: &String| x.capacity() + ALLOC;
    boxed_bytes
        + ALLOC
        + label_capacity
        + ALLOC
        + fields.capacity() * std::mem::size_of::<(String, String)>()
        + ALLOC
        + fields.iter().map(|(k, v)| s(k) + s(v)).sum::<usize>()
}

/// About how much heap memory a queued message holds, for the queue's budget: every
/// allocation is counted with [`ALLOC`] of overhead.
fn msg_bytes(msg: &Msg) -> usize {
    let s = |x: &String| x.capacity() + ALLOC;
    std::mem::size_of::<(Msg, usize)>()
        + match msg {
            Msg::Mark(m) => {
                mark_heap_bytes(std::mem::size_of::<Mark>(), m.label.capacity(), &m.fields)
            }
            Msg::BadMark(b) => std::mem::size_of::<BadMarkMsg>() + ALLOC + s(&b.line) + 64,
            Msg::Gap(g) => std::mem::size_of::<GapMsg>() + ALLOC + g.reason.as_ref().map_or(0, s),
            Msg::Event(e) => std::mem::size_of::<EventMsg>() + ALLOC + s(&e.label) + s(&e.text),
            Msg::Dropped { .. } | Msg::Drain | Msg::Stop => 0,
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
            GapMsg::boxed(t_ns, source, error.map(|e| format!("{}: {}", e.kind, e))),
        );
    }
    fn dropped(&mut self, t_ns: u64, source: u32, count: u64) {
        send(
            &self.tx,
            Msg::Dropped {
                t_ns,
                source,
                count,
            },
        );
    }
    fn data_gap(&mut self, source: u32, gap: &flinch_core::source::DataGap) {
        let reason = format!("data-gap: {}", gap.reason);
        send(&self.tx, GapMsg::boxed(gap.start_ns, source, Some(reason)));
        send(&self.tx, GapMsg::boxed(gap.end_ns, source, None));
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
    /// While the trace cannot be written: what went wrong (see [`Recorder::write_trouble`]).
    pub write_trouble: std::sync::Mutex<Option<WriteTrouble>>,
}

/// The trace cannot be written at the moment (or could not, and the recording gave up).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteTrouble {
    /// The first error of this stretch, e.g. "No space left on device (os error 28)".
    pub error: String,
    /// When it began (monotonic ns).
    pub since_ns: u64,
    /// Bytes of rows held in memory, waiting for the file.
    pub held_bytes: u64,
    /// Retries that failed so far.
    pub retries: u64,
    /// The recording gave up: the hold time or memory ran out. It should be stopped; the
    /// file holds every whole row written before the failure.
    pub gave_up: bool,
}

/// Sends marks into a running recording from the same process. Never blocks: a full queue
/// drops the mark and says so.
#[derive(Clone)]
pub struct MarkSender {
    tx: ByteBoundedSender<Msg>,
    lane: LaneSender,
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

    /// Posts a mark stamped `t_ns` (`CLOCK_MONOTONIC`) on the in-process lane
    /// ([`crate::lane`]): no line formatted or parsed, nothing allocated, no system call,
    /// and the writer is not woken. It reaches the trace (and the observers) when the
    /// writer next wakes: at the latest at the next flush, at once when the lane fills a
    /// quarter or after [`MarkSender::request_flush`]. `Full`: the lane holds its most.
    pub fn post(&self, spec: &MarkSpec, t_ns: u64) -> Result<(), MarkSendError> {
        match self.lane.post(spec, t_ns) {
            Ok(false) => Ok(()),
            Ok(true) => {
                self.request_flush();
                Ok(())
            }
            Err(PostError::Full) => Err(MarkSendError::Full),
            Err(PostError::Closed) => Err(MarkSendError::Closed),
        }
    }

    /// Wakes the writer now: it writes what is queued (posted marks, samples) and hands it
    /// to the observers. Never waits (a full queue means the writer is awake already).
    pub fn request_flush(&self) {
        let msg = Msg::Drain;
        let bytes = msg_bytes(&msg);
        let _ = self.tx.try_send(msg, bytes);
    }
}

/// A running recording.
pub struct Recorder {
    tx: ByteBoundedSender<Msg>,
    lane: LaneSender,
    clock: Arc<dyn Clock>,
    stop: Arc<WakeFlag>,
    stop_timeout: Duration,
    /// Each sampler thread with the names of the sources it polls.
    samplers: Vec<(JoinHandle<GroupStats>, Vec<String>)>,
    writer: Option<JoinHandle<WriterOutcome>>,
    fifo: Option<FifoReceiver>,
    file: Option<FileReceiver>,
    stats: Arc<LiveStats>,
    start_ns: u64,
    out: Option<PathBuf>,
    /// What messages call the trace.
    shown: PathBuf,
    /// Set when a streamed trace's reader went away.
    output_closed: Arc<AtomicBool>,
    stopped: bool,
}

struct WriterOutcome {
    writer: TraceWriter<TraceOut>,
    error: Option<std::io::Error>,
    observers: Observers,
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
        if config.interval < MIN_INTERVAL {
            return Err(Error::Invalid(format!(
                "a sampling interval of {:?} is below the finest a recording takes ({:?}): \
                 no sensor updates that often, and the sampler cannot keep that schedule",
                config.interval, MIN_INTERVAL
            )));
        }
        let (tx, rx) = byte_bounded::<Msg>(config.marks_queue_bytes);
        let (lane_tx, lane_rx) = lane(config.marks_queue_bytes);
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
                    } => Msg::BadMark(Box::new(BadMarkMsg {
                        via,
                        recv_ns,
                        line,
                        error,
                    })),
                };
                // Blocking: a received mark is never dropped, and the queue is bounded by
                // memory; while it is full the reader stops reading, the pipe fills and
                // clients (which never block) drop and count instead.
                send(&tx, msg);
            })
        };
        let mut fifo = match &setup.marks_fifo {
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
                EventMsg::boxed(
                    clock.now_ns(),
                    "stale_marks_discarded",
                    format!(
                        "{bytes} bytes ({lines} lines) sent to an earlier recorder that stopped \
                         reading were waiting in the FIFO; discarded"
                    ),
                ),
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
        let out_path = setup.out.shown();
        let out_file_path = setup.out.path().map(Path::to_path_buf);
        let output_closed = Arc::new(AtomicBool::new(false));
        let out_file = match setup.out {
            TraceTarget::File(p) => {
                let f = create_trace_file(&p, setup.force)?;
                if let Some(Err(e)) = fifo.as_mut().map(|fifo| fifo.publish_trace(&p)) {
                    drop(f);
                    let _ = std::fs::remove_file(&p);
                    return Err(e);
                }
                TraceOut::File(f)
            }
            TraceTarget::Stream { out, .. } => TraceOut::Stream {
                out,
                closed: output_closed.clone(),
            },
            TraceTarget::None => TraceOut::Discard,
        };

        let infos: Vec<SourceInfo> = setup.sources.iter().map(|s| s.info().clone()).collect();
        let mut header = Header::new(
            config.interval.as_nanos() as u64,
            clock.anchor(),
            infos.clone(),
        );
        header.machine = Some(crate::host::describe_machine());
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
        .map_err(|e| Error::io("cannot write trace", &out_path, e))?;
        writer
            .anchor(header.start_anchor)
            .map_err(|e| Error::io("cannot write trace", &out_path, e))?;

        let plan = plan_threads(&setup.sources, config.interval);
        let threads: Vec<Arc<LiveThread>> = plan
            .iter()
            .map(|t| {
                Arc::new(LiveThread::new(
                    t.name.clone(),
                    t.interval.as_nanos() as u64,
                    t.sources
                        .iter()
                        .map(|&i| setup.sources[i].info().name.clone())
                        .collect(),
                ))
            })
            .collect();
        let mut observers = Observers::new(setup.observers);
        observers.each(|o| o.start(&header, &threads));

        let start_ns = clock.now_ns();
        let writer_thread = {
            let clock = clock.clone();
            let stats = stats.clone();
            let infos = infos.clone();
            let anchor_ns = config.anchor_interval.as_nanos() as u64;
            let queues = WriterQueues {
                data: data_rx,
                ctl: rx,
                lane: lane_rx,
                drain_asked: drain_asked.clone(),
            };
            let hold = HoldPolicy {
                hold_ns: config.write_hold.as_nanos() as u64,
                hold_bytes: config.write_hold_bytes,
                retry_ns: (config.write_retry_interval.as_nanos() as u64).max(1_000_000),
            };
            std::thread::Builder::new()
                .name("flinch-writer".into())
                .spawn(move || {
                    let env = WriterEnv {
                        clock,
                        stats,
                        infos,
                        anchor_interval_ns: anchor_ns,
                        hold,
                    };
                    writer_loop(writer, queues, env, observers)
                })
                .map_err(|e| Error::io("cannot start the writer thread for", &out_path, e))?
        };

        // Channel bases in source order.
        let mut bases = Vec::with_capacity(setup.sources.len());
        let mut next = 0u32;
        for s in &setup.sources {
            bases.push(next);
            next += s.info().channels.len() as u32;
        }
        let mut sources: Vec<Option<Box<dyn Source>>> =
            setup.sources.into_iter().map(Some).collect();
        let stop = Arc::new(WakeFlag::new());
        let mut samplers = Vec::new();
        for (
            ThreadPlan {
                name,
                slow,
                sources: members,
                ..
            },
            live,
        ) in plan.into_iter().zip(threads)
        {
            let sink = ChannelSink {
                data: data_tx.clone(),
                tx: tx.clone(),
                dropped: Arc::new(AtomicU64::new(0)),
                drain_asked: drain_asked.clone(),
                drain_at: config.queue_capacity.max(16) / 4,
            };
            let dropped = sink.dropped.clone();
            let mut group = SamplerGroup::new(config.interval, clock.clone(), sink)
                .with_name(&name)
                .with_precise_sleep(config.precise_sleep && !slow);
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
                .name(name)
                .spawn(move || {
                    live.set_current_thread();
                    let (gs, _) = group.run(&stop);
                    stats
                        .dropped
                        .fetch_add(dropped.load(Ordering::Relaxed), Ordering::Relaxed);
                    gs
                })
                .map_err(|e| Error::io("cannot start a sampler thread for", &out_path, e))?;
            samplers.push((h, names));
        }
        Ok(Recorder {
            tx,
            lane: lane_tx,
            clock,
            stop,
            stop_timeout: config.stop_timeout,
            samplers,
            writer: Some(writer_thread),
            fifo,
            file,
            stats,
            start_ns,
            out: out_file_path,
            shown: out_path,
            output_closed,
            stopped: false,
        })
    }

    /// A handle for sending marks from this process.
    pub fn mark_sender(&self) -> MarkSender {
        MarkSender {
            tx: self.tx.clone(),
            lane: self.lane.clone(),
            clock: self.clock.clone(),
        }
    }

    /// Writes an event row (e.g. `command_start`).
    pub fn event(&self, label: &str, text: &str) {
        send(
            &self.tx,
            EventMsg::boxed(self.clock.now_ns(), label, text.to_owned()),
        );
    }

    /// Live counters.
    pub fn stats(&self) -> &LiveStats {
        &self.stats
    }

    /// `Some` while the trace cannot be written (rows are held in memory and the write
    /// retried), or after the recording gave up on it; `None` while all is well.
    pub fn write_trouble(&self) -> Option<WriteTrouble> {
        self.stats
            .write_trouble
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Nanoseconds since the recording started.
    pub fn elapsed_ns(&self) -> u64 {
        self.clock.now_ns().saturating_sub(self.start_ns)
    }

    /// The trace path (`None`: no trace file is written).
    pub fn out(&self) -> Option<&Path> {
        self.out.as_deref()
    }

    /// Whether the reader of a streamed trace ([`TraceTarget::Stream`]) went away: the
    /// trace ended there (without its footer) while the recording goes on.
    pub fn output_closed(&self) -> bool {
        self.output_closed.load(Ordering::Acquire)
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
        self.stop.set();
        let mut cadences = Vec::new();
        let mut threads = Vec::new();
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
                Ok(gs) => {
                    cadences.extend(gs.cadences);
                    threads.push(gs.thread);
                }
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
        // Every post that succeeded is in the lane before the writer sees Stop.
        self.lane.close();
        send(&self.tx, Msg::Stop);
        let outcome = self
            .writer
            .take()
            .and_then(|h| h.join().ok())
            .ok_or_else(|| Error::Invalid("the trace writer thread panicked".into()))?;
        let mut w = outcome.writer;
        let footer = Footer {
            complete: true,
            ended_by: ended_by.to_owned(),
            end_anchor: self.clock.anchor(),
            dropped_readings: self.stats.dropped.load(Ordering::Relaxed),
            cadences,
            threads,
            command_exit,
            ..Default::default()
        };
        let finished = match outcome.error {
            Some(e) => Err(e),
            None => w
                .anchor(footer.end_anchor)
                .and_then(|()| w.write_footer(footer.clone())),
        };
        let footer = Footer {
            samples: w.samples(),
            marks: w.marks(),
            bad_marks: w.bad_marks(),
            gaps: w.gaps(),
            ..footer
        };
        // Observers (an exporter's last push) see the end whatever became of the file.
        let mut observers = outcome.observers;
        observers.each(|o| o.finish(&footer));
        if let Err(e) = finished {
            // Whatever could not be written is lost now: say how much, and leave a file
            // that reads cleanly up to its last whole row.
            let lost = w.pending_bytes();
            let kept = w.cut_to_last_row().unwrap_or(w.written_bytes());
            w.into_inner().sync();
            return Err(Error::Invalid(format!(
                "writing {} failed: {e}; {lost} bytes of rows held in memory are lost, and the \
                 file keeps the {kept} bytes written before, readable up to there",
                self.shown.display()
            )));
        }
        w.into_inner().sync();
        Ok(footer)
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
    lane: LaneReceiver,
    drain_asked: Arc<AtomicBool>,
}

/// How long the writer holds rows in memory when the trace cannot be written.
struct HoldPolicy {
    hold_ns: u64,
    hold_bytes: usize,
    retry_ns: u64,
}

/// The writer's state when writes fail: the first error, held until a retry succeeds or the
/// hold runs out.
struct Failing {
    error: std::io::Error,
    since_ns: u64,
    next_retry_ns: u64,
    retries: u64,
}

fn publish_trouble(stats: &LiveStats, t: Option<WriteTrouble>) {
    *stats
        .write_trouble
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = t;
}

/// What the writer thread works with besides the trace and its queues.
struct WriterEnv {
    clock: Arc<dyn Clock>,
    stats: Arc<LiveStats>,
    infos: Vec<SourceInfo>,
    anchor_interval_ns: u64,
    hold: HoldPolicy,
}

fn writer_loop(
    mut w: TraceWriter<TraceOut>,
    q: WriterQueues,
    env: WriterEnv,
    mut observers: Observers,
) -> WriterOutcome {
    let WriterQueues {
        data,
        ctl,
        lane,
        drain_asked,
    } = q;
    // The next message: marks posted on the lane first, then the control queue's.
    let next = || {
        lane.try_recv()
            .map(|m| Msg::Mark(Box::new(m)))
            .or_else(|| ctl.try_recv())
    };
    let WriterEnv {
        clock,
        stats,
        infos,
        anchor_interval_ns,
        hold,
    } = env;
    let mut chans = ChannelState::new(&infos);
    let mut next_anchor = clock.now_ns() + anchor_interval_ns;
    // Writes failing: rows are held in memory (`w` holding) and retried.
    let mut failing: Option<Failing> = None;
    // Given up: nothing more is written; the queues are still emptied so that nobody
    // waits on them.
    let mut gave_up: Option<std::io::Error> = None;
    let mut stopping = false;
    // Readings as the observers get them, one batch per drain (reused).
    let mut observed: Vec<Observed> = Vec::new();
    // When the observers want the queued readings next (`Observer::next_wake_ns`).
    let mut observers_due = u64::MAX;
    loop {
        let now = clock.now_ns();
        if !observers.is_empty() {
            observers_due = observers.next_wake_ns(now);
        }
        let mut due = w.next_flush_ns().min(next_anchor);
        if let Some(f) = &failing {
            due = f.next_retry_ns;
        }
        let wait = due.min(observers_due).saturating_sub(now).max(1_000_000);
        // Posted marks left over from a full batch are taken at once.
        let first = if stopping || !lane.is_empty() {
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
        // The first error of a write; later ones of the same stretch only count.
        let mut errors: Option<std::io::Error> = None;
        let mut wrote_mark = false;
        let mut drain = false;
        let mut batch = 0;
        lane.draining();
        let mut next_msg = first.or_else(next);
        while let Some(msg) = next_msg {
            if matches!(msg, Msg::Stop) {
                stopping = true;
            } else if matches!(msg, Msg::Drain) {
                drain = true;
            } else {
                // Observers see everything, whatever becomes of the file.
                let keep = !observers.is_empty();
                if keep {
                    observe(&mut observers, &msg, &infos);
                }
                if gave_up.is_none() {
                    if let Msg::Gap(g) = &msg
                        && g.reason.is_some()
                    {
                        // A source stopped answering: what it read before is written first,
                        // held readings included, so its data reaches the gap.
                        if let Err(e) =
                            drain_samples(&mut w, &data, &mut chans, true, keep, &mut observed)
                                .and_then(|()| chans.flush_source(&mut w, g.source as usize))
                        {
                            errors.get_or_insert(e);
                        }
                    }
                    if let Err(e) = handle(&mut w, msg, &infos, &mut wrote_mark) {
                        errors.get_or_insert(e);
                    }
                }
            }
            batch += 1;
            next_msg = if batch < 4096 || stopping {
                next()
            } else {
                None
            };
        }
        let now = clock.now_ns();
        if stopping
            || drain
            || wrote_mark
            || now >= w.next_flush_ns()
            || now >= observers_due
            || failing.is_some()
        {
            // Samples reach the file here: when a flush is due, with a mark, when the
            // queue filled a quarter, when an observer asked for them, and at the end (and
            // into memory while failing).
            drain_asked.store(false, Ordering::Release);
            let keep = !observers.is_empty();
            if let Err(e) = drain_samples(
                &mut w,
                &data,
                &mut chans,
                gave_up.is_none(),
                keep,
                &mut observed,
            ) {
                errors.get_or_insert(e);
            }
            if keep {
                observers.each(|o| o.readings(&observed));
                observers.each(|o| o.flushed(now));
                observed.clear();
            }
            for (name, why) in std::mem::take(&mut observers.panicked) {
                if gave_up.is_none()
                    && let Err(e) = w.event(
                        now,
                        "observer_panicked",
                        &format!("{name} panicked and was dropped: {why}"),
                    )
                {
                    errors.get_or_insert(e);
                }
            }
        }
        if gave_up.is_none() {
            let r = (|| -> std::io::Result<()> {
                if now >= next_anchor {
                    w.anchor(clock.anchor())?;
                    next_anchor = now + anchor_interval_ns;
                }
                match &failing {
                    // A retry (or the last try, when stopping).
                    Some(f) if stopping || now >= f.next_retry_ns => w.flush(),
                    Some(_) => Ok(()),
                    None if wrote_mark => w.flush(),
                    None => w.maybe_flush().map(|_| ()),
                }
            })();
            match (r, errors.take()) {
                (Ok(()), None) => {
                    if failing.is_some() && w.pending_bytes() == 0 {
                        let f = failing.take().expect("failing");
                        w.set_holding(false);
                        publish_trouble(&stats, None);
                        let text = format!(
                            "the trace could not be written for {:.1} s ({}); the rows held in \
                             memory meanwhile are all written",
                            now.saturating_sub(f.since_ns) as f64 / 1e9,
                            f.error
                        );
                        if let Err(e) = w
                            .event(now, "write_recovered", &text)
                            .and_then(|()| w.flush())
                        {
                            // Failing again at once.
                            w.set_holding(true);
                            failing = Some(Failing {
                                error: e,
                                since_ns: now,
                                next_retry_ns: now + hold.retry_ns,
                                retries: 0,
                            });
                        }
                    }
                }
                (r, e) => {
                    let e = e.or(r.err()).expect("one of them failed");
                    match &mut failing {
                        Some(f) => {
                            f.retries += 1;
                            f.next_retry_ns = now + hold.retry_ns;
                        }
                        None => {
                            w.set_holding(true);
                            failing = Some(Failing {
                                error: e,
                                since_ns: now,
                                next_retry_ns: now + hold.retry_ns,
                                retries: 0,
                            });
                        }
                    }
                }
            }
            if let Some(f) = &failing {
                let out_of_time = now.saturating_sub(f.since_ns) >= hold.hold_ns;
                let out_of_room = w.pending_bytes() > hold.hold_bytes;
                let give_up = out_of_time || out_of_room || stopping;
                publish_trouble(
                    &stats,
                    Some(WriteTrouble {
                        error: f.error.to_string(),
                        since_ns: f.since_ns,
                        held_bytes: w.pending_bytes() as u64,
                        retries: f.retries,
                        gave_up: give_up,
                    }),
                );
                if give_up {
                    let f = failing.take().expect("failing");
                    gave_up = Some(f.error);
                }
            }
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
    // The last held readings (the value each channel kept until the end), then the flush.
    let error = match gave_up {
        Some(e) => Some(e),
        None => chans.flush_all(&mut w).and_then(|()| w.flush()).err(),
    };
    WriterOutcome {
        writer: w,
        error,
        observers,
    }
}

/// Hands a control message to the observers (before the writer consumes it).
fn observe(observers: &mut Observers, msg: &Msg, infos: &[SourceInfo]) {
    match msg {
        Msg::Mark(m) => observers.each(|o| o.mark(m)),
        Msg::BadMark(b) => observers.each(|o| o.bad_mark(b.via, b.recv_ns, &b.error)),
        Msg::Gap(g) => {
            let name = source_name(infos, g.source);
            observers.each(|o| o.gap(g.t_ns, name, g.reason.as_deref()));
        }
        Msg::Dropped {
            t_ns,
            source,
            count,
        } => {
            let name = source_name(infos, *source);
            observers.each(|o| o.dropped(*t_ns, name, *count));
        }
        Msg::Event(e) => observers.each(|o| o.event(e.t_ns, &e.label, &e.text)),
        Msg::Drain | Msg::Stop => {}
    }
}

/// What the writer keeps per channel: the counter arithmetic of counters, and for channels
/// whose repeated readings are elided ([`flinch_core::channel::ChannelSpec::heartbeat_ns`]) the
/// last row written and the last reading held back.
struct ChannelState {
    counters: Vec<Option<CounterTracker>>,
    holds: Vec<Option<Hold>>,
    /// Each source's first channel index, and one past its last.
    sources: Vec<(usize, usize)>,
}

struct Hold {
    heartbeat_ns: u64,
    /// Time and value of the last row written.
    written: Option<(u64, f64)>,
    /// A reading equal to the last row, not written (yet), with its counter step.
    pending: Option<(Reading, Option<CounterStep>)>,
}

impl ChannelState {
    fn new(infos: &[SourceInfo]) -> Self {
        let specs = || infos.iter().flat_map(|s| s.channels.iter());
        let mut sources = Vec::with_capacity(infos.len());
        let mut next = 0;
        for s in infos {
            sources.push((next, next + s.channels.len()));
            next += s.channels.len();
        }
        ChannelState {
            counters: specs()
                .map(|c| {
                    c.counter_spec()
                        .map(|spec| CounterTracker::new(*spec, c.update_period_ns))
                })
                .collect(),
            holds: specs()
                .map(|c| {
                    c.heartbeat_ns.map(|hb| Hold {
                        heartbeat_ns: hb,
                        written: None,
                        pending: None,
                    })
                })
                .collect(),
            sources,
        }
    }

    /// What a reading's step meant for its counter channel (`None` for a gauge), from the
    /// recording's one tracker per channel: taken for every reading, in arrival order,
    /// whether it is written, held back, or not written at all.
    fn step(&mut self, r: &Reading) -> Option<CounterStep> {
        match self.counters.get_mut(r.channel as usize) {
            Some(Some(tracker)) => Some(tracker.update(r.t_ns, r.value)),
            _ => None,
        }
    }

    /// Writes a reading, or holds it back when it repeats the last row of a channel that
    /// elides repeats: the held reading is written when the value changes (so the change is
    /// bracketed by two real readings), as a heartbeat, at a gap, or at the end.
    fn sample<W: std::io::Write>(
        &mut self,
        w: &mut TraceWriter<W>,
        r: &Reading,
        step: Option<CounterStep>,
    ) -> std::io::Result<()> {
        let Some(Some(h)) = self.holds.get_mut(r.channel as usize) else {
            return write_row(w, r, step);
        };
        match h.written {
            Some((t, v)) if v == r.value && r.t_ns.saturating_sub(t) < h.heartbeat_ns => {
                h.pending = Some((*r, step));
                Ok(())
            }
            Some((_, v)) if v == r.value => {
                // A heartbeat.
                h.pending = None;
                h.written = Some((r.t_ns, r.value));
                write_row(w, r, step)
            }
            _ => {
                let held = h.pending.take();
                h.written = Some((r.t_ns, r.value));
                let first = match held {
                    Some((p, ps)) => write_row(w, &p, ps),
                    None => Ok(()),
                };
                first.and(write_row(w, r, step))
            }
        }
    }

    fn flush_channel<W: std::io::Write>(
        &mut self,
        w: &mut TraceWriter<W>,
        ch: usize,
    ) -> std::io::Result<()> {
        if let Some(Some(h)) = self.holds.get_mut(ch)
            && let Some((p, ps)) = h.pending.take()
        {
            h.written = Some((p.t_ns, p.value));
            write_row(w, &p, ps)?;
        }
        Ok(())
    }

    fn flush_source<W: std::io::Write>(
        &mut self,
        w: &mut TraceWriter<W>,
        source: usize,
    ) -> std::io::Result<()> {
        if let Some(&(a, b)) = self.sources.get(source) {
            for ch in a..b {
                self.flush_channel(w, ch)?;
            }
        }
        Ok(())
    }

    fn flush_all<W: std::io::Write>(&mut self, w: &mut TraceWriter<W>) -> std::io::Result<()> {
        for ch in 0..self.holds.len() {
            self.flush_channel(w, ch)?;
        }
        Ok(())
    }
}

/// Takes every queued reading: its counter step, its row (when `write`: not once the trace
/// was given up), and, when `keep`, a copy with its step for the observers. Returns the
/// first write error; the rows go on being appended (they stay buffered, whole).
fn drain_samples(
    w: &mut TraceWriter<TraceOut>,
    data: &Receiver<Reading>,
    chans: &mut ChannelState,
    write: bool,
    keep: bool,
    observed: &mut Vec<Observed>,
) -> std::io::Result<()> {
    let mut first_error = None;
    while let Ok(r) = data.try_recv() {
        let counter = chans.step(&r);
        if write && let Err(e) = chans.sample(w, &r, counter) {
            first_error.get_or_insert(e);
        }
        if keep {
            observed.push(Observed {
                reading: r,
                counter,
            });
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Writes a sample and, for a counter step that needs one, its reset or flag row. A write
/// error (the rows stay buffered, whole) does not keep the second row out.
fn write_row<W: std::io::Write>(
    w: &mut TraceWriter<W>,
    r: &Reading,
    step: Option<CounterStep>,
) -> std::io::Result<()> {
    let first = w.sample(r);
    let second = match step {
        Some(CounterStep::Reset { from, to }) => w.reset(r.t_ns, r.channel, from, to),
        Some(CounterStep::Implausible { delta, limit }) => w.flag(
            r.t_ns,
            r.channel,
            r.value,
            "implausible",
            &format!("step {delta} exceeds the plausible maximum {limit}"),
        ),
        Some(CounterStep::OutOfRange { value }) => w.flag(
            r.t_ns,
            r.channel,
            value,
            "out-of-range",
            "below zero or above the wrap range",
        ),
        Some(CounterStep::First | CounterStep::Delta { .. }) | None => Ok(()),
    };
    first.and(second)
}

fn source_name(infos: &[SourceInfo], i: u32) -> &str {
    infos
        .get(i as usize)
        .map(|s| s.name.as_str())
        .unwrap_or("?")
}

fn handle(
    w: &mut TraceWriter<TraceOut>,
    msg: Msg,
    infos: &[SourceInfo],
    wrote_mark: &mut bool,
) -> std::io::Result<()> {
    match msg {
        Msg::Mark(m) => {
            w.mark_buffered(&m)?;
            *wrote_mark = true;
        }
        Msg::BadMark(b) => {
            w.bad_mark(b.recv_ns, b.via.name(), &b.line, &b.error.to_string())?;
        }
        Msg::Gap(g) => {
            let name = source_name(infos, g.source);
            match &g.reason {
                Some(r) => w.gap(g.t_ns, name, true, r)?,
                None => w.gap(g.t_ns, name, false, "")?,
            }
        }
        Msg::Dropped {
            t_ns,
            source,
            count,
        } => {
            let name = source_name(infos, source);
            w.dropped(t_ns, name, count)?;
        }
        Msg::Event(e) => {
            w.event(e.t_ns, &e.label, &e.text)?;
        }
        Msg::Stop | Msg::Drain => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flinch_core::channel::{ChannelSpec, PowerMethod};
    use flinch_core::clock::ManualClock;
    use flinch_core::integrate::integrate_gauge;
    use flinch_core::trace::read_trace_from;
    use proptest::prelude::*;

    fn infos(heartbeat_ns: Option<u64>) -> Vec<SourceInfo> {
        let mut c = ChannelSpec::power("gpu0", "p", PowerMethod::Instant);
        c.heartbeat_ns = heartbeat_ns;
        vec![SourceInfo::new("s", "test", flinch_core::DeviceClass::Gpu).with_channels(vec![c])]
    }

    /// Writes `(t, value)` readings of one channel (with a `gap` before reading `gap_at`
    /// when given) and reads back what the trace holds.
    fn write_and_read(
        heartbeat_ns: Option<u64>,
        readings: &[(u64, f64)],
        gap_at: Option<usize>,
    ) -> Vec<(u64, f64)> {
        let infos = infos(heartbeat_ns);
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(0, 0));
        let header = Header::new(10_000_000, clock.anchor(), infos.clone());
        let mut w = TraceWriter::new(Vec::new(), &header, clock, 1_000_000_000).unwrap();
        let mut st = ChannelState::new(&infos);
        for (i, &(t_ns, value)) in readings.iter().enumerate() {
            if gap_at == Some(i) {
                st.flush_source(&mut w, 0).unwrap();
                w.gap(t_ns - 1, "s", true, "gone").unwrap();
            }
            let r = Reading {
                channel: 0,
                t_ns,
                value,
            };
            let step = st.step(&r);
            st.sample(&mut w, &r, step).unwrap();
        }
        st.flush_all(&mut w).unwrap();
        let bytes = w.finish(Footer::default()).unwrap();
        let t = read_trace_from(&bytes[..], std::path::Path::new("t")).unwrap();
        let ch = t.channel("gpu0.p").unwrap();
        ch.t_ns
            .iter()
            .copied()
            .zip(ch.values.iter().copied())
            .collect()
    }

    const MS: u64 = 1_000_000;

    #[test]
    fn repeats_are_written_at_a_change_as_a_heartbeat_and_at_the_end() {
        // 10 ms polls: 5 W for 40 ms, 7 W for 1.5 s, then 9 W twice.
        let mut r: Vec<(u64, f64)> = (0..4).map(|i| (i * 10 * MS, 5.0)).collect();
        r.extend((4..154).map(|i| (i * 10 * MS, 7.0)));
        r.extend([(1540 * MS, 9.0), (1550 * MS, 9.0)]);
        let rows = write_and_read(Some(1000 * MS), &r, None);
        assert_eq!(
            rows,
            vec![
                (0, 5.0),
                (30 * MS, 5.0),   // the last 5 W before the change
                (40 * MS, 7.0),   // the change
                (1040 * MS, 7.0), // a heartbeat, a second after the last row
                (1530 * MS, 7.0), // the last 7 W before the change
                (1540 * MS, 9.0), // the change
                (1550 * MS, 9.0), // held to the end
            ]
        );
        // Without a heartbeat every reading is written.
        assert_eq!(write_and_read(None, &r, None).len(), r.len());
    }

    #[test]
    fn a_gap_writes_the_held_reading_first() {
        let r: Vec<(u64, f64)> = (0..10).map(|i| (i * 10 * MS, 5.0)).collect();
        let rows = write_and_read(Some(1000 * MS), &r, Some(6));
        // held 5 W up to the last reading before the gap, then again after it to the end
        assert_eq!(rows, vec![(0, 5.0), (50 * MS, 5.0), (90 * MS, 5.0)]);
    }

    proptest! {
        /// What analysis computes from a channel — the integral over any window, and the
        /// distinct updates inside it — is the same whether repeats were elided or not.
        #[test]
        fn elided_repeats_change_no_integral_and_no_update_count(
            steps in proptest::collection::vec((0u8..4, 1u64..40), 2..60),
            windows in proptest::collection::vec((0.0f64..1.0, 0.0f64..1.0), 1..20),
        ) {
            // A polled gauge: runs of equal values, one reading every 10 ms.
            let mut r = Vec::new();
            let mut t = 0;
            for (v, n) in steps {
                for _ in 0..n {
                    r.push((t, v as f64 * 10.0));
                    t += 10 * MS;
                }
            }
            let dense = write_and_read(None, &r, None);
            let held = write_and_read(Some(250 * MS), &r, None);
            prop_assert!(held.len() <= dense.len());
            let split = |v: &[(u64, f64)]| -> (Vec<u64>, Vec<f64>) { v.iter().copied().unzip() };
            let (td, vd) = split(&dense);
            let (th, vh) = split(&held);
            let end = *td.last().unwrap();
            for (a, b) in windows {
                let (a, b) = ((a.min(b) * end as f64) as u64, (a.max(b) * end as f64) as u64);
                let d = integrate_gauge(&td, &vd, a, b).unwrap();
                let h = integrate_gauge(&th, &vh, a, b).unwrap();
                prop_assert!((d.integral - h.integral).abs() <= 1e-9 * d.integral.abs().max(1.0),
                    "window {a}..{b}: {} vs {}", d.integral, h.integral);
                prop_assert_eq!(d.changes_inside, h.changes_inside);
            }
        }
    }
}

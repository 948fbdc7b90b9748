//! `analyze` as the trace streams by: rows read once, spans measured as soon as every
//! sensor has covered them, in memory that depends on the channels and on the spans open at
//! once, not on the trace's length.
//!
//! # How
//!
//! The reader ([`TraceStream`]) hands over rows in file order, parsed on all cores. Rows are
//! in the order they were *written*, not in time order: the recorder writes a mark the
//! moment it arrives but drains samples about once a second, and the NVML driver's power
//! buffer delivers samples up to ~2.5 s after their stamps. So:
//!
//! - **Marks** wait in a small queue and are paired ([`Pairer`]) in time order once the
//!   trace has moved [`StreamConfig::horizon_ns`] past them (10 s, or twice the latest
//!   row seen so far if that is more), so a mark stamped earlier but written later still
//!   pairs as in a whole-trace reading.
//! - **A span is measured** once every channel has a sample after its end (a channel's
//!   samples come in time order in the file; if one ever comes out of order, that channel
//!   waits by as much from then on), or, for a channel that has gone silent, once the
//!   trace has moved the horizon past the span's end.
//! - **Samples are let go** below the oldest point a span can still start from (the
//!   oldest open start mark, the oldest span not yet measured, the marks still queued),
//!   keeping the last one before it, which the integrator's edge interpolation needs. So
//!   a span is measured from exactly the samples a whole-trace reading would give it, and
//!   its numbers are the same to the bit ([`crate::Analyzer::span`] measures it, over the
//!   samples in memory).
//! - A start mark can stay open for hours (a `to` mark that never came, or `--from X --to
//!   X` leaving each request's last mark open). Memory does not wait for it: samples older
//!   than [`StreamConfig::hot_ns`] are let go anyway, and a span that starts before the
//!   samples in memory is measured from the file again: the reader keeps a checkpoint
//!   (offset, line, and each channel's latest sample) every
//!   [`StreamConfig::checkpoint_bytes`], and reads the stretch since the last checkpoint
//!   before the span's start once more.
//!
//! Spans are measured in parallel (rayon), a batch at a time, and handed to a
//! [`SpanSink`] as they are measured, with their place in start order, so an output can be
//! written in start order with only the spans that overtook an older one held back.

use crate::aggregate::{Aggregator, StretchPart};
use crate::analyzer::Analyzer;
use crate::idle::IdleProfile;
use crate::measure::Near;
use crate::pairing::{Paired, Pairer};
use crate::report::{IdleUsed, SpanReport, Summary, UnmatchedMark};
use crate::summary::{SpanFigures, SummaryBuilder};
use crate::thresholds::Thresholds;
use crate::window::{MarkIndex, WindowEdge, describe_label_counts, resolve_window};
use flinch_core::error::{Error, Result};
use flinch_core::marks::Mark;
use flinch_core::trace::stream::{BLOCK_BYTES, OtherRow, RowBatch, TraceBuilder, TraceStream};
use flinch_core::trace::{Header, Trace};
use rayon::prelude::*;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// How far the streaming analysis looks back and ahead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamConfig {
    /// Rows may be written up to this long after rows stamped later (at least; twice the
    /// latest row seen is used when more).
    pub horizon_ns: u64,
    /// Samples older than this (behind the latest row) are let go even while a span that
    /// may need them is open; such a span is measured by reading the file again.
    pub hot_ns: u64,
    /// Bytes of the trace read and parsed at a time.
    pub chunk_bytes: usize,
    /// A checkpoint to read the file again from, every this many bytes.
    pub checkpoint_bytes: u64,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            horizon_ns: 10_000_000_000,
            hot_ns: 60_000_000_000,
            chunk_bytes: 8 << 20,
            checkpoint_bytes: 32 << 20,
        }
    }
}

/// A span's place in start order: its start mark's time and its index among all marks in
/// time order.
pub type SpanKey = (u64, u64);

/// Where measured spans go.
pub trait SpanSink: Sync {
    /// What a report becomes (made on worker threads, in parallel).
    type Item: Send;
    /// Turns a report into what the sink keeps (called on worker threads, in parallel,
    /// so that costly work and dropping what is not kept happen there).
    fn prepare(&self, key: SpanKey, report: SpanReport) -> Self::Item;
    /// What the sink keeps of a span whose report it does not need (a table showing
    /// only the first spans, say), or `None` (the default) to have the report. Asked on
    /// worker threads before the span is measured; for `Some`, only what the summary
    /// takes is measured ([`Analyzer::span_figures`]: the same numbers, at a fraction of
    /// the cost), and the item goes to [`SpanSink::span`] as is.
    fn without_report(&self, key: SpanKey) -> Option<Self::Item> {
        let _ = key;
        None
    }
    /// A span, as it is measured (not in start order).
    fn span(&mut self, key: SpanKey, item: Self::Item) -> Result<()>;
    /// No span with a key below `key` will come any more.
    fn settled(&mut self, key: SpanKey) -> Result<()>;
}

/// Everything about an analysis but its spans.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// The trace file.
    pub trace: String,
    /// The start label.
    pub from: String,
    /// The end label.
    pub to: String,
    /// The idle profile used.
    pub idle: Option<IdleUsed>,
    /// The thresholds used.
    pub thresholds: Thresholds,
    /// Things to know.
    pub warnings: Vec<String>,
    /// Marks that did not pair, in time order.
    pub unmatched: Vec<UnmatchedMark>,
    /// Over all spans.
    pub summary: Summary,
    /// How the streaming went.
    pub stats: StreamStats,
}

/// How a streaming analysis went: what it held and what it read again.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// Spans measured.
    pub spans: usize,
    /// Spans that started before the samples in memory, measured from the file read again.
    pub reread_spans: usize,
    /// Times the file was read again (once for all such spans of a batch).
    pub rereads: usize,
    /// The most samples held in memory at once (all channels).
    pub peak_samples: usize,
    /// The most marks open at once.
    pub peak_open_marks: usize,
}

/// A trace opened for streaming: its header is known.
pub struct SpanStream {
    path: PathBuf,
    len: u64,
    stream: TraceStream<BufReader<File>>,
    config: StreamConfig,
}

fn open_file(path: &Path) -> Result<(File, u64)> {
    let f = File::open(path).map_err(|e| Error::io("cannot open trace", path, e))?;
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    Ok((f, len))
}

/// The horizon in force: the configured one, or twice the latest row seen.
fn horizon(config: &StreamConfig, lateness: u64) -> u64 {
    config.horizon_ns.max(lateness.saturating_mul(2))
}

/// Samples per channel, kept from a floor on, with what the streaming needs to know about
/// each channel: the latest sample time, how far its samples ever came out of order.
struct Window {
    b: TraceBuilder,
    /// Latest sample time per channel (`None`: no sample yet).
    wm: Vec<Option<u64>>,
    /// How far a channel's samples came out of order, at most.
    inv: Vec<u64>,
    /// The latest sample (by time, ties: the later row) of each channel: a checkpoint's
    /// carry.
    last: Vec<Option<(u64, f64)>>,
    /// Per channel: the last sample time below the floor when samples were last let go.
    below_floor: Vec<Option<u64>>,
    /// Samples below this were let go (the hot floor, never lowered).
    let_go_below: u64,
    /// The latest sample or mark time read.
    max_t: u64,
    /// How far behind `max_t` a row ever came.
    lateness: u64,
    /// Marks read, in file order (not yet released).
    marks_read: u64,
    labels: BTreeMap<String, usize>,
    /// Trace range for messages: earliest and latest sample or mark time.
    range: Option<(u64, u64)>,
    /// Channels whose samples came out of order after spans were measured over them.
    reordered_late: BTreeSet<String>,
    /// The widest spacing between consecutive samples of each channel (capped).
    spacing: Vec<u64>,
}

impl Window {
    fn new(header: Header, path: &Path) -> Self {
        let b = TraceBuilder::new(header, path);
        let n = b.trace().channels.len();
        Window {
            b,
            wm: vec![None; n],
            inv: vec![0; n],
            last: vec![None; n],
            below_floor: vec![None; n],
            let_go_below: 0,
            max_t: 0,
            lateness: 0,
            marks_read: 0,
            labels: BTreeMap::new(),
            range: None,
            reordered_late: BTreeSet::new(),
            spacing: vec![0; n],
        }
    }

    /// How far beyond a span's edges measuring it reads samples (see
    /// [`Analyzer::reach_ns`]); a channel's spacing counts up to `cap`.
    fn reach(&self, a: &Analyzer<'_>, cap: u64) -> u64 {
        a.reach_ns(&|i| self.spacing[i].min(cap))
    }

    fn see(&mut self, t: u64) {
        if t < self.max_t {
            self.lateness = self.lateness.max(self.max_t - t);
        } else {
            self.max_t = t;
        }
        self.range = Some(match self.range {
            None => (t, t),
            Some((lo, hi)) => (lo.min(t), hi.max(t)),
        });
    }

    /// Adds a batch; its marks go to `marks` with their file-order number.
    fn push(&mut self, batch: RowBatch, marks: &mut Vec<(u64, Mark)>, measured_to: u64) {
        // `see` for each sample, with the fields it touches borrowed once for the batch.
        let Window {
            b,
            wm,
            inv,
            last,
            spacing,
            let_go_below,
            reordered_late,
            max_t,
            lateness,
            range,
            ..
        } = self;
        let channels = &mut b.trace_mut().channels;
        let (mut lo, mut hi) = range.unwrap_or((u64::MAX, 0));
        for s in &batch.samples {
            let i = s.channel as usize;
            let (t, v) = (s.t_ns, s.value);
            if t < *max_t {
                *lateness = (*lateness).max(*max_t - t);
            } else {
                *max_t = t;
            }
            (lo, hi) = (lo.min(t), hi.max(t));
            let ch = &mut channels[i];
            match ch.t_ns.last() {
                Some(&l) if t < l => {
                    inv[i] = inv[i].max(l - t);
                    if t <= measured_to || t < *let_go_below {
                        reordered_late.insert(ch.spec.name.clone());
                    }
                    let p = ch.t_ns.partition_point(|&x| x <= t);
                    ch.t_ns.insert(p, t);
                    ch.values.insert(p, v);
                }
                Some(&l) => {
                    spacing[i] = spacing[i].max(t - l);
                    ch.t_ns.push(t);
                    ch.values.push(v);
                }
                None => {
                    ch.t_ns.push(t);
                    ch.values.push(v);
                }
            }
            wm[i] = Some(wm[i].map_or(t, |w| w.max(t)));
            if last[i].is_none_or(|(lt, _)| t >= lt) {
                last[i] = Some((t, v));
            }
        }
        if !batch.samples.is_empty() {
            *range = Some((lo, hi));
        }
        for (line, row) in batch.others {
            match row {
                OtherRow::Mark(m) => {
                    self.see(m.t_ns);
                    match self.labels.get_mut(&m.label) {
                        Some(n) => *n += 1,
                        None => {
                            self.labels.insert(m.label.clone(), 1);
                        }
                    }
                    marks.push((self.marks_read, m));
                    self.marks_read += 1;
                }
                other => self.b.push_other(line, other),
            }
        }
    }

    fn samples(&self) -> usize {
        self.b.trace().channels.iter().map(|c| c.t_ns.len()).sum()
    }

    /// The end time below which every channel has all its samples: each channel's latest
    /// sample less how far its samples ever came out of order (`None`: some channel has
    /// none yet).
    fn covered(&self) -> Option<u64> {
        self.wm
            .iter()
            .zip(&self.inv)
            .map(|(w, inv)| w.map(|w| w.saturating_sub(*inv)))
            .min()
            .flatten()
    }

    /// Lets go of samples below `hot_floor` (keeping the last one below it), and of gaps
    /// and events no span from `need_floor` on can reach.
    fn let_go(&mut self, need_floor: u64, hot_floor: u64) {
        let hot_floor = hot_floor.max(self.let_go_below);
        self.let_go_below = hot_floor;
        let mut events_floor = need_floor;
        for (i, ch) in self.b.trace_mut().channels.iter_mut().enumerate() {
            let k = ch.t_ns.partition_point(|&t| t < need_floor);
            if k > 0 {
                self.below_floor[i] = Some(ch.t_ns[k - 1]);
            }
            if let Some(t) = self.below_floor[i] {
                events_floor = events_floor.min(t);
            }
            let k = ch.t_ns.partition_point(|&t| t < hot_floor);
            // Keep the last sample below the floor; drain in bulk, not sample by sample.
            if k > 1 && k > ch.t_ns.len() / 2 {
                ch.t_ns.drain(..k - 1);
                ch.values.drain(..k - 1);
            }
        }
        self.b.forget_before(events_floor);
    }
}

impl MarkIndex for Window {
    fn path(&self) -> &Path {
        &self.b.trace().path
    }
    fn origin_ns(&self) -> u64 {
        self.b.trace().header.start_anchor.mono_ns
    }
    fn time_range_ns(&self) -> Option<(u64, u64)> {
        self.range
    }
    fn first_mark(&self, _label: &str, _after: u64) -> Option<u64> {
        None
    }
    fn label_counts(&self) -> BTreeMap<String, usize> {
        self.labels.clone()
    }
}

/// Marks read but not yet paired, in time order (ties: file order). They come nearly in
/// order, so each is put in place from the back.
#[derive(Default)]
struct Pending {
    marks: VecDeque<((u64, u64), Mark)>,
    /// Marks released so far: the next mark's index in time order.
    released: u64,
    /// The latest time released.
    released_to: Option<u64>,
    /// Marks that came after marks stamped later had been released.
    late: u64,
    late_example: Option<String>,
}

impl Pending {
    fn add(&mut self, seq: u64, m: Mark) {
        if self.released_to.is_some_and(|r| m.t_ns < r) {
            self.late += 1;
            if self.late_example.is_none() {
                self.late_example = Some(format!(
                    "{} at {:.3} s behind the marks already paired",
                    m.label,
                    (self.released_to.unwrap_or(0) - m.t_ns) as f64 / 1e9
                ));
            }
        }
        let key = (m.t_ns, seq);
        let at = self.marks.len()
            - self
                .marks
                .iter()
                .rev()
                .take_while(|(k, _)| *k > key)
                .count();
        self.marks.insert(at, (key, m));
    }

    fn oldest(&self) -> Option<u64> {
        self.marks.front().map(|((t, _), _)| *t)
    }

    /// Releases marks stamped before `before` (all with `None`), in time order, with their
    /// index in that order.
    fn release(&mut self, before: Option<u64>, mut f: impl FnMut(u64, Mark)) {
        while let Some(((t, _), _)) = self.marks.front() {
            if before.is_some_and(|b| *t >= b) {
                break;
            }
            let (_, m) = self.marks.pop_front().expect("a front");
            self.released_to = Some(self.released_to.map_or(m.t_ns, |r| r.max(m.t_ns)));
            f(self.released, m);
            self.released += 1;
        }
    }
}

/// A span paired but not yet measured.
struct Job {
    key: SpanKey,
    from: Mark,
    to: Mark,
}

/// Where the file can be read again from.
#[derive(Clone)]
struct Checkpoint {
    offset: u64,
    line: u64,
    /// Every row before `offset` is stamped at or before this.
    max_t: u64,
    /// Each channel's latest sample before `offset`.
    carry: Vec<Option<(u64, f64)>>,
}

impl SpanStream {
    /// Opens a trace and reads its header.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, StreamConfig::default())
    }

    /// Opens a trace with other look-back and look-ahead settings (tests use small ones).
    pub fn open_with(path: &Path, config: StreamConfig) -> Result<Self> {
        let (f, len) = open_file(path)?;
        let stream = TraceStream::open(BufReader::with_capacity(1 << 20, f), path)?
            .with_block_bytes(config.chunk_bytes.min(BLOCK_BYTES));
        Ok(SpanStream {
            path: path.to_owned(),
            len,
            stream,
            config,
        })
    }

    /// The trace's header.
    pub fn header(&self) -> &Header {
        self.stream.header()
    }

    /// The file's length in bytes (for progress).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reads every row and counts the mark labels; `progress(bytes read, file length)`.
    pub fn labels(
        mut self,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<(BTreeMap<String, usize>, Vec<String>)> {
        let mut b = TraceBuilder::new(self.stream.header().clone(), &self.path);
        let mut labels = BTreeMap::new();
        while let Some(batches) = self.stream.next_chunk(self.config.chunk_bytes)? {
            for batch in batches {
                for (line, row) in batch.others {
                    match row {
                        OtherRow::Mark(m) => *labels.entry(m.label).or_insert(0) += 1,
                        other => b.push_other(line, other),
                    }
                }
                b.forget_before(u64::MAX);
            }
            progress(self.stream.offset(), self.len);
        }
        Ok((labels, b.end_warnings(self.stream.warnings())))
    }

    /// Pairs `from` and `to` marks into spans and measures each as soon as it can, handing
    /// it to `sink`; returns the rest of the analysis. `progress(bytes read, file length)`.
    ///
    /// The file is read and parsed on a thread of its own (and the rayon pool) while this
    /// one pairs and hands out the chunk before.
    pub fn run<S: SpanSink>(
        self,
        from: &str,
        to: &str,
        idle: Option<(&IdleProfile, &str)>,
        thresholds: Thresholds,
        sink: &mut S,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Outcome> {
        let SpanStream {
            path,
            len,
            mut stream,
            config,
        } = self;
        let header = stream.header().clone();
        let first = Checkpoint {
            offset: stream.offset(),
            line: stream.line(),
            max_t: 0,
            carry: Vec::new(),
        };
        let ctx = Ctx {
            path,
            len,
            config,
            header,
        };
        let (tx, rx) = std::sync::mpsc::sync_channel::<Read_>(1);
        let chunk = ctx.config.chunk_bytes;
        std::thread::scope(|scope| {
            scope.spawn(move || {
                loop {
                    let msg = match stream.next_chunk(chunk) {
                        Ok(Some(b)) => Read_::Chunk(b),
                        Ok(None) => Read_::End(stream.warnings().to_vec()),
                        Err(e) => Read_::Failed(e),
                    };
                    let last = !matches!(msg, Read_::Chunk(_));
                    if tx.send(msg).is_err() || last {
                        return;
                    }
                }
            });
            ctx.consume(rx, first, from, to, idle, thresholds, sink, progress)
        })
    }
}

/// Measures a span, with its report when the sink needs it.
/// Measures a span, with its report when the sink needs it, and what it adds to the union
/// aggregate should it make a stretch of the union by itself.
fn measure_job<S: SpanSink>(a: &Analyzer<'_>, s: &S, near: &mut Near, j: Job) -> Measured<S::Item> {
    let item = s.without_report(j.key);
    let (r, part) = a.span_with(&j.from, &j.to, item.is_none(), true, near);
    let figures = SpanFigures::of(&r);
    let item = item.unwrap_or_else(|| s.prepare(j.key, r));
    (j.key, figures, part, item)
}

/// A span measured: its key, its figures, what it adds to the union, the sink's item.
type Measured<T> = (SpanKey, SpanFigures, Option<StretchPart>, T);

/// What the reading thread sends.
enum Read_ {
    Chunk(Vec<RowBatch>),
    End(Vec<String>),
    Failed(Error),
}

/// What measuring needs besides the rows: where the file is, its header, the settings.
struct Ctx {
    path: PathBuf,
    len: u64,
    config: StreamConfig,
    header: Header,
}

impl Ctx {
    #[allow(clippy::too_many_arguments)]
    fn consume<S: SpanSink>(
        &self,
        rx: std::sync::mpsc::Receiver<Read_>,
        mut first: Checkpoint,
        from: &str,
        to: &str,
        idle: Option<(&IdleProfile, &str)>,
        thresholds: Thresholds,
        sink: &mut S,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Outcome> {
        let cfg = &self.config;
        let mut w = Window::new(self.header.clone(), &self.path);
        let mut pending = Pending::default();
        let mut pairer: Pairer<()> = Pairer::new(from, to);
        // The start marks open in the pairer, by index (moved here, not copied).
        let mut open_marks: BTreeMap<u64, Mark> = BTreeMap::new();
        let mut jobs: Vec<Job> = Vec::new();
        let mut unmatched_ends: Vec<(u64, Mark)> = Vec::new();
        let mut summary = SummaryBuilder::new();
        // Spans measured, in start order, waiting to be added to the union aggregate.
        // (end, and what the span adds to the union when it makes a stretch by itself).
        let mut for_union: BTreeMap<SpanKey, (u64, Option<StretchPart>)> = BTreeMap::new();
        let mut agg = Aggregator::new(&Analyzer::new(w.b.trace(), idle, thresholds.clone()));
        first.carry = vec![None; w.wm.len()];
        let mut offset = first.offset;
        let mut checkpoints = vec![first];
        let mut measured_to = 0u64;
        let mut stats = StreamStats::default();
        let mut new_marks = Vec::new();
        let mut reader_warnings = Vec::new();
        let mut eof = false;
        // The idle warnings depend on the header only: take them once.
        let idle_warnings = Analyzer::new(w.b.trace(), idle, thresholds.clone()).idle_warnings;
        while !eof {
            match rx.recv() {
                Ok(Read_::Chunk(batches)) => {
                    for batch in batches {
                        let last = checkpoints.last().map_or(0, |c| c.offset);
                        if batch.offset >= last + cfg.checkpoint_bytes {
                            checkpoints.push(Checkpoint {
                                offset: batch.offset,
                                line: batch.first_line,
                                max_t: w.max_t,
                                carry: w.last.clone(),
                            });
                        }
                        offset = batch.offset + batch.bytes;
                        w.push(batch, &mut new_marks, measured_to);
                    }
                }
                Ok(Read_::End(warnings)) => {
                    reader_warnings = warnings;
                    eof = true;
                }
                Ok(Read_::Failed(e)) => return Err(e),
                Err(_) => {
                    return Err(Error::Invalid(format!(
                        "{}: the thread reading the trace stopped",
                        self.path.display()
                    )));
                }
            }
            for (seq, m) in new_marks.drain(..) {
                pending.add(seq, m);
            }
            let h = horizon(cfg, w.lateness);
            let frontier = w.max_t.saturating_sub(h);
            let same = from == to;
            pending.release((!eof).then_some(frontier), |idx, m| {
                match pairer.push(idx, &m, ()) {
                    Paired::Span {
                        start: (sidx, ()),
                        start_ns,
                    } => {
                        let start = open_marks
                            .remove(&sidx)
                            .expect("every mark open in the pairer is kept");
                        // With the same label at both ends, the mark opens the next span.
                        if same {
                            open_marks.insert(idx, m.clone());
                        }
                        jobs.push(Job {
                            key: (start_ns, sidx),
                            from: start,
                            to: m,
                        })
                    }
                    Paired::Opened => {
                        open_marks.insert(idx, m);
                    }
                    Paired::UnmatchedEnd => unmatched_ends.push((idx, m)),
                    Paired::Ignored => {}
                }
            });
            // How far beyond its edges a span is read, and which spans every channel has
            // covered that far.
            let reach = w.reach(&Analyzer::new(w.b.trace(), idle, thresholds.clone()), h);
            let covered = w.covered().unwrap_or(0).max(frontier);
            // (`jobs` keeps its capacity for the next chunk's.)
            let ready: Vec<Job> = jobs
                .extract_if(.., |j| {
                    eof || j.to.t_ns.max(j.from.t_ns).saturating_add(reach) < covered
                })
                .collect();
            for j in &ready {
                for_union.insert(j.key, (j.to.t_ns.max(j.from.t_ns), None));
            }
            if !ready.is_empty() {
                measured_to = measured_to.max(
                    ready
                        .iter()
                        .map(|j| j.to.t_ns.max(j.from.t_ns))
                        .max()
                        .unwrap_or(0),
                );
                self.measure(
                    &w,
                    &checkpoints,
                    offset,
                    reach,
                    ready,
                    idle,
                    &thresholds,
                    sink,
                    &mut summary,
                    &mut for_union,
                    &mut stats,
                )?;
            }
            // Where a span can still start: what is queued or open, and the marks not yet
            // read (stamped after the frontier, unless late).
            let mut need = if eof { u64::MAX } else { frontier };
            if let Some(t) = pending.oldest() {
                need = need.min(t);
            }
            if let Some((t, _)) = pairer.oldest_open() {
                need = need.min(t);
            }
            for j in &jobs {
                need = need.min(j.key.0);
            }
            let mut settled: SpanKey = (need, 0);
            if let Some(open) = pairer.oldest_open() {
                settled = settled.min(open);
            }
            for j in &jobs {
                settled = settled.min(j.key);
            }
            sink.settled(settled)?;
            // The union aggregate takes spans in start order, as they settle.
            let settled_spans: Vec<(SpanKey, (u64, Option<StretchPart>))> = {
                let rest = for_union.split_off(&settled);
                std::mem::replace(&mut for_union, rest)
                    .into_iter()
                    .collect()
            };
            if !settled_spans.is_empty() {
                self.feed_union(
                    &mut agg,
                    settled_spans,
                    &w,
                    &checkpoints,
                    offset,
                    reach,
                    idle,
                    &thresholds,
                    &mut stats,
                )?;
            }
            if let Some((a, _)) = agg.open_stretch() {
                need = need.min(a);
            }
            stats.peak_samples = stats.peak_samples.max(w.samples());
            stats.peak_open_marks = stats.peak_open_marks.max(pairer.open_count());
            let hot_floor = need.max(w.max_t.saturating_sub(cfg.hot_ns.max(h)));
            w.let_go(need.saturating_sub(reach), hot_floor.saturating_sub(reach));
            progress(offset, self.len);
        }
        sink.settled((u64::MAX, u64::MAX))?;
        let reach = w.reach(
            &Analyzer::new(w.b.trace(), idle, thresholds.clone()),
            u64::MAX,
        );
        let rest: Vec<_> = std::mem::take(&mut for_union).into_iter().collect();
        self.feed_union(
            &mut agg,
            rest,
            &w,
            &checkpoints,
            offset,
            reach,
            idle,
            &thresholds,
            &mut stats,
        )?;
        let aggregate = match agg.open_stretch() {
            Some((a, _)) if a.saturating_sub(reach) < w.let_go_below && !agg.open_measured() => {
                let t = self.reread(&w, &checkpoints, offset, a.saturating_sub(reach))?;
                stats.rereads += 1;
                agg.finish(&Analyzer::new(&t, idle, thresholds.clone()))
            }
            _ => agg.finish(&Analyzer::new(w.b.trace(), idle, thresholds.clone())),
        };
        let labels = w.labels.clone();
        for l in [from, to] {
            if !labels.contains_key(l) {
                let mut msg = format!(
                    "no mark labelled {l:?} in {}; labels present: {}",
                    self.path.display(),
                    describe_label_counts(&labels)
                );
                // What the reader found wrong (a trace cut short explains missing marks).
                for w in w.b.end_warnings(&reader_warnings) {
                    msg.push_str(&format!("\n  warning: {w}"));
                }
                return Err(Error::Invalid(msg));
            }
        }
        let starts: Vec<Mark> = pairer
            .unmatched_starts()
            .into_iter()
            .filter_map(|(i, ())| open_marks.remove(&i))
            .collect();
        let mut unmatched: Vec<UnmatchedMark> = starts
            .iter()
            .map(|m| ("start", m))
            .chain(unmatched_ends.iter().map(|(_, m)| ("end", m)))
            .map(|(end, m)| UnmatchedMark {
                end,
                label: m.label.clone(),
                t_ns: m.t_ns,
                req: m.req().map(str::to_owned),
            })
            .collect();
        unmatched.sort_by_key(|u| u.t_ns);
        let mut warnings = w.b.end_warnings(&reader_warnings);
        warnings.extend(idle_warnings);
        if idle.is_none() {
            warnings.push(
                "no idle profile: active energy is null and power cannot say busy or idle \
                 (record with --idle, or analyze with --idle FILE or --idle-window A..B)"
                    .into(),
            );
        }
        if pending.late > 0 {
            warnings.push(format!(
                "{} mark(s) were written more than {:.0} s after marks stamped later (e.g. {}); \
                 they were paired when they came, which may pair them differently from their \
                 time order",
                pending.late,
                horizon(cfg, w.lateness) as f64 / 1e9,
                pending.late_example.as_deref().unwrap_or("?")
            ));
        }
        if !w.reordered_late.is_empty() {
            warnings.push(format!(
                "samples of {} came out of time order after spans over them had been \
                 measured: those spans may differ slightly from a reading of the whole trace",
                w.reordered_late
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let idle_used = Analyzer::new(w.b.trace(), idle, thresholds.clone()).idle_used;
        Ok(Outcome {
            trace: self.path.display().to_string(),
            from: from.into(),
            to: to.into(),
            idle: idle_used,
            thresholds,
            warnings,
            unmatched,
            summary: summary.finish(Some(aggregate), starts.len(), unmatched_ends.len()),
            stats,
        })
    }

    /// Measures spans (in parallel): those inside the samples in memory from them, the
    /// others from the file read again (up to `offset`, what has been read).
    #[allow(clippy::too_many_arguments)]
    fn measure<S: SpanSink>(
        &self,
        w: &Window,
        checkpoints: &[Checkpoint],
        offset: u64,
        reach: u64,
        ready: Vec<Job>,
        idle: Option<(&IdleProfile, &str)>,
        thresholds: &Thresholds,
        sink: &mut S,
        summary: &mut SummaryBuilder,
        for_union: &mut BTreeMap<SpanKey, (u64, Option<StretchPart>)>,
        stats: &mut StreamStats,
    ) -> Result<()> {
        let (hot, cold): (Vec<Job>, Vec<Job>) = ready
            .into_iter()
            .partition(|j| j.from.t_ns.saturating_sub(reach) >= w.let_go_below);
        stats.spans += hot.len() + cold.len();
        let mut done = Vec::with_capacity(hot.len() + cold.len());
        {
            let a = Analyzer::new(w.b.trace(), idle, thresholds.clone());
            let s: &S = sink;
            hot.into_par_iter()
                .map_init(Near::default, |near, j| measure_job(&a, s, near, j))
                .collect_into_vec(&mut done);
        }
        if !cold.is_empty() {
            stats.reread_spans += cold.len();
            stats.rereads += 1;
            let start = cold.iter().map(|j| j.from.t_ns).min().unwrap_or(0);
            let t = self.reread(w, checkpoints, offset, start.saturating_sub(reach))?;
            let a = Analyzer::new(&t, idle, thresholds.clone());
            let s: &S = sink;
            let mut more = Vec::with_capacity(cold.len());
            cold.into_par_iter()
                .map_init(Near::default, |near, j| measure_job(&a, s, near, j))
                .collect_into_vec(&mut more);
            done.extend(more);
        }
        for (key, fig, part, item) in done {
            summary.add(key, &fig);
            if let Some((_, p)) = for_union.get_mut(&key) {
                *p = part;
            }
            sink.span(key, item)?;
        }
        Ok(())
    }

    /// Adds spans, in start order, to the union aggregate; a stretch of the union that
    /// began before the samples in memory is measured from the file read again.
    #[allow(clippy::too_many_arguments)]
    fn feed_union(
        &self,
        agg: &mut Aggregator,
        spans: Vec<(SpanKey, (u64, Option<StretchPart>))>,
        w: &Window,
        checkpoints: &[Checkpoint],
        offset: u64,
        reach: u64,
        idle: Option<(&IdleProfile, &str)>,
        thresholds: &Thresholds,
        stats: &mut StreamStats,
    ) -> Result<()> {
        let hot = Analyzer::new(w.b.trace(), idle, thresholds.clone());
        // A trace read again, from the time it starts at.
        let mut cold: Option<(u64, Trace)> = None;
        for ((start, _), (end, part)) in spans {
            // A stretch this span closes, measured from samples no longer in memory.
            let closes_old = agg.open_stretch().filter(|&(a, b)| {
                start > b && a.saturating_sub(reach) < w.let_go_below && !agg.open_measured()
            });
            match closes_old {
                Some((a, _)) => {
                    let from = a.saturating_sub(reach);
                    if cold.as_ref().is_none_or(|(f, _)| *f > from) {
                        cold = Some((from, self.reread(w, checkpoints, offset, from)?));
                        stats.rereads += 1;
                    }
                    let (_, t) = cold.as_ref().expect("just read");
                    agg.add_measured(
                        &Analyzer::new(t, idle, thresholds.clone()),
                        start,
                        end,
                        part,
                    );
                }
                None => agg.add_measured(&hot, start, end, part),
            }
        }
        Ok(())
    }

    /// The samples of every channel from the last one before `start` up to `end` (the
    /// offset read so far), read from the file again, with the window's gaps and events.
    fn reread(
        &self,
        w: &Window,
        checkpoints: &[Checkpoint],
        end: u64,
        start: u64,
    ) -> Result<Trace> {
        let cp = checkpoints
            .iter()
            .rev()
            .find(|c| c.max_t < start)
            .unwrap_or(&checkpoints[0]);
        let (mut f, _) = open_file(&self.path)?;
        f.seek(SeekFrom::Start(cp.offset))
            .map_err(|e| Error::io("cannot read trace", &self.path, e))?;
        let r = BufReader::with_capacity(1 << 20, f.take(end.saturating_sub(cp.offset)));
        let mut s = TraceStream::resume(r, &self.path, self.header.clone(), cp.offset, cp.line)?
            .with_block_bytes(self.config.chunk_bytes.min(BLOCK_BYTES));
        let mut b = TraceBuilder::new(self.header.clone(), &self.path);
        for (ch, carry) in b.trace_mut().channels.iter_mut().zip(&cp.carry) {
            if let Some((t, v)) = carry {
                ch.t_ns.push(*t);
                ch.values.push(*v);
            }
        }
        while let Some(batches) = s.next_chunk(self.config.chunk_bytes)? {
            for mut batch in batches {
                // Marks, gaps and events come from the window, which kept them.
                batch.others.clear();
                b.push(batch);
            }
        }
        let mut t = b.finish(&[]);
        // Keep from the last sample before `start` on.
        for ch in &mut t.channels {
            let k = ch.t_ns.partition_point(|&x| x < start);
            if k > 1 {
                ch.t_ns.drain(..k - 1);
                ch.values.drain(..k - 1);
            }
        }
        t.gaps = w.b.trace().gaps.clone();
        t.events = w.b.trace().events.clone();
        t.warnings.clear();
        t.footer = None;
        Ok(t)
    }
}

impl SpanStream {
    /// Reads the trace until the stretch `a..b` (mark labels or seconds from the trace's
    /// start) is known and every channel has covered it; returns a trace holding the
    /// samples of that stretch (and the gaps), with the stretch. Errors as
    /// [`resolve_window`] words them.
    pub fn stretch(
        mut self,
        a: &WindowEdge,
        b: &WindowEdge,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<(Trace, u64, u64)> {
        let cfg = self.config.clone();
        let mut w = Window::new(self.stream.header().clone(), &self.path);
        let origin = w.origin_ns();
        let seconds = |e: &WindowEdge| match e {
            WindowEdge::Seconds(s) => Some(
                (origin as i128)
                    .saturating_add((s * 1e9).round() as i128)
                    .clamp(0, u64::MAX as i128) as u64,
            ),
            WindowEdge::Label(_) => None,
        };
        let label = |e: &WindowEdge| match e {
            WindowEdge::Label(l) => Some(l.clone()),
            WindowEdge::Seconds(_) => None,
        };
        let (la, lb) = (label(a), label(b));
        // Times of the marks labelled like either edge (all of them: few).
        let mut times: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
        let mut new_marks = Vec::new();
        let mut eof = false;
        while !eof {
            match self.stream.next_chunk(cfg.chunk_bytes)? {
                Some(batches) => {
                    for batch in batches {
                        w.push(batch, &mut new_marks, 0);
                    }
                }
                None => eof = true,
            }
            for (_, m) in new_marks.drain(..) {
                if Some(&m.label) == la.as_ref() || Some(&m.label) == lb.as_ref() {
                    times.entry(m.label.clone()).or_default().insert(m.t_ns);
                }
            }
            let frontier = w.max_t.saturating_sub(horizon(&cfg, w.lateness));
            // An edge is final once nothing earlier can come.
            let first = |l: &Option<String>, after: u64| {
                l.as_ref()
                    .and_then(|l| times.get(l))
                    .and_then(|s| s.range(after..).next().copied())
            };
            let start = seconds(a).or_else(|| first(&la, 0));
            let start_final = start.filter(|&s| eof || s < frontier || seconds(a).is_some());
            let end = start_final.and_then(|s| seconds(b).or_else(|| first(&lb, s)));
            let end_final = end.filter(|&e| eof || e < frontier || seconds(b).is_some());
            if let (Some(s), Some(e)) = (start_final, end_final)
                && e > s
                && (eof || w.covered().is_some_and(|c| c > e) || e < frontier)
            {
                let mut t = w.b.trace().clone();
                t.warnings.clear();
                return Ok((t, s, e));
            }
            let floor = match start_final {
                Some(s) => s,
                None => start.unwrap_or(frontier).min(frontier),
            };
            // Gaps are all kept (few); samples from the floor on.
            for ch in w.b.trace_mut().channels.iter_mut() {
                let k = ch.t_ns.partition_point(|&t| t < floor);
                if k > 0 && k >= ch.t_ns.len() / 2 {
                    ch.t_ns.drain(..k);
                    ch.values.drain(..k);
                }
            }
            progress(self.stream.offset(), self.len);
        }
        // Not found, or ends before it starts: the whole trace is known now, for the
        // message.
        let idx = Index {
            w: &w,
            times: &times,
        };
        let (s, e) = resolve_window(&idx, a, b)?;
        let mut t = w.b.trace().clone();
        t.warnings.clear();
        Ok((t, s, e))
    }
}

struct Index<'a> {
    w: &'a Window,
    times: &'a BTreeMap<String, BTreeSet<u64>>,
}

impl MarkIndex for Index<'_> {
    fn path(&self) -> &Path {
        self.w.path()
    }
    fn origin_ns(&self) -> u64 {
        self.w.origin_ns()
    }
    fn time_range_ns(&self) -> Option<(u64, u64)> {
        self.w.time_range_ns()
    }
    fn first_mark(&self, label: &str, after: u64) -> Option<u64> {
        self.times
            .get(label)
            .and_then(|s| s.range(after..).next().copied())
    }
    fn label_counts(&self) -> BTreeMap<String, usize> {
        self.w.label_counts()
    }
}

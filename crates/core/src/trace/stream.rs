//! Reading a trace as a stream: the header first, then the rows in blocks of lines, parsed
//! on all cores, handed out in file order. [`read_trace`](super::read_trace) collects them
//! into a [`Trace`]; `flinch analyze` consumes them as they come, in bounded memory.
//!
//! The file is cut into blocks of about [`BLOCK_BYTES`] at line ends; each block knows the
//! number of its first line, so blocks parse independently (on a rayon pool) and an error
//! names its line exactly as a sequential read would. What depends on earlier rows (open
//! gaps, the footer, the count of unknown row kinds) is left to the consumer
//! ([`TraceBuilder`]), which sees the rows in file order.

use super::reader::{ChannelData, Gap, Trace, TraceEvent};
use super::{
    COLUMNS_LINE, FOOTER_PREFIX, Footer, HEADER_PREFIX, Header, MAGIC_LINE, RowKind, unescape_text,
};
use crate::channel::ChannelSpec;
use crate::clock::ClockAnchor;
use crate::error::{Error, Result};
use crate::marks::{Mark, MarkVia, is_valid_label};
use rayon::prelude::*;
use std::collections::HashMap;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The longest line accepted (a header with hundreds of channels fits easily).
pub(crate) const MAX_LINE_BYTES: usize = 16 << 20;

/// The size of the blocks of lines parsed by one thread.
pub const BLOCK_BYTES: usize = 256 << 10;

/// One `sample` row.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampleRow {
    /// The channel's index in header order ([`Trace::channels`]).
    pub channel: u32,
    /// Its time, `CLOCK_MONOTONIC` ns.
    pub t_ns: u64,
    /// Its value in the channel's unit.
    pub value: f64,
}

/// Any row that is not a sample (and the footer line).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum OtherRow {
    /// A mark.
    Mark(Mark),
    /// A clock anchor.
    Anchor(ClockAnchor),
    /// A source stopped answering.
    GapStart {
        /// The source.
        source: String,
        /// When.
        t_ns: u64,
        /// Why (unescaped).
        reason: String,
    },
    /// A source answered again.
    GapEnd {
        /// The source.
        source: String,
        /// When.
        t_ns: u64,
    },
    /// A reset, flag, drop, bad mark or other event.
    Event(TraceEvent),
    /// The footer line.
    Footer(Box<Footer>),
    /// A footer line that could not be read: why.
    BadFooter(String),
    /// A row of a kind this reader does not know (ignored, counted).
    UnknownKind(String),
}

/// The rows of one block of lines, in file order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RowBatch {
    /// The number of the block's first line (1-based, as in error messages).
    pub first_line: u64,
    /// Lines in the block.
    pub lines: u64,
    /// Byte offset of the block in the file.
    pub offset: u64,
    /// Its length in bytes.
    pub bytes: u64,
    /// Sample rows, in file order.
    pub samples: Vec<SampleRow>,
    /// Every other row, in file order, with its line number.
    pub others: Vec<(u64, OtherRow)>,
}

/// What parsing a block needs to know: the channels of the header.
#[derive(Debug)]
pub struct ParseCtx {
    path: PathBuf,
    names: Vec<String>,
    by_name: HashMap<String, usize>,
}

impl ParseCtx {
    fn new(path: &Path, header: &Header) -> std::result::Result<Self, String> {
        let mut names = Vec::new();
        let mut by_name = HashMap::new();
        for s in &header.sources {
            for c in &s.channels {
                if by_name.insert(c.name.clone(), names.len()).is_some() {
                    return Err(format!("the header names channel {:?} twice", c.name));
                }
                names.push(c.name.clone());
            }
        }
        Ok(ParseCtx {
            path: path.to_owned(),
            names,
            by_name,
        })
    }

    fn err(&self, line: u64, message: impl Into<String>) -> Error {
        Error::TraceParse {
            path: self.path.clone(),
            line,
            message: message.into(),
        }
    }
}

fn too_long(ctx_path: &Path, line: u64) -> Error {
    Error::TraceParse {
        path: ctx_path.to_owned(),
        line,
        message: format!(
            "the line is longer than {} MiB without a newline: not a flinch trace, or a \
             damaged one",
            MAX_LINE_BYTES >> 20
        ),
    }
}

/// Counts the bytes taken from a reader.
struct Counting<R> {
    inner: R,
    taken: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.taken += n as u64;
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Counting<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.inner.fill_buf()
    }
    fn consume(&mut self, amt: usize) {
        self.taken += amt as u64;
        self.inner.consume(amt);
    }
}

/// What [`read_line`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LineEnd {
    /// A whole line (its `\n`, and a `\r` before it, removed).
    Newline,
    /// The end of the file came before a newline.
    Eof,
    /// Over [`MAX_LINE_BYTES`] without a newline: the rest of the file was not read.
    TooLong,
}

/// Reads lines of at most [`MAX_LINE_BYTES`] (a trace written on Windows, or edited there,
/// has `\r\n` line ends: the `\r` is dropped).
fn read_line<R: BufRead>(r: &mut R, buf: &mut Vec<u8>) -> std::io::Result<Option<LineEnd>> {
    let end = read_raw_line(r, buf)?;
    if end == Some(LineEnd::Newline) && buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(end)
}

fn read_raw_line<R: BufRead>(r: &mut R, buf: &mut Vec<u8>) -> std::io::Result<Option<LineEnd>> {
    buf.clear();
    loop {
        let avail = r.fill_buf()?;
        if avail.is_empty() {
            return Ok(if buf.is_empty() {
                None
            } else {
                Some(LineEnd::Eof)
            });
        }
        match memchr::memchr(b'\n', avail) {
            Some(i) => {
                let take = i.min(MAX_LINE_BYTES.saturating_sub(buf.len()));
                buf.extend_from_slice(&avail[..take]);
                r.consume(i + 1);
                return Ok(Some(if buf.len() >= MAX_LINE_BYTES {
                    LineEnd::TooLong
                } else {
                    LineEnd::Newline
                }));
            }
            None => {
                let n = avail.len();
                let take = n.min(MAX_LINE_BYTES.saturating_sub(buf.len()));
                buf.extend_from_slice(&avail[..take]);
                r.consume(n);
                if buf.len() >= MAX_LINE_BYTES {
                    return Ok(Some(LineEnd::TooLong));
                }
            }
        }
    }
}

/// A trace read as a stream of [`RowBatch`]es after its header.
pub struct TraceStream<R> {
    r: Counting<R>,
    header: Header,
    ctx: Arc<ParseCtx>,
    carry: Vec<u8>,
    /// The number of the next line to be cut into a block.
    next_line: u64,
    /// Byte offset of `carry`'s start.
    carry_offset: u64,
    eof: bool,
    done: bool,
    warnings: Vec<String>,
    block_bytes: usize,
    /// Block buffers parsed already, to be filled again (no allocator churn per block).
    spare: Vec<Vec<u8>>,
}

impl<R: BufRead> TraceStream<R> {
    /// Cuts blocks of about `bytes` instead of [`BLOCK_BYTES`] (tests use tiny blocks to
    /// put block ends everywhere).
    pub fn with_block_bytes(mut self, bytes: usize) -> Self {
        self.block_bytes = bytes.max(1);
        self
    }

    /// Reads the magic line, the header and the column line; `path` names the trace in
    /// errors.
    pub fn open(r: R, path: &Path) -> Result<Self> {
        let mut r = Counting { inner: r, taken: 0 };
        let mut buf = Vec::with_capacity(4096);
        let io_err = |e: std::io::Error| Error::io("cannot read trace", path, e);
        let err = |line: u64, message: String| Error::TraceParse {
            path: path.to_owned(),
            line,
            message,
        };

        match read_line(&mut r, &mut buf).map_err(io_err)? {
            Some(LineEnd::Newline | LineEnd::Eof) if buf == MAGIC_LINE.as_bytes() => {}
            Some(_) => {
                let shown = String::from_utf8_lossy(&buf[..buf.len().min(60)]).into_owned();
                return Err(err(
                    1,
                    format!(
                        "not a flinch trace: the first line is {shown:?}, expected \
                         {MAGIC_LINE:?} (was this file written by `flinch record`?)"
                    ),
                ));
            }
            None => return Err(err(1, "empty file: not a flinch trace".into())),
        }
        let header: Header = match read_line(&mut r, &mut buf).map_err(io_err)? {
            Some(LineEnd::TooLong) => return Err(too_long(path, 2)),
            Some(LineEnd::Newline) if buf.starts_with(HEADER_PREFIX.as_bytes()) => {
                serde_json::from_slice(&buf[HEADER_PREFIX.len()..]).map_err(|e| {
                    err(
                        2,
                        format!("the header is not valid JSON of a flinch trace: {e}"),
                    )
                })?
            }
            None => {
                return Err(err(
                    2,
                    "the file ends before the header line: it was cut short right after it \
                     was created, or it is not a flinch trace"
                        .into(),
                ));
            }
            Some(LineEnd::Eof) if buf.starts_with(HEADER_PREFIX.as_bytes()) => {
                return Err(err(
                    2,
                    format!(
                        "the header line is cut short ({} bytes and no end of line): the file \
                         was cut (a full disk, a copy made while recording started) before its \
                         header was complete, so nothing in it can be read",
                        buf.len()
                    ),
                ));
            }
            _ => {
                let shown = String::from_utf8_lossy(&buf[..buf.len().min(40)]).into_owned();
                return Err(err(
                    2,
                    format!(
                        "expected the header line starting with {HEADER_PREFIX:?}, found \
                         {shown:?}: not a flinch trace, or a damaged one"
                    ),
                ));
            }
        };
        if header.version > super::FORMAT_VERSION {
            return Err(err(
                2,
                format!(
                    "trace format version {} is newer than this flinch understands ({}); \
                     upgrade flinch",
                    header.version,
                    super::FORMAT_VERSION
                ),
            ));
        }
        let ctx = ParseCtx::new(path, &header).map_err(|m| err(2, m))?;
        match read_line(&mut r, &mut buf).map_err(io_err)? {
            Some(LineEnd::Newline) if buf == COLUMNS_LINE.as_bytes() => {}
            None => {
                return Err(err(
                    3,
                    "the file ends before the column line: it was cut short right after it \
                     was created"
                        .into(),
                ));
            }
            _ => return Err(err(3, format!("expected the column line {COLUMNS_LINE:?}"))),
        }
        let carry_offset = r.taken;
        Ok(TraceStream {
            r,
            header,
            ctx: Arc::new(ctx),
            carry: Vec::new(),
            next_line: 4,
            carry_offset,
            eof: false,
            done: false,
            warnings: Vec::new(),
            block_bytes: BLOCK_BYTES,
            spare: Vec::new(),
        })
    }

    /// Continues reading rows from `offset` of a trace whose header is `header` (as read
    /// by [`TraceStream::open`] of the same file); `r` must be positioned there, and the
    /// line there has number `line`.
    pub fn resume(r: R, path: &Path, header: Header, offset: u64, line: u64) -> Result<Self> {
        let ctx = ParseCtx::new(path, &header).map_err(|m| Error::TraceParse {
            path: path.to_owned(),
            line: 2,
            message: m,
        })?;
        Ok(TraceStream {
            r: Counting {
                inner: r,
                taken: offset,
            },
            header,
            ctx: Arc::new(ctx),
            carry: Vec::new(),
            next_line: line,
            carry_offset: offset,
            eof: false,
            done: false,
            warnings: Vec::new(),
            block_bytes: BLOCK_BYTES,
            spare: Vec::new(),
        })
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Byte offset of the first row not yet handed out.
    pub fn offset(&self) -> u64 {
        self.carry_offset
    }

    /// The number of the first line not yet handed out.
    pub fn line(&self) -> u64 {
        self.next_line
    }

    /// Whether every row has been handed out.
    pub fn finished(&self) -> bool {
        self.done
    }

    /// What the reader itself found wrong but not fatal (a last line cut short).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    fn fill(&mut self, buf: &mut Vec<u8>, want: usize) -> Result<usize> {
        let old = buf.len();
        buf.resize(old + want, 0);
        let mut n = 0;
        while n < want {
            match self.r.read(&mut buf[old + n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    buf.truncate(old + n);
                    return Err(Error::io("cannot read trace", &self.ctx.path, e));
                }
            }
        }
        buf.truncate(old + n);
        Ok(n)
    }

    /// The next block of whole lines: (bytes, first line, offset).
    fn next_block(&mut self) -> Result<Option<(Vec<u8>, u64, u64)>> {
        loop {
            if self.done {
                return Ok(None);
            }
            if self.eof {
                if !self.carry.is_empty() {
                    if self.carry.len() >= MAX_LINE_BYTES {
                        return Err(too_long(&self.ctx.path, self.next_line));
                    }
                    self.warnings.push(format!(
                        "line {}: the last line is cut short (the recording was interrupted \
                         mid-write); ignored",
                        self.next_line
                    ));
                    self.carry_offset += self.carry.len() as u64;
                    self.carry.clear();
                }
                self.done = true;
                return Ok(None);
            }
            let mut buf = std::mem::take(&mut self.carry);
            if self.fill(&mut buf, self.block_bytes)? == 0 {
                self.eof = true;
                self.carry = buf;
                continue;
            }
            match memchr::memrchr(b'\n', &buf) {
                Some(i) => {
                    let mut next = self.spare.pop().unwrap_or_default();
                    next.clear();
                    next.extend_from_slice(&buf[i + 1..]);
                    self.carry = next;
                    buf.truncate(i + 1);
                    let lines = memchr::memchr_iter(b'\n', &buf).count() as u64;
                    let first = self.next_line;
                    let offset = self.carry_offset;
                    self.next_line += lines;
                    self.carry_offset += buf.len() as u64;
                    return Ok(Some((buf, first, offset)));
                }
                None if buf.len() >= MAX_LINE_BYTES => {
                    return Err(too_long(&self.ctx.path, self.next_line));
                }
                None => self.carry = buf,
            }
        }
    }

    /// Reads at least `bytes` more of the file (whole blocks, or to its end) and parses
    /// them on the rayon pool: the batches in file order, or `None` once every row has
    /// been handed out. An error is the first one in file order.
    pub fn next_chunk(&mut self, bytes: usize) -> Result<Option<Vec<RowBatch>>> {
        let mut blocks = Vec::new();
        let mut total = 0;
        while total < bytes.max(1) {
            match self.next_block()? {
                Some(b) => {
                    total += b.0.len();
                    blocks.push(b);
                }
                None => break,
            }
        }
        if blocks.is_empty() {
            return Ok(None);
        }
        let ctx = &*self.ctx;
        let parsed: Vec<Result<RowBatch>> = if blocks.len() == 1 {
            blocks
                .iter()
                .map(|(b, line, off)| parse_block(b, *line, *off, ctx))
                .collect()
        } else {
            blocks
                .par_iter()
                .map(|(b, line, off)| parse_block(b, *line, *off, ctx))
                .collect()
        };
        for (b, _, _) in blocks {
            if self.spare.len() < 16 {
                self.spare.push(b);
            }
        }
        parsed.into_iter().collect::<Result<Vec<_>>>().map(Some)
    }
}

/// Parses an unsigned decimal integer as `str::parse::<u64>` does, with a fast path for
/// plain digits (every `t_ns` a writer produces) at about a third of the cost.
pub(crate) fn parse_u64(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if !b.is_empty() && b.len() <= 19 {
        // 19 digits cannot overflow a u64.
        let mut acc = 0u64;
        for &c in b {
            let d = c.wrapping_sub(b'0');
            if d > 9 {
                return s.parse().ok();
            }
            acc = acc * 10 + u64::from(d);
        }
        return Some(acc);
    }
    s.parse().ok()
}

/// Parses one block of whole lines whose first line has number `first_line`.
pub fn parse_block(block: &[u8], first_line: u64, offset: u64, ctx: &ParseCtx) -> Result<RowBatch> {
    let mut out = RowBatch {
        first_line,
        lines: 0,
        offset,
        bytes: block.len() as u64,
        samples: Vec::with_capacity(block.len() / 32),
        others: Vec::new(),
    };
    let channels = ctx.names.len();
    // For each channel, the channel of the sample row that came after its last one: rows
    // come in a repeating order of channels, so the guess saves hashing the name.
    let mut follows: Vec<usize> = (0..channels).map(|i| i + 1).collect();
    let mut prev_channel = channels.saturating_sub(1);
    let mut start = 0;
    let mut line = first_line.wrapping_sub(1);
    for nl in memchr::memchr_iter(b'\n', block) {
        let raw = &block[start..nl];
        start = nl + 1;
        line += 1;
        out.lines += 1;
        if raw.len() >= MAX_LINE_BYTES {
            return Err(too_long(&ctx.path, line));
        }
        let buf = raw.strip_suffix(b"\r").unwrap_or(raw);
        if buf.is_empty() {
            continue;
        }
        if buf[0] == b'#' {
            if let Some(json) = buf.strip_prefix(FOOTER_PREFIX.as_bytes()) {
                out.others.push((
                    line,
                    match serde_json::from_slice::<Footer>(json) {
                        Ok(f) => OtherRow::Footer(Box::new(f)),
                        Err(e) => OtherRow::BadFooter(e.to_string()),
                    },
                ));
            }
            continue;
        }
        let text = std::str::from_utf8(buf).map_err(|_| {
            ctx.err(
                line,
                "not valid UTF-8: a flinch trace is UTF-8 text; the file is damaged",
            )
        })?;
        // The five commas, found byte by byte (a comma is never part of a longer UTF-8
        // sequence).
        let mut commas = [0usize; 5];
        let mut n = 0;
        for (i, &c) in buf.iter().enumerate() {
            if c == b',' {
                if n == 5 {
                    n += 1;
                    break;
                }
                commas[n] = i;
                n += 1;
            }
        }
        if n != 5 {
            return Err(ctx.err(
                line,
                format!(
                    "expected 6 comma-separated columns ({COLUMNS_LINE}), found {}",
                    text.split(',').count()
                ),
            ));
        }
        let t = &text[..commas[0]];
        let kind = &text[commas[0] + 1..commas[1]];
        let channel = &text[commas[1] + 1..commas[2]];
        let value = &text[commas[2] + 1..commas[3]];
        let label = &text[commas[3] + 1..commas[4]];
        let fields = &text[commas[4] + 1..];
        let t_ns: u64 = parse_u64(t).ok_or_else(|| {
            ctx.err(
                line,
                format!("t_ns {t:?} is not an unsigned integer of nanoseconds"),
            )
        })?;
        let value_text = value;
        let value = if value.is_empty() {
            None
        } else {
            let v: f64 = value
                .parse()
                .map_err(|_| ctx.err(line, format!("value {value:?} is not a number")))?;
            if !v.is_finite() {
                return Err(ctx.err(line, format!("value {value:?} is not finite")));
            }
            Some(v)
        };
        let Some(kind) = RowKind::from_name(kind) else {
            out.others
                .push((line, OtherRow::UnknownKind(kind.to_owned())));
            continue;
        };
        match kind {
            RowKind::Sample => {
                let guess = follows.get(prev_channel).copied().unwrap_or(0);
                let i = match ctx.names.get(guess) {
                    Some(c) if c == channel => guess,
                    _ => *ctx.by_name.get(channel).ok_or_else(|| {
                        ctx.err(
                            line,
                            format!(
                                "sample of channel {channel:?}, which the header does not list"
                            ),
                        )
                    })?,
                };
                if let Some(f) = follows.get_mut(prev_channel) {
                    *f = i;
                }
                prev_channel = i;
                let v = value.ok_or_else(|| ctx.err(line, "sample row without a value"))?;
                out.samples.push(SampleRow {
                    channel: i as u32,
                    t_ns,
                    value: v,
                });
            }
            RowKind::Mark => {
                let via = MarkVia::from_name(channel).ok_or_else(|| {
                    ctx.err(
                        line,
                        format!("mark received via {channel:?}: expected fifo, file or api"),
                    )
                })?;
                if !is_valid_label(label) {
                    return Err(ctx.err(
                        line,
                        format!("mark label {label:?} is not [A-Za-z0-9_.:/-]+"),
                    ));
                }
                let mut fs = Vec::new();
                for f in fields.split(' ').filter(|f| !f.is_empty()) {
                    let (k, v) = f.split_once('=').ok_or_else(|| {
                        ctx.err(line, format!("mark field {f:?} is not key=value"))
                    })?;
                    fs.push((k.to_owned(), unescape_text(v)));
                }
                // The delay is an integer of ns: read it exactly (an f64 would round delays
                // over 2^53 ns); `as i128` saturates the rest, and the sum is clamped.
                let delay = value_text.parse::<i128>().ok().or(value.map(|d| d as i128));
                let recv_ns = match delay {
                    Some(d) => (t_ns as i128).saturating_add(d).clamp(0, u64::MAX as i128) as u64,
                    None => t_ns,
                };
                out.others.push((
                    line,
                    OtherRow::Mark(Mark {
                        t_ns,
                        recv_ns,
                        t_from_client: value.is_some(),
                        label: label.to_owned(),
                        fields: fs,
                        via,
                    }),
                ));
            }
            RowKind::Anchor => {
                let real_ns = fields
                    .strip_prefix("real_ns=")
                    .and_then(|v| v.parse::<i64>().ok())
                    .ok_or_else(|| {
                        ctx.err(
                            line,
                            format!("anchor row needs real_ns=<integer>, found {fields:?}"),
                        )
                    })?;
                out.others.push((
                    line,
                    OtherRow::Anchor(ClockAnchor {
                        mono_ns: t_ns,
                        real_ns,
                    }),
                ));
            }
            RowKind::Gap => match label {
                "start" => out.others.push((
                    line,
                    OtherRow::GapStart {
                        source: channel.to_owned(),
                        t_ns,
                        reason: unescape_text(fields),
                    },
                )),
                "end" => out.others.push((
                    line,
                    OtherRow::GapEnd {
                        source: channel.to_owned(),
                        t_ns,
                    },
                )),
                other => {
                    return Err(ctx.err(
                        line,
                        format!("gap row label {other:?}: expected start or end"),
                    ));
                }
            },
            _ => out.others.push((
                line,
                OtherRow::Event(TraceEvent {
                    t_ns,
                    kind,
                    channel: channel.to_owned(),
                    value,
                    label: unescape_text(label),
                    text: unescape_text(fields),
                    line,
                }),
            )),
        }
    }
    Ok(out)
}

/// Assembles rows, in file order, into a [`Trace`]: samples into their channels, marks,
/// anchors, gaps (a gap is open from its `start` row to the `end` row of its source),
/// events, the footer, and the warnings a reader owes (unknown row kinds, unreadable
/// footer, no footer).
pub struct TraceBuilder {
    trace: Trace,
    open_gaps: HashMap<String, usize>,
    unknown_kinds: u64,
}

impl TraceBuilder {
    /// An empty trace with the channels of `header`.
    pub fn new(header: Header, path: &Path) -> Self {
        let channels = header
            .sources
            .iter()
            .flat_map(|s| {
                s.channels.iter().map(|c: &ChannelSpec| ChannelData {
                    spec: c.clone(),
                    source: s.name.clone(),
                    t_ns: Vec::new(),
                    values: Vec::new(),
                })
            })
            .collect();
        TraceBuilder {
            trace: Trace {
                path: path.to_owned(),
                header,
                footer: None,
                channels,
                marks: Vec::new(),
                anchors: Vec::new(),
                gaps: Vec::new(),
                events: Vec::new(),
                warnings: Vec::new(),
            },
            open_gaps: HashMap::new(),
            unknown_kinds: 0,
        }
    }

    /// The trace so far (samples and marks in file order).
    pub fn trace(&self) -> &Trace {
        &self.trace
    }

    /// The trace so far, to take marks out of or thin out.
    pub fn trace_mut(&mut self) -> &mut Trace {
        &mut self.trace
    }

    /// Adds a batch: samples appended to their channels, the other rows through
    /// [`TraceBuilder::push_other`].
    pub fn push(&mut self, batch: RowBatch) {
        for s in &batch.samples {
            let c = &mut self.trace.channels[s.channel as usize];
            c.t_ns.push(s.t_ns);
            c.values.push(s.value);
        }
        for (line, row) in batch.others {
            self.push_other(line, row);
        }
    }

    /// Adds one row that is not a sample.
    pub fn push_other(&mut self, line: u64, row: OtherRow) {
        let trace = &mut self.trace;
        match row {
            OtherRow::Mark(m) => trace.marks.push(m),
            OtherRow::Anchor(a) => trace.anchors.push(a),
            OtherRow::GapStart {
                source,
                t_ns,
                reason,
            } => {
                if !self.open_gaps.contains_key(&source) {
                    self.open_gaps.insert(source.clone(), trace.gaps.len());
                    trace.gaps.push(Gap {
                        source,
                        start_ns: t_ns,
                        end_ns: None,
                        reason,
                    });
                }
            }
            OtherRow::GapEnd { source, t_ns } => {
                if let Some(i) = self.open_gaps.remove(&source) {
                    let start = trace.gaps[i].start_ns;
                    if t_ns < start {
                        trace.warnings.push(format!(
                            "line {line}: gap of {source} ends at {t_ns}, before it started \
                             ({start}); taken as ending where it started"
                        ));
                    }
                    trace.gaps[i].end_ns = Some(t_ns.max(start));
                }
            }
            OtherRow::Event(e) => trace.events.push(e),
            OtherRow::Footer(f) => trace.footer = Some(*f),
            OtherRow::BadFooter(e) => trace
                .warnings
                .push(format!("line {line}: unreadable footer ignored: {e}")),
            OtherRow::UnknownKind(kind) => {
                self.unknown_kinds += 1;
                if self.unknown_kinds <= 3 {
                    trace
                        .warnings
                        .push(format!("line {line}: unknown row kind {kind:?} ignored"));
                }
            }
        }
    }

    /// Forgets gaps that ended before `t_ns` and events before it (open gaps are kept).
    pub fn forget_before(&mut self, t_ns: u64) {
        let trace = &mut self.trace;
        if trace
            .gaps
            .iter()
            .any(|g| g.end_ns.is_some_and(|e| e < t_ns))
        {
            trace.gaps.retain(|g| g.end_ns.is_none_or(|e| e >= t_ns));
            self.open_gaps = trace
                .gaps
                .iter()
                .enumerate()
                .filter(|(_, g)| g.end_ns.is_none())
                .map(|(i, g)| (g.source.clone(), i))
                .collect();
        }
        if trace.events.first().is_some_and(|e| e.t_ns < t_ns) {
            trace.events.retain(|e| e.t_ns >= t_ns);
        }
        if trace.anchors.len() > 1 {
            let last = trace.anchors.len() - 1;
            trace.anchors.drain(..last);
        }
    }

    /// The warnings owed once every row has been read, after those found on the way and
    /// the reader's own: unknown row kinds in all, no footer.
    pub fn end_warnings(&self, reader: &[String]) -> Vec<String> {
        let mut w = self.trace.warnings.clone();
        w.extend(reader.iter().cloned());
        if self.unknown_kinds > 3 {
            w.push(format!(
                "{} rows of unknown kinds ignored in all",
                self.unknown_kinds
            ));
        }
        if self.trace.footer.is_none() {
            w.push(
                "no footer: the recording did not end cleanly (killed or crashed); the data up \
                 to the last flush is here"
                    .into(),
            );
        }
        w
    }

    /// The whole trace: channels sorted by time, marks by time (ties in file order),
    /// every warning.
    pub fn finish(mut self, reader_warnings: &[String]) -> Trace {
        self.trace.warnings = self.end_warnings(reader_warnings);
        for c in &mut self.trace.channels {
            sort_by_time(c);
        }
        self.trace.marks.sort_by_key(|m| m.t_ns);
        self.trace
    }
}

fn sort_by_time(c: &mut ChannelData) {
    if c.t_ns.windows(2).all(|w| w[0] <= w[1]) {
        return;
    }
    let mut idx: Vec<usize> = (0..c.t_ns.len()).collect();
    idx.sort_by_key(|&i| c.t_ns[i]);
    c.t_ns = idx.iter().map(|&i| c.t_ns[i]).collect();
    c.values = idx.iter().map(|&i| c.values[i]).collect();
}

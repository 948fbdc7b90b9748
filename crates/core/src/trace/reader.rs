//! Reading traces back: strict about what a writer could never have produced (with the line
//! number), lenient about what a crash leaves (a last line cut short, no footer).

use super::{
    COLUMNS_LINE, FOOTER_PREFIX, Footer, HEADER_PREFIX, Header, MAGIC_LINE, RowKind, unescape_text,
};
use crate::channel::ChannelSpec;
use crate::clock::{AnchorMap, ClockAnchor};
use crate::error::{Error, Result};
use crate::marks::{Mark, MarkVia, is_valid_label};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

/// The longest line accepted (a header with hundreds of channels fits easily).
const MAX_LINE_BYTES: usize = 16 << 20;

/// One channel's samples, sorted by time.
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelData {
    /// What the channel is.
    pub spec: ChannelSpec,
    /// The source that filled it.
    pub source: String,
    /// Sample times, `CLOCK_MONOTONIC` ns, non-decreasing.
    pub t_ns: Vec<u64>,
    /// Values in the channel's unit, one per time.
    pub values: Vec<f64>,
}

/// A stretch during which a source did not answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Gap {
    /// The source.
    pub source: String,
    /// When it stopped answering.
    pub start_ns: u64,
    /// When it answered again (`None`: never, before the trace ended).
    pub end_ns: Option<u64>,
    /// Why.
    pub reason: String,
}

/// A row that is neither a sample, a mark, an anchor nor a gap.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceEvent {
    /// Its time.
    pub t_ns: u64,
    /// Its kind (reset, flag, drop, bad mark, event).
    pub kind: RowKind,
    /// The channel, source or transport it concerns.
    pub channel: String,
    /// The value column.
    pub value: Option<f64>,
    /// The label column.
    pub label: String,
    /// The text column, unescaped.
    pub text: String,
    /// Line number in the trace.
    pub line: u64,
}

/// A whole trace in memory.
#[derive(Clone, Debug)]
pub struct Trace {
    /// The file it came from.
    pub path: PathBuf,
    /// The header.
    pub header: Header,
    /// The footer; `None` when the recording was cut short.
    pub footer: Option<Footer>,
    /// One entry per channel in the header, in header order.
    pub channels: Vec<ChannelData>,
    /// Marks, sorted by time (ties keep file order).
    pub marks: Vec<Mark>,
    /// Clock anchors, in file order.
    pub anchors: Vec<ClockAnchor>,
    /// Source gaps.
    pub gaps: Vec<Gap>,
    /// Resets, flags, drops, bad marks and other events.
    pub events: Vec<TraceEvent>,
    /// Things that were wrong but not fatal (a cut last line, unknown row kinds).
    pub warnings: Vec<String>,
}

impl Trace {
    /// A channel by name.
    pub fn channel(&self, name: &str) -> Option<&ChannelData> {
        self.channels.iter().find(|c| c.spec.name == name)
    }
    /// Whether the recording ended cleanly (footer present).
    pub fn complete(&self) -> bool {
        self.footer.as_ref().is_some_and(|f| f.complete)
    }
    /// Each mark label with its count.
    pub fn labels(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for mark in &self.marks {
            *m.entry(mark.label.clone()).or_insert(0) += 1;
        }
        m
    }
    /// Maps wall-clock times onto this trace's monotonic base.
    pub fn anchor_map(&self) -> AnchorMap {
        let mut m = AnchorMap::new();
        m.push(self.header.start_anchor);
        for a in &self.anchors {
            m.push(*a);
        }
        if let Some(f) = &self.footer {
            m.push(f.end_anchor);
        }
        m
    }
    /// Earliest and latest sample or mark time.
    pub fn time_range_ns(&self) -> Option<(u64, u64)> {
        let firsts = self.channels.iter().filter_map(|c| c.t_ns.first().copied());
        let lasts = self.channels.iter().filter_map(|c| c.t_ns.last().copied());
        let mark_t = self.marks.iter().map(|m| m.t_ns);
        let lo = firsts.chain(mark_t.clone()).min()?;
        let hi = lasts.chain(mark_t).max()?;
        Some((lo, hi))
    }
    /// Total number of samples.
    pub fn sample_count(&self) -> usize {
        self.channels.iter().map(|c| c.t_ns.len()).sum()
    }
}

/// Reads a trace file.
pub fn read_trace(path: &Path) -> Result<Trace> {
    let f = std::fs::File::open(path).map_err(|e| Error::io("cannot open trace", path, e))?;
    read_trace_from(BufReader::with_capacity(1 << 20, f), path)
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
        match avail.iter().position(|&b| b == b'\n') {
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

struct Parser {
    path: PathBuf,
    line: u64,
}

impl Parser {
    fn err(&self, message: impl Into<String>) -> Error {
        Error::TraceParse {
            path: self.path.clone(),
            line: self.line,
            message: message.into(),
        }
    }
    fn too_long(&self) -> Error {
        self.err(format!(
            "the line is longer than {} MiB without a newline: not a flinch trace, or a \
             damaged one",
            MAX_LINE_BYTES >> 20
        ))
    }
}

/// Reads a trace from any buffered reader; `path` names it in errors.
pub fn read_trace_from<R: BufRead>(mut r: R, path: &Path) -> Result<Trace> {
    let mut p = Parser {
        path: path.to_owned(),
        line: 0,
    };
    let mut buf = Vec::with_capacity(4096);
    let io_err = |e: std::io::Error| Error::io("cannot read trace", path, e);

    // Magic line.
    p.line = 1;
    match read_line(&mut r, &mut buf).map_err(io_err)? {
        Some(LineEnd::Newline | LineEnd::Eof) if buf == MAGIC_LINE.as_bytes() => {}
        Some(_) => {
            let shown = String::from_utf8_lossy(&buf[..buf.len().min(60)]).into_owned();
            return Err(p.err(format!(
                "not a flinch trace: the first line is {shown:?}, expected {MAGIC_LINE:?} \
                 (was this file written by `flinch record`?)"
            )));
        }
        None => return Err(p.err("empty file: not a flinch trace")),
    }
    // Header line.
    p.line = 2;
    let header: Header = match read_line(&mut r, &mut buf).map_err(io_err)? {
        Some(LineEnd::TooLong) => return Err(p.too_long()),
        Some(LineEnd::Newline) if buf.starts_with(HEADER_PREFIX.as_bytes()) => {
            serde_json::from_slice(&buf[HEADER_PREFIX.len()..]).map_err(|e| {
                p.err(format!(
                    "the header is not valid JSON of a flinch trace: {e}"
                ))
            })?
        }
        None => {
            return Err(p.err(
                "the file ends before the header line: it was cut short right after it was \
                 created, or it is not a flinch trace",
            ));
        }
        _ => {
            return Err(p.err(format!(
                "expected the header line starting with {HEADER_PREFIX:?}"
            )));
        }
    };
    if header.version > super::FORMAT_VERSION {
        return Err(p.err(format!(
            "trace format version {} is newer than this flinch understands ({}); upgrade flinch",
            header.version,
            super::FORMAT_VERSION
        )));
    }
    let mut channels: Vec<ChannelData> = Vec::new();
    let mut by_name: HashMap<String, usize> = HashMap::new();
    for s in &header.sources {
        for c in &s.channels {
            if by_name.insert(c.name.clone(), channels.len()).is_some() {
                return Err(p.err(format!("the header names channel {:?} twice", c.name)));
            }
            channels.push(ChannelData {
                spec: c.clone(),
                source: s.name.clone(),
                t_ns: Vec::new(),
                values: Vec::new(),
            });
        }
    }
    // Column line.
    p.line = 3;
    match read_line(&mut r, &mut buf).map_err(io_err)? {
        Some(LineEnd::Newline) if buf == COLUMNS_LINE.as_bytes() => {}
        None => {
            return Err(p.err(
                "the file ends before the column line: it was cut short right after it was \
                 created",
            ));
        }
        _ => return Err(p.err(format!("expected the column line {COLUMNS_LINE:?}"))),
    }

    let mut trace = Trace {
        path: path.to_owned(),
        header,
        footer: None,
        channels: Vec::new(),
        marks: Vec::new(),
        anchors: Vec::new(),
        gaps: Vec::new(),
        events: Vec::new(),
        warnings: Vec::new(),
    };
    let mut open_gaps: HashMap<String, usize> = HashMap::new();
    let mut unknown_kinds = 0u64;
    // For each channel, the channel of the sample row that came after its last one.
    let mut follows: Vec<usize> = (0..channels.len()).map(|i| i + 1).collect();
    let mut prev_channel = channels.len().saturating_sub(1);

    while let Some(end) = read_line(&mut r, &mut buf).map_err(io_err)? {
        p.line += 1;
        if end == LineEnd::TooLong {
            return Err(p.too_long());
        }
        if end == LineEnd::Eof {
            trace.warnings.push(format!(
                "line {}: the last line is cut short (the recording was interrupted mid-write); ignored",
                p.line
            ));
            break;
        }
        if buf.is_empty() {
            continue;
        }
        if buf[0] == b'#' {
            if let Some(json) = buf.strip_prefix(FOOTER_PREFIX.as_bytes()) {
                match serde_json::from_slice::<Footer>(json) {
                    Ok(f) => trace.footer = Some(f),
                    Err(e) => trace
                        .warnings
                        .push(format!("line {}: unreadable footer ignored: {e}", p.line)),
                }
            }
            continue;
        }
        let text = std::str::from_utf8(&buf).map_err(|_| {
            p.err("not valid UTF-8: a flinch trace is UTF-8 text; the file is damaged")
        })?;
        let mut cols = text.split(',');
        let mut col = || cols.next();
        let (Some(t), Some(kind), Some(channel), Some(value), Some(label), Some(fields), None) =
            (col(), col(), col(), col(), col(), col(), col())
        else {
            return Err(p.err(format!(
                "expected 6 comma-separated columns ({COLUMNS_LINE}), found {}",
                text.split(',').count()
            )));
        };
        let t_ns: u64 = parse_u64(t).ok_or_else(|| {
            p.err(format!(
                "t_ns {t:?} is not an unsigned integer of nanoseconds"
            ))
        })?;
        let value_text = value;
        let value = if value.is_empty() {
            None
        } else {
            let v: f64 = value
                .parse()
                .map_err(|_| p.err(format!("value {value:?} is not a number")))?;
            if !v.is_finite() {
                return Err(p.err(format!("value {value:?} is not finite")));
            }
            Some(v)
        };
        let Some(kind) = RowKind::from_name(kind) else {
            unknown_kinds += 1;
            if unknown_kinds <= 3 {
                trace.warnings.push(format!(
                    "line {}: unknown row kind {kind:?} ignored",
                    p.line
                ));
            }
            continue;
        };
        match kind {
            RowKind::Sample => {
                // Rows come in a repeating order of channels: try the channel that followed
                // the previous one last time before hashing the name.
                let guess = follows.get(prev_channel).copied().unwrap_or(0);
                let i = match channels.get(guess) {
                    Some(c) if c.spec.name == channel => guess,
                    _ => *by_name.get(channel).ok_or_else(|| {
                        p.err(format!(
                            "sample of channel {channel:?}, which the header does not list"
                        ))
                    })?,
                };
                if let Some(f) = follows.get_mut(prev_channel) {
                    *f = i;
                }
                prev_channel = i;
                let v = value.ok_or_else(|| p.err("sample row without a value"))?;
                channels[i].t_ns.push(t_ns);
                channels[i].values.push(v);
            }
            RowKind::Mark => {
                let via = MarkVia::from_name(channel).ok_or_else(|| {
                    p.err(format!(
                        "mark received via {channel:?}: expected fifo, file or api"
                    ))
                })?;
                if !is_valid_label(label) {
                    return Err(p.err(format!("mark label {label:?} is not [A-Za-z0-9_.:/-]+")));
                }
                let mut fs = Vec::new();
                for f in fields.split(' ').filter(|f| !f.is_empty()) {
                    let (k, v) = f
                        .split_once('=')
                        .ok_or_else(|| p.err(format!("mark field {f:?} is not key=value")))?;
                    fs.push((k.to_owned(), unescape_text(v)));
                }
                // The delay is an integer of ns: read it exactly (an f64 would round delays
                // over 2^53 ns); `as i128` saturates the rest, and the sum is clamped.
                let delay = value_text.parse::<i128>().ok().or(value.map(|d| d as i128));
                let recv_ns = match delay {
                    Some(d) => (t_ns as i128).saturating_add(d).clamp(0, u64::MAX as i128) as u64,
                    None => t_ns,
                };
                trace.marks.push(Mark {
                    t_ns,
                    recv_ns,
                    t_from_client: value.is_some(),
                    label: label.to_owned(),
                    fields: fs,
                    via,
                });
            }
            RowKind::Anchor => {
                let real_ns = fields
                    .strip_prefix("real_ns=")
                    .and_then(|v| v.parse::<i64>().ok())
                    .ok_or_else(|| {
                        p.err(format!(
                            "anchor row needs real_ns=<integer>, found {fields:?}"
                        ))
                    })?;
                trace.anchors.push(ClockAnchor {
                    mono_ns: t_ns,
                    real_ns,
                });
            }
            RowKind::Gap => {
                let reason = unescape_text(fields);
                match label {
                    "start" => {
                        if !open_gaps.contains_key(channel) {
                            open_gaps.insert(channel.to_owned(), trace.gaps.len());
                            trace.gaps.push(Gap {
                                source: channel.to_owned(),
                                start_ns: t_ns,
                                end_ns: None,
                                reason,
                            });
                        }
                    }
                    "end" => {
                        if let Some(i) = open_gaps.remove(channel) {
                            let start = trace.gaps[i].start_ns;
                            if t_ns < start {
                                trace.warnings.push(format!(
                                    "line {}: gap of {channel} ends at {t_ns}, before it started \
                                     ({start}); taken as ending where it started",
                                    p.line
                                ));
                            }
                            trace.gaps[i].end_ns = Some(t_ns.max(start));
                        }
                    }
                    other => {
                        return Err(
                            p.err(format!("gap row label {other:?}: expected start or end"))
                        );
                    }
                }
            }
            _ => trace.events.push(TraceEvent {
                t_ns,
                kind,
                channel: channel.to_owned(),
                value,
                label: unescape_text(label),
                text: unescape_text(fields),
                line: p.line,
            }),
        }
    }
    if unknown_kinds > 3 {
        trace.warnings.push(format!(
            "{unknown_kinds} rows of unknown kinds ignored in all"
        ));
    }
    if trace.footer.is_none() {
        trace.warnings.push(
            "no footer: the recording did not end cleanly (killed or crashed); the data up to the \
             last flush is here"
                .into(),
        );
    }
    for c in &mut channels {
        sort_by_time(c);
    }
    trace.marks.sort_by_key(|m| m.t_ns);
    trace.channels = channels;
    Ok(trace)
}

/// Parses an unsigned decimal integer as `str::parse::<u64>` does, with a fast path for
/// plain digits (every `t_ns` a writer produces) at about a third of the cost.
fn parse_u64(s: &str) -> Option<u64> {
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

fn sort_by_time(c: &mut ChannelData) {
    if c.t_ns.windows(2).all(|w| w[0] <= w[1]) {
        return;
    }
    let mut idx: Vec<usize> = (0..c.t_ns.len()).collect();
    idx.sort_by_key(|&i| c.t_ns[i]);
    c.t_ns = idx.iter().map(|&i| c.t_ns[i]).collect();
    c.values = idx.iter().map(|&i| c.values[i]).collect();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::{PowerMethod, SourceInfo};
    use crate::clock::{ClockAnchor, ManualClock};
    use crate::source::Reading;
    use crate::trace::{Footer, TraceWriter};
    use std::sync::Arc;

    #[test]
    fn parse_u64_agrees_with_str_parse() {
        for s in [
            "0",
            "7",
            "0000123",
            "81234567890123",
            "9999999999999999999",
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999999999",
            "+5",
            "-5",
            "",
            " 5",
            "5 ",
            "1e9",
            "12a",
            "١٢",
        ] {
            assert_eq!(parse_u64(s), s.parse::<u64>().ok(), "{s:?}");
        }
    }

    #[test]
    fn samples_reach_their_channels_in_any_row_order() {
        let source = SourceInfo::new("s", "test", crate::DeviceClass::Other).with_channels(
            ["a", "b", "c", "d"]
                .iter()
                .map(|n| ChannelSpec::power("dev", n, PowerMethod::Instant))
                .collect(),
        );
        let header = Header::new(10_000_000, ClockAnchor::default(), vec![source]);
        let clock = Arc::new(ManualClock::new(0, 0));
        let mut w = TraceWriter::new(Vec::new(), &header, clock, 1_000_000_000).unwrap();
        // A regular order first (the lookup learns it), then breaks in it, repeats,
        // channels missing from some ticks, and the regular order again.
        let order = [
            0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 2, 1, 3, 3, 3, 0, 0, 2, 1, 3, 0, 1, 2, 3, 1, 0,
            1, 2, 3,
        ];
        for (k, &ch) in order.iter().enumerate() {
            w.sample(&Reading {
                channel: ch,
                t_ns: 1000 + k as u64,
                value: (ch * 1000) as f64 + k as f64,
            })
            .unwrap();
        }
        let bytes = w.finish(Footer::default()).unwrap();
        let t = read_trace_from(&bytes[..], "mem".as_ref()).unwrap();
        for ch in 0..4u32 {
            let want: Vec<(u64, f64)> = order
                .iter()
                .enumerate()
                .filter(|(_, c)| **c == ch)
                .map(|(k, _)| (1000 + k as u64, (ch * 1000) as f64 + k as f64))
                .collect();
            let c = &t.channels[ch as usize];
            let got: Vec<(u64, f64)> = c
                .t_ns
                .iter()
                .copied()
                .zip(c.values.iter().copied())
                .collect();
            assert_eq!(got, want, "channel {}", c.spec.name);
        }
    }
}

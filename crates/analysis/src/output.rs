//! Writing an analysis of any size: span reports put back in start order with only the
//! spans that overtook an older one held back ([`StartOrder`], which moves what it holds to
//! temporary files past a budget), text kept until the end without keeping it in memory
//! ([`Spill`]), and the `--json` object written piece by piece exactly as
//! `serde_json::to_string_pretty` writes a whole [`Report`](crate::Report) ([`JsonReport`]).

use crate::report::{IdleUsed, SpanReport, Summary, UnmatchedMark};
use crate::stream::{Outcome, SpanKey, SpanSink};
use crate::thresholds::Thresholds;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};

/// Bytes kept in memory before text goes to a temporary file.
pub const MEMORY_BUDGET: usize = 32 << 20;

/// Text appended in order, kept in memory up to a budget, then in an unnamed temporary
/// file (removed when dropped).
pub struct Spill {
    mem: Vec<u8>,
    file: Option<BufWriter<File>>,
    budget: usize,
}

impl Spill {
    /// Keeps up to `budget` bytes in memory.
    pub fn new(budget: usize) -> Self {
        Spill {
            mem: Vec::new(),
            file: None,
            budget,
        }
    }

    /// Appends.
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        if let Some(f) = &mut self.file {
            return f.write_all(bytes);
        }
        self.mem.extend_from_slice(bytes);
        if self.mem.len() > self.budget {
            let mut f = BufWriter::with_capacity(1 << 20, tempfile::tempfile()?);
            f.write_all(&self.mem)?;
            self.mem = Vec::new();
            self.file = Some(f);
        }
        Ok(())
    }

    /// Whether it went to a file.
    pub fn spilled(&self) -> bool {
        self.file.is_some()
    }

    /// Writes everything appended to `out`.
    pub fn copy_to(self, out: &mut dyn Write) -> io::Result<()> {
        match self.file {
            None => out.write_all(&self.mem),
            Some(f) => {
                let mut f = f.into_inner().map_err(|e| e.into_error())?;
                f.seek(SeekFrom::Start(0))?;
                io::copy(&mut BufReader::with_capacity(1 << 20, f), out)?;
                Ok(())
            }
        }
    }
}

/// A sorted run of held entries in a temporary file.
struct Run {
    r: BufReader<File>,
    head: Option<(SpanKey, String)>,
}

impl Run {
    fn next(&mut self) -> io::Result<()> {
        let mut b = [0u8; 24];
        match self.r.read_exact(&mut b) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                self.head = None;
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        let word =
            |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or_default());
        let mut text = vec![0u8; word(2) as usize];
        self.r.read_exact(&mut text)?;
        let text =
            String::from_utf8(text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        self.head = Some(((word(0), word(1)), text));
        Ok(())
    }
}

/// Puts text that comes in any order back in key order, handing it out as soon as no
/// smaller key can come ([`StartOrder::release`]). What it holds stays in memory up to a
/// budget; past it, sorted runs go to temporary files and are merged back.
pub struct StartOrder {
    mem: BTreeMap<SpanKey, String>,
    mem_bytes: usize,
    budget: usize,
    runs: Vec<Run>,
    held: usize,
}

impl StartOrder {
    /// Holds up to `budget` bytes in memory.
    pub fn new(budget: usize) -> Self {
        StartOrder {
            mem: BTreeMap::new(),
            mem_bytes: 0,
            budget,
            runs: Vec::new(),
            held: 0,
        }
    }

    /// Entries held.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Sorted runs written to temporary files so far (and not yet merged back).
    pub fn runs(&self) -> usize {
        self.runs.len()
    }

    /// Adds an entry.
    pub fn push(&mut self, key: SpanKey, text: String) -> io::Result<()> {
        self.mem_bytes += text.len() + 64;
        self.held += 1;
        self.mem.insert(key, text);
        if self.mem_bytes > self.budget {
            let mut w = BufWriter::with_capacity(1 << 20, tempfile::tempfile()?);
            for ((a, b), text) in std::mem::take(&mut self.mem) {
                w.write_all(&a.to_le_bytes())?;
                w.write_all(&b.to_le_bytes())?;
                w.write_all(&(text.len() as u64).to_le_bytes())?;
                w.write_all(text.as_bytes())?;
            }
            let mut f = w.into_inner().map_err(|e| e.into_error())?;
            f.seek(SeekFrom::Start(0))?;
            let mut run = Run {
                r: BufReader::with_capacity(64 << 10, f),
                head: None,
            };
            run.next()?;
            self.runs.push(run);
            self.mem_bytes = 0;
        }
        Ok(())
    }

    /// Hands out, in key order, every entry with a key below `below`.
    pub fn release(
        &mut self,
        below: SpanKey,
        f: &mut dyn FnMut(SpanKey, String) -> io::Result<()>,
    ) -> io::Result<()> {
        loop {
            let mem_key = self.mem.first_key_value().map(|(k, _)| *k);
            let run = self
                .runs
                .iter()
                .enumerate()
                .filter_map(|(i, r)| r.head.as_ref().map(|(k, _)| (*k, i)))
                .min();
            let take_mem = match (mem_key, run) {
                (Some(m), Some((r, _))) => m < r,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => return Ok(()),
            };
            if take_mem {
                let (k, text) = self.mem.pop_first().expect("a first entry");
                if k >= below {
                    self.mem.insert(k, text);
                    return Ok(());
                }
                self.mem_bytes = self.mem_bytes.saturating_sub(text.len() + 64);
                self.held -= 1;
                f(k, text)?;
            } else {
                let (_, i) = run.expect("a run");
                let r = &mut self.runs[i];
                let (k, text) = r.head.take().expect("a head");
                if k >= below {
                    r.head = Some((k, text));
                    return Ok(());
                }
                r.next()?;
                if r.head.is_none() {
                    self.runs.swap_remove(i);
                }
                self.held -= 1;
                f(k, text)?;
            }
        }
    }
}

/// Indents every line after the first by `levels` × two spaces: a value pretty-printed on
/// its own, put where `to_string_pretty` would nest it `levels` deep.
pub fn indent(pretty: &str, levels: usize) -> String {
    let pad = "  ".repeat(levels);
    pretty.replace('\n', &format!("\n{pad}"))
}

#[derive(Serialize)]
struct Head<'a> {
    trace: &'a str,
    from: &'a str,
    to: &'a str,
    idle: &'a Option<IdleUsed>,
    thresholds: &'a Thresholds,
    warnings: &'a [String],
}

/// The `--json` object written in pieces: spans (each already pretty-printed by
/// [`JsonReport::span_text`]) first, in start order, the rest once known. The bytes are
/// those of `serde_json::to_string_pretty(&report)`.
pub struct JsonReport {
    spans: Spill,
    count: usize,
}

impl Default for JsonReport {
    fn default() -> Self {
        Self::new()
    }
}

impl JsonReport {
    /// Nothing written yet.
    pub fn new() -> Self {
        JsonReport {
            spans: Spill::new(MEMORY_BUDGET),
            count: 0,
        }
    }

    /// A span as it will sit in the `spans` array (made on any thread).
    pub fn span_text<T: Serialize>(span: &T) -> io::Result<String> {
        let pretty = serde_json::to_string_pretty(span).map_err(io::Error::other)?;
        Ok(format!("    {}", indent(&pretty, 2)))
    }

    /// The next span, in start order.
    pub fn push_span(&mut self, text: &str) -> io::Result<()> {
        if self.count > 0 {
            self.spans.write(b",\n")?;
        }
        self.spans.write(text.as_bytes())?;
        self.count += 1;
        Ok(())
    }

    /// Spans written.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Writes the whole object (and a newline).
    pub fn finish(self, outcome: &Outcome, out: &mut dyn Write) -> io::Result<()> {
        let head = Head {
            trace: &outcome.trace,
            from: &outcome.from,
            to: &outcome.to,
            idle: &outcome.idle,
            thresholds: &outcome.thresholds,
            warnings: &outcome.warnings,
        };
        let head = serde_json::to_string_pretty(&head).map_err(io::Error::other)?;
        let head = head.strip_suffix("\n}").unwrap_or(&head);
        out.write_all(head.as_bytes())?;
        out.write_all(b",\n  \"spans\": ")?;
        if self.count == 0 {
            out.write_all(b"[]")?;
        } else {
            out.write_all(b"[\n")?;
            self.spans.copy_to(out)?;
            out.write_all(b"\n  ]")?;
        }
        write_tail(&outcome.unmatched, &outcome.summary, out)?;
        out.write_all(b"\n}\n")
    }
}

/// The [`SpanSink`] of `flinch analyze --json` (and the Python package's `analyze`): spans
/// put back in start order, kept (in a temporary file past a budget) until the warnings
/// that come first in the object are known, then written by [`JsonSink::finish`].
pub struct JsonSink {
    order: StartOrder,
    json: JsonReport,
}

impl Default for JsonSink {
    fn default() -> Self {
        Self::new()
    }
}

impl JsonSink {
    /// No span yet.
    pub fn new() -> Self {
        JsonSink {
            order: StartOrder::new(MEMORY_BUDGET),
            json: JsonReport::new(),
        }
    }

    /// Writes the whole object (and a newline), once the stream's run returned `outcome`.
    pub fn finish(self, outcome: &Outcome, out: &mut dyn Write) -> io::Result<()> {
        self.json.finish(outcome, out)
    }
}

fn sink_err(e: io::Error) -> flinch_core::error::Error {
    flinch_core::error::Error::io("cannot write the analysis", "a temporary file", e)
}

impl SpanSink for JsonSink {
    type Item = io::Result<String>;
    fn prepare(&self, _key: SpanKey, r: SpanReport) -> Self::Item {
        JsonReport::span_text(&r)
    }
    fn span(&mut self, key: SpanKey, item: Self::Item) -> flinch_core::error::Result<()> {
        self.order
            .push(key, item.map_err(sink_err)?)
            .map_err(sink_err)
    }
    fn settled(&mut self, key: SpanKey) -> flinch_core::error::Result<()> {
        let json = &mut self.json;
        self.order
            .release(key, &mut |_, text| json.push_span(&text))
            .map_err(sink_err)
    }
}

fn write_tail(
    unmatched: &[UnmatchedMark],
    summary: &Summary,
    out: &mut dyn Write,
) -> io::Result<()> {
    let u = serde_json::to_string_pretty(unmatched).map_err(io::Error::other)?;
    let s = serde_json::to_string_pretty(summary).map_err(io::Error::other)?;
    write!(
        out,
        ",\n  \"unmatched\": {},\n  \"summary\": {}",
        indent(&u, 1),
        indent(&s, 1)
    )
}

/// The last line of `--jsonl`: the report without its spans, on one line.
pub fn jsonl_tail(outcome: &Outcome) -> io::Result<String> {
    #[derive(Serialize)]
    struct Tail<'a> {
        trace: &'a str,
        from: &'a str,
        to: &'a str,
        idle: &'a Option<IdleUsed>,
        thresholds: &'a Thresholds,
        warnings: &'a [String],
        unmatched: &'a [UnmatchedMark],
        summary: &'a Summary,
    }
    serde_json::to_string(&Tail {
        trace: &outcome.trace,
        from: &outcome.from,
        to: &outcome.to,
        idle: &outcome.idle,
        thresholds: &outcome.thresholds,
        warnings: &outcome.warnings,
        unmatched: &outcome.unmatched,
        summary: &outcome.summary,
    })
    .map_err(io::Error::other)
}

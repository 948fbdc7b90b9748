//! Writing traces: buffered, append-only, flushed on every mark and at least every second.

use super::{
    COLUMNS_LINE, FOOTER_PREFIX, Footer, HEADER_PREFIX, Header, MAGIC_LINE, RowKind, escape_text,
};
use crate::clock::{Clock, ClockAnchor};
use crate::error::{Error, Result};
use crate::marks::Mark;
use crate::source::Reading;
use rustix::fs::OFlags;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

/// Creates a new trace file, never through a symlink and never over an existing file unless
/// `force` (then the old file, or link, is removed first, not written through).
pub fn create_trace_file(path: &Path, force: bool) -> Result<File> {
    let open = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags((OFlags::NOFOLLOW | OFlags::CLOEXEC).bits() as i32)
            .open(path)
    };
    match open() {
        Ok(f) => Ok(f),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && force => {
            let md = std::fs::symlink_metadata(path)
                .map_err(|e| Error::io("cannot inspect", path, e))?;
            if md.is_dir() {
                return Err(Error::Invalid(format!(
                    "{} is a directory; pass a file path to --out",
                    path.display()
                )));
            }
            std::fs::remove_file(path).map_err(|e| Error::io("cannot replace", path, e))?;
            open().map_err(|e| Error::io("cannot create trace", path, e))
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(Error::Invalid(format!(
            "{} already exists: choose another --out or pass --force to replace it",
            path.display()
        ))),
        Err(e) => Err(Error::io("cannot create trace", path, e)),
    }
}

/// Writes one trace. Rows are formatted straight into the buffer: no heap allocation per
/// sample.
pub struct TraceWriter<W: Write> {
    out: BufWriter<W>,
    clock: Arc<dyn Clock>,
    channel_names: Vec<String>,
    flush_interval_ns: u64,
    last_flush_ns: u64,
    scratch: String,
    samples: u64,
    marks: u64,
    bad_marks: u64,
    gaps: u64,
}

impl<W: Write> TraceWriter<W> {
    /// Writes the magic line, the header and the column line, and flushes them.
    /// `flush_interval_ns` bounds how long a written row may sit in the buffer (1 s in
    /// recordings).
    pub fn new(
        out: W,
        header: &Header,
        clock: Arc<dyn Clock>,
        flush_interval_ns: u64,
    ) -> io::Result<Self> {
        let mut out = BufWriter::with_capacity(256 * 1024, out);
        let json = serde_json::to_string(header).map_err(io::Error::other)?;
        writeln!(out, "{MAGIC_LINE}")?;
        writeln!(out, "{HEADER_PREFIX}{json}")?;
        writeln!(out, "{COLUMNS_LINE}")?;
        out.flush()?;
        let channel_names = header
            .sources
            .iter()
            .flat_map(|s| s.channels.iter().map(|c| c.name.clone()))
            .collect();
        let now = clock.now_ns();
        Ok(TraceWriter {
            out,
            clock,
            channel_names,
            flush_interval_ns,
            last_flush_ns: now,
            scratch: String::with_capacity(8192),
            samples: 0,
            marks: 0,
            bad_marks: 0,
            gaps: 0,
        })
    }

    fn channel_name(&self, channel: u32) -> &str {
        self.channel_names
            .get(channel as usize)
            .map(String::as_str)
            .unwrap_or("?")
    }

    /// Writes one sample row.
    pub fn sample(&mut self, r: &Reading) -> io::Result<()> {
        let name = self
            .channel_names
            .get(r.channel as usize)
            .map(String::as_str)
            .unwrap_or("?");
        writeln!(self.out, "{},sample,{},{},,", r.t_ns, name, r.value)?;
        self.samples += 1;
        Ok(())
    }

    /// Writes a mark and flushes at once: a received mark is never left in a buffer.
    pub fn mark(&mut self, m: &Mark) -> io::Result<()> {
        self.mark_buffered(m)?;
        self.flush()
    }

    /// Writes a mark without flushing (the caller flushes after a burst).
    pub fn mark_buffered(&mut self, m: &Mark) -> io::Result<()> {
        self.scratch.clear();
        for (i, (k, v)) in m.fields.iter().enumerate() {
            if i > 0 {
                self.scratch.push(' ');
            }
            self.scratch.push_str(k);
            self.scratch.push('=');
            // Fields are separated by spaces: a space in a value (which no parsed mark line
            // has, but a `Mark` built by hand or read from a trace can) is escaped too, or
            // the row would not read back (found writing the trace_reader fuzz target).
            for (j, piece) in v.split(' ').enumerate() {
                if j > 0 {
                    self.scratch.push_str("%20");
                }
                escape_text(piece, &mut self.scratch);
            }
        }
        if m.t_from_client {
            let delay = m.recv_ns as i128 - m.t_ns as i128;
            writeln!(
                self.out,
                "{},mark,{},{},{},{}",
                m.t_ns,
                m.via.name(),
                delay,
                m.label,
                self.scratch
            )?;
        } else {
            writeln!(
                self.out,
                "{},mark,{},,{},{}",
                m.t_ns,
                m.via.name(),
                m.label,
                self.scratch
            )?;
        }
        self.marks += 1;
        Ok(())
    }

    /// Writes a (monotonic, realtime) anchor row.
    pub fn anchor(&mut self, a: ClockAnchor) -> io::Result<()> {
        writeln!(self.out, "{},anchor,,,,real_ns={}", a.mono_ns, a.real_ns)
    }

    fn text_row(
        &mut self,
        t_ns: u64,
        kind: RowKind,
        channel: &str,
        value: Option<f64>,
        label: &str,
        text: &str,
    ) -> io::Result<()> {
        let mut esc_label = String::new();
        escape_text(label, &mut esc_label);
        self.scratch.clear();
        escape_text(text, &mut self.scratch);
        match value {
            Some(v) => writeln!(
                self.out,
                "{t_ns},{},{channel},{v},{esc_label},{}",
                kind.name(),
                self.scratch
            ),
            None => writeln!(
                self.out,
                "{t_ns},{},{channel},,{esc_label},{}",
                kind.name(),
                self.scratch
            ),
        }
    }

    /// A source stopped answering (`start`) or answered again (`end`).
    pub fn gap(&mut self, t_ns: u64, source: &str, start: bool, reason: &str) -> io::Result<()> {
        if start {
            self.gaps += 1;
        }
        self.text_row(
            t_ns,
            RowKind::Gap,
            source,
            None,
            if start { "start" } else { "end" },
            reason,
        )
    }

    /// A counter channel restarted from zero.
    pub fn reset(&mut self, t_ns: u64, channel: u32, from: f64, to: f64) -> io::Result<()> {
        let name = self.channel_name(channel).to_owned();
        self.text_row(
            t_ns,
            RowKind::Reset,
            &name,
            Some(to),
            "reset",
            &format!("from={from}"),
        )
    }

    /// A reading flagged as unusable (`what`: `implausible`, `out-of-range`).
    pub fn flag(
        &mut self,
        t_ns: u64,
        channel: u32,
        value: f64,
        what: &str,
        detail: &str,
    ) -> io::Result<()> {
        let name = self.channel_name(channel).to_owned();
        self.text_row(t_ns, RowKind::Flag, &name, Some(value), what, detail)
    }

    /// Readings of `source` were dropped because the writer fell behind.
    pub fn dropped(&mut self, t_ns: u64, source: &str, count: u64) -> io::Result<()> {
        self.text_row(
            t_ns,
            RowKind::Drop,
            source,
            Some(count as f64),
            "dropped",
            "readings dropped: the trace writer fell behind",
        )
    }

    /// A malformed mark line.
    pub fn bad_mark(&mut self, recv_ns: u64, via: &str, line: &str, error: &str) -> io::Result<()> {
        self.bad_marks += 1;
        self.text_row(recv_ns, RowKind::BadMark, via, None, error, line)
    }

    /// Any other event (command start and exit, ...).
    pub fn event(&mut self, t_ns: u64, label: &str, text: &str) -> io::Result<()> {
        self.text_row(t_ns, RowKind::Event, "", None, label, text)
    }

    /// Flushes if the last flush is at least the flush interval ago. Returns whether it did.
    pub fn maybe_flush(&mut self) -> io::Result<bool> {
        let now = self.clock.now_ns();
        if now.saturating_sub(self.last_flush_ns) >= self.flush_interval_ns {
            self.flush()?;
            return Ok(true);
        }
        Ok(false)
    }

    /// When the next flush is due (monotonic ns).
    pub fn next_flush_ns(&self) -> u64 {
        self.last_flush_ns + self.flush_interval_ns
    }

    /// Pushes everything buffered to the file.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()?;
        self.last_flush_ns = self.clock.now_ns();
        Ok(())
    }

    /// Sample rows written so far.
    pub fn samples(&self) -> u64 {
        self.samples
    }
    /// Marks written so far.
    pub fn marks(&self) -> u64 {
        self.marks
    }
    /// Bad mark lines written so far.
    pub fn bad_marks(&self) -> u64 {
        self.bad_marks
    }
    /// Gaps opened so far.
    pub fn gaps(&self) -> u64 {
        self.gaps
    }

    /// Writes the footer (filling in the counts this writer kept), flushes and returns the
    /// inner writer.
    pub fn finish(mut self, mut footer: Footer) -> io::Result<W> {
        footer.complete = true;
        footer.samples = self.samples;
        footer.marks = self.marks;
        footer.bad_marks = self.bad_marks;
        footer.gaps = self.gaps;
        let json = serde_json::to_string(&footer).map_err(io::Error::other)?;
        writeln!(self.out, "{FOOTER_PREFIX}{json}")?;
        self.out.flush()?;
        self.out.into_inner().map_err(|e| e.into_error())
    }
}

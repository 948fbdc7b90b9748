//! Writing traces: buffered, append-only, flushed on every mark and at least every second.
//!
//! Rows are formatted whole into a buffer of the writer's own; a flush writes the buffer
//! out and keeps whatever the file did not take. So a write that fails (a full disk, a
//! file-size limit) loses nothing and cuts no row in memory: rows go on being appended to
//! the buffer, and a later flush continues exactly where the file stopped. The caller
//! decides how long to hold rows that way ([`TraceWriter::set_holding`]) and, when it gives
//! up, [`TraceWriter::pending_bytes`] says what is lost and a file can be cut back to its
//! last whole row ([`TraceWriter::cut_to_last_row`]).

use super::{
    COLUMNS_LINE, FOOTER_PREFIX, Footer, HEADER_PREFIX, Header, MAGIC_LINE, RowKind, escape_text,
};
use crate::clock::{Clock, ClockAnchor};
use crate::error::{Error, Result};
use crate::marks::Mark;
use crate::source::Reading;
use rustix::fs::OFlags;
use std::fs::File;
use std::io::{self, Write};
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

/// The buffer is written out when it holds this much (and on every flush).
const BUFFER_BYTES: usize = 256 * 1024;

/// Writes one trace. Rows are formatted straight into the buffer: no heap allocation per
/// sample.
pub struct TraceWriter<W: Write> {
    out: W,
    buf: Vec<u8>,
    /// Rows are only appended, never written out, until a flush (after a write error).
    holding: bool,
    /// Bytes the file has taken, and the end of its last whole row.
    written: u64,
    written_rows_end: u64,
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
        let mut buf = Vec::with_capacity(BUFFER_BYTES + 8192);
        let json = serde_json::to_string(header).map_err(io::Error::other)?;
        writeln!(buf, "{MAGIC_LINE}")?;
        writeln!(buf, "{HEADER_PREFIX}{json}")?;
        writeln!(buf, "{COLUMNS_LINE}")?;
        let channel_names = header
            .sources
            .iter()
            .flat_map(|s| s.channels.iter().map(|c| c.name.clone()))
            .collect();
        let now = clock.now_ns();
        let mut w = TraceWriter {
            out,
            buf,
            holding: false,
            written: 0,
            written_rows_end: 0,
            clock,
            channel_names,
            flush_interval_ns,
            last_flush_ns: now,
            scratch: String::with_capacity(8192),
            samples: 0,
            marks: 0,
            bad_marks: 0,
            gaps: 0,
        };
        w.flush()?;
        Ok(w)
    }

    /// Writes the buffer out once it is full (not while holding).
    fn row_done(&mut self) -> io::Result<()> {
        if self.buf.len() >= BUFFER_BYTES && !self.holding {
            self.write_out()?;
        }
        Ok(())
    }

    /// Writes out as much of the buffer as the file takes, dropping what it took.
    fn write_out(&mut self) -> io::Result<()> {
        let mut done = 0;
        let r = loop {
            if done == self.buf.len() {
                break Ok(());
            }
            match self.out.write(&self.buf[done..]) {
                Ok(0) => break Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => {
                    if let Some(i) = self.buf[done..done + n].iter().rposition(|&b| b == b'\n') {
                        self.written_rows_end = self.written + (i + 1) as u64;
                    }
                    self.written += n as u64;
                    done += n;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        self.buf.drain(..done);
        r
    }

    /// While holding, rows are only appended to memory; [`TraceWriter::flush`] still
    /// writes. Set after a write error, so that the rows that follow wait for a retry
    /// instead of each failing again.
    pub fn set_holding(&mut self, holding: bool) {
        self.holding = holding;
    }

    /// Bytes formatted but not yet taken by the file.
    pub fn pending_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Bytes the file has taken.
    pub fn written_bytes(&self) -> u64 {
        self.written
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
        writeln!(self.buf, "{},sample,{},{},,", r.t_ns, name, r.value)?;
        self.samples += 1;
        self.row_done()
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
                self.buf,
                "{},mark,{},{},{},{}",
                m.t_ns,
                m.via.name(),
                delay,
                m.label,
                self.scratch
            )?;
        } else {
            writeln!(
                self.buf,
                "{},mark,{},,{},{}",
                m.t_ns,
                m.via.name(),
                m.label,
                self.scratch
            )?;
        }
        self.marks += 1;
        self.row_done()
    }

    /// Writes a (monotonic, realtime) anchor row.
    pub fn anchor(&mut self, a: ClockAnchor) -> io::Result<()> {
        writeln!(self.buf, "{},anchor,,,,real_ns={}", a.mono_ns, a.real_ns)?;
        self.row_done()
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
                self.buf,
                "{t_ns},{},{channel},{v},{esc_label},{}",
                kind.name(),
                self.scratch
            ),
            None => writeln!(
                self.buf,
                "{t_ns},{},{channel},,{esc_label},{}",
                kind.name(),
                self.scratch
            ),
        }?;
        self.row_done()
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

    /// Pushes everything buffered to the file. On an error, what the file did not take
    /// stays buffered, whole, for the next flush.
    pub fn flush(&mut self) -> io::Result<()> {
        self.write_out()?;
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
    pub fn finish(mut self, footer: Footer) -> io::Result<W> {
        self.write_footer(footer)?;
        Ok(self.out)
    }

    /// Appends the footer (filling in the counts this writer kept) and flushes.
    pub fn write_footer(&mut self, mut footer: Footer) -> io::Result<()> {
        footer.complete = true;
        footer.samples = self.samples;
        footer.marks = self.marks;
        footer.bad_marks = self.bad_marks;
        footer.gaps = self.gaps;
        let json = serde_json::to_string(&footer).map_err(io::Error::other)?;
        writeln!(self.buf, "{FOOTER_PREFIX}{json}")?;
        self.flush()
    }

    /// The inner writer (anything still buffered is dropped: flush first).
    pub fn into_inner(self) -> W {
        self.out
    }
}

/// A trace's destination that can be cut back to a length: a file can, a pipe cannot.
pub trait CutBack: Write {
    /// Cuts to `len` bytes and goes on writing there; `Ok(false)` when this destination
    /// cannot be cut (nothing was done).
    fn cut_back(&mut self, len: u64) -> io::Result<bool>;
}

impl CutBack for File {
    fn cut_back(&mut self, len: u64) -> io::Result<bool> {
        self.set_len(len)?;
        io::Seek::seek(self, io::SeekFrom::Start(len))?;
        Ok(true)
    }
}

impl<W: CutBack> TraceWriter<W> {
    /// Cuts the file back to the end of its last whole row, when a failed write left part
    /// of a row in it (a file-size limit takes bytes up to the limit), so that it reads
    /// cleanly up to there. Returns the file's new length (what was written, for a
    /// destination that cannot be cut).
    pub fn cut_to_last_row(&mut self) -> io::Result<u64> {
        if self.written_rows_end < self.written && self.out.cut_back(self.written_rows_end)? {
            self.written = self.written_rows_end;
        }
        Ok(self.written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::trace::read_trace_from;

    /// A file that takes `room` bytes and then fails like a full disk; the first write that
    /// crosses the limit is cut short, as the kernel does under a file-size limit.
    struct Limited {
        data: Vec<u8>,
        room: usize,
    }
    impl Write for Limited {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            let n = b.len().min(self.room - self.data.len());
            if n == 0 {
                return Err(io::Error::from_raw_os_error(28)); // ENOSPC
            }
            self.data.extend_from_slice(&b[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failed_write_loses_no_row_and_a_later_flush_continues_where_the_file_stopped() {
        let clock = Arc::new(ManualClock::new(0, 0));
        let header = Header::new(10_000_000, clock.anchor(), Vec::new());
        let out = Limited {
            data: Vec::new(),
            room: 1_000_000,
        };
        let mut w = TraceWriter::new(out, &header, clock.clone(), 1_000_000_000).unwrap();
        let header_len = w.written_bytes() as usize;
        w.out.room = header_len + 100; // the disk fills up in the middle of the rows below
        for t in 0..10 {
            w.event(t, "e", &format!("row {t}")).unwrap();
        }
        let e = w.flush().unwrap_err();
        assert_eq!(e.raw_os_error(), Some(28));
        assert_eq!(w.written_bytes() as usize, header_len + 100);
        assert!(w.pending_bytes() > 0);
        // Held rows wait in memory, whole.
        w.set_holding(true);
        for t in 10..20 {
            w.event(t, "e", &format!("row {t}")).unwrap();
        }
        assert!(w.flush().is_err());
        // Room again: everything lands, in order, with no row cut or repeated.
        w.out.room = 1_000_000;
        w.set_holding(false);
        w.flush().unwrap();
        assert_eq!(w.pending_bytes(), 0);
        let bytes = w.finish(Footer::default()).unwrap().data;
        let t = read_trace_from(&bytes[..], std::path::Path::new("t")).unwrap();
        assert!(t.complete(), "{:?}", t.warnings);
        let texts: Vec<&str> = t.events.iter().map(|e| e.text.as_str()).collect();
        let want: Vec<String> = (0..20).map(|i| format!("row {i}")).collect();
        assert_eq!(texts, want);
    }

    #[test]
    fn a_file_cut_in_the_middle_of_a_row_is_cut_back_to_its_last_whole_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.csv");
        let clock = Arc::new(ManualClock::new(0, 0));
        let header = Header::new(10_000_000, clock.anchor(), Vec::new());
        let f = create_trace_file(&path, false).unwrap();
        let mut w = TraceWriter::new(f, &header, clock, 1_000_000_000).unwrap();
        w.event(1, "e", "whole").unwrap();
        w.flush().unwrap();
        let whole = w.written_bytes();
        // Simulate a write the file took only part of.
        w.buf.extend_from_slice(b"2,event,,,e,cut");
        w.write_out().unwrap();
        assert!(w.written_bytes() > whole);
        assert_eq!(w.cut_to_last_row().unwrap(), whole);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), whole);
        let t = crate::trace::read_trace(&path).unwrap();
        assert_eq!(t.events.len(), 1);
    }
}

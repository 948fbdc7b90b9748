//! Marks: named instants sent by any process, stamped on `CLOCK_MONOTONIC`.
//!
//! # The line protocol
//!
//! A mark is one line of UTF-8, at most [`MAX_MARK_BYTES`] bytes including the newline (so
//! a write into a FIFO is atomic and lines from concurrent writers never interleave):
//!
//! ```text
//! [MARK ]LABEL [key=value ...]
//! ```
//!
//! - `LABEL` is `[A-Za-z0-9_.:/-]+`. A leading `MARK ` word is accepted and ignored.
//! - keys are `[A-Za-z0-9_.:/-]+`; values are any non-blank UTF-8 (possibly empty); fields
//!   are separated by blanks; a key may appear once.
//! - reserved keys: `t` is the client's `CLOCK_MONOTONIC` time in ns (Python:
//!   `time.monotonic_ns()`); when absent the receive time is used and the mark says so.
//!   `req` is a request id used to pair the two ends of a span when requests overlap.
//!
//! ```
//! use flinch_core::marks::parse_mark;
//! let m = parse_mark(b"MARK first_token req=42 t=123456789 model=llama\n").unwrap();
//! assert_eq!(m.label, "first_token");
//! assert_eq!(m.t_ns, Some(123_456_789));
//! assert_eq!(m.req(), Some("42"));
//! assert!(parse_mark(b"bad label!").is_err());
//! ```
//!
//! Marks reach a recording through a FIFO the recorder creates, a plain file clients
//! append to (both received by `flinch_record::marks`), the `flinch mark` command, or in
//! process through `flinch_record::MarkSender`. Clients never block: see [`client`]; where
//! they send: [`paths`].

pub mod client;
pub mod owner;
pub mod paths;

use std::fmt;

/// The longest mark line, newline included: `PIPE_BUF` on Linux, the largest write a FIFO
/// keeps atomic.
pub const MAX_MARK_BYTES: usize = 4096;

/// A parsed mark line (before it is received and stamped).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MarkLine {
    /// The label.
    pub label: String,
    /// The client's `t=` stamp, if given.
    pub t_ns: Option<u64>,
    /// The other fields in the order given (`req` included, `t` not).
    pub fields: Vec<(String, String)>,
}

impl MarkLine {
    /// The `req` field, if present.
    pub fn req(&self) -> Option<&str> {
        field(&self.fields, "req")
    }
}

fn field<'a>(fields: &'a [(String, String)], key: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Why a line is not a mark.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MarkParseError {
    /// Blank line.
    #[error("empty mark line")]
    Empty,
    /// Over [`MAX_MARK_BYTES`].
    #[error("mark line of {len} bytes is over the {MAX_MARK_BYTES}-byte limit")]
    TooLong {
        /// Its length.
        len: usize,
    },
    /// Not valid UTF-8.
    #[error("mark line is not valid UTF-8")]
    NotUtf8,
    /// The label has characters outside `[A-Za-z0-9_.:/-]`.
    #[error("label {0:?} must be non-empty [A-Za-z0-9_.:/-]")]
    BadLabel(String),
    /// A field is not `key=value` with a valid key.
    #[error("field {0:?} is not key=value with key in [A-Za-z0-9_.:/-]")]
    BadField(String),
    /// `t=` is not an integer number of nanoseconds.
    #[error("t={0:?} must be CLOCK_MONOTONIC nanoseconds (an unsigned integer)")]
    BadTime(String),
    /// A key appears twice.
    #[error("key {0:?} appears more than once")]
    DuplicateKey(String),
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '/' | '-')
}

/// Whether `s` is a valid label (or key): non-empty `[A-Za-z0-9_.:/-]+`.
pub fn is_valid_label(s: &str) -> bool {
    !s.is_empty() && s.chars().all(is_name_char)
}

/// Parses one mark line (a trailing `\n` or `\r\n` is allowed).
pub fn parse_mark(line: &[u8]) -> Result<MarkLine, MarkParseError> {
    if line.len() > MAX_MARK_BYTES {
        return Err(MarkParseError::TooLong { len: line.len() });
    }
    let text = std::str::from_utf8(line).map_err(|_| MarkParseError::NotUtf8)?;
    let text = text.strip_suffix('\n').unwrap_or(text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    let mut words = text.split_ascii_whitespace().peekable();
    let mut label = words.next().ok_or(MarkParseError::Empty)?;
    if label == "MARK" {
        label = words
            .next()
            .ok_or(MarkParseError::BadLabel(String::new()))?;
    }
    if !is_valid_label(label) {
        return Err(MarkParseError::BadLabel(label.to_owned()));
    }
    let mut t_ns = None;
    let mut fields: Vec<(String, String)> = Vec::new();
    for w in words {
        let (k, v) = w
            .split_once('=')
            .ok_or_else(|| MarkParseError::BadField(w.to_owned()))?;
        if !is_valid_label(k) {
            return Err(MarkParseError::BadField(w.to_owned()));
        }
        if k == "t" {
            if t_ns.is_some() {
                return Err(MarkParseError::DuplicateKey("t".into()));
            }
            t_ns = Some(
                v.parse::<u64>()
                    .map_err(|_| MarkParseError::BadTime(v.to_owned()))?,
            );
            continue;
        }
        if fields.iter().any(|(fk, _)| fk == k) {
            return Err(MarkParseError::DuplicateKey(k.to_owned()));
        }
        fields.push((k.to_owned(), v.to_owned()));
    }
    Ok(MarkLine {
        label: label.to_owned(),
        t_ns,
        fields,
    })
}

/// Formats a mark line (with its newline) for sending. Fails on an invalid label or key, a
/// value with blanks, or a line over [`MAX_MARK_BYTES`].
pub fn format_mark(
    label: &str,
    t_ns: Option<u64>,
    fields: &[(&str, &str)],
) -> Result<String, MarkParseError> {
    if !is_valid_label(label) {
        return Err(MarkParseError::BadLabel(label.to_owned()));
    }
    let mut s = String::with_capacity(64);
    if label == "MARK" {
        // A line starting with the word MARK has it dropped: say it twice to keep it.
        s.push_str("MARK ");
    }
    s.push_str(label);
    if let Some(t) = t_ns {
        s.push_str(" t=");
        s.push_str(&t.to_string());
    }
    for (k, v) in fields {
        if !is_valid_label(k) || *k == "t" || v.chars().any(char::is_whitespace) {
            return Err(MarkParseError::BadField(format!("{k}={v}")));
        }
        s.push(' ');
        s.push_str(k);
        s.push('=');
        s.push_str(v);
    }
    s.push('\n');
    if s.len() > MAX_MARK_BYTES {
        return Err(MarkParseError::TooLong { len: s.len() });
    }
    Ok(s)
}

/// Checks a mark's label and fields as [`format_mark`] and [`parse_mark`] would, without
/// formatting a line: for a mark sent in process many times (a window's start and end), or
/// stamped later. The length is checked with room for a `t=` stamp of any value.
pub fn check_mark(label: &str, fields: &[(&str, &str)]) -> Result<(), MarkParseError> {
    if !is_valid_label(label) {
        return Err(MarkParseError::BadLabel(label.to_owned()));
    }
    // `MARK ` said twice, the label, ` t=` and the longest u64, the newline.
    let mut len = if label == "MARK" { 5 } else { 0 } + label.len() + 3 + 20 + 1;
    for (i, (k, v)) in fields.iter().enumerate() {
        if !is_valid_label(k) || *k == "t" || v.chars().any(char::is_whitespace) {
            return Err(MarkParseError::BadField(format!("{k}={v}")));
        }
        if fields[..i].iter().any(|(fk, _)| fk == k) {
            return Err(MarkParseError::DuplicateKey((*k).to_owned()));
        }
        len += 1 + k.len() + 1 + v.len();
    }
    if len > MAX_MARK_BYTES {
        return Err(MarkParseError::TooLong { len });
    }
    Ok(())
}

/// How a mark reached the recorder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MarkVia {
    /// The recorder's FIFO.
    Fifo,
    /// A file clients append to.
    File,
    /// The in-process API.
    Api,
}

impl MarkVia {
    /// As written in the trace's `channel` column.
    pub fn name(self) -> &'static str {
        match self {
            MarkVia::Fifo => "fifo",
            MarkVia::File => "file",
            MarkVia::Api => "api",
        }
    }
    /// Parses [`MarkVia::name`].
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "fifo" => Some(MarkVia::Fifo),
            "file" => Some(MarkVia::File),
            "api" => Some(MarkVia::Api),
            _ => None,
        }
    }
}

impl fmt::Display for MarkVia {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A received mark.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mark {
    /// The mark's time: the client's `t=` when given, else the receive time.
    pub t_ns: u64,
    /// When the recorder received it (`CLOCK_MONOTONIC` ns).
    pub recv_ns: u64,
    /// Whether `t_ns` came from the client (`t=`).
    pub t_from_client: bool,
    /// The label.
    pub label: String,
    /// Fields other than `t`, in the order given.
    pub fields: Vec<(String, String)>,
    /// How it arrived.
    pub via: MarkVia,
}

impl Mark {
    /// Stamps a parsed line received at `recv_ns`.
    pub fn received(line: MarkLine, recv_ns: u64, via: MarkVia) -> Self {
        Mark {
            t_ns: line.t_ns.unwrap_or(recv_ns),
            recv_ns,
            t_from_client: line.t_ns.is_some(),
            label: line.label,
            fields: line.fields,
            via,
        }
    }
    /// The `req` field, if present.
    pub fn req(&self) -> Option<&str> {
        field(&self.fields, "req")
    }
    /// A field by key.
    pub fn field(&self, key: &str) -> Option<&str> {
        field(&self.fields, key)
    }
}

/// What a receiver hands to the recording: a mark, or a line that was not one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MarkEvent {
    /// A good mark.
    Mark(Mark),
    /// A malformed line: reported and counted, never fatal.
    Bad {
        /// How it arrived.
        via: MarkVia,
        /// When.
        recv_ns: u64,
        /// The line (lossily decoded, cut to 200 characters).
        line: String,
        /// What is wrong.
        error: MarkParseError,
    },
}

/// Turns received bytes into one [`MarkEvent`] per line.
pub fn mark_event(line: &[u8], recv_ns: u64, via: MarkVia) -> MarkEvent {
    match parse_mark(line) {
        Ok(m) => MarkEvent::Mark(Mark::received(m, recv_ns, via)),
        Err(error) => MarkEvent::Bad {
            via,
            recv_ns,
            line: String::from_utf8_lossy(line).chars().take(200).collect(),
            error,
        },
    }
}

/// Splits a byte stream into lines of at most [`MAX_MARK_BYTES`], without allocating per
/// line. A longer run without a newline is reported once and skipped up to the next newline,
/// so a flood of garbage cannot grow memory.
#[derive(Debug)]
pub struct LineSplitter {
    buf: Vec<u8>,
    skipping: Option<usize>,
}

impl Default for LineSplitter {
    fn default() -> Self {
        LineSplitter {
            buf: Vec::with_capacity(MAX_MARK_BYTES),
            skipping: None,
        }
    }
}

/// One item out of a [`LineSplitter`].
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// A complete line, without its newline.
    Complete(&'a [u8]),
    /// A line over the limit was dropped; its length so far.
    Overlong(usize),
}

impl LineSplitter {
    /// Feeds `data`, calling `f` for each complete (or overlong) line.
    pub fn feed(&mut self, mut data: &[u8], mut f: impl FnMut(Line<'_>)) {
        while !data.is_empty() {
            let nl = data.iter().position(|&b| b == b'\n');
            let (chunk, rest, complete) = match nl {
                Some(i) => (&data[..i], &data[i + 1..], true),
                None => (data, &data[data.len()..], false),
            };
            data = rest;
            if let Some(n) = self.skipping.as_mut() {
                *n += chunk.len() + complete as usize;
                if complete {
                    f(Line::Overlong(*n));
                    self.skipping = None;
                }
                continue;
            }
            if self.buf.len() + chunk.len() + 1 > MAX_MARK_BYTES {
                // Too long with or without its newline.
                let so_far = self.buf.len() + chunk.len() + complete as usize;
                self.buf.clear();
                if complete {
                    f(Line::Overlong(so_far));
                } else {
                    self.skipping = Some(so_far);
                }
                continue;
            }
            if complete {
                if self.buf.is_empty() {
                    f(Line::Complete(chunk));
                } else {
                    self.buf.extend_from_slice(chunk);
                    f(Line::Complete(&self.buf));
                    self.buf.clear();
                }
            } else {
                self.buf.extend_from_slice(chunk);
            }
        }
    }
    /// Bytes of an unfinished line held back.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
    /// Ends the stream: an unfinished line is returned as if complete (a writer that died
    /// mid-line still left a readable mark if it was whole).
    pub fn finish(&mut self, mut f: impl FnMut(Line<'_>)) {
        if let Some(n) = self.skipping.take() {
            f(Line::Overlong(n));
        } else if !self.buf.is_empty() {
            f(Line::Complete(&self.buf));
            self.buf.clear();
        }
    }
}

/// Delivers receiver events (a channel sender, a closure, ...).
pub type MarkSink = Box<dyn Fn(MarkEvent) + Send + Sync + 'static>;

/// Hands one line from a receiver to the sink: a mark, a bad line (an overlong one
/// included), or nothing for a blank line.
pub fn deliver_line(sink: &MarkSink, line: Line<'_>, now: u64, via: MarkVia) {
    match line {
        Line::Complete(l) if l.iter().all(u8::is_ascii_whitespace) => {} // blank lines are noise
        Line::Complete(l) => sink(mark_event(l, now, via)),
        Line::Overlong(n) => sink(MarkEvent::Bad {
            via,
            recv_ns: now,
            line: format!("<{n} bytes without a newline>"),
            error: MarkParseError::TooLong { len: n },
        }),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn check_mark_agrees_with_the_line_round_trip() {
        let long = "v".repeat(MAX_MARK_BYTES);
        let near = "v".repeat(MAX_MARK_BYTES - 40);
        let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
            ("prefill_start", vec![("req", "7"), ("batch", "8")]),
            ("MARK", vec![]),
            ("bad label", vec![]),
            ("", vec![]),
            ("x", vec![("t", "5")]),
            ("x", vec![("k y", "1")]),
            ("x", vec![("k", "a b")]),
            ("x", vec![("k", "")]),
            ("x", vec![("k", "a=b")]),
            ("x", vec![("req", "1"), ("req", "2")]),
            ("x", vec![("k", long.as_str())]),
            ("x", vec![("k", near.as_str())]),
        ];
        for (label, fields) in cases {
            let round_trip = format_mark(label, Some(u64::MAX), &fields)
                .and_then(|line| parse_mark(line.as_bytes()).map(|_| ()));
            assert_eq!(
                check_mark(label, &fields).map_err(|e| std::mem::discriminant(&e)),
                round_trip.map_err(|e| std::mem::discriminant(&e)),
                "{label:?} {fields:?}"
            );
        }
    }

    use super::*;

    #[test]
    fn good_lines_parse() {
        let m = parse_mark(b"infer_start").unwrap();
        assert_eq!(m.label, "infer_start");
        assert_eq!((m.t_ns, m.req()), (None, None));
        let m = parse_mark(b"MARK a.b:c/d-e_f  req=r-1\tt=18446744073709551615 x= \r\n").unwrap();
        assert_eq!(m.label, "a.b:c/d-e_f");
        assert_eq!(m.t_ns, Some(u64::MAX));
        assert_eq!(
            m.fields,
            vec![("req".into(), "r-1".into()), ("x".into(), "".into())]
        );
        // values may hold any non-blank UTF-8, '=' included
        let m = parse_mark("tok req=7 text=héllo,\"#=1\"".as_bytes()).unwrap();
        assert_eq!(m.fields[1].1, "héllo,\"#=1\"");
        // MARK as the whole line is not a label
        assert_eq!(
            parse_mark(b"MARK"),
            Err(MarkParseError::BadLabel(String::new()))
        );
    }

    #[test]
    fn bad_lines_say_why() {
        assert_eq!(parse_mark(b""), Err(MarkParseError::Empty));
        assert_eq!(parse_mark(b"  \n"), Err(MarkParseError::Empty));
        assert_eq!(
            parse_mark(b"a b"),
            Err(MarkParseError::BadField("b".into()))
        );
        assert_eq!(
            parse_mark(b"a =1"),
            Err(MarkParseError::BadField("=1".into()))
        );
        assert_eq!(
            parse_mark(b"l@bel"),
            Err(MarkParseError::BadLabel("l@bel".into()))
        );
        assert_eq!(
            parse_mark(b"a t=-5"),
            Err(MarkParseError::BadTime("-5".into()))
        );
        assert_eq!(
            parse_mark(b"a t=1.5"),
            Err(MarkParseError::BadTime("1.5".into()))
        );
        assert_eq!(
            parse_mark(b"a t=99999999999999999999"),
            Err(MarkParseError::BadTime("99999999999999999999".into()))
        );
        assert_eq!(
            parse_mark(b"a t=1 t=2"),
            Err(MarkParseError::DuplicateKey("t".into()))
        );
        assert_eq!(
            parse_mark(b"a k=1 k=2"),
            Err(MarkParseError::DuplicateKey("k".into()))
        );
        assert_eq!(parse_mark(b"a\xff"), Err(MarkParseError::NotUtf8));
        let long = vec![b'a'; MAX_MARK_BYTES + 1];
        assert_eq!(
            parse_mark(&long),
            Err(MarkParseError::TooLong { len: 4097 })
        );
    }

    #[test]
    fn format_round_trips_and_refuses_what_would_not_parse() {
        let s = format_mark("first_token", Some(42), &[("req", "9"), ("n", "1")]).unwrap();
        assert_eq!(s, "first_token t=42 req=9 n=1\n");
        let m = parse_mark(s.as_bytes()).unwrap();
        assert_eq!(
            (m.label.as_str(), m.t_ns, m.req()),
            ("first_token", Some(42), Some("9"))
        );
        assert!(format_mark("bad label", None, &[]).is_err());
        assert!(format_mark("ok", None, &[("k", "two words")]).is_err());
        assert!(format_mark("ok", None, &[("t", "1")]).is_err());
        // Found by the fuzzer: the label MARK (from `MARK MARK`) did not survive a round
        // trip, since a leading MARK word is dropped.
        let s = format_mark("MARK", Some(1), &[]).unwrap();
        assert_eq!(parse_mark(s.as_bytes()).unwrap().label, "MARK");
        let big = "x".repeat(MAX_MARK_BYTES);
        assert!(matches!(
            format_mark("ok", None, &[("k", &big)]),
            Err(MarkParseError::TooLong { .. })
        ));
    }

    #[test]
    fn splitter_joins_partial_writes_and_drops_overlong_lines() {
        let mut s = LineSplitter::default();
        let mut got: Vec<String> = Vec::new();
        let mut push = |l: Line<'_>| match l {
            Line::Complete(b) => got.push(String::from_utf8(b.to_vec()).unwrap()),
            Line::Overlong(n) => got.push(format!("<overlong {n}>")),
        };
        s.feed(b"a t=1\nb", &mut push);
        s.feed(b" t=2\n\nc", &mut push);
        assert_eq!(s.pending(), 1);
        let huge = vec![b'x'; 3 * MAX_MARK_BYTES];
        s.feed(&huge, &mut push);
        s.feed(b"yy\nd\n", &mut push);
        let exact = vec![b'e'; MAX_MARK_BYTES - 1];
        s.feed(&exact, &mut push);
        s.feed(b"\n", &mut push);
        let over = vec![b'f'; MAX_MARK_BYTES];
        s.feed(&over, &mut push);
        s.feed(b"\ntail", &mut push);
        s.finish(&mut push);
        assert_eq!(got[..4], ["a t=1", "b t=2", "", "<overlong 12292>"]);
        assert_eq!(got[4], "d");
        assert_eq!(got[5].len(), MAX_MARK_BYTES - 1);
        assert_eq!(got[6], format!("<overlong {}>", MAX_MARK_BYTES + 1));
        assert_eq!(got[7], "tail");
        assert_eq!(got.len(), 8);
    }

    #[test]
    fn received_marks_keep_the_client_stamp() {
        let e = mark_event(b"x t=5 req=1", 100, MarkVia::Fifo);
        let MarkEvent::Mark(m) = e else { panic!() };
        assert_eq!((m.t_ns, m.recv_ns, m.t_from_client), (5, 100, true));
        let MarkEvent::Mark(m) = mark_event(b"x", 100, MarkVia::File) else {
            panic!()
        };
        assert_eq!((m.t_ns, m.t_from_client), (100, false));
        assert!(matches!(
            mark_event(b"bad!", 1, MarkVia::Api),
            MarkEvent::Bad { .. }
        ));
    }
}

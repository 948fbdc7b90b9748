//! The trace file: self-describing, append-only, one line per event, loadable into pandas in
//! one line.
//!
//! ```text
//! # flinch-trace v1
//! # header {"format":"flinch-trace","version":1,"channels":[...],...}
//! t_ns,kind,channel,value,label,fields
//! 81234567890123,anchor,,,,real_ns=1795825245413240000
//! 81234567890456,sample,synthetic.power,250,,
//! 81234568000000,mark,fifo,35120,infer_start,req=7
//! ...
//! # end {"complete":true,...}
//! ```
//!
//! ```python
//! df = pd.read_csv("run.flinch.csv", comment="#")
//! ```
//!
//! The full format is documented in `docs/trace-format.md`. Text columns (`label`,
//! `fields`) are percent-escaped for `%`, `,`, `"`, `#` and control characters, so a row
//! never needs CSV quoting and never contains pandas' comment character.

mod reader;
mod writer;

pub use reader::{ChannelData, Gap, Trace, TraceEvent, read_trace, read_trace_from};
pub use writer::{TraceWriter, create_trace_file};

use crate::channel::SourceInfo;
use crate::clock::ClockAnchor;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The first line of every trace.
pub const MAGIC_LINE: &str = "# flinch-trace v1";
/// The format version written in the header.
pub const FORMAT_VERSION: u32 = 1;
/// The column line.
pub const COLUMNS_LINE: &str = "t_ns,kind,channel,value,label,fields";
/// Prefix of the header line.
pub const HEADER_PREFIX: &str = "# header ";
/// Prefix of the footer line, written when a recording ends cleanly.
pub const FOOTER_PREFIX: &str = "# end ";

/// Everything about a recording that is known when it starts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// Always `flinch-trace`.
    pub format: String,
    /// Format version ([`FORMAT_VERSION`]).
    pub version: u32,
    /// The flinch version that wrote it.
    pub flinch_version: String,
    /// Wall-clock start, RFC 3339.
    pub created: String,
    /// Host name.
    pub host: String,
    /// Kernel release.
    #[serde(default)]
    pub kernel: String,
    /// flinch's own command line.
    #[serde(default)]
    pub argv: Vec<String>,
    /// The wrapped command, if any.
    #[serde(default)]
    pub command: Vec<String>,
    /// The user's run metadata (`--meta key=value`).
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    /// The fast sampling interval, ns.
    pub interval_ns: u64,
    /// The (monotonic, realtime) pair taken at the start.
    pub start_anchor: ClockAnchor,
    /// Every source with its channels, in channel-index order.
    pub sources: Vec<SourceInfo>,
    /// Where marks were received.
    #[serde(default)]
    pub marks: MarksInfo,
    /// The idle profile embedded with `record --idle`, as written by `flinch calibrate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle: Option<serde_json::Value>,
}

impl Header {
    /// A header with the format fields, host, kernel and creation time filled in.
    pub fn new(interval_ns: u64, start_anchor: ClockAnchor, sources: Vec<SourceInfo>) -> Self {
        let uname = rustix::system::uname();
        Header {
            format: "flinch-trace".into(),
            version: FORMAT_VERSION,
            flinch_version: env!("CARGO_PKG_VERSION").into(),
            created: chrono::Local::now().to_rfc3339(),
            host: uname.nodename().to_string_lossy().into_owned(),
            kernel: uname.release().to_string_lossy().into_owned(),
            interval_ns,
            start_anchor,
            sources,
            ..Default::default()
        }
    }
}

/// Where a recording took its marks from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarksInfo {
    /// The FIFO path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fifo: Option<String>,
    /// The appended-to file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// Timing of one sampler thread, written in the footer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CadenceStats {
    /// The thread's interval, ns.
    pub interval_ns: u64,
    /// Sources polled by it.
    pub sources: Vec<String>,
    /// Ticks run.
    pub ticks: u64,
    /// Ticks skipped because a tick ran past the next deadline.
    pub missed_ticks: u64,
    /// Median |poll start − its deadline| on the absolute schedule, ns.
    #[serde(alias = "lag_p50_ns")]
    pub deviation_p50_ns: u64,
    /// 99th percentile of that deviation, ns.
    #[serde(alias = "lag_p99_ns")]
    pub deviation_p99_ns: u64,
    /// Largest deviation, ns.
    #[serde(alias = "lag_max_ns")]
    pub deviation_max_ns: u64,
    /// CPU time the thread used, ns (polls, clock reads, channel sends).
    pub cpu_ns: u64,
}

/// Written when a recording ends cleanly. A trace without it was cut short (crash, kill).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Footer {
    /// Always true when present.
    pub complete: bool,
    /// What ended the recording: `duration`, `signal`, `command`, `stopped`.
    pub ended_by: String,
    /// The (monotonic, realtime) pair taken at the end.
    pub end_anchor: ClockAnchor,
    /// Sample rows written.
    pub samples: u64,
    /// Marks written.
    pub marks: u64,
    /// Malformed mark lines received.
    pub bad_marks: u64,
    /// Readings dropped because the writer fell behind.
    pub dropped_readings: u64,
    /// Gaps opened (source errors).
    pub gaps: u64,
    /// Per sampler thread.
    pub cadences: Vec<CadenceStats>,
    /// The wrapped command's exit code (128 + signal when killed), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_exit: Option<i32>,
}

/// The `kind` column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RowKind {
    /// A channel value.
    Sample,
    /// A mark.
    Mark,
    /// A (monotonic, realtime) clock pair.
    Anchor,
    /// A source stopped (`label=start`) or resumed (`label=end`) answering.
    Gap,
    /// A counter went back to zero.
    Reset,
    /// A reading that was flagged and not to be used (implausible, out of range).
    Flag,
    /// Readings were dropped (writer behind).
    Drop,
    /// A malformed mark line.
    BadMark,
    /// Anything else worth keeping (command start/exit, ...).
    Event,
}

impl RowKind {
    /// As written.
    pub fn name(self) -> &'static str {
        match self {
            RowKind::Sample => "sample",
            RowKind::Mark => "mark",
            RowKind::Anchor => "anchor",
            RowKind::Gap => "gap",
            RowKind::Reset => "reset",
            RowKind::Flag => "flag",
            RowKind::Drop => "drop",
            RowKind::BadMark => "bad_mark",
            RowKind::Event => "event",
        }
    }
    /// Parses [`RowKind::name`].
    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "sample" => RowKind::Sample,
            "mark" => RowKind::Mark,
            "anchor" => RowKind::Anchor,
            "gap" => RowKind::Gap,
            "reset" => RowKind::Reset,
            "flag" => RowKind::Flag,
            "drop" => RowKind::Drop,
            "bad_mark" => RowKind::BadMark,
            "event" => RowKind::Event,
            _ => return None,
        })
    }
}

fn needs_escape(b: u8) -> bool {
    matches!(b, b'%' | b',' | b'"' | b'#') || b < 0x20 || b == 0x7f
}

/// Percent-escapes a text column (`%`, `,`, `"`, `#`, control characters).
pub fn escape_text(s: &str, out: &mut String) {
    for ch in s.chars() {
        if ch.is_ascii() && needs_escape(ch as u8) {
            // No allocation per escaped byte: the writer is what a flood of marks full of
            // commas has to get through.
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            out.push(HEX[(ch as u8 >> 4) as usize] as char);
            out.push(HEX[(ch as u8 & 0xf) as usize] as char);
        } else {
            out.push(ch);
        }
    }
}

/// Undoes [`escape_text`]. A `%` not followed by two hex digits is kept as is.
pub fn unescape_text(s: &str) -> String {
    if !s.contains('%') {
        return s.to_owned();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_round_trips_and_removes_separators() {
        for s in [
            "plain",
            "a,b",
            "50% \"quoted\" #hash",
            "line\nbreak\r\t",
            "é,ü%",
            "%zz %4",
            "",
        ] {
            let mut e = String::new();
            escape_text(s, &mut e);
            assert!(!e.contains([',', '"', '#', '\n', '\r']), "{e}");
            assert_eq!(unescape_text(&e), s);
        }
        assert_eq!(unescape_text("%2"), "%2");
        assert_eq!(unescape_text("a%2Cb"), "a,b");
        for k in [RowKind::Sample, RowKind::BadMark, RowKind::Event] {
            assert_eq!(RowKind::from_name(k.name()), Some(k));
        }
        assert_eq!(RowKind::from_name("nope"), None);
    }
}

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
pub mod stream;
mod writer;

pub use reader::{ChannelData, Gap, Trace, TraceEvent, read_trace, read_trace_from};
pub use writer::{CutBack, TraceWriter, create_trace_file};

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
    /// What the machine is (CPU model, cores, memory, OS, kernel), as the recorder found it;
    /// `None` in traces written before it was recorded, and where nothing could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<MachineInfo>,
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

/// The machine a recording was made on. Every field is optional: a reader must accept any of
/// them missing (an OS that does not say, a trace written before the field existed), and
/// newer writers may add fields.
///
/// `flinch-record` fills it at the start of a recording (through the `sysinfo` crate); the
/// host name and the bare kernel release stay in [`Header::host`] and [`Header::kernel`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MachineInfo {
    /// The CPU model as the OS names it (`model name` in `/proc/cpuinfo`), e.g.
    /// `AMD EPYC 9654 96-Core Processor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_model: Option<String>,
    /// Logical CPUs (hardware threads) the OS lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logical_cpus: Option<u32>,
    /// Physical cores, over all sockets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub physical_cores: Option<u32>,
    /// Total memory (RAM), bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// The operating system's name (`NAME` in `/etc/os-release`), e.g. `Debian GNU/Linux`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    /// The operating system's version (`VERSION_ID`), e.g. `13`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    /// The kernel's name and release, e.g. `Linux 6.12.13-200.fc41.x86_64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    /// The CPU architecture, e.g. `x86_64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
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

/// Timing of one cadence (a source polled on its own schedule), written in the footer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CadenceStats {
    /// The cadence's interval, ns (for a phase-locked source: the sensor's period as
    /// declared).
    pub interval_ns: u64,
    /// Sources polled on it.
    pub sources: Vec<String>,
    /// The sampler thread that polled them ([`ThreadStats::name`]).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub thread: String,
    /// Polls made (for a phase-locked source: guards, probes and retries included).
    pub ticks: u64,
    /// Deadlines skipped because the thread was still busy past them.
    pub missed_ticks: u64,
    /// Median |wake-up − the deadline the thread woke for| over this cadence's polls, ns.
    #[serde(alias = "lag_p50_ns")]
    pub deviation_p50_ns: u64,
    /// 99th percentile of that deviation, ns.
    #[serde(alias = "lag_p99_ns")]
    pub deviation_p99_ns: u64,
    /// Largest deviation, ns.
    #[serde(alias = "lag_max_ns")]
    pub deviation_max_ns: u64,
    /// CPU time of its polls, ns, from the thread's CPU clock read after each poll (the
    /// cost of the wake-ups themselves is in [`ThreadStats::cpu_ns`]). Traces written
    /// before 2026-12 shared each wake-up's CPU between the sources polled by wall time.
    pub cpu_ns: u64,
    /// Wall time spent inside its polls, ns.
    #[serde(default)]
    pub poll_ns: u64,
    /// What the phase lock did, for a source polled once per sensor update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_lock: Option<PhaseStats>,
}

/// What the phase lock of a source polled once per sensor update did over a recording
/// (written in the footer).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseStats {
    /// The update period declared by the source, ns.
    pub declared_period_ns: u64,
    /// The period measured, ns.
    pub period_ns: u64,
    /// Polls made.
    pub polls: u64,
    /// Value changes seen (sensor updates).
    pub updates: u64,
    /// Guard polls (just before a predicted window: a change there means the phase was
    /// lost).
    pub guards: u64,
    /// Probe polls (inside a predicted window, to narrow it).
    pub probes: u64,
    /// Retry polls (an update that came later than predicted).
    pub retries: u64,
    /// Periods in which no change was found (the update came much later, or the sensor
    /// repeated its value).
    pub misses: u64,
    /// Times the lock started over, polling every `P/20` until a change (the first
    /// included).
    pub acquisitions: u64,
    /// Width of the bracket around the last update when the recording ended, ns.
    pub bracket_ns: u64,
}

/// One sampler thread, written in the footer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ThreadStats {
    /// The thread's name (`flinch-sample` for the one that polls every cheap source,
    /// `flinch-slow-<interval>` for slow ones).
    pub name: String,
    /// Times it woke to poll.
    pub wakeups: u64,
    /// All the CPU time it used, ns: polls, sleeping and waking, sending readings.
    pub cpu_ns: u64,
}

/// Written when a recording ends cleanly. A trace without it was cut short (crash, kill).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Footer {
    /// Always true when present.
    pub complete: bool,
    /// What ended the recording: `duration`, `signal`, `command`, `stopped`,
    /// `output-closed`, `error`.
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
    /// Per cadence.
    pub cadences: Vec<CadenceStats>,
    /// Per sampler thread.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub threads: Vec<ThreadStats>,
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

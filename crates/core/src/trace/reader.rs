//! Reading traces back: strict about what a writer could never have produced (with the line
//! number), lenient about what a crash leaves (a last line cut short, no footer).

use super::stream::{TraceBuilder, TraceStream};
use super::{Footer, Header, RowKind};
use crate::channel::ChannelSpec;
use crate::clock::{AnchorMap, ClockAnchor};
use crate::error::{Error, Result};
use crate::marks::Mark;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

/// How much of the file [`read_trace_from`] parses at a time (in blocks, on all cores).
const CHUNK_BYTES: usize = 8 << 20;

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

/// Reads a trace from any buffered reader; `path` names it in errors.
pub fn read_trace_from<R: BufRead>(r: R, path: &Path) -> Result<Trace> {
    let mut s = TraceStream::open(r, path)?;
    let mut b = TraceBuilder::new(s.header().clone(), path);
    while let Some(batches) = s.next_chunk(CHUNK_BYTES)? {
        for batch in batches {
            b.push(batch);
        }
    }
    Ok(b.finish(s.warnings()))
}

#[cfg(test)]
mod tests {
    use super::super::stream::parse_u64;
    use super::*;
    use crate::channel::{PowerMethod, SourceInfo};
    use crate::clock::{ClockAnchor, ManualClock};
    use crate::source::Reading;
    use crate::trace::{Footer, TraceWriter};
    use std::sync::Arc;

    #[test]
    fn a_header_cut_short_is_called_cut_not_missing() {
        use crate::trace::{HEADER_PREFIX, MAGIC_LINE};
        let whole = format!("{MAGIC_LINE}\n{HEADER_PREFIX}{{\"format\":\"flinch-trace\",\"vers");
        let e = read_trace_from(whole.as_bytes(), Path::new("t.csv"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("t.csv:2: the header line is cut short"), "{e}");
        assert!(!e.contains("expected the header line"), "{e}");
        let other = format!("{MAGIC_LINE}\nsomething else\n");
        let e = read_trace_from(other.as_bytes(), Path::new("t.csv"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(
                "expected the header line starting with \"# header \", found \"something else\""
            ),
            "{e}"
        );
    }

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

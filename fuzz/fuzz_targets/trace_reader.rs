//! The trace reader, fed damaged traces (the seeds are real recordings).
//!
//! Properties (beyond "never panics"):
//! - a refusal is a parse error naming the file and a line that exists (or the one after
//!   the end, for a file that ends too soon);
//! - reading through a tiny buffer gives the same answer as reading the bytes whole;
//! - an accepted trace is consistent: one channel per header channel, in order; times and
//!   values of the same length, sorted, finite; marks sorted with valid labels; gaps never
//!   ending before they start; as many samples per channel, marks, anchors and events as
//!   the file has rows of those kinds; a warning for a cut last line and for a missing
//!   footer exactly when there is one; nothing a consumer does with it (counter steps,
//!   the anchor map, the time range, the label counts) panics or goes wrong;
//! - written again with `TraceWriter`, it reads back the same (header, samples, marks,
//!   anchors, gaps).

#![no_main]

use flinch_core::Error;
use flinch_core::Reading;
use flinch_core::clock::ManualClock;
use flinch_core::counter::{CounterStep, CounterTracker};
use flinch_core::marks::is_valid_label;
use flinch_core::trace::{Footer, Trace, TraceWriter, read_trace_from};
use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

const PATH: &str = "fuzzed.flinch.csv";

fuzz_target!(|data: &[u8]| check(data));

fn check(data: &[u8]) {
    let read = read_trace_from(data, Path::new(PATH));
    // 1 to 61 bytes at a time: lines and `\r\n` cut at every place.
    let small = BufReader::with_capacity(1 + data.len() % 61, data);
    let read_small = read_trace_from(small, Path::new(PATH));
    match (&read, &read_small) {
        (Ok(a), Ok(b)) => assert_eq!(format!("{a:?}"), format!("{b:?}"), "small reads"),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "small reads"),
        _ => panic!("whole: {read:?}, small reads: {read_small:?}"),
    }
    match read {
        Err(Error::TraceParse {
            path,
            line,
            message,
        }) => {
            let lines = data.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
            assert_eq!(path, Path::new(PATH));
            // A line of the file, or the one after its end ("the file ends before the
            // header line", for `# flinch-trace v1` alone).
            assert!(
                (1..=lines + 1).contains(&line),
                "error names line {line} of {lines}: {message}"
            );
            assert!(!message.is_empty());
        }
        Err(e) => panic!("not a parse error: {e}"),
        Ok(t) => {
            consistent(data, &t);
            rewritten(&t);
        }
    }
}

/// Row kinds counted straight from the bytes of an accepted trace.
fn row_counts(data: &[u8]) -> HashMap<(String, String), usize> {
    let mut counts = HashMap::new();
    let mut lines: Vec<&[u8]> = data.split(|&b| b == b'\n').skip(3).collect();
    // The piece after the last newline: empty, or a cut line the reader ignores.
    lines.pop();
    for line in lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() || line[0] == b'#' {
            continue;
        }
        let text = std::str::from_utf8(line).expect("accepted a row that is not UTF-8");
        let cols: Vec<&str> = text.split(',').collect();
        assert_eq!(cols.len(), 6, "accepted row {text:?}");
        let key = match cols[1] {
            "sample" => ("sample".to_owned(), cols[2].to_owned()),
            "reset" | "flag" | "drop" | "bad_mark" | "event" => ("event".into(), String::new()),
            kind => (kind.to_owned(), String::new()),
        };
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}

fn consistent(data: &[u8], t: &Trace) {
    let header_channels: Vec<&str> = t
        .header
        .sources
        .iter()
        .flat_map(|s| s.channels.iter().map(|c| c.name.as_str()))
        .collect();
    let names: Vec<&str> = t.channels.iter().map(|c| c.spec.name.as_str()).collect();
    assert_eq!(names, header_channels);

    let rows = row_counts(data);
    let count = |kind: &str, channel: &str| {
        rows.get(&(kind.to_owned(), channel.to_owned()))
            .copied()
            .unwrap_or(0)
    };
    for c in &t.channels {
        let name = &c.spec.name;
        assert_eq!(c.t_ns.len(), c.values.len(), "channel {name}");
        assert_eq!(c.t_ns.len(), count("sample", name), "samples of {name}");
        assert!(c.t_ns.is_sorted(), "channel {name} unsorted");
        assert!(c.values.iter().all(|v| v.is_finite()), "channel {name}");
        if let Some(spec) = c.spec.counter_spec() {
            let mut tracker = CounterTracker::new(*spec, c.spec.update_period_ns);
            for (&t_ns, &v) in c.t_ns.iter().zip(&c.values) {
                if let CounterStep::Delta { delta, .. } = tracker.update(t_ns, v) {
                    assert!(delta >= 0.0, "counter step {delta} on {name}");
                }
            }
        }
    }
    let sample_rows: usize = rows
        .iter()
        .filter(|((kind, _), _)| kind == "sample")
        .map(|(_, n)| n)
        .sum();
    assert_eq!(t.sample_count(), sample_rows);
    assert_eq!(t.marks.len(), count("mark", ""));
    assert_eq!(t.anchors.len(), count("anchor", ""));
    assert_eq!(t.events.len(), count("event", ""));
    assert!(t.gaps.len() <= count("gap", ""));
    assert!(t.marks.is_sorted_by_key(|m| m.t_ns), "marks unsorted");
    assert!(t.marks.iter().all(|m| is_valid_label(&m.label)));
    assert_eq!(t.labels().values().sum::<usize>(), t.marks.len());
    for g in &t.gaps {
        assert!(g.end_ns.is_none_or(|e| e >= g.start_ns), "gap {g:?}");
    }
    if let Some((lo, hi)) = t.time_range_ns() {
        assert!(lo <= hi);
        let times = t
            .channels
            .iter()
            .flat_map(|c| c.t_ns.iter().copied())
            .chain(t.marks.iter().map(|m| m.t_ns));
        assert!(times.clone().all(|x| (lo..=hi).contains(&x)));
        assert!(times.clone().any(|x| x == lo) && times.clone().any(|x| x == hi));
    } else {
        assert!(t.sample_count() == 0 && t.marks.is_empty());
    }
    let map = t.anchor_map();
    for real_ns in [i64::MIN, -1, 0, 1, i64::MAX] {
        let _ = (map.to_mono_ns(real_ns), map.us_to_mono_ns(real_ns));
    }
    for a in &t.anchors {
        let _ = map.to_mono_ns(a.real_ns);
    }

    let lines = data.iter().filter(|&&b| b == b'\n').count() + 1;
    let cut = format!("line {lines}: the last line is cut short");
    assert_eq!(
        t.warnings.iter().any(|w| w.starts_with(&cut)),
        !data.ends_with(b"\n"),
        "{:?}",
        t.warnings
    );
    assert_eq!(
        t.warnings.iter().any(|w| w.starts_with("no footer")),
        t.footer.is_none(),
        "{:?}",
        t.warnings
    );
    assert!(!t.complete() || t.footer.is_some());
}

/// An accepted trace, written again, reads back the same.
fn rewritten(t: &Trace) {
    let clock = Arc::new(ManualClock::new(0, 0));
    let mut w = TraceWriter::new(Vec::new(), &t.header, clock, u64::MAX).unwrap();
    for (i, c) in t.channels.iter().enumerate() {
        for (&t_ns, &value) in c.t_ns.iter().zip(&c.values) {
            let channel = i as u32;
            w.sample(&Reading {
                channel,
                t_ns,
                value,
            })
            .unwrap();
        }
    }
    for m in &t.marks {
        w.mark(m).unwrap();
    }
    for &a in &t.anchors {
        w.anchor(a).unwrap();
    }
    for g in &t.gaps {
        w.gap(g.start_ns, &g.source, true, &g.reason).unwrap();
        if let Some(end) = g.end_ns {
            w.gap(end, &g.source, false, "").unwrap();
        }
    }
    let bytes = w.finish(Footer::default()).unwrap();
    let again = read_trace_from(&bytes[..], Path::new("again.flinch.csv")).unwrap_or_else(|e| {
        panic!(
            "an accepted trace, written again, is refused: {e}\n{}",
            String::from_utf8_lossy(&bytes)
        )
    });
    assert_eq!(again.header, t.header);
    for (a, b) in again.channels.iter().zip(&t.channels) {
        assert_eq!(
            (&a.t_ns, &a.values),
            (&b.t_ns, &b.values),
            "channel {}",
            a.spec.name
        );
    }
    assert_eq!(again.marks, t.marks);
    assert_eq!(again.anchors, t.anchors);
    assert_eq!(format!("{:?}", again.gaps), format!("{:?}", t.gaps));
}

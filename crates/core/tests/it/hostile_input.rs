//! Hostile input (issue 9): the marks parser, the line splitter, the trace reader, the
//! counter arithmetic and the anchor map, fed garbage by proptest. Whatever comes in, the
//! answer is a value or a clear error (with the line number, for traces), never a panic or
//! a hang.
//!
//! The case counts here keep CI short; `PROPTEST_CASES=100000` runs them longer, and the
//! cargo-fuzz targets in `fuzz/` (`fuzz/run.sh TARGET SECONDS`) run for as long as asked
//! (see `docs/reliability.md` for what each found).

use crate::common::header;
use flinch_core::channel::{ChannelSpec, CounterSpec};
use flinch_core::clock::{AnchorMap, ClockAnchor, ManualClock};
use flinch_core::counter::{CounterStep, CounterTracker};
use flinch_core::marks::{
    Line, LineSplitter, MAX_MARK_BYTES, Mark, MarkVia, format_mark, is_valid_label, parse_mark,
};
use flinch_core::trace::{Footer, Trace, TraceWriter, read_trace_from};
use flinch_core::{Error, Reading};
use proptest::prelude::*;
use std::path::Path;
use std::sync::Arc;

fn cases(n: u32) -> ProptestConfig {
    // PROPTEST_CASES in the environment overrides this.
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(n),
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------
// Marks

/// Bytes that look like mark lines often enough to reach every branch of the parser.
fn markish() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        Just(b"MARK".to_vec()),
        Just(b"infer_start".to_vec()),
        Just(b"t=".to_vec()),
        Just(b"t=123".to_vec()),
        Just(b"t=18446744073709551616".to_vec()),
        Just(b"req=7".to_vec()),
        Just(b"=".to_vec()),
        Just(b" ".to_vec()),
        Just(b"\t".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"\n".to_vec()),
        Just("é".as_bytes().to_vec()),
        Just("\u{a0}".as_bytes().to_vec()),
        Just(vec![0xff]),
        Just(vec![0xc3]),
        Just(vec![0]),
        "[a-z0-9_.:/-]{1,8}".prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 1..8),
    ];
    proptest::collection::vec(token, 0..40).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(cases(4000))]

    #[test]
    fn the_mark_parser_never_panics_and_what_it_accepts_is_well_formed(line in markish()) {
        check_parsed(&line);
    }

    #[test]
    fn the_mark_parser_survives_arbitrary_bytes(line in proptest::collection::vec(any::<u8>(), 0..5000)) {
        check_parsed(&line);
    }

    #[test]
    fn the_line_splitter_never_holds_more_than_a_mark_and_ignores_chunking(
        seed in any::<u64>(),
        len in 0usize..20_000,
        newline_every in 1u64..6000,
        cuts in proptest::collection::vec(0usize..20_000, 0..20),
    ) {
        let data = noise(seed, len, newline_every);
        let reference = split_reference(&data);
        let mut cuts = cuts;
        cuts.retain(|&c| c <= data.len());
        cuts.sort_unstable();
        let mut s = LineSplitter::default();
        let mut got = Vec::new();
        let mut last = 0;
        for c in cuts.into_iter().chain([data.len()]) {
            s.feed(&data[last..c], |l| got.push(own(l)));
            prop_assert!(s.pending() < MAX_MARK_BYTES);
            last = c;
        }
        s.finish(|l| got.push(own(l)));
        prop_assert_eq!(got, reference);
    }
}

/// `len` bytes of noise from `seed`, rich in the bytes that matter to line and CSV parsers:
/// about one newline in `newline_every`, and commas, digits, `%`, `#` and `=` often.
/// (Generating big inputs byte by byte through proptest is too slow for CI.)
fn noise(seed: u64, len: usize, newline_every: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if x.is_multiple_of(newline_every) {
                return b'\n';
            }
            match (x >> 32) % 8 {
                0 => b',',
                1 => b"0123456789"[(x >> 40) as usize % 10],
                2 => b"%#=. -e"[(x >> 40) as usize % 7],
                3 => b'a' + (x >> 40) as u8 % 26,
                _ => (x >> 48) as u8,
            }
        })
        .collect()
}

fn check_parsed(line: &[u8]) {
    let Ok(m) = parse_mark(line) else { return };
    assert!(is_valid_label(&m.label), "{:?}", m.label);
    assert!(line.len() <= MAX_MARK_BYTES);
    let mut keys: Vec<&str> = m.fields.iter().map(|(k, _)| k.as_str()).collect();
    assert!(keys.iter().all(|k| is_valid_label(k) && *k != "t"));
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), m.fields.len(), "duplicate keys accepted");
    // What was accepted formats back to a line that parses to the same mark (values with
    // non-ASCII blanks, which format refuses, aside).
    let fields: Vec<(&str, &str)> = m
        .fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    if let Ok(again) = format_mark(&m.label, m.t_ns, &fields) {
        assert_eq!(parse_mark(again.as_bytes()).unwrap(), m);
    }
    // A received mark always writes a trace row that reads back.
    let mark = Mark::received(m, 7, MarkVia::Fifo);
    let trace = write_trace(&[], std::slice::from_ref(&mark));
    let t = read_trace_from(&trace[..], Path::new("m.csv")).unwrap();
    assert_eq!(t.marks, vec![mark]);
}

#[derive(Debug, PartialEq, Eq)]
enum Owned {
    Complete(Vec<u8>),
    Overlong(usize),
}

fn own(l: Line<'_>) -> Owned {
    match l {
        Line::Complete(b) => Owned::Complete(b.to_vec()),
        Line::Overlong(n) => Owned::Overlong(n),
    }
}

/// What the splitter must produce, from the whole stream at once.
fn split_reference(data: &[u8]) -> Vec<Owned> {
    let mut out = Vec::new();
    let mut rest = data;
    while let Some(i) = rest.iter().position(|&b| b == b'\n') {
        out.push(if i < MAX_MARK_BYTES {
            Owned::Complete(rest[..i].to_vec())
        } else {
            Owned::Overlong(i + 1)
        });
        rest = &rest[i + 1..];
    }
    if !rest.is_empty() {
        out.push(if rest.len() < MAX_MARK_BYTES {
            Owned::Complete(rest.to_vec())
        } else {
            Owned::Overlong(rest.len())
        });
    }
    out
}

// ---------------------------------------------------------------------------------------
// Traces

fn write_trace(readings: &[(u32, u64, f64)], marks: &[Mark]) -> Vec<u8> {
    let clock = Arc::new(ManualClock::new(0, 0));
    let mut w = TraceWriter::new(Vec::new(), &header(), clock, 1).unwrap();
    for &(channel, t_ns, value) in readings {
        w.sample(&Reading {
            channel,
            t_ns,
            value,
        })
        .unwrap();
    }
    for m in marks {
        w.mark(m).unwrap();
    }
    w.anchor(ClockAnchor {
        mono_ns: 9_000,
        real_ns: 13_500,
    })
    .unwrap();
    w.gap(9_100, "dev", true, "lost: gone, really").unwrap();
    w.gap(9_200, "dev", false, "").unwrap();
    w.reset(9_300, 1, 99.0, 1.0).unwrap();
    w.bad_mark(9_400, "fifo", "bad, line", "label \"bad\"")
        .unwrap();
    w.event(9_500, "command_exit", "status=0").unwrap();
    w.finish(Footer {
        ended_by: "stopped".into(),
        ..Default::default()
    })
    .unwrap()
}

fn a_trace() -> Vec<u8> {
    let readings: Vec<(u32, u64, f64)> = (0..40)
        .map(|i| (i % 2, 1_000 + i as u64 * 100, i as f64 * 1.5))
        .collect();
    let marks: Vec<Mark> = (0..6)
        .map(|i| Mark {
            t_ns: 1_500 + i * 300,
            recv_ns: 1_600 + i * 300,
            t_from_client: i % 2 == 0,
            label: format!("m{i}"),
            fields: vec![("req".into(), format!("r{}", i / 2))],
            via: MarkVia::Fifo,
        })
        .collect();
    write_trace(&readings, &marks)
}

/// Everything a consumer does with a trace, so that a damaged one is exercised beyond the
/// parse.
fn use_trace(t: &Trace) {
    let _ = t.complete();
    let _ = t.labels();
    let _ = t.time_range_ns();
    let _ = t.sample_count();
    let m = t.anchor_map();
    for real in [i64::MIN, -1, 0, 1, 5_000, i64::MAX] {
        let _ = m.to_mono_ns(real);
        let _ = m.us_to_mono_ns(real);
    }
    for c in &t.channels {
        assert_eq!(c.t_ns.len(), c.values.len());
        assert!(c.t_ns.windows(2).all(|w| w[0] <= w[1]), "unsorted samples");
        assert!(c.values.iter().all(|v| v.is_finite()));
        if let Some(spec) = c.spec.counter_spec() {
            let mut tr = CounterTracker::new(*spec, c.spec.update_period_ns);
            for (&t, &v) in c.t_ns.iter().zip(&c.values) {
                check_step(spec, tr.update(t, v));
            }
        }
    }
    assert!(t.marks.windows(2).all(|w| w[0].t_ns <= w[1].t_ns));
    for g in &t.gaps {
        assert!(g.end_ns.is_none_or(|e| e >= g.start_ns));
    }
}

/// Reads `bytes`; a parse error must name a line that exists in the input.
fn read_checked(bytes: &[u8]) -> Option<Trace> {
    match read_trace_from(bytes, Path::new("fuzz.csv")) {
        Ok(t) => {
            use_trace(&t);
            Some(t)
        }
        Err(Error::TraceParse { line, message, .. }) => {
            // The line named exists, or is the one missing right after the end.
            let lines = bytes.split(|&b| b == b'\n').count() as u64;
            assert!(
                line >= 1 && line <= lines + 1,
                "line {line} of {lines}: {message}"
            );
            assert!(!message.is_empty());
            None
        }
        Err(e) => panic!("not a parse error: {e}"),
    }
}

#[test]
fn every_truncation_of_a_trace_reads_as_its_valid_part() {
    // What a crash (or a copy cut short) leaves: every prefix, byte by byte.
    let full = a_trace();
    let complete = read_trace_from(&full[..], Path::new("t.csv")).unwrap();
    assert!(complete.complete() && complete.warnings.is_empty());
    let body_start = full
        .iter()
        .enumerate()
        .filter(|&(_, &b)| b == b'\n')
        .nth(2)
        .unwrap()
        .0
        + 1;
    for cut in 0..full.len() {
        let part = &full[..cut];
        let t = read_checked(part);
        if cut < body_start {
            // Magic, header or column line cut: an error naming one of the first 3 lines.
            // (The header line cut right before its newline is still an error: the JSON
            // was not finished, or the line has no newline.)
            assert!(t.is_none() || cut + 1 == body_start, "cut {cut}");
            continue;
        }
        let t = t.unwrap_or_else(|| panic!("a truncation at {cut} was refused"));
        assert!(!t.complete());
        assert!(t.sample_count() <= complete.sample_count());
        for m in &t.marks {
            assert!(complete.marks.contains(m), "cut {cut} invented {m:?}");
        }
        // Whole rows before the cut are all there.
        let whole_rows = part.iter().filter(|&&b| b == b'\n').count() - 3;
        assert!(t.sample_count() + t.marks.len() <= whole_rows);
    }
}

#[test]
fn regression_an_overlong_line_is_an_error_with_its_line_number() {
    let mut t = a_trace();
    let at = t.len() - 1;
    t.splice(at..at, std::iter::repeat_n(b'7', 17 << 20));
    match read_trace_from(&t[..], Path::new("big.csv")) {
        Err(Error::TraceParse { line, message, .. }) => {
            assert_eq!(line as usize, t.split(|&b| b == b'\n').count() - 1);
            assert!(message.contains("longer than 16 MiB"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn regression_crlf_line_ends_are_read() {
    let t = a_trace();
    let crlf: Vec<u8> = t
        .iter()
        .flat_map(|&b| {
            if b == b'\n' {
                vec![b'\r', b'\n']
            } else {
                vec![b]
            }
        })
        .collect();
    let a = read_trace_from(&t[..], Path::new("lf.csv")).unwrap();
    let b = read_trace_from(&crlf[..], Path::new("crlf.csv")).unwrap();
    assert!(b.complete() && b.warnings.is_empty(), "{:?}", b.warnings);
    assert_eq!(a.marks, b.marks);
    assert_eq!(a.channels, b.channels);
}

fn raw_trace(body: &str) -> Vec<u8> {
    format!(
        "# flinch-trace v1\n# header {}\nt_ns,kind,channel,value,label,fields\n{body}",
        serde_json::to_string(&header()).unwrap()
    )
    .into_bytes()
}

#[test]
fn regression_huge_values_and_disordered_rows_give_the_valid_part_with_warnings() {
    let t = read_checked(&raw_trace(
        "18446744073709551615,mark,fifo,1e300,late,\n\
         5,mark,fifo,-1e300,early,\n\
         18446744073709551615,sample,dev.power,1.7976931348623157e308,,\n\
         0,sample,dev.power,-1.7976931348623157e308,,\n\
         10,anchor,,,,real_ns=-9223372036854775808\n\
         20,anchor,,,,real_ns=9223372036854775807\n\
         18446744073709551615,anchor,,,,real_ns=0\n\
         500,gap,dev,,start,lost\n\
         100,gap,dev,,end,\n\
         300,sample,dev.energy,99,,\n\
         200,sample,dev.energy,1,,\n",
    ))
    .unwrap();
    // The receive time of a mark whose delay is absurd is clamped, not wrapped around.
    let late = t.marks.iter().find(|m| m.label == "late").unwrap();
    assert_eq!(late.recv_ns, u64::MAX);
    let early = t.marks.iter().find(|m| m.label == "early").unwrap();
    assert_eq!(early.recv_ns, 0);
    assert_eq!(t.channel("dev.power").unwrap().t_ns, vec![0, u64::MAX]);
    assert_eq!(t.channel("dev.energy").unwrap().values, vec![1.0, 99.0]);
    // A gap that ends before it starts is kept as empty, with a warning naming the line.
    assert_eq!(t.gaps[0].end_ns, Some(500));
    assert!(
        t.warnings
            .iter()
            .any(|w| w.contains("line 12") && w.contains("before it started")),
        "{:?}",
        t.warnings
    );
}

#[test]
fn regression_a_mark_delay_over_2_pow_53_ns_reads_back_exactly() {
    // Found by the fuzzer: the delay column went through an f64, so the receive time of a
    // mark stamped days away from its arrival came back rounded.
    let m = Mark {
        t_ns: 184_499_999_999_999_999,
        recv_ns: 42,
        t_from_client: true,
        label: "far".into(),
        fields: vec![],
        via: MarkVia::Fifo,
    };
    let bytes = write_trace(&[], std::slice::from_ref(&m));
    let t = read_trace_from(&bytes[..], Path::new("d.csv")).unwrap();
    assert_eq!(t.marks, vec![m]);
}

#[test]
fn regression_a_mark_field_value_with_spaces_reads_back() {
    // Found writing the trace_reader fuzz target (an accepted trace, written again, reads
    // back the same): a value holding a space (from `%20` in a trace that was read, or a
    // `Mark` built by hand) was written as is, so the row split into a field that is not
    // key=value and the trace no longer read.
    let m = Mark {
        t_ns: 2_000,
        recv_ns: 2_000,
        t_from_client: false,
        label: "spaced".into(),
        fields: vec![
            ("k".into(), " a  b ".into()),
            ("req".into(), "7".into()),
            ("j".into(), "%20 ,=".into()),
        ],
        via: MarkVia::Api,
    };
    let bytes = write_trace(&[], std::slice::from_ref(&m));
    let t = read_trace_from(&bytes[..], Path::new("s.csv")).unwrap();
    assert_eq!(t.marks, vec![m]);
    // What a reader makes of `%20` goes back to the same row.
    let body = "1,mark,fifo,,a,k=x%20y\n";
    let t = read_trace_from(&raw_trace(body)[..], Path::new("r.csv")).unwrap();
    assert_eq!(t.marks[0].field("k"), Some("x y"));
    let again = write_trace(&[], &t.marks);
    let t2 = read_trace_from(&again[..], Path::new("r2.csv")).unwrap();
    assert_eq!(t2.marks, t.marks);
}

#[test]
fn regression_header_numbers_read_back_exactly() {
    // Found by cargo-fuzz (trace_reader): serde_json's default float parsing is not
    // exact, so a counter's max_rate written as 2.0777777777777777e45 read back as
    // 2.0777777777777774e45. Also 2000 numbers of every magnitude, from their bits.
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    let mut values = vec![2.077_777_777_777_777_7e45, 65_712.999_613, 0.1, 5e-324];
    while values.len() < 2000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let v = f64::from_bits(x);
        if v.is_finite() {
            values.push(v.abs());
        }
    }
    for v in values {
        let mut h = header();
        h.sources[0].channels[1] = ChannelSpec::energy_counter(
            "dev",
            "energy",
            CounterSpec {
                wrap_range: Some(v),
                max_rate: Some(v),
            },
        );
        let clock = Arc::new(ManualClock::new(0, 0));
        let w = TraceWriter::new(Vec::new(), &h, clock, 1).unwrap();
        let bytes = w.finish(Footer::default()).unwrap();
        let t = read_trace_from(&bytes[..], Path::new("h.csv")).unwrap();
        assert_eq!(t.header, h, "{v:e}");
    }
}

#[test]
fn wrong_column_counts_and_bad_bytes_are_errors_with_the_line_number() {
    for (body, line, needle) in [
        (
            "1,sample,dev.power,1,,\n1,sample\n",
            5,
            "expected 6 comma-separated columns",
        ),
        ("1,sample,dev.power,1,,,\n", 4, "found 7"),
        ("\n\n1,sample,dev.power,1\n", 6, "found 4"),
        ("1,mark,fifo,,bad label,\n", 4, "mark label"),
        ("1,mark,fifo,,ok,novalue\n", 4, "not key=value"),
        ("1,gap,dev,,middle,\n", 4, "expected start or end"),
        ("1,sample,dev.power,NaN,,\n", 4, "not finite"),
        ("-1,sample,dev.power,1,,\n", 4, "not an unsigned integer"),
    ] {
        match read_trace_from(&raw_trace(body)[..], Path::new("b.csv")) {
            Err(Error::TraceParse {
                line: l, message, ..
            }) => {
                assert_eq!(l, line, "{body:?}: {message}");
                assert!(message.contains(needle), "{body:?}: {message}");
            }
            other => panic!("{body:?}: {other:?}"),
        }
    }
    let mut bytes = raw_trace("1,sample,dev.power,1,,\n");
    bytes.extend_from_slice(b"2,mark,fifo,,lab\xc3\x28el,\n");
    match read_trace_from(&bytes[..], Path::new("u.csv")) {
        Err(Error::TraceParse {
            line: 5, message, ..
        }) => assert!(message.contains("UTF-8")),
        other => panic!("{other:?}"),
    }
}

/// One random edit of a line-oriented file.
#[derive(Clone, Debug)]
enum Edit {
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    DupLine(usize),
    DropLine(usize),
    SwapLines(usize, usize),
    Truncate(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let junk = prop_oneof![
        Just(b",".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"%".to_vec()),
        Just(b"#".to_vec()),
        Just(b"# end {".to_vec()),
        Just(b"# end {\"complete\":true}".to_vec()),
        Just(b"1e999".to_vec()),
        Just(b"-0".to_vec()),
        Just(b"18446744073709551616".to_vec()),
        Just(b"99999999999999999999999".to_vec()),
        Just(b"sample,dev.energy,".to_vec()),
        Just(b"mark,api,".to_vec()),
        Just(b"gap,dev,,end,".to_vec()),
        Just(b"anchor,,,,real_ns=".to_vec()),
        Just(vec![0xff, 0xfe]),
        Just(vec![0]),
        proptest::collection::vec(any::<u8>(), 1..6),
    ];
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Flip(i, b)),
        (any::<usize>(), junk).prop_map(|(i, j)| Edit::Insert(i, j)),
        (any::<usize>(), 1usize..40).prop_map(|(i, n)| Edit::Delete(i, n)),
        any::<usize>().prop_map(Edit::DupLine),
        any::<usize>().prop_map(Edit::DropLine),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::SwapLines(a, b)),
        any::<usize>().prop_map(Edit::Truncate),
    ]
}

fn apply(data: &mut Vec<u8>, e: &Edit) {
    let n = data.len().max(1);
    let mut lines: Vec<Vec<u8>> = data.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
    let nl = lines.len();
    match e {
        Edit::Flip(i, b) => {
            if !data.is_empty() {
                data[i % n] = *b
            }
        }
        Edit::Insert(i, j) => {
            let at = i % (data.len() + 1);
            data.splice(at..at, j.iter().copied());
        }
        Edit::Delete(i, len) => {
            let at = i % n;
            let end = (at + len).min(data.len());
            data.drain(at.min(end)..end);
        }
        Edit::DupLine(i) => {
            let l = lines[i % nl].clone();
            lines.insert(i % nl, l);
            *data = lines.join(&b'\n');
        }
        Edit::DropLine(i) => {
            lines.remove(i % nl);
            *data = lines.join(&b'\n');
        }
        Edit::SwapLines(a, b) => {
            lines.swap(a % nl, b % nl);
            *data = lines.join(&b'\n');
        }
        Edit::Truncate(i) => data.truncate(i % n),
    }
}

proptest! {
    #![proptest_config(cases(3000))]

    #[test]
    fn a_damaged_trace_reads_or_fails_with_a_line_number(
        edits in proptest::collection::vec(edit(), 1..8),
    ) {
        let mut data = a_trace();
        for e in &edits {
            apply(&mut data, e);
        }
        read_checked(&data);
    }

    #[test]
    fn garbage_after_a_valid_header_reads_or_fails_with_a_line_number(
        seed in any::<u64>(),
        len in 0usize..4000,
        newline_every in 1u64..100,
    ) {
        let mut data = raw_trace("");
        data.extend_from_slice(&noise(seed, len, newline_every));
        read_checked(&data);
    }

    #[test]
    fn arbitrary_bytes_are_refused_or_read_never_panic(
        data in proptest::collection::vec(any::<u8>(), 0..2000),
    ) {
        read_checked(&data);
    }
}

// ---------------------------------------------------------------------------------------
// Counters and clocks

fn check_step(spec: &CounterSpec, step: CounterStep) {
    match step {
        CounterStep::Delta { delta, wrapped } => {
            assert!(delta.is_finite() && delta >= 0.0, "{step:?}");
            if wrapped {
                assert!(delta <= spec.wrap_range.unwrap() / 2.0 + 1e-9, "{step:?}");
            }
        }
        CounterStep::Reset { from, to } => assert!(from.is_finite() && to.is_finite()),
        _ => {}
    }
}

proptest! {
    #![proptest_config(cases(3000))]

    #[test]
    fn counter_steps_are_never_negative_or_beyond_the_plausible_maximum(
        wrap in prop_oneof![Just(None), (1.0f64..1e7).prop_map(Some)],
        max_rate in prop_oneof![Just(None), (0.0f64..5000.0).prop_map(Some)],
        period in prop_oneof![Just(None), (0u64..2_000_000_000).prop_map(Some)],
        readings in proptest::collection::vec(
            (0u64..5_000_000_000, prop_oneof![
                -1e3f64..1e7,
                Just(0.0),
                Just(-0.0),
                Just(f64::NAN),
                Just(f64::INFINITY),
                Just(f64::MAX),
                Just(f64::MIN_POSITIVE),
            ]),
            1..200),
    ) {
        let spec = CounterSpec { wrap_range: wrap, max_rate };
        let mut c = CounterTracker::new(spec, period);
        let mut t = 0u64;
        for (dt, v) in readings {
            t = t.saturating_add(dt);
            let prev = c.last();
            let step = c.update(t, v);
            check_step(&spec, step);
            if let (CounterStep::Delta { delta, .. }, Some(rate), Some((pt, _))) = (step, max_rate, prev) {
                let span = (t - pt).max(period.unwrap_or(0)).max(1_000_000) as f64 / 1e9;
                prop_assert!(delta <= rate * span * (1.0 + 1e-12), "{delta} over {span} s at {rate}");
            }
            // (Infinite only when readings near f64::MAX are summed: never NaN, never < 0.)
            prop_assert!(c.total() >= 0.0, "{}", c.total());
        }
    }

    #[test]
    fn the_anchor_map_never_overflows(
        anchors in proptest::collection::vec((any::<u64>(), any::<i64>()), 0..6),
        queries in proptest::collection::vec(any::<i64>(), 1..10),
    ) {
        let mut m = AnchorMap::new();
        for (mono_ns, real_ns) in anchors {
            m.push(ClockAnchor { mono_ns, real_ns });
            let _ = ClockAnchor { mono_ns, real_ns }.offset_ns();
        }
        for q in queries {
            let _ = m.to_mono_ns(q);
            let _ = m.us_to_mono_ns(q);
        }
    }
}

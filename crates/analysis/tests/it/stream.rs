//! The streaming analysis against the whole-trace one (`Analyzer::run` on `read_trace`),
//! on the two real recordings shipped in `examples/`: every span, the summary, the
//! unmatched marks and the warnings must be the same, with the default settings and with
//! settings so small that the marks, the samples and the checkpoints are handled a few KiB
//! at a time and every span longer than ~5 s is measured from the file read again.

use flinch_analysis::idle::IdleProfile;
use flinch_analysis::output::{JsonReport, StartOrder};
use flinch_analysis::stream::{SpanKey, SpanSink, SpanStream, StreamConfig};
use flinch_analysis::{Analyzer, Report, SpanReport, Thresholds, WindowEdge, resolve_window};
use flinch_core::error::Result;
use flinch_core::trace::read_trace;
use std::path::PathBuf;

fn example(p: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples")).join(p)
}

#[derive(Default)]
struct Collect {
    spans: Vec<(SpanKey, SpanReport)>,
    settled: SpanKey,
    settled_calls: usize,
}

impl SpanSink for Collect {
    type Item = SpanReport;
    fn prepare(&self, _key: SpanKey, r: SpanReport) -> SpanReport {
        r
    }
    fn span(&mut self, key: SpanKey, item: SpanReport) -> Result<()> {
        assert!(
            key >= self.settled,
            "a span below the settled key {:?} came: {key:?}",
            self.settled
        );
        self.spans.push((key, item));
        Ok(())
    }
    fn settled(&mut self, key: SpanKey) -> Result<()> {
        assert!(key >= self.settled, "settled went back");
        self.settled = key;
        self.settled_calls += 1;
        Ok(())
    }
}

fn tiny() -> StreamConfig {
    StreamConfig {
        horizon_ns: 1,
        hot_ns: 1,
        chunk_bytes: 4 << 10,
        checkpoint_bytes: 16 << 10,
    }
}

/// (trace, from, to, idle window)
type Case = (
    &'static str,
    &'static str,
    &'static str,
    Option<(&'static str, &'static str)>,
);

const CASES: &[Case] = &[
    (
        "llm/llm.flinch.csv",
        "infer_start",
        "first_token",
        Some(("calib_start", "calib_end")),
    ),
    (
        "llm/llm.flinch.csv",
        "server_recv",
        "done",
        Some(("calib_start", "calib_end")),
    ),
    (
        "llm/llm.flinch.csv",
        "token",
        "token",
        Some(("calib_start", "calib_end")),
    ),
    ("llm/llm.flinch.csv", "dequeue", "enqueue", None),
    (
        "workloads/busy-idle.flinch.csv",
        "phase_start",
        "phase_end",
        Some(("calib_start", "calib_end")),
    ),
    (
        "workloads/busy-idle.flinch.csv",
        "calib_start",
        "square_end",
        None,
    ),
];

#[test]
fn streaming_gives_what_the_whole_trace_gives_to_the_bit() {
    let mut reread = 0;
    for &(file, from, to, window) in CASES {
        let path = example(file);
        let trace = read_trace(&path).unwrap();
        let profile = window.map(|(a, b)| {
            let (a, b) = (WindowEdge::Label(a.into()), WindowEdge::Label(b.into()));
            let (s, e) = resolve_window(&trace, &a, &b).unwrap();
            IdleProfile::from_trace(&trace, s, e, "w").unwrap()
        });
        let idle = profile.as_ref().map(|p| (p, "window"));
        let want: Report = Analyzer::new(&trace, idle, Thresholds::default())
            .run(from, to, &mut |_, _| {})
            .unwrap();
        assert!(
            !want.spans.is_empty() || !want.unmatched.is_empty(),
            "{file} {from} {to}"
        );
        for (name, cfg) in [("default", StreamConfig::default()), ("tiny", tiny())] {
            let what = format!("{file} {from}→{to}, {name} settings");
            // The idle stretch, streamed.
            if let Some((a, b)) = window {
                let (a, b) = (WindowEdge::Label(a.into()), WindowEdge::Label(b.into()));
                let (t, s, e) = SpanStream::open_with(&path, cfg.clone())
                    .unwrap()
                    .stretch(&a, &b, &mut |_, _| {})
                    .unwrap();
                let p = IdleProfile::from_trace(&t, s, e, "w").unwrap();
                assert_eq!(Some(&p), profile.as_ref(), "{what}: idle profile");
            }
            let mut sink = Collect::default();
            let out = SpanStream::open_with(&path, cfg)
                .unwrap()
                .run(
                    from,
                    to,
                    idle,
                    Thresholds::default(),
                    &mut sink,
                    &mut |_, _| {},
                )
                .unwrap();
            assert!(sink.settled_calls > 1, "{what}");
            sink.spans.sort_by_key(|(k, _)| *k);
            let got: Vec<SpanReport> = sink.spans.into_iter().map(|(_, s)| s).collect();
            assert_eq!(got.len(), want.spans.len(), "{what}");
            for (g, w) in got.iter().zip(&want.spans) {
                assert_eq!(g, w, "{what}: span at {}", w.start_ns);
            }
            assert_eq!(out.summary, want.summary, "{what}: summary");
            assert_eq!(out.unmatched, want.unmatched, "{what}: unmatched");
            assert_eq!(out.warnings, want.warnings, "{what}: warnings");
            assert_eq!(out.idle, want.idle, "{what}");
            assert_eq!(out.stats.spans, want.spans.len(), "{what}");
            if name == "default" {
                assert_eq!(out.stats.reread_spans, 0, "{what}");
            }
            reread += out.stats.reread_spans;
        }
    }
    // The tiny settings sent the long spans (requests of 5-9 s, the whole recording) to
    // the file again.
    assert!(reread >= 10, "{reread} spans read again");
}

#[test]
fn an_unknown_label_is_an_error_that_lists_the_labels() {
    let path = example("llm/llm.flinch.csv");
    let e = SpanStream::open(&path)
        .unwrap()
        .run(
            "infer_start",
            "nope",
            None,
            Thresholds::default(),
            &mut Collect::default(),
            &mut |_, _| {},
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("no mark labelled \"nope\""), "{e}");
    assert!(e.contains("token (320)"), "{e}");
    let e = SpanStream::open(&path)
        .unwrap()
        .stretch(
            &WindowEdge::Label("calib_end".into()),
            &WindowEdge::Label("calib_start".into()),
            &mut |_, _| {},
        )
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no mark \"calib_start\" after the window's start"),
        "{e}"
    );
}

#[test]
fn start_order_puts_entries_back_in_order_through_temporary_files() {
    // A budget of a few entries: most of them go through sorted runs on disk.
    let mut o = StartOrder::new(200);
    let mut out = Vec::new();
    let keys: Vec<u64> = (0..500u64).map(|i| (i * 7919) % 500).collect();
    for (n, &k) in keys.iter().enumerate() {
        o.push((k, 0), format!("entry {k}")).unwrap();
        // Nothing below 100 is released until the end; then everything in order.
        if n % 50 == 49 {
            o.release((0, 0), &mut |k, t| {
                out.push((k, t));
                Ok(())
            })
            .unwrap();
        }
    }
    assert!(o.runs() > 5, "{} runs", o.runs());
    o.release((250, 0), &mut |k, t| {
        out.push((k, t));
        Ok(())
    })
    .unwrap();
    assert_eq!(out.len(), 250);
    assert_eq!(o.held(), 250);
    o.release((u64::MAX, 0), &mut |k, t| {
        out.push((k, t));
        Ok(())
    })
    .unwrap();
    let want: Vec<((u64, u64), String)> =
        (0..500).map(|k| ((k, 0), format!("entry {k}"))).collect();
    assert_eq!(out, want);
    assert_eq!(o.held(), 0);
}

#[test]
fn the_json_written_in_pieces_is_to_string_pretty_of_the_report() {
    for (file, from, to) in [
        ("llm/llm.flinch.csv", "infer_start", "first_token"),
        ("llm/llm.flinch.csv", "dequeue", "enqueue"),
    ] {
        let path = example(file);
        let trace = read_trace(&path).unwrap();
        let want = Analyzer::new(&trace, None, Thresholds::default())
            .run(from, to, &mut |_, _| {})
            .unwrap();
        let mut sink = Collect::default();
        let out = SpanStream::open(&path)
            .unwrap()
            .run(
                from,
                to,
                None,
                Thresholds::default(),
                &mut sink,
                &mut |_, _| {},
            )
            .unwrap();
        sink.spans.sort_by_key(|(k, _)| *k);
        let mut j = JsonReport::new();
        for (_, s) in &sink.spans {
            j.push_span(&JsonReport::span_text(s).unwrap()).unwrap();
        }
        let mut bytes = Vec::new();
        j.finish(&out, &mut bytes).unwrap();
        let whole = serde_json::to_string_pretty(&want).unwrap() + "\n";
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            whole,
            "{file} {from} {to}"
        );
    }
}

//! The streaming analysis against the whole-trace one (`Analyzer::run` on `read_trace`),
//! on the two real recordings shipped in `examples/`: every span, the summary, the
//! unmatched marks and the warnings must be the same, with the default settings and with
//! settings so small that the marks, the samples and the checkpoints are handled a few KiB
//! at a time and every span longer than ~5 s is measured from the file read again.

use flinch_analysis::idle::IdleProfile;
use flinch_analysis::output::{JsonReport, StartOrder};
use flinch_analysis::stream::{SpanKey, SpanSink, SpanStream, StreamConfig};
use flinch_analysis::{
    Analyzer, Report, SpanFigures, SpanReport, Thresholds, WindowEdge, pair_marks, resolve_window,
};
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
    /// Declines the report of about every other span (by its start mark's index).
    decline_odd: bool,
    /// Spans whose report was declined.
    declined: usize,
}

impl SpanSink for Collect {
    type Item = Option<SpanReport>;
    fn prepare(&self, key: SpanKey, r: SpanReport) -> Option<SpanReport> {
        assert!(!(self.decline_odd && declined(key)), "{key:?} was declined");
        Some(r)
    }
    fn without_report(&self, key: SpanKey) -> Option<Option<SpanReport>> {
        (self.decline_odd && declined(key)).then_some(None)
    }
    fn span(&mut self, key: SpanKey, item: Option<SpanReport>) -> Result<()> {
        assert!(
            key >= self.settled,
            "a span below the settled key {:?} came: {key:?}",
            self.settled
        );
        match item {
            Some(r) => self.spans.push((key, r)),
            None => self.declined += 1,
        }
        Ok(())
    }
    fn settled(&mut self, key: SpanKey) -> Result<()> {
        assert!(key >= self.settled, "settled went back");
        self.settled = key;
        self.settled_calls += 1;
        Ok(())
    }
}

/// Every other start index, whether starts come one after another (`token → token`) or
/// alternate with ends.
fn declined(key: SpanKey) -> bool {
    (key.1 ^ (key.1 >> 1)) & 1 == 1
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
            let out = SpanStream::open_with(&path, cfg.clone())
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
            // Half the reports declined: those spans are measured for the summary alone
            // (`Analyzer::span_figures`), which must not move it.
            let mut sink = Collect {
                decline_odd: true,
                ..Collect::default()
            };
            let out = SpanStream::open_with(&path, cfg.clone())
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
            assert_eq!(
                sink.spans.len() + sink.declined,
                want.spans.len(),
                "{what}, declined"
            );
            assert!(want.spans.len() < 2 || sink.declined > 0, "{what}");
            sink.spans.sort_by_key(|(k, _)| *k);
            for (_, g) in &sink.spans {
                assert!(
                    want.spans.contains(g),
                    "{what}, declined: span at {}",
                    g.start_ns
                );
            }
            assert_eq!(out.summary, want.summary, "{what}, declined: summary");
            assert_eq!(out.unmatched, want.unmatched, "{what}, declined");
            assert_eq!(out.warnings, want.warnings, "{what}, declined");
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

#[test]
fn figures_without_the_report_are_those_of_the_report_to_the_bit() {
    // Every label pair of every shipped recording (both ends the same label too), with the
    // idle profile of its calibration window and without: spans busy and idle, decided by
    // power, by activity, by their composition, unresolved, lagging, unmeasured.
    let mut spans = 0;
    let mut by_composition = 0;
    for file in [
        "llm/llm.flinch.csv",
        "llm-gpu/llm-gpu.flinch.csv",
        "workloads/busy-idle.flinch.csv",
        "workloads/busy-idle-h200.flinch.csv",
    ] {
        let trace = read_trace(&example(file)).unwrap();
        let (a, b) = (
            WindowEdge::Label("calib_start".into()),
            WindowEdge::Label("calib_end".into()),
        );
        let (s, e) = resolve_window(&trace, &a, &b).unwrap();
        let profile = IdleProfile::from_trace(&trace, s, e, "w").unwrap();
        let labels: Vec<String> = trace.labels().into_keys().collect();
        for idle in [Some((&profile, "window")), None] {
            let an = Analyzer::new(&trace, idle, Thresholds::default());
            for from in &labels {
                for to in &labels {
                    for (i, j) in pair_marks(&trace.marks, from, to).pairs {
                        let (m, n) = (&trace.marks[i], &trace.marks[j]);
                        let report = an.span(m, n);
                        by_composition += (report.verdict_from == "composition") as usize;
                        assert_eq!(
                            format!("{:?}", an.span_figures(m, n)),
                            format!("{:?}", SpanFigures::of(&report)),
                            "{file} {from}→{to} at {}, idle {}",
                            m.t_ns,
                            idle.is_some()
                        );
                        spans += 1;
                    }
                }
            }
        }
    }
    assert!(spans > 10_000, "{spans} spans");
    assert!(by_composition > 0, "no verdict from a composition");
}

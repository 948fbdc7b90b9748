//! Live spans and counters against `analyze` on the trace recorded at the same time.

use crate::common::{record, sample};
use flinch_analysis::idle::IdleProfile;
use flinch_analysis::{Analyzer, Thresholds, Verdict};
use flinch_core::counter::CounterTracker;
use flinch_core::marks::client::MarkClient;
use flinch_core::trace::read_trace;
use flinch_prometheus::metrics::OTHER_LABEL;
use flinch_prometheus::{Exporter, ExporterConfig};
use std::time::Duration;

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-9)
}

#[test]
fn live_spans_counters_and_marks_equal_what_analyze_finds_in_the_trace() {
    let dir = tempfile::tempdir().unwrap();
    // An idle profile of the device at its low step.
    let idle_trace = dir.path().join("idle.flinch.csv");
    let quiet = Exporter::new(ExporterConfig::default());
    let r = record("60W;class=gpu", &idle_trace, None, None, &quiet);
    std::thread::sleep(Duration::from_millis(800));
    r.stop("stopped", None).unwrap();
    let t = read_trace(&idle_trace).unwrap();
    let (a, b) = t.time_range_ns().unwrap();
    let profile = IdleProfile::from_trace(&t, a, b, "test").unwrap();

    let exporter = Exporter::new(ExporterConfig {
        spans: vec!["a..b".parse().unwrap(), "step..step".parse().unwrap()],
        idle: Some(profile.clone()),
        ..Default::default()
    });
    let out = dir.path().join("run.flinch.csv");
    let fifo = dir.path().join("marks.fifo");
    let rec = record(
        "60W/300ms,240W/200ms;wrap=20J;class=gpu",
        &out,
        Some(&fifo),
        Some(serde_json::to_value(&profile).unwrap()),
        &exporter,
    );
    let mut c = MarkClient::open(&fifo).unwrap();
    let mut sent = 0u64;
    let mut m = |c: &mut MarkClient, l: &str, req: Option<&str>| {
        let f: Vec<(&str, &str)> = req.map(|r| ("req", r)).into_iter().collect();
        c.mark(l, &f).unwrap();
        sent += 1;
    };
    m(&mut c, "b", Some("orphan")); // an end with nothing open
    for i in 0..12 {
        let (r1, r2) = (format!("{i}x"), format!("{i}y"));
        m(&mut c, "a", Some(&r1));
        m(&mut c, "step", None);
        std::thread::sleep(Duration::from_millis(70));
        m(&mut c, "a", Some(&r2));
        std::thread::sleep(Duration::from_millis(60 + 25 * (i % 4)));
        m(&mut c, "b", Some(&r2)); // the later request ends first
        m(&mut c, "step", None);
        std::thread::sleep(Duration::from_millis(40));
        m(&mut c, "b", Some(&r1));
    }
    // More distinct labels than the bound (100, of which a, b and step are taken).
    for i in 0..150 {
        m(&mut c, &format!("junk{i}"), None);
    }
    std::thread::sleep(Duration::from_millis(300));
    let foot = rec.stop("stopped", None).unwrap();
    assert_eq!(foot.marks, sent);
    let text = exporter.encode_text();
    // flinch's own cost, per sampler thread: at least what the footer says it used.
    let cpu = sample(
        &text,
        "flinch_sampler_cpu_seconds_total",
        &[("thread", "flinch-synthetic")],
    )
    .expect("the synthetic source's sampler thread");
    let footer_cpu = foot
        .threads
        .iter()
        .find(|t| t.name == "flinch-synthetic")
        .expect("the footer's thread")
        .cpu_ns as f64
        / 1e9;
    assert!(
        cpu > 0.0 && cpu >= footer_cpu,
        "{cpu} s vs the footer's {footer_cpu} s"
    );

    let trace = read_trace(&out).unwrap();
    let an = Analyzer::new(&trace, Some((&profile, "file")), Thresholds::default());
    for (from, to) in [("a", "b"), ("step", "step")] {
        let span = format!("{from}..{to}");
        let s = [("span", span.as_str())];
        let report = an.run(from, to, &mut |_, _| {}).unwrap();
        let n = report.spans.len() as f64;
        assert!(n >= 12.0, "{span}: {n} spans");
        let got_n = sample(&text, "flinch_span_duration_seconds_count", &s).unwrap();
        assert_eq!(got_n, n, "{span} count\n{text}");
        let dur: f64 = report.spans.iter().map(|s| s.duration_s).sum();
        let got = sample(&text, "flinch_span_duration_seconds_sum", &s).unwrap();
        assert!(rel(got, dur) < 1e-9, "{span}: {got} vs {dur}");
        let sd = [("span", span.as_str()), ("device", "synthetic")];
        // A histogram's _sum adds every span: analyze's sum_of_spans (its total counts
        // overlapping time once).
        let e = &report.summary.energy_j["synthetic"];
        let got = sample(&text, "flinch_span_energy_joules_sum", &sd).unwrap();
        assert!(
            rel(got, e.sum_of_spans) < 1e-9,
            "{span} energy: {got} vs {}",
            e.sum_of_spans
        );
        let ae = &report.summary.active_energy_j["synthetic"];
        let got = sample(&text, "flinch_span_active_energy_joules_sum", &sd).unwrap();
        assert!(
            rel(got, ae.sum_of_spans) < 1e-9,
            "{span} active: {got} vs {}",
            ae.sum_of_spans
        );
        for v in Verdict::ALL {
            let want = report.spans.iter().filter(|x| x.verdict == v).count() as f64;
            let got = sample(
                &text,
                "flinch_spans_total",
                &[("span", span.as_str()), ("verdict", v.name())],
            )
            .unwrap();
            assert_eq!(got, want, "{span} {}", v.name());
        }
        let unmatched_ends = report.summary.unmatched_ends as f64;
        let got = sample(
            &text,
            "flinch_span_unmatched_marks_total",
            &[("span", span.as_str()), ("end", "end")],
        )
        .unwrap_or(0.0);
        assert_eq!(got, unmatched_ends, "{span} unmatched ends");
    }
    // Some spans of a..b are gpu-compute (240 W), some idle-wait: the verdicts are live.
    assert!(
        sample(
            &text,
            "flinch_spans_total",
            &[("span", "a..b"), ("verdict", "gpu-compute")]
        )
        .unwrap()
            > 0.0
    );

    // The counter: the writer's one tracker, never decreasing across the wraps.
    let ch = trace.channel("synthetic.energy").unwrap();
    let mut tr = CounterTracker::new(*ch.spec.counter_spec().unwrap(), ch.spec.update_period_ns);
    for (&t, &v) in ch.t_ns.iter().zip(&ch.values) {
        tr.update(t, v);
    }
    assert!(tr.total() > 60.0, "several wraps of 20 J");
    let got = sample(
        &text,
        "flinch_energy_joules_total",
        &[("channel", "synthetic.energy")],
    )
    .unwrap();
    assert!(rel(got, tr.total()) < 1e-9, "{got} vs {}", tr.total());

    // Marks: by label up to the bound, the rest as _other; none lost.
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("flinch_marks_total{"))
        .collect();
    assert_eq!(series.len(), 101, "100 labels and _other");
    let total: f64 = series
        .iter()
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(total as u64, sent);
    assert_eq!(
        sample(&text, "flinch_marks_total", &[("label", OTHER_LABEL)]),
        Some(53.0)
    );
    assert_eq!(
        sample(&text, "flinch_marks_total", &[("label", "step")]),
        Some(24.0)
    );
}

#[test]
fn a_panicking_observer_is_dropped_and_the_recording_goes_on() {
    struct Bomb;
    impl flinch_record::observe::Observer for Bomb {
        fn mark(&mut self, _m: &flinch_core::marks::Mark) {
            panic!("boom");
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.flinch.csv");
    let clock: std::sync::Arc<dyn flinch_core::Clock> =
        std::sync::Arc::new(flinch_core::MonotonicClock);
    let src =
        flinch_record::synthetic::SyntheticSource::new("10W".parse().unwrap(), clock.as_ref());
    let exporter = Exporter::new(ExporterConfig::default());
    let mut setup = flinch_record::recorder::RecordingSetup::new(out.clone(), vec![Box::new(src)]);
    setup.observers.push(Box::new(Bomb));
    setup.observers.push(exporter.observer());
    let rec = flinch_record::recorder::Recorder::start(
        setup,
        flinch_record::recorder::RecorderConfig::default(),
        clock,
    )
    .unwrap();
    let marks = rec.mark_sender();
    marks.mark("one", &[]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    marks.mark("two", &[]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let foot = rec.stop("stopped", None).unwrap();
    assert_eq!(foot.marks, 2);
    let t = read_trace(&out).unwrap();
    assert!(
        t.events
            .iter()
            .any(|e| e.label == "observer_panicked" && e.text.contains("boom")),
        "{:?}",
        t.events
    );
    let text = exporter.encode_text();
    assert_eq!(
        sample(&text, "flinch_marks_total", &[("label", "two")]),
        Some(1.0)
    );
    assert!(sample(&text, "flinch_energy_joules_total", &[]).unwrap() > 0.0);
}

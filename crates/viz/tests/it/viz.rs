//! flinch-viz against a demo GPU trace written with the real trace writer, a RAPL-only
//! trace recorded by `flinch record` from a fake powercap tree
//! (`tests/fixtures/rapl-only.flinch.csv`, made by `make-rapl-only.py`), and the real
//! GPU traces in `examples/`.

use flinch_core::trace::{Trace, read_trace};
use flinch_viz::idle::Idle;
use flinch_viz::plot::{HistogramMode, PlotData, PlotOptions, render};
use flinch_viz::series::{activity_series, power_series};
use flinch_viz::spans::{SpanSet, SpanSpec, Verdict, find_spans, verdicts};
use flinch_viz::testing::{CPU_TASK_MS, check_trace_events, write_cpu_trace, write_demo_trace};
use flinch_viz::{perfetto, table};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn demo() -> (tempfile::TempDir, Trace) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("demo.flinch.csv");
    write_demo_trace(&p).unwrap();
    let t = read_trace(&p).unwrap();
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
    (dir, t)
}

fn rapl() -> Trace {
    let t = read_trace(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rapl-only.flinch.csv"),
    )
    .unwrap();
    assert!(t.complete());
    t
}

/// Every real trace shipped in examples/ (at least one must be there).
fn examples() -> Vec<Trace> {
    let mut out = Vec::new();
    for sub in ["examples/llm", "examples/workloads"] {
        for e in std::fs::read_dir(repo().join(sub)).unwrap() {
            let p = e.unwrap().path();
            if p.to_string_lossy().ends_with(".flinch.csv") {
                out.push(read_trace(&p).unwrap());
            }
        }
    }
    assert!(!out.is_empty(), "no *.flinch.csv under examples/");
    out
}

fn perfetto_json(t: &Trace, spans: &SpanSet) -> String {
    let mut out = Vec::new();
    perfetto::write_perfetto(t, spans, &mut out, &mut |_, _| {}).unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn demo_perfetto_has_a_counter_track_per_channel_spans_per_req_and_every_mark() {
    let (_d, t) = demo();
    let spans = find_spans(&t, &SpanSpec::Auto).unwrap();
    assert_eq!(spans.spans.len(), 7, "calib + 6 phases");
    let json = perfetto_json(&t, &spans);
    let s = check_trace_events(&json).unwrap();
    // One counter track per channel, named as Perfetto names it, holding every sample.
    for c in &t.channels {
        let track = format!("{} {}", c.spec.name, c.spec.unit.symbol());
        let got = &s.counter_values[&track];
        let want: Vec<(f64, f64)> = c
            .t_ns
            .iter()
            .zip(&c.values)
            .map(|(&ts, &v)| ((ts - perfetto::origin_ns(&t)) as f64 / 1e3, v))
            .collect();
        assert_eq!(got.len(), want.len(), "{track}");
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g.0 - w.0).abs() < 1e-3 && g.1 == w.1,
                "{track}: {g:?} vs {w:?}"
            );
        }
    }
    assert_eq!(s.counter_tracks.len(), t.channels.len());
    assert_eq!(s.phases["C"], t.sample_count());
    // Processes: the device (named with its model and backend), spans, marks.
    let names: Vec<&str> = s.process_names.values().map(String::as_str).collect();
    assert_eq!(names, vec!["gpu0 · Demo GPU (nvml)", "spans", "marks"]);
    // Phase spans on one thread per req; calib (no req) on "spans".
    let threads: BTreeMap<&str, (u64, u64)> = s
        .thread_names
        .iter()
        .map(|(k, v)| (v.as_str(), *k))
        .collect();
    for r in 1..=6 {
        let key = threads[format!("req {r}").as_str()];
        let on: Vec<_> = s.slices.iter().filter(|x| (x.0, x.1) == key).collect();
        assert_eq!(on.len(), 1, "req {r}");
        assert_eq!(on[0].2, "phase");
        assert!(
            (on[0].4 - 700_000.0).abs() < 1e-6,
            "700 ms in µs: {}",
            on[0].4
        );
    }
    let calib = s.slices.iter().find(|x| x.2 == "calib").unwrap();
    assert_eq!((calib.0, calib.1), threads["spans"]);
    // Requests without spans get a request slice with their stages nested in it; the two
    // requests overlap in time but sit on their own threads.
    let r1 = threads["req r1"];
    let mut stages: Vec<(f64, &str)> = s
        .slices
        .iter()
        .filter(|x| (x.0, x.1) == r1)
        .map(|x| (x.4, x.2.as_str()))
        .collect();
    stages.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
    let names: Vec<&str> = stages.iter().map(|x| x.1).collect();
    assert_eq!(
        names,
        vec![
            "req r1",
            "token → done",
            "infer_start → first_token",
            "enqueue → infer_start",
            "server_recv → enqueue",
            "first_token → token"
        ]
    );
    assert_eq!(
        stages[5].0, 0.0,
        "first_token and token n=1 share an instant"
    );
    // Every mark is an instant, on a thread named after its label, with its fields.
    let marks: Vec<_> = s
        .instants
        .iter()
        .filter(|i| i.2.get("via").is_some())
        .collect();
    assert_eq!(marks.len(), t.marks.len());
    let recv = marks.iter().find(|i| i.0 == "server_recv").unwrap();
    assert_eq!(recv.2["note"], "a,\"b\"");
    assert_eq!(recv.2["recv_delay_us"], 150.0);
    assert!(s.thread_names.values().any(|n| n == "token"));
    // The source gap is a slice; the command start a global instant.
    assert!(
        s.slices
            .iter()
            .any(|x| x.2 == "gap: transient: demo gap" && (x.4 - 300_000.0).abs() < 1e-6)
    );
    assert!(s.instants.iter().any(|i| i.0 == "command_start"));
}

#[test]
fn the_checker_rejects_what_perfetto_would_choke_on() {
    let ok = r#"{"traceEvents":[{"name":"c","ph":"C","ts":1,"pid":1,"tid":0,"args":{"W":1}}]}"#;
    check_trace_events(ok).unwrap();
    for (bad, why) in [
        (
            r#"[{"name":"c","ph":"C","ts":1,"pid":1,"args":{"W":"hot"}}]"#,
            "not a number",
        ),
        (
            r#"[{"name":"c","ph":"C","ts":1,"pid":1,"args":{}}]"#,
            "empty args",
        ),
        (
            r#"[{"name":"c","ph":"C","ts":2,"pid":1,"args":{"W":1}},{"name":"c","ph":"C","ts":1,"pid":1,"args":{"W":2}}]"#,
            "goes back",
        ),
        (
            r#"[{"name":"s","ph":"X","ts":1,"pid":1,"tid":1}]"#,
            "without dur",
        ),
        (
            r#"[{"name":"a","ph":"X","ts":0,"dur":10,"pid":1,"tid":1},{"name":"b","ph":"X","ts":5,"dur":10,"pid":1,"tid":1}]"#,
            "without nesting",
        ),
        (
            r#"[{"name":"m","ph":"i","s":"x","ts":1,"pid":1,"tid":1}]"#,
            "scope",
        ),
        (r#"[{"name":"m","ph":"i","ts":1,"pid":1}]"#, "without tid"),
        (
            r#"[{"name":"thread_name","ph":"M","pid":1,"tid":1,"args":{}}]"#,
            "args.name",
        ),
        (r#"[{"name":"c","ph":"C","pid":1,"args":{"W":1}}]"#, "no ts"),
        (r#"[{"ph":"C","ts":1,"pid":1,"args":{"W":1}}]"#, "no name"),
    ] {
        let e = check_trace_events(bad).unwrap_err();
        assert!(e.contains(why), "{bad}: {e}");
    }
}

#[test]
fn rapl_only_and_real_traces_export_valid_perfetto() {
    let r = rapl();
    let spans = find_spans(&r, &SpanSpec::Auto).unwrap();
    assert_eq!(spans.spans.len(), 4);
    let s = check_trace_events(&perfetto_json(&r, &spans)).unwrap();
    let tracks: Vec<&str> = s.counter_tracks.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(
        tracks,
        vec!["package-0.energy J", "package-0.dram.energy J"]
    );
    // A RAPL zone's `name` attribute is its device, not a model: not repeated.
    let names: Vec<&str> = s.process_names.values().map(String::as_str).collect();
    assert_eq!(
        names,
        vec![
            "package-0 (rapl)",
            "package-0.dram (rapl)",
            "spans",
            "marks"
        ]
    );
    assert_eq!(s.phases["C"], r.sample_count());
    for t in examples() {
        let spans = find_spans(&t, &SpanSpec::Auto).unwrap();
        let s = check_trace_events(&perfetto_json(&t, &spans))
            .unwrap_or_else(|e| panic!("{}: {e}", t.path.display()));
        assert_eq!(s.phases["C"], t.sample_count());
        assert_eq!(
            s.instants
                .iter()
                .filter(|i| i.2.get("via").is_some())
                .count(),
            t.marks.len()
        );
        assert!(
            s.counter_tracks
                .iter()
                .any(|(_, n)| n == "gpu0.power_samples W")
        );
    }
}

/// Reads a wide CSV back: per column (t_ns, cell) for the non-empty cells.
fn read_wide(bytes: &[u8]) -> (Vec<String>, Vec<Vec<String>>) {
    let mut r = csv::Reader::from_reader(bytes);
    let header: Vec<String> = r.headers().unwrap().iter().map(str::to_owned).collect();
    let rows = r
        .records()
        .map(|x| x.unwrap().iter().map(str::to_owned).collect())
        .collect();
    (header, rows)
}

fn assert_round_trip(t: &Trace) {
    let mut out = Vec::new();
    let stats = table::write_wide_csv(t, &mut out, &mut |_, _| {}).unwrap();
    let (header, rows) = read_wide(&out);
    let n = t.channels.len();
    // Every field key of any mark gets a column of its own, after mark and mark_label.
    let mut keys: Vec<&str> = Vec::new();
    for m in &t.marks {
        for (k, _) in &m.fields {
            if !keys.contains(&k.as_str()) {
                keys.push(k);
            }
        }
    }
    assert_eq!(header.len(), n + 4 + keys.len());
    assert_eq!(
        (
            &header[0][..],
            &header[1][..],
            &header[n + 2][..],
            &header[n + 3][..]
        ),
        ("t_ns", "t_s", "mark", "mark_label")
    );
    for (j, k) in keys.iter().enumerate() {
        assert_eq!(header[n + 4 + j], format!("mark_{k}"));
    }
    let mut split_marks: Vec<(String, Vec<(String, String)>)> = Vec::new();
    let mut got: Vec<Vec<(u64, f64)>> = vec![Vec::new(); n];
    let mut marks = Vec::new();
    let mut prev = 0u64;
    for row in &rows {
        assert_eq!(row.len(), n + 4 + keys.len());
        let ts: u64 = row[0].parse().unwrap();
        assert!(ts >= prev, "rows out of order");
        prev = ts;
        let t_s: f64 = row[1].parse().unwrap();
        let want_s = (ts as i128 - t.header.start_anchor.mono_ns as i128) as f64 / 1e9;
        assert!((t_s - want_s).abs() < 1e-8);
        let mut filled = 0;
        for k in 0..n {
            if !row[k + 2].is_empty() {
                got[k].push((ts, row[k + 2].parse().unwrap()));
                filled += 1;
            }
        }
        if !row[n + 2].is_empty() {
            marks.push((ts, row[n + 2].clone()));
            let fields = keys
                .iter()
                .enumerate()
                .filter(|(j, _)| !row[n + 4 + j].is_empty())
                .map(|(j, k)| (k.to_string(), row[n + 4 + j].clone()))
                .collect();
            split_marks.push((row[n + 3].clone(), fields));
            filled += 1;
        } else {
            assert!(
                row[n + 3..].iter().all(String::is_empty),
                "fields without a mark"
            );
        }
        assert!(filled > 0, "an empty row at {ts}");
    }
    for (k, c) in t.channels.iter().enumerate() {
        let want: Vec<(u64, f64)> = c
            .t_ns
            .iter()
            .copied()
            .zip(c.values.iter().copied())
            .collect();
        assert_eq!(
            got[k], want,
            "{}: every sample once, values exact",
            c.spec.name
        );
    }
    let want_marks: Vec<(u64, String)> = t
        .marks
        .iter()
        .map(|m| (m.t_ns, table::mark_cell(m)))
        .collect();
    assert_eq!(marks, want_marks);
    // The mark cell is a mark line: it parses back to the same label and fields; and the
    // split columns hold the same label and fields (a field of an empty value aside).
    for ((m, (_, cell)), (label, fields)) in t.marks.iter().zip(&marks).zip(&split_marks) {
        let p = flinch_core::marks::parse_mark(cell.as_bytes()).unwrap();
        assert_eq!((&p.label, &p.fields), (&m.label, &m.fields));
        assert_eq!(label, &m.label);
        let mut want: Vec<(String, String)> = m
            .fields
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .cloned()
            .collect();
        let mut got = fields.clone();
        want.sort();
        got.sort();
        assert_eq!(got, want);
    }
    assert!(
        t.marks.is_empty() || !split_marks.is_empty(),
        "marks without their columns"
    );
    assert_eq!(stats.samples as usize, t.sample_count());
    assert_eq!(stats.marks as usize, t.marks.len());
    assert_eq!(stats.rows as usize, rows.len());
}

#[test]
fn the_wide_csv_round_trips_every_sample_and_mark_once() {
    let (_d, t) = demo();
    assert_round_trip(&t);
    // The demo's same-timestamp cases really are there: two samples of one channel and
    // two marks at one instant, each needing a second row.
    let c = t.channel("gpu0.power_samples").unwrap();
    assert!(c.t_ns.windows(2).any(|w| w[0] == w[1]));
    assert!(t.marks.windows(2).any(|w| w[0].t_ns == w[1].t_ns));
    assert_round_trip(&rapl());
    for e in examples() {
        assert_round_trip(&e);
    }
}

#[test]
fn demo_verdicts_follow_the_phases() {
    let (_d, t) = demo();
    let spans = find_spans(&t, &SpanSpec::Auto).unwrap();
    let (idle, warnings) = Idle::from_window(&t, "calib_start..calib_end").unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let v = verdicts(&t, &spans, Some(&idle));
    // The same verdicts as `flinch analyze` gives (the analysis is the one in flinch-core).
    let analyzer = flinch_analysis::Analyzer::new(
        &t,
        Some((&idle.profile, "window")),
        flinch_analysis::Thresholds::default(),
    );
    let report = analyzer
        .run("phase_start", "phase_end", &mut |_, _| {})
        .unwrap();
    let phase_v: Vec<Verdict> = report.spans.iter().map(|r| r.verdict).collect();
    assert_eq!(phase_v, v[1..]);
    let by_name: Vec<(String, Verdict)> = spans
        .spans
        .iter()
        .zip(&v)
        .map(|(s, v)| (s.label(), *v))
        .collect();
    assert_eq!(by_name[0], ("calib".into(), Verdict::IdleWait));
    for (k, (label, v)) in by_name[1..].iter().enumerate() {
        let want = if k % 2 == 0 {
            Verdict::GpuCompute
        } else {
            Verdict::IdleWait
        };
        assert_eq!(
            (label.as_str(), *v),
            (format!("phase req={}", k + 1).as_str(), want)
        );
    }
}

fn png_size_and_pixels(path: &Path) -> ((u32, u32), Vec<u8>, usize) {
    let dec = png::Decoder::new(std::fs::File::open(path).unwrap());
    let mut r = dec.read_info().unwrap();
    let mut buf = vec![0; r.output_buffer_size()];
    let info = r.next_frame(&mut buf).unwrap();
    buf.truncate(info.buffer_size());
    ((info.width, info.height), buf, info.color_type.samples())
}

/// Dark pixels in a rectangle of an RGB(A) image.
fn dark_pixels(buf: &[u8], width: u32, ch: usize, x: (u32, u32), y: (u32, u32)) -> usize {
    let mut n = 0;
    for yy in y.0..y.1 {
        for xx in x.0..x.1 {
            let i = (yy as usize * width as usize + xx as usize) * ch;
            if buf[i] < 100 && buf[i + 1] < 100 && buf[i + 2] < 100 {
                n += 1;
            }
        }
    }
    n
}

fn plot(
    t: &Trace,
    spans: &SpanSet,
    idle: Option<Idle>,
    opts: &PlotOptions,
    out: &Path,
) -> flinch_viz::plot::PlotSummary {
    let v = verdicts(t, spans, idle.as_ref());
    let data = PlotData::new(
        t,
        spans,
        &v,
        power_series(t),
        activity_series(t),
        idle.as_ref(),
        opts,
    );
    render(&data, opts, out, true).unwrap()
}

#[test]
fn png_text_is_drawn_from_the_embedded_font() {
    let (d, t) = demo();
    let spans = find_spans(&t, &SpanSpec::Auto).unwrap();
    let mut opts = PlotOptions {
        title: Some("WWWWWWWWWW MMMMMMMMMM".into()),
        ..Default::default()
    };
    let a = d.path().join("a.png");
    let s = plot(&t, &spans, None, &opts, &a);
    let (size, buf, ch) = png_size_and_pixels(&a);
    assert_eq!(size, s.size);
    // The title band holds dark glyph pixels where the title is, none far right of it.
    let title_ink = dark_pixels(&buf, size.0, ch, (10, 400), (5, 40));
    assert!(
        title_ink > 300,
        "the title was not drawn: {title_ink} dark pixels"
    );
    assert_eq!(dark_pixels(&buf, size.0, ch, (1000, 1390), (5, 36)), 0);
    // Another title changes exactly those pixels: text really comes from the font.
    opts.title = Some("i".into());
    let b = d.path().join("b.png");
    plot(&t, &spans, None, &opts, &b);
    let (_, buf_b, _) = png_size_and_pixels(&b);
    assert!(dark_pixels(&buf_b, size.0, ch, (10, 400), (5, 40)) < title_ink / 10);
}

#[test]
fn plots_of_demo_rapl_and_real_traces_show_their_panels() {
    let (d, t) = demo();
    let spans = find_spans(&t, &SpanSpec::Auto).unwrap();
    let svg = d.path().join("demo.svg");
    let s = plot(
        &t,
        &spans,
        Some(Idle::from_watts(&t, &["100".into()]).unwrap()),
        &PlotOptions::default(),
        &svg,
    );
    assert_eq!((s.power_lines, s.activity_lines, s.spans), (1, 2, 7));
    assert!(s.histogram, "6 phase spans make a histogram");
    assert_eq!(s.idle, vec![("gpu0".to_string(), 100.0)]);
    let text = std::fs::read_to_string(&svg).unwrap();
    for needle in [
        "demo.flinch.csv — Demo GPU on demo-host",
        "Power per device",
        "power (W)",
        "time since the trace",
        "Utilisation, activity and CPU time",
        "gpu0 util gpu",
        "gpu0 sm active",
        "Durations of phase spans — n=6, median 700.0 ms",
        "gpu0 power (driver samples)",
        "gpu0 idle 100.0 W",
        "span: gpu-compute (3)",
        "span: idle-wait (4)",
        "calib",
    ] {
        assert!(text.contains(needle), "missing {needle:?}");
    }
    // Without an idle level the legend has no idle line; --histogram never drops it.
    let opts = PlotOptions {
        histogram: HistogramMode::Never,
        ..Default::default()
    };
    let s = plot(&t, &spans, None, &opts, &svg);
    assert!(!s.histogram && s.idle.is_empty());
    assert!(!std::fs::read_to_string(&svg).unwrap().contains("idle 100"));

    // RAPL only: power from the wrap-corrected counters, no activity panel.
    let r = rapl();
    let spans = find_spans(&r, &SpanSpec::Auto).unwrap();
    let png = d.path().join("rapl.png");
    let s = plot(
        &r,
        &spans,
        Some(Idle::from_watts(&r, &["package-0=20".into(), "package-0.dram=4".into()]).unwrap()),
        &PlotOptions::default(),
        &png,
    );
    assert_eq!((s.power_lines, s.activity_lines, s.spans), (2, 0, 4));
    assert_eq!(s.verdicts[1], (Verdict::CpuCompute, 4));
    assert_eq!(png_size_and_pixels(&png).0, s.size);
    let rp = power_series(&r);
    assert_eq!(rp[0].label, "package-0 power (from energy counter)");
    // The fixture drives package-0 at 20 W idle and 95 W busy, through a wrap.
    let busy = &spans.spans[1];
    let mean = rp[0]
        .window_mean(busy.start_ns + 50_000_000, busy.end_ns - 50_000_000)
        .unwrap();
    assert!((mean - 95.0).abs() < 8.0, "busy mean {mean}");
    let all: Vec<f64> = rp[0]
        .values
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .collect();
    assert!(
        all.iter().all(|&v| (0.0..200.0).contains(&v)),
        "a wrap shows as a spike"
    );

    for e in examples() {
        let spans = find_spans(&e, &SpanSpec::Auto).unwrap();
        let out = d.path().join("real.png");
        let s = plot(&e, &spans, None, &PlotOptions::default(), &out);
        assert_eq!(s.power_lines, 1, "{}", e.path.display());
        assert!(s.activity_lines >= 2);
        assert_eq!(png_size_and_pixels(&out).0, s.size);
    }
}

/// `<text>` elements of an SVG: (x, y, text-anchor, text).
fn svg_texts(svg: &str) -> Vec<(f64, f64, String, String)> {
    let attr = |tag: &str, name: &str| -> Option<String> {
        let i = tag.find(&format!(" {name}=\""))? + name.len() + 3;
        Some(tag[i..].split('"').next()?.to_owned())
    };
    svg.split("<text")
        .skip(1)
        .filter_map(|rest| {
            let (tag, after) = rest.split_once('>')?;
            let text = after.split("</text>").next()?.trim().to_owned();
            Some((
                attr(tag, "x")?.parse().ok()?,
                attr(tag, "y")?.parse().ok()?,
                attr(tag, "text-anchor").unwrap_or_else(|| "start".into()),
                text,
            ))
        })
        .collect()
}

#[test]
fn a_cpu_only_trace_gets_no_empty_power_panel_and_its_process_cpu_time_is_drawn() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("cpuonly.flinch.csv");
    write_cpu_trace(&p).unwrap();
    let t = read_trace(&p).unwrap();
    let spans = find_spans(
        &t,
        &SpanSpec::Labels {
            from: "task_start".into(),
            to: "task_end".into(),
        },
    )
    .unwrap();
    assert_eq!(spans.spans.len(), 6);
    // proc.cpu_time, the channel CPU verdicts are made from, is a line: one core busy in
    // the cpu tasks, none in the sleeps.
    let act = activity_series(&t);
    let labels: Vec<&str> = act.iter().map(|s| s.label.as_str()).collect();
    assert_eq!(
        labels,
        ["host cpu util", "proc CPU time (cores, right axis)"]
    );
    for (i, s) in spans.spans.iter().enumerate() {
        let mean = act[1]
            .window_mean(s.start_ns + 150_000_000, s.end_ns - 150_000_000)
            .unwrap();
        let want = if i % 2 == 0 { 1.0 } else { 0.0 };
        assert!((mean - want).abs() < 0.05, "task {i}: {mean} cores");
    }
    let svg = dir.path().join("cpu.svg");
    let s = plot(&t, &spans, None, &PlotOptions::default(), &svg);
    assert_eq!((s.power_lines, s.activity_lines, s.spans), (0, 2, 6));
    assert!(s.histogram);
    // Title, one time panel and the histogram: no empty power panel.
    assert_eq!(s.size, (1400, 64 + 430 + 330));
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(!text.contains("Power per device"));
    assert!(!text.contains("no power or energy channel"));
    for needle in [
        "Utilisation, activity and CPU time",
        "proc CPU time (cores, right axis)",
        "CPU time (cores)",
        "span: ",
    ] {
        assert!(text.contains(needle), "missing {needle:?}");
    }
    // The histogram's count axis labels whole spans, each once (not "2, 2, 1, 1, 0").
    let hist_top = 64.0 + 430.0;
    let counts: Vec<String> = svg_texts(&text)
        .into_iter()
        .filter(|(x, y, _, t)| *y > hist_top + 30.0 && *x < 80.0 && t.parse::<u32>().is_ok())
        .map(|(_, _, _, t)| t)
        .collect();
    let mut unique = counts.clone();
    unique.sort();
    unique.dedup();
    assert!(counts.len() >= 3, "{counts:?}");
    assert_eq!(
        unique.len(),
        counts.len(),
        "repeated count labels: {counts:?}"
    );
    assert_eq!(CPU_TASK_MS.len(), 6);
}

#[test]
fn the_median_and_p90_labels_never_overlap() {
    // The demo's six phases all last 700 ms: the median and p90 lines coincide.
    let (d, t) = demo();
    let spans = find_spans(
        &t,
        &SpanSpec::Labels {
            from: "phase_start".into(),
            to: "phase_end".into(),
        },
    )
    .unwrap();
    let svg = d.path().join("h.svg");
    let opts = PlotOptions {
        histogram: HistogramMode::Always,
        ..Default::default()
    };
    plot(&t, &spans, None, &opts, &svg);
    let texts = svg_texts(&std::fs::read_to_string(&svg).unwrap());
    let find = |name: &str| {
        texts
            .iter()
            .find(|(_, _, _, t)| t == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} label"))
    };
    let (mx, my, manchor, _) = find("median");
    let (px, py, panchor, _) = find("p90");
    assert_eq!(my, py);
    // The median's label ends left of its line, the p90's starts right of its own.
    assert_eq!((manchor.as_str(), panchor.as_str()), ("end", "start"));
    assert!(mx < px, "median at {mx}, p90 at {px}");
}

#[test]
fn the_legend_never_hides_the_span_lanes() {
    // Two overlapping requests (lanes) at the right edge of the picture, where the legend
    // is drawn: their bars must keep their colour.
    let (d, t) = demo();
    let spans = find_spans(
        &t,
        &SpanSpec::Labels {
            from: "server_recv".into(),
            to: "done".into(),
        },
    )
    .unwrap();
    assert_eq!(spans.spans.len(), 2);
    let t0 = flinch_viz::testing::DEMO_T0;
    let opts = PlotOptions {
        window: Some((t0 + 2_000_000_000, t0 + 9_250_000_000)),
        histogram: HistogramMode::Never,
        ..Default::default()
    };
    let png = d.path().join("lanes.png");
    let idle = Idle::from_watts(&t, &["100".into()]).unwrap();
    let s = plot(&t, &spans, Some(idle), &opts, &png);
    assert_eq!(s.verdicts[0], (Verdict::GpuCompute, 2));
    let ((w, _), buf, ch) = png_size_and_pixels(&png);
    // Strongly red pixels (the gpu-compute bars) in the top right corner of the power
    // panel, where an upper-right legend box would wash them out.
    let mut red = 0;
    for y in 64..64 + 140 {
        for x in 1200..1370 {
            let i = (y * w as usize + x) * ch;
            if buf[i] as i32 - buf[i + 1] as i32 > 60 {
                red += 1;
            }
        }
    }
    assert!(red > 1000, "the lanes are hidden: {red} red pixels");
}

#[test]
fn the_idle_profile_embedded_in_the_header_is_used() {
    let (_d, mut t) = demo();
    assert_eq!(Idle::from_header(&t), Ok(None));
    let (w, _) = Idle::from_window(&t, "calib_start..calib_end").unwrap();
    t.header.idle = Some(serde_json::to_value(&w.profile).unwrap());
    let h = Idle::from_header(&t).unwrap().unwrap();
    assert_eq!(h.via, "embedded");
    assert_eq!(h.watts_for(&t, "gpu0.power_samples"), Some(100.0));
    t.header.idle = Some(serde_json::json!({"format": "something else"}));
    assert!(Idle::from_header(&t).unwrap_err().contains("not usable"));
}

/// Text must render on a machine without system fonts: plotters' `ttf` feature (font-kit,
/// fontconfig) must never be pulled in, only `ab_glyph` with the embedded font.
#[test]
fn no_system_font_library_is_linked() {
    let lock = std::fs::read_to_string(repo().join("Cargo.lock")).unwrap();
    for name in [
        "font-kit",
        "yeslogic-fontconfig-sys",
        "servo-fontconfig",
        "freetype-sys",
    ] {
        assert!(
            !lock.contains(&format!("name = \"{name}\"")),
            "{name} is in Cargo.lock: plotters' ttf feature would need system fonts"
        );
    }
    assert!(lock.contains("name = \"ab_glyph\""));
    let font = flinch_viz::plot::FONT;
    assert!(
        font.len() < 100_000 && font[..4] == [0, 1, 0, 0],
        "a TrueType font"
    );
}

//! `flinch plot` and `flinch export`, end to end through the binary: on the real GPU trace
//! in examples/, on the RAPL-only fixture recorded from a fake powercap tree, and on bad
//! input (clear errors, nothing half-written).

use crate::common::flinch;
use flinch_viz::testing::check_trace_events;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn run(cmd: &mut Command) -> (Output, String, String) {
    let o = cmd.output().expect("flinch runs");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    (o, out, err)
}

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(p)
}

fn llm() -> PathBuf {
    let p = repo("examples/llm/llm.flinch.csv");
    assert!(
        p.is_file(),
        "the real example trace {} is missing",
        p.display()
    );
    p
}

fn rapl() -> PathBuf {
    repo("crates/viz/tests/fixtures/rapl-only.flinch.csv")
}

fn png_size(p: &Path) -> (u32, u32) {
    let b = std::fs::read(p).unwrap();
    assert_eq!(
        &b[..8],
        b"\x89PNG\r\n\x1a\n",
        "{} is not a PNG",
        p.display()
    );
    let be = |i: usize| u32::from_be_bytes(b[i..i + 4].try_into().unwrap());
    (be(16), be(20))
}

/// The files in a folder (to see that nothing, not even a temporary file, was left).
fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn plot_draws_the_real_llm_trace_and_the_rapl_only_trace() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("ttft.png");
    let (o, out, err) = run(flinch()
        .arg("plot")
        .arg(llm())
        .args([
            "--from",
            "infer_start",
            "--to",
            "first_token",
            "--idle-watts",
            "120",
            "-o",
        ])
        .arg(&png));
    assert!(o.status.success(), "{err}");
    assert!(out.contains("16 span(s)"), "{out}");
    assert!(
        out.contains("gpu0 idle 120.0 W") && out.contains("7 activity line(s)"),
        "{out}"
    );
    assert!(out.contains("histogram"), "{out}");
    assert_eq!(png_size(&png), (1400, 1094));

    let svg = dir.path().join("rapl.svg");
    let (o, out, err) = run(flinch()
        .arg("plot")
        .arg(rapl())
        .args([
            "--idle-window",
            "phase_end..phase_start",
            "--histogram",
            "never",
            "-o",
        ])
        .arg(&svg));
    assert!(o.status.success(), "{err}");
    assert!(
        out.contains("2 power line(s), 4 span(s): cpu-compute 4"),
        "{out}"
    );
    let idle: f64 = out
        .split("package-0 idle ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (idle - 20.0).abs() < 3.0,
        "the fixture idles at 20 W: {out}"
    );
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains("package-0 power (from energy counter)"));

    // The default output sits next to the trace, named after it.
    let copy = dir.path().join("run.flinch.csv");
    std::fs::copy(rapl(), &copy).unwrap();
    let (o, out, err) = run(flinch().arg("plot").arg(&copy).arg("-q"));
    assert!(o.status.success(), "{err}");
    assert!(out.contains("run.png"), "{out}");
    assert!(err.is_empty(), "--quiet: {err}");
    png_size(&dir.path().join("run.png"));
}

#[test]
fn export_writes_valid_perfetto_and_a_wide_csv_for_real_and_rapl_traces() {
    let dir = tempfile::tempdir().unwrap();
    for (trace, power) in [
        (llm(), "gpu0.power_samples W"),
        (rapl(), "package-0.energy J"),
    ] {
        let json = dir.path().join("t.json");
        let csv = dir.path().join("t.csv");
        let (o, out, err) = run(flinch()
            .arg("export")
            .arg(&trace)
            .arg("--perfetto")
            .arg(&json)
            .arg("--csv")
            .arg(&csv));
        assert!(o.status.success(), "{err}");
        assert!(out.contains("ui.perfetto.dev"), "{out}");
        let t = flinch_core::trace::read_trace(&trace).unwrap();
        let s = check_trace_events(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(s.phases["C"], t.sample_count());
        assert!(
            s.counter_tracks.iter().any(|(_, n)| n == power),
            "{:?}",
            s.counter_tracks
        );
        let text = std::fs::read_to_string(&csv).unwrap();
        let header = text.lines().next().unwrap();
        assert!(
            header.starts_with("t_ns,t_s,") && header.ends_with(",mark"),
            "{header}"
        );
        assert!(
            out.contains(&format!(
                "{} samples, {} marks",
                t.sample_count(),
                t.marks.len()
            )),
            "{out}"
        );
    }
    // The LLM trace's requests become threads with their stages.
    let json = dir.path().join("t.json");
    run(flinch()
        .arg("export")
        .arg(llm())
        .arg("--perfetto")
        .arg(&json));
    let s = check_trace_events(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(s.thread_names.values().any(|n| n == "req 15"));
    assert!(s.slices.iter().any(|x| x.2 == "infer_start → first_token"));
    assert_eq!(files(dir.path()), vec!["t.csv", "t.json"]);
}

#[test]
fn bad_input_gets_a_clear_error_and_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A trace with a damaged row: the error names file and line; nothing is written.
    let bad = d.join("bad.flinch.csv");
    let mut text = std::fs::read_to_string(rapl()).unwrap();
    let fifth = text.lines().take(4).map(|l| l.len() + 1).sum::<usize>();
    text.insert_str(fifth, "12x,sample,package-0.energy,1,,\n");
    std::fs::write(&bad, text).unwrap();
    for args in [
        vec!["plot", "bad.flinch.csv", "-o", "out.png"],
        vec![
            "export",
            "bad.flinch.csv",
            "--perfetto",
            "out.json",
            "--csv",
            "out.csv",
        ],
    ] {
        let (o, _, err) = run(flinch().current_dir(d).args(&args));
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(
            err.contains("bad.flinch.csv:5: t_ns \"12x\" is not an unsigned integer"),
            "{err}"
        );
        assert_eq!(
            files(d),
            vec!["bad.flinch.csv"],
            "{args:?} left files behind"
        );
    }
    std::fs::copy(rapl(), d.join("ok.flinch.csv")).unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["plot", "missing.flinch.csv"],
            "missing.flinch.csv is not a file",
        ),
        (
            vec!["plot", "ok.flinch.csv", "-o", "out.jpg"],
            "use .svg or .png",
        ),
        (
            vec!["plot", "ok.flinch.csv", "-o", "no/such/out.png"],
            "does not exist",
        ),
        (
            vec!["plot", "ok.flinch.csv", "-o", "ok.flinch.csv"],
            "use .svg or .png",
        ),
        (
            vec!["export", "ok.flinch.csv", "--csv", "ok.flinch.csv"],
            "is the input trace",
        ),
        (
            vec!["export", "ok.flinch.csv", "--csv", "x", "--perfetto", "x"],
            "the same file",
        ),
        (
            vec![
                "plot",
                "ok.flinch.csv",
                "--from",
                "infer_start",
                "--to",
                "first_token",
            ],
            "no mark labelled \"infer_start\" in ok.flinch.csv; labels present: phase_end (4), phase_start (4)",
        ),
        (
            vec!["plot", "ok.flinch.csv", "--idle-watts", "lots"],
            "--idle-watts \"lots\": expected watts",
        ),
        (
            vec!["plot", "ok.flinch.csv", "--idle-watts", "gpu0=100"],
            "no power or energy channel of device \"gpu0\"; devices: package-0, package-0.dram",
        ),
        (
            vec![
                "plot",
                "ok.flinch.csv",
                "--idle-watts",
                "3",
                "--idle-window",
                "1..2",
            ],
            "not several",
        ),
        (
            vec!["plot", "ok.flinch.csv", "--idle-window", "3..1"],
            "the window ends (1.000 s) before it starts (3.000 s)",
        ),
        (
            vec!["plot", "ok.flinch.csv", "--window", "nope"],
            "--window \"nope\" is not A..B",
        ),
        (
            vec!["plot", "ok.flinch.csv", "--idle", "ok.flinch.csv"],
            "--idle ok.flinch.csv: not valid JSON",
        ),
        (vec!["export", "ok.flinch.csv"], "--perfetto"),
    ];
    for (args, want) in cases {
        let (o, _, err) = run(flinch().current_dir(d).args(&args));
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: expected {want:?} in {err}");
        assert_eq!(
            files(d),
            vec!["bad.flinch.csv", "ok.flinch.csv"],
            "{args:?}"
        );
    }
}

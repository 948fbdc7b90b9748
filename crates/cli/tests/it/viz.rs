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
        out.contains("gpu0 idle 120.0 W") && out.contains("8 activity line(s)"),
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
            .arg(&csv)
            .arg("--force"));
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
            header.starts_with("t_ns,t_s,") && header.contains(",mark,mark_label"),
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
    let (o, _, err) = run(flinch()
        .arg("export")
        .arg(llm())
        .arg("--perfetto")
        .arg(&json)
        .arg("--force"));
    assert!(o.status.success(), "{err}");
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
            "missing.flinch.csv does not exist",
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

#[test]
fn outputs_never_replace_a_file_without_force_nor_write_through_a_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::copy(rapl(), d.join("t.flinch.csv")).unwrap();
    let mine = "print('the user program')\n";
    std::fs::write(d.join("prog.py"), mine).unwrap();
    std::fs::write(d.join("t.png"), "an older picture").unwrap();
    std::fs::write(d.join("idle.json"), "{}").unwrap();
    std::os::unix::fs::symlink(d.join("prog.py"), d.join("link.json")).unwrap();
    let before = files(d);
    for args in [
        vec!["export", "t.flinch.csv", "--csv", "prog.py"],
        vec!["export", "t.flinch.csv", "--perfetto", "link.json"],
        vec!["plot", "t.flinch.csv"], // the default t.png
        vec!["plot", "t.flinch.csv", "-o", "t.png"],
        vec!["calibrate", "--source", "synthetic", "--seconds", "1s"],
        vec![
            "calibrate",
            "--source",
            "synthetic",
            "--seconds",
            "1s",
            "--out",
            "link.json",
        ],
    ] {
        let (o, _, err) = run(flinch().current_dir(d).args(&args));
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("already exists"), "{args:?}: {err}");
        assert!(err.contains("--force"), "{args:?}: {err}");
        assert_eq!(files(d), before, "{args:?} left files behind");
        assert_eq!(std::fs::read_to_string(d.join("prog.py")).unwrap(), mine);
        assert_eq!(
            std::fs::read_to_string(d.join("t.png")).unwrap(),
            "an older picture"
        );
    }
    // With --force the names are replaced; the symlink's target is not written through.
    for args in [
        vec![
            "export",
            "t.flinch.csv",
            "--perfetto",
            "link.json",
            "--force",
        ],
        vec!["plot", "t.flinch.csv", "--force"],
    ] {
        let (o, _, err) = run(flinch().current_dir(d).args(&args));
        assert!(o.status.success(), "{args:?}: {err}");
    }
    assert_eq!(std::fs::read_to_string(d.join("prog.py")).unwrap(), mine);
    let link = std::fs::symlink_metadata(d.join("link.json")).unwrap();
    assert!(link.is_file(), "the symlink was replaced by the output");
    check_trace_events(&std::fs::read_to_string(d.join("link.json")).unwrap()).unwrap();
    assert_eq!(png_size(&d.join("t.png")).0, 1400);
    assert_eq!(files(d), before, "temporary files left behind");
}

#[test]
fn the_messages_a_new_user_met_say_what_is_wrong_in_one_wording() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A missing trace: the same words from every command.
    for cmd in ["analyze", "plot", "export"] {
        let mut c = flinch();
        c.current_dir(d).args([cmd, "missing.flinch.csv"]);
        if cmd == "export" {
            c.args(["--csv", "out.csv"]);
        }
        let (o, _, err) = run(&mut c);
        assert_eq!(o.status.code(), Some(2), "{cmd}: {err}");
        assert!(
            err.contains(
                "missing.flinch.csv does not exist: give the trace file written by `flinch record`"
            ),
            "{cmd}: {err}"
        );
    }
    // A trace cut inside its header line: said to be cut, not to lack a header.
    let whole = std::fs::read_to_string(rapl()).unwrap();
    let cut_at = whole.find("\n# header ").unwrap() + 40;
    std::fs::write(d.join("cut.flinch.csv"), &whole[..cut_at]).unwrap();
    for cmd in ["analyze", "plot", "export"] {
        let mut c = flinch();
        c.current_dir(d).args([cmd, "cut.flinch.csv"]);
        if cmd == "export" {
            c.args(["--csv", "out.csv"]);
        }
        let (o, _, err) = run(&mut c);
        assert_eq!(o.status.code(), Some(2), "{cmd}: {err}");
        assert!(
            err.contains("cut.flinch.csv:2: the header line is cut short"),
            "{cmd}: {err}"
        );
    }
    // export with no output names both ways to give one.
    std::fs::copy(rapl(), d.join("ok.flinch.csv")).unwrap();
    let (o, _, err) = run(flinch().current_dir(d).args(["export", "ok.flinch.csv"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(
        err.contains("--perfetto <OUT.pftrace|OUT.json>|--csv <OUT.csv>|--parquet <DIR>"),
        "{err}"
    );
    // The helps of analyze and plot say the same about the idle level: one source, never
    // "A wins over B" while giving both is an error.
    for (cmd, both) in [("analyze", "not both"), ("plot", "not several")] {
        let (o, help, _) = run(flinch().args([cmd, "--help"]));
        assert!(o.status.success());
        let flat = help.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            flat.contains("The idle level: give one of"),
            "{cmd}: {flat}"
        );
        assert!(flat.contains(both), "{cmd}: {flat}");
        assert!(
            flat.contains("the profile embedded by `record --idle` is used, if any"),
            "{cmd}: {flat}"
        );
        assert!(!flat.contains("else --idle"), "{cmd}: {flat}");
    }
}

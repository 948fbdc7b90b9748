//! The dcgm backend through the real `flinch` binary: on this machine (no DCGM) it says
//! what it tried; with `--dcgm-lib` pointing at the fake libdcgm built from C
//! (`flinch_dcgm::testing`) it records what the fake served, on the fake's timestamps, with
//! blanks as gaps, and tears DCGM down in order on every exit.

use crate::common::flinch;
use flinch_core::trace::read_trace;
use flinch_dcgm::testing::FakeDcgm;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn fake(script: &str) -> FakeDcgm {
    let f = FakeDcgm::build().expect("building the fake libdcgm needs a C compiler (cc or $CC)");
    f.script(script);
    f
}

fn no_panic(o: &Output) {
    let e = text(&o.stderr);
    assert!(!e.contains("panicked"), "flinch panicked:\n{e}");
}

const TEARDOWN: [&str; 7] = [
    "dcgmUnwatchFields",
    "dcgmUnwatchFields",
    "dcgmFieldGroupDestroy",
    "dcgmFieldGroupDestroy",
    "dcgmGroupDestroy",
    "dcgmStopEmbedded",
    "dcgmShutdown",
];

fn assert_torn_down(f: &FakeDcgm) {
    let calls = f.calls();
    assert!(calls.len() >= 7, "{}", f.log());
    assert_eq!(calls[calls.len() - 7..], TEARDOWN, "{}", f.log());
    assert!(f.problems().is_empty(), "{:?}\n{}", f.problems(), f.log());
}

fn dcgm_status(json: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(json).expect("sources --json is JSON");
    v.as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "dcgm")
        .cloned()
        .expect("dcgm is listed")
}

#[test]
fn sources_says_dcgm_is_not_installed_and_lists_the_names_tried() {
    let o = flinch().arg("sources").output().unwrap();
    no_panic(&o);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    let line = out
        .lines()
        .position(|l| l.starts_with("dcgm "))
        .expect("a dcgm line");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[line].contains("unavailable"), "{out}");
    let why = lines[line + 1];
    for needle in [
        "why:",
        "DCGM is not installed",
        "tried libdcgm.so.4",
        "libdcgm.so.3",
        "datacenter-gpu-manager-4",
        "--dcgm-lib",
    ] {
        assert!(
            why.contains(needle),
            "{needle:?} missing from {why:?} (is DCGM installed here?)"
        );
    }
    // The other backends are still reported.
    assert!(out.contains("synthetic  available"), "{out}");

    let o = flinch().args(["sources", "--json"]).output().unwrap();
    let st = dcgm_status(&text(&o.stdout));
    assert_eq!(st["available"], false);
    let reason = st["reason"].as_str().unwrap();
    assert!(
        reason.find("libdcgm.so.4") < reason.find("libdcgm.so.3"),
        "{reason}"
    );
}

#[test]
fn record_source_dcgm_fails_with_that_message_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.flinch.csv");
    let fifo = dir.path().join("marks.fifo");
    let o = flinch()
        .args([
            "record",
            "--quiet",
            "--source",
            "synthetic",
            "--source",
            "dcgm",
        ])
        .args(["--duration", "1s", "--out"])
        .arg(&out)
        .arg("--marks-fifo")
        .arg(&fifo)
        .output()
        .unwrap();
    no_panic(&o);
    assert!(!o.status.success());
    let e = text(&o.stderr);
    assert!(e.contains("source dcgm is unavailable"), "{e}");
    assert!(
        e.contains("libdcgm.so.4") && e.contains("libdcgm.so.3"),
        "{e}"
    );
    assert!(e.contains("datacenter-gpu-manager-4"), "{e}");
    assert!(
        !out.exists(),
        "a trace was written although a source failed"
    );
    assert!(!fifo.exists(), "the marks FIFO was left behind");

    let o = flinch()
        .args([
            "record",
            "--quiet",
            "--source",
            "dcgm",
            "--dcgm-lib",
            "/nonexistent/libdcgm.so.4",
        ])
        .args(["--duration", "1s", "--no-fifo", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    no_panic(&o);
    assert!(!o.status.success());
    let e = text(&o.stderr);
    assert!(e.contains("--dcgm-lib /nonexistent/libdcgm.so.4"), "{e}");
    assert!(!out.exists());
}

#[test]
fn a_library_that_is_not_dcgm_is_named_with_the_missing_symbol() {
    let o = flinch()
        .args(["sources", "--json", "--dcgm-lib", "libc.so.6"])
        .output()
        .unwrap();
    no_panic(&o);
    let st = dcgm_status(&text(&o.stdout));
    assert_eq!(st["available"], false);
    let reason = st["reason"].as_str().unwrap();
    assert!(
        reason.contains("libc.so.6 lacks the required symbol dcgmInit"),
        "{reason}"
    );
}

#[test]
fn sources_lists_the_channels_the_fake_engine_offers_and_tears_it_down() {
    let f = fake("gpus 0 3\nfail_field dcgmWatchFields 1001 -36\n");
    let o = flinch()
        .args(["sources", "--json", "--dcgm-lib"])
        .arg(f.path())
        .output()
        .unwrap();
    no_panic(&o);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let st = dcgm_status(&text(&o.stdout));
    assert_eq!(st["available"], true, "{st}");
    let names: Vec<&str> = st["sources"][0]["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 10, "{names:?}");
    assert!(names.contains(&"dcgm-gpu3.power_instant"), "{names:?}");
    assert!(!names.iter().any(|n| n.ends_with("sm_active")), "{names:?}");
    let notes = st["notes"].to_string();
    assert!(
        notes.contains("profiling fields 1001-1005: not available"),
        "{notes}"
    );
    let calls = f.calls();
    assert_eq!(
        calls[calls.len() - 5..],
        [
            "dcgmUnwatchFields",
            "dcgmFieldGroupDestroy",
            "dcgmGroupDestroy",
            "dcgmStopEmbedded",
            "dcgmShutdown"
        ],
        "{}",
        f.log()
    );
    assert!(f.problems().is_empty(), "{}", f.log());
}

/// A script serving `steps` polls' worth of values, stamped relative to the wall clock at
/// the moment the fake hands them over.
fn live_script(steps: u32) -> String {
    let mut s = String::from("gpus 0 1\n");
    for step in 2..=steps {
        for gpu in 0..2u32 {
            let w = 80.0 + step as f64 * 3.5 + gpu as f64;
            s.push_str(&format!("sample {step} {gpu} 155 ago:40000 {w}\n"));
            s.push_str(&format!("sample {step} {gpu} 155 ago:30000 blank\n"));
            s.push_str(&format!("sample {step} {gpu} 157 ago:35000 {}\n", w + 20.0));
            s.push_str(&format!(
                "sample {step} {gpu} 156 ago:20000 {}\n",
                9_000_000 + step * 50_000
            ));
            s.push_str(&format!("sample {step} {gpu} 203 ago:10000 notsupported\n"));
            s.push_str(&format!("sample {step} {gpu} 1004 ago:5000 0.{step:02}\n"));
        }
    }
    s
}

/// Every numeric value the fake served is in the trace, on its timestamp; blanks are not.
fn assert_trace_matches_served(trace_path: &Path, f: &FakeDcgm) {
    let t = read_trace(trace_path).unwrap();
    assert!(t.complete(), "trace not complete");
    let map = t.anchor_map();
    let served = f.served();
    assert!(
        served.len() >= 12,
        "the fake served too little: {}",
        f.log()
    );
    let mut checked = 0;
    for gpu in 0..2u32 {
        for (field, what, scale) in [
            (155u16, "power_avg1s", 1.0),
            (157, "power_instant", 1.0),
            (156, "energy", 1e-3),
            (203, "util_gpu", 1.0),
            (1004, "tensor_active", 100.0),
        ] {
            let name = format!("dcgm-gpu{gpu}.{what}");
            let expect: Vec<(u64, f64)> = served
                .iter()
                .filter(|s| s.gpu == gpu && s.field == field)
                .filter_map(|s| {
                    let v: f64 = s.value.parse().ok()?;
                    Some((map.us_to_mono_ns(s.ts_us).unwrap(), v * scale))
                })
                .collect();
            let got: Vec<(u64, f64)> = t
                .channel(&name)
                .map(|c| {
                    c.t_ns
                        .iter()
                        .copied()
                        .zip(c.values.iter().copied())
                        .collect()
                })
                .unwrap_or_default();
            assert_eq!(
                got.len(),
                expect.len(),
                "{name}: trace {got:?}\nserved {expect:?}"
            );
            for ((gt, gv), (et, ev)) in got.iter().zip(&expect) {
                assert!((gv - ev).abs() < 1e-9, "{name}: {gv} recorded, {ev} served");
                assert!(
                    gt.abs_diff(*et) < 200_000,
                    "{name}: at {gt}, served for {et}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 8, "too few values compared ({checked})");
    // util was only ever blank: a channel without a single reading, not a row of zeros.
    assert!(
        t.channel("dcgm-gpu0.util_gpu")
            .is_none_or(|c| c.values.is_empty())
    );
}

#[test]
fn a_recording_through_the_fake_library_holds_what_it_served() {
    let f = fake(&live_script(8));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("dcgm.flinch.csv");
    let o = flinch()
        .args([
            "record",
            "--quiet",
            "--no-fifo",
            "--source",
            "dcgm",
            "--duration",
            "3s",
        ])
        .arg("--dcgm-lib")
        .arg(f.path())
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    no_panic(&o);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_torn_down(&f);
    assert!(
        f.log().contains("freq=100000 "),
        "update period 100 ms: {}",
        f.log()
    );
    assert_trace_matches_served(&out, &f);
    let t = read_trace(&out).unwrap();
    let src = t.header.sources.iter().find(|s| s.name == "dcgm").unwrap();
    assert_eq!(src.attributes["connection"], "embedded");
}

#[test]
fn ctrl_c_ends_a_dcgm_recording_cleanly_with_dcgm_torn_down() {
    let f = fake(&live_script(30));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("dcgm.flinch.csv");
    let rec = flinch()
        .args(["record", "--quiet", "--no-fifo", "--source", "dcgm"])
        .args(["--dcgm-host", "unix:///run/fake-hostengine", "--dcgm-lib"])
        .arg(f.path())
        .arg("--out")
        .arg(&out)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until flinch has drained the fake a few times (4 polls of 2 field groups).
    let t0 = Instant::now();
    while f
        .calls()
        .iter()
        .filter(|c| *c == "dcgmGetValuesSince_v2")
        .count()
        < 8
    {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no polls: {}",
            f.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(rec.id() as i32).unwrap(),
        rustix::process::Signal::INT,
    )
    .unwrap();
    let o = rec.wait_with_output().unwrap();
    no_panic(&o);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(read_trace(&out).unwrap().footer.unwrap().ended_by, "signal");
    let log = f.log();
    assert!(
        log.contains("dcgmConnect_v2 address=/run/fake-hostengine unix=1 persist=0"),
        "{log}"
    );
    let calls = f.calls();
    assert_eq!(
        calls[calls.len() - 7..],
        [
            "dcgmUnwatchFields",
            "dcgmUnwatchFields",
            "dcgmFieldGroupDestroy",
            "dcgmFieldGroupDestroy",
            "dcgmGroupDestroy",
            "dcgmDisconnect",
            "dcgmShutdown"
        ],
        "{log}"
    );
    // The final poll forced an update first, then drained.
    let last_update = calls
        .iter()
        .rposition(|c| c == "dcgmUpdateAllFields")
        .unwrap();
    assert_eq!(calls[last_update + 1], "dcgmGetValuesSince_v2");
    assert!(f.problems().is_empty(), "{log}");
    assert_trace_matches_served(&out, &f);
}

#[test]
fn libdcgm_so_3_is_used_when_so_4_is_absent() {
    let f = fake("gpus 0\n");
    let dir = tempfile::tempdir().unwrap();
    let so3 = dir.path().join("libdcgm.so.3");
    std::fs::copy(f.path(), &so3).unwrap();
    let o = flinch()
        .args(["sources", "--json"])
        .env("LD_LIBRARY_PATH", dir.path())
        .output()
        .unwrap();
    no_panic(&o);
    let st = dcgm_status(&text(&o.stdout));
    assert_eq!(
        st["available"], true,
        "{st} (is libdcgm.so.4 installed here?)"
    );
    assert_eq!(st["sources"][0]["attributes"]["library"], "libdcgm.so.3");
    // The fake copy logged next to itself, and was torn down.
    let log = std::fs::read_to_string(dir.path().join("libdcgm.so.3.log")).unwrap();
    assert!(log.trim_end().ends_with("dcgmShutdown"), "{log}");
}

//! `flinch calibrate`, `flinch record --idle` and `flinch analyze` end to end, through the
//! real binary: the known answers come from the power schedule, never from flinch.

use crate::common::{flinch, run, stderr};
use flinch_core::clock::monotonic_ns;
use flinch_core::marks::client::MarkClient;
use flinch_core::marks::format_mark;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Output};
use std::time::{Duration, Instant};

const MS: u64 = 1_000_000;

fn json_of(o: &Output) -> Value {
    assert!(o.status.success(), "{}", stderr(o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "not one JSON object ({e}): {}",
            String::from_utf8_lossy(&o.stdout)
        )
    })
}

/// Waits for the recorder to write its header and returns it.
fn header_of(trace: &Path) -> Value {
    let t = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(trace)
            && let Some(line) = text.lines().nth(1)
            && let Some(json) = line.strip_prefix("# header ")
        {
            return serde_json::from_str(json).unwrap();
        }
        assert!(t.elapsed() < Duration::from_secs(10), "no header written");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn sleep_until(t_ns: u64) {
    let now = monotonic_ns();
    if t_ns > now {
        std::thread::sleep(Duration::from_nanos(t_ns - now));
    }
}

fn send(fifo: &Path, label: &str, t_ns: u64) {
    let mut c = MarkClient::open(fifo).unwrap();
    let line = format_mark(label, Some(t_ns), &[]).unwrap();
    c.send_line(&line).unwrap();
}

/// The source's schedule origin, from the header of a synthetic recording.
fn synthetic_origin(header: &Value) -> u64 {
    header["sources"][0]["attributes"]["origin_ns"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

struct Recording {
    dir: tempfile::TempDir,
    idle: PathBuf,
    trace: PathBuf,
}

/// calibrate at 20 W, then record a schedule of 20 W for 1276 ms and 100 W for 724 ms,
/// repeating, with marks exactly on two bursts and on two idle stretches of 724 ms.
fn record_synthetic_bursts() -> Recording {
    let dir = tempfile::tempdir().unwrap();
    let idle = dir.path().join("idle.json");
    let o = run(flinch()
        .args([
            "calibrate",
            "--quiet",
            "--source",
            "synthetic",
            "--synthetic",
            "20W;class=cpu",
            "--seconds",
            "2",
            "--out",
        ])
        .arg(&idle));
    assert!(o.status.success(), "calibrate: {}", stderr(&o));
    let trace = dir.path().join("t.flinch.csv");
    let fifo = dir.path().join("m.fifo");
    let rec: Child = flinch()
        .args([
            "record",
            "--quiet",
            "--source",
            "synthetic",
            "--synthetic",
            "20W/1276ms,100W/724ms;class=cpu",
            "--duration",
            "4.6s",
            "--idle",
        ])
        .arg(&idle)
        .arg("--out")
        .arg(&trace)
        .arg("--marks-fifo")
        .arg(&fifo)
        .spawn()
        .unwrap();
    let origin = synthetic_origin(&header_of(&trace));
    while !fifo.exists() {
        std::thread::sleep(Duration::from_millis(5));
    }
    for k in 0..2u64 {
        let cycle = origin + k * 2000 * MS;
        // marks are sent once their instants have passed, stamped with the schedule's
        // own times
        sleep_until(cycle + 2000 * MS);
        send(&fifo, "idle_start", cycle + 300 * MS);
        send(&fifo, "idle_end", cycle + 1024 * MS);
        send(&fifo, "burst_start", cycle + 1276 * MS);
        send(&fifo, "burst_end", cycle + 2000 * MS);
    }
    let o = rec.wait_with_output().unwrap();
    assert!(o.status.success(), "record: {}", stderr(&o));
    Recording { dir, idle, trace }
}

fn analyze_json(trace: &Path, extra: &[&str]) -> Value {
    json_of(&run(flinch()
        .arg("analyze")
        .arg(trace)
        .arg("--json")
        .args(extra)))
}

/// The JSON contract of docs/analysis.md.
fn check_schema(v: &Value) {
    for k in [
        "spans",
        "summary",
        "from",
        "to",
        "idle",
        "warnings",
        "unmatched",
    ] {
        assert!(v.get(k).is_some(), "missing {k}");
    }
    for s in v["spans"].as_array().unwrap() {
        for k in [
            "from",
            "to",
            "req",
            "start_ns",
            "end_ns",
            "duration_s",
            "verdict",
            "energy",
            "evidence",
            "devices",
            "activity",
        ] {
            assert!(s.get(k).is_some(), "span lacks {k}: {s}");
        }
        for (_, e) in s["energy"].as_object().unwrap() {
            for k in [
                "method",
                "energy_j",
                "active_energy_j",
                "mean_power_w",
                "updates_in_span",
            ] {
                assert!(e.get(k).is_some(), "energy lacks {k}: {e}");
            }
        }
    }
    let sm = &v["summary"];
    assert!(sm["count"].is_u64());
    for k in ["min", "p50", "p90", "p99", "max", "mean", "std"] {
        assert!(sm["duration_s"][k].is_f64(), "duration_s.{k}: {sm}");
    }
    for k in ["gpu-compute", "cpu-compute", "idle-wait", "unresolved"] {
        assert!(sm["verdicts"][k].is_u64(), "verdicts.{k}: {sm}");
    }
}

#[test]
fn a_724_ms_burst_at_100_w_over_20_w_idle_is_57_9_j_and_cpu_compute() {
    let r = record_synthetic_bursts();
    let v = analyze_json(&r.trace, &["--from", "burst_start", "--to", "burst_end"]);
    check_schema(&v);
    assert_eq!(v["idle"]["via"], "embedded");
    let spans = v["spans"].as_array().unwrap();
    assert_eq!(spans.len(), 2);
    // (100 W − 20 W) × 0.724 s = 57.92 J
    let expected = 80.0 * 0.724;
    for s in spans {
        assert_eq!(s["verdict"], "cpu-compute", "{:#}", s["evidence"]);
        assert!((s["duration_s"].as_f64().unwrap() - 0.724).abs() < 1e-9);
        assert!(s["req"].is_null());
        let dev = &s["devices"]["synthetic"];
        let active = dev["active_energy_j"].as_f64().unwrap();
        eprintln!(
            "burst: active {active:.3} J via {} ({} updates); counter {:.3} J",
            dev["method"],
            s["energy"]["synthetic.power"]["updates_in_span"],
            s["energy"]["synthetic.energy"]["active_energy_j"]
                .as_f64()
                .unwrap()
        );
        assert!(
            (active - expected).abs() <= 0.03 * expected,
            "active {active} J, expected {expected} J ± 3 %"
        );
        // the counter agrees, wrapping every 500 J notwithstanding
        let e = &s["energy"]["synthetic.energy"];
        assert_eq!(e["method"], "counter");
        let ca = e["active_energy_j"].as_f64().unwrap();
        assert!((ca - expected).abs() <= 0.03 * expected, "counter {ca} J");
        assert_eq!(s["energy"]["synthetic.power"]["method"], "modelled");
        assert_eq!(s["energy"]["synthetic.power"]["preferred"], true);
    }
    assert_eq!(v["summary"]["verdicts"]["cpu-compute"], 2);

    // An idle stretch of the same length: ±1.5 J of zero, idle-wait.
    let v = analyze_json(&r.trace, &["--from", "idle_start", "--to", "idle_end"]);
    check_schema(&v);
    for s in v["spans"].as_array().unwrap() {
        assert_eq!(s["verdict"], "idle-wait", "{:#}", s["evidence"]);
        let active = s["devices"]["synthetic"]["active_energy_j"]
            .as_f64()
            .unwrap();
        eprintln!("idle: active {active:.4} J");
        assert!(active.abs() <= 1.5, "idle active {active} J");
    }

    // The same with idle taken from the trace itself, by labels and by seconds, and from
    // the profile file: the same verdicts.
    for extra in [
        vec!["--idle-window", "idle_start..idle_end"],
        vec!["--idle-window", "0.35..0.95"],
        vec!["--idle", r.idle.to_str().unwrap()],
    ] {
        let mut args = vec!["--from", "burst_start", "--to", "burst_end"];
        args.extend(&extra);
        let v = analyze_json(&r.trace, &args);
        assert_eq!(v["summary"]["verdicts"]["cpu-compute"], 2, "{extra:?}");
        let a = v["spans"][0]["devices"]["synthetic"]["active_energy_j"]
            .as_f64()
            .unwrap();
        assert!((a - expected).abs() <= 0.03 * expected, "{extra:?}: {a}");
    }

    // Without labels: the labels and their counts.
    let v = analyze_json(&r.trace, &[]);
    assert_eq!(v["labels"]["burst_start"], 2);
    assert_eq!(v["labels"]["idle_end"], 2);
    let o = run(flinch().arg("analyze").arg(&r.trace));
    assert!(o.status.success());
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(
        text.contains("burst_end") && text.contains("4 mark labels"),
        "{text}"
    );
    // An unknown label is an error that lists them.
    let o = run(flinch().arg("analyze").arg(&r.trace).args([
        "--from",
        "burst_start",
        "--to",
        "first_token",
    ]));
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("\"first_token\"")
            && e.contains("burst_end (2)")
            && e.contains("idle_start (2)"),
        "{e}"
    );
    // The human report says the same things.
    let o = run(flinch().arg("analyze").arg(&r.trace).args([
        "--from",
        "burst_start",
        "--to",
        "burst_end",
    ]));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(
        text.contains("cpu-compute") && text.contains("verdicts:"),
        "{text}"
    );
    drop(r.dir);
}

#[test]
fn calibrate_refuses_a_busy_machine_and_says_what_it_saw() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("idle.json");
    let busy = [
        "calibrate",
        "--source",
        "synthetic",
        "--synthetic",
        "20W/300ms,200W/300ms;class=gpu",
        "--seconds",
        "2",
        "--out",
    ];
    let o = run(flinch().args(busy).arg(&out));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("NOT IDLE"), "{e}");
    assert!(e.contains("synthetic.util reached 100.0 %"), "{e}");
    assert!(e.contains("--allow-busy"), "{e}");
    assert!(!out.exists());
    // --allow-busy writes it, marked
    let o = run(flinch().args(busy).arg(&out).arg("--allow-busy"));
    assert!(o.status.success(), "{}", stderr(&o));
    let p: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(p["idle_ok"], false);
    let warnings: Vec<&str> = p["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("synthetic.util reached")),
        "{warnings:?}"
    );
    // an existing profile is not replaced without --force
    let o = run(flinch().args(busy).arg(&out).arg("--allow-busy"));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--force"), "{}", stderr(&o));
}

#[test]
fn calibrate_refuses_a_calibration_too_short_for_the_sources_and_says_how_long_it_needs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("idle.json");
    let args = [
        "calibrate",
        "--quiet",
        "--source",
        "synthetic",
        "--synthetic",
        "20W;class=cpu",
        "--out",
    ];
    // 10 ms samples and a counter read into 100 ms rates: 10 rates need 1 s.
    let o = run(flinch().args(args).arg(&out).args(["--seconds", "0.05"]));
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(
        e.contains("--seconds 50ms: too short for a profile of synthetic")
            && e.contains("synthetic.energy, gives a value every 100ms")
            && e.contains("calibrate for at least 1s"),
        "{e}"
    );
    assert!(!out.exists());
    // A slower interval needs longer: 10 values 250 ms apart.
    let o = run(flinch()
        .args(args)
        .arg(&out)
        .args(["--seconds", "2", "--interval", "250ms"]));
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(e.contains("calibrate for at least 3s"), "{e}");
    assert!(!out.exists());
    let o = run(flinch().args(args).arg(&out).args(["--seconds", "2"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let p: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert!(
        p["channels"]["synthetic.power"]["samples"]
            .as_u64()
            .unwrap()
            >= 10
    );
}

#[test]
fn record_validates_the_idle_profile_before_recording() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"format":"flinch-trace","version":1}"#).unwrap();
    let out = dir.path().join("t.csv");
    let o = run(flinch()
        .args([
            "record",
            "--no-fifo",
            "--source",
            "synthetic",
            "--duration",
            "1s",
            "--idle",
        ])
        .arg(&bad)
        .arg("--out")
        .arg(&out));
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("bad.json") && e.contains("expected \"flinch-idle\""),
        "{e}"
    );
    assert!(!out.exists());
    let o = run(flinch()
        .args(["record", "--no-fifo", "--source", "synthetic", "--idle"])
        .arg(dir.path().join("missing.json"))
        .arg("--out")
        .arg(&out));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("missing.json"), "{}", stderr(&o));
}

#[test]
fn analyze_says_what_is_wrong_with_its_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let not_trace = dir.path().join("notes.txt");
    std::fs::write(&not_trace, "hello\n").unwrap();
    let o = run(flinch().arg("analyze").arg(&not_trace));
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("notes.txt:1") && e.contains("not a flinch trace"),
        "{e}"
    );
    let o = run(flinch().arg("analyze").arg(dir.path().join("none.csv")));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("none.csv"), "{}", stderr(&o));
    // a real trace, with a broken idle profile and a bad window
    let trace = dir.path().join("t.csv");
    let o = run(flinch()
        .args(["record", "--quiet", "--no-fifo", "--source", "synthetic"])
        .args(["--duration", "300ms", "--out"])
        .arg(&trace));
    assert!(o.status.success(), "{}", stderr(&o));
    let bad = dir.path().join("idle.json");
    std::fs::write(
        &bad,
        "{\"format\": \"flinch-idle\", \"version\": 1,\n\"host\": 3}",
    )
    .unwrap();
    for (args, needle) in [
        (vec!["--from", "a", "--to", "b"], "labels present: none"),
        (vec!["--from", "a"], "--to"),
        (vec!["--idle-window", "1..2"], "--from"),
    ] {
        let o = run(flinch().arg("analyze").arg(&trace).args(&args));
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
    }
    // labels are checked first: a trace with marks reaches the idle inputs
    let marked = dir.path().join("m.csv");
    let fifo = dir.path().join("m.fifo");
    let rec = flinch()
        .args([
            "record",
            "--quiet",
            "--source",
            "synthetic",
            "--duration",
            "1s",
            "--out",
        ])
        .arg(&marked)
        .arg("--marks-fifo")
        .arg(&fifo)
        .spawn()
        .unwrap();
    header_of(&marked);
    while !fifo.exists() {
        std::thread::sleep(Duration::from_millis(5));
    }
    let now = monotonic_ns();
    send(&fifo, "a", now);
    send(&fifo, "b", now + 100 * MS);
    assert!(rec.wait_with_output().unwrap().status.success());
    let o = run(flinch().arg("analyze").arg(&marked).args([
        "--from",
        "a",
        "--to",
        "b",
        "--idle-window",
        "soon..later later",
    ]));
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("neither a number of seconds nor a mark label"),
        "{}",
        stderr(&o)
    );
    let o = run(flinch()
        .arg("analyze")
        .arg(&marked)
        .args(["--from", "a", "--to", "b", "--idle"])
        .arg(&bad));
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("idle.json") && e.contains("at line 2 column"),
        "{e}"
    );
    let v = analyze_json(&marked, &["--from", "a", "--to", "b"]);
    assert_eq!(v["spans"].as_array().unwrap().len(), 1);
    assert!(v["idle"].is_null());
    assert!(
        v["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("no idle profile"))
    );
}

/// The wrapped command's process tree: a shell that starts a Python child which burns
/// 0.6 s of CPU time (measured by itself, so a busy machine only stretches it) between two
/// marks, and is reaped by the shell.
#[test]
fn the_cpu_source_follows_the_wrapped_command_tree() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.csv");
    let py = r#"
import os, time
fd = os.open(os.environ["FLINCH_MARKS"], os.O_WRONLY | os.O_NONBLOCK)
def mark(l): os.write(fd, f"{l} t={time.monotonic_ns()}\n".encode())
time.sleep(0.2)
mark("burn_start")
t0 = time.process_time()
while time.process_time() - t0 < 0.6:
    pass
mark("burn_end")
time.sleep(0.2)
"#;
    let script = format!("python3 -c '{py}' & wait");
    let o = run(flinch()
        .args(["record", "--quiet", "--source", "cpu", "--out"])
        .arg(&out)
        .arg("--marks-fifo")
        .arg(dir.path().join("m.fifo"))
        .args(["--", "sh", "-c", &script]));
    assert!(o.status.success(), "{}", stderr(&o));
    let v = analyze_json(&out, &["--from", "burn_start", "--to", "burn_end"]);
    let s = &v["spans"][0];
    let proc_ = &s["activity"]["proc.cpu_time"];
    assert_eq!(proc_["unit"], "cores");
    let cpu_s = proc_["mean"].as_f64().unwrap() * s["duration_s"].as_f64().unwrap();
    eprintln!(
        "process tree CPU time between the marks: {cpu_s:.3} s over {:.3} s",
        s["duration_s"]
    );
    // 0.6 s burnt; ticks are 10 ms and the edges are interpolated between 20 ms polls
    assert!((0.45..=0.75).contains(&cpu_s), "{cpu_s}");
    assert!(s["activity"]["host.cpu_busy_s"]["mean"].as_f64().unwrap() > 0.0);
    // all of it, up to the end, including the reaped child
    let t = flinch_core::trace::read_trace(&out).unwrap();
    let c = t.channel("proc.cpu_time").unwrap();
    let total = c.values.last().unwrap() - c.values.first().unwrap();
    assert!(total >= 0.55, "tree CPU time {total}");
}

/// The same known answer measured through RAPL: a fake powercap tree whose package counter
/// a thread rewrites every millisecond with the exact integral of the power schedule (20 W,
/// 100 W during the burst), wrapping every 60 J.
#[test]
fn a_724_ms_burst_through_a_fake_rapl_tree_is_57_9_j_and_cpu_compute() {
    use flinch_rapl::testing::FakePowercap;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    let range_uj: u64 = 60_000_000;
    let mut fake = FakePowercap::new().unwrap();
    fake.add_zone("intel-rapl:0", "package-0", range_uj)
        .unwrap();
    let fake = Arc::new(fake);
    let t0 = monotonic_ns();
    // the burst's edges, set before they happen; 0 = none yet
    let burst = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let stop = Arc::new(AtomicBool::new(false));
    // Energy in µJ from t0 to t: 20 W throughout (20 µJ/ms = 0.02 µJ/ns), plus 80 W over
    // the part of the burst before t.
    let energy_uj = {
        let burst = burst.clone();
        move |t: u64| -> u64 {
            let (a, b) = (
                burst.0.load(Ordering::SeqCst),
                burst.1.load(Ordering::SeqCst),
            );
            let base = (t - t0) as f64 * 0.02;
            let extra = if a > 0 && t > a {
                (t.min(b) - a) as f64 * 0.08
            } else {
                0.0
            };
            (base + extra) as u64
        }
    };
    let writer = {
        let (fake, stop, energy_uj) = (fake.clone(), stop.clone(), energy_uj.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                fake.set_total_energy("intel-rapl:0", energy_uj(monotonic_ns()))
                    .unwrap();
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let dir = tempfile::tempdir().unwrap();
    let idle = dir.path().join("idle.json");
    let o = run(flinch()
        .args(["calibrate", "--quiet", "--source", "rapl", "--seconds", "2"])
        .arg("--rapl-root")
        .arg(fake.root())
        .arg("--out")
        .arg(&idle));
    assert!(o.status.success(), "calibrate: {}", stderr(&o));
    let prof: Value = serde_json::from_str(&std::fs::read_to_string(&idle).unwrap()).unwrap();
    let idle_w = prof["channels"]["package-0.energy"]["mean"]
        .as_f64()
        .unwrap();
    assert!((idle_w - 20.0).abs() < 0.5, "idle {idle_w} W");

    let trace = dir.path().join("rapl.flinch.csv");
    let fifo = dir.path().join("m.fifo");
    let rec = flinch()
        .args([
            "record",
            "--quiet",
            "--source",
            "rapl",
            "--duration",
            "3.5s",
        ])
        .arg("--rapl-root")
        .arg(fake.root())
        .arg("--idle")
        .arg(&idle)
        .arg("--out")
        .arg(&trace)
        .arg("--marks-fifo")
        .arg(&fifo)
        .spawn()
        .unwrap();
    header_of(&trace);
    while !fifo.exists() {
        std::thread::sleep(Duration::from_millis(5));
    }
    let a = monotonic_ns() + 800 * MS;
    let b = a + 724 * MS;
    burst.0.store(a, Ordering::SeqCst);
    burst.1.store(b, Ordering::SeqCst);
    let (ia, ib) = (b + 600 * MS, b + 1324 * MS);
    sleep_until(ib + 50 * MS);
    send(&fifo, "burst_start", a);
    send(&fifo, "burst_end", b);
    send(&fifo, "idle_start", ia);
    send(&fifo, "idle_end", ib);
    let o = rec.wait_with_output().unwrap();
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert!(o.status.success(), "record: {}", stderr(&o));

    let expected = 80.0 * 0.724;
    let v = analyze_json(&trace, &["--from", "burst_start", "--to", "burst_end"]);
    check_schema(&v);
    let s = &v["spans"][0];
    assert_eq!(s["verdict"], "cpu-compute", "{:#}", s["evidence"]);
    let e = &s["energy"]["package-0.energy"];
    assert_eq!(e["method"], "counter");
    let active = e["active_energy_j"].as_f64().unwrap();
    eprintln!(
        "rapl burst: active {active:.3} J ({} updates), idle {idle_w:.3} W",
        e["updates_in_span"]
    );
    assert!(
        (active - expected).abs() <= 0.03 * expected,
        "active {active} J, expected {expected} J ± 3 %"
    );
    let v = analyze_json(&trace, &["--from", "idle_start", "--to", "idle_end"]);
    let s = &v["spans"][0];
    assert_eq!(s["verdict"], "idle-wait", "{:#}", s["evidence"]);
    let active = s["devices"]["package-0"]["active_energy_j"]
        .as_f64()
        .unwrap();
    eprintln!("rapl idle: active {active:.3} J");
    assert!(active.abs() <= 1.5, "idle active {active} J");
}

/// An unusable output is refused before calibrating; the profile is written through a
/// temporary file of its own in the output's folder, so a file that happens to carry the old
/// fixed temporary name (`idle.json.tmp`) is neither used nor removed, and nothing else is
/// left behind. (A write that fails at the end: flinch-viz's `output` tests.)
#[test]
fn calibrate_refuses_a_folder_at_once_and_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let calibrate = |out: &std::path::Path| {
        run(flinch()
            .args([
                "calibrate",
                "--force",
                "--source",
                "synthetic",
                "--synthetic",
                "20W;class=cpu",
                "--seconds",
                "1.2",
                "--out",
            ])
            .arg(out))
    };
    let listing = || {
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };

    let folder = dir.path().join("idle");
    std::fs::create_dir(&folder).unwrap();
    let o = calibrate(&folder);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains(&format!("{} is a directory", folder.display())),
        "{e}"
    );
    assert!(
        !e.contains("calibrating"),
        "refused only after calibrating: {e}"
    );
    let o = calibrate(&dir.path().join("missing/idle.json"));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("does not exist; create it first"),
        "{}",
        stderr(&o)
    );
    assert_eq!(listing(), ["idle"]);
    assert_eq!(std::fs::read_dir(&folder).unwrap().count(), 0);

    let out = dir.path().join("idle.json");
    let bystander = dir.path().join("idle.json.tmp");
    std::fs::write(&bystander, "someone else's file").unwrap();
    let o = calibrate(&out);
    assert!(o.status.success(), "{}", stderr(&o));
    let p: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(p["format"], "flinch-idle");
    assert_eq!(
        std::fs::read_to_string(&bystander).unwrap(),
        "someone else's file"
    );
    assert_eq!(listing(), ["idle", "idle.json", "idle.json.tmp"]);
}

#[test]
fn text_histogram_bins_never_print_the_same_range_twice() {
    // Ten spans of 20.100 ms + 4 µs steps: bins 3.6 µs wide.
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.csv");
    let fifo = dir.path().join("m.fifo");
    let rec = flinch()
        .args([
            "record",
            "--quiet",
            "--source",
            "synthetic",
            "--duration",
            "1s",
        ])
        .arg("--out")
        .arg(&trace)
        .arg("--marks-fifo")
        .arg(&fifo)
        .spawn()
        .unwrap();
    header_of(&trace);
    while !fifo.exists() {
        std::thread::sleep(Duration::from_millis(5));
    }
    let t0 = monotonic_ns();
    for i in 0..10u64 {
        let s = t0 + i * 30 * MS;
        send(&fifo, "a", s);
        send(&fifo, "b", s + 20_100_000 + i * 4_000);
    }
    assert!(rec.wait_with_output().unwrap().status.success());
    let o = run(flinch()
        .arg("analyze")
        .arg(&trace)
        .args(["--from", "a", "--to", "b"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    let bins: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(" – "))
        .map(|l| l.split(" ms").next().unwrap().trim())
        .collect();
    assert!(bins.len() >= 3, "{text}");
    let mut unique = bins.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), bins.len(), "{text}");
    assert!(bins[0].starts_with("20.100"), "{text}");
}

fn llm_trace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/llm/llm.flinch.csv")
}

#[test]
fn analyze_prints_one_line_per_span_and_the_evidence_on_request() {
    let args = [
        "--from",
        "infer_start",
        "--to",
        "first_token",
        "--idle-window",
        "calib_start..calib_end",
    ];
    let text = |extra: &[&str]| {
        let o = run(flinch()
            .arg("analyze")
            .arg(llm_trace())
            .args(args)
            .args(extra));
        assert!(o.status.success(), "{}", stderr(&o));
        String::from_utf8(o.stdout).unwrap()
    };
    let compact = text(&[]);
    // The 16 spans are the lines that start with their number; nothing between them.
    let lines: Vec<&str> = compact.lines().collect();
    let first = lines
        .iter()
        .position(|l| l.trim_start().starts_with("1 "))
        .unwrap();
    for (k, l) in lines[first..first + 16].iter().enumerate() {
        assert!(
            l.trim_start().starts_with(&format!("{} ", k + 1)),
            "line {k} of the table is not span {}: {l:?}\n{compact}",
            k + 1
        );
    }
    assert!(
        lines[first + 16].contains("-v shows the evidence"),
        "{compact}"
    );
    assert!(lines.len() < 40, "{} lines:\n{compact}", lines.len());
    assert!(!compact.contains("proc.cpu_time"), "{compact}");
    // -v: the evidence under each span (the first request's CPU time decided it).
    let verbose = text(&["-v"]);
    assert!(verbose.lines().count() > 16 * 3, "{verbose}");
    assert!(verbose.contains("proc.cpu_time (cpu): "), "{verbose}");
    assert!(!verbose.contains("-v shows the evidence"), "{verbose}");
    // --json keeps everything.
    let v = json_of(&run(flinch()
        .arg("analyze")
        .arg(llm_trace())
        .args(args)
        .arg("--json")));
    let spans = v["spans"].as_array().unwrap();
    assert_eq!(spans.len(), 16);
    assert!(
        spans
            .iter()
            .all(|s| !s["evidence"].as_array().unwrap().is_empty())
    );
}

#[test]
fn a_truncated_trace_is_warned_about_in_every_mode() {
    let dir = tempfile::tempdir().unwrap();
    // The LLM trace cut a third of the way in, mid-row, before any mark.
    let whole = std::fs::read(llm_trace()).unwrap();
    let text = String::from_utf8_lossy(&whole);
    let first_mark = text.find(",mark,").unwrap();
    let cut = dir.path().join("cut.flinch.csv");
    std::fs::write(&cut, &whole[..first_mark / 3]).unwrap();
    let o = run(flinch().arg("analyze").arg(&cut));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.contains("no marks"), "{out}");
    assert!(
        out.contains("warning: ") && out.contains("no footer"),
        "{out}"
    );
    let v = json_of(&run(flinch().arg("analyze").arg(&cut).arg("--json")));
    let warnings = v["warnings"].as_array().unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().unwrap().contains("no footer")),
        "{v}"
    );
    let o = run(flinch().arg("analyze").arg(&cut).args([
        "--from",
        "infer_start",
        "--to",
        "first_token",
    ]));
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("no mark labelled \"infer_start\"")
            && e.contains("warning: ")
            && e.contains("no footer"),
        "{e}"
    );
}

#[test]
fn span_json_carries_every_field_of_its_two_marks() {
    // The LLM trace's marks carry req and more (batch=, tokens=, n=).
    let trace = flinch_core::trace::read_trace(&llm_trace()).unwrap();
    for (from, to) in [("infer_start", "first_token"), ("server_recv", "done")] {
        let v = json_of(&run(flinch()
            .arg("analyze")
            .arg(llm_trace())
            .args(["--from", from, "--to", to, "--json"])));
        let spans = v["spans"].as_array().unwrap();
        assert!(!spans.is_empty());
        let mut extra = 0;
        for s in spans {
            for (side, label, t) in [
                ("from_fields", from, "start_ns"),
                ("to_fields", to, "end_ns"),
            ] {
                let t = s[t].as_u64().unwrap();
                let m = trace
                    .marks
                    .iter()
                    .find(|m| m.label == label && m.t_ns == t && m.req() == s["req"].as_str())
                    .unwrap_or_else(|| panic!("no {label} mark at {t}"));
                let want: serde_json::Map<String, Value> = m
                    .fields
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect();
                assert_eq!(s[side].as_object().unwrap(), &want, "{side} of {s}");
                extra += m.fields.iter().filter(|(k, _)| k != "req").count();
            }
        }
        if from == "server_recv" {
            assert!(extra > 0, "the test needs marks with fields other than req");
        }
    }
}

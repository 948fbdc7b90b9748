//! `flinch record`, `flinch mark` and `flinch sources` end to end: the real binary, real
//! FIFOs, real signals, and marks sent from separate Python processes.

use crate::common::{flinch, run, stderr};
use flinch_core::trace::read_trace;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn python(script: &str, args: &[&str]) -> Command {
    let mut c = Command::new("python3");
    c.arg("-c").arg(script).args(args);
    c
}

fn wait_for_fifo(p: &Path) {
    let t = Instant::now();
    while !p.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the recorder never created {}",
            p.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn start_record(dir: &Path, extra: &[&str]) -> (Child, PathBuf, PathBuf) {
    let out = dir.join("t.flinch.csv");
    let fifo = dir.join("marks.fifo");
    let child = flinch()
        .args(["record", "--quiet", "--source", "synthetic", "--out"])
        .arg(&out)
        .arg("--marks-fifo")
        .arg(&fifo)
        .args(extra)
        .spawn()
        .unwrap();
    wait_for_fifo(&fifo);
    (child, out, fifo)
}

/// Sends marks the way the README tells users to: non-blocking, time.monotonic_ns() stamps.
const PY_SENDER: &str = r#"
import os, sys, time
path, label, count, writer = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
stamps, dropped = [], 0
for i in range(count):
    t = time.monotonic_ns()
    try:
        os.write(fd, f"{label} t={t} w={writer} n={i}\n".encode())
        stamps.append(t)
    except BlockingIOError:
        dropped += 1
    if count < 100:
        time.sleep(0.05)
    elif i % 50 == 49:
        time.sleep(0.001)  # bursts of 50: see the Rust twin of this test
print(dropped)
print(" ".join(map(str, stamps)))
"#;

#[test]
fn marks_keep_the_python_clients_timestamps_and_samples_keep_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let (rec, out, fifo) = start_record(dir.path(), &["--duration", "3s", "--interval", "10ms"]);
    let o = run(&mut python(
        PY_SENDER,
        &[fifo.to_str().unwrap(), "step", "20", "py"],
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("0"), "python dropped marks");
    let sent: Vec<u64> = lines
        .next()
        .unwrap()
        .split(' ')
        .map(|s| s.parse().unwrap())
        .collect();
    let status = rec.wait_with_output().unwrap();
    assert!(status.status.success(), "{}", stderr(&status));
    let t = read_trace(&out).unwrap();
    assert!(t.complete());
    assert_eq!(t.footer.as_ref().unwrap().ended_by, "duration");
    let got: Vec<u64> = t.marks.iter().map(|m| m.t_ns).collect();
    assert_eq!(got, sent, "marks must keep the client's t= exactly");
    assert!(
        t.marks
            .iter()
            .all(|m| m.t_from_client && m.recv_ns >= m.t_ns)
    );
    // Samples on the 10 ms grid: deviation of each from start + k × interval.
    let ts = &t.channel("synthetic.power").unwrap().t_ns;
    let t0 = ts[0];
    let mut dev: Vec<u64> = ts
        .iter()
        .map(|&t| {
            let k = ((t - t0) as f64 / 10e6).round() as u64;
            (t as i64 - (t0 + k * 10_000_000) as i64).unsigned_abs()
        })
        .collect();
    dev.sort_unstable();
    let p50 = dev[dev.len() / 2];
    let p99 = dev[dev.len() * 99 / 100];
    eprintln!(
        "sample spacing deviation from the 10 ms grid: p50 {p50} ns, p99 {p99} ns over {} samples",
        ts.len()
    );
    // A drifting (relative-sleep) sampler spreads the phase over the whole 10 ms; absolute
    // deadlines keep it near the grid.
    assert!(p50 < 2_000_000, "p50 deviation {p50} ns");
    assert!(ts.len() >= 200, "{} samples in 3 s", ts.len());
}

#[test]
fn two_python_writers_of_10000_marks_each_lose_none() {
    let dir = tempfile::tempdir().unwrap();
    let (rec, out, fifo) = start_record(dir.path(), &[]);
    let f = fifo.to_str().unwrap();
    let writers: Vec<Child> = ["a", "b"]
        .iter()
        .map(|w| {
            python(PY_SENDER, &[f, "tok", "10000", w])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for w in writers {
        let o = w.wait_with_output().unwrap();
        assert!(o.status.success());
        let dropped = String::from_utf8(o.stdout)
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .to_owned();
        assert_eq!(dropped, "0", "a writer dropped marks");
    }
    std::thread::sleep(Duration::from_millis(200));
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(rec.id() as i32).unwrap(),
        rustix::process::Signal::INT,
    )
    .unwrap();
    let o = rec.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let t = read_trace(&out).unwrap();
    assert_eq!(t.footer.as_ref().unwrap().ended_by, "signal");
    assert_eq!(t.footer.as_ref().unwrap().bad_marks, 0);
    for w in ["a", "b"] {
        let mut ns: Vec<u32> = t
            .marks
            .iter()
            .filter(|m| m.field("w") == Some(w))
            .map(|m| m.field("n").unwrap().parse().unwrap())
            .collect();
        ns.sort_unstable();
        assert_eq!(ns, (0..10_000).collect::<Vec<_>>());
    }
}

#[test]
fn a_python_client_without_a_recorder_is_not_blocked() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("m.fifo");
    // The recommended client code from the README: it must return at once whether the
    // FIFO is missing or nobody reads it.
    let script = r#"
import errno, os, sys, time
def send(path, line):
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as e:
        if e.errno in (errno.ENXIO, errno.ENOENT):
            return "no-recorder"
        raise
    try:
        os.write(fd, line.encode())
        return "sent"
    except BlockingIOError:
        return "dropped"
    finally:
        os.close(fd)
print(send(sys.argv[1], f"x t={time.monotonic_ns()}\n"))
os.mkfifo(sys.argv[1], 0o600)
print(send(sys.argv[1], f"x t={time.monotonic_ns()}\n"))
"#;
    let mut child = python(script, &[fifo.to_str().unwrap()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if t.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("the client blocked with no recorder running");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success());
    assert_eq!(
        String::from_utf8(o.stdout).unwrap(),
        "no-recorder\nno-recorder\n"
    );
    // flinch mark says so clearly, with exit status 2
    let o = run(flinch().args(["mark", "x", "--fifo"]).arg(&fifo));
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("no recorder is listening"),
        "{}",
        stderr(&o)
    );
    let o = run(flinch()
        .args(["mark", "x", "--fifo"])
        .arg(dir.path().join("none")));
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("start `flinch record` first"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_wrapped_command_gets_the_marks_path_and_its_exit_status_passes_through() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.csv");
    let fifo = dir.path().join("m.fifo");
    let script = format!(
        "{} mark from_child req=9 && sleep 0.2 && exit 3",
        env!("CARGO_BIN_EXE_flinch")
    );
    let o = run(flinch()
        .args([
            "record",
            "--quiet",
            "--source",
            "synthetic",
            "--meta",
            "batch=8",
            "--out",
        ])
        .arg(&out)
        .arg("--marks-fifo")
        .arg(&fifo)
        .args(["--", "sh", "-c", &script]));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let t = read_trace(&out).unwrap();
    let f = t.footer.as_ref().unwrap();
    assert_eq!((f.ended_by.as_str(), f.command_exit), ("command", Some(3)));
    assert_eq!(t.marks.len(), 1);
    assert_eq!(t.marks[0].req(), Some("9"));
    assert_eq!(t.header.command, ["sh", "-c", script.as_str()]);
    assert_eq!(t.header.meta["batch"], "8");
    // a command killed by a signal: 128 + signal
    let out2 = dir.path().join("t2.csv");
    let o = run(flinch()
        .args([
            "record",
            "--quiet",
            "--no-fifo",
            "--source",
            "synthetic",
            "--out",
        ])
        .arg(&out2)
        .args(["--", "sh", "-c", "kill -TERM $$"]));
    assert_eq!(o.status.code(), Some(128 + 15));
    // a command that cannot run leaves no trace behind
    let out3 = dir.path().join("t3.csv");
    let o = run(flinch()
        .args([
            "record",
            "--quiet",
            "--no-fifo",
            "--source",
            "synthetic",
            "--out",
        ])
        .arg(&out3)
        .args(["--", "/nonexistent/program"]));
    assert_eq!(o.status.code(), Some(127));
    assert!(stderr(&o).contains("cannot run"), "{}", stderr(&o));
    assert!(!out3.exists());
}

#[test]
fn sigterm_ends_a_recording_with_everything_flushed() {
    let dir = tempfile::tempdir().unwrap();
    let (rec, out, fifo) = start_record(dir.path(), &[]);
    let o = run(flinch().args(["mark", "before_stop", "--fifo"]).arg(&fifo));
    assert!(o.status.success(), "{}", stderr(&o));
    std::thread::sleep(Duration::from_millis(100));
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(rec.id() as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let o = rec.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let t = read_trace(&out).unwrap();
    assert!(t.complete());
    assert_eq!(t.footer.as_ref().unwrap().ended_by, "signal");
    assert_eq!(t.marks.len(), 1);
    assert!(!fifo.exists());
}

#[test]
fn unknown_and_unavailable_sources_fail_clearly_without_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.csv");
    let o = run(flinch()
        .args([
            "record",
            "--no-fifo",
            "--duration",
            "1s",
            "--source",
            "teapot",
            "--out",
        ])
        .arg(&out));
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("unknown source \"teapot\"") && e.contains("synthetic"),
        "{e}"
    );
    assert!(!out.exists());
    let o = run(flinch()
        .args([
            "record",
            "--no-fifo",
            "--source",
            "synthetic",
            "--synthetic",
            "12parsecs",
            "--out",
        ])
        .arg(&out));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--synthetic"), "{}", stderr(&o));
    assert!(!out.exists());
    let o = run(flinch()
        .args(["record", "--interval", "fast", "--out"])
        .arg(&out));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not a duration"), "{}", stderr(&o));
}

#[test]
fn sources_lists_every_backend_with_json_too() {
    let o = run(flinch().args(["sources", "--json"]));
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    for n in ["nvml", "dcgm", "rapl", "cpu", "synthetic"] {
        assert!(names.contains(&n), "{names:?}");
    }
    for b in v.as_array().unwrap() {
        let available = b["available"].as_bool().unwrap();
        assert_eq!(available, b["reason"].is_null(), "{b}");
    }
    let o = run(flinch().arg("sources"));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.contains("synthetic.power"), "{text}");
}

#[test]
fn negative_durations_and_watts_are_refused_with_flinchs_own_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.flinch.csv");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["record", "--duration", "-1"],
            "a duration cannot be negative",
        ),
        (
            vec!["record", "--interval", "-10ms"],
            "a duration cannot be negative",
        ),
        (
            vec!["record", "--nvml-energy-interval", "-1s"],
            "a duration cannot be negative",
        ),
        (
            vec!["record", "--synthetic", "-50W/1s"],
            "power must be ≥ 0 W",
        ),
        (
            vec!["calibrate", "--seconds", "-5"],
            "a duration cannot be negative",
        ),
    ];
    for (args, want) in cases {
        let o = run(flinch()
            .current_dir(dir.path())
            .args(&args)
            .args(["--source", "synthetic", "--out"])
            .arg(&out));
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {e}");
        assert!(e.contains(want), "{args:?}: expected {want:?} in {e}");
        assert!(!e.contains("-- -"), "{args:?}: misleading hint in {e}");
        assert!(!out.exists());
    }
    let trace =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../viz/tests/fixtures/rapl-only.flinch.csv");
    for w in ["-5", "-5W", "package-0=-5W"] {
        let o = run(flinch()
            .current_dir(dir.path())
            .args(["plot"])
            .arg(&trace)
            .args(["-o", "p.png", "--idle-watts", w]));
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{w}: {e}");
        assert!(e.contains("an idle level cannot be negative"), "{w}: {e}");
        assert!(!dir.path().join("p.png").exists());
    }
}

#[test]
fn record_says_when_a_modelled_source_is_mixed_with_measured_ones() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.flinch.csv");
    let o = run(flinch()
        .args([
            "record",
            "--no-fifo",
            "--source",
            "synthetic",
            "--source",
            "cpu",
        ])
        .args(["--duration", "300ms", "--out"])
        .arg(&out));
    let e = stderr(&o);
    assert!(o.status.success(), "{e}");
    assert!(
        e.contains("synthetic is a model, not a measurement")
            && e.contains("will not let it decide any verdict"),
        "{e}"
    );
    let t = read_trace(&out).unwrap();
    let modelled: Vec<(&str, bool)> = t
        .header
        .sources
        .iter()
        .map(|s| (s.name.as_str(), s.modelled))
        .collect();
    assert!(modelled.contains(&("synthetic", true)), "{modelled:?}");
    assert!(modelled.contains(&("cpu.host", false)), "{modelled:?}");
    // The synthetic source alone (a demonstration) is recorded without the note.
    let o = run(flinch()
        .args(["record", "--no-fifo", "--source", "synthetic", "--force"])
        .args(["--duration", "300ms", "--out"])
        .arg(&out));
    assert!(o.status.success());
    assert!(!stderr(&o).contains("is a model"), "{}", stderr(&o));
}

#[test]
fn intervals_need_a_unit_impossible_ones_are_refused_and_the_real_cadences_are_said() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.flinch.csv");
    // A bare number: 10 ms or 10 s?
    let o = run(flinch()
        .args([
            "record",
            "--no-fifo",
            "--source",
            "synthetic",
            "--interval",
            "10",
        ])
        .args(["--duration", "1s", "--out"])
        .arg(&out));
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("\"10\" has no unit: give 10ms or 10s"),
        "{}",
        stderr(&o)
    );
    // Finer than a recording can sample: refused, saying the floor.
    let o = run(flinch()
        .args([
            "record",
            "--no-fifo",
            "--source",
            "synthetic",
            "--interval",
            "1us",
        ])
        .args(["--duration", "1s", "--out"])
        .arg(&out));
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("--interval 1us: flinch samples every 1ms at the finest")
            && e.contains("give 1ms or more"),
        "{e}"
    );
    assert!(!out.exists());
    // The CPU source keeps its own 20 ms: record says so, and the trace holds it.
    let o = run(flinch()
        .args([
            "record",
            "--no-fifo",
            "--source",
            "synthetic",
            "--source",
            "cpu",
        ])
        .args(["--interval", "5ms", "--duration", "500ms", "--out"])
        .arg(&out));
    let e = stderr(&o);
    assert!(o.status.success(), "{e}");
    assert!(
        e.contains("recording synthetic every 5ms; cpu.host every 20ms (its own cadence)"),
        "{e}"
    );
    let t = read_trace(&out).unwrap();
    let cadences: Vec<(u64, Vec<String>)> = t
        .footer
        .unwrap()
        .cadences
        .into_iter()
        .map(|c| (c.interval_ns, c.sources))
        .collect();
    assert!(
        cadences.contains(&(20_000_000, vec!["cpu.host".to_owned()])),
        "{cadences:?}"
    );
    assert!(
        cadences.contains(&(5_000_000, vec!["synthetic".to_owned()])),
        "{cadences:?}"
    );
    // `sources` shows the same, for the --interval asked.
    let o = run(flinch().args(["sources", "--interval", "5ms"]));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success());
    assert!(
        text.contains("source cpu.host  polled every 20ms (its own cadence"),
        "{text}"
    );
    assert!(
        text.contains("source synthetic  polled every 5ms (--interval)"),
        "{text}"
    );
    let cpu_poll_ns = |args: &[&str]| {
        let o = run(flinch().args(args));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let cpu = v
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["name"] == "cpu")
            .unwrap()
            .clone();
        cpu["poll_intervals_ns"]["cpu.host"].clone()
    };
    assert_eq!(
        cpu_poll_ns(&["sources", "--json", "--interval", "10ms"]),
        20_000_000
    );
    // Without --interval, as `record` without one: the default cadence.
    assert_eq!(cpu_poll_ns(&["sources", "--json"]), 100_000_000);
}

//! `flinch record --out -` and `--print`: the trace and the interval rows on standard output
//! while recording, through real pipes, into real readers (`head`, a line reader), with
//! the wrapped command, the marks FIFO and the Prometheus endpoint alongside.

use crate::common::{flinch, run, stderr};
use flinch_analysis::{Analyzer, Thresholds};
use flinch_core::clock::monotonic_ns;
use flinch_core::marks::client::MarkClient;
use flinch_core::marks::{Mark, MarkVia, format_mark};
use flinch_core::trace::read_trace;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

/// Waits for `child` at most `limit`; kills it and fails past that.
fn wait_or_kill(child: &mut Child, limit: Duration, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads `r` line by line on a thread, stamping each line with when it arrived.
fn arrivals(r: impl Read + Send + 'static) -> Receiver<(Instant, String)> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(r).lines() {
            let Ok(l) = l else { return };
            if tx.send((Instant::now(), l)).is_err() {
                return;
            }
        }
    });
    rx
}

/// What a reader of a closed pipe must never see on standard error.
fn assert_no_complaint(err: &str) {
    let lower = err.to_lowercase();
    for bad in ["error", "warning", "panick", "broken pipe", "os error"] {
        assert!(!lower.contains(bad), "{bad:?} on standard error:\n{err}");
    }
}

#[test]
fn out_dash_streams_the_trace_while_recording_with_marks_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("m.fifo");
    let mut child = flinch()
        .args([
            "record",
            "--source",
            "synthetic",
            "--out",
            "-",
            "--duration",
            "6s",
        ])
        .arg("--marks-fifo")
        .arg(&fifo)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = arrivals(child.stdout.take().unwrap());
    let mut err_pipe = child.stderr.take().unwrap();
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    let mut lines: Vec<(Instant, String)> = Vec::new();
    // The header comes first, at once.
    while lines.len() < 3 {
        lines.push(
            rx.recv_timeout(Duration::from_secs(20))
                .expect("the header"),
        );
    }
    assert_eq!(lines[0].1, "# flinch-trace v1");
    assert!(lines[1].1.starts_with("# header {"));
    assert_eq!(lines[2].1, "t_ns,kind,channel,value,label,fields");
    // A mark sent mid-recording is on the pipe at once, while the recorder still runs.
    std::thread::sleep(Duration::from_millis(1500));
    let mut c = MarkClient::open(&fifo).unwrap();
    c.send_line(&format_mark("mid", Some(monotonic_ns()), &[("req", "7")]).unwrap())
        .unwrap();
    let sent = Instant::now();
    let mark_seen = loop {
        let (t, l) = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the mark reaches the pipe");
        lines.push((t, l.clone()));
        if l.contains(",mark,fifo,") {
            break t;
        }
    };
    assert!(
        child.try_wait().unwrap().is_none(),
        "the mark arrived only after the recording ended"
    );
    while let Ok(x) = rx.recv_timeout(Duration::from_secs(20)) {
        lines.push(x);
    }
    let st = wait_or_kill(&mut child, Duration::from_secs(30), "flinch record --out -");
    let exited = Instant::now();
    assert!(st.success(), "{st:?}");
    let err = err_thread.join().unwrap();
    assert!(err.contains("flinch: recording synthetic"), "{err}");
    assert!(err.contains("wrote standard output"), "{err}");

    // Samples came in batches all through the recording, not at the end.
    let sample_times: Vec<Instant> = lines
        .iter()
        .filter(|(_, l)| l.contains(",sample,"))
        .map(|(t, _)| *t)
        .collect();
    let first = sample_times[0];
    assert!(
        exited.duration_since(first) > Duration::from_secs(3),
        "the first samples arrived {:?} before the end of a 6-s recording",
        exited.duration_since(first)
    );
    let batches = sample_times
        .windows(2)
        .filter(|w| w[1].duration_since(w[0]) > Duration::from_millis(300))
        .count()
        + 1;
    assert!(batches >= 4, "samples came in {batches} batches");
    assert!(mark_seen.duration_since(sent) < Duration::from_secs(5));

    // What came through the pipe is a whole trace.
    let text: String = lines.iter().map(|(_, l)| format!("{l}\n")).collect();
    let path = dir.path().join("piped.flinch.csv");
    std::fs::write(&path, &text).unwrap();
    let trace = read_trace(&path).unwrap();
    let footer = trace
        .footer
        .as_ref()
        .expect("the footer came through the pipe");
    assert_eq!(footer.ended_by, "duration");
    let rows = lines.iter().filter(|(_, l)| l.contains(",sample,")).count();
    assert_eq!(footer.samples as usize, rows);
    assert_eq!(trace.marks.len(), 1);
    assert_eq!(trace.marks[0].label, "mid");
    assert!(trace.warnings.is_empty(), "{:?}", trace.warnings);
}

/// Runs `pipeline` in `sh`, giving it at most `limit`; returns how long it took.
fn shell(pipeline: &str, limit: Duration) -> Duration {
    let t = Instant::now();
    let mut c = Command::new("sh")
        .arg("-c")
        .arg(pipeline)
        .env("FLINCH", env!("CARGO_BIN_EXE_flinch"))
        .spawn()
        .unwrap();
    let st = wait_or_kill(&mut c, limit, pipeline);
    assert!(st.success(), "{pipeline}: {st:?}");
    t.elapsed()
}

#[test]
fn head_ends_a_printing_recording_promptly_and_the_trace_file_is_whole() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    // The wrapped command would run for two minutes; `head` has its rows long before.
    let took = shell(
        &format!(
            "\"$FLINCH\" record --source synthetic --no-fifo --out {d}/run.flinch.csv \
             --print 200ms -- sh -c 'echo from the command; sleep 120' 2>{d}/err.txt \
             | head -5 >{d}/head.txt"
        ),
        Duration::from_secs(60),
    );
    assert!(
        took < Duration::from_secs(30),
        "the pipeline took {took:?}: the recording did not end with its reader"
    );
    let err = std::fs::read_to_string(dir.path().join("err.txt")).unwrap();
    assert_no_complaint(&err);
    // The command's output went to standard error, not into the rows.
    assert!(err.contains("from the command"), "{err}");
    let head = std::fs::read_to_string(dir.path().join("head.txt")).unwrap();
    let rows: Vec<&str> = head.lines().collect();
    assert_eq!(rows.len(), 5, "{head}");
    assert_eq!(rows[0], "start_ns,end_ns,device,power_w,energy_j,activity");
    for r in &rows[1..] {
        let f: Vec<&str> = r.split(',').collect();
        assert_eq!(f.len(), 6, "{r}");
        let (a, b): (u64, u64) = (f[0].parse().unwrap(), f[1].parse().unwrap());
        assert_eq!(b - a, 200_000_000, "{r}");
        assert_eq!(f[2], "synthetic");
        let p: f64 = f[3].parse().unwrap();
        let e: f64 = f[4].parse().unwrap();
        assert!((59.0..=301.0).contains(&p), "{r}");
        assert!((e - p * 0.2).abs() < 0.002, "energy is power × 0.2 s: {r}");
        assert!(f[5].starts_with("util_pct="), "{r}");
    }
    // The trace file ended cleanly, footer and all, and says why it ended.
    let trace = read_trace(&dir.path().join("run.flinch.csv")).unwrap();
    let footer = trace.footer.as_ref().expect("a footer");
    assert_eq!(footer.ended_by, "output-closed");
    assert!(footer.samples > 0);
    assert!(
        trace
            .events
            .iter()
            .any(|e| e.label == "command_exit" && e.text.contains("standard output was closed")),
        "{:?}",
        trace.events
    );
}

#[test]
fn head_ends_a_streamed_trace_that_has_no_other_end() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    // No --duration, no command: only the closed pipe can end it.
    shell(
        &format!(
            "\"$FLINCH\" record --source synthetic --no-fifo --out - 2>{d}/err.txt \
             | head -5 >{d}/head.txt"
        ),
        Duration::from_secs(60),
    );
    let err = std::fs::read_to_string(dir.path().join("err.txt")).unwrap();
    assert_no_complaint(&err);
    assert!(err.contains("ended by output-closed"), "{err}");
    let head = std::fs::read_to_string(dir.path().join("head.txt")).unwrap();
    let lines: Vec<&str> = head.lines().collect();
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[0], "# flinch-trace v1");
}

/// The exact energy of a repeating schedule of (watts, seconds) steps from `origin_ns` over
/// `[a, b]`.
fn schedule_energy(steps: &[(f64, f64)], origin_ns: u64, a: u64, b: u64) -> f64 {
    let period: f64 = steps.iter().map(|s| s.1).sum();
    let at = |t: u64| -> f64 {
        // Energy from the origin to t.
        let x = (t - origin_ns) as f64 / 1e9;
        let cycles = (x / period).floor();
        let per_cycle: f64 = steps.iter().map(|(w, s)| w * s).sum();
        let mut rest = x - cycles * period;
        let mut e = cycles * per_cycle;
        for (w, s) in steps {
            let d = rest.min(*s);
            e += w * d;
            rest -= d;
            if rest <= 0.0 {
                break;
            }
        }
        e
    };
    at(b) - at(a)
}

#[test]
fn print_rows_are_what_analyze_measures_over_each_interval() {
    let dir = tempfile::tempdir().unwrap();
    let trace_path = dir.path().join("run.flinch.csv");
    let o = run(flinch()
        .args(["record", "--source", "synthetic", "--no-fifo", "--quiet"])
        .args(["--synthetic", "50W/700ms,250W/300ms"])
        .args([
            "--print",
            "500ms",
            "--print-format",
            "jsonl",
            "--duration",
            "4s",
        ])
        .arg("--out")
        .arg(&trace_path));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(o.stderr.is_empty(), "--quiet: {}", stderr(&o));
    let rows: Vec<Value> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(rows.len() >= 7, "{rows:?}");
    let trace = read_trace(&trace_path).unwrap();
    let origin: u64 = trace.header.sources[0].attributes["origin_ns"]
        .parse()
        .unwrap();
    let analyzer = Analyzer::new(&trace, None, Thresholds::default());
    let power = trace
        .channels
        .iter()
        .find(|c| c.spec.name == "synthetic.power")
        .unwrap();
    let mark = |t_ns| Mark {
        t_ns,
        recv_ns: t_ns,
        t_from_client: false,
        label: "x".into(),
        fields: Vec::new(),
        via: MarkVia::Api,
    };
    let mut total = 0.0;
    for (i, r) in rows.iter().enumerate() {
        let (a, b) = (
            r["start_ns"].as_u64().unwrap(),
            r["end_ns"].as_u64().unwrap(),
        );
        assert_eq!(r["device"], "synthetic");
        if i + 1 < rows.len() {
            assert_eq!(b - a, 500_000_000, "{r}");
            assert_eq!(
                rows[i + 1]["start_ns"].as_u64(),
                Some(b),
                "rows are contiguous"
            );
        } else {
            assert!(
                b - a <= 500_000_000,
                "the last row is the part interval: {r}"
            );
        }
        let want = analyzer.span(&mark(a), &mark(b));
        let dev = &want.devices["synthetic"];
        let e = r["energy_j"].as_f64().unwrap();
        let p = r["power_w"].as_f64().unwrap();
        assert!(
            (e - dev.energy_j.unwrap()).abs() <= 0.0005,
            "{r} vs {dev:?}"
        );
        assert!(
            (p - dev.mean_power_w.unwrap()).abs() <= 0.0005,
            "{r} vs {dev:?}"
        );
        let util = want.activity["synthetic.util"].mean.unwrap();
        assert!((r["activity"]["util_pct"].as_f64().unwrap() - util).abs() <= 0.05);
        // And what the schedule says. The modelled power is sampled (every 10 ms when
        // the machine keeps up): a step between two samples is spread over the stretch
        // between them, so each step in the row may be off by up to 200 W × that stretch.
        let exact = schedule_energy(&[(50.0, 0.7), (250.0, 0.3)], origin, a, b);
        let spacing_s = power
            .t_ns
            .windows(2)
            .filter(|w| w[1] >= a && w[0] <= b)
            .map(|w| (w[1] - w[0]) as f64 / 1e9)
            .fold(0.0, f64::max);
        let steps_inside = 2.0 * ((b - a) as f64 / 1e9 / 1.0).ceil();
        let tol = 200.0 * spacing_s * steps_inside + 1e-3;
        assert!(
            (e - exact).abs() <= tol,
            "{r}: exact {exact} J, widest sample spacing {spacing_s} s"
        );
        total += e;
    }
    let (a, b) = (
        rows[0]["start_ns"].as_u64().unwrap(),
        rows.last().unwrap()["end_ns"].as_u64().unwrap(),
    );
    // Nothing counted twice or left out: the rows add up to the whole stretch.
    let whole = analyzer.span(&mark(a), &mark(b)).devices["synthetic"]
        .energy_j
        .unwrap();
    assert!(
        (total - whole).abs() <= 0.0005 * rows.len() as f64 + 1e-9,
        "rows sum to {total} J, the whole stretch is {whole} J"
    );
}

#[test]
fn out_dash_and_prometheus_together() {
    let mut child = flinch()
        .args(["record", "--source", "synthetic", "--no-fifo", "--out", "-"])
        .args(["--prometheus", "127.0.0.1:0", "--duration", "4s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let out_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = BufReader::new(out).read_to_string(&mut s);
        s
    });
    let err_rx = arrivals(child.stderr.take().unwrap());
    let first = err_rx.recv_timeout(Duration::from_secs(20)).unwrap().1;
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no endpoint in {first:?}"))
        .trim_end_matches(';')
        .to_owned();
    std::thread::sleep(Duration::from_millis(1500));
    let body = ureq::get(&url)
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(
        body.contains("flinch_energy_joules_total{device=\"synthetic\""),
        "{body}"
    );
    let st = wait_or_kill(&mut child, Duration::from_secs(30), "flinch record");
    assert!(st.success());
    let text = out_thread.join().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.csv");
    std::fs::write(&path, text).unwrap();
    let trace = read_trace(&path).unwrap();
    assert!(trace.footer.is_some());
    assert!(trace.channels.iter().any(|c| !c.t_ns.is_empty()));
}

#[test]
fn print_refuses_what_it_cannot_do_before_recording() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.csv");
    let o = run(flinch()
        .args([
            "record",
            "--source",
            "synthetic",
            "--no-fifo",
            "--print",
            "1s",
            "--out",
            "-",
        ])
        .args(["--duration", "1s"]));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--out -"), "{}", stderr(&o));
    assert!(o.stdout.is_empty());
    let o = run(flinch()
        .args([
            "record",
            "--source",
            "synthetic",
            "--no-fifo",
            "--print",
            "20ms",
        ])
        .args(["--duration", "1s", "--out"])
        .arg(&out));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("at least 100ms"), "{}", stderr(&o));
    assert!(!Path::new(&out).exists());
}

#[test]
fn print_rows_go_on_while_the_trace_file_cannot_be_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = flinch()
        .args([
            "record",
            "--source",
            "synthetic",
            "--no-fifo",
            "--interval",
            "1ms",
        ])
        .args(["--print", "200ms", "--write-retry", "60s", "--out"])
        .arg(dir.path().join("t.csv"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A file-size limit (`ulimit -f`) the header fits in and the rows soon do not.
    rustix::process::prlimit(
        rustix::process::Pid::from_raw(child.id() as i32),
        rustix::process::Resource::Fsize,
        rustix::process::Rlimit {
            current: Some(40_000),
            maximum: None,
        },
    )
    .unwrap();
    let rows = arrivals(child.stdout.take().unwrap());
    let err = arrivals(child.stderr.take().unwrap());
    let failed_at = loop {
        let (t, l) = err
            .recv_timeout(Duration::from_secs(30))
            .expect("the write error is reported");
        if l.contains("cannot write") {
            break t;
        }
    };
    // Rows measured from readings the file could not take keep coming.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut after = 0;
    while after < 5 && Instant::now() < deadline {
        if let Ok((t, l)) = rows.recv_timeout(Duration::from_millis(100))
            && t > failed_at
            && l.contains(",synthetic,")
        {
            after += 1;
        }
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "the recording ended with its file"
    );
    let _ = rustix::process::kill_process(
        rustix::process::Pid::from_raw(child.id() as i32).unwrap(),
        rustix::process::Signal::TERM,
    );
    wait_or_kill(&mut child, Duration::from_secs(30), "flinch record");
    assert!(
        after >= 5,
        "{after} rows after the trace stopped being written"
    );
}

//! Reliability of `flinch record` as a process (issue 9): signals, SIGKILL, the wrapped
//! command, FIFO writers and a killed recorder, the default FIFO's directory, and memory
//! under a flood of marks. Real binary, real signals, real FIFOs.

use crate::common::flinch;
use flinch_core::clock::monotonic_ns;
use flinch_core::marks::client::{ClientError, MarkClient, SendOutcome};
use flinch_core::trace::{RowKind, Trace, read_trace};
use rustix::process::{Pid, Signal, kill_process};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// A recorder process that is killed if the test fails before ending it, so that a failed
/// test never leaves a recorder running (and holding the test runner's pipes).
struct Rec(Option<Child>);

impl Rec {
    fn into_child(mut self) -> Child {
        self.0.take().unwrap()
    }
}

impl std::ops::Deref for Rec {
    type Target = Child;
    fn deref(&self) -> &Child {
        self.0.as_ref().unwrap()
    }
}

impl std::ops::DerefMut for Rec {
    fn deref_mut(&mut self) -> &mut Child {
        self.0.as_mut().unwrap()
    }
}

impl Drop for Rec {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = kill_process(Pid::from_raw(c.id() as i32).unwrap(), Signal::CONT);
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn signal(child: &Child, sig: Signal) {
    kill_process(Pid::from_raw(child.id() as i32).unwrap(), sig).unwrap();
}

/// Waits for the process to exit; fails (after killing it) if it hangs for 30 s.
fn wait_exit(child: &mut Child, what: &str) -> ExitStatus {
    let t = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if t.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("{what}: the recorder did not exit within 30 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wait_for(what: &str, ok: impl Fn() -> bool) {
    let t = Instant::now();
    while !ok() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A recorder of the synthetic source, its FIFO at `fifo`, its trace at `dir/name`.
fn record(dir: &Path, name: &str, fifo: Option<&Path>, extra: &[&str]) -> (Rec, PathBuf) {
    let out = dir.join(name);
    let mut c = flinch();
    c.args(["record", "--quiet", "--source", "synthetic", "--out"])
        .arg(&out);
    match fifo {
        Some(f) => c.arg("--marks-fifo").arg(f),
        None => c.arg("--no-fifo"),
    };
    let child = Rec(Some(c.args(extra).stderr(Stdio::piped()).spawn().unwrap()));
    if let Some(f) = fifo {
        wait_for("the FIFO", || {
            // up and listening: a non-blocking open for writing succeeds only then
            MarkClient::open(f).is_ok()
        });
    }
    (child, out)
}

fn mark(fifo: &Path, label: &str) {
    let o = flinch()
        .args(["mark", label, "--fifo"])
        .arg(fifo)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn stderr_of(child: Child) -> String {
    let o: Output = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn samples_in_file(t: &Trace) -> u64 {
    t.sample_count() as u64
}

#[test]
fn sigint_and_sigterm_end_a_recording_complete_with_nothing_lost() {
    for sig in [Signal::INT, Signal::TERM] {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("m.fifo");
        let (mut rec, out) = record(dir.path(), "t.csv", Some(&fifo), &["--interval", "5ms"]);
        for i in 0..3 {
            mark(&fifo, &format!("m{i}"));
        }
        std::thread::sleep(Duration::from_millis(300));
        signal(&rec, sig);
        let st = wait_exit(&mut rec, "after SIGINT/SIGTERM");
        assert!(
            st.success(),
            "{sig:?}: {st:?}: {}",
            stderr_of(rec.into_child())
        );
        let t = read_trace(&out).unwrap();
        assert!(t.complete(), "{sig:?}: {:?}", t.warnings);
        assert!(t.warnings.is_empty(), "{:?}", t.warnings);
        let f = t.footer.as_ref().unwrap();
        assert_eq!(f.ended_by, "signal");
        // Everything counted was written: the footer's counts are the file's.
        assert_eq!(f.samples, samples_in_file(&t));
        assert_eq!(f.marks, 3);
        assert_eq!(t.marks.len(), 3);
        assert!(!fifo.exists(), "the FIFO it created is removed");
    }
}

#[test]
fn sigkill_leaves_a_readable_trace_missing_at_most_the_last_second_and_no_mark() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("m.fifo");
    let (mut rec, out) = record(dir.path(), "t.csv", Some(&fifo), &["--interval", "5ms"]);
    let mut c = MarkClient::open(&fifo).unwrap();
    let mut sent = 0;
    for i in 0..30 {
        let n = i.to_string();
        assert_eq!(c.mark("step", &[("n", &n)]).unwrap(), SendOutcome::Sent);
        sent += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    // Long enough for the reader to have taken the last mark from the pipe, far shorter
    // than the 1-s sample flush.
    std::thread::sleep(Duration::from_millis(100));
    let killed_at = monotonic_ns();
    signal(&rec, Signal::KILL);
    wait_exit(&mut rec, "after SIGKILL");
    let t = read_trace(&out).unwrap();
    assert!(!t.complete());
    assert!(
        t.warnings.iter().any(|w| w.contains("no footer")),
        "{:?}",
        t.warnings
    );
    assert_eq!(t.marks.len(), sent, "a received mark was lost");
    let last = *t.channel("synthetic.power").unwrap().t_ns.last().unwrap();
    let lost_ms = killed_at.saturating_sub(last) as f64 / 1e6;
    eprintln!("SIGKILL: the last sample in the file is {lost_ms:.0} ms before the kill");
    // The guarantee is one flush interval (1 s); 500 ms of slack for a loaded 2-core CI
    // machine scheduling the writer late.
    assert!(lost_ms <= 1500.0, "{lost_ms} ms of samples lost");
    // The stale FIFO stays behind, for the next recorder to reuse.
    assert!(fifo.exists());
}

#[test]
fn a_wrapped_commands_exit_status_and_the_signals_sent_to_the_recorder_pass_through() {
    for (sig, trap, code) in [(Signal::TERM, "TERM", 7), (Signal::INT, "INT", 5)] {
        let dir = tempfile::tempdir().unwrap();
        let ready = dir.path().join("ready");
        let script = format!(
            "trap 'exit {code}' {trap}; echo > {}; while :; do sleep 0.02; done",
            ready.display()
        );
        let (mut rec, out) = record(dir.path(), "t.csv", None, &["--", "sh", "-c", &script]);
        wait_for("the command to start", || ready.exists());
        signal(&rec, sig);
        let st = wait_exit(&mut rec, "after forwarding a signal");
        assert_eq!(
            st.code(),
            Some(code),
            "{trap}: {}",
            stderr_of(rec.into_child())
        );
        let t = read_trace(&out).unwrap();
        let f = t.footer.as_ref().unwrap();
        assert_eq!(
            (f.ended_by.as_str(), f.command_exit),
            ("signal", Some(code))
        );
        assert!(
            t.events
                .iter()
                .any(|e| e.label == "command_exit" && e.text == format!("status={code}"))
        );
    }
    // Killed by a signal: 128 + its number, as a shell reports it.
    let dir = tempfile::tempdir().unwrap();
    let (mut rec, out) = record(
        dir.path(),
        "t.csv",
        None,
        &["--", "sh", "-c", "kill -KILL $$"],
    );
    assert_eq!(wait_exit(&mut rec, "command killed").code(), Some(128 + 9));
    assert_eq!(
        read_trace(&out).unwrap().footer.unwrap().command_exit,
        Some(137)
    );
}

fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // pid (comm) state ...: the comm may hold spaces, so split after the last ')'
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

#[test]
fn a_recorder_killed_with_sigkill_takes_its_wrapped_command_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    // exec: the shell becomes the long-running command, the recorder's direct child.
    let script = format!("echo $$ > {}; exec sleep 1000", pidfile.display());
    let (mut rec, _out) = record(dir.path(), "t.csv", None, &["--", "sh", "-c", &script]);
    wait_for("the command's pid", || {
        std::fs::read_to_string(&pidfile).is_ok_and(|s| s.ends_with('\n'))
    });
    let pid: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(matches!(process_state(pid), Some('S' | 'R')));
    signal(&rec, Signal::KILL);
    wait_exit(&mut rec, "SIGKILL");
    let t = Instant::now();
    // Gone, or a zombie waiting for init to reap it: either way it no longer runs.
    while let Some(state) = process_state(pid)
        && state != 'Z'
    {
        if t.elapsed() > Duration::from_secs(20) {
            let _ = kill_process(Pid::from_raw(pid as i32).unwrap(), Signal::KILL);
            panic!("the wrapped command (pid {pid}) outlived the killed recorder: orphaned");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn fifo_writers_are_never_blocked_by_a_stopped_or_killed_recorder_and_the_stale_fifo_is_reused() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("m.fifo");
    let (mut rec, out) = record(dir.path(), "t1.csv", Some(&fifo), &[]);
    let mut c = MarkClient::open(&fifo).unwrap();
    c.mark("before_stop", &[]).unwrap();
    wait_for("the first mark to be written", || {
        read_trace(&out).is_ok_and(|t| t.marks.len() == 1)
    });
    // Frozen recorder: the pipe fills and the writer drops instead of waiting.
    signal(&rec, Signal::STOP);
    let pid = rec.id();
    wait_for("the recorder to stop", || process_state(pid) == Some('T'));
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let mut c = MarkClient::open(&fifo).unwrap();
            let pad = "x".repeat(2000);
            let (mut sent, mut dropped) = (0u64, 0u64);
            loop {
                match c.mark("flood", &[("pad", &pad)]) {
                    Ok(SendOutcome::Sent) => sent += 1,
                    Ok(SendOutcome::Dropped) => dropped += 1,
                    // The recorder is gone: the pipe is broken.
                    Err(ClientError::NoRecorder(_)) => return (sent, dropped),
                    Err(e) => panic!("{e}"),
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    // `flinch mark` too says "dropped" (exit 1) at once rather than waiting.
    wait_for("the pipe to fill", || {
        let o = flinch()
            .args(["mark", "probe", "--fifo"])
            .arg(&fifo)
            .output()
            .unwrap();
        o.status.code() == Some(1)
    });
    // Killed with the pipe full of unread data.
    signal(&rec, Signal::KILL);
    wait_exit(&mut rec, "SIGKILL of a stopped recorder");
    let t = Instant::now();
    while !writer.is_finished() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "a FIFO writer is blocked after the recorder was killed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let (sent, dropped) = writer.join().unwrap();
    eprintln!("while frozen: {sent} marks fit in the pipe, {dropped} dropped");
    assert!(sent > 0 && dropped > 0);
    // Nobody reads the FIFO now: opening it fails at once.
    assert!(matches!(
        MarkClient::open(&fifo),
        Err(ClientError::NoRecorder(_))
    ));
    let o = flinch()
        .args(["mark", "x", "--fifo"])
        .arg(&fifo)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    // The first trace holds what was received before the freeze.
    assert_eq!(read_trace(&out).unwrap().marks.len(), 1);

    // A new recorder takes the stale FIFO over.
    let (mut rec2, out2) = record(dir.path(), "t2.csv", Some(&fifo), &[]);
    // The client that outlived the first recorder can write again.
    c.mark("after_restart", &[]).unwrap();
    mark(&fifo, "from_cli");
    std::thread::sleep(Duration::from_millis(200));
    signal(&rec2, Signal::INT);
    assert!(wait_exit(&mut rec2, "second recorder").success());
    let t2 = read_trace(&out2).unwrap();
    let labels: Vec<&str> = t2.marks.iter().map(|m| m.label.as_str()).collect();
    assert_eq!(labels, ["after_restart", "from_cli"]);
    // What the first recorder never read is not passed off as this recording's marks.
    let stale: Vec<_> = t2
        .events
        .iter()
        .filter(|e| e.label == "stale_marks_discarded")
        .collect();
    assert_eq!(stale.len(), 1, "{:?}", t2.events);
    // the flood's marks and the `flinch mark` probes that got in before the pipe was full
    let lines: u64 = stale[0]
        .text
        .split_once(" lines)")
        .and_then(|(a, _)| a.rsplit_once('(')?.1.parse().ok())
        .unwrap();
    assert!(lines > sent, "{}", stale[0].text);
    assert!(fifo.exists(), "a FIFO it did not create is left in place");
}

#[test]
fn the_default_fifo_is_private_and_a_stale_one_from_a_killed_recorder_is_reused() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    let default_dir = run.join("flinch");
    let fifo = default_dir.join("marks.fifo");
    let start = |name: &str| {
        Rec(Some(
            flinch()
                .args(["record", "--quiet", "--source", "synthetic", "--out"])
                .arg(dir.path().join(name))
                .env("XDG_RUNTIME_DIR", &run)
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        ))
    };
    let mut rec = start("t1.csv");
    wait_for("the default FIFO", || MarkClient::open(&fifo).is_ok());
    let dmd = std::fs::symlink_metadata(&default_dir).unwrap();
    assert!(dmd.is_dir());
    assert_eq!(dmd.mode() & 0o777, 0o700);
    let fmd = std::fs::symlink_metadata(&fifo).unwrap();
    assert_eq!(fmd.mode() & 0o777, 0o600);
    assert_eq!(fmd.uid(), rustix::process::geteuid().as_raw());
    signal(&rec, Signal::KILL);
    wait_exit(&mut rec, "SIGKILL");
    assert!(fifo.exists(), "the killed recorder could not clean up");

    let mut rec = start("t2.csv");
    wait_for("the reused FIFO", || MarkClient::open(&fifo).is_ok());
    let o = flinch()
        .args(["mark", "reused"])
        .env("XDG_RUNTIME_DIR", &run)
        .env_remove("FLINCH_MARKS")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::thread::sleep(Duration::from_millis(200));
    signal(&rec, Signal::TERM);
    assert!(wait_exit(&mut rec, "second recorder").success());
    let t = read_trace(&dir.path().join("t2.csv")).unwrap();
    assert_eq!(t.marks.len(), 1);
    assert_eq!(t.header.marks.fifo.as_deref(), fifo.to_str());
}

#[test]
fn a_default_fifo_directory_planted_by_another_user_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    let planted = run.join("flinch");
    std::fs::create_dir(&planted).unwrap();
    std::os::unix::fs::lchown(&planted, Some(65534), Some(65534)).unwrap();
    let out = dir.path().join("t.csv");
    let o = flinch()
        .args(["record", "--quiet", "--source", "synthetic", "--out"])
        .arg(&out)
        .env("XDG_RUNTIME_DIR", &run)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("belongs to uid 65534") && e.contains("--marks-fifo"),
        "{e}"
    );
    assert!(!out.exists());
    assert!(!planted.join("marks.fifo").exists());
    // A symlink planted there instead, pointing at a directory of ours: refused too.
    std::fs::remove_dir(&planted).unwrap();
    let ours = dir.path().join("ours");
    std::fs::create_dir(&ours).unwrap();
    std::os::unix::fs::symlink(&ours, &planted).unwrap();
    let o = flinch()
        .args(["record", "--quiet", "--source", "synthetic", "--out"])
        .arg(&out)
        .env("XDG_RUNTIME_DIR", &run)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("symlink"));
    assert!(std::fs::read_dir(&ours).unwrap().next().is_none());
}

#[test]
fn the_trace_is_never_written_through_a_planted_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    let link = dir.path().join("t.csv");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let o = flinch()
        .args(["record", "--quiet", "--no-fifo", "--source", "synthetic"])
        .args(["--duration", "100ms", "--out"])
        .arg(&link)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    // --force replaces the link itself, never the file it points to.
    let o = flinch()
        .args([
            "record",
            "--quiet",
            "--no-fifo",
            "--force",
            "--source",
            "synthetic",
        ])
        .args(["--duration", "100ms", "--out"])
        .arg(&link)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert!(read_trace(&link).unwrap().complete());
}

fn vm_rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// Makes the recorder's trace writer slow, as a trace on a slow or busy disk would: every
/// thread of the recorder is put on one CPU and the writer thread at the lowest priority,
/// so the marks readers outrun it. Undone by [`SlowWriter::restore`].
struct SlowWriter {
    threads: Vec<Pid>,
    writer: Pid,
    cpus: rustix::thread::CpuSet,
}

impl SlowWriter {
    fn new(pid: u32) -> Self {
        let mut threads = Vec::new();
        let mut writer = None;
        for e in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
            let e = e.unwrap();
            let tid: i32 = e.file_name().to_str().unwrap().parse().unwrap();
            let tid = Pid::from_raw(tid).unwrap();
            let comm = std::fs::read_to_string(e.path().join("comm")).unwrap();
            if comm.trim() == "flinch-writer" {
                writer = Some(tid);
            }
            threads.push(tid);
        }
        let writer = writer.expect("a thread named flinch-writer");
        let cpus = rustix::thread::sched_getaffinity(Some(writer)).unwrap();
        let first = (0..rustix::thread::CpuSet::MAX_CPU)
            .find(|&c| cpus.is_set(c))
            .unwrap();
        let mut one = rustix::thread::CpuSet::new();
        one.set(first);
        for &t in &threads {
            rustix::thread::sched_setaffinity(Some(t), &one).unwrap();
        }
        rustix::process::setpriority_process(Some(writer), 19).unwrap();
        SlowWriter {
            threads,
            writer,
            cpus,
        }
    }
    fn restore(self) {
        rustix::process::setpriority_process(Some(self.writer), 0).unwrap();
        for &t in &self.threads {
            let _ = rustix::thread::sched_setaffinity(Some(t), &self.cpus);
        }
    }
}

#[test]
fn a_flood_of_marks_and_garbage_keeps_the_recorders_memory_bounded_and_loses_no_mark() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("m.fifo");
    let (mut rec, out) = record(dir.path(), "t.csv", Some(&fifo), &[]);
    let pid = rec.id();
    std::thread::sleep(Duration::from_millis(300));
    let baseline = vm_rss_kib(pid);
    let slow = SlowWriter::new(pid);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                peak = peak.max(vm_rss_kib(pid));
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        })
    };
    // First (a write over 4096 bytes is not atomic, so not while others write): a line
    // far over the limit, and bytes that are not UTF-8.
    let mut raw = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    use std::io::Write;
    let _ = raw.write_all(&[b'x'; 3 * 4096]);
    let _ = raw.write_all(b"\n\xff\xfe\xfd\n");
    // Three kinds of flood: marks as big as allowed that are slow to write (every ',' is
    // escaped), marks of many tiny fields (the most memory per byte), and garbage.
    let commas = ",".repeat(3800);
    let mut tiny = String::new();
    for k in 0..400 {
        tiny.push_str(&format!(" k{k}=v"));
    }
    let kinds: Vec<(String, bool)> = vec![
        (format!("big v={commas}"), true),
        (format!("tiny{tiny}"), true),
        ("\u{fffd}\u{0}not a mark \u{7f}".to_owned(), false),
    ];
    let writers: Vec<_> = kinds
        .into_iter()
        .enumerate()
        .map(|(w, (body, good))| {
            let fifo = fifo.clone();
            std::thread::spawn(move || {
                let mut c = MarkClient::open(&fifo).unwrap();
                let (mut sent, mut dropped) = (0u64, 0u64);
                while sent < 2000 {
                    let line = if good {
                        format!("{body} w={w} n={sent}\n")
                    } else {
                        format!("{body} {sent}\n")
                    };
                    match c.send_line(&line).unwrap() {
                        SendOutcome::Sent => sent += 1,
                        SendOutcome::Dropped => {
                            dropped += 1;
                            std::thread::yield_now();
                        }
                    }
                }
                (good, sent, dropped)
            })
        })
        .collect();
    let (mut good, mut bad, mut dropped) = (0, 2, 0);
    for w in writers {
        let (g, s, d) = w.join().unwrap();
        if g {
            good += s;
        } else {
            bad += s;
        }
        dropped += d;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let peak = sampler.join().unwrap();
    slow.restore();
    signal(&rec, Signal::INT);
    assert!(wait_exit(&mut rec, "after the flood").success());
    let t = read_trace(&out).unwrap();
    let f = t.footer.as_ref().unwrap();
    eprintln!(
        "flood: {good} marks and {bad} garbage lines sent, {dropped} dropped by clients; \
         VmRSS {baseline} KiB before, peak {peak} KiB"
    );
    assert_eq!(
        t.marks.len() as u64,
        good,
        "a mark that went into the pipe was lost"
    );
    assert_eq!(f.bad_marks, bad);
    assert_eq!(
        t.events
            .iter()
            .filter(|e| e.kind == RowKind::BadMark)
            .count() as u64,
        bad
    );
    // The marks queue holds at most 2 MiB of marks (the pipe's 1 MiB is the kernel's);
    // 32 MiB leaves room for the allocator while catching growth with the flood: with the
    // queue unbounded, this flood against the slowed writer took VmRSS from 12 to 98 MiB.
    assert!(
        peak <= baseline + 32 * 1024,
        "VmRSS grew from {baseline} KiB to {peak} KiB under the flood"
    );
}

#[test]
fn a_broken_stderr_ends_neither_the_recording_nor_the_wrapped_command() {
    // `flinch record ... 2>&1 | head`: once the reader of stderr is gone, every message
    // flinch prints fails with EPIPE.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.csv");
    let mut rec = Rec(Some(
        flinch()
            .args(["record", "--no-fifo", "--source", "synthetic", "--out"])
            .arg(&out)
            .args(["--", "sh", "-c", "sleep 0.5; exit 4"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    drop(rec.stderr.take());
    let st = wait_exit(&mut rec, "with stderr broken");
    assert_eq!(
        st.code(),
        Some(4),
        "the command's status did not pass through"
    );
    let t = read_trace(&out).unwrap();
    let f = t.footer.as_ref().unwrap();
    assert_eq!((f.ended_by.as_str(), f.command_exit), ("command", Some(4)));
}

#[test]
fn a_mark_says_which_recorder_took_it_and_two_recorders_never_share_a_fifo() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    let fifo = run.join("flinch/marks.fifo");
    let info = run.join("flinch/marks.fifo.recorder");
    let t1 = dir.path().join("t1.flinch.csv");
    let start = |out: &Path| {
        flinch()
            .args(["record", "--quiet", "--source", "synthetic", "--out"])
            .arg(out)
            .env("XDG_RUNTIME_DIR", &run)
            .env_remove("FLINCH_MARKS")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut rec = Rec(Some(start(&t1)));
    wait_for("the recorder to say who it is", || {
        std::fs::read_to_string(&info).is_ok_and(|s| s.contains("t1.flinch.csv"))
    });
    assert_eq!(
        std::fs::symlink_metadata(&info).unwrap().mode() & 0o777,
        0o600,
        "readable by its owner only"
    );
    let pid = rec.id();

    // `flinch mark` names the recorder that took the mark.
    let o = flinch()
        .args(["mark", "infer_start", "req=7"])
        .env("XDG_RUNTIME_DIR", &run)
        .env_remove("FLINCH_MARKS")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "mark infer_start taken by recorder pid {pid} writing {}",
            t1.display()
        )),
        "{err}"
    );
    // So does the Python client, when asked.
    let py = Command::new("python3")
        .arg("-c")
        .arg("import json, flinch_marks; print(json.dumps(flinch_marks.Marks().recorder()))")
        .env(
            "PYTHONPATH",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../python"),
        )
        .env("XDG_RUNTIME_DIR", &run)
        .env_remove("FLINCH_MARKS")
        .output()
        .unwrap();
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&py.stdout).unwrap();
    assert_eq!(v["pid"], pid);
    assert_eq!(v["trace"], t1.display().to_string());

    // A second recorder on the same default is refused at once, naming the first.
    let t2 = dir.path().join("t2.flinch.csv");
    let o = start(&t2).wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "recorder pid {pid} (writing {}) is already reading marks from {}",
            t1.display(),
            fifo.display()
        )) && err.contains("--marks-fifo"),
        "{err}"
    );
    assert!(!t2.exists());

    // `--fifo` given an ordinary file is refused, not appended to.
    let txt = dir.path().join("notatrace.txt");
    std::fs::write(&txt, "notes\n").unwrap();
    let o = flinch()
        .args(["mark", "x", "--fifo"])
        .arg(&txt)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("not a FIFO (a regular file)") && err.contains("--file"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&txt).unwrap(), "notes\n");

    signal(&rec, Signal::TERM);
    assert!(wait_exit(&mut rec, "the first recorder").success());
    assert!(!info.exists(), "the description outlived its recorder");
    let t = read_trace(&t1).unwrap();
    assert_eq!(t.marks.len(), 1);

    // Two recorders started in the same instant: exactly one gets the FIFO.
    let (a, b) = (dir.path().join("a.csv"), dir.path().join("b.csv"));
    let mut both = [Rec(Some(start(&a))), Rec(Some(start(&b)))];
    std::thread::sleep(Duration::from_millis(1500));
    let exited: Vec<bool> = both
        .iter_mut()
        .map(|r| r.try_wait().unwrap().is_some())
        .collect();
    assert_eq!(
        exited.iter().filter(|&&e| e).count(),
        1,
        "exactly one of two simultaneous recorders must be refused: {exited:?}"
    );
    for r in &mut both {
        if r.try_wait().unwrap().is_none() {
            signal(r, Signal::TERM);
            assert!(wait_exit(r, "the recorder that got the FIFO").success());
        }
    }
}

fn read_pid(p: &Path) -> u32 {
    wait_for("a pid file", || {
        std::fs::read_to_string(p).is_ok_and(|s| s.ends_with('\n'))
    });
    std::fs::read_to_string(p).unwrap().trim().parse().unwrap()
}

/// Waits until `pid` no longer runs (gone, or a zombie nobody reaped yet).
fn gone_within(pid: u32, within: Duration) -> bool {
    let t = Instant::now();
    while let Some(state) = process_state(pid)
        && state != 'Z'
    {
        if t.elapsed() > within {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

fn kill_quietly(pid: u32) {
    let _ = kill_process(Pid::from_raw(pid as i32).unwrap(), Signal::KILL);
}

/// A command that forks two workers and waits: one ends on SIGTERM, one ignores it.
fn forking_command(dir: &Path) -> (String, PathBuf, PathBuf, PathBuf) {
    let (me, w1, w2) = (dir.join("cmd.pid"), dir.join("w1.pid"), dir.join("w2.pid"));
    let script = format!(
        "echo $$ > {me}; sleep 1000 & echo $! > {w1}; (trap '' TERM; exec sleep 1000) & \
         echo $! > {w2}; wait",
        me = me.display(),
        w1 = w1.display(),
        w2 = w2.display()
    );
    (script, me, w1, w2)
}

#[test]
fn a_killed_recorder_ends_the_wrapped_commands_whole_process_group() {
    // Twice: flinch started by a program (not a process group leader: the command gets a
    // group of its own), and flinch leading its own group (a shell job: the command shares
    // it, so the terminal's Ctrl-C and Ctrl-Z work as without flinch).
    for leader in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (script, me, w1, w2) = forking_command(dir.path());
        let out = dir.path().join("t.csv");
        let mut c = flinch();
        c.args([
            "record",
            "--quiet",
            "--no-fifo",
            "--source",
            "synthetic",
            "--out",
        ])
        .arg(&out)
        .args(["--", "sh", "-c", &script])
        .stderr(Stdio::piped());
        if leader {
            std::os::unix::process::CommandExt::process_group(&mut c, 0);
        }
        let mut rec = Rec(Some(c.spawn().unwrap()));
        let pids = [read_pid(&me), read_pid(&w1), read_pid(&w2)];
        for p in pids {
            assert!(matches!(process_state(p), Some('S' | 'R')), "{p}");
        }
        signal(&rec, Signal::KILL);
        wait_exit(&mut rec, "SIGKILL");
        // SIGTERM to the group at once, SIGKILL 3 s later for the worker ignoring it.
        let ok: Vec<bool> = pids
            .iter()
            .map(|&p| gone_within(p, Duration::from_secs(15)))
            .collect();
        pids.iter().for_each(|&p| kill_quietly(p));
        let err = stderr_of(rec.into_child());
        assert_eq!(
            ok, [true; 3],
            "leader={leader}: the command and its workers must not outlive the recorder: {err}"
        );
        assert!(
            err.contains("the recorder died: sent SIGTERM to the wrapped command's process group"),
            "leader={leader}: {err}"
        );
    }
}

#[test]
fn workers_left_behind_by_a_command_that_exits_are_ended_and_said() {
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path().join("w.pid");
    let script = format!("sleep 1000 & echo $! > {}", w.display());
    let (mut rec, out) = record(dir.path(), "t.csv", None, &["--", "sh", "-c", &script]);
    let st = wait_exit(&mut rec, "the command exited");
    let worker = read_pid(&w);
    let ok = gone_within(worker, Duration::from_secs(5));
    kill_quietly(worker);
    assert!(ok, "the worker outlived the recording");
    assert!(st.success());
    let err = stderr_of(rec.into_child());
    assert!(
        err.contains("the command exited but left processes"),
        "{err}"
    );
    let t = read_trace(&out).unwrap();
    assert!(t.events.iter().any(|e| e.label == "command_leftovers"));
}

#[test]
fn hup_usr1_and_usr2_are_passed_to_the_wrapped_command_and_the_recording_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let py = r#"
import signal, sys, time
log = sys.argv[1]
def h(sig, frame):
    with open(log, "a") as f:
        f.write(signal.Signals(sig).name + "\n")
for s in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
    signal.signal(s, h)
with open(log, "a") as f:
    f.write("ready\n")
while True:
    time.sleep(0.01)
"#;
    let (mut rec, out) = record(
        dir.path(),
        "t.csv",
        None,
        &["--", "python3", "-c", py, log.to_str().unwrap()],
    );
    let lines = || -> Vec<String> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    };
    wait_for("the command's handlers", || lines().len() == 1);
    for (sig, name) in [
        (Signal::HUP, "SIGHUP"),
        (Signal::USR1, "SIGUSR1"),
        (Signal::USR2, "SIGUSR2"),
    ] {
        signal(&rec, sig);
        wait_for(name, || lines().last().map(String::as_str) == Some(name));
    }
    assert!(
        rec.try_wait().unwrap().is_none(),
        "a HUP ended the recording"
    );
    signal(&rec, Signal::TERM);
    let st = wait_exit(&mut rec, "after SIGTERM");
    assert_eq!(st.code(), Some(128 + 15), "{}", stderr_of(rec.into_child()));
    assert_eq!(lines(), ["ready", "SIGHUP", "SIGUSR1", "SIGUSR2"]);
    let t = read_trace(&out).unwrap();
    assert_eq!(t.footer.unwrap().command_exit, Some(143));
}

/// Lines of a child's stderr as they come, each with when it came.
fn collect_lines(
    r: impl std::io::Read + Send + 'static,
) -> std::sync::Arc<std::sync::Mutex<Vec<(Instant, String)>>> {
    use std::io::BufRead;
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let l2 = lines.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(r).lines().map_while(Result::ok) {
            l2.lock().unwrap().push((Instant::now(), line));
        }
    });
    lines
}

fn limit_file_size(pid: u32, bytes: Option<u64>) {
    rustix::process::prlimit(
        Pid::from_raw(pid as i32),
        rustix::process::Resource::Fsize,
        rustix::process::Rlimit {
            current: bytes,
            maximum: None,
        },
    )
    .unwrap();
}

const FSIZE_LIMIT: u64 = 40_000;

fn record_into_a_small_file(dir: &Path, write_retry: &str) -> (Rec, PathBuf, PathBuf) {
    let out = dir.join("t.csv");
    let fifo = dir.join("m.fifo");
    let rec = Rec(Some(
        flinch()
            .args(["record", "--source", "synthetic", "--interval", "1ms"])
            .args(["--write-retry", write_retry, "--out"])
            .arg(&out)
            .arg("--marks-fifo")
            .arg(&fifo)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    // A file-size limit (`ulimit -f`) on the recorder, set from outside: the header is
    // smaller than it, the rows soon are not. Writes past it fail with EFBIG (SIGXFSZ is
    // not ignored here: flinch must handle it itself).
    limit_file_size(rec.id(), Some(FSIZE_LIMIT));
    wait_for("the FIFO", || MarkClient::open(&fifo).is_ok());
    (rec, out, fifo)
}

fn wait_line(lines: &std::sync::Mutex<Vec<(Instant, String)>>, what: &str) -> (Instant, String) {
    let find = || {
        lines
            .lock()
            .unwrap()
            .iter()
            .find(|(_, l)| l.contains(what))
            .cloned()
    };
    wait_for(what, || find().is_some());
    find().unwrap()
}

#[test]
fn a_full_disk_is_reported_at_once_held_and_retried_and_the_recording_stops_readable() {
    let dir = tempfile::tempdir().unwrap();
    let (mut rec, out, fifo) = record_into_a_small_file(dir.path(), "2s");
    let lines = collect_lines(rec.stderr.take().unwrap());
    mark(&fifo, "before");
    let (t_err, err) = wait_line(&lines, "flinch: error: cannot write");
    assert!(
        err.contains("File too large") && err.contains("retrying"),
        "{err}"
    );
    // Reported while recording, not at the end: the recorder holds on for --write-retry.
    assert!(rec.try_wait().unwrap().is_none(), "{err}");
    mark(&fifo, "during");
    let st = wait_exit(&mut rec, "a recording that cannot be written");
    let t_exit = Instant::now();
    std::thread::sleep(Duration::from_millis(200));
    let all: Vec<String> = lines
        .lock()
        .unwrap()
        .iter()
        .map(|(_, l)| l.clone())
        .collect();
    let all = all.join("\n");
    assert_eq!(st.code(), Some(2), "{all}");
    assert!(
        t_exit - t_err >= Duration::from_millis(1500),
        "the error was said only {:?} before the end: {all}",
        t_exit - t_err
    );
    assert!(
        all.contains("still cannot be written") && all.contains("stopping the recording"),
        "{all}"
    );
    assert!(
        all.contains("bytes of rows held in memory are lost")
            && all.contains("readable up to there"),
        "{all}"
    );
    // The file: within the limit, whole rows only, readable, the early mark in it.
    let bytes = std::fs::read(&out).unwrap();
    assert!(bytes.len() as u64 <= FSIZE_LIMIT);
    assert_eq!(bytes.last(), Some(&b'\n'), "a row cut in the middle");
    let t = read_trace(&out).unwrap();
    assert!(!t.complete());
    assert!(
        t.warnings.iter().any(|w| w.contains("no footer")),
        "{:?}",
        t.warnings
    );
    assert!(
        !t.warnings.iter().any(|w| w.contains("cut")),
        "{:?}",
        t.warnings
    );
    assert_eq!(
        t.marks.iter().map(|m| m.label.as_str()).collect::<Vec<_>>(),
        ["before"]
    );
    assert!(samples_in_file(&t) > 100);
}

#[test]
fn a_disk_that_frees_up_within_the_retry_time_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut rec, out, fifo) = record_into_a_small_file(dir.path(), "60s");
    let lines = collect_lines(rec.stderr.take().unwrap());
    mark(&fifo, "before");
    wait_line(&lines, "flinch: error: cannot write");
    mark(&fifo, "during");
    std::thread::sleep(Duration::from_millis(500));
    assert!(rec.try_wait().unwrap().is_none());
    limit_file_size(rec.id(), None); // space again
    wait_line(&lines, "flinch: writing");
    mark(&fifo, "after");
    std::thread::sleep(Duration::from_millis(200));
    signal(&rec, Signal::TERM);
    let st = wait_exit(&mut rec, "SIGTERM");
    let all: Vec<String> = lines
        .lock()
        .unwrap()
        .iter()
        .map(|(_, l)| l.clone())
        .collect();
    assert!(st.success(), "{all:?}");
    let t = read_trace(&out).unwrap();
    assert!(t.complete(), "{:?}", t.warnings);
    assert!(std::fs::metadata(&out).unwrap().len() > FSIZE_LIMIT);
    assert_eq!(
        t.marks.iter().map(|m| m.label.as_str()).collect::<Vec<_>>(),
        ["before", "during", "after"]
    );
    let rec_ev = t
        .events
        .iter()
        .find(|e| e.label == "write_recovered")
        .expect("the trace says it could not be written for a while");
    assert!(rec_ev.text.contains("File too large"), "{}", rec_ev.text);
    // The samples held in memory meanwhile are all there: no hole in the 1 ms series.
    let ts = &t.channel("synthetic.power").unwrap().t_ns;
    let widest = ts.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    assert!(
        widest < 200_000_000,
        "a hole of {} ms in the samples",
        widest / 1_000_000
    );
}

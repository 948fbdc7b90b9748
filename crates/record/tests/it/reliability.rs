//! Reliability and security of a recording (issue 9), in process: sources that fail, panic
//! or hang; marks that reach the file at once; a flood held in bounded memory; and the
//! checks that keep other users out of the FIFO, the marks file and the trace.
//!
//! Tests run as root here, so ownership checks are exercised with files chowned to another
//! uid (65534, `nobody`) rather than skipped.

use flinch_core::DeviceClass;
use flinch_core::channel::{ChannelSpec, PowerMethod, SourceInfo};
use flinch_core::clock::{Clock, MonotonicClock, monotonic_ns};
use flinch_core::marks::client::{MarkClient, SendOutcome};
use flinch_core::testing::ScriptedSource;
use flinch_core::trace::{RowKind, Trace, read_trace};
use flinch_core::{ErrorKind, Readings, Source, SourceError};
use flinch_record::marks::fifo::ensure_private_dir;
use flinch_record::recorder::{Recorder, RecorderConfig, RecordingSetup};
use flinch_record::synthetic::{SyntheticConfig, SyntheticSource};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const NOBODY: u32 = 65534;

fn synthetic(profile: &str) -> Box<SyntheticSource> {
    Box::new(SyntheticSource::new(
        profile.parse::<SyntheticConfig>().unwrap(),
        &MonotonicClock,
    ))
}

fn clock() -> Arc<dyn Clock> {
    Arc::new(MonotonicClock)
}

fn power_source_info(name: &str) -> SourceInfo {
    SourceInfo::new(name, "test", DeviceClass::Other).with_channels(vec![ChannelSpec::power(
        name,
        "power",
        PowerMethod::Instant,
    )])
}

/// Runs `f` on a thread and fails the test if it has not returned within `limit` (a hang
/// detector, not a speed requirement).
fn within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let h = std::thread::spawn(f);
    let t = Instant::now();
    while !h.is_finished() {
        assert!(t.elapsed() < limit, "{what} hung for {limit:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
    h.join().unwrap()
}

/// Reads the trace while it is being written (as `analyze` would after a SIGKILL) until
/// `ok` holds; fails after 20 s.
fn wait_for_trace(path: &Path, what: &str, ok: impl Fn(&Trace) -> bool) -> Trace {
    let t = Instant::now();
    loop {
        if let Ok(tr) = read_trace(path)
            && ok(&tr)
        {
            return tr;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "never saw {what} in the trace"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn chown(p: &Path, uid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(uid)).unwrap();
}

fn mkfifo(p: &Path, mode: u32) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        p,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(mode),
        0,
    )
    .unwrap();
    // mknod is subject to the umask: set the mode exactly.
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

// ---------------------------------------------------------------------------------------
// Sources failing mid-run

/// Panics on its third poll.
struct PanicsOnThirdPoll {
    info: SourceInfo,
    polls: Arc<AtomicU64>,
}

impl Source for PanicsOnThirdPoll {
    fn info(&self) -> &SourceInfo {
        &self.info
    }
    fn poll(&mut self, out: &mut Readings<'_>) -> Result<(), SourceError> {
        let n = self.polls.fetch_add(1, Ordering::SeqCst) + 1;
        if n == 3 {
            let v: Vec<u32> = Vec::new();
            let i = n as usize;
            // An out-of-bounds index, as a backend bug would do it.
            out.push_now(0, v[i] as f64);
        }
        out.push_now(0, n as f64);
        Ok(())
    }
}

#[test]
fn a_source_that_panics_in_poll_is_a_gap_with_the_panic_message_and_the_recording_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.csv");
    let polls = Arc::new(AtomicU64::new(0));
    let bad = PanicsOnThirdPoll {
        info: power_source_info("flaky"),
        polls: polls.clone(),
    };
    let rec = Recorder::start(
        RecordingSetup::new(out.clone(), vec![Box::new(bad), synthetic("50W")]),
        RecorderConfig {
            interval: Duration::from_millis(5),
            ..Default::default()
        },
        clock(),
    )
    .unwrap();
    let api = rec.mark_sender();
    // Wait (on a loaded machine, as long as it takes) for the panic, then for the other
    // source's samples to keep arriving after it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while polls.load(Ordering::SeqCst) < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let written_at_panic = rec.stats().samples.load(Ordering::SeqCst);
    while rec.stats().samples.load(Ordering::SeqCst) < written_at_panic + 20
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(50));
    api.mark("after_the_panic", &[]).unwrap();
    let footer = rec.stop("stopped", None).unwrap();
    assert_eq!(
        polls.load(Ordering::SeqCst),
        3,
        "polled again after it panicked"
    );
    let t = read_trace(&out).unwrap();
    assert!(t.complete());
    assert_eq!(footer.gaps, 1);
    assert_eq!(t.gaps.len(), 1);
    let g = &t.gaps[0];
    assert_eq!(g.source, "flaky");
    assert!(g.end_ns.is_none(), "a retired source's gap stays open");
    assert!(
        g.reason.contains("panicked in poll") && g.reason.contains("index out of bounds"),
        "{}",
        g.reason
    );
    assert_eq!(t.channel("flaky.power").unwrap().values, vec![1.0, 2.0]);
    // The other source went on.
    let after = t
        .channel("synthetic.power")
        .unwrap()
        .t_ns
        .iter()
        .filter(|&&ts| ts > g.start_ns)
        .count();
    assert!(after >= 5, "{after} samples after the panic; {footer:?}");
    assert_eq!(t.marks.len(), 1);
}

#[test]
fn sources_failing_in_different_ways_are_gaps_with_their_reasons_while_the_others_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.csv");
    let ch = |n: &str| vec![ChannelSpec::power(n, "power", PowerMethod::Instant)];
    let mut gpu = ScriptedSource::new("gpu0", ch("gpu0")).then(vec![(0, 0, 100.0)]);
    for _ in 0..10_000 {
        // lost for good
        gpu = gpu.then_fail(SourceError::new(
            ErrorKind::Lost,
            "nvml",
            "GPU has fallen off the bus",
        ));
    }
    let file = ScriptedSource::new("rapl0", ch("rapl0"))
        .then(vec![(0, 0, 10.0)])
        .then_fail(SourceError::new(
            ErrorKind::NotAvailable,
            "rapl",
            "/sys/class/powercap/intel-rapl:0/energy_uj vanished",
        ))
        .then(vec![(0, 0, 11.0)]);
    let perm = ScriptedSource::new("dcgm0", ch("dcgm0"))
        .then(vec![(0, 0, 1.0)])
        .then(vec![(0, 0, 2.0)])
        .then_fail(SourceError::new(
            ErrorKind::PermissionDenied,
            "dcgm",
            "permission revoked",
        ));
    let rec = Recorder::start(
        RecordingSetup::new(
            out.clone(),
            vec![
                Box::new(gpu),
                Box::new(file),
                Box::new(perm),
                synthetic("50W"),
            ],
        ),
        RecorderConfig {
            interval: Duration::from_millis(5),
            ..Default::default()
        },
        clock(),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(150));
    rec.stop("stopped", None).unwrap();
    let t = read_trace(&out).unwrap();
    let gap = |s: &str| t.gaps.iter().find(|g| g.source == s).unwrap();
    assert!(
        gap("gpu0")
            .reason
            .starts_with("lost: nvml: GPU has fallen off the bus")
    );
    assert!(gap("gpu0").end_ns.is_none());
    assert!(gap("rapl0").reason.starts_with("not-available: rapl: "));
    assert!(gap("rapl0").reason.contains("vanished"));
    assert!(gap("rapl0").end_ns.is_some(), "it came back");
    assert!(
        gap("dcgm0")
            .reason
            .starts_with("permission-denied: dcgm: permission revoked")
    );
    assert_eq!(t.gaps.len(), 3);
    assert_eq!(t.channel("rapl0.power").unwrap().values, vec![10.0, 11.0]);
    assert!(t.channel("synthetic.power").unwrap().t_ns.len() >= 10);
}

/// Blocks inside poll until released, as a hung driver call does.
struct HangsInPoll {
    info: SourceInfo,
    polls: u64,
    release: Arc<AtomicBool>,
}

impl Source for HangsInPoll {
    fn info(&self) -> &SourceInfo {
        &self.info
    }
    fn poll(&mut self, out: &mut Readings<'_>) -> Result<(), SourceError> {
        self.polls += 1;
        if self.polls >= 3 {
            while !self.release.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        out.push_now(0, 1.0);
        Ok(())
    }
    fn interval(&self) -> Option<Duration> {
        Some(Duration::from_millis(20))
    }
}

#[test]
fn a_source_stuck_in_poll_does_not_hold_the_end_of_the_recording() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.csv");
    let release = Arc::new(AtomicBool::new(false));
    let stuck = HangsInPoll {
        info: power_source_info("stuck"),
        polls: 0,
        release: release.clone(),
    };
    let rec = Recorder::start(
        RecordingSetup::new(out.clone(), vec![Box::new(stuck), synthetic("50W")]),
        RecorderConfig {
            interval: Duration::from_millis(5),
            stop_timeout: Duration::from_millis(300),
            ..Default::default()
        },
        clock(),
    )
    .unwrap();
    let api = rec.mark_sender();
    std::thread::sleep(Duration::from_millis(200));
    api.mark("while_stuck", &[]).unwrap();
    let footer = within(
        Duration::from_secs(30),
        "stop with a stuck source",
        move || rec.stop("signal", None).unwrap(),
    );
    release.store(true, Ordering::SeqCst);
    let t = read_trace(&out).unwrap();
    assert!(t.complete());
    assert_eq!(t.marks.len(), 1);
    let ev: Vec<_> = t
        .events
        .iter()
        .filter(|e| e.kind == RowKind::Event && e.label == "sampler_stuck")
        .collect();
    assert_eq!(ev.len(), 1, "{:?}", t.events);
    assert!(ev[0].text.contains("stuck"), "{}", ev[0].text);
    // The healthy thread's timing is in the footer; the stuck one's is not.
    assert_eq!(footer.cadences.len(), 1);
    assert_eq!(footer.cadences[0].sources, ["synthetic"]);
    assert!(t.channel("synthetic.power").unwrap().t_ns.len() >= 10);
}

// ---------------------------------------------------------------------------------------
// What a crash can lose

#[test]
fn a_received_mark_is_in_the_file_at_once_whatever_the_flush_interval() {
    // With the periodic flush an hour away, only the flush-on-mark can put the mark in the
    // file; reading the file while the recorder runs sees what a SIGKILL would leave.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.csv");
    let fifo = dir.path().join("m.fifo");
    let mut setup = RecordingSetup::new(out.clone(), vec![synthetic("50W")]);
    setup.marks_fifo = Some(fifo.clone());
    let rec = Recorder::start(
        setup,
        RecorderConfig {
            flush_interval: Duration::from_secs(3600),
            ..Default::default()
        },
        clock(),
    )
    .unwrap();
    let mut c = MarkClient::open(&fifo).unwrap();
    for i in 0..5 {
        let n = i.to_string();
        assert_eq!(c.mark("step", &[("n", &n)]).unwrap(), SendOutcome::Sent);
        let want = i + 1;
        let t = wait_for_trace(&out, "the mark", |t| t.marks.len() == want);
        assert!(!t.complete());
        assert_eq!(t.marks[i].field("n"), Some(n.as_str()));
    }
    rec.stop("stopped", None).unwrap();
}

#[test]
fn samples_reach_the_file_every_flush_interval_without_a_clean_stop() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.csv");
    let rec = Recorder::start(
        RecordingSetup::new(out.clone(), vec![synthetic("50W")]),
        RecorderConfig {
            flush_interval: Duration::from_millis(200),
            ..Default::default()
        },
        clock(),
    )
    .unwrap();
    // Samples stamped after this instant must show up without any mark or stop.
    let t0 = monotonic_ns();
    let t = wait_for_trace(&out, "samples after t0", |t| {
        t.channel("synthetic.power")
            .is_some_and(|c| c.t_ns.last().is_some_and(|&l| l > t0))
    });
    assert!(!t.complete());
    assert!(t.warnings.iter().any(|w| w.contains("no footer")));
    rec.stop("stopped", None).unwrap();
}

// ---------------------------------------------------------------------------------------
// Floods

#[test]
fn a_mark_flood_is_held_in_bounded_memory_and_every_mark_sent_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.csv");
    let fifo = dir.path().join("m.fifo");
    let mut setup = RecordingSetup::new(out.clone(), vec![synthetic("50W")]);
    setup.marks_fifo = Some(fifo.clone());
    let budget = 64 << 10;
    let rec = Recorder::start(
        setup,
        RecorderConfig {
            marks_queue_bytes: budget,
            ..Default::default()
        },
        clock(),
    )
    .unwrap();
    // Big marks of many small fields: the most memory per byte of pipe. Each writer keeps
    // going until 1500 of its marks got in, so the pipe is kept full throughout.
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let fifo = fifo.clone();
            std::thread::spawn(move || {
                let mut c = MarkClient::open(&fifo).unwrap();
                let mut fields = String::new();
                for k in 0..400 {
                    fields.push_str(&format!(" k{k}=v"));
                }
                let (mut sent, mut dropped) = (0u64, 0u64);
                while sent < 1500 {
                    let line = format!("flood w={w} n={sent}{fields}\n");
                    assert!(line.len() <= 4096);
                    match c.send_line(&line).unwrap() {
                        SendOutcome::Sent => sent += 1,
                        SendOutcome::Dropped => {
                            dropped += 1;
                            std::thread::yield_now();
                        }
                    }
                }
                (sent, dropped)
            })
        })
        .collect();
    let (mut sent, mut dropped) = (0, 0);
    for w in writers {
        let (s, d) = w.join().unwrap();
        sent += s;
        dropped += d;
    }
    let t = Instant::now();
    while rec.stats().marks.load(Ordering::Relaxed) < sent {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the marks never all arrived"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let peak = rec.stats().marks_queue_peak_bytes.load(Ordering::Relaxed);
    let footer = rec.stop("stopped", None).unwrap();
    eprintln!("flood: {sent} marks sent, {dropped} dropped by the clients, queue peak {peak} B");
    // Every mark that went into the pipe is in the trace: none lost inside the recorder.
    assert_eq!(footer.marks, sent);
    assert_eq!(footer.bad_marks, 0);
    let t = read_trace(&out).unwrap();
    assert_eq!(t.marks.len() as u64, sent);
    // One mark of 400 fields holds roughly 30 KiB; the queue never held more than the
    // budget and one mark.
    assert!(peak > 0);
    assert!(
        peak <= budget as u64 + 64 * 1024,
        "marks queue peaked at {peak} B"
    );
}

#[test]
fn in_process_marks_are_refused_not_queued_when_the_queue_is_full() {
    // A tiny budget and no time for the writer: try_send must fail with Full rather than
    // block or grow.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.csv");
    let rec = Recorder::start(
        RecordingSetup::new(out.clone(), vec![synthetic("50W")]),
        RecorderConfig {
            marks_queue_bytes: 1,
            ..Default::default()
        },
        clock(),
    )
    .unwrap();
    let api = rec.mark_sender();
    let mut full = 0;
    let mut ok = 0u64;
    for i in 0..20_000 {
        match api.mark("m", &[("i", &i.to_string())]) {
            Ok(()) => ok += 1,
            Err(flinch_record::recorder::MarkSendError::Full) => full += 1,
            Err(e) => panic!("{e}"),
        }
    }
    let footer = rec.stop("stopped", None).unwrap();
    assert!(full > 0, "a one-byte budget never filled");
    assert_eq!(footer.marks, ok);
}

// ---------------------------------------------------------------------------------------
// Other users

#[test]
fn the_marks_directory_must_be_a_private_directory_of_ours() {
    let dir = tempfile::tempdir().unwrap();
    // Missing: created 0700.
    let d = dir.path().join("flinch");
    ensure_private_dir(&d).unwrap();
    let md = std::fs::symlink_metadata(&d).unwrap();
    assert!(md.is_dir());
    assert_eq!(md.mode() & 0o777, 0o700);
    ensure_private_dir(&d).unwrap(); // and reused

    // Owned by someone else.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o700)).unwrap();
    chown(&other, NOBODY);
    let e = ensure_private_dir(&other).unwrap_err().to_string();
    assert!(e.contains("belongs to uid 65534"), "{e}");

    // Reachable by others.
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
    let e = ensure_private_dir(&open).unwrap_err().to_string();
    assert!(e.contains("mode 755") && e.contains("chmod 700"), "{e}");

    // A symlink to a private directory of ours: still refused (it can be re-pointed).
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&d, &link).unwrap();
    let e = ensure_private_dir(&link).unwrap_err().to_string();
    assert!(e.contains("symlink"), "{e}");

    // A file.
    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let e = ensure_private_dir(&file).unwrap_err().to_string();
    assert!(e.contains("not a plain directory"), "{e}");
}

fn start_with_fifo(dir: &Path, fifo: &Path) -> flinch_core::Result<Recorder> {
    let mut setup = RecordingSetup::new(dir.join("t.csv"), vec![synthetic("1W")]);
    setup.marks_fifo = Some(fifo.to_owned());
    Recorder::start(setup, RecorderConfig::default(), clock())
}

#[test]
fn an_existing_fifo_path_is_used_only_if_it_is_a_private_fifo_of_ours() {
    let dir = tempfile::tempdir().unwrap();
    let refused = |p: &PathBuf, needle: &str| {
        let e = start_with_fifo(dir.path(), p).err().unwrap().to_string();
        assert!(e.contains(needle), "{}: {e}", p.display());
        assert!(!dir.path().join("t.csv").exists(), "a trace was created");
    };
    // A FIFO planted by another user.
    let theirs = dir.path().join("theirs.fifo");
    mkfifo(&theirs, 0o600);
    chown(&theirs, NOBODY);
    refused(&theirs, "belongs to uid 65534");
    // A FIFO of ours that others can open.
    let loose = dir.path().join("loose.fifo");
    mkfifo(&loose, 0o622);
    refused(&loose, "mode 622");
    assert_eq!(
        std::fs::metadata(&loose).unwrap().mode() & 0o777,
        0o622,
        "left as it was"
    );
    // A regular file: refused, and its content untouched.
    let file = dir.path().join("file");
    std::fs::write(&file, "precious").unwrap();
    refused(&file, "not a FIFO");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "precious");
    // A symlink to a good FIFO of ours.
    let good = dir.path().join("good.fifo");
    mkfifo(&good, 0o600);
    let link = dir.path().join("link.fifo");
    std::os::unix::fs::symlink(&good, &link).unwrap();
    refused(&link, "symlink");
    // A dangling symlink: not created through.
    let dangling = dir.path().join("dangling.fifo");
    let target = dir.path().join("would_be_created");
    std::os::unix::fs::symlink(&target, &dangling).unwrap();
    refused(&dangling, "symlink");
    assert!(!target.exists());
    // And the good one works, stays 0600, and is left in place (we did not create it).
    let rec = start_with_fifo(dir.path(), &good).unwrap();
    rec.stop("stopped", None).unwrap();
    assert_eq!(std::fs::metadata(&good).unwrap().mode() & 0o777, 0o600);
}

#[test]
fn a_fifo_the_recorder_creates_is_0600_and_ours() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("new.fifo");
    let rec = start_with_fifo(dir.path(), &fifo).unwrap();
    let md = std::fs::symlink_metadata(&fifo).unwrap();
    assert_eq!(md.mode() & 0o777, 0o600);
    assert_eq!(md.uid(), rustix::process::geteuid().as_raw());
    rec.stop("stopped", None).unwrap();
}

#[test]
fn the_marks_file_is_never_opened_through_a_symlink_or_as_something_else() {
    let dir = tempfile::tempdir().unwrap();
    let start = |p: &Path| {
        let mut setup = RecordingSetup::new(dir.path().join("t.csv"), vec![synthetic("1W")]);
        setup.marks_file = Some(p.to_owned());
        Recorder::start(setup, RecorderConfig::default(), clock())
    };
    let target = dir.path().join("victim");
    std::fs::write(&target, "do not touch").unwrap();
    let link = dir.path().join("marks.txt");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let e = start(&link).err().unwrap().to_string();
    assert!(e.contains("symlink"), "{e}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "do not touch");
    // A dangling link is not created through.
    let dangling = dir.path().join("dangling.txt");
    let nothing = dir.path().join("nothing");
    std::os::unix::fs::symlink(&nothing, &dangling).unwrap();
    assert!(start(&dangling).is_err());
    assert!(!nothing.exists());
    // A FIFO or a directory is not a marks file.
    let fifo = dir.path().join("f.fifo");
    mkfifo(&fifo, 0o600);
    let e = within(
        Duration::from_secs(20),
        "opening a FIFO as the marks file",
        move || {
            let mut setup = RecordingSetup::new(PathBuf::from("/nonexistent/t.csv"), vec![]);
            setup.marks_file = Some(fifo);
            setup.sources = vec![synthetic("1W")];
            Recorder::start(setup, RecorderConfig::default(), Arc::new(MonotonicClock))
                .err()
                .map(|e| e.to_string())
        },
    );
    assert!(e.is_some_and(|e| e.contains("not a regular file")));
    let e = start(dir.path()).err().unwrap().to_string();
    assert!(e.contains("marks file"), "{e}");
    assert!(!dir.path().join("t.csv").exists());
    // A new marks file is created 0600.
    let new = dir.path().join("new.txt");
    let rec = start(&new).unwrap();
    rec.stop("stopped", None).unwrap();
    assert_eq!(std::fs::metadata(&new).unwrap().mode() & 0o777, 0o600);
}

#[test]
fn a_client_never_sends_marks_into_another_users_fifo() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("theirs.fifo");
    mkfifo(&fifo, 0o666);
    chown(&fifo, NOBODY);
    // Someone is reading it (as the planter would be).
    let _reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(&fifo)
        .unwrap();
    let e = MarkClient::open(&fifo).unwrap_err().to_string();
    assert!(e.contains("belongs to uid 65534"), "{e}");
    // A symlink to it is refused as well.
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&fifo, &link).unwrap();
    assert!(MarkClient::open(&link).is_err());
}

#[test]
fn source_names_that_would_break_the_trace_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = ScriptedSource::new(
        "gpu,0",
        vec![ChannelSpec::power("gpu0", "power", PowerMethod::Instant)],
    );
    let e = Recorder::start(
        RecordingSetup::new(dir.path().join("t.csv"), vec![Box::new(s)]),
        RecorderConfig::default(),
        clock(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("source name \"gpu,0\""), "{e}");
}

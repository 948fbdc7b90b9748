//! A whole recording through the real clock, real FIFOs and real files.

use flinch_core::clock::{Clock, MonotonicClock, monotonic_ns};
use flinch_core::marks::client::{ClientError, MarkClient, SendOutcome};
use flinch_core::testing::ScriptedSource;
use flinch_core::trace::{RowKind, read_trace};
use flinch_core::{ChannelSpec, CounterSpec, ErrorKind, SourceError};
use flinch_record::recorder::{MarkSendError, Recorder, RecorderConfig, RecordingSetup};
use flinch_record::synthetic::{SyntheticConfig, SyntheticSource};
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

fn synthetic(profile: &str) -> Box<SyntheticSource> {
    Box::new(SyntheticSource::new(
        profile.parse::<SyntheticConfig>().unwrap(),
        &MonotonicClock,
    ))
}

#[test]
fn marks_from_fifo_file_and_api_land_with_their_client_stamps() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run.csv");
    let fifo = dir.path().join("marks.fifo");
    let file = dir.path().join("marks.txt");
    std::fs::write(&file, "old_mark_from_before t=1\n").unwrap();
    let mut setup = RecordingSetup::new(out.clone(), vec![synthetic("100W")]);
    setup.marks_fifo = Some(fifo.clone());
    setup.marks_file = Some(file.clone());
    setup.meta.insert("model".into(), "tiny".into());
    let clock: Arc<dyn Clock> = Arc::new(MonotonicClock);
    let rec = Recorder::start(setup, RecorderConfig::default(), clock).unwrap();
    assert_eq!(rec.fifo_path(), Some(fifo.as_path()));
    // The FIFO is private.
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let md = std::fs::metadata(&fifo).unwrap();
    assert!(md.file_type().is_fifo());
    assert_eq!(md.permissions().mode() & 0o777, 0o600);

    let mut c = MarkClient::open(&fifo).unwrap();
    let t_client = monotonic_ns() - 5_000_000; // stamped earlier than sent: kept exactly
    c.send_line(&format!("MARK infer_start t={t_client} req=a\n"))
        .unwrap();
    assert_eq!(
        c.mark("first_token", &[("req", "a")]).unwrap(),
        SendOutcome::Sent
    );
    c.send_line("not a valid label!\n").unwrap();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .unwrap();
    writeln!(f, "from_file t=123456 k=v").unwrap();
    write!(f, "partial_line_not_yet_finished").unwrap();
    f.flush().unwrap();
    let api = rec.mark_sender();
    api.mark("from_api", &[("n", "1")]).unwrap();
    assert!(matches!(
        api.mark("bad label", &[]),
        Err(MarkSendError::Invalid(_))
    ));
    std::thread::sleep(Duration::from_millis(300));
    let footer = rec.stop("stopped", None).unwrap();
    assert!(
        !fifo.exists(),
        "the FIFO the recorder created is removed at the end"
    );
    assert!(matches!(api.mark("late", &[]), Err(MarkSendError::Closed)));

    let t = read_trace(&out).unwrap();
    assert!(t.complete());
    let labels: Vec<&str> = t.marks.iter().map(|m| m.label.as_str()).collect();
    assert_eq!(
        labels,
        ["from_file", "infer_start", "first_token", "from_api"],
        "{labels:?}"
    );
    let start = t.marks.iter().find(|m| m.label == "infer_start").unwrap();
    assert_eq!(start.t_ns, t_client);
    assert!(start.t_from_client);
    assert_eq!(start.req(), Some("a"));
    assert!(start.recv_ns >= t_client + 5_000_000);
    assert_eq!(t.marks[0].t_ns, 123_456);
    assert_eq!(t.marks[0].field("k"), Some("v"));
    let bad: Vec<_> = t
        .events
        .iter()
        .filter(|e| e.kind == RowKind::BadMark)
        .collect();
    assert_eq!(bad.len(), 1);
    assert!(bad[0].text.contains("not a valid label!"));
    assert_eq!(footer.marks, 4);
    assert_eq!(footer.bad_marks, 1);
    assert_eq!(t.header.meta["model"], "tiny");
    assert_eq!(t.header.marks.fifo.as_deref(), Some(fifo.to_str().unwrap()));
    assert!(t.sample_count() >= 3 * 10, "{}", t.sample_count());
}

#[test]
fn two_concurrent_writers_of_10000_marks_lose_none_and_never_interleave() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run.csv");
    let fifo = dir.path().join("m.fifo");
    let mut setup = RecordingSetup::new(out.clone(), vec![synthetic("10W")]);
    setup.marks_fifo = Some(fifo.clone());
    let rec = Recorder::start(setup, RecorderConfig::default(), Arc::new(MonotonicClock)).unwrap();
    let writers: Vec<_> = ["w0", "w1"]
        .into_iter()
        .map(|w| {
            let fifo = fifo.clone();
            std::thread::spawn(move || {
                let mut c = MarkClient::open(&fifo).unwrap();
                // A long value makes interleaving visible if it ever happened.
                let pad = w.repeat(20);
                for i in 0..10_000 {
                    let n = i.to_string();
                    c.mark("tok", &[("w", w), ("n", &n), ("pad", &pad)])
                        .unwrap();
                    // Bursts of 50, up to ~50 000 marks/s per writer: far above what a
                    // server sends, while leaving the recorder a few hundred ms of pipe
                    // (1 MiB) to ride out being descheduled on a loaded CI machine.
                    // Clients never block by contract, so an unpaced flood on a starved
                    // machine is dropped and counted by the client, not lost silently.
                    if i % 50 == 49 {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
                c.dropped()
            })
        })
        .collect();
    let dropped: u64 = writers.into_iter().map(|h| h.join().unwrap()).sum();
    std::thread::sleep(Duration::from_millis(200));
    let footer = rec.stop("stopped", None).unwrap();
    assert_eq!(
        dropped, 0,
        "the client dropped marks: the reader did not keep up"
    );
    assert_eq!(footer.bad_marks, 0);
    let t = read_trace(&out).unwrap();
    assert_eq!(t.marks.len(), 20_000);
    for w in ["w0", "w1"] {
        let mut ns: Vec<u32> = t
            .marks
            .iter()
            .filter(|m| m.field("w") == Some(w))
            .inspect(|m| assert_eq!(m.field("pad").unwrap(), w.repeat(20)))
            .map(|m| m.field("n").unwrap().parse().unwrap())
            .collect();
        ns.sort_unstable();
        assert_eq!(ns, (0..10_000).collect::<Vec<_>>(), "{w}");
    }
}

#[test]
fn a_client_with_no_recorder_is_neither_blocked_nor_crashed() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("m.fifo");
    assert!(matches!(
        MarkClient::open(&fifo),
        Err(ClientError::NotFound(_))
    ));
    // A FIFO left behind with nobody reading: opening fails at once with ENXIO.
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let e = MarkClient::open(&fifo).unwrap_err();
    assert!(matches!(e, ClientError::NoRecorder(_)), "{e}");
    assert!(e.to_string().contains("flinch record"));
    // and a recorder can then take the stale FIFO over
    let mut setup = RecordingSetup::new(dir.path().join("t.csv"), vec![synthetic("1W")]);
    setup.marks_fifo = Some(fifo.clone());
    let rec = Recorder::start(setup, RecorderConfig::default(), Arc::new(MonotonicClock)).unwrap();
    // while it listens, a second recorder on the same FIFO is refused
    let mut setup2 = RecordingSetup::new(dir.path().join("t2.csv"), vec![synthetic("1W")]);
    setup2.marks_fifo = Some(fifo.clone());
    let e = Recorder::start(setup2, RecorderConfig::default(), Arc::new(MonotonicClock))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("is already reading marks from"), "{e}");
    assert!(
        !dir.path().join("t2.csv").exists(),
        "no trace file is created when start fails"
    );
    MarkClient::open(&fifo).unwrap().mark("ok", &[]).unwrap();
    rec.stop("stopped", None).unwrap();
    assert!(
        fifo.exists(),
        "a FIFO the recorder did not create is left in place"
    );
    let t = read_trace(&dir.path().join("t.csv")).unwrap();
    assert_eq!(t.marks.len(), 1);
}

#[test]
fn source_failures_become_gaps_and_counter_resets_become_reset_rows() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.csv");
    let ch = vec![ChannelSpec::energy_counter(
        "gpu0",
        "energy",
        CounterSpec {
            wrap_range: None,
            max_rate: Some(1000.0),
        },
    )];
    let src = ScriptedSource::new("gpu0", ch)
        .then(vec![(0, 0, 5_000.0)])
        .then(vec![(0, 0, 5_001.0)])
        .then_fail(SourceError::new(ErrorKind::Lost, "nvml", "GPU is lost"))
        .then_fail(SourceError::new(ErrorKind::Lost, "nvml", "GPU is lost"))
        .then(vec![(0, 0, 2.0)]) // driver reloaded: the counter restarted
        .then(vec![(0, 0, 3.0)]);
    let healthy = synthetic("50W");
    let rec = Recorder::start(
        RecordingSetup::new(out.clone(), vec![Box::new(src), healthy]),
        RecorderConfig {
            interval: Duration::from_millis(5),
            ..Default::default()
        },
        Arc::new(MonotonicClock),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(150));
    let footer = rec.stop("stopped", None).unwrap();
    let t = read_trace(&out).unwrap();
    assert_eq!(footer.gaps, 1);
    assert_eq!(t.gaps.len(), 1);
    assert!(t.gaps[0].reason.contains("GPU is lost") && t.gaps[0].reason.starts_with("lost"));
    assert!(t.gaps[0].end_ns.is_some());
    let resets: Vec<_> = t
        .events
        .iter()
        .filter(|e| e.kind == RowKind::Reset)
        .collect();
    assert_eq!(resets.len(), 1);
    assert_eq!(resets[0].value, Some(2.0));
    assert_eq!(
        t.channel("gpu0.energy").unwrap().values,
        vec![5_000.0, 5_001.0, 2.0, 3.0]
    );
    // the healthy source went on sampling through the gap
    assert!(t.channel("synthetic.power").unwrap().t_ns.len() >= 10);
}

#[test]
fn bad_setups_are_refused_before_any_file_exists() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.csv");
    let e = Recorder::start(
        RecordingSetup::new(out.clone(), vec![synthetic("1W"), synthetic("2W")]),
        RecorderConfig::default(),
        Arc::new(MonotonicClock),
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("two sources are named"), "{e}");
    let e = Recorder::start(
        RecordingSetup::new(out.clone(), vec![]),
        RecorderConfig::default(),
        Arc::new(MonotonicClock),
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("no sources"), "{e}");
    // an interval finer than the sampler can keep
    let e = Recorder::start(
        RecordingSetup::new(out.clone(), vec![synthetic("1W")]),
        RecorderConfig {
            interval: std::time::Duration::from_micros(1),
            ..Default::default()
        },
        Arc::new(MonotonicClock),
    )
    .err()
    .unwrap();
    assert!(
        e.to_string()
            .contains("below the finest a recording takes (1ms)"),
        "{e}"
    );
    assert!(!out.exists());
    // a symlink planted where the FIFO should go
    let fifo = dir.path().join("m.fifo");
    std::os::unix::fs::symlink("/etc/passwd", &fifo).unwrap();
    let mut setup = RecordingSetup::new(out.clone(), vec![synthetic("1W")]);
    setup.marks_fifo = Some(fifo);
    let e = Recorder::start(setup, RecorderConfig::default(), Arc::new(MonotonicClock))
        .err()
        .unwrap();
    assert!(e.to_string().contains("symlink"), "{e}");
    assert!(!out.exists());
}

#[test]
fn a_filling_sample_queue_is_drained_before_the_flush_is_due() {
    // 8 channels at 1 kHz = 8000 readings/s into a queue of 4096, with a flush due only every
    // 10 s: without the sampler asking for a drain at a quarter full, all but 4096 of the
    // ~12 000 readings of this 1.5 s recording would be dropped.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.csv");
    let rec = Recorder::start(
        RecordingSetup::new(
            out.clone(),
            vec![Box::new(flinch_core::testing::NullSource::new("null0", 8))],
        ),
        RecorderConfig {
            interval: Duration::from_millis(1),
            flush_interval: Duration::from_secs(10),
            queue_capacity: 4096,
            ..Default::default()
        },
        Arc::new(MonotonicClock),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let footer = rec.stop("stopped", None).unwrap();
    assert_eq!(footer.dropped_readings, 0, "{footer:?}");
    assert!(footer.samples > 4096 * 2, "{}", footer.samples);
}

/// The header's `machine` says what the OS says, read here by hand from the files sysinfo
/// reads (so a wrong field, a unit slip in the memory or a missing fill shows).
#[cfg(target_os = "linux")]
#[test]
fn the_header_describes_the_machine_as_the_os_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run.csv");
    let clock: Arc<dyn Clock> = Arc::new(MonotonicClock);
    let rec = Recorder::start(
        RecordingSetup::new(out.clone(), vec![synthetic("100W")]),
        RecorderConfig::default(),
        clock,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(30));
    rec.stop("stopped", None).unwrap();
    let m = read_trace(&out)
        .unwrap()
        .header
        .machine
        .expect("no machine in the header");

    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    let processors = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    assert_eq!(m.logical_cpus, Some(processors as u32));
    let cores = m.physical_cores.expect("no physical core count");
    assert!((1..=processors as u32).contains(&cores), "{cores} cores");
    // x86 names its model on `model name` lines (other architectures differ).
    if cfg!(target_arch = "x86_64") {
        let model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).trim());
        assert_eq!(m.cpu_model.as_deref(), model);
    }
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let total_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert_eq!(m.memory_bytes, Some(total_kib * 1024));
    let release = rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned();
    assert_eq!(m.kernel, Some(format!("Linux {release}")));
    assert_eq!(m.arch.as_deref(), Some(std::env::consts::ARCH));
    // Every mainstream distribution (and systemd) ships /etc/os-release; a machine without it
    // fails here rather than passing unchecked.
    let os_release = std::fs::read_to_string("/etc/os-release").unwrap();
    let field = |k: &str| {
        os_release.lines().find_map(|l| {
            l.strip_prefix(k)
                .and_then(|v| v.strip_prefix('='))
                .map(|v| v.trim_matches('"').to_owned())
        })
    };
    assert_eq!(m.os, field("NAME"));
    assert_eq!(m.os_version, field("VERSION_ID"));
}

#[test]
fn posted_marks_fill_the_lane_and_all_reach_the_trace_at_stop() {
    use flinch_record::MarkSpec;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run.csv");
    let setup = RecordingSetup::new(out.clone(), vec![synthetic("100W")]);
    let config = RecorderConfig {
        flush_interval: Duration::from_secs(60),
        ..Default::default()
    };
    let rec = Recorder::start(setup, config, Arc::new(MonotonicClock)).unwrap();
    let api = rec.mark_sender();
    assert!(matches!(
        MarkSpec::new("w_start", vec![("t".into(), "1".into())]),
        Err(flinch_core::marks::MarkParseError::BadField(_))
    ));
    let spec = MarkSpec::new("w_start", vec![("req".into(), "7".into())]).unwrap();
    // More than the lane holds, with a flush interval of a minute: a quarter full asks the
    // writer to drain it, so a refused post (`Full`) gets in again soon.
    let n = 20_000u64;
    let t0 = monotonic_ns();
    let started = std::time::Instant::now();
    for i in 0..n {
        while let Err(e) = api.post(&spec, t0 + i) {
            assert!(matches!(e, MarkSendError::Full), "{e}");
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the lane is not drained"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let footer = rec.stop("stopped", None).unwrap();
    assert!(matches!(api.post(&spec, t0), Err(MarkSendError::Closed)));
    let t = read_trace(&out).unwrap();
    assert_eq!(footer.marks, n);
    assert_eq!(t.marks.len() as u64, n);
    for (i, m) in t.marks.iter().enumerate() {
        assert_eq!((m.label.as_str(), m.t_ns), ("w_start", t0 + i as u64));
        assert_eq!(m.req(), Some("7"));
        assert!(m.t_from_client);
    }
}

//! The DCGM backend through its real loader and FFI path, against a fake libdcgm built from
//! C for each test (see `flinch_dcgm::testing`), and against libraries that are missing or
//! lack the symbols.

use flinch_core::clock::{ManualClock, MonotonicClock};
use flinch_core::testing::check_source;
use flinch_core::{Clock, ErrorKind, Reading, Readings, Source, SourceError};
use flinch_dcgm::testing::FakeDcgm;
use flinch_dcgm::{DcgmConfig, DcgmError, DcgmLib, DcgmSource};
use std::path::Path;
use std::time::Duration;

fn fake(script: &str) -> FakeDcgm {
    let f = FakeDcgm::build().expect("building the fake libdcgm needs a C compiler (cc or $CC)");
    f.script(script);
    f
}

fn config(f: &FakeDcgm) -> DcgmConfig {
    DcgmConfig {
        library: Some(f.path().to_path_buf()),
        ..DcgmConfig::default()
    }
}

/// Polls once (or finishes) and returns the readings by channel name.
fn poll(
    src: &mut DcgmSource,
    clock: &dyn Clock,
    finish: bool,
) -> Result<Vec<(String, u64, f64)>, SourceError> {
    let n = src.info().channels.len() as u32;
    let mut buf: Vec<Reading> = Vec::new();
    let mut out = Readings::new(clock, &mut buf, 0, n);
    let r = if finish {
        src.finish(&mut out)
    } else {
        src.poll(&mut out)
    };
    assert_eq!(out.rejected(), 0, "readings rejected by the buffer");
    r?;
    let names: Vec<String> = src.info().channels.iter().map(|c| c.name.clone()).collect();
    Ok(buf
        .iter()
        .map(|r| (names[r.channel as usize].clone(), r.t_ns, r.value))
        .collect())
}

fn of(readings: &[(String, u64, f64)], name: &str) -> Vec<(u64, f64)> {
    readings
        .iter()
        .filter(|r| r.0 == name)
        .map(|r| (r.1, r.2))
        .collect()
}

const TEARDOWN_EMBEDDED: [&str; 7] = [
    "dcgmUnwatchFields",
    "dcgmUnwatchFields",
    "dcgmFieldGroupDestroy",
    "dcgmFieldGroupDestroy",
    "dcgmGroupDestroy",
    "dcgmStopEmbedded",
    "dcgmShutdown",
];

fn assert_clean(f: &FakeDcgm) {
    assert!(
        f.problems().is_empty(),
        "fake reports: {:?}\n{}",
        f.problems(),
        f.log()
    );
}

#[test]
fn a_missing_path_is_library_not_found_naming_the_path() {
    let p = Path::new("/nonexistent/flinch-test/libdcgm.so.4");
    let e = DcgmLib::load(Some(p)).unwrap_err();
    match &e {
        DcgmError::LibraryNotFound { tried, user_path } => {
            assert_eq!(user_path.as_deref(), Some(p));
            assert_eq!(tried.len(), 1);
            assert_eq!(tried[0].0, p.display().to_string());
        }
        other => panic!("expected LibraryNotFound, got {other:?}"),
    }
    let msg = e.to_string();
    assert!(
        msg.contains("/nonexistent/flinch-test/libdcgm.so.4"),
        "{msg}"
    );
    assert!(msg.contains("--dcgm-lib"), "{msg}");
    assert_eq!(SourceError::from(e).kind, ErrorKind::NotAvailable);
}

#[test]
fn without_dcgm_installed_both_sonames_are_tried_in_order() {
    // CI machines and this project's development machine have no DCGM: the loader must
    // say what it tried and how to install it.
    match DcgmLib::load(None) {
        Err(e @ DcgmError::LibraryNotFound { .. }) => {
            let DcgmError::LibraryNotFound { tried, user_path } = &e else {
                unreachable!()
            };
            assert!(user_path.is_none());
            let names: Vec<&str> = tried.iter().map(|t| t.0.as_str()).collect();
            assert_eq!(names, ["libdcgm.so.4", "libdcgm.so.3"]);
            let msg = e.to_string();
            assert!(msg.contains("DCGM is not installed"), "{msg}");
            assert!(
                msg.contains("libdcgm.so.4") && msg.contains("libdcgm.so.3"),
                "{msg}"
            );
            assert!(msg.contains("datacenter-gpu-manager-4"), "{msg}");
        }
        Err(other) => panic!("expected LibraryNotFound, got {other}"),
        Ok(lib) => panic!(
            "this test expects a machine without DCGM, but {} loaded",
            lib.path()
        ),
    }
}

#[test]
fn a_library_without_the_symbols_names_the_first_missing_one() {
    let e = DcgmLib::load(Some(Path::new("libc.so.6"))).unwrap_err();
    match &e {
        DcgmError::SymbolMissing {
            symbol, library, ..
        } => {
            assert_eq!(*symbol, "dcgmInit");
            assert_eq!(library, "libc.so.6");
        }
        other => panic!("expected SymbolMissing, got {other:?}"),
    }
    let msg = e.to_string();
    assert!(
        msg.contains("dcgmInit") && msg.contains("libc.so.6"),
        "{msg}"
    );
}

#[test]
fn a_dcgm_like_library_lacking_one_call_is_refused_at_load() {
    let f = FakeDcgm::build_with(&["FAKE_OMIT_GET_VALUES_SINCE"]).expect("cc builds the fake");
    let e = DcgmLib::load(Some(f.path())).unwrap_err();
    match &e {
        DcgmError::SymbolMissing {
            symbol, library, ..
        } => {
            assert_eq!(*symbol, "dcgmGetValuesSince_v2");
            assert_eq!(library, &f.path().display().to_string());
        }
        other => panic!("expected SymbolMissing, got {other:?}"),
    }
    // Nothing was called: symbols are resolved before any call.
    assert!(f.calls().is_empty(), "{}", f.log());
}

/// The wall clock of the manual clock runs this far ahead of its monotonic clock (a date in
/// 2026, in ns).
const REAL_OFFSET_NS: i64 = 1_790_000_000_000_000_000;
const MONO_START_NS: u64 = 5_000_000_000_000;

fn start_us() -> i64 {
    (MONO_START_NS as i64 + REAL_OFFSET_NS) / 1000
}

#[test]
fn values_arrive_on_their_dcgm_timestamps_with_blanks_as_gaps() {
    let t0 = start_us();
    let script = format!(
        "gpus 0 1
# poll 1
sample 1 0 155 abs:{a} 250.5
sample 1 0 155 abs:{b} blank
sample 1 0 155 abs:{c} 260.25
sample 1 0 157 abs:{a} 301
sample 1 0 156 abs:{a} 123456789
sample 1 0 203 abs:{a} notsupported
sample 1 0 203 abs:{b} 87
sample 1 0 100 abs:{a} status:-6
sample 1 0 100 abs:{b} 1980
sample 1 0 1002 abs:{a} 0.625
sample 1 0 1004 abs:{a} noperm
sample 1 1 155 abs:{b} 90
sample 1 1 156 abs:{b} 5000
# poll 2
sample 2 0 156 abs:{d} 123556789
sample 2 0 1005 abs:{d} 0.5
sample 2 1 156 abs:{d} 4000
",
        a = t0 + 100_000,
        b = t0 + 200_000,
        c = t0 + 300_000,
        d = t0 + 700_000,
    );
    let f = fake(&script);
    let clock = ManualClock::new(MONO_START_NS, REAL_OFFSET_NS);
    let mut src = DcgmSource::open(&config(&f), &clock).expect("open through the fake");
    assert_eq!(src.gpus(), [0, 1]);
    let names: Vec<&str> = src
        .info()
        .channels
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names.len(), 20);
    for n in [
        "dcgm-gpu0.power_avg1s",
        "dcgm-gpu0.power_instant",
        "dcgm-gpu0.energy",
        "dcgm-gpu0.util_gpu",
        "dcgm-gpu0.sm_clock",
        "dcgm-gpu0.gr_engine_active",
        "dcgm-gpu0.sm_active",
        "dcgm-gpu0.sm_occupancy",
        "dcgm-gpu0.tensor_active",
        "dcgm-gpu0.dram_active",
        "dcgm-gpu1.power_avg1s",
        "dcgm-gpu1.dram_active",
    ] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    assert_eq!(src.info().attributes["profiling"], "watched");
    assert_eq!(src.info().attributes["connection"], "embedded");

    clock.advance(500_000_000);
    let r = poll(&mut src, &clock, false).unwrap();
    let ms = |x: u64| MONO_START_NS + x * 1_000_000;
    assert_eq!(
        of(&r, "dcgm-gpu0.power_avg1s"),
        [(ms(100), 250.5), (ms(300), 260.25)],
        "the blank at 200 ms is a gap, not a zero"
    );
    assert_eq!(of(&r, "dcgm-gpu0.power_instant"), [(ms(100), 301.0)]);
    assert_eq!(of(&r, "dcgm-gpu0.energy"), [(ms(100), 123_456.789)]);
    assert_eq!(of(&r, "dcgm-gpu0.util_gpu"), [(ms(200), 87.0)]);
    assert_eq!(
        of(&r, "dcgm-gpu0.sm_clock"),
        [(ms(200), 1980.0)],
        "a value with an error status is missing even though its union holds 0"
    );
    assert_eq!(of(&r, "dcgm-gpu0.sm_active"), [(ms(100), 62.5)]);
    assert!(of(&r, "dcgm-gpu0.tensor_active").is_empty());
    assert_eq!(of(&r, "dcgm-gpu1.power_avg1s"), [(ms(200), 90.0)]);
    assert_eq!(of(&r, "dcgm-gpu1.energy"), [(ms(200), 5.0)]);
    assert_eq!(r.len(), 9);
    assert_eq!(src.blank_values(), 4);

    clock.advance(500_000_000);
    let r = poll(&mut src, &clock, false).unwrap();
    assert_eq!(of(&r, "dcgm-gpu0.energy"), [(ms(700), 123_556.789)]);
    assert_eq!(of(&r, "dcgm-gpu0.dram_active"), [(ms(700), 50.0)]);
    // A decrease is passed on as it is: the counter's reset-on-decrease is the core's job.
    assert_eq!(of(&r, "dcgm-gpu1.energy"), [(ms(700), 4.0)]);
    assert_eq!(r.len(), 3);

    clock.advance(500_000_000);
    let r = poll(&mut src, &clock, true).unwrap();
    assert!(r.is_empty(), "{r:?}");
    assert_eq!(src.unmapped_values(), 0);
    drop(src);

    let calls = f.calls();
    let expected_start = [
        "dcgmInit",
        "dcgmStartEmbedded",
        "dcgmGetAllSupportedDevices",
        "dcgmGroupCreate",
        "dcgmGroupAddDevice",
        "dcgmGroupAddDevice",
        "dcgmFieldGroupCreate",
        "dcgmWatchFields",
        "dcgmFieldGroupCreate",
        "dcgmWatchFields",
        "dcgmUpdateAllFields",
    ];
    assert_eq!(calls[..expected_start.len()], expected_start, "{}", f.log());
    let polls: Vec<&str> = calls[expected_start.len()..calls.len() - 7]
        .iter()
        .map(String::as_str)
        .collect();
    assert_eq!(
        polls,
        [
            "dcgmGetValuesSince_v2",
            "dcgmGetValuesSince_v2",
            "dcgmGetValuesSince_v2",
            "dcgmGetValuesSince_v2",
            // finish(): one forced update so the last counter value is fresh, then a drain
            "dcgmUpdateAllFields",
            "dcgmGetValuesSince_v2",
            "dcgmGetValuesSince_v2",
        ]
    );
    assert_eq!(calls[calls.len() - 7..], TEARDOWN_EMBEDDED, "{}", f.log());
    assert_clean(&f);

    let log = f.log();
    assert!(log.contains("dcgmStartEmbedded mode=1"), "AUTO mode: {log}");
    assert!(log.contains("freq=100000 age=60 samples=0"), "{log}");
    assert!(log.contains("ids=155,157,156,203,100 "), "{log}");
    assert!(log.contains("ids=1001,1002,1003,1004,1005 "), "{log}");
    let pid = std::process::id();
    assert!(
        log.contains(&format!("name=flinch-{pid}-")),
        "names carry the pid: {log}"
    );
    // The cursor starts at the open time, and then follows what was served.
    assert!(log.contains(&format!("since={t0}")), "{log}");
    assert!(log.contains(&format!("since={}", t0 + 300_001)), "{log}");
}

#[test]
fn a_cursor_that_includes_the_last_value_does_not_duplicate_it() {
    let t0 = start_us();
    let script = format!(
        "overlap
sample 1 0 155 abs:{a} 100
sample 2 0 155 abs:{b} 200
",
        a = t0 + 100_000,
        b = t0 + 600_000
    );
    let f = fake(&script);
    let clock = ManualClock::new(MONO_START_NS, REAL_OFFSET_NS);
    let mut src = DcgmSource::open(&config(&f), &clock).unwrap();
    let mut all = Vec::new();
    for _ in 0..3 {
        clock.advance(500_000_000);
        all.extend(poll(&mut src, &clock, false).unwrap());
    }
    assert_eq!(
        of(&all, "dcgm-gpu0.power_avg1s"),
        [
            (MONO_START_NS + 100_000_000, 100.0),
            (MONO_START_NS + 600_000_000, 200.0)
        ]
    );
    // The fake did serve them again.
    assert!(f.served().len() >= 4, "{}", f.log());
}

#[test]
fn an_engine_without_field_157_still_records_the_rest() {
    let t0 = start_us();
    let f = fake(&format!(
        "fail_field dcgmFieldGroupCreate 157 -13\nsample 1 0 155 abs:{} 42\n",
        t0 + 1000
    ));
    let clock = ManualClock::new(MONO_START_NS, REAL_OFFSET_NS);
    let mut src = DcgmSource::open(&config(&f), &clock).unwrap();
    let names: Vec<&str> = src
        .info()
        .channels
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert!(!names.contains(&"dcgm-gpu0.power_instant"), "{names:?}");
    assert!(names.contains(&"dcgm-gpu0.energy"));
    let why = &src.info().attributes["power_instant"];
    assert!(
        why.contains("Unknown field id") && why.contains("3.2.5"),
        "{why}"
    );
    clock.advance(10_000_000);
    let r = poll(&mut src, &clock, false).unwrap();
    assert_eq!(
        of(&r, "dcgm-gpu0.power_avg1s"),
        [(MONO_START_NS + 1_000_000, 42.0)]
    );
    drop(src);
    assert!(f.log().contains("ids=155,156,203,100 "), "{}", f.log());
    assert_eq!(f.calls()[f.calls().len() - 7..], TEARDOWN_EMBEDDED);
    assert_clean(&f);
}

#[test]
fn refused_profiling_is_noted_and_its_field_group_removed_at_once() {
    let f = fake("fail_field dcgmWatchFields 1001 -36\n");
    let clock = ManualClock::new(MONO_START_NS, REAL_OFFSET_NS);
    let src = DcgmSource::open(&config(&f), &clock).unwrap();
    let names: Vec<&str> = src
        .info()
        .channels
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "dcgm-gpu0.power_avg1s",
            "dcgm-gpu0.power_instant",
            "dcgm-gpu0.energy",
            "dcgm-gpu0.util_gpu",
            "dcgm-gpu0.sm_clock"
        ]
    );
    let why = &src.info().attributes["profiling"];
    assert!(
        why.starts_with("not available") && why.contains("-36"),
        "{why}"
    );
    drop(src);
    let calls = f.calls();
    let i = calls.iter().rposition(|c| c == "dcgmWatchFields").unwrap();
    assert_eq!(calls[i + 1], "dcgmFieldGroupDestroy", "{}", f.log());
    assert_eq!(
        calls[calls.len() - 5..],
        [
            "dcgmUnwatchFields",
            "dcgmFieldGroupDestroy",
            "dcgmGroupDestroy",
            "dcgmStopEmbedded",
            "dcgmShutdown"
        ]
    );
    assert_clean(&f);
}

#[test]
fn a_host_engine_is_reached_over_unix_socket_or_tcp_and_disconnected() {
    for (host, addr, unix) in [
        ("unix:///run/nv-hostengine", "/run/nv-hostengine", 1),
        ("10.1.2.3:5555", "10.1.2.3:5555", 0),
    ] {
        let f = fake("");
        let cfg = DcgmConfig {
            host: Some(host.into()),
            profiling: false,
            ..config(&f)
        };
        let src = DcgmSource::open(&cfg, &MonotonicClock).unwrap();
        assert_eq!(
            src.info().attributes["connection"],
            if unix == 1 {
                format!("unix {addr}")
            } else {
                format!("tcp {addr}")
            }
        );
        drop(src);
        let log = f.log();
        assert!(
            log.contains(&format!(
                "dcgmConnect_v2 address={addr} unix={unix} persist=0 timeout=5000 version=0x02000010"
            )),
            "{log}"
        );
        let calls = f.calls();
        assert!(!calls.iter().any(|c| c == "dcgmStartEmbedded"));
        assert_eq!(
            calls[calls.len() - 5..],
            [
                "dcgmUnwatchFields",
                "dcgmFieldGroupDestroy",
                "dcgmGroupDestroy",
                "dcgmDisconnect",
                "dcgmShutdown"
            ]
        );
        assert_clean(&f);
    }
}

#[test]
fn no_host_engine_is_a_clear_error_and_dcgm_is_shut_down() {
    let f = fake("fail dcgmConnect_v2 -21\n");
    let cfg = DcgmConfig {
        host: Some("127.0.0.1".into()),
        ..config(&f)
    };
    let e = DcgmSource::open(&cfg, &MonotonicClock).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("127.0.0.1") && msg.contains("nv-hostengine"),
        "{msg}"
    );
    assert!(
        msg.contains("Connection not valid"),
        "DCGM's own text: {msg}"
    );
    assert_eq!(e.kind(), ErrorKind::NotAvailable);
    assert_eq!(f.calls(), ["dcgmInit", "dcgmConnect_v2", "dcgmShutdown"]);
}

#[test]
fn a_failure_while_setting_up_undoes_exactly_what_was_done() {
    // The base watch is refused: the field group, the group and the engine go, in order;
    // nothing is unwatched because nothing was watched.
    let f = fake("fail dcgmWatchFields -17 1\n");
    let e = DcgmSource::open(&config(&f), &MonotonicClock).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    assert!(e.to_string().contains("dcgmWatchFields"), "{e}");
    assert_eq!(
        f.calls(),
        [
            "dcgmInit",
            "dcgmStartEmbedded",
            "dcgmGetAllSupportedDevices",
            "dcgmGroupCreate",
            "dcgmGroupAddDevice",
            "dcgmFieldGroupCreate",
            "dcgmWatchFields",
            "dcgmFieldGroupDestroy",
            "dcgmGroupDestroy",
            "dcgmStopEmbedded",
            "dcgmShutdown"
        ]
    );
    assert_clean(&f);

    // The first forced update fails after both watches: both are unwatched first.
    let f = fake("fail dcgmUpdateAllFields -3 1\n");
    let e = DcgmSource::open(&config(&f), &MonotonicClock).unwrap_err();
    assert_eq!(e.code(), Some(-3));
    let calls = f.calls();
    assert_eq!(calls[calls.len() - 7..], TEARDOWN_EMBEDDED, "{}", f.log());
    assert_clean(&f);
}

#[test]
fn gpus_can_be_chosen_and_unknown_ones_are_refused() {
    let f = fake("gpus 0 1 2\n");
    let cfg = DcgmConfig {
        gpus: Some(vec![2, 2]),
        ..config(&f)
    };
    let src = DcgmSource::open(&cfg, &MonotonicClock).unwrap();
    assert!(src.info().channels.iter().all(|c| c.device == "dcgm-gpu2"));
    assert_eq!(src.gpus(), [2]);
    drop(src);
    assert_eq!(f.log().matches("dcgmGroupAddDevice gpu=2").count(), 1);
    assert!(!f.log().contains("dcgmGroupAddDevice gpu=0"));

    let f = fake("gpus 0 1\n");
    let cfg = DcgmConfig {
        gpus: Some(vec![7]),
        ..config(&f)
    };
    let e = DcgmSource::open(&cfg, &MonotonicClock).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(
        e.to_string().contains("GPU 7") && e.to_string().contains("0,1"),
        "{e}"
    );
    assert_eq!(f.calls().last().unwrap(), "dcgmShutdown");
    assert_clean(&f);

    let f = fake("gpus\n");
    let e = DcgmSource::open(&config(&f), &MonotonicClock).unwrap_err();
    assert_eq!(e, DcgmError::NoGpus);
    assert_clean(&f);
}

#[test]
fn a_failing_poll_is_an_error_of_the_right_kind_and_the_next_poll_recovers() {
    let f = fake("fail dcgmGetValuesSince_v2 -21 3\nfail dcgmGetValuesSince_v2 -18 5\n");
    let clock = ManualClock::new(MONO_START_NS, REAL_OFFSET_NS);
    let mut src = DcgmSource::open(&config(&f), &clock).unwrap();
    assert!(poll(&mut src, &clock, false).is_ok()); // calls 1, 2
    let e = poll(&mut src, &clock, false).unwrap_err(); // call 3
    assert_eq!(e.kind, ErrorKind::Transient);
    assert!(e.retryable);
    assert!(e.message.contains("dcgmGetValuesSince_v2"), "{e}");
    let e = poll(&mut src, &clock, false).unwrap_err(); // calls 4, 5
    assert_eq!(e.kind, ErrorKind::Lost);
    assert!(poll(&mut src, &clock, false).is_ok());
    drop(src);
    assert_clean(&f);
}

#[test]
fn two_sessions_on_one_library_shut_dcgm_down_once_after_the_last() {
    let f = fake("");
    let cfg = DcgmConfig {
        host: Some("127.0.0.1".into()),
        profiling: false,
        ..config(&f)
    };
    let a = DcgmSource::open(&cfg, &MonotonicClock).unwrap();
    let b = DcgmSource::open(&cfg, &MonotonicClock).unwrap();
    drop(a);
    assert!(!f.calls().iter().any(|c| c == "dcgmShutdown"));
    drop(b);
    let calls = f.calls();
    assert_eq!(calls.iter().filter(|c| *c == "dcgmInit").count(), 1);
    assert_eq!(calls.iter().filter(|c| *c == "dcgmShutdown").count(), 1);
    assert_eq!(calls.last().unwrap(), "dcgmShutdown");
    assert_clean(&f);
}

#[test]
fn the_source_passes_the_conformance_suite() {
    // Values stamped relative to the wall clock when the fake releases them, so that the
    // real monotonic clock can be used. The first poll (right after opening) gets nothing:
    // values stamped before the source opened are not its own.
    let mut script = String::from("gpus 0 1\n");
    for step in 2..=6 {
        for gpu in 0..2 {
            for (field, v) in [
                (155, "250"),
                (157, "261.5"),
                (203, "55"),
                (100, "1755"),
                (1001, "0.5"),
                (1002, "0.25"),
                (1003, "0.125"),
                (1004, "0.75"),
                (1005, "1"),
            ] {
                script.push_str(&format!("sample {step} {gpu} {field} ago:2000 {v}\n"));
                script.push_str(&format!("sample {step} {gpu} {field} ago:1000 blank\n"));
            }
            let mj = 1_000_000 + step * 3_000;
            script.push_str(&format!("sample {step} {gpu} 156 ago:1500 {mj}\n"));
        }
    }
    let f = fake(&script);
    let cfg = DcgmConfig {
        poll_interval: Duration::from_millis(10),
        update_period: Duration::from_millis(10),
        ..config(&f)
    };
    let mut src = DcgmSource::open(&cfg, &MonotonicClock).unwrap();
    let rep = check_source(&mut src, &MonotonicClock, 5);
    assert!(rep.ok(), "{rep}");
    assert!(rep.poll_errors.is_empty(), "{:?}", rep.poll_errors);
    assert_eq!(rep.readings["dcgm-gpu1.energy"], 5);
    assert_eq!(rep.readings["dcgm-gpu0.tensor_active"], 5);
    assert_eq!(src.blank_values(), 2 * 9 * 5);
    drop(src);
    assert_clean(&f);
}

#[test]
fn a_recording_holds_what_dcgm_served_on_its_timestamps_with_blanks_as_gaps() {
    use flinch_record::recorder::{Recorder, RecorderConfig, RecordingSetup};
    use std::sync::Arc;

    let mut script = String::from("gpus 0\n");
    for step in 2..=12 {
        let w = 100.0 + step as f64 * 10.25;
        script.push_str(&format!("sample {step} 0 155 ago:3000 {w}\n"));
        script.push_str(&format!("sample {step} 0 155 ago:2000 blank\n"));
        script.push_str(&format!(
            "sample {step} 0 156 ago:2500 {}\n",
            7_000_000 + step * 1_000
        ));
        script.push_str(&format!("sample {step} 0 1002 ago:1000 0.{step:02}\n"));
        script.push_str(&format!("sample {step} 0 203 ago:1500 notsupported\n"));
    }
    let f = fake(&script);
    let cfg = DcgmConfig {
        poll_interval: Duration::from_millis(20),
        update_period: Duration::from_millis(20),
        ..config(&f)
    };
    let clock = Arc::new(MonotonicClock);
    let src = DcgmSource::open(&cfg, clock.as_ref()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("dcgm.flinch.csv");
    let rec = Recorder::start(
        RecordingSetup::new(out.clone(), vec![Box::new(src)]),
        RecorderConfig::default(),
        clock,
    )
    .unwrap();
    // Wait (for at most 20 s) until the fake has been drained 24 times (12 polls).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while f
        .calls()
        .iter()
        .filter(|c| *c == "dcgmGetValuesSince_v2")
        .count()
        < 24
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the sampler never polled: {}",
            f.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    rec.stop("test", None).unwrap();

    // The recorder dropped the source after its last poll: DCGM was torn down in order.
    let calls = f.calls();
    assert_eq!(calls[calls.len() - 7..], TEARDOWN_EMBEDDED, "{}", f.log());
    assert_clean(&f);

    let trace = flinch_core::trace::read_trace(&out).unwrap();
    let map = trace.anchor_map();
    let served = f.served();
    assert!(served.len() >= 40, "{served:?}");
    for (field, name, scale) in [
        (155u16, "dcgm-gpu0.power_avg1s", 1.0),
        (156, "dcgm-gpu0.energy", 1e-3),
        (1002, "dcgm-gpu0.sm_active", 100.0),
        (203, "dcgm-gpu0.util_gpu", 1.0),
    ] {
        let expect: Vec<(u64, f64)> = served
            .iter()
            .filter(|s| s.field == field)
            .filter_map(|s| {
                let v: f64 = s.value.parse().ok()?; // blanks do not parse: gaps
                Some((map.us_to_mono_ns(s.ts_us).unwrap(), v * scale))
            })
            .collect();
        let got: Vec<(u64, f64)> = trace
            .channel(name)
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
            "{name}: {got:?} vs served {expect:?}"
        );
        for ((gt, gv), (et, ev)) in got.iter().zip(&expect) {
            assert!((gv - ev).abs() < 1e-9, "{name}: value {gv} vs served {ev}");
            // The source's anchors and the trace's are different pairs of the same clocks.
            assert!(gt.abs_diff(*et) < 200_000, "{name}: t {gt} vs served {et}");
        }
    }
    // Every power value served was numeric or blank, and only the numbers arrived.
    assert!(
        trace
            .channel("dcgm-gpu0.util_gpu")
            .is_none_or(|c| c.t_ns.is_empty())
    );
    assert!(trace.channel("dcgm-gpu0.power_avg1s").unwrap().t_ns.len() >= 10);
}

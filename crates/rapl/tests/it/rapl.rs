//! The RAPL backend against fake powercap trees: discovery, errors, the conformance suite,
//! wraparound and resets, failures mid-run, and a real recording of counters rewritten in
//! place by another thread.

use flinch_core::clock::{Clock, ManualClock, MonotonicClock, monotonic_ns};
use flinch_core::counter::{CounterStep, CounterTracker};
use flinch_core::testing::check_source;
use flinch_core::trace::{RowKind, read_trace};
use flinch_core::{ErrorKind, Reading, Readings, Source, SourceError, Watts};
use flinch_rapl::testing::{
    AMD_RANGE_UJ, FakePowercap, INTEL_DRAM_RANGE_UJ, INTEL_RANGE_UJ, without_file_privileges,
};
use flinch_rapl::{Interface, RaplConfig, ZoneKind, ZoneSource};
use flinch_record::recorder::{Recorder, RecorderConfig, RecordingSetup};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

fn cfg(fake: &FakePowercap) -> RaplConfig {
    RaplConfig::with_root(fake.root())
}

fn keys(fake_root: &Path) -> Vec<(String, String, ZoneKind, Option<String>)> {
    flinch_rapl::discover(&RaplConfig::with_root(fake_root))
        .unwrap()
        .zones
        .into_iter()
        .map(|z| (z.key, z.id, z.kind, z.parent))
        .collect()
}

fn poll_once(src: &mut ZoneSource, clock: &dyn Clock) -> (Result<(), SourceError>, Vec<Reading>) {
    let mut buf = Vec::new();
    let mut out = Readings::new(clock, &mut buf, 0, 1);
    let r = src.poll(&mut out);
    (r, buf)
}

#[test]
fn every_zone_is_found_once_and_keyed_by_name() {
    let fake = FakePowercap::intel_server(2).unwrap();
    let k = keys(fake.root());
    let want = [
        ("package-0", "intel-rapl:0", ZoneKind::Package, None),
        (
            "package-0.core",
            "intel-rapl:0:0",
            ZoneKind::Core,
            Some("package-0"),
        ),
        (
            "package-0.dram",
            "intel-rapl:0:1",
            ZoneKind::Dram,
            Some("package-0"),
        ),
        ("package-1", "intel-rapl:1", ZoneKind::Package, None),
        (
            "package-1.core",
            "intel-rapl:1:0",
            ZoneKind::Core,
            Some("package-1"),
        ),
        (
            "package-1.dram",
            "intel-rapl:1:1",
            ZoneKind::Dram,
            Some("package-1"),
        ),
    ];
    let want: Vec<_> = want
        .iter()
        .map(|(k, id, kind, p)| (k.to_string(), id.to_string(), *kind, p.map(String::from)))
        .collect();
    assert_eq!(k, want);
    let d = flinch_rapl::discover(&cfg(&fake)).unwrap();
    assert_eq!(d.zones[0].max_energy_range_uj, INTEL_RANGE_UJ);
    assert_eq!(d.zones[2].max_energy_range_uj, INTEL_DRAM_RANGE_UJ);
    assert!(d.skipped.is_empty() && d.notes.is_empty(), "{d:?}");

    // A container that mounts only the control type finds the same zones.
    let only_ctype = keys(&fake.root().join("intel-rapl"));
    assert_eq!(only_ctype, want);
}

#[test]
fn the_mmio_copy_is_not_counted_twice_and_psys_stands_alone() {
    let fake = FakePowercap::intel_client().unwrap();
    let d = flinch_rapl::discover(&cfg(&fake)).unwrap();
    let got: Vec<(&str, ZoneKind, Interface)> = d
        .zones
        .iter()
        .map(|z| (z.key.as_str(), z.kind, z.interface))
        .collect();
    assert_eq!(
        got,
        vec![
            ("package-0", ZoneKind::Package, Interface::Msr),
            ("package-0.core", ZoneKind::Core, Interface::Msr),
            ("package-0.uncore", ZoneKind::Uncore, Interface::Msr),
            ("psys", ZoneKind::Psys, Interface::Msr),
        ]
    );
    assert_eq!(d.skipped.len(), 1);
    assert_eq!(d.skipped[0].id, "intel-rapl-mmio:0");
    assert!(d.skipped[0].why.contains("intel-rapl:0"), "{:?}", d.skipped);

    // psys is its own device, with a larger plausibility ceiling, and says it is
    // platform-wide.
    let opened = flinch_rapl::open(&cfg(&fake)).unwrap();
    let psys = opened
        .sources
        .iter()
        .find(|s| s.zone().kind == ZoneKind::Psys)
        .unwrap();
    let ch = &psys.info().channels[0];
    assert_eq!(
        (ch.name.as_str(), ch.device.as_str()),
        ("psys.energy", "psys")
    );
    assert_eq!(psys.info().attributes["scope"], ZoneKind::Psys.scope());
    assert_eq!(
        psys.counter_spec().max_rate,
        Some(flinch_rapl::PSYS_MAX_POWER.0)
    );

    // Without an MSR tree, the MMIO zone is the one used.
    let mut only_mmio = FakePowercap::new().unwrap();
    only_mmio
        .add_zone("intel-rapl-mmio:0", "package-0", INTEL_RANGE_UJ)
        .unwrap();
    let d = flinch_rapl::discover(&cfg(&only_mmio)).unwrap();
    assert_eq!(d.zones.len(), 1);
    assert_eq!(d.zones[0].key, "package-0");
    assert_eq!(d.zones[0].interface, Interface::Mmio);
}

#[test]
fn multi_die_amd_and_odd_names_get_unique_valid_keys() {
    let mut fake = FakePowercap::new().unwrap();
    fake.add_zone("intel-rapl:0", "package-0-die-0", INTEL_RANGE_UJ)
        .unwrap();
    fake.add_zone("intel-rapl:1", "package-0-die-1", INTEL_RANGE_UJ)
        .unwrap();
    fake.add_zone("intel-rapl:1:0", "dram", INTEL_RANGE_UJ)
        .unwrap();
    // Index 3 is package 2: the zone index is not the package id.
    fake.add_zone("intel-rapl:3", "package-2", INTEL_RANGE_UJ)
        .unwrap();
    fake.add_zone("intel-rapl:4", "package-2", INTEL_RANGE_UJ)
        .unwrap();
    fake.add_zone("intel-rapl:5", "odd name.x", INTEL_RANGE_UJ)
        .unwrap();
    let d = flinch_rapl::discover(&cfg(&fake)).unwrap();
    let k: Vec<&str> = d.zones.iter().map(|z| z.key.as_str()).collect();
    assert_eq!(
        k,
        [
            "package-0-die-0",
            "package-0-die-1",
            "package-0-die-1.dram",
            "package-2",
            "package-2-intel-rapl:4",
            "odd_name_x"
        ]
    );
    assert!(d.notes.iter().any(|n| n.contains("intel-rapl:4")), "{d:?}");
    let opened = flinch_rapl::open(&cfg(&fake)).unwrap();
    for mut s in opened.sources {
        // Valid, prefixed channel names, among the suite's other rules.
        let rep = check_source(&mut s, &ManualClock::new(1_000_000_000, 0), 2);
        assert!(rep.ok(), "{}: {rep}", s.info().name);
    }

    let amd = FakePowercap::amd(2).unwrap();
    let d = flinch_rapl::discover(&cfg(&amd)).unwrap();
    let k: Vec<&str> = d.zones.iter().map(|z| z.key.as_str()).collect();
    assert_eq!(
        k,
        ["package-0", "package-0.core", "package-1", "package-1.core"]
    );
    assert!(
        d.zones
            .iter()
            .all(|z| z.max_energy_range_uj == AMD_RANGE_UJ)
    );
}

#[test]
fn a_missing_or_empty_tree_says_why_rapl_is_not_here() {
    let dir = tempfile::tempdir().unwrap();
    let modules = dir.path().join("modules");
    std::fs::write(&modules, "kvm 1 0 - Live 0\n").unwrap();
    let mut c = RaplConfig::with_root(dir.path().join("no-such-powercap"));
    c.proc_modules = modules.clone();
    let e = flinch_rapl::open(&c).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotAvailable);
    let msg = e.to_string();
    for needle in [
        "no-such-powercap",
        "RAPL is not exposed here",
        "modprobe intel_rapl_msr",
    ] {
        assert!(msg.contains(needle), "missing {needle:?}: {msg}");
    }
    // The driver loaded but no tree: a container without the mount.
    std::fs::write(&modules, "intel_rapl_msr 1 0 - Live 0\n").unwrap();
    let msg = flinch_rapl::open(&c).unwrap_err().to_string();
    assert!(
        msg.contains("container") && msg.contains("--rapl-root"),
        "{msg}"
    );
    // /proc/modules unreadable.
    c.proc_modules = dir.path().join("nope");
    let msg = flinch_rapl::open(&c).unwrap_err().to_string();
    assert!(msg.contains("could not be read"), "{msg}");

    // A file given as the root.
    let e = flinch_rapl::open(&RaplConfig::with_root(&modules)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.to_string().contains("not a directory"), "{e}");

    // A tree with other control types only.
    let fake = FakePowercap::new().unwrap();
    std::fs::create_dir(fake.root().join("dtpm")).unwrap();
    let e = flinch_rapl::open(&cfg(&fake)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotAvailable);
    assert!(e.to_string().contains("holds: dtpm"), "{e}");
}

#[test]
fn zones_without_a_counter_or_a_range_are_left_out_with_the_reason() {
    let fake = FakePowercap::intel_server(1).unwrap();
    fake.remove("intel-rapl:0:0", "energy_uj").unwrap();
    fake.remove("intel-rapl:0:1", "max_energy_range_uj")
        .unwrap();
    let opened = flinch_rapl::open(&cfg(&fake)).unwrap();
    let keys: Vec<&str> = opened
        .sources
        .iter()
        .map(|s| s.zone().key.as_str())
        .collect();
    assert_eq!(keys, ["package-0"]);
    let text = opened.describe().join("\n");
    assert!(
        text.contains("package-0.core (intel-rapl:0:0) not used: it has no energy_uj"),
        "{text}"
    );
    assert!(
        text.contains("package-0.dram (intel-rapl:0:1) not used")
            && text.contains("max_energy_range_uj"),
        "{text}"
    );

    // A range of zero or garbage is as unusable as none.
    fake.write_raw("intel-rapl:0", "max_energy_range_uj", b"0\n")
        .unwrap();
    let e = flinch_rapl::open(&cfg(&fake)).unwrap_err();
    assert!(e.to_string().contains("wraps cannot be corrected"), "{e}");
    fake.write_raw("intel-rapl:0", "max_energy_range_uj", b"lots\n")
        .unwrap();
    let e = flinch_rapl::open(&cfg(&fake)).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("intel-rapl:0/max_energy_range_uj") && msg.contains("\"lots"),
        "{msg}"
    );
    assert!(msg.contains("wraps cannot be corrected"), "{msg}");
    assert_eq!(e.kind(), ErrorKind::NotSupported);

    // Only zones without counters: says so.
    let fake = FakePowercap::amd(1).unwrap();
    fake.remove("intel-rapl:0", "energy_uj").unwrap();
    fake.remove("intel-rapl:0:0", "energy_uj").unwrap();
    let e = flinch_rapl::open(&cfg(&fake)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotSupported);
    assert!(e.to_string().contains("no energy counter"), "{e}");
}

#[test]
fn an_unreadable_counter_is_a_permission_error_with_the_fixes() {
    let fake = FakePowercap::intel_server(1).unwrap();
    for id in ["intel-rapl:0", "intel-rapl:0:0", "intel-rapl:0:1"] {
        fake.make_unreadable(id).unwrap();
    }
    let c = cfg(&fake);
    let (sanity, result) = without_file_privileges(|| {
        let sanity = std::fs::File::open(fake.zone_path("intel-rapl:0").unwrap().join("energy_uj"));
        (sanity, flinch_rapl::open(&c))
    });
    // The simulation works: the kernel refuses the file to this thread.
    assert_eq!(
        sanity.unwrap_err().kind(),
        std::io::ErrorKind::PermissionDenied
    );
    let e = result.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied);
    let msg = e.to_string();
    for needle in [
        "intel-rapl:0/energy_uj",
        "permission denied",
        "CVE-2020-8694",
        "Linux 5.10",
        "run flinch as root",
        "udev",
        "CAP_PERFMON",
        "(and 2 more zones)",
    ] {
        assert!(msg.contains(needle), "missing {needle:?}: {msg}");
    }
    let se = SourceError::from(e);
    assert_eq!(
        (se.kind, se.retryable),
        (ErrorKind::PermissionDenied, false)
    );

    // One unreadable zone among readable ones is left out; the others work.
    let fake = FakePowercap::intel_server(1).unwrap();
    fake.make_unreadable("intel-rapl:0:1").unwrap();
    let c = cfg(&fake);
    let opened = without_file_privileges(|| flinch_rapl::open(&c)).unwrap();
    let keys: Vec<&str> = opened
        .sources
        .iter()
        .map(|s| s.zone().key.as_str())
        .collect();
    assert_eq!(keys, ["package-0", "package-0.core"]);
    assert_eq!(
        opened.skipped[0].error.as_ref().unwrap().kind(),
        ErrorKind::PermissionDenied
    );
}

#[test]
fn zone_sources_pass_the_conformance_suite_while_counters_change() {
    let fake = Arc::new(FakePowercap::intel_client().unwrap());
    let ids = [
        "intel-rapl:0",
        "intel-rapl:0:0",
        "intel-rapl:0:1",
        "intel-rapl:1",
    ];
    // 50 W on every zone, starting 2 J below the top of the range (written before the
    // sources open, so that their first reading is already near the top).
    let start = INTEL_RANGE_UJ - 2_000_000;
    for id in ids {
        fake.set_total_energy(id, start).unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (fake, stop) = (fake.clone(), stop.clone());
        std::thread::spawn(move || {
            let t0 = monotonic_ns();
            let mut writes = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let total = start + (monotonic_ns() - t0) / 20;
                for id in ids {
                    fake.set_total_energy(id, total).unwrap();
                }
                writes += 1;
                std::thread::sleep(Duration::from_micros(200));
            }
            writes
        })
    };
    let opened = flinch_rapl::open(&cfg(&fake)).unwrap();
    assert_eq!(opened.sources.len(), 4);
    for mut s in opened.sources {
        let rep = check_source(&mut s, &MonotonicClock, 8);
        assert!(rep.ok(), "{}: {rep}", s.info().name);
        assert!(rep.poll_errors.is_empty(), "{:?}", rep.poll_errors);
        assert_eq!(rep.readings[&s.info().channels[0].name], 9);
        let st = s.stats();
        assert_eq!(
            (st.resets, st.flagged, st.failed_reads),
            (0, 0, 0),
            "{st:?}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    assert!(writer.join().unwrap() > 0);
}

#[test]
fn every_interval_is_within_the_wrap_bound() {
    let fake = FakePowercap::intel_client().unwrap();
    for (interval, max_power) in [
        (Duration::from_millis(10), None),
        (Duration::from_secs(600), None),
        (Duration::from_secs(600), Some(Watts(100_000.0))),
        (Duration::ZERO, None),
    ] {
        let mut c = cfg(&fake);
        c.interval = interval;
        c.max_power = max_power;
        for s in flinch_rapl::open(&c).unwrap().sources {
            let bound = s.max_poll_interval_s().unwrap();
            let iv = s.interval().unwrap();
            assert!(
                iv.as_secs_f64() <= bound,
                "{}: {iv:?} > {bound}",
                s.info().name
            );
            assert!(iv <= interval.max(flinch_rapl::DEFAULT_INTERVAL));
            assert!(!iv.is_zero());
            assert!(
                s.summary().contains("cannot wrap twice unseen"),
                "{}",
                s.summary()
            );
        }
    }
    // 262 kJ at 100 kW: 1.3 s, shorter than the 10 min asked for.
    let mut c = cfg(&fake);
    c.interval = Duration::from_secs(600);
    c.max_power = Some(Watts(100_000.0));
    let s = &flinch_rapl::open(&c).unwrap().sources[0];
    let bound = s.max_poll_interval_s().unwrap();
    assert!((bound - 1.310_716_644_25).abs() < 1e-9, "{bound}");
    assert_eq!(s.interval(), Some(Duration::from_secs_f64(bound)));
}

/// Known power, simulated time: the counter is set to the true energy (modulo its range)
/// before each poll, so the recovered energy must match exactly (up to 1 µJ per wrap, the
/// difference between a range of `max` and a modulus of `max + 1`).
#[test]
fn counters_that_wrap_many_times_give_power_times_time() {
    for (range_uj, interval_ms, polls, power_w) in [
        // a 10 J range at up to 300 W: a wrap every ~50 polls
        (
            10_000_000u64,
            5u64,
            20_000u64,
            &[20.0, 300.0, 150.0, 0.0][..],
        ),
        // AMD's 65.5 kJ over simulated hours at 1-s polls
        (AMD_RANGE_UJ, 1000, 20_000, &[400.0, 90.0][..]),
        // Intel's 262 kJ
        (INTEL_RANGE_UJ, 1000, 20_000, &[500.0, 35.0, 250.0][..]),
    ] {
        let mut fake = FakePowercap::new().unwrap();
        fake.add_zone("intel-rapl:0", "package-0", range_uj)
            .unwrap();
        let mut c = cfg(&fake);
        c.interval = Duration::from_millis(interval_ms);
        c.max_power = Some(Watts(1000.0));
        let clock = ManualClock::new(1_000_000_000, 0);
        // Start near the top so the first wrap comes early.
        let mut total_uj: u64 = range_uj - 1_000;
        fake.set_total_energy("intel-rapl:0", total_uj).unwrap();
        let mut src = flinch_rapl::open(&c).unwrap().sources.remove(0);
        assert!(src.interval().unwrap() <= Duration::from_millis(interval_ms));
        let mut readings = Vec::new();
        let mut truth_uj = 0u64;
        let step_ns = src.interval().unwrap().as_nanos() as u64;
        for k in 0..polls {
            if k > 0 {
                let p = power_w[(k as usize / 997) % power_w.len()];
                let e = (p * step_ns as f64 / 1e3) as u64; // W × ns / 1e3 = µJ
                total_uj += e;
                truth_uj += e;
                clock.advance(step_ns);
                fake.set_total_energy("intel-rapl:0", total_uj).unwrap();
            }
            let (r, buf) = poll_once(&mut src, &clock);
            r.unwrap();
            readings.extend(buf);
        }
        let wraps = total_uj / (range_uj + 1);
        assert!(wraps >= 3, "range {range_uj}: only {wraps} wraps");
        assert!(readings.iter().all(|r| r.value >= 0.0));
        // The recorder's arithmetic, on what the source pushed.
        let spec = src.counter_spec();
        let mut t = CounterTracker::new(spec, Some(flinch_rapl::UPDATE_PERIOD_NS));
        for r in &readings {
            let step = t.update(r.t_ns, r.value);
            assert!(
                matches!(step, CounterStep::First | CounterStep::Delta { .. }),
                "range {range_uj}: {step:?} at {}",
                r.t_ns
            );
            assert!(step.delta().is_none_or(|d| d >= 0.0));
        }
        let truth_j = truth_uj as f64 / 1e6;
        let tol = (wraps as f64 + 1.0) * 1e-6 + 1e-9 * truth_j;
        assert!(
            (t.total() - truth_j).abs() <= tol,
            "range {range_uj}: {} J recovered, {truth_j} J true",
            t.total()
        );
        let st = src.stats();
        assert!((st.energy.0 - truth_j).abs() <= tol, "{st:?}");
        assert_eq!(st.wraps, wraps, "{st:?}");
        assert_eq!((st.resets, st.flagged), (0, 0));
    }
}

#[test]
fn a_fall_far_below_a_wrap_is_a_reset_and_a_jump_is_flagged() {
    let fake = FakePowercap::intel_server(1).unwrap();
    let clock = ManualClock::new(1_000_000_000, 0);
    fake.set_energy("intel-rapl:0", 100_000_000_000).unwrap(); // 100 kJ
    let mut src = flinch_rapl::open(&cfg(&fake)).unwrap().sources.remove(0);
    let ms = 1_000_000;
    let mut spec_tracker =
        CounterTracker::new(src.counter_spec(), Some(flinch_rapl::UPDATE_PERIOD_NS));
    let mut steps = Vec::new();
    for (dt, uj) in [
        (0, 100_000_000_000u64),
        (10 * ms, 100_001_000_000), // +1 J in 10 ms: 100 W
        (10 * ms, 5_000_000),       // to 5 J: a reset (a wrap would be 162 kJ in 10 ms)
        (10 * ms, 6_000_000),       // counting again
        (10 * ms, 60_000_000_000),  // +60 kJ in 10 ms: implausible, flagged
        (10 * ms, 60_000_500_000),  // +0.5 J from the new base
    ] {
        clock.advance(dt);
        fake.set_energy("intel-rapl:0", uj).unwrap();
        let (r, buf) = poll_once(&mut src, &clock);
        r.unwrap();
        steps.push(spec_tracker.update(buf[0].t_ns, buf[0].value));
    }
    assert!(matches!(steps[2], CounterStep::Reset { .. }), "{steps:?}");
    assert!(
        matches!(steps[4], CounterStep::Implausible { .. }),
        "{steps:?}"
    );
    let st = src.stats();
    assert_eq!((st.resets, st.flagged, st.wraps), (1, 1, 0));
    assert!((st.energy.0 - 2.5).abs() < 1e-9, "{st:?}");
    assert!((spec_tracker.total() - 2.5).abs() < 1e-9);
}

#[test]
fn a_zone_failing_mid_run_fails_alone_and_recovers() {
    let fake = FakePowercap::intel_server(1).unwrap();
    let clock = ManualClock::new(1_000_000_000, 0);
    let mut sources = flinch_rapl::open(&cfg(&fake)).unwrap().sources;
    assert_eq!(sources.len(), 3);
    fake.write_raw("intel-rapl:0:1", "energy_uj", b"").unwrap();
    let mut errors = Vec::new();
    for s in &mut sources {
        let (r, buf) = poll_once(s, &clock);
        match r {
            Ok(()) => assert_eq!(buf.len(), 1),
            Err(e) => {
                assert!(buf.is_empty());
                errors.push((s.zone().key.clone(), e));
            }
        }
    }
    assert_eq!(errors.len(), 1);
    let (key, e) = &errors[0];
    assert_eq!(key, "package-0.dram");
    assert!(e.message.contains("intel-rapl:0:1/energy_uj"), "{e}");
    assert!(e.retryable);
    fake.write_raw("intel-rapl:0:1", "energy_uj", b"garbage\n")
        .unwrap();
    let (r, _) = poll_once(&mut sources[2], &clock);
    assert!(r.unwrap_err().message.contains("\"garbage"));
    fake.set_energy("intel-rapl:0:1", 42).unwrap();
    let (r, buf) = poll_once(&mut sources[2], &clock);
    r.unwrap();
    assert_eq!(buf[0].value, 42e-6);
    assert_eq!(sources[2].stats().failed_reads, 2);
}

/// The writer thread's log: (time it wrote, total energy it wrote, µJ).
type WriteLog = Vec<(u64, u64)>;

/// Rewrites every zone in place about every millisecond at `power_w` each, logging each
/// write, until stopped; at `reset_at_ns` after the start the package counter restarts
/// from zero.
fn run_writer(
    fake: Arc<FakePowercap>,
    ids: Vec<&'static str>,
    power_w: f64,
    reset_at_ns: Option<u64>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<WriteLog> {
    // The first write happens before this returns, so a source opened next reads a
    // value in the log.
    let t0 = monotonic_ns();
    for id in &ids {
        fake.set_total_energy(id, 0).unwrap();
    }
    let mut log = vec![(t0, 0)];
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(1));
            let t = monotonic_ns();
            let total = (power_w * (t - t0) as f64 / 1e3) as u64;
            for id in &ids {
                if let Some(r) = reset_at_ns
                    && *id == "intel-rapl:0"
                    && t - t0 >= r
                {
                    // Restarted from 1 mJ, counting on at the same power.
                    let since = (power_w * (t - t0 - r) as f64 / 1e3) as u64;
                    let range = fake.range_uj(id).unwrap();
                    fake.set_energy(id, (1_000 + since) % (range + 1)).unwrap();
                    continue;
                }
                fake.set_total_energy(id, total).unwrap();
            }
            log.push((t, total));
        }
        log
    })
}

#[test]
fn a_recording_of_counters_rewritten_in_place_integrates_to_power_times_time() {
    // A 50 J range at 100 W: a wrap every 0.5 s, so ~4 in a 2-s recording. With a 2.5 kW
    // ceiling the wrap bound is 25 J / 2.5 kW = 10 ms, the interval asked for; a poll or
    // a write may then come up to 250 ms late before a step looks like a reset or an
    // implausible jump.
    let range_uj = 50_000_000;
    let mut fake = FakePowercap::new().unwrap();
    fake.add_zone("intel-rapl:0", "package-0", range_uj)
        .unwrap();
    fake.add_zone("intel-rapl:0:0", "dram", range_uj).unwrap();
    let fake = Arc::new(fake);
    let stop = Arc::new(AtomicBool::new(false));
    // The package counter restarts at 1.1 s, 10 J into its range: a fall of 40 J, which
    // no wrap explains (it would be 40 J in one poll, over half the range); dram keeps
    // counting.
    let writer = run_writer(
        fake.clone(),
        vec!["intel-rapl:0", "intel-rapl:0:0"],
        100.0,
        Some(1_100_000_000),
        stop.clone(),
    );
    let mut c = cfg(&fake);
    c.max_power = Some(Watts(2500.0));
    let opened = flinch_rapl::open(&c).unwrap();
    assert!(
        opened
            .sources
            .iter()
            .all(|s| s.interval() == Some(Duration::from_millis(10)))
    );
    let sources = opened.into_sources();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rapl.flinch.csv");
    let clock = Arc::new(MonotonicClock);
    let config = RecorderConfig {
        interval: Duration::from_millis(10),
        ..Default::default()
    };
    let rec = Recorder::start(RecordingSetup::new(out.clone(), sources), config, clock).unwrap();
    std::thread::sleep(Duration::from_millis(2000));
    rec.stop("stopped", None).unwrap();
    stop.store(true, Ordering::Relaxed);
    let log = writer.join().unwrap();

    let trace = read_trace(&out).unwrap();
    assert!(trace.complete());
    let dram = trace.channel("package-0.dram.energy").unwrap();
    assert!(dram.values.len() > 50, "{} samples", dram.values.len());
    assert!(dram.values.iter().all(|v| *v >= 0.0));
    let mut t = CounterTracker::new(
        *dram.spec.counter_spec().unwrap(),
        dram.spec.update_period_ns,
    );
    let mut wraps = 0;
    for (ts, v) in dram.t_ns.iter().zip(&dram.values) {
        match t.update(*ts, *v) {
            CounterStep::First => {}
            CounterStep::Delta { delta, wrapped } => {
                assert!(delta >= 0.0);
                wraps += wrapped as u32;
            }
            other => panic!("dram: {other:?} at {ts}"),
        }
    }
    assert!(wraps >= 3, "only {wraps} wraps");
    // Exact: each value read is one the writer wrote; the recovered energy is the
    // difference of the writer's totals for the first and last value read.
    // The write behind a reading is the last one before it with that value.
    let unwrap_value = |t_read: u64, v: f64| -> u64 {
        let uj = (v * 1e6).round() as u64;
        log.iter()
            .rev()
            .filter(|(t_w, _)| *t_w <= t_read)
            .map(|&(_, total)| total)
            .find(|total| total % (range_uj + 1) == uj)
            .expect("a value the writer never wrote")
    };
    let n = dram.values.len();
    let first = unwrap_value(dram.t_ns[0], dram.values[0]);
    let last = unwrap_value(dram.t_ns[n - 1], dram.values[n - 1]);
    let exact_j = (last - first) as f64 / 1e6;
    assert!(
        (t.total() - exact_j).abs() <= 1e-6 * (wraps as f64 + 1.0) + 1e-9,
        "{} J recovered, {exact_j} J written",
        t.total()
    );
    // Against power × time: each end may lag the truth by the time between two writes.
    let max_write_gap_s = log
        .windows(2)
        .map(|w| (w[1].0 - w[0].0) as f64 / 1e9)
        .fold(0.0, f64::max);
    let span_s = (dram.t_ns.last().unwrap() - dram.t_ns[0]) as f64 / 1e9;
    let edge_j = 2.0 * 100.0 * max_write_gap_s + 1e-3;
    assert!(
        (t.total() - 100.0 * span_s).abs() <= edge_j,
        "{} J recovered, {} J = 100 W × {span_s} s, edge error ≤ {edge_j} J",
        t.total(),
        100.0 * span_s
    );

    // The package's reset is a reset row, not negative energy.
    let pkg = trace.channel("package-0.energy").unwrap();
    assert!(pkg.values.iter().all(|v| *v >= 0.0));
    let resets: Vec<_> = trace
        .events
        .iter()
        .filter(|e| e.kind == RowKind::Reset)
        .collect();
    assert_eq!(resets.len(), 1, "{:?}", trace.events);
    assert_eq!(resets[0].channel, "package-0.energy");
    assert!(
        !trace.events.iter().any(|e| e.kind == RowKind::Flag),
        "{:?}",
        trace.events
    );
    assert!(trace.gaps.is_empty(), "{:?}", trace.gaps);
}

#[test]
fn a_recording_goes_on_when_one_zone_fails() {
    let fake = Arc::new(FakePowercap::intel_server(1).unwrap());
    let sources = flinch_rapl::open(&cfg(&fake)).unwrap().into_sources();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rapl.flinch.csv");
    let config = RecorderConfig {
        interval: Duration::from_millis(10),
        ..Default::default()
    };
    let rec = Recorder::start(
        RecordingSetup::new(out.clone(), sources),
        config,
        Arc::new(MonotonicClock),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(150));
    fake.write_raw("intel-rapl:0:1", "energy_uj", b"").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    fake.set_energy("intel-rapl:0:1", 7).unwrap();
    std::thread::sleep(Duration::from_millis(150));
    rec.stop("stopped", None).unwrap();
    let trace = read_trace(&out).unwrap();
    assert_eq!(trace.gaps.len(), 1, "{:?}", trace.gaps);
    let g = &trace.gaps[0];
    assert_eq!(g.source, "rapl.package-0.dram");
    assert!(g.end_ns.is_some(), "the zone came back");
    assert!(g.reason.contains("energy_uj"), "{}", g.reason);
    // The package was read all along, also during the gap.
    let pkg = trace.channel("package-0.energy").unwrap();
    let end = g.end_ns.unwrap();
    let during = pkg
        .t_ns
        .iter()
        .filter(|t| **t > g.start_ns && **t < end)
        .count();
    assert!(during >= 5, "{during} package samples during the dram gap");
    let dram = trace.channel("package-0.dram.energy").unwrap();
    assert_eq!(*dram.values.last().unwrap(), 7e-6);
}

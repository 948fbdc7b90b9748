//! `flinch sources` and `flinch record` with the RAPL backend, end to end: the real binary
//! against fake powercap trees that a thread of this test rewrites in place while flinch
//! reads them, and against this machine's (absent) powercap tree.

use crate::common::{flinch, run};
use flinch_core::counter::{CounterStep, CounterTracker};
use flinch_core::trace::{RowKind, read_trace};
use flinch_rapl::testing::{FakePowercap, INTEL_RANGE_UJ};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn monotonic_ns() -> u64 {
    flinch_core::clock::monotonic_ns()
}

/// The `rapl` block of `flinch sources`' table (up to the next backend's line).
fn rapl_block(stdout: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in stdout.lines() {
        if !line.starts_with(' ') {
            inside = line.starts_with("rapl ");
        }
        if inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[test]
fn without_powercap_sources_says_why_and_record_fails_with_that_reason() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("powercap");
    let o = run(flinch().args(["sources", "--rapl-root"]).arg(&missing));
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let block = rapl_block(&out);
    assert!(block.contains("unavailable"), "{out}");
    assert!(block.contains("RAPL is not exposed here"), "{out}");
    assert!(block.contains(missing.to_str().unwrap()), "{out}");

    let trace = dir.path().join("t.flinch.csv");
    let o = run(flinch()
        .args(["record", "--quiet", "--source", "rapl", "--duration", "1s"])
        .arg("--rapl-root")
        .arg(&missing)
        .arg("--out")
        .arg(&trace));
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("source rapl is unavailable"), "{err}");
    assert!(err.contains("RAPL is not exposed here"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        !trace.exists(),
        "no trace is created when a source cannot open"
    );
}

/// This machine's own tree, at the default root: absent on the development and CI
/// machines, where both commands must say so; where a tree exists, they must either work
/// or say what is wrong (never panic).
#[test]
fn the_default_root_on_this_machine() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(flinch().args(["sources"]));
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let block = rapl_block(&out);
    let trace = dir.path().join("t.flinch.csv");
    let rec = run(flinch()
        .args([
            "record",
            "--quiet",
            "--source",
            "rapl",
            "--duration",
            "200ms",
        ])
        .arg("--out")
        .arg(&trace));
    let (_, rec_err) = text(&rec);
    assert!(!rec_err.contains("panicked"), "{rec_err}");
    if !Path::new("/sys/class/powercap").exists() {
        assert!(
            block.contains("unavailable") && block.contains("RAPL is not exposed here"),
            "{out}"
        );
        assert!(block.contains("/sys/class/powercap"), "{out}");
        assert_eq!(rec.status.code(), Some(2), "{rec_err}");
        assert!(rec_err.contains("RAPL is not exposed here"), "{rec_err}");
    } else if block.contains("unavailable") {
        assert!(!rec.status.success());
        assert!(rec_err.contains("source rapl is unavailable"), "{rec_err}");
    } else {
        assert!(rec.status.success(), "{rec_err}");
        assert!(read_trace(&trace).unwrap().complete());
    }
}

#[test]
fn sources_lists_every_zone_with_its_wrap_bound() {
    let fake = FakePowercap::intel_client().unwrap();
    let o = run(flinch().args(["sources", "--rapl-root"]).arg(fake.root()));
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let block = rapl_block(&out);
    assert!(
        block.starts_with("rapl") && block.contains("available"),
        "{out}"
    );
    for needle in [
        "source rapl.package-0  polled every 100ms (the default cadence; --interval sets it)\n",
        "package-0.energy",
        "source rapl.package-0.core  polled every 100ms (the default cadence; --interval sets it)\n",
        "package-0.core.energy",
        "package-0.uncore.energy",
        "source rapl.psys  polled every 100ms (the default cadence; --interval sets it)\n",
        "psys.energy",
        "counter, wraps at 262143.32885 J",
        // Intel's range at 2 kW: 65.5 s; psys at 10 kW: 13.1 s; polled at the default
        // cadence of a recording without --interval.
        "note: package-0 (intel-rapl:0, package): wraps at 262143.329 J; at up to 2000 W it cannot wrap twice unseen if polled at least every 65.5 s; polled every 100.0 ms",
        "note: psys (intel-rapl:1, psys): wraps at 262143.329 J; at up to 10000 W it cannot wrap twice unseen if polled at least every 13.1 s",
        "note: package-0 (intel-rapl-mmio:0) not used: the MMIO interface to the counter intel-rapl:0 already reads: counted once",
    ] {
        assert!(block.contains(needle), "missing {needle:?} in:\n{block}");
    }
    assert_eq!(block.matches("  source ").count(), 4, "{block}");

    // The same in JSON, with the zone facts the analysis needs.
    let o = run(flinch()
        .args(["sources", "--json", "--rapl-root"])
        .arg(fake.root()));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rapl = v
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "rapl")
        .unwrap();
    assert_eq!(rapl["available"], true);
    let core = rapl["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "rapl.package-0.core")
        .unwrap();
    assert_eq!(core["attributes"]["parent"], "package-0");
    assert_eq!(core["attributes"]["kind"], "core");
    assert_eq!(core["channels"][0]["device"], "package-0.core");
    assert_eq!(core["channels"][0]["wrap_range"], 262_143.328_85);

    // --probe measures each zone's read cost.
    let o = run(flinch()
        .args(["sources", "--probe", "--rapl-root"])
        .arg(fake.root()));
    let (stdout, stderr) = text(&o);
    let block = rapl_block(&stdout);
    assert_eq!(
        block.matches("note: probe ").count(),
        4,
        "{block}\n{stderr}"
    );
    assert!(
        block.contains("note: probe rapl.package-0: one poll costs "),
        "{block}"
    );
}

#[test]
fn an_unreadable_tree_says_it_is_root_only_and_how_to_fix_it() {
    let fake = FakePowercap::intel_server(1).unwrap();
    for id in ["intel-rapl:0", "intel-rapl:0:0", "intel-rapl:0:1"] {
        fake.make_unreadable(id).unwrap();
    }
    // Mode 000 stops an unprivileged user; root bypasses file modes, so as root flinch
    // runs as `nobody`, as a user meeting the 0400 files of Linux ≥ 5.10 would.
    let as_user = |cmd: &mut Command| {
        if rustix::process::geteuid().is_root() {
            use std::os::unix::process::CommandExt;
            cmd.uid(65534).gid(65534);
        }
    };
    let mut c = flinch();
    c.args(["sources", "--rapl-root"]).arg(fake.root());
    as_user(&mut c);
    let o = run(&mut c);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let block = rapl_block(&out);
    for needle in [
        "unavailable",
        "intel-rapl:0/energy_uj: permission denied",
        "CVE-2020-8694",
        "root only",
        "sudo",
        "udev",
        "CAP_PERFMON",
    ] {
        assert!(block.contains(needle), "missing {needle:?} in:\n{block}");
    }

    let dir = tempfile::tempdir().unwrap();
    let mut c = flinch();
    c.args(["record", "--quiet", "--source", "rapl", "--duration", "1s"])
        .arg("--rapl-root")
        .arg(fake.root())
        .arg("--out")
        .arg(dir.path().join("t.flinch.csv"));
    as_user(&mut c);
    let o = run(&mut c);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("permission denied") && err.contains("CVE-2020-8694"),
        "{err}"
    );
}

#[test]
fn record_follows_counters_that_wrap_and_reset_while_being_rewritten() {
    // Three zones at 100 W each with a 50 J range: a wrap every 0.5 s. The package counter
    // restarts from zero at 1.1 s (10 J into its range: a 40 J fall no wrap explains).
    let range_uj: u64 = 50_000_000;
    let mut fake = FakePowercap::new().unwrap();
    fake.add_zone("intel-rapl:0", "package-0", range_uj)
        .unwrap();
    fake.add_zone("intel-rapl:0:0", "core", range_uj).unwrap();
    fake.add_zone("intel-rapl:0:1", "dram", range_uj).unwrap();
    // A psys zone with Intel's range, far from wrapping: a third independent device.
    fake.add_zone("intel-rapl:1", "psys", INTEL_RANGE_UJ)
        .unwrap();
    let fake = Arc::new(fake);
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = monotonic_ns();
    let reset_at = 1_100_000_000u64;
    let mut log: Vec<(u64, u64)> = vec![(t0, 0)];
    let writer = {
        let (fake, stop) = (fake.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(1));
                let t = monotonic_ns();
                let total = (t - t0) / 10; // 100 W = 1e8 µJ/s = 0.1 µJ/ns
                for id in ["intel-rapl:0:0", "intel-rapl:0:1", "intel-rapl:1"] {
                    fake.set_total_energy(id, total).unwrap();
                }
                let pkg = if t - t0 >= reset_at {
                    (1_000 + (t - t0 - reset_at) / 10) % (range_uj + 1)
                } else {
                    total % (range_uj + 1)
                };
                fake.set_energy("intel-rapl:0", pkg).unwrap();
                log.push((t, total));
            }
            log
        })
    };
    let dir = tempfile::tempdir().unwrap();
    let trace_path = dir.path().join("rapl.flinch.csv");
    // At the 2 kW ceiling a 50 J range may not go unread for more than 12.5 ms (half the
    // range): the 10 ms asked for is within that bound.
    let o = run(flinch()
        .args([
            "record",
            "--quiet",
            "--source",
            "rapl",
            "--interval",
            "10ms",
            "--duration",
            "2s",
        ])
        .arg("--rapl-root")
        .arg(fake.root())
        .arg("--out")
        .arg(&trace_path));
    stop.store(true, Ordering::Relaxed);
    let log = writer.join().unwrap();
    let (_, err) = text(&o);
    assert!(o.status.success(), "{err}");

    let trace = read_trace(&trace_path).unwrap();
    assert!(trace.complete());
    let names: Vec<&str> = trace
        .channels
        .iter()
        .map(|c| c.spec.name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "package-0.energy",
            "package-0.core.energy",
            "package-0.dram.energy",
            "psys.energy"
        ]
    );
    for c in &trace.channels {
        assert!(c.values.iter().all(|v| *v >= 0.0), "{}", c.spec.name);
        assert!(c.values.len() > 50, "{}: {}", c.spec.name, c.values.len());
    }
    let max_write_gap_s = log
        .windows(2)
        .map(|w| (w[1].0 - w[0].0) as f64 / 1e9)
        .fold(0.0, f64::max);
    for name in [
        "package-0.core.energy",
        "package-0.dram.energy",
        "psys.energy",
    ] {
        let c = trace.channel(name).unwrap();
        let mut t = CounterTracker::new(*c.spec.counter_spec().unwrap(), c.spec.update_period_ns);
        let mut wraps = 0;
        for (ts, v) in c.t_ns.iter().zip(&c.values) {
            match t.update(*ts, *v) {
                CounterStep::First => {}
                CounterStep::Delta { delta, wrapped } => {
                    assert!(delta >= 0.0);
                    wraps += wrapped as u32;
                }
                other => panic!("{name}: {other:?} at {ts}"),
            }
        }
        if name != "psys.energy" {
            assert!(wraps >= 3, "{name}: only {wraps} wraps");
        }
        let span_s = (c.t_ns.last().unwrap() - c.t_ns[0]) as f64 / 1e9;
        let edge_j = 2.0 * 100.0 * max_write_gap_s + 1e-3;
        assert!(
            (t.total() - 100.0 * span_s).abs() <= edge_j,
            "{name}: {} J recovered, 100 W × {span_s} s = {} J, edge error ≤ {edge_j} J",
            t.total(),
            100.0 * span_s
        );
    }
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

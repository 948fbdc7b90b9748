//! Checks against a real NVIDIA GPU. Ignored by default (CI has no GPU); run them on a GPU
//! machine with `cargo test -p flinch-nvml --test it gpu:: -- --ignored`, or through
//! `scripts/gpu-check.sh` from a prebuilt test binary.

use flinch_core::clock::{Clock, MonotonicClock};
use flinch_core::testing::check_source;
use flinch_core::{Quantity, Reading, Readings, Source};
use flinch_nvml::{NvmlBackend, NvmlConfig};
use std::time::Duration;

fn backend() -> NvmlBackend {
    NvmlBackend::open(NvmlConfig {
        average_power: true,
        ..Default::default()
    })
    .expect("NVML opens on a GPU machine")
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn every_gpu_gets_its_own_conforming_sources() {
    let b = backend();
    assert!(!b.gpus().is_empty());
    let sources = b.sources().unwrap();
    for g in b.gpus() {
        let mine: Vec<_> = sources
            .iter()
            .filter(|s| s.info().name.starts_with(&format!("nvml.{}.", g.device)))
            .collect();
        assert!(mine.len() >= 3, "{}: {} sources", g.device, mine.len());
        assert!(g.attributes.contains_key("uuid"));
    }
    // channel names are unique across GPUs
    let mut names: Vec<&str> = sources
        .iter()
        .flat_map(|s| s.info().channels.iter().map(|c| c.name.as_str()))
        .collect();
    let n = names.len();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), n);
    for mut s in sources {
        let name = s.info().name.clone();
        let rep = check_source(s.as_mut(), &MonotonicClock, 12);
        assert!(rep.ok(), "{name}: {rep}");
        assert!(rep.poll_errors.is_empty(), "{name}: {:?}", rep.poll_errors);
        for c in &s.info().channels {
            // GPM values come from pairs of samples, so the first poll has none
            assert!(
                rep.readings.get(&c.name).copied().unwrap_or(0) > 0,
                "{name}: no readings of {}",
                c.name
            );
        }
    }
}

fn poll(s: &mut Box<dyn Source>, buf: &mut Vec<Reading>) {
    buf.clear();
    let n = s.info().channels.len() as u32;
    let mut r = Readings::new(&MonotonicClock, buf, 0, n);
    s.poll(&mut r).expect("poll");
    assert!(r.reported_gap().is_none(), "unexpected buffer overrun");
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn the_driver_buffer_drains_continuously_at_about_20ms_spacing() {
    let b = backend();
    let mut s = b
        .sources()
        .unwrap()
        .into_iter()
        .find(|s| {
            s.info()
                .channels
                .iter()
                .any(|c| c.name.ends_with(".power_samples"))
        })
        .expect("a driver buffer source");
    let mut buf = Vec::with_capacity(512);
    let mut all = Vec::new();
    for _ in 0..7 {
        poll(&mut s, &mut buf);
        all.extend(buf.iter().copied());
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(all.len() > 100, "{} samples in 3.5 s", all.len());
    let mut d: Vec<u64> = all.windows(2).map(|w| w[1].t_ns - w[0].t_ns).collect();
    assert!(all.windows(2).all(|w| w[1].t_ns >= w[0].t_ns));
    d.sort_unstable();
    let median = d[d.len() / 2];
    assert!(
        (5_000_000..=100_000_000).contains(&median),
        "median spacing {median} ns"
    );
    // the newest sample is recent: mapped onto the monotonic clock correctly
    let age = MonotonicClock.now_ns() as i64 - all.last().unwrap().t_ns as i64;
    assert!(
        (0..1_500_000_000).contains(&age),
        "newest sample {age} ns old"
    );
    assert!(all.iter().all(|r| r.value > 10.0 && r.value < 2000.0));
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn energy_counter_and_driver_samples_agree_over_a_few_seconds() {
    let b = backend();
    let srcs = b.sources().unwrap();
    let (mut energy, mut samples) = (None, None);
    for s in srcs {
        let c = &s.info().channels[0];
        if c.quantity == Quantity::Energy {
            energy.get_or_insert(s);
        } else if c.name.ends_with(".power_samples") {
            samples.get_or_insert(s);
        }
    }
    let (mut energy, mut samples) = (energy.unwrap(), samples.unwrap());
    let mut buf = Vec::with_capacity(512);
    poll(&mut samples, &mut buf); // history before the window
    poll(&mut energy, &mut buf);
    let e0 = buf[0];
    let mut pw = Vec::new();
    for _ in 0..12 {
        std::thread::sleep(Duration::from_millis(500));
        poll(&mut samples, &mut buf);
        pw.extend(buf.iter().copied());
    }
    poll(&mut energy, &mut buf);
    let e1 = buf[0];
    // trapezoid of driver samples over [e0.t, e1.t]
    let mut joules = 0.0;
    for w in pw.windows(2) {
        let (a, b) = (w[0], w[1]);
        let lo = a.t_ns.max(e0.t_ns);
        let hi = b.t_ns.min(e1.t_ns);
        if hi > lo {
            joules += (a.value + b.value) / 2.0 * (hi - lo) as f64 / 1e9;
        }
    }
    let counter = e1.value - e0.value;
    let rel = (joules - counter).abs() / counter;
    eprintln!(
        "over {:.2} s: counter {counter:.1} J, driver samples {joules:.1} J ({:+.2} %)",
        (e1.t_ns - e0.t_ns) as f64 / 1e9,
        rel * 100.0
    );
    assert!(rel < 0.05, "counter {counter} J vs samples {joules} J");
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn probing_measures_costs_and_update_intervals() {
    use flinch_core::probe::probe_source;
    let b = backend();
    let mut probes = Vec::new();
    for mut src in b.sources().unwrap() {
        let p = probe_source(
            src.as_mut(),
            &MonotonicClock,
            Duration::from_secs(1),
            Duration::from_millis(1),
            2000,
        );
        eprintln!("{p:?}");
        probes.push(p);
    }
    let find = |suffix: &str| {
        probes
            .iter()
            .find(|p| p.channels.iter().any(|c| c.channel.ends_with(suffix)))
            .unwrap_or_else(|| panic!("a source with a {suffix} channel was probed"))
    };
    let instant = find(".power_instant");
    assert!(instant.poll_cost_ns > 0 && instant.poll_cost_ns < 1_000_000);
    let energy = find(".energy");
    assert!(energy.poll_cost_ns > instant.poll_cost_ns);
    let buffer = find(".power_samples");
    let samples = buffer
        .channels
        .iter()
        .find(|c| c.channel.ends_with(".power_samples"))
        .unwrap();
    assert!(samples.changes > 10, "{buffer:?}");
}

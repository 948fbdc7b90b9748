//! Bounds, compositions and aggregates against traces whose truth is exact: modelled power
//! (what the synthetic source writes) and RAPL-like wrapping counters built from known power
//! curves, whose integrals are worked out here, never taken from the code under test.

use super::analysis::{Build, Curve, MS, T0, idle_profile_of, pulse, pulse_energy};
use flinch_analysis::{Analyzer, Bound, Composition, Thresholds, Verdict};
use flinch_core::channel::{ChannelSpec, CounterSpec, PowerMethod, Quantity};

/// Bursts of 600 W over a 100 W floor: 300 ms on, 400 ms off, from 1 s on.
fn bursts(t: f64) -> f64 {
    if t >= 1.0 && ((t - 1.0) % 0.7) < 0.3 {
        600.0
    } else {
        100.0
    }
}

/// ∫₀ᵗ bursts, J.
fn bursts_energy(t: f64) -> f64 {
    let mut e = 100.0 * t;
    if t > 1.0 {
        let x = t - 1.0;
        let full = (x / 0.7).floor();
        e += 500.0 * (0.3 * full + (x - 0.7 * full).min(0.3));
    }
    e
}

/// `b` holds `x`, but for the last bits of floating point (a flat stretch has a bound of
/// zero width around a value computed another way).
fn holds(b: Bound, x: f64) -> bool {
    let eps = 1e-9 * x.abs().max(1.0);
    b.lo - eps <= x && x <= b.hi + eps
}

fn modelled(period_ns: u64) -> ChannelSpec {
    ChannelSpec::power("dev0", "power", PowerMethod::Modelled).with_update_period_ns(period_ns)
}

/// Spans of 150 ms to 1.2 s at offsets that land anywhere relative to the bursts and the
/// samples.
fn spans() -> Vec<(f64, f64)> {
    (0..60)
        .map(|k| {
            let a = 1.0 + 0.137 * k as f64 + 0.0031 * (k % 7) as f64;
            (a, a + 0.15 + 0.0173 * (k % 61) as f64)
        })
        .collect()
}

#[test]
fn bounds_contain_the_truth_and_shrink_as_sensors_get_faster() {
    let mut medians = Vec::new();
    for period in [100 * MS, 20 * MS, 5 * MS] {
        let mut b = Build::new().source(
            "synthetic",
            "synthetic",
            vec![modelled(period)],
            vec![(period, Box::new(bursts) as Curve)],
            12.0,
        );
        for (a, z) in spans() {
            b = b.span("a", "b", a, z);
        }
        let trace = b.build();
        let an = Analyzer::new(&trace, None, Thresholds::default());
        let r = an.run("a", "b", &mut |_, _| {}).unwrap();
        let mut widths = Vec::new();
        for (s, (a, z)) in r.spans.iter().zip(spans()) {
            let truth = bursts_energy(z) - bursts_energy(a);
            let d = &s.devices["dev0"];
            let bound = d.energy_bound_j.unwrap();
            assert!(
                holds(bound, truth),
                "period {} ms, span {a:.4}..{z:.4}: truth {truth:.3} J outside {bound:?} (measured {:?})",
                period / MS,
                d.energy_j
            );
            widths.push(bound.width());
        }
        widths.sort_by(f64::total_cmp);
        medians.push(widths[widths.len() / 2]);
    }
    // the bound's width follows the sensor's period: 100 → 20 → 5 ms
    assert!(
        medians[1] < medians[0] / 3.0 && medians[2] < medians[1] / 2.0,
        "median widths {medians:?}"
    );
    assert!(medians[2] > 0.0, "{medians:?}");
}

#[test]
fn rapl_counter_bounds_contain_the_truth() {
    // A RAPL package counter updating every 1 ms (read every 4 ms), wrapping at 1000 J.
    let spec = CounterSpec {
        wrap_range: Some(1000.0),
        max_rate: Some(2000.0),
    };
    let mut b = Build::new().source(
        "rapl.package-0",
        "rapl",
        vec![ChannelSpec::energy_counter("package-0", "energy", spec).with_update_period_ns(MS)],
        vec![(
            4 * MS,
            Box::new(|t| (990.0 + bursts_energy(t)) % 1000.0) as Curve,
        )],
        12.0,
    );
    for (a, z) in spans() {
        b = b.span("a", "b", a, z);
    }
    let trace = b.build();
    let idle = idle_profile_of(&trace, 0.05, 0.95);
    let r = Analyzer::new(&trace, Some((&idle, "file")), Thresholds::default())
        .run("a", "b", &mut |_, _| {})
        .unwrap();
    for (s, (a, z)) in r.spans.iter().zip(spans()) {
        let truth = bursts_energy(z) - bursts_energy(a);
        let d = &s.devices["package-0"];
        assert!(holds(d.energy_bound_j.unwrap(), truth), "{a}..{z}");
        // active energy: the idle level is exactly 100 W
        let active = truth - 100.0 * (z - a);
        assert!(
            holds(d.active_energy_bound_j.unwrap(), active),
            "{a}..{z}: {active} outside {:?}",
            d.active_energy_bound_j
        );
        assert!(d.energy_bound_j.unwrap().width() < 0.05 * truth, "{a}..{z}");
    }
}

/// Half-period of the square wave, s: not a multiple of the 2 ms samples, so that steps
/// never fall exactly on a sample (a step on a sample is read as the new level from that
/// sample on, a bias that never averages out).
const HALF: f64 = 0.018_317_3;

/// A square wave: 100 W and 300 W halves of 18.3 ms.
fn square(t: f64) -> f64 {
    if (t / HALF).floor() as i64 % 2 == 0 {
        100.0
    } else {
        300.0
    }
}

fn square_energy(t: f64) -> f64 {
    let n = (t / HALF).floor();
    let full = (n / 2.0).floor();
    let mut e = full * HALF * 400.0;
    let rest = t - full * 2.0 * HALF;
    e += 100.0 * rest.min(HALF) + 300.0 * (rest - HALF).max(0.0);
    e
}

#[test]
fn ten_thousand_spans_of_5_ms_aggregate_to_the_exact_integral() {
    // 5 ms spans every 10.3 ms over a square wave sampled every 2 ms: each span is far below
    // what a 2 ms sensor resolves on a wave of 18 ms halves, but their union is measurable.
    let period = 2 * MS;
    let mut b = Build::new().source(
        "synthetic",
        "synthetic",
        vec![modelled(period)],
        vec![(period, Box::new(square) as Curve)],
        104.0,
    );
    let mut truth = 0.0;
    let n = 10_000;
    for k in 0..n {
        let a = 0.5 + 0.0103 * k as f64;
        let z = a + 0.005;
        truth += square_energy(z) - square_energy(a);
        b = b.span("s", "e", a, z);
    }
    let trace = b.build();
    let r = Analyzer::new(&trace, None, Thresholds::default())
        .run("s", "e", &mut |_, _| {})
        .unwrap();
    assert_eq!(r.spans.len(), n);
    let agg = r.summary.aggregate.as_ref().unwrap();
    assert_eq!(agg.count, n as u64);
    assert_eq!(agg.stretches, n as u64);
    let d = &agg.devices["dev0"].energy_j;
    assert!(
        d.total_bound.contains(truth),
        "truth {truth} outside {:?} (total {})",
        d.total_bound,
        d.total
    );
    let mean_bound = d.mean_bound.unwrap();
    assert!(mean_bound.contains(truth / n as f64));
    // the mean's bound is far narrower than one span's
    let mut one: Vec<f64> = r
        .spans
        .iter()
        .map(|s| s.devices["dev0"].energy_bound_j.unwrap().width())
        .collect();
    one.sort_by(f64::total_cmp);
    let median_one = one[one.len() / 2];
    assert!(
        mean_bound.width() < median_one / 10.0,
        "mean bound {} vs one span's {median_one}",
        mean_bound.width()
    );

    // the same 5 ms spans back to back (a decode loop's token → token): one stretch
    let mut b = Build::new().source(
        "synthetic",
        "synthetic",
        vec![modelled(period)],
        vec![(period, Box::new(square) as Curve)],
        52.0,
    );
    for k in 0..=n {
        b = b.mark("token", 0.5 + 0.005 * k as f64, None);
    }
    let trace = b.build();
    let r = Analyzer::new(&trace, None, Thresholds::default())
        .run("token", "token", &mut |_, _| {})
        .unwrap();
    let agg = r.summary.aggregate.as_ref().unwrap();
    assert_eq!((agg.count, agg.stretches), (n as u64, 1));
    let truth = square_energy(0.5 + 0.005 * n as f64) - square_energy(0.5);
    let d = &agg.devices["dev0"].energy_j;
    assert!(d.total_bound.contains(truth), "{truth} {:?}", d.total_bound);
    let mean = d.mean_bound.unwrap();
    assert!(holds(mean, truth / n as f64), "{mean:?}");
    let mut one: Vec<f64> = r
        .spans
        .iter()
        .map(|s| s.devices["dev0"].energy_bound_j.unwrap().width())
        .collect();
    one.sort_by(f64::total_cmp);
    assert!(
        mean.width() < one[one.len() / 2] / 10.0,
        "a token's energy: {} from the union vs {} for one token span",
        mean.width(),
        one[one.len() / 2]
    );
}

#[test]
fn overlapping_spans_are_counted_once() {
    // Four requests batched into one 400 ms prefill at 700 W (idle 119 W), each request's
    // span covering it, and one request alone later.
    let trace = super::analysis::gpu_trace(2.0, 2.4, 100.0)
        .mark("infer_start", 2.0, Some("1"))
        .mark("infer_start", 2.0, Some("2"))
        .mark("infer_start", 2.0, Some("3"))
        .mark("infer_start", 2.0, Some("4"))
        .mark("first_token", 2.4, Some("1"))
        .mark("first_token", 2.4, Some("2"))
        .mark("first_token", 2.4, Some("3"))
        .mark("first_token", 2.4, Some("4"))
        .mark("infer_start", 5.0, Some("5"))
        .mark("first_token", 5.3, Some("5"))
        .build();
    let idle = idle_profile_of(&trace, 6.0, 9.0);
    let r = Analyzer::new(&trace, Some((&idle, "file")), Thresholds::default())
        .run("infer_start", "first_token", &mut |_, _| {})
        .unwrap();
    assert_eq!(r.spans.len(), 5);
    let agg = r.summary.aggregate.as_ref().unwrap();
    assert!((agg.union_s - 0.7).abs() < 1e-9 && (agg.span_time_s - 1.9).abs() < 1e-9);
    // distinct prefill: 581 W × 0.4 s = 232.4 J above idle, counted once; the quiet
    // request adds nothing
    let a = agg.devices["gpu0"].active_energy_j.as_ref().unwrap();
    assert!(a.total_bound.contains(232.4), "{a:?}");
    let one = |k: usize| r.spans[k].devices["gpu0"].active_energy_j.unwrap();
    assert!((a.total - (one(0) + one(4))).abs() < 1e-9, "{a:?}");
    assert!(one(0) > 200.0, "{}", one(0));
    let s = &r.summary.active_energy_j["gpu0"];
    assert_eq!(s.total, a.total);
    assert!(
        (s.sum_of_spans - (4.0 * one(0) + one(4))).abs() < 1e-9,
        "{s:?}"
    );
}

#[test]
fn compositions_of_constructed_spans() {
    // GPU busy over [2, 3) s (power and SM activity), the traced process computing on a
    // core over [4, 5) s, idle elsewhere.
    let cpu = CounterSpec {
        wrap_range: None,
        max_rate: Some(8.0),
    };
    let gpu = |a, b| Box::new(pulse(119.0, 700.0, a, b)) as Curve;
    let trace = Build::new()
        .source(
            "nvml.gpu0",
            "nvml",
            vec![
                ChannelSpec::power("gpu0", "power_samples", PowerMethod::DriverSamples)
                    .with_update_period_ns(20 * MS),
                ChannelSpec::gauge("gpu0", "sm_active", Quantity::Activity)
                    .with_update_period_ns(100 * MS),
            ],
            vec![
                (20 * MS, gpu(2.0, 3.0)),
                (100 * MS, Box::new(pulse(0.0, 90.0, 2.0, 3.0))),
            ],
            10.0,
        )
        .source(
            "cpu.proc",
            "cpu",
            vec![
                ChannelSpec::counter("proc", "cpu_time", Quantity::CpuTime, cpu)
                    .with_update_period_ns(10 * MS),
            ],
            vec![(10 * MS, Box::new(pulse_energy(0.0, 1.0, 4.0, 5.0)))],
            10.0,
        )
        .process_scoped()
        .span("whole", "whole_end", 1.5, 5.5)
        .span("gpu", "gpu_end", 2.0, 3.0)
        .span("wait", "wait_end", 6.0, 8.0)
        .build();
    let idle = idle_profile_of(&trace, 6.0, 9.0);
    let an = Analyzer::new(&trace, Some((&idle, "file")), Thresholds::default());
    let comp = |from: &str, to: &str| {
        let r = an.run(from, to, &mut |_, _| {}).unwrap();
        (r.spans[0].composition, r.spans[0].verdict)
    };
    let close = |x: f64, want: f64, tol: f64| (x - want).abs() <= tol;
    // [1.5, 5.5]: 1 s GPU, 1 s CPU, 2 s idle, give or take the sensors' cells at the edges
    // of each phase (a 20 ms power cell, 100 ms activity cells: ≤ 0.1 s per phase edge)
    let (c, v) = comp("whole", "whole_end");
    let sum = c.gpu_compute + c.cpu_compute + c.idle_wait + c.unresolved;
    assert!((sum - 1.0).abs() < 1e-9, "{c:?}");
    assert!(close(c.gpu_compute, 0.25, 0.05), "{c:?}");
    assert!(close(c.cpu_compute, 0.25, 0.05), "{c:?}");
    assert!(close(c.idle_wait, 0.5, 0.06), "{c:?}");
    assert!(c.unresolved < 0.08, "{c:?}");
    // the whole span is decided as a whole: the GPU's mean power is over its threshold
    assert_eq!(v, Verdict::GpuCompute);
    let (c, _) = comp("gpu", "gpu_end");
    // the last 100 ms activity cell reads the idle that follows: unresolved there
    assert!(c.gpu_compute >= 0.85, "{c:?}");
    let (c, v) = comp("wait", "wait_end");
    assert!(c.idle_wait > 0.99, "{c:?}");
    assert_eq!(v, Verdict::IdleWait);

    // a composition's verdict: the dominant state, else mixed, else unresolved; never for
    // a span below the timeline's resolution
    let c = Composition {
        gpu_compute: 0.7,
        cpu_compute: 0.1,
        idle_wait: 0.1,
        unresolved: 0.1,
        resolution_s: 0.1,
    };
    assert_eq!(c.verdict(1.0), Verdict::GpuCompute);
    assert_eq!(c.verdict(0.3), Verdict::Unresolved);
    let c = Composition {
        gpu_compute: 0.35,
        cpu_compute: 0.35,
        idle_wait: 0.0,
        unresolved: 0.3,
        resolution_s: 0.1,
    };
    assert_eq!(c.verdict(1.0), Verdict::Mixed);
    let c = Composition {
        unresolved: 0.5,
        gpu_compute: 0.5,
        ..c
    };
    assert_eq!(c.verdict(1.0), Verdict::Unresolved);
}

#[test]
fn light_gpu_work_clearly_above_idle_noise_is_gpu_compute() {
    // +69 W over a 123 W idle with SM activity 9.9 % (idle: 0.00 % with no noise): the
    // fixed +10-point threshold called this a disagreement; against the idle profile's
    // noise it is GPU work.
    let trace = Build::new()
        .source(
            "nvml.gpu0",
            "nvml",
            vec![
                ChannelSpec::power("gpu0", "power_samples", PowerMethod::DriverSamples)
                    .with_update_period_ns(20 * MS),
                ChannelSpec::gauge("gpu0", "sm_active", Quantity::Activity)
                    .with_update_period_ns(100 * MS),
            ],
            vec![
                (20 * MS, Box::new(pulse(123.0, 192.0, 2.0, 3.0))),
                (100 * MS, Box::new(pulse(0.0, 9.9, 2.0, 3.0))),
            ],
            10.0,
        )
        .span("a", "b", 2.0, 3.0)
        .span("a", "b", 4.0, 4.3)
        .build();
    let idle = idle_profile_of(&trace, 6.0, 9.0);
    let r = Analyzer::new(&trace, Some((&idle, "file")), Thresholds::default())
        .run("a", "b", &mut |_, _| {})
        .unwrap();
    assert_eq!(
        r.spans[0].verdict,
        Verdict::GpuCompute,
        "{:#?}",
        r.spans[0].evidence
    );
    let sm = &r.spans[0].activity["gpu0.sm_active"];
    assert_eq!(sm.threshold, Some(Thresholds::default().activity_floor_pct));
    assert_eq!(
        r.spans[1].verdict,
        Verdict::IdleWait,
        "{:#?}",
        r.spans[1].evidence
    );
    let _ = T0;
}

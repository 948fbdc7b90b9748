//! The counter arithmetic ([`CounterTracker`]): wrap correction, reset detection and the
//! plausibility guard, per reading.
//!
//! - `counter/update_rapl`: a RAPL-like counter (wrap at 262 143 J, 2 kW ceiling) read every
//!   10 ms at ~300 W, wrapping every ~870 s of counter time (here: every 87 000 readings of
//!   the 100 000, so one wrap per pass, as in a long recording).
//! - `counter/update_wrapping`: a counter that wraps every 10 readings: the wrap branch.
//! - `counter/update_nvml`: an NVML-like counter (no wrap range, resets on decrease).
//!
//! Throughput is in readings.
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flinch_core::channel::CounterSpec;
use flinch_core::counter::{CounterStep, CounterTracker};
use std::hint::black_box;

const N: usize = 100_000;

fn series(range: Option<f64>, step_j: f64) -> Vec<(u64, f64)> {
    let mut v = 0.0;
    (0..N)
        .map(|i| {
            v += step_j;
            if let Some(r) = range
                && v > r
            {
                v -= r;
            }
            (i as u64 * 10_000_000, v)
        })
        .collect()
}

fn run(spec: CounterSpec, data: &[(u64, f64)]) -> f64 {
    let mut t = CounterTracker::new(spec, Some(1_000_000));
    let mut n = 0u32;
    for &(ts, v) in data {
        if let CounterStep::Delta { wrapped: true, .. } = t.update(ts, v) {
            n += 1;
        }
    }
    t.total() + n as f64
}

fn counter(c: &mut Criterion) {
    let mut g = c.benchmark_group("counter");
    g.throughput(Throughput::Elements(N as u64));
    let rapl = CounterSpec {
        wrap_range: Some(262_143.328_85),
        max_rate: Some(2000.0),
    };
    let d = series(rapl.wrap_range, 3.0);
    g.bench_function("update_rapl", |b| b.iter(|| black_box(run(rapl, &d))));
    let wrapping = CounterSpec {
        wrap_range: Some(30.0),
        max_rate: Some(2000.0),
    };
    let d = series(wrapping.wrap_range, 3.0);
    g.bench_function("update_wrapping", |b| {
        b.iter(|| black_box(run(wrapping, &d)))
    });
    let nvml = CounterSpec {
        wrap_range: None,
        max_rate: Some(1400.0),
    };
    let d = series(None, 3.0);
    g.bench_function("update_nvml", |b| b.iter(|| black_box(run(nvml, &d))));
    g.finish();
}

criterion_group!(benches, counter);
criterion_main!(benches);

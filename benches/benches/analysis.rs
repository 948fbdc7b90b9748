//! The integrator and `flinch analyze`: how fast samples become energy.
//!
//! - `integrate/gauge`: [`integrate_gauge`] of 10^6 power samples over one window covering
//!   them all (trapezoid rule, edges interpolated between samples, sensor updates counted).
//! - `integrate/counter`: [`integrate_counter`] of 10^6 readings of a wrapping energy
//!   counter over the same window (every step through the counter arithmetic).
//! - `integrate/spans_gauge`: the same power samples measured as 10^4 windows of 100
//!   samples each, edges between samples (what `analyze` does per span and channel).
//!
//!   Target: 50 million samples per second or more.
//! - `analyze/read_and_analyze`: a trace of 10^6 sample rows (the synthetic source at 10 ms:
//!   power, energy counter, utilisation; a request span every second) read from memory,
//!   the idle level taken from a window, and every `infer_start` → `first_token` span
//!   measured: what `flinch analyze TRACE --from infer_start --to first_token
//!   --idle-window ...` does, less printing. `analyze/analyze_only` is the second half.
//!
//!   Target: 5 million samples per second or more.
//!
//! Throughput is in samples.
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use flinch_analysis::idle::IdleProfile;
use flinch_analysis::{Analyzer, Thresholds};
use flinch_benches::synthetic_trace;
use flinch_core::channel::CounterSpec;
use flinch_core::integrate::{integrate_counter, integrate_gauge};
use flinch_core::trace::{Trace, read_trace_from};
use std::hint::black_box;
use std::time::Duration;

const N: usize = 1_000_000;

fn integrate(c: &mut Criterion) {
    let t: Vec<u64> = (0..N as u64)
        .map(|i| 1_000_000_000 + i * 10_000_000)
        .collect();
    // Power: a square wave that changes every 100 samples (a sensor updating every 100 ms
    // polled at 10 ms), with a slow ramp so no two plateaus are equal.
    let p: Vec<f64> = (0..N)
        .map(|i| if (i / 100) % 2 == 0 { 60.0 } else { 300.0 } + (i / 100) as f64 * 1e-3)
        .collect();
    // A counter wrapping at 500 J, ~3 J per step: a wrap every ~170 samples.
    let spec = CounterSpec {
        wrap_range: Some(500.0),
        max_rate: Some(2000.0),
    };
    let mut e = 0.0;
    let counter: Vec<f64> = p
        .iter()
        .map(|w| {
            e = (e + w * 0.01) % 500.0;
            e
        })
        .collect();
    let (start, end) = (t[0] + 3_300_000, t[N - 1] - 3_300_000);

    let mut g = c.benchmark_group("integrate");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("gauge", |b| {
        b.iter(|| black_box(integrate_gauge(&t, &p, start, end).map(|w| w.integral)))
    });
    g.bench_function("counter", |b| {
        b.iter(|| {
            black_box(
                integrate_counter(&t, &counter, &spec, Some(1_000_000), start, end)
                    .map(|w| w.increase),
            )
        })
    });
    g.bench_function("spans_gauge", |b| {
        b.iter(|| {
            let mut sum = 0.0;
            for k in 0..N / 100 - 1 {
                let s = t[k * 100] + 3_300_000;
                if let Ok(w) = integrate_gauge(&t, &p, s, s + 990_000_000) {
                    sum += w.integral;
                }
            }
            black_box(sum)
        })
    });
    g.finish();
}

fn analyzer(trace: &Trace) -> Analyzer<'_> {
    // The synthetic source idles at 60 W for the first second of every two.
    let t0 = trace.header.start_anchor.mono_ns;
    let mut idle = IdleProfile::from_trace(trace, t0 + 50_000_000, t0 + 950_000_000, "bench")
        .expect("an idle window");
    idle.assess();
    Analyzer::new(trace, Some((&idle, "window")), Thresholds::default())
}

fn analyze(c: &mut Criterion) {
    let built = synthetic_trace(N as u64 / 3, 10_000_000, 100);
    let rows = built.samples;
    let trace = read_trace_from(&built.bytes[..], "mem".as_ref()).expect("reads");
    {
        let a = analyzer(&trace);
        let r = a.run("infer_start", "first_token", &mut |_, _| {}).unwrap();
        eprintln!(
            "analyze bench: {rows} sample rows, {} bytes, {} spans",
            built.bytes.len(),
            r.spans.len()
        );
        assert_eq!(r.spans.len() as u64, built.marks / 2);
    }
    let mut g = c.benchmark_group("analyze");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .measurement_time(Duration::from_secs(10))
        .throughput(Throughput::Elements(rows));
    g.bench_function("read_and_analyze", |b| {
        b.iter(|| {
            let trace = read_trace_from(&built.bytes[..], "mem".as_ref()).expect("reads");
            let a = analyzer(&trace);
            let r = a.run("infer_start", "first_token", &mut |_, _| {});
            black_box(r.map(|r| r.spans.len()).unwrap_or(0))
        })
    });
    g.bench_function("analyze_only", |b| {
        b.iter(|| {
            let a = analyzer(&trace);
            let r = a.run("infer_start", "first_token", &mut |_, _| {});
            black_box(r.map(|r| r.spans.len()).unwrap_or(0))
        })
    });
    g.finish();
}

criterion_group!(benches, integrate, analyze);
criterion_main!(benches);

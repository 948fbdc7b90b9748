//! Trace I/O: how fast samples are written and read back.
//!
//! The trace is what a recording of the synthetic source at 10 ms writes (power, energy
//! counter and utilisation each tick, an anchor every 10 s, a request span every second);
//! see `flinch_benches::synthetic_trace`. Throughput is in sample rows; the bytes per row
//! are printed once, so MB/s = rows/s × bytes/row.
//!
//! - `trace_write/memory`: [`TraceWriter::sample`] into a `Vec` (formatting only),
//! - `trace_write/file`: into a new file (the page cache; no fsync, as in a recording,
//!   which flushes its buffer every second and on every mark),
//! - `trace_read/memory`: [`read_trace_from`] of the bytes (parsing and sorting only),
//! - `trace_read/file`: [`read_trace`] of the file (in the page cache).
use criterion::{BatchSize, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use flinch_benches::{bench_sources, synthetic_trace};
use flinch_core::clock::{ClockAnchor, ManualClock};
use flinch_core::source::Reading;
use flinch_core::trace::{Header, TraceWriter, read_trace, read_trace_from};
use std::hint::black_box;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

const TICKS: u64 = 100_000;

fn readings() -> Vec<Reading> {
    let built = synthetic_trace(TICKS, 10_000_000, 0);
    let t = read_trace_from(&built.bytes[..], "mem".as_ref()).expect("a built trace reads");
    let mut v = Vec::new();
    for (i, c) in t.channels.iter().enumerate() {
        for (&t_ns, &value) in c.t_ns.iter().zip(&c.values) {
            v.push(Reading {
                channel: i as u32,
                t_ns,
                value,
            });
        }
    }
    v.sort_by_key(|r| (r.t_ns, r.channel));
    v
}

fn write_all<W: Write>(out: W, rs: &[Reading]) -> W {
    let header = Header::new(10_000_000, ClockAnchor::default(), bench_sources());
    let clock = Arc::new(ManualClock::new(0, 0));
    let mut w = TraceWriter::new(out, &header, clock, 1_000_000_000).expect("header");
    for r in rs {
        w.sample(r).expect("row");
    }
    w.finish(Default::default()).expect("footer")
}

fn trace(c: &mut Criterion) {
    let rs = readings();
    let built = synthetic_trace(TICKS, 10_000_000, 100);
    let rows = built.samples;
    eprintln!(
        "trace benches: {rows} sample rows, {} marks, {} bytes ({:.1} bytes per row)",
        built.marks,
        built.bytes.len(),
        built.bytes.len() as f64 / rows as f64
    );
    let dir = tempfile::tempdir().expect("temp dir");

    let mut g = c.benchmark_group("trace_write");
    g.sample_size(20)
        .sampling_mode(SamplingMode::Flat)
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Elements(rs.len() as u64));
    g.bench_function("memory", |b| {
        b.iter_batched(
            || Vec::with_capacity(built.bytes.len() + 4096),
            |v| black_box(write_all(v, &rs).len()),
            BatchSize::PerIteration,
        )
    });
    let path = dir.path().join("w.flinch.csv");
    g.bench_function("file", |b| {
        b.iter_batched(
            || {
                let _ = std::fs::remove_file(&path);
                std::fs::File::create(&path).expect("temp file")
            },
            |f| black_box(write_all(f, &rs)),
            BatchSize::PerIteration,
        )
    });
    g.finish();

    let path = dir.path().join("r.flinch.csv");
    std::fs::write(&path, &built.bytes).expect("temp file");
    let mut g = c.benchmark_group("trace_read");
    g.sample_size(20)
        .sampling_mode(SamplingMode::Flat)
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Elements(rows));
    g.bench_function("memory", |b| {
        b.iter(|| {
            let t = read_trace_from(&built.bytes[..], "mem".as_ref()).expect("reads");
            black_box(t.sample_count())
        })
    });
    g.bench_function("file", |b| {
        b.iter(|| {
            let t = read_trace(&path).expect("reads");
            black_box(t.sample_count())
        })
    });
    g.finish();
}

criterion_group!(benches, trace);
criterion_main!(benches);

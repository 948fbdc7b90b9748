//! Marks: how fast lines are parsed, and how long a mark takes to reach the trace file.
//!
//! - `marks_parse/*`: [`parse_mark`] of one line (throughput in lines): a short mark, the
//!   seed thread's `MARK ` form, and a mark with several fields.
//! - `marks_split`: [`LineSplitter`] cutting a 64 KiB read from the FIFO into lines and
//!   parsing each (what the FIFO reader thread does per read).
//! - `marks_latency/{fifo,file,api}`: a real recording (synthetic source at 10 ms) and a
//!   real client: the time from just before the client's `write(2)` into the FIFO (or its
//!   append to the marks file, or the in-process send) until the mark's row can be read
//!   from the trace file (see `flinch_benches::latency`). One mark at a time, each after a
//!   random pause (untimed; 0–4 ms, 0–10 ms for the file), so the recorder's threads are asleep when it comes,
//!   as between real requests, and marks do not fall in step with the file tailer's 10-ms
//!   reads.
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use flinch_benches::latency::{MarkRig, Transport, jitter};
use flinch_core::marks::{Line, LineSplitter, parse_mark};
use std::hint::black_box;
use std::time::Duration;

const LINES: [(&str, &str); 3] = [
    ("short", "first_token t=81234567890123 req=42\n"),
    ("mark_prefix", "MARK infer_start req=42\n"),
    (
        "fields",
        "infer_start t=81234567890123 req=req-000042 model=llama-3-8b batch=8 prompt_tokens=512 phase=prefill\n",
    ),
];

fn parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("marks_parse");
    g.throughput(Throughput::Elements(1));
    for (name, line) in LINES {
        assert!(parse_mark(line.as_bytes()).is_ok(), "{line}");
        g.bench_function(name, |b| {
            b.iter(|| black_box(parse_mark(black_box(line.as_bytes())).is_ok()))
        });
    }
    g.finish();

    let mut chunk = Vec::with_capacity(64 * 1024);
    let mut lines = 0u64;
    'fill: loop {
        for (_, l) in LINES {
            if chunk.len() + l.len() > 64 * 1024 {
                break 'fill;
            }
            chunk.extend_from_slice(l.as_bytes());
            lines += 1;
        }
    }
    let mut g = c.benchmark_group("marks_split");
    g.throughput(Throughput::Elements(lines));
    g.bench_function("64KiB", |b| {
        let mut sp = LineSplitter::default();
        b.iter(|| {
            let mut ok = 0u32;
            sp.feed(&chunk, |l| {
                if let Line::Complete(l) = l
                    && parse_mark(l).is_ok()
                {
                    ok += 1;
                }
            });
            black_box(ok)
        })
    });
    g.finish();
}

fn latency(c: &mut Criterion) {
    let mut g = c.benchmark_group("marks_latency");
    g.sampling_mode(SamplingMode::Flat).sample_size(20);
    // Criterion plans its iterations from the time reported, which leaves out the pauses
    // (2 ms on average, more than a FIFO mark takes): so the reported time asked for is
    // small, and the wall time is ~40 times as long for the FIFO and the API.
    // The file is read every 10 ms: its pauses average 5 ms, so a mark lands anywhere in
    // that cycle.
    for (t, gap_ms, warm_ms, measure_ms) in [
        (Transport::Fifo, 2, 20, 150),
        (Transport::Api, 2, 20, 150),
        (Transport::File, 5, 100, 1500),
    ] {
        g.warm_up_time(Duration::from_millis(warm_ms))
            .measurement_time(Duration::from_millis(measure_ms));
        let mut rig = MarkRig::start(t).expect("a recording starts");
        g.bench_function(t.name(), |b| {
            b.iter_custom(|iters| {
                let mut total = 0u64;
                let mut seed = 0x9e37_79b9_7f4a_7c15;
                for _ in 0..iters {
                    std::thread::sleep(jitter(&mut seed, Duration::from_millis(gap_ms)));
                    total += rig.round_trip();
                }
                Duration::from_nanos(total)
            })
        });
        rig.stop();
    }
    g.finish();
}

criterion_group!(benches, parse, latency);
criterion_main!(benches);

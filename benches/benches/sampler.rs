//! One sampler tick over N do-nothing sources: the framework's own cost.
//!
//! - `sampler_tick/N`: N [`NullSource`]s of one channel each (one reading per source per
//!   tick) into a [`CountingSink`]: the loop over sources, the `Readings` buffer, the
//!   clock read each source makes, the virtual calls. Target: under 1 µs for 8 sources.
//! - `sampler_tick_silent/N`: the same sources pushing nothing: the loop alone.
//! - `sampler_tick_channel/N`: the readings go into a bounded crossbeam channel, as in a
//!   recording (the recorder's sink is `try_send` per reading; the writer drains the
//!   channel every 50 ms, here after each batch of ticks, outside the timing).
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use crossbeam_channel::{Receiver, Sender, bounded};
use flinch_core::SourceError;
use flinch_core::clock::MonotonicClock;
use flinch_core::source::Reading;
use flinch_core::testing::NullSource;
use flinch_record::sampler::{CountingSink, SamplerGroup, Sink};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn group_of<S: Sink>(n: usize, silent: bool, sink: S) -> SamplerGroup<S> {
    let mut group = SamplerGroup::new(Duration::from_millis(10), Arc::new(MonotonicClock), sink);
    for i in 0..n {
        let name = format!("null{i}");
        let src = if silent {
            NullSource::silent(&name, 1)
        } else {
            NullSource::new(&name, 1)
        };
        group.add(Box::new(src), i as u32, i as u32);
    }
    group
}

/// What the recorder's sink does per reading: a non-blocking send into a bounded channel.
struct ChannelSink(Sender<Reading>);

impl Sink for ChannelSink {
    fn reading(&mut self, r: &Reading) -> bool {
        self.0.try_send(*r).is_ok()
    }
    fn gap(&mut self, _t_ns: u64, _source: u32, _error: Option<&SourceError>) {}
    fn dropped(&mut self, _t_ns: u64, _source: u32, _count: u64) {}
}

fn tick(c: &mut Criterion) {
    let mut g = c.benchmark_group("sampler_tick");
    for n in [1usize, 8, 64] {
        let mut group = group_of(n, false, CountingSink::default());
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| group.tick())
        });
    }
    g.finish();

    let mut g = c.benchmark_group("sampler_tick_silent");
    for n in [1usize, 8, 64] {
        let mut group = group_of(n, true, CountingSink::default());
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| group.tick())
        });
    }
    g.finish();

    let mut g = c.benchmark_group("sampler_tick_channel");
    for n in [1usize, 8, 64] {
        let (tx, rx): (Sender<Reading>, Receiver<Reading>) = bounded(1 << 16);
        let mut group = group_of(n, false, ChannelSink(tx));
        // Ticks per timed batch, so the channel (65 536 readings, as in a recording) never
        // fills; it is emptied between batches, untimed.
        let batch = ((1 << 16) / n as u64).min(4096);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let k = left.min(batch);
                    let start = Instant::now();
                    for _ in 0..k {
                        group.tick();
                    }
                    total += start.elapsed();
                    left -= k;
                    while rx.try_recv().is_ok() {}
                }
                total
            })
        });
    }
    g.finish();
}

criterion_group!(benches, tick);
criterion_main!(benches);

//! One sampler tick over N do-nothing sources: the framework's own cost.
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use flinch_core::clock::MonotonicClock;
use flinch_core::sampler::{CountingSink, SamplerGroup};
use flinch_core::testing::NullSource;
use std::sync::Arc;
use std::time::Duration;

fn tick(c: &mut Criterion) {
    let mut g = c.benchmark_group("sampler_tick");
    for n in [1usize, 8, 64] {
        let mut group = SamplerGroup::new(
            Duration::from_millis(10),
            Arc::new(MonotonicClock),
            CountingSink::default(),
        );
        for i in 0..n {
            group.add(
                Box::new(NullSource::new(&format!("null{i}"), 1)),
                i as u32,
                i as u32,
            );
        }
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| group.tick())
        });
    }
    g.finish();
}

criterion_group!(benches, tick);
criterion_main!(benches);

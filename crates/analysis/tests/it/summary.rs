//! The summary of many spans in bounded memory against the exact one (`summarize`'s
//! numbers, computed here from every value): exact up to the limit, within the stated
//! error past it.

use flinch_analysis::stats::{Distribution, Histogram};
use flinch_analysis::summary::{HISTOGRAM_EDGE_TOLERANCE, QUANTILE_RELATIVE_ERROR};
use flinch_analysis::{SpanFigures, SummaryBuilder, Verdict};

/// A deterministic spread of values: durations from 1 ms to 10 s (log-uniform, the
/// shapes token spans have), energies of both signs.
fn values(n: usize) -> Vec<(f64, f64)> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let u = (x >> 11) as f64 / (1u64 << 53) as f64;
            let d = 1e-3 * 10f64.powf(4.0 * u);
            (d, 30.0 * d - 0.02)
        })
        .collect()
}

fn build(limit: usize, vals: &[(f64, f64)]) -> flinch_analysis::Summary {
    let mut b = SummaryBuilder::with_exact_limit(limit);
    // In reverse start order: the builder must not depend on the order spans come in.
    for (i, (d, e)) in vals.iter().enumerate().rev() {
        b.add(
            (i as u64, 0),
            &SpanFigures {
                duration_s: *d,
                verdict: Verdict::IdleWait,
                devices: vec![("gpu0".into(), Some(*e), Some(*e + 1.0))],
            },
        );
    }
    b.finish(None, 0, 0)
}

fn close(got: f64, want: f64, rel: f64, what: &str) {
    assert!(
        (got - want).abs() <= rel * want.abs().max(1e-12),
        "{what}: {got} vs exact {want}"
    );
}

#[test]
fn up_to_the_limit_the_summary_is_exact_and_past_it_within_the_stated_error() {
    let vals = values(20_000);
    let durations: Vec<f64> = vals.iter().map(|v| v.0).collect();
    let active: Vec<f64> = vals.iter().map(|v| v.1).collect();
    let exact_d = Distribution::of(&durations).unwrap();
    let exact_h = Histogram::of(&durations, 20);
    let exact_a = Distribution::of(&active).unwrap();

    // Below the limit: bit for bit, totals summed in start order.
    let s = build(100_000, &vals);
    assert!(s.approximate.is_none());
    assert_eq!(s.duration_s, Some(exact_d));
    assert_eq!(s.histogram, exact_h);
    assert_eq!(s.active_energy_j["gpu0"].dist, exact_a);
    assert_eq!(s.active_energy_j["gpu0"].total, active.iter().sum::<f64>());

    // Past it (1000 values kept, 19 000 sketched).
    let s = build(1000, &vals);
    let ap = s.approximate.clone().expect("marked approximate");
    assert_eq!(ap.exact_up_to, 1000);
    assert_eq!(s.count, 20_000);
    let d = s.duration_s.unwrap();
    assert_eq!((d.min, d.max), (exact_d.min, exact_d.max));
    for (g, w, q) in [
        (d.p50, exact_d.p50, "p50"),
        (d.p90, exact_d.p90, "p90"),
        (d.p99, exact_d.p99, "p99"),
    ] {
        close(g, w, QUANTILE_RELATIVE_ERROR, q);
    }
    close(d.mean, exact_d.mean, 1e-12, "mean");
    close(d.std, exact_d.std, 1e-9, "std");
    let a = &s.active_energy_j["gpu0"];
    assert_eq!(a.count, 20_000);
    close(a.total, active.iter().sum(), 1e-12, "total");
    for (g, w) in [
        (a.dist.p50, exact_a.p50),
        (a.dist.p90, exact_a.p90),
        (a.dist.p99, exact_a.p99),
    ] {
        close(g, w, QUANTILE_RELATIVE_ERROR, "active energy quantile");
    }
    // The histogram: same edges; every count off only by values near an edge.
    assert_eq!(s.histogram.edges, exact_h.edges);
    assert_eq!(s.histogram.counts.iter().sum::<u64>(), 20_000);
    let width = exact_h.edges[1] - exact_h.edges[0];
    for (i, (g, w)) in s.histogram.counts.iter().zip(&exact_h.counts).enumerate() {
        let near = durations
            .iter()
            .filter(|&&x| {
                let lo = (x - exact_h.edges[i]).abs();
                let hi = (x - exact_h.edges[i + 1]).abs();
                lo.min(hi) <= HISTOGRAM_EDGE_TOLERANCE * width
            })
            .count() as u64;
        assert!(
            g.abs_diff(*w) <= near,
            "bin {i}: {g} vs {w} ({near} near an edge)"
        );
    }
}

#[test]
fn quantiles_of_one_repeated_value_and_of_two_clusters() {
    let same: Vec<(f64, f64)> = vec![(0.004, 0.5); 5000];
    let s = build(100, &same);
    let d = s.duration_s.unwrap();
    for x in [d.min, d.p50, d.p99, d.max] {
        close(x, 0.004, QUANTILE_RELATIVE_ERROR, "repeated");
    }
    assert_eq!(s.histogram.counts, vec![5000]);
    // Half at 1 ms, half at 1 s: the median interpolates between the clusters.
    let two: Vec<(f64, f64)> = (0..4000)
        .map(|i| if i % 2 == 0 { (0.001, 0.0) } else { (1.0, 0.0) })
        .collect();
    let exact = Distribution::of(&two.iter().map(|v| v.0).collect::<Vec<_>>()).unwrap();
    let d = build(100, &two).duration_s.unwrap();
    close(
        d.p50,
        exact.p50,
        QUANTILE_RELATIVE_ERROR,
        "p50 between clusters",
    );
    close(d.p90, exact.p90, QUANTILE_RELATIVE_ERROR, "p90");
}

//! Descriptive statistics shared by idle profiles and span summaries.
//!
//! Conventions, so numbers can be reproduced with numpy or pandas:
//! - quantiles interpolate linearly between order statistics (numpy's default `linear`
//!   method, R's type 7): `q` of `n` sorted values sits at position `q × (n − 1)`;
//! - `std` is the sample standard deviation (divisor `n − 1`, pandas' default), 0 for fewer
//!   than two values;
//! - histograms have equal-width bins from the minimum to the maximum, the last bin closed.
//!
//! ```
//! use flinch_analysis::stats::{Distribution, quantile_sorted};
//! let xs: Vec<f64> = (1..=100).map(f64::from).collect();
//! assert_eq!(quantile_sorted(&xs, 0.5), 50.5);
//! let d = Distribution::of(&xs).unwrap();
//! assert_eq!((d.min, d.max, d.mean), (1.0, 100.0, 50.5));
//! ```

use serde::{Deserialize, Serialize};

/// The `q`-quantile (0 ≤ q ≤ 1) of values sorted ascending, interpolated linearly between
/// order statistics. `NaN` for an empty slice.
pub fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        1 => sorted[0],
        n => {
            let pos = q.clamp(0.0, 1.0) * (n - 1) as f64;
            let i = pos.floor() as usize;
            let frac = pos - i as f64;
            if i + 1 >= n {
                sorted[n - 1]
            } else {
                sorted[i] + (sorted[i + 1] - sorted[i]) * frac
            }
        }
    }
}

/// Mean and sample standard deviation (divisor `n − 1`; 0 for fewer than two values).
/// `None` for an empty slice.
pub fn mean_std(xs: &[f64]) -> Option<(f64, f64)> {
    if xs.is_empty() {
        return None;
    }
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    if xs.len() < 2 {
        return Some((mean, 0.0));
    }
    let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0);
    Some((mean, var.sqrt()))
}

/// The distribution of a set of values: what `analyze` reports for span durations and
/// energies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Distribution {
    /// Smallest value.
    pub min: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest value.
    pub max: f64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Sample standard deviation.
    pub std: f64,
}

impl Distribution {
    /// The distribution of `xs` (any order; non-finite values are skipped). `None` when no
    /// finite value is left.
    pub fn of(xs: &[f64]) -> Option<Self> {
        let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let (mean, std) = mean_std(&v)?;
        Some(Distribution {
            min: v[0],
            p50: quantile_sorted(&v, 0.5),
            p90: quantile_sorted(&v, 0.9),
            p99: quantile_sorted(&v, 0.99),
            max: v[v.len() - 1],
            mean,
            std,
        })
    }
}

/// Equal-width bins from the smallest to the largest value.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// Bin edges, one more than the bins; bin `i` holds `edges[i] ≤ x < edges[i + 1]`, the
    /// last bin also holds its upper edge.
    pub edges: Vec<f64>,
    /// Values per bin.
    pub counts: Vec<u64>,
}

impl Histogram {
    /// A histogram of the finite values of `xs` with `bins` bins (at least one). When every
    /// value is the same, one bin of zero width holds them all.
    pub fn of(xs: &[f64], bins: usize) -> Self {
        let finite = || xs.iter().copied().filter(|x| x.is_finite());
        let (Some(lo), Some(hi)) = (
            finite().min_by(f64::total_cmp),
            finite().max_by(f64::total_cmp),
        ) else {
            return Histogram::default();
        };
        if hi <= lo {
            return Histogram {
                edges: vec![lo, hi],
                counts: vec![finite().count() as u64],
            };
        }
        let bins = bins.max(1);
        let width = (hi - lo) / bins as f64;
        let edges: Vec<f64> = (0..=bins)
            .map(|i| if i == bins { hi } else { lo + width * i as f64 })
            .collect();
        let mut counts = vec![0u64; bins];
        for x in finite() {
            let i = (((x - lo) / width) as usize).min(bins - 1);
            counts[i] += 1;
        }
        Histogram { edges, counts }
    }

    /// The number of bins `analyze` uses for `n` values: √n, between 1 and 20.
    pub fn default_bins(n: usize) -> usize {
        ((n as f64).sqrt().ceil() as usize).clamp(1, 20)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_match_the_linear_definition() {
        let xs: Vec<f64> = (1..=100).map(f64::from).collect();
        // position q × 99: 0.9 → 89.1 → 90 + 0.1 × 1; 0.99 → 98.01 → 99.01
        assert!((quantile_sorted(&xs, 0.9) - 90.1).abs() < 1e-12);
        assert!((quantile_sorted(&xs, 0.99) - 99.01).abs() < 1e-12);
        assert_eq!(quantile_sorted(&xs, 0.0), 1.0);
        assert_eq!(quantile_sorted(&xs, 1.0), 100.0);
        assert_eq!(quantile_sorted(&[7.0], 0.3), 7.0);
        assert!(quantile_sorted(&[], 0.5).is_nan());
        assert_eq!(quantile_sorted(&[0.0, 10.0], 0.25), 2.5);
    }

    #[test]
    fn mean_and_sample_std() {
        // 2, 4, 4, 4, 5, 5, 7, 9: mean 5, squared deviations sum to 32, sample var 32/7
        let xs = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0];
        let (m, s) = mean_std(&xs).unwrap();
        assert_eq!(m, 5.0);
        assert!((s - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
        assert_eq!(mean_std(&[3.0]), Some((3.0, 0.0)));
        assert_eq!(mean_std(&[]), None);
        let d = Distribution::of(&[f64::NAN, 3.0, 1.0, 2.0]).unwrap();
        assert_eq!(
            (d.min, d.p50, d.max, d.mean, d.std),
            (1.0, 2.0, 3.0, 2.0, 1.0)
        );
        assert_eq!(Distribution::of(&[f64::NAN]), None);
    }

    #[test]
    fn histogram_bins_cover_min_to_max() {
        let h = Histogram::of(&[0.0, 0.1, 0.5, 0.99, 1.0], 2);
        assert_eq!(h.edges, vec![0.0, 0.5, 1.0]);
        assert_eq!(h.counts, vec![2, 3]);
        let h = Histogram::of(&[0.724; 5], 10);
        assert_eq!(h.counts, vec![5]);
        assert_eq!(Histogram::of(&[], 3), Histogram::default());
        assert_eq!(Histogram::default_bins(1), 1);
        assert_eq!(Histogram::default_bins(100), 10);
        assert_eq!(Histogram::default_bins(10_000), 20);
    }
}

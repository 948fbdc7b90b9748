//! The summary over many spans.

use crate::report::{EnergyStats, SpanReport, Summary, Verdict};
use crate::stats::{Distribution, Histogram};
use std::collections::BTreeMap;

/// The summary over spans.
pub fn summarize(spans: &[SpanReport], unmatched_starts: usize, unmatched_ends: usize) -> Summary {
    let durations: Vec<f64> = spans.iter().map(|s| s.duration_s).collect();
    let mut verdicts: BTreeMap<&'static str, usize> =
        Verdict::ALL.iter().map(|v| (v.name(), 0)).collect();
    for s in spans {
        *verdicts.entry(s.verdict.name()).or_insert(0) += 1;
    }
    let mut active: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut total: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for s in spans {
        for (dev, d) in &s.devices {
            if let Some(a) = d.active_energy_j {
                active.entry(dev.clone()).or_default().push(a);
            }
            if let Some(e) = d.energy_j {
                total.entry(dev.clone()).or_default().push(e);
            }
        }
    }
    let stats = |m: BTreeMap<String, Vec<f64>>| -> BTreeMap<String, EnergyStats> {
        m.into_iter()
            .filter_map(|(k, v)| EnergyStats::of(&v).map(|s| (k, s)))
            .collect()
    };
    Summary {
        count: spans.len(),
        duration_s: Distribution::of(&durations),
        histogram: Histogram::of(&durations, Histogram::default_bins(durations.len())),
        verdicts,
        active_energy_j: stats(active),
        energy_j: stats(total),
        unmatched_starts,
        unmatched_ends,
    }
}

impl EnergyStats {
    fn of(xs: &[f64]) -> Option<Self> {
        Some(EnergyStats {
            count: xs.len(),
            total: xs.iter().sum(),
            dist: Distribution::of(xs)?,
        })
    }
}

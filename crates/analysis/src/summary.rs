//! The summary over many spans.

use crate::aggregate::Aggregate;
use crate::report::{EnergyStats, SpanReport, Summary, Verdict};
use crate::stats::{Distribution, Histogram};
use std::collections::BTreeMap;

/// The summary over spans. With the `aggregate` of the same spans, the energy totals are
/// those over the union of span time (overlapping spans counted once); without it they are
/// the sums over spans.
pub fn summarize(
    spans: &[SpanReport],
    aggregate: Option<Aggregate>,
    unmatched_starts: usize,
    unmatched_ends: usize,
) -> Summary {
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
    let stats = |m: BTreeMap<String, Vec<f64>>, active: bool| -> BTreeMap<String, EnergyStats> {
        m.into_iter()
            .filter_map(|(k, v)| {
                let mut s = EnergyStats::of(&v)?;
                let union = aggregate
                    .as_ref()
                    .and_then(|a| a.devices.get(&k))
                    .and_then(|d| {
                        if active {
                            d.active_energy_j.as_ref().map(|t| t.total)
                        } else {
                            Some(d.energy_j.total)
                        }
                    });
                if let Some(u) = union {
                    s.total = u;
                }
                Some((k, s))
            })
            .collect()
    };
    Summary {
        count: spans.len(),
        duration_s: Distribution::of(&durations),
        histogram: Histogram::of(&durations, Histogram::default_bins(durations.len())),
        verdicts,
        active_energy_j: stats(active, true),
        energy_j: stats(total, false),
        unmatched_starts,
        unmatched_ends,
        aggregate,
    }
}

impl EnergyStats {
    fn of(xs: &[f64]) -> Option<Self> {
        let sum = xs.iter().sum();
        Some(EnergyStats {
            count: xs.len(),
            total: sum,
            sum_of_spans: sum,
            dist: Distribution::of(xs)?,
        })
    }
}

//! The lines a picture draws: the best power signal of each device, and the utilisation /
//! activity gauges, chosen from channel metadata (quantity, method, device), never from
//! channel names, so any backend's channels work.

use flinch_core::ChannelKind;
use flinch_core::channel::{PowerMethod, Quantity};
use flinch_core::counter::{CounterStep, CounterTracker};
use flinch_core::trace::{ChannelData, Trace};

/// One line to draw. A `NaN` value breaks the line (a source gap, a counter reset).
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// The channel it comes from.
    pub channel: String,
    /// The channel's device.
    pub device: String,
    /// For the legend: `gpu0 power (driver samples)`.
    pub label: String,
    /// The unit symbol.
    pub unit: String,
    /// Times, `CLOCK_MONOTONIC` ns, non-decreasing.
    pub t_ns: Vec<u64>,
    /// Values (NaN = break).
    pub values: Vec<f64>,
}

impl Series {
    /// The largest finite value.
    pub fn max(&self) -> Option<f64> {
        self.values
            .iter()
            .copied()
            .filter(|v| v.is_finite())
            .reduce(f64::max)
    }
    /// The finite values with times in `[start_ns, end_ns]`.
    pub fn values_in(&self, start_ns: u64, end_ns: u64) -> impl Iterator<Item = f64> + '_ {
        let lo = self.t_ns.partition_point(|&t| t < start_ns);
        let hi = self.t_ns.partition_point(|&t| t <= end_ns);
        self.values[lo..hi]
            .iter()
            .copied()
            .filter(|v| v.is_finite())
    }
    /// The mean of the finite values in `[start_ns, end_ns]` and how many there were.
    pub fn mean_in(&self, start_ns: u64, end_ns: u64) -> (Option<f64>, usize) {
        let (mut sum, mut n) = (0.0, 0usize);
        for v in self.values_in(start_ns, end_ns) {
            sum += v;
            n += 1;
        }
        ((n > 0).then(|| sum / n as f64), n)
    }
    /// The time-weighted mean over `[start_ns, end_ns]` treating the line as linear between
    /// samples (what a person reads off the picture); `None` without two samples around
    /// the window.
    pub fn window_mean(&self, start_ns: u64, end_ns: u64) -> Option<f64> {
        if end_ns <= start_ns {
            return None;
        }
        let lo = self
            .t_ns
            .partition_point(|&t| t < start_ns)
            .saturating_sub(1);
        let hi = (self.t_ns.partition_point(|&t| t <= end_ns) + 1).min(self.t_ns.len());
        let (mut area, mut covered) = (0.0, 0.0);
        for i in lo..hi.saturating_sub(1) {
            let (t0, t1) = (self.t_ns[i], self.t_ns[i + 1]);
            let (v0, v1) = (self.values[i], self.values[i + 1]);
            if !(v0.is_finite() && v1.is_finite()) || t1 <= t0 {
                continue;
            }
            let a = t0.max(start_ns);
            let b = t1.min(end_ns);
            if b <= a {
                continue;
            }
            let at = |t: u64| v0 + (v1 - v0) * (t - t0) as f64 / (t1 - t0) as f64;
            area += (at(a) + at(b)) / 2.0 * (b - a) as f64;
            covered += (b - a) as f64;
        }
        (covered > 0.0).then(|| area / covered)
    }
}

/// The device model a source names in its `name` attribute (`NVIDIA H200`), unless that
/// is just the name of its device (RAPL zones are named `package-0`, `dram`).
pub fn model_name(source: &flinch_core::SourceInfo) -> Option<&str> {
    let name = source.attributes.get("name")?;
    let is_device = source
        .channels
        .iter()
        .any(|c| c.device == *name || c.device.ends_with(&format!(".{name}")));
    (!is_device).then_some(name.as_str())
}

/// Preference among power methods: driver samples, instant, modelled, then the lagging
/// average.
fn method_rank(m: Option<PowerMethod>) -> u8 {
    match m {
        Some(PowerMethod::DriverSamples) => 0,
        Some(PowerMethod::Instant) => 1,
        Some(PowerMethod::Modelled) => 2,
        None => 3,
        Some(PowerMethod::Average { .. }) => 5,
        Some(_) => 4,
    }
}

fn method_words(m: Option<PowerMethod>) -> String {
    match m {
        Some(PowerMethod::DriverSamples) => "driver samples".into(),
        Some(PowerMethod::Instant) => "instant".into(),
        Some(PowerMethod::Modelled) => "modelled".into(),
        Some(PowerMethod::Average { window_ms }) => format!("{window_ms} ms average, lags"),
        Some(m) => m.name().into(),
        None => "power".into(),
    }
}

/// Inserts a `NaN` break wherever a source gap of the channel's source lies between two
/// samples, or two samples are much further apart than the channel's usual spacing.
fn with_breaks(trace: &Trace, ch: &ChannelData, t: Vec<u64>, v: Vec<f64>) -> (Vec<u64>, Vec<f64>) {
    if t.len() < 3 {
        return (t, v);
    }
    let mut dts: Vec<u64> = t.windows(2).map(|w| w[1] - w[0]).collect();
    dts.sort_unstable();
    let typical = dts[dts.len() / 2].max(ch.spec.update_period_ns.unwrap_or(0));
    let far = typical.saturating_mul(20).max(2_000_000_000);
    let gaps: Vec<(u64, u64)> = trace
        .gaps
        .iter()
        .filter(|g| g.source == ch.source)
        .map(|g| (g.start_ns, g.end_ns.unwrap_or(u64::MAX)))
        .collect();
    let mut ot = Vec::with_capacity(t.len());
    let mut ov = Vec::with_capacity(v.len());
    for i in 0..t.len() {
        if i > 0 {
            let (a, b) = (t[i - 1], t[i]);
            let in_gap = gaps.iter().any(|&(gs, ge)| gs < b && ge > a);
            if in_gap || b - a > far {
                ot.push(a + (b - a) / 2);
                ov.push(f64::NAN);
            }
        }
        ot.push(t[i]);
        ov.push(v[i]);
    }
    (ot, ov)
}

/// Power from an energy counter: wrap-corrected differences over windows of at least one
/// sensor update (and 20 ms), drawn as steps; a reset or a flagged reading breaks the line.
pub fn counter_power(ch: &ChannelData) -> Option<(Vec<u64>, Vec<f64>)> {
    counter_rate(ch, ch.spec.update_period_ns.unwrap_or(0).max(20_000_000))
}

/// The rate of a counter (per second): wrap-corrected differences over windows of at least
/// `min_window_ns`, drawn as steps; a reset or a flagged reading breaks the line.
pub fn counter_rate(ch: &ChannelData, min_window_ns: u64) -> Option<(Vec<u64>, Vec<f64>)> {
    let spec = *ch.spec.counter_spec()?;
    let min_window = min_window_ns;
    let mut tracker = CounterTracker::new(spec, ch.spec.update_period_ns);
    let (mut t, mut v) = (Vec::new(), Vec::new());
    let mut window_start: Option<u64> = None;
    let mut acc = 0.0;
    for (&ti, &vi) in ch.t_ns.iter().zip(&ch.values) {
        match tracker.update(ti, vi) {
            CounterStep::First => window_start = Some(ti),
            CounterStep::Delta { delta, .. } => {
                acc += delta;
                let Some(ws) = window_start else { continue };
                if ti - ws >= min_window {
                    let p = acc / ((ti - ws) as f64 / 1e9);
                    t.extend([ws, ti]);
                    v.extend([p, p]);
                    window_start = Some(ti);
                    acc = 0.0;
                }
            }
            CounterStep::Reset { .. } | CounterStep::Implausible { .. } => {
                if let Some(&last) = t.last() {
                    t.push(last);
                    v.push(f64::NAN);
                }
                window_start = Some(ti);
                acc = 0.0;
            }
            CounterStep::OutOfRange { .. } => {}
        }
    }
    (!t.is_empty()).then_some((t, v))
}

/// The best power line of each device: its preferred power channel (driver samples,
/// instant, modelled, then the lagging 1-s average), or, for a device with no power channel
/// (RAPL), power derived from its energy counter. Devices in order of first appearance.
pub fn power_series(trace: &Trace) -> Vec<Series> {
    let mut devices: Vec<&str> = Vec::new();
    for c in &trace.channels {
        if matches!(c.spec.quantity, Quantity::Power | Quantity::Energy)
            && !devices.contains(&c.spec.device.as_str())
        {
            devices.push(&c.spec.device);
        }
    }
    let mut out = Vec::new();
    for dev in devices {
        let best = trace
            .channels
            .iter()
            .filter(|c| {
                c.spec.device == dev && c.spec.quantity == Quantity::Power && !c.t_ns.is_empty()
            })
            .min_by_key(|c| method_rank(c.spec.method));
        if let Some(c) = best {
            let (t, v) = with_breaks(trace, c, c.t_ns.clone(), c.values.clone());
            out.push(Series {
                channel: c.spec.name.clone(),
                device: dev.to_owned(),
                label: format!("{dev} power ({})", method_words(c.spec.method)),
                unit: "W".into(),
                t_ns: t,
                values: v,
            });
            continue;
        }
        let counter = trace.channels.iter().find(|c| {
            c.spec.device == dev
                && c.spec.quantity == Quantity::Energy
                && matches!(c.spec.kind, ChannelKind::Counter(_))
        });
        if let Some(c) = counter
            && let Some((t, v)) = counter_power(c)
        {
            out.push(Series {
                channel: c.spec.name.clone(),
                device: dev.to_owned(),
                label: format!("{dev} power (from energy counter)"),
                unit: "W".into(),
                t_ns: t,
                values: v,
            });
        }
    }
    out
}

/// Utilisation and activity gauges (GPU utilisation, SM / tensor / DRAM activity, host CPU
/// utilisation), in %, in header order; then the CPU time counters of devices without a
/// utilisation gauge (the traced process tree's `proc.cpu_time`, the channel CPU verdicts
/// are made from) as a rate in cores (unit `cores`: 1.5 = one and a half cores busy).
pub fn activity_series(trace: &Trace) -> Vec<Series> {
    let mut out: Vec<Series> = trace
        .channels
        .iter()
        .filter(|c| {
            matches!(c.spec.quantity, Quantity::Utilization | Quantity::Activity)
                && matches!(c.spec.kind, ChannelKind::Gauge)
                && !c.t_ns.is_empty()
        })
        .map(|c| {
            let (t, v) = with_breaks(trace, c, c.t_ns.clone(), c.values.clone());
            let what = c
                .spec
                .name
                .strip_prefix(&format!("{}.", c.spec.device))
                .unwrap_or(&c.spec.name);
            Series {
                channel: c.spec.name.clone(),
                device: c.spec.device.clone(),
                label: format!("{} {}", c.spec.device, what.replace('_', " ")),
                unit: c.spec.unit.symbol().to_owned(),
                t_ns: t,
                values: v,
            }
        })
        .collect();
    for c in &trace.channels {
        if c.spec.quantity != Quantity::CpuTime
            || !matches!(c.spec.kind, ChannelKind::Counter(_))
            || out.iter().any(|s| s.device == c.spec.device)
        {
            continue;
        }
        // Ten ticks at least: CPU time advances in 10 ms ticks, so shorter windows only
        // show the quantisation.
        let window = c
            .spec
            .update_period_ns
            .unwrap_or(0)
            .saturating_mul(10)
            .max(100_000_000);
        if let Some((t, v)) = counter_rate(c, window) {
            out.push(Series {
                channel: c.spec.name.clone(),
                device: c.spec.device.clone(),
                label: format!("{} CPU time (cores, right axis)", c.spec.device),
                unit: CORES.into(),
                t_ns: t,
                values: v,
            });
        }
    }
    out
}

/// The unit of a CPU time rate line: cores busy (drawn against an axis of its own).
pub const CORES: &str = "cores";

/// Keeps at most about `2 × buckets` points of a line inside `[lo_ns, hi_ns]`: the first,
/// smallest, largest and last point of each time bucket, in time order, so peaks and dips
/// survive (a trace of hours at 10 ms has millions of samples; a picture has ~1000 pixel
/// columns). Breaks (NaN) are kept.
pub fn decimate(t: &[u64], v: &[f64], lo_ns: u64, hi_ns: u64, buckets: usize) -> Vec<(u64, f64)> {
    let start = t.partition_point(|&x| x < lo_ns).saturating_sub(1);
    let end = (t.partition_point(|&x| x <= hi_ns) + 1).min(t.len());
    let n = end.saturating_sub(start);
    if n <= buckets.saturating_mul(4) || hi_ns <= lo_ns {
        return (start..end).map(|i| (t[i], v[i])).collect();
    }
    let width = ((hi_ns - lo_ns) / buckets as u64).max(1);
    let bucket_of = |x: u64| x.saturating_sub(lo_ns) / width;
    let mut out = Vec::with_capacity(buckets * 4);
    let mut i = start;
    while i < end {
        let b = bucket_of(t[i]);
        let mut j = i;
        let (mut min_i, mut max_i) = (None::<usize>, None::<usize>);
        let mut has_nan = None;
        while j < end && bucket_of(t[j]) == b {
            let x = v[j];
            if x.is_nan() {
                has_nan.get_or_insert(j);
            } else {
                if min_i.is_none_or(|m| x < v[m]) {
                    min_i = Some(j);
                }
                if max_i.is_none_or(|m| x > v[m]) {
                    max_i = Some(j);
                }
            }
            j += 1;
        }
        let mut keep = vec![i, j - 1];
        keep.extend(min_i);
        keep.extend(max_i);
        keep.extend(has_nan);
        keep.sort_unstable();
        keep.dedup();
        out.extend(keep.into_iter().map(|k| (t[k], v[k])));
        i = j;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimation_keeps_extremes_and_order() {
        let t: Vec<u64> = (0..100_000).collect();
        let mut v: Vec<f64> = t.iter().map(|&x| (x % 7) as f64).collect();
        v[50_000] = 1000.0;
        v[70_000] = -5.0;
        let d = decimate(&t, &v, 0, 99_999, 100);
        assert!(d.len() <= 100 * 4 + 8, "{}", d.len());
        assert!(d.windows(2).all(|w| w[0].0 <= w[1].0));
        assert!(d.iter().any(|p| p.1 == 1000.0));
        assert!(d.iter().any(|p| p.1 == -5.0));
        assert_eq!(d.first().unwrap().0, 0);
        assert_eq!(d.last().unwrap().0, 99_999);
        // few points: untouched
        assert_eq!(decimate(&t[..10], &v[..10], 0, 9, 100).len(), 10);
    }

    #[test]
    fn window_mean_interpolates_between_samples() {
        let s = Series {
            channel: "c".into(),
            device: "d".into(),
            label: "l".into(),
            unit: "W".into(),
            t_ns: vec![0, 100, 200],
            values: vec![0.0, 100.0, 100.0],
        };
        assert_eq!(s.window_mean(0, 100), Some(50.0));
        assert_eq!(s.window_mean(100, 200), Some(100.0));
        assert_eq!(s.window_mean(50, 150), Some(87.5));
        assert_eq!(s.window_mean(300, 400), None);
        assert_eq!(s.mean_in(0, 150), (Some(50.0), 2));
    }
}

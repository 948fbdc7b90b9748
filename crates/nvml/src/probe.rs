//! `flinch sources --probe`: what a GPU's sensors can resolve, measured on the spot: the
//! cost of one read of each channel and how often its value actually changes.

use crate::ffi;
use flinch_core::clock::{monotonic_ns, realtime_ns};
use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::Clock;

/// What was measured for one channel.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChannelProbe {
    /// The channel (`gpu0.power_instant`).
    pub channel: String,
    /// Median cost of one read, ns.
    pub read_cost_ns: u64,
    /// Median interval between changes of the value, ns (`None`: it never changed).
    pub change_interval_ns: Option<u64>,
    /// Value changes seen.
    pub changes: usize,
    /// Reads made.
    pub reads: usize,
    /// Anything else worth saying (buffer depth and spacing, ...).
    pub note: String,
}

fn median(v: &mut [u64]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    Some(v[v.len() / 2])
}

/// Polls `read` for `seconds` (at most every `min_gap_ns`), timing each read and noting
/// when the value changes.
fn measure(
    channel: String,
    seconds: f64,
    min_gap_ns: u64,
    mut read: impl FnMut() -> Option<f64>,
) -> ChannelProbe {
    let end = monotonic_ns() + (seconds * 1e9) as u64;
    let mut costs = Vec::new();
    let mut change_at = Vec::new();
    let mut last: Option<f64> = None;
    while monotonic_ns() < end {
        let a = monotonic_ns();
        let v = read();
        let b = monotonic_ns();
        costs.push(b - a);
        if let Some(v) = v {
            if last.is_some_and(|l| l != v) {
                change_at.push(b);
            }
            last = Some(v);
        }
        let next = a + min_gap_ns;
        while monotonic_ns() < next {
            std::hint::spin_loop();
        }
    }
    let mut gaps: Vec<u64> = change_at.windows(2).map(|w| w[1] - w[0]).collect();
    ChannelProbe {
        channel,
        read_cost_ns: median(&mut costs).unwrap_or(0),
        change_interval_ns: median(&mut gaps),
        changes: change_at.len(),
        reads: costs.len(),
        note: String::new(),
    }
}

/// Probes one GPU for about `seconds`.
pub fn probe_gpu(nvml: &'static Nvml, index: u32, device: &str, seconds: f64) -> Vec<ChannelProbe> {
    let Ok(dev) = nvml.device_by_index(index) else {
        return Vec::new();
    };
    let raw = ffi::RawDevice::new(nvml, &dev);
    let mut out = Vec::new();
    let s = seconds.max(0.5);
    let mut f = [ffi::field_request(crate::sources::FI_POWER_INSTANT)];
    if raw.field_values(&mut f).is_ok() && ffi::field_number(&f[0]).is_some() {
        out.push(measure(
            format!("{device}.power_instant"),
            s * 0.25,
            500_000,
            || {
                f[0] = ffi::field_request(crate::sources::FI_POWER_INSTANT);
                raw.field_values(&mut f)
                    .ok()
                    .and_then(|_| ffi::field_number(&f[0]))
            },
        ));
    }
    if dev.power_usage().is_ok() {
        out.push(measure(
            format!("{device}.power_avg1s"),
            s * 0.15,
            500_000,
            || dev.power_usage().ok().map(|v| v as f64),
        ));
    }
    if dev.total_energy_consumption().is_ok() {
        out.push(measure(
            format!("{device}.energy"),
            s * 0.25,
            1_000_000,
            || dev.total_energy_consumption().ok().map(|v| v as f64),
        ));
    }
    if dev.utilization_rates().is_ok() {
        out.push(measure(
            format!("{device}.util_gpu"),
            s * 0.1,
            1_000_000,
            || dev.utilization_rates().ok().map(|u| u.gpu as f64),
        ));
    }
    if dev.clock_info(Clock::SM).is_ok() {
        out.push(measure(
            format!("{device}.sm_clock"),
            s * 0.05,
            1_000_000,
            || dev.clock_info(Clock::SM).ok().map(|v| v as f64),
        ));
    }
    // The driver buffer: the cost of draining all of it, its depth and sample spacing.
    let mut buf = Vec::with_capacity(crate::sources::BUFFER_CAPACITY);
    let mut costs = Vec::new();
    let mut depth = 0;
    let mut spacing = None;
    let mut age_ns = 0i64;
    for _ in 0..10 {
        let a = monotonic_ns();
        let ok = raw.power_samples(0, &mut buf).is_ok();
        costs.push(monotonic_ns() - a);
        if ok && !buf.is_empty() {
            depth = buf.len();
            let mut d: Vec<u64> = buf
                .windows(2)
                .map(|w| w[1].timeStamp.saturating_sub(w[0].timeStamp) * 1000)
                .collect();
            spacing = median(&mut d);
            age_ns = realtime_ns() - buf[buf.len() - 1].timeStamp as i64 * 1000;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    if depth > 0 {
        out.push(ChannelProbe {
            channel: format!("{device}.power_samples"),
            read_cost_ns: median(&mut costs).unwrap_or(0),
            change_interval_ns: spacing,
            changes: depth,
            reads: costs.len(),
            note: format!(
                "buffer holds {depth} samples ({:.2} s); newest was {:.1} ms old when drained",
                depth as f64 * spacing.unwrap_or(0) as f64 / 1e9,
                age_ns as f64 / 1e6
            ),
        });
    }
    if dev.gpm_support().unwrap_or(false) {
        let mut costs = Vec::new();
        for _ in 0..20 {
            let a = monotonic_ns();
            let _ = dev.gpm_sample();
            costs.push(monotonic_ns() - a);
        }
        out.push(ChannelProbe {
            channel: format!("{device}.sm_active"),
            read_cost_ns: median(&mut costs).unwrap_or(0),
            change_interval_ns: None,
            changes: 0,
            reads: costs.len(),
            note: "GPM sample (all four GPM channels come from one sample pair)".into(),
        });
    }
    out
}

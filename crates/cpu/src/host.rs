//! Host CPU time and utilisation from `/proc/stat`.

use crate::error::CpuError;
use crate::{BACKEND, MIN_INTERVAL, counter_spec, tick_ns, ticks_per_second};
use flinch_core::{ChannelSpec, DeviceClass, Quantity, Readings, Source, SourceError, SourceInfo};
use procfs::{CurrentSI, KernelStats};
use std::time::Duration;

pub(crate) fn host_info(cpus: usize) -> SourceInfo {
    SourceInfo::new("cpu.host", BACKEND, DeviceClass::Cpu)
        .with_channels(vec![
            ChannelSpec::gauge("host", "cpu_util", Quantity::Utilization)
                .with_update_period_ns(tick_ns())
                .with_description("busy share of all CPUs since the previous poll (/proc/stat)"),
            ChannelSpec::counter("host", "cpu_busy_s", Quantity::CpuTime, counter_spec(cpus))
                .with_update_period_ns(tick_ns())
                .with_description(
                    "busy CPU time summed over CPUs (user+nice+system+irq+softirq); rate = cores busy",
                ),
        ])
        .with_attribute("cpus", cpus.to_string())
        .with_attribute("ticks_per_second", ticks_per_second().to_string())
}

/// The number of CPUs `/proc/stat` lists.
pub fn cpu_count() -> Result<usize, CpuError> {
    Ok(KernelStats::current()
        .map_err(|e| CpuError::read("/proc/stat", e))?
        .cpu_time
        .len())
}

/// Host CPU time from `/proc/stat`: channels `host.cpu_util` (%) and `host.cpu_busy_s`
/// (CPU-seconds, a counter).
pub struct HostCpu {
    info: SourceInfo,
    interval: Duration,
    tps: f64,
    prev: Option<(u64, u64)>,
}

impl HostCpu {
    /// Opens `/proc/stat`; polled every `interval` (at least 20 ms: the counters tick at
    /// 100 Hz).
    pub fn open(interval: Duration) -> Result<Self, CpuError> {
        Ok(HostCpu {
            info: host_info(cpu_count()?),
            interval: interval.max(MIN_INTERVAL),
            tps: ticks_per_second(),
            prev: None,
        })
    }
}

impl Source for HostCpu {
    fn info(&self) -> &SourceInfo {
        &self.info
    }
    fn poll(&mut self, out: &mut Readings<'_>) -> Result<(), SourceError> {
        let ks = KernelStats::current().map_err(|e| CpuError::read("/proc/stat", e))?;
        let t = out.now_ns();
        let c = &ks.total;
        let busy = c.user + c.nice + c.system + c.irq.unwrap_or(0) + c.softirq.unwrap_or(0);
        let total = busy + c.idle + c.iowait.unwrap_or(0) + c.steal.unwrap_or(0);
        if let Some((pb, pt)) = self.prev {
            let dt = total.saturating_sub(pt);
            if dt > 0 {
                let util = busy.saturating_sub(pb) as f64 / dt as f64 * 100.0;
                out.push(0, t, util.clamp(0.0, 100.0));
            }
        }
        out.push(1, t, busy as f64 / self.tps);
        self.prev = Some((busy, total));
        Ok(())
    }
    fn interval(&self) -> Option<Duration> {
        Some(self.interval)
    }
}

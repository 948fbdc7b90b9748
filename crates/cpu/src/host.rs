//! Host CPU time and utilisation from `/proc/stat`.

use crate::error::CpuError;
use crate::{BACKEND, MIN_INTERVAL, counter_spec, tick_ns, ticks_per_second};
use flinch_core::{ChannelSpec, DeviceClass, Quantity, Readings, Source, SourceError, SourceInfo};
use procfs::{CurrentSI, KernelStats, ProcError};
use std::time::Duration;

pub(crate) fn host_info(cpus: usize, interval: Duration) -> SourceInfo {
    SourceInfo::new("cpu.host", BACKEND, DeviceClass::Cpu)
        .with_channels(vec![
            // A share between two polls: it describes the poll interval before its stamp.
            ChannelSpec::gauge("host", "cpu_util", Quantity::Utilization)
                .with_update_period_ns((interval.as_nanos() as u64).max(tick_ns()))
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
    /// `/proc/stat`, kept open and re-read from its start at each poll.
    file: std::fs::File,
    buf: Vec<u8>,
}

impl HostCpu {
    /// Opens `/proc/stat`; polled every `interval` (at least 20 ms: the counters tick at
    /// 100 Hz).
    pub fn open(interval: Duration) -> Result<Self, CpuError> {
        let file = std::fs::File::open("/proc/stat")
            .map_err(|e| CpuError::read("/proc/stat", ProcError::from(e)))?;
        let interval = interval.max(MIN_INTERVAL);
        Ok(HostCpu {
            info: host_info(cpu_count()?, interval),
            interval,
            tps: ticks_per_second(),
            prev: None,
            file,
            buf: vec![0; 4096],
        })
    }
}

/// `(busy, total)` ticks from the first line of `/proc/stat` (`cpu  user nice system idle
/// iowait irq softirq steal ...`): busy = user + nice + system + irq + softirq, total =
/// busy + idle + iowait + steal (guest time is already inside user and nice).
///
/// procfs parses every line of the file into new allocations (~30 µs a poll measured on
/// a 2-CPU VM, more with more CPUs); one line of integers read into a buffer kept between
/// polls costs next to nothing beyond the kernel's own work of making the file.
pub fn parse_stat_total(text: &[u8]) -> Option<(u64, u64)> {
    let line = text.split(|&b| b == b'\n').next()?;
    let mut f = line
        .split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty());
    if f.next()? != b"cpu" {
        return None;
    }
    let mut v = [0u64; 8];
    let mut n = 0;
    for (slot, w) in v.iter_mut().zip(f) {
        *slot = std::str::from_utf8(w).ok()?.parse().ok()?;
        n += 1;
    }
    if n < 4 {
        return None; // user nice system idle at least
    }
    let [user, nice, system, idle, iowait, irq, softirq, steal] = v;
    let busy = user + nice + system + irq + softirq;
    Some((busy, busy + idle + iowait + steal))
}

impl Source for HostCpu {
    fn info(&self) -> &SourceInfo {
        &self.info
    }
    fn poll(&mut self, out: &mut Readings<'_>) -> Result<(), SourceError> {
        use std::os::unix::fs::FileExt;
        let n = self
            .file
            .read_at(&mut self.buf, 0)
            .map_err(|e| CpuError::read("/proc/stat", ProcError::from(e)))?;
        let t = out.now_ns();
        let (busy, total) = parse_stat_total(&self.buf[..n]).ok_or_else(|| {
            SourceError::new(
                flinch_core::ErrorKind::Other,
                BACKEND,
                "/proc/stat: its first line is not `cpu  user nice system idle ...`",
            )
        })?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_line_of_proc_stat_gives_busy_and_total_ticks() {
        let text = b"cpu  100 5 50 1000 20 3 2 7 0 0\ncpu0 50 2 25 500 10 1 1 3 0 0\nintr 1 2 3\n";
        // busy = 100 + 5 + 50 + 3 + 2; total = busy + 1000 + 20 + 7
        assert_eq!(parse_stat_total(text), Some((160, 1187)));
        // old kernels: fewer columns
        assert_eq!(parse_stat_total(b"cpu 1 2 3 4\n"), Some((6, 10)));
        assert_eq!(parse_stat_total(b"cpu0 1 2 3 4\n"), None);
        assert_eq!(parse_stat_total(b"cpu 1 2 x 4\n"), None);
        assert_eq!(parse_stat_total(b"cpu 1 2\n"), None);
        assert_eq!(parse_stat_total(b""), None);
        // the same totals as procfs on this machine's own file, read a moment apart
        let ks = KernelStats::current().unwrap();
        let text = std::fs::read("/proc/stat").unwrap();
        let (busy, total) = parse_stat_total(&text).unwrap();
        let c = &ks.total;
        let busy_p = c.user + c.nice + c.system + c.irq.unwrap_or(0) + c.softirq.unwrap_or(0);
        let slack = 10 * ks.cpu_time.len() as u64;
        assert!(busy.abs_diff(busy_p) <= slack, "{busy} vs {busy_p}");
        assert!(total >= busy);
    }
}

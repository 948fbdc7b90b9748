//! What machine a recording is made on, for the trace header ([`MachineInfo`]): CPU model,
//! logical CPUs, physical cores, memory, OS and kernel, read once at the start through the
//! `sysinfo` crate.
//!
//! sysinfo describes the machine only. CPU *time* (the `cpu` source, `flinch-cpu`) is read
//! with procfs: sysinfo's CPU refresh skips re-reading `/proc/stat` when the previous read is
//! less than 200 ms old (`sysinfo::MINIMUM_CPU_UPDATE_INTERVAL`), which would silently repeat
//! values at flinch's 10-ms cadence.
//!
//! ```
//! let m = flinch_record::host::describe_machine();
//! # #[cfg(target_os = "linux")]
//! assert!(m.logical_cpus.unwrap_or(0) >= 1);
//! ```

use flinch_core::trace::MachineInfo;
use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};

/// Describes this machine. Whatever the OS does not say is left `None`; this never fails. It
/// reads a few small files (`/proc/cpuinfo`, `/proc/stat`, `/proc/meminfo`,
/// `/etc/os-release`): 0.4–0.9 ms in a debug build on a 2-vCPU VM. The recorder calls it
/// once, before sampling starts.
pub fn describe_machine() -> MachineInfo {
    let mut m = MachineInfo::default();
    let nonempty = |s: String| {
        let s = s.trim().to_owned();
        (!s.is_empty()).then_some(s)
    };
    let refresh = RefreshKind::nothing()
        .with_cpu(CpuRefreshKind::nothing())
        .with_memory(MemoryRefreshKind::nothing().with_ram());
    if let Ok(sys) = System::new_with_specifics(refresh) {
        let cpus = sys.cpus();
        m.cpu_model = cpus.first().and_then(|c| nonempty(c.brand().to_owned()));
        m.logical_cpus = (!cpus.is_empty()).then_some(cpus.len() as u32);
        m.memory_bytes = Some(sys.total_memory()).filter(|&b| b > 0);
    }
    m.physical_cores = System::physical_core_count()
        .ok()
        .filter(|&n| n > 0)
        .map(|n| n as u32);
    m.os = System::name().ok().and_then(nonempty);
    m.os_version = System::os_version().ok().and_then(nonempty);
    m.kernel = System::kernel_long_version().ok().and_then(nonempty);
    m.arch = nonempty(System::cpu_arch());
    m
}

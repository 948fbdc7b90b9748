//! The only place that names every backend.
//!
//! Each backend has a file here implementing [`Backend`]: what it would offer on this
//! machine (`flinch sources`), and opening its sources for a recording. A backend that is
//! unavailable says why (library missing, no powercap tree, permission) in its
//! [`BackendStatus::reason`]; when it was asked for explicitly that reason is the error.

mod cpu;
mod dcgm;
mod nvml;
mod rapl;
mod synthetic;

use flinch_core::{Source, SourceError, SourceInfo};
use flinch_record::synthetic::SyntheticConfig;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// Options that backends read, shared by `sources`, `record` and `calibrate`.
#[derive(Clone, Debug, Default)]
#[allow(dead_code)] // each field is read by the backend it names, as the backends land
pub struct BackendOptions {
    /// The fast sampling interval of the recording.
    pub interval: Duration,
    /// The synthetic source's schedule.
    pub synthetic: SyntheticConfig,
    /// `--rapl-root DIR`: the powercap tree (default `/sys/class/powercap`).
    pub rapl_root: Option<PathBuf>,
    /// `--nvml-lib PATH`: libnvidia-ml to load instead of `libnvidia-ml.so.1`.
    pub nvml_lib: Option<PathBuf>,
    /// `--gpus LIST`: GPU indices or UUIDs (comma-separated); `None` = all.
    pub gpus: Option<Vec<String>>,
    /// `--cuda-visible-devices`: restrict GPUs to `CUDA_VISIBLE_DEVICES`.
    pub cuda_visible_devices: bool,
    /// `--nvml-average-power`: also record NVML's 1-s average power (off by default).
    pub nvml_average_power: bool,
    /// `--nvml-energy-interval`: how often the NVML energy counter is read.
    pub nvml_energy_interval: Duration,
    /// `--dcgm-lib PATH`: libdcgm to load instead of `libdcgm.so.4` / `.so.3`.
    pub dcgm_lib: Option<PathBuf>,
    /// `--dcgm-host ADDR`: host engine address (`127.0.0.1`, `host:5555`, `unix:///path`);
    /// `None` = start an embedded engine.
    pub dcgm_host: Option<String>,
    /// `--pid PID`: a process whose tree's CPU time the `cpu` source records.
    pub pid: Option<u32>,
    /// Whether `sources --probe` asked for measured read costs and update periods.
    pub probe: bool,
    /// The wrapped command's pid once `record` has started it (0 until then), for sources
    /// that follow the command's process tree.
    pub command_pid: Arc<AtomicU32>,
    /// Whether `record` will wrap a command (sources that follow it open for it).
    pub wraps_command: bool,
}

/// What a backend would offer here.
#[derive(Clone, Debug, Serialize)]
pub struct BackendStatus {
    /// Backend name as used with `--source`.
    pub name: &'static str,
    /// One line on what it measures.
    pub summary: &'static str,
    /// Whether `record --source NAME` would work now.
    pub available: bool,
    /// Why not (and what to do), when unavailable.
    pub reason: Option<String>,
    /// The sources it would open, with their channels.
    pub sources: Vec<SourceInfo>,
    /// Extra facts (wrap bounds, probed read costs, channels absent and why).
    pub notes: Vec<String>,
}

impl BackendStatus {
    /// An unavailable backend.
    pub fn unavailable(
        name: &'static str,
        summary: &'static str,
        reason: impl Into<String>,
    ) -> Self {
        BackendStatus {
            name,
            summary,
            available: false,
            reason: Some(reason.into()),
            sources: Vec::new(),
            notes: Vec::new(),
        }
    }
}

/// One backend, as the CLI sees it.
pub trait Backend {
    /// The name used with `--source`.
    fn name(&self) -> &'static str;
    /// What it would offer here (never fails: unavailability is a status).
    fn status(&self, opts: &BackendOptions) -> BackendStatus;
    /// Opens its sources for a recording.
    fn open(&self, opts: &BackendOptions) -> Result<Vec<Box<dyn Source>>, SourceError>;
    /// Whether `record` with no `--source` uses it when available (the synthetic source is
    /// only used when asked for, or when nothing else is available).
    fn default_on(&self) -> bool {
        true
    }
}

/// Every backend, in the order `flinch sources` lists them.
pub fn all() -> Vec<Box<dyn Backend>> {
    vec![
        Box::new(nvml::Nvml),
        Box::new(dcgm::Dcgm::default()),
        Box::new(rapl::Rapl),
        Box::new(cpu::Cpu),
        Box::new(synthetic::Synthetic),
    ]
}

/// The names accepted by `--source`.
pub fn names() -> Vec<&'static str> {
    all().iter().map(|b| b.name()).collect()
}

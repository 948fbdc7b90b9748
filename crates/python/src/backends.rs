//! The backends the package records, built from the keyword arguments of `Recorder` and
//! `calibrate`, and opened as `flinch record --source NAME` opens them.

use flinch_core::backend::{Backend, BackendContext};
use flinch_core::{ErrorKind, Source, SourceError};
use flinch_cpu::{Cpu, CpuConfig, ProcessTarget};
use flinch_dcgm::{Dcgm, DcgmConfig};
use flinch_nvml::{Nvml, NvmlConfig};
use flinch_rapl::{Rapl, RaplConfig};
use flinch_record::synthetic::{Synthetic, SyntheticConfig};
use std::path::PathBuf;
use std::time::Duration;

/// The backends, in the order `sources=None` tries them (the synthetic source only when
/// nothing else is available).
pub const NAMES: [&str; 5] = ["nvml", "dcgm", "rapl", "cpu", "synthetic"];

/// Options the backends read.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The fast sampling interval.
    pub interval: Duration,
    /// The synthetic source's schedule (`60W/1s,300W/1s;class=gpu`).
    pub synthetic: Option<String>,
    /// The powercap tree RAPL reads (default `/sys/class/powercap`).
    pub rapl_root: Option<PathBuf>,
    /// libnvidia-ml to load instead of `libnvidia-ml.so.1`.
    pub nvml_lib: Option<PathBuf>,
    /// GPU indices or UUIDs (NVML), DCGM ids (DCGM); `None`: every GPU.
    pub gpus: Option<Vec<String>>,
    /// How often the NVML energy counter is read; `None`: the backend's default.
    pub nvml_energy_interval: Option<Duration>,
    /// libdcgm to load instead of `libdcgm.so.4` / `.so.3`.
    pub dcgm_lib: Option<PathBuf>,
    /// A running DCGM host engine (`None`: start one embedded).
    pub dcgm_host: Option<String>,
    /// The process whose tree's CPU time the `cpu` source records (`None`: this process).
    pub pid: Option<u32>,
}

fn invalid(backend: &str, message: String) -> SourceError {
    SourceError::new(ErrorKind::InvalidInput, backend, message)
}

/// Builds the backend named `name` from the options.
fn build(name: &str, o: &Options) -> Result<Box<dyn Backend>, SourceError> {
    Ok(match name {
        "synthetic" => {
            let cfg: SyntheticConfig = match &o.synthetic {
                Some(s) => s.parse().map_err(|e: String| invalid("synthetic", e))?,
                None => SyntheticConfig::default(),
            };
            Box::new(Synthetic::new(cfg))
        }
        "rapl" => {
            let mut c = RaplConfig::default();
            if let Some(root) = &o.rapl_root {
                c.root = root.clone();
            }
            Box::new(Rapl::new(c))
        }
        "nvml" => {
            let d = NvmlConfig::default();
            Box::new(Nvml::new(NvmlConfig {
                lib_path: o.nvml_lib.clone(),
                gpus: o.gpus.clone(),
                energy_interval: o.nvml_energy_interval.unwrap_or(d.energy_interval),
                ..d
            }))
        }
        "dcgm" => {
            let gpus = match &o.gpus {
                None => None,
                Some(list) => Some(
                    list.iter()
                        .map(|g| {
                            g.trim().parse::<u32>().map_err(|_| {
                                invalid(
                                    "dcgm",
                                    format!(
                                        "gpus {g:?}: DCGM selects GPUs by DCGM GPU id (a number, \
                                         see `dcgmi discovery -l`)"
                                    ),
                                )
                            })
                        })
                        .collect::<Result<Vec<u32>, _>>()?,
                ),
            };
            Box::new(Dcgm::new(DcgmConfig {
                library: o.dcgm_lib.clone(),
                host: o.dcgm_host.clone(),
                gpus,
                ..DcgmConfig::default()
            }))
        }
        "cpu" => {
            // In-process, the traced process tree is this Python process (and its children).
            let pid = o.pid.unwrap_or_else(std::process::id);
            Box::new(Cpu::new(CpuConfig::new(ProcessTarget::Pid(pid))))
        }
        other => {
            return Err(invalid(
                "flinch",
                format!(
                    "unknown source {other:?}: expected one of {}",
                    NAMES.join(", ")
                ),
            ));
        }
    })
}

/// What was opened: the sources, the backends they came from, and notes on backends that
/// were skipped (when none was named).
pub struct Opened {
    /// The sources.
    pub sources: Vec<Box<dyn Source>>,
    /// The backend names used.
    pub used: Vec<String>,
    /// Why a backend was skipped, or that the synthetic source stands in.
    pub notes: Vec<String>,
}

/// Opens the sources named (each must open), or every available one when `requested` is
/// empty, falling back to the synthetic source when no hardware source is available.
pub fn open(requested: &[String], o: &Options) -> Result<Opened, SourceError> {
    let ctx = BackendContext::new(o.interval);
    let mut out = Opened {
        sources: Vec::new(),
        used: Vec::new(),
        notes: Vec::new(),
    };
    let mut names: Vec<&str> = Vec::new();
    for n in requested {
        if !names.contains(&n.as_str()) {
            names.push(n);
        }
    }
    if names.is_empty() {
        for name in NAMES {
            let b = match build(name, o) {
                Ok(b) if b.default_on() => b,
                Ok(_) => continue,
                Err(e) => {
                    out.notes.push(format!("{name}: {}", e.message));
                    continue;
                }
            };
            match b.open(&ctx) {
                Ok(s) if !s.is_empty() => {
                    out.sources.extend(s);
                    out.used.push(name.to_owned());
                }
                Ok(_) => out.notes.push(format!("{name}: nothing to record here")),
                Err(e) => out.notes.push(format!("{name}: {}", e.message)),
            }
        }
        if out.sources.is_empty() {
            out.notes.push(
                "no hardware source is available here; recording the synthetic source".into(),
            );
            names.push("synthetic");
        }
    }
    for name in names {
        let s = build(name, o)?.open(&ctx)?;
        if s.is_empty() {
            return Err(SourceError::new(
                ErrorKind::NotAvailable,
                name,
                "found nothing to record here",
            ));
        }
        out.sources.extend(s);
        out.used.push(name.to_owned());
    }
    Ok(out)
}

//! Opening sources by backend name, as `flinch record --source NAME` does.

use flinch_core::clock::MonotonicClock;
use flinch_core::{ErrorKind, Source, SourceError};
use flinch_nvml::{NvmlBackend, NvmlConfig};
use flinch_rapl::RaplConfig;
use flinch_record::synthetic::{SyntheticConfig, SyntheticSource};
use std::path::PathBuf;
use std::time::Duration;

/// The backends the Python package can record, in the order `sources=None` tries them.
pub const NAMES: [&str; 3] = ["nvml", "rapl", "synthetic"];

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
    /// GPU indices or UUIDs; `None`: every GPU.
    pub gpus: Option<Vec<String>>,
    /// How often the NVML energy counter is read; `None`: the backend's default.
    pub nvml_energy_interval: Option<Duration>,
}

fn open_one(name: &str, o: &Options) -> Result<Vec<Box<dyn Source>>, SourceError> {
    match name {
        "synthetic" => {
            let cfg: SyntheticConfig = match &o.synthetic {
                Some(s) => s.parse().map_err(|e: String| {
                    SourceError::new(ErrorKind::InvalidInput, "synthetic", e)
                })?,
                None => SyntheticConfig::default(),
            };
            Ok(vec![Box::new(SyntheticSource::new(cfg, &MonotonicClock))])
        }
        "rapl" => {
            let mut c = RaplConfig {
                interval: o.interval,
                ..RaplConfig::default()
            };
            if let Some(root) = &o.rapl_root {
                c.root = root.clone();
            }
            Ok(flinch_rapl::open(&c)?.into_sources())
        }
        "nvml" => {
            let d = NvmlConfig::default();
            let cfg = NvmlConfig {
                lib_path: o.nvml_lib.clone(),
                gpus: o.gpus.clone(),
                energy_interval: o.nvml_energy_interval.unwrap_or(d.energy_interval),
                ..d
            };
            NvmlBackend::open(cfg)?.sources()
        }
        "cpu" | "dcgm" => Err(SourceError::new(
            ErrorKind::NotSupported,
            name,
            format!(
                "the {name} source is not in the Python package yet; record it with \
                 `flinch record --source {name}` and read the trace with flinch.read_trace"
            ),
        )),
        other => Err(SourceError::new(
            ErrorKind::InvalidInput,
            "flinch",
            format!(
                "unknown source {other:?}: expected one of {}",
                NAMES.join(", ")
            ),
        )),
    }
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
    let mut out = Opened {
        sources: Vec::new(),
        used: Vec::new(),
        notes: Vec::new(),
    };
    if requested.is_empty() {
        for name in NAMES.iter().filter(|n| **n != "synthetic") {
            match open_one(name, o) {
                Ok(s) if !s.is_empty() => {
                    out.sources.extend(s);
                    out.used.push((*name).to_owned());
                }
                Ok(_) => out.notes.push(format!("{name}: nothing to record here")),
                Err(e) => out.notes.push(format!("{name}: {}", e.message)),
            }
        }
        if out.sources.is_empty() {
            out.notes.push(
                "no hardware source is available here; recording the synthetic source".into(),
            );
            out.sources.extend(open_one("synthetic", o)?);
            out.used.push("synthetic".into());
        }
        return Ok(out);
    }
    for name in requested {
        if out.used.contains(name) {
            continue;
        }
        let s = open_one(name, o)?;
        if s.is_empty() {
            return Err(SourceError::new(
                ErrorKind::NotAvailable,
                name.clone(),
                "found nothing to record here",
            ));
        }
        out.sources.extend(s);
        out.used.push(name.clone());
    }
    Ok(out)
}

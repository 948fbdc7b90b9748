//! NVIDIA GPUs through NVML.

use super::{Backend, BackendOptions, BackendStatus};
use flinch_core::{ErrorKind, Source, SourceError};
use flinch_nvml::{NvmlBackend, NvmlConfig};

pub struct Nvml;

const SUMMARY: &str =
    "NVIDIA GPUs through NVML: driver power samples, instant power, energy counter, activity";

fn config(opts: &BackendOptions) -> Result<NvmlConfig, SourceError> {
    let cuda_visible_devices = if opts.cuda_visible_devices {
        Some(std::env::var("CUDA_VISIBLE_DEVICES").map_err(|_| {
            SourceError::new(
                ErrorKind::InvalidInput,
                "nvml",
                "--cuda-visible-devices given but CUDA_VISIBLE_DEVICES is not set",
            )
        })?)
    } else {
        None
    };
    Ok(NvmlConfig {
        lib_path: opts.nvml_lib.clone(),
        gpus: opts.gpus.clone(),
        cuda_visible_devices,
        average_power: opts.nvml_average_power,
        instant_interval: opts.interval_given.then_some(opts.interval),
        buffer_interval: if opts.nvml_buffer_interval.is_zero() {
            NvmlConfig::default().buffer_interval
        } else {
            opts.nvml_buffer_interval
        },
        // zero only when options were built by hand: keep the default then
        energy_interval: if opts.nvml_energy_interval.is_zero() {
            NvmlConfig::default().energy_interval
        } else {
            opts.nvml_energy_interval
        },
        ..Default::default()
    })
}

fn fmt_ns(ns: u64) -> String {
    if ns >= 1_000_000 {
        format!("{:.1} ms", ns as f64 / 1e6)
    } else {
        format!("{:.1} us", ns as f64 / 1e3)
    }
}

impl Backend for Nvml {
    fn name(&self) -> &'static str {
        "nvml"
    }
    fn status(&self, opts: &BackendOptions) -> BackendStatus {
        let backend = match config(opts).and_then(NvmlBackend::open) {
            Ok(b) => b,
            Err(e) => return BackendStatus::unavailable("nvml", SUMMARY, e.message),
        };
        let mut notes = backend.notes();
        for g in backend.gpus() {
            let a = &g.attributes;
            let get = |k: &str| a.get(k).map(String::as_str).unwrap_or("?");
            notes.push(format!(
                "{}: {} {} (driver {}, power limit {} W)",
                g.device,
                get("name"),
                get("uuid"),
                get("driver_version"),
                get("power_limit_w")
            ));
        }
        if opts.probe {
            for p in backend.probe(2.0) {
                let changes = match p.change_interval_ns {
                    Some(ns) => format!("value changes every {}", fmt_ns(ns)),
                    None => "value did not change".into(),
                };
                notes.push(format!(
                    "probe {}: one read costs {}; {changes} ({} changes in {} reads){}",
                    p.channel,
                    fmt_ns(p.read_cost_ns),
                    p.changes,
                    p.reads,
                    if p.note.is_empty() {
                        String::new()
                    } else {
                        format!("; {}", p.note)
                    }
                ));
            }
        }
        BackendStatus {
            name: "nvml",
            summary: SUMMARY,
            available: true,
            reason: None,
            sources: backend.describe(),
            notes,
        }
    }
    fn open(&self, opts: &BackendOptions) -> Result<Vec<Box<dyn Source>>, SourceError> {
        NvmlBackend::open(config(opts)?)?.sources()
    }
}

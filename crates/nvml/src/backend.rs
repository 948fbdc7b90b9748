//! The `nvml` backend as front ends see it: [`Nvml`] built from an [`NvmlConfig`].

use crate::{NvmlBackend, NvmlConfig};
use flinch_core::backend::{Backend, BackendContext, BackendStatus};
use flinch_core::{Source, SourceError};

/// NVIDIA GPUs through NVML: driver power samples, instant power, energy counter, activity.
#[derive(Clone, Debug, Default)]
pub struct Nvml {
    config: NvmlConfig,
}

impl Nvml {
    /// The backend with this configuration.
    pub fn new(config: NvmlConfig) -> Self {
        Nvml { config }
    }

    /// The configuration for a recording: an `--interval` the user gave is the instant
    /// power's cadence; without one it follows the field's updates.
    fn config_for(&self, ctx: &BackendContext) -> NvmlConfig {
        let mut c = self.config.clone();
        if ctx.interval_given {
            c.instant_interval = Some(ctx.interval);
        }
        c
    }
}

impl Backend for Nvml {
    fn name(&self) -> &'static str {
        "nvml"
    }
    fn summary(&self) -> &'static str {
        "NVIDIA GPUs through NVML: driver power samples, instant power, energy counter, activity"
    }
    fn status(&self, ctx: &BackendContext) -> BackendStatus {
        let backend = match NvmlBackend::open(self.config_for(ctx)) {
            Ok(b) => b,
            Err(e) => {
                return BackendStatus::unavailable(self, flinch_core::error::display_chain(&e));
            }
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
        BackendStatus::available(self, backend.describe()).with_notes(notes)
    }
    fn open(&self, ctx: &BackendContext) -> Result<Vec<Box<dyn Source>>, SourceError> {
        NvmlBackend::open(self.config_for(ctx))?.sources()
    }
}

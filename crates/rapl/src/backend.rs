//! The `rapl` backend as front ends see it: [`Rapl`] built from a [`RaplConfig`].

use crate::{RaplConfig, RaplError};
use flinch_core::backend::{Backend, BackendContext, BackendStatus};
use flinch_core::{Source, SourceError};

/// CPU package / core / uncore / DRAM / platform energy from Linux powercap RAPL, one source
/// per zone. The recording's interval replaces [`RaplConfig::interval`] (a zone still
/// polls faster when its wrap bound requires it).
#[derive(Clone, Debug, Default)]
pub struct Rapl {
    config: RaplConfig,
}

impl Rapl {
    /// The backend with this configuration.
    pub fn new(config: RaplConfig) -> Self {
        Rapl { config }
    }

    fn config_for(&self, ctx: &BackendContext) -> RaplConfig {
        RaplConfig {
            interval: ctx.interval,
            ..self.config.clone()
        }
    }
}

impl Backend for Rapl {
    fn name(&self) -> &'static str {
        crate::BACKEND
    }
    fn summary(&self) -> &'static str {
        "CPU package/core/uncore/DRAM/psys energy from Linux powercap RAPL"
    }
    fn status(&self, ctx: &BackendContext) -> BackendStatus {
        let opened = match crate::open(&self.config_for(ctx)) {
            Ok(o) => o,
            Err(e) => {
                return BackendStatus::unavailable(self, flinch_core::error::display_chain(&e));
            }
        };
        let mut notes = vec![format!("powercap root {}", opened.root.display())];
        notes.extend(opened.describe());
        let sources = opened.into_sources();
        BackendStatus::opened(self, &sources, ctx).with_notes(notes)
    }
    fn open(&self, ctx: &BackendContext) -> Result<Vec<Box<dyn Source>>, SourceError> {
        Ok(crate::open(&self.config_for(ctx))
            .map_err(|e: RaplError| SourceError::from(e))?
            .into_sources())
    }
}

//! The synthetic source: always available.

use super::{Backend, BackendOptions, BackendStatus};
use flinch_core::clock::MonotonicClock;
use flinch_core::{Source, SourceError};
use flinch_record::synthetic::SyntheticSource;

pub struct Synthetic;

impl Backend for Synthetic {
    fn name(&self) -> &'static str {
        "synthetic"
    }
    fn status(&self, opts: &BackendOptions) -> BackendStatus {
        let src = SyntheticSource::new(opts.synthetic.clone(), &MonotonicClock);
        BackendStatus {
            name: "synthetic",
            summary: "modelled power with an exactly known integral (demo and tests)",
            available: true,
            reason: None,
            sources: vec![src.info().clone()],
            notes: vec!["used only when asked for with --source synthetic, or when no real source is available".into()],
        }
    }
    fn open(&self, opts: &BackendOptions) -> Result<Vec<Box<dyn Source>>, SourceError> {
        Ok(vec![Box::new(SyntheticSource::new(
            opts.synthetic.clone(),
            &MonotonicClock,
        ))])
    }
    fn default_on(&self) -> bool {
        false
    }
}

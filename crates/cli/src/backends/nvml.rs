//! The nvml backend. Placeholder until its issue (#4) lands: reports itself unavailable.

use super::{Backend, BackendOptions, BackendStatus};
use flinch_core::{ErrorKind, Source, SourceError};

pub struct Nvml;

const SUMMARY: &str =
    "NVIDIA GPUs through NVML: driver power samples, instant power, energy counter, activity";
const NOT_BUILT: &str = "this backend is not built yet in this version of flinch";

impl Backend for Nvml {
    fn name(&self) -> &'static str {
        "nvml"
    }
    fn status(&self, _opts: &BackendOptions) -> BackendStatus {
        BackendStatus::unavailable("nvml", SUMMARY, NOT_BUILT)
    }
    fn open(&self, _opts: &BackendOptions) -> Result<Vec<Box<dyn Source>>, SourceError> {
        Err(SourceError::new(ErrorKind::NotAvailable, "nvml", NOT_BUILT))
    }
}

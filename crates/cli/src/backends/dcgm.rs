//! The dcgm backend. Placeholder until its issue (#5) lands: reports itself unavailable.

use super::{Backend, BackendOptions, BackendStatus};
use flinch_core::{ErrorKind, Source, SourceError};

pub struct Dcgm;

const SUMMARY: &str = "NVIDIA GPUs through a DCGM host engine";
const NOT_BUILT: &str = "this backend is not built yet in this version of flinch";

impl Backend for Dcgm {
    fn name(&self) -> &'static str {
        "dcgm"
    }
    fn status(&self, _opts: &BackendOptions) -> BackendStatus {
        BackendStatus::unavailable("dcgm", SUMMARY, NOT_BUILT)
    }
    fn open(&self, _opts: &BackendOptions) -> Result<Vec<Box<dyn Source>>, SourceError> {
        Err(SourceError::new(ErrorKind::NotAvailable, "dcgm", NOT_BUILT))
    }
}

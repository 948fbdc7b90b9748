//! The cpu backend. Placeholder until its issue (#6) lands: reports itself unavailable.

use super::{Backend, BackendOptions, BackendStatus};
use flinch_core::{ErrorKind, Source, SourceError};

pub struct Cpu;

const SUMMARY: &str = "host CPU utilisation and a process tree's CPU time (procfs)";
const NOT_BUILT: &str = "this backend is not built yet in this version of flinch";

impl Backend for Cpu {
    fn name(&self) -> &'static str {
        "cpu"
    }
    fn status(&self, _opts: &BackendOptions) -> BackendStatus {
        BackendStatus::unavailable("cpu", SUMMARY, NOT_BUILT)
    }
    fn open(&self, _opts: &BackendOptions) -> Result<Vec<Box<dyn Source>>, SourceError> {
        Err(SourceError::new(ErrorKind::NotAvailable, "cpu", NOT_BUILT))
    }
}

//! The rapl backend. Placeholder until its issue (#3) lands: reports itself unavailable.

use super::{Backend, BackendOptions, BackendStatus};
use flinch_core::{ErrorKind, Source, SourceError};

pub struct Rapl;

const SUMMARY: &str = "CPU package/core/uncore/DRAM/psys energy from Linux powercap RAPL";
const NOT_BUILT: &str = "this backend is not built yet in this version of flinch";

impl Backend for Rapl {
    fn name(&self) -> &'static str {
        "rapl"
    }
    fn status(&self, _opts: &BackendOptions) -> BackendStatus {
        BackendStatus::unavailable("rapl", SUMMARY, NOT_BUILT)
    }
    fn open(&self, _opts: &BackendOptions) -> Result<Vec<Box<dyn Source>>, SourceError> {
        Err(SourceError::new(ErrorKind::NotAvailable, "rapl", NOT_BUILT))
    }
}

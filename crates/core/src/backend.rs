//! A backend: what makes sources of one kind (NVML GPUs, RAPL zones, DCGM, CPU time, ...).
//!
//! A backend is built from its own typed configuration (in its own crate); the recording's
//! common facts arrive in a [`BackendContext`]. It says what it would offer here without
//! failing ([`Backend::status`]: unavailability is a status with a reason), and opens its
//! sources for a recording ([`Backend::open`]). Front ends (the `flinch` CLI, the Python
//! package) hold a list of `Box<dyn Backend>` and never name a backend's types beyond
//! building it.
//!
//! ```
//! use flinch_core::backend::{Backend, BackendContext, BackendStatus};
//! use flinch_core::testing::NullSource;
//! use flinch_core::{Source, SourceError};
//!
//! struct Fans { count: usize }
//!
//! impl Backend for Fans {
//!     fn name(&self) -> &'static str { "fans" }
//!     fn summary(&self) -> &'static str { "fan power (example)" }
//!     fn status(&self, ctx: &BackendContext) -> BackendStatus {
//!         match self.open(ctx) {
//!             Ok(s) => BackendStatus::available(self, s.iter().map(|s| s.info().clone()).collect()),
//!             Err(e) => BackendStatus::unavailable(self, e.to_string()),
//!         }
//!     }
//!     fn open(&self, _: &BackendContext) -> Result<Vec<Box<dyn Source>>, SourceError> {
//!         Ok((0..self.count)
//!             .map(|i| Box::new(NullSource::new(&format!("fan{i}"), 1)) as Box<dyn Source>)
//!             .collect())
//!     }
//! }
//!
//! let st = Fans { count: 2 }.status(&BackendContext::new(std::time::Duration::from_millis(10)));
//! assert!(st.available);
//! assert_eq!(st.sources.len(), 2);
//! ```

use crate::channel::SourceInfo;
use crate::error::SourceError;
use crate::source::Source;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// What every backend is told about the recording it serves.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackendContext {
    /// The recording's finest cadence (`--interval`): sources with no cadence of their own
    /// are polled this often.
    pub interval: Duration,
    /// Whether the user asked for `interval` (`--interval`). When not, a source may choose
    /// its cadence from its sensor (NVML's instant power: once per update of the field,
    /// just after it), and `interval` is only the default of sources that have none.
    pub interval_given: bool,
}

impl BackendContext {
    /// A context for a recording polled every `interval`, as asked for.
    pub fn new(interval: Duration) -> Self {
        BackendContext {
            interval,
            interval_given: true,
        }
    }

    /// A context in which sources choose their own cadence; `default` for those that
    /// have none.
    pub fn auto(default: Duration) -> Self {
        BackendContext {
            interval: default,
            interval_given: false,
        }
    }
}

/// What a backend would offer here.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct BackendStatus {
    /// Backend name as used with `--source`.
    pub name: &'static str,
    /// One line on what it measures.
    pub summary: &'static str,
    /// Whether a recording could open it now.
    pub available: bool,
    /// Why not (and what to do), when unavailable.
    pub reason: Option<String>,
    /// The sources it would open, with their channels.
    pub sources: Vec<SourceInfo>,
    /// How often each source would be polled (source name → ns), where known: a source
    /// with a cadence of its own keeps it whatever `--interval` asks (the CPU counters are
    /// polled every 20 ms at the finest, NVML's energy counter every second).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub poll_intervals_ns: BTreeMap<String, u64>,
    /// Extra facts (wrap bounds, versions, channels absent and why).
    pub notes: Vec<String>,
}

impl BackendStatus {
    /// An available backend that would open these sources.
    pub fn available(backend: &(impl Backend + ?Sized), sources: Vec<SourceInfo>) -> Self {
        BackendStatus {
            name: backend.name(),
            summary: backend.summary(),
            available: true,
            reason: None,
            sources,
            poll_intervals_ns: BTreeMap::new(),
            notes: Vec::new(),
        }
    }
    /// An available backend, from the sources it opened: their descriptions and how often
    /// each would be polled in a recording of `ctx`.
    pub fn opened(
        backend: &(impl Backend + ?Sized),
        sources: &[Box<dyn Source>],
        ctx: &BackendContext,
    ) -> Self {
        let mut st = Self::available(backend, sources.iter().map(|s| s.info().clone()).collect());
        st.poll_intervals_ns = sources
            .iter()
            .map(|s| {
                (
                    s.info().name.clone(),
                    s.interval().unwrap_or(ctx.interval).as_nanos() as u64,
                )
            })
            .collect();
        st
    }
    /// An unavailable backend, and why.
    pub fn unavailable(backend: &(impl Backend + ?Sized), reason: impl Into<String>) -> Self {
        BackendStatus {
            name: backend.name(),
            summary: backend.summary(),
            available: false,
            reason: Some(reason.into()),
            sources: Vec::new(),
            poll_intervals_ns: BTreeMap::new(),
            notes: Vec::new(),
        }
    }
    /// Adds notes.
    pub fn with_notes(mut self, notes: impl IntoIterator<Item = String>) -> Self {
        self.notes.extend(notes);
        self
    }
}

/// One backend, built from its typed configuration.
pub trait Backend: Send + Sync {
    /// The name used with `--source` (`nvml`, `rapl`, ...).
    fn name(&self) -> &'static str;
    /// One line on what it measures.
    fn summary(&self) -> &'static str;
    /// What it would offer here (never fails: unavailability is a status with a reason).
    fn status(&self, ctx: &BackendContext) -> BackendStatus;
    /// Opens its sources for a recording.
    fn open(&self, ctx: &BackendContext) -> Result<Vec<Box<dyn Source>>, SourceError>;
    /// Whether a recording that names no source uses it when available (a modelled source
    /// is used only when asked for, or when nothing else is available).
    fn default_on(&self) -> bool {
        true
    }
}

//! The `dcgm` backend as front ends see it: [`Dcgm`] built from a [`DcgmConfig`]: NVIDIA
//! GPUs through a DCGM host engine or an engine embedded in the process, with the library
//! loaded at run time.
//!
//! `status` opens the whole source (that is the only way to know which GPUs and which
//! fields the engine serves) and keeps it, so that `open` reuses it instead of taking DCGM
//! down and up again (whether DCGM tolerates `dcgmInit` after `dcgmShutdown` in one process
//! is not documented).

use crate::{DcgmConfig, DcgmSource};
use flinch_core::backend::{Backend, BackendContext, BackendStatus};
use flinch_core::clock::MonotonicClock;
use flinch_core::{ErrorKind, Source, SourceError};
use std::sync::Mutex;
use std::time::Duration;

/// DCGM samples no faster than this, whatever the recording's interval: its 1-s average
/// power gains nothing from faster watches, and profiling metrics are averages over the
/// period.
pub const MIN_UPDATE_PERIOD: Duration = Duration::from_millis(100);

/// NVIDIA GPUs through DCGM. The watch period is the recording's interval, at least
/// [`MIN_UPDATE_PERIOD`] and at least [`DcgmConfig::update_period`]; the cache is drained
/// every [`DcgmConfig::poll_interval`] (at least the watch period).
#[derive(Default)]
pub struct Dcgm {
    config: DcgmConfig,
    /// The source `status` opened, with the configuration it was opened with.
    opened: Mutex<Option<(String, DcgmSource)>>,
}

impl Dcgm {
    /// The backend with this configuration.
    pub fn new(config: DcgmConfig) -> Self {
        Dcgm {
            config,
            opened: Mutex::new(None),
        }
    }

    /// The configuration a recording polled every `interval` uses.
    pub fn config_for(&self, ctx: &BackendContext) -> DcgmConfig {
        let update_period = ctx
            .interval
            .max(MIN_UPDATE_PERIOD)
            .max(self.config.update_period);
        DcgmConfig {
            update_period,
            poll_interval: self.config.poll_interval.max(update_period),
            ..self.config.clone()
        }
    }
}

/// What identifies a configuration, to reuse a source only for the same options.
fn key(cfg: &DcgmConfig) -> String {
    format!("{cfg:?}")
}

fn notes(src: &DcgmSource, cfg: &DcgmConfig) -> Vec<String> {
    let attrs = &src.info().attributes;
    let mut n = vec![
        format!(
            "library {}, engine {}, DCGM GPU ids {}",
            attrs.get("library").map(String::as_str).unwrap_or("?"),
            attrs.get("connection").map(String::as_str).unwrap_or("?"),
            attrs.get("gpus").map(String::as_str).unwrap_or("?")
        ),
        format!(
            "DCGM samples every {:?} (the recording's interval, at least {:?}), drained every {:?}",
            cfg.update_period, MIN_UPDATE_PERIOD, cfg.poll_interval
        ),
        "devices are named dcgm-gpu<N>: the same GPUs as nvml's gpu<N>, so never add the two backends' energies".into(),
        "power_avg1s is NVML's 1-s average (it lags steps); power_instant is the short-window reading".into(),
    ];
    if let Some(p) = attrs.get("profiling") {
        n.push(format!("profiling fields 1001-1005: {p}"));
    }
    if let Some(p) = attrs.get("power_instant") {
        n.push(format!("power_instant (field 157): {p}"));
    }
    n
}

impl Backend for Dcgm {
    fn name(&self) -> &'static str {
        "dcgm"
    }
    fn summary(&self) -> &'static str {
        "NVIDIA GPUs through DCGM: power, energy counter, utilisation, SM/tensor/DRAM activity"
    }
    fn status(&self, ctx: &BackendContext) -> BackendStatus {
        let cfg = self.config_for(ctx);
        match DcgmSource::open(&cfg, &MonotonicClock) {
            Ok(src) => {
                let mut st = BackendStatus::available(self, vec![src.info().clone()])
                    .with_notes(notes(&src, &cfg));
                st.poll_intervals_ns.insert(
                    src.info().name.clone(),
                    src.interval().unwrap_or(ctx.interval).as_nanos() as u64,
                );
                let mut slot = self.opened.lock().unwrap_or_else(|e| e.into_inner());
                *slot = Some((key(&cfg), src));
                st
            }
            Err(e) => BackendStatus::unavailable(self, flinch_core::error::display_chain(&e)),
        }
    }
    fn open(&self, ctx: &BackendContext) -> Result<Vec<Box<dyn Source>>, SourceError> {
        let cfg = self.config_for(ctx);
        let kept = self.opened.lock().unwrap_or_else(|e| e.into_inner()).take();
        let src = match kept {
            Some((k, src)) if k == key(&cfg) => src,
            other => {
                // A source opened for other options is closed first.
                drop(other);
                DcgmSource::open(&cfg, &MonotonicClock).map_err(SourceError::from)?
            }
        };
        if src.info().channels.is_empty() {
            return Err(SourceError::new(
                ErrorKind::NotAvailable,
                "dcgm",
                "DCGM offers no channel for the chosen GPUs",
            ));
        }
        Ok(vec![Box::new(src)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watch_period_follows_the_recording_but_not_below_the_floor() {
        let d = Dcgm::new(DcgmConfig::default());
        let c = d.config_for(&BackendContext::new(Duration::from_millis(10)));
        assert_eq!(c.update_period, MIN_UPDATE_PERIOD);
        assert_eq!(c.poll_interval, Duration::from_millis(500));
        let c = d.config_for(&BackendContext::new(Duration::from_secs(2)));
        assert_eq!(c.update_period, Duration::from_secs(2));
        assert_eq!(c.poll_interval, Duration::from_secs(2));
    }
}

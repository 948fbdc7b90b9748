//! The dcgm backend: NVIDIA GPUs through a DCGM host engine (`--dcgm-host`) or an engine
//! embedded in flinch, with the library loaded at run time (`--dcgm-lib`, default
//! `libdcgm.so.4` then `libdcgm.so.3`).
//!
//! `status` opens the whole source (that is the only way to know which GPUs and which
//! fields the engine serves) and keeps it, so that `record` reuses it instead of taking
//! DCGM down and up again (whether DCGM tolerates `dcgmInit` after `dcgmShutdown` in one
//! process is not documented).

use super::{Backend, BackendOptions, BackendStatus};
use flinch_core::clock::MonotonicClock;
use flinch_core::{ErrorKind, Source, SourceError};
use flinch_dcgm::{DcgmConfig, DcgmError, DcgmSource};
use std::sync::Mutex;
use std::time::Duration;

#[derive(Default)]
pub struct Dcgm {
    /// The source `status` opened, with the options it was opened with.
    opened: Mutex<Option<(String, DcgmSource)>>,
}

const SUMMARY: &str =
    "NVIDIA GPUs through DCGM: power, energy counter, utilisation, SM/tensor/DRAM activity";

/// DCGM samples no faster than this, whatever `--interval` says: its 1-s average power
/// gains nothing from faster watches, and profiling metrics are averages over the period.
const MIN_UPDATE_PERIOD: Duration = Duration::from_millis(100);
/// How often DCGM's cache is drained (values keep their own timestamps).
const POLL_INTERVAL: Duration = Duration::from_millis(500);

fn config(opts: &BackendOptions) -> Result<DcgmConfig, DcgmError> {
    let gpus = match &opts.gpus {
        None => None,
        Some(list) => Some(
            list.iter()
                .map(|g| {
                    g.trim().parse::<u32>().map_err(|_| {
                        DcgmError::InvalidInput(format!(
                            "--gpus {g:?}: the dcgm backend selects GPUs by DCGM GPU id (a number, \
                             see `dcgmi discovery -l`); UUIDs are not supported"
                        ))
                    })
                })
                .collect::<Result<Vec<u32>, _>>()?,
        ),
    };
    let update_period = opts.interval.max(MIN_UPDATE_PERIOD);
    Ok(DcgmConfig {
        library: opts.dcgm_lib.clone(),
        host: opts.dcgm_host.clone(),
        gpus,
        update_period,
        poll_interval: POLL_INTERVAL.max(update_period),
        profiling: true,
    })
}

/// What identifies a configuration, to reuse a source only for the same options.
fn key(cfg: &DcgmConfig) -> String {
    format!("{cfg:?}")
}

fn notes(src: &DcgmSource, opts: &BackendOptions, cfg: &DcgmConfig) -> Vec<String> {
    let attrs = &src.info().attributes;
    let mut n = vec![
        format!(
            "library {}, engine {}, DCGM GPU ids {}",
            attrs.get("library").map(String::as_str).unwrap_or("?"),
            attrs.get("connection").map(String::as_str).unwrap_or("?"),
            attrs.get("gpus").map(String::as_str).unwrap_or("?")
        ),
        format!(
            "DCGM samples every {} (--interval, at least {}), drained every {}",
            humantime::format_duration(cfg.update_period),
            humantime::format_duration(MIN_UPDATE_PERIOD),
            humantime::format_duration(cfg.poll_interval)
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
    if opts.cuda_visible_devices {
        n.push("--cuda-visible-devices does not apply to dcgm (DCGM ids are not CUDA ordinals): use --gpus".into());
    }
    n
}

impl Backend for Dcgm {
    fn name(&self) -> &'static str {
        "dcgm"
    }
    fn status(&self, opts: &BackendOptions) -> BackendStatus {
        let cfg = match config(opts) {
            Ok(c) => c,
            Err(e) => return BackendStatus::unavailable("dcgm", SUMMARY, e.to_string()),
        };
        match DcgmSource::open(&cfg, &MonotonicClock) {
            Ok(src) => {
                let st = BackendStatus {
                    name: "dcgm",
                    summary: SUMMARY,
                    available: true,
                    reason: None,
                    sources: vec![src.info().clone()],
                    notes: notes(&src, opts, &cfg),
                };
                let mut slot = self.opened.lock().unwrap_or_else(|e| e.into_inner());
                *slot = Some((key(&cfg), src));
                st
            }
            Err(e) => BackendStatus::unavailable("dcgm", SUMMARY, e.to_string()),
        }
    }
    fn open(&self, opts: &BackendOptions) -> Result<Vec<Box<dyn Source>>, SourceError> {
        let cfg = config(opts).map_err(SourceError::from)?;
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
    fn options_become_a_dcgm_config() {
        let opts = BackendOptions {
            interval: Duration::from_millis(10),
            gpus: Some(vec!["1".into(), " 3".into()]),
            dcgm_host: Some("unix:///run/x".into()),
            ..Default::default()
        };
        let c = config(&opts).unwrap();
        assert_eq!(c.gpus, Some(vec![1, 3]));
        assert_eq!(c.update_period, MIN_UPDATE_PERIOD);
        assert_eq!(c.poll_interval, POLL_INTERVAL);
        assert_eq!(c.host.as_deref(), Some("unix:///run/x"));
        let slow = BackendOptions {
            interval: Duration::from_secs(2),
            ..Default::default()
        };
        let c = config(&slow).unwrap();
        assert_eq!(c.update_period, Duration::from_secs(2));
        assert_eq!(c.poll_interval, Duration::from_secs(2));
        let uuid = BackendOptions {
            gpus: Some(vec!["GPU-1234".into()]),
            ..Default::default()
        };
        let e = config(&uuid).unwrap_err();
        assert!(e.to_string().contains("GPU-1234"), "{e}");
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
    }
}

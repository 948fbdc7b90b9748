//! CPU package / core / uncore / DRAM / platform energy from Linux powercap RAPL
//! (`flinch-rapl`), one source per zone.

use super::{Backend, BackendOptions, BackendStatus};
use flinch_core::{Source, SourceError};
use flinch_rapl::{RaplConfig, ZoneSource};
use std::time::{Duration, Instant};

pub struct Rapl;

const SUMMARY: &str = "CPU package/core/uncore/DRAM/psys energy from Linux powercap RAPL";

fn config(opts: &BackendOptions) -> RaplConfig {
    let mut c = RaplConfig {
        interval: opts.interval,
        ..RaplConfig::default()
    };
    if let Some(root) = &opts.rapl_root {
        c.root = root.clone();
    }
    c
}

/// Reads a zone for up to 50 ms (at most 2000 reads): what one read costs, and how often
/// the value changed.
fn probe(s: &mut ZoneSource) -> String {
    let name = s.info().channels[0].name.clone();
    let start = Instant::now();
    let (mut reads, mut changes, mut last) = (0u32, 0u32, None);
    let mut failed = None;
    while reads < 2000 && start.elapsed() < Duration::from_millis(50) {
        match s.read() {
            Ok(v) => {
                if last.is_some_and(|l| l != v) {
                    changes += 1;
                }
                last = Some(v);
                reads += 1;
            }
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    let el = start.elapsed();
    if let Some(e) = failed {
        return format!("probe {name}: a read failed: {e}");
    }
    let cost_us = el.as_secs_f64() * 1e6 / reads.max(1) as f64;
    let changes_txt = if changes > 0 {
        format!(
            "value changes every {:.2} ms",
            el.as_secs_f64() * 1e3 / changes as f64
        )
    } else {
        "value did not change".into()
    };
    format!(
        "probe {name}: one read costs {cost_us:.1} us; {changes_txt} ({changes} changes in {reads} reads)"
    )
}

impl Backend for Rapl {
    fn name(&self) -> &'static str {
        "rapl"
    }
    fn status(&self, opts: &BackendOptions) -> BackendStatus {
        let mut opened = match flinch_rapl::open(&config(opts)) {
            Ok(o) => o,
            Err(e) => {
                return BackendStatus::unavailable("rapl", SUMMARY, SourceError::from(e).message);
            }
        };
        let mut notes = vec![format!("powercap root {}", opened.root.display())];
        notes.extend(opened.describe());
        if opts.probe {
            for s in &mut opened.sources {
                notes.push(probe(s));
            }
        }
        BackendStatus {
            name: "rapl",
            summary: SUMMARY,
            available: true,
            reason: None,
            sources: opened.sources.iter().map(|s| s.info().clone()).collect(),
            notes,
        }
    }
    fn open(&self, opts: &BackendOptions) -> Result<Vec<Box<dyn Source>>, SourceError> {
        Ok(flinch_rapl::open(&config(opts))?.into_sources())
    }
}

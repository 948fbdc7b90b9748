#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod backend;
mod discover;
mod error;
mod file;
mod source;
#[cfg(feature = "testing")]
pub mod testing;

pub use backend::Rapl;
pub use discover::{Discovery, Interface, Skipped, Zone, ZoneKind, parse_zone_id};
pub use error::{BACKEND, RaplError, module_hint, permission_fix};
pub use file::{CounterFile, MAX_READS, parse_uj};
pub use source::{
    DEFAULT_INTERVAL, DEFAULT_MAX_POWER, DEFAULT_ROOT, MIN_INTERVAL, PSYS_MAX_POWER, RaplConfig,
    UPDATE_PERIOD_NS, ZoneSource, ZoneStats, counter_spec, zone_interval,
};

use flinch_core::Source;
use std::path::PathBuf;

/// Walks the powercap tree at `cfg.root` and lists its zones, without opening any counter.
pub fn discover(cfg: &RaplConfig) -> Result<Discovery, RaplError> {
    discover::discover(&cfg.root, &cfg.proc_modules)
}

/// The zone sources of a powercap tree, and what was left out.
#[derive(Debug)]
pub struct Opened {
    /// The root.
    pub root: PathBuf,
    /// One source per usable zone, by interface and zone index.
    pub sources: Vec<ZoneSource>,
    /// Zones found but not used (a copy, no counter, an unusable range, unreadable).
    pub skipped: Vec<Skipped>,
    /// Other remarks from the walk.
    pub notes: Vec<String>,
}

impl Opened {
    /// Lines for humans: each source's wrap range and poll bound, then what was left out.
    pub fn describe(&self) -> Vec<String> {
        let mut v: Vec<String> = self.sources.iter().map(ZoneSource::summary).collect();
        v.extend(
            self.skipped
                .iter()
                .map(|s| format!("{} ({}) not used: {}", s.key, s.id, s.why)),
        );
        v.extend(self.notes.iter().cloned());
        v
    }

    /// The sources, boxed for a recording.
    pub fn into_sources(self) -> Vec<Box<dyn Source>> {
        self.sources
            .into_iter()
            .map(|s| Box::new(s) as Box<dyn Source>)
            .collect()
    }
}

/// Discovers the zones under `cfg.root` and opens a source for each zone whose counter
/// reads. Fails when no zone can be used, with the first zone's error (permission denied
/// comes with the fixes).
pub fn open(cfg: &RaplConfig) -> Result<Opened, RaplError> {
    let found = discover(cfg)?;
    let mut sources = Vec::with_capacity(found.zones.len());
    let mut skipped = found.skipped;
    for zone in found.zones {
        let (id, key) = (zone.id.clone(), zone.key.clone());
        match ZoneSource::open(zone, cfg) {
            Ok(s) => sources.push(s),
            Err(e) => skipped.push(Skipped {
                id,
                key,
                why: e.to_string(),
                error: Some(e),
            }),
        }
    }
    if sources.is_empty() {
        let mut errors = skipped.iter_mut().filter_map(|s| s.error.take());
        return Err(match errors.next() {
            Some(first) => RaplError::NoUsableZones {
                root: cfg.root.clone(),
                first: Box::new(first),
                others: errors.count(),
            },
            None => RaplError::NoCounters {
                root: cfg.root.clone(),
                zones: skipped
                    .iter()
                    .map(|s| format!("{} ({}): {}", s.key, s.id, s.why))
                    .collect::<Vec<_>>()
                    .join("; "),
            },
        });
    }
    Ok(Opened {
        root: cfg.root.clone(),
        sources,
        skipped,
        notes: found.notes,
    })
}

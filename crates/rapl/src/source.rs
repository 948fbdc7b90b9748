//! One [`Source`] per zone, so that a zone whose reads fail opens a gap for that zone only.

use crate::discover::{Zone, ZoneKind};
use crate::error::{BACKEND, RaplError};
use crate::file::CounterFile;
use flinch_core::DeviceClass;
use flinch_core::counter::{CounterStep, CounterTracker, max_poll_interval_s};
use flinch_core::{
    ChannelSpec, CounterSpec, Joules, Readings, Source, SourceError, SourceInfo, Watts,
};
use std::path::PathBuf;
use std::time::Duration;

/// Where the kernel exposes powercap.
pub const DEFAULT_ROOT: &str = "/sys/class/powercap";

/// The poll interval when none is asked for (the recorder's default fast interval).
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(10);

/// The shortest interval a zone is polled at (no real zone comes near it: the smallest
/// real range, 65 kJ, gives a bound of seconds).
pub const MIN_INTERVAL: Duration = Duration::from_micros(10);

/// How often the hardware updates a RAPL counter (Intel SDM: "updated every ~1msec").
pub const UPDATE_PERIOD_NS: u64 = 1_000_000;

/// The most power a package, core, uncore or DRAM zone is believed to draw; a counter step
/// implying more is flagged, not used. Today's largest packages are rated 500 W; this leaves
/// room for turbo excursions and for parts not yet made.
pub const DEFAULT_MAX_POWER: Watts = Watts(2000.0);

/// The same for a `psys` (whole platform) zone.
pub const PSYS_MAX_POWER: Watts = Watts(10_000.0);

/// How the RAPL backend is set up.
#[derive(Clone, Debug, PartialEq)]
pub struct RaplConfig {
    /// The powercap root (default [`DEFAULT_ROOT`]; `--rapl-root DIR`).
    pub root: PathBuf,
    /// How often to poll each zone; each zone polls faster if its wrap bound requires it.
    pub interval: Duration,
    /// The plausibility ceiling for every zone; `None`: [`DEFAULT_MAX_POWER`], and
    /// [`PSYS_MAX_POWER`] for psys.
    pub max_power: Option<Watts>,
    /// Read only to explain a missing tree (default `/proc/modules`).
    pub proc_modules: PathBuf,
}

impl Default for RaplConfig {
    fn default() -> Self {
        RaplConfig {
            root: DEFAULT_ROOT.into(),
            interval: DEFAULT_INTERVAL,
            max_power: None,
            proc_modules: "/proc/modules".into(),
        }
    }
}

impl RaplConfig {
    /// The default configuration reading the tree at `root`.
    pub fn with_root(root: impl Into<PathBuf>) -> Self {
        RaplConfig {
            root: root.into(),
            ..Default::default()
        }
    }

    /// The plausibility ceiling for a zone of this kind.
    pub fn max_power_for(&self, kind: ZoneKind) -> Watts {
        self.max_power.unwrap_or(match kind {
            ZoneKind::Psys => PSYS_MAX_POWER,
            _ => DEFAULT_MAX_POWER,
        })
    }
}

/// The counter arithmetic of a zone: it wraps at `max_energy_range_uj` (in J) and cannot
/// rise faster than `max_power`.
pub fn counter_spec(max_energy_range_uj: u64, max_power: Watts) -> CounterSpec {
    CounterSpec {
        wrap_range: Some(Joules::from_microjoules(max_energy_range_uj).0),
        max_rate: Some(max_power.0),
    }
}

/// The interval a zone is polled at: the requested one (or [`DEFAULT_INTERVAL`] if zero),
/// shortened to the wrap bound when that is shorter (never below [`MIN_INTERVAL`], so never
/// zero).
pub fn zone_interval(requested: Duration, bound_s: Option<f64>) -> Duration {
    let requested = if requested.is_zero() {
        DEFAULT_INTERVAL
    } else {
        requested
    };
    let bounded = match bound_s {
        Some(b) if b.is_finite() && b >= 0.0 => requested.min(Duration::from_secs_f64(b)),
        _ => requested,
    };
    bounded.max(MIN_INTERVAL)
}

/// What a zone source has seen since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ZoneStats {
    /// Energy since the first reading, wrap-corrected, counting only usable steps.
    pub energy: Joules,
    /// Successful reads.
    pub reads: u64,
    /// Failed reads.
    pub failed_reads: u64,
    /// Wraps corrected.
    pub wraps: u64,
    /// Resets seen (the counter restarted far below a wrap).
    pub resets: u32,
    /// Readings flagged as implausible or out of range (not counted).
    pub flagged: u32,
}

/// A zone's energy counter as a flinch source: one channel `<key>.energy` in joules, the
/// device being the zone key (`package-0`, `package-0.dram`, `psys`).
#[derive(Debug)]
pub struct ZoneSource {
    info: SourceInfo,
    zone: Zone,
    file: CounterFile,
    tracker: CounterTracker,
    spec: CounterSpec,
    interval: Duration,
    bound_s: Option<f64>,
    stats: ZoneStats,
}

impl ZoneSource {
    /// Opens the zone's `energy_uj` and reads it once, so that a permission or format
    /// problem shows up now rather than in the first poll.
    pub fn open(zone: Zone, cfg: &RaplConfig) -> Result<Self, RaplError> {
        let mut file = CounterFile::open(&zone.energy_path(), &cfg.root)?;
        file.read_uj()?;
        let max_power = cfg.max_power_for(zone.kind);
        let spec = counter_spec(zone.max_energy_range_uj, max_power);
        let bound_s = max_poll_interval_s(&spec);
        let interval = zone_interval(cfg.interval, bound_s);
        let wrap_j = spec.wrap_range.unwrap_or_default();
        let mut desc = format!(
            "RAPL {} energy ({}, {}): {}; wraps at {wrap_j} J",
            zone.name,
            zone.id,
            zone.kind,
            zone.kind.scope()
        );
        if let Some(p) = &zone.parent {
            desc.push_str(&format!("; subzone of {p}"));
        }
        let channel = ChannelSpec::energy_counter(&zone.key, "energy", spec)
            .with_update_period_ns(UPDATE_PERIOD_NS)
            .with_description(desc);
        let mut attributes = std::collections::BTreeMap::new();
        let mut attr = |k: &str, v: String| {
            attributes.insert(k.to_owned(), v);
        };
        attr("zone", zone.id.clone());
        attr("path", zone.path.display().to_string());
        attr("name", zone.name.clone());
        attr("kind", zone.kind.name().to_owned());
        attr("scope", zone.kind.scope().to_owned());
        attr("interface", zone.interface.control_type().to_owned());
        if let Some(p) = &zone.parent {
            attr("parent", p.clone());
        }
        attr("max_energy_range_uj", zone.max_energy_range_uj.to_string());
        attr("max_power_w", max_power.0.to_string());
        if let Some(b) = bound_s {
            attr("max_poll_interval_s", format!("{b}"));
        }
        attr("interval_s", format!("{}", interval.as_secs_f64()));
        attr(
            "reads",
            if file.atomic_reads() {
                "sysfs (one read is atomic)".to_owned()
            } else {
                "not sysfs (read until two reads agree)".to_owned()
            },
        );
        let info = SourceInfo::new(format!("{BACKEND}.{}", zone.key), BACKEND, DeviceClass::Cpu)
            .with_channels(vec![channel])
            .with_attributes(attributes);
        Ok(ZoneSource {
            info,
            zone,
            file,
            tracker: CounterTracker::new(spec, Some(UPDATE_PERIOD_NS)),
            spec,
            interval,
            bound_s,
            stats: ZoneStats::default(),
        })
    }

    /// The zone.
    pub fn zone(&self) -> &Zone {
        &self.zone
    }

    /// The counter arithmetic of the channel.
    pub fn counter_spec(&self) -> CounterSpec {
        self.spec
    }

    /// The longest poll interval at which the counter cannot wrap twice unseen (half its
    /// range at the zone's maximum power), s.
    pub fn max_poll_interval_s(&self) -> Option<f64> {
        self.bound_s
    }

    /// What the source has seen so far.
    pub fn stats(&self) -> ZoneStats {
        ZoneStats {
            energy: Joules(self.tracker.total()),
            resets: self.tracker.resets(),
            flagged: self.tracker.flagged(),
            ..self.stats
        }
    }

    /// Reads the counter now, J (raw: not wrap-corrected, not tracked).
    pub fn read(&mut self) -> Result<Joules, RaplError> {
        self.file.read_uj().map(Joules::from_microjoules)
    }

    /// One line for `flinch sources`: the zone, its range and the poll bound.
    pub fn summary(&self) -> String {
        let z = &self.zone;
        let wrap = self.spec.wrap_range.unwrap_or_default();
        let max_p = self.spec.max_rate.unwrap_or_default();
        let bound = match self.bound_s {
            Some(b) => format!(
                "cannot wrap twice unseen if polled at least every {}",
                fmt_seconds(b)
            ),
            None => "no wrap bound".into(),
        };
        format!(
            "{} ({}, {}): wraps at {:.3} J; at up to {max_p} W it {bound}; polled every {}",
            z.key,
            z.id,
            z.kind,
            wrap,
            fmt_seconds(self.interval.as_secs_f64())
        )
    }
}

fn fmt_seconds(s: f64) -> String {
    if s >= 1.0 {
        format!("{s:.1} s")
    } else {
        format!("{:.1} ms", s * 1e3)
    }
}

impl Source for ZoneSource {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn poll(&mut self, out: &mut Readings<'_>) -> Result<(), SourceError> {
        let before = out.now_ns();
        let res = self.file.read_uj();
        let after = out.now_ns();
        match res {
            Ok(uj) => {
                self.stats.reads += 1;
                let t = before + (after - before) / 2;
                let j = Joules::from_microjoules(uj).0;
                if let CounterStep::Delta { wrapped: true, .. } = self.tracker.update(t, j) {
                    self.stats.wraps += 1;
                }
                out.push(0, t, j);
                Ok(())
            }
            Err(e) => {
                self.stats.failed_reads += 1;
                Err(SourceError::from(e))
            }
        }
    }

    fn interval(&self) -> Option<Duration> {
        Some(self.interval)
    }

    fn max_readings_per_poll(&self) -> usize {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_follow_the_request_and_the_wrap_bound() {
        let ms = Duration::from_millis;
        assert_eq!(zone_interval(ms(10), Some(65.5)), ms(10));
        assert_eq!(zone_interval(Duration::ZERO, Some(65.5)), DEFAULT_INTERVAL);
        assert_eq!(zone_interval(ms(5000), Some(2.5)), ms(2500));
        assert_eq!(
            zone_interval(ms(10), Some(0.0001)),
            Duration::from_micros(100)
        );
        assert_eq!(zone_interval(ms(10), Some(0.0)), MIN_INTERVAL);
        assert_eq!(zone_interval(ms(10), None), ms(10));
        // An Intel package at 2 kW: 262 kJ / 2 / 2000 W = 65.5 s.
        let spec = counter_spec(262_143_328_850, DEFAULT_MAX_POWER);
        let b = max_poll_interval_s(&spec).unwrap();
        assert!((b - 65.535_832_212_5).abs() < 1e-6, "{b}");
        assert_eq!(spec.wrap_range, Some(262_143.328_85));
    }
}

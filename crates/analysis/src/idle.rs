//! Idle profiles: what every channel reads while the machine is left alone, and under which
//! conditions.
//!
//! Idle is not one number: an H100 draws ~70 W with no CUDA context and ~119 W with one open
//! and clocks up. So a profile keeps, per channel, the mean, median, 5th and 95th
//! percentiles, standard deviation and sample count, together with the conditions it was
//! taken under (clocks, temperatures, other device state the channels offer, the sources'
//! attributes such as driver versions), the host, the time, and the channel set.
//!
//! A profile is made from a stretch of a trace ([`IdleProfile::from_trace`]): `flinch
//! calibrate` records a few seconds of a quiet machine and profiles all of it; `flinch
//! analyze --idle-window A..B` profiles a stretch of the trace being analysed. For gauges
//! the statistics are over sample values; for counters they are over rates (W for energy,
//! cores for CPU time) computed on chunks of at least [`MIN_RATE_CHUNK_NS`], and the mean is
//! the exact total increase over the time covered.
//!
//! [`IdleProfile::assess`] says whether the machine really was idle: a GPU utilisation or
//! activity above zero, power drifting between the first and last third (a device still
//! settling after load), or busy CPUs make it not idle, with what was seen.
//!
//! ```
//! use flinch_analysis::idle::IdleProfile;
//! let json = r#"{"format":"flinch-idle","version":1,"created":"2026-11-28T00:00:00Z",
//!   "host":"h","origin":"calibrate","duration_s":30.0,"idle_ok":true,
//!   "channels":{"package-0.energy":{"device":"package-0","quantity":"energy","unit":"W",
//!     "method":"counter","stat_of":"rate","mean":20.0,"median":20.0,"p5":19.5,"p95":20.5,
//!     "std":0.3,"min":19.0,"max":21.0,"samples":300}}}"#;
//! let p = IdleProfile::from_json(json).unwrap();
//! assert_eq!(p.channels["package-0.energy"].mean, 20.0);
//! ```

use crate::stats::{mean_std, quantile_sorted};
use crate::stream::SpanStream;
use flinch_core::channel::{ChannelKind, ChannelSpec, Quantity, SourceInfo};
use flinch_core::counter::{CounterStep, CounterTracker};
use flinch_core::device::DeviceClass;
use flinch_core::error::{Error, Result};
use flinch_core::integrate::{Method, integrate_counter, integrate_gauge};
use flinch_core::trace::{Header, Trace};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The `format` field of every profile.
pub const IDLE_FORMAT: &str = "flinch-idle";
/// The profile format version written.
pub const IDLE_VERSION: u32 = 1;
/// The shortest chunk a counter's rate is computed over for the profile's statistics.
pub const MIN_RATE_CHUNK_NS: u64 = 100_000_000;

/// A power or energy channel drifting more than this fraction of its mean (and more than
/// [`DRIFT_FLOOR_W`]) between the first and the last third makes a profile not idle.
pub const DRIFT_FRACTION: f64 = 0.05;
/// See [`DRIFT_FRACTION`], W.
pub const DRIFT_FLOOR_W: f64 = 2.0;
/// GPM activity below this (%) on an idle GPU is sensor noise, not work.
pub const GPU_ACTIVITY_NOISE_PCT: f64 = 1.0;
/// A host CPU utilisation above this mean (%) makes a profile not idle.
pub const CPU_BUSY_UTIL_PCT: f64 = 20.0;
/// Host CPU time advancing faster than this many cores makes a profile not idle.
pub const CPU_BUSY_CORES: f64 = 1.0;

/// What a channel's statistics are of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatOf {
    /// Sample values of a gauge, in its unit.
    Samples,
    /// Rates of a counter (its unit per second: W for energy, cores for CPU time).
    Rate,
}

/// One channel's idle statistics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChannelIdle {
    /// The device.
    pub device: String,
    /// What the channel measures.
    pub quantity: Quantity,
    /// The unit of the statistics: the channel's unit for a gauge, per second for a
    /// counter (`W` for energy, `cores` for CPU time).
    pub unit: String,
    /// How the energy was measured, for power and energy channels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<Method>,
    /// Sample values or rates.
    pub stat_of: StatOf,
    /// Mean (for counters: total increase ÷ time covered).
    pub mean: f64,
    /// Median.
    pub median: f64,
    /// 5th percentile.
    pub p5: f64,
    /// 95th percentile.
    pub p95: f64,
    /// Sample standard deviation.
    pub std: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Values the statistics are over (samples, or rate chunks).
    pub samples: u64,
    /// Mean over the last third minus mean over the first third, when measurable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<f64>,
}

/// The conditions a profile was taken under, as far as the channels and sources tell.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IdleConditions {
    /// Mean of every clock channel, MHz.
    #[serde(default)]
    pub clocks_mhz: BTreeMap<String, f64>,
    /// Mean of every temperature channel, °C.
    #[serde(default)]
    pub temperature_c: BTreeMap<String, f64>,
    /// Mean of every other device-state channel (P-state, CUDA contexts, ... where a
    /// backend offers them).
    #[serde(default)]
    pub other: BTreeMap<String, f64>,
    /// Each source's attributes (driver versions, device names, zones, ...).
    #[serde(default)]
    pub attributes: BTreeMap<String, BTreeMap<String, String>>,
}

/// An idle profile. See the module docs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IdleProfile {
    /// Always [`IDLE_FORMAT`].
    pub format: String,
    /// [`IDLE_VERSION`].
    pub version: u32,
    /// When it was taken, RFC 3339.
    pub created: String,
    /// The host it was taken on.
    pub host: String,
    /// Kernel release.
    #[serde(default)]
    pub kernel: String,
    /// Where it came from: `calibrate`, or `window A..B of TRACE`.
    pub origin: String,
    /// Length of the stretch profiled, s.
    pub duration_s: f64,
    /// Whether [`IdleProfile::assess`] found the machine idle.
    pub idle_ok: bool,
    /// What made it not idle, and other remarks.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Per channel name.
    pub channels: BTreeMap<String, ChannelIdle>,
    /// Clocks, temperatures and device facts.
    #[serde(default)]
    pub conditions: IdleConditions,
    /// The sources and channels that were recorded (the channel set).
    #[serde(default)]
    pub sources: Vec<SourceInfo>,
}

/// Where an analysis takes its idle level from, in `flinch analyze`'s order of precedence
/// (the caller picks the first one given).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum IdleFrom<'a> {
    /// A stretch `A..B` of the analysed trace itself (`--idle-window`).
    Window(&'a str),
    /// A profile file written by `flinch calibrate` (`--idle FILE`).
    File(&'a Path),
    /// A profile already in memory.
    Profile(Box<IdleProfile>),
    /// The profile embedded in the trace's header by `record --idle`, if any.
    Embedded,
}

/// The idle profile for analysing the trace at `path` (whose header is `header`), with how
/// it came (`window`, `file`, `profile`, `embedded`), or `None` when the trace embeds none.
/// `options` are how the window and file options are spelled in messages
/// (`("--idle-window", "--idle")`). A window is read from the file as it streams by
/// ([`SpanStream::stretch`]: only the stretch is held in memory), with `progress(bytes
/// read, file length)`.
pub fn choose_idle(
    path: &Path,
    header: &Header,
    from: IdleFrom<'_>,
    options: (&str, &str),
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Option<(IdleProfile, &'static str)>> {
    let (window_opt, file_opt) = options;
    match from {
        IdleFrom::Window(w) => {
            let (x, y) = crate::window::parse_window(w)
                .map_err(|e| Error::Invalid(format!("{window_opt} {e}")))?;
            let (trace, s, e) = SpanStream::open(path)?.stretch(&x, &y, progress)?;
            let origin = format!("window {w} of {}", path.display());
            let mut p = IdleProfile::from_trace(&trace, s, e, &origin)?;
            if p.channels.is_empty() {
                let o = trace.header.start_anchor.mono_ns;
                return Err(Error::Invalid(format!(
                    "{window_opt} {w}: no channel has samples between {:.3} s and {:.3} s of the trace",
                    s.saturating_sub(o) as f64 / 1e9,
                    e.saturating_sub(o) as f64 / 1e9
                )));
            }
            p.assess();
            Ok(Some((p, "window")))
        }
        IdleFrom::File(file) => match IdleProfile::read(file) {
            Ok(p) => Ok(Some((p, "file"))),
            Err(Error::Invalid(m)) => Err(Error::Invalid(format!("{file_opt} {m}"))),
            // A file that cannot be read stays an I/O error (it names the file).
            Err(e) => Err(e),
        },
        IdleFrom::Profile(p) => Ok(Some((*p, "profile"))),
        IdleFrom::Embedded => match &header.idle {
            Some(v) => IdleProfile::from_value(v)
                .map(|p| Some((p, "embedded")))
                .map_err(|e| {
                    Error::Invalid(format!(
                        "{}: the idle profile embedded in the header is not usable ({e}); \
                         pass {file_opt} FILE or {window_opt} A..B instead",
                        path.display()
                    ))
                }),
            None => Ok(None),
        },
    }
}

impl IdleProfile {
    /// Parses a profile from JSON, checking its format and version.
    pub fn from_json(text: &str) -> std::result::Result<Self, String> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
        check_format(&v)?;
        // from the text again, so that errors carry their line and column
        let p: IdleProfile = serde_json::from_str(text).map_err(|e| {
            format!("not a valid idle profile: {e}; write a new one with `flinch calibrate`")
        })?;
        p.validate()
    }

    /// Reads a profile from a JSON value (as embedded in a trace header).
    pub fn from_value(v: &serde_json::Value) -> std::result::Result<Self, String> {
        check_format(v)?;
        let p = IdleProfile::deserialize(v).map_err(|e| {
            format!("not a valid idle profile: {e}; write a new one with `flinch calibrate`")
        })?;
        p.validate()
    }

    fn validate(self) -> std::result::Result<Self, String> {
        if self.version > IDLE_VERSION {
            return Err(format!(
                "profile version {} is newer than this flinch understands ({IDLE_VERSION}); upgrade flinch",
                self.version
            ));
        }
        for (name, c) in &self.channels {
            for (what, x) in [
                ("mean", c.mean),
                ("median", c.median),
                ("p5", c.p5),
                ("p95", c.p95),
                ("std", c.std),
            ] {
                if !x.is_finite() {
                    return Err(format!("channel {name:?}: {what} is not a finite number"));
                }
            }
            if c.std < 0.0 {
                return Err(format!("channel {name:?}: std {} is negative", c.std));
            }
        }
        Ok(self)
    }

    /// Reads a profile file; errors name the file and say what to do.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io("cannot read idle profile", path, e))?;
        Self::from_json(&text).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))
    }

    /// The idle statistics to subtract from `channel`: its own entry, or else, for a power
    /// or energy channel, the entry of another power or energy channel of the same device
    /// (preferring the best method), and the name of the entry used.
    pub fn level_for(&self, channel: &ChannelSpec) -> Option<(&str, &ChannelIdle)> {
        if let Some((k, c)) = self.channels.get_key_value(&channel.name) {
            return Some((k.as_str(), c));
        }
        Method::of(channel)?;
        self.channels
            .iter()
            .filter(|(_, c)| c.device == channel.device && c.method.is_some())
            .min_by_key(|(_, c)| c.method)
            .map(|(k, c)| (k.as_str(), c))
    }

    /// What a recording of `sources` on `host` should know about this profile: power and
    /// energy channels it has no level for, and a different host.
    pub fn coverage_warnings(&self, sources: &[SourceInfo], host: &str) -> Vec<String> {
        let mut w = Vec::new();
        if !self.host.is_empty() && self.host != host {
            w.push(format!(
                "the profile was taken on host {:?}, this is {host:?}",
                self.host
            ));
        }
        let missing: Vec<&str> = sources
            .iter()
            .flat_map(|s| &s.channels)
            .filter(|c| Method::of(c).is_some() && self.level_for(c).is_none())
            .map(|c| c.name.as_str())
            .collect();
        if !missing.is_empty() {
            w.push(format!(
                "the profile has no idle level for {}: their active energy will be null",
                missing.join(", ")
            ));
        }
        w
    }

    /// Profiles `[start_ns, end_ns]` of a trace. `origin` says where it came from.
    pub fn from_trace(trace: &Trace, start_ns: u64, end_ns: u64, origin: &str) -> Result<Self> {
        if end_ns <= start_ns {
            return Err(Error::Invalid(format!(
                "the idle stretch is empty ({start_ns} .. {end_ns} ns)"
            )));
        }
        let mut p = IdleProfile {
            format: IDLE_FORMAT.into(),
            version: IDLE_VERSION,
            created: trace.header.created.clone(),
            host: trace.header.host.clone(),
            kernel: trace.header.kernel.clone(),
            origin: origin.into(),
            duration_s: (end_ns - start_ns) as f64 / 1e9,
            idle_ok: true,
            warnings: Vec::new(),
            channels: BTreeMap::new(),
            conditions: IdleConditions::default(),
            sources: trace.header.sources.clone(),
        };
        for s in &trace.header.sources {
            if !s.attributes.is_empty() {
                p.conditions
                    .attributes
                    .insert(s.name.clone(), s.attributes.clone());
            }
        }
        for g in &trace.gaps {
            if g.start_ns < end_ns && g.end_ns.is_none_or(|e| e > start_ns) {
                p.warnings.push(format!(
                    "source {} did not answer for part of the idle stretch ({}); its channels \
                     are profiled from the samples that exist",
                    g.source, g.reason
                ));
            }
        }
        for ch in &trace.channels {
            let a = ch.t_ns.partition_point(|&t| t < start_ns);
            let b = ch.t_ns.partition_point(|&t| t <= end_ns);
            if b <= a {
                p.warnings.push(format!(
                    "channel {} has no samples in the idle stretch",
                    ch.spec.name
                ));
                continue;
            }
            let (t, v) = (&ch.t_ns[a..b], &ch.values[a..b]);
            let stats = match &ch.spec.kind {
                ChannelKind::Gauge => gauge_stats(&ch.spec, t, v),
                ChannelKind::Counter(spec) => {
                    counter_stats(&ch.spec, spec, ch.spec.update_period_ns, t, v)
                }
            };
            let Some(stats) = stats else {
                p.warnings.push(format!(
                    "channel {} has too few usable samples in the idle stretch",
                    ch.spec.name
                ));
                continue;
            };
            match ch.spec.quantity {
                Quantity::Clock => {
                    p.conditions
                        .clocks_mhz
                        .insert(ch.spec.name.clone(), stats.mean);
                }
                Quantity::Temperature => {
                    p.conditions
                        .temperature_c
                        .insert(ch.spec.name.clone(), stats.mean);
                }
                Quantity::Other => {
                    p.conditions.other.insert(ch.spec.name.clone(), stats.mean);
                }
                _ => {}
            }
            p.channels.insert(ch.spec.name.clone(), stats);
        }
        Ok(p)
    }

    /// Checks that the machine was idle: no GPU utilisation or activity, no power drift, no
    /// busy CPUs. Sets [`IdleProfile::idle_ok`], adds one warning per problem (saying what
    /// was seen) and returns the problems.
    pub fn assess(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        let classes: BTreeMap<&str, DeviceClass> = self
            .sources
            .iter()
            .flat_map(|s| {
                s.channels
                    .iter()
                    .map(move |c| (c.name.as_str(), crate::class::class_of(s, &c.device)))
            })
            .collect();
        for (name, c) in &self.channels {
            let class = classes
                .get(name.as_str())
                .copied()
                .unwrap_or(DeviceClass::Other);
            match (c.quantity, class) {
                // NVML utilisation is whole percent: any of it means a kernel ran. GPM
                // activity is fractional and reads a few hundredths of a percent on an idle
                // GPU, so it counts only above GPU_ACTIVITY_NOISE_PCT.
                (Quantity::Utilization, DeviceClass::Gpu) if c.max > 0.0 => {
                    problems.push(format!(
                        "{name} reached {:.1} % (mean {:.2} %): something ran on the GPU",
                        c.max, c.mean
                    ));
                }
                (Quantity::Activity, DeviceClass::Gpu) if c.max > GPU_ACTIVITY_NOISE_PCT => {
                    problems.push(format!(
                        "{name} reached {:.2} % (mean {:.3} %): something ran on the GPU",
                        c.max, c.mean
                    ));
                }
                (Quantity::Utilization, DeviceClass::Cpu) if c.mean > CPU_BUSY_UTIL_PCT => {
                    problems.push(format!(
                        "{name} averaged {:.1} % (more than {CPU_BUSY_UTIL_PCT} %): the CPUs were busy",
                        c.mean
                    ));
                }
                (Quantity::CpuTime, DeviceClass::Cpu) if c.mean > CPU_BUSY_CORES => {
                    problems.push(format!(
                        "{name} advanced at {:.2} cores (more than {CPU_BUSY_CORES}): the CPUs were busy",
                        c.mean
                    ));
                }
                (Quantity::Power | Quantity::Energy, _) => {
                    if let Some(d) = c.drift {
                        let limit = (DRIFT_FRACTION * c.mean.abs()).max(DRIFT_FLOOR_W);
                        if d.abs() > limit {
                            problems.push(format!(
                                "{name} drifted by {d:+.1} W (mean {:.1} W) between the first and \
                                 last third: the device was still settling or under load",
                                c.mean
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
        self.idle_ok = problems.is_empty();
        for p in &problems {
            if !self.warnings.contains(p) {
                self.warnings.push(p.clone());
            }
        }
        problems
    }
}

fn check_format(v: &serde_json::Value) -> std::result::Result<(), String> {
    match v.get("format").and_then(|f| f.as_str()) {
        Some(IDLE_FORMAT) => Ok(()),
        Some(other) => Err(format!(
            "format is {other:?}, expected {IDLE_FORMAT:?} (a file written by `flinch calibrate`)"
        )),
        None => Err(format!(
            "no \"format\": {IDLE_FORMAT:?} field: not an idle profile written by `flinch calibrate`"
        )),
    }
}

fn unit_of_rate(q: Quantity) -> &'static str {
    match q {
        Quantity::Energy => "W",
        Quantity::CpuTime => "cores",
        _ => "1/s",
    }
}

fn summarize(
    spec: &ChannelSpec,
    unit: String,
    stat_of: StatOf,
    mut xs: Vec<f64>,
    mean: Option<f64>,
    drift: Option<f64>,
) -> Option<ChannelIdle> {
    xs.retain(|x| x.is_finite());
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(f64::total_cmp);
    let (m, std) = mean_std(&xs)?;
    Some(ChannelIdle {
        device: spec.device.clone(),
        quantity: spec.quantity,
        unit,
        method: Method::of(spec),
        stat_of,
        mean: mean.unwrap_or(m),
        median: quantile_sorted(&xs, 0.5),
        p5: quantile_sorted(&xs, 0.05),
        p95: quantile_sorted(&xs, 0.95),
        std,
        min: xs[0],
        max: xs[xs.len() - 1],
        samples: xs.len() as u64,
        drift,
    })
}

/// Mean over the last third minus the first third, by time.
fn thirds_drift(t: &[u64], f: impl Fn(u64, u64) -> Option<f64>) -> Option<f64> {
    let (a, b) = (*t.first()?, *t.last()?);
    let third = (b - a) / 3;
    if third == 0 {
        return None;
    }
    Some(f(b - third, b)? - f(a, a + third)?)
}

fn gauge_stats(spec: &ChannelSpec, t: &[u64], v: &[f64]) -> Option<ChannelIdle> {
    let drift = thirds_drift(t, |x, y| {
        integrate_gauge(t, v, x, y)
            .ok()
            .and_then(|w| w.mean((y - x) as f64 / 1e9))
    });
    // A held channel's rows stand for the polls between them: its mean is over time (the
    // quantiles stay those of the rows).
    let mean = if spec.held() {
        match (t.first(), t.last()) {
            (Some(&a), Some(&b)) if b > a => integrate_gauge(t, v, a, b)
                .ok()
                .and_then(|w| w.mean((b - a) as f64 / 1e9)),
            _ => None,
        }
    } else {
        None
    };
    summarize(
        spec,
        spec.unit.symbol().into(),
        StatOf::Samples,
        v.to_vec(),
        mean,
        drift,
    )
}

fn counter_stats(
    spec: &ChannelSpec,
    cs: &flinch_core::channel::CounterSpec,
    update_period_ns: Option<u64>,
    t: &[u64],
    v: &[f64],
) -> Option<ChannelIdle> {
    let chunk_ns = MIN_RATE_CHUNK_NS.max(2 * update_period_ns.unwrap_or(0));
    let mut tracker = CounterTracker::new(*cs, update_period_ns);
    let mut rates = Vec::new();
    let (mut total, mut covered_ns) = (0.0, 0u64);
    let (mut chunk_start, mut chunk_delta) = (None::<u64>, 0.0);
    let mut prev_t = None;
    for (&ti, &vi) in t.iter().zip(v) {
        match tracker.update(ti, vi) {
            CounterStep::Delta { delta, .. } => {
                let dt = ti - prev_t.unwrap_or(ti);
                total += delta;
                covered_ns += dt;
                chunk_delta += delta;
                let cs = *chunk_start.get_or_insert(prev_t.unwrap_or(ti));
                if ti - cs >= chunk_ns {
                    rates.push(chunk_delta / ((ti - cs) as f64 / 1e9));
                    chunk_start = Some(ti);
                    chunk_delta = 0.0;
                }
            }
            // A reset or a flagged step breaks the chunk: start a new one here.
            _ => {
                chunk_start = Some(ti);
                chunk_delta = 0.0;
            }
        }
        prev_t = tracker.last().map(|(t, _)| t);
    }
    if covered_ns == 0 {
        return None;
    }
    let mean = total / (covered_ns as f64 / 1e9);
    if rates.is_empty() {
        rates.push(mean);
    }
    let drift = thirds_drift(t, |x, y| {
        integrate_counter(t, v, cs, update_period_ns, x, y)
            .ok()
            .filter(|w| w.resets == 0 && w.flagged == 0)
            .map(|w| w.increase / ((y - x) as f64 / 1e9))
    });
    summarize(
        spec,
        unit_of_rate(spec.quantity).into(),
        StatOf::Rate,
        rates,
        Some(mean),
        drift,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use flinch_core::channel::{CounterSpec, PowerMethod};
    use flinch_core::clock::ClockAnchor;
    use flinch_core::trace::{ChannelData, Header};
    use std::path::PathBuf;

    const MS: u64 = 1_000_000;

    fn trace_of(sources: Vec<SourceInfo>, data: Vec<(Vec<u64>, Vec<f64>)>) -> Trace {
        let mut channels = Vec::new();
        let mut it = data.into_iter();
        for s in &sources {
            for c in &s.channels {
                let (t_ns, values) = it.next().unwrap();
                channels.push(ChannelData {
                    spec: c.clone(),
                    source: s.name.clone(),
                    t_ns,
                    values,
                });
            }
        }
        Trace {
            path: PathBuf::from("t.csv"),
            header: Header::new(10 * MS, ClockAnchor::default(), sources),
            footer: None,
            channels,
            marks: vec![],
            anchors: vec![],
            gaps: vec![],
            events: vec![],
            warnings: vec![],
        }
    }

    fn gpu_source() -> SourceInfo {
        SourceInfo::new("nvml.gpu0", "nvml", DeviceClass::Gpu)
            .with_channels(vec![
                ChannelSpec::power("gpu0", "power_instant", PowerMethod::Instant),
                ChannelSpec::gauge("gpu0", "util", Quantity::Utilization),
                ChannelSpec::gauge("gpu0", "sm_clock", Quantity::Clock),
                ChannelSpec::energy_counter(
                    "gpu0",
                    "energy",
                    CounterSpec {
                        wrap_range: None,
                        max_rate: Some(1000.0),
                    },
                ),
            ])
            .with_attributes([("driver".to_owned(), "580".to_owned())].into())
    }

    fn grid(n: u64) -> Vec<u64> {
        (0..n).map(|i| i * 10 * MS).collect()
    }

    #[test]
    fn a_quiet_gpu_profiles_cleanly() {
        let t = grid(301); // 3 s
        // power alternates 118 / 120 W: mean 119, median 119 (151 × 118, 150 × 120 → 118)
        let p: Vec<f64> = (0..301)
            .map(|i| if i % 2 == 0 { 118.0 } else { 120.0 })
            .collect();
        let e: Vec<f64> = t.iter().map(|&x| 5000.0 + 119.0 * x as f64 / 1e9).collect();
        let tr = trace_of(
            vec![gpu_source()],
            vec![
                (t.clone(), p),
                (t.clone(), vec![0.0; 301]),
                (t.clone(), vec![1980.0; 301]),
                (t.clone(), e),
            ],
        );
        let mut prof = IdleProfile::from_trace(&tr, 0, 3000 * MS, "calibrate").unwrap();
        assert!(prof.assess().is_empty(), "{:?}", prof.warnings);
        assert!(prof.idle_ok);
        let pw = &prof.channels["gpu0.power_instant"];
        assert_eq!(pw.samples, 301);
        assert_eq!((pw.min, pw.max, pw.median), (118.0, 120.0, 118.0));
        // 151 × 118 + 150 × 120 = 35818 → 118.9934 W
        assert!((pw.mean - 35818.0 / 301.0).abs() < 1e-9, "{}", pw.mean);
        assert_eq!(pw.method, Some(Method::Instant));
        let en = &prof.channels["gpu0.energy"];
        assert_eq!(en.stat_of, StatOf::Rate);
        assert_eq!(en.unit, "W");
        assert!((en.mean - 119.0).abs() < 1e-6, "{en:?}");
        assert!(en.std < 1e-6);
        assert_eq!(en.samples, 30); // 100 ms chunks over 3 s
        assert_eq!(prof.conditions.clocks_mhz["gpu0.sm_clock"], 1980.0);
        assert_eq!(prof.conditions.attributes["nvml.gpu0"]["driver"], "580");
        // round trip through JSON
        let text = serde_json::to_string_pretty(&prof).unwrap();
        let back = IdleProfile::from_json(&text).unwrap();
        assert_eq!(back.sources, prof.sources);
        assert_eq!(back.conditions, prof.conditions);
        assert_eq!(
            back.channels.keys().collect::<Vec<_>>(),
            prof.channels.keys().collect::<Vec<_>>()
        );
        assert!((back.channels["gpu0.power_instant"].mean - pw.mean).abs() < 1e-9);
        // the counter's level is used for the instant channel only by name; a channel of
        // the same device without an entry falls back to the best method
        let other = ChannelSpec::power("gpu0", "power_samples", PowerMethod::DriverSamples);
        assert_eq!(prof.level_for(&other).unwrap().0, "gpu0.power_instant");
        let util = ChannelSpec::gauge("gpu0", "mem_util", Quantity::Utilization);
        assert!(prof.level_for(&util).is_none());
    }

    #[test]
    fn a_busy_or_settling_machine_is_not_idle_and_says_what_it_saw() {
        let t = grid(301);
        // power decays from 160 to 120 W over 3 s; utilisation blips to 35 %
        let p: Vec<f64> = (0..301).map(|i| 160.0 - 40.0 * i as f64 / 300.0).collect();
        let mut u = vec![0.0; 301];
        u[100] = 35.0;
        let e: Vec<f64> = t.iter().map(|&x| 119.0 * x as f64 / 1e9).collect();
        let tr = trace_of(
            vec![gpu_source()],
            vec![
                (t.clone(), p),
                (t.clone(), u),
                (t.clone(), vec![1980.0; 301]),
                (t.clone(), e),
            ],
        );
        let mut prof = IdleProfile::from_trace(&tr, 0, 3000 * MS, "calibrate").unwrap();
        let problems = prof.assess();
        assert!(!prof.idle_ok);
        let all = problems.join("\n");
        assert!(all.contains("gpu0.util reached 35.0 %"), "{all}");
        // thirds: mean over [0, 1 s] = 153.33 W, over [2, 3 s] = 126.67 W: −26.7 W
        assert!(
            all.contains("gpu0.power_instant drifted by -26.7 W"),
            "{all}"
        );
        assert_eq!(problems.len(), 2, "{all}");
    }

    #[test]
    fn gpm_activity_noise_is_idle_but_real_activity_is_not() {
        let t = grid(301);
        let src = |name: &str| {
            SourceInfo::new("nvml.gpu0", "nvml", DeviceClass::Gpu)
                .with_channels(vec![ChannelSpec::gauge("gpu0", name, Quantity::Activity)])
        };
        // an idle H200 reads a few hundredths of a percent of DRAM activity
        let noise: Vec<f64> = (0..301)
            .map(|i| if i % 7 == 0 { 0.04 } else { 0.0 })
            .collect();
        let tr = trace_of(vec![src("dram_active")], vec![(t.clone(), noise)]);
        let mut prof = IdleProfile::from_trace(&tr, 0, 3000 * MS, "calibrate").unwrap();
        assert!(prof.assess().is_empty(), "{:?}", prof.warnings);
        let mut busy = vec![0.0; 301];
        busy[150] = 12.5;
        let tr = trace_of(vec![src("sm_active")], vec![(t.clone(), busy)]);
        let mut prof = IdleProfile::from_trace(&tr, 0, 3000 * MS, "calibrate").unwrap();
        let all = prof.assess().join("\n");
        assert!(all.contains("gpu0.sm_active reached 12.50 %"), "{all}");
    }

    #[test]
    fn bad_profiles_are_refused_with_the_reason() {
        assert!(
            IdleProfile::from_json("{")
                .unwrap_err()
                .contains("not valid JSON")
        );
        assert!(
            IdleProfile::from_json(r#"{"format":"flinch-trace"}"#)
                .unwrap_err()
                .contains("expected \"flinch-idle\"")
        );
        assert!(
            IdleProfile::from_json(r#"{"mean":3}"#)
                .unwrap_err()
                .contains("no \"format\"")
        );
        let e = IdleProfile::from_json(r#"{"format":"flinch-idle","version":1}"#).unwrap_err();
        assert!(e.contains("missing field"), "{e}");
        let e = IdleProfile::from_json(
            r#"{"format":"flinch-idle","version":9,"created":"","host":"","origin":"",
            "duration_s":1,"idle_ok":true,"channels":{}}"#,
        )
        .unwrap_err();
        assert!(e.contains("newer"), "{e}");
    }
}

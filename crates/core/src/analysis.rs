//! Spans between marks: pairing, energy and activity per span, verdicts, and the summary
//! over many spans.
//!
//! A span runs from a mark labelled `from` to a mark labelled `to` ([`pair_marks`]). For
//! every span and every channel the [integrator](crate::integrate) says what the channel
//! saw; channels are grouped by device, and each device's energy comes from its preferred
//! method (driver samples, then instant power, then a model, then the energy counter, then
//! a moving average, which is flagged as lagging) among the channels that measured the span
//! cleanly. Everything is chosen from channel metadata — quantity, method, device, and the
//! device class of [`crate::device`] — never from channel names, so any backend's channels
//! work.
//!
//! # Verdicts
//!
//! Each span gets `gpu-compute`, `cpu-compute`, `idle-wait` or `unresolved`, with the
//! evidence that decided it:
//!
//! 1. **Power, per device.** Active power = mean power − idle mean (from the idle profile).
//!    The device is *busy* when active power exceeds `max(3 × idle std, 5 % of idle, 3 W)`
//!    ([`Thresholds`]), else *idle*. It is *unresolved* when its preferred channel saw fewer
//!    than two sensor updates inside the span (or the span is shorter than one update
//!    period), or when only a lagging moving average measured it; *unknown* without an
//!    idle level.
//! 2. **Activity, per channel.** Utilisation and activity gauges (GPU utilisation, SM
//!    activity, host CPU utilisation) are *busy* when their time-weighted mean over the span
//!    exceeds the idle mean by 10 percentage points; CPU-time counters (host CPU time,
//!    the traced process tree) when they advance faster than the idle rate by 0.5 cores.
//!    An activity channel that cannot resolve the span says nothing. The traced process
//!    tree's channels (source attribute `activity_scope=process`) supersede the host's,
//!    and a device's fine-grained activity channels supersede its utilisation gauges.
//! 3. **Per class** (GPU, CPU, other): power says busy/idle/unresolved (any busy device
//!    makes the class busy; else any unresolved makes it unresolved), activity says
//!    busy/idle. When both speak and disagree, the class is in **conflict**. When power is
//!    unresolved or unknown, activity decides alone.
//! 4. **The span**: any conflict → `unresolved` (never a confident wrong answer); a busy
//!    GPU → `gpu-compute`; else a busy CPU → `cpu-compute`; else a busy device of unknown
//!    class → `unresolved`; else anything unresolved → `unresolved`; else some evidence of
//!    idle → `idle-wait`; no evidence at all → `unresolved`.

use crate::channel::{ChannelKind, Quantity};
use crate::device::{ACTIVITY_SCOPE_ATTRIBUTE, DeviceClass};
use crate::error::{Error, Result};
use crate::idle::{ChannelIdle, IdleProfile};
use crate::integrate::{Method, integrate_counter, integrate_gauge, resolves};
use crate::marks::Mark;
use crate::stats::{Distribution, Histogram};
use crate::trace::{RowKind, Trace};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;

/// The numbers that turn measurements into verdicts.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Thresholds {
    /// A device is busy when its active power exceeds this many idle standard deviations …
    pub power_sigmas: f64,
    /// … and this fraction of its idle power …
    pub power_fraction: f64,
    /// … and this many watts.
    pub power_floor_w: f64,
    /// A utilisation or activity gauge is busy this many percentage points above its idle
    /// mean (0 without a profile).
    pub activity_pct: f64,
    /// A CPU-time counter is busy when it advances this many cores faster than at idle.
    pub cpu_cores: f64,
    /// A CPU-time counter resolves a span of at least this many of its update periods
    /// (ticks, 10 ms when the channel does not say).
    pub cpu_time_min_periods: u32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            power_sigmas: 3.0,
            power_fraction: 0.05,
            power_floor_w: 3.0,
            activity_pct: 10.0,
            cpu_cores: 0.5,
            cpu_time_min_periods: 10,
        }
    }
}

impl Thresholds {
    /// The active power above which a device with this idle level is busy, W.
    pub fn power_threshold_w(&self, idle: &ChannelIdle) -> f64 {
        (self.power_sigmas * idle.std)
            .max(self.power_fraction * idle.mean.abs())
            .max(self.power_floor_w)
    }
}

/// What a span was doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// A GPU was computing.
    GpuCompute,
    /// CPUs were computing (and no GPU).
    CpuCompute,
    /// Nothing was computing: the span waited.
    IdleWait,
    /// The sensors cannot tell, or the signals disagree; the evidence says which.
    Unresolved,
}

impl Verdict {
    /// Every verdict, in output order.
    pub const ALL: [Verdict; 4] = [
        Verdict::GpuCompute,
        Verdict::CpuCompute,
        Verdict::IdleWait,
        Verdict::Unresolved,
    ];
    /// As written: `gpu-compute`, `cpu-compute`, `idle-wait`, `unresolved`.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::GpuCompute => "gpu-compute",
            Verdict::CpuCompute => "cpu-compute",
            Verdict::IdleWait => "idle-wait",
            Verdict::Unresolved => "unresolved",
        }
    }
}

/// Whether a channel could measure a span.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChannelStatus {
    /// Measured.
    Ok,
    /// The span is not inside the channel's data (before its first or after its last
    /// sample).
    NoData,
    /// The channel's source did not answer, or readings were dropped, during the span.
    Gap,
    /// The counter reset during the span.
    CounterReset,
    /// A reading used was implausible or out of range.
    Flagged,
}

/// What the evidence says about a device, a channel or a class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Working.
    Busy,
    /// At idle.
    Idle,
    /// Cannot tell: too few sensor updates, or only a lagging reading.
    Unresolved,
    /// No evidence (no idle level, no usable channel, an informational channel).
    Unknown,
}

/// One energy-bearing channel over one span.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChannelEnergy {
    /// The device.
    pub device: String,
    /// How it measures energy.
    pub method: Method,
    /// Whether the device's energy comes from this channel in this span.
    pub preferred: bool,
    /// Whether it measured the span.
    pub status: ChannelStatus,
    /// Energy over the span, J (`null` unless `status` is `ok`).
    pub energy_j: Option<f64>,
    /// Energy above idle, J (`null` without an idle level).
    pub active_energy_j: Option<f64>,
    /// Mean power, W.
    pub mean_power_w: Option<f64>,
    /// The idle power subtracted, W.
    pub idle_power_w: Option<f64>,
    /// Distinct sensor updates inside the span.
    pub updates_in_span: u32,
    /// How much of the start of the span the verdict skipped: the channel's response time
    /// (two sensor updates), during which it still shows the previous state.
    pub settle_s: f64,
    /// Mean power over the span without its first `settle_s`, W: what the verdict uses.
    pub settled_mean_power_w: Option<f64>,
    /// Whether the sensor resolved the settled part of the span.
    pub settled_resolved: bool,
    /// Samples inside the span.
    pub samples_in_span: u32,
    /// Whether the sensor resolves the span (at least two updates, no shorter than one
    /// update period).
    pub resolved: bool,
    /// Whether the method lags load steps (a moving average).
    pub lagging: bool,
    /// Why it is not `ok`, or other remarks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One device over one span, from its preferred channel.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeviceSpan {
    /// GPU, CPU or other.
    pub class: DeviceClass,
    /// The channel the energy comes from (`null`: none measured the span).
    pub channel: Option<String>,
    /// Its method.
    pub method: Option<Method>,
    /// Energy, J.
    pub energy_j: Option<f64>,
    /// Energy above idle, J.
    pub active_energy_j: Option<f64>,
    /// Mean power, W.
    pub mean_power_w: Option<f64>,
    /// Idle power, W.
    pub idle_power_w: Option<f64>,
    /// Active power above which the device counts as busy, W.
    pub threshold_w: Option<f64>,
    /// Busy, idle, unresolved or unknown.
    pub state: State,
    /// How far the preferred power channel's energy is from the energy counter's, % of the
    /// counter's, when both measured the span.
    pub counter_disagreement_pct: Option<f64>,
}

/// One activity channel (utilisation, activity, CPU time, clock, temperature, ...) over one
/// span.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ActivitySpan {
    /// The device.
    pub device: String,
    /// GPU, CPU or other.
    pub class: DeviceClass,
    /// What it measures.
    pub quantity: Quantity,
    /// Unit of `mean`: the channel's unit for gauges, `cores` for CPU time.
    pub unit: String,
    /// Whether it measured the span.
    pub status: ChannelStatus,
    /// Time-weighted mean over the span (gauges), or the rate (CPU time: cores busy).
    pub mean: Option<f64>,
    /// The idle profile's mean for this channel.
    pub idle_mean: Option<f64>,
    /// Samples inside the span.
    pub samples_in_span: u32,
    /// Distinct sensor updates inside the span.
    pub updates_in_span: u32,
    /// Whether the channel resolves the span.
    pub resolved: bool,
    /// Busy or idle for utilisation, activity and CPU time; unknown for the others or when
    /// unresolved.
    pub state: State,
    /// `process` for a channel of the traced process tree (source attribute
    /// `activity_scope=process`), else `device`.
    pub scope: &'static str,
    /// Whether it took part in the verdict: a process-scoped channel supersedes the
    /// device-scoped ones of its class, and a device's fine-grained activity channels
    /// (SM activity) supersede its utilisation gauges.
    pub used: bool,
}

/// One span.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SpanReport {
    /// The start mark's label.
    pub from: String,
    /// The end mark's label.
    pub to: String,
    /// The request id that paired them, if any.
    pub req: Option<String>,
    /// Start, `CLOCK_MONOTONIC` ns.
    pub start_ns: u64,
    /// End, `CLOCK_MONOTONIC` ns.
    pub end_ns: u64,
    /// Length, s.
    pub duration_s: f64,
    /// What the span was doing.
    pub verdict: Verdict,
    /// The numbers that decided it, one line each.
    pub evidence: Vec<String>,
    /// Per energy-bearing channel.
    pub energy: BTreeMap<String, ChannelEnergy>,
    /// Per device.
    pub devices: BTreeMap<String, DeviceSpan>,
    /// Per activity channel.
    pub activity: BTreeMap<String, ActivitySpan>,
}

/// A mark that did not pair.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct UnmatchedMark {
    /// `start` (a `from` mark never closed) or `end` (a `to` mark with nothing open).
    pub end: &'static str,
    /// Its label.
    pub label: String,
    /// Its time, ns.
    pub t_ns: u64,
    /// Its request id.
    pub req: Option<String>,
}

/// Statistics of an energy over the spans where it was measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EnergyStats {
    /// Spans with a value.
    pub count: usize,
    /// Sum, J.
    pub total: f64,
    /// Distribution, J.
    #[serde(flatten)]
    pub dist: Distribution,
}

impl EnergyStats {
    fn of(xs: &[f64]) -> Option<Self> {
        Some(EnergyStats {
            count: xs.len(),
            total: xs.iter().sum(),
            dist: Distribution::of(xs)?,
        })
    }
}

/// The summary over all spans.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    /// Spans.
    pub count: usize,
    /// Span durations, s (`null` without spans).
    pub duration_s: Option<Distribution>,
    /// Span durations, s.
    pub histogram: Histogram,
    /// Spans per verdict (every verdict present).
    pub verdicts: BTreeMap<&'static str, usize>,
    /// Active energy per device, J.
    pub active_energy_j: BTreeMap<String, EnergyStats>,
    /// Energy per device, J.
    pub energy_j: BTreeMap<String, EnergyStats>,
    /// `from` marks never closed.
    pub unmatched_starts: usize,
    /// `to` marks with nothing open.
    pub unmatched_ends: usize,
}

/// Which idle profile was used.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IdleUsed {
    /// Where the profile came from (`calibrate`, a window of a trace).
    pub origin: String,
    /// How it reached the analysis: `embedded` (in the trace header), `file`, `window`.
    pub via: String,
    /// Its host.
    pub host: String,
    /// When it was taken.
    pub created: String,
    /// Whether the machine was idle while it was taken.
    pub idle_ok: bool,
}

/// The whole analysis: what `flinch analyze --json` prints.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// The trace file.
    pub trace: String,
    /// The start label.
    pub from: String,
    /// The end label.
    pub to: String,
    /// The idle profile used (`null`: none, so no active energy and no power verdicts).
    pub idle: Option<IdleUsed>,
    /// The thresholds used.
    pub thresholds: Thresholds,
    /// Things to know (a trace cut short, an idle profile from another host, ...).
    pub warnings: Vec<String>,
    /// Every span, in start order.
    pub spans: Vec<SpanReport>,
    /// Marks that did not pair.
    pub unmatched: Vec<UnmatchedMark>,
    /// Over all spans.
    pub summary: Summary,
}

/// Which marks pair into spans.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pairing {
    /// (start mark index, end mark index), in start order.
    pub pairs: Vec<(usize, usize)>,
    /// `from` marks never closed.
    pub unmatched_starts: Vec<usize>,
    /// `to` marks with nothing open.
    pub unmatched_ends: Vec<usize>,
}

/// Pairs marks (sorted by time) into spans from `from` to `to`.
///
/// Marks pair within their request id (`req`; marks without one pair among themselves):
/// each `to` closes the oldest open `from` of its request (first in, first out). When
/// `from` and `to` are the same label, each mark closes the span opened by the previous
/// one of its request (consecutive marks delimit spans).
pub fn pair_marks(marks: &[Mark], from: &str, to: &str) -> Pairing {
    let mut p = Pairing::default();
    let mut open: HashMap<Option<&str>, VecDeque<usize>> = HashMap::new();
    for (i, m) in marks.iter().enumerate() {
        let q = open.entry(m.req()).or_default();
        if from == to {
            if m.label == from {
                if let Some(j) = q.pop_front() {
                    p.pairs.push((j, i));
                }
                q.push_back(i);
            }
        } else if m.label == from {
            q.push_back(i);
        } else if m.label == to {
            match q.pop_front() {
                Some(j) => p.pairs.push((j, i)),
                None => p.unmatched_ends.push(i),
            }
        }
    }
    if from != to {
        p.unmatched_starts = open.into_values().flatten().collect();
        p.unmatched_starts.sort_unstable();
    }
    p.pairs.sort_unstable();
    p
}

/// Where an idle window starts or ends, as given on the command line.
#[derive(Clone, Debug, PartialEq)]
pub enum WindowEdge {
    /// Seconds from the trace's start (its start anchor).
    Seconds(f64),
    /// The first mark with this label (for the end: the first at or after the start).
    Label(String),
}

/// Parses `A..B`, each side a mark label or seconds from the trace's start (`12.5`,
/// `12.5s`); `A..` and `..B` leave that side open (`None`).
pub fn parse_open_window(
    s: &str,
) -> std::result::Result<(Option<WindowEdge>, Option<WindowEdge>), String> {
    let (a, b) = s.split_once("..").ok_or_else(|| {
        format!("{s:?} is not A..B (A and B are mark labels or seconds from the trace start)")
    })?;
    let edge = |x: &str| -> std::result::Result<Option<WindowEdge>, String> {
        let x = x.trim();
        if x.is_empty() {
            return Ok(None);
        }
        let num = x.strip_suffix('s').unwrap_or(x);
        if let Ok(v) = num.parse::<f64>() {
            if !v.is_finite() {
                return Err(format!("{s:?}: {x} is not a time in seconds"));
            }
            return Ok(Some(WindowEdge::Seconds(v)));
        }
        if crate::marks::is_valid_label(x) {
            Ok(Some(WindowEdge::Label(x.to_owned())))
        } else {
            Err(format!(
                "{s:?}: {x:?} is neither a number of seconds nor a mark label"
            ))
        }
    };
    Ok((edge(a)?, edge(b)?))
}

/// Parses `A..B` (both sides needed), where each side is a mark label or a time in seconds
/// from the trace's start (`12.5` or `12.5s`), not before it.
pub fn parse_window(s: &str) -> std::result::Result<(WindowEdge, WindowEdge), String> {
    match parse_open_window(s)? {
        (Some(a), Some(b)) => {
            for e in [&a, &b] {
                if let WindowEdge::Seconds(v) = e
                    && *v < 0.0
                {
                    return Err(format!("{s:?}: {v} is not a time ≥ 0 s"));
                }
            }
            Ok((a, b))
        }
        _ => Err(format!("{s:?}: both ends of A..B are needed")),
    }
}

/// Resolves a window on a trace into `(start_ns, end_ns)`: a label is its first mark (for
/// the end, the first at or after the start), seconds count from the trace's start, and an
/// open side is the trace's first or last sample or mark. `what` names the option in
/// messages.
pub fn resolve_open_window(
    trace: &Trace,
    a: Option<&WindowEdge>,
    b: Option<&WindowEdge>,
    what: &str,
) -> std::result::Result<(u64, u64), String> {
    let origin = trace.header.start_anchor.mono_ns;
    let (lo, hi) = trace.time_range_ns().unwrap_or((origin, origin));
    let find = |e: &WindowEdge, after: u64| -> std::result::Result<u64, String> {
        match e {
            WindowEdge::Seconds(s) => Ok((origin as i128)
                .saturating_add((s * 1e9).round() as i128)
                .clamp(0, u64::MAX as i128) as u64),
            WindowEdge::Label(l) => trace
                .marks
                .iter()
                .find(|m| &m.label == l && m.t_ns >= after)
                .map(|m| m.t_ns)
                .ok_or_else(|| {
                    format!(
                        "{what}: no mark {l:?}{} in {}; labels present: {}",
                        if after > 0 {
                            " after the window's start"
                        } else {
                            ""
                        },
                        trace.path.display(),
                        describe_labels(trace)
                    )
                }),
        }
    };
    let start = match a {
        Some(e) => find(e, 0)?,
        None => lo,
    };
    let end = match b {
        Some(e) => find(e, start)?,
        None => hi,
    };
    if end <= start {
        let secs = |t: u64| (t as i128 - origin as i128) as f64 / 1e9;
        return Err(format!(
            "{what}: the window ends ({:.3} s) before it starts ({:.3} s); times are seconds \
             from the trace's start, which spans {:.3} s to {:.3} s",
            secs(end),
            secs(start),
            secs(lo),
            secs(hi)
        ));
    }
    Ok((start, end))
}

/// Resolves an idle window (`--idle-window A..B`) on a trace into `(start_ns, end_ns)`.
pub fn resolve_window(trace: &Trace, a: &WindowEdge, b: &WindowEdge) -> Result<(u64, u64)> {
    resolve_open_window(trace, Some(a), Some(b), "--idle-window").map_err(Error::Invalid)
}

/// The labels in a trace with their counts, for messages: `a (3), b (3)` or `none`.
pub fn describe_labels(trace: &Trace) -> String {
    let labels = trace.labels();
    if labels.is_empty() {
        return "none (the trace has no marks)".into();
    }
    labels
        .iter()
        .map(|(l, n)| format!("{l} ({n})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// How long after a change a channel shows it: two sensor updates (a sample describes the
/// interval before it, so the first one wholly after a change comes up to two periods
/// later). Verdicts skip this much of the start of a span, so the tail of the previous state
/// (a busy phase's power still ramping down in the sensor, a 100 ms activity window
/// straddling the edge) is not taken for this span's. Energies always cover the whole span.
///
/// Measured power also has a physical tail: after a load step an H100's or H200's power
/// takes 60–90 ms to come within a few watts of its new level (724 → 424 → 181 → 131 →
/// 123.5 W at 11, 31, 56 and 89 ms after a busy phase ended, `docs/hardware.md`). So a
/// power channel whose sensor period is known settles for at least [`POWER_TAIL_NS`].
pub fn settle_ns(spec: &crate::channel::ChannelSpec) -> u64 {
    match spec.update_period_ns {
        None => 0,
        Some(p) if spec.quantity == Quantity::Power => p.saturating_mul(2).max(POWER_TAIL_NS),
        Some(p) => p.saturating_mul(2),
    }
}

/// The least settle time of a measured power channel (see [`settle_ns`]).
pub const POWER_TAIL_NS: u64 = 80_000_000;

/// What a gauge's samples say about `[a, b]`: their mean, their number and how many differ
/// from the one before; `None` when there is none. For a channel whose repeated readings
/// were elided (`held`), see [`held_inside`].
fn gauge_inside(held: bool, t: &[u64], v: &[f64], a: u64, b: u64) -> Option<(f64, u32, u32)> {
    if held {
        held_inside(t, v, a, b)
    } else {
        samples_inside(t, v, a, b)
    }
}

/// [`samples_inside`] for a channel whose repeated readings were elided
/// ([`crate::channel::ChannelSpec::heartbeat_ns`]): each row stands for the polls since the
/// row before it, so the mean is weighted by that time (clipped to the window), and a row
/// after `b` that repeats the one before it (the value was held across `b`) covers the
/// window's end. On rows written at every poll this is the mean of the samples (polls a
/// steady interval apart), and it does not change when repeats are elided; the count is
/// of rows, plus one for a held value reaching in from after `b`.
fn held_inside(t: &[u64], v: &[f64], a: u64, b: u64) -> Option<(f64, u32, u32)> {
    let lo = t.partition_point(|&x| x < a);
    let hi = t.partition_point(|&x| x <= b);
    let (mut sum, mut weight) = (0.0, 0u64);
    for i in lo..hi {
        let from = if i == 0 { a } else { t[i - 1].max(a) };
        let w = t[i].saturating_sub(from);
        sum += v[i] * w as f64;
        weight += w;
    }
    let mut n = hi.saturating_sub(lo) as u32;
    if hi < t.len() && hi > 0 && v[hi] == v[hi - 1] {
        let from = t[hi - 1].max(a);
        let w = b.saturating_sub(from);
        if w > 0 {
            sum += v[hi] * w as f64;
            weight += w;
            n += 1;
        }
    }
    if n == 0 {
        return None;
    }
    let changes = if hi > lo {
        v[lo.max(1) - 1..hi]
            .windows(2)
            .filter(|w| w[0] != w[1])
            .count() as u32
    } else {
        0
    };
    let mean = if weight > 0 {
        sum / weight as f64
    } else {
        v[lo..hi].iter().sum::<f64>() / (hi - lo).max(1) as f64
    };
    Some((mean, n, changes))
}

/// The mean of a gauge's samples stamped in `[a, b]`, their number and how many differ from
/// the one before. `None` when there is none.
fn samples_inside(t: &[u64], v: &[f64], a: u64, b: u64) -> Option<(f64, u32, u32)> {
    let lo = t.partition_point(|&x| x < a);
    let hi = t.partition_point(|&x| x <= b);
    if hi <= lo {
        return None;
    }
    let xs = &v[lo..hi];
    let changes = xs.windows(2).filter(|w| w[0] != w[1]).count() as u32;
    Some((
        xs.iter().sum::<f64>() / xs.len() as f64,
        xs.len() as u32,
        changes,
    ))
}

struct Chan {
    class: DeviceClass,
    process_scoped: bool,
    method: Option<Method>,
    /// Stretches with no data for this channel's source: (start, end, why).
    holes: Vec<(u64, u64, String)>,
    /// Reset and flag rows written for this channel.
    marks: Vec<(u64, RowKind)>,
    idle: Option<(String, ChannelIdle)>,
}

/// Measures spans of one trace. Build once, then call [`Analyzer::span`] per span (or
/// [`Analyzer::run`] for all of them).
pub struct Analyzer<'t> {
    trace: &'t Trace,
    chans: Vec<Chan>,
    /// device → channel indices of its energy-bearing channels, best method first.
    devices: BTreeMap<String, (DeviceClass, Vec<usize>)>,
    thresholds: Thresholds,
    has_idle: bool,
    idle_used: Option<IdleUsed>,
    idle_warnings: Vec<String>,
}

struct Measured {
    status: ChannelStatus,
    note: Option<String>,
    /// Gauges: integral; counters: increase.
    value: f64,
    samples: u32,
    changes: u32,
}

impl<'t> Analyzer<'t> {
    /// Prepares a trace for analysis with an idle profile (or none); `via` says how the
    /// profile came (`embedded`, `file`, `window`) for the report.
    pub fn new(
        trace: &'t Trace,
        idle: Option<(&IdleProfile, &str)>,
        thresholds: Thresholds,
    ) -> Self {
        let idle_used = idle.map(|(p, via)| IdleUsed {
            origin: p.origin.clone(),
            via: via.to_owned(),
            host: p.host.clone(),
            created: p.created.clone(),
            idle_ok: p.idle_ok,
        });
        let mut idle_warnings = Vec::new();
        if let Some((p, _)) = idle {
            if !p.idle_ok {
                idle_warnings.push(format!(
                    "the idle profile was taken while the machine was not idle: {}",
                    p.warnings.join("; ")
                ));
            }
            idle_warnings.extend(
                p.coverage_warnings(&trace.header.sources, &trace.header.host)
                    .into_iter()
                    .map(|w| format!("idle profile: {w}")),
            );
        }
        let idle = idle.map(|(p, _)| p);
        let source_of: HashMap<&str, &crate::channel::SourceInfo> = trace
            .header
            .sources
            .iter()
            .map(|s| (s.name.as_str(), s))
            .collect();
        let mut chans = Vec::with_capacity(trace.channels.len());
        let mut devices: BTreeMap<String, (DeviceClass, Vec<usize>)> = BTreeMap::new();
        for (i, ch) in trace.channels.iter().enumerate() {
            let source = source_of.get(ch.source.as_str());
            let class = source
                .map(|s| DeviceClass::of(s, &ch.spec.device))
                .unwrap_or(DeviceClass::Other);
            let process_scoped = source.is_some_and(|s| {
                s.attributes
                    .get(ACTIVITY_SCOPE_ATTRIBUTE)
                    .is_some_and(|v| v == "process")
            });
            let mut holes: Vec<(u64, u64, String)> = trace
                .gaps
                .iter()
                .filter(|g| g.source == ch.source)
                .map(|g| {
                    (
                        g.start_ns,
                        g.end_ns.unwrap_or(u64::MAX),
                        format!("source {} did not answer: {}", g.source, g.reason),
                    )
                })
                .collect();
            let mut marks = Vec::new();
            for e in &trace.events {
                match e.kind {
                    RowKind::Drop if e.channel == ch.source => holes.push((
                        e.t_ns,
                        e.t_ns,
                        format!(
                            "{} readings of source {} were dropped (the writer fell behind)",
                            e.value.unwrap_or(0.0),
                            ch.source
                        ),
                    )),
                    RowKind::Reset | RowKind::Flag if e.channel == ch.spec.name => {
                        marks.push((e.t_ns, e.kind));
                    }
                    _ => {}
                }
            }
            let method = Method::of(&ch.spec);
            if method.is_some() {
                devices
                    .entry(ch.spec.device.clone())
                    .or_insert_with(|| (class, Vec::new()))
                    .1
                    .push(i);
            }
            let idle = idle.and_then(|p| {
                p.level_for(&ch.spec)
                    .map(|(k, c)| (k.to_owned(), c.clone()))
            });
            chans.push(Chan {
                class,
                process_scoped,
                method,
                holes,
                marks,
                idle,
            });
        }
        for (_, idx) in devices.values_mut() {
            idx.sort_by_key(|&i| chans[i].method);
        }
        Analyzer {
            trace,
            chans,
            devices,
            thresholds,
            has_idle: idle.is_some(),
            idle_used,
            idle_warnings,
        }
    }

    fn measure(&self, i: usize, start: u64, end: u64) -> Measured {
        let ch = &self.trace.channels[i];
        let c = &self.chans[i];
        let fail = |status, note: String| Measured {
            status,
            note: Some(note),
            value: 0.0,
            samples: 0,
            changes: 0,
        };
        let (value, samples, changes, bracket, resets, flagged) = match &ch.spec.kind {
            ChannelKind::Gauge => match integrate_gauge(&ch.t_ns, &ch.values, start, end) {
                Ok(w) => (
                    w.integral,
                    w.samples_inside,
                    w.changes_inside,
                    w.bracket_ns,
                    0,
                    0,
                ),
                Err(e) => return fail(ChannelStatus::NoData, e.to_string()),
            },
            ChannelKind::Counter(spec) => match integrate_counter(
                &ch.t_ns,
                &ch.values,
                spec,
                ch.spec.update_period_ns,
                start,
                end,
            ) {
                Ok(w) => (
                    w.increase,
                    w.samples_inside,
                    w.changes_inside,
                    w.bracket_ns,
                    w.resets,
                    w.flagged,
                ),
                Err(e) => return fail(ChannelStatus::NoData, e.to_string()),
            },
        };
        let (lo, hi) = bracket;
        for (a, b, why) in &c.holes {
            // A hole matters when it overlaps the stretch between the samples used.
            if (*a < hi && *b > lo) || (*a == *b && *a >= lo && *a <= hi) {
                return fail(ChannelStatus::Gap, why.clone());
            }
        }
        let written_reset = c
            .marks
            .iter()
            .any(|(t, k)| *k == RowKind::Reset && *t > lo && *t <= hi);
        if resets > 0 || written_reset {
            return fail(
                ChannelStatus::CounterReset,
                "the counter restarted during the span: its energy there is unknown".into(),
            );
        }
        let written_flag = c
            .marks
            .iter()
            .any(|(t, k)| *k == RowKind::Flag && *t >= lo && *t <= hi);
        if flagged > 0 || written_flag {
            return fail(
                ChannelStatus::Flagged,
                "an implausible or out-of-range reading falls in the span".into(),
            );
        }
        Measured {
            status: ChannelStatus::Ok,
            note: None,
            value,
            samples,
            changes,
        }
    }

    /// Measures one span from mark `from` to mark `to`.
    pub fn span(&self, from: &Mark, to: &Mark) -> SpanReport {
        let (start, end) = (from.t_ns, to.t_ns.max(from.t_ns));
        let dur_ns = end - start;
        let dur_s = dur_ns as f64 / 1e9;
        let mut energy = BTreeMap::new();
        let mut activity = BTreeMap::new();
        let mut evidence = Vec::new();
        let th = &self.thresholds;

        for (i, ch) in self.trace.channels.iter().enumerate() {
            let c = &self.chans[i];
            let m = self.measure(i, start, end);
            let ok = m.status == ChannelStatus::Ok;
            if let Some(method) = c.method {
                let updates = if method.samples_are_updates() {
                    m.samples
                } else {
                    m.changes
                };
                let e = ok.then_some(m.value);
                let mean = e.and_then(|e| (dur_s > 0.0).then(|| e / dur_s));
                let resolved = ok && resolves(updates, dur_ns, ch.spec.update_period_ns);
                let settle = settle_ns(&ch.spec);
                let (settled_mean, settled_resolved) = if settle == 0 {
                    (mean, resolved)
                } else if start + settle < end {
                    let a = start + settle;
                    let d = end - a;
                    let sm = self.measure(i, a, end);
                    let ok = sm.status == ChannelStatus::Ok;
                    match ch.spec.kind {
                        // A gauge's verdict comes from the samples stamped inside the
                        // settled window: each describes the interval before its stamp, so
                        // none of them reaches past the span's end into the next phase the
                        // way the edge interpolation of the energy does.
                        ChannelKind::Gauge => {
                            match gauge_inside(ch.spec.held(), &ch.t_ns, &ch.values, a, end) {
                                Some((m, n, changes)) => {
                                    let u = if method.samples_are_updates() {
                                        n
                                    } else {
                                        changes
                                    };
                                    (
                                        ok.then_some(m),
                                        ok && resolves(u, d, ch.spec.update_period_ns),
                                    )
                                }
                                None => (None, false),
                            }
                        }
                        ChannelKind::Counter(_) => {
                            let u = if method.samples_are_updates() {
                                sm.samples
                            } else {
                                sm.changes
                            };
                            (
                                ok.then(|| sm.value / (d as f64 / 1e9)),
                                ok && resolves(u, d, ch.spec.update_period_ns),
                            )
                        }
                    }
                } else {
                    (None, false)
                };
                let idle_w = c.idle.as_ref().map(|(_, l)| l.mean);
                let active = match (e, idle_w) {
                    (Some(e), Some(p)) => Some(e - p * dur_s),
                    _ => None,
                };
                energy.insert(
                    ch.spec.name.clone(),
                    ChannelEnergy {
                        device: ch.spec.device.clone(),
                        method,
                        preferred: false,
                        status: m.status,
                        energy_j: e,
                        active_energy_j: active,
                        mean_power_w: mean,
                        idle_power_w: idle_w,
                        updates_in_span: updates,
                        samples_in_span: m.samples,
                        resolved,
                        settle_s: settle as f64 / 1e9,
                        settled_mean_power_w: settled_mean,
                        settled_resolved,
                        lagging: method.lagging(),
                        note: m.note,
                    },
                );
                continue;
            }
            // Activity is judged on the settled part of the span (see `settle_ns`), from the
            // samples stamped inside it.
            let settle = settle_ns(&ch.spec);
            let (astart, mut m) = if settle == 0 {
                (start, m)
            } else {
                let a = (start + settle).min(end);
                (a, self.measure(i, a, end))
            };
            if settle > 0 && ch.spec.kind == ChannelKind::Gauge {
                match gauge_inside(ch.spec.held(), &ch.t_ns, &ch.values, astart, end) {
                    Some((mean, n, changes)) => {
                        m.value = mean * ((end - astart) as f64 / 1e9);
                        m.samples = n;
                        m.changes = changes;
                    }
                    None => m.samples = 0,
                }
            }
            let ok = m.status == ChannelStatus::Ok;
            let dur_ns = end - astart;
            let dur_s = dur_ns as f64 / 1e9;
            let (mean, unit, resolved) = match (&ch.spec.kind, ch.spec.quantity) {
                (ChannelKind::Counter(_), q) => {
                    let tick = ch.spec.update_period_ns.unwrap_or(10_000_000);
                    let long_enough = dur_ns >= tick * th.cpu_time_min_periods as u64;
                    let unit = if q == Quantity::CpuTime {
                        "cores".to_owned()
                    } else {
                        format!("{}/s", ch.spec.unit.symbol())
                    };
                    let rate = (ok && dur_s > 0.0).then(|| m.value / dur_s);
                    // A held channel's value is known between its rows: the bracket
                    // found by the integrator is coverage enough.
                    let covered = m.samples >= 1 || ch.spec.held();
                    (rate, unit, ok && long_enough && covered)
                }
                (ChannelKind::Gauge, _) => {
                    let mean = (ok && dur_s > 0.0).then(|| m.value / dur_s);
                    let long_enough = ch.spec.update_period_ns.is_none_or(|p| dur_ns >= p);
                    let covered = m.samples >= 1 || ch.spec.held();
                    (
                        mean,
                        ch.spec.unit.symbol().to_owned(),
                        ok && long_enough && covered,
                    )
                }
            };
            let idle_mean = c.idle.as_ref().map(|(_, l)| l.mean);
            let decisive = matches!(
                ch.spec.quantity,
                Quantity::Utilization | Quantity::Activity | Quantity::CpuTime
            );
            let state = match (decisive, resolved, mean) {
                (true, true, Some(x)) => {
                    let excess = x - idle_mean.unwrap_or(0.0);
                    let limit = if ch.spec.quantity == Quantity::CpuTime {
                        th.cpu_cores
                    } else {
                        th.activity_pct
                    };
                    if excess > limit {
                        State::Busy
                    } else {
                        State::Idle
                    }
                }
                _ => State::Unknown,
            };
            activity.insert(
                ch.spec.name.clone(),
                ActivitySpan {
                    device: ch.spec.device.clone(),
                    class: c.class,
                    quantity: ch.spec.quantity,
                    unit,
                    status: m.status,
                    mean,
                    idle_mean,
                    samples_in_span: m.samples,
                    updates_in_span: m.changes,
                    resolved,
                    state,
                    scope: if c.process_scoped {
                        "process"
                    } else {
                        "device"
                    },
                    used: false,
                },
            );
        }
        let superseded = mark_used_activity(&mut activity);

        // Devices: the best method that measured the span.
        let mut devices = BTreeMap::new();
        for (dev, (class, idx)) in &self.devices {
            let names: Vec<&str> = idx
                .iter()
                .map(|&i| self.trace.channels[i].spec.name.as_str())
                .collect();
            let chosen = names
                .iter()
                .find(|n| energy[**n].status == ChannelStatus::Ok)
                .copied();
            let Some(name) = chosen else {
                let why: Vec<String> = names
                    .iter()
                    .map(|n| {
                        format!(
                            "{n}: {}",
                            energy[*n].note.as_deref().unwrap_or("not measured")
                        )
                    })
                    .collect();
                evidence.push(format!(
                    "{dev}: no channel measured the span ({})",
                    why.join("; ")
                ));
                devices.insert(
                    dev.clone(),
                    DeviceSpan {
                        class: *class,
                        channel: None,
                        method: None,
                        energy_j: None,
                        active_energy_j: None,
                        mean_power_w: None,
                        idle_power_w: None,
                        threshold_w: None,
                        state: State::Unknown,
                        counter_disagreement_pct: None,
                    },
                );
                continue;
            };
            if let Some(e) = energy.get_mut(name) {
                e.preferred = true;
            }
            let e = &energy[name];
            let ci = idx[names.iter().position(|n| *n == name).unwrap_or(0)];
            let idle = self.chans[ci].idle.as_ref().map(|(_, l)| l);
            let threshold = idle.map(|l| th.power_threshold_w(l));
            let counter_disagreement_pct = if e.method != Method::Counter {
                names
                    .iter()
                    .map(|n| &energy[*n])
                    .find(|x| x.method == Method::Counter && x.status == ChannelStatus::Ok)
                    .and_then(|cnt| match (e.energy_j, cnt.energy_j) {
                        (Some(a), Some(b)) if b.abs() > 1e-9 => Some((a - b) / b * 100.0),
                        _ => None,
                    })
            } else {
                None
            };
            let mut line = format!("{dev} ({class}): ");
            let state = if e.lagging {
                let _ = write!(
                    line,
                    "only a lagging {} reading ({name}) measured the span",
                    e.method
                );
                State::Unresolved
            } else if !e.settled_resolved {
                let _ = write!(
                    line,
                    "{name} ({}) saw {} sensor update(s) inside a {:.3} s span{}{}",
                    e.method,
                    e.updates_in_span,
                    dur_s,
                    if e.settle_s > 0.0 {
                        format!(
                            ", too few past its {:.0} ms response time",
                            e.settle_s * 1e3
                        )
                    } else {
                        String::new()
                    },
                    self.trace.channels[ci]
                        .spec
                        .update_period_ns
                        .map(|p| format!(" (updates every {:.0} ms)", p as f64 / 1e6))
                        .unwrap_or_default()
                );
                State::Unresolved
            } else {
                match (e.settled_mean_power_w, e.idle_power_w, threshold) {
                    (Some(mean), Some(idle_w), Some(thr)) => {
                        let active = mean - idle_w;
                        let busy = active > thr;
                        let skipped = if e.settle_s > 0.0 {
                            format!(" after its first {:.0} ms", e.settle_s * 1e3)
                        } else {
                            String::new()
                        };
                        let _ = write!(
                            line,
                            "{mean:.1} W mean{skipped}, {active:+.1} W over idle {idle_w:.1} W (busy above {thr:.1} W), {}, {} updates",
                            e.method, e.updates_in_span
                        );
                        if busy { State::Busy } else { State::Idle }
                    }
                    (Some(mean), _, _) => {
                        let _ = write!(
                            line,
                            "{mean:.1} W mean ({}), no idle level to compare with",
                            e.method
                        );
                        State::Unknown
                    }
                    _ => State::Unknown,
                }
            };
            let _ = write!(line, " → {}", state_name(state));
            evidence.push(line);
            devices.insert(
                dev.clone(),
                DeviceSpan {
                    class: *class,
                    channel: Some(name.to_owned()),
                    method: Some(e.method),
                    energy_j: e.energy_j,
                    active_energy_j: e.active_energy_j,
                    mean_power_w: e.mean_power_w,
                    idle_power_w: e.idle_power_w,
                    threshold_w: threshold,
                    state,
                    counter_disagreement_pct,
                },
            );
        }
        for (name, a) in &activity {
            if a.state == State::Unknown {
                if !a.resolved
                    && matches!(
                        a.quantity,
                        Quantity::Utilization | Quantity::Activity | Quantity::CpuTime
                    )
                {
                    evidence.push(format!(
                        "{name}: cannot resolve the span ({} samples inside)",
                        a.samples_in_span
                    ));
                }
                continue;
            }
            if let Some(why) = superseded.get(name) {
                evidence.push(format!("{name}: {} (not used: {why})", state_name(a.state)));
                continue;
            }
            let (mean, idle) = (a.mean.unwrap_or(f64::NAN), a.idle_mean.unwrap_or(0.0));
            let limit = if a.quantity == Quantity::CpuTime {
                th.cpu_cores
            } else {
                th.activity_pct
            };
            evidence.push(format!(
                "{name} ({}): {mean:.2} {} mean, idle {idle:.2} (busy above +{limit}) → {}",
                a.class,
                a.unit,
                state_name(a.state)
            ));
        }
        let verdict = self.decide(&devices, &activity, &mut evidence);
        SpanReport {
            from: from.label.clone(),
            to: to.label.clone(),
            req: from.req().or(to.req()).map(str::to_owned),
            start_ns: start,
            end_ns: end,
            duration_s: dur_s,
            verdict,
            evidence,
            energy,
            devices,
            activity,
        }
    }

    fn decide(
        &self,
        devices: &BTreeMap<String, DeviceSpan>,
        activity: &BTreeMap<String, ActivitySpan>,
        evidence: &mut Vec<String>,
    ) -> Verdict {
        #[derive(Clone, Copy, PartialEq, Debug)]
        enum Class {
            Busy,
            Idle,
            Unresolved,
            Conflict,
            None,
        }
        let class_state = |class: DeviceClass| -> (State, State) {
            let power: Vec<State> = devices
                .values()
                .filter(|d| d.class == class)
                .map(|d| d.state)
                .collect();
            let p = if power.contains(&State::Busy) {
                State::Busy
            } else if power.contains(&State::Unresolved) {
                State::Unresolved
            } else if power.contains(&State::Idle) {
                State::Idle
            } else {
                State::Unknown
            };
            let acts: Vec<State> = activity
                .values()
                .filter(|a| a.class == class && a.used)
                .map(|a| a.state)
                .collect();
            let a = if acts.contains(&State::Busy) {
                State::Busy
            } else if acts.contains(&State::Idle) {
                State::Idle
            } else {
                State::Unknown
            };
            (p, a)
        };
        let mut states = Vec::new();
        for class in [DeviceClass::Gpu, DeviceClass::Cpu, DeviceClass::Other] {
            let (p, a) = class_state(class);
            let s = match (p, a) {
                (State::Busy, State::Idle) | (State::Idle, State::Busy) => {
                    evidence.push(format!(
                        "{class}: power says {} but activity says {}: the signals disagree",
                        state_name(p),
                        state_name(a)
                    ));
                    Class::Conflict
                }
                (State::Busy, _) | (_, State::Busy) => Class::Busy,
                (State::Idle, _) | (_, State::Idle) => Class::Idle,
                (State::Unresolved, _) => Class::Unresolved,
                _ => Class::None,
            };
            states.push((class, s));
        }
        let get = |c: DeviceClass| states.iter().find(|(k, _)| *k == c).map(|(_, s)| *s);
        let any = |s: Class| states.iter().any(|(_, x)| *x == s);
        if any(Class::Conflict) {
            return Verdict::Unresolved;
        }
        if get(DeviceClass::Gpu) == Some(Class::Busy) {
            return Verdict::GpuCompute;
        }
        if get(DeviceClass::Cpu) == Some(Class::Busy) {
            return Verdict::CpuCompute;
        }
        if get(DeviceClass::Other) == Some(Class::Busy) {
            evidence.push(
                "a device of unknown class is busy (set the source attribute device_class)".into(),
            );
            return Verdict::Unresolved;
        }
        if any(Class::Unresolved) {
            return Verdict::Unresolved;
        }
        if any(Class::Idle) {
            return Verdict::IdleWait;
        }
        evidence.push(if self.has_idle {
            "no channel measured the span".into()
        } else {
            "no idle level (give --idle or --idle-window) and no activity channel decides".into()
        });
        Verdict::Unresolved
    }

    /// Pairs the marks and measures every span, calling `progress(done, total)` now and
    /// then.
    pub fn run(
        &self,
        from: &str,
        to: &str,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Report> {
        let labels = self.trace.labels();
        for l in [from, to] {
            if !labels.contains_key(l) {
                return Err(Error::Invalid(format!(
                    "no mark labelled {l:?} in {}; labels present: {}",
                    self.trace.path.display(),
                    describe_labels(self.trace)
                )));
            }
        }
        let marks = &self.trace.marks;
        let pairing = pair_marks(marks, from, to);
        let total = pairing.pairs.len();
        let mut spans = Vec::with_capacity(total);
        for (k, &(a, b)) in pairing.pairs.iter().enumerate() {
            spans.push(self.span(&marks[a], &marks[b]));
            if k % 64 == 63 {
                progress(k + 1, total);
            }
        }
        progress(total, total);
        let mut unmatched: Vec<UnmatchedMark> = pairing
            .unmatched_starts
            .iter()
            .map(|&i| ("start", i))
            .chain(pairing.unmatched_ends.iter().map(|&i| ("end", i)))
            .map(|(end, i)| UnmatchedMark {
                end,
                label: marks[i].label.clone(),
                t_ns: marks[i].t_ns,
                req: marks[i].req().map(str::to_owned),
            })
            .collect();
        unmatched.sort_by_key(|u| u.t_ns);
        let summary = summarize(
            &spans,
            pairing.unmatched_starts.len(),
            pairing.unmatched_ends.len(),
        );
        let mut warnings = self.trace.warnings.clone();
        warnings.extend(self.idle_warnings.iter().cloned());
        if !self.has_idle {
            warnings.push(
                "no idle profile: active energy is null and power cannot say busy or idle \
                 (record with --idle, or analyze with --idle FILE or --idle-window A..B)"
                    .into(),
            );
        }
        Ok(Report {
            trace: self.trace.path.display().to_string(),
            from: from.into(),
            to: to.into(),
            idle: self.idle_used.clone(),
            thresholds: self.thresholds.clone(),
            warnings,
            spans,
            unmatched,
            summary,
        })
    }
}

/// Marks which decisive activity channels take part in the verdict and returns why the
/// others do not: per class, process-scoped channels supersede device-scoped ones; per
/// device, activity channels (SM activity: measured over an exact interval) supersede
/// utilisation gauges (a trailing average over the driver's own sample period).
fn mark_used_activity(activity: &mut BTreeMap<String, ActivitySpan>) -> BTreeMap<String, String> {
    let mut why = BTreeMap::new();
    let decisive: Vec<(String, DeviceClass, String, Quantity, bool)> = activity
        .iter()
        .filter(|(_, a)| a.state != State::Unknown)
        .map(|(n, a)| {
            (
                n.clone(),
                a.class,
                a.device.clone(),
                a.quantity,
                a.scope == "process",
            )
        })
        .collect();
    for (name, class, device, quantity, process) in &decisive {
        let process_in_class = decisive
            .iter()
            .find(|(_, c, _, _, p)| c == class && *p)
            .map(|(n, ..)| n.clone());
        let finer = decisive
            .iter()
            .find(|(_, _, d, q, _)| d == device && *q == Quantity::Activity)
            .map(|(n, ..)| n.clone());
        let reason = match (process, process_in_class, quantity, finer) {
            (false, Some(p), _, _) => Some(format!("the traced process tree's {p} decides")),
            (_, _, Quantity::Utilization, Some(f)) => Some(format!("{f} is finer")),
            _ => None,
        };
        match reason {
            Some(r) => {
                why.insert(name.clone(), r);
            }
            None => {
                if let Some(a) = activity.get_mut(name) {
                    a.used = true;
                }
            }
        }
    }
    why
}

fn state_name(s: State) -> &'static str {
    match s {
        State::Busy => "busy",
        State::Idle => "idle",
        State::Unresolved => "unresolved",
        State::Unknown => "unknown",
    }
}

/// The summary over spans.
pub fn summarize(spans: &[SpanReport], unmatched_starts: usize, unmatched_ends: usize) -> Summary {
    let durations: Vec<f64> = spans.iter().map(|s| s.duration_s).collect();
    let mut verdicts: BTreeMap<&'static str, usize> =
        Verdict::ALL.iter().map(|v| (v.name(), 0)).collect();
    for s in spans {
        *verdicts.entry(s.verdict.name()).or_insert(0) += 1;
    }
    let mut active: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut total: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for s in spans {
        for (dev, d) in &s.devices {
            if let Some(a) = d.active_energy_j {
                active.entry(dev.clone()).or_default().push(a);
            }
            if let Some(e) = d.energy_j {
                total.entry(dev.clone()).or_default().push(e);
            }
        }
    }
    let stats = |m: BTreeMap<String, Vec<f64>>| -> BTreeMap<String, EnergyStats> {
        m.into_iter()
            .filter_map(|(k, v)| EnergyStats::of(&v).map(|s| (k, s)))
            .collect()
    };
    Summary {
        count: spans.len(),
        duration_s: Distribution::of(&durations),
        histogram: Histogram::of(&durations, Histogram::default_bins(durations.len())),
        verdicts,
        active_energy_j: stats(active),
        energy_j: stats(total),
        unmatched_starts,
        unmatched_ends,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: u64 = 1_000_000;

    /// Keeps what the recorder writes for a held channel: the first and the last reading of
    /// each run of equal values.
    fn elide(t: &[u64], v: &[f64]) -> (Vec<u64>, Vec<f64>) {
        let mut out = (Vec::new(), Vec::new());
        for i in 0..t.len() {
            let first = i == 0 || v[i - 1] != v[i];
            let last = i + 1 == t.len() || v[i + 1] != v[i];
            if first || last {
                out.0.push(t[i]);
                out.1.push(v[i]);
            }
        }
        out
    }

    #[test]
    fn a_held_mean_is_the_sample_mean_of_steady_polls() {
        // 10 ms polls: 0 % for 200 ms, then 100 % for 300 ms.
        let t: Vec<u64> = (0..50).map(|i| i * 10 * MS).collect();
        let v: Vec<f64> = (0..50).map(|i| if i < 20 { 0.0 } else { 100.0 }).collect();
        // Samples stamped in [105, 405] ms: 11..=40, 9 of them 0 % and 21 of them 100 %.
        let (m, n, c) = samples_inside(&t, &v, 105 * MS, 405 * MS).unwrap();
        assert_eq!((n, c), (30, 1));
        assert!((m - 70.0).abs() < 1e-9);
        // Held: the first row counts from the window's start (5 ms), the held 100 %
        // reaches to its end (5 ms more): (5 × 0 + 80 × 0 + 210 × 100 + 5 × 100) / 300.
        let (h, hn, hc) = held_inside(&t, &v, 105 * MS, 405 * MS).unwrap();
        assert!((h - 21_500.0 / 300.0).abs() < 1e-9, "{h}");
        assert_eq!((hn, hc), (31, 1));
        // Elided, the same mean and changes from 4 rows.
        let (te, ve) = elide(&t, &v);
        assert_eq!(te.len(), 4);
        let (e, en, ec) = held_inside(&te, &ve, 105 * MS, 405 * MS).unwrap();
        assert!((e - h).abs() < 1e-9);
        // the last 0 % row, the change to 100 %, and the held value reaching the end
        assert_eq!((en, ec), (3, 1));
        // A window inside a run has no row inside but is covered by the held value.
        let (e, en, _) = held_inside(&te, &ve, 250 * MS, 300 * MS).unwrap();
        assert_eq!((e, en), (100.0, 1));
        // Nothing after the last row: not covered.
        assert_eq!(held_inside(&te, &ve, 495 * MS, 600 * MS), None);
    }

    proptest! {
        #[test]
        fn a_held_mean_does_not_change_when_repeats_are_elided(
            steps in proptest::collection::vec((0u8..4, 1u64..30), 1..40),
            windows in proptest::collection::vec((0.0f64..1.0, 0.0f64..1.0), 1..20),
        ) {
            let (mut t, mut v) = (Vec::new(), Vec::new());
            let mut now = 1_000 * MS;
            for (x, n) in steps {
                for _ in 0..n {
                    t.push(now);
                    v.push(x as f64 * 25.0);
                    now += 10 * MS;
                }
            }
            let (te, ve) = elide(&t, &v);
            let span = (now - 1_000 * MS) as f64;
            for (x, y) in windows {
                let a = 1_000 * MS - 20 * MS + (x.min(y) * span) as u64;
                let b = 1_000 * MS - 20 * MS + (x.max(y) * span) as u64;
                let dense = held_inside(&t, &v, a, b);
                let held = held_inside(&te, &ve, a, b);
                prop_assert_eq!(dense.is_some(), held.is_some(), "window {}..{}", a, b);
                if let (Some(d), Some(h)) = (dense, held) {
                    prop_assert!((d.0 - h.0).abs() < 1e-9 * d.0.abs().max(1.0), "{:?} vs {:?}", d, h);
                    prop_assert_eq!(d.2, h.2);
                }
            }
        }
    }
}

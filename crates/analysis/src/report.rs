//! What an analysis says: per span, per device, per channel, and over all spans.

use crate::aggregate::Aggregate;
use crate::bound::{Bound, BoundTerms};
use crate::stats::{Distribution, Histogram};
use crate::thresholds::Thresholds;
use crate::timeline::Composition;
use flinch_core::channel::Quantity;
use flinch_core::device::DeviceClass;
use flinch_core::integrate::Method;
use serde::Serialize;
use std::collections::BTreeMap;

/// What a span was doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Verdict {
    /// A GPU was computing.
    GpuCompute,
    /// CPUs were computing (and no GPU).
    CpuCompute,
    /// Nothing was computing: the span waited.
    IdleWait,
    /// The sensors cannot tell, or the signals disagree; the evidence says which.
    Unresolved,
    /// A span long enough to be seen in parts, no state of which dominates (see its
    /// `composition`).
    Mixed,
}

impl Verdict {
    /// Every verdict, in output order.
    pub const ALL: [Verdict; 5] = [
        Verdict::GpuCompute,
        Verdict::CpuCompute,
        Verdict::IdleWait,
        Verdict::Unresolved,
        Verdict::Mixed,
    ];
    /// As written: `gpu-compute`, `cpu-compute`, `idle-wait`, `unresolved`, `mixed`.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::GpuCompute => "gpu-compute",
            Verdict::CpuCompute => "cpu-compute",
            Verdict::IdleWait => "idle-wait",
            Verdict::Unresolved => "unresolved",
            Verdict::Mixed => "mixed",
        }
    }
}

/// Whether a channel could measure a span.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
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
#[non_exhaustive]
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
    /// A model (the synthetic source), not a measurement: next to measured devices it takes
    /// no part in the verdict. Written only when true.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub modelled: bool,
    /// `[lo, hi]` that the energy lies in, J (see `docs/analysis.md`, *Bounds*).
    pub energy_bound_j: Option<Bound>,
    /// `[lo, hi]` that the active energy lies in, J.
    pub active_energy_bound_j: Option<Bound>,
    /// What the bound's half-width is made of.
    pub bound_terms: Option<BoundTerms>,
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
    /// How far above `idle_mean` the channel counts as busy (utilisation and activity: from
    /// the idle profile's noise; CPU time: cores); `null` for channels that do not decide.
    pub threshold: Option<f64>,
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
    /// (SM activity) supersede its utilisation gauges; a modelled channel next to measured
    /// ones never does.
    pub used: bool,
    /// A model (the synthetic source), not a measurement. Written only when true.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub modelled: bool,
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
    /// The start mark's fields (`kind=cpu`, `batch=8`, ...; `req` included), as sent.
    pub from_fields: BTreeMap<String, String>,
    /// The end mark's fields, as sent.
    pub to_fields: BTreeMap<String, String>,
    /// Start, `CLOCK_MONOTONIC` ns.
    pub start_ns: u64,
    /// End, `CLOCK_MONOTONIC` ns.
    pub end_ns: u64,
    /// Length, s.
    pub duration_s: f64,
    /// What the span was doing.
    pub verdict: Verdict,
    /// `span` when the span as a whole decided the verdict, `composition` when a span the
    /// whole could not decide was judged by its parts.
    pub verdict_from: &'static str,
    /// Its time by state, from the state timeline.
    pub composition: Composition,
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
    /// Over the union of span time, J: spans that overlap are counted once (see
    /// `summary.aggregate`).
    pub total: f64,
    /// The plain sum over spans, J (more than `total` when spans overlap).
    pub sum_of_spans: f64,
    /// Distribution, J.
    #[serde(flatten)]
    pub dist: Distribution,
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
    /// Energy over the union of span time: totals and means per span with their bounds.
    pub aggregate: Option<Aggregate>,
    /// Present only when there were too many spans to keep every value: how the
    /// distributions were approximated (see `docs/analysis.md`, *Summary of many spans*).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approximate: Option<Approximation>,
}

/// How a summary of many spans was approximated.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Approximation {
    /// Distributions of up to this many values are exact.
    pub exact_up_to: usize,
    /// Past that, quantiles are within this fraction of their value.
    pub quantile_relative_error: f64,
    /// Past that, a value this close to a histogram bin edge (as a share of the bin's
    /// width) may be counted in the neighbouring bin.
    pub histogram_edge_tolerance: f64,
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

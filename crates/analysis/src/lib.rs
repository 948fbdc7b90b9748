//! flinch-analysis: spans between marks — pairing, energy and activity per span, verdicts,
//! idle profiles, and the summary over many spans.
//!
//! A span runs from a mark labelled `from` to a mark labelled `to` ([`pair_marks`]). For
//! every span and every channel the [integrator](flinch_core::integrate) says what the channel
//! saw; channels are grouped by device, and each device's energy comes from its preferred
//! method (driver samples, then instant power, then a model, then the energy counter, then
//! a moving average, which is flagged as lagging) among the channels that measured the span
//! cleanly. Everything is chosen from channel metadata — quantity, method, device, and the
//! device class of [`flinch_core::device`] — never from channel names, so any backend's channels
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
//!    exceeds the idle mean by more than the idle profile's noise (`max(3 σ, 3 points)`;
//!    10 points without an idle level); CPU-time counters (host CPU time,
//!    the traced process tree) when they advance faster than the idle rate by 0.5 cores.
//!    An activity channel that cannot resolve the span says nothing. The traced process
//!    tree's channels (source attribute `activity_scope=process`) supersede the host's,
//!    and a device's fine-grained activity channels supersede its utilisation gauges.
//! 3. **Per class** (GPU, CPU, other): power says busy/idle/unresolved (any busy device
//!    makes the class busy; else any unresolved makes it unresolved), activity says
//!    busy/idle. When both speak and disagree, the class is in **conflict**. When power is
//!    unresolved or unknown, activity decides alone.
//! 4. **The span**: any conflict → `unresolved` (never a confident wrong answer); a busy
//!    GPU → `gpu-compute`; else a busy CPU → `cpu-compute` (`unresolved` when the GPU
//!    cannot be seen over the span); else a busy device of unknown
//!    class → `unresolved`; else anything unresolved → `unresolved`; else some evidence of

#![deny(missing_docs)]

pub mod aggregate;
mod analyzer;
pub mod bound;
pub mod class;
pub mod idle;
pub mod live;
mod measure;
pub mod output;
mod pairing;
mod report;
mod span;
pub mod stats;
pub mod stream;
pub mod summary;
mod thresholds;
pub mod timeline;
mod verdict;
mod window;

pub use aggregate::{Aggregate, Aggregator, DeviceAggregate, SpanUnion, Totals};
pub use analyzer::Analyzer;
pub use bound::{Bound, BoundTerms};
pub use idle::{ChannelIdle, IdleFrom, IdleProfile, choose_idle};
pub use measure::{POWER_TAIL_NS, settle_ns};
pub use pairing::{Paired, Pairer, Pairing, pair_marks};
pub use report::{
    ActivitySpan, Approximation, ChannelEnergy, ChannelStatus, DeviceSpan, EnergyStats, IdleUsed,
    Report, SpanReport, State, Summary, UnmatchedMark, Verdict,
};
pub use summary::{SpanFigures, SummaryBuilder, summarize};
pub use thresholds::Thresholds;
pub use timeline::Composition;
pub use window::{
    MarkIndex, WindowEdge, describe_label_counts, describe_labels, parse_open_window, parse_window,
    resolve_open_window, resolve_window,
};

/// The README's example, compiled and run as a doctest (the crate docs above are the
/// method; the README is the package's page on crates.io).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctest;

//! The analyzer: a trace prepared once (channels by device, idle levels, holes), then spans
//! measured one by one.

use crate::aggregate::Aggregator;
use crate::class::{class_of, is_modelled, is_process_scoped};
use crate::idle::{ChannelIdle, IdleProfile};
use crate::pairing::pair_marks;
use crate::report::{IdleUsed, Report, UnmatchedMark};
use crate::summary::summarize;
use crate::thresholds::Thresholds;
use crate::timeline::Signal;
use crate::window::describe_labels;
use flinch_core::channel::SourceInfo;
use flinch_core::device::DeviceClass;
use flinch_core::error::{Error, Result};
use flinch_core::integrate::Method;
use flinch_core::trace::{RowKind, Trace};
use std::collections::{BTreeMap, HashMap};

pub(crate) struct Chan {
    pub(crate) class: DeviceClass,
    pub(crate) process_scoped: bool,
    /// From a model (the synthetic source), not a measurement.
    pub(crate) modelled: bool,
    pub(crate) method: Option<Method>,
    /// Stretches with no data for this channel's source: (start, end, why).
    pub(crate) holes: Vec<(u64, u64, String)>,
    /// Reset and flag rows written for this channel.
    pub(crate) marks: Vec<(u64, RowKind)>,
    pub(crate) idle: Option<(String, ChannelIdle)>,
}

/// Measures spans of one trace. Build once, then call [`Analyzer::span`] per span (or
/// [`Analyzer::run`] for all of them).
pub struct Analyzer<'t> {
    pub(crate) trace: &'t Trace,
    pub(crate) chans: Vec<Chan>,
    /// device → channel indices of its energy-bearing channels, best method first.
    pub(crate) devices: BTreeMap<String, (DeviceClass, Vec<usize>)>,
    pub(crate) thresholds: Thresholds,
    pub(crate) has_idle: bool,
    /// Whether modelled sources take part in verdicts: only when nothing in the trace was
    /// measured (a demonstration, a test of flinch itself). Next to a measured source a
    /// model would decide what the real workload did from a schedule.
    pub(crate) models_vote: bool,
    /// Length of the idle profile's stretch, s.
    pub(crate) idle_duration_s: f64,
    pub(crate) idle_used: Option<IdleUsed>,
    /// The deciding signals of the state timeline.
    pub(crate) signals: Vec<Signal>,
    pub(crate) idle_warnings: Vec<String>,
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
        let source_of: HashMap<&str, &SourceInfo> = trace
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
                .map(|s| class_of(s, &ch.spec.device))
                .unwrap_or(DeviceClass::Other);
            let process_scoped = source.is_some_and(|s| is_process_scoped(s));
            let modelled = source.is_some_and(|s| is_modelled(s));
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
                modelled,
                method,
                holes,
                marks,
                idle,
            });
        }
        for (_, idx) in devices.values_mut() {
            idx.sort_by_key(|&i| chans[i].method);
        }
        let models_vote = trace
            .header
            .sources
            .iter()
            .filter(|s| !s.channels.is_empty())
            .all(is_modelled);
        let mut an = Analyzer {
            trace,
            chans,
            devices,
            thresholds,
            has_idle: idle.is_some(),
            models_vote,
            idle_duration_s: idle.map(|p| p.duration_s).unwrap_or(0.0),
            idle_used,
            signals: Vec::new(),
            idle_warnings,
        };
        an.signals = an.build_signals();
        an
    }

    /// How far beyond a span's edges [`Analyzer::span`] reads samples, ns: the state
    /// timeline's counter windows (aligned to the trace's start, so a cell may begin up to a
    /// window before the span and end up to one after it) and the bound's response time at
    /// each edge (1.5 update periods; for a channel that states no period, 1.5 × the spacing
    /// of its samples, for which `spacing_ns(channel)` is asked). The streaming analysis
    /// keeps this much more than the span itself, and waits until every channel has passed
    /// it: a change to how far `span` looks must change this too.
    pub fn reach_ns(&self, spacing_ns: &dyn Fn(usize) -> u64) -> u64 {
        let windows = self
            .signals
            .iter()
            .map(|s| s.window_ns())
            .max()
            .unwrap_or(0);
        let response = self
            .trace
            .channels
            .iter()
            .enumerate()
            .map(|(i, ch)| {
                crate::bound::response_ns(&ch.spec)
                    .unwrap_or_else(|| spacing_ns(i).saturating_mul(3) / 2)
            })
            .max()
            .unwrap_or(0);
        windows.max(response)
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
        let mut agg = Aggregator::new(self);
        for (k, &(a, b)) in pairing.pairs.iter().enumerate() {
            let s = self.span(&marks[a], &marks[b]);
            agg.add(self, s.start_ns, s.end_ns);
            spans.push(s);
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
            Some(agg.finish(self)),
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

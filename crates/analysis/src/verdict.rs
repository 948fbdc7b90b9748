//! From per-device and per-channel states to one verdict per span.

use crate::analyzer::Analyzer;
use crate::report::{ActivitySpan, DeviceSpan, State, Verdict};
use flinch_core::channel::Quantity;
use flinch_core::device::DeviceClass;
use std::collections::BTreeMap;

/// A span's evidence lines, or none at all when only its figures are wanted
/// ([`Analyzer::span_figures`]): a line is only written when it is kept.
pub(crate) struct Evidence(Option<Vec<String>>);

impl Evidence {
    /// Lines are kept when `wanted`.
    pub(crate) fn new(wanted: bool) -> Self {
        Evidence(wanted.then(Vec::new))
    }

    /// Whether lines are kept.
    pub(crate) fn wanted(&self) -> bool {
        self.0.is_some()
    }

    /// Adds the line `line` writes, if lines are kept.
    pub(crate) fn push(&mut self, line: impl FnOnce() -> String) {
        if let Some(v) = &mut self.0 {
            v.push(line());
        }
    }

    /// The lines kept.
    pub(crate) fn into_lines(self) -> Vec<String> {
        self.0.unwrap_or_default()
    }
}

impl Analyzer<'_> {
    pub(crate) fn decide(
        &self,
        devices: &BTreeMap<String, DeviceSpan>,
        activity: &BTreeMap<String, ActivitySpan>,
        evidence: &mut Evidence,
    ) -> Verdict {
        #[derive(Clone, Copy, PartialEq, Debug)]
        enum Class {
            Busy,
            Idle,
            Unresolved,
            Conflict,
            None,
        }
        // A model says nothing about the real workload next to it.
        let votes = |modelled: bool| self.models_vote || !modelled;
        if !self.models_vote {
            for name in devices.iter().filter(|(_, d)| d.modelled).map(|(n, _)| n) {
                evidence.push(|| {
                    format!(
                        "{name}: a model (the synthetic source), not a measurement: not used for \
                         the verdict of a trace with measured sources"
                    )
                });
            }
        }
        // Which states occur: busy, unresolved, idle.
        fn seen(states: impl Iterator<Item = State>) -> [bool; 3] {
            states.fold([false; 3], |mut s, x| {
                match x {
                    State::Busy => s[0] = true,
                    State::Unresolved => s[1] = true,
                    State::Idle => s[2] = true,
                    State::Unknown => {}
                }
                s
            })
        }
        let class_state = |class: DeviceClass| -> (State, State) {
            let power = seen(
                devices
                    .values()
                    .filter(|d| d.class == class && votes(d.modelled))
                    .map(|d| d.state),
            );
            let p = if power[0] {
                State::Busy
            } else if power[1] {
                State::Unresolved
            } else if power[2] {
                State::Idle
            } else {
                State::Unknown
            };
            let acts = seen(
                activity
                    .values()
                    .filter(|a| a.class == class && a.used && votes(a.modelled))
                    .map(|a| a.state),
            );
            let a = if acts[0] {
                State::Busy
            } else if acts[2] {
                State::Idle
            } else {
                State::Unknown
            };
            (p, a)
        };
        let mut states = Vec::with_capacity(3);
        for class in [DeviceClass::Gpu, DeviceClass::Cpu, DeviceClass::Other] {
            let (p, a) = class_state(class);
            let s = match (p, a) {
                (State::Busy, State::Idle) | (State::Idle, State::Busy) => {
                    evidence.push(|| {
                        format!(
                            "{class}: power says {} but activity says {}: the signals disagree",
                            state_name(p),
                            state_name(a)
                        )
                    });
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
            if get(DeviceClass::Gpu) == Some(Class::Unresolved) {
                // `cpu-compute` says the CPUs computed and the GPUs did not; a GPU the
                // sensors cannot see over this span may have computed too.
                evidence.push(|| {
                    "the CPUs are busy, but the GPU cannot be seen over this span: it may be \
                     computing too"
                        .into()
                });
                return Verdict::Unresolved;
            }
            return Verdict::CpuCompute;
        }
        if get(DeviceClass::Other) == Some(Class::Busy) {
            evidence.push(|| {
                "a device of unknown class is busy (set the source attribute device_class)".into()
            });
            return Verdict::Unresolved;
        }
        if any(Class::Unresolved) {
            return Verdict::Unresolved;
        }
        if any(Class::Idle) {
            return Verdict::IdleWait;
        }
        evidence.push(|| {
            if self.has_idle {
                "no channel measured the span".into()
            } else {
                "no idle level (give --idle or --idle-window) and no activity channel decides"
                    .into()
            }
        });
        Verdict::Unresolved
    }
}

/// Marks which decisive activity channels take part in the verdict and returns why the
/// others do not: per class, process-scoped channels supersede device-scoped ones; per
/// device, activity channels (SM activity: measured over an exact interval) supersede
/// utilisation gauges (a trailing average over the driver's own sample period).
pub(crate) fn mark_used_activity(
    activity: &mut BTreeMap<String, ActivitySpan>,
    models_vote: bool,
) -> BTreeMap<String, String> {
    let mut why = BTreeMap::new();
    if !models_vote {
        for (name, a) in activity.iter() {
            if a.modelled && a.state != State::Unknown {
                why.insert(
                    name.clone(),
                    "a model, not a measurement, next to measured sources".to_owned(),
                );
            }
        }
    }
    // (name, class, device, quantity, process-scoped, place in `activity`)
    let decisive: Vec<(&str, DeviceClass, &str, Quantity, bool, usize)> = activity
        .iter()
        .enumerate()
        .filter(|(_, (n, a))| a.state != State::Unknown && !why.contains_key(*n))
        .map(|(k, (n, a))| {
            (
                n.as_str(),
                a.class,
                a.device.as_str(),
                a.quantity,
                a.scope == "process",
                k,
            )
        })
        .collect();
    let mut used = Vec::with_capacity(decisive.len());
    for (name, class, device, quantity, process, k) in &decisive {
        let process_in_class = decisive
            .iter()
            .find(|(_, c, _, _, p, _)| c == class && *p)
            .map(|(n, ..)| *n);
        let finer = decisive
            .iter()
            .find(|(_, _, d, q, _, _)| d == device && *q == Quantity::Activity)
            .map(|(n, ..)| *n);
        let reason = match (process, process_in_class, quantity, finer) {
            (false, Some(p), _, _) => Some(format!("the traced process tree's {p} decides")),
            (_, _, Quantity::Utilization, Some(f)) => Some(format!("{f} is finer")),
            _ => None,
        };
        match reason {
            Some(r) => {
                why.insert((*name).to_owned(), r);
            }
            None => used.push(*k),
        }
    }
    // Marked by place once the names borrowed from `activity` are no longer needed.
    for (k, a) in activity.values_mut().enumerate() {
        if used.contains(&k) {
            a.used = true;
        }
    }
    why
}

pub(crate) fn state_name(s: State) -> &'static str {
    match s {
        State::Busy => "busy",
        State::Idle => "idle",
        State::Unresolved => "unresolved",
        State::Unknown => "unknown",
    }
}

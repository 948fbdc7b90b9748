//! From per-device and per-channel states to one verdict per span.

use crate::analyzer::Analyzer;
use crate::report::{ActivitySpan, DeviceSpan, State, Verdict};
use flinch_core::channel::Quantity;
use flinch_core::device::DeviceClass;
use std::collections::BTreeMap;

impl Analyzer<'_> {
    pub(crate) fn decide(
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
        // A model says nothing about the real workload next to it.
        let votes = |modelled: bool| self.models_vote || !modelled;
        if !self.models_vote {
            for name in devices.iter().filter(|(_, d)| d.modelled).map(|(n, _)| n) {
                evidence.push(format!(
                    "{name}: a model (the synthetic source), not a measurement: not used for \
                     the verdict of a trace with measured sources"
                ));
            }
        }
        let class_state = |class: DeviceClass| -> (State, State) {
            let power: Vec<State> = devices
                .values()
                .filter(|d| d.class == class && votes(d.modelled))
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
                .filter(|a| a.class == class && a.used && votes(a.modelled))
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
            if get(DeviceClass::Gpu) == Some(Class::Unresolved) {
                // `cpu-compute` says the CPUs computed and the GPUs did not; a GPU the
                // sensors cannot see over this span may have computed too.
                evidence.push(
                    "the CPUs are busy, but the GPU cannot be seen over this span: it may be \
                     computing too"
                        .into(),
                );
                return Verdict::Unresolved;
            }
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
    let decisive: Vec<(String, DeviceClass, String, Quantity, bool)> = activity
        .iter()
        .filter(|(n, a)| a.state != State::Unknown && !why.contains_key(*n))
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

pub(crate) fn state_name(s: State) -> &'static str {
    match s {
        State::Busy => "busy",
        State::Idle => "idle",
        State::Unresolved => "unresolved",
        State::Unknown => "unknown",
    }
}

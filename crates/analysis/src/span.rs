//! One span: every channel measured over it, each device's preferred channel chosen, and
//! the evidence written.

use crate::aggregate::{DevicePart, StretchPart};
use crate::analyzer::Analyzer;
use crate::bound::{Bound, BoundTerms, Limits, idle_uncertainty_w, response_at};
use crate::measure::{Near, gauge_inside, settle_ns};
use crate::report::{
    ActivitySpan, ChannelEnergy, ChannelStatus, DeviceSpan, SpanReport, State, Verdict,
};
use crate::summary::SpanFigures;
use crate::timeline::Composition;
use crate::verdict::{Evidence, mark_used_activity, state_name};
use flinch_core::channel::{ChannelKind, Quantity};
use flinch_core::integrate::{Method, resolves};
use flinch_core::marks::Mark;
use std::collections::BTreeMap;
use std::fmt::Write as _;

impl Analyzer<'_> {
    /// Measures one span from mark `from` to mark `to`.
    pub fn span(&self, from: &Mark, to: &Mark) -> SpanReport {
        self.span_with(from, to, true, false, &mut Near::default())
            .0
    }

    /// What the summary takes from the span from mark `from` to mark `to`: the same as
    /// `SpanFigures::of(&self.span(from, to))`, to the bit, without writing the report
    /// (evidence, bounds, composition, fields), which costs more than measuring.
    pub fn span_figures(&self, from: &Mark, to: &Mark) -> SpanFigures {
        SpanFigures::of(
            &self
                .span_with(from, to, false, false, &mut Near::default())
                .0,
        )
    }

    /// [`Analyzer::span`]; without `detail`, the report holds only what [`SpanFigures`]
    /// takes from it and what deciding the verdict needs: no evidence, bounds, marks'
    /// labels and fields, units, or names of the channel chosen and its device, and a
    /// composition only when the verdict comes from it.
    /// With `union`, also what the span adds to the union aggregate should it make a
    /// stretch of the union by itself (the same as `StretchPart::measure` over it). The
    /// samples are looked for from where `near` found those of the span before.
    pub(crate) fn span_with(
        &self,
        from: &Mark,
        to: &Mark,
        detail: bool,
        union: bool,
        near: &mut Near,
    ) -> (SpanReport, Option<StretchPart>) {
        let (start, end) = (from.t_ns, to.t_ns.max(from.t_ns));
        let dur_ns = end - start;
        let dur_s = dur_ns as f64 / 1e9;
        let mut energy = BTreeMap::new();
        let mut activity = BTreeMap::new();
        let mut evidence = Evidence::new(detail);
        let th = &self.thresholds;

        for (i, ch) in self.trace.channels.iter().enumerate() {
            let c = &self.chans[i];
            // The samples near the span (its bound reads a little further: below).
            let r = near.around(i, &ch.t_ns, start, end);
            let (t, v) = (&ch.t_ns[r.clone()], &ch.values[r]);
            let m = self.measure_in(i, t, v, start, end);
            debug_assert_eq!(
                format!("{m:?}"),
                format!("{:?}", self.measure(i, start, end)),
                "channel {i} over {start}..{end}: the samples near it answer otherwise"
            );
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
                    let sm = self.measure_in(i, t, v, a, end);
                    let ok = sm.status == ChannelStatus::Ok;
                    match ch.spec.kind {
                        // A gauge's verdict comes from the samples stamped inside the
                        // settled window: each describes the interval before its stamp, so
                        // none of them reaches past the span's end into the next phase the
                        // way the edge interpolation of the energy does.
                        ChannelKind::Gauge => match gauge_inside(ch.spec.held(), t, v, a, end) {
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
                        },
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
                        // (not needed for the figures)
                        device: if detail {
                            ch.spec.device.clone()
                        } else {
                            String::new()
                        },
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
                (a, self.measure_in(i, t, v, a, end))
            };
            if settle > 0 && ch.spec.kind == ChannelKind::Gauge {
                match gauge_inside(ch.spec.held(), t, v, astart, end) {
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
                    let unit = if !detail {
                        String::new()
                    } else if q == Quantity::CpuTime {
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
                    let unit = if detail {
                        ch.spec.unit.symbol().to_owned()
                    } else {
                        String::new()
                    };
                    (mean, unit, ok && long_enough && covered)
                }
            };
            let idle_mean = c.idle.as_ref().map(|(_, l)| l.mean);
            let decisive = matches!(
                ch.spec.quantity,
                Quantity::Utilization | Quantity::Activity | Quantity::CpuTime
            );
            let limit = if ch.spec.quantity == Quantity::CpuTime {
                th.cpu_cores
            } else {
                th.activity_threshold_pct(c.idle.as_ref().map(|(_, l)| l))
            };
            let state = match (decisive, resolved, mean) {
                (true, true, Some(x)) => {
                    let excess = x - idle_mean.unwrap_or(0.0);
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
                    threshold: decisive.then_some(limit),
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
                    modelled: c.modelled,
                },
            );
        }
        let superseded = mark_used_activity(&mut activity, self.models_vote);

        // Devices: the best method that measured the span.
        let mut devices = BTreeMap::new();
        let mut part = union.then(|| StretchPart(Vec::with_capacity(self.devices.len())));
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
                evidence.push(|| {
                    let why: Vec<String> = names
                        .iter()
                        .map(|n| {
                            format!(
                                "{n}: {}",
                                energy[*n].note.as_deref().unwrap_or("not measured")
                            )
                        })
                        .collect();
                    format!("{dev}: no channel measured the span ({})", why.join("; "))
                });
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
                        modelled: idx.iter().any(|&i| self.chans[i].modelled),
                        energy_bound_j: None,
                        active_energy_bound_j: None,
                        bound_terms: None,
                    },
                );
                if let Some(p) = &mut part {
                    p.0.push(None);
                }
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
            let limits = (detail || union).then(|| {
                // The samples within the response time of the span's edges.
                let ch = &self.trace.channels[ci];
                let tau = response_at(&ch.spec, &ch.t_ns[near.range(ci)], start);
                let r = near.around(
                    ci,
                    &ch.t_ns,
                    start.saturating_sub(tau),
                    end.saturating_add(tau),
                );
                let lim = self.limits_in(ci, &ch.t_ns[r.clone()], &ch.values[r], start, end);
                debug_assert_eq!(
                    format!("{lim:?}"),
                    format!("{:?}", self.limits(ci, start, end)),
                    "channel {ci} over {start}..{end}: the samples near it bound otherwise"
                );
                lim
            });
            let (energy_bound_j, active_energy_bound_j, bound_terms) = match &limits {
                Some(lim) if detail => {
                    self.device_bound(ci, e, lim, &names, idx, &energy, start, end)
                }
                _ => (None, None, None),
            };
            if let (Some(p), Some(limits), Some(energy_j)) = (&mut part, limits, e.energy_j) {
                // the energy counter's own answer, when it is not the preferred channel
                let counter = idx
                    .iter()
                    .zip(&names)
                    .find(|(i, _)| **i != ci && self.chans[**i].method == Some(Method::Counter))
                    .map(|(i, n)| (*i, &energy[*n]))
                    .filter(|(_, x)| x.status == ChannelStatus::Ok)
                    .and_then(|(i, x)| Some((i, x.energy_j?, x.updates_in_span)));
                p.0.push(Some(DevicePart {
                    channel: ci,
                    energy_j,
                    limits,
                    counter,
                }));
            }
            // The evidence line, written only when it is kept.
            let mut line = evidence.wanted().then(|| format!("{dev} ({class}): "));
            let state = if e.lagging {
                if let Some(line) = &mut line {
                    let _ = write!(
                        line,
                        "only a lagging {} reading ({name}) measured the span",
                        e.method
                    );
                }
                State::Unresolved
            } else if !e.settled_resolved {
                if let Some(line) = &mut line {
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
                }
                State::Unresolved
            } else {
                match (e.settled_mean_power_w, e.idle_power_w, threshold) {
                    (Some(mean), Some(idle_w), Some(thr)) => {
                        let active = mean - idle_w;
                        let busy = active > thr;
                        if let Some(line) = &mut line {
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
                        }
                        if busy { State::Busy } else { State::Idle }
                    }
                    (Some(mean), _, _) => {
                        if let Some(line) = &mut line {
                            let _ = write!(
                                line,
                                "{mean:.1} W mean ({}), no idle level to compare with",
                                e.method
                            );
                        }
                        State::Unknown
                    }
                    _ => State::Unknown,
                }
            };
            if let Some(mut line) = line {
                let _ = write!(line, " → {}", state_name(state));
                evidence.push(|| line);
            }
            devices.insert(
                dev.clone(),
                DeviceSpan {
                    class: *class,
                    channel: detail.then(|| name.to_owned()),
                    method: Some(e.method),
                    energy_j: e.energy_j,
                    active_energy_j: e.active_energy_j,
                    mean_power_w: e.mean_power_w,
                    idle_power_w: e.idle_power_w,
                    threshold_w: threshold,
                    state,
                    counter_disagreement_pct,
                    modelled: idx.iter().any(|&i| self.chans[i].modelled),
                    energy_bound_j,
                    active_energy_bound_j,
                    bound_terms,
                },
            );
        }
        let wanted = evidence.wanted();
        for (name, a) in activity.iter().filter(|_| wanted) {
            if a.state == State::Unknown {
                if !a.resolved
                    && matches!(
                        a.quantity,
                        Quantity::Utilization | Quantity::Activity | Quantity::CpuTime
                    )
                {
                    evidence.push(|| {
                        format!(
                            "{name}: cannot resolve the span ({} samples inside)",
                            a.samples_in_span
                        )
                    });
                }
                continue;
            }
            if let Some(why) = superseded.get(name) {
                evidence.push(|| format!("{name}: {} (not used: {why})", state_name(a.state)));
                continue;
            }
            let (mean, idle) = (a.mean.unwrap_or(f64::NAN), a.idle_mean.unwrap_or(0.0));
            let limit = a.threshold.unwrap_or(f64::NAN);
            evidence.push(|| {
                format!(
                    "{name} ({}): {mean:.2} {} mean, idle {idle:.2} (busy above +{limit:.2}) → {}",
                    a.class,
                    a.unit,
                    state_name(a.state)
                )
            });
        }
        let mut verdict = self.decide(&devices, &activity, &mut evidence);
        // Without detail, the composition only where it decides the verdict.
        let composition = if detail || verdict == Verdict::Unresolved {
            self.composition(start, end)
        } else {
            Composition::default()
        };
        let mut verdict_from = "span";
        if verdict == Verdict::Unresolved {
            let v = composition.verdict(dur_s);
            if v != Verdict::Unresolved {
                evidence.push(|| format!(
                    "by its parts (state timeline at {:.0} ms): gpu-compute {:.0} %, cpu-compute {:.0} %, idle-wait {:.0} %, unresolved {:.0} % → {}",
                    composition.resolution_s * 1e3,
                    composition.gpu_compute * 100.0,
                    composition.cpu_compute * 100.0,
                    composition.idle_wait * 100.0,
                    composition.unresolved * 100.0,
                    v.name()
                ));
                verdict = v;
                verdict_from = "composition";
            }
        }
        let (labels, fields) = if detail {
            (
                (from.label.clone(), to.label.clone()),
                (
                    from.fields.iter().cloned().collect(),
                    to.fields.iter().cloned().collect(),
                ),
            )
        } else {
            Default::default()
        };
        let report = SpanReport {
            from: labels.0,
            to: labels.1,
            req: detail
                .then(|| from.req().or(to.req()).map(str::to_owned))
                .flatten(),
            from_fields: fields.0,
            to_fields: fields.1,
            start_ns: start,
            end_ns: end,
            duration_s: dur_s,
            verdict,
            verdict_from,
            composition,
            evidence: evidence.into_lines(),
            energy,
            devices,
            activity,
        };
        (report, part)
    }
}

impl Analyzer<'_> {
    /// The bound on a device's energy and active energy over `[start, end]` from its
    /// preferred channel `ci` (see [`crate::bound`]).
    #[allow(clippy::too_many_arguments)]
    fn device_bound(
        &self,
        ci: usize,
        e: &ChannelEnergy,
        lim: &Limits,
        names: &[&str],
        idx: &[usize],
        energy: &BTreeMap<String, ChannelEnergy>,
        start: u64,
        end: u64,
    ) -> (Option<Bound>, Option<Bound>, Option<BoundTerms>) {
        let Some(ej) = e.energy_j else {
            return (None, None, None);
        };
        let half = lim.half_j();
        let mut b = Bound::around(ej, half);
        for (n, &k) in names.iter().zip(idx) {
            let x = &energy[*n];
            if k != ci
                && x.method == Method::Counter
                && x.status == ChannelStatus::Ok
                && x.resolved
                && let Some(xe) = x.energy_j
            {
                b = b.hull(xe);
            }
        }
        let mut terms = BoundTerms {
            edges_j: lim.start.mag_j + lim.end.mag_j,
            interior_j: 3f64.sqrt() * lim.interior_sq.sqrt(),
            channels_j: ((ej - half) - b.lo).max(b.hi - (ej + half)).max(0.0),
            idle_j: 0.0,
        };
        let dur_s = (end - start) as f64 / 1e9;
        let active = self.chans[ci].idle.as_ref().map(|(_, l)| {
            terms.idle_j = dur_s
                * idle_uncertainty_w(
                    l,
                    self.idle_duration_s,
                    self.trace.channels[ci].spec.update_period_ns,
                );
            b.shift(-l.mean * dur_s, terms.idle_j)
        });
        (Some(b), active, Some(terms))
    }
}

//! What the machine was doing moment by moment: a state timeline built at each signal's own
//! resolution, and the composition of a span from it.
//!
//! Each deciding signal is cut into cells at its own resolution: a gauge's cell is the
//! interval before each of its samples (`(tₖ₋₁, tₖ]`, which that sample describes), a
//! counter's cell a fixed window (CPU time: `cpu_time_min_periods` ticks, 100 ms at 100 Hz;
//! an energy counter: two update periods, at least 20 ms). A cell is busy or idle by the
//! thresholds of the span verdicts: a device's power (its best non-lagging channel) against
//! its idle level, activity against the idle profile's noise, CPU time against the idle rate.
//! At every instant the states of the cells holding it are combined like a span's verdict
//! (per class: power and activity, a disagreement is a conflict; then a busy GPU →
//! `gpu-compute`, busy CPUs → `cpu-compute`, all idle → `idle-wait`, anything else
//! `unresolved`). A span's composition is the share of its time in each state.

use crate::analyzer::Analyzer;
use crate::report::Verdict;
use flinch_core::channel::{ChannelKind, Quantity};
use flinch_core::device::DeviceClass;
use flinch_core::integrate::integrate_counter;
use serde::Serialize;

/// A span's time by state, as fractions of its duration (they add up to 1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Composition {
    /// A GPU computing.
    #[serde(rename = "gpu-compute")]
    pub gpu_compute: f64,
    /// CPUs computing, no GPU.
    #[serde(rename = "cpu-compute")]
    pub cpu_compute: f64,
    /// Nothing computing.
    #[serde(rename = "idle-wait")]
    pub idle_wait: f64,
    /// Signals disagree, or none can tell.
    pub unresolved: f64,
    /// The coarsest cell of the signals that took part, s: shorter spans are below the
    /// timeline's resolution.
    pub resolution_s: f64,
}

/// A span's verdict comes from its composition when the whole span is `unresolved` and it
/// lasts at least this many cells of its coarsest signal.
pub const COMPOSITION_MIN_CELLS: f64 = 4.0;
/// A state holding at least this share of the span is its verdict.
pub const DOMINANT_SHARE: f64 = 0.6;
/// With no dominant state and at most this share unresolved, the span is `mixed`.
pub const MIXED_MAX_UNRESOLVED: f64 = 0.4;

impl Composition {
    /// The share of a verdict's state.
    pub fn share(&self, v: Verdict) -> f64 {
        match v {
            Verdict::GpuCompute => self.gpu_compute,
            Verdict::CpuCompute => self.cpu_compute,
            Verdict::IdleWait => self.idle_wait,
            Verdict::Unresolved => self.unresolved,
            Verdict::Mixed => 0.0,
        }
    }

    /// The verdict of a span of `duration_s` from its composition: the dominant state, else
    /// `mixed`, else `unresolved` (also below the timeline's resolution).
    pub fn verdict(&self, duration_s: f64) -> Verdict {
        if self.resolution_s <= 0.0 || duration_s < COMPOSITION_MIN_CELLS * self.resolution_s {
            return Verdict::Unresolved;
        }
        let states = [
            Verdict::GpuCompute,
            Verdict::CpuCompute,
            Verdict::IdleWait,
            Verdict::Unresolved,
        ];
        let top = states
            .iter()
            .copied()
            .max_by(|a, b| self.share(*a).total_cmp(&self.share(*b)))
            .unwrap_or(Verdict::Unresolved);
        if self.share(top) >= DOMINANT_SHARE {
            top
        } else if self.unresolved <= MIXED_MAX_UNRESOLVED {
            Verdict::Mixed
        } else {
            Verdict::Unresolved
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Power,
    Activity,
}

/// One deciding signal of the timeline.
#[derive(Clone, Debug)]
pub(crate) struct Signal {
    chan: usize,
    class: DeviceClass,
    kind: Kind,
    /// Busy above idle mean + threshold.
    idle: f64,
    threshold: f64,
    /// Counter windows, ns (0 for a gauge).
    window_ns: u64,
    resolution_ns: u64,
}

impl Signal {
    /// Counter windows, ns (0 for a gauge): a cell reaches this far beyond a span's edges.
    pub(crate) fn window_ns(&self) -> u64 {
        self.window_ns
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Cell {
    Busy,
    Idle,
    None,
}

impl Analyzer<'_> {
    /// The deciding signals: per device its best non-lagging power or energy channel (with
    /// an idle level), and the activity channels a span verdict would use.
    pub(crate) fn build_signals(&self) -> Vec<Signal> {
        let th = &self.thresholds;
        let mut out = Vec::new();
        // a model votes only when nothing in the trace was measured (see `models_vote`)
        let votes = |i: usize| self.models_vote || !self.chans[i].modelled;
        for (class, idx) in self.devices.values() {
            let Some(&i) = idx
                .iter()
                .find(|&&i| self.chans[i].method.is_some_and(|m| !m.lagging()))
            else {
                continue;
            };
            if !votes(i) {
                continue;
            }
            let Some((_, l)) = &self.chans[i].idle else {
                continue;
            };
            let spec = &self.trace.channels[i].spec;
            let period = spec.update_period_ns.unwrap_or(10_000_000);
            let window_ns = match spec.kind {
                ChannelKind::Counter(_) => (2 * period).max(20_000_000),
                ChannelKind::Gauge => 0,
            };
            out.push(Signal {
                chan: i,
                class: *class,
                kind: Kind::Power,
                idle: l.mean,
                threshold: th.power_threshold_w(l),
                window_ns,
                resolution_ns: window_ns.max(period),
            });
        }
        // activity: the process tree supersedes the host within a class; a device's
        // fine-grained activity supersedes its utilisation
        let decisive = |i: usize| {
            matches!(
                self.trace.channels[i].spec.quantity,
                Quantity::Utilization | Quantity::Activity | Quantity::CpuTime
            )
        };
        let acts: Vec<usize> = (0..self.trace.channels.len())
            .filter(|&i| decisive(i) && votes(i))
            .collect();
        for &i in &acts {
            let c = &self.chans[i];
            let spec = &self.trace.channels[i].spec;
            let process_in_class = acts
                .iter()
                .any(|&j| self.chans[j].class == c.class && self.chans[j].process_scoped);
            if process_in_class && !c.process_scoped {
                continue;
            }
            if spec.quantity == Quantity::Utilization
                && acts.iter().any(|&j| {
                    let s = &self.trace.channels[j].spec;
                    s.device == spec.device && s.quantity == Quantity::Activity
                })
            {
                continue;
            }
            let idle = c.idle.as_ref().map(|(_, l)| l);
            let period = spec.update_period_ns.unwrap_or(10_000_000);
            let (threshold, window_ns) = match spec.kind {
                ChannelKind::Counter(_) => (
                    th.cpu_cores,
                    period.saturating_mul(th.cpu_time_min_periods as u64),
                ),
                ChannelKind::Gauge => (th.activity_threshold_pct(idle), 0),
            };
            out.push(Signal {
                chan: i,
                class: c.class,
                kind: Kind::Activity,
                idle: idle.map(|l| l.mean).unwrap_or(0.0),
                threshold,
                window_ns,
                resolution_ns: window_ns.max(period),
            });
        }
        out
    }

    /// The composition of `[a, b]`.
    pub(crate) fn composition(&self, a: u64, b: u64) -> Composition {
        let mut comp = Composition::default();
        if b <= a {
            return comp;
        }
        let (segments, resolution_ns) = self.timeline(a, b);
        let total = (b - a) as f64;
        for (x, y, v) in segments {
            let f = (y - x) as f64 / total;
            match v {
                Verdict::GpuCompute => comp.gpu_compute += f,
                Verdict::CpuCompute => comp.cpu_compute += f,
                Verdict::IdleWait => comp.idle_wait += f,
                _ => comp.unresolved += f,
            }
        }
        comp.resolution_s = resolution_ns as f64 / 1e9;
        comp
    }

    /// The state timeline over `[a, b]`: contiguous stretches `(start_ns, end_ns, state)`
    /// (state: `gpu-compute`, `cpu-compute`, `idle-wait` or `unresolved`), merged where
    /// neighbours agree. See the module docs.
    pub fn state_timeline(&self, a: u64, b: u64) -> Vec<(u64, u64, Verdict)> {
        self.timeline(a, b.max(a)).0
    }

    fn timeline(&self, a: u64, b: u64) -> (Vec<(u64, u64, Verdict)>, u64) {
        let mut out: Vec<(u64, u64, Verdict)> = Vec::new();
        if b <= a {
            return (out, 0);
        }
        // each signal's cells over [a, b]: (start, end, state)
        let cells: Vec<Vec<(u64, u64, Cell)>> =
            self.signals.iter().map(|s| self.cells(s, a, b)).collect();
        let mut edges: Vec<u64> = vec![a, b];
        for c in &cells {
            for &(x, y, _) in c {
                edges.push(x.clamp(a, b));
                edges.push(y.clamp(a, b));
            }
        }
        edges.sort_unstable();
        edges.dedup();
        let mut cursor = vec![0usize; cells.len()];
        let mut resolution_ns = 0u64;
        for (k, s) in self.signals.iter().enumerate() {
            if cells[k].iter().any(|c| c.2 != Cell::None) {
                resolution_ns = resolution_ns.max(s.resolution_ns);
            }
        }
        let has_gpu = self.signals.iter().any(|s| s.class == DeviceClass::Gpu);
        for w in edges.windows(2) {
            let (x, y) = (w[0], w[1]);
            if y <= x {
                continue;
            }
            let mid = x + (y - x) / 2;
            // per class: (power busy, power idle, activity busy, activity idle)
            let mut st = [[false; 4]; 3];
            let mut gpu_seen = false;
            for (k, s) in self.signals.iter().enumerate() {
                let cs = &cells[k];
                while cursor[k] < cs.len() && cs[cursor[k]].1 <= mid {
                    cursor[k] += 1;
                }
                let cell = match cs.get(cursor[k]) {
                    Some(&(p, q, c)) if p <= mid && mid < q.max(p + 1) => c,
                    _ => Cell::None,
                };
                let ci = match s.class {
                    DeviceClass::Gpu => 0,
                    DeviceClass::Cpu => 1,
                    _ => 2,
                };
                let off = if s.kind == Kind::Power { 0 } else { 2 };
                match cell {
                    Cell::Busy => st[ci][off] = true,
                    Cell::Idle => st[ci][off + 1] = true,
                    Cell::None => {}
                }
                if ci == 0 && cell != Cell::None {
                    gpu_seen = true;
                }
            }
            // class: 0 busy, 1 idle, 2 conflict, 3 none
            let class_state = |c: [bool; 4]| -> u8 {
                let p = if c[0] {
                    Some(true)
                } else if c[1] {
                    Some(false)
                } else {
                    None
                };
                let act = if c[2] {
                    Some(true)
                } else if c[3] {
                    Some(false)
                } else {
                    None
                };
                match (p, act) {
                    (Some(x), Some(y)) if x != y => 2,
                    (Some(true), _) | (_, Some(true)) => 0,
                    (Some(false), _) | (_, Some(false)) => 1,
                    _ => 3,
                }
            };
            let (g, c, o) = (class_state(st[0]), class_state(st[1]), class_state(st[2]));
            let v = if g == 2 || c == 2 || o == 2 {
                Verdict::Unresolved
            } else if g == 0 {
                Verdict::GpuCompute
            } else if c == 0 {
                if has_gpu && !gpu_seen {
                    Verdict::Unresolved
                } else {
                    Verdict::CpuCompute
                }
            } else if o == 0 {
                Verdict::Unresolved
            } else if g == 1 || c == 1 || o == 1 {
                Verdict::IdleWait
            } else {
                Verdict::Unresolved
            };
            match out.last_mut() {
                Some(last) if last.2 == v && last.1 == x => last.1 = y,
                _ => out.push((x, y, v)),
            }
        }
        (out, resolution_ns)
    }

    fn cells(&self, s: &Signal, a: u64, b: u64) -> Vec<(u64, u64, Cell)> {
        let ch = &self.trace.channels[s.chan];
        let holes = &self.chans[s.chan].holes;
        let in_hole = |x: u64, y: u64| {
            holes
                .iter()
                .any(|(p, q, _)| (*p < y && *q > x) || (*p == *q && *p >= x && *p <= y))
        };
        let judge = |v: f64| {
            if v - s.idle > s.threshold {
                Cell::Busy
            } else {
                Cell::Idle
            }
        };
        let (t, v) = (&ch.t_ns[..], &ch.values[..]);
        let mut out = Vec::new();
        match &ch.spec.kind {
            ChannelKind::Gauge => {
                // cells (t[k-1], t[k]] for the samples from the first at or after a to the
                // first at or after b
                let k0 = t.partition_point(|&x| x < a).max(1);
                for k in k0..t.len() {
                    let (x, y) = (t[k - 1], t[k]);
                    let c = if in_hole(x, y) {
                        Cell::None
                    } else {
                        judge(v[k])
                    };
                    out.push((x, y, c));
                    if y >= b {
                        break;
                    }
                }
            }
            ChannelKind::Counter(spec) => {
                let w = s.window_ns.max(1);
                let origin = self.trace.header.start_anchor.mono_ns;
                let j0 = a.saturating_sub(origin) / w;
                let mut x = origin + j0 * w;
                while x < b {
                    let y = x + w;
                    let c = match integrate_counter(t, v, spec, ch.spec.update_period_ns, x, y) {
                        Ok(r) if r.resets == 0 && r.flagged == 0 && !in_hole(x, y) => {
                            judge(r.increase / (w as f64 / 1e9))
                        }
                        _ => Cell::None,
                    };
                    out.push((x, y, c));
                    x = y;
                }
            }
        }
        out
    }
}

//! Spans, energies and verdicts on traces built in memory, with answers worked out by hand
//! from the power curves (never from the code's output).

use flinch_analysis::idle::IdleProfile;
use flinch_analysis::{
    Analyzer, ChannelStatus, State, Thresholds, Verdict, WindowEdge, pair_marks, parse_window,
    resolve_window,
};
use flinch_core::DeviceClass;
use flinch_core::channel::{ChannelSpec, CounterSpec, PowerMethod, Quantity, SourceInfo};
use flinch_core::clock::ClockAnchor;
use flinch_core::integrate::Method;
use flinch_core::marks::{Mark, MarkVia};
use flinch_core::trace::{ChannelData, Gap, Header, RowKind, Trace, TraceEvent};
use std::path::PathBuf;

pub(crate) const MS: u64 = 1_000_000;
pub(crate) const T0: u64 = 1_000_000_000_000; // traces start at 1000 s of uptime

/// A channel's values as a function of seconds since T0.
pub(crate) type Curve = Box<dyn Fn(f64) -> f64>;

/// A trace under construction: sources, then one function of time per channel, sampled on
/// a grid.
pub(crate) struct Build {
    pub(crate) sources: Vec<SourceInfo>,
    channels: Vec<ChannelData>,
    pub(crate) marks: Vec<Mark>,
    gaps: Vec<Gap>,
    events: Vec<TraceEvent>,
}

impl Build {
    pub(crate) fn new() -> Self {
        Build {
            sources: vec![],
            channels: vec![],
            marks: vec![],
            gaps: vec![],
            events: vec![],
        }
    }

    /// Adds a source; `data[i]` gives (sample period, value at t seconds after T0) for
    /// channel i; samples run over [T0, T0 + len_s].
    pub(crate) fn source(
        mut self,
        name: &str,
        backend: &str,
        channels: Vec<ChannelSpec>,
        data: Vec<(u64, Curve)>,
        len_s: f64,
    ) -> Self {
        for (spec, (period, f)) in channels.iter().zip(data) {
            let n = (len_s * 1e9) as u64 / period;
            let t_ns: Vec<u64> = (0..=n).map(|k| T0 + k * period).collect();
            let values = t_ns.iter().map(|&t| f((t - T0) as f64 / 1e9)).collect();
            self.channels.push(ChannelData {
                spec: spec.clone(),
                source: name.into(),
                t_ns,
                values,
            });
        }
        self.sources.push(
            SourceInfo::new(
                name,
                backend,
                // what each backend's real sources say of themselves
                match backend {
                    "nvml" | "dcgm" => DeviceClass::Gpu,
                    "rapl" | "cpu" => DeviceClass::Cpu,
                    _ => DeviceClass::Other,
                },
            )
            .with_channels(channels),
        );
        self
    }

    /// Makes the last source added measure one process tree.
    pub(crate) fn process_scoped(mut self) -> Self {
        if let Some(s) = self.sources.last_mut() {
            s.scope = flinch_core::Scope::ProcessTree;
        }
        self
    }

    pub(crate) fn mark(mut self, label: &str, at_s: f64, req: Option<&str>) -> Self {
        self.marks.push(Mark {
            t_ns: T0 + (at_s * 1e9).round() as u64,
            recv_ns: T0 + (at_s * 1e9).round() as u64,
            t_from_client: true,
            label: label.into(),
            fields: req
                .map(|r| vec![("req".to_owned(), r.to_owned())])
                .unwrap_or_default(),
            via: MarkVia::Api,
        });
        self
    }

    pub(crate) fn span(self, from: &str, to: &str, a_s: f64, b_s: f64) -> Self {
        self.mark(from, a_s, None).mark(to, b_s, None)
    }

    pub(crate) fn build(mut self) -> Trace {
        self.marks.sort_by_key(|m| m.t_ns);
        Trace {
            path: PathBuf::from("mem.flinch.csv"),
            header: Header {
                host: "testhost".into(),
                ..Header::new(
                    10 * MS,
                    ClockAnchor {
                        mono_ns: T0,
                        real_ns: 0,
                    },
                    self.sources,
                )
            },
            footer: None,
            channels: self.channels,
            marks: self.marks,
            anchors: vec![],
            gaps: self.gaps,
            events: self.events,
            warnings: vec![],
        }
    }
}

/// A square pulse: `hi` on [a, b) seconds, `lo` elsewhere.
pub(crate) fn pulse(lo: f64, hi: f64, a: f64, b: f64) -> impl Fn(f64) -> f64 {
    move |t| if t >= a && t < b { hi } else { lo }
}

/// The integral of a pulse function from 0 to t (for counters).
pub(crate) fn pulse_energy(lo: f64, hi: f64, a: f64, b: f64) -> impl Fn(f64) -> f64 {
    move |t| lo * t + (hi - lo) * (t.min(b) - a).max(0.0)
}

pub(crate) fn gpu_channels() -> Vec<ChannelSpec> {
    vec![
        ChannelSpec::power("gpu0", "power_samples", PowerMethod::DriverSamples)
            .with_update_period_ns(20 * MS),
        ChannelSpec::power("gpu0", "power_instant", PowerMethod::Instant)
            .with_update_period_ns(100 * MS),
        ChannelSpec::energy_counter(
            "gpu0",
            "energy",
            CounterSpec {
                wrap_range: None,
                max_rate: Some(1400.0),
            },
        )
        .with_update_period_ns(100 * MS),
        ChannelSpec::gauge("gpu0", "util_gpu", Quantity::Utilization),
    ]
}

/// A GPU at 119 W idle that runs at 700 W over [busy_a, busy_b) s, with utilisation 100 %
/// there (or `util_busy` as given).
pub(crate) fn gpu_trace(busy_a: f64, busy_b: f64, util_busy: f64) -> Build {
    let p = move || Box::new(pulse(119.0, 700.0, busy_a, busy_b)) as Curve;
    Build::new().source(
        "nvml.gpu0",
        "nvml",
        gpu_channels(),
        vec![
            (20 * MS, p()),
            (10 * MS, p()),
            (
                10 * MS,
                Box::new(pulse_energy(119.0, 700.0, busy_a, busy_b)),
            ),
            (10 * MS, Box::new(pulse(0.0, util_busy, busy_a, busy_b))),
        ],
        10.0,
    )
}

pub(crate) fn idle_profile_of(trace: &Trace, a_s: f64, b_s: f64) -> IdleProfile {
    let mut p = IdleProfile::from_trace(
        trace,
        T0 + (a_s * 1e9) as u64,
        T0 + (b_s * 1e9) as u64,
        "test",
    )
    .unwrap();
    p.assess();
    p
}

#[test]
fn gpu_burst_idle_and_conflicting_spans() {
    // busy 2.0 .. 3.0 s; spans: burst 2.1035 .. 2.8275 (724 ms inside the busy phase),
    // idle 5.0035 .. 5.4035 (400 ms).
    let trace = gpu_trace(2.0, 3.0, 100.0)
        .span("infer_start", "first_token", 2.1035, 2.8275)
        .span("infer_start", "first_token", 5.0035, 5.4035)
        .build();
    let idle = idle_profile_of(&trace, 6.0, 9.0);
    assert!(idle.idle_ok, "{:?}", idle.warnings);
    let an = Analyzer::new(&trace, Some((&idle, "file")), Thresholds::default());
    let r = an
        .run("infer_start", "first_token", &mut |_, _| {})
        .unwrap();
    assert_eq!(r.spans.len(), 2);

    let burst = &r.spans[0];
    assert_eq!(burst.verdict, Verdict::GpuCompute, "{:#?}", burst.evidence);
    assert!((burst.duration_s - 0.724).abs() < 1e-9);
    let ps = &burst.energy["gpu0.power_samples"];
    assert!(ps.preferred);
    assert_eq!(ps.method, Method::DriverSamples);
    // 700 W over 0.724 s = 506.8 J; above 119 W idle: 581 × 0.724 = 420.644 J
    assert!((ps.energy_j.unwrap() - 506.8).abs() < 1e-6, "{ps:?}");
    assert!(
        (ps.active_energy_j.unwrap() - 420.644).abs() < 1e-6,
        "{ps:?}"
    );
    assert!((ps.mean_power_w.unwrap() - 700.0).abs() < 1e-6);
    assert_eq!(ps.updates_in_span, 36); // driver samples every 20 ms: 2.12 .. 2.82 s
    assert!(ps.resolved);
    // the counter measured the same energy; the instant channel saw no change (constant)
    let cnt = &burst.energy["gpu0.energy"];
    assert!((cnt.energy_j.unwrap() - 506.8).abs() < 1e-6, "{cnt:?}");
    assert!(!cnt.preferred);
    let inst = &burst.energy["gpu0.power_instant"];
    assert_eq!(inst.updates_in_span, 0);
    assert!(!inst.resolved);
    let dev = &burst.devices["gpu0"];
    assert_eq!(dev.state, State::Busy);
    assert_eq!(dev.method, Some(Method::DriverSamples));
    assert!(dev.counter_disagreement_pct.unwrap().abs() < 1e-6);
    assert!(
        burst
            .evidence
            .iter()
            .any(|e| e.contains("gpu0 (gpu)") && e.contains("busy")),
        "{:?}",
        burst.evidence
    );

    let idle_span = &r.spans[1];
    assert_eq!(
        idle_span.verdict,
        Verdict::IdleWait,
        "{:#?}",
        idle_span.evidence
    );
    let a = idle_span.energy["gpu0.power_samples"]
        .active_energy_j
        .unwrap();
    assert!(a.abs() < 1e-6, "{a}");

    // summary
    let s = &r.summary;
    assert_eq!(s.count, 2);
    assert_eq!(s.verdicts["gpu-compute"], 1);
    assert_eq!(s.verdicts["idle-wait"], 1);
    assert_eq!(s.verdicts["unresolved"], 0);
    let d = s.duration_s.unwrap();
    assert!((d.min - 0.4).abs() < 1e-9 && (d.max - 0.724).abs() < 1e-9);
    assert!((d.mean - 0.562).abs() < 1e-9);
    let act = &s.active_energy_j["gpu0"];
    assert_eq!(act.count, 2);
    assert!((act.total - 420.644).abs() < 1e-6);
}

#[test]
fn power_and_activity_that_disagree_give_unresolved() {
    // The GPU draws 700 W but reports 0 % utilisation: conflict.
    let trace = gpu_trace(2.0, 3.0, 0.0).span("a", "b", 2.1, 2.9).build();
    let idle = idle_profile_of(&trace, 6.0, 9.0);
    let r = Analyzer::new(&trace, Some((&idle, "file")), Thresholds::default())
        .run("a", "b", &mut |_, _| {})
        .unwrap();
    let s = &r.spans[0];
    assert_eq!(s.verdict, Verdict::Unresolved);
    assert!(
        s.evidence.iter().any(|e| e.contains("disagree")),
        "{:?}",
        s.evidence
    );
}

#[test]
fn a_span_shorter_than_the_sensor_is_unresolved_without_activity() {
    // Only the driver samples (20 ms) and the counter: a 15 ms span sees < 2 updates.
    let chans = gpu_channels()[..1].to_vec();
    let trace = Build::new()
        .source(
            "nvml.gpu0",
            "nvml",
            chans,
            vec![(20 * MS, Box::new(pulse(119.0, 700.0, 2.0, 3.0)))],
            10.0,
        )
        .span("a", "b", 2.5013, 2.5213)
        .span("a", "b", 2.6, 2.9)
        .build();
    let idle = idle_profile_of(&trace, 6.0, 9.0);
    let r = Analyzer::new(&trace, Some((&idle, "file")), Thresholds::default())
        .run("a", "b", &mut |_, _| {})
        .unwrap();
    let short = &r.spans[0];
    assert_eq!(short.verdict, Verdict::Unresolved, "{:?}", short.evidence);
    let e = &short.energy["gpu0.power_samples"];
    assert_eq!(e.updates_in_span, 1); // only the sample at 2.52 s
    assert!(!e.resolved);
    // energy is still reported: 700 W × 20 ms = 14 J
    assert!((e.energy_j.unwrap() - 14.0).abs() < 1e-6);
    assert_eq!(short.devices["gpu0"].state, State::Unresolved);
    assert!(
        short.evidence.iter().any(|l| l.contains("1 sensor update")),
        "{:?}",
        short.evidence
    );
    assert_eq!(r.spans[1].verdict, Verdict::GpuCompute);
}

#[test]
fn a_gap_makes_the_channel_unavailable_and_the_next_method_takes_over() {
    let mut b = gpu_trace(2.0, 3.0, 100.0).span("a", "b", 2.1, 2.9);
    // The driver-samples source overran between 2.4 and 2.5 s.
    b.sources[0].name = "nvml.gpu0".into();
    b.gaps.push(Gap {
        source: "nvml.gpu0".into(),
        start_ns: T0 + 2_400 * MS,
        end_ns: Some(T0 + 2_500 * MS),
        reason: "data-gap: buffer overran".into(),
    });
    let trace = b.build();
    let idle = idle_profile_of(&trace, 6.0, 9.0);
    let r = Analyzer::new(&trace, Some((&idle, "file")), Thresholds::default())
        .run("a", "b", &mut |_, _| {})
        .unwrap();
    let s = &r.spans[0];
    // every channel of that source is unavailable...
    for c in ["gpu0.power_samples", "gpu0.power_instant", "gpu0.energy"] {
        assert_eq!(s.energy[c].status, ChannelStatus::Gap, "{c}");
        assert_eq!(s.energy[c].energy_j, None, "{c}");
        assert!(
            s.energy[c]
                .note
                .as_ref()
                .unwrap()
                .contains("buffer overran")
        );
    }
    // ...and so is its utilisation: nothing is left to decide the span as a whole with
    assert_eq!(s.activity["gpu0.util_gpu"].status, ChannelStatus::Gap);
    assert_eq!(s.devices["gpu0"].state, State::Unknown);
    assert_eq!(s.devices["gpu0"].energy_j, None);
    assert!(s.evidence.iter().any(|e| e.contains("no channel measured")));
    // but outside the 100 ms hole the power samples show a busy GPU: by its parts (the
    // hole and the 20 ms cells that touch it unresolved) the span computed on the GPU
    assert_eq!(s.verdict, Verdict::GpuCompute, "{:?}", s.evidence);
    assert_eq!(s.verdict_from, "composition");
    let c = &s.composition;
    assert!(c.unresolved > 0.1 && c.unresolved < 0.2, "{c:?}");
    assert!((c.gpu_compute + c.unresolved - 1.0).abs() < 1e-9, "{c:?}");
}

#[test]
fn one_source_in_a_gap_leaves_the_others_and_the_preferred_falls_back() {
    // Driver samples on their own source (as NVML does), instant + counter on another.
    let chans = gpu_channels();
    let p = || Box::new(pulse(119.0, 700.0, 2.0, 3.0)) as Curve;
    let mut b = Build::new()
        .source(
            "nvml.gpu0.samples",
            "nvml",
            chans[..1].to_vec(),
            vec![(20 * MS, p())],
            10.0,
        )
        .source(
            "nvml.gpu0.fast",
            "nvml",
            chans[1..3].to_vec(),
            vec![
                (10 * MS, p()),
                (10 * MS, Box::new(pulse_energy(119.0, 700.0, 2.0, 3.0))),
            ],
            10.0,
        )
        .span("a", "b", 2.05, 2.95);
    b.gaps.push(Gap {
        source: "nvml.gpu0.samples".into(),
        start_ns: T0 + 2_400 * MS,
        end_ns: Some(T0 + 2_500 * MS),
        reason: "data-gap: buffer overran".into(),
    });
    let trace = b.build();
    let idle = idle_profile_of(&trace, 6.0, 9.0);
    let r = Analyzer::new(&trace, Some((&idle, "file")), Thresholds::default())
        .run("a", "b", &mut |_, _| {})
        .unwrap();
    let s = &r.spans[0];
    assert_eq!(s.energy["gpu0.power_samples"].status, ChannelStatus::Gap);
    let d = &s.devices["gpu0"];
    // instant is constant 700 W inside: it never changes, so it is unresolved; it is still
    // the preferred available method
    assert_eq!(d.method, Some(Method::Instant));
    assert!((d.energy_j.unwrap() - 700.0 * 0.9).abs() < 1e-6);
}

#[test]
fn counter_resets_inside_a_span_are_never_silently_wrong() {
    let chans = gpu_channels()[2..3].to_vec();
    // 119 W from 5000 J; the driver reloads at 4.0 s and the counter restarts from 0.
    let f = |t: f64| {
        if t < 4.0 {
            5000.0 + 119.0 * t
        } else {
            119.0 * (t - 4.0)
        }
    };
    let trace = Build::new()
        .source(
            "nvml.gpu0.energy",
            "nvml",
            chans,
            vec![(10 * MS, Box::new(f))],
            10.0,
        )
        .span("a", "b", 3.5, 4.5)
        .span("a", "b", 5.0, 6.0)
        .build();
    let r = Analyzer::new(&trace, None, Thresholds::default())
        .run("a", "b", &mut |_, _| {})
        .unwrap();
    let e = &r.spans[0].energy["gpu0.energy"];
    assert_eq!(e.status, ChannelStatus::CounterReset);
    assert_eq!(e.energy_j, None);
    let e = &r.spans[1].energy["gpu0.energy"];
    assert_eq!(e.status, ChannelStatus::Ok);
    assert!((e.energy_j.unwrap() - 119.0).abs() < 1e-6);
    // without an idle profile: no active energy, and a warning
    assert_eq!(e.active_energy_j, None);
    assert!(r.warnings.iter().any(|w| w.contains("no idle profile")));
    assert_eq!(r.spans[1].verdict, Verdict::Unresolved);
}

#[test]
fn rapl_only_and_cpu_only_traces() {
    // RAPL: package at 20 W idle, 100 W over [2, 2.724) s; a 1-ms-updating counter that
    // wraps at 1000 J, starting near the wrap.
    let spec = CounterSpec {
        wrap_range: Some(1000.0),
        max_rate: Some(500.0),
    };
    let e = pulse_energy(20.0, 100.0, 2.0, 2.724);
    let trace = Build::new()
        .source(
            "rapl.package-0",
            "rapl",
            vec![
                ChannelSpec::energy_counter("package-0", "energy", spec).with_update_period_ns(MS),
            ],
            vec![(4 * MS, Box::new(move |t| (990.0 + e(t)) % 1000.0))],
            10.0,
        )
        .span("burst_start", "burst_end", 2.0, 2.724)
        .span("burst_start", "burst_end", 5.0, 5.724)
        .build();
    let idle = idle_profile_of(&trace, 6.0, 9.0);
    let pkg = &idle.channels["package-0.energy"];
    assert!((pkg.mean - 20.0).abs() < 1e-6, "{pkg:?}");
    let r = Analyzer::new(&trace, Some((&idle, "file")), Thresholds::default())
        .run("burst_start", "burst_end", &mut |_, _| {})
        .unwrap();
    let burst = &r.spans[0];
    assert_eq!(burst.verdict, Verdict::CpuCompute, "{:?}", burst.evidence);
    // 80 W above idle for 0.724 s = 57.92 J (edges on samples, so exact)
    let a = burst.energy["package-0.energy"].active_energy_j.unwrap();
    assert!((a - 57.92).abs() < 1e-6, "{a}");
    assert_eq!(burst.energy["package-0.energy"].method, Method::Counter);
    let quiet = &r.spans[1];
    assert_eq!(quiet.verdict, Verdict::IdleWait, "{:?}", quiet.evidence);
    assert!(
        quiet.energy["package-0.energy"]
            .active_energy_j
            .unwrap()
            .abs()
            < 1e-6
    );

    // CPU activity only: host busy CPU time (2 cores busy during the burst) and the
    // traced process tree.
    let cpu_spec = CounterSpec {
        wrap_range: None,
        max_rate: Some(8.0),
    };
    let host = pulse_energy(0.05, 2.05, 2.0, 2.724);
    let proc_ = pulse_energy(0.0, 1.0, 2.0, 2.724);
    let trace = Build::new()
        .source(
            "cpu",
            "cpu",
            vec![
                ChannelSpec::counter("host", "cpu_busy_s", Quantity::CpuTime, cpu_spec)
                    .with_update_period_ns(10 * MS),
                ChannelSpec::counter("proc", "cpu_time", Quantity::CpuTime, cpu_spec)
                    .with_update_period_ns(10 * MS),
            ],
            vec![(4 * MS, Box::new(host)), (4 * MS, Box::new(proc_))],
            10.0,
        )
        .span("s", "e", 2.0, 2.724)
        .span("s", "e", 5.0, 5.724)
        .build();
    let idle = idle_profile_of(&trace, 6.0, 9.0);
    let r = Analyzer::new(&trace, Some((&idle, "file")), Thresholds::default())
        .run("s", "e", &mut |_, _| {})
        .unwrap();
    assert_eq!(
        r.spans[0].verdict,
        Verdict::CpuCompute,
        "{:?}",
        r.spans[0].evidence
    );
    let host = &r.spans[0].activity["host.cpu_busy_s"];
    assert!((host.mean.unwrap() - 2.05).abs() < 1e-6, "{host:?}");
    assert_eq!(host.unit, "cores");
    assert_eq!(
        r.spans[1].verdict,
        Verdict::IdleWait,
        "{:?}",
        r.spans[1].evidence
    );
}

#[test]
fn only_a_lagging_average_is_never_a_confident_verdict() {
    let trace = Build::new()
        .source(
            "nvml.gpu0.fast",
            "nvml",
            vec![
                ChannelSpec::power(
                    "gpu0",
                    "power_avg1s",
                    PowerMethod::Average { window_ms: 1000 },
                )
                .with_update_period_ns(100 * MS),
            ],
            // a 1-s average ramps for a second after the step: 119 → 700 W
            vec![(
                10 * MS,
                Box::new(|t: f64| {
                    119.0 + 581.0 * (t - 2.0).clamp(0.0, 1.0) - 581.0 * (t - 3.0).clamp(0.0, 1.0)
                }),
            )],
            10.0,
        )
        .span("a", "b", 2.5, 3.5)
        .build();
    let idle = idle_profile_of(&trace, 6.0, 9.0);
    let r = Analyzer::new(&trace, Some((&idle, "file")), Thresholds::default())
        .run("a", "b", &mut |_, _| {})
        .unwrap();
    let s = &r.spans[0];
    assert_eq!(s.verdict, Verdict::Unresolved);
    assert!(s.energy["gpu0.power_avg1s"].lagging);
    assert!(
        s.evidence.iter().any(|e| e.contains("lagging")),
        "{:?}",
        s.evidence
    );
}

#[test]
fn unknown_labels_list_the_labels_present() {
    let trace = gpu_trace(2.0, 3.0, 100.0)
        .span("infer_start", "first_token", 2.1, 2.2)
        .mark("infer_start", 4.0, None)
        .build();
    let an = Analyzer::new(&trace, None, Thresholds::default());
    let e = an
        .run("infer_start", "last_token", &mut |_, _| {})
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("\"last_token\"") && msg.contains("first_token (1), infer_start (2)"),
        "{msg}"
    );
    // the unmatched start is reported
    let r = an
        .run("infer_start", "first_token", &mut |_, _| {})
        .unwrap();
    assert_eq!(r.summary.unmatched_starts, 1);
    assert_eq!(r.unmatched[0].end, "start");
}

fn mk(label: &str, t: u64, req: Option<&str>) -> Mark {
    Mark {
        t_ns: t,
        recv_ns: t,
        t_from_client: true,
        label: label.into(),
        fields: req
            .map(|r| vec![("req".to_owned(), r.to_owned())])
            .unwrap_or_default(),
        via: MarkVia::Fifo,
    }
}

#[test]
fn marks_pair_by_request_then_in_order() {
    // Overlapping requests 1 and 2 end in the other order; a stray end; an open start.
    let marks = vec![
        mk("s", 1, Some("1")),
        mk("s", 2, Some("2")),
        mk("e", 3, Some("2")),
        mk("e", 4, Some("9")),
        mk("e", 5, Some("1")),
        mk("s", 6, None),
        mk("s", 7, None),
        mk("e", 8, None),
        mk("s", 9, Some("3")),
    ];
    let p = pair_marks(&marks, "s", "e");
    assert_eq!(p.pairs, vec![(0, 4), (1, 2), (5, 7)]);
    assert_eq!(p.unmatched_ends, vec![3]);
    assert_eq!(p.unmatched_starts, vec![6, 8]);
    // the same label at both ends: consecutive marks delimit spans
    let marks = vec![
        mk("step", 1, None),
        mk("step", 2, None),
        mk("other", 3, None),
        mk("step", 4, None),
    ];
    let p = pair_marks(&marks, "step", "step");
    assert_eq!(p.pairs, vec![(0, 1), (1, 3)]);
    assert!(p.unmatched_starts.is_empty() && p.unmatched_ends.is_empty());
}

#[test]
fn idle_windows_from_labels_or_seconds() {
    assert_eq!(
        parse_window("5..7.5s").unwrap(),
        (WindowEdge::Seconds(5.0), WindowEdge::Seconds(7.5))
    );
    assert_eq!(
        parse_window("idle_start..idle_end").unwrap(),
        (
            WindowEdge::Label("idle_start".into()),
            WindowEdge::Label("idle_end".into())
        )
    );
    assert!(parse_window("5").unwrap_err().contains("A..B"));
    assert!(parse_window("..3").is_err());
    assert!(parse_window("a b..c").unwrap_err().contains("neither"));
    let trace = gpu_trace(2.0, 3.0, 100.0)
        .mark("quiet", 6.0, None)
        .mark("loud", 7.0, None)
        .mark("quiet", 8.0, None)
        .build();
    let (a, b) = parse_window("quiet..loud").unwrap();
    assert_eq!(
        resolve_window(&trace, &a, &b).unwrap(),
        (T0 + 6_000 * MS, T0 + 7_000 * MS)
    );
    let (a, b) = parse_window("1.5..quiet").unwrap();
    assert_eq!(
        resolve_window(&trace, &a, &b).unwrap(),
        (T0 + 1_500 * MS, T0 + 6_000 * MS)
    );
    let (a, b) = parse_window("loud..nope").unwrap();
    let e = resolve_window(&trace, &a, &b).unwrap_err().to_string();
    assert!(
        e.contains("no mark \"nope\"") && e.contains("loud (1)"),
        "{e}"
    );
    let (a, b) = parse_window("7..6").unwrap();
    assert!(resolve_window(&trace, &a, &b).is_err());
    // absurd times are an error, not an overflow
    let (a, b) = parse_window("1e300..2e300").unwrap();
    assert!(resolve_window(&trace, &a, &b).is_err());
}

#[test]
fn written_reset_rows_also_invalidate_a_span() {
    // The recorder writes `reset` rows; the integrator finds resets itself too, but a
    // reset row alone must be enough.
    let mut b = gpu_trace(2.0, 3.0, 100.0).span("a", "b", 4.0, 5.0);
    b.events.push(TraceEvent {
        t_ns: T0 + 4_500 * MS,
        kind: RowKind::Reset,
        channel: "gpu0.energy".into(),
        value: Some(0.0),
        label: "reset".into(),
        text: "from=100".into(),
        line: 10,
    });
    let trace = b.build();
    let r = Analyzer::new(&trace, None, Thresholds::default())
        .run("a", "b", &mut |_, _| {})
        .unwrap();
    assert_eq!(
        r.spans[0].energy["gpu0.energy"].status,
        ChannelStatus::CounterReset
    );
    assert_eq!(
        r.spans[0].energy["gpu0.power_samples"].status,
        ChannelStatus::Ok
    );
}

#[test]
fn finer_activity_supersedes_a_lagging_utilisation_gauge() {
    // Right after a burst (2.0 .. 3.0 s) the GPU is back at idle power, but its
    // utilisation gauge — a trailing average — still reads 100 % until 3.6 s. SM activity
    // (measured over exact intervals) says 0.
    let chans = vec![
        ChannelSpec::power("gpu0", "power_samples", PowerMethod::DriverSamples)
            .with_update_period_ns(20 * MS),
        ChannelSpec::gauge("gpu0", "util_gpu", Quantity::Utilization),
        ChannelSpec::gauge("gpu0", "sm_active", Quantity::Activity).with_update_period_ns(100 * MS),
    ];
    let data = || -> Vec<(u64, Curve)> {
        vec![
            (20 * MS, Box::new(pulse(119.0, 700.0, 2.0, 3.0))),
            (10 * MS, Box::new(pulse(0.0, 100.0, 2.0, 3.6))),
            (100 * MS, Box::new(pulse(0.0, 95.0, 2.0, 3.0))),
        ]
    };
    let trace = Build::new()
        .source("nvml.gpu0", "nvml", chans.clone(), data(), 10.0)
        .span("a", "b", 3.0, 3.724)
        .build();
    let idle = idle_profile_of(&trace, 6.0, 9.0);
    let r = Analyzer::new(&trace, Some((&idle, "file")), Thresholds::default())
        .run("a", "b", &mut |_, _| {})
        .unwrap();
    let s = &r.spans[0];
    assert_eq!(s.verdict, Verdict::IdleWait, "{:#?}", s.evidence);
    assert!(!s.activity["gpu0.util_gpu"].used);
    assert_eq!(s.activity["gpu0.util_gpu"].state, State::Busy);
    assert!(s.activity["gpu0.sm_active"].used);
    assert!(
        s.evidence
            .iter()
            .any(|e| e.contains("gpu0.util_gpu: busy (not used: gpu0.sm_active is finer)")),
        "{:?}",
        s.evidence
    );
    // Without SM activity the lagging gauge disagrees with power: unresolved, not idle.
    let trace = Build::new()
        .source(
            "nvml.gpu0",
            "nvml",
            chans[..2].to_vec(),
            data().into_iter().take(2).collect(),
            10.0,
        )
        .span("a", "b", 3.0, 3.724)
        .build();
    let idle = idle_profile_of(&trace, 6.0, 9.0);
    let r = Analyzer::new(&trace, Some((&idle, "file")), Thresholds::default())
        .run("a", "b", &mut |_, _| {})
        .unwrap();
    assert_eq!(r.spans[0].verdict, Verdict::Unresolved);
}

#[test]
fn the_traced_process_tree_decides_over_the_host() {
    // Another job keeps 2 host cores busy throughout; the traced process tree computes on
    // one core during [2, 2.724) s only.
    let spec = CounterSpec {
        wrap_range: None,
        max_rate: Some(8.0),
    };
    let trace = Build::new()
        .source(
            "cpu.host",
            "cpu",
            vec![
                ChannelSpec::counter("host", "cpu_busy_s", Quantity::CpuTime, spec)
                    .with_update_period_ns(10 * MS),
            ],
            vec![(4 * MS, Box::new(pulse_energy(2.0, 3.0, 2.0, 2.724)))],
            10.0,
        )
        .source(
            "cpu.proc",
            "cpu",
            vec![
                ChannelSpec::counter("proc", "cpu_time", Quantity::CpuTime, spec)
                    .with_update_period_ns(10 * MS),
            ],
            vec![(4 * MS, Box::new(pulse_energy(0.0, 1.0, 2.0, 2.724)))],
            10.0,
        )
        .process_scoped()
        .span("s", "e", 2.0, 2.724)
        .span("s", "e", 5.0, 5.724)
        .build();
    // No idle profile: the host's 2 busy cores look busy, but the process decides.
    let r = Analyzer::new(&trace, None, Thresholds::default())
        .run("s", "e", &mut |_, _| {})
        .unwrap();
    assert_eq!(
        r.spans[0].verdict,
        Verdict::CpuCompute,
        "{:?}",
        r.spans[0].evidence
    );
    let quiet = &r.spans[1];
    assert_eq!(quiet.activity["host.cpu_busy_s"].state, State::Busy);
    assert!(!quiet.activity["host.cpu_busy_s"].used);
    assert_eq!(quiet.activity["proc.cpu_time"].scope, "process");
    assert_eq!(quiet.verdict, Verdict::IdleWait, "{:?}", quiet.evidence);
}

#[test]
fn the_sensors_tail_after_a_burst_does_not_make_the_next_pause_busy() {
    // The measured power lags the load: after a 700 W burst on [2, 3) s it ramps down to
    // the 119 W idle linearly over 70 ms (an H100 took 60-90 ms). Sampled every 20 ms (3.00:
    // 700 W, 3.02: 534, 3.04: 368, 3.06: 202, 3.08: 119 W), the pause [3, 4) s holds
    // ((700 + 534) + (534 + 368) + (368 + 202) + (202 + 119)) / 2 × 0.02 − 119 × 0.08
    // = 20.75 J above idle: +20.8 W on average, far over the 5.95 W threshold. The energy
    // is reported whole; the verdict skips the first 80 ms (the power tail, longer than the
    // sensor's two 20 ms periods) and sees an idle GPU.
    let tail = |t: f64| {
        if (2.0..3.0).contains(&t) {
            700.0
        } else if (3.0..3.07).contains(&t) {
            700.0 - 581.0 * (t - 3.0) / 0.07
        } else {
            119.0
        }
    };
    let trace = Build::new()
        .source(
            "nvml.gpu0",
            "nvml",
            vec![
                ChannelSpec::power("gpu0", "power_samples", PowerMethod::DriverSamples)
                    .with_update_period_ns(20 * MS),
            ],
            vec![(20 * MS, Box::new(tail) as Curve)],
            10.0,
        )
        .span("pause_start", "pause_end", 3.0, 4.0)
        .span("burst_start", "burst_end", 2.0, 3.0)
        .build();
    let idle = idle_profile_of(&trace, 6.0, 9.0);
    let an = Analyzer::new(&trace, Some((&idle, "file")), Thresholds::default());
    let pause = an.run("pause_start", "pause_end", &mut |_, _| {}).unwrap();
    let p = &pause.spans[0];
    let e = &p.energy["gpu0.power_samples"];
    let expected = ((700.0 + 534.0) + (534.0 + 368.0) + (368.0 + 202.0) + (202.0 + 119.0)) / 2.0
        * 0.02
        - 119.0 * 0.08;
    assert!(
        (e.active_energy_j.unwrap() - expected).abs() < 1e-6,
        "{e:?}"
    );
    assert!((e.settle_s - 0.08).abs() < 1e-12);
    assert!(
        (e.settled_mean_power_w.unwrap() - 119.0).abs() < 1e-9,
        "{e:?}"
    );
    assert_eq!(p.verdict, Verdict::IdleWait, "{:#?}", p.evidence);
    // the burst itself stays busy
    let burst = an.run("burst_start", "burst_end", &mut |_, _| {}).unwrap();
    assert_eq!(
        burst.spans[0].verdict,
        Verdict::GpuCompute,
        "{:#?}",
        burst.spans[0].evidence
    );
    // An idle span that ends just as the next burst starts: the energy's edge
    // interpolation reaches towards the first sample after the end (3.02 s, already
    // ramping), but the verdict only uses samples stamped inside the settled window.
    let pre = |t: f64| if t >= 3.005 { 700.0 } else { 119.0 };
    let edge = Build::new()
        .source(
            "nvml.gpu0",
            "nvml",
            vec![
                ChannelSpec::power("gpu0", "power_samples", PowerMethod::DriverSamples)
                    .with_update_period_ns(20 * MS),
            ],
            vec![(20 * MS, Box::new(pre) as Curve)],
            10.0,
        )
        .span("a", "b", 2.5, 3.005)
        .build();
    let an = Analyzer::new(&edge, Some((&idle, "file")), Thresholds::default());
    let r = an.run("a", "b", &mut |_, _| {}).unwrap();
    let e = &r.spans[0].energy["gpu0.power_samples"];
    // the last 5 ms interpolate from 119 W at 3.00 s towards 700 W at 3.02 s
    let interp = (119.0 + (119.0 + 581.0 * 0.25)) / 2.0 * 0.005 - 119.0 * 0.005;
    assert!((e.active_energy_j.unwrap() - interp).abs() < 1e-6, "{e:?}");
    assert_eq!(e.settled_mean_power_w, Some(119.0));
    assert_eq!(
        r.spans[0].verdict,
        Verdict::IdleWait,
        "{:#?}",
        r.spans[0].evidence
    );
    // and a span shorter than the response time cannot be judged from power
    let short = Build::new()
        .source(
            "nvml.gpu0",
            "nvml",
            vec![
                ChannelSpec::power("gpu0", "power_samples", PowerMethod::DriverSamples)
                    .with_update_period_ns(20 * MS),
            ],
            vec![(20 * MS, Box::new(tail) as Curve)],
            10.0,
        )
        .span("a", "b", 2.5, 2.535)
        .build();
    let an = Analyzer::new(&short, Some((&idle, "file")), Thresholds::default());
    let r = an.run("a", "b", &mut |_, _| {}).unwrap();
    assert_eq!(
        r.spans[0].verdict,
        Verdict::Unresolved,
        "{:#?}",
        r.spans[0].evidence
    );
}

/// The synthetic source as `flinch record --source synthetic` makes it: a model whose power
/// is a 2 s square wave (60 W, then 300 W over every odd second), its exact energy, and
/// utilisation 100 % while high.
fn with_synthetic(b: Build, class: DeviceClass) -> Build {
    let high = |t: f64| (t as u64) % 2 == 1;
    let mut b = b.source(
        "synthetic",
        "synthetic",
        vec![
            ChannelSpec::power("synthetic", "power", PowerMethod::Modelled),
            ChannelSpec::energy_counter(
                "synthetic",
                "energy",
                CounterSpec {
                    wrap_range: Some(500.0),
                    max_rate: Some(451.0),
                },
            ),
            ChannelSpec::gauge("synthetic", "util", Quantity::Utilization),
        ],
        vec![
            (
                10 * MS,
                Box::new(move |t| if high(t) { 300.0 } else { 60.0 }) as Curve,
            ),
            (
                10 * MS,
                Box::new(move |t: f64| {
                    let whole = t.floor();
                    let done = 180.0 * (whole / 2.0).floor() * 2.0
                        + if (whole as u64) % 2 == 1 { 60.0 } else { 0.0 };
                    (done + if high(t) { 300.0 } else { 60.0 } * (t - whole)) % 500.0
                }),
            ),
            (
                10 * MS,
                Box::new(move |t| if high(t) { 100.0 } else { 0.0 }),
            ),
        ],
        10.0,
    );
    let s = b.sources.last_mut().unwrap();
    *s = SourceInfo::new("synthetic", "synthetic", class)
        .modelled()
        .with_channels(s.channels.clone());
    b
}

#[test]
fn a_modelled_source_never_votes_next_to_measured_ones() {
    // The traced process computes on one core in "cpu" tasks and sleeps in "sleep" tasks,
    // whatever the synthetic square wave next to it does (it is high over odd seconds).
    let spec = CounterSpec {
        wrap_range: None,
        max_rate: Some(8.0),
    };
    let cpu_tasks = [(2.2, 2.8), (5.2, 5.8)]; // the model low, then high
    let sleeps = [(3.2, 3.8), (4.2, 4.8)]; // the model high, then low
    let proc_time = move |t: f64| {
        cpu_tasks
            .iter()
            .map(|&(a, b): &(f64, f64)| (t.min(b) - a).max(0.0))
            .sum::<f64>()
    };
    let mut b = with_synthetic(Build::new(), DeviceClass::Other).source(
        "cpu.proc",
        "cpu",
        vec![
            ChannelSpec::counter("proc", "cpu_time", Quantity::CpuTime, spec)
                .with_update_period_ns(10 * MS),
        ],
        vec![(20 * MS, Box::new(proc_time))],
        10.0,
    );
    b = b.process_scoped();
    for (a, e) in cpu_tasks.iter().chain(&sleeps) {
        b = b.span("task_start", "task_end", *a, *e);
    }
    let trace = b.build();
    // Idle as `--idle-window` over 6..8 s (the model's mean, 180 W, is no idle at all) and
    // as a profile taken while the model sat low (like `--idle idle.json`).
    for idle in [
        idle_profile_of(&trace, 6.0, 8.0),
        idle_profile_of(&trace, 0.1, 0.9),
    ] {
        let r = Analyzer::new(&trace, Some((&idle, "test")), Thresholds::default())
            .run("task_start", "task_end", &mut |_, _| {})
            .unwrap();
        let verdicts: Vec<Verdict> = r.spans.iter().map(|s| s.verdict).collect();
        // In time order: cpu 2.2, sleep 3.2, sleep 4.2, cpu 5.2.
        assert_eq!(
            verdicts,
            [
                Verdict::CpuCompute,
                Verdict::IdleWait,
                Verdict::IdleWait,
                Verdict::CpuCompute
            ],
            "{:#?}",
            r.spans.iter().map(|s| &s.evidence).collect::<Vec<_>>()
        );
        for s in &r.spans {
            assert!(s.devices["synthetic"].modelled);
            assert!(s.activity["synthetic.util"].modelled && !s.activity["synthetic.util"].used);
            assert!(
                s.evidence
                    .iter()
                    .any(|e| e
                        .contains("synthetic: a model (the synthetic source), not a measurement")),
                "{:?}",
                s.evidence
            );
        }
    }
    // On its own (a demonstration, flinch's own tests) the model still decides.
    let alone = with_synthetic(Build::new(), DeviceClass::Gpu)
        .span("s", "e", 3.2, 3.8)
        .span("s", "e", 4.2, 4.8)
        .build();
    let idle = idle_profile_of(&alone, 0.1, 0.9);
    let r = Analyzer::new(&alone, Some((&idle, "test")), Thresholds::default())
        .run("s", "e", &mut |_, _| {})
        .unwrap();
    let verdicts: Vec<Verdict> = r.spans.iter().map(|s| s.verdict).collect();
    assert_eq!(verdicts, [Verdict::GpuCompute, Verdict::IdleWait]);
}

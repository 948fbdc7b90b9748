//! The metrics, and the observer that keeps them up to date from the recorder's writer
//! thread.

use crate::push::{PushConfig, Pusher};
use flinch_analysis::idle::IdleProfile;
use flinch_analysis::live::{LiveSpans, SpanConfig, SpanSpec};
use flinch_core::channel::{ChannelKind, ChannelSpec, Quantity};
use flinch_core::counter::CounterStep;
use flinch_core::marks::{Mark, MarkParseError, MarkVia};
use flinch_core::trace::{Footer, Header};
use flinch_record::observe::{LiveThread, Observed, Observer};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The label value that stands for every mark label past the bound.
pub const OTHER_LABEL: &str = "_other";

/// Upper bounds of the span duration histogram, s: 1 ms to ~131 s, doubling.
pub fn duration_buckets() -> Vec<f64> {
    exponential_buckets(0.001, 2.0, 18).collect()
}

/// Upper bounds of the span energy histograms, J: 10 mJ to ~170 kJ, doubling (a 50 ms
/// light kernel is ~0.5 J above idle on an H100; a minute at 700 W is 42 kJ).
pub fn energy_buckets() -> Vec<f64> {
    exponential_buckets(0.01, 2.0, 25).collect()
}

/// What the exporter exports and how.
#[derive(Clone, Debug)]
pub struct ExporterConfig {
    /// `--span FROM..TO`, each measured live.
    pub spans: Vec<SpanSpec>,
    /// The idle profile subtracted for the spans' active energy.
    pub idle: Option<IdleProfile>,
    /// Limits of the live span measurement.
    pub span_limits: SpanConfig,
    /// The most distinct mark labels counted by name; the spans' labels always are, and
    /// every other label past the bound counts as [`OTHER_LABEL`].
    pub max_mark_labels: usize,
    /// Push to a Pushgateway every interval and at the end.
    pub push: Option<PushConfig>,
}

impl Default for ExporterConfig {
    fn default() -> Self {
        ExporterConfig {
            spans: Vec::new(),
            idle: None,
            span_limits: SpanConfig::default(),
            max_mark_labels: 100,
            push: None,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ChannelLabels {
    device: String,
    channel: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PowerLabels {
    device: String,
    channel: String,
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ChannelOnly {
    channel: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SourceLabel {
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct MarkLabel {
    label: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SpanLabel {
    span: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SpanDevice {
    span: String,
    device: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SpanVerdict {
    span: String,
    verdict: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SpanEnd {
    span: String,
    end: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct VersionLabel {
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ResultLabel {
    pub(crate) result: String,
}

type F64Counter = Counter<f64, AtomicU64>;
type F64Gauge = Gauge<f64, AtomicU64>;
type Hist<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric family.
pub(crate) struct Families {
    energy: Family<ChannelLabels, F64Counter>,
    cpu_seconds: Family<ChannelLabels, F64Counter>,
    resets: Family<ChannelOnly, Counter>,
    power: Family<PowerLabels, F64Gauge>,
    utilization: Family<ChannelLabels, F64Gauge>,
    activity: Family<ChannelLabels, F64Gauge>,
    clock: Family<ChannelLabels, F64Gauge>,
    temperature: Family<ChannelLabels, F64Gauge>,
    other: Family<ChannelLabels, F64Gauge>,
    span_duration: Hist<SpanLabel>,
    span_energy: Hist<SpanDevice>,
    span_active_energy: Hist<SpanDevice>,
    spans: Family<SpanVerdict, Counter>,
    span_unmatched: Family<SpanEnd, Counter>,
    marks: Family<MarkLabel, Counter>,
    bad_marks: Counter,
    dropped: Family<SourceLabel, Counter>,
    gaps: Family<SourceLabel, Counter>,
    source_up: Family<SourceLabel, Gauge>,
    build_info: Family<VersionLabel, Gauge>,
    pub(crate) rejected_connections: Counter,
    pub(crate) pushes: Family<ResultLabel, Counter>,
}

fn hist_duration() -> Histogram {
    Histogram::new(duration_buckets())
}

fn hist_energy() -> Histogram {
    Histogram::new(energy_buckets())
}

/// The sampler threads' CPU time, read when scraped.
#[derive(Debug, Default)]
struct ThreadCpu {
    threads: Mutex<Vec<(Arc<LiveThread>, AtomicU64)>>,
}

impl ThreadCpu {
    /// Each sampler thread's CPU time so far; never less than what was shown before (a
    /// thread that ended keeps its last value, or the footer's).
    fn values(&self) -> Vec<(String, f64)> {
        let c = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        c.iter()
            .map(|(th, seen)| {
                if let Some(ns) = th.cpu_ns() {
                    seen.fetch_max(ns, Ordering::Relaxed);
                }
                (th.name.clone(), seen.load(Ordering::Relaxed) as f64 / 1e9)
            })
            .collect()
    }
}

impl Collector for ThreadCpu {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let values = self.values();
        let mut m = encoder.encode_descriptor(
            "flinch_sampler_cpu_seconds",
            "CPU time used by each of flinch's sampler threads (polls, clock reads, queueing), \
             by thread (flinch-<backend>, flinch-slow-<interval>): flinch's own cost, live.",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (thread, v) in values {
            let labels = [("thread", thread)];
            let f = m.encode_family(&labels)?;
            ConstCounter::new(v).encode(f)?;
        }
        Ok(())
    }
}

/// Shared between the observer (writer thread), the HTTP server and the pusher.
pub(crate) struct Shared {
    pub(crate) registry: Registry,
    pub(crate) f: Families,
    cpu: Arc<ThreadCpu>,
    /// Messages about pushes that failed (bounded), for the command line to show.
    pub(crate) push_errors: Mutex<Vec<String>>,
}

impl Shared {
    fn new() -> Self {
        let mut r = Registry::default();
        let f = Families {
            energy: Family::default(),
            cpu_seconds: Family::default(),
            resets: Family::default(),
            power: Family::default(),
            utilization: Family::default(),
            activity: Family::default(),
            clock: Family::default(),
            temperature: Family::default(),
            other: Family::default(),
            span_duration: Family::new_with_constructor(hist_duration),
            span_energy: Family::new_with_constructor(hist_energy),
            span_active_energy: Family::new_with_constructor(hist_energy),
            spans: Family::default(),
            span_unmatched: Family::default(),
            marks: Family::default(),
            bad_marks: Counter::default(),
            dropped: Family::default(),
            gaps: Family::default(),
            source_up: Family::default(),
            build_info: Family::default(),
            rejected_connections: Counter::default(),
            pushes: Family::default(),
        };
        // Counters are registered without `_total`: the encoders add it.
        r.register(
            "flinch_energy_joules",
            "Energy from each counter channel since the recording started, wrap-corrected; a \
             counter reset on the device adds nothing (see flinch_channel_resets_total)",
            f.energy.clone(),
        );
        r.register(
            "flinch_channel_resets",
            "Times a cumulative channel (energy, CPU time) restarted from zero (driver reload, \
             suspend): what it counted between the two readings around it is unknown and not \
             counted",
            f.resets.clone(),
        );
        r.register(
            "flinch_power_watts",
            "The latest power reading of each power channel; method: driver-samples, instant, \
             average (a moving average that lags), modelled",
            f.power.clone(),
        );
        r.register(
            "flinch_utilization_ratio",
            "Busy share of an engine or of CPUs over the sensor's period (0-1): GPU \
             utilisation, host CPU utilisation",
            f.utilization.clone(),
        );
        r.register(
            "flinch_activity_ratio",
            "Fine-grained activity (0-1): SM active, SM occupancy, tensor and DRAM activity",
            f.activity.clone(),
        );
        r.register(
            "flinch_clock_hertz",
            "A clock frequency (SM clock)",
            f.clock.clone(),
        );
        r.register(
            "flinch_temperature_celsius",
            "A temperature",
            f.temperature.clone(),
        );
        r.register(
            "flinch_cpu_seconds",
            "CPU time from each CPU-time channel since the recording started: the host's busy \
             time, the traced process tree's",
            f.cpu_seconds.clone(),
        );
        r.register(
            "flinch_device_value",
            "A channel without a physical unit (NVML P-state, compute processes)",
            f.other.clone(),
        );
        r.register(
            "flinch_span_duration_seconds",
            "Length of each span FROM..TO (--span), paired as `flinch analyze` pairs them",
            f.span_duration.clone(),
        );
        r.register(
            "flinch_span_energy_joules",
            "Energy of each span per device, from the device's preferred channel",
            f.span_energy.clone(),
        );
        r.register(
            "flinch_span_active_energy_joules",
            "Energy above idle of each span per device (the --idle profile); negative when \
             the device drew less than its idle level",
            f.span_active_energy.clone(),
        );
        r.register(
            "flinch_spans",
            "Spans measured, by verdict: gpu-compute, cpu-compute, idle-wait, unresolved",
            f.spans.clone(),
        );
        r.register(
            "flinch_span_unmatched_marks",
            "Marks of a span that did not pair: end (a TO with nothing open) or start (a FROM \
             given up because too many spans were open)",
            f.span_unmatched.clone(),
        );
        r.register(
            "flinch_marks",
            "Marks received, by label (labels past the bound count as _other)",
            f.marks.clone(),
        );
        r.register(
            "flinch_bad_marks",
            "Malformed mark lines received",
            f.bad_marks.clone(),
        );
        r.register(
            "flinch_dropped_readings",
            "Readings dropped because the trace writer fell behind",
            f.dropped.clone(),
        );
        r.register(
            "flinch_gaps",
            "Times a source stopped answering",
            f.gaps.clone(),
        );
        r.register(
            "flinch_source_up",
            "1 while a source answers, 0 while it is in a gap",
            f.source_up.clone(),
        );
        r.register(
            "flinch_build_info",
            "Always 1; the flinch version in a label",
            f.build_info.clone(),
        );
        r.register(
            "flinch_exporter_rejected_connections",
            "Connections to the metrics endpoint closed at once because the connection limit \
             was reached",
            f.rejected_connections.clone(),
        );
        r.register(
            "flinch_exporter_pushes",
            "Pushes to the Pushgateway, by result (ok, failed)",
            f.pushes.clone(),
        );
        let cpu = Arc::new(ThreadCpu::default());
        r.register_collector(Box::new(cpu.clone()));
        f.build_info
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION").to_owned(),
            })
            .set(1);
        Shared {
            registry: r,
            f,
            cpu,
            push_errors: Mutex::new(Vec::new()),
        }
    }

    /// The registry in the Prometheus text format 0.0.4.
    pub(crate) fn encode_text(&self) -> String {
        let mut s = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut s, &self.registry);
        s
    }

    /// The registry in the OpenMetrics text format.
    pub(crate) fn encode_openmetrics(&self) -> String {
        let mut s = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut s, &self.registry);
        s
    }

    pub(crate) fn push_error(&self, msg: String) {
        let mut e = self.push_errors.lock().unwrap_or_else(|e| e.into_inner());
        if e.len() < 100 {
            e.push(msg);
        }
    }
}

/// A recording's live metrics. Make one, serve it ([`Exporter::serve`]) and hand its
/// [`Exporter::observer`] to the recorder.
#[derive(Clone)]
pub struct Exporter {
    pub(crate) shared: Arc<Shared>,
    cfg: ExporterConfig,
}

impl Exporter {
    /// The metrics, with nothing recorded yet.
    pub fn new(cfg: ExporterConfig) -> Self {
        Exporter {
            shared: Arc::new(Shared::new()),
            cfg,
        }
    }

    /// The observer to put in the recording's setup.
    pub fn observer(&self) -> Box<dyn Observer> {
        Box::new(ExportObserver {
            shared: self.shared.clone(),
            cfg: self.cfg.clone(),
            channels: Vec::new(),
            marks: HashMap::new(),
            spans: None,
            span_names: Vec::new(),
            pusher: None,
        })
    }

    /// The metrics now, in the Prometheus text format (0.0.4).
    pub fn encode_text(&self) -> String {
        self.shared.encode_text()
    }

    /// The metrics now, in the OpenMetrics text format.
    pub fn encode_openmetrics(&self) -> String {
        self.shared.encode_openmetrics()
    }

    /// Pushes that failed so far, one message each (at most 100).
    pub fn push_errors(&self) -> Vec<String> {
        self.shared
            .push_errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Where one channel's readings go.
enum Sink {
    /// A counter channel: each accepted step is added; resets are counted.
    Counter(F64Counter, Counter),
    /// A gauge: set to the latest reading times the scale.
    Gauge(F64Gauge, f64),
    None,
}

struct ExportObserver {
    shared: Arc<Shared>,
    cfg: ExporterConfig,
    /// Per channel (reading index).
    channels: Vec<Sink>,
    marks: HashMap<String, Counter>,
    spans: Option<LiveSpans>,
    span_names: Vec<String>,
    pusher: Option<Pusher>,
}

fn channel_sink(f: &Families, c: &ChannelSpec) -> Sink {
    let l = ChannelLabels {
        device: c.device.clone(),
        channel: c.name.clone(),
    };
    let resets = || {
        f.resets
            .get_or_create(&ChannelOnly {
                channel: c.name.clone(),
            })
            .clone()
    };
    match (&c.kind, c.quantity) {
        (ChannelKind::Counter(_), Quantity::Energy) => {
            Sink::Counter(f.energy.get_or_create(&l).clone(), resets())
        }
        (ChannelKind::Counter(_), Quantity::CpuTime) => {
            Sink::Counter(f.cpu_seconds.get_or_create(&l).clone(), resets())
        }
        (ChannelKind::Counter(_), _) => Sink::None,
        (ChannelKind::Gauge, Quantity::Power) => {
            let method = c.method.map(|m| m.name()).unwrap_or("unknown").to_owned();
            let p = PowerLabels {
                device: l.device,
                channel: l.channel,
                method,
            };
            Sink::Gauge(f.power.get_or_create(&p).clone(), 1.0)
        }
        (ChannelKind::Gauge, Quantity::Utilization) => {
            Sink::Gauge(f.utilization.get_or_create(&l).clone(), 0.01)
        }
        (ChannelKind::Gauge, Quantity::Activity) => {
            Sink::Gauge(f.activity.get_or_create(&l).clone(), 0.01)
        }
        (ChannelKind::Gauge, Quantity::Clock) => {
            Sink::Gauge(f.clock.get_or_create(&l).clone(), 1e6)
        }
        (ChannelKind::Gauge, Quantity::Temperature) => {
            Sink::Gauge(f.temperature.get_or_create(&l).clone(), 1.0)
        }
        (ChannelKind::Gauge, Quantity::Other) => {
            Sink::Gauge(f.other.get_or_create(&l).clone(), 1.0)
        }
        // Energy and CPU time are always counters; a quantity added later waits for a
        // metric of its own (with its unit in the name) rather than passing as another.
        (ChannelKind::Gauge, _) => Sink::None,
    }
}

impl ExportObserver {
    fn count_mark(&mut self, label: &str) {
        if let Some(c) = self.marks.get(label) {
            c.inc();
            return;
        }
        let key = if self.marks.len() < self.cfg.max_mark_labels {
            label
        } else {
            OTHER_LABEL
        };
        let c = self
            .shared
            .f
            .marks
            .get_or_create(&MarkLabel {
                label: key.to_owned(),
            })
            .clone();
        c.inc();
        if key == label {
            self.marks.insert(label.to_owned(), c);
        }
    }

    fn take_spans(&mut self, now_ns: u64) {
        let Some(live) = self.spans.as_mut() else {
            return;
        };
        let out = live.advance(now_ns);
        let f = &self.shared.f;
        for (i, r) in out.spans {
            let span = self.span_names[i].clone();
            f.span_duration
                .get_or_create(&SpanLabel { span: span.clone() })
                .observe(r.duration_s);
            f.spans
                .get_or_create(&SpanVerdict {
                    span: span.clone(),
                    verdict: r.verdict.name().to_owned(),
                })
                .inc();
            for (device, d) in &r.devices {
                let l = SpanDevice {
                    span: span.clone(),
                    device: device.clone(),
                };
                if let Some(e) = d.energy_j {
                    f.span_energy.get_or_create(&l).observe(e);
                }
                if let Some(e) = d.active_energy_j {
                    f.span_active_energy.get_or_create(&l).observe(e);
                }
            }
        }
        for (i, end) in out.unmatched {
            f.span_unmatched
                .get_or_create(&SpanEnd {
                    span: self.span_names[i].clone(),
                    end: end.to_owned(),
                })
                .inc();
        }
    }
}

/// Tells the live measurement how often each source is polled (its sampler thread's
/// interval), so that slow sources hold no span back needlessly.
fn tell_poll_intervals(live: &mut LiveSpans, threads: &[Arc<LiveThread>]) {
    for t in threads {
        for src in &t.sources {
            live.source_polled_every(src, std::time::Duration::from_nanos(t.interval_ns));
        }
    }
}

impl Observer for ExportObserver {
    fn start(&mut self, header: &Header, threads: &[Arc<LiveThread>]) {
        let f = &self.shared.f;
        for s in &header.sources {
            f.source_up
                .get_or_create(&SourceLabel {
                    source: s.name.clone(),
                })
                .set(1);
            for l in [&f.gaps, &f.dropped] {
                let _ = l.get_or_create(&SourceLabel {
                    source: s.name.clone(),
                });
            }
            for c in &s.channels {
                self.channels.push(channel_sink(f, c));
            }
        }
        *self
            .shared
            .cpu
            .threads
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = threads
            .iter()
            .map(|t| (t.clone(), AtomicU64::new(0)))
            .collect();
        // Labels named by the spans are always counted by name, and every series of a span
        // exists (at zero) from the start, so `increase()` sees its first spans.
        let mut labels: Vec<String> = Vec::new();
        for s in &self.cfg.spans {
            for l in [&s.from, &s.to] {
                if !labels.contains(l) {
                    labels.push(l.clone());
                }
            }
        }
        for l in labels {
            let c = f
                .marks
                .get_or_create(&MarkLabel { label: l.clone() })
                .clone();
            self.marks.insert(l, c);
        }
        self.span_names = self.cfg.spans.iter().map(SpanSpec::name).collect();
        for span in &self.span_names {
            let _ = f
                .span_duration
                .get_or_create(&SpanLabel { span: span.clone() });
            for v in flinch_analysis::Verdict::ALL {
                let _ = f.spans.get_or_create(&SpanVerdict {
                    span: span.clone(),
                    verdict: v.name().to_owned(),
                });
            }
        }
        if !self.cfg.spans.is_empty() {
            let mut live = LiveSpans::new(
                header,
                self.cfg.spans.clone(),
                self.cfg.idle.clone(),
                self.cfg.span_limits.clone(),
            );
            tell_poll_intervals(&mut live, threads);
            self.spans = Some(live);
        }
        if let Some(p) = &self.cfg.push {
            self.pusher = Some(Pusher::start(p.clone(), self.shared.clone()));
        }
    }

    fn readings(&mut self, batch: &[Observed]) {
        for o in batch {
            match self.channels.get(o.reading.channel as usize) {
                Some(Sink::Counter(total, resets)) => match o.counter {
                    Some(CounterStep::Delta { delta, .. }) => {
                        total.inc_by(delta);
                    }
                    Some(CounterStep::Reset { .. }) => {
                        resets.inc();
                    }
                    _ => {}
                },
                Some(Sink::Gauge(g, scale)) => {
                    g.set(o.reading.value * scale);
                }
                Some(Sink::None) | None => {}
            }
        }
        if let Some(s) = self.spans.as_mut() {
            for o in batch {
                s.reading(&o.reading, o.counter);
            }
        }
    }

    fn mark(&mut self, mark: &Mark) {
        self.count_mark(&mark.label);
        if let Some(s) = self.spans.as_mut() {
            s.mark(mark);
        }
    }

    fn bad_mark(&mut self, _via: MarkVia, _recv_ns: u64, _error: &MarkParseError) {
        self.shared.f.bad_marks.inc();
    }

    fn gap(&mut self, t_ns: u64, source: &str, reason: Option<&str>) {
        let l = SourceLabel {
            source: source.to_owned(),
        };
        if reason.is_some() {
            self.shared.f.gaps.get_or_create(&l).inc();
            self.shared.f.source_up.get_or_create(&l).set(0);
        } else {
            self.shared.f.source_up.get_or_create(&l).set(1);
        }
        if let Some(s) = self.spans.as_mut() {
            s.gap(t_ns, source, reason);
        }
    }

    fn dropped(&mut self, t_ns: u64, source: &str, count: u64) {
        self.shared
            .f
            .dropped
            .get_or_create(&SourceLabel {
                source: source.to_owned(),
            })
            .inc_by(count);
        if let Some(s) = self.spans.as_mut() {
            s.dropped(t_ns, source, count);
        }
    }

    fn flushed(&mut self, now_ns: u64) {
        self.take_spans(now_ns);
    }

    fn finish(&mut self, footer: &Footer) {
        self.take_spans(u64::MAX);
        {
            let c = self
                .shared
                .cpu
                .threads
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for (th, seen) in c.iter() {
                if let Some(ft) = footer.threads.iter().find(|f| f.name == th.name) {
                    seen.fetch_max(ft.cpu_ns, Ordering::Relaxed);
                }
            }
        }
        if let Some(p) = self.pusher.take() {
            p.finish();
        }
    }
}

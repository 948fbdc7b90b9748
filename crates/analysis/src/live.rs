//! Spans measured live: marks paired as `flinch analyze` pairs them, each span measured by
//! the same [`Analyzer`] over a bounded rolling buffer of recent readings, once every
//! channel's data has reached past the span's end.
//!
//! Readings arrive late (the NVML driver buffer by up to ~0.5 s, and the writer hands them
//! over in batches at most a second apart) while marks arrive at once. So marks wait in a
//! small reorder buffer and are taken in time order once the *watermark* — the oldest
//! "latest reading" over the channels that are answering — has passed them, or once they
//! are older than [`SpanConfig::max_wait`] (a channel that stopped answering does not hold
//! spans back forever). Taking marks in time order is what `analyze` does (it sorts them);
//! when a span's end is taken, every channel has data past it, so the measurement is the
//! one `analyze` makes on the finished trace.
//!
//! Memory is bounded: readings older than what an open span or a waiting mark can still
//! need are dropped, the buffer never holds more than [`SpanConfig::max_samples`]
//! readings (past that the oldest go, and a span reaching back there is measured without
//! them: `unresolved`), and at most [`SpanConfig::max_open`] spans wait for their end per
//! span name (past that the oldest start is given up and counted as unmatched).
//!
//! Two users: `flinch-prometheus` (the span histograms of `flinch record --span`) and
//! `flinch record --print` (each print interval is a span between two consecutive
//! boundary marks, `X..X`).

use crate::idle::IdleProfile;
use crate::{Analyzer, SpanReport, Thresholds};
use flinch_core::counter::CounterStep;
use flinch_core::integrate::Method;
use flinch_core::marks::Mark;
use flinch_core::source::Reading;
use flinch_core::trace::{ChannelData, Gap, Header, RowKind, Trace, TraceEvent};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// One `--span FROM..TO`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SpanSpec {
    /// The label that opens a span.
    pub from: String,
    /// The label that closes it.
    pub to: String,
}

impl SpanSpec {
    /// The `span` label value: `FROM..TO`.
    pub fn name(&self) -> String {
        format!("{}..{}", self.from, self.to)
    }
}

impl fmt::Display for SpanSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..{}", self.from, self.to)
    }
}

impl FromStr for SpanSpec {
    type Err = String;
    /// Parses `FROM..TO` (both mark labels, `[A-Za-z0-9_.:/-]+`; `step..step` measures
    /// between consecutive marks).
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, b) = s
            .split_once("..")
            .ok_or_else(|| format!("span {s:?} is not FROM..TO (e.g. infer_start..first_token)"))?;
        for l in [a, b] {
            if !flinch_core::marks::is_valid_label(l) {
                return Err(format!(
                    "span {s:?}: {l:?} is not a mark label ([A-Za-z0-9_.:/-]+, not empty)"
                ));
            }
        }
        Ok(SpanSpec {
            from: a.to_owned(),
            to: b.to_owned(),
        })
    }
}

/// Sources polled at least this far apart are slow (see [`LiveSpans::source_polled_every`]).
pub const SLOW_POLL: Duration = Duration::from_secs(2);

/// Limits of the live span measurement.
#[derive(Clone, Debug)]
pub struct SpanConfig {
    /// The longest a mark waits for the readings around it (a channel that stopped
    /// answering is waited for this long at most).
    pub max_wait: Duration,
    /// The most readings kept for spans still open (16 bytes each).
    pub max_samples: usize,
    /// The most spans of one name waiting for their end.
    pub max_open: usize,
    /// The most marks waiting to be taken in time order.
    pub max_pending_marks: usize,
}

impl Default for SpanConfig {
    fn default() -> Self {
        SpanConfig {
            max_wait: Duration::from_secs(5),
            max_samples: 2_000_000,
            max_open: 10_000,
            max_pending_marks: 100_000,
        }
    }
}

/// What the live measurement produced since it was last asked.
#[derive(Debug, Default)]
pub struct Output {
    /// Spans measured: (index into the span specs, report).
    pub spans: Vec<(usize, SpanReport)>,
    /// Marks that did not pair: (span index, `start` or `end`).
    pub unmatched: Vec<(usize, &'static str)>,
}

/// Incremental pairing with `pair_marks`' rule: per request id, each `to` closes the
/// oldest open `from`; when `from == to`, each mark closes the span the previous one of its
/// request opened.
#[derive(Debug, Default)]
struct Pairer {
    open: HashMap<Option<String>, VecDeque<Mark>>,
    n_open: usize,
}

impl Pairer {
    /// Takes one mark (in time order); returns the span it closes, and whether a start had
    /// to be given up (the open bound) or an end found nothing open.
    fn take(
        &mut self,
        spec: &SpanSpec,
        m: &Mark,
        max_open: usize,
        unmatched: &mut Vec<&'static str>,
    ) -> Option<(Mark, Mark)> {
        if m.label != spec.from && m.label != spec.to {
            return None;
        }
        let req = m.req().map(str::to_owned);
        let mut closed = None;
        if m.label == spec.to {
            let q = self.open.get_mut(&req);
            match q.and_then(|q| q.pop_front()) {
                Some(start) => {
                    self.n_open -= 1;
                    closed = Some((start, m.clone()));
                }
                None if spec.from != spec.to => unmatched.push("end"),
                None => {}
            }
            if self.open.get(&req).is_some_and(|q| q.is_empty()) {
                self.open.remove(&req);
            }
        }
        if m.label == spec.from {
            if self.n_open >= max_open {
                // Give up the oldest open start of all requests.
                let oldest = self
                    .open
                    .iter()
                    .filter_map(|(k, q)| q.front().map(|s| (s.t_ns, k.clone())))
                    .min_by_key(|(t, _)| *t)
                    .map(|(_, k)| k);
                if let Some(k) = oldest {
                    if let Some(q) = self.open.get_mut(&k) {
                        q.pop_front();
                        self.n_open -= 1;
                        if q.is_empty() {
                            self.open.remove(&k);
                        }
                    }
                    unmatched.push("start");
                }
            }
            self.open.entry(req).or_default().push_back(m.clone());
            self.n_open += 1;
        }
        closed
    }

    fn oldest_start_ns(&self) -> Option<u64> {
        self.open
            .values()
            .filter_map(|q| q.front().map(|m| m.t_ns))
            .min()
    }
}

/// The live measurement of a recording's spans.
pub struct LiveSpans {
    specs: Vec<SpanSpec>,
    cfg: SpanConfig,
    idle: Option<IdleProfile>,
    trace: Trace,
    /// Per channel: the newest reading's time.
    latest: Vec<Option<u64>>,
    /// Per channel: whether its source is answering (no open gap).
    answering: Vec<bool>,
    /// Channel indices per source name.
    source_channels: HashMap<String, Vec<usize>>,
    /// Per channel: whether it may be left out of the watermark (see
    /// [`LiveSpans::source_polled_every`]).
    stand_in: Vec<bool>,
    pending: BTreeMap<(u64, u64), Mark>,
    seq: u64,
    pairers: Vec<Pairer>,
    samples: usize,
    /// Readings before this time were dropped for the bound (not because no span needed
    /// them).
    dropped_before: Option<u64>,
    /// Spans measured without their first readings, because the buffer bound dropped them.
    pub truncated: u64,
    /// Marks given up because too many waited.
    pub marks_dropped: u64,
}

impl LiveSpans {
    /// Spans `specs` of a recording with this header, with an idle profile for the energy
    /// above idle (none: active energy is not known, durations and energies still are).
    pub fn new(
        header: &Header,
        specs: Vec<SpanSpec>,
        idle: Option<IdleProfile>,
        cfg: SpanConfig,
    ) -> Self {
        let mut channels = Vec::new();
        let mut source_channels: HashMap<String, Vec<usize>> = HashMap::new();
        for s in &header.sources {
            for c in &s.channels {
                source_channels
                    .entry(s.name.clone())
                    .or_default()
                    .push(channels.len());
                channels.push(ChannelData {
                    spec: c.clone(),
                    source: s.name.clone(),
                    t_ns: Vec::new(),
                    values: Vec::new(),
                });
            }
        }
        let n = channels.len();
        let trace = Trace {
            path: PathBuf::from("(live)"),
            header: header.clone(),
            footer: None,
            channels,
            marks: Vec::new(),
            anchors: Vec::new(),
            gaps: Vec::new(),
            events: Vec::new(),
            warnings: Vec::new(),
        };
        LiveSpans {
            pairers: specs.iter().map(|_| Pairer::default()).collect(),
            specs,
            cfg,
            idle,
            trace,
            latest: vec![None; n],
            answering: vec![true; n],
            source_channels,
            stand_in: vec![false; n],
            pending: BTreeMap::new(),
            seq: 0,
            samples: 0,
            dropped_before: None,
            truncated: 0,
            marks_dropped: 0,
        }
    }

    /// The span specs, in index order.
    pub fn specs(&self) -> &[SpanSpec] {
        &self.specs
    }

    /// Says how often `source` is polled. The energy channels of a source polled less
    /// often than every [`SLOW_POLL`] (NVML's energy counter, read every 30 s by default)
    /// do not hold spans back when their device has an energy channel polled faster (its
    /// power): the device's energy comes from that one, so waiting up to a whole slow
    /// period for the counter would only delay every span. A device measured by a slow
    /// channel alone is still waited for.
    pub fn source_polled_every(&mut self, source: &str, interval: Duration) {
        let Some(chans) = self.source_channels.get(source).cloned() else {
            return;
        };
        let slow = interval >= SLOW_POLL;
        for &c in &chans {
            self.stand_in[c] = slow && Method::of(&self.trace.channels[c].spec).is_some();
        }
        // A slow channel is a stand-in only beside a faster energy channel of its device.
        let fast_devices: Vec<String> = self
            .trace
            .channels
            .iter()
            .enumerate()
            .filter(|(i, c)| !self.stand_in[*i] && Method::of(&c.spec).is_some())
            .map(|(_, c)| c.spec.device.clone())
            .collect();
        for (i, c) in self.trace.channels.iter().enumerate() {
            if self.stand_in[i] && !fast_devices.contains(&c.spec.device) {
                self.stand_in[i] = false;
            }
        }
    }

    /// Readings held now.
    pub fn buffered_samples(&self) -> usize {
        self.samples
    }

    fn wanted(&self, label: &str) -> bool {
        self.specs.iter().any(|s| s.from == label || s.to == label)
    }

    /// Takes one reading (in write order) with what its step meant for a counter channel
    /// (the recorder's observers get both: `flinch_record::observe::Observed`).
    pub fn reading(&mut self, r: &Reading, counter: Option<CounterStep>) {
        let Some(ch) = self.trace.channels.get_mut(r.channel as usize) else {
            return;
        };
        // The trace writer writes readings in arrival order; analysis expects each
        // channel's times non-decreasing, which every source guarantees.
        ch.t_ns.push(r.t_ns);
        ch.values.push(r.value);
        self.samples += 1;
        let l = &mut self.latest[r.channel as usize];
        *l = Some(l.map_or(r.t_ns, |x| x.max(r.t_ns)));
        let kind = match counter {
            Some(CounterStep::Reset { .. }) => Some(RowKind::Reset),
            Some(CounterStep::Implausible { .. } | CounterStep::OutOfRange { .. }) => {
                Some(RowKind::Flag)
            }
            _ => None,
        };
        if let Some(kind) = kind {
            let name = ch.spec.name.clone();
            self.trace.events.push(TraceEvent {
                t_ns: r.t_ns,
                kind,
                channel: name,
                value: Some(r.value),
                label: String::new(),
                text: String::new(),
                line: 0,
            });
        }
    }

    /// Takes a mark (any label; only the spans' labels are kept).
    pub fn mark(&mut self, m: &Mark) {
        if !self.wanted(&m.label) {
            return;
        }
        if self.pending.len() >= self.cfg.max_pending_marks {
            self.marks_dropped += 1;
            return;
        }
        self.pending.insert((m.t_ns, self.seq), m.clone());
        self.seq += 1;
    }

    /// A source stopped answering (`reason` is `Some`) or answered again.
    pub fn gap(&mut self, t_ns: u64, source: &str, reason: Option<&str>) {
        let chans = self
            .source_channels
            .get(source)
            .cloned()
            .unwrap_or_default();
        for &c in &chans {
            self.answering[c] = reason.is_none();
        }
        match reason {
            Some(why) => self.trace.gaps.push(Gap {
                source: source.to_owned(),
                start_ns: t_ns,
                end_ns: None,
                reason: why.to_owned(),
            }),
            None => {
                if let Some(g) = self
                    .trace
                    .gaps
                    .iter_mut()
                    .rev()
                    .find(|g| g.source == source && g.end_ns.is_none())
                {
                    g.end_ns = Some(t_ns);
                }
            }
        }
    }

    /// Readings of `source` were dropped at `t_ns`.
    pub fn dropped(&mut self, t_ns: u64, source: &str, count: u64) {
        self.trace.events.push(TraceEvent {
            t_ns,
            kind: RowKind::Drop,
            channel: source.to_owned(),
            value: Some(count as f64),
            label: String::new(),
            text: String::new(),
            line: 0,
        });
    }

    /// The time up to which every answering channel (slow stand-ins aside) has data.
    fn watermark(&self, now_ns: u64) -> u64 {
        let caught_up = self
            .latest
            .iter()
            .zip(&self.answering)
            .zip(&self.stand_in)
            .filter(|((_, a), s)| **a && !**s)
            .filter_map(|((l, _), _)| *l)
            .min()
            .unwrap_or(0);
        caught_up.max(now_ns.saturating_sub(self.cfg.max_wait.as_nanos() as u64))
    }

    /// Measures every span whose end the data has caught up with (`now_ns`: the time now;
    /// `u64::MAX` at the end of the recording, to take every mark left), then drops what
    /// no span can need any more.
    pub fn advance(&mut self, now_ns: u64) -> Output {
        let w = if now_ns == u64::MAX {
            u64::MAX
        } else {
            self.watermark(now_ns)
        };
        let mut out = Output::default();
        let mut ready: Vec<(usize, Mark, Mark)> = Vec::new();
        while let Some(entry) = self.pending.first_entry() {
            if entry.key().0 > w {
                break;
            }
            let m = entry.remove();
            for (i, spec) in self.specs.iter().enumerate() {
                let mut un = Vec::new();
                if let Some((a, b)) = self.pairers[i].take(spec, &m, self.cfg.max_open, &mut un) {
                    ready.push((i, a, b));
                }
                out.unmatched.extend(un.into_iter().map(|e| (i, e)));
            }
        }
        if !ready.is_empty() {
            let idle = self.idle.as_ref().map(|p| (p, "file"));
            let analyzer = Analyzer::new(&self.trace, idle, Thresholds::default());
            for (i, a, b) in ready {
                if self.dropped_before.is_some_and(|h| a.t_ns < h) {
                    self.truncated += 1;
                }
                out.spans.push((i, analyzer.span(&a, &b)));
            }
        }
        self.prune(w);
        out
    }

    /// Drops readings, gaps and events that no open span or waiting mark can need.
    fn prune(&mut self, watermark: u64) {
        // A span needs readings from a little before its start (interpolation at the edge
        // uses the reading before it; a slow counter's may be seconds old).
        let margin = self
            .trace
            .channels
            .iter()
            .filter_map(|c| c.spec.update_period_ns)
            .max()
            .unwrap_or(0)
            .saturating_mul(2)
            .max(2_000_000_000);
        let needed = self
            .pairers
            .iter()
            .filter_map(Pairer::oldest_start_ns)
            .chain(self.pending.keys().next().map(|k| k.0))
            .min()
            .unwrap_or(watermark)
            .min(watermark);
        let mut cut = needed.saturating_sub(margin);
        if self.samples > self.cfg.max_samples {
            // Over the bound: drop the oldest half of what is held, whatever needs it.
            let mut times: Vec<u64> = self
                .trace
                .channels
                .iter()
                .filter_map(|c| c.t_ns.get(c.t_ns.len() / 2).copied())
                .collect();
            times.sort_unstable();
            if let Some(&t) = times.get(times.len() / 2) {
                cut = cut.max(t);
                self.dropped_before = Some(self.dropped_before.map_or(t, |d| d.max(t)));
            }
        }
        if cut == 0 {
            return;
        }
        for c in &mut self.trace.channels {
            // Keep the last reading before the cut: the edge of a span starting at it.
            let k = c.t_ns.partition_point(|&t| t < cut).saturating_sub(1);
            if k > 0 {
                c.t_ns.drain(..k);
                c.values.drain(..k);
                self.samples -= k;
            }
        }
        self.trace
            .gaps
            .retain(|g| g.end_ns.is_none_or(|e| e >= cut));
        self.trace.events.retain(|e| e.t_ns >= cut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pair_marks;
    use flinch_core::marks::MarkVia;
    use proptest::prelude::*;

    fn mark(i: usize, label: &str, req: Option<u8>) -> Mark {
        Mark {
            t_ns: i as u64 * 1000,
            recv_ns: i as u64 * 1000,
            t_from_client: true,
            label: label.to_owned(),
            fields: req
                .map(|r| vec![("req".to_owned(), r.to_string())])
                .unwrap_or_default(),
            via: MarkVia::Api,
        }
    }

    /// The live pairer's spans and unmatched ends, as indices into `marks`.
    fn live(marks: &[Mark], spec: &SpanSpec) -> (Vec<(usize, usize)>, usize) {
        let mut p = Pairer::default();
        let mut pairs = Vec::new();
        let mut un = Vec::new();
        for m in marks {
            if let Some((a, b)) = p.take(spec, m, usize::MAX, &mut un) {
                let ia = marks.iter().position(|x| x.t_ns == a.t_ns).unwrap();
                let ib = marks.iter().position(|x| x.t_ns == b.t_ns).unwrap();
                pairs.push((ia, ib));
            }
        }
        pairs.sort_unstable();
        (pairs, un.iter().filter(|e| **e == "end").count())
    }

    proptest! {
        /// Live pairing gives exactly `flinch analyze`'s pairs, for distinct labels and for
        /// `step..step`, with and without request ids.
        #[test]
        fn live_pairing_is_analyze_pairing(
            seq in proptest::collection::vec((0usize..4, proptest::option::of(0u8..3)), 0..80)
        ) {
            let labels = ["a", "b", "c", "a"];
            let marks: Vec<Mark> = seq
                .iter()
                .enumerate()
                .map(|(i, (l, r))| mark(i, labels[*l], *r))
                .collect();
            for (from, to) in [("a", "b"), ("a", "a"), ("b", "c")] {
                let spec = SpanSpec { from: from.into(), to: to.into() };
                let want = pair_marks(&marks, from, to);
                let (pairs, ends) = live(&marks, &spec);
                prop_assert_eq!(&pairs, &want.pairs);
                prop_assert_eq!(ends, want.unmatched_ends.len());
            }
        }
    }

    #[test]
    fn past_the_open_bound_the_oldest_start_is_given_up_and_counted() {
        let spec: SpanSpec = "a..b".parse().unwrap();
        let mut p = Pairer::default();
        let mut un = Vec::new();
        for i in 0..5 {
            assert!(
                p.take(&spec, &mark(i, "a", Some(i as u8)), 3, &mut un)
                    .is_none()
            );
        }
        assert_eq!(un, vec!["start", "start"]);
        assert_eq!(p.n_open, 3);
        // req 0 was given up: its end finds nothing; req 4's pairs.
        assert!(p.take(&spec, &mark(10, "b", Some(0)), 3, &mut un).is_none());
        assert_eq!(un.last(), Some(&"end"));
        let (a, _) = p.take(&spec, &mark(11, "b", Some(4)), 3, &mut un).unwrap();
        assert_eq!(a.t_ns, 4000);
    }

    /// A device with a power gauge read every 10 ms (source `fast`) and an energy counter
    /// (source `slow`) read once, at the start; a span a..b from 1.0 to 1.5 s.
    fn fast_and_slow(device_of_counter: &str) -> LiveSpans {
        use flinch_core::channel::{ChannelSpec, CounterSpec, PowerMethod, Quantity, SourceInfo};
        use flinch_core::clock::ClockAnchor;
        use flinch_core::device::DeviceClass;
        let mut p = ChannelSpec::gauge("gpu0", "power", Quantity::Power);
        p.method = Some(PowerMethod::Instant);
        let e = ChannelSpec::counter(
            device_of_counter,
            "energy",
            Quantity::Energy,
            CounterSpec::default(),
        );
        let header = Header::new(
            10_000_000,
            ClockAnchor {
                mono_ns: 0,
                real_ns: 0,
            },
            vec![
                SourceInfo::new("fast", "test", DeviceClass::Gpu).with_channels(vec![p]),
                SourceInfo::new("slow", "test", DeviceClass::Gpu).with_channels(vec![e]),
            ],
        );
        let spec: SpanSpec = "a..b".parse().unwrap();
        let mut live = LiveSpans::new(&header, vec![spec], None, SpanConfig::default());
        live.reading(
            &Reading {
                channel: 1,
                t_ns: 0,
                value: 0.0,
            },
            Some(CounterStep::First),
        );
        for i in 0..300u64 {
            let r = Reading {
                channel: 0,
                t_ns: i * 10_000_000,
                value: 100.0,
            };
            live.reading(&r, None);
        }
        for (label, t) in [("a", 1_000_000_000), ("b", 1_500_000_000)] {
            let mut m = mark(0, label, None);
            m.t_ns = t;
            m.recv_ns = t;
            live.mark(&m);
        }
        live
    }

    #[test]
    fn a_slow_counter_beside_a_faster_power_channel_holds_no_span_back() {
        let now = 3_000_000_000; // the counter's next read is 30 s away; max_wait is 5 s
        let mut waited = fast_and_slow("gpu0");
        assert!(
            waited.advance(now).spans.is_empty(),
            "no hint: the counter holds"
        );
        let mut live = fast_and_slow("gpu0");
        live.source_polled_every("slow", Duration::from_secs(30));
        let out = live.advance(now);
        assert_eq!(out.spans.len(), 1);
        let dev = &out.spans[0].1.devices["gpu0"];
        assert!((dev.energy_j.unwrap() - 50.0).abs() < 1e-9, "{dev:?}");
        // A device measured by the slow counter alone is still waited for.
        let mut alone = fast_and_slow("gpu1");
        alone.source_polled_every("slow", Duration::from_secs(30));
        assert!(alone.advance(now).spans.is_empty());
        // A counter polled every second still holds spans back (at most a second).
        let mut second = fast_and_slow("gpu0");
        second.source_polled_every("slow", Duration::from_secs(1));
        assert!(second.advance(now).spans.is_empty());
    }

    #[test]
    fn span_specs_parse_or_say_why() {
        let s: SpanSpec = "infer_start..first_token".parse().unwrap();
        assert_eq!(s.name(), "infer_start..first_token");
        for bad in ["a", "..b", "a..", "a b..c"] {
            assert!(bad.parse::<SpanSpec>().is_err(), "{bad}");
        }
    }
}

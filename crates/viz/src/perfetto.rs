//! Chrome trace-event JSON for the Perfetto UI (<https://ui.perfetto.dev>, "Open trace
//! file").
//!
//! Layout of the file:
//!
//! - one **process per device** (`gpu0 · NVIDIA H200 (nvml)`), holding one **counter track
//!   per channel**: `"ph":"C"` events named after the channel with a single argument named
//!   after the unit, so Perfetto names the track `gpu0.power_samples W`; source gaps are
//!   slices on a `gaps: <source>` thread of that process;
//! - a **spans** process: spans as complete slices (`"ph":"X"`; with `flinch analyze`'s
//!   judgement, each with its verdict and composition as arguments, and a `machine state`
//!   thread holding the state timeline), one thread per request id
//!   (`req 7`; spans without one on `spans`); for requests with marks that no span uses,
//!   a `req 7` slice from its first to its last mark with one slice per stage
//!   (`enqueue → dequeue`) nested inside; slices that would overlap without nesting go to
//!   an extra thread (`req 7 (2)`), since slices on one thread must nest;
//! - a **marks** process: every mark as an instant (`"ph":"i"`, thread scope) on one thread
//!   per label, with its fields as arguments;
//! - trace events (command start and exit, counter resets, flags, dropped readings, bad
//!   marks) as global instants.
//!
//! `ts` is in microseconds (fractional, so nanoseconds survive) from the earliest moment
//! of the trace, whose `CLOCK_MONOTONIC` value is in `otherData.origin_mono_ns`; `dur` is in
//! microseconds too, each written as an exact decimal of whole nanoseconds (Perfetto rounds
//! `ts × 1000` to ns, so nested slices stay nested). No `displayTimeUnit` is written: it
//! only changes the legacy viewer's display, and some importers have read it as the unit
//! of `ts`. Events of each track are written in time order.

use crate::perfetto_proto::{PointBudget, decimate};
use crate::spans::{Judgement, SpanSet};
use flinch_core::trace::{RowKind, Trace};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::io::{self, Write};

/// What was written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PerfettoStats {
    /// Counter events (one per sample).
    pub counters: u64,
    /// Complete slices (spans, stages, requests, gaps).
    pub slices: u64,
    /// Instants (marks and trace events).
    pub instants: u64,
    /// Processes (devices + spans + marks).
    pub processes: u32,
}

/// The moment `ts` counts from: the earliest of the start anchor, samples, marks and gaps.
pub fn origin_ns(trace: &Trace) -> u64 {
    let mut o = trace.header.start_anchor.mono_ns;
    if let Some((lo, _)) = trace.time_range_ns() {
        o = o.min(lo);
    }
    for g in &trace.gaps {
        o = o.min(g.start_ns);
    }
    o
}

pub(crate) fn last_ns(trace: &Trace) -> u64 {
    let mut hi = trace.time_range_ns().map(|r| r.1).unwrap_or(0);
    if let Some(f) = &trace.footer {
        hi = hi.max(f.end_anchor.mono_ns);
    }
    hi
}

/// Microseconds since `origin`, as a JSON number with nanosecond precision.
fn us(t: u64, origin: u64) -> String {
    let d = t.saturating_sub(origin);
    let (whole, frac) = (d / 1000, d % 1000);
    if frac == 0 {
        whole.to_string()
    } else {
        let s = format!("{whole}.{frac:03}");
        s.trim_end_matches('0').to_owned()
    }
}

pub(crate) fn unit_key(unit: &str) -> &str {
    match unit {
        "1" | "" => "value",
        u => u,
    }
}

pub(crate) struct Slice {
    pub(crate) name: String,
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) args: Value,
}

/// Puts slices into lanes in which they nest or are disjoint; returns the lanes in order.
fn into_lanes(mut slices: Vec<Slice>) -> Vec<Vec<Slice>> {
    slices.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
    let mut lanes: Vec<(Vec<Slice>, Vec<u64>)> = Vec::new();
    'next: for s in slices {
        for (lane, open) in lanes.iter_mut() {
            // Slices that ended by this one's start are closed.
            while open.last().is_some_and(|&e| e <= s.start) {
                open.pop();
            }
            if open.last().is_none_or(|&e| s.end <= e) {
                open.push(s.end);
                lane.push(s);
                continue 'next;
            }
        }
        lanes.push((Vec::new(), vec![s.end]));
        lanes.last_mut().expect("just pushed").0.push(s);
    }
    lanes.into_iter().map(|(l, _)| l).collect()
}

struct Out<'w, W: Write> {
    w: &'w mut W,
    first: bool,
    origin: u64,
}

impl<W: Write> Out<'_, W> {
    fn raw(&mut self, event: &str) -> io::Result<()> {
        if !self.first {
            self.w.write_all(b",\n")?;
        }
        self.first = false;
        self.w.write_all(event.as_bytes())
    }
    fn meta(&mut self, what: &str, pid: u32, tid: Option<u32>, arg: Value) -> io::Result<()> {
        let key = if what.ends_with("sort_index") {
            "sort_index"
        } else {
            "name"
        };
        let ev = json!({"name": what, "ph": "M", "pid": pid, "tid": tid.unwrap_or(0), "args": {key: arg}});
        self.raw(&ev.to_string())
    }
    fn slice(&mut self, pid: u32, tid: u32, s: &Slice) -> io::Result<()> {
        let ev = format!(
            r#"{{"name":{},"cat":"span","ph":"X","ts":{},"dur":{},"pid":{pid},"tid":{tid},"args":{}}}"#,
            Value::String(s.name.clone()),
            us(s.start, self.origin),
            us(s.end - s.start + self.origin, self.origin),
            s.args
        );
        self.raw(&ev)
    }
}

/// Writes the trace-event JSON of `trace`, with `spans` as slices. `progress(done, total)`
/// is called every few thousand events (total = samples + marks).
pub fn write_perfetto<W: Write>(
    trace: &Trace,
    spans: &SpanSet,
    w: &mut W,
    progress: &mut dyn FnMut(u64, u64),
) -> io::Result<PerfettoStats> {
    write_perfetto_judged(trace, spans, None, w, progress)
}

/// [`write_perfetto`] with `flinch analyze`'s judgement of the spans ([`judge`]): each span
/// slice carries its verdict and composition as arguments, and a `machine state` thread of
/// the spans process holds the state timeline as slices (`gpu-compute`, `idle-wait`, …).
///
/// [`judge`]: crate::spans::judge
pub fn write_perfetto_judged<W: Write>(
    trace: &Trace,
    spans: &SpanSet,
    judged: Option<&Judgement>,
    w: &mut W,
    progress: &mut dyn FnMut(u64, u64),
) -> io::Result<PerfettoStats> {
    write_perfetto_json(trace, spans, judged, PointBudget::Full, w, progress)
}

/// About how many bytes [`write_perfetto_json`] writes per counter event: what the warning
/// of a JSON file too big to open is estimated from.
pub const JSON_BYTES_PER_COUNTER: u64 = 85;

/// [`write_perfetto_judged`] with counter tracks decimated to `budget` (see
/// [`crate::perfetto_proto::decimate`]).
pub fn write_perfetto_json<W: Write>(
    trace: &Trace,
    spans: &SpanSet,
    judged: Option<&Judgement>,
    budget: PointBudget,
    w: &mut W,
    progress: &mut dyn FnMut(u64, u64),
) -> io::Result<PerfettoStats> {
    let origin = origin_ns(trace);
    let total = (trace.sample_count() + trace.marks.len()) as u64;
    let mut done = 0u64;
    let mut stats = PerfettoStats::default();
    let other = json!({
        "source": "flinch export --perfetto",
        "trace": trace.path.display().to_string(),
        "host": trace.header.host,
        "created": trace.header.created,
        "flinch_version": trace.header.flinch_version,
        "origin_mono_ns": origin.to_string(),
        "clock": "ts: microseconds since origin_mono_ns on CLOCK_MONOTONIC",
    });
    // traceEvents first, like Chrome's own files; the metadata object after it.
    writeln!(w, "{{\"traceEvents\":[")?;
    let mut out = Out {
        w,
        first: true,
        origin,
    };

    // Devices: one process each, in order of first appearance.
    let mut devices: Vec<String> = Vec::new();
    for c in &trace.channels {
        if !devices.contains(&c.spec.device) {
            devices.push(c.spec.device.clone());
        }
    }
    let pid_of = |device: &str| devices.iter().position(|d| d == device).unwrap_or(0) as u32 + 1;
    for (i, dev) in devices.iter().enumerate() {
        let pid = i as u32 + 1;
        let name = device_title(trace, dev);
        out.meta("process_name", pid, None, json!(name))?;
        out.meta("process_sort_index", pid, None, json!(pid))?;
        stats.processes += 1;
    }
    let caps = budget.per_channel(trace);
    for (k, c) in trace.channels.iter().enumerate() {
        let pid = pid_of(&c.spec.device);
        let name = Value::String(c.spec.name.clone()).to_string();
        let key = Value::String(unit_key(c.spec.unit.symbol()).to_owned()).to_string();
        let keep: Vec<usize> = match caps[k] {
            Some(cap) => decimate(&c.t_ns, &c.values, cap),
            None => (0..c.t_ns.len()).collect(),
        };
        for (t, v) in keep.iter().map(|&i| (c.t_ns[i], c.values[i])) {
            let ev = format!(
                r#"{{"name":{name},"ph":"C","ts":{},"pid":{pid},"tid":0,"args":{{{key}:{v}}}}}"#,
                us(t, origin)
            );
            out.raw(&ev)?;
            stats.counters += 1;
            done += 1;
            if done.is_multiple_of(8192) {
                progress(done, total);
            }
        }
    }
    // Gaps: one thread per source in its device's process.
    let end_of_trace = last_ns(trace);
    let mut gap_tids: BTreeMap<(u32, String), u32> = BTreeMap::new();
    for g in &trace.gaps {
        let Some(dev) = trace
            .channels
            .iter()
            .find(|c| c.source == g.source)
            .map(|c| c.spec.device.clone())
        else {
            continue;
        };
        let pid = pid_of(&dev);
        let next = gap_tids.keys().filter(|(p, _)| *p == pid).count() as u32 + 1;
        let tid = *gap_tids
            .entry((pid, g.source.clone()))
            .or_insert_with(|| next);
        if tid == next {
            out.meta(
                "thread_name",
                pid,
                Some(tid),
                json!(format!("gaps: {}", g.source)),
            )?;
        }
        let end = g.end_ns.unwrap_or(end_of_trace).max(g.start_ns);
        out.slice(
            pid,
            tid,
            &Slice {
                name: format!("gap: {}", g.reason),
                start: g.start_ns,
                end,
                args: json!({"source": g.source, "reason": g.reason, "ended": g.end_ns.is_some()}),
            },
        )?;
        stats.slices += 1;
    }

    // Spans and request stages.
    let spans_pid = devices.len() as u32 + 1;
    let marks_pid = spans_pid + 1;
    out.meta("process_name", spans_pid, None, json!("spans"))?;
    out.meta("process_sort_index", spans_pid, None, json!(spans_pid))?;
    for (k, lane) in span_threads(trace, spans, judged).into_iter().enumerate() {
        let tid = k as u32 + 1;
        out.meta("thread_name", spans_pid, Some(tid), json!(lane.name))?;
        out.meta(
            "thread_sort_index",
            spans_pid,
            Some(tid),
            json!(lane.sort_index),
        )?;
        for s in &lane.slices {
            out.slice(spans_pid, tid, s)?;
            stats.slices += 1;
        }
    }

    // Marks: one thread per label.
    out.meta("process_name", marks_pid, None, json!("marks"))?;
    out.meta("process_sort_index", marks_pid, None, json!(marks_pid))?;
    stats.processes += 2;
    let mut label_tid: BTreeMap<&str, u32> = BTreeMap::new();
    for m in &trace.marks {
        let n = label_tid.len() as u32 + 1;
        let tid = *label_tid.entry(m.label.as_str()).or_insert(n);
        if tid == n {
            out.meta("thread_name", marks_pid, Some(tid), json!(m.label))?;
            out.meta("thread_sort_index", marks_pid, Some(tid), json!(tid))?;
        }
        let args = mark_args(m);
        let ev = format!(
            r#"{{"name":{},"cat":"mark","ph":"i","s":"t","ts":{},"pid":{marks_pid},"tid":{tid},"args":{}}}"#,
            Value::String(m.label.clone()),
            us(m.t_ns, origin),
            args
        );
        out.raw(&ev)?;
        stats.instants += 1;
        done += 1;
        if done.is_multiple_of(8192) {
            progress(done, total);
        }
    }
    // Trace events, in time order.
    let mut events: Vec<_> = trace.events.iter().collect();
    events.sort_by_key(|e| e.t_ns);
    for e in events {
        let (name, args) = event_name_args(e);
        let ev = format!(
            r#"{{"name":{},"cat":"trace","ph":"i","s":"g","ts":{},"pid":{marks_pid},"tid":0,"args":{}}}"#,
            Value::String(name),
            us(e.t_ns.max(origin), origin),
            args
        );
        out.raw(&ev)?;
        stats.instants += 1;
    }
    writeln!(out.w, "\n],\"otherData\":{other}}}")?;
    progress(total, total);
    Ok(stats)
}

/// Requests with a thread of their own, at most; past this all spans share packed lanes.
pub const MAX_REQUEST_THREADS: usize = 1000;

/// A thread of the spans process: its name, where it sorts, and its slices.
pub(crate) struct Lane {
    pub(crate) name: String,
    pub(crate) sort_index: u32,
    pub(crate) slices: Vec<Slice>,
}

/// A device's process name: `gpu0 · NVIDIA H200 (nvml)`.
pub(crate) fn device_title(trace: &Trace, dev: &str) -> String {
    let mut name = dev.to_owned();
    let srcs: Vec<_> = trace
        .header
        .sources
        .iter()
        .filter(|s| s.channels.iter().any(|c| c.device == dev))
        .collect();
    if let Some(model) = srcs.iter().find_map(|s| crate::series::model_name(s)) {
        name.push_str(&format!(" · {model}"));
    }
    let mut backends: Vec<&str> = srcs.iter().map(|s| s.backend.as_str()).collect();
    backends.dedup();
    if !backends.is_empty() {
        name.push_str(&format!(" ({})", backends.join(", ")));
    }
    name
}

/// The threads of the spans process: a lane per request (spans, and stages between marks
/// no span uses), more lanes where slices would overlap without nesting, then the machine
/// state (with `judged`).
pub(crate) fn span_threads(
    trace: &Trace,
    spans: &SpanSet,
    judged: Option<&Judgement>,
) -> Vec<Lane> {
    let mut groups: BTreeMap<Option<String>, Vec<Slice>> = BTreeMap::new();
    let mut used = vec![false; trace.marks.len()];
    for (k, s) in spans.spans.iter().enumerate() {
        used[s.marks.0] = true;
        used[s.marks.1] = true;
        let mut args = Map::new();
        args.insert("from".into(), json!(s.from));
        args.insert("to".into(), json!(s.to));
        if let Some(r) = &s.req {
            args.insert("req".into(), json!(r));
        }
        args.insert("duration_ms".into(), json!(s.duration_s() * 1e3));
        if let Some(j) = judged {
            if let Some(v) = j.verdicts.get(k) {
                args.insert("verdict".into(), json!(v.name()));
            }
            if let Some(c) = j.compositions.get(k) {
                args.insert("composition".into(), json!(c));
            }
        }
        groups.entry(s.req.clone()).or_default().push(Slice {
            name: s.name.clone(),
            start: s.start_ns,
            end: s.end_ns,
            args: Value::Object(args),
        });
    }
    let mut by_req: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, m) in trace.marks.iter().enumerate() {
        if let Some(r) = m.req() {
            by_req.entry(r).or_default().push(i);
        }
    }
    for (req, idx) in &by_req {
        if idx.iter().filter(|&&i| !used[i]).count() < 2 {
            continue;
        }
        let g = groups.entry(Some((*req).to_owned())).or_default();
        let first = &trace.marks[idx[0]];
        let last = &trace.marks[*idx.last().expect("two or more")];
        g.push(Slice {
            name: format!("req {req}"),
            start: first.t_ns,
            end: last.t_ns,
            args: json!({"req": req, "from": first.label, "to": last.label,
                         "duration_ms": (last.t_ns - first.t_ns) as f64 / 1e6}),
        });
        for w in idx.windows(2) {
            let (a, b) = (&trace.marks[w[0]], &trace.marks[w[1]]);
            g.push(Slice {
                name: format!("{} → {}", a.label, b.label),
                start: a.t_ns,
                end: b.t_ns,
                args: json!({"req": req, "from": a.label, "to": b.label,
                             "duration_ms": (b.t_ns - a.t_ns) as f64 / 1e6}),
            });
        }
    }
    // Numeric request ids in numeric order.
    let mut keys: Vec<Option<String>> = groups.keys().cloned().collect();
    keys.sort_by_key(|k| match k {
        None => (0, 0, String::new()),
        Some(r) => match r.parse::<u64>() {
            Ok(n) => (1, n, String::new()),
            Err(_) => (2, 0, r.clone()),
        },
    });
    // Beyond a thousand requests a thread each is more than anyone scrolls through (a day
    // of token marks has hundreds of thousands): the slices of all requests then share as
    // few lanes as nest them, each slice naming its request.
    if keys.len() > MAX_REQUEST_THREADS {
        let all: Vec<Slice> = std::mem::take(&mut groups)
            .into_values()
            .flatten()
            .collect();
        keys = vec![None];
        groups.insert(None, all);
    }
    let mut out = Vec::new();
    for k in keys {
        let slices = groups.remove(&k).unwrap_or_default();
        for (lane_no, lane) in into_lanes(slices).into_iter().enumerate() {
            let base = match &k {
                Some(r) => format!("req {r}"),
                None => "spans".to_owned(),
            };
            let name = if lane_no == 0 {
                base
            } else {
                format!("{base} ({})", lane_no + 1)
            };
            let sort_index = out.len() as u32 + 1;
            out.push(Lane {
                name,
                sort_index,
                slices: lane,
            });
        }
    }
    // The state timeline: one more thread of the spans process.
    if let Some(j) = judged.filter(|j| !j.states.is_empty()) {
        out.push(Lane {
            name: "machine state".into(),
            sort_index: 0,
            slices: j
                .states
                .iter()
                .map(|&(a, b, v)| Slice {
                    name: v.name().to_owned(),
                    start: a,
                    end: b,
                    args: json!({"state": v.name()}),
                })
                .collect(),
        });
    }
    out
}

/// A mark's arguments: its fields, how it came, its delay.
pub(crate) fn mark_args(m: &flinch_core::marks::Mark) -> Value {
    let mut args = Map::new();
    for (k, v) in &m.fields {
        args.insert(k.clone(), json!(v));
    }
    args.insert("via".into(), json!(m.via.name()));
    if m.t_from_client {
        args.insert(
            "recv_delay_us".into(),
            json!((m.recv_ns as f64 - m.t_ns as f64) / 1e3),
        );
    } else {
        args.insert("stamped".into(), json!("on receipt (no t=)"));
    }
    Value::Object(args)
}

/// A trace event's name and arguments.
pub(crate) fn event_name_args(e: &flinch_core::trace::TraceEvent) -> (String, Value) {
    let name = match e.kind {
        RowKind::Event => e.label.clone(),
        k => format!("{} {}", k.name(), e.label).trim().to_owned(),
    };
    let mut args = Map::new();
    if !e.channel.is_empty() {
        args.insert("channel".into(), json!(e.channel));
    }
    if let Some(v) = e.value {
        args.insert("value".into(), json!(v));
    }
    if !e.text.is_empty() {
        args.insert("details".into(), json!(e.text));
    }
    (name, Value::Object(args))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn microseconds_keep_nanoseconds() {
        assert_eq!(us(1_000, 0), "1");
        assert_eq!(us(1_500, 0), "1.5");
        assert_eq!(us(1_234_567, 1_000), "1233.567");
        assert_eq!(us(5, 10), "0");
    }

    #[test]
    fn lanes_nest_or_split() {
        let s = |name: &str, start, end| Slice {
            name: name.into(),
            start,
            end,
            args: Value::Null,
        };
        let lanes = into_lanes(vec![
            s("inner", 2, 4),
            s("outer", 0, 10),
            s("cross", 5, 15),
            s("after", 10, 12),
            s("zero", 12, 12),
        ]);
        let names: Vec<Vec<&str>> = lanes
            .iter()
            .map(|l| l.iter().map(|s| s.name.as_str()).collect())
            .collect();
        assert_eq!(
            names,
            vec![vec!["outer", "inner", "after", "zero"], vec!["cross"]]
        );
    }
}

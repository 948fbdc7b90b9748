//! The native Perfetto trace format (protobuf), for recordings too long for trace-event
//! JSON: `flinch export --perfetto run.pftrace`.
//!
//! The messages are written out here from Perfetto's documented schema
//! (`protos/perfetto/trace/trace_packet.proto`, `track_event/track_event.proto`,
//! `track_descriptor.proto`, `counter_descriptor.proto`, `clock_snapshot.proto`,
//! `debug_annotation.proto`, `trace_packet_defaults.proto`), only the fields flinch writes,
//! with their field numbers, and encoded with `prost`. The layout is that of the JSON export
//! ([`crate::perfetto`]): a process per device with a counter track per channel, source gaps
//! as slices; a `spans` process with a thread per request (slices nest or go to another
//! lane) and the machine-state timeline; a `marks` process with a thread per label
//! (instants carrying the marks' fields) and one for trace events.
//!
//! Size: a counter sample is one packet on a sequence of its own track, whose defaults name
//! the track and whose clock counts in ns since the sample before (an incremental,
//! sequence-scoped clock mapped onto `BOOTTIME` by a clock snapshot: the trace's
//! `CLOCK_MONOTONIC` values are shown as they are): about 24 bytes a sample against ~80 in
//! JSON. Past a budget of points ([`PointBudget`]) each counter track is decimated to
//! buckets of equal time keeping the smallest and largest sample of each (both with their
//! own time and value): what a screen shows at any zoom down to a bucket, and no peak lost.

use crate::perfetto::{PerfettoStats, last_ns, origin_ns, unit_key};
use crate::spans::{Judgement, SpanSet};
use flinch_core::trace::Trace;
use prost::Message;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{self, Write};

/// The messages, field numbers as in Perfetto's `.proto` files (proto2; only what flinch
/// writes).
pub mod pb {
    /// `perfetto.protos.Trace`: the file is its encoding, a sequence of field-1 packets.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Trace {
        /// `repeated TracePacket packet = 1;`
        #[prost(message, repeated, tag = "1")]
        pub packet: Vec<TracePacket>,
    }

    /// `perfetto.protos.TracePacket`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TracePacket {
        /// `optional uint64 timestamp = 8;`
        #[prost(uint64, optional, tag = "8")]
        pub timestamp: Option<u64>,
        /// `optional uint32 timestamp_clock_id = 58;`
        #[prost(uint32, optional, tag = "58")]
        pub timestamp_clock_id: Option<u32>,
        /// `uint32 trusted_packet_sequence_id = 10;`
        #[prost(uint32, optional, tag = "10")]
        pub trusted_packet_sequence_id: Option<u32>,
        /// `TrackEvent track_event = 11;`
        #[prost(message, optional, tag = "11")]
        pub track_event: Option<TrackEvent>,
        /// `TrackDescriptor track_descriptor = 60;`
        #[prost(message, optional, tag = "60")]
        pub track_descriptor: Option<TrackDescriptor>,
        /// `ClockSnapshot clock_snapshot = 6;`
        #[prost(message, optional, tag = "6")]
        pub clock_snapshot: Option<ClockSnapshot>,
        /// `optional uint32 sequence_flags = 13;` (1: incremental state cleared, 2: needs
        /// incremental state)
        #[prost(uint32, optional, tag = "13")]
        pub sequence_flags: Option<u32>,
        /// `optional TracePacketDefaults trace_packet_defaults = 59;`
        #[prost(message, optional, tag = "59")]
        pub trace_packet_defaults: Option<TracePacketDefaults>,
        /// `optional bool first_packet_on_sequence = 87;`
        #[prost(bool, optional, tag = "87")]
        pub first_packet_on_sequence: Option<bool>,
        /// `optional InternedData interned_data = 12;`
        #[prost(message, optional, tag = "12")]
        pub interned_data: Option<InternedData>,
    }

    /// `perfetto.protos.InternedData`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct InternedData {
        /// `repeated EventName event_names = 2;`
        #[prost(message, repeated, tag = "2")]
        pub event_names: Vec<InternedString>,
        /// `repeated DebugAnnotationName debug_annotation_names = 3;`
        #[prost(message, repeated, tag = "3")]
        pub debug_annotation_names: Vec<InternedString>,
    }

    /// `perfetto.protos.EventName` and `DebugAnnotationName`: `iid = 1`, `name = 2`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct InternedString {
        /// `optional uint64 iid = 1;`
        #[prost(uint64, optional, tag = "1")]
        pub iid: Option<u64>,
        /// `optional string name = 2;`
        #[prost(string, optional, tag = "2")]
        pub name: Option<String>,
    }

    /// `perfetto.protos.TracePacketDefaults`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TracePacketDefaults {
        /// `optional uint32 timestamp_clock_id = 58;`
        #[prost(uint32, optional, tag = "58")]
        pub timestamp_clock_id: Option<u32>,
        /// `optional TrackEventDefaults track_event_defaults = 11;`
        #[prost(message, optional, tag = "11")]
        pub track_event_defaults: Option<TrackEventDefaults>,
    }

    /// `perfetto.protos.TrackEventDefaults`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TrackEventDefaults {
        /// `optional uint64 track_uuid = 11;`
        #[prost(uint64, optional, tag = "11")]
        pub track_uuid: Option<u64>,
    }

    /// `perfetto.protos.ClockSnapshot`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ClockSnapshot {
        /// `repeated Clock clocks = 1;`
        #[prost(message, repeated, tag = "1")]
        pub clocks: Vec<Clock>,
        /// `optional BuiltinClock primary_trace_clock = 2;`
        #[prost(int32, optional, tag = "2")]
        pub primary_trace_clock: Option<i32>,
    }

    /// `perfetto.protos.ClockSnapshot.Clock`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Clock {
        /// `optional uint32 clock_id = 1;` (6: BOOTTIME; 64–127: sequence-scoped)
        #[prost(uint32, optional, tag = "1")]
        pub clock_id: Option<u32>,
        /// `optional uint64 timestamp = 2;`
        #[prost(uint64, optional, tag = "2")]
        pub timestamp: Option<u64>,
        /// `optional bool is_incremental = 3;`
        #[prost(bool, optional, tag = "3")]
        pub is_incremental: Option<bool>,
    }

    /// `perfetto.protos.TrackDescriptor`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TrackDescriptor {
        /// `optional uint64 uuid = 1;`
        #[prost(uint64, optional, tag = "1")]
        pub uuid: Option<u64>,
        /// `optional uint64 parent_uuid = 5;`
        #[prost(uint64, optional, tag = "5")]
        pub parent_uuid: Option<u64>,
        /// `optional string name = 2;`
        #[prost(string, optional, tag = "2")]
        pub name: Option<String>,
        /// `optional ProcessDescriptor process = 3;`
        #[prost(message, optional, tag = "3")]
        pub process: Option<ProcessDescriptor>,
        /// `optional ThreadDescriptor thread = 4;`
        #[prost(message, optional, tag = "4")]
        pub thread: Option<ThreadDescriptor>,
        /// `optional CounterDescriptor counter = 8;`
        #[prost(message, optional, tag = "8")]
        pub counter: Option<CounterDescriptor>,
    }

    /// `perfetto.protos.ProcessDescriptor`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ProcessDescriptor {
        /// `optional int32 pid = 1;`
        #[prost(int32, optional, tag = "1")]
        pub pid: Option<i32>,
        /// `optional string process_name = 6;`
        #[prost(string, optional, tag = "6")]
        pub process_name: Option<String>,
    }

    /// `perfetto.protos.ThreadDescriptor`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ThreadDescriptor {
        /// `optional int32 pid = 1;`
        #[prost(int32, optional, tag = "1")]
        pub pid: Option<i32>,
        /// `optional int64 tid = 2;`
        #[prost(int64, optional, tag = "2")]
        pub tid: Option<i64>,
        /// `optional string thread_name = 5;`
        #[prost(string, optional, tag = "5")]
        pub thread_name: Option<String>,
    }

    /// `perfetto.protos.CounterDescriptor` (no fields set: a counter track of its own
    /// name).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CounterDescriptor {
        /// `optional bool is_incremental = 5;`
        #[prost(bool, optional, tag = "5")]
        pub is_incremental: Option<bool>,
    }

    /// `perfetto.protos.TrackEvent`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TrackEvent {
        /// `optional Type type = 9;` (1 slice begin, 2 slice end, 3 instant, 4 counter)
        #[prost(int32, optional, tag = "9")]
        pub r#type: Option<i32>,
        /// `optional uint64 track_uuid = 11;`
        #[prost(uint64, optional, tag = "11")]
        pub track_uuid: Option<u64>,
        /// `string name = 23;`
        #[prost(string, optional, tag = "23")]
        pub name: Option<String>,
        /// `uint64 name_iid = 10;` (interned `EventName`)
        #[prost(uint64, optional, tag = "10")]
        pub name_iid: Option<u64>,
        /// `repeated string categories = 22;`
        #[prost(string, repeated, tag = "22")]
        pub categories: Vec<String>,
        /// `double double_counter_value = 44;`
        #[prost(double, optional, tag = "44")]
        pub double_counter_value: Option<f64>,
        /// `repeated DebugAnnotation debug_annotations = 4;`
        #[prost(message, repeated, tag = "4")]
        pub debug_annotations: Vec<DebugAnnotation>,
    }

    /// `perfetto.protos.DebugAnnotation`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct DebugAnnotation {
        /// `string name = 10;`
        #[prost(string, optional, tag = "10")]
        pub name: Option<String>,
        /// `uint64 name_iid = 1;` (interned `DebugAnnotationName`)
        #[prost(uint64, optional, tag = "1")]
        pub name_iid: Option<u64>,
        /// `bool bool_value = 2;`
        #[prost(bool, optional, tag = "2")]
        pub bool_value: Option<bool>,
        /// `int64 int_value = 4;`
        #[prost(int64, optional, tag = "4")]
        pub int_value: Option<i64>,
        /// `double double_value = 5;`
        #[prost(double, optional, tag = "5")]
        pub double_value: Option<f64>,
        /// `string string_value = 6;`
        #[prost(string, optional, tag = "6")]
        pub string_value: Option<String>,
    }

    /// `TrackEvent.Type`.
    pub mod event_type {
        /// `TYPE_SLICE_BEGIN`
        pub const SLICE_BEGIN: i32 = 1;
        /// `TYPE_SLICE_END`
        pub const SLICE_END: i32 = 2;
        /// `TYPE_INSTANT`
        pub const INSTANT: i32 = 3;
        /// `TYPE_COUNTER`
        pub const COUNTER: i32 = 4;
    }

    /// `BuiltinClock.BUILTIN_CLOCK_BOOTTIME`.
    pub const CLOCK_BOOTTIME: u32 = 6;
    /// The sequence-scoped incremental clock each counter sequence defines.
    pub const CLOCK_INCREMENTAL: u32 = 64;
    /// `SEQ_INCREMENTAL_STATE_CLEARED`
    pub const SEQ_INCREMENTAL_STATE_CLEARED: u32 = 1;
    /// `SEQ_NEEDS_INCREMENTAL_STATE`
    pub const SEQ_NEEDS_INCREMENTAL_STATE: u32 = 2;
}

/// How many counter points an export may hold before its counter tracks are decimated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PointBudget {
    /// Every sample.
    Full,
    /// About this many points in all, shared by the tracks in proportion to their samples.
    Total(usize),
}

impl PointBudget {
    /// The default: 3 million points (about 75 MB of protobuf, ~250 MB of JSON).
    pub const DEFAULT: PointBudget = PointBudget::Total(3_000_000);

    /// The most points each channel of `trace` may keep (`None`: all of them).
    pub fn per_channel(self, trace: &Trace) -> Vec<Option<usize>> {
        let total = trace.sample_count();
        match self {
            PointBudget::Total(b) if total > b => trace
                .channels
                .iter()
                .map(|c| {
                    let share = (b as f64 * c.t_ns.len() as f64 / total as f64) as usize;
                    Some(share.max(1000))
                })
                .collect(),
            _ => vec![None; trace.channels.len()],
        }
    }
}

/// The samples to keep of a channel so that about `max_points` remain: buckets of equal
/// time, each keeping its smallest and largest sample, and the first and last sample. Indices
/// in time order; all of them when there are no more than `max_points`.
pub fn decimate(t_ns: &[u64], values: &[f64], max_points: usize) -> Vec<usize> {
    let n = t_ns.len().min(values.len());
    if n <= max_points.max(2) {
        return (0..n).collect();
    }
    let buckets = (max_points / 2).max(1) as u64;
    let (t0, t1) = (t_ns[0], t_ns[n - 1]);
    let width = ((t1 - t0) / buckets).max(1);
    let mut keep = Vec::with_capacity(max_points + 2);
    keep.push(0);
    let mut i = 0;
    while i < n {
        let b = (t_ns[i] - t0) / width;
        let (mut lo, mut hi) = (i, i);
        let mut j = i;
        while j < n && (t_ns[j] - t0) / width == b {
            if values[j] < values[lo] {
                lo = j;
            }
            if values[j] > values[hi] {
                hi = j;
            }
            j += 1;
        }
        let (a, c) = (lo.min(hi), lo.max(hi));
        keep.push(a);
        keep.push(c);
        i = j;
    }
    keep.push(n - 1);
    keep.sort_unstable();
    keep.dedup();
    keep
}

/// The arguments of a slice or instant as debug annotations: numbers, strings and booleans
/// as they are, anything else as its JSON text.
fn annotations(args: &Value) -> Vec<pb::DebugAnnotation> {
    let Value::Object(m) = args else {
        return Vec::new();
    };
    m.iter()
        .map(|(k, v)| {
            let mut a = pb::DebugAnnotation {
                name: Some(k.clone()),
                ..Default::default()
            };
            match v {
                Value::Bool(b) => a.bool_value = Some(*b),
                Value::Number(x) => match x.as_i64() {
                    Some(i) => a.int_value = Some(i),
                    None => a.double_value = x.as_f64(),
                },
                Value::String(s) => a.string_value = Some(s.clone()),
                other => a.string_value = Some(other.to_string()),
            }
            a
        })
        .collect()
}

struct Writer<'w, W: Write> {
    w: &'w mut W,
    buf: Vec<u8>,
}

impl<W: Write> Writer<'_, W> {
    /// Writes one packet as field 1 of `Trace`.
    fn put(&mut self, p: &pb::TracePacket) -> io::Result<()> {
        self.buf.clear();
        self.buf.push(0x0A);
        p.encode_length_delimited(&mut self.buf)
            .map_err(io::Error::other)?;
        self.w.write_all(&self.buf)
    }
}

/// A slice or instant on a thread track, for the time-ordered part of the trace.
struct Ev {
    t: u64,
    /// Slice ends before begins and instants at the same time; longer slices first.
    order: (u8, std::cmp::Reverse<u64>),
    track: u64,
    kind: i32,
    name: Option<String>,
    args: Vec<pb::DebugAnnotation>,
}

/// Writes `trace` in Perfetto's protobuf format, `spans` as slices (with `judged`, their
/// verdicts and compositions and the machine-state timeline), counter tracks decimated to
/// `budget`. `progress(done, total)` as [`crate::perfetto::write_perfetto`] calls it.
pub fn write_perfetto_proto<W: Write>(
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
    let mut out = Writer {
        w,
        buf: Vec::with_capacity(256),
    };
    let mut next_uuid = 1u64;
    let mut uuid = || {
        let u = next_uuid;
        next_uuid += 1;
        u
    };
    let descriptor = |d: pb::TrackDescriptor| pb::TracePacket {
        trusted_packet_sequence_id: Some(1),
        track_descriptor: Some(d),
        ..Default::default()
    };
    let process = |uuid: u64, pid: u32, name: String| pb::TrackDescriptor {
        uuid: Some(uuid),
        process: Some(pb::ProcessDescriptor {
            pid: Some(pid as i32),
            process_name: Some(name),
        }),
        ..Default::default()
    };
    let thread = |uuid: u64, parent: u64, pid: u32, tid: u32, name: String| pb::TrackDescriptor {
        uuid: Some(uuid),
        parent_uuid: Some(parent),
        thread: Some(pb::ThreadDescriptor {
            pid: Some(pid as i32),
            tid: Some(tid as i64),
            thread_name: Some(name),
        }),
        ..Default::default()
    };

    // Devices: a process each, a counter track per channel.
    let mut devices: Vec<String> = Vec::new();
    for c in &trace.channels {
        if !devices.contains(&c.spec.device) {
            devices.push(c.spec.device.clone());
        }
    }
    let mut dev_uuid = Vec::new();
    for (i, dev) in devices.iter().enumerate() {
        let pid = i as u32 + 1;
        let u = uuid();
        dev_uuid.push(u);
        out.put(&descriptor(process(
            u,
            pid,
            crate::perfetto::device_title(trace, dev),
        )))?;
        stats.processes += 1;
    }
    let pid_of = |device: &str| devices.iter().position(|d| d == device).unwrap_or(0);
    let mut counter_uuid = Vec::new();
    for c in &trace.channels {
        let u = uuid();
        counter_uuid.push(u);
        out.put(&descriptor(pb::TrackDescriptor {
            uuid: Some(u),
            parent_uuid: Some(dev_uuid[pid_of(&c.spec.device)]),
            name: Some(format!(
                "{} {}",
                c.spec.name,
                unit_key(c.spec.unit.symbol())
            )),
            counter: Some(pb::CounterDescriptor::default()),
            ..Default::default()
        }))?;
    }

    // Slices and instants on thread tracks, in time order once collected.
    let mut evs: Vec<Ev> = Vec::new();
    let slice = |evs: &mut Vec<Ev>, track: u64, name: String, a: u64, b: u64, args: &Value| {
        let b = b.max(a);
        evs.push(Ev {
            t: a,
            order: (1, std::cmp::Reverse(b - a)),
            track,
            kind: pb::event_type::SLICE_BEGIN,
            name: Some(name),
            args: annotations(args),
        });
        // An end pops the slice on top of its track: ends come before begins at the same
        // time, but a slice of no length ends after it began.
        evs.push(Ev {
            t: b,
            order: (if b > a { 0 } else { 2 }, std::cmp::Reverse(0)),
            track,
            kind: pb::event_type::SLICE_END,
            name: None,
            args: Vec::new(),
        });
    };

    // Gaps: a thread per source in its device's process.
    let end_of_trace = last_ns(trace);
    let mut gap_tracks: BTreeMap<String, u64> = BTreeMap::new();
    let mut tids: BTreeMap<u32, u32> = BTreeMap::new();
    for g in &trace.gaps {
        let Some(dev) = trace
            .channels
            .iter()
            .find(|c| c.source == g.source)
            .map(|c| c.spec.device.clone())
        else {
            continue;
        };
        let di = pid_of(&dev);
        let pid = di as u32 + 1;
        let track = match gap_tracks.get(&g.source) {
            Some(&t) => t,
            None => {
                let tid = tids.entry(pid).or_insert(0);
                *tid += 1;
                let u = uuid();
                out.put(&descriptor(thread(
                    u,
                    dev_uuid[di],
                    pid,
                    *tid,
                    format!("gaps: {}", g.source),
                )))?;
                gap_tracks.insert(g.source.clone(), u);
                u
            }
        };
        let end = g.end_ns.unwrap_or(end_of_trace).max(g.start_ns);
        slice(
            &mut evs,
            track,
            format!("gap: {}", g.reason),
            g.start_ns,
            end,
            &serde_json::json!({"source": g.source, "reason": g.reason, "ended": g.end_ns.is_some()}),
        );
        stats.slices += 1;
    }

    // Spans, request stages and the machine state.
    let spans_pid = devices.len() as u32 + 1;
    let marks_pid = spans_pid + 1;
    let spans_uuid = uuid();
    out.put(&descriptor(process(spans_uuid, spans_pid, "spans".into())))?;
    let lanes = crate::perfetto::span_threads(trace, spans, judged);
    for (tid, lane) in lanes.iter().enumerate() {
        let u = uuid();
        out.put(&descriptor(thread(
            u,
            spans_uuid,
            spans_pid,
            tid as u32 + 1,
            lane.name.clone(),
        )))?;
        for s in &lane.slices {
            // the slice's name and length already say where it runs and how long
            let mut args = s.args.clone();
            if let Value::Object(m) = &mut args {
                for k in ["from", "to", "duration_ms"] {
                    m.remove(k);
                }
            }
            slice(&mut evs, u, s.name.clone(), s.start, s.end, &args);
            stats.slices += 1;
        }
    }

    // Marks: a thread per label; trace events on one more thread.
    let marks_uuid = uuid();
    out.put(&descriptor(process(marks_uuid, marks_pid, "marks".into())))?;
    stats.processes += 2;
    let mut label_track: BTreeMap<&str, u64> = BTreeMap::new();
    for m in &trace.marks {
        let track = match label_track.get(m.label.as_str()) {
            Some(&t) => t,
            None => {
                let u = uuid();
                let tid = label_track.len() as u32 + 1;
                out.put(&descriptor(thread(
                    u,
                    marks_uuid,
                    marks_pid,
                    tid,
                    m.label.clone(),
                )))?;
                label_track.insert(m.label.as_str(), u);
                u
            }
        };
        evs.push(Ev {
            t: m.t_ns,
            order: (0, std::cmp::Reverse(0)),
            track,
            kind: pb::event_type::INSTANT,
            name: Some(m.label.clone()),
            args: annotations(&crate::perfetto::mark_args(m)),
        });
        stats.instants += 1;
        done += 1;
        if done.is_multiple_of(8192) {
            progress(done, total);
        }
    }
    if !trace.events.is_empty() {
        let u = uuid();
        let tid = label_track.len() as u32 + 1;
        out.put(&descriptor(thread(
            u,
            marks_uuid,
            marks_pid,
            tid,
            "trace events".into(),
        )))?;
        for e in &trace.events {
            let (name, args) = crate::perfetto::event_name_args(e);
            evs.push(Ev {
                t: e.t_ns.max(origin),
                order: (0, std::cmp::Reverse(0)),
                track: u,
                kind: pb::event_type::INSTANT,
                name: Some(name),
                args: annotations(&args),
            });
            stats.instants += 1;
        }
    }

    // Counter samples: a sequence per track, timestamps counted from the sample before.
    let caps = budget.per_channel(trace);
    for (k, c) in trace.channels.iter().enumerate() {
        if c.t_ns.is_empty() {
            continue;
        }
        let seq = 2 + k as u32;
        let keep: Vec<usize> = match caps[k] {
            Some(cap) => decimate(&c.t_ns, &c.values, cap),
            None => (0..c.t_ns.len()).collect(),
        };
        let t0 = c.t_ns[keep[0]];
        out.put(&pb::TracePacket {
            timestamp: Some(t0),
            timestamp_clock_id: Some(pb::CLOCK_BOOTTIME),
            trusted_packet_sequence_id: Some(seq),
            sequence_flags: Some(pb::SEQ_INCREMENTAL_STATE_CLEARED),
            first_packet_on_sequence: Some(true),
            clock_snapshot: Some(pb::ClockSnapshot {
                clocks: vec![
                    pb::Clock {
                        clock_id: Some(pb::CLOCK_BOOTTIME),
                        timestamp: Some(t0),
                        is_incremental: None,
                    },
                    pb::Clock {
                        clock_id: Some(pb::CLOCK_INCREMENTAL),
                        timestamp: Some(t0),
                        is_incremental: Some(true),
                    },
                ],
                primary_trace_clock: None,
            }),
            trace_packet_defaults: Some(pb::TracePacketDefaults {
                timestamp_clock_id: Some(pb::CLOCK_INCREMENTAL),
                track_event_defaults: Some(pb::TrackEventDefaults {
                    track_uuid: Some(counter_uuid[k]),
                }),
            }),
            ..Default::default()
        })?;
        let mut prev = t0;
        for &i in &keep {
            let t = c.t_ns[i];
            out.put(&pb::TracePacket {
                timestamp: Some(t - prev),
                trusted_packet_sequence_id: Some(seq),
                sequence_flags: Some(pb::SEQ_NEEDS_INCREMENTAL_STATE),
                track_event: Some(pb::TrackEvent {
                    r#type: Some(pb::event_type::COUNTER),
                    double_counter_value: Some(c.values[i]),
                    ..Default::default()
                }),
                ..Default::default()
            })?;
            prev = t;
            stats.counters += 1;
        }
        done += c.t_ns.len() as u64;
        progress(done, total);
    }

    // The slices and instants, in time order (ends before begins at the same time, the
    // longer of two slices beginning together first, so that they nest), on sequence 1 with
    // its own incremental clock and names interned as they first come.
    evs.sort_by_key(|e| (e.t, e.order));
    if let Some(first) = evs.first() {
        let t0 = first.t;
        out.put(&pb::TracePacket {
            timestamp: Some(t0),
            timestamp_clock_id: Some(pb::CLOCK_BOOTTIME),
            trusted_packet_sequence_id: Some(1),
            sequence_flags: Some(pb::SEQ_INCREMENTAL_STATE_CLEARED),
            clock_snapshot: Some(pb::ClockSnapshot {
                clocks: vec![
                    pb::Clock {
                        clock_id: Some(pb::CLOCK_BOOTTIME),
                        timestamp: Some(t0),
                        is_incremental: None,
                    },
                    pb::Clock {
                        clock_id: Some(pb::CLOCK_INCREMENTAL),
                        timestamp: Some(t0),
                        is_incremental: Some(true),
                    },
                ],
                primary_trace_clock: None,
            }),
            trace_packet_defaults: Some(pb::TracePacketDefaults {
                timestamp_clock_id: Some(pb::CLOCK_INCREMENTAL),
                track_event_defaults: None,
            }),
            ..Default::default()
        })?;
        let mut names: BTreeMap<String, u64> = BTreeMap::new();
        let mut keys: BTreeMap<String, u64> = BTreeMap::new();
        let mut prev = t0;
        for e in evs {
            let mut interned = pb::InternedData::default();
            let intern =
                |m: &mut BTreeMap<String, u64>, s: String, new: &mut Vec<pb::InternedString>| {
                    if let Some(&i) = m.get(&s) {
                        return i;
                    }
                    let i = m.len() as u64 + 1;
                    m.insert(s.clone(), i);
                    new.push(pb::InternedString {
                        iid: Some(i),
                        name: Some(s),
                    });
                    i
                };
            let name_iid = e
                .name
                .map(|n| intern(&mut names, n, &mut interned.event_names));
            let args = e
                .args
                .into_iter()
                .map(|mut a| {
                    if let Some(n) = a.name.take() {
                        a.name_iid =
                            Some(intern(&mut keys, n, &mut interned.debug_annotation_names));
                    }
                    a
                })
                .collect();
            let fresh =
                !interned.event_names.is_empty() || !interned.debug_annotation_names.is_empty();
            out.put(&pb::TracePacket {
                timestamp: Some(e.t - prev),
                trusted_packet_sequence_id: Some(1),
                sequence_flags: Some(pb::SEQ_NEEDS_INCREMENTAL_STATE),
                interned_data: fresh.then_some(interned),
                track_event: Some(pb::TrackEvent {
                    r#type: Some(e.kind),
                    track_uuid: Some(e.track),
                    name_iid,
                    debug_annotations: args,
                    ..Default::default()
                }),
                ..Default::default()
            })?;
            prev = e.t;
        }
    }
    out.w.flush()?;
    progress(total, total);
    Ok(stats)
}

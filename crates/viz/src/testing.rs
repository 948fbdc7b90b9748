//! For tests (feature `testing`): a demo GPU trace written with the real trace writer, and
//! a structural checker of Chrome trace-event JSON following the rules Perfetto's JSON
//! importer applies (docs: `reference/specs.md` §5.1).

use flinch_core::DeviceClass;
use flinch_core::channel::{ChannelSpec, CounterSpec, PowerMethod, Quantity, SourceInfo};
use flinch_core::clock::{ClockAnchor, ManualClock};
use flinch_core::marks::{Mark, MarkVia};
use flinch_core::source::Reading;
use flinch_core::trace::{Footer, Header, TraceWriter};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

/// Start of the demo trace on `CLOCK_MONOTONIC`.
pub const DEMO_T0: u64 = 50_000_000_000;

fn mark(t: u64, label: &str, fields: &[(&str, &str)]) -> Mark {
    Mark {
        t_ns: t,
        recv_ns: t + 150_000,
        t_from_client: true,
        label: label.into(),
        fields: fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        via: MarkVia::Fifo,
    }
}

/// Writes a 12-second GPU trace: driver-sampled power every 20 ms (idle 100 W, busy 400 W),
/// an instant channel, a lagging average, an energy counter, utilisation and SM activity
/// every 100 ms; a calibration window (`calib_start`/`calib_end`), six `phase_start` /
/// `phase_end` spans paired by `req` (busy, idle alternating, 700 ms each), two requests
/// with stage marks (`server_recv`, `enqueue`, `infer_start`, `first_token` and `token
/// n=1` at the same instant, `done`) overlapping in time, two driver samples with the same
/// timestamp, a 300 ms source gap, and an event.
pub fn write_demo_trace(path: &Path) -> std::io::Result<()> {
    let t0 = DEMO_T0;
    let gpu = |what: &str, q: Quantity| ChannelSpec::gauge("gpu0", what, q);
    let sources = vec![
        SourceInfo::new("demo.gpu0.fast", "nvml", DeviceClass::Gpu)
            .with_channels(vec![
                ChannelSpec::power("gpu0", "power_instant", PowerMethod::Instant)
                    .with_update_period_ns(100_000_000),
                ChannelSpec::power(
                    "gpu0",
                    "power_avg1s",
                    PowerMethod::Average { window_ms: 1000 },
                ),
            ])
            .with_attributes([("name".to_string(), "Demo GPU".to_string())].into()),
        SourceInfo::new("demo.gpu0.samples", "nvml", DeviceClass::Gpu).with_channels(vec![
            ChannelSpec::power("gpu0", "power_samples", PowerMethod::DriverSamples)
                .with_update_period_ns(20_000_000),
        ]),
        SourceInfo::new("demo.gpu0.slow", "nvml", DeviceClass::Gpu).with_channels(vec![
            ChannelSpec::energy_counter(
                "gpu0",
                "energy",
                CounterSpec {
                    wrap_range: None,
                    max_rate: Some(1400.0),
                },
            ),
            gpu("util_gpu", Quantity::Utilization),
            gpu("sm_active", Quantity::Activity),
            gpu("sm_clock", Quantity::Clock),
        ]),
    ];
    let anchor = ClockAnchor {
        mono_ns: t0,
        real_ns: 1_795_000_000_000_000_000,
    };
    let mut header = Header::new(10_000_000, anchor, sources);
    header.host = "demo-host".into();
    header.meta.insert("workload".into(), "demo".into());
    let clock = Arc::new(ManualClock::new(t0, anchor.offset_ns()));
    let file = std::fs::File::create(path)?;
    let mut w = TraceWriter::new(file, &header, clock, 1_000_000_000)?;
    // Busy phases: phase k (k = 0..6) runs 2.0 + 0.8 k s .. +0.7 s; even k busy.
    let phase = |k: u64| (t0 + 2_000_000_000 + k * 800_000_000, 700_000_000u64);
    let busy_at = |t: u64| {
        (0..6).step_by(2).any(|k| {
            let (s, d) = phase(k);
            t >= s && t < s + d
        }) || (t >= t0 + 8_000_000_000 && t < t0 + 9_000_000_000)
    };
    let power_at = |t: u64| if busy_at(t) { 400.0 } else { 100.0 };
    let gap = (t0 + 10_000_000_000, t0 + 10_300_000_000);
    let mut energy = 5000.0;
    let mut rows: Vec<(u64, u32, f64)> = Vec::new();
    let mut t = t0;
    while t <= t0 + 12_000_000_000 {
        let in_gap = t >= gap.0 && t < gap.1;
        if !in_gap {
            if (t - t0).is_multiple_of(20_000_000) {
                rows.push((t, 2, power_at(t)));
            }
            if (t - t0).is_multiple_of(100_000_000) {
                rows.push((t, 0, power_at(t) + 5.0));
                rows.push((t, 1, 150.0));
                rows.push((t, 3, energy));
                rows.push((t, 4, if busy_at(t) { 99.0 } else { 0.0 }));
                rows.push((t, 5, if busy_at(t) { 85.5 } else { 0.0 }));
                rows.push((t, 6, 1980.0));
            }
        }
        energy += power_at(t) * 0.01;
        t += 10_000_000;
    }
    // Two driver samples with one timestamp (the CSV must keep both).
    rows.push((t0 + 5_000_000_000, 2, 123.25));
    // The driver buffer delivers late: write its rows out of order, as the recorder does.
    rows.sort_by_key(|r| (r.1 == 2, r.0));
    let mut marks = vec![
        mark(t0 + 300_000_000, "calib_start", &[]),
        mark(t0 + 1_800_000_000, "calib_end", &[]),
    ];
    for k in 0..6u64 {
        let (s, d) = phase(k);
        let req = (k + 1).to_string();
        let kind = if k % 2 == 0 { "busy" } else { "idle" };
        marks.push(mark(s, "phase_start", &[("req", &req), ("kind", kind)]));
        marks.push(mark(s + d, "phase_end", &[("req", &req), ("kind", kind)]));
    }
    // Two overlapping requests with stages; a field value needing CSV quoting.
    for (req, base) in [("r1", t0 + 7_600_000_000), ("r2", t0 + 7_900_000_000)] {
        marks.push(mark(
            base,
            "server_recv",
            &[("req", req), ("note", "a,\"b\"")],
        ));
        marks.push(mark(base + 100_000_000, "enqueue", &[("req", req)]));
        marks.push(mark(base + 400_000_000, "infer_start", &[("req", req)]));
        marks.push(mark(base + 724_000_000, "first_token", &[("req", req)]));
        marks.push(mark(
            base + 724_000_000,
            "token",
            &[("req", req), ("n", "1")],
        ));
        marks.push(mark(base + 1_300_000_000, "done", &[("req", req)]));
    }
    marks.sort_by_key(|m| m.t_ns);
    let mut mi = 0;
    for (t, ch, v) in rows {
        while mi < marks.len() && marks[mi].t_ns <= t {
            w.mark(&marks[mi])?;
            mi += 1;
        }
        if t == gap.0 - 20_000_000 && ch == 2 {
            w.gap(gap.0, "demo.gpu0.samples", true, "transient: demo gap")?;
            w.gap(gap.1, "demo.gpu0.samples", false, "")?;
        }
        w.sample(&Reading {
            channel: ch,
            t_ns: t,
            value: v,
        })?;
    }
    for m in &marks[mi..] {
        w.mark(m)?;
    }
    w.event(t0 + 50_000_000, "command_start", "pid=1 python demo.py")?;
    let footer = Footer {
        complete: true,
        ended_by: "duration".into(),
        end_anchor: ClockAnchor {
            mono_ns: t0 + 12_000_000_000,
            real_ns: anchor.real_ns + 12_000_000_000,
        },
        ..Default::default()
    };
    w.finish(footer)?;
    Ok(())
}

/// Writes a 6-second trace of the `cpu` backend only (no power channel at all), as
/// `flinch record --source cpu -- python3 prog.py` makes: host utilisation and busy time,
/// and the process tree's CPU time, polled every 20 ms and counted in 10 ms ticks. Six
/// `task_start`/`task_end` spans (req 0..5, `kind=cpu` or `kind=sleep`) start every 0.9 s
/// from 0.5 s and last [`CPU_TASK_MS`]; during the `cpu` ones (even req) the process tree
/// keeps one core busy, otherwise it uses none.
pub fn write_cpu_trace(path: &Path) -> std::io::Result<()> {
    let t0 = DEMO_T0;
    let counter = CounterSpec {
        wrap_range: None,
        max_rate: Some(8.0),
    };
    let sources = vec![
        SourceInfo::new("cpu.host", "cpu", DeviceClass::Cpu)
            .with_channels(vec![
                ChannelSpec::gauge("host", "cpu_util", Quantity::Utilization)
                    .with_update_period_ns(10_000_000),
                ChannelSpec::counter("host", "cpu_busy_s", Quantity::CpuTime, counter)
                    .with_update_period_ns(10_000_000),
            ])
            .with_attribute("cpus", "8"),
        SourceInfo::new("cpu.proc", "cpu", DeviceClass::Cpu)
            .with_channels(vec![
                ChannelSpec::counter("proc", "cpu_time", Quantity::CpuTime, counter)
                    .with_update_period_ns(10_000_000),
            ])
            .with_scope(flinch_core::Scope::ProcessTree)
            .with_attribute("root", "4242"),
    ];
    let anchor = ClockAnchor {
        mono_ns: t0,
        real_ns: 1_795_000_000_000_000_000,
    };
    let mut header = Header::new(20_000_000, anchor, sources);
    header.host = "cpu-host".into();
    let clock = Arc::new(ManualClock::new(t0, anchor.offset_ns()));
    let file = std::fs::File::create(path)?;
    let mut w = TraceWriter::new(file, &header, clock, 1_000_000_000)?;
    let task = |i: u64| {
        (
            t0 + 500_000_000 + i * 900_000_000,
            CPU_TASK_MS[i as usize] * 1_000_000,
        )
    };
    let busy_at = |t: u64| {
        (0..6).step_by(2).any(|i| {
            let (s, d) = task(i);
            t >= s && t < s + d
        })
    };
    let mut marks = Vec::new();
    for i in 0..6u64 {
        let (s, d) = task(i);
        let req = i.to_string();
        let kind = if i % 2 == 0 { "cpu" } else { "sleep" };
        marks.push(mark(s, "task_start", &[("req", &req), ("kind", kind)]));
        marks.push(mark(s + d, "task_end", &[("req", &req), ("kind", kind)]));
    }
    let mut mi = 0;
    let (mut host_ticks, mut proc_ticks) = (0u64, 0u64);
    let mut t = t0;
    while t <= t0 + 6_000_000_000 {
        while mi < marks.len() && marks[mi].t_ns <= t {
            w.mark(&marks[mi])?;
            mi += 1;
        }
        // Two 10 ms ticks per 20 ms poll: the host has a background of 1 tick in 4 busy.
        let busy = busy_at(t);
        if busy {
            proc_ticks += 2;
        }
        host_ticks += if busy { 2 } else { 0 } + u64::from((t - t0).is_multiple_of(40_000_000));
        let util = if busy { 100.0 / 8.0 + 3.0 } else { 3.0 };
        for (ch, v) in [
            (0, util),
            (1, host_ticks as f64 / 100.0),
            (2, proc_ticks as f64 / 100.0),
        ] {
            w.sample(&Reading {
                channel: ch,
                t_ns: t,
                value: v,
            })?;
        }
        t += 20_000_000;
    }
    w.finish(Footer {
        complete: true,
        ended_by: "command".into(),
        end_anchor: ClockAnchor {
            mono_ns: t0 + 6_000_000_000,
            real_ns: anchor.real_ns + 6_000_000_000,
        },
        ..Default::default()
    })?;
    Ok(())
}

/// How long the tasks of [`write_cpu_trace`] last, in ms (two share a histogram bin).
pub const CPU_TASK_MS: [u64; 6] = [600, 610, 600, 605, 640, 601];

/// What a trace-event file holds, as seen by [`check_trace_events`].
#[derive(Clone, Debug, Default)]
pub struct TraceEventsSummary {
    /// Events per phase letter.
    pub phases: BTreeMap<String, usize>,
    /// Counter track names as Perfetto forms them (`<name> <arg key>`), with their pid.
    pub counter_tracks: BTreeSet<(u64, String)>,
    /// Counter values per track, in file order.
    pub counter_values: BTreeMap<String, Vec<(f64, f64)>>,
    /// process_name per pid.
    pub process_names: BTreeMap<u64, String>,
    /// thread_name per (pid, tid).
    pub thread_names: BTreeMap<(u64, u64), String>,
    /// Complete slices: (pid, tid, name, ts, dur).
    pub slices: Vec<(u64, u64, String, f64, f64)>,
    /// Instants: (name, ts, args).
    pub instants: Vec<(String, f64, Value)>,
}

/// Checks Chrome trace-event JSON structurally: every event has the fields its phase
/// needs, counters are numeric and non-empty, instants have a valid scope, metadata is one
/// of the four kinds Perfetto reads, timestamps are non-decreasing per track, and complete
/// slices on one thread nest. Returns what it saw, or every problem found (at most 20).
pub fn check_trace_events(json: &str) -> Result<TraceEventsSummary, String> {
    let v: Value = serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
    let events = match &v {
        Value::Array(a) => a,
        Value::Object(o) => o
            .get("traceEvents")
            .and_then(Value::as_array)
            .ok_or("the object has no traceEvents array")?,
        _ => return Err("neither an array nor an object".into()),
    };
    let mut errs: Vec<String> = Vec::new();
    let mut s = TraceEventsSummary::default();
    let mut last_ts: BTreeMap<String, f64> = BTreeMap::new();
    let mut open: BTreeMap<(u64, u64), Vec<i64>> = BTreeMap::new();
    for (i, e) in events.iter().enumerate() {
        let mut bad = |m: String| {
            if errs.len() < 20 {
                errs.push(format!("event {i}: {m}: {e}"));
            }
        };
        let Some(o) = e.as_object() else {
            bad("not an object".into());
            continue;
        };
        let ph = o.get("ph").and_then(Value::as_str).unwrap_or("");
        let name = o.get("name").and_then(Value::as_str);
        let pid = o.get("pid").and_then(Value::as_u64);
        let tid = o.get("tid").and_then(Value::as_u64);
        let ts = o.get("ts").and_then(Value::as_f64);
        *s.phases.entry(ph.to_owned()).or_default() += 1;
        let Some(name) = name else {
            bad("no name".into());
            continue;
        };
        let Some(pid) = pid else {
            bad("no integer pid".into());
            continue;
        };
        if ph != "M" && !ts.is_some_and(|t| t.is_finite() && t >= 0.0) {
            bad("no ts ≥ 0 (µs)".into());
            continue;
        }
        let ts = ts.unwrap_or(0.0);
        let mut order = |track: String, bad: &mut dyn FnMut(String)| {
            if let Some(&prev) = last_ts.get(&track)
                && ts < prev
            {
                bad(format!("ts {ts} goes back on track {track} (was {prev})"));
            }
            last_ts.insert(track, ts);
        };
        match ph {
            "C" => {
                let Some(args) = o.get("args").and_then(Value::as_object) else {
                    bad("counter without args".into());
                    continue;
                };
                if args.is_empty() {
                    bad("counter with empty args (Perfetto rejects it)".into());
                }
                for (k, val) in args {
                    let track = format!("{name} {k}");
                    match val.as_f64() {
                        Some(x) if x.is_finite() => {
                            s.counter_values
                                .entry(track.clone())
                                .or_default()
                                .push((ts, x));
                        }
                        _ => bad(format!("counter value {k}={val} is not a number")),
                    }
                    s.counter_tracks.insert((pid, track.clone()));
                    order(format!("C/{pid}/{track}"), &mut bad);
                }
            }
            "X" => {
                let Some(tid) = tid else {
                    bad("slice without tid".into());
                    continue;
                };
                let Some(dur) = o.get("dur").and_then(Value::as_f64).filter(|d| *d >= 0.0) else {
                    bad("complete slice without dur ≥ 0".into());
                    continue;
                };
                order(format!("T/{pid}/{tid}"), &mut bad);
                // In integer ns, as Perfetto converts each µs value (ts × 1000).
                let (start, end) = (
                    (ts * 1e3).round() as i64,
                    ((ts * 1e3).round() + (dur * 1e3).round()) as i64,
                );
                let stack = open.entry((pid, tid)).or_default();
                while stack.last().is_some_and(|&e| e <= start) {
                    stack.pop();
                }
                if let Some(&parent_end) = stack.last()
                    && end > parent_end
                {
                    bad(format!(
                        "slice [{ts}, {}] µs overlaps its parent ending at {} µs without nesting",
                        ts + dur,
                        parent_end as f64 / 1e3
                    ));
                }
                stack.push(end);
                s.slices.push((pid, tid, name.to_owned(), ts, dur));
            }
            "i" | "I" => {
                let scope = o.get("s").and_then(Value::as_str).unwrap_or("t");
                match scope {
                    "g" => order("G".into(), &mut bad),
                    "p" => order(format!("P/{pid}"), &mut bad),
                    "t" => match tid {
                        Some(tid) => order(format!("T/{pid}/{tid}"), &mut bad),
                        None => bad("thread-scoped instant without tid".into()),
                    },
                    other => bad(format!("instant scope {other:?} is not g, p or t")),
                }
                s.instants.push((
                    name.to_owned(),
                    ts,
                    o.get("args").cloned().unwrap_or(Value::Null),
                ));
            }
            "M" => {
                let args = o.get("args").and_then(Value::as_object);
                match name {
                    "process_name" | "thread_name" => {
                        let Some(n) = args.and_then(|a| a.get("name")).and_then(Value::as_str)
                        else {
                            bad("name metadata without args.name".into());
                            continue;
                        };
                        if name == "process_name" {
                            s.process_names.insert(pid, n.to_owned());
                        } else {
                            match tid {
                                Some(t) => {
                                    s.thread_names.insert((pid, t), n.to_owned());
                                }
                                None => bad("thread_name without tid".into()),
                            }
                        }
                    }
                    "process_sort_index" | "thread_sort_index" => {
                        if args
                            .and_then(|a| a.get("sort_index"))
                            .and_then(Value::as_i64)
                            .is_none()
                        {
                            bad("sort index metadata without integer args.sort_index".into());
                        }
                    }
                    other => bad(format!("metadata {other:?} is not read by Perfetto")),
                }
            }
            other => bad(format!("phase {other:?} is not one flinch writes")),
        }
    }
    if errs.is_empty() {
        Ok(s)
    } else {
        Err(errs.join("\n"))
    }
}

/// What [`check_perfetto_proto`] saw in a Perfetto protobuf trace.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProtoSummary {
    /// Packets.
    pub packets: usize,
    /// Process names by pid.
    pub process_names: BTreeMap<i32, String>,
    /// Thread names by (pid, tid).
    pub thread_names: BTreeMap<(i32, i64), String>,
    /// Per counter track name: (absolute time ns, value), in file order.
    pub counters: BTreeMap<String, Vec<(u64, f64)>>,
    /// Slices: (thread name, slice name, start ns, end ns), in order of their ends.
    pub slices: Vec<(String, String, u64, u64)>,
    /// Instants: (thread name, name, time ns, annotations as name → text).
    pub instants: Vec<(String, String, u64, BTreeMap<String, String>)>,
}

/// Checks a trace in Perfetto's protobuf format the way its importer reads it: the file
/// decodes as `Trace`; every track is declared once, before its events, with a parent that
/// is declared (a counter track's a process, a thread's its process with the same pid);
/// counter values only on counter tracks, slices and instants only on others; a packet on a
/// sequence-scoped clock (64–127) comes after that sequence's clock snapshot, and with an
/// incremental clock its time is the sum of the deltas since it; on each track, in time
/// order (file order among equals), every slice end closes an open slice and none is left
/// open. Returns what it saw, with absolute times, or the problems (at most 20).
pub fn check_perfetto_proto(bytes: &[u8]) -> Result<ProtoSummary, String> {
    use crate::perfetto_proto::pb;
    use prost::Message;
    let trace = pb::Trace::decode(bytes).map_err(|e| format!("not a Perfetto trace: {e}"))?;
    let mut problems: Vec<String> = Vec::new();
    let mut bad = |p: String| {
        if problems.len() < 20 {
            problems.push(p)
        }
    };
    let mut s = ProtoSummary {
        packets: trace.packet.len(),
        ..Default::default()
    };
    // uuid → (name, kind: 0 process, 1 thread, 2 counter, pid)
    let mut tracks: BTreeMap<u64, (String, u8, i32)> = BTreeMap::new();
    // sequence → (defaults' clock, defaults' track, incremental clock's last time)
    #[derive(Default)]
    struct Seq {
        clock: Option<u32>,
        track: Option<u64>,
        incremental: BTreeMap<u32, u64>,
        names: BTreeMap<u64, String>,
        keys: BTreeMap<u64, String>,
    }
    let mut seqs: BTreeMap<u32, Seq> = BTreeMap::new();
    /// (time, file order, track, kind, name, annotations)
    type Event = (u64, usize, u64, i32, String, BTreeMap<String, String>);
    let mut events: Vec<Event> = Vec::new();
    for (i, p) in trace.packet.iter().enumerate() {
        let seq_id = p.trusted_packet_sequence_id.unwrap_or(0);
        if seq_id == 0 {
            bad(format!("packet {i}: no trusted_packet_sequence_id"));
        }
        let seq = seqs.entry(seq_id).or_default();
        if let Some(cs) = &p.clock_snapshot {
            for c in &cs.clocks {
                if let (Some(id), Some(t)) = (c.clock_id, c.timestamp)
                    && id >= 64
                {
                    seq.incremental.insert(id, t);
                    if c.is_incremental != Some(true) {
                        bad(format!("packet {i}: clock {id} is not incremental"));
                    }
                }
            }
        }
        if let Some(d) = &p.interned_data {
            for n in &d.event_names {
                seq.names
                    .insert(n.iid.unwrap_or(0), n.name.clone().unwrap_or_default());
            }
            for n in &d.debug_annotation_names {
                seq.keys
                    .insert(n.iid.unwrap_or(0), n.name.clone().unwrap_or_default());
            }
        }
        if let Some(d) = &p.trace_packet_defaults {
            seq.clock = d.timestamp_clock_id;
            seq.track = d.track_event_defaults.as_ref().and_then(|t| t.track_uuid);
        }
        if let Some(d) = &p.track_descriptor {
            let Some(u) = d.uuid else {
                bad(format!("packet {i}: a track without uuid"));
                continue;
            };
            let parent = d.parent_uuid.map(|pu| tracks.get(&pu).cloned());
            let entry = if let Some(pr) = &d.process {
                (
                    pr.process_name.clone().unwrap_or_default(),
                    0,
                    pr.pid.unwrap_or(0),
                )
            } else if let Some(th) = &d.thread {
                let name = th.thread_name.clone().unwrap_or_default();
                let pid = th.pid.unwrap_or(0);
                match &parent {
                    Some(Some((_, 0, ppid))) if *ppid == pid => {}
                    _ => bad(format!("packet {i}: thread {name:?} without its process")),
                }
                s.thread_names
                    .insert((pid, th.tid.unwrap_or(0)), name.clone());
                (name, 1, pid)
            } else if d.counter.is_some() {
                if !matches!(parent, Some(Some((_, 0, _)))) {
                    bad(format!(
                        "packet {i}: counter track {:?} without a process",
                        d.name
                    ));
                }
                (d.name.clone().unwrap_or_default(), 2, 0)
            } else {
                (d.name.clone().unwrap_or_default(), 1, 0)
            };
            if entry.1 == 0 {
                s.process_names.insert(entry.2, entry.0.clone());
            }
            if tracks.insert(u, entry).is_some() {
                bad(format!("packet {i}: track {u} declared twice"));
            }
            continue;
        }
        let Some(ev) = &p.track_event else {
            continue;
        };
        // the time: sequence-scoped clocks need their snapshot first
        let clock = p.timestamp_clock_id.or(seq.clock).unwrap_or(6);
        let raw = p.timestamp.unwrap_or(0);
        let t = if clock >= 64 {
            match seq.incremental.get_mut(&clock) {
                Some(last) => {
                    *last += raw;
                    *last
                }
                None => {
                    bad(format!("packet {i}: clock {clock} before its snapshot"));
                    raw
                }
            }
        } else {
            raw
        };
        let Some(track) = ev.track_uuid.or(seq.track) else {
            bad(format!("packet {i}: an event without a track"));
            continue;
        };
        let Some((tname, kind, _)) = tracks.get(&track).cloned() else {
            bad(format!(
                "packet {i}: track {track} used before it is declared"
            ));
            continue;
        };
        let ty = ev.r#type.unwrap_or(0);
        if (ty == pb::event_type::COUNTER) != (kind == 2) {
            bad(format!(
                "packet {i}: event type {ty} on track {tname:?} (counter track: {})",
                kind == 2
            ));
            continue;
        }
        if ty == pb::event_type::COUNTER {
            match ev.double_counter_value {
                Some(v) if v.is_finite() => s.counters.entry(tname).or_default().push((t, v)),
                _ => bad(format!(
                    "packet {i}: a counter event without a finite value"
                )),
            }
            continue;
        }
        let args = ev
            .debug_annotations
            .iter()
            .map(|a| {
                let v = a
                    .string_value
                    .clone()
                    .or(a.int_value.map(|x| x.to_string()))
                    .or(a.double_value.map(|x| x.to_string()))
                    .or(a.bool_value.map(|x| x.to_string()))
                    .unwrap_or_default();
                let name = match (a.name.clone(), a.name_iid) {
                    (Some(n), _) => n,
                    (None, Some(iid)) => seq
                        .keys
                        .get(&iid)
                        .cloned()
                        .unwrap_or_else(|| format!("?{iid}")),
                    _ => String::new(),
                };
                (name, v)
            })
            .collect::<BTreeMap<String, String>>();
        if args.keys().any(|k| k.starts_with('?')) {
            bad(format!("packet {i}: an annotation name interned nowhere"));
        }
        let name = match (ev.name.clone(), ev.name_iid) {
            (Some(n), _) => n,
            (None, Some(iid)) => match seq.names.get(&iid) {
                Some(n) => n.clone(),
                None => {
                    bad(format!("packet {i}: event name {iid} interned nowhere"));
                    String::new()
                }
            },
            _ => String::new(),
        };
        events.push((t, i, track, ty, name, args));
    }
    // slices per track, in time order (file order among equals)
    events.sort_by_key(|e| (e.0, e.1));
    let mut open: BTreeMap<u64, Vec<(String, u64)>> = BTreeMap::new();
    for (t, i, track, ty, name, args) in events {
        let tname = tracks.get(&track).map(|x| x.0.clone()).unwrap_or_default();
        match ty {
            pb::event_type::SLICE_BEGIN => open.entry(track).or_default().push((name, t)),
            pb::event_type::SLICE_END => match open.entry(track).or_default().pop() {
                Some((n, a)) => s.slices.push((tname, n, a, t)),
                None => bad(format!(
                    "packet {i}: a slice end on {tname:?} with none open"
                )),
            },
            pb::event_type::INSTANT => s.instants.push((tname, name, t, args)),
            other => bad(format!("packet {i}: event type {other}")),
        }
    }
    for (track, o) in open {
        if !o.is_empty() {
            bad(format!(
                "{} slice(s) never closed on track {track}",
                o.len()
            ));
        }
    }
    if problems.is_empty() {
        Ok(s)
    } else {
        Err(problems.join("\n"))
    }
}

//! The exports for long recordings: Perfetto's protobuf format (checked the way its
//! importer reads it, and against the JSON export of the same trace), decimation of counter
//! tracks, and Parquet read back with the `parquet` crate.

use arrow_array::Array;
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, UInt64Type};
use flinch_core::trace::{Trace, read_trace};
use flinch_viz::perfetto_proto::{PointBudget, decimate, pb, write_perfetto_proto};
use flinch_viz::spans::{SpanSpec, find_spans, judge};
use flinch_viz::testing::{check_perfetto_proto, check_trace_events, write_demo_trace};
use flinch_viz::{parquet_export, perfetto};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::collections::BTreeMap;
use std::path::Path;

fn demo() -> (tempfile::TempDir, Trace) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("demo.flinch.csv");
    write_demo_trace(&p).unwrap();
    (dir, read_trace(&p).unwrap())
}

/// A channel's counter track as the export names it (`value` for unitless channels).
fn track(c: &flinch_core::trace::ChannelData) -> String {
    let unit = match c.spec.unit.symbol() {
        "1" | "" => "value",
        u => u,
    };
    format!("{} {unit}", c.spec.name)
}

fn proto(t: &Trace, budget: PointBudget) -> Vec<u8> {
    let spans = find_spans(t, &SpanSpec::Auto).unwrap();
    let mut out = Vec::new();
    write_perfetto_proto(t, &spans, None, budget, &mut out, &mut |_, _| {}).unwrap();
    out
}

#[test]
fn protobuf_holds_every_sample_and_the_slices_and_marks_of_the_json_export() {
    let (_d, t) = demo();
    let spans = find_spans(&t, &SpanSpec::Auto).unwrap();
    let s = check_perfetto_proto(&proto(&t, PointBudget::Full)).unwrap();
    for c in &t.channels {
        let got = &s.counters[&track(c)];
        let want: Vec<(u64, f64)> = c
            .t_ns
            .iter()
            .copied()
            .zip(c.values.iter().copied())
            .collect();
        assert_eq!(got, &want, "{}", c.spec.name);
    }
    let mut json = Vec::new();
    perfetto::write_perfetto(&t, &spans, &mut json, &mut |_, _| {}).unwrap();
    let j = check_trace_events(std::str::from_utf8(&json).unwrap()).unwrap();
    // The same slices (name, start, length) on threads of the same names.
    let origin = perfetto::origin_ns(&t) as f64;
    let mut from_json: Vec<(String, String, u64, u64)> = j
        .slices
        .iter()
        .map(|(pid, tid, name, ts, dur)| {
            let a = (origin + ts * 1e3).round() as u64;
            (
                j.thread_names[&(*pid, *tid)].clone(),
                name.clone(),
                a,
                a + (dur * 1e3).round() as u64,
            )
        })
        .collect();
    let mut from_proto = s.slices.clone();
    from_json.sort();
    from_proto.sort();
    assert!(!from_proto.is_empty());
    assert_eq!(from_proto, from_json);
    // Every mark, as an instant on its label's thread, with its fields.
    let marks: Vec<_> = s
        .instants
        .iter()
        .filter(|i| i.0 != "trace events")
        .collect();
    assert_eq!(marks.len(), t.marks.len());
    for (m, i) in t.marks.iter().zip(&marks) {
        assert_eq!((&i.0, &i.1, i.2), (&m.label, &m.label, m.t_ns));
        for (k, v) in &m.fields {
            assert_eq!(i.3.get(k), Some(v), "{k}");
        }
    }
    assert!(s.process_names.values().any(|n| n == "spans"));
}

#[test]
fn the_checker_finds_what_the_importer_would_refuse() {
    use prost::Message;
    let (_d, t) = demo();
    let good = proto(&t, PointBudget::Full);
    let mut tr = pb::Trace::decode(&good[..]).unwrap();
    // A slice end with nothing open.
    let end = tr
        .packet
        .iter()
        .position(|p| {
            p.track_event
                .as_ref()
                .is_some_and(|e| e.r#type == Some(pb::event_type::SLICE_BEGIN))
        })
        .unwrap();
    let mut bad = tr.clone();
    bad.packet.remove(end);
    let e = check_perfetto_proto(&bad.encode_to_vec()).unwrap_err();
    assert!(e.contains("none open"), "{e}");
    // A track used before it is declared.
    let first_desc = tr
        .packet
        .iter()
        .position(|p| p.track_descriptor.is_some())
        .unwrap();
    let d = tr.packet.remove(first_desc + 1);
    tr.packet.push(d);
    let e = check_perfetto_proto(&tr.encode_to_vec()).unwrap_err();
    assert!(
        e.contains("before it is declared") || e.contains("without"),
        "{e}"
    );
    // An incremental clock used before its snapshot.
    let mut tr = pb::Trace::decode(&good[..]).unwrap();
    for p in &mut tr.packet {
        p.clock_snapshot = None;
    }
    let e = check_perfetto_proto(&tr.encode_to_vec()).unwrap_err();
    assert!(e.contains("before its snapshot"), "{e}");
    assert!(check_perfetto_proto(b"\x0a\xff\xff\xff").is_err());
}

#[test]
fn decimation_keeps_each_buckets_extremes_the_ends_and_no_more_than_asked() {
    // 100 000 samples of a slow wave with one spike of one sample.
    let t: Vec<u64> = (0..100_000u64).map(|i| 1_000 + i * 1_000).collect();
    let mut v: Vec<f64> = (0..100_000)
        .map(|i| ((i as f64) / 5000.0).sin() * 10.0)
        .collect();
    v[77_777] = 500.0;
    let keep = decimate(&t, &v, 2000);
    assert!(keep.len() <= 2002, "{}", keep.len());
    assert!(keep.len() >= 1000, "{}", keep.len());
    assert!(keep.windows(2).all(|w| w[0] < w[1]));
    assert_eq!((keep[0], *keep.last().unwrap()), (0, 99_999));
    assert!(keep.contains(&77_777), "the spike survives");
    // every bucket's min and max are kept
    let width = (t[99_999] - t[0]) / 1000;
    let mut buckets: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for i in 0..t.len() {
        buckets.entry((t[i] - t[0]) / width).or_default().push(i);
    }
    for idx in buckets.values() {
        let lo = idx
            .iter()
            .copied()
            .min_by(|a, b| v[*a].total_cmp(&v[*b]))
            .unwrap();
        let hi = idx
            .iter()
            .copied()
            .max_by(|a, b| v[*a].total_cmp(&v[*b]))
            .unwrap();
        assert!(keep.contains(&lo) || idx.iter().any(|i| keep.contains(i) && v[*i] == v[lo]));
        assert!(keep.contains(&hi) || idx.iter().any(|i| keep.contains(i) && v[*i] == v[hi]));
    }
    // fewer samples than asked: all of them
    assert_eq!(
        decimate(&t[..10], &v[..10], 2000),
        (0..10).collect::<Vec<_>>()
    );
    // through the export: a budget of 3000 points over a shipped trace (a track keeps at
    // least 1000)
    let tr = read_trace(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/workloads/busy-idle.flinch.csv"),
    )
    .unwrap();
    let s = check_perfetto_proto(&proto(&tr, PointBudget::Total(3000))).unwrap();
    let kept: usize = s.counters.values().map(Vec::len).sum();
    assert!(kept < tr.sample_count(), "{kept} of {}", tr.sample_count());
    for c in tr.channels.iter().filter(|c| !c.t_ns.is_empty()) {
        let got = &s.counters[&track(c)];
        let max = c.values.iter().copied().fold(f64::MIN, f64::max);
        assert!(
            got.iter().any(|x| x.1 == max),
            "{}: the peak is kept",
            c.spec.name
        );
        for (tt, vv) in got {
            let i = c.t_ns.binary_search(tt).expect("a real sample time");
            assert_eq!(c.values[i], *vv);
        }
    }
}

#[test]
fn the_shipped_examples_export_as_protobuf_that_passes_the_checks() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    for p in [
        "llm/llm.flinch.csv",
        "workloads/busy-idle.flinch.csv",
        "llm-gpu/llm-gpu.flinch.csv",
    ] {
        let t = read_trace(&root.join(p)).unwrap();
        let spans = find_spans(&t, &SpanSpec::Auto).unwrap();
        let idle = flinch_viz::idle::Idle::from_window(&t, "calib_start..calib_end")
            .unwrap()
            .0;
        let judged = judge(&t, &spans, Some(&idle), t.time_range_ns());
        let mut out = Vec::new();
        write_perfetto_proto(
            &t,
            &spans,
            Some(&judged),
            PointBudget::DEFAULT,
            &mut out,
            &mut |_, _| {},
        )
        .unwrap();
        let s = check_perfetto_proto(&out).unwrap_or_else(|e| panic!("{p}: {e}"));
        let n: usize = s.counters.values().map(Vec::len).sum();
        assert_eq!(n, t.sample_count(), "{p}: every sample (under the budget)");
        assert!(s.slices.iter().any(|x| x.0 == "machine state"), "{p}");
        // well under half the size of the JSON
        let mut json = Vec::new();
        perfetto::write_perfetto_judged(&t, &spans, Some(&judged), &mut json, &mut |_, _| {})
            .unwrap();
        assert!(
            out.len() * 2 < json.len(),
            "{p}: {} vs {} bytes",
            out.len(),
            json.len()
        );
    }
}

#[test]
fn parquet_reads_back_every_sample_mark_and_span() {
    let (d, t) = demo();
    let spans = find_spans(&t, &SpanSpec::Auto).unwrap();
    let read = |path: &Path| -> Vec<arrow_array::RecordBatch> {
        let f = std::fs::File::open(path).unwrap();
        ParquetRecordBatchReaderBuilder::try_new(f)
            .unwrap()
            .build()
            .unwrap()
            .map(|b| b.unwrap())
            .collect()
    };
    let sp = d.path().join("samples.parquet");
    parquet_export::write_samples(&t, std::fs::File::create(&sp).unwrap(), &mut |_, _| {}).unwrap();
    let mut got: BTreeMap<String, Vec<(u64, f64)>> = BTreeMap::new();
    for b in read(&sp) {
        let tt = b.column(0).as_primitive::<UInt64Type>();
        let ch =
            arrow_array::cast::as_dictionary_array::<arrow_array::types::UInt16Type>(b.column(1));
        let names = ch.values().as_string::<i32>();
        let vv = b.column(5).as_primitive::<Float64Type>();
        for i in 0..b.num_rows() {
            let name = names.value(ch.keys().value(i) as usize).to_owned();
            got.entry(name)
                .or_default()
                .push((tt.value(i), vv.value(i)));
        }
    }
    for c in &t.channels {
        let want: Vec<(u64, f64)> = c
            .t_ns
            .iter()
            .copied()
            .zip(c.values.iter().copied())
            .collect();
        assert_eq!(got[&c.spec.name], want, "{}", c.spec.name);
    }
    let mp = d.path().join("marks.parquet");
    parquet_export::write_marks(&t, std::fs::File::create(&mp).unwrap()).unwrap();
    let b = read(&mp);
    let rows: usize = b.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, t.marks.len());
    let req = b[0].column(3).as_string::<i32>();
    assert_eq!(
        (0..b[0].num_rows())
            .map(|i| (!req.is_null(i)).then(|| req.value(i).to_owned()))
            .collect::<Vec<_>>(),
        t.marks
            .iter()
            .map(|m| m.req().map(str::to_owned))
            .collect::<Vec<_>>()
    );
    let ssp = d.path().join("spans.parquet");
    parquet_export::write_spans(&t, &spans, None, std::fs::File::create(&ssp).unwrap()).unwrap();
    let b = read(&ssp);
    let start = b[0].column(4).as_primitive::<UInt64Type>();
    assert_eq!(
        start.values().to_vec(),
        spans.spans.iter().map(|s| s.start_ns).collect::<Vec<_>>()
    );
    assert!(
        b[0].column(7).is_null(0),
        "no verdict without an idle level"
    );
}

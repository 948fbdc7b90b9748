//! Parquet files of a trace, for pandas, polars and DuckDB on recordings too long for a
//! CSV: `flinch export run.flinch.csv --parquet run/` writes
//!
//! - `samples.parquet`: one row per sample, `t_ns` (uint64, `CLOCK_MONOTONIC` ns),
//!   `channel`, `device`, `quantity`, `unit` (dictionary-encoded strings) and `value`
//!   (float64, in the unit); rows grouped by channel (header order), in time order within
//!   each;
//! - `marks.parquet`: `t_ns`, `recv_ns`, `label`, `req` (null without one), `fields`
//!   (`key=value` separated by spaces, as in the trace, unescaped), `via`;
//! - `spans.parquet`: the spans of `--from/--to` (else every `X_start`/`X_end` pair) with
//!   `name`, `from`, `to`, `req`, `start_ns`, `end_ns`, `duration_s`, and with an idle level
//!   `verdict` and the composition (`gpu_compute`, `cpu_compute`, `idle_wait`,
//!   `unresolved`, shares of the span).
//!
//! Each file carries the trace's header as key-value metadata (`flinch.header`, JSON).
//! Pages are snappy-compressed.
//!
//! ```python
//! import pandas as pd
//! s = pd.read_parquet("run/samples.parquet")
//! power = s[s.channel == "gpu0.power_samples"]
//! ```

use crate::spans::{Judgement, SpanSet};
use arrow_array::builder::{StringDictionaryBuilder, UInt64Builder};
use arrow_array::types::UInt16Type;
use arrow_array::{ArrayRef, Float64Array, RecordBatch, StringArray, UInt64Array};
use arrow_schema::{DataType, Field, Schema};
use flinch_core::trace::Trace;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use std::io::Write;
use std::sync::Arc;

/// Rows per record batch handed to the writer (and at most per row group).
const BATCH_ROWS: usize = 1 << 20;

/// What was written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParquetStats {
    /// Rows of `samples.parquet`.
    pub samples: u64,
    /// Rows of `marks.parquet`.
    pub marks: u64,
    /// Rows of `spans.parquet`.
    pub spans: u64,
}

fn props(trace: &Trace) -> WriterProperties {
    let header = serde_json::to_string(&trace.header).unwrap_or_default();
    WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(BATCH_ROWS))
        .set_key_value_metadata(Some(vec![
            KeyValue::new("flinch.header".to_owned(), header),
            KeyValue::new("flinch.source".to_owned(), trace.path.display().to_string()),
        ]))
        .build()
}

fn dict() -> DataType {
    DataType::Dictionary(Box::new(DataType::UInt16), Box::new(DataType::Utf8))
}

/// Writes `samples.parquet` of `trace` into `w`.
pub fn write_samples<W: Write + Send>(
    trace: &Trace,
    w: W,
    progress: &mut dyn FnMut(u64, u64),
) -> parquet::errors::Result<u64> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("t_ns", DataType::UInt64, false),
        Field::new("channel", dict(), false),
        Field::new("device", dict(), false),
        Field::new("quantity", dict(), false),
        Field::new("unit", dict(), false),
        Field::new("value", DataType::Float64, false),
    ]));
    let mut writer = ArrowWriter::try_new(w, schema.clone(), Some(props(trace)))?;
    let total = trace.sample_count() as u64;
    let mut done = 0u64;
    for c in &trace.channels {
        let quantity = serde_json::to_value(c.spec.quantity)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        for (t, v) in c.t_ns.chunks(BATCH_ROWS).zip(c.values.chunks(BATCH_ROWS)) {
            let n = t.len();
            let same = |s: &str| -> ArrayRef {
                let mut b = StringDictionaryBuilder::<UInt16Type>::new();
                for _ in 0..n {
                    b.append_value(s);
                }
                Arc::new(b.finish())
            };
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(UInt64Array::from(t.to_vec())),
                    same(&c.spec.name),
                    same(&c.spec.device),
                    same(&quantity),
                    same(c.spec.unit.symbol()),
                    Arc::new(Float64Array::from(v.to_vec())),
                ],
            )?;
            writer.write(&batch)?;
            done += n as u64;
            progress(done, total);
        }
    }
    writer.close()?;
    Ok(done)
}

/// Writes `marks.parquet` of `trace` into `w`.
pub fn write_marks<W: Write + Send>(trace: &Trace, w: W) -> parquet::errors::Result<u64> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("t_ns", DataType::UInt64, false),
        Field::new("recv_ns", DataType::UInt64, false),
        Field::new("label", dict(), false),
        Field::new("req", DataType::Utf8, true),
        Field::new("fields", DataType::Utf8, false),
        Field::new("via", dict(), false),
    ]));
    let mut writer = ArrowWriter::try_new(w, schema.clone(), Some(props(trace)))?;
    for ms in trace.marks.chunks(BATCH_ROWS) {
        let mut label = StringDictionaryBuilder::<UInt16Type>::new();
        let mut via = StringDictionaryBuilder::<UInt16Type>::new();
        for m in ms {
            label.append_value(&m.label);
            via.append_value(m.via.name());
        }
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(UInt64Array::from_iter_values(ms.iter().map(|m| m.t_ns))),
                Arc::new(UInt64Array::from_iter_values(ms.iter().map(|m| m.recv_ns))),
                Arc::new(label.finish()),
                Arc::new(StringArray::from_iter(ms.iter().map(|m| m.req()))),
                Arc::new(StringArray::from_iter_values(ms.iter().map(|m| {
                    m.fields
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                }))),
                Arc::new(via.finish()),
            ],
        )?;
        writer.write(&batch)?;
    }
    writer.close()?;
    Ok(trace.marks.len() as u64)
}

/// Writes `spans.parquet` into `w`: `spans`, with `judged` their verdicts and
/// compositions.
pub fn write_spans<W: Write + Send>(
    trace: &Trace,
    spans: &SpanSet,
    judged: Option<&Judgement>,
    w: W,
) -> parquet::errors::Result<u64> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("from", dict(), false),
        Field::new("to", dict(), false),
        Field::new("req", DataType::Utf8, true),
        Field::new("start_ns", DataType::UInt64, false),
        Field::new("end_ns", DataType::UInt64, false),
        Field::new("duration_s", DataType::Float64, false),
        Field::new("verdict", dict(), true),
        Field::new("gpu_compute", DataType::Float64, true),
        Field::new("cpu_compute", DataType::Float64, true),
        Field::new("idle_wait", DataType::Float64, true),
        Field::new("unresolved", DataType::Float64, true),
    ]));
    let mut writer = ArrowWriter::try_new(w, schema.clone(), Some(props(trace)))?;
    let all = &spans.spans;
    for (c, ss) in all.chunks(BATCH_ROWS).enumerate() {
        let base = c * BATCH_ROWS;
        let mut from = StringDictionaryBuilder::<UInt16Type>::new();
        let mut to = StringDictionaryBuilder::<UInt16Type>::new();
        let mut verdict = StringDictionaryBuilder::<UInt16Type>::new();
        let mut start = UInt64Builder::new();
        let mut end = UInt64Builder::new();
        let mut shares: [Vec<Option<f64>>; 4] = Default::default();
        for (k, s) in ss.iter().enumerate() {
            from.append_value(&s.from);
            to.append_value(&s.to);
            start.append_value(s.start_ns);
            end.append_value(s.end_ns);
            match judged.and_then(|j| j.verdicts.get(base + k)) {
                Some(v) => verdict.append_value(v.name()),
                None => verdict.append_null(),
            }
            let comp = judged.and_then(|j| j.compositions.get(base + k));
            let vals = comp.map(|c| [c.gpu_compute, c.cpu_compute, c.idle_wait, c.unresolved]);
            for (i, col) in shares.iter_mut().enumerate() {
                col.push(vals.map(|v| v[i]));
            }
        }
        let [g, cpu, idle, un] = shares;
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from_iter_values(
                    ss.iter().map(|s| s.name.as_str()),
                )),
                Arc::new(from.finish()),
                Arc::new(to.finish()),
                Arc::new(StringArray::from_iter(ss.iter().map(|s| s.req.as_deref()))),
                Arc::new(start.finish()),
                Arc::new(end.finish()),
                Arc::new(Float64Array::from_iter_values(
                    ss.iter().map(|s| s.duration_s()),
                )),
                Arc::new(verdict.finish()),
                Arc::new(Float64Array::from(g)),
                Arc::new(Float64Array::from(cpu)),
                Arc::new(Float64Array::from(idle)),
                Arc::new(Float64Array::from(un)),
            ],
        )?;
        writer.write(&batch)?;
    }
    writer.close()?;
    Ok(all.len() as u64)
}

//! One wide CSV for spreadsheets and pandas:
//!
//! ```text
//! t_ns,t_s,gpu0.power_samples,gpu0.util_gpu,...,mark,mark_label,mark_req,mark_kind
//! 116710140738,-0.000331,118.4,,...,,,,
//! 135206475654,18.496758,,,...,infer_start req=0 kind=cpu,infer_start,0,cpu
//! ```
//!
//! - a row per timestamp, in time order; `t_ns` is `CLOCK_MONOTONIC` ns, `t_s` seconds from
//!   the trace's start anchor (negative for the few driver samples stamped before it);
//! - a column per channel, in header order, holding the channel's value in its unit (see
//!   the trace header for units) where the channel has a sample at that timestamp, empty
//!   elsewhere; values are written with the shortest text that reads back to the same
//!   number, so nothing is rounded;
//! - a `mark` column holding the mark as its line (`LABEL key=value ...`, the time being the
//!   row's `t_ns`), then the same mark split up: `mark_label`, and a `mark_KEY` column per
//!   field key any mark has (`mark_req`, `mark_kind`, ...; in order of first appearance),
//!   so that `df[df.mark_kind == "cpu"]` works without parsing the line.
//!
//! Every sample and every mark appears exactly once: where a channel has two samples, or
//! two marks share a timestamp, the second goes into an extra row with the same `t_ns`.
//!
//! ```python
//! df = pd.read_csv("run.wide.csv")
//! df[["t_s", "gpu0.power_samples"]].dropna()
//! ```

use flinch_core::trace::Trace;
use std::io::{self, Write};

/// What was written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableStats {
    /// Data rows (the column line not counted).
    pub rows: u64,
    /// Sample cells filled.
    pub samples: u64,
    /// Marks written.
    pub marks: u64,
}

/// A mark as the `mark` column holds it: `label key=value ...`.
pub fn mark_cell(m: &flinch_core::marks::Mark) -> String {
    let mut s = m.label.clone();
    for (k, v) in &m.fields {
        s.push(' ');
        s.push_str(k);
        s.push('=');
        s.push_str(v);
    }
    s
}

/// Writes the wide CSV of `trace`. `progress(done, total)` is called every few thousand
/// rows (total = samples + marks).
pub fn write_wide_csv<W: Write>(
    trace: &Trace,
    w: &mut W,
    progress: &mut dyn FnMut(u64, u64),
) -> io::Result<TableStats> {
    let origin = trace.header.start_anchor.mono_ns as i128;
    let total = (trace.sample_count() + trace.marks.len()) as u64;
    let mut csv = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(w);
    let io_err = |e: csv::Error| io::Error::other(e.to_string());
    let n = trace.channels.len();
    let mut header: Vec<&str> = Vec::with_capacity(n + 3);
    header.extend(["t_ns", "t_s"]);
    header.extend(trace.channels.iter().map(|c| c.spec.name.as_str()));
    header.push("mark");
    header.push("mark_label");
    let mut keys: Vec<&str> = Vec::new();
    for m in &trace.marks {
        for (k, _) in &m.fields {
            if !keys.contains(&k.as_str()) {
                keys.push(k);
            }
        }
    }
    let key_columns: Vec<String> = keys.iter().map(|k| format!("mark_{k}")).collect();
    header.extend(key_columns.iter().map(String::as_str));
    csv.write_record(&header).map_err(io_err)?;

    let mut cursor = vec![0usize; n];
    let mut mark_i = 0usize;
    let mut stats = TableStats::default();
    let mut row: Vec<String> = vec![String::new(); n + 4 + keys.len()];
    let mut last_report = 0u64;
    loop {
        // The earliest pending timestamp over every channel and the marks.
        let mut t: Option<u64> = trace.marks.get(mark_i).map(|m| m.t_ns);
        for (c, &i) in trace.channels.iter().zip(&cursor) {
            if let Some(&ct) = c.t_ns.get(i) {
                t = Some(t.map_or(ct, |x| x.min(ct)));
            }
        }
        let Some(t) = t else { break };
        for cell in row.iter_mut() {
            cell.clear();
        }
        row[0] = t.to_string();
        row[1] = format!("{:.9}", (t as i128 - origin) as f64 / 1e9);
        for (k, c) in trace.channels.iter().enumerate() {
            let i = cursor[k];
            if c.t_ns.get(i) == Some(&t) {
                row[2 + k] = c.values[i].to_string();
                cursor[k] += 1;
                stats.samples += 1;
            }
        }
        if let Some(m) = trace.marks.get(mark_i)
            && m.t_ns == t
        {
            row[n + 2] = mark_cell(m);
            row[n + 3] = m.label.clone();
            for (k, v) in &m.fields {
                if let Some(j) = keys.iter().position(|x| x == k) {
                    row[n + 4 + j] = v.clone();
                }
            }
            mark_i += 1;
            stats.marks += 1;
        }
        csv.write_record(&row).map_err(io_err)?;
        stats.rows += 1;
        let done = stats.samples + stats.marks;
        if done - last_report >= 65_536 {
            progress(done, total);
            last_report = done;
        }
    }
    csv.flush()?;
    progress(total, total);
    Ok(stats)
}

//! `flinch export`: Perfetto (protobuf or trace-event JSON), one wide CSV, Parquet.

use super::load::{check_trace_path, load_trace, spans, write_progress};
use crate::Failure;
use crate::cli::{ExportArgs, Points};
use flinch_viz::idle::Idle;
use flinch_viz::output::{check_destination, write_atomically};
use flinch_viz::perfetto_proto::PointBudget;
use flinch_viz::spans::judge;
use flinch_viz::{parquet_export, perfetto, perfetto_proto, table};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// A JSON trace bigger than this is slow to open in ui.perfetto.dev, or does not open: its
/// importer holds the whole text in the browser tab, whose memory is bounded.
const JSON_OPENS_UP_TO_BYTES: u64 = 256 << 20;

fn is_json(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
}

pub fn run(a: ExportArgs) -> Result<ExitCode, Failure> {
    check_trace_path(&a.trace)?;
    let parquet_files: Vec<PathBuf> = a
        .parquet
        .iter()
        .flat_map(|d| {
            ["samples", "marks", "spans"]
                .map(|n| d.join(format!("{n}.parquet")))
                .to_vec()
        })
        .collect();
    let outs: Vec<&PathBuf> = a
        .perfetto
        .iter()
        .chain(&a.csv)
        .chain(&parquet_files)
        .collect();
    for (i, x) in outs.iter().enumerate() {
        if outs[..i].contains(x) {
            return Err(Failure::new(format!(
                "two outputs name the same file {}; give each its own",
                x.display()
            )));
        }
    }
    if let Some(d) = &a.parquet {
        if d.exists() && !d.is_dir() {
            return Err(Failure::new(format!(
                "--parquet {}: not a directory (the three files go into it)",
                d.display()
            )));
        }
        std::fs::create_dir_all(d)
            .map_err(|e| Failure::new(format!("--parquet: cannot create {}: {e}", d.display())))?;
    }
    for out in &outs {
        check_destination(out, &a.trace, a.force)?;
    }
    let trace = load_trace(&a.trace, a.quiet)?;
    let total = (trace.sample_count() + trace.marks.len()) as u64;
    let need_spans = a.perfetto.is_some() || a.parquet.is_some();
    let set = if need_spans {
        Some(spans(&trace, &a.spans, a.quiet, true)?)
    } else {
        None
    };
    // with an idle level (--idle-window, else the one embedded in the trace), the spans
    // carry analyze's verdicts and compositions and the state timeline is drawn
    let judged = match &set {
        Some(set) => {
            let idle = match &a.idle_window {
                Some(w) => Some(Idle::from_window(&trace, w).map_err(Failure::new)?.0),
                None => Idle::from_header(&trace).map_err(Failure::new)?,
            };
            idle.as_ref()
                .map(|i| judge(&trace, set, Some(i), trace.time_range_ns()))
        }
        None => None,
    };
    if let (Some(out), Some(set)) = (&a.perfetto, &set) {
        let json = is_json(out);
        let budget = match a.max_points {
            Some(Points::Full) => PointBudget::Full,
            Some(Points::Total(n)) => PointBudget::Total(n),
            None if json => PointBudget::Full,
            None => PointBudget::DEFAULT,
        };
        let points: u64 = budget
            .per_channel(&trace)
            .iter()
            .zip(&trace.channels)
            .map(|(cap, c)| cap.map_or(c.t_ns.len(), |n| n.min(c.t_ns.len())) as u64)
            .sum();
        let estimate = points * perfetto::JSON_BYTES_PER_COUNTER;
        if json && estimate > JSON_OPENS_UP_TO_BYTES {
            eprintln!(
                "flinch: warning: {} will be about {} MB of JSON ({points} counter events): \
                 ui.perfetto.dev opens JSON traces of more than ~{} MB slowly or not at all. \
                 Write Perfetto's own format instead (--perfetto {}), or fewer points \
                 (--max-points 2000000)",
                out.display(),
                estimate >> 20,
                JSON_OPENS_UP_TO_BYTES >> 20,
                out.with_extension("pftrace").display()
            );
        }
        let what = if json {
            "Perfetto JSON"
        } else {
            "Perfetto protobuf"
        };
        let pb = write_progress(total, a.quiet, what);
        let stats = write_atomically(out, a.force, |w| {
            let mut progress = |done, _| pb.set_position(done);
            if json {
                perfetto::write_perfetto_json(
                    &trace,
                    set,
                    judged.as_ref(),
                    budget,
                    w,
                    &mut progress,
                )
            } else {
                perfetto_proto::write_perfetto_proto(
                    &trace,
                    set,
                    judged.as_ref(),
                    budget,
                    w,
                    &mut progress,
                )
            }
        });
        pb.finish_and_clear();
        let stats = stats?;
        let samples = trace.sample_count() as u64;
        let decimated = if stats.counters < samples {
            format!(
                " (of {samples} samples: each track's smallest and largest per bucket of time; \
                 --max-points full keeps all)"
            )
        } else {
            String::new()
        };
        println!(
            "wrote {}: {} counter events{decimated} on {} channel tracks, {} slices, {} \
             instants; open it at https://ui.perfetto.dev",
            out.display(),
            stats.counters,
            trace.channels.iter().filter(|c| !c.t_ns.is_empty()).count(),
            stats.slices,
            stats.instants
        );
    }
    if let Some(out) = &a.csv {
        let pb = write_progress(total, a.quiet, "CSV");
        let stats = write_atomically(out, a.force, |w| {
            table::write_wide_csv(&trace, w, &mut |done, _| pb.set_position(done))
        });
        pb.finish_and_clear();
        let stats = stats?;
        println!(
            "wrote {}: {} rows × {} channel columns, {} samples, {} marks",
            out.display(),
            stats.rows,
            trace.channels.len(),
            stats.samples,
            stats.marks
        );
    }
    if let (Some(dir), Some(set)) = (&a.parquet, &set) {
        let pb = write_progress(trace.sample_count() as u64, a.quiet, "Parquet");
        let samples = write_atomically(&parquet_files[0], a.force, |w| {
            parquet_export::write_samples(&trace, w, &mut |done, _| pb.set_position(done))
        });
        pb.finish_and_clear();
        let samples = samples?;
        let marks = write_atomically(&parquet_files[1], a.force, |w| {
            parquet_export::write_marks(&trace, w)
        })?;
        let spans = write_atomically(&parquet_files[2], a.force, |w| {
            parquet_export::write_spans(&trace, set, judged.as_ref(), w)
        })?;
        println!(
            "wrote {}: samples.parquet ({samples} rows), marks.parquet ({marks}), \
             spans.parquet ({spans}{})",
            dir.display(),
            if judged.is_some() {
                ", with verdicts"
            } else {
                ""
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

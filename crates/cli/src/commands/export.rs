//! `flinch export`: Perfetto trace-event JSON and one wide CSV.

use super::load::{check_trace_path, load_trace, spans, write_progress};
use crate::Failure;
use crate::cli::ExportArgs;
use flinch_viz::idle::Idle;
use flinch_viz::output::{check_destination, write_atomically};
use flinch_viz::spans::judge;
use flinch_viz::{perfetto, table};
use std::process::ExitCode;

pub fn run(a: ExportArgs) -> Result<ExitCode, Failure> {
    check_trace_path(&a.trace)?;
    if let (Some(p), Some(c)) = (&a.perfetto, &a.csv)
        && p == c
    {
        return Err(Failure::new(
            "--perfetto and --csv name the same file; give each its own",
        ));
    }
    for out in a.perfetto.iter().chain(&a.csv) {
        check_destination(out, &a.trace, a.force)?;
    }
    let trace = load_trace(&a.trace, a.quiet)?;
    let total = (trace.sample_count() + trace.marks.len()) as u64;
    if let Some(out) = &a.perfetto {
        let set = spans(&trace, &a.spans, a.quiet, true)?;
        // with an idle level (--idle-window, else the one embedded in the trace), the
        // spans carry analyze's verdicts and compositions and the state timeline is drawn
        let idle = match &a.idle_window {
            Some(w) => Some(Idle::from_window(&trace, w).map_err(Failure::new)?.0),
            None => Idle::from_header(&trace).map_err(Failure::new)?,
        };
        let judged = idle
            .as_ref()
            .map(|i| judge(&trace, &set, Some(i), trace.time_range_ns()));
        let pb = write_progress(total, a.quiet, "Perfetto JSON");
        let stats = write_atomically(out, a.force, |w| {
            perfetto::write_perfetto_judged(&trace, &set, judged.as_ref(), w, &mut |done, _| {
                pb.set_position(done)
            })
        });
        pb.finish_and_clear();
        let stats = stats?;
        println!(
            "wrote {}: {} counter events on {} channel tracks, {} slices, {} instants; open it at \
             https://ui.perfetto.dev",
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
    Ok(ExitCode::SUCCESS)
}

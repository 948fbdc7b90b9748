//! Shared by `plot` and `export`: reading a trace with a progress bar (large traces take
//! a while), the spans to use, and progress while writing.

use crate::Failure;
use crate::cli::SpanArgs;
use flinch_core::trace::{Trace, read_trace_from};
use flinch_viz::spans::{SpanSet, SpanSpec, describe_labels, find_spans};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::BufReader;
use std::path::Path;

/// Traces smaller than this load too fast for a progress bar to be worth drawing.
const PROGRESS_MIN_BYTES: u64 = 8 << 20;

fn bar(len: u64, quiet: bool, template: &str) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if quiet {
        pb.set_draw_target(ProgressDrawTarget::hidden());
    }
    pb.set_style(
        ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb
}

/// Checks that `path` is a file before a trace is read from it, in the one wording every
/// command uses (`analyze`, `plot`, `export`).
pub fn check_trace_path(path: &Path) -> Result<(), Failure> {
    let why = match std::fs::metadata(path) {
        Ok(md) if md.is_file() => return Ok(()),
        Ok(md) if md.is_dir() => "is a directory",
        Ok(_) => "is not a regular file",
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "does not exist",
        Err(e) => {
            return Err(Failure::new(format!(
                "cannot read the trace {}: {e}",
                path.display()
            )));
        }
    };
    Err(Failure::new(format!(
        "{} {why}: give the trace file written by `flinch record`",
        path.display()
    )))
}

/// Reads a trace, showing a progress bar on a terminal for large files; notes what the
/// reader found wrong but not fatal.
pub fn load_trace(path: &Path, quiet: bool) -> Result<Trace, Failure> {
    let f = std::fs::File::open(path)
        .map_err(|e| Failure::new(format!("cannot open the trace {}: {e}", path.display())))?;
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let pb = bar(
        len,
        quiet || len < PROGRESS_MIN_BYTES,
        "reading {msg} {bar:30} {bytes}/{total_bytes} ({eta})",
    );
    pb.set_message(
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    );
    let trace = read_trace_from(BufReader::with_capacity(1 << 20, pb.wrap_read(f)), path);
    pb.finish_and_clear();
    let trace = trace.map_err(|e| Failure::new(e.to_string()))?;
    if !quiet {
        for w in &trace.warnings {
            eprintln!("flinch: note: {}: {w}", path.display());
        }
    }
    Ok(trace)
}

/// The spans of `--from/--to`, or every `X_start`/`X_end` pair.
/// `stages`: the output shows each request's stages anyway (Perfetto), so a trace without
/// span labels is not worth a note.
pub fn spans(trace: &Trace, a: &SpanArgs, quiet: bool, stages: bool) -> Result<SpanSet, Failure> {
    let spec = match (&a.from, &a.to) {
        (Some(from), Some(to)) => SpanSpec::Labels {
            from: from.clone(),
            to: to.clone(),
        },
        _ => SpanSpec::Auto,
    };
    let set = find_spans(trace, &spec).map_err(Failure::new)?;
    if !quiet {
        if set.unmatched_starts + set.unmatched_ends > 0 {
            eprintln!(
                "flinch: note: {} start mark(s) never closed and {} end mark(s) with nothing open \
                 (pairs are matched by req=)",
                set.unmatched_starts, set.unmatched_ends
            );
        }
        if set.spans.is_empty()
            && spec == SpanSpec::Auto
            && !trace.marks.is_empty()
            && !(stages && trace.marks.iter().any(|m| m.req().is_some()))
        {
            eprintln!(
                "flinch: note: no X_start/X_end label pairs, so no spans; name them with --from \
                 LABEL --to LABEL (labels present: {})",
                describe_labels(trace)
            );
        }
    }
    Ok(set)
}

/// A progress bar over `total` items (samples + marks) for a write; hidden when quiet or
/// small.
pub fn write_progress(total: u64, quiet: bool, what: &str) -> ProgressBar {
    let pb = bar(
        total,
        quiet || total < 2_000_000,
        "writing {msg} {bar:30} {pos}/{len} ({eta})",
    );
    pb.set_message(what.to_owned());
    pb
}

//! `flinch analyze`: spans between marks, their energy above idle, verdicts and
//! distributions; or, without labels, the labels a trace holds.

use crate::Failure;
use crate::cli::AnalyzeArgs;
use flinch_analysis::idle::{IdleFrom, IdleProfile, choose_idle};
use flinch_analysis::{Analyzer, Report, State, Thresholds, describe_labels};
use flinch_core::trace::{Trace, read_trace_from};
use indicatif::{ProgressBar, ProgressStyle};
use std::fmt::Write as _;
use std::io::{BufReader, IsTerminal};
use std::process::ExitCode;

/// Traces larger than this show a progress bar while they are read.
const READ_PROGRESS_BYTES: u64 = 16 << 20;
/// More spans than this show a progress bar while they are measured.
const SPAN_PROGRESS: usize = 2000;
/// Without --all, longer span lists are cut to their first `SHOWN_SPANS`.
const LIST_ALL_UP_TO: usize = 50;
const SHOWN_SPANS: usize = 20;

fn bar(len: u64, what: &str, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(len);
    b.set_style(
        ProgressStyle::with_template(&format!("{what} [{{bar:40}}] {{percent:>3}}% {{eta}}"))
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    b
}

fn load(a: &AnalyzeArgs, show: bool) -> Result<Trace, Failure> {
    let f = std::fs::File::open(&a.trace)
        .map_err(|e| Failure::new(format!("cannot open trace {}: {e}", a.trace.display())))?;
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let b = bar(len, "reading", show && len > READ_PROGRESS_BYTES);
    let r = BufReader::with_capacity(1 << 20, b.wrap_read(f));
    let t = read_trace_from(r, &a.trace)?;
    b.finish_and_clear();
    Ok(t)
}

fn idle_for(
    a: &AnalyzeArgs,
    trace: &Trace,
) -> Result<Option<(IdleProfile, &'static str)>, Failure> {
    let from = match (&a.idle_window, &a.idle) {
        (Some(w), _) => IdleFrom::Window(w),
        (None, Some(p)) => IdleFrom::File(p),
        (None, None) => IdleFrom::Embedded,
    };
    choose_idle(trace, from, ("--idle-window", "--idle")).map_err(Failure::new)
}

pub fn run(a: AnalyzeArgs) -> Result<ExitCode, Failure> {
    let show = !a.quiet && std::io::stderr().is_terminal();
    let trace = load(&a, show)?;
    let (Some(from), Some(to)) = (&a.from, &a.to) else {
        let labels = trace.labels();
        if a.json {
            let v = serde_json::json!({
                "trace": a.trace.display().to_string(),
                "labels": labels,
            });
            println!("{}", serde_json::to_string_pretty(&v)?);
        } else if labels.is_empty() {
            println!(
                "{}: no marks; nothing to pair into spans (send marks while recording: see `flinch mark --help`)",
                a.trace.display()
            );
        } else {
            println!(
                "{}: {} mark labels (analyze spans with --from LABEL --to LABEL):",
                a.trace.display(),
                labels.len()
            );
            let w = labels.keys().map(|l| l.len()).max().unwrap_or(0);
            for (l, n) in &labels {
                println!("  {l:<w$}  {n}");
            }
        }
        return Ok(ExitCode::SUCCESS);
    };
    let labels = trace.labels();
    for l in [from, to] {
        if !labels.contains_key(l) {
            return Err(Failure::new(format!(
                "no mark labelled {l:?} in {}; labels present: {}",
                a.trace.display(),
                describe_labels(&trace)
            )));
        }
    }
    let idle = idle_for(&a, &trace)?;
    let analyzer = Analyzer::new(
        &trace,
        idle.as_ref().map(|(p, via)| (p, *via)),
        Thresholds::default(),
    );
    let mut b: Option<ProgressBar> = None;
    let mut progress = |done: usize, total: usize| {
        if total > SPAN_PROGRESS && show {
            let bar = b.get_or_insert_with(|| bar(total as u64, "spans", true));
            bar.set_position(done as u64);
        }
    };
    let report = analyzer.run(from, to, &mut progress)?;
    if let Some(bar) = b {
        bar.finish_and_clear();
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!(
            "{}",
            render(&report, trace.header.start_anchor.mono_ns, a.all)
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn opt(x: Option<f64>, prec: usize) -> String {
    x.map(|v| format!("{v:.prec$}"))
        .unwrap_or_else(|| "-".into())
}

/// The human report.
pub fn render(r: &Report, origin_ns: u64, all: bool) -> String {
    let mut s = String::new();
    let idle = match &r.idle {
        Some(i) => format!(
            "idle: {} ({}, host {}, {}){}",
            i.via,
            i.origin,
            i.host,
            i.created,
            if i.idle_ok { "" } else { " NOT IDLE" }
        ),
        None => "idle: none".into(),
    };
    let _ = writeln!(
        s,
        "{}: {} spans {} → {}; {idle}",
        r.trace, r.summary.count, r.from, r.to
    );
    let devices: Vec<&String> = r
        .spans
        .first()
        .map(|sp| sp.devices.keys().collect())
        .unwrap_or_default();
    let shown = if all || r.spans.len() <= LIST_ALL_UP_TO {
        r.spans.len()
    } else {
        SHOWN_SPANS
    };
    if shown > 0 {
        let _ = write!(
            s,
            "\n{:>5} {:>10} {:>10} {:<12} {:>6}",
            "#", "start_s", "dur_s", "verdict", "req"
        );
        for d in &devices {
            let _ = write!(s, " {:>16}", format!("{d} active_J"));
        }
        let _ = writeln!(s);
    }
    for (i, sp) in r.spans.iter().take(shown).enumerate() {
        let _ = write!(
            s,
            "{:>5} {:>10.3} {:>10.4} {:<12} {:>6}",
            i + 1,
            sp.start_ns.saturating_sub(origin_ns) as f64 / 1e9,
            sp.duration_s,
            sp.verdict.name(),
            sp.req.as_deref().unwrap_or("-")
        );
        for d in &devices {
            let cell = match sp.devices.get(*d) {
                Some(dv) => {
                    let mut c = opt(dv.active_energy_j, 2);
                    if dv.state == State::Unresolved {
                        c.push('?');
                    }
                    c
                }
                None => "-".into(),
            };
            let _ = write!(s, " {cell:>16}");
        }
        let _ = writeln!(s);
        for e in &sp.evidence {
            let _ = writeln!(s, "{:>18}{e}", "");
        }
    }
    if shown < r.spans.len() {
        let _ = writeln!(
            s,
            "  … {} more spans (--all lists every span, --json gives everything)",
            r.spans.len() - shown
        );
    }
    let sm = &r.summary;
    let _ = writeln!(s, "\nsummary: {} spans", sm.count);
    if let Some(d) = &sm.duration_s {
        let _ = writeln!(
            s,
            "  duration s: min {:.4}  p50 {:.4}  p90 {:.4}  p99 {:.4}  max {:.4}  mean {:.4}  std {:.4}",
            d.min, d.p50, d.p90, d.p99, d.max, d.mean, d.std
        );
    }
    let h = &sm.histogram;
    let peak = h.counts.iter().copied().max().unwrap_or(0).max(1);
    for (i, c) in h.counts.iter().enumerate() {
        let w = (*c as f64 / peak as f64 * 40.0).round() as usize;
        let _ = writeln!(
            s,
            "  {:>9.4} – {:<9.4} s {:<40} {c}",
            h.edges[i],
            h.edges[i + 1],
            "█".repeat(w)
        );
    }
    let v: Vec<String> = sm
        .verdicts
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    let _ = writeln!(s, "  verdicts: {}", v.join(", "));
    for (dev, e) in &sm.active_energy_j {
        let _ = writeln!(
            s,
            "  {dev} active J: total {:.2}  mean {:.3}  p50 {:.3}  p90 {:.3}  p99 {:.3}  min {:.3}  max {:.3}  std {:.3} ({} spans)",
            e.total,
            e.dist.mean,
            e.dist.p50,
            e.dist.p90,
            e.dist.p99,
            e.dist.min,
            e.dist.max,
            e.dist.std,
            e.count
        );
    }
    if sm.active_energy_j.is_empty() {
        for (dev, e) in &sm.energy_j {
            let _ = writeln!(
                s,
                "  {dev} energy J (no idle level): total {:.2}  mean {:.3}  p50 {:.3}  max {:.3} ({} spans)",
                e.total, e.dist.mean, e.dist.p50, e.dist.max, e.count
            );
        }
    }
    if !r.unmatched.is_empty() {
        let _ = writeln!(
            s,
            "  unmatched: {} start(s), {} end(s)",
            sm.unmatched_starts, sm.unmatched_ends
        );
        for u in r.unmatched.iter().take(10) {
            let _ = writeln!(
                s,
                "    {} {} at {:.3} s{}",
                u.end,
                u.label,
                u.t_ns.saturating_sub(origin_ns) as f64 / 1e9,
                u.req
                    .as_deref()
                    .map(|q| format!(" req={q}"))
                    .unwrap_or_default()
            );
        }
    }
    for w in &r.warnings {
        let _ = writeln!(s, "warning: {w}");
    }
    s
}

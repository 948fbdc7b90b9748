//! `flinch analyze`: spans between marks, their energy above idle, verdicts and
//! distributions; or, without labels, the labels a trace holds. The trace streams by
//! (`flinch_analysis::stream`): memory does not grow with its length.

use crate::Failure;
use crate::cli::AnalyzeArgs;
use flinch_analysis::idle::{IdleFrom, IdleProfile, choose_idle};
use flinch_analysis::output::{JsonSink, MEMORY_BUDGET, Spill, StartOrder, jsonl_tail};
use flinch_analysis::stream::{Outcome, SpanKey, SpanSink, SpanStream};
use flinch_analysis::{SpanReport, State, Thresholds};
use flinch_core::error::{Error, Result as CoreResult};
use flinch_core::trace::Header;
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::process::ExitCode;

/// Traces larger than this show a progress bar while they are read.
const READ_PROGRESS_BYTES: u64 = 16 << 20;
/// Without --all, longer span lists are cut to their first `SHOWN_SPANS`.
const LIST_ALL_UP_TO: usize = 50;
const SHOWN_SPANS: usize = 20;

fn bar(len: u64, what: &str, show: bool) -> ProgressBar {
    if !show || len <= READ_PROGRESS_BYTES {
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

fn out_err(e: io::Error) -> Error {
    Error::io("cannot write the analysis", "standard output", e)
}

fn idle_for(
    a: &AnalyzeArgs,
    header: &Header,
    show: bool,
) -> Result<Option<(IdleProfile, &'static str)>, Failure> {
    let from = match (&a.idle_window, &a.idle) {
        (Some(w), _) => IdleFrom::Window(w),
        (None, Some(p)) => IdleFrom::File(p),
        (None, None) => IdleFrom::Embedded,
    };
    let mut b: Option<ProgressBar> = None;
    let idle = choose_idle(
        &a.trace,
        header,
        from,
        ("--idle-window", "--idle"),
        &mut |d, len| {
            b.get_or_insert_with(|| bar(len, "idle window", show))
                .set_position(d)
        },
    )?;
    if let Some(b) = b {
        b.finish_and_clear();
    }
    Ok(idle)
}

fn list_labels(a: &AnalyzeArgs, show: bool) -> Result<ExitCode, Failure> {
    let s = SpanStream::open(&a.trace)?;
    let b = bar(s.len(), "reading", show);
    let (labels, warnings) = s.labels(&mut |d, _| b.set_position(d))?;
    b.finish_and_clear();
    if a.json {
        let v = serde_json::json!({
            "trace": a.trace.display().to_string(),
            "labels": labels,
            "warnings": warnings,
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
    if !a.json {
        // What the reader found wrong (a trace cut short explains missing marks).
        for w in &warnings {
            println!("warning: {w}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `--jsonl`: each span on its line as soon as it is measured.
struct JsonlSink {
    out: BufWriter<io::Stdout>,
}

impl SpanSink for JsonlSink {
    type Item = io::Result<String>;
    fn prepare(&self, _key: SpanKey, r: SpanReport) -> Self::Item {
        serde_json::to_string(&r).map_err(io::Error::other)
    }
    fn span(&mut self, _key: SpanKey, item: Self::Item) -> CoreResult<()> {
        let line = item.map_err(out_err)?;
        self.out.write_all(line.as_bytes()).map_err(out_err)?;
        self.out.write_all(b"\n").map_err(out_err)
    }
    fn settled(&mut self, _key: SpanKey) -> CoreResult<()> {
        Ok(())
    }
}

/// The table: the first spans in start order (every span with `--all`, rendered as they
/// settle and kept in a temporary file past a budget), and the count.
struct TextSink {
    origin_ns: u64,
    all: bool,
    evidence: bool,
    count: usize,
    /// The first spans (without --all): at most `LIST_ALL_UP_TO + 1`.
    first: BTreeMap<SpanKey, SpanReport>,
    /// Once `first` is full: spans after its last key are not kept.
    cutoff: Option<SpanKey>,
    /// With --all: rows rendered without their number, in start order.
    order: StartOrder,
    rows: Spill,
    rendered: usize,
    devices: Option<Vec<String>>,
}

enum TextItem {
    Report(Box<SpanReport>),
    Row(String, Vec<String>),
    /// Not among the first spans: counted only.
    Counted,
}

impl SpanSink for TextSink {
    type Item = TextItem;
    fn prepare(&self, _key: SpanKey, r: SpanReport) -> Self::Item {
        if self.all {
            let devices: Vec<String> = r.devices.keys().cloned().collect();
            TextItem::Row(
                render_row(&r, self.origin_ns, &devices, self.evidence),
                devices,
            )
        } else {
            TextItem::Report(Box::new(r))
        }
    }
    fn without_report(&self, key: SpanKey) -> Option<Self::Item> {
        (!self.all && self.cutoff.is_some_and(|c| key > c)).then_some(TextItem::Counted)
    }
    fn span(&mut self, key: SpanKey, item: Self::Item) -> CoreResult<()> {
        self.count += 1;
        match item {
            TextItem::Report(r) => {
                if self.first.len() <= LIST_ALL_UP_TO
                    || self.first.last_key_value().is_some_and(|(k, _)| key < *k)
                {
                    self.first.insert(key, *r);
                    if self.first.len() > LIST_ALL_UP_TO + 1 {
                        self.first.pop_last();
                    }
                    if self.first.len() > LIST_ALL_UP_TO {
                        self.cutoff = self.first.last_key_value().map(|(k, _)| *k);
                    }
                }
                Ok(())
            }
            TextItem::Counted => Ok(()),
            TextItem::Row(row, devices) => {
                self.order.push(key, row).map_err(out_err)?;
                // Every span lists the same devices; the columns come from the first.
                if self.devices.is_none() {
                    self.devices = Some(devices);
                }
                Ok(())
            }
        }
    }
    fn settled(&mut self, key: SpanKey) -> CoreResult<()> {
        let rows = &mut self.rows;
        let n = &mut self.rendered;
        self.order
            .release(key, &mut |_, row| {
                *n += 1;
                rows.write(format!("{:>5} {row}", *n).as_bytes())
            })
            .map_err(out_err)
    }
}

/// Every span of `from..to` in the stream, handed to `sink`, with the progress bar `b`
/// following the read and cleared at the end.
fn measure<S: SpanSink>(
    stream: SpanStream,
    from: &str,
    to: &str,
    idle: Option<(&IdleProfile, &str)>,
    sink: &mut S,
    b: &ProgressBar,
) -> CoreResult<Outcome> {
    let outcome = stream.run(from, to, idle, Thresholds::default(), sink, &mut |d, _| {
        b.set_position(d)
    })?;
    b.finish_and_clear();
    Ok(outcome)
}

pub fn run(a: AnalyzeArgs) -> Result<ExitCode, Failure> {
    super::load::check_trace_path(&a.trace)?;
    let show = !a.quiet && std::io::stderr().is_terminal();
    let (Some(from), Some(to)) = (&a.from, &a.to) else {
        return list_labels(&a, show);
    };
    let stream = SpanStream::open(&a.trace)?;
    let header = stream.header().clone();
    let idle = idle_for(&a, &header, show)?;
    let idle = idle.as_ref().map(|(p, via)| (p, *via));
    let b = bar(stream.len(), "analysing", show);
    let origin_ns = header.start_anchor.mono_ns;
    if a.jsonl {
        let mut sink = JsonlSink {
            out: BufWriter::with_capacity(1 << 16, io::stdout()),
        };
        let outcome = measure(stream, from, to, idle, &mut sink, &b)?;
        let tail = jsonl_tail(&outcome)?;
        writeln!(sink.out, "{tail}")?;
        sink.out.flush()?;
    } else if a.json {
        let mut sink = JsonSink::new();
        let outcome = measure(stream, from, to, idle, &mut sink, &b)?;
        let mut out = BufWriter::with_capacity(1 << 20, io::stdout().lock());
        sink.finish(&outcome, &mut out)?;
        out.flush()?;
    } else {
        let mut sink = TextSink {
            origin_ns,
            all: a.all,
            evidence: a.evidence,
            count: 0,
            first: BTreeMap::new(),
            cutoff: None,
            order: StartOrder::new(MEMORY_BUDGET),
            rows: Spill::new(MEMORY_BUDGET),
            rendered: 0,
            devices: None,
        };
        let outcome = measure(stream, from, to, idle, &mut sink, &b)?;
        let mut out = BufWriter::with_capacity(1 << 20, io::stdout().lock());
        write_text(&outcome, sink, &mut out)?;
        out.flush()?;
    }
    Ok(ExitCode::SUCCESS)
}

fn bound_cell(b: Option<flinch_analysis::Bound>) -> String {
    match b {
        Some(b) => {
            let prec = if b.width().abs() < 0.1 { 4 } else { 2 };
            format!("[{:.prec$}, {:.prec$}]", b.lo, b.hi)
        }
        None => "-".into(),
    }
}

fn opt(x: Option<f64>, prec: usize) -> String {
    x.map(|v| format!("{v:.prec$}"))
        .unwrap_or_else(|| "-".into())
}

/// How to print histogram edges (seconds): the unit (ms below a second) and as many
/// decimals as the bin width needs, so that no two bins print the same range.
fn bin_format(edges: &[f64]) -> (f64, &'static str, usize) {
    let top = edges.iter().copied().fold(0.0, f64::max);
    let (scale, unit) = if top < 1.0 { (1e3, "ms") } else { (1.0, "s") };
    let width = edges
        .windows(2)
        .map(|w| (w[1] - w[0]) * scale)
        .filter(|w| *w > 0.0)
        .fold(f64::INFINITY, f64::min);
    let dec = if width.is_finite() {
        (1.0 - width.log10()).ceil().clamp(1.0, 9.0) as usize
    } else {
        1
    };
    (scale, unit, dec)
}

/// A span's line of the table (with `evidence`, the evidence of its verdict under it),
/// without the row number.
fn render_row(sp: &SpanReport, origin_ns: u64, devices: &[String], evidence: bool) -> String {
    let mut s = String::new();
    let c = &sp.composition;
    let _ = write!(
        s,
        "{:>10.3} {:>10.4} {:<12} {:>6} {:>15}",
        sp.start_ns.saturating_sub(origin_ns) as f64 / 1e9,
        sp.duration_s,
        sp.verdict.name(),
        sp.req.as_deref().unwrap_or("-"),
        format!(
            "{:.0}/{:.0}/{:.0}/{:.0}",
            c.gpu_compute * 100.0,
            c.cpu_compute * 100.0,
            c.idle_wait * 100.0,
            c.unresolved * 100.0
        )
    );
    for d in devices {
        let (cell, bound) = match sp.devices.get(d) {
            Some(dv) => {
                let mut c = opt(dv.active_energy_j, 2);
                if dv.state == State::Unresolved {
                    c.push('?');
                }
                (c, bound_cell(dv.active_energy_bound_j))
            }
            None => ("-".into(), "-".into()),
        };
        let _ = write!(s, " {cell:>16} {bound:>19}");
    }
    let _ = writeln!(s);
    if evidence {
        for e in &sp.evidence {
            let _ = writeln!(s, "{:>18}{e}", "");
        }
    }
    s
}

/// The human report: one line per span (the first ones; all with --all), then the
/// distribution and the warnings.
fn write_text(r: &Outcome, sink: TextSink, out: &mut dyn Write) -> Result<(), Failure> {
    let origin_ns = sink.origin_ns;
    let evidence = sink.evidence;
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
    let count = sink.count;
    let devices: Vec<String> = if sink.all {
        sink.devices.clone().unwrap_or_default()
    } else {
        sink.first
            .values()
            .next()
            .map(|sp| sp.devices.keys().cloned().collect())
            .unwrap_or_default()
    };
    let shown = if sink.all || count <= LIST_ALL_UP_TO {
        count
    } else {
        SHOWN_SPANS
    };
    if shown > 0 {
        let _ = write!(
            s,
            "\n{:>5} {:>10} {:>10} {:<12} {:>6} {:>15}",
            "#", "start_s", "dur_s", "verdict", "req", "gpu/cpu/idle/?%"
        );
        for d in &devices {
            let _ = write!(s, " {:>16} {:>19}", format!("{d} active_J"), "bound_J");
        }
        let _ = writeln!(s);
    }
    out.write_all(s.as_bytes()).map_err(out_err)?;
    s.clear();
    if sink.all {
        sink.rows.copy_to(out).map_err(out_err)?;
    } else {
        for (i, sp) in sink.first.values().take(shown).enumerate() {
            let _ = write!(
                s,
                "{:>5} {}",
                i + 1,
                render_row(sp, origin_ns, &devices, evidence)
            );
        }
    }
    if shown > 0 && !evidence {
        let _ = writeln!(
            s,
            "  (-v shows the evidence of each verdict; --json gives everything)"
        );
    }
    if shown < count {
        let _ = writeln!(
            s,
            "  … {} more spans (--all lists every span, --json gives everything)",
            count - shown
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
    let (scale, unit, dec) = bin_format(&h.edges);
    for (i, c) in h.counts.iter().enumerate() {
        let w = (*c as f64 / peak as f64 * 40.0).round() as usize;
        let hi = format!("{:.dec$} {unit}", h.edges[i + 1] * scale);
        let _ = writeln!(
            s,
            "  {:>10.dec$} – {hi:<13} {:<40} {c}",
            h.edges[i] * scale,
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
            "  {dev} active J per span: total {:.2}  mean {:.3}  p50 {:.3}  p90 {:.3}  p99 {:.3}  min {:.3}  max {:.3}  std {:.3} ({} spans)",
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
    if let Some(a) = &sm.aggregate {
        let _ = writeln!(
            s,
            "  over the union of span time ({:.3} s; spans add up to {:.3} s): totals count overlapping spans once",
            a.union_s, a.span_time_s
        );
        for (dev, d) in &a.devices {
            let (what, t) = match &d.active_energy_j {
                Some(t) => ("active J", t),
                None => ("energy J (no idle level)", &d.energy_j),
            };
            let _ = write!(
                s,
                "  {dev} {what}: total {:.2} {}",
                t.total,
                bound_cell(Some(t.total_bound))
            );
            match (t.mean, t.mean_bound) {
                (Some(m), b) => {
                    let _ = writeln!(s, ", per span {m:.4} {} ({} spans)", bound_cell(b), a.count);
                }
                _ => {
                    let _ = writeln!(
                        s,
                        " ({:.3} s of the union not measured: no mean per span)",
                        d.unmeasured_s
                    );
                }
            }
        }
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
    if let Some(ap) = &sm.approximate {
        let _ = writeln!(
            s,
            "  (past {} values per distribution: quantiles within {:.1} %, histogram counts from fine bins)",
            ap.exact_up_to,
            ap.quantile_relative_error * 100.0
        );
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
    out.write_all(s.as_bytes()).map_err(out_err)?;
    Ok(())
}

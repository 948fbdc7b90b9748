//! `flinch plot`: one picture of a trace.
//!
//! From top to bottom, on one time axis (seconds from the trace's start anchor):
//!
//! 1. **Power** per device (its best signal: driver samples, then instant, then a model,
//!    then the lagging 1-s average; a device with only an energy counter, RAPL, gets power
//!    derived from the counter), every span shaded in its verdict's colour and labelled
//!    where the label fits (overlapping spans as bars in lanes above the lines), the idle
//!    level as a dashed line, and every mark as a tick along the bottom. The legend sits
//!    below the lanes and labels, never on them.
//! 2. **Utilisation, activity and CPU time** (GPU utilisation, SM / tensor / DRAM
//!    activity, host CPU utilisation) in %, and the traced process tree's CPU time
//!    (`proc.cpu_time`, what CPU verdicts are made from) in cores on an axis of its own on
//!    the right, with the same shading, when the trace has such channels. A trace without
//!    any power channel (the `cpu` source alone) has no power panel: this one takes its
//!    place, with the spans.
//! 3. A **histogram of span durations**, bars stacked by verdict, with the median and 90th
//!    percentile marked (the median's label left of its line, the p90's right of its own),
//!    when there are several spans.
//!
//! Text is drawn with the DejaVu Sans subset embedded in this crate, so a PNG renders the
//! same on a machine without any system font.

use crate::idle::Idle;
use crate::output::{self, OutputError};
use crate::series::{CORES, Series, decimate};
use crate::spans::{Span, SpanSet, Verdict};
use flinch_analysis::stats::quantile_sorted;
use flinch_core::trace::Trace;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::Path;
use std::sync::OnceLock;

/// The embedded font (DejaVu Sans subset; license in `fonts/LICENSE-DejaVu.txt`).
pub const FONT: &[u8] = include_bytes!("../fonts/DejaVuSans-subset.ttf");
const FAMILY: &str = "sans-serif";

/// Registers the embedded font with plotters (once per process).
pub fn register_font() -> Result<(), String> {
    static DONE: OnceLock<bool> = OnceLock::new();
    let ok = *DONE.get_or_init(|| {
        [FontStyle::Normal, FontStyle::Bold]
            .into_iter()
            .all(|st| plotters::style::register_font(FAMILY, st, FONT).is_ok())
    });
    if ok {
        Ok(())
    } else {
        Err("the embedded font could not be loaded (the flinch binary is damaged)".into())
    }
}

/// Picture format, from the output's extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Scalable vector graphics.
    Svg,
    /// A PNG bitmap.
    Png,
}

impl Format {
    /// From a path's extension (`.svg`, `.png`, any case).
    pub fn from_path(path: &Path) -> Result<Self, String> {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("svg") => Ok(Format::Svg),
            Some("png") => Ok(Format::Png),
            _ => Err(format!(
                "{}: the picture's format comes from its extension: use .svg or .png",
                path.display()
            )),
        }
    }
}

/// When to draw the histogram of span durations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HistogramMode {
    /// With at least [`MIN_SPANS_FOR_HISTOGRAM`] spans.
    #[default]
    Auto,
    /// Whenever there is a span.
    Always,
    /// Never.
    Never,
}

/// With fewer spans, `HistogramMode::Auto` draws no histogram.
pub const MIN_SPANS_FOR_HISTOGRAM: usize = 5;

/// How to draw.
#[derive(Clone, Debug)]
pub struct PlotOptions {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels (default: from the panels drawn).
    pub height: Option<u32>,
    /// Title (default: the trace's file name, device and host).
    pub title: Option<String>,
    /// Only this stretch of time, `CLOCK_MONOTONIC` ns.
    pub window: Option<(u64, u64)>,
    /// The histogram.
    pub histogram: HistogramMode,
}

impl Default for PlotOptions {
    fn default() -> Self {
        PlotOptions {
            width: 1400,
            height: None,
            title: None,
            window: None,
            histogram: HistogramMode::Auto,
        }
    }
}

/// Everything a picture shows, computed from a trace.
#[derive(Clone, Debug)]
pub struct PlotData {
    /// Title.
    pub title: String,
    /// The line under the title.
    pub subtitle: String,
    /// The start anchor: x = (t − origin) / 1e9.
    pub origin_ns: u64,
    /// Shown time range, ns.
    pub window: (u64, u64),
    /// Power lines.
    pub power: Vec<Series>,
    /// Activity lines.
    pub activity: Vec<Series>,
    /// The idle level under each power line (parallel to `power`), W.
    pub idle_w: Vec<Option<f64>>,
    /// Spans with their verdicts.
    pub spans: Vec<(Span, Verdict)>,
    /// The state timeline (`flinch analyze`'s, see [`crate::spans::judge`]): drawn as a
    /// strip along the bottom of the power panel when not empty.
    pub states: Vec<(u64, u64, Verdict)>,
    /// Mark times.
    pub marks_ns: Vec<u64>,
    /// The span description for the histogram's title (`infer_start→first_token`).
    pub spans_name: String,
}

/// What a picture showed, for the command's summary line.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PlotSummary {
    /// Power lines drawn.
    pub power_lines: usize,
    /// Activity lines drawn.
    pub activity_lines: usize,
    /// Spans shaded.
    pub spans: usize,
    /// Verdict counts, in [`Verdict::ALL`] order.
    pub verdicts: Vec<(Verdict, usize)>,
    /// Whether the histogram was drawn.
    pub histogram: bool,
    /// Idle levels drawn: (device, watts).
    pub idle: Vec<(String, f64)>,
    /// Width and height.
    pub size: (u32, u32),
}

fn fmt_duration(s: f64) -> String {
    if s >= 120.0 {
        format!("{:.1} min", s / 60.0)
    } else if s >= 1.0 {
        format!("{s:.1} s")
    } else {
        format!("{:.0} ms", s * 1e3)
    }
}

impl PlotData {
    /// Gathers a picture's content. `verdicts` has one entry per span.
    pub fn new(
        trace: &Trace,
        spans: &SpanSet,
        verdicts: &[Verdict],
        power: Vec<Series>,
        activity: Vec<Series>,
        idle: Option<&Idle>,
        opts: &PlotOptions,
    ) -> Self {
        let origin_ns = trace.header.start_anchor.mono_ns;
        let window = opts.window.unwrap_or_else(|| {
            let mut lo = u64::MAX;
            let mut hi = 0;
            for s in power.iter().chain(&activity) {
                if let (Some(&a), Some(&b)) = (s.t_ns.first(), s.t_ns.last()) {
                    lo = lo.min(a);
                    hi = hi.max(b);
                }
            }
            if let Some((a, b)) = trace.time_range_ns() {
                lo = lo.min(a);
                hi = hi.max(b);
            }
            if lo >= hi {
                (origin_ns, origin_ns + 1_000_000_000)
            } else {
                (lo, hi)
            }
        });
        let file = trace
            .path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| trace.path.display().to_string());
        let mut models: Vec<String> = Vec::new();
        for s in &trace.header.sources {
            if let Some(m) = crate::series::model_name(s)
                && !models.iter().any(|x| x == m)
            {
                models.push(m.to_owned());
            }
        }
        let backends = {
            let mut b: Vec<&str> = trace
                .header
                .sources
                .iter()
                .map(|s| s.backend.as_str())
                .collect();
            b.sort_unstable();
            b.dedup();
            b.join(", ")
        };
        let what = if models.is_empty() {
            backends.clone()
        } else {
            models.join(", ")
        };
        let title = opts.title.clone().unwrap_or_else(|| {
            format!(
                "{file} — {what} on {}, {}",
                trace.header.host,
                trace
                    .header
                    .created
                    .get(..16)
                    .unwrap_or("")
                    .replace('T', " ")
            )
        });
        let in_window: Vec<(Span, Verdict)> = spans
            .spans
            .iter()
            .zip(verdicts)
            .filter(|(s, _)| s.end_ns >= window.0 && s.start_ns <= window.1)
            .map(|(s, v)| (s.clone(), *v))
            .collect();
        let mut names: Vec<&str> = in_window.iter().map(|(s, _)| s.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        let spans_name = names.join(", ");
        let mut sub = vec![format!(
            "{} shown",
            fmt_duration((window.1 - window.0) as f64 / 1e9)
        )];
        if !in_window.is_empty() {
            sub.push(format!("{} spans ({spans_name})", in_window.len()));
        }
        match idle {
            Some(i) => sub.push(format!("idle from {}", i.describe)),
            None => sub.push("no idle level (give --idle-window, --idle or --idle-watts)".into()),
        }
        if !trace.header.meta.is_empty() {
            sub.push(
                trace
                    .header
                    .meta
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" "),
            );
        }
        if !trace.complete() {
            sub.push("recording cut short (no footer)".into());
        }
        let idle_w = power
            .iter()
            .map(|p| idle.and_then(|i| i.watts_for(trace, &p.channel)))
            .collect();
        PlotData {
            idle_w,
            title,
            subtitle: sub.join(" · "),
            origin_ns,
            window,
            power,
            activity,
            spans: in_window,
            states: Vec::new(),
            marks_ns: trace
                .marks
                .iter()
                .map(|m| m.t_ns)
                .filter(|&t| t >= window.0 && t <= window.1)
                .collect(),
            spans_name,
        }
    }

    fn x(&self, t: u64) -> f64 {
        (t as i128 - self.origin_ns as i128) as f64 / 1e9
    }

    fn show_histogram(&self, mode: HistogramMode) -> bool {
        match mode {
            HistogramMode::Never => false,
            HistogramMode::Always => !self.spans.is_empty(),
            HistogramMode::Auto => histogram_spans(&self.spans).1.len() >= MIN_SPANS_FOR_HISTOGRAM,
        }
    }
}

/// The colour of a verdict.
pub fn verdict_color(v: Verdict) -> RGBColor {
    match v {
        Verdict::GpuCompute => RGBColor(214, 39, 40),
        Verdict::CpuCompute => RGBColor(148, 103, 189),
        Verdict::IdleWait => RGBColor(31, 119, 180),
        Verdict::Mixed => RGBColor(230, 159, 0),
        // unresolved, and any verdict a later flinch adds
        _ => RGBColor(140, 140, 140),
    }
}

const POWER_COLORS: [RGBColor; 6] = [
    RGBColor(30, 30, 30),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(140, 86, 75),
    RGBColor(23, 190, 207),
    RGBColor(188, 189, 34),
];
const ACTIVITY_COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

/// Tick labels with as many decimals as the range needs.
fn tick_format(range: f64) -> impl Fn(&f64) -> String {
    let decimals = if range >= 20.0 {
        0
    } else if range >= 2.0 {
        1
    } else if range >= 0.2 {
        2
    } else {
        3
    };
    move |v: &f64| format!("{v:.decimals$}")
}

fn font(size: u32) -> FontDesc<'static> {
    (FAMILY, size as f64).into_font()
}

type R<T> = Result<T, String>;

type Coord =
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>;

/// A right-hand axis: its top value, description and label formatter.
type RightAxis<'f> = (f64, &'f str, &'f dyn Fn(&f64) -> String);

/// A panel with seconds along x and `0..ymax` up, titled and gridded in the house style:
/// what the power and activity panels share (they differ in caption, unit and y labels),
/// with a second y axis on the right when `right` is given (CPU time in cores).
fn time_panel<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    caption: &str,
    (x0, x1): (f64, f64),
    ymax: f64,
    y_desc: &str,
    y_labels: &dyn Fn(&f64) -> String,
    right: Option<RightAxis<'_>>,
) -> R<plotters::chart::DualCoordChartContext<'a, DB, Coord, Coord>> {
    let chart = ChartBuilder::on(area)
        .caption(caption, font(18))
        .margin_left(10)
        .margin_right(20)
        .margin_top(10)
        .x_label_area_size(42)
        .y_label_area_size(70)
        .right_y_label_area_size(if right.is_some() { 62 } else { 0 })
        .build_cartesian_2d(x0..x1, 0f64..ymax)
        .map_err(pe)?;
    // The secondary coordinates take the right label area, so that the primary axis is
    // labelled on the left only.
    let mut chart = chart.set_secondary_coord(x0..x1, 0f64..right.map_or(1.0, |r| r.0));
    chart
        .configure_mesh()
        .x_desc("time since the trace's start (s)")
        .y_desc(y_desc)
        .x_label_formatter(&tick_format(x1 - x0))
        .y_label_formatter(y_labels)
        .label_style(font(13))
        .axis_desc_style(font(14))
        .light_line_style(TRANSPARENT)
        .bold_line_style(RGBColor(215, 215, 215))
        .draw()
        .map_err(pe)?;
    if let Some((_, desc, labels)) = right {
        chart
            .configure_secondary_axes()
            .y_desc(desc)
            .y_label_formatter(labels)
            .label_style(font(13))
            .axis_desc_style(font(14))
            .draw()
            .map_err(pe)?;
    }
    Ok(chart)
}

fn pe<E: std::fmt::Display>(e: E) -> String {
    format!("drawing failed: {e}")
}

/// Splits a decimated line at its breaks (NaN).
fn segments(points: Vec<(u64, f64)>, data: &PlotData) -> Vec<Vec<(f64, f64)>> {
    let mut out = vec![Vec::new()];
    for (t, v) in points {
        if v.is_finite() {
            out.last_mut().expect("non-empty").push((data.x(t), v));
        } else if !out.last().expect("non-empty").is_empty() {
            out.push(Vec::new());
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

fn shade_spans<DB: DrawingBackend>(
    chart: &mut ChartContext<
        '_,
        DB,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
    data: &PlotData,
    y: (f64, f64),
    alpha: f64,
) -> R<()> {
    let (x0, x1) = (data.x(data.window.0), data.x(data.window.1));
    chart
        .draw_series(data.spans.iter().map(|(s, v)| {
            let a = data.x(s.start_ns).max(x0);
            let b = data.x(s.end_ns).min(x1);
            Rectangle::new([(a, y.0), (b, y.1)], verdict_color(*v).mix(alpha).filled())
        }))
        .map_err(pe)?;
    Ok(())
}

/// Puts spans (sorted by start) into lanes in which they do not overlap; returns each
/// span's lane and the number of lanes.
pub fn span_lanes(spans: &[(Span, Verdict)]) -> (Vec<usize>, usize) {
    let mut ends: Vec<u64> = Vec::new();
    let lanes = spans
        .iter()
        .map(|(s, _)| match ends.iter().position(|&e| e <= s.start_ns) {
            Some(l) => {
                ends[l] = s.end_ns;
                l
            }
            None => {
                ends.push(s.end_ns);
                ends.len() - 1
            }
        })
        .collect();
    (lanes, ends.len())
}

/// What a time panel draws.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Panel {
    /// Power lines and their idle levels, in W.
    Power,
    /// Utilisation, activity and CPU time, in %.
    Activity,
}

/// Rough width of a legend entry's text in pixels at 13 px (DejaVu Sans averages a little
/// over half an em), to place the legend box.
fn legend_text_px(text: &str) -> f64 {
    text.chars().count() as f64 * 7.4
}

/// Draws a panel with time along x. The `primary` panel (the topmost) carries the spans:
/// lanes or shading, their labels, the verdict legend and the mark ticks; the other only
/// shading. Returns the lines drawn and the idle levels drawn.
fn draw_time_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    data: &PlotData,
    panel: Panel,
    primary: bool,
) -> R<(usize, Vec<(String, f64)>)> {
    let (x0, x1) = (data.x(data.window.0), data.x(data.window.1));
    let all_lines = match panel {
        Panel::Power => &data.power,
        Panel::Activity => &data.activity,
    };
    // CPU time rates (cores) get an axis of their own, on the right: a process using 13
    // cores must not flatten the 0-100 % lines.
    let (cores, lines): (Vec<&Series>, Vec<&Series>) =
        all_lines.iter().partition(|s| s.unit == CORES);
    let idle_w: Vec<Option<f64>> = match panel {
        Panel::Power => data.idle_w.clone(),
        Panel::Activity => vec![None; lines.len()],
    };
    let mut top = 0.0f64;
    for (s, idle) in lines.iter().zip(&idle_w) {
        for (t, v) in s.t_ns.iter().zip(&s.values) {
            if *t >= data.window.0 && *t <= data.window.1 && v.is_finite() {
                top = top.max(*v);
            }
        }
        if let Some(w) = *idle {
            top = top.max(w);
        }
    }
    let data_top = match panel {
        Panel::Power if top > 0.0 => top * 1.12,
        Panel::Power => 10.0,
        Panel::Activity if top > 100.0 => top * 1.05,
        Panel::Activity => 105.0,
    };
    // Overlapping spans (concurrent requests) cannot share full-height shading: they are
    // drawn as bars in lanes, in a band above the data.
    let (lanes, n_lanes) = span_lanes(&data.spans);
    let band = if primary && n_lanes > 1 {
        (0.045 * n_lanes as f64).clamp(0.15, 0.45)
    } else {
        0.0
    };
    let ymax = data_top / (1.0 - band);
    let band_lo = data_top;
    let y_labels = tick_format(ymax);
    let (caption, y_desc) = match panel {
        Panel::Power => ("Power per device", "power (W)"),
        Panel::Activity => ("Utilisation, activity and CPU time", "busy (%)"),
    };
    // No values along the band of span lanes.
    let mut top_cores = 0.0f64;
    for s in &cores {
        for v in s.values_in(data.window.0, data.window.1) {
            top_cores = top_cores.max(v);
        }
    }
    let cores_max = (top_cores * 1.12).max(1.0) / (1.0 - band);
    let cores_band_lo = cores_max * (1.0 - band);
    let cores_ticks = tick_format(cores_max);
    let cores_labels = |v: &f64| {
        if *v <= cores_band_lo + 1e-9 {
            cores_ticks(v)
        } else {
            String::new()
        }
    };
    let mut dual = time_panel(
        area,
        caption,
        (x0, x1),
        ymax,
        y_desc,
        &|v: &f64| {
            if *v <= band_lo + 1e-9 {
                y_labels(v)
            } else {
                String::new()
            }
        },
        (!cores.is_empty()).then_some((
            cores_max,
            "CPU time (cores)",
            &cores_labels as &dyn Fn(&f64) -> String,
        )),
    )?;
    let chart = &mut *dual;
    let (plot_w_px, plot_h_px) = {
        let (w, h) = chart.plotting_area().dim_in_pixel();
        (w as f64, h as f64)
    };
    let px_per_s = plot_w_px / (x1 - x0).max(1e-9);
    let label_font = font(12).color(&RGBColor(60, 60, 60));
    let mut legend_texts: Vec<String> = Vec::new();
    if !primary {
        if n_lanes <= 1 {
            shade_spans(chart, data, (0.0, ymax), 0.12)?;
        }
    } else if n_lanes <= 1 {
        shade_spans(chart, data, (0.0, ymax), 0.18)?;
    } else {
        let lane_h = (ymax - band_lo) / n_lanes as f64;
        chart
            .draw_series(data.spans.iter().zip(&lanes).map(|((s, v), &l)| {
                let a = data.x(s.start_ns).max(x0);
                let b = data.x(s.end_ns).min(x1).max(a + 1.5 / px_per_s);
                let y0 = band_lo + lane_h * l as f64;
                Rectangle::new(
                    [(a, y0 + lane_h * 0.1), (b, y0 + lane_h * 0.9)],
                    verdict_color(*v).mix(0.6).filled(),
                )
            }))
            .map_err(pe)?;
        // Labels inside the bars, where the lanes are tall and the bars long enough.
        let lane_px = lane_h / ymax * plot_h_px;
        if lane_px >= 13.0 {
            for ((s, _), &l) in data.spans.iter().zip(&lanes) {
                let a = data.x(s.start_ns).max(x0);
                let b = data.x(s.end_ns).min(x1);
                let text = s.label();
                if (b - a) * px_per_s >= text.chars().count() as f64 * 7.0 + 6.0 {
                    let y = band_lo + lane_h * (l as f64 + 0.85);
                    chart
                        .draw_series(std::iter::once(Text::new(
                            text,
                            (a + 3.0 / px_per_s, y),
                            font(11).color(&WHITE),
                        )))
                        .map_err(pe)?;
                }
            }
        }
    }
    if primary {
        // The state timeline: a strip along the bottom, in the verdicts' colours.
        if !data.states.is_empty() {
            let strip = ymax * 0.025;
            let text = "machine state (bottom strip)";
            legend_texts.push(text.into());
            chart
                .draw_series(data.states.iter().filter_map(|&(p, q, v)| {
                    let a = data.x(p).max(x0);
                    let b = data.x(q).min(x1);
                    (b > a)
                        .then(|| Rectangle::new([(a, 0.0), (b, strip)], verdict_color(v).filled()))
                }))
                .map_err(pe)?
                .label(text)
                .legend(|(x, y)| {
                    Rectangle::new(
                        [(x, y - 3), (x + 18, y + 3)],
                        verdict_color(Verdict::GpuCompute).filled(),
                    )
                });
        }
        // Verdict legend entries (only verdicts present).
        for v in Verdict::ALL {
            let n = data.spans.iter().filter(|(_, x)| *x == v).count();
            if n == 0 {
                continue;
            }
            let c = verdict_color(v);
            let text = format!("span: {} ({n})", v.name());
            legend_texts.push(text.clone());
            chart
                .draw_series(std::iter::empty::<Rectangle<(f64, f64)>>())
                .map_err(pe)?
                .label(text)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 6), (x + 18, y + 6)], c.mix(0.35).filled())
                });
        }
        // Mark ticks along the bottom.
        let tick = ymax * 0.03;
        chart
            .draw_series(data.marks_ns.iter().map(|&t| {
                let x = data.x(t);
                PathElement::new(
                    vec![(x, 0.0), (x, tick)],
                    RGBColor(90, 90, 90).stroke_width(1),
                )
            }))
            .map_err(pe)?;
        // Labels of full-height spans, at the top, where they fit.
        if n_lanes <= 1 {
            let mut last_label_end = f64::NEG_INFINITY;
            for (s, _) in &data.spans {
                let a = data.x(s.start_ns).max(x0);
                let b = data.x(s.end_ns).min(x1);
                let text = s.label();
                let text_px = text.chars().count() as f64 * 7.0 + 6.0;
                let span_px = (b - a) * px_per_s;
                if span_px >= text_px && a * px_per_s >= last_label_end {
                    chart
                        .draw_series(std::iter::once(Text::new(
                            text,
                            (a + 3.0 / px_per_s, ymax * 0.985),
                            label_font.clone(),
                        )))
                        .map_err(pe)?;
                    last_label_end = a * px_per_s + text_px;
                }
            }
        }
    }
    // The lines.
    let buckets = plot_w_px.max(100.0) as usize;
    let colors: &[RGBColor] = match panel {
        Panel::Power => &POWER_COLORS,
        Panel::Activity => &ACTIVITY_COLORS,
    };
    let mut idle_drawn = Vec::new();
    for (i, s) in lines.iter().enumerate() {
        let color = colors[i % colors.len()];
        let pts = decimate(&s.t_ns, &s.values, data.window.0, data.window.1, buckets);
        for (k, seg) in segments(pts, data).into_iter().enumerate() {
            let anno = chart
                .draw_series(LineSeries::new(seg, color.stroke_width(1)))
                .map_err(pe)?;
            if k == 0 {
                legend_texts.push(s.label.clone());
                anno.label(s.label.clone()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
            }
        }
        if let Some(w) = idle_w[i] {
            let anno = chart
                .draw_series(DashedLineSeries::new(
                    vec![(x0, w), (x1, w)],
                    10,
                    6,
                    color.mix(0.8).stroke_width(2),
                ))
                .map_err(pe)?;
            let text = format!("{} idle {w:.1} W", s.device);
            legend_texts.push(text.clone());
            anno.label(text).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 7, y)], color.stroke_width(2))
            });
            idle_drawn.push((s.device.clone(), w));
        }
    }
    if all_lines.is_empty() {
        chart
            .draw_series(std::iter::once(Text::new(
                "this trace has no power or energy channel",
                (x0 + (x1 - x0) * 0.3, ymax * 0.5),
                font(16),
            )))
            .map_err(pe)?;
    }
    // The legend, top right: in the panel with the spans, below their lanes or labels, so
    // that it never hides them.
    let position = if primary {
        for s in &cores {
            legend_texts.push(s.label.clone());
        }
        let widest = legend_texts
            .iter()
            .map(|t| legend_text_px(t))
            .fold(0.0, f64::max);
        let box_w = widest + 18.0 + 8.0 + 2.0 * 12.0;
        let below = if n_lanes > 1 {
            band * plot_h_px
        } else {
            18.0 // the row of span labels
        };
        SeriesLabelPosition::Coordinate(
            (plot_w_px - box_w - 12.0).max(0.0) as i32,
            (below + 6.0) as i32,
        )
    } else {
        SeriesLabelPosition::UpperRight
    };
    for (i, s) in cores.iter().enumerate() {
        let color = colors[(lines.len() + i) % colors.len()];
        let pts = decimate(&s.t_ns, &s.values, data.window.0, data.window.1, buckets);
        for (k, seg) in segments(pts, data).into_iter().enumerate() {
            let anno = dual
                .draw_secondary_series(LineSeries::new(seg, color.stroke_width(2)))
                .map_err(pe)?;
            if k == 0 {
                anno.label(s.label.clone()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
            }
        }
    }
    draw_legend(&mut dual, position)?;
    Ok((all_lines.len(), idle_drawn))
}

fn draw_legend<'a, DB: DrawingBackend + 'a>(
    chart: &mut ChartContext<
        'a,
        DB,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
    position: SeriesLabelPosition,
) -> R<()> {
    chart
        .configure_series_labels()
        .position(position)
        .margin(12)
        .label_font(font(13))
        .background_style(WHITE.mix(0.88))
        .border_style(RGBColor(160, 160, 160))
        .draw()
        .map_err(pe)?;
    Ok(())
}

/// The spans the histogram counts: those of the most numerous span name (durations of
/// different spans do not belong in one distribution).
pub fn histogram_spans(spans: &[(Span, Verdict)]) -> (String, Vec<&(Span, Verdict)>) {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for (s, _) in spans {
        match counts.iter_mut().find(|(n, _)| *n == s.name) {
            Some(c) => c.1 += 1,
            None => counts.push((&s.name, 1)),
        }
    }
    let name = counts
        .iter()
        .max_by_key(|(_, n)| *n)
        .map(|(n, _)| n.to_string())
        .unwrap_or_default();
    let chosen = spans.iter().filter(|(s, _)| s.name == name).collect();
    (name, chosen)
}

fn draw_histogram<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, data: &PlotData) -> R<()> {
    let (name, spans) = histogram_spans(&data.spans);
    let mut d: Vec<f64> = spans.iter().map(|(s, _)| s.duration_s()).collect();
    d.sort_by(f64::total_cmp);
    let max = *d.last().unwrap_or(&0.0);
    let (scale, unit) = if max >= 10.0 { (1.0, "s") } else { (1e3, "ms") };
    let min = d.first().copied().unwrap_or(0.0);
    // Durations over more than a factor of 20 (a cold first request among warm ones) are
    // binned on a log axis, so the cluster and the outlier both show.
    let log = min > 0.0 && max / min > 20.0;
    let to_axis = move |secs: f64| {
        let x = secs * scale;
        if log { x.log10() } else { x }
    };
    let (lo, hi) = (to_axis(min), to_axis(max));
    let n_bins = ((d.len() as f64).sqrt().ceil() as usize * 2).clamp(8, 60);
    let (lo, hi) = if hi - lo < 1e-9 {
        let pad = if log {
            0.05
        } else {
            0.5f64.max(hi.abs() * 0.05)
        };
        (lo - pad, hi + pad)
    } else {
        let pad = (hi - lo) * 0.04;
        (if log { lo - pad } else { (lo - pad).max(0.0) }, hi + pad)
    };
    let width = (hi - lo) / n_bins as f64;
    let mut counts = vec![[0usize; Verdict::ALL.len()]; n_bins];
    for (s, v) in &spans {
        let x = to_axis(s.duration_s());
        let b = (((x - lo) / width).max(0.0) as usize).min(n_bins - 1);
        let k = Verdict::ALL.iter().position(|a| a == v).unwrap_or(3);
        counts[b][k] += 1;
    }
    let tallest = counts
        .iter()
        .map(|c| c.iter().sum::<usize>())
        .max()
        .unwrap_or(1) as f64;
    // Head room for the legend above the tallest bar.
    let ymax = tallest * 1.6 + 0.5;
    let (p50s, p90s) = (quantile_sorted(&d, 0.5), quantile_sorted(&d, 0.9));
    let (p50, p90) = (to_axis(p50s), to_axis(p90s));
    let caption = format!(
        "Durations of {name} spans — n={}, median {:.1} {unit}, p90 {:.1} {unit}{}",
        d.len(),
        p50s * scale,
        p90s * scale,
        if log { " (log axis)" } else { "" }
    );
    let linear_labels = tick_format(hi - lo);
    let x_labels = move |u: &f64| {
        if log {
            let x = 10f64.powf(*u);
            let dec = if x >= 10.0 {
                0
            } else if x >= 1.0 {
                1
            } else {
                2
            };
            format!("{x:.dec$}")
        } else {
            linear_labels(u)
        }
    };
    let mut chart = ChartBuilder::on(area)
        .caption(caption, font(18))
        .margin_left(10)
        .margin_right(20)
        .margin_top(10)
        .x_label_area_size(42)
        .y_label_area_size(70)
        .build_cartesian_2d(lo..hi, 0f64..ymax)
        .map_err(pe)?;
    chart
        .configure_mesh()
        .x_desc(format!("span duration ({unit})"))
        .y_desc("spans")
        .x_label_formatter(&x_labels)
        // Whole spans only: a tick between two counts would repeat a label.
        .y_label_formatter(&|v: &f64| {
            if (v - v.round()).abs() < 1e-9 {
                format!("{v:.0}")
            } else {
                String::new()
            }
        })
        .label_style(font(13))
        .axis_desc_style(font(14))
        .light_line_style(TRANSPARENT)
        .bold_line_style(RGBColor(215, 215, 215))
        .draw()
        .map_err(pe)?;
    for (k, v) in Verdict::ALL.iter().enumerate() {
        let c = verdict_color(*v);
        let total: usize = counts.iter().map(|b| b[k]).sum();
        let bars: Vec<Rectangle<(f64, f64)>> = counts
            .iter()
            .enumerate()
            .filter(|(_, b)| b[k] > 0)
            .map(|(i, b)| {
                let below: usize = b[..k].iter().sum();
                let x = lo + i as f64 * width;
                Rectangle::new(
                    [
                        (x + width * 0.06, below as f64),
                        (x + width * 0.94, (below + b[k]) as f64),
                    ],
                    c.mix(0.75).filled(),
                )
            })
            .collect();
        let anno = chart.draw_series(bars).map_err(pe)?;
        if total > 0 {
            anno.label(format!("{} ({total})", v.name()))
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 6), (x + 18, y + 6)], c.mix(0.75).filled())
                });
        }
    }
    // The median's label left of its line, the p90's right of its own: the median is never
    // right of the p90, so however close the two lines are the labels never overlap.
    let label_y = tallest * 1.05 + 0.3;
    for (q, name, hpos, dx) in [
        (p50, "median", HPos::Right, -0.1),
        (p90, "p90", HPos::Left, 0.1),
    ] {
        chart
            .draw_series(DashedLineSeries::new(
                vec![(q, 0.0), (q, ymax)],
                6,
                4,
                BLACK.stroke_width(1),
            ))
            .map_err(pe)?;
        chart
            .draw_series(std::iter::once(Text::new(
                name.to_string(),
                (q + width * dx, label_y),
                TextStyle::from(font(12)).pos(Pos::new(hpos, VPos::Top)),
            )))
            .map_err(pe)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .margin(12)
        .label_font(font(13))
        .background_style(WHITE.mix(0.88))
        .border_style(RGBColor(160, 160, 160))
        .draw()
        .map_err(pe)?;
    Ok(())
}

const TITLE_PX: u32 = 64;
const POWER_PX: u32 = 430;
const ACTIVITY_PX: u32 = 270;
const HIST_PX: u32 = 330;

fn layout(data: &PlotData, opts: &PlotOptions) -> (u32, u32, bool, bool) {
    let activity = !data.activity.is_empty();
    let hist = data.show_histogram(opts.histogram);
    // The activity panel takes the power panel's place when there is no power line.
    let h = TITLE_PX
        + POWER_PX
        + if activity && !data.power.is_empty() {
            ACTIVITY_PX
        } else {
            0
        }
        + if hist { HIST_PX } else { 0 };
    (opts.width, opts.height.unwrap_or(h), activity, hist)
}

fn draw_all<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    data: &PlotData,
    activity: bool,
    hist: bool,
) -> R<PlotSummary> {
    root.fill(&WHITE).map_err(pe)?;
    let (w, h) = root.dim_in_pixel();
    let (head, body) = root.split_vertically(TITLE_PX);
    head.draw_text(&data.title, &font(22).color(&BLACK), (16, 10))
        .map_err(pe)?;
    head.draw_text(
        &data.subtitle,
        &font(14).color(&RGBColor(90, 90, 90)),
        (16, 40),
    )
    .map_err(pe)?;
    // Share the body among the panels in proportion to their nominal heights.
    let nominal = POWER_PX
        + if activity && !data.power.is_empty() {
            ACTIVITY_PX
        } else {
            0
        }
        + if hist { HIST_PX } else { 0 };
    let body_h = h.saturating_sub(TITLE_PX) as f64;
    let px = |n: u32| ((n as f64 / nominal as f64) * body_h) as u32;
    let (top_area, rest) = body.split_vertically(px(POWER_PX));
    // Without a power line the activity panel takes the top, with the spans.
    let power = !data.power.is_empty() || !activity;
    let (power_lines, idle) = if power {
        draw_time_panel(&top_area, data, Panel::Power, true)?
    } else {
        draw_time_panel(&top_area, data, Panel::Activity, true)?;
        (0, Vec::new())
    };
    let rest = if activity && power {
        let (a, r) = rest.split_vertically(px(ACTIVITY_PX));
        draw_time_panel(&a, data, Panel::Activity, false)?;
        r
    } else {
        rest
    };
    if hist {
        draw_histogram(&rest, data)?;
    }
    root.present().map_err(pe)?;
    Ok(PlotSummary {
        power_lines,
        activity_lines: if activity { data.activity.len() } else { 0 },
        spans: data.spans.len(),
        verdicts: Verdict::ALL
            .iter()
            .map(|v| (*v, data.spans.iter().filter(|(_, x)| x == v).count()))
            .collect(),
        histogram: hist,
        idle,
        size: (w, h),
    })
}

/// Draws `data` into `path` (SVG or PNG by extension), whole or not at all; an existing
/// `path` is replaced only when `force` (see [`output::persist`]).
pub fn render(
    data: &PlotData,
    opts: &PlotOptions,
    path: &Path,
    force: bool,
) -> Result<PlotSummary, OutputError> {
    let werr = |message: String| OutputError::Write {
        path: path.to_owned(),
        message,
    };
    let format = Format::from_path(path).map_err(OutputError::Destination)?;
    register_font().map_err(werr)?;
    let (w, h, activity, hist) = layout(data, opts);
    if !(200..=20_000).contains(&w) || !(200..=20_000).contains(&h) {
        return Err(OutputError::Destination(format!(
            "a picture of {w}×{h} pixels: width and height must be 200 to 20000"
        )));
    }
    match format {
        Format::Svg => {
            let mut svg = String::new();
            let summary = {
                let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
                draw_all(root, data, activity, hist).map_err(werr)?
            };
            output::write_atomically(path, force, |f| {
                std::io::Write::write_all(f, svg.as_bytes())
            })?;
            Ok(summary)
        }
        Format::Png => {
            let tmp = output::temp_next_to(path)?;
            let summary = {
                let root = BitMapBackend::new(tmp.path(), (w, h)).into_drawing_area();
                draw_all(root, data, activity, hist).map_err(werr)?
            };
            output::persist(tmp, path, force)?;
            Ok(summary)
        }
    }
}

//! `flinch plot`: one picture of a trace (see `flinch_viz::plot`).

use super::load::{check_trace_path, load_trace, spans};
use crate::Failure;
use crate::cli::{HistogramArg, PlotArgs};
use flinch_viz::idle::{Idle, parse_window, resolve_window};
use flinch_viz::output::check_destination;
use flinch_viz::plot::{Format, HistogramMode, PlotData, PlotOptions, render};
use flinch_viz::series::{activity_series, power_series};
use flinch_viz::spans::judge;
use std::path::PathBuf;
use std::process::ExitCode;

fn default_out(trace: &std::path::Path) -> PathBuf {
    let name = trace
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "trace".into());
    let stem = name
        .strip_suffix(".flinch.csv")
        .or_else(|| name.strip_suffix(".csv"))
        .unwrap_or(&name);
    trace.with_file_name(format!("{stem}.png"))
}

pub fn run(a: PlotArgs) -> Result<ExitCode, Failure> {
    let out = a.out.clone().unwrap_or_else(|| default_out(&a.trace));
    Format::from_path(&out).map_err(|e| Failure::new(format!("--out {e}")))?;
    let given_idle = [
        !a.idle_watts.is_empty(),
        a.idle.is_some(),
        a.idle_window.is_some(),
    ];
    if given_idle.iter().filter(|&&g| g).count() > 1 {
        return Err(Failure::new(
            "give one of --idle-watts, --idle and --idle-window, not several",
        ));
    }
    let window = a
        .window
        .as_deref()
        .map(parse_window)
        .transpose()
        .map_err(|e| Failure::new(format!("--window {e}")))?;
    if !(200..=20_000).contains(&a.width) || a.height.is_some_and(|h| !(200..=20_000).contains(&h))
    {
        return Err(Failure::new(
            "--width and --height must be 200 to 20000 pixels",
        ));
    }

    check_trace_path(&a.trace)?;
    check_destination(&out, &a.trace, a.force)?;
    let trace = load_trace(&a.trace, a.quiet)?;
    let set = spans(&trace, &a.spans, a.quiet, false)?;
    let power = power_series(&trace);
    let activity = activity_series(&trace);
    let window = match &window {
        Some((x, y)) => {
            Some(resolve_window(&trace, x.as_ref(), y.as_ref(), "--window").map_err(Failure::new)?)
        }
        None => None,
    };
    let idle = if !a.idle_watts.is_empty() {
        Some(Idle::from_watts(&trace, &a.idle_watts).map_err(Failure::new)?)
    } else if let Some(p) = &a.idle {
        Some(Idle::read_file(p).map_err(Failure::new)?)
    } else if let Some(w) = &a.idle_window {
        let (idle, warnings) = Idle::from_window(&trace, w).map_err(Failure::new)?;
        if !a.quiet {
            for w in warnings {
                eprintln!("flinch: note: the idle window was not idle: {w}");
            }
        }
        Some(idle)
    } else {
        Idle::from_header(&trace).map_err(Failure::new)?
    };
    let range = window.or_else(|| trace.time_range_ns());
    let judged = judge(&trace, &set, idle.as_ref(), range);
    let opts = PlotOptions {
        width: a.width,
        height: a.height,
        title: a.title.clone(),
        window,
        histogram: match a.histogram {
            HistogramArg::Auto => HistogramMode::Auto,
            HistogramArg::Always => HistogramMode::Always,
            HistogramArg::Never => HistogramMode::Never,
        },
    };
    if power.is_empty() && !a.quiet {
        eprintln!(
            "flinch: note: {} has no power channel and no energy counter: {}",
            a.trace.display(),
            if activity.is_empty() {
                "the power panel is empty"
            } else {
                "no power panel, the activity and CPU time panel is on top"
            }
        );
    }
    let mut data = PlotData::new(
        &trace,
        &set,
        &judged.verdicts,
        power,
        activity,
        idle.as_ref(),
        &opts,
    );
    data.states = judged.states;
    let s = render(&data, &opts, &out, a.force)?;
    let mut parts = vec![format!("{} power line(s)", s.power_lines)];
    if s.activity_lines > 0 {
        parts.push(format!("{} activity line(s)", s.activity_lines));
    }
    if s.spans > 0 {
        let v: Vec<String> = s
            .verdicts
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(v, n)| format!("{} {n}", v.name()))
            .collect();
        parts.push(format!("{} span(s): {}", s.spans, v.join(", ")));
    }
    for (d, w) in &s.idle {
        parts.push(format!("{d} idle {w:.1} W"));
    }
    if s.histogram {
        parts.push("histogram".into());
    }
    println!(
        "wrote {} ({}×{} px): {}",
        out.display(),
        s.size.0,
        s.size.1,
        parts.join(", ")
    );
    Ok(ExitCode::SUCCESS)
}

//! `flinch calibrate`: record the machine left alone, profile every channel, refuse (or
//! warn loudly) when it was not idle.

use crate::Failure;
use crate::cli::CalibrateArgs;
use flinch_analysis::idle::{ChannelIdle, IdleProfile, MIN_RATE_CHUNK_NS};
use flinch_core::ChannelKind;
use flinch_core::clock::{Clock, MonotonicClock};
use flinch_core::trace::read_trace;
use flinch_record::recorder::{Recorder, RecorderConfig, RecordingSetup};
use flinch_viz::output::{check_output, write_atomically};
use indicatif::{ProgressBar, ProgressStyle};
use signal_hook::consts::{SIGINT, SIGTERM};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Removes the scratch trace when calibration ends, however it ends.
struct Scratch(Option<PathBuf>);

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn fmt_num(x: f64) -> String {
    if x.abs() >= 100.0 {
        format!("{x:.1}")
    } else if x.abs() >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.4}")
    }
}

/// The profile as a table.
pub fn render(p: &IdleProfile) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<30} {:>6} {:>10} {:>10} {:>10} {:>10} {:>9} {:>7}",
        "channel", "unit", "mean", "median", "p5", "p95", "std", "n"
    );
    let row = |s: &mut String, name: &str, c: &ChannelIdle| {
        let _ = writeln!(
            s,
            "{:<30} {:>6} {:>10} {:>10} {:>10} {:>10} {:>9} {:>7}",
            name,
            c.unit,
            fmt_num(c.mean),
            fmt_num(c.median),
            fmt_num(c.p5),
            fmt_num(c.p95),
            fmt_num(c.std),
            c.samples
        );
    };
    for (name, c) in &p.channels {
        row(&mut s, name, c);
    }
    s
}

/// The fewest values of each channel a profile is made from: enough for its p5/p95 and for
/// the drift check's thirds (a handful of samples would pass any idle test).
pub const MIN_CALIBRATION_VALUES: u64 = 10;

/// How long a calibration must run for every channel of `sources` to give
/// [`MIN_CALIBRATION_VALUES`] values, and the channel that needs it: a gauge gives a value
/// per update (or per poll, when polled more slowly than it updates), a counter one rate per
/// chunk of at least [`MIN_RATE_CHUNK_NS`] and two updates.
pub fn shortest_calibration(
    sources: &[Box<dyn flinch_core::Source>],
    interval: Duration,
) -> Option<(Duration, String, Duration)> {
    let mut worst: Option<(Duration, String, Duration)> = None;
    for s in sources {
        let info = s.info();
        let poll = s.interval().unwrap_or(interval);
        // A source that returns several values of a channel per poll (a driver's sample
        // buffer) gives one per update, however rarely it is polled.
        let batched = s.max_readings_per_poll() > info.channels.len();
        for c in &info.channels {
            let update = c.update_period_ns.map(Duration::from_nanos);
            let spacing = match update {
                Some(u) if batched => u,
                Some(u) => u.max(poll),
                None => poll,
            };
            let per_value = match c.kind {
                ChannelKind::Gauge => spacing,
                ChannelKind::Counter(_) => Duration::from_nanos(MIN_RATE_CHUNK_NS)
                    .max(2 * update.unwrap_or_default())
                    .max(spacing),
            };
            let need = per_value * MIN_CALIBRATION_VALUES as u32;
            if worst.as_ref().is_none_or(|(w, _, _)| need > *w) {
                worst = Some((need, c.name.clone(), per_value));
            }
        }
    }
    worst
}

pub fn run(a: CalibrateArgs) -> Result<ExitCode, Failure> {
    check_output(&a.out, a.force)?;
    super::check_interval(a.interval)?;
    let backends = crate::backends::Backends::build(&a.backends, false)?;
    let ctx = flinch_core::backend::BackendContext::new(a.interval);
    let (sources, used) = super::record::open_sources(&backends, &a.sources, &ctx)?;
    if let Some((need, channel, per_value)) = shortest_calibration(&sources, a.interval)
        && a.seconds < need
    {
        return Err(Failure::new(format!(
            "--seconds {}: too short for a profile of {}: its slowest channel, {channel}, gives \
             a value every {}, and a profile needs {MIN_CALIBRATION_VALUES} of them; calibrate \
             for at least {} (the default is 30s)",
            humantime::format_duration(a.seconds),
            used.join(", "),
            humantime::format_duration(per_value),
            humantime::format_duration(Duration::from_secs(need.as_secs_f64().ceil() as u64))
        )));
    }

    let (trace_path, scratch) = match &a.keep_trace {
        Some(p) => (p.clone(), Scratch(None)),
        None => {
            let p = std::env::temp_dir().join(format!(
                "flinch-calibrate-{}-{}.flinch.csv",
                std::process::id(),
                flinch_core::clock::monotonic_ns()
            ));
            (p.clone(), Scratch(Some(p)))
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())
            .map_err(|e| Failure::new(format!("cannot install signal handlers: {e}")))?;
    }
    let clock: Arc<dyn Clock> = Arc::new(MonotonicClock);
    let mut setup = RecordingSetup::new(trace_path.clone(), sources);
    setup.force = a.keep_trace.is_none() || a.force;
    setup.argv = std::env::args().collect();
    let config = RecorderConfig {
        interval: a.interval,
        ..Default::default()
    };
    let rec = Recorder::start(setup, config, clock)?;

    let total = a.seconds;
    if !a.quiet {
        eprintln!(
            "flinch: calibrating {} for {}: leave the machine alone",
            used.join(", "),
            humantime::format_duration(total)
        );
    }
    let bar = if a.quiet || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        let b = ProgressBar::new(total.as_millis() as u64);
        b.set_style(
            ProgressStyle::with_template(
                "{spinner} idle profile [{bar:40}] {elapsed}/{msg} · {prefix} samples",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        b.set_message(format!("{}s", total.as_secs_f64().round()));
        b
    };
    let started = Instant::now();
    while started.elapsed() < total {
        if stop.load(Ordering::Relaxed) {
            bar.finish_and_clear();
            let _ = rec.stop("signal", None);
            return Err(Failure {
                message: "interrupted: no idle profile written".into(),
                code: 130,
            });
        }
        if let Some(t) = rec.write_trouble().filter(|t| t.gave_up) {
            bar.finish_and_clear();
            let _ = rec.stop("write-error", None);
            return Err(Failure::new(format!(
                "the calibration's recording {} could not be written ({}): no idle profile \
                 written",
                trace_path.display(),
                t.error
            )));
        }
        bar.set_position(started.elapsed().as_millis() as u64);
        bar.set_prefix(rec.stats().samples.load(Ordering::Relaxed).to_string());
        std::thread::sleep(Duration::from_millis(50));
    }
    bar.finish_and_clear();
    let footer = rec.stop("duration", None)?;
    let trace = read_trace(&trace_path)?;
    drop(scratch);
    let start = trace.header.start_anchor.mono_ns;
    let end = footer.end_anchor.mono_ns.max(start + 1);
    let mut profile = IdleProfile::from_trace(&trace, start, end, "calibrate")?;
    if profile.channels.is_empty() {
        return Err(Failure::new(format!(
            "no channel produced samples in {} ({}); see `flinch sources`",
            humantime::format_duration(total),
            profile.warnings.join("; ")
        )));
    }
    let problems = profile.assess();
    if !a.quiet {
        print!("{}", render(&profile));
        let c = &profile.conditions;
        for (k, v) in c.clocks_mhz.iter() {
            println!("condition: {k} {v:.0} MHz");
        }
        for (k, v) in c.temperature_c.iter() {
            println!("condition: {k} {v:.1} C");
        }
        for (k, v) in c.other.iter() {
            println!("condition: {k} {v:.2}");
        }
        for w in profile.warnings.iter().filter(|w| !problems.contains(w)) {
            eprintln!("flinch: note: {w}");
        }
    }
    if !problems.is_empty() {
        let mut msg = String::from("flinch: THE MACHINE WAS NOT IDLE during calibration:\n");
        for p in &problems {
            msg.push_str(&format!("  - {p}\n"));
        }
        eprint!("{msg}");
        let _ = std::io::stderr().flush();
        if !a.allow_busy {
            return Err(Failure {
                message: format!(
                    "not writing {}: re-run with the machine left alone (stop GPU jobs, let \
                     power settle), or pass --allow-busy to write it anyway (marked idle_ok: false)",
                    a.out.display()
                ),
                code: 1,
            });
        }
        eprintln!("flinch: writing it anyway (--allow-busy); it is marked idle_ok: false");
    }
    let text = serde_json::to_string_pretty(&profile)? + "\n";
    write_atomically(&a.out, a.force, |w| w.write_all(text.as_bytes()))?;
    if !a.quiet {
        eprintln!(
            "flinch: wrote {} ({} channels over {:.1} s{})",
            a.out.display(),
            profile.channels.len(),
            profile.duration_s,
            a.keep_trace
                .as_ref()
                .map(|p| format!("; recording kept in {}", p.display()))
                .unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

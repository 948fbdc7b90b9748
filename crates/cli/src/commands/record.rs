//! `flinch record`: sample sources and take marks until the duration ends, a signal
//! arrives, or the wrapped command exits.

use crate::Failure;
use crate::backends::Backends;
use crate::cli::RecordArgs;
use flinch_analysis::idle::IdleProfile;
use flinch_core::backend::BackendContext;
use flinch_core::clock::{Clock, MonotonicClock};
use flinch_core::marks::paths::{MARKS_ENV, default_dir, default_fifo_path};
use flinch_core::trace::Footer;
use flinch_core::{Source, SourceError};
use flinch_record::marks::fifo::ensure_private_dir;
use flinch_record::recorder::{Recorder, RecorderConfig, RecordingSetup};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::SignalsInfo;
use signal_hook::iterator::exfiltrator::origin::WithOrigin;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::{Child, ExitCode};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Writes a line to stderr, ignoring failure. `eprintln!` panics when stderr is closed or
/// its pipe broken (`flinch record ... 2>&1 | head`), and a panic would end the recording
/// and, through the parent-death signal, the wrapped command.
macro_rules! say {
    ($($t:tt)*) => {{
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}

/// The environment variable carrying a `--marks-file` path to the wrapped command.
pub const MARKS_FILE_ENV: &str = "FLINCH_MARKS_FILE";

/// The opened sources and the names of the backends they came from.
type Opened = (Vec<Box<dyn Source>>, Vec<String>);

/// Opens the sources asked for with `--source` (every available one when none is named).
pub fn open_sources(
    backends: &Backends,
    requested: &[String],
    interval: Duration,
) -> Result<Opened, Failure> {
    let ctx = BackendContext::new(interval);
    for n in &backends.notes {
        eprintln!("flinch: note: {n}");
    }
    let mut names: Vec<String> = Vec::new();
    for n in requested {
        if !names.contains(n) {
            names.push(n.clone());
        }
    }
    let mut sources: Vec<Box<dyn Source>> = Vec::new();
    let mut used = Vec::new();
    if names.is_empty() {
        for b in backends.all().iter().filter(|b| b.default_on()) {
            let st = b.status(&ctx);
            if !st.available {
                continue;
            }
            match b.open(&ctx) {
                Ok(s) => {
                    sources.extend(s);
                    used.push(b.name().to_owned());
                }
                Err(e) => eprintln!(
                    "flinch: note: skipping {}: {}",
                    b.name(),
                    flinch_core::error::display_chain(&e)
                ),
            }
        }
        if sources.is_empty() {
            eprintln!(
                "flinch: note: no hardware source is available here (see `flinch sources`); recording the synthetic source"
            );
            names.push("synthetic".into());
        }
    }
    for n in &names {
        let b = backends.get(n)?;
        let opened = b.open(&ctx).map_err(|e: SourceError| {
            Failure::new(format!(
                "source {n} is unavailable: {}",
                flinch_core::error::display_chain(&e)
            ))
        })?;
        if opened.is_empty() {
            return Err(Failure::new(format!(
                "source {n} found nothing to record here"
            )));
        }
        sources.extend(opened);
        used.push(n.clone());
    }
    Ok((sources, used))
}

fn spawn_command(
    cmd: &[String],
    marks_path: Option<&PathBuf>,
    marks_file: Option<&PathBuf>,
) -> std::io::Result<Child> {
    let mut c = std::process::Command::new(&cmd[0]);
    c.args(&cmd[1..]);
    if let Some(p) = marks_path {
        c.env(MARKS_ENV, p);
    }
    if let Some(p) = marks_file {
        c.env(MARKS_FILE_ENV, p);
    }
    // Killed by the kernel if the recorder dies without ending it (SIGKILL, crash). The
    // death signal follows the thread that forks, so this must run on the main thread.
    super::child::spawn_tied_to_us(&mut c)
}

fn exit_code_of(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(sig)) => 128 + sig,
        _ => 1,
    }
}

fn send_signal(child: &Child, sig: rustix::process::Signal) {
    if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
        let _ = rustix::process::kill_process(pid, sig);
    }
}

fn fmt_ms(ns: u64) -> String {
    format!("{:.3} ms", ns as f64 / 1e6)
}

fn summary(out: &std::path::Path, f: &Footer) -> String {
    let mut s = format!(
        "flinch: wrote {}: {} samples, {} marks ({} malformed), {} readings dropped, {} source gaps; ended by {}",
        out.display(),
        f.samples,
        f.marks,
        f.bad_marks,
        f.dropped_readings,
        f.gaps,
        f.ended_by
    );
    for c in &f.cadences {
        s.push_str(&format!(
            "\n  every {}: {} ticks, {} missed, off schedule by p50 {} p99 {} max {}, {} CPU per tick ({})",
            humantime::format_duration(Duration::from_nanos(c.interval_ns)),
            c.ticks,
            c.missed_ticks,
            fmt_ms(c.deviation_p50_ns),
            fmt_ms(c.deviation_p99_ns),
            fmt_ms(c.deviation_max_ns),
            if c.ticks > 0 {
                format!("{:.1} us", c.cpu_ns as f64 / c.ticks as f64 / 1e3)
            } else {
                "-".into()
            },
            c.sources.join(", ")
        ));
    }
    s
}

pub fn run(a: RecordArgs) -> Result<ExitCode, Failure> {
    let backends = Backends::build(&a.backends, !a.command.is_empty())?;
    let idle_profile = match &a.idle {
        Some(p) => {
            let prof = IdleProfile::read(p).map_err(|e| Failure::new(format!("--idle {e}")))?;
            if !prof.idle_ok {
                eprintln!(
                    "flinch: warning: --idle {}: this profile was taken while the machine was not idle ({})",
                    p.display(),
                    prof.warnings.join("; ")
                );
            }
            Some(prof)
        }
        None => None,
    };
    let idle = idle_profile
        .as_ref()
        .map(serde_json::to_value)
        .transpose()?;
    let (sources, used) = open_sources(&backends, &a.sources, a.interval)?;
    if let Some(p) = &idle_profile {
        let infos: Vec<_> = sources.iter().map(|s| s.info().clone()).collect();
        let host = rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned();
        for w in p.coverage_warnings(&infos, &host) {
            eprintln!("flinch: warning: --idle: {w}");
        }
    }

    let fifo = if a.no_fifo {
        None
    } else if let Some(p) = &a.marks_fifo {
        Some(p.clone())
    } else {
        ensure_private_dir(&default_dir())?;
        Some(default_fifo_path())
    };
    // Catch signals before anything is created, so an early Ctrl-C still ends cleanly.
    let mut signals = SignalsInfo::<WithOrigin>::new([SIGINT, SIGTERM])
        .map_err(|e| Failure::new(format!("cannot install signal handlers: {e}")))?;

    let clock: Arc<dyn Clock> = Arc::new(MonotonicClock);
    let setup = RecordingSetup {
        out: a.out.clone(),
        force: a.force,
        sources,
        marks_fifo: fifo.clone(),
        marks_file: a.marks_file.clone(),
        argv: std::env::args().collect(),
        command: a.command.clone(),
        meta: a.meta.iter().cloned().collect(),
        idle,
        observer: None,
    };
    let config = RecorderConfig {
        interval: a.interval,
        ..Default::default()
    };
    let rec = Recorder::start(setup, config, clock)?;
    if !a.quiet {
        let marks = match (&fifo, &a.marks_file) {
            (Some(f), Some(m)) => format!("FIFO {} and file {}", f.display(), m.display()),
            (Some(f), None) => format!("FIFO {}", f.display()),
            (None, Some(m)) => format!("file {}", m.display()),
            (None, None) => "none".into(),
        };
        say!(
            "flinch: recording {} to {} every {}; marks: {marks}",
            used.join(", "),
            a.out.display(),
            humantime::format_duration(a.interval)
        );
    }

    let mut child = None;
    if !a.command.is_empty() {
        let marks_path = fifo.as_ref().or(a.marks_file.as_ref());
        match spawn_command(&a.command, marks_path, a.marks_file.as_ref()) {
            Ok(c) => {
                backends.follow(c.id());
                rec.event(
                    "command_start",
                    &format!("pid={} {}", c.id(), a.command.join(" ")),
                );
                child = Some(c);
            }
            Err(e) => {
                let out = a.out.clone();
                let _ = rec.stop("command-failed", None);
                let _ = std::fs::remove_file(&out);
                return Err(Failure {
                    message: format!("cannot run {:?}: {e}", a.command[0]),
                    code: 127,
                });
            }
        }
    }

    let show_status = !a.quiet && std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut signal_count = 0u32;
    let mut ended_by = "stopped";
    let mut command_exit = None;
    let mut last_status = Instant::now() - Duration::from_secs(1);
    loop {
        for origin in signals.pending() {
            signal_count += 1;
            let from_process = origin.process.is_some();
            match &child {
                None => ended_by = "signal",
                Some(c) => {
                    use rustix::process::Signal;
                    let sig = if origin.signal == SIGTERM {
                        Signal::TERM
                    } else {
                        Signal::INT
                    };
                    match signal_count {
                        1 if from_process => send_signal(c, sig),
                        1 => {} // from the terminal: the command got it too
                        2 => send_signal(c, Signal::TERM),
                        _ => send_signal(c, Signal::KILL),
                    }
                    if signal_count == 1 {
                        say!(
                            "\nflinch: waiting for the command to exit (signal again to terminate it)"
                        );
                    }
                }
            }
        }
        if let Some(c) = child.as_mut() {
            match c.try_wait() {
                Ok(Some(status)) => {
                    let code = exit_code_of(status);
                    command_exit = Some(code);
                    rec.event("command_exit", &format!("status={code}"));
                    ended_by = if signal_count > 0 {
                        "signal"
                    } else {
                        "command"
                    };
                    break;
                }
                Ok(None) => {}
                Err(e) => {
                    say!("flinch: cannot wait for the command: {e}");
                    ended_by = "error";
                    break;
                }
            }
        } else if signal_count > 0 {
            break;
        }
        if let Some(d) = a.duration
            && started.elapsed() >= d
        {
            ended_by = "duration";
            if let Some(mut c) = child.take() {
                send_signal(&c, rustix::process::Signal::TERM);
                if let Ok(status) = c.wait() {
                    let code = exit_code_of(status);
                    command_exit = Some(code);
                    rec.event(
                        "command_exit",
                        &format!("status={code} (terminated at the end of --duration)"),
                    );
                }
            }
            break;
        }
        if show_status && last_status.elapsed() >= Duration::from_millis(200) {
            last_status = Instant::now();
            let st = rec.stats();
            let _ = write!(
                std::io::stderr(),
                "\r\x1b[2Krecording {:.1} s · {} samples · {} marks · {} dropped",
                rec.elapsed_ns() as f64 / 1e9,
                st.samples.load(Ordering::Relaxed),
                st.marks.load(Ordering::Relaxed),
                st.dropped.load(Ordering::Relaxed)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if show_status {
        let _ = write!(std::io::stderr(), "\r\x1b[2K");
    }
    let out = a.out.clone();
    let footer = rec.stop(ended_by, command_exit)?;
    if !a.quiet {
        say!("{}", summary(&out, &footer));
    }
    Ok(match command_exit {
        Some(code) => ExitCode::from(code.clamp(0, 255) as u8),
        None => ExitCode::SUCCESS,
    })
}

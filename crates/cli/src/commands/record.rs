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
use flinch_prometheus::{
    Exporter, ExporterConfig, MetricsServer, PushConfig, ServerConfig, SpanSpec,
};
use flinch_record::marks::fifo::ensure_private_dir;
use flinch_record::observe::Observer;
use flinch_record::recorder::{Recorder, RecorderConfig, RecordingSetup, TraceTarget};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::SignalsInfo;
use signal_hook::iterator::exfiltrator::origin::WithOrigin;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitCode, Stdio};
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
    stdout_taken: bool,
) -> std::io::Result<Child> {
    let mut c = std::process::Command::new(&cmd[0]);
    c.args(&cmd[1..]);
    if stdout_taken {
        // flinch's standard output carries the trace or the rows: the command's output
        // goes to standard error instead of into them.
        use std::os::fd::AsFd;
        c.stdout(Stdio::from(std::io::stderr().as_fd().try_clone_to_owned()?));
    }
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

/// Where the trace went, for the summary line.
enum Wrote<'a> {
    File(&'a Path),
    Stdout { closed: bool },
    Nothing,
}

fn summary(out: Wrote<'_>, f: &Footer) -> String {
    let mut s = format!(
        "flinch: {}: {} samples, {} marks ({} malformed), {} readings dropped, {} source gaps; ended by {}",
        match out {
            Wrote::File(p) => format!("wrote {}", p.display()),
            Wrote::Stdout { closed: false } => "wrote standard output".to_owned(),
            Wrote::Stdout { closed: true } => {
                "wrote standard output until its reader closed it (no footer there)".to_owned()
            }
            Wrote::Nothing => "recorded (no trace file)".to_owned(),
        },
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

/// The exporter and its endpoint, when --prometheus or --pushgateway is given.
struct Live {
    exporter: Exporter,
    server: Option<MetricsServer>,
}

fn live_export(a: &RecordArgs, idle: Option<&IdleProfile>) -> Result<Option<Live>, Failure> {
    let x = &a.export;
    if x.prometheus.is_none() && x.pushgateway.is_none() {
        if !x.spans.is_empty() {
            return Err(Failure::new(
                "--span measures spans for live export: add --prometheus ADDR or --pushgateway URL \
                 (after the fact, use `flinch analyze TRACE --from A --to B`)",
            ));
        }
        return Ok(None);
    }
    let mut spans: Vec<SpanSpec> = Vec::new();
    for s in &x.spans {
        let spec: SpanSpec = s.parse().map_err(|e| Failure::new(format!("--span {e}")))?;
        if !spans.contains(&spec) {
            spans.push(spec);
        }
    }
    let push = match (&x.pushgateway, &x.job) {
        (Some(url), Some(job)) => {
            let host = rustix::system::uname()
                .nodename()
                .to_string_lossy()
                .into_owned();
            Some(
                PushConfig::new(url, job, &host, x.push_interval)
                    .map_err(|e| Failure::new(e.to_string()))?,
            )
        }
        _ => None,
    };
    let exporter = Exporter::new(ExporterConfig {
        spans,
        idle: idle.cloned(),
        push,
        ..Default::default()
    });
    let server = match &x.prometheus {
        Some(addr) => Some(
            exporter
                .serve(addr, ServerConfig::default())
                .map_err(|e| Failure::new(e.to_string()))?,
        ),
        None => None,
    };
    Ok(Some(Live { exporter, server }))
}

/// Whether standard output's reader has gone (a pipe whose reading end is closed). Polled,
/// so the recording ends at once rather than at its next write.
fn stdout_gone() -> bool {
    use rustix::event::{PollFd, PollFlags, poll};
    let out = std::io::stdout();
    let mut fds = [PollFd::new(&out, PollFlags::OUT)];
    match poll(&mut fds, Some(&rustix::time::Timespec::default())) {
        Ok(n) if n > 0 => fds[0].revents().intersects(PollFlags::ERR | PollFlags::HUP),
        _ => false,
    }
}

/// The least --print interval.
const MIN_PRINT_INTERVAL: Duration = Duration::from_millis(100);

pub fn run(a: RecordArgs) -> Result<ExitCode, Failure> {
    let trace_to_stdout = a.out.as_deref() == Some(Path::new("-"));
    if let Some(p) = a.print {
        if trace_to_stdout {
            return Err(Failure::new(
                "--print writes its rows to standard output, which --out - already takes for \
                 the trace: give --out a file (or drop --print)",
            ));
        }
        let least = MIN_PRINT_INTERVAL.max(a.interval);
        if p < least {
            return Err(Failure::new(format!(
                "--print {}: the interval must be at least {} (100 ms, and no shorter than --interval)",
                humantime::format_duration(p),
                humantime::format_duration(least)
            )));
        }
    }
    let stdout_taken = trace_to_stdout || a.print.is_some();
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
    // The endpoint binds before anything is created, so a busy address fails early.
    let live = live_export(&a, idle_profile.as_ref())?;
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

    let stdout_dup = || {
        use std::os::fd::AsFd;
        std::io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .map(std::fs::File::from)
            .map_err(|e| Failure::new(format!("cannot use standard output: {e}")))
    };
    let trace_target = match &a.out {
        _ if trace_to_stdout => TraceTarget::stdout()
            .map_err(|e| Failure::new(format!("cannot use standard output: {e}")))?,
        Some(p) => TraceTarget::File(p.clone()),
        None => TraceTarget::None,
    };
    let mut observers: Vec<Box<dyn Observer>> =
        live.iter().map(|l| l.exporter.observer()).collect();
    let mut print_status = None;
    if let Some(interval) = a.print {
        let printer = super::print::Printer::new(interval, a.print_format, stdout_dup()?)
            .map_err(|e| Failure::new(format!("cannot start the --print thread: {e}")))?;
        print_status = Some(printer.status());
        observers.push(Box::new(printer));
    }

    let clock: Arc<dyn Clock> = Arc::new(MonotonicClock);
    let setup = RecordingSetup {
        out: trace_target,
        force: a.force,
        sources,
        marks_fifo: fifo.clone(),
        marks_file: a.marks_file.clone(),
        argv: std::env::args().collect(),
        command: a.command.clone(),
        meta: a.meta.iter().cloned().collect(),
        idle,
        observers,
    };
    let defaults = RecorderConfig::default();
    let config = RecorderConfig {
        interval: a.interval,
        // Rows are measured when the writer hands readings over: at least once per row.
        flush_interval: a
            .print
            .map_or(defaults.flush_interval, |p| p.min(defaults.flush_interval)),
        ..defaults
    };
    let rec = Recorder::start(setup, config, clock)?;
    if !a.quiet {
        let marks = match (&fifo, &a.marks_file) {
            (Some(f), Some(m)) => format!("FIFO {} and file {}", f.display(), m.display()),
            (Some(f), None) => format!("FIFO {}", f.display()),
            (None, Some(m)) => format!("file {}", m.display()),
            (None, None) => "none".into(),
        };
        let mut to: Vec<String> = match &a.out {
            _ if trace_to_stdout => vec!["standard output".to_owned()],
            Some(p) => vec![p.display().to_string()],
            None => Vec::new(),
        };
        if let Some(p) = a.print {
            to.push(format!(
                "a row per device every {} on standard output",
                humantime::format_duration(p)
            ));
        }
        if let Some(s) = live.as_ref().and_then(|l| l.server.as_ref()) {
            to.push(format!("http://{}/metrics", s.local_addr()));
        }
        if let Some(u) = &a.export.pushgateway {
            to.push(format!("Pushgateway {u}"));
        }
        say!(
            "flinch: recording {} every {} to {}; marks: {marks}",
            used.join(", "),
            humantime::format_duration(a.interval),
            to.join(" and ")
        );
    }

    let mut child = None;
    if !a.command.is_empty() {
        let marks_path = fifo.as_ref().or(a.marks_file.as_ref());
        match spawn_command(&a.command, marks_path, a.marks_file.as_ref(), stdout_taken) {
            Ok(c) => {
                backends.follow(c.id());
                rec.event(
                    "command_start",
                    &format!("pid={} {}", c.id(), a.command.join(" ")),
                );
                child = Some(c);
            }
            Err(e) => {
                let _ = rec.stop("command-failed", None);
                if let Some(out) = a.out.as_ref().filter(|_| !trace_to_stdout) {
                    let _ = std::fs::remove_file(out);
                }
                return Err(Failure {
                    message: format!("cannot run {:?}: {e}", a.command[0]),
                    code: 127,
                });
            }
        }
    }

    // The status line redraws itself with \r: not over rows printed to the same terminal.
    let show_status = !a.quiet
        && std::io::stderr().is_terminal()
        && !(stdout_taken && std::io::stdout().is_terminal());
    let output_closed = || {
        stdout_taken
            && (rec.output_closed()
                || print_status.as_ref().is_some_and(|p| p.closed())
                || stdout_gone())
    };
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
        let end = if a.duration.is_some_and(|d| started.elapsed() >= d) {
            Some(("duration", "at the end of --duration"))
        } else if output_closed() {
            // `| head`: the reader has what it wanted; end like --duration does.
            Some(("output-closed", "when standard output was closed"))
        } else {
            None
        };
        if let Some((why, when)) = end {
            ended_by = why;
            if let Some(mut c) = child.take() {
                send_signal(&c, rustix::process::Signal::TERM);
                if let Ok(status) = c.wait() {
                    let code = exit_code_of(status);
                    command_exit = Some(code);
                    rec.event(
                        "command_exit",
                        &format!("status={code} (terminated {when})"),
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
    let scrapes_before = live
        .as_ref()
        .and_then(|l| l.server.as_ref())
        .map_or(0, |s| s.scrapes());
    let footer = rec.stop(ended_by, command_exit)?;
    let wrote = match &a.out {
        _ if trace_to_stdout => Wrote::Stdout {
            closed: ended_by == "output-closed" || stdout_gone(),
        },
        Some(p) => Wrote::File(p),
        None => Wrote::Nothing,
    };
    if !a.quiet {
        say!("{}", summary(wrote, &footer));
    }
    if let Some(p) = &print_status {
        if let Some(e) = p.error() {
            say!("flinch: error: --print: {e}");
        }
        if p.dropped_rows() > 0 {
            say!(
                "flinch: warning: --print: {} rows dropped because standard output's reader did not keep up",
                p.dropped_rows()
            );
        }
    }
    if let Some(l) = live {
        for e in l.exporter.push_errors() {
            say!("flinch: warning: {e}");
        }
        if let (Some(s), Some(linger)) = (&l.server, a.export.prometheus_linger) {
            // The final values are in: let the scraper take them before the endpoint goes.
            let scraped = s.wait_for_scrape(s.scrapes().max(scrapes_before), linger);
            if !scraped && !a.quiet {
                say!(
                    "flinch: note: /metrics was not scraped within --prometheus-linger {} after the end",
                    humantime::format_duration(linger)
                );
            }
        }
    }
    Ok(match command_exit {
        Some(code) => ExitCode::from(code.clamp(0, 255) as u8),
        None => ExitCode::SUCCESS,
    })
}

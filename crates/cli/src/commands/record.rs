//! `flinch record`: sample sources and take marks until the duration ends, a signal
//! arrives, or the wrapped command exits.

use super::child::Wrapped;
use crate::Failure;
use crate::backends::Backends;
use crate::cli::RecordArgs;
use flinch_analysis::idle::IdleProfile;
use flinch_core::backend::BackendContext;
use flinch_core::clock::{Clock, MonotonicClock};
use flinch_core::marks::owner::read_recorder_info;
use flinch_core::marks::paths::{
    MARKS_ENV, default_dir, default_fifo_candidates, default_fifo_path,
};
use flinch_core::trace::Footer;
use flinch_core::{Source, SourceError};
use flinch_prometheus::{
    Exporter, ExporterConfig, MetricsServer, PushConfig, ServerConfig, SpanSpec,
};
use flinch_record::marks::fifo::ensure_private_dir;
use flinch_record::observe::Observer;
use flinch_record::recorder::{Recorder, RecorderConfig, RecordingSetup, TraceTarget};
use rustix::process::Signal;
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGWINCH};
use signal_hook::iterator::SignalsInfo;
use signal_hook::iterator::exfiltrator::origin::WithOrigin;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
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

/// The cadence of sources without one of their own when `record` is given no `--interval`.
pub const AUTO_INTERVAL: Duration = Duration::from_millis(100);

/// The environment variable carrying a `--marks-file` path to the wrapped command.
pub const MARKS_FILE_ENV: &str = "FLINCH_MARKS_FILE";

/// The opened sources and the names of the backends they came from.
type Opened = (Vec<Box<dyn Source>>, Vec<String>);

/// Opens the sources asked for with `--source` (every available one when none is named).
pub fn open_sources(
    backends: &Backends,
    requested: &[String],
    ctx: &BackendContext,
) -> Result<Opened, Failure> {
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
            let st = b.status(ctx);
            if !st.available {
                continue;
            }
            match b.open(ctx) {
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
        let opened = b.open(ctx).map_err(|e: SourceError| {
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
) -> std::io::Result<(Wrapped, Option<String>)> {
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
    // Killed by the kernel if the recorder dies without ending it (SIGKILL, crash), and its
    // process group by the guard. The death signal follows the thread that forks, so this
    // must run on the main thread.
    super::child::spawn_wrapped(&mut c)
}

fn exit_code_of(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(sig)) => 128 + sig,
        _ => 1,
    }
}

/// Ends the command (SIGTERM to it and its own process group, SIGKILL after 10 s) and
/// records its exit.
fn end_command(mut c: Wrapped, rec: &Recorder, why: &str) -> Option<i32> {
    c.signal_group(Signal::TERM);
    let t = Instant::now();
    let status = loop {
        match c.child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if t.elapsed() > Duration::from_secs(10) => {
                c.signal_group(Signal::KILL);
                break c.child.wait().ok();
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(_) => break None,
        }
    };
    let code = status.map(exit_code_of);
    if let Some(code) = code {
        rec.event(
            "command_exit",
            &format!("status={code} (terminated: {why})"),
        );
    }
    if let Some(n) = c.finish() {
        rec.event("command_leftovers", &n);
        say!("flinch: note: {n}");
    }
    code
}

/// The signals `record` catches: those ending a recording and those only passed on; and
/// SIGCHLD, so that the wrapped command's exit wakes the main loop, which otherwise sleeps.
const CAUGHT: [i32; 8] = [
    SIGINT, SIGTERM, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2, SIGWINCH, SIGCHLD,
];

fn signal_of(raw: i32) -> Option<Signal> {
    Some(match raw {
        SIGINT => Signal::INT,
        SIGTERM => Signal::TERM,
        SIGQUIT => Signal::QUIT,
        SIGHUP => Signal::HUP,
        SIGUSR1 => Signal::USR1,
        SIGUSR2 => Signal::USR2,
        SIGWINCH => Signal::WINCH,
        _ => return None,
    })
}

fn signal_name(raw: i32) -> &'static str {
    match raw {
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        SIGQUIT => "SIGQUIT",
        SIGHUP => "SIGHUP",
        SIGUSR1 => "SIGUSR1",
        SIGUSR2 => "SIGUSR2",
        SIGWINCH => "SIGWINCH",
        _ => "a signal",
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
    for t in &f.threads {
        s.push_str(&format!(
            "\n  thread {}: {} wake-ups, {} CPU in all ({} per wake-up)",
            t.name,
            t.wakeups,
            fmt_ms(t.cpu_ns),
            if t.wakeups > 0 {
                format!("{:.1} us", t.cpu_ns as f64 / t.wakeups as f64 / 1e3)
            } else {
                "-".into()
            }
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

/// Blocks until standard output's reader has gone (`true`): `poll` with no events asked for
/// still reports `POLLERR` (a pipe without readers) and `POLLHUP` (a socket whose peer
/// closed). On a terminal or a file it never returns; `false` if `poll` itself fails.
fn wait_stdout_gone() -> bool {
    use rustix::event::{PollFd, PollFlags, poll};
    let out = std::io::stdout();
    loop {
        let mut fds = [PollFd::new(&out, PollFlags::empty())];
        match poll(&mut fds, None) {
            Ok(n) if n > 0 && fds[0].revents().intersects(PollFlags::ERR | PollFlags::HUP) => {
                return true;
            }
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(_) => return false,
        }
    }
}

/// What wakes the command loop.
enum Wake {
    Signal(signal_hook::iterator::exfiltrator::origin::Origin),
    OutputClosed,
}

/// The least --print interval.
const MIN_PRINT_INTERVAL: Duration = Duration::from_millis(100);

pub fn run(a: RecordArgs) -> Result<ExitCode, Failure> {
    if let Some(d) = a.interval {
        super::check_interval(d)?;
    }
    let trace_to_stdout = a.out.as_deref() == Some(Path::new("-"));
    if let Some(p) = a.print {
        if trace_to_stdout {
            return Err(Failure::new(
                "--print writes its rows to standard output, which --out - already takes for \
                 the trace: give --out a file (or drop --print)",
            ));
        }
        let least = MIN_PRINT_INTERVAL.max(a.interval.unwrap_or_default());
        if p < least {
            return Err(Failure::new(format!(
                "--print {}: the interval must be at least {} (100 ms, and no shorter than --interval)",
                humantime::format_duration(p),
                humantime::format_duration(least)
            )));
        }
    }
    let stdout_taken = trace_to_stdout || a.print.is_some();
    // What messages call the trace.
    let trace_name = match &a.out {
        _ if trace_to_stdout => "standard output".to_owned(),
        Some(p) => p.display().to_string(),
        None => "(no trace)".to_owned(),
    };
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
    // Without --interval, each source picks its own cadence from its sensor, and the
    // default cadence is for those that have none.
    let ctx = match a.interval {
        Some(d) => BackendContext::new(d),
        None => BackendContext::auto(AUTO_INTERVAL),
    };
    let (sources, _) = open_sources(&backends, &a.sources, &ctx)?;
    let cadence = super::cadences(&sources, ctx.interval);
    let models: Vec<&str> = sources
        .iter()
        .filter(|s| s.info().modelled)
        .map(|s| s.info().name.as_str())
        .collect();
    if !models.is_empty() && models.len() < sources.len() && !a.quiet {
        say!(
            "flinch: note: {} is a model, not a measurement: it is recorded next to the \
             measured sources, but `flinch analyze` and `flinch plot` will not let it decide \
             any verdict",
            models.join(", ")
        );
    }
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
    let mut signals = SignalsInfo::<WithOrigin>::new(CAUGHT)
        .map_err(|e| Failure::new(format!("cannot install signal handlers: {e}")))?;
    let signals_handle = signals.handle();
    let (sig_tx, sig_rx) = std::sync::mpsc::channel();
    let stdout_closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    if stdout_taken {
        // Wakes the loop below the moment standard output's reader goes away (`| head`).
        let (tx, closed) = (sig_tx.clone(), stdout_closed.clone());
        std::thread::Builder::new()
            .name("flinch-stdout".into())
            .spawn(move || {
                if wait_stdout_gone() {
                    closed.store(true, Ordering::Release);
                    let _ = tx.send(Wake::OutputClosed);
                }
            })
            .map_err(|e| Failure::new(format!("cannot start the output watcher: {e}")))?;
    }
    std::thread::Builder::new()
        .name("flinch-signals".into())
        .spawn(move || {
            for origin in signals.forever() {
                if sig_tx.send(Wake::Signal(origin)).is_err() {
                    break;
                }
            }
        })
        .map_err(|e| Failure::new(format!("cannot start the signal thread: {e}")))?;

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
        interval: ctx.interval,
        write_hold: a.write_retry,
        precise_sleep: a.precise_sleep,
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
            Some(_) => vec![trace_name.clone()],
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
            "flinch: recording {cadence} to {}; marks: {marks}",
            to.join(" and ")
        );
    }
    if fifo.is_some() && a.marks_fifo.is_none() {
        // Another recorder of this user on the other default (started with or without
        // XDG_RUNTIME_DIR): a client that sees the other environment sends its marks there.
        for other in default_fifo_candidates()
            .iter()
            .filter(|p| Some(*p) != fifo.as_ref())
        {
            if let Some(r) = read_recorder_info(other, None) {
                say!(
                    "flinch: note: another recorder of yours (pid {}, writing {}) reads the other \
                     default FIFO {}: clients whose XDG_RUNTIME_DIR differs from yours send their \
                     marks there, not here (`flinch mark` says which recorder took a mark)",
                    r.pid,
                    r.trace.as_deref().unwrap_or("?"),
                    other.display()
                );
            }
        }
    }

    let mut child: Option<Wrapped> = None;
    if !a.command.is_empty() {
        let marks_path = fifo.as_ref().or(a.marks_file.as_ref());
        match spawn_command(&a.command, marks_path, a.marks_file.as_ref(), stdout_taken) {
            Ok((c, note)) => {
                backends.follow(c.id());
                rec.event(
                    "command_start",
                    &format!(
                        "pid={} {}{}",
                        c.id(),
                        a.command.join(" "),
                        if c.own_group() {
                            " (in a process group of its own)"
                        } else {
                            ""
                        }
                    ),
                );
                if let Some(n) = note {
                    say!("flinch: warning: {n}");
                    rec.event("command_guard", &n);
                }
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
            && (stdout_closed.load(Ordering::Acquire)
                || rec.output_closed()
                || print_status.as_ref().is_some_and(|p| p.closed()))
    };
    let started = Instant::now();
    // Signals that end a recording (INT, TERM, QUIT; HUP without a command) seen so far.
    let mut ending_signals = 0u32;
    let mut ended_by = "stopped";
    let mut command_exit = None;
    let mut last_status = Instant::now() - Duration::from_secs(1);
    // The write trouble last reported (so that each change is said once).
    let mut trouble_said: Option<(u64, bool)> = None;
    let mut write_failed = false;
    // Sleeps until something happens: a signal, the command's exit (SIGCHLD), the end of
    // --duration, or the next refresh of the status line; no periodic wake-ups otherwise
    // (each costs tens of µs of CPU in a VM). A second's timeout checks the rest (write
    // trouble).
    let mut pending: Vec<signal_hook::iterator::exfiltrator::origin::Origin> = Vec::new();
    loop {
        for origin in pending.drain(..) {
            let raw = origin.signal;
            if raw == SIGCHLD {
                continue; // the command is looked at below
            }
            // From the terminal (the kernel), a signal reaches the whole foreground process
            // group: a command sharing ours has it already.
            let from_process = origin.process.is_some();
            let ends = matches!(raw, SIGINT | SIGTERM | SIGQUIT);
            match &child {
                None if ends || raw == SIGHUP => {
                    ending_signals += 1;
                    ended_by = "signal";
                }
                None => {
                    if raw != SIGWINCH {
                        say!(
                            "flinch: {} ignored: there is no command to pass it to (SIGINT, \
                             SIGTERM or SIGHUP end the recording)",
                            signal_name(raw)
                        );
                    }
                }
                Some(c) => {
                    let reaches_it_anyway = !from_process && !c.own_group();
                    if !ends {
                        // HUP, USR1, USR2, WINCH: passed on; the recording goes on.
                        if !reaches_it_anyway && let Some(sig) = signal_of(raw) {
                            c.signal(sig);
                        }
                        continue;
                    }
                    ending_signals += 1;
                    match ending_signals {
                        1 if reaches_it_anyway => {}
                        1 => {
                            if let Some(sig) = signal_of(raw) {
                                c.signal(sig);
                            }
                        }
                        2 => c.signal_group(Signal::TERM),
                        _ => c.signal_group(Signal::KILL),
                    }
                    if ending_signals == 1 {
                        say!(
                            "\nflinch: waiting for the command to exit (signal again to terminate it)"
                        );
                    }
                }
            }
        }
        match rec.write_trouble() {
            Some(t) if trouble_said != Some((t.since_ns, t.gave_up)) => {
                if show_status {
                    let _ = write!(std::io::stderr(), "\r\x1b[2K");
                }
                if t.gave_up {
                    say!(
                        "flinch: error: {} still cannot be written ({}) after {:.0} s: stopping \
                         the recording; the file keeps everything written before the failure",
                        trace_name,
                        t.error,
                        flinch_core::clock::monotonic_ns().saturating_sub(t.since_ns) as f64 / 1e9
                    );
                } else {
                    say!(
                        "flinch: error: cannot write {}: {}; holding samples and marks in memory \
                         and retrying every second for up to {} (--write-retry) before stopping",
                        trace_name,
                        t.error,
                        humantime::format_duration(a.write_retry)
                    );
                }
                trouble_said = Some((t.since_ns, t.gave_up));
                if t.gave_up {
                    write_failed = true;
                    ended_by = "write-error";
                    if let Some(c) = child.take() {
                        command_exit = end_command(c, &rec, "the trace could not be written");
                    }
                    break;
                }
            }
            None if trouble_said.is_some() => {
                say!(
                    "flinch: writing {} again: the samples and marks held in memory are written",
                    trace_name
                );
                trouble_said = None;
            }
            _ => {}
        }
        if let Some(c) = child.as_mut() {
            match c.child.try_wait() {
                Ok(Some(status)) => {
                    let code = exit_code_of(status);
                    command_exit = Some(code);
                    rec.event("command_exit", &format!("status={code}"));
                    ended_by = if ending_signals > 0 {
                        "signal"
                    } else {
                        "command"
                    };
                    if let Some(n) = child.take().and_then(Wrapped::finish) {
                        rec.event("command_leftovers", &n);
                        say!("flinch: note: {n}");
                    }
                    break;
                }
                Ok(None) => {}
                Err(e) => {
                    say!("flinch: cannot wait for the command: {e}");
                    ended_by = "error";
                    break;
                }
            }
        } else if ending_signals > 0 {
            break;
        }
        let mut wait = Duration::from_secs(1);
        if output_closed() {
            // `| head`: the reader has what it wanted; end as --duration does.
            ended_by = "output-closed";
            if let Some(c) = child.take() {
                command_exit = end_command(c, &rec, "standard output was closed");
            }
            break;
        }
        if let Some(d) = a.duration {
            let left = d.saturating_sub(started.elapsed());
            if left.is_zero() {
                ended_by = "duration";
                if let Some(c) = child.take() {
                    command_exit = end_command(c, &rec, "at the end of --duration");
                }
                break;
            }
            wait = wait.min(left);
        }
        if show_status {
            wait = wait.min(Duration::from_millis(200));
        }
        if show_status && last_status.elapsed() >= Duration::from_millis(200) {
            last_status = Instant::now();
            let st = rec.stats();
            let trouble = match rec.write_trouble() {
                Some(t) => format!(
                    " · WRITE FAILING: {} KiB held in memory, retrying",
                    t.held_bytes.div_ceil(1024)
                ),
                None => String::new(),
            };
            let _ = write!(
                std::io::stderr(),
                "\r\x1b[2Krecording {:.1} s · {} samples · {} marks · {} dropped{trouble}",
                rec.elapsed_ns() as f64 / 1e9,
                st.samples.load(Ordering::Relaxed),
                st.marks.load(Ordering::Relaxed),
                st.dropped.load(Ordering::Relaxed)
            );
        }
        match sig_rx.recv_timeout(wait) {
            Ok(first) => {
                for w in std::iter::once(first).chain(sig_rx.try_iter()) {
                    if let Wake::Signal(origin) = w {
                        pending.push(origin);
                    }
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => std::thread::sleep(wait),
        }
    }
    signals_handle.close();
    if show_status {
        let _ = write!(std::io::stderr(), "\r\x1b[2K");
    }
    let footer = rec.stop(ended_by, command_exit);
    let footer = match footer {
        Ok(f) => f,
        Err(e) if write_failed => {
            return Err(Failure::new(format!("the recording stopped early: {e}")));
        }
        Err(e) => return Err(e.into()),
    };
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
            let scraped = s.wait_for_final_scrape(linger);
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

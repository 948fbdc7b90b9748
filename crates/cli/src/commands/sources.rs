//! `flinch sources`: what each backend offers here, or why it cannot.

use crate::Failure;
use crate::backends::Backends;
use crate::cli::SourcesArgs;
use flinch_core::ChannelKind;
use flinch_core::backend::{BackendContext, BackendStatus};
use flinch_core::clock::MonotonicClock;
use flinch_core::probe::probe_source;
use std::process::ExitCode;
use std::time::Duration;

pub fn run(a: SourcesArgs) -> Result<ExitCode, Failure> {
    if let Some(d) = a.interval {
        super::check_interval(d)?;
    }
    let backends = Backends::build(&a.backends, false)?;
    // As `record` would: an --interval given, or each source at its own cadence.
    let ctx = match a.interval {
        Some(d) => BackendContext::new(d),
        None => BackendContext::auto(super::record::AUTO_INTERVAL),
    };
    let mut statuses: Vec<BackendStatus> = backends.all().iter().map(|b| b.status(&ctx)).collect();
    for st in statuses.iter_mut().filter(|st| st.available) {
        st.notes.extend(backends.notes.iter().cloned());
        if a.probe {
            let notes = probe_notes(&backends, st.name, &ctx);
            st.notes.extend(notes);
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&statuses)?);
    } else {
        print!("{}", render(&statuses, ctx.interval, ctx.interval_given));
    }
    Ok(ExitCode::SUCCESS)
}

fn fmt_ns(ns: u64) -> String {
    if ns >= 1_000_000 {
        format!("{:.1} ms", ns as f64 / 1e6)
    } else {
        format!("{:.1} us", ns as f64 / 1e3)
    }
}

/// Opens `name`'s sources and polls each for a second: what a poll costs, and how often
/// each channel's value changes.
fn probe_notes(backends: &Backends, name: &str, ctx: &BackendContext) -> Vec<String> {
    let opened = match backends.get(name).map(|b| b.open(ctx)) {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return vec![format!(
                "probe: cannot open: {}",
                flinch_core::error::display_chain(&e)
            )];
        }
        Err(e) => return vec![format!("probe: {}", e.message)],
    };
    // Sources of one backend are probed side by side (one GPU's reads wait for nobody).
    std::thread::scope(|s| {
        let handles: Vec<_> = opened
            .into_iter()
            .map(|mut src| {
                s.spawn(move || {
                    probe_source(
                        src.as_mut(),
                        &MonotonicClock,
                        Duration::from_secs(1),
                        Duration::from_millis(1),
                        2000,
                    )
                })
            })
            .collect();
        let mut notes = Vec::new();
        for h in handles {
            let Ok(p) = h.join() else { continue };
            let mut line = format!(
                "probe {}: one poll costs {} ({} polls",
                p.source,
                fmt_ns(p.poll_cost_ns),
                p.polls
            );
            if p.failures > 0 {
                line.push_str(&format!(
                    ", {} failed: {}",
                    p.failures,
                    p.first_error.as_deref().unwrap_or("?")
                ));
            }
            line.push(')');
            for c in &p.channels {
                let changes = match c.change_interval_ns {
                    Some(ns) => format!("changes every {}", fmt_ns(ns)),
                    None if c.readings == 0 => "no readings".into(),
                    None => "did not change".into(),
                };
                line.push_str(&format!("; {} {changes}", c.channel));
            }
            notes.push(line);
        }
        notes
    })
}

fn fmt_period(ns: Option<u64>) -> String {
    match ns {
        None => "-".into(),
        Some(ns) if ns >= 1_000_000_000 => format!("{:.1}s", ns as f64 / 1e9),
        Some(ns) if ns >= 1_000_000 => format!("{}ms", ns / 1_000_000),
        Some(ns) => format!("{}us", ns / 1000),
    }
}

/// The human table; `interval` is the `--interval` the cadences were asked for
/// (`given: false`: none was, and `interval` is the default cadence of sources without one
/// of their own).
pub fn render(statuses: &[BackendStatus], interval: Duration, given: bool) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    for st in statuses {
        let state = if st.available {
            "available"
        } else {
            "unavailable"
        };
        let _ = writeln!(s, "{:<10} {:<12} {}", st.name, state, st.summary);
        if let Some(r) = &st.reason {
            for (i, line) in r.lines().enumerate() {
                let _ = writeln!(s, "{:>23} {line}", if i == 0 { "why:" } else { "" });
            }
        }
        for src in &st.sources {
            let polled = match st.poll_intervals_ns.get(&src.name) {
                Some(&ns) if ns != interval.as_nanos() as u64 => format!(
                    "  polled every {} (its own cadence, whatever --interval)",
                    fmt_period(Some(ns))
                ),
                Some(&ns) if given => {
                    format!("  polled every {} (--interval)", fmt_period(Some(ns)))
                }
                Some(&ns) => format!(
                    "  polled every {} (the default cadence; --interval sets it)",
                    fmt_period(Some(ns))
                ),
                None => String::new(),
            };
            let _ = writeln!(s, "  source {}{polled}", src.name);
            for c in &src.channels {
                let kind = match &c.kind {
                    ChannelKind::Gauge => "gauge".to_string(),
                    ChannelKind::Counter(cs) => match cs.wrap_range {
                        Some(r) => format!("counter, wraps at {r} {}", c.unit),
                        None => "counter, resets on decrease".to_string(),
                    },
                };
                let method = c.method.map(|m| m.name()).unwrap_or("");
                let _ = writeln!(
                    s,
                    "    {:<34} {:<4} {:<16} update {:<7} {kind}",
                    c.name,
                    c.unit.symbol(),
                    method,
                    fmt_period(c.update_period_ns)
                );
            }
        }
        for n in &st.notes {
            let _ = writeln!(s, "  note: {n}");
        }
    }
    s
}

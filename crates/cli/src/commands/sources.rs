//! `flinch sources`: what each backend offers here, or why it cannot.

use crate::Failure;
use crate::backends::{self, BackendStatus};
use crate::cli::SourcesArgs;
use flinch_core::ChannelKind;
use std::process::ExitCode;

pub fn run(a: SourcesArgs) -> Result<ExitCode, Failure> {
    let opts = super::backend_options(&a.backends, None, a.probe)?;
    let statuses: Vec<BackendStatus> = backends::all().iter().map(|b| b.status(&opts)).collect();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&statuses)?);
    } else {
        print!("{}", render(&statuses));
    }
    Ok(ExitCode::SUCCESS)
}

fn fmt_period(ns: Option<u64>) -> String {
    match ns {
        None => "-".into(),
        Some(ns) if ns >= 1_000_000_000 => format!("{:.1}s", ns as f64 / 1e9),
        Some(ns) if ns >= 1_000_000 => format!("{}ms", ns / 1_000_000),
        Some(ns) => format!("{}us", ns / 1000),
    }
}

/// The human table.
pub fn render(statuses: &[BackendStatus]) -> String {
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
            let _ = writeln!(s, "  source {}", src.name);
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

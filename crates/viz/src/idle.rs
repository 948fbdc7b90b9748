//! The idle level: an [`IdleProfile`] as `flinch analyze` uses it (so verdicts agree), from
//! `--idle-watts W` (a flat level), `--idle FILE` (a profile written by `flinch
//! calibrate`), `--idle-window A..B` (profiled from a stretch of the trace), or the profile
//! embedded in the trace's header; and the level drawn under each power line.

use flinch_analysis::idle::{ChannelIdle, IDLE_FORMAT, IDLE_VERSION, IdleProfile, StatOf};
use flinch_analysis::{parse_window as parse_idle_window, resolve_window as resolve_idle_window};
use flinch_core::integrate::Method;
use flinch_core::trace::Trace;
use flinch_core::{ChannelKind, Quantity};
use std::collections::BTreeMap;
use std::path::Path;

/// An idle profile and how it was given.
#[derive(Clone, Debug, PartialEq)]
pub struct Idle {
    /// The profile.
    pub profile: IdleProfile,
    /// How it came: `watts`, `file`, `window`, `embedded` (as `flinch analyze` reports it).
    pub via: String,
    /// For the picture's subtitle: `--idle-window calib_start..calib_end`, ...
    pub describe: String,
}

impl Idle {
    /// `--idle-watts`: `119` (every power and energy channel) or `gpu0=119` (a device's),
    /// as a flat profile (no spread: the verdict threshold is then max(5 %, 3 W)).
    pub fn from_watts(trace: &Trace, args: &[String]) -> Result<Self, String> {
        let mut all: Option<f64> = None;
        let mut per: BTreeMap<String, f64> = BTreeMap::new();
        for a in args {
            let (dev, w) = match a.split_once('=') {
                Some((d, w)) => (Some(d.trim()), w.trim()),
                None => (None, a.trim()),
            };
            let w = w.strip_suffix('W').unwrap_or(w).trim();
            if w.parse::<f64>().is_ok_and(|v| v < 0.0) {
                return Err(format!(
                    "--idle-watts {a:?}: an idle level cannot be negative; give the watts the \
                     device draws when idle (119 or gpu0=119)"
                ));
            }
            let watts: f64 = w
                .parse()
                .ok()
                .filter(|v: &f64| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| {
                    format!(
                        "--idle-watts {a:?}: expected watts (119 or 119W) or DEVICE=WATTS (gpu0=119)"
                    )
                })?;
            match dev {
                Some("") => {
                    return Err(format!(
                        "--idle-watts {a:?}: the device name before '=' is empty"
                    ));
                }
                Some(d) => {
                    per.insert(d.to_owned(), watts);
                }
                None => all = Some(watts),
            }
        }
        let mut channels = BTreeMap::new();
        let mut devices: Vec<&str> = Vec::new();
        for c in &trace.channels {
            let Some(method) = Method::of(&c.spec) else {
                continue;
            };
            if !devices.contains(&c.spec.device.as_str()) {
                devices.push(&c.spec.device);
            }
            let Some(w) = per.get(&c.spec.device).copied().or(all) else {
                continue;
            };
            let stat_of = match c.spec.kind {
                ChannelKind::Gauge => StatOf::Samples,
                ChannelKind::Counter(_) => StatOf::Rate,
            };
            channels.insert(
                c.spec.name.clone(),
                ChannelIdle {
                    device: c.spec.device.clone(),
                    quantity: c.spec.quantity,
                    unit: "W".into(),
                    method: Some(method),
                    stat_of,
                    mean: w,
                    median: w,
                    p5: w,
                    p95: w,
                    std: 0.0,
                    min: w,
                    max: w,
                    samples: 1,
                    drift: None,
                },
            );
        }
        for d in per.keys() {
            if !devices.contains(&d.as_str()) {
                return Err(format!(
                    "--idle-watts {d}=...: {} has no power or energy channel of device {d:?}; \
                     devices: {}",
                    trace.path.display(),
                    if devices.is_empty() {
                        "none".to_string()
                    } else {
                        devices.join(", ")
                    }
                ));
            }
        }
        let text = args.join(" ");
        Ok(Idle {
            profile: IdleProfile {
                format: IDLE_FORMAT.into(),
                version: IDLE_VERSION,
                created: String::new(),
                host: trace.header.host.clone(),
                kernel: trace.header.kernel.clone(),
                origin: format!("--idle-watts {text}"),
                duration_s: 0.0,
                idle_ok: true,
                warnings: Vec::new(),
                channels,
                conditions: Default::default(),
                sources: Vec::new(),
            },
            via: "watts".into(),
            describe: format!("--idle-watts {text}"),
        })
    }

    /// `--idle FILE`: a profile written by `flinch calibrate`.
    pub fn read_file(path: &Path) -> Result<Self, String> {
        let profile = IdleProfile::read(path).map_err(|e| format!("--idle {e}"))?;
        Ok(Idle {
            profile,
            via: "file".into(),
            describe: format!("--idle {}", path.display()),
        })
    }

    /// The profile embedded by `flinch record --idle`, if any.
    pub fn from_header(trace: &Trace) -> Result<Option<Self>, String> {
        let Some(v) = &trace.header.idle else {
            return Ok(None);
        };
        let profile = IdleProfile::from_value(v).map_err(|e| {
            format!(
                "{}: the idle profile embedded in the header is not usable ({e}); pass --idle \
                 FILE, --idle-window A..B or --idle-watts W instead",
                trace.path.display()
            )
        })?;
        Ok(Some(Idle {
            profile,
            via: "embedded".into(),
            describe: "the trace's idle profile".into(),
        }))
    }

    /// `--idle-window A..B`: profiled from that stretch of the trace, as `flinch analyze
    /// --idle-window` does (A and B are mark labels or seconds from the trace's start).
    /// Returns the profile and what [`IdleProfile::assess`] found not idle about it.
    pub fn from_window(trace: &Trace, window: &str) -> Result<(Self, Vec<String>), String> {
        let (a, b) = parse_idle_window(window).map_err(|e| format!("--idle-window {e}"))?;
        let (s, e) = resolve_idle_window(trace, &a, &b).map_err(|e| e.to_string())?;
        let origin = trace.header.start_anchor.mono_ns;
        let secs = |t: u64| (t as i128 - origin as i128) as f64 / 1e9;
        let mut profile = IdleProfile::from_trace(
            trace,
            s,
            e,
            &format!("window {window} of {}", trace.path.display()),
        )
        .map_err(|e| e.to_string())?;
        if !profile.channels.values().any(|c| c.method.is_some()) {
            return Err(format!(
                "--idle-window {window}: no power or energy samples between {:.3} s and {:.3} s \
                 of the trace",
                secs(s),
                secs(e)
            ));
        }
        let warnings = profile.assess();
        Ok((
            Idle {
                profile,
                via: "window".into(),
                describe: format!("--idle-window {window} ({:.2}..{:.2} s)", secs(s), secs(e)),
            },
            warnings,
        ))
    }

    /// The idle power to draw under the line of `channel` (a power channel, or an energy
    /// counter whose derived power is drawn), W.
    pub fn watts_for(&self, trace: &Trace, channel: &str) -> Option<f64> {
        let spec = &trace.channel(channel)?.spec;
        if !matches!(spec.quantity, Quantity::Power | Quantity::Energy) {
            return None;
        }
        self.profile.level_for(spec).map(|(_, c)| c.mean)
    }
}

pub use flinch_analysis::WindowEdge;

/// Parses `A..B`, each side a mark label or seconds from the trace's start; `A..` and `..B`
/// leave that side open (see [`flinch_analysis::parse_open_window`]).
pub fn parse_window(s: &str) -> Result<(Option<WindowEdge>, Option<WindowEdge>), String> {
    flinch_analysis::parse_open_window(s)
}

/// Resolves a window on a trace into `(start_ns, end_ns)`; an open side is the trace's
/// first or last sample or mark. `what` names the option in messages.
pub fn resolve_window(
    trace: &Trace,
    a: Option<&WindowEdge>,
    b: Option<&WindowEdge>,
    what: &str,
) -> Result<(u64, u64), String> {
    flinch_analysis::resolve_open_window(trace, a, b, what)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> (tempfile::TempDir, Trace) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.flinch.csv");
        crate::testing::write_demo_trace(&p).unwrap();
        let t = flinch_core::trace::read_trace(&p).unwrap();
        (dir, t)
    }

    #[test]
    fn idle_watts_become_a_flat_profile_or_say_why() {
        let (_d, t) = demo();
        let i = Idle::from_watts(&t, &["119W".into()]).unwrap();
        for c in ["gpu0.power_samples", "gpu0.power_instant", "gpu0.energy"] {
            assert_eq!(i.watts_for(&t, c), Some(119.0), "{c}");
        }
        assert_eq!(i.watts_for(&t, "gpu0.util_gpu"), None);
        assert_eq!(i.profile.channels["gpu0.energy"].stat_of, StatOf::Rate);
        let i = Idle::from_watts(&t, &["gpu0=100".into()]).unwrap();
        assert_eq!(i.watts_for(&t, "gpu0.power_samples"), Some(100.0));
        for (bad, why) in [
            ("lots", "expected watts"),
            ("gpu0=", "expected watts"),
            ("=5", "device name before '=' is empty"),
            ("-1", "cannot be negative"),
            ("gpu0=-1W", "cannot be negative"),
            ("nan", "expected watts"),
            (
                "gpu9=50",
                "no power or energy channel of device \"gpu9\"; devices: gpu0",
            ),
        ] {
            let e = Idle::from_watts(&t, &[bad.into()]).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn idle_windows_profile_the_trace() {
        let (_d, t) = demo();
        let (i, warnings) = Idle::from_window(&t, "calib_start..calib_end").unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(i.via, "window");
        assert_eq!(i.watts_for(&t, "gpu0.power_samples"), Some(100.0));
        assert!(
            Idle::from_window(&t, "nope..calib_end")
                .unwrap_err()
                .contains("no mark")
        );
        assert!(
            Idle::from_window(&t, "5")
                .unwrap_err()
                .contains("--idle-window")
        );
    }

    #[test]
    fn windows_parse() {
        assert_eq!(
            parse_window("1.5..calib_end").unwrap(),
            (
                Some(WindowEdge::Seconds(1.5)),
                Some(WindowEdge::Label("calib_end".into()))
            )
        );
        assert_eq!(
            parse_window("..3s").unwrap(),
            (None, Some(WindowEdge::Seconds(3.0)))
        );
        assert!(parse_window("3").is_err());
        assert!(parse_window("a b..c").is_err());
    }
}

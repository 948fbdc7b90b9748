//! The idle level drawn under each device's power line, from (in order of precedence) the
//! command line (`--idle-watts`, `--idle FILE`, `--idle-window A..B`) or the idle profile
//! embedded in the trace header.
//!
//! Profiles are read generically, so any of these works: a plain number of watts (every
//! device); `{"gpu0": 119.0, "package-0": 12.0}` (watts per device); or a profile written by
//! `flinch calibrate`, whose `channels` object holds per channel its `device`, `quantity`
//! and `mean` (the power channels are used, the preferred method per device first).

use crate::series::Series;
use flinch_core::trace::Trace;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// Idle power per device, with where it came from.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IdleLevels {
    per_device: BTreeMap<String, f64>,
    all: Option<f64>,
    /// Where the levels came from, for legends and messages.
    pub origin: String,
}

impl IdleLevels {
    /// The same level for every device.
    pub fn uniform(watts: f64, origin: &str) -> Self {
        IdleLevels {
            per_device: BTreeMap::new(),
            all: Some(watts),
            origin: origin.into(),
        }
    }
    /// The idle level of a device, W.
    pub fn watts(&self, device: &str) -> Option<f64> {
        self.per_device.get(device).copied().or(self.all)
    }
    /// Whether no level is known.
    pub fn is_empty(&self) -> bool {
        self.per_device.is_empty() && self.all.is_none()
    }
    /// Sets one device's level.
    pub fn set(&mut self, device: &str, watts: f64) {
        self.per_device.insert(device.to_owned(), watts);
    }

    /// Parses `--idle-watts`: `119` (every device) or `gpu0=119` (may be given several
    /// times: pass each).
    pub fn parse_watts(args: &[String]) -> Result<Self, String> {
        let mut out = IdleLevels {
            origin: "--idle-watts".into(),
            ..Default::default()
        };
        for a in args {
            let (dev, w) = match a.split_once('=') {
                Some((d, w)) => (Some(d.trim()), w.trim()),
                None => (None, a.trim()),
            };
            let w = w.strip_suffix('W').unwrap_or(w).trim();
            let watts: f64 = w.parse().ok().filter(|v: &f64| v.is_finite() && *v >= 0.0).ok_or_else(|| {
                format!("--idle-watts {a:?}: expected watts (119 or 119W) or DEVICE=WATTS (gpu0=119)")
            })?;
            match dev {
                Some("") => {
                    return Err(format!(
                        "--idle-watts {a:?}: the device name before '=' is empty"
                    ));
                }
                Some(d) => out.set(d, watts),
                None => out.all = Some(watts),
            }
        }
        Ok(out)
    }

    /// Reads an idle level from JSON (see the module docs). `Ok(None)` when the JSON holds
    /// no power level at all.
    pub fn from_json(v: &Value, origin: &str) -> Result<Option<Self>, String> {
        let mut out = IdleLevels {
            origin: origin.into(),
            ..Default::default()
        };
        match v {
            Value::Number(n) => {
                let w = n.as_f64().filter(|w| w.is_finite() && *w >= 0.0);
                out.all = Some(w.ok_or_else(|| format!("idle level {n} is not watts ≥ 0"))?);
            }
            Value::Object(o) => {
                if let Some(Value::Object(chans)) = o.get("channels") {
                    // A calibrate profile: power channels, best method per device first.
                    let mut best: BTreeMap<String, (u8, f64)> = BTreeMap::new();
                    for (name, c) in chans {
                        if c.get("quantity").and_then(Value::as_str) != Some("power") {
                            continue;
                        }
                        let Some(mean) = c
                            .get("mean")
                            .or_else(|| c.get("median"))
                            .and_then(Value::as_f64)
                        else {
                            continue;
                        };
                        let device = c
                            .get("device")
                            .and_then(Value::as_str)
                            .map(str::to_owned)
                            .unwrap_or_else(|| name.split('.').next().unwrap_or(name).to_owned());
                        let method = c.get("method").map(|m| m.to_string()).unwrap_or_default();
                        let rank = if method.contains("driver") {
                            0
                        } else if method.contains("instant") {
                            1
                        } else if method.contains("average") {
                            3
                        } else {
                            2
                        };
                        let e = best.entry(device).or_insert((u8::MAX, mean));
                        if rank < e.0 {
                            *e = (rank, mean);
                        }
                    }
                    for (d, (_, w)) in best {
                        out.set(&d, w);
                    }
                } else if let Some(w) = o.get("watts").and_then(Value::as_f64) {
                    out.all = Some(w);
                } else {
                    for (k, val) in o {
                        if let Some(w) = val.as_f64() {
                            out.set(k, w);
                        }
                    }
                }
            }
            Value::Null => return Ok(None),
            other => {
                return Err(format!(
                    "an idle level must be watts, {{\"DEVICE\": watts}} or a profile written by \
                     `flinch calibrate`; found {}",
                    shorten(&other.to_string())
                ));
            }
        }
        Ok((!out.is_empty()).then_some(out))
    }

    /// Reads `--idle FILE`: a JSON profile or a plain number of watts.
    pub fn read_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the idle profile {}: {e}", path.display()))?;
        let v: Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => {
                return Err(format!(
                    "{}:{}: not an idle profile ({e}); expected the JSON written by `flinch \
                     calibrate`, {{\"gpu0\": 119}} or a number of watts",
                    path.display(),
                    e.line()
                ));
            }
        };
        let origin = format!("{}", path.display());
        IdleLevels::from_json(&v, &origin)?.ok_or_else(|| {
            format!(
                "{}: the profile holds no power channel; record it with `flinch calibrate` on \
                 a machine with a power source",
                path.display()
            )
        })
    }

    /// The idle profile embedded in the trace header, if it holds a power level.
    pub fn from_header(trace: &Trace) -> Result<Option<Self>, String> {
        match &trace.header.idle {
            None => Ok(None),
            Some(v) => IdleLevels::from_json(v, "the trace's idle profile")
                .map_err(|e| format!("{}: header idle profile: {e}", trace.path.display())),
        }
    }

    /// The mean of each device's power line over `[start_ns, end_ns]`.
    pub fn from_window(power: &[Series], start_ns: u64, end_ns: u64, origin: &str) -> Self {
        let mut out = IdleLevels {
            origin: origin.into(),
            ..Default::default()
        };
        for s in power {
            if let Some(w) = s.window_mean(start_ns, end_ns) {
                out.set(&s.device, w);
            }
        }
        out
    }
}

fn shorten(s: &str) -> String {
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(60).collect::<String>())
    } else {
        s.to_owned()
    }
}

/// Where a window starts or ends, as given on the command line.
#[derive(Clone, Debug, PartialEq)]
pub enum WindowEdge {
    /// Seconds from the trace's start (its start anchor).
    Seconds(f64),
    /// The first mark with this label (for the end: the first at or after the start).
    Label(String),
}

/// Parses `A..B`, each side a mark label or seconds from the trace's start (`12.5`,
/// `12.5s`); `A..` and `..B` leave that side open.
pub fn parse_window(s: &str) -> Result<(Option<WindowEdge>, Option<WindowEdge>), String> {
    let (a, b) = s.split_once("..").ok_or_else(|| {
        format!("{s:?} is not A..B (A and B are mark labels or seconds from the trace start)")
    })?;
    let edge = |x: &str| -> Result<Option<WindowEdge>, String> {
        let x = x.trim();
        if x.is_empty() {
            return Ok(None);
        }
        let num = x.strip_suffix('s').unwrap_or(x);
        if let Ok(v) = num.parse::<f64>() {
            if !v.is_finite() {
                return Err(format!("{s:?}: {x} is not a time in seconds"));
            }
            return Ok(Some(WindowEdge::Seconds(v)));
        }
        if flinch_core::marks::is_valid_label(x) {
            Ok(Some(WindowEdge::Label(x.to_owned())))
        } else {
            Err(format!(
                "{s:?}: {x:?} is neither a number of seconds nor a mark label"
            ))
        }
    };
    Ok((edge(a)?, edge(b)?))
}

/// Resolves a window on a trace into `(start_ns, end_ns)`; an open side is the trace's
/// first or last sample or mark. `what` names the option in messages.
pub fn resolve_window(
    trace: &Trace,
    a: Option<&WindowEdge>,
    b: Option<&WindowEdge>,
    what: &str,
) -> Result<(u64, u64), String> {
    let origin = trace.header.start_anchor.mono_ns;
    let (lo, hi) = trace.time_range_ns().unwrap_or((origin, origin));
    let find = |e: &WindowEdge, after: u64| -> Result<u64, String> {
        match e {
            WindowEdge::Seconds(s) => {
                Ok((origin as i128 + (s * 1e9).round() as i128).clamp(0, u64::MAX as i128) as u64)
            }
            WindowEdge::Label(l) => trace
                .marks
                .iter()
                .find(|m| &m.label == l && m.t_ns >= after)
                .map(|m| m.t_ns)
                .ok_or_else(|| {
                    format!(
                        "{what}: no mark {l:?}{} in {}; labels present: {}",
                        if after > 0 {
                            " after the window's start"
                        } else {
                            ""
                        },
                        trace.path.display(),
                        crate::spans::describe_labels(trace)
                    )
                }),
        }
    };
    let start = match a {
        Some(e) => find(e, 0)?,
        None => lo,
    };
    let end = match b {
        Some(e) => find(e, start)?,
        None => hi,
    };
    if end <= start {
        let secs = |t: u64| (t as i128 - origin as i128) as f64 / 1e9;
        return Err(format!(
            "{what}: the window ends ({:.3} s) before it starts ({:.3} s); times are seconds \
             from the trace's start, which spans {:.3} s to {:.3} s",
            secs(end),
            secs(start),
            secs(lo),
            secs(hi)
        ));
    }
    Ok((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn idle_levels_come_from_numbers_maps_and_profiles() {
        let l = IdleLevels::from_json(&json!(119.5), "x").unwrap().unwrap();
        assert_eq!(l.watts("gpu0"), Some(119.5));
        let l = IdleLevels::from_json(&json!({"gpu0": 119, "package-0": 12.5}), "x")
            .unwrap()
            .unwrap();
        assert_eq!(
            (l.watts("gpu0"), l.watts("package-0"), l.watts("gpu1")),
            (Some(119.0), Some(12.5), None)
        );
        let profile = json!({"format": "flinch-idle", "channels": {
            "gpu0.power_avg1s": {"device": "gpu0", "quantity": "power", "method": {"average": {"window_ms": 1000}}, "mean": 150.0},
            "gpu0.power_samples": {"device": "gpu0", "quantity": "power", "method": "driver-samples", "mean": 118.0},
            "gpu0.util_gpu": {"device": "gpu0", "quantity": "utilization", "mean": 0.0},
            "package-0.energy": {"device": "package-0", "quantity": "power", "mean": 11.0}
        }});
        let l = IdleLevels::from_json(&profile, "x").unwrap().unwrap();
        assert_eq!(l.watts("gpu0"), Some(118.0));
        assert_eq!(l.watts("package-0"), Some(11.0));
        assert_eq!(
            IdleLevels::from_json(&json!({"channels": {}}), "x"),
            Ok(None)
        );
        assert!(IdleLevels::from_json(&json!("hot"), "x").is_err());
        assert!(IdleLevels::from_json(&json!(-3), "x").is_err());
    }

    #[test]
    fn idle_watts_flags_parse_or_say_why() {
        let l = IdleLevels::parse_watts(&["119W".into(), "package-0=12".into()]).unwrap();
        assert_eq!(
            (l.watts("gpu0"), l.watts("package-0")),
            (Some(119.0), Some(12.0))
        );
        for bad in ["lots", "gpu0=", "=5", "-1", "nan"] {
            let e = IdleLevels::parse_watts(&[bad.into()]).unwrap_err();
            assert!(e.contains("--idle-watts"), "{e}");
        }
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

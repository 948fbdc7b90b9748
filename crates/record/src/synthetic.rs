//! An always-available source whose power is known exactly: constant or stepped power, a
//! wrapping energy counter that integrates it exactly, and a utilisation gauge that is 100 %
//! while power is above its lowest step.
//!
//! Power follows a repeating schedule of steps (`50W/1s,250W/1s` is a square wave); the
//! energy counter is the exact integral of that schedule since the source was created,
//! modulo the wrap range. Its `origin_ns` attribute says when the schedule started, so a
//! test can place marks exactly on its steps. That makes it the reference for known-answer
//! tests of the sampler, the trace and the integrator, and the demo source on machines
//! without sensors. `;class=gpu` or `;class=cpu` tells analysis which verdict its load
//! means; without it the device's class is `other`.
//!
//! ```
//! use flinch_record::synthetic::{SyntheticConfig, SyntheticSource};
//! use flinch_core::clock::ManualClock;
//! let cfg: SyntheticConfig = "50W/1s,250W/1s".parse().unwrap();
//! let clock = ManualClock::new(0, 0);
//! let s = SyntheticSource::new(cfg, &clock);
//! assert_eq!(s.power_at(500_000_000).0, 50.0);
//! assert_eq!(s.energy_at(2_000_000_000).0, 300.0);
//! ```

use flinch_core::backend::{Backend, BackendContext, BackendStatus};
use flinch_core::channel::{ChannelSpec, CounterSpec, PowerMethod, Quantity, SourceInfo};
use flinch_core::clock::{Clock, MonotonicClock};
use flinch_core::device::DeviceClass;
use flinch_core::error::SourceError;
use flinch_core::source::{Readings, Source};
use flinch_core::units::{Joules, Watts};
use std::str::FromStr;

/// The synthetic source's schedule and counter.
#[derive(Clone, Debug, PartialEq)]
pub struct SyntheticConfig {
    /// Repeating (duration ns, power) steps.
    pub steps: Vec<(u64, Watts)>,
    /// Where the energy counter wraps, J.
    pub wrap: Joules,
    /// Device name used in channel names.
    pub device: String,
    /// The device class analysis gives it (`;class=gpu` or `;class=cpu`); `None`: other.
    pub device_class: Option<DeviceClass>,
}

impl Default for SyntheticConfig {
    /// A 2-s square wave between 60 W and 300 W, and a counter wrapping every 500 J (a wrap
    /// every few seconds, so wrap handling is exercised in every demo).
    fn default() -> Self {
        SyntheticConfig {
            steps: vec![(1_000_000_000, Watts(60.0)), (1_000_000_000, Watts(300.0))],
            wrap: Joules(500.0),
            device: "synthetic".into(),
            device_class: None,
        }
    }
}

impl FromStr for SyntheticConfig {
    type Err = String;
    /// Parses `POWER[/DURATION][,POWER/DURATION...]`, e.g. `100W` (constant) or
    /// `50W/1s,250W/500ms`. Options follow after `;`: `wrap=1000J` sets the wrap range,
    /// `class=gpu` or `class=cpu` the device class analysis gives the source.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut cfg = SyntheticConfig {
            steps: Vec::new(),
            ..Default::default()
        };
        let (sched, opts) = s.split_once(';').unwrap_or((s, ""));
        for part in sched.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (p, d) = part.split_once('/').unwrap_or((part, "1s"));
            let w: f64 = p
                .trim()
                .strip_suffix('W')
                .unwrap_or(p)
                .trim()
                .parse()
                .map_err(|_| {
                    format!(
                        "synthetic step {part:?}: power {p:?} is not a number of watts (e.g. 250W)"
                    )
                })?;
            if !(w.is_finite() && w >= 0.0) {
                return Err(format!("synthetic step {part:?}: power must be ≥ 0 W"));
            }
            let d = humantime::parse_duration(d.trim())
                .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
                .map_err(|e| {
                    format!(
                        "synthetic step {part:?}: duration {d:?} is not like 500ms or 1.5s ({e})"
                    )
                })?;
            if d == 0 {
                return Err(format!("synthetic step {part:?}: duration must be > 0"));
            }
            cfg.steps.push((d, Watts(w)));
        }
        if cfg.steps.is_empty() {
            return Err("synthetic profile is empty: give steps like 50W/1s,250W/1s".into());
        }
        for opt in opts.split(';').map(str::trim).filter(|o| !o.is_empty()) {
            match opt.split_once('=') {
                Some(("wrap", v)) => {
                    let j: f64 = v
                        .trim()
                        .strip_suffix('J')
                        .unwrap_or(v)
                        .parse()
                        .map_err(|_| format!("wrap={v:?} is not a number of joules"))?;
                    if !(j.is_finite() && j > 0.0) {
                        return Err("wrap must be > 0 J".into());
                    }
                    cfg.wrap = Joules(j);
                }
                Some(("class", v)) => {
                    cfg.device_class = Some(
                        DeviceClass::from_name(v.trim())
                            .ok_or_else(|| format!("class={v:?}: expected gpu, cpu or other"))?,
                    );
                }
                _ => {
                    return Err(format!(
                        "unknown synthetic option {opt:?} (known: wrap=NJ, class=gpu|cpu|other)"
                    ));
                }
            }
        }
        Ok(cfg)
    }
}

/// The synthetic source. See the module docs.
#[derive(Debug)]
pub struct SyntheticSource {
    info: SourceInfo,
    cfg: SyntheticConfig,
    origin_ns: u64,
    period_ns: u64,
    energy_per_period: f64,
    low: Watts,
    /// When it was last polled: the steps since then are written at their own times.
    last_poll_ns: Option<u64>,
}

/// The most steps of the schedule one poll writes at their own times (a schedule of steps
/// much shorter than the poll interval is sampled instead).
const MAX_STEPS_PER_POLL: usize = 16;

impl SyntheticSource {
    /// A source whose schedule starts now.
    pub fn new(cfg: SyntheticConfig, clock: &dyn Clock) -> Self {
        Self::with_origin(cfg, clock.now_ns())
    }

    /// A source whose schedule starts at `origin_ns`.
    pub fn with_origin(cfg: SyntheticConfig, origin_ns: u64) -> Self {
        let period_ns = cfg.steps.iter().map(|s| s.0).sum::<u64>().max(1);
        let energy_per_period = cfg.steps.iter().map(|(d, w)| w.0 * *d as f64 / 1e9).sum();
        let high = cfg.steps.iter().map(|s| s.1.0).fold(0.0, f64::max);
        let low = Watts(
            cfg.steps
                .iter()
                .map(|s| s.1.0)
                .fold(f64::INFINITY, f64::min),
        );
        let d = cfg.device.as_str();
        let info = SourceInfo::new(
            d,
            "synthetic",
            cfg.device_class.unwrap_or(DeviceClass::Other),
        )
        .modelled()
        .with_channels(vec![
            ChannelSpec::power(d, "power", PowerMethod::Modelled)
                .with_description("modelled power following the synthetic schedule"),
            ChannelSpec::energy_counter(
                d,
                "energy",
                CounterSpec {
                    wrap_range: Some(cfg.wrap.0),
                    max_rate: Some(high * 1.5 + 1.0),
                },
            )
            .with_description("exact integral of the schedule, wrapping at the configured range"),
            ChannelSpec::gauge(d, "util", Quantity::Utilization)
                .with_description("100 while above the lowest step, else 0"),
        ])
        .with_attribute("profile", describe(&cfg))
        .with_attribute("origin_ns", origin_ns.to_string());
        SyntheticSource {
            info,
            cfg,
            origin_ns,
            period_ns,
            energy_per_period,
            low,
            last_poll_ns: None,
        }
    }

    /// The schedule's power at `t_ns`.
    pub fn power_at(&self, t_ns: u64) -> Watts {
        let mut phase = t_ns.saturating_sub(self.origin_ns) % self.period_ns;
        for (d, w) in &self.cfg.steps {
            if phase < *d {
                return *w;
            }
            phase -= d;
        }
        self.cfg.steps.last().map(|s| s.1).unwrap_or_default()
    }

    /// The exact energy delivered from the origin to `t_ns` (not wrapped).
    pub fn energy_at(&self, t_ns: u64) -> Joules {
        let el = t_ns.saturating_sub(self.origin_ns);
        let periods = el / self.period_ns;
        let mut phase = el % self.period_ns;
        let mut e = periods as f64 * self.energy_per_period;
        for (d, w) in &self.cfg.steps {
            let part = phase.min(*d);
            e += w.0 * part as f64 / 1e9;
            phase -= part;
            if phase == 0 {
                break;
            }
        }
        Joules(e)
    }

    /// The counter reading at `t_ns` (energy modulo the wrap range).
    pub fn counter_at(&self, t_ns: u64) -> f64 {
        self.energy_at(t_ns).0 % self.cfg.wrap.0
    }

    /// The first step of the schedule strictly after `t_ns`.
    pub fn next_step_after(&self, t_ns: u64) -> u64 {
        if t_ns < self.origin_ns {
            return self.origin_ns;
        }
        let el = t_ns - self.origin_ns;
        let start = t_ns - el % self.period_ns;
        let mut b = start;
        for (d, _) in &self.cfg.steps {
            b += d;
            if b > t_ns {
                return b;
            }
        }
        start + self.period_ns
    }

    fn push_at(&self, out: &mut Readings<'_>, t: u64) {
        let p = self.power_at(t);
        out.push(0, t, p.0);
        out.push(1, t, self.counter_at(t));
        out.push(2, t, if p.0 > self.low.0 { 100.0 } else { 0.0 });
    }
}

fn describe(cfg: &SyntheticConfig) -> String {
    let steps: Vec<String> = cfg
        .steps
        .iter()
        .map(|(d, w)| format!("{}W/{}ms", w.0, *d as f64 / 1e6))
        .collect();
    let class = cfg
        .device_class
        .map(|c| format!(";class={c}"))
        .unwrap_or_default();
    format!("{};wrap={}J{class}", steps.join(","), cfg.wrap.0)
}

impl Source for SyntheticSource {
    fn info(&self) -> &SourceInfo {
        &self.info
    }
    /// Besides the values now, each step of the schedule since the last poll is written at
    /// its own time (the value just before it and at it), so the piecewise-linear curve
    /// through the readings is the schedule itself however seldom it is polled.
    fn poll(&mut self, out: &mut Readings<'_>) -> Result<(), SourceError> {
        let t = out.now_ns();
        if let Some(last) = self.last_poll_ns {
            let mut b = self.next_step_after(last);
            let mut n = 0;
            while b <= t && n < MAX_STEPS_PER_POLL && b > last + 1 {
                self.push_at(out, b - 1);
                if b < t {
                    self.push_at(out, b);
                }
                b = self.next_step_after(b);
                n += 1;
            }
        }
        self.push_at(out, t);
        self.last_poll_ns = Some(t);
        Ok(())
    }
    fn max_readings_per_poll(&self) -> usize {
        3 * (2 * MAX_STEPS_PER_POLL + 1)
    }
}

/// The `synthetic` backend: one [`SyntheticSource`] with this schedule. Always available;
/// used only when asked for, or when no real source is (a model must never pass for a
/// measurement).
#[derive(Clone, Debug, Default)]
pub struct Synthetic {
    config: SyntheticConfig,
}

impl Synthetic {
    /// The backend with this schedule.
    pub fn new(config: SyntheticConfig) -> Self {
        Synthetic { config }
    }
}

impl Backend for Synthetic {
    fn name(&self) -> &'static str {
        "synthetic"
    }
    fn summary(&self) -> &'static str {
        "modelled power with an exactly known integral (demo and tests)"
    }
    fn status(&self, ctx: &BackendContext) -> BackendStatus {
        let src: Box<dyn Source> =
            Box::new(SyntheticSource::new(self.config.clone(), &MonotonicClock));
        BackendStatus::opened(self, &[src], ctx).with_notes([
            "used only when asked for with --source synthetic, or when no real source is available"
                .to_owned(),
        ])
    }
    fn open(&self, _: &BackendContext) -> Result<Vec<Box<dyn Source>>, SourceError> {
        Ok(vec![Box::new(SyntheticSource::new(
            self.config.clone(),
            &MonotonicClock,
        ))])
    }
    fn default_on(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flinch_core::clock::ManualClock;
    use flinch_core::source::Reading;

    #[test]
    fn steps_between_polls_are_written_at_their_own_times() {
        use flinch_core::integrate::{integrate_counter, integrate_gauge};
        let cfg: SyntheticConfig = "20W/1276ms,100W/724ms;wrap=500J".parse().unwrap();
        let clock = ManualClock::new(5_000_000_000, 0);
        let mut s = SyntheticSource::new(cfg, &clock);
        let mut buf = Vec::with_capacity(s.max_readings_per_poll());
        let mut all: Vec<Reading> = Vec::new();
        // polled every 700 ms: far coarser than the steps' timing
        for _ in 0..12 {
            buf.clear();
            let mut r = Readings::new(&clock, &mut buf, 0, 3);
            s.poll(&mut r).unwrap();
            assert_eq!(r.rejected(), 0);
            all.extend(buf.iter().copied());
            clock.advance(700_000_000);
        }
        assert!(buf.capacity() <= s.max_readings_per_poll());
        let ch = |c: u32| -> (Vec<u64>, Vec<f64>) {
            all.iter()
                .filter(|r| r.channel == c)
                .map(|r| (r.t_ns, r.value))
                .unzip()
        };
        let (t, p) = ch(0);
        assert!(t.windows(2).all(|w| w[0] < w[1]), "{t:?}");
        // the first burst: 1276 ms .. 2000 ms after the origin, 100 W for 0.724 s
        let o = 5_000_000_000;
        let w = integrate_gauge(&t, &p, o + 1_276_000_000, o + 2_000_000_000).unwrap();
        assert!((w.integral - 72.4).abs() < 1e-3, "{}", w.integral);
        // and a stretch across two steps: 20 W × 0.5 s + 100 W × 0.724 s + 20 W × 0.3 s
        let w = integrate_gauge(&t, &p, o + 776_000_000, o + 2_300_000_000).unwrap();
        assert!(
            (w.integral - (10.0 + 72.4 + 6.0)).abs() < 1e-3,
            "{}",
            w.integral
        );
        let (tc, c) = ch(1);
        let spec = s.info().channels[1].counter_spec().copied().unwrap();
        let w =
            integrate_counter(&tc, &c, &spec, None, o + 1_276_000_000, o + 2_000_000_000).unwrap();
        assert!((w.increase - 72.4).abs() < 1e-3, "{}", w.increase);
    }

    #[test]
    fn parses_profiles_and_rejects_nonsense() {
        let c: SyntheticConfig = "100W".parse().unwrap();
        assert_eq!(c.steps, vec![(1_000_000_000, Watts(100.0))]);
        let c: SyntheticConfig = "20W/276ms, 100W/724ms;wrap=1000J".parse().unwrap();
        assert_eq!(
            c.steps,
            vec![(276_000_000, Watts(20.0)), (724_000_000, Watts(100.0))]
        );
        assert_eq!(c.wrap, Joules(1000.0));
        // fractions of a unit, through humantime
        let c: SyntheticConfig = "20W/1.5s,30W/3.1us,40W/1m 0.5s".parse().unwrap();
        assert_eq!(
            c.steps,
            vec![
                (1_500_000_000, Watts(20.0)),
                (3_100, Watts(30.0)),
                (60_500_000_000, Watts(40.0))
            ]
        );
        assert_eq!(c.device_class, None);
        let c: SyntheticConfig = "20W;class=cpu;wrap=5J".parse().unwrap();
        assert_eq!(c.device_class, Some(DeviceClass::Cpu));
        let s = SyntheticSource::with_origin(c, 42);
        assert_eq!(s.info().class, Some(DeviceClass::Cpu));
        assert_eq!(s.info().attributes["origin_ns"], "42");
        for bad in [
            "",
            "abcW",
            "-5W",
            "5W/0s",
            "5W/3parsecs",
            "5W/5",
            "5W/0.5ns",
            "5W;wrap=0",
            "5W;colour=red",
            "5W;class=tpu",
        ] {
            assert!(bad.parse::<SyntheticConfig>().is_err(), "{bad}");
        }
    }

    #[test]
    fn energy_is_the_exact_integral_and_the_counter_wraps() {
        let cfg: SyntheticConfig = "20W/276ms,100W/724ms;wrap=50J".parse().unwrap();
        let s = SyntheticSource::with_origin(cfg, 1_000);
        assert_eq!(s.power_at(1_000).0, 20.0);
        assert_eq!(s.power_at(1_000 + 276_000_000).0, 100.0);
        assert_eq!(s.power_at(1_000 + 1_000_000_000).0, 20.0);
        // one period: 20 × 0.276 + 100 × 0.724 = 77.92 J
        assert!((s.energy_at(1_000 + 1_000_000_000).0 - 77.92).abs() < 1e-9);
        assert!((s.energy_at(1_000 + 1_500_000_000).0 - (77.92 + 5.52 + 22.4)).abs() < 1e-9);
        assert!((s.counter_at(1_000 + 1_000_000_000) - 27.92).abs() < 1e-9);
    }
}

//! The numbers that turn measurements into verdicts.

use crate::idle::ChannelIdle;
use serde::Serialize;

/// The numbers that turn measurements into verdicts.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Thresholds {
    /// A device is busy when its active power exceeds this many idle standard deviations …
    pub power_sigmas: f64,
    /// … and this fraction of its idle power …
    pub power_fraction: f64,
    /// … and this many watts.
    pub power_floor_w: f64,
    /// Without an idle level for it, a utilisation or activity gauge is busy this many
    /// percentage points above 0.
    pub activity_pct: f64,
    /// With an idle level, a utilisation or activity gauge is busy when its mean exceeds the
    /// idle mean by this many idle standard deviations …
    pub activity_sigmas: f64,
    /// … and by this many percentage points (GPM activity reads a few hundredths of a
    /// percent on an idle GPU, NVML utilisation moves in whole percent).
    pub activity_floor_pct: f64,
    /// A CPU-time counter is busy when it advances this many cores faster than at idle.
    pub cpu_cores: f64,
    /// A CPU-time counter resolves a span of at least this many of its update periods
    /// (ticks, 10 ms when the channel does not say).
    pub cpu_time_min_periods: u32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            power_sigmas: 3.0,
            power_fraction: 0.05,
            power_floor_w: 3.0,
            activity_pct: 10.0,
            activity_sigmas: 3.0,
            activity_floor_pct: 3.0,
            cpu_cores: 0.5,
            cpu_time_min_periods: 10,
        }
    }
}

impl Thresholds {
    /// The active power above which a device with this idle level is busy, W.
    pub fn power_threshold_w(&self, idle: &ChannelIdle) -> f64 {
        (self.power_sigmas * idle.std)
            .max(self.power_fraction * idle.mean.abs())
            .max(self.power_floor_w)
    }

    /// How far above its idle mean a utilisation or activity gauge must be to count as
    /// busy, percentage points: from the idle profile's own noise
    /// (`max(activity_sigmas × idle std, activity_floor_pct)`) when there is a level for
    /// the channel, else the fixed `activity_pct`.
    pub fn activity_threshold_pct(&self, idle: Option<&ChannelIdle>) -> f64 {
        match idle {
            Some(l) => (self.activity_sigmas * l.std).max(self.activity_floor_pct),
            None => self.activity_pct,
        }
    }
}

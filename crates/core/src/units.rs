//! Physical units as types.
//!
//! Every backend converts the driver's native unit (mW, mJ, µJ) into these in exactly one
//! place. Timestamps are plain `u64` nanoseconds of `CLOCK_MONOTONIC` and are always named
//! `*_ns`; durations use [`std::time::Duration`] or `*_s` / `*_ns` names.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::ops::{Add, AddAssign, Div, Mul, Sub};

macro_rules! unit_type {
    ($(#[$doc:meta])* $name:ident, $sym:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, PartialOrd, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub f64);

        impl $name {
            /// The unit symbol used in traces and output.
            pub const SYMBOL: &'static str = $sym;
            /// The raw number in this unit.
            pub const fn value(self) -> f64 {
                self.0
            }
        }
        impl Add for $name {
            type Output = Self;
            fn add(self, o: Self) -> Self {
                Self(self.0 + o.0)
            }
        }
        impl AddAssign for $name {
            fn add_assign(&mut self, o: Self) {
                self.0 += o.0;
            }
        }
        impl Sub for $name {
            type Output = Self;
            fn sub(self, o: Self) -> Self {
                Self(self.0 - o.0)
            }
        }
        impl Mul<f64> for $name {
            type Output = Self;
            fn mul(self, k: f64) -> Self {
                Self(self.0 * k)
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match f.precision() {
                    Some(p) => write!(f, "{:.*} {}", p, self.0, $sym),
                    None => write!(f, "{} {}", self.0, $sym),
                }
            }
        }
    };
}

unit_type!(
    /// Power in watts.
    Watts,
    "W"
);
unit_type!(
    /// Energy in joules.
    Joules,
    "J"
);

impl Watts {
    /// Converts milliwatts (NVML's unit) to watts.
    pub fn from_milliwatts(mw: u64) -> Self {
        Watts(mw as f64 / 1e3)
    }
    /// Energy delivered at this power over `seconds`.
    pub fn over_seconds(self, seconds: f64) -> Joules {
        Joules(self.0 * seconds)
    }
}

impl Joules {
    /// Converts millijoules (NVML's energy counter unit) to joules.
    pub fn from_millijoules(mj: u64) -> Self {
        Joules(mj as f64 / 1e3)
    }
    /// Converts microjoules (RAPL's `energy_uj`) to joules.
    pub fn from_microjoules(uj: u64) -> Self {
        Joules(uj as f64 / 1e6)
    }
    /// Mean power when this energy is spread over `seconds` (`None` for a zero duration).
    pub fn per_seconds(self, seconds: f64) -> Option<Watts> {
        (seconds > 0.0).then(|| Watts(self.0 / seconds))
    }
}

impl Mul<f64> for &Watts {
    type Output = Joules;
    /// Watts × seconds = joules.
    fn mul(self, seconds: f64) -> Joules {
        Joules(self.0 * seconds)
    }
}

impl Div<f64> for Joules {
    type Output = Watts;
    /// Joules ÷ seconds = watts.
    fn div(self, seconds: f64) -> Watts {
        Watts(self.0 / seconds)
    }
}

/// Nanoseconds per second.
pub const NS_PER_S: u64 = 1_000_000_000;

/// Converts a nanosecond count into seconds.
pub fn ns_to_s(ns: u64) -> f64 {
    ns as f64 / NS_PER_S as f64
}

/// Converts a signed nanosecond difference into seconds.
pub fn dns_to_s(ns: i64) -> f64 {
    ns as f64 / NS_PER_S as f64
}

/// The unit of a channel's values, as written in traces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Unit {
    /// Watts (power).
    #[serde(rename = "W")]
    Watts,
    /// Joules (energy; cumulative counters).
    #[serde(rename = "J")]
    Joules,
    /// Percent, 0–100 (utilisation, activity).
    #[serde(rename = "%")]
    Percent,
    /// Megahertz (clocks).
    #[serde(rename = "MHz")]
    Megahertz,
    /// Degrees Celsius.
    #[serde(rename = "C")]
    Celsius,
    /// Seconds (cumulative CPU time).
    #[serde(rename = "s")]
    Seconds,
    /// A plain number.
    #[serde(rename = "1")]
    Count,
}

impl Unit {
    /// The symbol written in traces and tables.
    pub fn symbol(self) -> &'static str {
        match self {
            Unit::Watts => "W",
            Unit::Joules => "J",
            Unit::Percent => "%",
            Unit::Megahertz => "MHz",
            Unit::Celsius => "C",
            Unit::Seconds => "s",
            Unit::Count => "1",
        }
    }
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.symbol())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_are_exact_where_they_can_be() {
        assert_eq!(Watts::from_milliwatts(312_400), Watts(312.4));
        assert_eq!(Joules::from_millijoules(2_261_542), Joules(2261.542));
        assert_eq!(Joules::from_microjoules(262_143_328_850).0, 262_143.328_85);
        assert!((Watts(100.0).over_seconds(0.724).0 - 72.4).abs() < 1e-12);
        assert_eq!(Joules(57.9).per_seconds(0.0), None);
        assert!((Joules(57.9).per_seconds(0.579).unwrap().0 - 100.0).abs() < 1e-12);
        assert_eq!(format!("{:.1}", Watts(1.25)), "1.2 W");
        assert_eq!(Unit::Megahertz.symbol(), "MHz");
        assert_eq!(serde_json::to_string(&Unit::Percent).unwrap(), "\"%\"");
    }
}

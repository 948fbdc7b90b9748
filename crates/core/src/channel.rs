//! What a source measures: channels with a quantity, a unit, a kind and an update period.
//!
//! Power, energy counters and activity gauges are all channels. They differ in their
//! [`Quantity`] and [`ChannelKind`]: a power channel is a gauge in watts with a
//! [`PowerMethod`] saying how the sensor produced it (driver-buffered samples, an instant
//! reading, a lagging 1-s average); an energy channel is a cumulative counter in joules that
//! either wraps at a known range (RAPL) or resets when it decreases (NVML on driver reload);
//! activity gauges carry utilisation, clocks and temperature. One source can offer any mix
//! of them, because one device handle usually serves all of them.

use crate::device::{DeviceClass, Scope};
use crate::units::Unit;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What physical quantity a channel carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Quantity {
    /// Electrical power, W.
    Power,
    /// Cumulative energy, J (always a counter).
    Energy,
    /// Busy fraction of an engine or of CPUs over the sensor's period, %.
    Utilization,
    /// Fine-grained activity (SM active, SM occupancy, tensor or DRAM activity), %.
    Activity,
    /// A clock frequency, MHz.
    Clock,
    /// A temperature, °C.
    Temperature,
    /// Cumulative CPU time, s (a counter).
    CpuTime,
    /// Anything else.
    Other,
}

impl Quantity {
    /// The unit a channel of this quantity is written in.
    pub fn unit(self) -> Unit {
        match self {
            Quantity::Power => Unit::Watts,
            Quantity::Energy => Unit::Joules,
            Quantity::Utilization | Quantity::Activity => Unit::Percent,
            Quantity::Clock => Unit::Megahertz,
            Quantity::Temperature => Unit::Celsius,
            Quantity::CpuTime => Unit::Seconds,
            Quantity::Other => Unit::Count,
        }
    }
}

/// How a power channel's values were produced by the sensor. The integrator prefers them in
/// the order listed (the counter ranks between instant and average).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum PowerMethod {
    /// Samples kept by the driver with their own timestamps (NVML `nvmlDeviceGetSamples`).
    DriverSamples,
    /// A short-window instantaneous reading polled by flinch (NVML field 186, DCGM 157).
    Instant,
    /// A moving average over `window_ms` (NVML `power_usage`, DCGM 155): it lags a step by
    /// up to that window and must never be read as "power at this instant".
    Average {
        /// Length of the averaging window, ms.
        window_ms: u32,
    },
    /// Derived from a model or a simulation (the synthetic source).
    Modelled,
}

impl PowerMethod {
    /// Short name used in analysis output: `driver-samples`, `instant`, `average`, `modelled`.
    pub fn name(self) -> &'static str {
        match self {
            PowerMethod::DriverSamples => "driver-samples",
            PowerMethod::Instant => "instant",
            PowerMethod::Average { .. } => "average",
            PowerMethod::Modelled => "modelled",
        }
    }
}

/// The arithmetic of a cumulative counter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CounterSpec {
    /// The value at which the counter wraps back to zero, in the channel's unit (RAPL:
    /// `max_energy_range_uj` in J). `None`: the counter never wraps, so any decrease is a
    /// reset (NVML's energy counter after a driver reload).
    pub wrap_range: Option<f64>,
    /// The largest plausible rate of increase, in the channel's unit per second (for an
    /// energy counter: the device's maximum power in W). A step implying more is flagged and
    /// not used.
    pub max_rate: Option<f64>,
}

/// Gauge or cumulative counter.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChannelKind {
    /// Each value stands on its own (power, utilisation, temperature).
    Gauge,
    /// Values accumulate; differences are what count.
    Counter(CounterSpec),
}

/// One stream of values from a source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChannelSpec {
    /// Unique name across the recording, `<device>.<what>`, e.g. `gpu0.power_instant`.
    pub name: String,
    /// The device the channel belongs to (`gpu0`, `package-0`, `host`); the integrator
    /// picks one preferred power method per device.
    pub device: String,
    /// What is measured.
    pub quantity: Quantity,
    /// The unit of every value (follows from the quantity).
    pub unit: Unit,
    /// Gauge or counter.
    #[serde(flatten)]
    pub kind: ChannelKind,
    /// For power channels: how the sensor produced the values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<PowerMethod>,
    /// How often the underlying sensor value changes, when known (ns). Polling faster than
    /// this sees repeated values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_period_ns: Option<u64>,
    /// When present, a reading equal to the one before it is written only as a heartbeat,
    /// at most this far apart (ns); the last reading before a change is always written. So
    /// the value held at every poll between two rows: forward-filling (or interpolating
    /// linearly) between rows gives back exactly what was read. See `docs/trace-format.md`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_ns: Option<u64>,
    /// One line for humans.
    #[serde(default)]
    pub description: String,
}

impl ChannelSpec {
    fn new(device: &str, what: &str, quantity: Quantity, kind: ChannelKind) -> Self {
        ChannelSpec {
            name: format!("{device}.{what}"),
            device: device.to_owned(),
            quantity,
            unit: quantity.unit(),
            kind,
            method: None,
            update_period_ns: None,
            heartbeat_ns: None,
            description: String::new(),
        }
    }
    /// A power gauge in W named `<device>.<what>`.
    pub fn power(device: &str, what: &str, method: PowerMethod) -> Self {
        let mut c = Self::new(device, what, Quantity::Power, ChannelKind::Gauge);
        c.method = Some(method);
        c
    }
    /// A cumulative energy counter in J named `<device>.<what>`.
    pub fn energy_counter(device: &str, what: &str, counter: CounterSpec) -> Self {
        Self::new(
            device,
            what,
            Quantity::Energy,
            ChannelKind::Counter(counter),
        )
    }
    /// An activity gauge (utilisation, activity, clock, temperature, other) named
    /// `<device>.<what>`.
    pub fn gauge(device: &str, what: &str, quantity: Quantity) -> Self {
        Self::new(device, what, quantity, ChannelKind::Gauge)
    }
    /// A cumulative counter of another quantity (CPU time) named `<device>.<what>`.
    pub fn counter(device: &str, what: &str, quantity: Quantity, counter: CounterSpec) -> Self {
        Self::new(device, what, quantity, ChannelKind::Counter(counter))
    }
    /// Sets the sensor's update period.
    pub fn with_update_period_ns(mut self, ns: u64) -> Self {
        self.update_period_ns = Some(ns);
        self
    }
    /// Lets the recorder write a repeated reading only as a heartbeat, at most `ns` apart
    /// ([`ChannelSpec::heartbeat_ns`]). For polled gauges whose repeats carry no news; not
    /// for driver-stamped samples, each of which is a sensor update.
    pub fn with_heartbeat_ns(mut self, ns: u64) -> Self {
        self.heartbeat_ns = Some(ns);
        self
    }
    /// Whether repeated readings may be missing between rows (held values).
    pub fn held(&self) -> bool {
        self.heartbeat_ns.is_some()
    }
    /// Sets the description.
    pub fn with_description(mut self, d: impl Into<String>) -> Self {
        self.description = d.into();
        self
    }
    /// The counter arithmetic, if this is a counter.
    pub fn counter_spec(&self) -> Option<&CounterSpec> {
        match &self.kind {
            ChannelKind::Counter(c) => Some(c),
            ChannelKind::Gauge => None,
        }
    }
}

/// The heartbeat of channels whose repeated readings are elided: a held value is written
/// at least once a second, as often as the trace is flushed.
pub const DEFAULT_HEARTBEAT_NS: u64 = 1_000_000_000;

/// What a source is: its name, backend, the class of device it measures, its scope, its
/// channels and facts about the device (driver version, UUID, zone path, ...), all of which
/// travel in the trace header.
///
/// ```
/// use flinch_core::{ChannelSpec, DeviceClass, PowerMethod, Scope, SourceInfo};
/// let info = SourceInfo::new("fan0", "example", DeviceClass::Other)
///     .with_channels(vec![ChannelSpec::power("fan0", "power", PowerMethod::Instant)])
///     .with_attribute("model", "F-12");
/// assert_eq!(info.class, Some(DeviceClass::Other));
/// assert_eq!(info.scope, Scope::Device);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SourceInfo {
    /// Unique name of this source within a recording, e.g. `nvml.gpu0.fast`.
    pub name: String,
    /// The backend that made it: `synthetic`, `nvml`, `rapl`, `dcgm`, `cpu`, ...
    pub backend: String,
    /// The class of the devices its channels measure. `None` only in traces written before
    /// the class was recorded (flinch 0.1), where analysis infers it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<DeviceClass>,
    /// Whether its channels describe whole devices or one process tree.
    #[serde(default, skip_serializing_if = "Scope::is_device")]
    pub scope: Scope,
    /// Whether it is a model (the synthetic source), not a measurement: next to measured
    /// sources it never decides what the workload did.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub modelled: bool,
    /// The channels it fills.
    pub channels: Vec<ChannelSpec>,
    /// Free-form facts about the device.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

impl SourceInfo {
    /// A source of `backend` named `name` measuring devices of `class`, with no channels
    /// yet, device scope.
    pub fn new(name: impl Into<String>, backend: impl Into<String>, class: DeviceClass) -> Self {
        SourceInfo {
            name: name.into(),
            backend: backend.into(),
            class: Some(class),
            scope: Scope::Device,
            modelled: false,
            channels: Vec::new(),
            attributes: BTreeMap::new(),
        }
    }
    /// Sets the channels.
    pub fn with_channels(mut self, channels: Vec<ChannelSpec>) -> Self {
        self.channels = channels;
        self
    }
    /// Sets the scope.
    pub fn with_scope(mut self, scope: Scope) -> Self {
        self.scope = scope;
        self
    }
    /// Marks it as a model, not a measurement (see [`SourceInfo::modelled`]).
    pub fn modelled(mut self) -> Self {
        self.modelled = true;
        self
    }
    /// Adds one attribute.
    pub fn with_attribute(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes.insert(key.into(), value.into());
        self
    }
    /// Replaces the attributes.
    pub fn with_attributes(mut self, attributes: BTreeMap<String, String>) -> Self {
        self.attributes = attributes;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_set_units_from_quantities() {
        let p = ChannelSpec::power("gpu0", "power_instant", PowerMethod::Instant)
            .with_update_period_ns(100_000_000);
        assert_eq!(p.name, "gpu0.power_instant");
        assert_eq!(p.unit, Unit::Watts);
        assert_eq!(p.counter_spec(), None);
        let e = ChannelSpec::energy_counter(
            "package-0",
            "energy",
            CounterSpec {
                wrap_range: Some(262_143.328_85),
                max_rate: Some(1000.0),
            },
        );
        assert_eq!(e.unit, Unit::Joules);
        assert_eq!(e.counter_spec().unwrap().wrap_range, Some(262_143.328_85));
        let j = serde_json::to_value(&e).unwrap();
        assert_eq!(j["kind"], "counter");
        assert_eq!(j["unit"], "J");
        let back: ChannelSpec = serde_json::from_value(j).unwrap();
        assert_eq!(back, e);
        let avg = serde_json::to_value(PowerMethod::Average { window_ms: 1000 }).unwrap();
        assert_eq!(avg["average"]["window_ms"], 1000);
    }
}

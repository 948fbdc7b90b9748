//! What kind of silicon a source measures, and whether it measures a whole device or one
//! process tree: typed facts on [`SourceInfo`](crate::channel::SourceInfo), set by the
//! backend that made the source. A span's verdict says `gpu-compute` or `cpu-compute`, so
//! every device must be known as a GPU, a CPU, or neither; and the traced workload's own
//! CPU time decides whether a span was computing, not the host's.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The class of a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DeviceClass {
    /// A GPU.
    Gpu,
    /// A CPU package, its cores, DRAM or the host's CPUs.
    Cpu,
    /// Anything else (a fan, a modelled device).
    Other,
}

impl DeviceClass {
    /// As written: `gpu`, `cpu`, `other`.
    pub fn name(self) -> &'static str {
        match self {
            DeviceClass::Gpu => "gpu",
            DeviceClass::Cpu => "cpu",
            DeviceClass::Other => "other",
        }
    }

    /// Parses [`DeviceClass::name`].
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "gpu" => Some(DeviceClass::Gpu),
            "cpu" => Some(DeviceClass::Cpu),
            "other" => Some(DeviceClass::Other),
            _ => None,
        }
    }
}

impl fmt::Display for DeviceClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a source's activity channels describe.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Scope {
    /// The whole device or host.
    #[default]
    Device,
    /// One process and its descendants (the traced workload).
    ProcessTree,
}

impl Scope {
    /// As written: `device`, `process-tree`.
    pub fn name(self) -> &'static str {
        match self {
            Scope::Device => "device",
            Scope::ProcessTree => "process-tree",
        }
    }

    /// Whether this is [`Scope::Device`] (the default, not written in trace headers).
    pub fn is_device(&self) -> bool {
        *self == Scope::Device
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_serde_agrees() {
        for c in [DeviceClass::Gpu, DeviceClass::Cpu, DeviceClass::Other] {
            assert_eq!(DeviceClass::from_name(c.name()), Some(c));
            assert_eq!(
                serde_json::to_value(c).unwrap(),
                serde_json::Value::String(c.name().into())
            );
        }
        assert_eq!(DeviceClass::from_name("tpu"), None);
        for s in [Scope::Device, Scope::ProcessTree] {
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::Value::String(s.name().into())
            );
        }
        assert!(Scope::default().is_device());
    }
}

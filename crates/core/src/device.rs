//! What kind of silicon a channel belongs to, read from trace metadata rather than channel
//! names: a span's verdict says `gpu-compute` or `cpu-compute`, so every device must be
//! known as a GPU, a CPU, or neither.

use crate::channel::SourceInfo;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The source attribute that states a device class explicitly (`gpu`, `cpu`, `other`).
pub const DEVICE_CLASS_ATTRIBUTE: &str = "device_class";

/// The source attribute that says its activity channels measure one process tree
/// (`process`) rather than a whole device or host: the traced workload's own CPU time
/// decides whether a span was computing, not the host's.
pub const ACTIVITY_SCOPE_ATTRIBUTE: &str = "activity_scope";

/// The class of a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceClass {
    /// A GPU (NVML, DCGM).
    Gpu,
    /// A CPU package, its cores, DRAM or the host's CPUs (RAPL, procfs).
    Cpu,
    /// Anything else.
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

    /// The class of the channels of `source` on `device`: the source's
    /// [`DEVICE_CLASS_ATTRIBUTE`] when set; else by backend (`nvml`, `dcgm`: GPU; `rapl`,
    /// `cpu`: CPU); else a device named `gpu…` is a GPU; else other.
    pub fn of(source: &SourceInfo, device: &str) -> Self {
        if let Some(c) = source
            .attributes
            .get(DEVICE_CLASS_ATTRIBUTE)
            .and_then(|c| DeviceClass::from_name(c))
        {
            return c;
        }
        match source.backend.as_str() {
            "nvml" | "dcgm" => DeviceClass::Gpu,
            "rapl" | "cpu" => DeviceClass::Cpu,
            _ if device.starts_with("gpu") => DeviceClass::Gpu,
            _ => DeviceClass::Other,
        }
    }
}

impl fmt::Display for DeviceClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(backend: &str, attr: Option<&str>) -> SourceInfo {
        SourceInfo {
            name: "s".into(),
            backend: backend.into(),
            channels: vec![],
            attributes: attr
                .map(|a| [(DEVICE_CLASS_ATTRIBUTE.to_owned(), a.to_owned())].into())
                .unwrap_or_default(),
        }
    }

    #[test]
    fn classes_come_from_metadata() {
        assert_eq!(
            DeviceClass::of(&src("nvml", None), "gpu0"),
            DeviceClass::Gpu
        );
        assert_eq!(DeviceClass::of(&src("dcgm", None), "x"), DeviceClass::Gpu);
        assert_eq!(
            DeviceClass::of(&src("rapl", None), "package-0"),
            DeviceClass::Cpu
        );
        assert_eq!(DeviceClass::of(&src("cpu", None), "host"), DeviceClass::Cpu);
        assert_eq!(
            DeviceClass::of(&src("synthetic", Some("cpu")), "synthetic"),
            DeviceClass::Cpu
        );
        assert_eq!(
            DeviceClass::of(&src("nvml", Some("other")), "gpu0"),
            DeviceClass::Other
        );
        assert_eq!(
            DeviceClass::of(&src("scripted", None), "gpu1"),
            DeviceClass::Gpu
        );
        assert_eq!(
            DeviceClass::of(&src("scripted", None), "fan"),
            DeviceClass::Other
        );
    }
}

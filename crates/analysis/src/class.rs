//! The class and scope of a trace's sources, as analysis uses them.
//!
//! Sources say both in the trace header ([`SourceInfo::class`], [`SourceInfo::scope`]).
//! Traces written by flinch 0.1 did not: for them the class came from the source attribute
//! `device_class` when set, else from the backend that wrote the source (the backends that
//! existed then), else from a device named `gpu…`; and process scope from the attribute
//! `activity_scope=process`. Those rules live here, for those traces only.

use flinch_core::channel::SourceInfo;
use flinch_core::device::{DeviceClass, Scope};

/// The source attribute that stated a device class in flinch 0.1 traces.
const LEGACY_CLASS_ATTRIBUTE: &str = "device_class";
/// The source attribute that stated process scope in flinch 0.1 traces.
const LEGACY_SCOPE_ATTRIBUTE: &str = "activity_scope";

/// The class of the channels of `source` on `device`.
pub fn class_of(source: &SourceInfo, device: &str) -> DeviceClass {
    if let Some(c) = source.class {
        return c;
    }
    if let Some(c) = source
        .attributes
        .get(LEGACY_CLASS_ATTRIBUTE)
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

/// Whether `source` is a model, not a measurement: it says so ([`SourceInfo::modelled`]),
/// or (traces written before it could) its power is `modelled`, as the synthetic source's
/// always was.
pub fn is_modelled(source: &SourceInfo) -> bool {
    source.modelled
        || source
            .channels
            .iter()
            .any(|c| c.method == Some(flinch_core::channel::PowerMethod::Modelled))
}

/// Whether `source`'s activity channels measure one process tree.
pub fn is_process_scoped(source: &SourceInfo) -> bool {
    source.scope == Scope::ProcessTree
        || source
            .attributes
            .get(LEGACY_SCOPE_ATTRIBUTE)
            .is_some_and(|v| v == "process")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn legacy(backend: &str, attr: Option<(&str, &str)>) -> SourceInfo {
        let mut s = SourceInfo::new("s", backend, DeviceClass::Other);
        s.class = None;
        if let Some((k, v)) = attr {
            s = s.with_attribute(k, v);
        }
        s
    }

    #[test]
    fn stated_classes_win_and_old_traces_are_inferred() {
        let stated = SourceInfo::new("s", "nvml", DeviceClass::Other);
        assert_eq!(class_of(&stated, "gpu0"), DeviceClass::Other);
        assert_eq!(class_of(&legacy("nvml", None), "gpu0"), DeviceClass::Gpu);
        assert_eq!(class_of(&legacy("dcgm", None), "x"), DeviceClass::Gpu);
        assert_eq!(
            class_of(&legacy("rapl", None), "package-0"),
            DeviceClass::Cpu
        );
        assert_eq!(class_of(&legacy("cpu", None), "host"), DeviceClass::Cpu);
        assert_eq!(
            class_of(
                &legacy("synthetic", Some(("device_class", "cpu"))),
                "synthetic"
            ),
            DeviceClass::Cpu
        );
        assert_eq!(
            class_of(&legacy("scripted", None), "gpu1"),
            DeviceClass::Gpu
        );
        assert_eq!(
            class_of(&legacy("scripted", None), "fan"),
            DeviceClass::Other
        );
    }

    #[test]
    fn process_scope_is_typed_or_the_old_attribute() {
        let typed = SourceInfo::new("p", "cpu", DeviceClass::Cpu).with_scope(Scope::ProcessTree);
        assert!(is_process_scoped(&typed));
        assert!(is_process_scoped(&legacy(
            "cpu",
            Some(("activity_scope", "process"))
        )));
        assert!(!is_process_scoped(&legacy("cpu", None)));
    }
}

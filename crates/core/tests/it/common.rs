//! What several modules of core's tests build: a trace header with one power gauge and one
//! wrapping energy counter.

use flinch_core::DeviceClass;
use flinch_core::channel::{ChannelSpec, CounterSpec, PowerMethod, SourceInfo};
use flinch_core::clock::ClockAnchor;
use flinch_core::trace::Header;

/// A header: source `dev` with `dev.power` (instant) and `dev.energy` (wraps at 100 J,
/// at most 1000 W), 10 ms interval, started at monotonic 1 µs.
pub fn header() -> Header {
    let src = SourceInfo::new("dev", "test", DeviceClass::Other).with_channels(vec![
        ChannelSpec::power("dev", "power", PowerMethod::Instant),
        ChannelSpec::energy_counter(
            "dev",
            "energy",
            CounterSpec {
                wrap_range: Some(100.0),
                max_rate: Some(1000.0),
            },
        ),
    ]);
    Header::new(
        10_000_000,
        ClockAnchor {
            mono_ns: 1_000,
            real_ns: 5_000,
        },
        vec![src],
    )
}

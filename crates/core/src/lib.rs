#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod backend;
pub mod channel;
pub mod clock;
pub mod counter;
pub mod device;
pub mod error;
pub mod integrate;
pub mod marks;
pub mod probe;
pub mod source;
#[cfg(feature = "testing")]
pub mod testing;
pub mod trace;
pub mod units;

pub use backend::{Backend, BackendContext, BackendStatus};
pub use channel::{ChannelKind, ChannelSpec, CounterSpec, PowerMethod, Quantity, SourceInfo};
pub use clock::{Clock, ClockAnchor, ManualClock, MonotonicClock, WakeFlag};
pub use device::{DeviceClass, Scope};
pub use error::{Error, ErrorKind, Result, SourceError};
pub use source::{DataGap, PhaseLockSpec, Reading, Readings, Source};
pub use units::{Joules, Unit, Watts};

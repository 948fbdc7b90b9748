#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod host;
pub mod lane;
pub mod marks;
pub mod observe;
pub mod phase;
pub mod queue;
pub mod recorder;
pub mod sampler;
pub mod synthetic;

pub use lane::MarkSpec;
pub use recorder::{MarkSender, Recorder, RecorderConfig, RecordingSetup};
pub use synthetic::{Synthetic, SyntheticConfig, SyntheticSource};

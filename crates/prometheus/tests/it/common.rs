//! Shared helpers.

use flinch_core::clock::{Clock, MonotonicClock};
use flinch_prometheus::Exporter;
use flinch_record::recorder::{Recorder, RecorderConfig, RecordingSetup};
use flinch_record::synthetic::{SyntheticConfig, SyntheticSource};
use std::path::Path;
use std::sync::Arc;

/// A recording of the synthetic source with `schedule` into `out`, observed by `exporter`,
/// taking marks from the FIFO `fifo` when given.
pub fn record(
    schedule: &str,
    out: &Path,
    fifo: Option<&Path>,
    idle: Option<serde_json::Value>,
    exporter: &Exporter,
) -> Recorder {
    let clock: Arc<dyn Clock> = Arc::new(MonotonicClock);
    let cfg: SyntheticConfig = schedule.parse().unwrap();
    let src = SyntheticSource::new(cfg, clock.as_ref());
    let mut setup = RecordingSetup::new(out.to_path_buf(), vec![Box::new(src)]);
    setup.marks_fifo = fifo.map(Path::to_path_buf);
    setup.idle = idle;
    setup.observers.push(exporter.observer());
    Recorder::start(setup, RecorderConfig::default(), clock).unwrap()
}

/// The value of the sample line `name{...}` holding every `k="v"` in `labels`.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

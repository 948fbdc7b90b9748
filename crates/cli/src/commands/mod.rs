//! One module per subcommand.

pub mod analyze;
pub mod calibrate;
pub mod child;
pub mod export;
pub mod load;
pub mod mark;
pub mod plot;
pub mod record;
pub mod sources;

use crate::Failure;
use crate::backends::BackendOptions;
use crate::cli::BackendArgs;
use std::time::Duration;

/// Turns the shared backend flags into [`BackendOptions`].
pub fn backend_options(
    a: &BackendArgs,
    interval: Option<Duration>,
    probe: bool,
) -> Result<BackendOptions, Failure> {
    let synthetic = a
        .synthetic
        .parse()
        .map_err(|e: String| Failure::new(format!("--synthetic: {e}")))?;
    Ok(BackendOptions {
        interval: interval.unwrap_or(crate::backends::AUTO_INTERVAL),
        interval_given: interval.is_some(),
        synthetic,
        rapl_root: a.rapl_root.clone(),
        nvml_lib: a.nvml_lib.clone(),
        gpus: a.gpus.clone(),
        cuda_visible_devices: a.cuda_visible_devices,
        nvml_average_power: a.nvml_average_power,
        nvml_energy_interval: a.nvml_energy_interval,
        nvml_buffer_interval: a.nvml_buffer_interval,
        dcgm_lib: a.dcgm_lib.clone(),
        dcgm_host: a.dcgm_host.clone(),
        pid: a.pid,
        probe,
        command_pid: Default::default(),
        wraps_command: false,
    })
}

//! The sources one GPU is split into, each on its own cadence: instant power (once per
//! update of the field, 10 a second, phase-locked to them; or every `--interval` when one
//! is given), the driver's sample buffer (drained every second), activity (utilisation, SM
//! clock, temperature, ...) and GPM activity (every 100 ms), and the energy counter (a
//! slow read, on a thread of its own: every 30 s, and at the start and the stop).

use crate::buffer::BufferTracker;
use crate::error::map;
use crate::ffi::{RawDevice, RawGpm, empty_sample, field_number, field_request, value_number};
use flinch_core::{
    ErrorKind, Joules, PhaseLockSpec, Readings, Source, SourceError, SourceInfo, Watts,
};
use nvml_wrapper::Device;
use nvml_wrapper::enum_wrappers::device::{Clock, TemperatureSensor};
use nvml_wrapper::enums::gpm::GpmMetricId;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper_sys::bindings::field_id::NVML_FI_DEV_POWER_INSTANT;
use nvml_wrapper_sys::bindings::{
    nvmlFieldValue_t, nvmlReturn_enum_NVML_ERROR_GPU_IS_LOST, nvmlSample_t,
};
use std::time::Duration;

/// `NVML_FI_DEV_POWER_INSTANT`.
pub const FI_POWER_INSTANT: u32 = NVML_FI_DEV_POWER_INSTANT;
/// NVML's return code for a lost GPU (`NVML_ERROR_GPU_IS_LOST`), as found in a field's
/// `nvmlReturn`.
const GPU_IS_LOST: u32 = nvmlReturn_enum_NVML_ERROR_GPU_IS_LOST;

/// Instant power (field 186), and the 1-s average power when asked for: once per update of
/// the field (phase-locked), or at a fixed interval.
pub struct FastSource {
    pub(crate) info: SourceInfo,
    pub(crate) raw: RawDevice,
    pub(crate) device: Device<'static>,
    pub(crate) fields: [nvmlFieldValue_t; 1],
    /// Channel index of the average power, when recorded.
    pub(crate) average: Option<usize>,
    /// `Some`: poll at this fixed interval; `None`: once per update of the field.
    pub(crate) interval: Option<Duration>,
}

/// How often the instant-power field changes (measured on H100 and H200: `docs/hardware.md`).
pub const INSTANT_UPDATE_PERIOD: Duration = Duration::from_millis(100);

impl Source for FastSource {
    fn info(&self) -> &SourceInfo {
        &self.info
    }
    fn poll(&mut self, out: &mut Readings<'_>) -> Result<(), SourceError> {
        self.fields[0] = field_request(FI_POWER_INSTANT);
        self.raw
            .field_values(&mut self.fields)
            .map_err(|e| map(e, "instant power"))?;
        let t = out.now_ns();
        let f = &self.fields[0];
        match field_number(f) {
            Some(mw) => out.push(0, t, Watts(mw / 1e3).0),
            None if f.nvmlReturn == GPU_IS_LOST => {
                return Err(map(NvmlError::GpuLost, "instant power"));
            }
            None => {
                return Err(SourceError::new(
                    ErrorKind::Transient,
                    "nvml",
                    format!(
                        "instant power: NVML returned code {} for field {FI_POWER_INSTANT}",
                        f.nvmlReturn
                    ),
                ));
            }
        }
        if let Some(ch) = self.average {
            let mw = self
                .device
                .power_usage()
                .map_err(|e| map(e, "average power"))?;
            out.push_now(ch, Watts::from_milliwatts(mw as u64).0);
        }
        Ok(())
    }
    fn interval(&self) -> Option<Duration> {
        Some(self.interval.unwrap_or(INSTANT_UPDATE_PERIOD))
    }
    fn phase_lock(&self) -> Option<PhaseLockSpec> {
        self.interval.is_none().then_some(PhaseLockSpec {
            channel: 0,
            period: INSTANT_UPDATE_PERIOD,
        })
    }
}

/// The driver's power sample buffer, drained on its own cadence.
pub struct BufferSource {
    pub(crate) info: SourceInfo,
    pub(crate) raw: RawDevice,
    pub(crate) buf: Vec<nvmlSample_t>,
    pub(crate) tracker: BufferTracker,
    pub(crate) interval: Duration,
}

/// Room for a full ring (≈119 on the H100) plus slack.
pub const BUFFER_CAPACITY: usize = 512;

impl BufferSource {
    pub(crate) fn new(info: SourceInfo, raw: RawDevice, interval: Duration) -> Self {
        BufferSource {
            info,
            raw,
            buf: vec![empty_sample(); BUFFER_CAPACITY],
            tracker: BufferTracker::new(),
            interval,
        }
    }
}

impl Source for BufferSource {
    fn info(&self) -> &SourceInfo {
        &self.info
    }
    fn poll(&mut self, out: &mut Readings<'_>) -> Result<(), SourceError> {
        let tag = self
            .raw
            .power_samples(self.tracker.last_seen_us(), &mut self.buf)
            .map_err(|e| map(e, "power sample buffer"))?;
        let anchor = out.clock().anchor();
        let samples = self
            .buf
            .iter()
            .filter_map(|s| value_number(tag, &s.sampleValue).map(|mw| (s.timeStamp, mw / 1e3)));
        let gap = self
            .tracker
            .ingest(samples, anchor, |t, w| out.push(0, t, w));
        if let Some(g) = gap {
            out.report_gap(
                g.start_ns,
                g.end_ns,
                "the driver's power sample buffer overran between two drains",
            );
        }
        Ok(())
    }
    fn interval(&self) -> Option<Duration> {
        Some(self.interval)
    }
    fn max_readings_per_poll(&self) -> usize {
        self.buf.capacity()
    }
}

/// The total-energy counter (3–12 ms per read on H100 and H200: the driver spins), on a slow
/// thread of its own.
pub struct EnergySource {
    pub(crate) info: SourceInfo,
    pub(crate) device: Device<'static>,
    pub(crate) interval: Duration,
}

impl Source for EnergySource {
    fn info(&self) -> &SourceInfo {
        &self.info
    }
    fn poll(&mut self, out: &mut Readings<'_>) -> Result<(), SourceError> {
        let before = out.now_ns();
        let mj = self
            .device
            .total_energy_consumption()
            .map_err(|e| map(e, "energy counter"))?;
        let after = out.now_ns();
        // The read takes milliseconds: stamp it in the middle.
        out.push(
            0,
            before + (after - before) / 2,
            Joules::from_millijoules(mj).0,
        );
        Ok(())
    }
    fn interval(&self) -> Option<Duration> {
        Some(self.interval)
    }
    fn slow(&self) -> bool {
        true
    }
}

/// Which activity readings a GPU supports (probed once).
#[derive(Clone, Copy, Debug, Default)]
pub struct ActivityChannels {
    /// Channel indices of GPU and memory utilisation.
    pub utilization: Option<(usize, usize)>,
    /// Channel index of the SM clock.
    pub sm_clock: Option<usize>,
    /// Channel index of the temperature.
    pub temperature: Option<usize>,
    /// Channel index of the performance state.
    pub pstate: Option<usize>,
    /// Channel index of the count of CUDA compute processes.
    pub compute_procs: Option<usize>,
}

/// Utilisation, SM clock and temperature.
pub struct ActivitySource {
    pub(crate) info: SourceInfo,
    pub(crate) device: Device<'static>,
    pub(crate) ch: ActivityChannels,
    pub(crate) interval: Duration,
}

impl Source for ActivitySource {
    fn info(&self) -> &SourceInfo {
        &self.info
    }
    fn poll(&mut self, out: &mut Readings<'_>) -> Result<(), SourceError> {
        let mut err: Option<SourceError> = None;
        let mut any = false;
        let mut note = |r: Result<(), NvmlError>, what: &str| match r {
            Ok(()) => any = true,
            Err(e) => {
                let e = map(e, what);
                // Keep the first error, unless a later one says the GPU is gone.
                if err.is_none() || e.kind == ErrorKind::Lost {
                    err = Some(e);
                }
            }
        };
        if let Some((g, m)) = self.ch.utilization {
            let r = self.device.utilization_rates().map(|u| {
                let t = out.now_ns();
                out.push(g, t, u.gpu as f64);
                out.push(m, t, u.memory as f64);
            });
            note(r, "utilisation");
        }
        if let Some(c) = self.ch.sm_clock {
            let r = self
                .device
                .clock_info(Clock::SM)
                .map(|mhz| out.push_now(c, mhz as f64));
            note(r, "SM clock");
        }
        if let Some(c) = self.ch.temperature {
            let r = self
                .device
                .temperature(TemperatureSensor::Gpu)
                .map(|deg| out.push_now(c, deg as f64));
            note(r, "temperature");
        }
        if let Some(c) = self.ch.pstate {
            let r = self
                .device
                .performance_state()
                .map(|p| out.push_now(c, p.as_c() as f64));
            note(r, "performance state");
        }
        if let Some(c) = self.ch.compute_procs {
            let r = self
                .device
                .running_compute_processes_count()
                .map(|n| out.push_now(c, n as f64));
            note(r, "compute processes");
        }
        match err {
            // A lost GPU ends the poll; another failure only if nothing could be read.
            Some(e) if e.kind == ErrorKind::Lost || !any => Err(e),
            _ => Ok(()),
        }
    }
    fn interval(&self) -> Option<Duration> {
        Some(self.interval)
    }
}

/// The NVML ids of [`GPM_METRICS`], in the same order.
pub const GPM_METRIC_IDS: [u32; 4] = [
    nvml_wrapper_sys::bindings::nvmlGpmMetricId_t_NVML_GPM_METRIC_SM_UTIL,
    nvml_wrapper_sys::bindings::nvmlGpmMetricId_t_NVML_GPM_METRIC_SM_OCCUPANCY,
    nvml_wrapper_sys::bindings::nvmlGpmMetricId_t_NVML_GPM_METRIC_ANY_TENSOR_UTIL,
    nvml_wrapper_sys::bindings::nvmlGpmMetricId_t_NVML_GPM_METRIC_DRAM_BW_UTIL,
];

/// The GPM metrics recorded, in channel order.
pub const GPM_METRICS: [GpmMetricId; 4] = [
    GpmMetricId::SmUtil,
    GpmMetricId::SmOccupancy,
    GpmMetricId::AnyTensorUtil,
    GpmMetricId::DramBwUtil,
];

/// GPM (Hopper and newer): SM activity, SM occupancy, tensor and DRAM bandwidth
/// utilisation between consecutive samples. Two samples are allocated once and filled in
/// turn ([`RawGpm`]).
pub struct GpmSource {
    pub(crate) info: SourceInfo,
    pub(crate) gpm: RawGpm,
    pub(crate) interval: Duration,
}

impl Source for GpmSource {
    fn info(&self) -> &SourceInfo {
        &self.info
    }
    fn poll(&mut self, out: &mut Readings<'_>) -> Result<(), SourceError> {
        let values = self.gpm.sample().map_err(|e| map(e, "GPM sample"))?;
        let t = out.now_ns();
        if let Some(values) = values {
            // Each value is the average since the previous sample. It is stamped at t, the
            // end of the interval it describes, like the driver's power samples: a value
            // never claims time after its stamp, so a span's samples never describe the
            // next phase.
            for i in 0..GPM_METRICS.len() {
                // A metric the GPU could not compute for this pair (an error code, or NaN)
                // is left out: a missing value, not a zero.
                if let Ok(v) = values.get(i)
                    && v.is_finite()
                {
                    out.push(i, t, v.clamp(0.0, 100.0));
                }
            }
        }
        Ok(())
    }
    fn interval(&self) -> Option<Duration> {
        Some(self.interval)
    }
}

#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod backend;
pub mod buffer;
pub mod error;
mod ffi;
pub mod select;
mod sources;

use error::map;
use flinch_core::DeviceClass;
use flinch_core::{
    ChannelSpec, CounterSpec, ErrorKind, PowerMethod, Quantity, Source, SourceError, SourceInfo,
};
use nvml_wrapper::Device;
use nvml_wrapper::Nvml as NvmlLib;
use nvml_wrapper::enum_wrappers::device::{Clock, TemperatureSensor};
use select::GpuSelector;
use sources::{
    ActivityChannels, ActivitySource, BufferSource, EnergySource, FastSource, GpmSource,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

pub use backend::Nvml;
pub use error::{NVML_LIB, NvmlError};

/// How to find and sample the GPUs.
#[derive(Clone, Debug)]
pub struct NvmlConfig {
    /// Load this library instead of `libnvidia-ml.so.1`.
    pub lib_path: Option<PathBuf>,
    /// GPUs by index or UUID (`None` = all).
    pub gpus: Option<Vec<String>>,
    /// The value of `CUDA_VISIBLE_DEVICES`, when the user asked to honour it.
    pub cuda_visible_devices: Option<String>,
    /// How often the instant-power field is read: `None` (the default) once per update of
    /// the field, just after it (phase-locked, 10 reads a second); `Some` at that interval.
    pub instant_interval: Option<Duration>,
    /// How often the driver's power sample buffer is drained (it holds ~2.4 s).
    pub buffer_interval: Duration,
    /// How often the total-energy counter is read (besides start and stop). Each read costs
    /// 3–12 ms of a CPU (the driver spins); the driver buffer agrees with it within 0.5 %,
    /// so by default it is a drift check.
    pub energy_interval: Duration,
    /// How often utilisation, SM clock and temperature are read.
    pub activity_interval: Duration,
    /// How often GPM activity is sampled (Hopper and newer).
    pub gpm_interval: Duration,
    /// Also record the 1-s average power (`nvmlDeviceGetPowerUsage`), off by default.
    pub average_power: bool,
}

impl Default for NvmlConfig {
    fn default() -> Self {
        NvmlConfig {
            lib_path: None,
            gpus: None,
            cuda_visible_devices: None,
            instant_interval: None,
            buffer_interval: Duration::from_secs(1),
            energy_interval: Duration::from_secs(30),
            activity_interval: Duration::from_millis(100),
            gpm_interval: Duration::from_millis(100),
            average_power: false,
        }
    }
}

static INSTANCE: Mutex<Option<&'static NvmlLib>> = Mutex::new(None);

/// The process's one NVML instance, initialised on first use and never shut down (the
/// driver cleans up at exit). Keeping it `'static` lets every sampler thread hold
/// `Device<'static>` handles without any unsafe lifetime workaround. A failed
/// initialisation is not cached, so a later call may succeed (e.g. with another
/// `lib_path`); once initialised, `lib_path` is ignored.
pub fn nvml_instance(lib_path: Option<&Path>) -> Result<&'static NvmlLib, SourceError> {
    let mut guard = INSTANCE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(n) = *guard {
        return Ok(n);
    }
    let nvml = match lib_path {
        Some(p) => {
            if !p.exists() {
                return Err(error::missing_lib(p));
            }
            NvmlLib::builder().lib_path(p.as_os_str()).init()
        }
        None => NvmlLib::init(),
    }
    .map_err(|e| map(e, "NVML initialisation"))?;
    let leaked: &'static NvmlLib = Box::leak(Box::new(nvml));
    *guard = Some(leaked);
    Ok(leaked)
}

/// What one GPU offers, probed once when the backend opens.
#[derive(Clone, Debug)]
pub struct GpuInfo {
    /// NVML index.
    pub index: u32,
    /// Device name in channel names: `gpu<index>`.
    pub device: String,
    /// Facts for the trace header (uuid, name, pci bus, driver, ...).
    pub attributes: BTreeMap<String, String>,
    /// Power limit, W.
    pub power_limit_w: Option<f64>,
    /// Channels absent on this GPU, with the reason.
    pub absent: Vec<String>,
    caps: Caps,
}

#[derive(Clone, Copy, Debug, Default)]
struct Caps {
    instant: bool,
    samples: bool,
    energy: bool,
    average: bool,
    utilization: bool,
    sm_clock: bool,
    temperature: bool,
    pstate: bool,
    compute_procs: bool,
    gpm: bool,
}

/// The NVML backend: the GPUs chosen, probed.
pub struct NvmlBackend {
    nvml: &'static NvmlLib,
    gpus: Vec<GpuInfo>,
    config: NvmlConfig,
    notes: Vec<String>,
}

fn device(nvml: &'static NvmlLib, index: u32) -> Result<Device<'static>, SourceError> {
    nvml.device_by_index(index)
        .map_err(|e| map(e, &format!("GPU {index}")))
}

fn gpu_channel(
    ok: bool,
    name: &str,
    what: &str,
    absent: &mut Vec<String>,
    err: Option<String>,
) -> bool {
    if !ok {
        absent.push(format!(
            "{name}: {what} not available{}",
            err.map(|e| format!(" ({e})")).unwrap_or_default()
        ));
    }
    ok
}

impl NvmlBackend {
    /// Loads NVML, selects GPUs and probes what each supports (once; an unsupported reading
    /// becomes an absent channel, never an error every tick).
    pub fn open(config: NvmlConfig) -> Result<Self, SourceError> {
        let nvml = nvml_instance(config.lib_path.as_deref())?;
        let count = nvml.device_count().map_err(|e| map(e, "device count"))?;
        let mut present = Vec::new();
        for i in 0..count {
            let uuid = device(nvml, i)?.uuid().unwrap_or_default();
            present.push((i, uuid));
        }
        let mut notes = Vec::new();
        let mut chosen: Vec<u32> = present.iter().map(|p| p.0).collect();
        let invalid = |m: String| SourceError::new(ErrorKind::InvalidInput, "nvml", m);
        if let Some(cvd) = &config.cuda_visible_devices {
            let sel = select::parse_cuda_visible_devices(cvd).map_err(invalid)?;
            if sel.iter().any(|s| matches!(s, GpuSelector::Index(_)))
                && std::env::var("CUDA_DEVICE_ORDER").as_deref() != Ok("PCI_BUS_ID")
            {
                notes.push(
                    "CUDA_VISIBLE_DEVICES lists indices but CUDA_DEVICE_ORDER is not PCI_BUS_ID: CUDA may \
                     number GPUs differently from NVML; UUIDs are exact"
                        .into(),
                );
            }
            chosen = select::resolve(&sel, &present).map_err(invalid)?;
        }
        if let Some(list) = &config.gpus {
            let sel = select::parse_gpu_list(list).map_err(invalid)?;
            let wanted = select::resolve(&sel, &present).map_err(invalid)?;
            chosen = wanted.into_iter().filter(|i| chosen.contains(i)).collect();
        }
        if chosen.is_empty() {
            return Err(SourceError::new(
                ErrorKind::NotAvailable,
                "nvml",
                if count == 0 {
                    "NVML found no GPU on this machine".to_string()
                } else {
                    "no GPU left after --gpus / CUDA_VISIBLE_DEVICES".to_string()
                },
            ));
        }
        let driver = nvml.sys_driver_version().unwrap_or_default();
        let nvml_version = nvml.sys_nvml_version().unwrap_or_default();
        let mut gpus = Vec::new();
        for index in chosen {
            gpus.push(probe_gpu(nvml, index, &driver, &nvml_version, &config)?);
        }
        Ok(NvmlBackend {
            nvml,
            gpus,
            config,
            notes,
        })
    }

    /// The GPUs chosen.
    pub fn gpus(&self) -> &[GpuInfo] {
        &self.gpus
    }

    /// Notes for `flinch sources` (channels absent and why, selection caveats).
    pub fn notes(&self) -> Vec<String> {
        let mut n = self.notes.clone();
        for g in &self.gpus {
            n.extend(g.absent.iter().cloned());
        }
        n
    }

    /// The sources of every chosen GPU.
    pub fn sources(&self) -> Result<Vec<Box<dyn Source>>, SourceError> {
        let mut out: Vec<Box<dyn Source>> = Vec::new();
        for g in &self.gpus {
            out.extend(self.gpu_sources(g)?);
        }
        Ok(out)
    }

    /// What `sources` would open, without opening it.
    pub fn describe(&self) -> Vec<SourceInfo> {
        self.gpus
            .iter()
            .flat_map(|g| self.infos(g))
            .map(|(_, i)| i)
            .collect()
    }

    fn infos(&self, g: &GpuInfo) -> Vec<(&'static str, SourceInfo)> {
        let d = g.device.as_str();
        let info = |suffix: &str, channels: Vec<ChannelSpec>| {
            SourceInfo::new(format!("nvml.{d}.{suffix}"), "nvml", DeviceClass::Gpu)
                .with_channels(channels)
                .with_attributes(g.attributes.clone())
        };
        let mut v = Vec::new();
        let mut fast = Vec::new();
        if g.caps.instant {
            fast.push(
                ChannelSpec::power(d, "power_instant", PowerMethod::Instant)
                    .with_update_period_ns(sources::INSTANT_UPDATE_PERIOD.as_nanos() as u64)
                    .with_description(match self.config.instant_interval {
                        None => "instant power (NVML field 186), read once per update of the field, just after it",
                        Some(_) => "instant power (NVML field 186), polled at the fast interval",
                    }),
            );
        }
        if self.config.average_power && g.caps.average {
            fast.push(
                ChannelSpec::power(d, "power_avg1s", PowerMethod::Average { window_ms: 1000 })
                    .with_update_period_ns(100_000_000)
                    .with_description("1-s moving average power (nvmlDeviceGetPowerUsage): lags every step by up to 1 s"),
            );
        }
        if !fast.is_empty() {
            v.push(("fast", info("fast", fast)));
        }
        if g.caps.samples {
            v.push((
                "samples",
                info(
                    "samples",
                    vec![
                        ChannelSpec::power(d, "power_samples", PowerMethod::DriverSamples)
                            .with_update_period_ns(20_000_000)
                            .with_description("the driver's total-power sample buffer (nvmlDeviceGetSamples), driver-stamped"),
                    ],
                ),
            ));
        }
        if g.caps.energy {
            let max_rate = g.power_limit_w.map(|w| w * 2.0).unwrap_or(2000.0);
            v.push((
                "energy",
                info(
                    "energy",
                    vec![
                        ChannelSpec::energy_counter(
                            d,
                            "energy",
                            CounterSpec {
                                wrap_range: None,
                                max_rate: Some(max_rate),
                            },
                        )
                        .with_update_period_ns(100_000_000)
                        .with_description(
                            "total energy since the driver was loaded (resets on reload)",
                        ),
                    ],
                ),
            ));
        }
        let mut act = Vec::new();
        if g.caps.utilization {
            act.push(
                // NVML: "each sample period may be between 1 second and 1/6 second,
                // depending on the product": the worst case is declared, so analysis does
                // not trust these trailing gauges for spans shorter than they can see.
                ChannelSpec::gauge(d, "util_gpu", Quantity::Utilization)
                    .with_update_period_ns(1_000_000_000)
                    .with_description(
                        "GPU utilisation: share of the last sample period (1/6 to 1 s) a kernel ran",
                    ),
            );
            act.push(
                ChannelSpec::gauge(d, "util_mem", Quantity::Utilization)
                    .with_update_period_ns(1_000_000_000)
                    .with_description("memory controller utilisation over the last sample period"),
            );
        }
        if g.caps.sm_clock {
            act.push(
                ChannelSpec::gauge(d, "sm_clock", Quantity::Clock).with_description("SM clock"),
            );
        }
        if g.caps.temperature {
            act.push(
                ChannelSpec::gauge(d, "temperature", Quantity::Temperature)
                    .with_description("GPU temperature"),
            );
        }
        if g.caps.pstate {
            act.push(
                ChannelSpec::gauge(d, "pstate", Quantity::Other)
                    .with_description("performance state: 0 = P0 (maximum) .. 15; 32 = unknown"),
            );
        }
        if g.caps.compute_procs {
            act.push(
                ChannelSpec::gauge(d, "compute_procs", Quantity::Other)
                    .with_description("CUDA compute processes (contexts) on the GPU"),
            );
        }
        if !act.is_empty() {
            v.push(("activity", info("activity", act)));
        }
        if g.caps.gpm {
            let p = self.config.gpm_interval.as_nanos() as u64;
            v.push((
                "gpm",
                info(
                    "gpm",
                    vec![
                        ChannelSpec::gauge(d, "sm_active", Quantity::Activity)
                            .with_update_period_ns(p)
                            .with_description("GPM: time SMs had a warp assigned, over the interval before the stamp"),
                        ChannelSpec::gauge(d, "sm_occupancy", Quantity::Activity)
                            .with_update_period_ns(p)
                            .with_description("GPM: resident warps / maximum"),
                        ChannelSpec::gauge(d, "tensor_active", Quantity::Activity)
                            .with_update_period_ns(p)
                            .with_description("GPM: time tensor cores were busy"),
                        ChannelSpec::gauge(d, "dram_active", Quantity::Activity)
                            .with_update_period_ns(p)
                            .with_description("GPM: DRAM bandwidth used"),
                    ],
                ),
            ));
        }
        // Polled gauges: a reading that repeats the last is written only as a heartbeat
        // (the driver buffer's samples and the counter are written whole).
        for (kind, info) in &mut v {
            if matches!(*kind, "fast" | "activity" | "gpm") {
                for c in &mut info.channels {
                    c.heartbeat_ns = Some(flinch_core::channel::DEFAULT_HEARTBEAT_NS);
                }
            }
        }
        v
    }

    fn gpu_sources(&self, g: &GpuInfo) -> Result<Vec<Box<dyn Source>>, SourceError> {
        let mut out: Vec<Box<dyn Source>> = Vec::new();
        for (kind, info) in self.infos(g) {
            let dev = device(self.nvml, g.index)?;
            let src: Box<dyn Source> = match kind {
                "fast" => {
                    let average = info
                        .channels
                        .iter()
                        .position(|c| c.name.ends_with(".power_avg1s"));
                    Box::new(FastSource {
                        raw: ffi::RawDevice::new(self.nvml, &dev),
                        device: dev,
                        fields: [ffi::field_request(sources::FI_POWER_INSTANT)],
                        average,
                        interval: self.config.instant_interval,
                        info,
                    })
                }
                "samples" => Box::new(BufferSource::new(
                    info,
                    ffi::RawDevice::new(self.nvml, &dev),
                    self.config.buffer_interval,
                )),
                "energy" => Box::new(EnergySource {
                    info,
                    device: dev,
                    interval: self.config.energy_interval,
                }),
                "activity" => {
                    let pos = |n: &str| info.channels.iter().position(|c| c.name.ends_with(n));
                    let ch = ActivityChannels {
                        utilization: pos(".util_gpu").zip(pos(".util_mem")),
                        sm_clock: pos(".sm_clock"),
                        temperature: pos(".temperature"),
                        pstate: pos(".pstate"),
                        compute_procs: pos(".compute_procs"),
                    };
                    Box::new(ActivitySource {
                        info,
                        device: dev,
                        ch,
                        interval: self.config.activity_interval,
                    })
                }
                "gpm" => Box::new(GpmSource {
                    info,
                    gpm: ffi::RawGpm::new(self.nvml, &dev, &sources::GPM_METRIC_IDS)
                        .map_err(|e| map(e, "GPM sampling"))?,
                    interval: self.config.gpm_interval,
                }),
                _ => unreachable!("infos() only names the kinds above"),
            };
            out.push(src);
        }
        Ok(out)
    }
}

fn probe_gpu(
    nvml: &'static NvmlLib,
    index: u32,
    driver: &str,
    nvml_version: &str,
    config: &NvmlConfig,
) -> Result<GpuInfo, SourceError> {
    let dev = device(nvml, index)?;
    let d = format!("gpu{index}");
    let mut attributes = BTreeMap::new();
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            attributes.insert(k.to_owned(), v);
        }
    };
    put("index", Some(index.to_string()));
    put("uuid", dev.uuid().ok());
    put("name", dev.name().ok());
    put("pci_bus_id", dev.pci_info().ok().map(|p| p.bus_id));
    put(
        "architecture",
        dev.architecture().ok().map(|a| a.to_string()),
    );
    put("driver_version", Some(driver.to_owned()));
    put("nvml_version", Some(nvml_version.to_owned()));
    let power_limit_w = dev.enforced_power_limit().ok().map(|mw| mw as f64 / 1e3);
    put("power_limit_w", power_limit_w.map(|w| w.to_string()));
    put(
        "max_sm_clock_mhz",
        dev.max_clock_info(Clock::SM).ok().map(|c| c.to_string()),
    );

    let mut absent = Vec::new();
    let e = |r: Result<(), nvml_wrapper::error::NvmlError>| r.err().map(|e| e.to_string());
    let raw = ffi::RawDevice::new(nvml, &dev);
    let mut f = [ffi::field_request(sources::FI_POWER_INSTANT)];
    let instant_err = match raw.field_values(&mut f) {
        Ok(()) if ffi::field_number(&f[0]).is_some() => None,
        Ok(()) => Some(format!("field 186 returned code {}", f[0].nvmlReturn)),
        Err(x) => Some(x.to_string()),
    };
    let mut buf = Vec::with_capacity(sources::BUFFER_CAPACITY);
    let samples_err = e(raw.power_samples(0, &mut buf).map(|_| ()));
    let caps = Caps {
        instant: gpu_channel(
            instant_err.is_none(),
            &format!("{d}.power_instant"),
            "instant power",
            &mut absent,
            instant_err,
        ),
        samples: gpu_channel(
            samples_err.is_none(),
            &format!("{d}.power_samples"),
            "the power sample buffer",
            &mut absent,
            samples_err,
        ),
        energy: {
            let r = dev.total_energy_consumption().map(|_| ());
            gpu_channel(
                r.is_ok(),
                &format!("{d}.energy"),
                "the energy counter (Volta and newer)",
                &mut absent,
                e(r),
            )
        },
        average: {
            let r = dev.power_usage().map(|_| ());
            let ok = r.is_ok();
            if config.average_power {
                gpu_channel(
                    ok,
                    &format!("{d}.power_avg1s"),
                    "average power",
                    &mut absent,
                    e(r),
                );
            }
            ok
        },
        utilization: {
            let r = dev.utilization_rates().map(|_| ());
            gpu_channel(
                r.is_ok(),
                &format!("{d}.util_gpu"),
                "utilisation (not on MIG)",
                &mut absent,
                e(r),
            )
        },
        sm_clock: {
            let r = dev.clock_info(Clock::SM).map(|_| ());
            gpu_channel(
                r.is_ok(),
                &format!("{d}.sm_clock"),
                "SM clock",
                &mut absent,
                e(r),
            )
        },
        temperature: {
            let r = dev.temperature(TemperatureSensor::Gpu).map(|_| ());
            gpu_channel(
                r.is_ok(),
                &format!("{d}.temperature"),
                "temperature",
                &mut absent,
                e(r),
            )
        },
        pstate: {
            let r = dev.performance_state().map(|_| ());
            gpu_channel(
                r.is_ok(),
                &format!("{d}.pstate"),
                "performance state",
                &mut absent,
                e(r),
            )
        },
        compute_procs: {
            let r = dev.running_compute_processes_count().map(|_| ());
            gpu_channel(
                r.is_ok(),
                &format!("{d}.compute_procs"),
                "compute process count",
                &mut absent,
                e(r),
            )
        },
        gpm: {
            let r = dev.gpm_support().and_then(|ok| {
                if ok {
                    dev.gpm_sample().map(|_| ())
                } else {
                    Err(nvml_wrapper::error::NvmlError::NotSupported)
                }
            });
            gpu_channel(
                r.is_ok(),
                &format!("{d}.sm_active"),
                "GPM activity (Hopper and newer)",
                &mut absent,
                e(r),
            )
        },
    };
    Ok(GpuInfo {
        index,
        device: d,
        attributes,
        power_limit_w,
        absent,
        caps,
    })
}

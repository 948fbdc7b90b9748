//! The only place that names every backend: the flags each one takes, and how each is built
//! from them. Every backend but the synthetic one sits behind a cargo feature of its own
//! (all on by default); a build without one says which feature would bring it.

use crate::Failure;
use clap::Args;
use flinch_core::backend::Backend;
use flinch_record::synthetic::Synthetic;
#[cfg(any(feature = "nvml", feature = "dcgm", feature = "rapl"))]
use std::path::PathBuf;
#[cfg(feature = "nvml")]
use std::time::Duration;

/// Every backend flinch knows, in the order `flinch sources` lists them, with the cargo
/// feature that compiles it in (`None`: always there).
pub const KNOWN: &[(&str, Option<&str>)] = &[
    ("nvml", Some("nvml")),
    ("dcgm", Some("dcgm")),
    ("rapl", Some("rapl")),
    ("cpu", Some("cpu")),
    ("synthetic", None),
];

/// Whether the backend named `name` is compiled into this build.
fn compiled_in(name: &str) -> bool {
    match name {
        "nvml" => cfg!(feature = "nvml"),
        "dcgm" => cfg!(feature = "dcgm"),
        "rapl" => cfg!(feature = "rapl"),
        "cpu" => cfg!(feature = "cpu"),
        _ => true,
    }
}

/// Options of the backends, shared by the commands that open sources.
#[derive(Debug, Args, Clone)]
pub struct BackendArgs {
    /// The synthetic source's schedule: POWER[/DURATION],... and an optional ;wrap=NJ
    #[arg(
        long,
        value_name = "PROFILE",
        default_value = "60W/1s,300W/1s;wrap=500J",
        allow_hyphen_values = true,
        help_heading = "Sources"
    )]
    pub synthetic: String,
    #[cfg(feature = "rapl")]
    #[command(flatten)]
    pub rapl: RaplArgs,
    #[cfg(any(feature = "nvml", feature = "dcgm"))]
    #[command(flatten)]
    pub gpus: GpuArgs,
    #[cfg(feature = "nvml")]
    #[command(flatten)]
    pub nvml: NvmlArgs,
    #[cfg(feature = "dcgm")]
    #[command(flatten)]
    pub dcgm: DcgmArgs,
    #[cfg(feature = "cpu")]
    #[command(flatten)]
    pub cpu: CpuArgs,
}

/// `rapl` flags.
#[cfg(feature = "rapl")]
#[derive(Debug, Args, Clone)]
pub struct RaplArgs {
    /// The powercap tree to read RAPL zones from
    #[arg(long, value_name = "DIR", help_heading = "Sources")]
    pub rapl_root: Option<PathBuf>,
}

/// GPU selection, shared by `nvml` and `dcgm`.
#[cfg(any(feature = "nvml", feature = "dcgm"))]
#[derive(Debug, Args, Clone)]
pub struct GpuArgs {
    /// GPUs to record, by index or UUID (nvml) or DCGM id (dcgm), comma-separated (default: all)
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        help_heading = "Sources"
    )]
    pub gpus: Option<Vec<String>>,
    /// Record only the GPUs listed in CUDA_VISIBLE_DEVICES (nvml)
    #[arg(long, help_heading = "Sources")]
    pub cuda_visible_devices: bool,
}

/// `nvml` flags.
#[cfg(feature = "nvml")]
#[derive(Debug, Args, Clone)]
pub struct NvmlArgs {
    /// The NVML library to load instead of libnvidia-ml.so.1
    #[arg(long, value_name = "PATH", help_heading = "Sources")]
    pub nvml_lib: Option<PathBuf>,
    /// Also record NVML's 1-s average power (a lagging signal; off by default)
    #[arg(long, help_heading = "Sources")]
    pub nvml_average_power: bool,
    /// How often NVML's total-energy counter is read, besides the start and the stop (each
    /// read costs 3-12 ms of a CPU: the driver spins). The driver's power samples agree with
    /// it within 0.5 %, so by default it is a drift check; 100ms, its update period, lets
    /// spans of a second or more be measured by the counter too
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = crate::cli::parse_duration, allow_hyphen_values = true, help_heading = "Sources")]
    pub nvml_energy_interval: Duration,
    /// How often NVML's driver power-sample buffer is drained (it holds ~2.4 s of 20-ms
    /// samples; each drain costs ~0.3-0.7 ms of a CPU)
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = crate::cli::parse_duration, allow_hyphen_values = true, help_heading = "Sources")]
    pub nvml_buffer_interval: Duration,
}

/// `dcgm` flags.
#[cfg(feature = "dcgm")]
#[derive(Debug, Args, Clone)]
pub struct DcgmArgs {
    /// The DCGM library to load instead of libdcgm.so.4 / libdcgm.so.3
    #[arg(long, value_name = "PATH", help_heading = "Sources")]
    pub dcgm_lib: Option<PathBuf>,
    /// A running DCGM host engine: HOST, HOST:PORT or unix:///PATH (default: start an embedded engine)
    #[arg(long, value_name = "ADDR", help_heading = "Sources")]
    pub dcgm_host: Option<String>,
}

/// `cpu` flags.
#[cfg(feature = "cpu")]
#[derive(Debug, Args, Clone)]
pub struct CpuArgs {
    /// A process whose tree's CPU time the cpu source records (default: the wrapped command)
    #[arg(long, value_name = "PID", help_heading = "Sources")]
    pub pid: Option<u32>,
}

/// The backends of one command, built from its flags.
pub struct Backends {
    list: Vec<Box<dyn Backend>>,
    #[cfg(feature = "cpu")]
    follower: Option<flinch_cpu::Follower>,
    /// Notes about flags that do not apply (printed by the commands that open sources).
    pub notes: Vec<String>,
}

impl Backends {
    /// Builds every compiled-in backend from `args`. `wraps_command`: `record` will start a
    /// command whose process tree the cpu backend follows (see [`Backends::follow`]).
    pub fn build(args: &BackendArgs, wraps_command: bool) -> Result<Self, Failure> {
        let _ = wraps_command;
        #[cfg_attr(not(feature = "dcgm"), allow(unused_mut))]
        let mut notes = Vec::new();
        let mut list: Vec<Box<dyn Backend>> = Vec::new();
        #[cfg(feature = "nvml")]
        list.push(match nvml_config(args) {
            Ok(c) => Box::new(flinch_nvml::Nvml::new(c)),
            Err(reason) => Box::new(Misconfigured::new(flinch_nvml::Nvml::default(), reason)),
        });
        #[cfg(feature = "dcgm")]
        {
            list.push(match dcgm_config(args) {
                Ok(c) => Box::new(flinch_dcgm::Dcgm::new(c)),
                Err(reason) => Box::new(Misconfigured::new(flinch_dcgm::Dcgm::default(), reason)),
            });
            if args.gpus.cuda_visible_devices {
                notes.push(
                    "--cuda-visible-devices does not apply to dcgm (DCGM ids are not CUDA ordinals): use --gpus"
                        .into(),
                );
            }
        }
        #[cfg(feature = "rapl")]
        {
            let mut c = flinch_rapl::RaplConfig::default();
            if let Some(root) = &args.rapl.rapl_root {
                c.root = root.clone();
            }
            list.push(Box::new(flinch_rapl::Rapl::new(c)));
        }
        #[cfg(feature = "cpu")]
        let follower = {
            use flinch_cpu::{CpuConfig, Follower, ProcessTarget};
            let (target, follower) = match (args.cpu.pid, wraps_command) {
                (Some(p), _) => (ProcessTarget::Pid(p), None),
                (None, true) => {
                    let f = Follower::default();
                    (ProcessTarget::Later(f.clone()), Some(f))
                }
                (None, false) => (ProcessTarget::None, None),
            };
            list.push(Box::new(flinch_cpu::Cpu::new(CpuConfig::new(target))));
            follower
        };
        let synthetic = args
            .synthetic
            .parse()
            .map_err(|e: String| Failure::new(format!("--synthetic: {e}")))?;
        list.push(Box::new(Synthetic::new(synthetic)));
        Ok(Backends {
            list,
            #[cfg(feature = "cpu")]
            follower,
            notes,
        })
    }

    /// Every backend compiled in, in [`KNOWN`] order.
    pub fn all(&self) -> &[Box<dyn Backend>] {
        &self.list
    }

    /// The backend named `name`, or why there is none.
    pub fn get(&self, name: &str) -> Result<&dyn Backend, Failure> {
        if let Some(b) = self.list.iter().find(|b| b.name() == name) {
            return Ok(b.as_ref());
        }
        match KNOWN.iter().find(|(n, _)| *n == name) {
            Some((_, Some(feature))) if !compiled_in(name) => Err(Failure::new(format!(
                "{name} is not compiled in (cargo feature `{feature}`): rebuild with \
                 `cargo install flinch-cli --features {feature}` or the default features"
            ))),
            _ => Err(Failure::new(format!(
                "unknown source {name:?}: expected one of {}",
                KNOWN.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
            ))),
        }
    }

    /// Tells the backends that follow the wrapped command its pid, once started.
    pub fn follow(&self, pid: u32) {
        #[cfg(feature = "cpu")]
        if let Some(f) = &self.follower {
            f.follow(pid);
        }
        let _ = pid;
    }
}

#[cfg(feature = "nvml")]
fn nvml_config(args: &BackendArgs) -> Result<flinch_nvml::NvmlConfig, String> {
    let cuda_visible_devices = if args.gpus.cuda_visible_devices {
        Some(std::env::var("CUDA_VISIBLE_DEVICES").map_err(|_| {
            "--cuda-visible-devices given but CUDA_VISIBLE_DEVICES is not set".to_owned()
        })?)
    } else {
        None
    };
    Ok(flinch_nvml::NvmlConfig {
        lib_path: args.nvml.nvml_lib.clone(),
        gpus: args.gpus.gpus.clone(),
        cuda_visible_devices,
        average_power: args.nvml.nvml_average_power,
        energy_interval: args.nvml.nvml_energy_interval,
        buffer_interval: args.nvml.nvml_buffer_interval,
        ..Default::default()
    })
}

#[cfg(feature = "dcgm")]
fn dcgm_config(args: &BackendArgs) -> Result<flinch_dcgm::DcgmConfig, String> {
    let gpus = match &args.gpus.gpus {
        None => None,
        Some(list) => Some(
            list.iter()
                .map(|g| {
                    g.trim().parse::<u32>().map_err(|_| {
                        format!(
                            "--gpus {g:?}: the dcgm backend selects GPUs by DCGM GPU id (a number, \
                             see `dcgmi discovery -l`); UUIDs are not supported"
                        )
                    })
                })
                .collect::<Result<Vec<u32>, _>>()?,
        ),
    };
    Ok(flinch_dcgm::DcgmConfig {
        library: args.dcgm.dcgm_lib.clone(),
        host: args.dcgm.dcgm_host.clone(),
        gpus,
        ..Default::default()
    })
}

/// A backend whose flags are wrong: unavailable with the reason, and refusing to open, so
/// that the mistake is reported only when that backend is used.
#[cfg(any(feature = "nvml", feature = "dcgm"))]
struct Misconfigured<B> {
    backend: B,
    reason: String,
}

#[cfg(any(feature = "nvml", feature = "dcgm"))]
impl<B: Backend> Misconfigured<B> {
    fn new(backend: B, reason: String) -> Self {
        Misconfigured { backend, reason }
    }
}

#[cfg(any(feature = "nvml", feature = "dcgm"))]
impl<B: Backend> Backend for Misconfigured<B> {
    fn name(&self) -> &'static str {
        self.backend.name()
    }
    fn summary(&self) -> &'static str {
        self.backend.summary()
    }
    fn status(&self, _: &flinch_core::BackendContext) -> flinch_core::BackendStatus {
        flinch_core::BackendStatus::unavailable(self, self.reason.clone())
    }
    fn open(
        &self,
        _: &flinch_core::BackendContext,
    ) -> Result<Vec<Box<dyn flinch_core::Source>>, flinch_core::SourceError> {
        Err(flinch_core::SourceError::new(
            flinch_core::ErrorKind::InvalidInput,
            self.name(),
            self.reason.clone(),
        ))
    }
    fn default_on(&self) -> bool {
        self.backend.default_on()
    }
}

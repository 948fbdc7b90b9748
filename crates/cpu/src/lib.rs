#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod account;
mod error;
mod host;
mod tree;

pub use account::{TreeAccount, TreeEntry};
pub use error::CpuError;
pub use host::{HostCpu, cpu_count};
pub use tree::{Follower, ProcessTree};

use flinch_core::backend::{Backend, BackendContext, BackendStatus};
use flinch_core::{CounterSpec, Source, SourceError};
use std::time::Duration;

/// The backend's name.
pub const BACKEND: &str = "cpu";

/// The CPU sources never poll faster than this: the counters tick at 100 Hz.
pub const MIN_INTERVAL: Duration = Duration::from_millis(20);

pub(crate) fn ticks_per_second() -> f64 {
    procfs::ticks_per_second().max(1) as f64
}

pub(crate) fn tick_ns() -> u64 {
    (1e9 / ticks_per_second()) as u64
}

pub(crate) fn counter_spec(cpus: usize) -> CounterSpec {
    CounterSpec {
        wrap_range: None,
        // a counter of CPU-seconds cannot run faster than the CPUs; twice that leaves room
        // for tick rounding at short poll intervals
        max_rate: Some(2.0 * cpus.max(1) as f64 + 1.0),
    }
}

/// Which process tree the backend records besides the host.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub enum ProcessTarget {
    /// None: host CPU time only.
    #[default]
    None,
    /// A running process and its descendants.
    Pid(u32),
    /// A process known later (a command started after the recording), through a
    /// [`Follower`].
    Later(Follower),
}

/// The backend's configuration.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct CpuConfig {
    /// Which process tree to record besides the host.
    pub process: ProcessTarget,
}

impl CpuConfig {
    /// Host CPU time, and the tree of `process`.
    pub fn new(process: ProcessTarget) -> Self {
        CpuConfig { process }
    }
}

/// The `cpu` backend: host CPU utilisation and busy CPU time, and a process tree's CPU
/// time, through procfs.
#[derive(Clone, Debug, Default)]
pub struct Cpu {
    config: CpuConfig,
}

impl Cpu {
    /// The backend with this configuration.
    pub fn new(config: CpuConfig) -> Self {
        Cpu { config }
    }
}

impl Backend for Cpu {
    fn name(&self) -> &'static str {
        BACKEND
    }
    fn summary(&self) -> &'static str {
        "host CPU utilisation and a process tree's CPU time (procfs)"
    }
    fn status(&self, ctx: &BackendContext) -> BackendStatus {
        let cpus = match cpu_count() {
            Ok(c) => c,
            Err(e) => {
                return BackendStatus::unavailable(self, flinch_core::error::display_chain(&e));
            }
        };
        let sources = match self.open(ctx) {
            Ok(s) => s,
            Err(e) => {
                return BackendStatus::unavailable(self, flinch_core::error::display_chain(&e));
            }
        };
        let mut notes = vec![format!(
            "{cpus} CPUs, {} ticks/s: polled every {} at the finest; counters resolve spans of ≥ {} ms",
            ticks_per_second(),
            humantime::format_duration(ctx.interval.max(MIN_INTERVAL)),
            10 * tick_ns() / 1_000_000
        )];
        if matches!(self.config.process, ProcessTarget::None) {
            notes.push("proc.cpu_time follows the command `record` wraps, or --pid PID".into());
        }
        BackendStatus::opened(self, &sources, ctx).with_notes(notes)
    }
    fn open(&self, ctx: &BackendContext) -> Result<Vec<Box<dyn Source>>, SourceError> {
        let mut v: Vec<Box<dyn Source>> = vec![Box::new(HostCpu::open(ctx.interval)?)];
        match &self.config.process {
            ProcessTarget::None => {}
            ProcessTarget::Pid(p) => v.push(Box::new(ProcessTree::follow(*p, ctx.interval)?)),
            ProcessTarget::Later(f) => v.push(Box::new(ProcessTree::with_follower(
                f.clone(),
                ctx.interval,
            )?)),
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flinch_core::clock::MonotonicClock;
    use flinch_core::testing::check_source;

    #[test]
    fn host_cpu_conforms() {
        let mut s = HostCpu::open(Duration::from_millis(10)).expect("/proc/stat readable");
        let rep = check_source(&mut s, &MonotonicClock, 5);
        assert!(rep.ok(), "{rep}");
        assert!(rep.readings["host.cpu_busy_s"] >= 5);
        assert!(rep.readings["host.cpu_util"] >= 4);
        assert_eq!(s.interval(), Some(MIN_INTERVAL));
    }

    #[test]
    fn a_followed_tree_conforms_and_a_deferred_one_waits_for_its_pid() {
        let me = std::process::id();
        let mut s = ProcessTree::follow(me, Duration::from_millis(10)).expect("our own pid");
        assert_eq!(s.info().scope, flinch_core::Scope::ProcessTree);
        let rep = check_source(&mut s, &MonotonicClock, 3);
        assert!(rep.ok(), "{rep}");
        assert_eq!(rep.readings["proc.cpu_time"], 4);
        // before the pid is known, no readings; then it follows
        let (mut w, follower) = ProcessTree::deferred(Duration::from_millis(10)).unwrap();
        let rep = check_source(&mut w, &MonotonicClock, 2);
        assert!(rep.ok(), "{rep}");
        assert!(rep.readings.is_empty());
        follower.follow(me);
        follower.follow(1); // the first pid given wins
        assert_eq!(follower.pid(), Some(me));
        let rep = check_source(&mut w, &MonotonicClock, 2);
        assert!(rep.ok(), "{rep}");
        assert!(rep.readings["proc.cpu_time"] >= 2);
    }

    #[test]
    fn bad_pids_are_refused_with_the_reason_chained() {
        let err = ProcessTree::follow(i32::MAX as u32, MIN_INTERVAL)
            .err()
            .unwrap();
        assert!(matches!(err, CpuError::NoSuchProcess { .. }), "{err}");
        let se = SourceError::from(err);
        assert_eq!(se.kind, flinch_core::ErrorKind::InvalidInput);
        assert!(se.message.contains("does not exist"), "{}", se.message);
        assert!(std::error::Error::source(&se).is_some());
        let err = ProcessTree::follow(u32::MAX, MIN_INTERVAL).err().unwrap();
        assert!(matches!(err, CpuError::BadPid { .. }), "{err}");
    }

    #[test]
    fn the_backend_opens_host_and_tree_as_configured() {
        let ctx = BackendContext::new(Duration::from_millis(10));
        let host_only = Cpu::default().open(&ctx).unwrap();
        assert_eq!(host_only.len(), 1);
        let both = Cpu::new(CpuConfig::new(ProcessTarget::Pid(std::process::id())))
            .open(&ctx)
            .unwrap();
        let names: Vec<_> = both.iter().map(|s| s.info().name.clone()).collect();
        assert_eq!(names, ["cpu.host", "cpu.proc"]);
        let st = Cpu::default().status(&ctx);
        assert!(st.available, "{st:?}");
        assert!(
            st.notes.iter().any(|n| n.contains("polled every 20ms")),
            "{:?}",
            st.notes
        );
    }
}

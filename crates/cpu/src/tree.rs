//! The CPU time of one process tree: a pid given up front, or one that is known only later
//! (the command a recorder wraps, started after the recording).

use crate::account::{TreeAccount, TreeEntry, snapshot};
use crate::error::CpuError;
use crate::{BACKEND, MIN_INTERVAL, counter_spec, tick_ns, ticks_per_second};
use flinch_core::{
    ChannelSpec, DeviceClass, Quantity, Readings, Scope, Source, SourceError, SourceInfo,
};
use procfs::process::Process;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

fn proc_info(cpus: usize, root: &str) -> SourceInfo {
    SourceInfo::new("cpu.proc", BACKEND, DeviceClass::Cpu)
        .with_scope(Scope::ProcessTree)
        .with_channels(vec![
            ChannelSpec::counter("proc", "cpu_time", Quantity::CpuTime, counter_spec(cpus))
                .with_update_period_ns(tick_ns())
                .with_description(
                    "CPU time of the process tree: live utime+stime plus reaped children's cutime+cstime",
                ),
        ])
        .with_attribute("root", root)
        .with_attribute("ticks_per_second", ticks_per_second().to_string())
}

/// Hands a [`ProcessTree`] opened with [`ProcessTree::deferred`] the pid to follow, once it
/// is known. Cloneable; the first pid given wins.
#[derive(Clone, Debug, Default)]
pub struct Follower(Arc<AtomicU32>);

impl Follower {
    /// Starts following `pid` and its descendants from the next poll.
    pub fn follow(&self, pid: u32) {
        let _ = self
            .0
            .compare_exchange(0, pid, Ordering::SeqCst, Ordering::SeqCst);
    }
    /// The pid followed, once given.
    pub fn pid(&self) -> Option<u32> {
        match self.0.load(Ordering::SeqCst) {
            0 => None,
            p => Some(p),
        }
    }
}

/// CPU time of a process tree: channel `proc.cpu_time` (CPU-seconds, a counter), the
/// process's and all its descendants' user and system time, reaped children included.
pub struct ProcessTree {
    info: SourceInfo,
    interval: Duration,
    tps: f64,
    follower: Follower,
    root: Option<i32>,
    account: TreeAccount,
    scan_all: bool,
    snap: Vec<TreeEntry>,
    last: Option<f64>,
}

impl ProcessTree {
    /// Follows the running process `pid` and its descendants, polled every `interval` (at
    /// least 20 ms).
    pub fn follow(pid: u32, interval: Duration) -> Result<Self, CpuError> {
        let p = i32::try_from(pid)
            .ok()
            .filter(|p| *p > 0)
            .ok_or(CpuError::BadPid { pid })?;
        Process::new(p)
            .and_then(|pr| pr.stat())
            .map_err(|source| CpuError::NoSuchProcess { pid, source })?;
        let me = Self::new(&pid.to_string(), interval)?;
        me.follower.follow(pid);
        Ok(me)
    }

    /// A tree whose root is given later through the returned [`Follower`] (it records
    /// nothing until then): for a command started after the recording.
    pub fn deferred(interval: Duration) -> Result<(Self, Follower), CpuError> {
        let me = Self::new("the wrapped command", interval)?;
        let f = me.follower.clone();
        Ok((me, f))
    }

    /// A tree whose root `follower` gives later.
    pub fn with_follower(follower: Follower, interval: Duration) -> Result<Self, CpuError> {
        let mut me = Self::new("the wrapped command", interval)?;
        me.follower = follower;
        Ok(me)
    }

    fn new(root: &str, interval: Duration) -> Result<Self, CpuError> {
        Ok(ProcessTree {
            info: proc_info(crate::cpu_count()?, root),
            interval: interval.max(MIN_INTERVAL),
            tps: ticks_per_second(),
            follower: Follower::default(),
            root: None,
            account: TreeAccount::default(),
            scan_all: false,
            snap: Vec::new(),
            last: None,
        })
    }
}

impl Source for ProcessTree {
    fn info(&self) -> &SourceInfo {
        &self.info
    }
    fn poll(&mut self, out: &mut Readings<'_>) -> Result<(), SourceError> {
        if self.root.is_none() {
            match self.follower.pid() {
                None => return Ok(()), // the command has not started yet
                Some(p) => self.root = i32::try_from(p).ok(),
            }
        }
        let Some(root) = self.root else {
            return Ok(());
        };
        snapshot(root, &mut self.scan_all, &mut self.snap)
            .map_err(|e| CpuError::read("the process tree", e))?;
        let t = out.now_ns();
        if self.snap.is_empty() && self.last.is_none() {
            return Ok(()); // never seen alive
        }
        let total = self.account.update(&self.snap) as f64 / self.tps;
        self.last = Some(total);
        out.push(0, t, total);
        Ok(())
    }
    fn interval(&self) -> Option<Duration> {
        Some(self.interval)
    }
}

//! The cpu backend: host CPU utilisation and busy CPU time from `/proc/stat`, and the CPU
//! time of a process tree (the wrapped command's, or `--pid`'s) from `/proc/<pid>/stat`,
//! both through procfs.
//!
//! Why procfs and not sysinfo: sysinfo silently skips re-reading `/proc/stat` within
//! 200 ms of the last read, which makes it useless at the cadence spans need. Reading
//! `/proc/stat` costs ~15 µs and a process's `stat` ~11 µs.
//!
//! Channels:
//! - `host.cpu_util` (%, gauge): busy share of all CPUs between two polls.
//! - `host.cpu_busy_s` (s, counter): busy CPU time summed over CPUs (user + nice + system +
//!   irq + softirq); its rate over a span is the number of cores busy. Analysis uses this
//!   one: a difference of a counter over the span, not a mean of noisy per-poll ratios.
//! - `proc.cpu_time` (s, counter): CPU time of the process and all its descendants: live
//!   processes' utime + stime plus what their reaped children used (cutime + cstime). A
//!   descendant that exits between polls is counted through its parent's cutime; one whose
//!   parent is outside the tree keeps what was already counted (see [`TreeAccount`]).
//!
//! Both counters tick at `USER_HZ` (100 Hz almost everywhere): their update period is one
//! tick, and analysis only trusts their rate over spans of ten ticks or more.

use super::{Backend, BackendOptions, BackendStatus};
use flinch_core::{
    ChannelSpec, CounterSpec, ErrorKind, Quantity, Readings, Source, SourceError, SourceInfo,
};
use procfs::process::Process;
use procfs::{CurrentSI, KernelStats, ProcError};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

pub struct Cpu;

const SUMMARY: &str = "host CPU utilisation and a process tree's CPU time (procfs)";
/// The CPU sources never poll faster than this: the counters tick at 100 Hz.
const MIN_INTERVAL: Duration = Duration::from_millis(20);

fn proc_error(e: ProcError, what: &str) -> SourceError {
    let (kind, msg) = match &e {
        ProcError::PermissionDenied(_) => (
            ErrorKind::PermissionDenied,
            format!("{what}: permission denied ({e}); run as the process's owner or as root"),
        ),
        ProcError::NotFound(_) => (ErrorKind::NotAvailable, format!("{what}: {e}")),
        ProcError::Incomplete(_) | ProcError::Io(..) => {
            (ErrorKind::Transient, format!("{what}: {e}"))
        }
        _ => (ErrorKind::Other, format!("{what}: {e}")),
    };
    SourceError::new(kind, "cpu", msg)
}

fn ticks_per_second() -> f64 {
    procfs::ticks_per_second().max(1) as f64
}

fn tick_ns() -> u64 {
    (1e9 / ticks_per_second()) as u64
}

fn counter_spec(cpus: usize) -> CounterSpec {
    CounterSpec {
        wrap_range: None,
        // a counter of CPU-seconds cannot run faster than the CPUs; twice that leaves room
        // for tick rounding at short poll intervals
        max_rate: Some(2.0 * cpus.max(1) as f64 + 1.0),
    }
}

fn host_info(cpus: usize, interval: Duration) -> SourceInfo {
    SourceInfo {
        name: "cpu.host".into(),
        backend: "cpu".into(),
        channels: vec![
            // A share between two polls: it describes the poll interval before its stamp.
            ChannelSpec::gauge("host", "cpu_util", Quantity::Utilization)
                .with_update_period_ns((interval.as_nanos() as u64).max(tick_ns()))
                .with_description("busy share of all CPUs since the previous poll (/proc/stat)"),
            ChannelSpec::counter("host", "cpu_busy_s", Quantity::CpuTime, counter_spec(cpus))
                .with_update_period_ns(tick_ns())
                .with_description(
                    "busy CPU time summed over CPUs (user+nice+system+irq+softirq); rate = cores busy",
                ),
        ],
        attributes: [
            ("cpus".to_owned(), cpus.to_string()),
            ("ticks_per_second".to_owned(), ticks_per_second().to_string()),
        ]
        .into(),
    }
}

fn proc_info(cpus: usize, root: &str) -> SourceInfo {
    SourceInfo {
        name: "cpu.proc".into(),
        backend: "cpu".into(),
        channels: vec![
            ChannelSpec::counter("proc", "cpu_time", Quantity::CpuTime, counter_spec(cpus))
                .with_update_period_ns(tick_ns())
                .with_description(
                    "CPU time of the process tree: live utime+stime plus reaped children's cutime+cstime",
                ),
        ],
        attributes: [
            ("root".to_owned(), root.to_owned()),
            (
                flinch_core::device::ACTIVITY_SCOPE_ATTRIBUTE.to_owned(),
                "process".to_owned(),
            ),
            ("ticks_per_second".to_owned(), ticks_per_second().to_string()),
        ]
        .into(),
    }
}

/// Host CPU time from `/proc/stat`.
pub struct HostCpu {
    info: SourceInfo,
    interval: Duration,
    tps: f64,
    prev: Option<(u64, u64)>,
    /// `/proc/stat`, kept open and re-read from the start each poll.
    file: std::fs::File,
    buf: Vec<u8>,
}

impl HostCpu {
    pub fn open(interval: Duration) -> Result<Self, SourceError> {
        let ks = KernelStats::current().map_err(|e| proc_error(e, "/proc/stat"))?;
        let file = std::fs::File::open("/proc/stat")
            .map_err(|e| proc_error(ProcError::from(e), "/proc/stat"))?;
        let interval = interval.max(MIN_INTERVAL);
        Ok(HostCpu {
            info: host_info(ks.cpu_time.len(), interval),
            interval,
            tps: ticks_per_second(),
            prev: None,
            file,
            buf: vec![0; 4096],
        })
    }
}

/// `(busy, total)` ticks from the first line of `/proc/stat` (`cpu  user nice system idle
/// iowait irq softirq steal ...`): busy = user + nice + system + irq + softirq, total =
/// busy + idle + iowait + steal (guest time is already inside user and nice).
///
/// procfs parses every line of the file into new allocations (~40 µs a poll measured);
/// one line of integers read into a buffer kept between polls costs a few µs.
pub fn parse_stat_total(text: &[u8]) -> Option<(u64, u64)> {
    let line = text.split(|&b| b == b'\n').next()?;
    let mut f = line
        .split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty());
    if f.next()? != b"cpu" {
        return None;
    }
    let mut v = [0u64; 8];
    let mut n = 0;
    for (slot, w) in v.iter_mut().zip(f) {
        *slot = std::str::from_utf8(w).ok()?.parse().ok()?;
        n += 1;
    }
    if n < 4 {
        return None; // user nice system idle at least
    }
    let [user, nice, system, idle, iowait, irq, softirq, steal] = v;
    let busy = user + nice + system + irq + softirq;
    Some((busy, busy + idle + iowait + steal))
}

impl Source for HostCpu {
    fn info(&self) -> &SourceInfo {
        &self.info
    }
    fn poll(&mut self, out: &mut Readings<'_>) -> Result<(), SourceError> {
        use std::os::unix::fs::FileExt;
        let n = self
            .file
            .read_at(&mut self.buf, 0)
            .map_err(|e| proc_error(ProcError::from(e), "/proc/stat"))?;
        let t = out.now_ns();
        let (busy, total) = parse_stat_total(&self.buf[..n]).ok_or_else(|| {
            SourceError::new(
                ErrorKind::Other,
                "cpu",
                "/proc/stat: the first line is not `cpu  user nice system idle ...`",
            )
        })?;
        if let Some((pb, pt)) = self.prev {
            let dt = total.saturating_sub(pt);
            if dt > 0 {
                let util = busy.saturating_sub(pb) as f64 / dt as f64 * 100.0;
                out.push(0, t, util.clamp(0.0, 100.0));
            }
        }
        out.push(1, t, busy as f64 / self.tps);
        self.prev = Some((busy, total));
        Ok(())
    }
    fn interval(&self) -> Option<Duration> {
        Some(self.interval)
    }
}

/// One process in a snapshot of a tree, times in ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TreeEntry {
    pub pid: i32,
    pub ppid: i32,
    /// utime + stime.
    pub own: u64,
    /// cutime + cstime: what its reaped children used.
    pub children: u64,
}

/// Turns successive snapshots of a process tree into a monotonic CPU-time total.
///
/// The plain sum over live processes of own + reaped-children time stays continuous when
/// a descendant exits and its parent in the tree reaps it (its time moves into the
/// parent's `cutime`). It falls when a descendant vanishes without a parent in the tree
/// reaping it (orphaned, or the root itself exiting): then the time already counted for
/// it is kept. A parent's reaped-children increase that covers the vanished child's last
/// total tells the two cases apart.
#[derive(Debug, Default)]
pub struct TreeAccount {
    prev: HashMap<i32, TreeEntry>,
    total: u64,
    started: bool,
}

impl TreeAccount {
    /// Takes a snapshot and returns the running total (ticks).
    pub fn update(&mut self, snap: &[TreeEntry]) -> u64 {
        let now: HashMap<i32, TreeEntry> = snap.iter().map(|e| (e.pid, *e)).collect();
        let sum = |m: &HashMap<i32, TreeEntry>| m.values().map(|e| e.own + e.children).sum::<u64>();
        if !self.started {
            self.started = true;
            self.total = sum(&now);
        } else {
            let mut budget: HashMap<i32, u64> = HashMap::new();
            let mut add_back = 0u64;
            let mut vanished: Vec<&TreeEntry> = self
                .prev
                .values()
                .filter(|e| !now.contains_key(&e.pid))
                .collect();
            vanished.sort_by_key(|e| e.pid);
            for v in vanished {
                let last = v.own + v.children;
                let b = budget.entry(v.ppid).or_insert_with(|| {
                    match (now.get(&v.ppid), self.prev.get(&v.ppid)) {
                        (Some(n), Some(p)) => n.children.saturating_sub(p.children),
                        _ => 0,
                    }
                });
                if *b >= last {
                    *b -= last; // reaped by its parent in the tree: counted there
                } else {
                    add_back += last; // gone without being reaped in the tree
                }
            }
            let delta = sum(&now) as i128 - sum(&self.prev) as i128 + add_back as i128;
            self.total += delta.max(0) as u64;
        }
        self.prev = now;
        self.total
    }
}

/// Reads a process tree's snapshot through procfs.
fn snapshot(root: i32, scan_all: &mut bool, out: &mut Vec<TreeEntry>) -> Result<(), ProcError> {
    out.clear();
    let read = |pid: i32| -> Option<(Process, TreeEntry)> {
        let p = Process::new(pid).ok()?;
        let st = p.stat().ok()?;
        let e = TreeEntry {
            pid,
            ppid: st.ppid,
            own: st.utime + st.stime,
            children: (st.cutime + st.cstime).max(0) as u64,
        };
        Some((p, e))
    };
    if *scan_all {
        let mut all: Vec<TreeEntry> = Vec::new();
        for p in procfs::process::all_processes()?.flatten() {
            if let Ok(st) = p.stat() {
                all.push(TreeEntry {
                    pid: st.pid,
                    ppid: st.ppid,
                    own: st.utime + st.stime,
                    children: (st.cutime + st.cstime).max(0) as u64,
                });
            }
        }
        let mut keep: HashSet<i32> = [root].into();
        // parents come before children in pid order only usually: iterate to a fixed point
        loop {
            let before = keep.len();
            for e in &all {
                if keep.contains(&e.ppid) {
                    keep.insert(e.pid);
                }
            }
            if keep.len() == before {
                break;
            }
        }
        out.extend(all.into_iter().filter(|e| keep.contains(&e.pid)));
        return Ok(());
    }
    let mut stack = vec![root];
    let mut seen: HashSet<i32> = HashSet::new();
    while let Some(pid) = stack.pop() {
        if !seen.insert(pid) {
            continue;
        }
        let Some((p, e)) = read(pid) else { continue };
        out.push(e);
        let Ok(tasks) = p.tasks() else { continue };
        for task in tasks.flatten() {
            match task.children() {
                Ok(ch) => stack.extend(ch.into_iter().map(|c| c as i32)),
                Err(ProcError::NotFound(_)) if pid == root && task.tid == root => {
                    // no /proc/<pid>/task/<tid>/children (CONFIG_PROC_CHILDREN off):
                    // fall back to scanning every process
                    *scan_all = true;
                    return snapshot(root, scan_all, out);
                }
                Err(_) => {}
            }
        }
    }
    Ok(())
}

/// CPU time of a process tree.
pub struct ProcTree {
    info: SourceInfo,
    interval: Duration,
    tps: f64,
    fixed: Option<i32>,
    command_pid: Arc<AtomicU32>,
    root: Option<i32>,
    account: TreeAccount,
    scan_all: bool,
    snap: Vec<TreeEntry>,
    last: Option<f64>,
}

impl ProcTree {
    /// Follows `pid`, or else the wrapped command once `command_pid` is set.
    pub fn open(
        pid: Option<u32>,
        command_pid: Arc<AtomicU32>,
        interval: Duration,
        cpus: usize,
    ) -> Result<Self, SourceError> {
        let fixed = match pid {
            Some(p) => {
                let p = i32::try_from(p).map_err(|_| {
                    SourceError::new(
                        ErrorKind::InvalidInput,
                        "cpu",
                        format!("--pid {p} is not a pid"),
                    )
                })?;
                Process::new(p).and_then(|pr| pr.stat()).map_err(|e| {
                    SourceError::new(
                        ErrorKind::InvalidInput,
                        "cpu",
                        format!(
                            "--pid {p}: no such process ({e}); give the pid of a running process"
                        ),
                    )
                })?;
                Some(p)
            }
            None => None,
        };
        let root = fixed
            .map(|p| p.to_string())
            .unwrap_or_else(|| "the wrapped command".into());
        Ok(ProcTree {
            info: proc_info(cpus, &root),
            interval: interval.max(MIN_INTERVAL),
            tps: ticks_per_second(),
            fixed,
            command_pid,
            root: fixed,
            account: TreeAccount::default(),
            scan_all: false,
            snap: Vec::new(),
            last: None,
        })
    }
}

impl Source for ProcTree {
    fn info(&self) -> &SourceInfo {
        &self.info
    }
    fn poll(&mut self, out: &mut Readings<'_>) -> Result<(), SourceError> {
        if self.root.is_none() {
            let p = self.command_pid.load(Ordering::SeqCst);
            if p == 0 {
                return Ok(()); // the command has not started yet
            }
            self.root = i32::try_from(p).ok();
        }
        let Some(root) = self.root.or(self.fixed) else {
            return Ok(());
        };
        snapshot(root, &mut self.scan_all, &mut self.snap)
            .map_err(|e| proc_error(e, "reading the process tree"))?;
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

impl Backend for Cpu {
    fn name(&self) -> &'static str {
        "cpu"
    }
    fn status(&self, opts: &BackendOptions) -> BackendStatus {
        match KernelStats::current() {
            Ok(ks) => {
                let cpus = ks.cpu_time.len();
                let mut sources = vec![host_info(cpus, opts.interval.max(MIN_INTERVAL))];
                let mut notes = vec![format!(
                    "{cpus} CPUs, {} ticks/s: counters resolve spans of ≥ {} ms",
                    ticks_per_second(),
                    10 * tick_ns() / 1_000_000
                )];
                match opts.pid {
                    Some(p) => sources.push(proc_info(cpus, &p.to_string())),
                    None => notes.push(
                        "proc.cpu_time follows the command `record` wraps, or --pid PID".into(),
                    ),
                }
                BackendStatus {
                    name: "cpu",
                    summary: SUMMARY,
                    available: true,
                    reason: None,
                    sources,
                    notes,
                }
            }
            Err(e) => {
                BackendStatus::unavailable("cpu", SUMMARY, proc_error(e, "/proc/stat").message)
            }
        }
    }
    fn open(&self, opts: &BackendOptions) -> Result<Vec<Box<dyn Source>>, SourceError> {
        let host = HostCpu::open(opts.interval)?;
        let cpus = host
            .info
            .attributes
            .get("cpus")
            .and_then(|c| c.parse().ok())
            .unwrap_or(1);
        let mut v: Vec<Box<dyn Source>> = vec![Box::new(host)];
        if opts.pid.is_some() || opts.wraps_command {
            v.push(Box::new(ProcTree::open(
                opts.pid,
                opts.command_pid.clone(),
                opts.interval,
                cpus,
            )?));
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flinch_core::clock::MonotonicClock;
    use flinch_core::testing::check_source;

    fn e(pid: i32, ppid: i32, own: u64, children: u64) -> TreeEntry {
        TreeEntry {
            pid,
            ppid,
            own,
            children,
        }
    }

    #[test]
    fn tree_time_survives_forks_reaps_and_orphans() {
        let mut a = TreeAccount::default();
        // the root has used 100 ticks when first seen: the total starts there
        assert_eq!(a.update(&[e(10, 1, 100, 0)]), 100);
        // it runs 20 more; a child appears having used 30
        assert_eq!(a.update(&[e(10, 1, 120, 0), e(11, 10, 30, 0)]), 150);
        // the child ran 5 more ticks (35 in all), exited and was reaped: its 35 ticks move
        // into the root's cutime; only the 5 new ones count
        assert_eq!(a.update(&[e(10, 1, 120, 35)]), 155);
        // a grandchild lived and died between polls under a new child: it shows up in the
        // child's cutime
        assert_eq!(a.update(&[e(10, 1, 120, 35), e(12, 10, 1, 40)]), 196);
        // the child exits without the root reaping it (orphaned to init): the 41 ticks
        // already counted stay counted; nothing is lost or double counted
        assert_eq!(a.update(&[e(10, 1, 121, 35)]), 197);
        // the root itself exits: the total stays
        assert_eq!(a.update(&[]), 197);
        assert_eq!(a.update(&[]), 197);
    }

    #[test]
    fn the_first_line_of_proc_stat_gives_busy_and_total_ticks() {
        let text = b"cpu  100 5 50 1000 20 3 2 7 0 0\ncpu0 50 2 25 500 10 1 1 3 0 0\nintr 1 2 3\n";
        // busy = 100 + 5 + 50 + 3 + 2; total = busy + 1000 + 20 + 7
        assert_eq!(parse_stat_total(text), Some((160, 1187)));
        // old kernels: fewer columns
        assert_eq!(parse_stat_total(b"cpu 1 2 3 4\n"), Some((6, 10)));
        assert_eq!(parse_stat_total(b"cpu0 1 2 3 4\n"), None);
        assert_eq!(parse_stat_total(b"cpu 1 2 x 4\n"), None);
        assert_eq!(parse_stat_total(b"cpu 1 2\n"), None);
        assert_eq!(parse_stat_total(b""), None);
        // the same totals as procfs on this machine's own file
        let ks = KernelStats::current().unwrap();
        let text = std::fs::read("/proc/stat").unwrap();
        let (busy, total) = parse_stat_total(&text).unwrap();
        let c = &ks.total;
        let busy_p = c.user + c.nice + c.system + c.irq.unwrap_or(0) + c.softirq.unwrap_or(0);
        // read a moment apart: within a few ticks per CPU
        let slack = 10 * ks.cpu_time.len() as u64;
        assert!(busy.abs_diff(busy_p) <= slack, "{busy} vs {busy_p}");
        assert!(total >= busy);
    }

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
    fn proc_tree_of_this_test_conforms_and_counts_our_cpu_time() {
        let me = std::process::id();
        let mut s = ProcTree::open(Some(me), Default::default(), Duration::from_millis(10), 2)
            .expect("our own pid");
        let rep = check_source(&mut s, &MonotonicClock, 3);
        assert!(rep.ok(), "{rep}");
        assert_eq!(rep.readings["proc.cpu_time"], 4);
        // before the wrapped command starts, no readings; a bad --pid is refused
        let mut w = ProcTree::open(None, Default::default(), Duration::from_millis(10), 2).unwrap();
        let rep = check_source(&mut w, &MonotonicClock, 2);
        assert!(rep.ok(), "{rep}");
        assert!(rep.readings.is_empty());
        let err = ProcTree::open(Some(i32::MAX as u32), Default::default(), MIN_INTERVAL, 2)
            .err()
            .unwrap();
        assert!(err.message.contains("no such process"), "{}", err.message);
    }
}

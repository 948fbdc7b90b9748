//! A process tree's CPU time: snapshots of the tree, and a running total that survives
//! forks, reaps and orphans.

use procfs::ProcError;
use procfs::process::Process;
use std::collections::{HashMap, HashSet};

/// One process in a snapshot of a tree, times in ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TreeEntry {
    /// The process.
    pub pid: i32,
    /// Its parent.
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
pub(crate) fn snapshot(
    root: i32,
    scan_all: &mut bool,
    out: &mut Vec<TreeEntry>,
) -> Result<(), ProcError> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}

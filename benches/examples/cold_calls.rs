//! What a few cheap system calls cost in CPU right after the thread slept, against the same
//! calls made back to back: a stand-in, for a machine without a GPU, for the NVML reads a
//! sampler makes once per wake-up (NVML's are ioctls into the driver). After a long sleep
//! the caches, TLB and branch predictors hold other work's state, so the same calls cost
//! more; the sampler pays that once per wake-up, which is why the reads due near each
//! other should share one.
//!
//! ```text
//! cargo run --release -p flinch-benches --example cold_calls [ROUNDS]
//! ```
//!
//! Each batch: a `pread` of five small kernel files kept open (`/proc/loadavg`,
//! `/proc/self/stat`, `/proc/uptime`, `/proc/self/statm`, `/sys/class/net/lo/mtu`).
//! The batch's CPU time comes from the thread's CPU clock read before and after it, so the
//! sleep and the wake-up themselves are not counted. Last, the batch is made second in its
//! wake-up, after a read of another file: what a source riding another's wake-up pays.
//!
//! Dev VM (2 vCPU, load average 4-5), six runs, 2026-11-30: back to back 6.8 µs; after a
//! 10-ms sleep 25-34 µs (3.7-4.9x); after a 100-ms sleep 35-43 µs (5.2-6.3x); second in its
//! wake-up, after a 100-ms sleep, 28-30 µs (4.2-4.4x).
use rustix::fd::OwnedFd;
use rustix::fs::{Mode, OFlags, open};
use rustix::time::{ClockId, clock_gettime};
use std::time::Duration;

fn thread_cpu_ns() -> u64 {
    let t = clock_gettime(ClockId::ThreadCPUTime);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

fn batch(files: &[OwnedFd], buf: &mut [u8]) -> usize {
    let mut n = 0;
    for f in files {
        n += rustix::io::pread(f, &mut *buf, 0).unwrap_or(0);
    }
    n
}

fn median(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100);
    let files: Vec<OwnedFd> = [
        "/proc/loadavg",
        "/proc/self/stat",
        "/proc/uptime",
        "/proc/self/statm",
        "/sys/class/net/lo/mtu",
    ]
    .iter()
    .filter_map(|p| open(*p, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).ok())
    .collect();
    let mut buf = vec![0u8; 4096];
    let mut sink = 0usize;
    let mut measure = |sleep: Option<Duration>, n: usize| {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            if let Some(d) = sleep {
                std::thread::sleep(d);
            }
            let c0 = thread_cpu_ns();
            sink += batch(&files, &mut buf);
            v.push(thread_cpu_ns() - c0);
        }
        median(&mut v)
    };
    let warm = measure(None, rounds * 20);
    let after10 = measure(Some(Duration::from_millis(10)), rounds);
    let after100 = measure(Some(Duration::from_millis(100)), rounds);
    // The same batch made second in a wake-up, after another read (of a file not in the
    // batch): what a source riding another's wake-up pays.
    let other = open(
        "/proc/self/status",
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok();
    let mut v = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        std::thread::sleep(Duration::from_millis(100));
        if let Some(f) = &other {
            sink += rustix::io::pread(f, &mut buf, 0).unwrap_or(0);
        }
        let c0 = thread_cpu_ns();
        sink += batch(&files, &mut buf);
        v.push(thread_cpu_ns() - c0);
    }
    let riding = median(&mut v);
    println!(
        "{} files; batch CPU, median: back to back {:.1} µs, after a 10-ms sleep {:.1} µs ({:.1}x), \
         after a 100-ms sleep {:.1} µs ({:.1}x), after a 100-ms sleep and another read {:.1} µs \
         ({:.1}x)  [{sink}]",
        files.len(),
        warm as f64 / 1e3,
        after10 as f64 / 1e3,
        after10 as f64 / warm as f64,
        after100 as f64 / 1e3,
        after100 as f64 / warm as f64,
        riding as f64 / 1e3,
        riding as f64 / warm as f64
    );
}

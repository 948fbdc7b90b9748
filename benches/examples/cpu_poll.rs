//! A fixed workload for instruction counting: `N` polls of the host CPU time from
//! `/proc/stat`, either as flinch's `cpu` source makes them (`new`: the first line read into
//! a buffer kept between polls) or as it made them before (`old`: procfs parsing the whole
//! file into new allocations). Callgrind counts user-space instructions only, so the
//! difference is the parsing; the kernel's own work of making the file is the same for both
//! (and for any reader of it).
//!
//! rustix's vDSO and auxv lookups crash under valgrind, so build it with rustix's libc
//! backend, and count a run of 2000 polls less a run of none:
//!
//! ```text
//! RUSTFLAGS="--cfg rustix_use_libc" cargo build --release --target-dir target/valgrind \
//!     -p flinch-benches --example cpu_poll
//! valgrind --tool=callgrind target/valgrind/release/examples/cpu_poll new 2000
//! valgrind --tool=callgrind target/valgrind/release/examples/cpu_poll new 0
//! ```
//!
//! Measured on the dev VM: 15 787 instructions per poll `old`, 2 242 `new`.
use flinch_core::clock::ManualClock;
use flinch_core::source::{Readings, Source};
use procfs::{CurrentSI, KernelStats};
use std::time::Duration;

#[inline(never)]
fn poll_new(
    src: &mut flinch_cpu::HostCpu,
    clock: &ManualClock,
    buf: &mut Vec<flinch_core::Reading>,
) {
    buf.clear();
    let mut r = Readings::new(clock, buf, 0, 2);
    src.poll(&mut r).expect("/proc/stat reads");
}

#[inline(never)]
fn poll_old() -> (u64, u64) {
    let ks = KernelStats::current().expect("/proc/stat reads");
    let c = &ks.total;
    let busy = c.user + c.nice + c.system + c.irq.unwrap_or(0) + c.softirq.unwrap_or(0);
    (
        busy,
        busy + c.idle + c.iowait.unwrap_or(0) + c.steal.unwrap_or(0),
    )
}

fn main() {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_else(|| "new".into());
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(2000);
    let clock = ManualClock::new(1_000_000_000, 0);
    let mut sum = 0u64;
    match which.as_str() {
        "new" => {
            let mut src = flinch_cpu::HostCpu::open(Duration::from_millis(100)).expect("open");
            let mut buf = Vec::with_capacity(4);
            for _ in 0..n {
                poll_new(&mut src, &clock, &mut buf);
                sum += buf.len() as u64;
            }
        }
        "old" => {
            for _ in 0..n {
                sum += poll_old().0 & 1;
            }
        }
        other => panic!("unknown workload {other:?}: new or old"),
    }
    println!("{which}: {n} polls ({sum})");
}

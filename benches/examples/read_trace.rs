//! A fixed workload for instruction counting: builds a trace of the synthetic source at
//! 10 ms (`TICKS` ticks, 3 samples each, default 100 000) in memory and reads it back once.
//! Deterministic, so callgrind counts the same instructions on every run however busy the
//! machine is:
//!
//! ```text
//! cargo build --release -p flinch-benches --example read_trace
//! valgrind --tool=callgrind --toggle-collect='*read_trace_from*' \
//!     target/release/examples/read_trace
//! callgrind_annotate callgrind.out.<pid>
//! ```
use flinch_benches::synthetic_trace;
use flinch_core::trace::read_trace_from;

fn main() {
    let ticks = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let built = synthetic_trace(ticks, 10_000_000, 100);
    let t = read_trace_from(&built.bytes[..], "mem".as_ref()).expect("the trace reads");
    println!(
        "{} sample rows read ({} bytes)",
        t.sample_count(),
        built.bytes.len()
    );
}

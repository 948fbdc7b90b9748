//! The sampler's hot path does not allocate: one tick over do-nothing sources, counted by a
//! global allocator that counts this thread's allocations.
// A counting allocator is the one unsafe thing a test binary needs.
#![allow(unsafe_code)]

use flinch_core::clock::MonotonicClock;
use flinch_core::testing::NullSource;
use flinch_record::sampler::{CountingSink, SamplerGroup};
use flinch_record::synthetic::{SyntheticConfig, SyntheticSource};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.with(|a| a.set(a.get() + 1));
        // SAFETY: forwarding the caller's layout to the system allocator unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: ptr came from System.alloc with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.with(|a| a.set(a.get() + 1));
        // SAFETY: as for alloc/dealloc.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> u64 {
    ALLOCS.with(|a| a.get())
}

#[test]
fn a_tick_allocates_nothing() {
    let mut g = SamplerGroup::new(
        Duration::from_millis(10),
        Arc::new(MonotonicClock),
        CountingSink::default(),
    );
    for i in 0..8 {
        g.add(Box::new(NullSource::new(&format!("n{i}"), 2)), i, i * 2);
    }
    g.add(
        Box::new(SyntheticSource::new(
            SyntheticConfig::default(),
            &MonotonicClock,
        )),
        8,
        16,
    );
    g.tick(); // warm-up
    let before = allocs();
    for _ in 0..1000 {
        g.tick();
    }
    let after = allocs();
    assert_eq!(
        after - before,
        0,
        "{} allocations in 1000 ticks",
        after - before
    );
    assert_eq!(g.sink().readings, 1001 * 19);
    // The counter itself works: a deliberate allocation is seen.
    let before = allocs();
    let v = std::hint::black_box(vec![1u8; 10]);
    assert!(allocs() > before);
    drop(v);
}

//! The clock every trace timestamp is on: `CLOCK_MONOTONIC` nanoseconds.
//!
//! `std::time::Instant` reads the same clock on Linux but hides the number; flinch needs the
//! number itself, because a mark stamped in another process (Python's
//! `time.monotonic_ns()`) must line up with samples without any handshake. So the clock is
//! read directly with `clock_gettime(2)`.
//!
//! Sources that stamp in wall-clock time (NVML driver samples, DCGM values: µs since 1970)
//! are mapped onto the monotonic base with [`ClockAnchor`] pairs; an [`AnchorMap`] holds
//! several of them so that a wall clock slewed by NTP during a long recording still maps
//! correctly.

use rustix::time::{ClockId, Timespec, clock_gettime};
use serde::{Deserialize, Serialize};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};

fn timespec_ns(ts: Timespec) -> i128 {
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

/// Reads `CLOCK_MONOTONIC` in nanoseconds.
pub fn monotonic_ns() -> u64 {
    timespec_ns(clock_gettime(ClockId::Monotonic)) as u64
}

/// Reads `CLOCK_REALTIME` in nanoseconds since 1970 (negative before 1970).
pub fn realtime_ns() -> i64 {
    timespec_ns(clock_gettime(ClockId::Realtime)) as i64
}

/// A source of timestamps. Production code uses [`MonotonicClock`]; tests use
/// [`ManualClock`], whose time only moves when told to.
pub trait Clock: Send + Sync {
    /// Now, in `CLOCK_MONOTONIC` nanoseconds.
    fn now_ns(&self) -> u64;
    /// Now, in wall-clock nanoseconds since 1970.
    fn realtime_ns(&self) -> i64;
    /// Blocks until `now_ns() >= deadline_ns` (returns at once if it already is).
    fn sleep_until(&self, deadline_ns: u64);
    /// Blocks until `now_ns() >= deadline_ns` or until `flag` is set, whichever comes
    /// first. The default sleeps in slices of at most 50 ms and looks at the flag between
    /// them; [`MonotonicClock`] sleeps once, and [`WakeFlag::set`] wakes it.
    fn sleep_until_or(&self, deadline_ns: u64, flag: &WakeFlag) {
        while !flag.is_set() {
            let now = self.now_ns();
            if now >= deadline_ns {
                return;
            }
            self.sleep_until(deadline_ns.min(now.saturating_add(SLICE_NS)));
        }
    }
    /// A (monotonic, realtime) pair taken as close together as this clock allows.
    fn anchor(&self) -> ClockAnchor {
        ClockAnchor {
            mono_ns: self.now_ns(),
            real_ns: self.realtime_ns(),
        }
    }
}

/// How long the default [`Clock::sleep_until_or`] sleeps before looking at its flag.
const SLICE_NS: u64 = 50_000_000;

/// A flag that threads sleeping in [`Clock::sleep_until_or`] wake up for when it is set: a
/// thread that sleeps for seconds notices a stop at once without waking every few ms to
/// look (each wake-up costs 20–40 µs of CPU in the VMs measured).
#[derive(Debug, Default)]
pub struct WakeFlag(AtomicU32);

impl WakeFlag {
    /// A flag not set.
    pub const fn new() -> Self {
        WakeFlag(AtomicU32::new(0))
    }
    /// Sets the flag and wakes every thread sleeping on it.
    pub fn set(&self) {
        self.0.store(1, Ordering::SeqCst);
        let _ = rustix::thread::futex::wake(
            &self.0,
            rustix::thread::futex::Flags::PRIVATE,
            i32::MAX as u32,
        );
    }
    /// Whether the flag was set.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst) != 0
    }
}

/// The system's `CLOCK_MONOTONIC`, read directly.
#[derive(Clone, Copy, Debug, Default)]
pub struct MonotonicClock;

impl Clock for MonotonicClock {
    fn now_ns(&self) -> u64 {
        monotonic_ns()
    }
    fn realtime_ns(&self) -> i64 {
        realtime_ns()
    }
    fn sleep_until(&self, deadline_ns: u64) {
        let ts = Timespec {
            tv_sec: (deadline_ns / 1_000_000_000) as _,
            tv_nsec: (deadline_ns % 1_000_000_000) as _,
        };
        // Absolute deadlines: a late wake-up does not push later ticks back (no drift).
        // EINTR just means we go round again.
        while monotonic_ns() < deadline_ns {
            let _ = rustix::thread::clock_nanosleep_absolute(ClockId::Monotonic, &ts);
        }
    }
    fn sleep_until_or(&self, deadline_ns: u64, flag: &WakeFlag) {
        let ts = Timespec {
            tv_sec: (deadline_ns / 1_000_000_000) as _,
            tv_nsec: (deadline_ns % 1_000_000_000) as _,
        };
        // FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC deadline (so a late wake-up
        // does not push later ones back, as with clock_nanosleep), and returns at it, when
        // `set` wakes the word, at once when the word is no longer 0, or on a signal.
        while !flag.is_set() && monotonic_ns() < deadline_ns {
            let _ = rustix::thread::futex::wait_bitset(
                &flag.0,
                rustix::thread::futex::Flags::PRIVATE,
                0,
                Some(&ts),
                NonZeroU32::MAX,
            );
        }
    }
    /// Brackets a realtime read between two monotonic reads and keeps the tightest of a
    /// few tries, so the pair is good to well under a microsecond.
    fn anchor(&self) -> ClockAnchor {
        let mut best: Option<(u64, ClockAnchor)> = None;
        for _ in 0..5 {
            let a = monotonic_ns();
            let r = realtime_ns();
            let b = monotonic_ns();
            let width = b - a;
            if best.as_ref().is_none_or(|(w, _)| width < *w) {
                best = Some((
                    width,
                    ClockAnchor {
                        mono_ns: a + width / 2,
                        real_ns: r,
                    },
                ));
            }
        }
        best.map(|(_, anchor)| anchor)
            .expect("five tries were made")
    }
}

/// A clock for tests: time stands still until [`ManualClock::advance`] or
/// [`ManualClock::set`] moves it; `sleep_until` jumps straight to the deadline.
#[derive(Clone, Debug)]
pub struct ManualClock {
    mono: Arc<AtomicU64>,
    real_offset: Arc<AtomicI64>,
}

impl ManualClock {
    /// A clock starting at `start_ns`, whose wall clock reads `start_ns + real_offset_ns`.
    pub fn new(start_ns: u64, real_offset_ns: i64) -> Self {
        ManualClock {
            mono: Arc::new(AtomicU64::new(start_ns)),
            real_offset: Arc::new(AtomicI64::new(real_offset_ns)),
        }
    }
    /// Moves time forward by `ns`.
    pub fn advance(&self, ns: u64) {
        self.mono.fetch_add(ns, Ordering::SeqCst);
    }
    /// Sets the monotonic time (it may not go backwards; a smaller value is ignored).
    pub fn set(&self, ns: u64) {
        self.mono.fetch_max(ns, Ordering::SeqCst);
    }
    /// Steps the wall clock (as NTP might) without touching monotonic time.
    pub fn step_realtime(&self, delta_ns: i64) {
        self.real_offset.fetch_add(delta_ns, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ns(&self) -> u64 {
        self.mono.load(Ordering::SeqCst)
    }
    fn realtime_ns(&self) -> i64 {
        self.now_ns() as i64 + self.real_offset.load(Ordering::SeqCst)
    }
    fn sleep_until(&self, deadline_ns: u64) {
        self.set(deadline_ns);
    }
}

/// A (monotonic, realtime) pair read at (nearly) the same instant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockAnchor {
    /// `CLOCK_MONOTONIC` nanoseconds.
    pub mono_ns: u64,
    /// `CLOCK_REALTIME` nanoseconds since 1970.
    pub real_ns: i64,
}

impl ClockAnchor {
    /// realtime − monotonic, in nanoseconds (saturating: anchors read from a damaged trace
    /// may hold any values).
    pub fn offset_ns(&self) -> i64 {
        self.offset_wide().clamp(i64::MIN as i128, i64::MAX as i128) as i64
    }

    fn offset_wide(&self) -> i128 {
        self.real_ns as i128 - self.mono_ns as i128
    }
}

/// Maps wall-clock timestamps onto the monotonic base using the anchors of a recording.
///
/// Between two anchors the offset is interpolated linearly (NTP slews the wall clock
/// slowly); outside them the nearest anchor's offset is used.
#[derive(Clone, Debug, Default)]
pub struct AnchorMap {
    anchors: Vec<ClockAnchor>,
}

impl AnchorMap {
    /// An empty map; [`AnchorMap::to_mono_ns`] returns `None` until an anchor is added.
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds an anchor (kept sorted by monotonic time).
    pub fn push(&mut self, anchor: ClockAnchor) {
        let at = self
            .anchors
            .partition_point(|a| a.mono_ns <= anchor.mono_ns);
        self.anchors.insert(at, anchor);
    }
    /// The anchors held, oldest first.
    pub fn anchors(&self) -> &[ClockAnchor] {
        &self.anchors
    }
    /// Maps a wall-clock time (ns since 1970) onto `CLOCK_MONOTONIC` ns; `None` before any
    /// anchor is known or when the result falls outside the monotonic range.
    ///
    /// The arithmetic is done in 128 bits: anchors read from a trace may hold any values,
    /// and a damaged trace must give a wrong answer at worst, never an overflow.
    pub fn to_mono_ns(&self, real_ns: i64) -> Option<u64> {
        let first = self.anchors.first()?;
        // The anchors are sorted by monotonic time. If the wall clock was stepped back
        // between two of them, it is not sorted too: the search still lands on some anchor
        // pair and the answer is approximate there, never a failure.
        let at = self.anchors.partition_point(|a| a.real_ns <= real_ns);
        let offset: i128 = if at == 0 {
            first.offset_wide()
        } else if at == self.anchors.len() {
            self.anchors[at - 1].offset_wide()
        } else {
            let (a, b) = (self.anchors[at - 1], self.anchors[at]);
            let span = (b.real_ns as i128 - a.real_ns as i128) as f64;
            let frac = if span > 0.0 {
                ((real_ns as i128 - a.real_ns as i128) as f64 / span).clamp(0.0, 1.0)
            } else {
                0.0
            };
            let step = (b.offset_wide() - a.offset_wide()) as f64 * frac;
            a.offset_wide() + step.round() as i128
        };
        let mono = real_ns as i128 - offset;
        u64::try_from(mono).ok()
    }
    /// Maps a wall-clock time in microseconds since 1970 (NVML, DCGM) onto monotonic ns.
    pub fn us_to_mono_ns(&self, real_us: i64) -> Option<u64> {
        self.to_mono_ns(real_us.checked_mul(1000)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_clock_moves_forward_and_sleeps_to_absolute_deadlines() {
        let c = MonotonicClock;
        let a = c.now_ns();
        let deadline = a + 2_000_000;
        c.sleep_until(deadline);
        let b = c.now_ns();
        assert!(b >= deadline, "woke at {b}, before deadline {deadline}");
        // The same clock as std's Instant: elapsed times agree.
        let i = std::time::Instant::now();
        let m = monotonic_ns();
        std::thread::sleep(std::time::Duration::from_millis(3));
        let dm = monotonic_ns() - m;
        let di = i.elapsed().as_nanos() as u64;
        assert!(dm.abs_diff(di) < 1_000_000, "{dm} vs {di}");
    }

    /// Voluntary context switches of the calling thread so far (each one a sleep).
    fn voluntary_switches() -> u64 {
        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .map(|v| v.trim().parse().unwrap())
            .expect("voluntary_ctxt_switches in /proc/thread-self/status")
    }

    #[test]
    fn a_sleep_on_a_wake_flag_is_one_sleep_and_ends_at_its_deadline() {
        let c = MonotonicClock;
        let flag = WakeFlag::new();
        let before = voluntary_switches();
        let deadline = c.now_ns() + 300_000_000;
        c.sleep_until_or(deadline, &flag);
        let switches = voluntary_switches() - before;
        assert!(c.now_ns() >= deadline);
        // Sliced into 50-ms sleeps (as the default does) it would be 6 or more.
        assert!(switches <= 2, "{switches} sleeps for one 300-ms deadline");
    }

    #[test]
    fn setting_a_wake_flag_ends_a_long_sleep() {
        let flag = Arc::new(WakeFlag::new());
        let f = flag.clone();
        let start = monotonic_ns();
        let h = std::thread::spawn(move || {
            // an hour: only the flag can end it in time
            MonotonicClock.sleep_until_or(monotonic_ns() + 3_600_000_000_000, &f);
            monotonic_ns()
        });
        std::thread::sleep(std::time::Duration::from_millis(20));
        flag.set();
        let woke = h.join().unwrap();
        assert!(woke - start < 60_000_000_000, "slept {} ns", woke - start);
        // already set: returns at once, whatever the deadline
        MonotonicClock.sleep_until_or(u64::MAX / 2, &flag);
    }

    #[test]
    fn a_manual_clock_sleeps_on_a_wake_flag_to_the_deadline_unless_it_is_set() {
        let c = ManualClock::new(1_000, 0);
        let flag = WakeFlag::new();
        c.sleep_until_or(200_000_000, &flag);
        assert_eq!(c.now_ns(), 200_000_000);
        flag.set();
        c.sleep_until_or(900_000_000, &flag);
        assert_eq!(c.now_ns(), 200_000_000);
    }

    #[test]
    fn anchor_pairs_the_clocks_tightly() {
        let c = MonotonicClock;
        let a = c.anchor();
        let expected_offset = realtime_ns() - monotonic_ns() as i64;
        assert!(a.offset_ns().abs_diff(expected_offset) < 1_000_000);
    }

    #[test]
    fn manual_clock_only_moves_when_told() {
        let c = ManualClock::new(1_000, 5_000);
        assert_eq!(c.now_ns(), 1_000);
        assert_eq!(c.realtime_ns(), 6_000);
        c.advance(10);
        c.sleep_until(500); // in the past: no change
        assert_eq!(c.now_ns(), 1_010);
        c.sleep_until(2_000);
        assert_eq!(c.now_ns(), 2_000);
        c.step_realtime(-1_000);
        assert_eq!(c.realtime_ns(), 6_000);
    }

    #[test]
    fn anchor_map_interpolates_a_slewing_wall_clock() {
        let mut m = AnchorMap::new();
        assert_eq!(m.to_mono_ns(5), None);
        // offset 1000 at mono 0, offset 1100 at mono 1000 (wall clock ran 10 % fast)
        m.push(ClockAnchor {
            mono_ns: 1_000,
            real_ns: 2_100,
        });
        m.push(ClockAnchor {
            mono_ns: 0,
            real_ns: 1_000,
        });
        assert_eq!(m.anchors()[0].mono_ns, 0);
        assert_eq!(m.to_mono_ns(1_000), Some(0));
        assert_eq!(m.to_mono_ns(2_100), Some(1_000));
        // halfway in wall time: offset 1050
        assert_eq!(m.to_mono_ns(1_550), Some(500));
        // outside: nearest anchor's offset
        assert_eq!(m.to_mono_ns(3_100), Some(2_000));
        assert_eq!(m.to_mono_ns(500), None); // before monotonic zero
        assert_eq!(m.us_to_mono_ns(1), Some(0));
        assert_eq!(m.us_to_mono_ns(3), Some(1_900));
    }

    #[test]
    fn anchors_with_extreme_values_never_overflow() {
        let extremes = [
            ClockAnchor {
                mono_ns: u64::MAX,
                real_ns: i64::MIN,
            },
            ClockAnchor {
                mono_ns: 0,
                real_ns: i64::MAX,
            },
            ClockAnchor {
                mono_ns: 5,
                real_ns: i64::MIN,
            },
        ];
        assert_eq!(extremes[0].offset_ns(), i64::MIN);
        assert_eq!(extremes[1].offset_ns(), i64::MAX);
        let mut m = AnchorMap::new();
        for a in extremes {
            m.push(a);
            for real in [i64::MIN, -1, 0, 1, i64::MAX] {
                let _ = m.to_mono_ns(real);
                let _ = m.us_to_mono_ns(real);
            }
        }
        // A single anchor at the top of the range maps itself exactly.
        let mut m = AnchorMap::new();
        m.push(ClockAnchor {
            mono_ns: u64::MAX,
            real_ns: i64::MAX,
        });
        assert_eq!(m.to_mono_ns(i64::MAX), Some(u64::MAX));
        assert_eq!(m.to_mono_ns(i64::MIN), Some(0));
        assert_eq!(m.to_mono_ns(-1), Some(i64::MAX as u64));
    }
}

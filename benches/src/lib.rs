//! Shared helpers for the flinch benches and the `recorder_overhead` binary: CPU-time and
//! memory readings of this process and its threads, and traces built in memory for the
//! trace-I/O and analysis benches.
//!
//! The benches themselves live in `benches/` (criterion, `cargo bench -p flinch-benches`);
//! what each one measures, and the numbers, are in `docs/performance.md`.
#![deny(missing_docs)]

use flinch_core::channel::SourceInfo;
use flinch_core::clock::{ClockAnchor, ManualClock};
use flinch_core::marks::{Mark, MarkVia};
use flinch_core::source::Reading;
use flinch_core::trace::{Footer, Header, TraceWriter};
use flinch_record::synthetic::{SyntheticConfig, SyntheticSource};
use std::sync::Arc;

/// CPU time used by the whole process so far (all threads, user + system), ns.
pub fn process_cpu_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CPU time used by the calling thread so far, ns.
pub fn thread_cpu_ns() -> u64 {
    flinch_record::sampler::thread_cpu_ns()
}

/// One thread of this process as the kernel accounts it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadCpu {
    /// Kernel thread id.
    pub tid: u32,
    /// The thread's name (`comm`, at most 15 bytes: `flinch-sample-1` for
    /// `flinch-sample-1000ms`).
    pub name: String,
    /// Time on a CPU, ns (`/proc/self/task/<tid>/schedstat`, first field).
    pub cpu_ns: u64,
}

/// Every live thread of this process with its CPU time (from `schedstat`, ns resolution;
/// the `stat` file counts in 10-ms clock ticks, too coarse for a thread that works µs per
/// tick). Threads that end between the listing and the read are left out.
pub fn threads_cpu() -> Vec<ThreadCpu> {
    let Ok(tasks) = procfs::process::Process::myself().and_then(|p| p.tasks()) else {
        return Vec::new();
    };
    let mut out: Vec<ThreadCpu> = tasks
        .flatten()
        .filter_map(|task| {
            let (Ok(stat), Ok(sched)) = (task.stat(), task.schedstat()) else {
                return None;
            };
            Some(ThreadCpu {
                tid: u32::try_from(task.tid).ok()?,
                name: stat.comm,
                cpu_ns: sched.sum_exec_runtime,
            })
        })
        .collect();
    out.sort_by_key(|t| t.tid);
    out
}

/// Resident set size of this process, KiB (`VmRSS` in `/proc/self/status`).
pub fn rss_kib() -> Option<u64> {
    procfs::process::Process::myself()
        .and_then(|p| p.status())
        .ok()?
        .vmrss
}

/// The `q`-quantile (0–1) of `v` by nearest rank; sorts `v`. `None` when empty.
pub fn quantile(v: &mut [u64], q: f64) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

/// What [`synthetic_trace`] built.
pub struct BuiltTrace {
    /// The trace file's bytes.
    pub bytes: Vec<u8>,
    /// Sample rows in it.
    pub samples: u64,
    /// Mark rows in it.
    pub marks: u64,
}

/// The sources of the traces the benches build: one synthetic device (a 60 W / 300 W
/// square wave with 1-s halves: power gauge, wrapping energy counter, utilisation).
pub fn bench_sources() -> Vec<SourceInfo> {
    let clock = ManualClock::new(0, 0);
    let src = SyntheticSource::new(SyntheticConfig::default(), &clock);
    vec![flinch_core::Source::info(&src).clone()]
}

/// Builds, in memory, a trace like a `flinch record` of the synthetic source at `interval_ns`
/// would write: every tick one power, one energy and one utilisation sample (so
/// `ticks × 3` samples), an anchor every 10 s, and a request span (`infer_start` →
/// `first_token`, paired by `req`) starting every `span_every` ticks and lasting half of
/// that (no marks when 0). Values follow the synthetic source's exact schedule.
pub fn synthetic_trace(ticks: u64, interval_ns: u64, span_every: u64) -> BuiltTrace {
    let t0: u64 = 1_000_000_000_000;
    let clock = Arc::new(ManualClock::new(t0, 1_700_000_000_000_000_000));
    let src = SyntheticSource::with_origin(SyntheticConfig::default(), t0);
    let header = Header::new(
        interval_ns,
        ClockAnchor {
            mono_ns: t0,
            real_ns: 1_700_000_000_000_000_000,
        },
        bench_sources(),
    );
    let mut w = TraceWriter::new(Vec::with_capacity(64 << 20), &header, clock, 1_000_000_000)
        .expect("writing to memory");
    let mut marks = 0;
    for k in 0..ticks {
        let t = t0 + k * interval_ns;
        let p = src.power_at(t).0;
        for (channel, value) in [
            (0, p),
            (1, src.counter_at(t)),
            (2, if p > 60.0 { 100.0 } else { 0.0 }),
        ] {
            w.sample(&Reading {
                channel,
                t_ns: t,
                value,
            })
            .expect("writing to memory");
        }
        if k > 0 && (k * interval_ns) % 10_000_000_000 < interval_ns {
            w.anchor(ClockAnchor {
                mono_ns: t,
                real_ns: 1_700_000_000_000_000_000 + (t - t0) as i64,
            })
            .expect("writing to memory");
        }
        if span_every > 0 && k % span_every == span_every / 4 {
            let req = (k / span_every).to_string();
            for (label, at) in [
                ("infer_start", t),
                ("first_token", t + span_every / 2 * interval_ns),
            ] {
                w.mark_buffered(&Mark {
                    t_ns: at,
                    recv_ns: at + 20_000,
                    t_from_client: true,
                    label: label.into(),
                    fields: vec![("req".into(), req.clone())],
                    via: MarkVia::Fifo,
                })
                .expect("writing to memory");
                marks += 1;
            }
        }
    }
    let samples = w.samples();
    let bytes = w.finish(Footer::default()).expect("writing to memory");
    BuiltTrace {
        bytes,
        samples,
        marks,
    }
}

/// Mark-to-disk latency: a real recorder, a real transport, and a client that waits until
/// its mark's row can be read back from the trace file.
pub mod latency {
    use flinch_core::clock::{MonotonicClock, monotonic_ns};
    use flinch_core::marks::client::{MarkClient, SendOutcome};
    use flinch_record::recorder::{MarkSender, Recorder, RecorderConfig, RecordingSetup};
    use flinch_record::synthetic::{SyntheticConfig, SyntheticSource};
    use std::fs::File;
    use std::os::unix::fs::FileExt;
    use std::sync::Arc;
    use std::time::Duration;

    /// How marks reach the recorder.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Transport {
        /// The recorder's FIFO, written by a non-blocking [`MarkClient`].
        Fifo,
        /// A plain file the client appends to, tailed by the recorder every 10 ms.
        File,
        /// The in-process [`MarkSender`].
        Api,
    }

    impl Transport {
        /// Its name in bench ids and reports.
        pub fn name(self) -> &'static str {
            match self {
                Transport::Fifo => "fifo",
                Transport::File => "file",
                Transport::Api => "api",
            }
        }
    }

    enum Client {
        Process(MarkClient),
        Api(MarkSender),
    }

    /// A recording of the synthetic source (at 10 ms, so the writer also has samples to
    /// write) taking marks through one transport, and a reader of its trace file.
    pub struct MarkRig {
        // Declared first so it stops (and removes its FIFO) before the directory goes.
        recorder: Option<Recorder>,
        client: Client,
        trace: File,
        offset: u64,
        pending: Vec<u8>,
        buf: Vec<u8>,
        next: u64,
        _dir: tempfile::TempDir,
    }

    impl MarkRig {
        /// Starts the recording in a temporary directory.
        pub fn start(transport: Transport) -> flinch_core::Result<Self> {
            let dir = tempfile::tempdir().map_err(|e| {
                flinch_core::Error::io(
                    "cannot create",
                    std::path::Path::new("a temporary directory"),
                    e,
                )
            })?;
            let out = dir.path().join("latency.flinch.csv");
            let clock = Arc::new(MonotonicClock);
            let src = SyntheticSource::new(SyntheticConfig::default(), clock.as_ref());
            let mut setup = RecordingSetup::new(out.clone(), vec![Box::new(src)]);
            let marks_path = dir.path().join(match transport {
                Transport::Fifo => "marks.fifo",
                _ => "marks.txt",
            });
            match transport {
                Transport::Fifo => setup.marks_fifo = Some(marks_path.clone()),
                Transport::File => setup.marks_file = Some(marks_path.clone()),
                Transport::Api => {}
            }
            let recorder = Recorder::start(setup, RecorderConfig::default(), clock)?;
            let client = match transport {
                Transport::Api => Client::Api(recorder.mark_sender()),
                _ => Client::Process(
                    MarkClient::open(&marks_path)
                        .map_err(|e| flinch_core::Error::Invalid(format!("mark client: {e}")))?,
                ),
            };
            let trace = File::open(&out).map_err(|e| flinch_core::Error::io("open", &out, e))?;
            Ok(MarkRig {
                recorder: Some(recorder),
                client,
                trace,
                offset: 0,
                pending: Vec::with_capacity(1 << 16),
                buf: vec![0; 1 << 16],
                next: 0,
                _dir: dir,
            })
        }

        /// Sends one mark and returns the ns from just before the client's write (or
        /// in-process send) until its row is in the trace file, readable by any process.
        /// The file is polled with `pread` in a loop that yields the CPU between reads, so
        /// the figure is at most one poll (a few µs) later than the truth. "In the file"
        /// means the writer's `write(2)` returned: the page cache, not an `fsync`.
        ///
        /// Panics if the row does not appear within 5 s.
        pub fn round_trip(&mut self) -> u64 {
            let id = self.next;
            self.next += 1;
            let req = id.to_string();
            let needle = format!(",lat,req={id}\n");
            let line = format!("lat t={} req={id}\n", monotonic_ns());
            let t0 = monotonic_ns();
            match &mut self.client {
                Client::Process(c) => {
                    let r = c.send_line(&line).expect("mark sent");
                    assert_eq!(r, SendOutcome::Sent, "the FIFO was full");
                }
                Client::Api(s) => s.mark_at("lat", t0, &[("req", &req)]).expect("mark sent"),
            }
            loop {
                let n = self
                    .trace
                    .read_at(&mut self.buf, self.offset)
                    .expect("trace read");
                if n > 0 {
                    self.offset += n as u64;
                    self.pending.extend_from_slice(&self.buf[..n]);
                    let found = self
                        .pending
                        .windows(needle.len())
                        .any(|w| w == needle.as_bytes());
                    let t1 = monotonic_ns();
                    if let Some(last_nl) = self.pending.iter().rposition(|&b| b == b'\n') {
                        self.pending.drain(..=last_nl);
                    }
                    if found {
                        return t1 - t0;
                    }
                } else {
                    assert!(
                        monotonic_ns() - t0 < 5_000_000_000,
                        "mark {id} did not reach the trace within 5 s"
                    );
                    std::thread::yield_now();
                }
            }
        }

        /// Stops the recording.
        pub fn stop(mut self) {
            if let Some(r) = self.recorder.take() {
                let _ = r.stop("stopped", None);
            }
        }
    }

    /// A pause drawn uniformly from [0, 2 × `mean`) by a xorshift generator seeded with
    /// `state`: marks that arrive at random moments, not in step with the recorder's
    /// threads (the file tailer reads every 10 ms; marks sent right after each read would
    /// all wait the full 10 ms).
    pub fn jitter(state: &mut u64, mean: Duration) -> Duration {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        let ns = mean.as_nanos() as u64 * 2;
        Duration::from_nanos(if ns == 0 { 0 } else { *state % ns })
    }

    /// Sends `n` marks through `transport` one at a time (each after the previous one is
    /// on disk and a random pause of `mean_gap` on average, so the recorder's threads are
    /// asleep when it comes, as between real requests) and returns the latencies, ns.
    pub fn measure(
        transport: Transport,
        n: usize,
        mean_gap: Duration,
    ) -> flinch_core::Result<Vec<u64>> {
        let mut rig = MarkRig::start(transport)?;
        // Let the recorder settle (threads started, first samples written).
        std::thread::sleep(Duration::from_millis(100));
        let mut v = Vec::with_capacity(n);
        let mut seed = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..n {
            std::thread::sleep(jitter(&mut seed, mean_gap));
            v.push(rig.round_trip());
        }
        rig.stop();
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_built_trace_reads_back_with_its_samples_and_marks() {
        let b = synthetic_trace(2_000, 10_000_000, 100);
        assert_eq!(b.samples, 6_000);
        let t = flinch_core::trace::read_trace_from(&b.bytes[..], "mem".as_ref()).unwrap();
        assert_eq!(t.sample_count(), 6_000);
        assert_eq!(t.marks.len() as u64, b.marks);
        assert_eq!(b.marks, 40);
        assert!(t.complete());
        assert_eq!(t.channels[0].values[0], 60.0);
    }

    #[test]
    fn every_transport_gets_a_mark_to_disk() {
        use latency::{Transport, measure};
        for t in [Transport::Fifo, Transport::File, Transport::Api] {
            let v = measure(t, 3, std::time::Duration::ZERO).unwrap();
            assert_eq!(v.len(), 3);
            assert!(v.iter().all(|&ns| ns > 0), "{t:?}: {v:?}");
        }
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let mut v: Vec<u64> = (1..=100).rev().collect();
        assert_eq!(quantile(&mut v, 0.5), Some(50));
        assert_eq!(quantile(&mut v, 0.99), Some(99));
        assert_eq!(quantile(&mut v, 1.0), Some(100));
        assert_eq!(quantile(&mut [], 0.5), None);
    }

    #[test]
    fn this_process_reads_its_own_cpu_threads_and_memory() {
        let a = process_cpu_ns();
        let mut x = 0u64;
        for i in 0..1_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(process_cpu_ns() > a);
        assert!(thread_cpu_ns() > 0);
        let threads = threads_cpu();
        assert!(!threads.is_empty());
        assert!(threads.iter().any(|t| t.cpu_ns > 0));
        assert!(rss_kib().unwrap() > 100);
        // A named thread shows up under its name, with the CPU time it burnt.
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let (busy_tx, busy_rx) = std::sync::mpsc::channel::<()>();
        let probe = std::thread::Builder::new()
            .name("bench-probe".into())
            .spawn(move || {
                let t0 = thread_cpu_ns();
                while thread_cpu_ns() - t0 < 2_000_000 {
                    std::hint::black_box(t0);
                }
                busy_tx.send(()).unwrap();
                done_rx.recv().unwrap();
            })
            .unwrap();
        busy_rx.recv().unwrap();
        let probe_row = threads_cpu()
            .into_iter()
            .find(|t| t.name == "bench-probe")
            .expect("the probe thread is listed by name");
        assert!(probe_row.cpu_ns >= 2_000_000, "{probe_row:?}");
        done_tx.send(()).unwrap();
        probe.join().unwrap();
    }
}

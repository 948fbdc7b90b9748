//! What each NVML read of a recording costs in CPU time, on one GPU: the calls flinch's
//! sources make, one by one, measured with the thread's CPU clock (not wall time: a driver
//! call that spins costs CPU, one that sleeps does not).
//!
//! It also times the same work done the way flinch did it before (GPM through
//! nvml-wrapper: a sample allocated and freed per poll, strings copied per metric), how the
//! cost of draining the driver's power buffer grows with the time since the last drain,
//! what a thread's wake-up from a sleep costs here and how late it comes, and the sampler's
//! 100-ms cycle (a sleep, then three reads) as it is made. `docs/performance.md` explains the
//! figures; `scripts/gpu-sampling.sh` runs it on the GPU machine.
use clap::Parser;
use flinch_benches::thread_cpu_ns;
use flinch_core::clock::{Clock, MonotonicClock};
use flinch_core::source::{Reading, Readings, Source};
use nvml_wrapper::enum_wrappers::device::{Clock as NvClock, TemperatureSensor};
use nvml_wrapper::enums::gpm::GpmMetricId;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;

/// Measures the CPU cost of each NVML read flinch makes, on one GPU.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// The GPU (NVML index).
    #[arg(long, default_value = "0")]
    gpu: String,
    /// Calls per cheap measurement.
    #[arg(long, default_value_t = 400)]
    reps: usize,
    /// Write the figures as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Load this NVML library instead of libnvidia-ml.so.1.
    #[arg(long)]
    nvml_lib: Option<PathBuf>,
}

/// CPU ns of each of `reps` calls (the clock's own cost taken off), with `pause` between
/// them (outside the measurement).
fn measure(reps: usize, pause: Duration, mut f: impl FnMut()) -> Vec<u64> {
    let overhead = {
        let mut v: Vec<u64> = (0..200)
            .map(|_| {
                let a = thread_cpu_ns();
                thread_cpu_ns() - a
            })
            .collect();
        v.sort_unstable();
        v[v.len() / 2]
    };
    let mut out = Vec::with_capacity(reps);
    for _ in 0..reps {
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
        let a = thread_cpu_ns();
        f();
        out.push((thread_cpu_ns() - a).saturating_sub(overhead));
    }
    out
}

fn summary(name: &str, mut v: Vec<u64>, extra: Value) -> Value {
    v.sort_unstable();
    let n = v.len().max(1);
    let mean = v.iter().sum::<u64>() as f64 / n as f64;
    let median = v.get(v.len() / 2).copied().unwrap_or(0);
    let p90 = v.get(v.len() * 9 / 10).copied().unwrap_or(0);
    let p99 = v.get(v.len() * 99 / 100).copied().unwrap_or(0);
    println!(
        "{name:44} median {:>9.1} µs  mean {:>9.1} µs  p90 {:>9.1} µs  p99 {:>9.1} µs  ({} calls) {}",
        median as f64 / 1e3,
        mean / 1e3,
        p90 as f64 / 1e3,
        p99 as f64 / 1e3,
        v.len(),
        if extra.is_null() {
            String::new()
        } else {
            extra.to_string()
        }
    );
    json!({"name": name, "calls": v.len(), "median_ns": median, "mean_ns": mean, "p90_ns": p90, "p99_ns": p99, "extra": extra})
}

fn poll(src: &mut dyn Source, buf: &mut Vec<Reading>) -> usize {
    buf.clear();
    let n = src.info().channels.len() as u32;
    let mut r = Readings::new(&MonotonicClock, buf, 0, n);
    let _ = src.poll(&mut r);
    r.len()
}

fn main() {
    let a = Args::parse();
    let cfg = flinch_nvml::NvmlConfig {
        lib_path: a.nvml_lib.clone(),
        gpus: Some(vec![a.gpu.clone()]),
        ..Default::default()
    };
    let backend = match flinch_nvml::NvmlBackend::open(cfg) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("nvml_costs: NVML cannot be used here: {}", e.message);
            std::process::exit(2);
        }
    };
    let mut sources = backend.sources().expect("the GPU's sources open");
    let mut by = |suffix: &str| -> Option<Box<dyn Source>> {
        let i = sources
            .iter()
            .position(|s| s.info().name.ends_with(suffix))?;
        Some(sources.remove(i))
    };
    let (mut fast, activity, mut gpm, samples, energy) = (
        by(".fast"),
        by(".activity"),
        by(".gpm"),
        by(".samples"),
        by(".energy"),
    );
    let reps = a.reps.max(10);
    let mut buf = Vec::with_capacity(1024);
    let mut results = Vec::new();
    println!(
        "GPU {}: {}",
        a.gpu,
        backend.gpus()[0]
            .attributes
            .get("name")
            .cloned()
            .unwrap_or_default()
    );

    // What flinch's sources do, one poll each.
    if let Some(s) = fast.as_mut() {
        results.push(summary(
            "instant power (field 186), one poll",
            measure(reps * 5, Duration::ZERO, || {
                poll(s.as_mut(), &mut buf);
            }),
            Value::Null,
        ));
    }
    let mut activity = activity;
    if let Some(s) = activity.as_mut() {
        results.push(summary(
            "activity (util, SM clock, temp, P-state, procs)",
            measure(reps, Duration::ZERO, || {
                poll(s.as_mut(), &mut buf);
            }),
            Value::Null,
        ));
    }
    if let Some(s) = gpm.as_mut() {
        poll(s.as_mut(), &mut buf);
        results.push(summary(
            "GPM poll, two samples kept (flinch now)",
            measure(reps / 2, Duration::from_millis(5), || {
                poll(s.as_mut(), &mut buf);
            }),
            Value::Null,
        ));
    }

    // The same reads through nvml-wrapper, call by call, and GPM the old way.
    let nvml = flinch_nvml::nvml_instance(a.nvml_lib.as_deref()).expect("NVML");
    let idx: u32 = backend.gpus()[0].index;
    let dev = nvml.device_by_index(idx).expect("the device");
    type Call<'a> = (&'a str, Box<dyn FnMut() + 'a>);
    let calls: Vec<Call<'_>> = vec![
        (
            "nvmlDeviceGetUtilizationRates",
            Box::new(|| {
                let _ = dev.utilization_rates();
            }),
        ),
        (
            "nvmlDeviceGetClockInfo(SM)",
            Box::new(|| {
                let _ = dev.clock_info(NvClock::SM);
            }),
        ),
        (
            "nvmlDeviceGetTemperature",
            Box::new(|| {
                let _ = dev.temperature(TemperatureSensor::Gpu);
            }),
        ),
        (
            "nvmlDeviceGetPerformanceState",
            Box::new(|| {
                let _ = dev.performance_state();
            }),
        ),
        (
            "running compute processes (count)",
            Box::new(|| {
                let _ = dev.running_compute_processes_count();
            }),
        ),
        (
            "nvmlDeviceGetPowerUsage (1-s average)",
            Box::new(|| {
                let _ = dev.power_usage();
            }),
        ),
    ];
    for (name, mut f) in calls {
        results.push(summary(
            name,
            measure(reps, Duration::ZERO, &mut f),
            Value::Null,
        ));
    }
    if dev.gpm_support().unwrap_or(false) {
        let metrics = [
            GpmMetricId::SmUtil,
            GpmMetricId::SmOccupancy,
            GpmMetricId::AnyTensorUtil,
            GpmMetricId::DramBwUtil,
        ];
        let mut prev = dev.gpm_sample().ok();
        results.push(summary(
            "GPM poll, sample allocated per poll (before)",
            measure(reps / 2, Duration::from_millis(5), || {
                let cur = dev.gpm_sample().ok();
                if let (Some(p), Some(c)) = (&prev, &cur) {
                    let _ = nvml_wrapper::gpm::gpm_metrics_get(nvml, p, c, &metrics);
                }
                prev = cur; // the previous sample is freed here
            }),
            Value::Null,
        ));
        results.push(summary(
            "  of which nvmlGpmSampleAlloc+Get+Free",
            measure(reps / 2, Duration::from_millis(5), || {
                let _ = dev.gpm_sample();
            }),
            Value::Null,
        ));
    }

    // The driver buffer: cost against the time since the last drain.
    if let Some(mut s) = samples {
        for gap_ms in [250u64, 500, 1000, 2000] {
            poll(s.as_mut(), &mut buf);
            let mut got = 0;
            let v = measure(4, Duration::from_millis(gap_ms), || {
                got += poll(s.as_mut(), &mut buf);
            });
            results.push(summary(
                &format!("driver buffer drain after {gap_ms} ms"),
                v,
                json!({"samples_per_drain": got as f64 / 4.0}),
            ));
        }
    }
    if let Some(mut s) = energy {
        results.push(summary(
            "energy counter (slow: the driver spins)",
            measure(6, Duration::from_millis(200), || {
                poll(s.as_mut(), &mut buf);
            }),
            Value::Null,
        ));
        // What the old schedule did once a second: a cheap read in the same instant as
        // the energy read on another thread.
        if let Some(a) = activity.as_mut() {
            let stop = std::sync::atomic::AtomicBool::new(false);
            let reads = std::thread::scope(|sc| {
                let e = sc.spawn(|| {
                    let mut b = Vec::with_capacity(4);
                    let mut n = 0u32;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        poll(s.as_mut(), &mut b);
                        n += 1;
                    }
                    n
                });
                std::thread::sleep(Duration::from_millis(20));
                let v = measure(40, Duration::from_millis(3), || {
                    poll(a.as_mut(), &mut buf);
                });
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                (v, e.join().unwrap_or(0))
            });
            results.push(summary(
                "activity poll while the energy counter is read",
                reads.0,
                json!({"energy_reads_meanwhile": reads.1}),
            ));
        }
    }

    // A thread's wake-up: sleep to an absolute deadline, as the sampler does. Its CPU
    // cost, and how late this machine wakes the thread (wall time, in µs in the table):
    // the floor under the sampler's schedule deviation.
    for (period_ms, n) in [(10u64, 500usize), (100, 50)] {
        let clock = MonotonicClock;
        let mut next = clock.now_ns();
        let mut late = Vec::with_capacity(n);
        let cpu = measure(n, Duration::ZERO, || {
            next += period_ms * 1_000_000;
            clock.sleep_until(next);
            late.push(clock.now_ns().saturating_sub(next));
        });
        results.push(summary(
            &format!("one sleep and wake-up, {period_ms} ms apart"),
            cpu,
            Value::Null,
        ));
        results.push(summary(
            &format!("wake-up lateness (wall), {period_ms} ms apart"),
            late,
            Value::Null,
        ));
    }
    // The sampler's 100-ms wake-up as it is made: sleep to an absolute deadline, then
    // instant power, activity and GPM, one after another. The CPU of the whole cycle
    // (wake-up included) and of the reads alone, after the sleep: what the reads cost when
    // the caches and the driver are cold, not back to back.
    if let (Some(f), Some(ac), Some(g)) = (fast.as_mut(), activity.as_mut(), gpm.as_mut()) {
        let clock = MonotonicClock;
        let mut next = clock.now_ns();
        let (mut whole, mut reads) = (Vec::with_capacity(50), Vec::with_capacity(50));
        for _ in 0..50 {
            next += 100_000_000;
            let a0 = thread_cpu_ns();
            clock.sleep_until(next);
            let a1 = thread_cpu_ns();
            poll(f.as_mut(), &mut buf);
            poll(ac.as_mut(), &mut buf);
            poll(g.as_mut(), &mut buf);
            let a2 = thread_cpu_ns();
            whole.push(a2 - a0);
            reads.push(a2 - a1);
        }
        results.push(summary(
            "100-ms cycle: sleep, power, activity, GPM",
            whole,
            Value::Null,
        ));
        results.push(summary(
            "  of which the three reads, after the sleep",
            reads,
            Value::Null,
        ));
    }

    if let Some(p) = &a.json {
        let doc = json!({
            "gpu": a.gpu,
            "attributes": backend.gpus()[0].attributes,
            "results": results,
        });
        std::fs::write(p, serde_json::to_string_pretty(&doc).unwrap() + "\n")
            .expect("write the JSON");
    }
}

//! The whole recorder measured as a process: what recording costs the machine it measures.
//!
//! For each run (a source set at a fast interval) it records in-process for `--duration`
//! and reports, over the steady state (the first second left out):
//! - the process's CPU time (all threads) per fast tick and per recorded sample,
//! - each sampler thread's CPU per tick and its deviation from schedule (the footer's
//!   `cadences`), and the writer thread's CPU,
//! - resident memory at 10 s (or at `--rss-every`) and at the end,
//!
//! and then performs the same polls of the same sources at the same rates with no recorder
//! (one plain thread on an absolute schedule, no channels, no writer): the *bare reads*.
//! Recorder CPU ÷ bare-reads CPU is the recorder's overhead ratio. With NVML the bare reads
//! are the NVML calls themselves (instant power every tick, the driver buffer drained every
//! 0.5 s, the energy counter every 1 s, activity and GPM every 100 ms, as the default
//! recording makes them), so the ratio is overhead ÷ unavoidable read cost.
//!
//! Where NVML cannot be loaded it says so and runs the synthetic part. See
//! `docs/performance.md` for the commands and the figures.
use clap::Parser;
use flinch_benches::latency::{Transport, measure as measure_latency};
use flinch_benches::{process_cpu_ns, quantile, rss_kib, thread_cpu_ns, threads_cpu};
use flinch_core::clock::{Clock, MonotonicClock};
use flinch_core::source::{Reading, Readings, Source};
use flinch_core::trace::CadenceStats;
use flinch_record::recorder::{Recorder, RecorderConfig, RecordingSetup};
use flinch_record::sampler::LagHistogram;
use flinch_record::synthetic::{SyntheticConfig, SyntheticSource};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Measures flinch's recorder as a process: CPU per tick and per sample, schedule
/// deviation, memory, and (with NVML) the ratio to the bare cost of the same NVML reads.
#[derive(Parser, Debug)]
#[command(
    version,
    after_help = "Examples:\n  \
    recorder_overhead                                   # synthetic at 10 ms and 1 ms, NVML at 10 ms if present, 20 s each\n  \
    recorder_overhead --sources nvml --require-nvml     # the GPU figure only\n  \
    recorder_overhead --sources synthetic --interval 1ms --duration 10m --marks 0   # memory over a long recording"
)]
struct Args {
    /// How long each recording runs.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Fast intervals for the synthetic runs (comma-separated).
    #[arg(long, default_value = "10ms,1ms", value_delimiter = ',', value_parser = humantime::parse_duration)]
    interval: Vec<Duration>,
    /// Fast interval (instant power) of the NVML run.
    #[arg(long, default_value = "10ms", value_parser = humantime::parse_duration)]
    nvml_interval: Duration,
    /// Which runs: synthetic, nvml (comma-separated).
    #[arg(long, default_value = "synthetic,nvml", value_delimiter = ',')]
    sources: Vec<String>,
    /// Fail (exit 2) instead of skipping the NVML run when NVML cannot be loaded.
    #[arg(long)]
    require_nvml: bool,
    /// Load this NVML library instead of libnvidia-ml.so.1.
    #[arg(long)]
    nvml_lib: Option<PathBuf>,
    /// GPUs by index or UUID (comma-separated; default all).
    #[arg(long, value_delimiter = ',')]
    gpus: Option<Vec<String>>,
    /// How long the bare-reads baseline of each run lasts (default: the duration, at most
    /// 20 s).
    #[arg(long, value_parser = humantime::parse_duration)]
    baseline_duration: Option<Duration>,
    /// Skip the bare-reads baseline.
    #[arg(long)]
    no_baseline: bool,
    /// Read the resident set size this often during each recording (the first reading is
    /// the reference the end is compared with).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    rss_every: Duration,
    /// Marks per transport (FIFO, API, file) for the mark-to-disk latency; 0 to skip.
    #[arg(long, default_value_t = 200)]
    marks: usize,
    /// Write every figure as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Keep the traces in this directory (default: a temporary directory, removed).
    #[arg(long)]
    keep: Option<PathBuf>,
}

/// The warm-up left out of every steady-state figure.
const WARMUP: Duration = Duration::from_secs(1);

fn main() {
    let args = Args::parse();
    let mut report = serde_json::Map::new();
    report.insert("machine".into(), machine());
    println!("{}", describe_machine(&report["machine"]));

    let tmp = tempfile::tempdir().expect("a temporary directory");
    let dir = args.keep.clone().unwrap_or_else(|| tmp.path().to_owned());
    std::fs::create_dir_all(&dir).expect("the trace directory");
    let mut runs = Vec::new();

    if args.sources.iter().any(|s| s == "synthetic") {
        for &iv in &args.interval {
            let name = format!("synthetic@{}", humantime::format_duration(iv));
            let make = || -> Vec<Box<dyn Source>> {
                vec![Box::new(SyntheticSource::new(
                    SyntheticConfig::default(),
                    &MonotonicClock,
                ))]
            };
            runs.push(run(&args, &dir, &name, iv, make));
        }
    }
    if args.sources.iter().any(|s| s == "nvml") {
        let cfg = flinch_nvml::NvmlConfig {
            lib_path: args.nvml_lib.clone(),
            gpus: args.gpus.clone(),
            // The instant power on the fixed fast grid this bench is about (a default
            // recording follows the field's updates instead: scripts/gpu-sampling.sh).
            instant_interval: Some(args.nvml_interval),
            ..Default::default()
        };
        match flinch_nvml::NvmlBackend::open(cfg) {
            Ok(backend) => {
                let name = format!(
                    "nvml@{} ({} GPU)",
                    humantime::format_duration(args.nvml_interval),
                    backend.gpus().len()
                );
                for g in backend.gpus() {
                    println!(
                        "{}: {} driver {}{}",
                        g.device,
                        g.attributes.get("name").map_or("?", String::as_str),
                        g.attributes
                            .get("driver_version")
                            .map_or("?", String::as_str),
                        if g.absent.is_empty() {
                            String::new()
                        } else {
                            format!(" (absent: {})", g.absent.join("; "))
                        }
                    );
                }
                let make = || backend.sources().expect("the NVML sources open");
                runs.push(run(&args, &dir, &name, args.nvml_interval, make));
            }
            Err(e) => {
                println!("NVML not available here ({e}): the NVML run is skipped");
                report.insert(
                    "nvml".into(),
                    json!({"available": false, "why": e.to_string()}),
                );
                if args.require_nvml {
                    std::process::exit(2);
                }
            }
        }
    }
    report.insert("runs".into(), Value::Array(runs));

    if args.marks > 0 {
        let mut lat = serde_json::Map::new();
        println!(
            "\nmark-to-disk latency ({} marks each, one at a time, 0-10 ms apart at random)",
            args.marks
        );
        for t in [Transport::Fifo, Transport::Api, Transport::File] {
            match measure_latency(t, args.marks, Duration::from_millis(5)) {
                Ok(mut v) => {
                    let (p50, p99, max) = (
                        quantile(&mut v, 0.5).unwrap_or(0),
                        quantile(&mut v, 0.99).unwrap_or(0),
                        quantile(&mut v, 1.0).unwrap_or(0),
                    );
                    println!(
                        "  {:<5} p50 {:>9}  p99 {:>9}  max {:>9}",
                        t.name(),
                        us(p50),
                        us(p99),
                        us(max)
                    );
                    lat.insert(
                        t.name().into(),
                        json!({"n": v.len(), "p50_ns": p50, "p99_ns": p99, "max_ns": max}),
                    );
                }
                Err(e) => println!("  {}: {e}", t.name()),
            }
        }
        report.insert("mark_latency".into(), Value::Object(lat));
    }

    if let Some(p) = &args.json {
        let text = serde_json::to_string_pretty(&Value::Object(report)).expect("json");
        std::fs::write(p, text + "\n").expect("writing the JSON report");
        println!("\nfigures written to {}", p.display());
    }
}

fn us(ns: u64) -> String {
    if ns < 10_000 {
        format!("{:.3} µs", ns as f64 / 1e3)
    } else {
        format!("{:.1} µs", ns as f64 / 1e3)
    }
}

fn machine() -> Value {
    use procfs::Current;
    let uname = rustix::system::uname();
    // The description a recording's header carries (sysinfo, in flinch-record).
    let m = flinch_record::host::describe_machine();
    let loadavg = procfs::LoadAverage::current()
        .map(|l| {
            format!(
                "{:.2} {:.2} {:.2} {}/{} {}",
                l.one, l.five, l.fifteen, l.cur, l.max, l.latest_pid
            )
        })
        .unwrap_or_default();
    json!({
        "host": uname.nodename().to_string_lossy(),
        "kernel": uname.release().to_string_lossy(),
        "cpu": m.cpu_model.unwrap_or_default(),
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "memory_bytes": m.memory_bytes,
        "loadavg": loadavg,
        "flinch": env!("CARGO_PKG_VERSION"),
        "debug_build": cfg!(debug_assertions),
    })
}

fn describe_machine(m: &Value) -> String {
    format!(
        "machine: {} ({} CPUs: {}), kernel {}, load average {}{}",
        m["host"].as_str().unwrap_or("?"),
        m["cpus"],
        m["cpu"].as_str().unwrap_or("?"),
        m["kernel"].as_str().unwrap_or("?"),
        m["loadavg"].as_str().unwrap_or("?"),
        if cfg!(debug_assertions) {
            "\nWARNING: a debug build; figures mean nothing (build with --release)"
        } else {
            ""
        }
    )
}

/// CPU of the named threads of this process, ns (a `comm` is cut to 15 bytes).
fn named_threads_cpu(prefix: &str) -> u64 {
    threads_cpu()
        .iter()
        .filter(|t| t.name.starts_with(prefix))
        .map(|t| t.cpu_ns)
        .sum()
}

fn run(
    args: &Args,
    dir: &std::path::Path,
    name: &str,
    interval: Duration,
    make: impl Fn() -> Vec<Box<dyn Source>>,
) -> Value {
    println!(
        "\n== {name}: recording for {}",
        humantime::format_duration(args.duration)
    );
    let iv_ns = interval.as_nanos() as u64;
    let clock: Arc<dyn Clock> = Arc::new(MonotonicClock);
    let out = dir.join(format!(
        "{}.flinch.csv",
        name.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    ));
    let mut setup = RecordingSetup::new(out.clone(), make());
    setup.force = true;
    let config = RecorderConfig {
        interval,
        ..Default::default()
    };
    let rec = Recorder::start(setup, config, clock.clone()).expect("the recording starts");
    let t_start = clock.now_ns();
    let end = t_start + args.duration.as_nanos() as u64;
    let warm_end = (t_start + WARMUP.as_nanos() as u64).min(end);
    clock.sleep_until(warm_end);
    let (cpu_a, t_a, samples_a, writer_a) = (
        process_cpu_ns(),
        clock.now_ns(),
        rec.stats().samples.load(Ordering::Relaxed),
        named_threads_cpu("flinch-writer"),
    );
    let mut rss = Vec::new();
    let every = args.rss_every.as_nanos().max(1) as u64;
    let mut next_rss = t_start + every;
    while next_rss < end {
        clock.sleep_until(next_rss);
        if let Some(kib) = rss_kib() {
            rss.push(((next_rss - t_start) / 1_000_000_000, kib));
        }
        next_rss += every;
    }
    clock.sleep_until(end);
    let (cpu_b, t_b, samples_b, writer_b) = (
        process_cpu_ns(),
        clock.now_ns(),
        rec.stats().samples.load(Ordering::Relaxed),
        named_threads_cpu("flinch-writer"),
    );
    let rss_end = rss_kib();
    let footer = rec.stop("duration", None).expect("the recording stops");
    let trace_bytes = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    if args.keep.is_none() {
        let _ = std::fs::remove_file(&out);
    }

    let fast = footer
        .cadences
        .iter()
        .min_by_key(|c| c.interval_ns)
        .cloned()
        .unwrap_or_default();
    let window_ns = t_b - t_a;
    // Ticks the fast thread ran in the window: as scheduled, less the share of missed ones
    // (a starved thread skips deadlines rather than bursting; CPU per tick is per tick run).
    let scheduled = window_ns as f64 / iv_ns as f64;
    let ticks = if fast.missed_ticks > 0 {
        scheduled * fast.ticks as f64 / (fast.ticks + fast.missed_ticks) as f64
    } else {
        scheduled
    };
    let cpu = cpu_b - cpu_a;
    let samples = samples_b - samples_a;
    let per_tick = cpu as f64 / ticks;
    let per_sample = cpu as f64 / samples.max(1) as f64;
    let writer_per_tick = (writer_b - writer_a) as f64 / ticks;
    println!(
        "process CPU {:.3} s over {:.1} s ({:.0} ticks of {}): {:.2} µs per tick, {:.3} µs per sample \
         ({samples} samples, {:.2} % of one CPU)",
        cpu as f64 / 1e9,
        window_ns as f64 / 1e9,
        ticks,
        humantime::format_duration(interval),
        per_tick / 1e3,
        per_sample / 1e3,
        cpu as f64 / window_ns as f64 * 100.0
    );
    println!(
        "  writer thread {:.2} µs per tick; trace {:.1} MB, {} samples, {} dropped",
        writer_per_tick / 1e3,
        trace_bytes as f64 / 1e6,
        footer.samples,
        footer.dropped_readings
    );
    if fast.missed_ticks > 0 {
        println!(
            "  WARNING: the fast thread missed {} of {} deadlines (starved of CPU): figures are \
             per tick run",
            fast.missed_ticks,
            fast.ticks + fast.missed_ticks
        );
    }
    let cadences: Vec<Value> = footer.cadences.iter().map(cadence).collect();
    let rss_ref = rss.first().map(|r| r.1);
    match (rss_ref, rss_end) {
        (Some(a), Some(b)) => println!(
            "  resident memory {a} KiB at {} s, {b} KiB at the end ({:+.1} %)",
            rss[0].0,
            (b as f64 / a as f64 - 1.0) * 100.0
        ),
        (_, Some(b)) => println!("  resident memory {b} KiB at the end"),
        _ => {}
    }

    let mut v = json!({
        "name": name,
        "interval_ns": iv_ns,
        "duration_s": args.duration.as_secs_f64(),
        "window_s": window_ns as f64 / 1e9,
        "ticks_in_window": ticks,
        "missed_ticks": fast.missed_ticks,
        "process_cpu_ns": cpu,
        "cpu_per_tick_ns": per_tick,
        "cpu_per_sample_ns": per_sample,
        "samples_in_window": samples,
        "writer_cpu_per_tick_ns": writer_per_tick,
        "trace_bytes": trace_bytes,
        "samples": footer.samples,
        "dropped": footer.dropped_readings,
        "cadences": cadences,
        "fast_deviation_p50_ns": fast.deviation_p50_ns,
        "fast_deviation_p99_ns": fast.deviation_p99_ns,
        "fast_deviation_max_ns": fast.deviation_max_ns,
        "rss_kib": rss.iter().map(|(s, k)| json!([s, k])).collect::<Vec<_>>(),
        "rss_end_kib": rss_end,
    });
    if !args.no_baseline {
        let d = args
            .baseline_duration
            .unwrap_or(args.duration.min(Duration::from_secs(20)));
        let b = bare_reads(make(), interval, d);
        let ratio = per_tick / b.cpu_per_tick_ns;
        println!(
            "bare reads (same polls, same rates, one plain thread, no recorder) for {}: \
             {:.2} µs per tick; recorder ÷ bare reads = {ratio:.2}",
            humantime::format_duration(d),
            b.cpu_per_tick_ns / 1e3
        );
        println!(
            "  bare loop off schedule p50 {} p99 {}",
            us(b.deviation_p50_ns),
            us(b.deviation_p99_ns)
        );
        let mut pure = 0.0;
        for k in &b.kinds {
            pure += k.cost_ns * k.polls_per_tick;
            println!(
                "  {:<28} {:>10} per poll, {:>6.3} polls per tick → {:>9} per tick",
                k.source,
                us(k.cost_ns as u64),
                k.polls_per_tick,
                us((k.cost_ns * k.polls_per_tick) as u64),
            );
        }
        println!(
            "  sum of the polls alone: {} per tick; recorder ÷ polls alone = {:.2}",
            us(pure as u64),
            per_tick / pure
        );
        v["bare"] = json!({
            "duration_s": d.as_secs_f64(),
            "cpu_per_tick_ns": b.cpu_per_tick_ns,
            "deviation_p50_ns": b.deviation_p50_ns,
            "deviation_p99_ns": b.deviation_p99_ns,
            "polls": b.kinds.iter().map(|k| json!({
                "source": k.source, "cost_per_poll_ns": k.cost_ns, "polls_per_tick": k.polls_per_tick
            })).collect::<Vec<_>>(),
            "polls_alone_per_tick_ns": pure,
        });
        v["ratio_to_bare"] = json!(ratio);
        v["ratio_to_polls_alone"] = json!(per_tick / pure);
    }
    v
}

fn cadence(c: &CadenceStats) -> Value {
    let per_tick = c.cpu_ns as f64 / c.ticks.max(1) as f64;
    println!(
        "  thread every {:>7}: {:>6} ticks, {:>9} CPU per tick, off schedule p50 {} p99 {} max {}, \
         missed {}: {}",
        humantime::format_duration(Duration::from_nanos(c.interval_ns)).to_string(),
        c.ticks,
        us(per_tick as u64),
        us(c.deviation_p50_ns),
        us(c.deviation_p99_ns),
        us(c.deviation_max_ns),
        c.missed_ticks,
        c.sources.join(", ")
    );
    json!({
        "interval_ns": c.interval_ns,
        "sources": c.sources,
        "ticks": c.ticks,
        "missed": c.missed_ticks,
        "cpu_per_tick_ns": per_tick,
        "deviation_p50_ns": c.deviation_p50_ns,
        "deviation_p99_ns": c.deviation_p99_ns,
        "deviation_max_ns": c.deviation_max_ns,
    })
}

struct PollKind {
    source: String,
    cost_ns: f64,
    polls_per_tick: f64,
}

struct Bare {
    cpu_per_tick_ns: f64,
    deviation_p50_ns: u64,
    deviation_p99_ns: u64,
    kinds: Vec<PollKind>,
}

/// Polls `sources` at their own intervals (the fast interval for those without one) from
/// one thread on an absolute schedule, for `duration`: the same reads a recording makes, at
/// the same rates, with nothing else. Returns the thread's CPU per fast tick over the steady
/// state, and each slow source's CPU per poll. Slow polls are timed with the thread CPU
/// clock (two clock reads per poll, ~1 % of the cheapest slow poll); polls at the fast
/// interval are not timed in the loop (the clock reads would cost as much as an NVML instant
/// read) but afterwards, 2000 back-to-back polls of each.
fn bare_reads(mut sources: Vec<Box<dyn Source>>, interval: Duration, duration: Duration) -> Bare {
    std::thread::scope(|s| {
        s.spawn(move || {
            let _ = rustix::thread::set_current_timer_slack(std::num::NonZeroU64::new(1));
            let clock = MonotonicClock;
            let iv = interval.as_nanos().max(1) as u64;
            let every: Vec<u64> = sources
                .iter()
                .map(|s| (s.interval().map_or(iv, |d| d.as_nanos() as u64) / iv).max(1))
                .collect();
            let mut bufs: Vec<Vec<Reading>> = sources
                .iter()
                .map(|s| Vec::with_capacity(s.max_readings_per_poll().max(s.info().channels.len())))
                .collect();
            let mut spent = vec![0u64; sources.len()];
            let mut polls = vec![0u64; sources.len()];
            let mut lag = LagHistogram::default();
            let start = clock.now_ns();
            let end = start + duration.as_nanos() as u64;
            let warm = start + (WARMUP.as_nanos() as u64).min(duration.as_nanos() as u64 / 2);
            let mut mark: Option<u64> = None; // thread CPU at the warm-up's end
            let mut run_after_warm = 0u64;
            let mut k = 0u64;
            loop {
                let deadline = start + k * iv;
                if deadline >= end {
                    break;
                }
                clock.sleep_until(deadline);
                let now = clock.now_ns();
                lag.record(now.abs_diff(deadline));
                if mark.is_none() && now >= warm {
                    mark = Some(thread_cpu_ns());
                }
                if mark.is_some() {
                    run_after_warm += 1;
                }
                for (i, src) in sources.iter_mut().enumerate() {
                    if !k.is_multiple_of(every[i]) {
                        continue;
                    }
                    bufs[i].clear();
                    let n = src.info().channels.len() as u32;
                    let timed = every[i] > 1;
                    let c0 = if timed { thread_cpu_ns() } else { 0 };
                    let mut out = Readings::new(&clock, &mut bufs[i], 0, n);
                    let _ = src.poll(&mut out);
                    if timed {
                        spent[i] += thread_cpu_ns() - c0;
                        polls[i] += 1;
                    }
                }
                k += 1;
                let now = clock.now_ns();
                let next = start + k * iv;
                if now > next {
                    k += (now - next) / iv + 1;
                }
            }
            let cpu = thread_cpu_ns() - mark.unwrap_or_else(thread_cpu_ns);
            let ticks = run_after_warm as f64;
            // The fast polls, timed back to back.
            for (i, src) in sources.iter_mut().enumerate() {
                if every[i] > 1 {
                    continue;
                }
                let n = src.info().channels.len() as u32;
                let c0 = thread_cpu_ns();
                for _ in 0..2000 {
                    bufs[i].clear();
                    let mut out = Readings::new(&clock, &mut bufs[i], 0, n);
                    let _ = src.poll(&mut out);
                }
                spent[i] = thread_cpu_ns() - c0;
                polls[i] = 2000;
            }
            let kinds = sources
                .iter()
                .enumerate()
                .map(|(i, s)| PollKind {
                    source: s.info().name.clone(),
                    cost_ns: spent[i] as f64 / polls[i].max(1) as f64,
                    polls_per_tick: 1.0 / every[i] as f64,
                })
                .collect();
            Bare {
                cpu_per_tick_ns: cpu as f64 / ticks.max(1.0),
                deviation_p50_ns: lag.quantile_ns(0.5),
                deviation_p99_ns: lag.quantile_ns(0.99),
                kinds,
            }
        })
        .join()
        .expect("the bare-reads thread")
    })
}

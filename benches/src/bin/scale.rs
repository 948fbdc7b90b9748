//! `scale`: `flinch analyze` and `flinch export` on long traces, at two sizes, in one run.
//!
//! The trace is the one of issue 19: a 20-s synthetic recording at 1 ms (three channels:
//! modelled power, a wrapping energy counter, utilisation) with a span `a → b` of 4 ms
//! every 10 ms, repeated `--reps` times with shifted times and `req`s (380 repetitions:
//! 1.1 GB, 23.9 M rows, 760 000 spans); the second size doubles the repetitions. Each
//! command runs as its own process under `/usr/bin/time -v` (peak resident memory) with
//! its output counted and thrown away; the figures that matter are ratios within the run:
//! `analyze --from a --to b` against listing the labels, and the larger trace's peak
//! memory against the smaller's.
//!
//! ```sh
//! cargo build --release -p flinch-cli -p flinch-benches --bin scale
//! target/release/scale --dir /tmp/flinch-scale --reps 380      # 1.1 GB and 2.2 GB (~10 min)
//! target/release/scale --dir /tmp/flinch-scale --reps 38       # a quick look
//! target/release/scale --reps 380 --one-size --no-export --repeat 5   # the time ratio, medians
//! ```
//! Traces are written once into `--dir` (kept for the next run; never inside the
//! repository) and reused while their size matches.

use clap::Parser;
use flinch_core::DeviceClass;
use flinch_core::channel::{ChannelSpec, CounterSpec, PowerMethod, Quantity, SourceInfo};
use flinch_core::clock::{ClockAnchor, ManualClock};
use flinch_core::marks::{Mark, MarkVia};
use flinch_core::source::Reading;
use flinch_core::trace::{Footer, Header, TraceWriter};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

#[derive(Parser, Debug)]
#[command(about = "analyze and export on long traces at two sizes (issue 19's bench)")]
struct Args {
    /// Where the traces are written (and kept): not inside the repository
    #[arg(long, default_value = "/tmp/flinch-scale")]
    dir: PathBuf,
    /// Repetitions of the 20-s recording in the smaller trace (380: 1.1 GB)
    #[arg(long, default_value_t = 380)]
    reps: u64,
    /// The flinch binary to measure
    #[arg(long, default_value = "target/release/flinch")]
    flinch: PathBuf,
    /// Only the smaller trace
    #[arg(long)]
    one_size: bool,
    /// Skip the exports
    #[arg(long)]
    no_export: bool,
    /// Run the commands of each size this many times, round after round, and keep each
    /// one's median wall and CPU time (and its largest peak memory): on a shared machine
    /// a single run can land on a busy moment
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Also write the figures as JSON here
    #[arg(long)]
    json: Option<PathBuf>,
}

const T0: u64 = 1_000_000_000_000;
const REAL0: i64 = 1_700_000_000_000_000_000;
const MS: u64 = 1_000_000;
/// One repetition: 20 s.
const REP_NS: u64 = 20_000_000_000;

fn header() -> Header {
    let src = SourceInfo::new("synthetic", "synthetic", DeviceClass::Gpu).with_channels(vec![
        ChannelSpec::power("synthetic", "power", PowerMethod::Modelled),
        ChannelSpec::energy_counter(
            "synthetic",
            "energy",
            CounterSpec {
                wrap_range: Some(500.0),
                max_rate: Some(400.0),
            },
        ),
        ChannelSpec::gauge("synthetic", "util", Quantity::Utilization),
    ]);
    Header::new(
        MS,
        ClockAnchor {
            mono_ns: T0,
            real_ns: REAL0,
        },
        vec![src],
    )
}

/// Writes the trace: every 1 ms three samples; every 10 ms a span a → b of 4 ms (busy at
/// 300 W inside, 60 W outside).
fn write_trace(path: &Path, reps: u64) -> std::io::Result<u64> {
    let f = std::fs::File::create(path)?;
    let clock = Arc::new(ManualClock::new(T0, REAL0));
    let mut w = TraceWriter::new(f, &header(), clock, u64::MAX)?;
    let mut energy = 0.0f64;
    let ticks = REP_NS / MS;
    for rep in 0..reps {
        let base = T0 + rep * REP_NS;
        for k in 0..ticks {
            let t = base + k * MS;
            let in_span = (k % 10) < 4;
            let p = if in_span { 300.0 } else { 60.0 };
            energy = (energy + p * 1e-3) % 500.0;
            for (channel, value) in [(0, p), (1, energy), (2, if in_span { 100.0 } else { 0.0 })] {
                w.sample(&Reading {
                    channel,
                    t_ns: t,
                    value,
                })?;
            }
            if k % 10 == 0 {
                let req = (rep * (ticks / 10) + k / 10).to_string();
                for (label, at) in [("a", t), ("b", t + 4 * MS)] {
                    w.mark_buffered(&Mark {
                        t_ns: at,
                        recv_ns: at + 20_000,
                        t_from_client: true,
                        label: label.into(),
                        fields: vec![("req".into(), req.clone())],
                        via: MarkVia::Fifo,
                    })?;
                }
            }
            if k % 10_000 == 0 {
                w.anchor(ClockAnchor {
                    mono_ns: t,
                    real_ns: REAL0 + (t - T0) as i64,
                })?;
            }
        }
    }
    w.finish(Footer {
        complete: true,
        ended_by: "duration".into(),
        ..Default::default()
    })?;
    Ok(std::fs::metadata(path)?.len())
}

fn trace(dir: &Path, reps: u64) -> PathBuf {
    let p = dir.join(format!("scale-{reps}.flinch.csv"));
    // 2 marks of ~45 B and 30 samples of ~28 B per 10 ms: the size within a few %.
    let ok = std::fs::metadata(&p).is_ok_and(|m| {
        let want = reps * 2000 * 1000;
        m.len() > want / 2 && m.len() < want * 2
    });
    if !ok {
        let t = Instant::now();
        let n = write_trace(&p, reps).expect("writing the trace");
        eprintln!(
            "wrote {} ({:.2} GB) in {:.1} s",
            p.display(),
            n as f64 / 1e9,
            t.elapsed().as_secs_f64()
        );
    }
    p
}

#[derive(Debug, Clone, serde::Serialize)]
struct Run {
    what: String,
    trace_gb: f64,
    wall_s: f64,
    peak_rss_mb: f64,
    /// User + system CPU time, s: what the run cost, whatever else the machine ran.
    cpu_s: f64,
    output_mb: f64,
    status: i32,
}

/// Runs `flinch args` under `/usr/bin/time -v`, its standard output counted.
fn measure(flinch: &Path, args: &[&str], what: &str, trace_gb: f64) -> Run {
    let t = Instant::now();
    let mut child = Command::new("/usr/bin/time")
        .arg("-v")
        .arg(flinch)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("/usr/bin/time runs (apt-get install time)");
    let mut out = child.stdout.take().expect("stdout");
    let counter = std::thread::spawn(move || {
        let mut n = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match out.read(&mut buf) {
                Ok(0) | Err(_) => return n,
                Ok(k) => n += k as u64,
            }
        }
    });
    let err = BufReader::new(child.stderr.take().expect("stderr"));
    let mut rss_kb = 0.0;
    let mut cpu_s = 0.0;
    let mut tail = Vec::new();
    for line in err.lines().map_while(Result::ok) {
        let l = line.trim();
        if let Some(v) = l.strip_prefix("Maximum resident set size (kbytes):") {
            rss_kb = v.trim().parse().unwrap_or(0.0);
        }
        for key in ["User time (seconds):", "System time (seconds):"] {
            if let Some(v) = l.strip_prefix(key) {
                cpu_s += v.trim().parse::<f64>().unwrap_or(0.0);
            }
        }
        tail.push(line);
    }
    let status = child.wait().expect("wait");
    let wall = t.elapsed().as_secs_f64();
    let bytes = counter.join().unwrap_or(0);
    let code = status.code().unwrap_or(-1);
    if code != 0 {
        eprintln!("{what}: exit {code}\n{}", tail.join("\n"));
    }
    let r = Run {
        what: what.into(),
        trace_gb,
        wall_s: wall,
        peak_rss_mb: rss_kb / 1024.0,
        cpu_s,
        output_mb: bytes as f64 / 1e6,
        status: code,
    };
    eprintln!(
        "  {:<44} {:>7.2} s wall {:>7.2} s CPU {:>8.1} MB peak {:>9.1} MB out",
        r.what, r.wall_s, r.cpu_s, r.peak_rss_mb, r.output_mb
    );
    r
}

fn main() {
    let a = Args::parse();
    std::fs::create_dir_all(&a.dir).expect("--dir can be created");
    let sizes: Vec<u64> = if a.one_size {
        vec![a.reps]
    } else {
        vec![a.reps, 2 * a.reps]
    };
    let mut runs: Vec<Run> = Vec::new();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    eprintln!("{cpus} CPUs; load average {}", load());
    for &reps in &sizes {
        let p = trace(&a.dir, reps);
        let gb = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0) as f64 / 1e9;
        let ps = p.to_str().expect("a UTF-8 path");
        eprintln!("{} ({gb:.2} GB, {} spans):", p.display(), reps * 2000);
        let out = a.dir.join("out.pftrace");
        let outs = out.to_str().expect("a UTF-8 path");
        let mut cmds: Vec<(String, Vec<&str>)> = vec![
            ("labels".into(), vec!["analyze", ps]),
            (
                "analyze --from a --to b".into(),
                vec!["analyze", ps, "--from", "a", "--to", "b"],
            ),
            (
                "analyze --from a --to b --json".into(),
                vec!["analyze", ps, "--from", "a", "--to", "b", "--json"],
            ),
            (
                "analyze --from a --to b --jsonl".into(),
                vec!["analyze", ps, "--from", "a", "--to", "b", "--jsonl"],
            ),
        ];
        if !a.no_export {
            cmds.push((
                "export --perfetto out.pftrace".into(),
                vec!["export", ps, "--perfetto", outs, "--quiet"],
            ));
        }
        let mut rounds: Vec<Vec<Run>> = vec![Vec::new(); cmds.len()];
        for round in 0..a.repeat.max(1) {
            if a.repeat > 1 {
                eprintln!(
                    " round {} of {} (load average {}):",
                    round + 1,
                    a.repeat,
                    load()
                );
            }
            for ((what, args), runs) in cmds.iter().zip(&mut rounds) {
                let mut r = measure(&a.flinch, args, what, gb);
                if what.starts_with("export") {
                    r.output_mb =
                        std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0) as f64 / 1e6;
                    let _ = std::fs::remove_file(&out);
                }
                runs.push(r);
            }
        }
        runs.extend(rounds.into_iter().map(median_run));
    }
    let find = |what: &str, gb_idx: usize| {
        let gb = runs
            .iter()
            .map(|r| r.trace_gb)
            .fold(Vec::<f64>::new(), |mut v, g| {
                if !v.contains(&g) {
                    v.push(g);
                }
                v
            })[gb_idx];
        runs.iter()
            .find(|r| r.what == what && r.trace_gb == gb)
            .cloned()
    };
    println!("\n| command | trace | wall | CPU | peak memory | output |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for r in &runs {
        println!(
            "| `flinch {}` | {:.2} GB | {:.2} s | {:.2} s | {:.0} MB | {:.1} MB |",
            r.what, r.trace_gb, r.wall_s, r.cpu_s, r.peak_rss_mb, r.output_mb
        );
    }
    let mut ratios = serde_json::Map::new();
    if let (Some(l), Some(an)) = (find("labels", 0), find("analyze --from a --to b", 0)) {
        let x = an.wall_s / l.wall_s;
        let c = an.cpu_s / l.cpu_s;
        println!("\nanalyze / labels: wall {x:.2}, CPU {c:.2} (target ≤ 2)");
        ratios.insert("analyze_over_labels".into(), x.into());
        ratios.insert("analyze_over_labels_cpu".into(), c.into());
    }
    if let (Some(l), Some(an)) = (find("labels", 0), find("analyze --from a --to b --json", 0)) {
        let x = an.wall_s / l.wall_s;
        println!("analyze --json / labels (time): {x:.2}");
        ratios.insert("analyze_json_over_labels".into(), x.into());
    }
    if sizes.len() == 2 {
        for what in [
            "analyze --from a --to b --json",
            "analyze --from a --to b",
            "export --perfetto out.pftrace",
        ] {
            if let (Some(s), Some(b)) = (find(what, 0), find(what, 1)) {
                let x = b.peak_rss_mb / s.peak_rss_mb;
                println!("{what}: peak memory at 2× the trace / at 1×: {x:.3} (target ≤ 1.2)");
                ratios.insert(format!("{what}: rss 2x/1x"), x.into());
            }
        }
    }
    println!("load average at the end: {}", load());
    if let Some(p) = &a.json {
        let v = serde_json::json!({"cpus": cpus, "runs": runs, "ratios": ratios});
        let mut f = std::fs::File::create(p).expect("--json can be written");
        writeln!(
            f,
            "{}",
            serde_json::to_string_pretty(&v).unwrap_or_default()
        )
        .ok();
    }
}

/// One command's runs as one: the median wall and CPU time (each on its own), the largest
/// peak memory, the last output size and exit status that is not zero if any.
fn median_run(mut rs: Vec<Run>) -> Run {
    fn median(mut xs: Vec<f64>) -> f64 {
        xs.sort_by(f64::total_cmp);
        let n = xs.len();
        if n % 2 == 1 {
            xs[n / 2]
        } else {
            (xs[n / 2 - 1] + xs[n / 2]) / 2.0
        }
    }
    let wall_s = median(rs.iter().map(|r| r.wall_s).collect());
    let cpu_s = median(rs.iter().map(|r| r.cpu_s).collect());
    let peak_rss_mb = rs.iter().map(|r| r.peak_rss_mb).fold(0.0, f64::max);
    let status = rs.iter().map(|r| r.status).find(|&s| s != 0).unwrap_or(0);
    let mut r = rs.pop().expect("at least one run");
    r.wall_s = wall_s;
    r.cpu_s = cpu_s;
    r.peak_rss_mb = peak_rss_mb;
    r.status = status;
    r
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

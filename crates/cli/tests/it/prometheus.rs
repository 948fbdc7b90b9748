//! `flinch record --prometheus` and `--pushgateway` against the real servers: Debian's
//! `prometheus` (2.42, with `promtool`) and `prometheus-pushgateway`, started by this test on
//! free loopback ports with a config and data directory of its own. `.ci/run` installs them;
//! where they are missing the test fails and says how to install them (set
//! `FLINCH_SKIP_REAL_PROMETHEUS=1` to skip it knowingly; CI never does).
//!
//! The recording: the synthetic source (a known power schedule whose counter wraps about
//! every second) and a fake RAPL zone that a thread of this test advances at a known power,
//! wraps several times and resets once; marks sent into the recorder's FIFO, and spans
//! measured live. Prometheus scrapes the endpoint; its HTTP API must then show the exact
//! energies, the counters never decreasing, the span histograms equal to `flinch analyze`
//! on the trace recorded at the same time, and the Pushgateway the same final values.

use crate::common::flinch;
use flinch_core::counter::CounterTracker;
use flinch_core::trace::read_trace;
use flinch_rapl::testing::FakePowercap;
use flinch_record::synthetic::{SyntheticConfig, SyntheticSource};
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const SKIP_ENV: &str = "FLINCH_SKIP_REAL_PROMETHEUS";

/// The path of a server binary, or `None` when the test is knowingly skipped; panics with
/// the way to install it otherwise.
fn require(bin: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(bin))
            .find(|p| p.is_file())
    });
    match found {
        Some(p) => Some(p),
        None if std::env::var_os(SKIP_ENV).is_some_and(|v| v == "1") => {
            eprintln!("SKIPPED: {bin} is not installed and {SKIP_ENV}=1");
            None
        }
        None => panic!(
            "{bin} is not installed: this test runs the real Prometheus and Pushgateway. \
             Install them with `apt-get install prometheus prometheus-pushgateway` (.ci/run \
             does), or set {SKIP_ENV}=1 to skip this test knowingly"
        ),
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A server process, killed when dropped.
struct Server {
    child: Child,
    name: &'static str,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into()
}

fn get(url: &str) -> Option<(u16, String)> {
    let mut r = agent().get(url).call().ok()?;
    let status = r.status().as_u16();
    let body = r.body_mut().read_to_string().ok()?;
    Some((status, body))
}

fn wait_ready(s: &mut Server, url: &str) {
    let end = Instant::now() + Duration::from_secs(60);
    while Instant::now() < end {
        if let Some((200, _)) = get(url) {
            return;
        }
        if let Ok(Some(st)) = s.child.try_wait() {
            panic!(
                "{} exited with {st} before it was ready:\n{}",
                s.name,
                s.log()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{} not ready at {url} after 60 s:\n{}", s.name, s.log());
}

fn start(name: &'static str, bin: &Path, args: &[String], dir: &Path, ready: &str) -> Server {
    let log = dir.join(format!("{name}.log"));
    let f = std::fs::File::create(&log).unwrap();
    let child = Command::new(bin)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let mut s = Server { child, name, log };
    wait_ready(&mut s, ready);
    s
}

/// `/api/v1/query` for `expr`: the first series' value, or, for a range selector, its last
/// raw sample (staleness markers, written once flinch has exited, are not in a range), with
/// its timestamp.
fn query(prom: u16, expr: &str) -> Option<(f64, f64)> {
    let mut r = agent()
        .get(format!("http://127.0.0.1:{prom}/api/v1/query"))
        .query("query", expr)
        .call()
        .ok()?;
    let body = r.body_mut().read_to_string().ok()?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    assert_eq!(v["status"], "success", "{expr}: {body}");
    let first = v["data"]["result"].as_array()?.first()?.clone();
    let pair = match first.get("values") {
        Some(vals) => vals.as_array()?.last()?.as_array()?.clone(),
        None => first["value"].as_array()?.clone(),
    };
    let t = pair[0].as_f64()?;
    let x: f64 = pair[1].as_str()?.parse().ok()?;
    Some((t, x))
}

/// The latest value Prometheus holds for a selector (or expression over ranges).
fn must(prom: u16, expr: &str) -> f64 {
    let e = if expr.ends_with('}') || expr.starts_with("flinch_") && !expr.contains('(') {
        format!("{expr}[10m]")
    } else {
        expr.to_owned()
    };
    query(prom, &e)
        .unwrap_or_else(|| panic!("Prometheus has no value for {e}"))
        .1
}

/// The value of the sample line `name{...}` holding every `k="v"` in `labels`, in a text
/// exposition.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-9)
}

#[test]
fn prometheus_and_pushgateway_see_the_exact_energies_and_the_spans_analyze_sees() {
    let Some(prometheus) = require("prometheus") else {
        return;
    };
    let Some(promtool) = require("promtool") else {
        return;
    };
    let Some(pushgateway) = require("prometheus-pushgateway") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // The Pushgateway, and Prometheus scraping flinch's endpoint every 250 ms.
    let (flinch_port, prom_port, push_port) = (free_port(), free_port(), free_port());
    let _pushgw = start(
        "pushgateway",
        &pushgateway,
        &[format!("--web.listen-address=127.0.0.1:{push_port}")],
        d,
        &format!("http://127.0.0.1:{push_port}/-/ready"),
    );
    std::fs::write(
        d.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 250ms\n  scrape_timeout: 200ms\n\
             scrape_configs:\n  - job_name: flinch\n    static_configs:\n      \
             - targets: ['127.0.0.1:{flinch_port}']\n"
        ),
    )
    .unwrap();
    let prom = start(
        "prometheus",
        &prometheus,
        &[
            format!("--config.file={}", d.join("prometheus.yml").display()),
            format!("--storage.tsdb.path={}", d.join("data").display()),
            format!("--web.listen-address=127.0.0.1:{prom_port}"),
        ],
        d,
        &format!("http://127.0.0.1:{prom_port}/-/ready"),
    );

    // An idle profile of the synthetic device at its low step (for active energy).
    // Wrapping at 100 J: a poll at the default 100-ms cadence gathers up to 24 J at 240 W,
    // and a wrapped step of more than half the range is taken for a reset (flinch_core::
    // counter); at 50 J one poll delayed by 5 ms on a loaded machine lost a step.
    let schedule = "60W/300ms,240W/200ms;wrap=100J;class=gpu";
    let idle = d.join("idle.json");
    let o = flinch()
        .args([
            "calibrate",
            "--quiet",
            "--source",
            "synthetic",
            "--seconds",
            "1",
        ])
        .args(["--synthetic", "60W;class=gpu", "--allow-busy", "--out"])
        .arg(&idle)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // A RAPL zone wrapping every 2 s at 100 W, reset once after ~4 s.
    let mut fake = FakePowercap::new().unwrap();
    let range_uj: u64 = 200_000_000;
    fake.add_zone("intel-rapl:0", "package-0", range_uj)
        .unwrap();
    let fake = Arc::new(fake);
    let stop = Arc::new(AtomicBool::new(false));
    let rapl_power_w = 100.0;
    let rapl = {
        let (fake, stop) = (fake.clone(), stop.clone());
        std::thread::spawn(move || {
            let t0 = Instant::now();
            let mut base = Duration::ZERO;
            let mut did_reset = false;
            while !stop.load(Ordering::Relaxed) {
                let el = t0.elapsed() - base;
                let total_uj = (el.as_secs_f64() * rapl_power_w * 1e6) as u64;
                let shown = total_uj % (range_uj + 1);
                // Reset when the counter shows 10-60 J: going back to 0 is then no
                // plausible wrap (it would be a step of 140 J or more, over half the range).
                if !did_reset
                    && t0.elapsed() > Duration::from_secs(4)
                    && (10_000_000..60_000_000).contains(&shown)
                {
                    base = t0.elapsed();
                    did_reset = true;
                    fake.set_energy("intel-rapl:0", 0).unwrap();
                } else {
                    fake.set_energy("intel-rapl:0", shown).unwrap();
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            did_reset
        })
    };

    let trace = d.join("run.flinch.csv");
    let fifo = d.join("marks.fifo");
    let rec = flinch()
        .args([
            "record",
            "--quiet",
            "--source",
            "synthetic",
            "--source",
            "rapl",
        ])
        .args(["--synthetic", schedule, "--rapl-root"])
        .arg(fake.root())
        .arg("--marks-fifo")
        .arg(&fifo)
        .arg("--out")
        .arg(&trace)
        .arg("--idle")
        .arg(&idle)
        .args(["--duration", "9s", "--prometheus-linger", "10s"])
        .arg("--prometheus")
        .arg(format!("127.0.0.1:{flinch_port}"))
        .args(["--span", "infer_start..first_token", "--pushgateway"])
        .arg(format!("http://127.0.0.1:{push_port}"))
        .args(["--job", "flinch-ci", "--push-interval", "1s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // Marks: overlapping requests (two in flight), paired by req.
    let end = Instant::now() + Duration::from_secs(20);
    while !fifo.exists() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(fifo.exists(), "the recorder did not create its FIFO");
    std::thread::sleep(Duration::from_millis(500));
    let mut w = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    let mut send = |label: &str, req: u32| {
        let line = format!(
            "{label} t={} req={req}\n",
            flinch_core::clock::monotonic_ns()
        );
        w.write_all(line.as_bytes()).unwrap();
    };
    let mut sent_spans = 0;
    let mut promtool_checked = false;
    for i in 0..14u32 {
        send("infer_start", 2 * i);
        std::thread::sleep(Duration::from_millis(90));
        send("infer_start", 2 * i + 1);
        std::thread::sleep(Duration::from_millis(140 + 20 * (i % 5) as u64));
        send("first_token", 2 * i);
        std::thread::sleep(Duration::from_millis(60));
        send("first_token", 2 * i + 1);
        sent_spans += 2;
        std::thread::sleep(Duration::from_millis(150));
        if i == 10 {
            // `promtool check metrics` on a scrape taken while spans are being measured.
            let (st, body) = get(&format!("http://127.0.0.1:{flinch_port}/metrics"))
                .expect("flinch's endpoint answers");
            assert_eq!(st, 200);
            assert!(
                sample(
                    &body,
                    "flinch_span_duration_seconds_count",
                    &[("span", "infer_start..first_token")]
                )
                .is_some_and(|n| n > 0.0),
                "spans are measured live, during the recording:\n{body}"
            );
            let mut pt = Command::new(&promtool)
                .args(["check", "metrics"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            pt.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
            let o = pt.wait_with_output().unwrap();
            assert!(
                o.status.success(),
                "promtool check metrics: {}{}\n{body}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            promtool_checked = true;
        }
    }
    drop(w);
    let out = rec.wait_with_output().unwrap();
    stop.store(true, Ordering::Relaxed);
    let did_reset = rapl.join().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "flinch record failed: {err}");
    // (The idle profile covers only the synthetic device: a warning says so for RAPL.)
    assert!(!err.contains("push to"), "every push succeeded: {err}");
    assert!(!err.contains("not scraped"), "{err}");
    assert!(did_reset, "the fake RAPL counter was reset once");
    assert!(promtool_checked);

    // The trace and what analyze says about it.
    let t = read_trace(&trace).unwrap();
    let foot = t.footer.as_ref().expect("a complete trace");
    let an = flinch()
        .args([
            "analyze",
            "--json",
            "--quiet",
            "--from",
            "infer_start",
            "--to",
            "first_token",
        ])
        .arg(&trace)
        .output()
        .unwrap();
    assert!(
        an.status.success(),
        "{}",
        String::from_utf8_lossy(&an.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&an.stdout).unwrap();
    let count = report["summary"]["count"].as_u64().unwrap();
    assert_eq!(count, sent_spans, "analyze pairs every span sent");
    let dur_sum: f64 = report["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["duration_s"].as_f64().unwrap())
        .sum();
    // A histogram's _sum adds every span: analyze's `sum_of_spans` (its `total` counts the
    // time of overlapping spans once).
    let active_sum = report["summary"]["active_energy_j"]["synthetic"]["sum_of_spans"]
        .as_f64()
        .expect("analyze has the synthetic device's active energy");
    let energy_sum = report["summary"]["energy_j"]["synthetic"]["sum_of_spans"]
        .as_f64()
        .unwrap();

    // Wait for the scrape after the end (the linger): its timestamp is past the end anchor.
    let end_s = foot.end_anchor.real_ns as f64 / 1e9;
    let series = "flinch_energy_joules_total{channel=\"synthetic.energy\"}";
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if query(prom_port, &format!("{series}[10m]")).is_some_and(|(ts, _)| ts > end_s) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never scraped after the recording ended:\n{}",
            prom.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // 1. Energy: the synthetic counter's total equals the exact integral of the schedule
    //    between its first and last reading (many wraps), and the RAPL zone's the energy
    //    written between its first and last reading, less what the reset hid.
    let syn = t.channel("synthetic.energy").unwrap();
    let cfg: SyntheticConfig = schedule.parse().unwrap();
    let origin: u64 = t.header.sources[0].attributes["origin_ns"].parse().unwrap();
    let src = SyntheticSource::with_origin(cfg, origin);
    let exact = src.energy_at(*syn.t_ns.last().unwrap()).0 - src.energy_at(syn.t_ns[0]).0;
    assert!(exact > 100.0 * 8.0, "several wraps of 100 J: {exact} J");
    // flinch leaves once a scrape after its end has been answered, but Prometheus may still
    // be storing that scrape when the query comes, and a scrape that began after the end
    // anchor, while the last readings were being written, holds the values before them:
    // the final value is asked for until it is there (or 10 s have passed).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = must(prom_port, series);
    while rel(got, exact) > 0.01 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        got = must(prom_port, series);
    }
    assert!(
        rel(got, exact) <= 0.01,
        "synthetic energy: Prometheus {got} J, exact {exact} J"
    );
    let rapl_name = &t
        .channels
        .iter()
        .find(|c| c.source.starts_with("rapl") || c.spec.device.starts_with("package"))
        .expect("a RAPL channel")
        .spec
        .name
        .clone();
    let rapl_ch = t.channel(rapl_name).unwrap();
    let span_s = (rapl_ch.t_ns.last().unwrap() - rapl_ch.t_ns[0]) as f64 / 1e9;
    let rapl_exact = rapl_power_w * span_s;
    assert!(rapl_exact > 200.0 * 4.0, "several wraps of 200 J");
    let rapl_series = format!("flinch_energy_joules_total{{channel=\"{rapl_name}\"}}");
    let rapl_got = must(prom_port, &rapl_series);
    // The reset hides what was written between the readings around it: 10 ms at the
    // recording's pace, longer when a loaded machine delays a poll.
    let reset_gap_s = rapl_ch
        .t_ns
        .windows(2)
        .zip(rapl_ch.values.windows(2))
        .filter(|(_, v)| v[1] < v[0] && v[0] - v[1] < 150.0)
        .map(|(t, _)| (t[1] - t[0]) as f64 / 1e9)
        .fold(0.0, f64::max);
    let hidden_max = rapl_power_w * reset_gap_s;
    assert!(
        rapl_got <= rapl_exact * 1.01 && rapl_got >= (rapl_exact - hidden_max) * 0.99,
        "RAPL energy: Prometheus {rapl_got} J, written {rapl_exact} J over {span_s} s, \
         of which the reset hid up to {hidden_max} J"
    );
    // The same arithmetic as the trace (one CounterTracker), so nothing is counted twice.
    let mut tr = CounterTracker::new(
        *rapl_ch.spec.counter_spec().unwrap(),
        rapl_ch.spec.update_period_ns,
    );
    for (&tt, &v) in rapl_ch.t_ns.iter().zip(&rapl_ch.values) {
        tr.update(tt, v);
    }
    assert_eq!(tr.resets(), 1, "the trace shows the one reset");
    assert!(
        rel(rapl_got, tr.total()) < 1e-9,
        "{rapl_got} vs {}",
        tr.total()
    );
    assert_eq!(
        must(
            prom_port,
            &format!("flinch_channel_resets_total{{channel=\"{rapl_name}\"}}")
        ),
        1.0
    );
    // Never decreasing, across the wraps and the reset: Prometheus saw no counter reset.
    for s in [series, rapl_series.as_str()] {
        assert_eq!(must(prom_port, &format!("resets({s}[10m])")), 0.0, "{s}");
    }

    // 2. Spans: the histogram's count equals analyze's, its sums within 1 %.
    let span = "span=\"infer_start..first_token\"";
    let n = must(
        prom_port,
        &format!("flinch_span_duration_seconds_count{{{span}}}"),
    );
    assert_eq!(n as u64, count, "span count");
    let s = must(
        prom_port,
        &format!("flinch_span_duration_seconds_sum{{{span}}}"),
    );
    assert!(
        rel(s, dur_sum) <= 0.01,
        "durations: {s} vs analyze {dur_sum}"
    );
    let ae = must(
        prom_port,
        &format!("flinch_span_active_energy_joules_sum{{{span},device=\"synthetic\"}}"),
    );
    assert!(
        rel(ae, active_sum) <= 0.01,
        "active energy: {ae} J vs analyze {active_sum} J"
    );
    let en = must(
        prom_port,
        &format!("flinch_span_energy_joules_sum{{{span},device=\"synthetic\"}}"),
    );
    assert!(
        rel(en, energy_sum) <= 0.01,
        "energy: {en} J vs analyze {energy_sum} J"
    );
    let verdicts = must(
        prom_port,
        &format!("sum(last_over_time(flinch_spans_total{{{span}}}[10m]))"),
    );
    assert_eq!(verdicts as u64, count);
    assert_eq!(
        must(prom_port, "flinch_marks_total{label=\"infer_start\"}") as u64,
        count
    );

    eprintln!(
        "energy: synthetic {got:.3} J (exact {exact:.3}), RAPL {rapl_got:.3} J (written \
         {rapl_exact:.3}); spans {n} (analyze {count}), durations {s:.4} s ({dur_sum:.4}), \
         active energy {ae:.4} J ({active_sum:.4}), energy {en:.4} J ({energy_sum:.4})"
    );

    // 3. The Pushgateway holds the final values, grouped by job and instance.
    let (st, pushed) = get(&format!("http://127.0.0.1:{push_port}/metrics")).unwrap();
    assert_eq!(st, 200);
    let job = [("job", "flinch-ci")];
    let pushed_energy = sample(
        &pushed,
        "flinch_energy_joules_total",
        &[job[0], ("channel", "synthetic.energy")],
    )
    .unwrap_or_else(|| panic!("no pushed energy:\n{pushed}"));
    assert!(
        rel(pushed_energy, got) < 1e-9,
        "pushed {pushed_energy} J, scraped {got} J"
    );
    let pushed_n = sample(
        &pushed,
        "flinch_span_duration_seconds_count",
        &[job[0], ("span", "infer_start..first_token")],
    )
    .unwrap();
    assert_eq!(pushed_n as u64, count);
    let pushed_sum = sample(
        &pushed,
        "flinch_span_active_energy_joules_sum",
        &[
            job[0],
            ("span", "infer_start..first_token"),
            ("device", "synthetic"),
        ],
    )
    .unwrap();
    assert!(rel(pushed_sum, active_sum) <= 0.01);
    assert!(
        sample(&pushed, "push_time_seconds", &job).is_some(),
        "the Pushgateway stamped the push"
    );
}

//! The live-metrics endpoint under hostile clients: what a slowloris, 1000 parallel
//! connections, scrape flooders and 8 MiB request heads do to sampling and marks.
//!
//! Two recordings of the synthetic source at 10 ms with `--prometheus` on, one left alone
//! and one under abuse (the same length, the same process), each taking a mark every
//! 10 ms through the FIFO. For each: the sampler's deviation from schedule (p50, p99,
//! max: the footer's), missed ticks, dropped readings, and the mark latency from the
//! client's write to the writer having written it (p50, p99, max), and the endpoint's
//! threads and memory. Figures: docs/reliability.md.
use flinch_core::clock::{Clock, MonotonicClock};
use flinch_core::marks::client::MarkClient;
use flinch_prometheus::testing::{Abuse, AbuseConfig, rss_kib, scrape, thread_count};
use flinch_prometheus::{Exporter, ExporterConfig, ServerConfig};
use flinch_record::recorder::{Recorder, RecorderConfig, RecordingSetup};
use flinch_record::synthetic::{SyntheticConfig, SyntheticSource};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

fn q(xs: &mut [u64], p: f64) -> f64 {
    xs.sort_unstable();
    let i = ((xs.len() as f64 - 1.0) * p).round() as usize;
    xs.get(i).copied().unwrap_or(0) as f64 / 1e3
}

fn phase(abuse: bool, secs: u64) {
    let dir = tempfile::tempdir().unwrap();
    let clock: Arc<dyn Clock> = Arc::new(MonotonicClock);
    let exporter = Exporter::new(ExporterConfig {
        spans: vec!["a..b".parse().unwrap()],
        ..Default::default()
    });
    let server = exporter
        .serve("127.0.0.1:0", ServerConfig::default())
        .unwrap();
    let src = SyntheticSource::new(SyntheticConfig::default(), clock.as_ref());
    let fifo = dir.path().join("marks.fifo");
    let mut setup = RecordingSetup::new(dir.path().join("t.flinch.csv"), vec![Box::new(src)]);
    setup.marks_fifo = Some(fifo.clone());
    setup.observers.push(exporter.observer());
    let rec = Recorder::start(setup, RecorderConfig::default(), clock.clone()).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let (threads0, rss0) = (thread_count(), rss_kib().unwrap_or(0));
    let hostile = abuse.then(|| Abuse::start(server.local_addr(), &AbuseConfig::default()));
    let mut client = MarkClient::open(&fifo).unwrap();
    let mut lat = Vec::new();
    let (mut threads, mut rss) = (threads0, rss0);
    let end = Instant::now() + Duration::from_secs(secs);
    let mut i = 0u64;
    while Instant::now() < end {
        let before = rec.stats().marks.load(Ordering::Relaxed);
        let t = clock.now_ns();
        let label = if i.is_multiple_of(2) { "a" } else { "b" };
        client
            .mark(label, &[("req", &(i / 2).to_string())])
            .unwrap();
        while rec.stats().marks.load(Ordering::Relaxed) == before {
            std::thread::sleep(Duration::from_micros(20));
        }
        lat.push(clock.now_ns() - t);
        i += 1;
        threads = threads.max(thread_count());
        rss = rss.max(rss_kib().unwrap_or(0));
        std::thread::sleep(Duration::from_millis(10));
    }
    let stats = hostile.map(Abuse::stop);
    let footer = rec.stop("stopped", None).unwrap();
    let c = &footer.cadences[0];
    let legit = scrape(server.local_addr(), Duration::from_secs(5));
    println!(
        "{:<8} deviation p50 {:>6.1} us p99 {:>7.1} us max {:>8.1} us, missed {} of {} ticks, dropped {}; \
         mark latency p50 {:>6.1} us p99 {:>7.1} us max {:>8.1} us ({} marks); threads {} -> {}, RSS {} -> {} KiB; scrape after: {:?}",
        if abuse { "abused" } else { "quiet" },
        c.deviation_p50_ns as f64 / 1e3,
        c.deviation_p99_ns as f64 / 1e3,
        c.deviation_max_ns as f64 / 1e3,
        c.missed_ticks,
        c.ticks,
        footer.dropped_readings,
        q(&mut lat, 0.5),
        q(&mut lat, 0.99),
        q(&mut lat, 1.0),
        lat.len(),
        threads0,
        threads,
        rss0,
        rss,
        legit
    );
    if let Some(s) = stats {
        println!("         hostile clients: {s:?}");
        let text = exporter.encode_text();
        let rej = text
            .lines()
            .find(|l| l.starts_with("flinch_exporter_rejected_connections_total"))
            .unwrap_or("");
        println!("         {rej}");
    }
}

fn main() {
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    if cfg!(debug_assertions) {
        println!("WARNING: a debug build; build with --release");
    }
    println!(
        "{} CPUs, {} s per phase, synthetic at 10 ms, a mark every ~10 ms through the FIFO",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        secs
    );
    for abuse in [false, true, false, true] {
        phase(abuse, secs);
    }
}

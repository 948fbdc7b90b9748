//! The endpoint under hostile clients: bounded threads and memory, nothing lost from the
//! recording, and the endpoint back once the abuse stops. (How much the schedule and the
//! marks' latency move is measured by the `exporter_abuse` bench: docs/reliability.md.)

use crate::common::{record, sample};
use flinch_core::marks::client::{MarkClient, SendOutcome};
use flinch_prometheus::testing::{Abuse, AbuseConfig, rss_kib, scrape, thread_count};
use flinch_prometheus::{Exporter, ExporterConfig, ServerConfig};
use std::time::{Duration, Instant};

/// Set in the process that runs the abuse (see below).
const ALONE: &str = "FLINCH_ABUSE_TEST_ALONE";

/// The threads and memory measured are the whole test process's, so the abuse runs in a
/// process of its own: this binary again, running only this test, where the other tests
/// (a recording of another test holds ~100 MB) cannot add theirs.
#[test]
fn slowloris_floods_and_huge_requests_cost_bounded_threads_and_memory_and_lose_nothing() {
    if std::env::var_os(ALONE).is_some() {
        return abuse_alone();
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "abuse::slowloris_floods_and_huge_requests_cost_bounded_threads_and_memory_and_lose_nothing",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ALONE, "1")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "the abuse, in a process of its own:\n{text}"
    );
    assert!(text.contains("1 passed"), "the abuse ran:\n{text}");
}

fn abuse_alone() {
    let dir = tempfile::tempdir().unwrap();
    let exporter = Exporter::new(ExporterConfig {
        spans: vec!["a..b".parse().unwrap()],
        ..Default::default()
    });
    let server = exporter
        .serve(
            "127.0.0.1:0",
            ServerConfig {
                header_timeout: Duration::from_secs(1),
                connection_timeout: Duration::from_secs(3),
                ..Default::default()
            },
        )
        .unwrap();
    let addr = server.local_addr();
    let out = dir.path().join("t.flinch.csv");
    let fifo = dir.path().join("marks.fifo");
    let rec = record(
        "50W/100ms,150W/100ms;wrap=30J",
        &out,
        Some(&fifo),
        None,
        &exporter,
    );
    assert_eq!(scrape(addr, Duration::from_secs(5)), Some(200));
    std::thread::sleep(Duration::from_millis(300));
    let threads_before = thread_count();
    let rss_before = rss_kib().unwrap();

    let abuse = Abuse::start(addr, &AbuseConfig::default());
    let mut client = MarkClient::open(&fifo).unwrap();
    let mut sent = 0;
    let mut max_threads = 0;
    let mut max_rss = 0;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(4) {
        let req = sent.to_string();
        for l in ["a", "b"] {
            assert_eq!(client.mark(l, &[("req", &req)]).unwrap(), SendOutcome::Sent);
        }
        sent += 1;
        max_threads = max_threads.max(thread_count());
        max_rss = max_rss.max(rss_kib().unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
    let stats = abuse.stop();
    // The endpoint comes back (within the header timeout) once the abuse stops.
    let back = Instant::now();
    let mut ok = false;
    while back.elapsed() < Duration::from_secs(5) && !ok {
        ok = scrape(addr, Duration::from_secs(2)) == Some(200);
    }
    assert!(ok, "the endpoint answers again after the abuse");
    std::thread::sleep(Duration::from_millis(1200));
    let foot = rec.stop("stopped", None).unwrap();
    let text = exporter.encode_text();
    eprintln!(
        "abuse: {stats:?}; threads {threads_before} -> max {max_threads}; RSS {rss_before} -> max {max_rss} KiB"
    );

    // The hostile clients were there, and the bounds engaged.
    assert!(stats.connections > 1000, "{stats:?}");
    assert!(
        stats.closed_by_server > 0,
        "idle and slow heads are closed: {stats:?}"
    );
    assert!(
        stats.huge_refused > 0,
        "a huge head is refused, not buffered: {stats:?}"
    );
    let rejected = sample(&text, "flinch_exporter_rejected_connections_total", &[]).unwrap();
    assert!(
        rejected > 0.0,
        "past the connection limit, connections are closed at once"
    );
    // Threads: the abusers' own (7) and nothing per connection on the server side.
    assert!(
        max_threads <= threads_before + 8,
        "threads {threads_before} -> {max_threads}"
    );
    // Memory: the abusers' 8 MiB request and sockets, and the server's bounded buffers.
    assert!(
        max_rss < rss_before + 48 * 1024,
        "RSS {rss_before} -> {max_rss} KiB"
    );
    // Nothing lost: every mark, every reading, every span.
    assert_eq!(foot.marks, 2 * sent);
    assert_eq!(foot.dropped_readings, 0);
    assert_eq!(
        sample(
            &text,
            "flinch_span_duration_seconds_count",
            &[("span", "a..b")]
        ),
        Some(sent as f64)
    );
}

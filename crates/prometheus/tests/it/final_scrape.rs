//! The scrape a recorder waits for at its end (`--prometheus-linger`) carries the final
//! values, even when it comes while an encoding from before is still kept for reuse, and
//! reaches the scraper whole although the endpoint stops as soon as it is counted.

use crate::common::{record, sample};
use flinch_prometheus::{Exporter, ExporterConfig, ServerConfig};
use std::time::Duration;

fn get(url: &str) -> Option<String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    agent.get(url).call().ok()?.body_mut().read_to_string().ok()
}

#[test]
fn the_final_scrape_has_the_final_values_and_arrives_whole() {
    let dir = tempfile::tempdir().unwrap();
    let exporter = Exporter::new(ExporterConfig::default());
    // An encoding kept for a minute: without the final scrape's own, it would be served.
    let server = exporter
        .serve(
            "127.0.0.1:0",
            ServerConfig {
                cache: Duration::from_secs(60),
                ..Default::default()
            },
        )
        .unwrap();
    let url = format!("http://{}/metrics", server.local_addr());
    let energy = |body: &str| {
        sample(
            body,
            "flinch_energy_joules_total",
            &[("channel", "synthetic.energy")],
        )
    };
    let out = dir.path().join("t.flinch.csv");
    let rec = record("100W;wrap=1000J", &out, None, None, &exporter);
    std::thread::sleep(Duration::from_millis(300));
    let during = energy(&get(&url).expect("a scrape while recording")).expect("the energy series");
    std::thread::sleep(Duration::from_millis(400));
    rec.stop("stopped", None).unwrap();
    let last = energy(&exporter.encode_text()).unwrap();
    assert!(
        last > during + 10.0,
        "the recording went on after the first scrape: {during} J, then {last} J"
    );

    let client = std::thread::spawn({
        let url = url.clone();
        move || {
            // After the recorder has begun to wait (it counts scrapes from then on).
            std::thread::sleep(Duration::from_millis(100));
            get(&url)
        }
    });
    assert!(
        server.wait_for_final_scrape(Duration::from_secs(10)),
        "the scrape after the end is seen"
    );
    server.stop();
    let body = client
        .join()
        .unwrap()
        .expect("the final scrape is answered whole although the endpoint stopped");
    assert_eq!(
        energy(&body),
        Some(last),
        "the final scrape has the final energy"
    );
}

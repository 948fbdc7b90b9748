//! Observers on a real recording: what they see against what the trace holds, and the
//! writer coming back when an observer asks (`Observer::next_wake_ns`).

use flinch_core::clock::{MonotonicClock, monotonic_ns};
use flinch_core::marks::Mark;
use flinch_core::testing::ScriptedSource;
use flinch_core::trace::{Footer, Header, RowKind, Trace, read_trace};
use flinch_core::{ChannelSpec, ErrorKind, Quantity, SourceError};
use flinch_record::observe::{LiveThread, Observed, Observer};
use flinch_record::recorder::{Recorder, RecorderConfig, RecordingSetup};
use flinch_record::synthetic::{SyntheticConfig, SyntheticSource};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a test observer saw, shared with the test.
#[derive(Default)]
struct Seen {
    header_channels: usize,
    readings: Vec<(u32, u64, f64)>,
    /// How long after its stamp each reading reached the observer.
    lag_ns: Vec<u64>,
    marks: Vec<String>,
    gaps: Vec<(String, bool)>,
    footer_samples: Option<u64>,
    /// Times the writer asked `next_wake_ns`.
    asked: u64,
}

struct TestObserver {
    seen: Arc<Mutex<Seen>>,
    /// Asks the writer back this often (None: never).
    every_ns: Option<u64>,
    /// Panics in `next_wake_ns` the n-th time it is asked.
    panic_at: Option<u64>,
}

impl Observer for TestObserver {
    fn start(&mut self, header: &Header, _threads: &[Arc<LiveThread>]) {
        self.seen.lock().unwrap().header_channels =
            header.sources.iter().map(|s| s.channels.len()).sum();
    }
    fn readings(&mut self, batch: &[Observed]) {
        let now = monotonic_ns();
        let mut s = self.seen.lock().unwrap();
        for o in batch {
            let r = o.reading;
            s.readings.push((r.channel, r.t_ns, r.value));
            s.lag_ns.push(now.saturating_sub(r.t_ns));
        }
    }
    fn mark(&mut self, m: &Mark) {
        self.seen.lock().unwrap().marks.push(m.label.clone());
    }
    fn gap(&mut self, _t_ns: u64, source: &str, reason: Option<&str>) {
        self.seen
            .lock()
            .unwrap()
            .gaps
            .push((source.to_owned(), reason.is_some()));
    }
    fn next_wake_ns(&mut self, now_ns: u64) -> Option<u64> {
        let n = {
            let mut s = self.seen.lock().unwrap();
            s.asked += 1;
            s.asked
        };
        if self.panic_at == Some(n) {
            panic!("asked {n} times");
        }
        self.every_ns.map(|e| now_ns + e)
    }
    fn finish(&mut self, footer: &Footer) {
        self.seen.lock().unwrap().footer_samples = Some(footer.samples);
    }
}

fn observed_recording(every_ns: Option<u64>, panic_at: Option<u64>) -> (Seen, Trace) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run.csv");
    let seen = Arc::new(Mutex::new(Seen::default()));
    let flaky = ScriptedSource::new(
        "flaky",
        vec![ChannelSpec::gauge("flaky", "util", Quantity::Utilization)],
    )
    .then(vec![(0, 0, 1.0)])
    .then_fail(SourceError::new(ErrorKind::Transient, "scripted", "boom"))
    .then(vec![(0, 0, 2.0)]);
    let synthetic = SyntheticSource::new(
        "50W/100ms,150W/100ms".parse::<SyntheticConfig>().unwrap(),
        &MonotonicClock,
    );
    let mut setup = RecordingSetup::new(out.clone(), vec![Box::new(synthetic), Box::new(flaky)]);
    setup.observers.push(Box::new(TestObserver {
        seen: seen.clone(),
        every_ns,
        panic_at,
    }));
    let config = RecorderConfig {
        flush_interval: Duration::from_secs(1),
        ..Default::default()
    };
    let rec = Recorder::start(setup, config, Arc::new(MonotonicClock)).unwrap();
    std::thread::sleep(Duration::from_millis(150));
    rec.mark_sender().mark("half", &[]).unwrap();
    std::thread::sleep(Duration::from_millis(600));
    rec.stop("stopped", None).unwrap();
    let t = read_trace(&out).unwrap();
    let s = std::mem::take(&mut *seen.lock().unwrap());
    (s, t)
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

#[test]
fn an_observer_sees_every_reading_mark_and_gap_the_trace_holds() {
    let (seen, t) = observed_recording(None, None);
    assert_eq!(seen.header_channels, t.channels.len());
    assert_eq!(seen.marks, ["half"]);
    assert_eq!(t.channel("flaky.util").unwrap().values, [1.0, 2.0]);
    // Every sample of the file, and nothing else (no channel here elides repeats), in the
    // channel numbering of the header.
    let mut from_file: Vec<(u32, u64, f64)> = t
        .channels
        .iter()
        .enumerate()
        .flat_map(|(i, c)| {
            c.t_ns
                .iter()
                .zip(&c.values)
                .map(move |(&ts, &v)| (i as u32, ts, v))
        })
        .collect();
    let mut observed = seen.readings.clone();
    from_file.sort_by(|a, b| a.partial_cmp(b).unwrap());
    observed.sort_by(|a, b| a.partial_cmp(b).unwrap());
    assert!(from_file.len() > 30, "{} samples", from_file.len());
    assert_eq!(observed, from_file);
    assert_eq!(seen.footer_samples, Some(from_file.len() as u64));
    assert_eq!(
        seen.gaps,
        [("flaky".to_owned(), true), ("flaky".to_owned(), false)],
        "the failing poll is a gap that starts and ends"
    );
    assert_eq!(t.gaps.len(), 1);
    // Asked before every sleep, though it never wants anything.
    assert!(seen.asked >= 2, "asked {} times", seen.asked);
}

#[test]
fn an_observer_that_asks_gets_readings_long_before_the_flush_is_due() {
    // Without asking, readings wait for the 1-s flush (or a mark); asking every 5 ms, they
    // come within a few tens of ms. Compared as a ratio of medians in the same run.
    let (lazy, _) = observed_recording(None, None);
    let (eager, t) = observed_recording(Some(5_000_000), None);
    let (l, e) = (median(lazy.lag_ns), median(eager.lag_ns));
    assert!(
        e * 5 < l,
        "median lag asking every 5 ms {:.1} ms vs not asking {:.1} ms",
        e as f64 / 1e6,
        l as f64 / 1e6
    );
    assert!(
        eager.asked > 4 * lazy.asked,
        "the writer came back {} times asked, {} times not",
        eager.asked,
        lazy.asked
    );
    // Early passes change nothing in the file.
    assert_eq!(eager.footer_samples, t.footer.as_ref().map(|f| f.samples));
    assert!(t.events.iter().all(|e| e.label != "observer_panicked"));
}

#[test]
fn an_observer_that_panics_when_asked_is_dropped_and_the_recording_goes_on() {
    let (seen, t) = observed_recording(Some(5_000_000), Some(3));
    let panicked: Vec<_> = t
        .events
        .iter()
        .filter(|e| e.kind == RowKind::Event && e.label == "observer_panicked")
        .collect();
    assert_eq!(panicked.len(), 1, "{:?}", t.events);
    assert!(
        panicked[0].text.contains("asked 3 times"),
        "{}",
        panicked[0].text
    );
    assert_eq!(seen.asked, 3, "not asked again once dropped");
    assert_eq!(seen.footer_samples, None, "a dropped observer sees no end");
    assert_eq!(t.marks.len(), 1);
    assert!(t.footer.as_ref().is_some_and(|f| f.samples > 30));
}

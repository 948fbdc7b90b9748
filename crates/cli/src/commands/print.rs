//! `flinch record --print INTERVAL`: one summary row per interval and device on standard
//! output while recording, the way `nvidia-smi --format=csv -lms` and `perf stat -I` print.
//!
//! The printer is an observer of the recording ([`flinch_record::observe`]). Each interval
//! is a span between two consecutive boundary marks, measured by the same live measurement
//! as `--span` ([`flinch_analysis::live`]), so a row says what `flinch analyze` would say of
//! that stretch of the trace: each device's mean power and energy from its preferred
//! channel, and the mean of its activity channels. A row is printed once every answering
//! channel has data past the interval's end (the NVML driver buffer arrives up to ~0.5 s
//! late), so rows trail real time by about a second.
//!
//! Rows go to a thread of their own through a bounded queue: a reader that stops reading
//! costs rows (counted, and said on standard error at the end), never the recording. A
//! reader that goes away (`| head`) sets [`PrintStatus::closed`], and `flinch record` ends.

use flinch_analysis::live::{LiveSpans, SpanConfig, SpanSpec};
use flinch_analysis::{ActivitySpan, SpanReport};
use flinch_core::channel::Quantity;
use flinch_core::marks::{Mark, MarkVia};
use flinch_core::trace::{Footer, Header};
use flinch_record::observe::{LiveThread, Observed, Observer};
use std::fs::File;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The format of the printed rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PrintFormat {
    /// A header line, then `start_ns,end_ns,device,power_w,energy_j,activity`
    Csv,
    /// One JSON object per line
    Jsonl,
}

/// The CSV column line.
pub const CSV_COLUMNS: &str = "start_ns,end_ns,device,power_w,energy_j,activity";

/// The label of the boundary marks (never seen outside the printer).
const BOUNDARY: &str = "interval";

/// What the printer tells the command loop.
#[derive(Debug, Default)]
pub struct PrintStatus {
    closed: AtomicBool,
    dropped_rows: AtomicU64,
    error: Mutex<Option<String>>,
}

impl PrintStatus {
    /// Whether standard output's reader went away (or writing to it failed).
    pub fn closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
    /// Rows dropped because the reader did not keep up.
    pub fn dropped_rows(&self) -> u64 {
        self.dropped_rows.load(Ordering::Relaxed)
    }
    /// A write error other than a closed pipe.
    pub fn error(&self) -> Option<String> {
        self.error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// One interval's rows, on their way to the printing thread.
struct Batch {
    text: String,
    /// How many.
    rows: u64,
}

/// The observer behind `--print`.
pub struct Printer {
    interval_ns: u64,
    format: PrintFormat,
    live: Option<LiveSpans>,
    /// Devices in header order: (name, activity channels as (channel name, column key)).
    devices: Vec<(String, Vec<(String, String)>)>,
    /// Per channel: its first and latest reading's time.
    first: Vec<Option<u64>>,
    latest: Vec<Option<u64>>,
    /// The last boundary handed to the live measurement.
    last_boundary: Option<u64>,
    tx: Option<SyncSender<Batch>>,
    thread: Option<JoinHandle<()>>,
    status: Arc<PrintStatus>,
}

impl Printer {
    /// A printer of one row per `interval` and device in `format`, writing to `out`
    /// (standard output) from a thread of its own.
    pub fn new(interval: Duration, format: PrintFormat, out: File) -> std::io::Result<Self> {
        let status = Arc::new(PrintStatus::default());
        // About a minute of 1-s rows: a reader that pauses briefly loses nothing.
        let (tx, rx) = sync_channel::<Batch>(64);
        let st = status.clone();
        let thread = std::thread::Builder::new()
            .name("flinch-print".into())
            .spawn(move || print_loop(out, rx, &st))?;
        Ok(Printer {
            interval_ns: interval.as_nanos() as u64,
            format,
            live: None,
            devices: Vec::new(),
            first: Vec::new(),
            latest: Vec::new(),
            last_boundary: None,
            tx: Some(tx),
            thread: Some(thread),
            status,
        })
    }

    /// What the command loop watches.
    pub fn status(&self) -> Arc<PrintStatus> {
        self.status.clone()
    }

    fn send(&mut self, text: String, rows: u64) {
        let Some(tx) = &self.tx else { return };
        if self.status.closed() {
            return;
        }
        match tx.try_send(Batch { text, rows }) {
            Ok(()) => {}
            Err(TrySendError::Full(b)) => {
                self.status
                    .dropped_rows
                    .fetch_add(b.rows, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    fn boundary(&mut self, t_ns: u64) {
        if let Some(live) = self.live.as_mut() {
            live.mark(&Mark {
                t_ns,
                recv_ns: t_ns,
                t_from_client: false,
                label: BOUNDARY.to_owned(),
                fields: Vec::new(),
                via: MarkVia::Api,
            });
        }
        self.last_boundary = Some(t_ns);
    }

    /// Hands over every boundary up to `until`; the first one once readings have come.
    fn boundaries_until(&mut self, until: u64) {
        let next = match self.last_boundary {
            Some(b) => b + self.interval_ns,
            None => {
                // The first boundary: where every channel heard from so far has data, so
                // the first row is as complete as the later ones.
                let Some(t0) = self.first.iter().flatten().max().copied() else {
                    return;
                };
                if t0 > until {
                    return;
                }
                self.boundary(t0);
                t0 + self.interval_ns
            }
        };
        let mut b = next;
        while b <= until {
            self.boundary(b);
            b += self.interval_ns;
        }
    }

    fn emit(&mut self, now_ns: u64) {
        let Some(live) = self.live.as_mut() else {
            return;
        };
        let out = live.advance(now_ns);
        for (_, report) in out.spans {
            let text = self.rows(&report);
            self.send(text, self.devices.len() as u64);
        }
    }

    /// The rows of one interval.
    fn rows(&self, r: &SpanReport) -> String {
        let mut s = String::new();
        for (dev, acts) in &self.devices {
            let d = r.devices.get(dev);
            let power = d.and_then(|d| d.mean_power_w).map(round3);
            let energy = d.and_then(|d| d.energy_j).map(round3);
            let activity: Vec<(&str, f64)> = acts
                .iter()
                .filter_map(|(ch, key)| {
                    r.activity
                        .get(ch)
                        .and_then(|a: &ActivitySpan| a.mean)
                        .map(|m| (key.as_str(), round1(m)))
                })
                .collect();
            match self.format {
                PrintFormat::Csv => {
                    let num = |x: Option<f64>| x.map(|v| format!("{v:.3}")).unwrap_or_default();
                    let act: Vec<String> = activity
                        .iter()
                        .map(|(k, v)| format!("{k}={v:.1}"))
                        .collect();
                    s.push_str(&format!(
                        "{},{},{},{},{},{}\n",
                        r.start_ns,
                        r.end_ns,
                        dev,
                        num(power),
                        num(energy),
                        act.join(" ")
                    ));
                }
                PrintFormat::Jsonl => {
                    let act: serde_json::Map<String, serde_json::Value> = activity
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), serde_json::json!(v)))
                        .collect();
                    let row = serde_json::json!({
                        "start_ns": r.start_ns,
                        "end_ns": r.end_ns,
                        "device": dev,
                        "power_w": power,
                        "energy_j": energy,
                        "activity": act,
                    });
                    s.push_str(&row.to_string());
                    s.push('\n');
                }
            }
        }
        s
    }
}

fn round3(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// The column key of an activity channel: its name without the device, with its unit.
fn activity_key(device: &str, channel: &str, q: Quantity) -> Option<String> {
    let short = channel
        .strip_prefix(device)
        .and_then(|s| s.strip_prefix('.'))
        .unwrap_or(channel);
    match q {
        Quantity::Utilization | Quantity::Activity => Some(format!("{short}_pct")),
        Quantity::CpuTime => Some(format!(
            "{}_cores",
            short.strip_suffix("_s").unwrap_or(short)
        )),
        _ => None,
    }
}

fn print_loop(mut out: File, rx: Receiver<Batch>, status: &PrintStatus) {
    for b in rx {
        if status.closed() {
            continue; // drain: the observer is never blocked by a dead reader
        }
        match out.write_all(b.text.as_bytes()) {
            Ok(()) => {}
            Err(e) => {
                if e.kind() != std::io::ErrorKind::BrokenPipe {
                    *status.error.lock().unwrap_or_else(PoisonError::into_inner) =
                        Some(format!("cannot write to standard output: {e}"));
                }
                status.closed.store(true, Ordering::Release);
            }
        }
    }
}

impl Observer for Printer {
    fn start(&mut self, header: &Header, threads: &[Arc<LiveThread>]) {
        let mut devices: Vec<(String, Vec<(String, String)>)> = Vec::new();
        let mut n = 0;
        for s in &header.sources {
            for c in &s.channels {
                n += 1;
                let energy = matches!(c.quantity, Quantity::Power | Quantity::Energy);
                let key = activity_key(&c.device, &c.name, c.quantity);
                if !energy && key.is_none() {
                    continue;
                }
                let i = match devices.iter().position(|(d, _)| *d == c.device) {
                    Some(i) => i,
                    None => {
                        devices.push((c.device.clone(), Vec::new()));
                        devices.len() - 1
                    }
                };
                if let Some(k) = key {
                    devices[i].1.push((c.name.clone(), k));
                }
            }
        }
        self.devices = devices;
        self.first = vec![None; n];
        self.latest = vec![None; n];
        let spec = SpanSpec {
            from: BOUNDARY.to_owned(),
            to: BOUNDARY.to_owned(),
        };
        let mut live = LiveSpans::new(header, vec![spec], None, SpanConfig::default());
        // Slow sources (NVML's energy counter) hold no row back beside a faster one.
        for t in threads {
            for src in &t.sources {
                live.source_polled_every(src, Duration::from_nanos(t.interval_ns));
            }
        }
        self.live = Some(live);
        if self.format == PrintFormat::Csv {
            self.send(format!("{CSV_COLUMNS}\n"), 0);
        }
    }

    fn readings(&mut self, batch: &[Observed]) {
        for o in batch {
            let i = o.reading.channel as usize;
            let t = o.reading.t_ns;
            if let Some(f) = self.first.get_mut(i) {
                f.get_or_insert(t);
            }
            if let Some(l) = self.latest.get_mut(i) {
                *l = Some(l.map_or(t, |x| x.max(t)));
            }
            if let Some(live) = self.live.as_mut() {
                live.reading(&o.reading, o.counter);
            }
        }
    }

    fn gap(&mut self, t_ns: u64, source: &str, reason: Option<&str>) {
        if let Some(live) = self.live.as_mut() {
            live.gap(t_ns, source, reason);
        }
    }

    fn dropped(&mut self, t_ns: u64, source: &str, count: u64) {
        if let Some(live) = self.live.as_mut() {
            live.dropped(t_ns, source, count);
        }
    }

    fn flushed(&mut self, now_ns: u64) {
        self.boundaries_until(now_ns);
        self.emit(now_ns);
    }

    fn finish(&mut self, _footer: &Footer) {
        // The last interval ends where every channel's data ends: a row for the part
        // interval up to there.
        if let Some(end) = self.latest.iter().flatten().min().copied() {
            self.boundaries_until(end);
            if self.last_boundary.is_some_and(|b| end > b) {
                self.boundary(end);
            }
        }
        self.emit(u64::MAX);
        // Let the printing thread write what is queued, unless its reader has stalled.
        self.tx = None;
        if let Some(h) = self.thread.take() {
            let deadline = Instant::now() + Duration::from_secs(2);
            while !h.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            if h.is_finished() {
                let _ = h.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activity_columns_carry_their_unit() {
        assert_eq!(
            activity_key("gpu0", "gpu0.sm_active", Quantity::Activity).as_deref(),
            Some("sm_active_pct")
        );
        assert_eq!(
            activity_key("host", "host.cpu_busy_s", Quantity::CpuTime).as_deref(),
            Some("cpu_busy_cores")
        );
        assert_eq!(
            activity_key("proc", "proc.cpu_time", Quantity::CpuTime).as_deref(),
            Some("cpu_time_cores")
        );
        assert_eq!(
            activity_key("gpu0", "gpu0.temperature", Quantity::Temperature),
            None
        );
    }
}

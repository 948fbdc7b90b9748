//! A trace streamed into a pipe (`flinch record --out -`): header first, rows while the
//! recording runs, and a reader that goes away ends the trace, not the recording.

use flinch_core::clock::{Clock, MonotonicClock};
use flinch_record::recorder::{Recorder, RecorderConfig, RecordingSetup, TraceTarget};
use flinch_record::synthetic::{SyntheticConfig, SyntheticSource};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// The pipe's lines as they arrive, read on a thread of their own; `None` at its end.
fn lines_of(r: File) -> Receiver<Option<String>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(r);
        loop {
            let mut l = String::new();
            match r.read_line(&mut l) {
                Ok(0) | Err(_) => {
                    let _ = tx.send(None);
                    return;
                }
                Ok(_) => {
                    if tx.send(Some(l)).is_err() {
                        return; // the test dropped the reader: close the pipe
                    }
                }
            }
        }
    });
    rx
}

/// Lines up to the first one containing `what`, waiting at most `limit`.
fn until(rx: &Receiver<Option<String>>, what: &str, limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Some(l)) => {
                let hit = l.contains(what);
                got.push(l);
                if hit {
                    return got;
                }
            }
            Ok(None) => panic!("the stream ended before {what:?}; got {got:?}"),
            Err(RecvTimeoutError::Timeout) => {
                panic!("no {what:?} within {limit:?} while recording; got {got:?}")
            }
            Err(RecvTimeoutError::Disconnected) => panic!("reader thread gone"),
        }
    }
}

#[test]
fn a_streamed_trace_arrives_as_recorded_and_a_closed_reader_ends_only_the_trace() {
    let (r, w) = rustix::pipe::pipe().unwrap();
    let clock: Arc<dyn Clock> = Arc::new(MonotonicClock);
    let src = SyntheticSource::new("100W".parse::<SyntheticConfig>().unwrap(), clock.as_ref());
    let mut setup = RecordingSetup::new(PathBuf::new(), vec![Box::new(src)]);
    setup.out = TraceTarget::Stream {
        name: "a test pipe".into(),
        out: File::from(w),
    };
    // No timed flush during the test: what reaches the pipe comes with the header and
    // with each mark.
    let config = RecorderConfig {
        flush_interval: Duration::from_secs(3600),
        ..Default::default()
    };
    let rec = Recorder::start(setup, config, clock).unwrap();
    let rx = lines_of(File::from(r));
    let head = until(&rx, "t_ns,kind,channel", Duration::from_secs(10));
    assert_eq!(head[0].trim_end(), "# flinch-trace v1");
    assert!(head[1].starts_with("# header {"), "{head:?}");

    // A mark reaches the reader while the recording runs, and the samples taken so far
    // with it (written just after it: rows are in arrival order).
    std::thread::sleep(Duration::from_millis(300));
    rec.mark_sender().mark("first", &[("req", "1")]).unwrap();
    until(&rx, ",mark,api,", Duration::from_secs(10));
    until(&rx, ",sample,synthetic.power,", Duration::from_secs(10));
    assert!(!rec.output_closed());

    // The reader goes away; the next write finds the pipe closed.
    drop(rx);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !rec.output_closed() && Instant::now() < deadline {
        rec.mark_sender().mark("poke", &[]).unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(rec.output_closed(), "the closed pipe was not noticed");
    // The recording goes on without its trace, and ends cleanly.
    let before = rec
        .stats()
        .samples
        .load(std::sync::atomic::Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(300));
    rec.mark_sender().mark("after", &[]).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let after = rec
        .stats()
        .samples
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        after > before,
        "sampling stopped with the pipe: {before} -> {after}"
    );
    let footer = rec
        .stop("stopped", None)
        .expect("a closed pipe is not an error");
    assert!(footer.samples >= after);
    assert_eq!(footer.ended_by, "stopped");
}

//! `flinch analyze --json` on the shipped examples, pinned: the expected outputs in
//! `tests/data/pinned/*.json.gz` were written by the whole-trace `flinch` binary of `main`
//! (first at 19b5697, before `analyze` streamed; again at 95bd1bf, after issue 16 changed
//! the analysis, byte for byte what the streaming analysis writes), so a change to how
//! traces are read, spans paired or the summary kept cannot move a number unnoticed. Every value there must be found, equal,
//! at the same place in today's output (fields added since are allowed).
//!
//! A deliberate change of the analysis (new thresholds, say) rewrites them:
//! `FLINCH_BLESS_PINNED=1 cargo test -p flinch-cli --test it pinned` — and the diff of the
//! decompressed files belongs in the review.

use crate::common::{flinch, run, stderr};
use serde_json::Value;
use std::io::{Read, Write};
use std::path::PathBuf;

const LLM: &str = "examples/llm/llm.flinch.csv";
const BUSY: &str = "examples/workloads/busy-idle.flinch.csv";
const GPU: &str = "examples/llm-gpu/llm-gpu.flinch.csv";
const H200: &str = "examples/workloads/busy-idle-h200.flinch.csv";
const CALIB: &[&str] = &["--idle-window", "calib_start..calib_end"];

/// (file name, trace, labels and options)
fn cases() -> Vec<(&'static str, &'static str, Vec<&'static str>)> {
    let with = |from: &'static str, to: &'static str, idle: &[&'static str]| {
        let mut v = vec!["--from", from, "--to", to];
        v.extend_from_slice(idle);
        v
    };
    vec![
        (
            "llm-infer_start-first_token",
            LLM,
            with("infer_start", "first_token", CALIB),
        ),
        (
            "llm-server_recv-done",
            LLM,
            with("server_recv", "done", CALIB),
        ),
        (
            "llm-enqueue-dequeue",
            LLM,
            with("enqueue", "dequeue", CALIB),
        ),
        (
            "llm-first_token-done",
            LLM,
            with("first_token", "done", CALIB),
        ),
        // the same label: consecutive marks of each request
        ("llm-token-token", LLM, with("token", "token", CALIB)),
        // every mark unmatched: ends before starts in each request
        (
            "llm-dequeue-enqueue",
            LLM,
            with("dequeue", "enqueue", CALIB),
        ),
        // a start without req, ends with one: nothing pairs
        ("llm-calib_end-done", LLM, with("calib_end", "done", CALIB)),
        (
            "llm-noidle-infer_start-first_token",
            LLM,
            with("infer_start", "first_token", &[]),
        ),
        (
            "busy-phase_start-phase_end",
            BUSY,
            with("phase_start", "phase_end", CALIB),
        ),
        (
            "busy-square",
            BUSY,
            with("square_start", "square_end", CALIB),
        ),
        // one span over the whole recording, idle from a window in seconds
        (
            "busy-calib_start-square_end",
            BUSY,
            with("calib_start", "square_end", &["--idle-window", "1..3"]),
        ),
        (
            "busy-noidle-phase",
            BUSY,
            with("phase_start", "phase_end", &[]),
        ),
        // requests that overlap: totals over the union of their time
        (
            "gpu-server_recv-done",
            GPU,
            with("server_recv", "done", CALIB),
        ),
        ("h200-phase", H200, with("phase_start", "phase_end", CALIB)),
    ]
}

fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn pinned_path(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/pinned"))
        .join(format!("{name}.json.gz"))
}

/// Where `got` lacks or differs from something in `want`: `None` when every value of
/// `want` is in `got` (objects may have more keys; arrays must have the same length).
fn first_difference(want: &Value, got: &Value, at: &str) -> Option<String> {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => w.iter().find_map(|(k, wv)| match g.get(k) {
            Some(gv) => first_difference(wv, gv, &format!("{at}.{k}")),
            None => Some(format!("{at}.{k}: missing")),
        }),
        (Value::Array(w), Value::Array(g)) if w.len() == g.len() => w
            .iter()
            .zip(g)
            .enumerate()
            .find_map(|(i, (wv, gv))| first_difference(wv, gv, &format!("{at}[{i}]"))),
        (Value::Array(w), Value::Array(g)) => Some(format!(
            "{at}: {} elements pinned, {} now",
            w.len(),
            g.len()
        )),
        _ if want == got => None,
        _ => Some(format!("{at}: pinned {want}, now {got}")),
    }
}

#[test]
fn analyze_json_of_the_shipped_examples_matches_the_pinned_numbers() {
    let bless = std::env::var_os("FLINCH_BLESS_PINNED").is_some();
    let mut failures = Vec::new();
    for (name, trace, args) in cases() {
        let o = run(flinch()
            .current_dir(root())
            .arg("analyze")
            .arg(trace)
            .args(&args)
            .arg("--json"));
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let got: Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("{name}: not one JSON object: {e}"));
        let path = pinned_path(name);
        if bless {
            let f = std::fs::File::create(&path).unwrap();
            let mut gz = flate2::write::GzEncoder::new(f, flate2::Compression::best());
            gz.write_all(&o.stdout).unwrap();
            gz.finish().unwrap();
            continue;
        }
        let mut text = String::new();
        flate2::read::GzDecoder::new(std::fs::File::open(&path).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        let want: Value = serde_json::from_str(&text).unwrap();
        // The pin must hold something worth comparing: spans, or marks that did not pair.
        assert!(
            want["spans"].as_array().is_some_and(|s| !s.is_empty())
                || want["unmatched"].as_array().is_some_and(|u| !u.is_empty()),
            "{name}: the pinned output is empty"
        );
        if let Some(d) = first_difference(&want, &got, name) {
            failures.push(d);
        }
    }
    assert!(
        failures.is_empty(),
        "analyze --json moved from the pinned outputs:\n{}",
        failures.join("\n")
    );
}

#[test]
fn the_comparison_finds_a_changed_number_a_missing_key_and_a_lost_span() {
    let want: Value = serde_json::json!({"a": 1.5, "s": [{"e": 2.0}, {"e": 3.0}]});
    let same_plus: Value =
        serde_json::json!({"a": 1.5, "b": 9, "s": [{"e": 2.0, "x": 1}, {"e": 3.0}]});
    assert_eq!(first_difference(&want, &same_plus, "r"), None);
    let moved: Value = serde_json::json!({"a": 1.5, "s": [{"e": 2.0}, {"e": 3.0000001}]});
    assert!(
        first_difference(&want, &moved, "r")
            .unwrap()
            .contains("r.s[1].e")
    );
    let missing: Value = serde_json::json!({"s": [{"e": 2.0}, {"e": 3.0}]});
    assert!(
        first_difference(&want, &missing, "r")
            .unwrap()
            .contains("r.a: missing")
    );
    let lost: Value = serde_json::json!({"a": 1.5, "s": [{"e": 2.0}]});
    assert!(
        first_difference(&want, &lost, "r")
            .unwrap()
            .contains("2 elements pinned, 1 now")
    );
}

//! A mutation fuzzer for flinch's parsers of untrusted input: mark lines, the byte stream a
//! FIFO delivers, and trace files. cargo-fuzz needs a nightly compiler; this runs on stable.
//!
//! ```text
//! nice -n 19 cargo run --release -p flinch-core --example fuzz -- --seconds 600
//! cargo run --release -p flinch-core --example fuzz -- --target trace --seconds 60 --seed 7
//! ```
//!
//! Each iteration takes an input from the corpus (valid marks and traces to start with),
//! applies a few random mutations (bit flips, interesting bytes and tokens, deletions,
//! duplications, splices, line shuffles, truncations) and runs the target under
//! `catch_unwind`, checking the same invariants as `tests/hostile_input.rs`: no panic, a
//! parse error names a line that exists, samples sorted and finite, marks sorted, gaps
//! never ending before they start, counter steps never negative. An input that gives an
//! outcome not seen before (a new error message, a new warning, a new shape of result) joins
//! the corpus: a cheap stand-in for coverage feedback. An input that panics or breaks an
//! invariant is written to `--out` (default `target/fuzz-findings`) and counted; one that
//! runs for over 5 s is reported as a hang and the run stops.

use flinch_core::DeviceClass;
use flinch_core::channel::{ChannelSpec, CounterSpec, PowerMethod, SourceInfo};
use flinch_core::clock::{ClockAnchor, ManualClock};
use flinch_core::counter::{CounterStep, CounterTracker};
use flinch_core::marks::{
    Line, LineSplitter, MAX_MARK_BYTES, Mark, MarkVia, format_mark, is_valid_label, parse_mark,
};
use flinch_core::trace::{Footer, Header, TraceWriter, read_trace_from};
use flinch_core::{Error, Reading};
use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const TOKENS: &[&[u8]] = &[
    b",",
    b"\n",
    b"\r\n",
    b"%",
    b"%2C",
    b"%G",
    b"#",
    b"=",
    b" ",
    b"\t",
    b"0",
    b"-0",
    b"-1",
    b"1e308",
    b"1e309",
    b"-1e309",
    b"NaN",
    b"inf",
    b"-inf",
    b"18446744073709551615",
    b"18446744073709551616",
    b"9223372036854775807",
    b"-9223372036854775808",
    b"99999999999999999999999999",
    b"MARK ",
    b"t=",
    b"req=",
    b"sample",
    b"mark",
    b"anchor",
    b"gap",
    b"reset",
    b"flag",
    b"drop",
    b"bad_mark",
    b"event",
    b"fifo",
    b"api",
    b"file",
    b"start",
    b"end",
    b"real_ns=",
    b"dev.power",
    b"dev.energy",
    b"# end ",
    b"# end {\"complete\":true}",
    b"# header ",
    b"{",
    b"}",
    b"\"",
    b"\\u0000",
    b"\xff",
    b"\xc3",
    b"\xe2\x80",
    b"\0",
    "é".as_bytes(),
    "\u{a0}".as_bytes(),
];

fn mutate(rng: &mut Rng, data: &mut Vec<u8>, corpus: &[Vec<u8>]) {
    let n = data.len();
    match rng.below(11) {
        0 if n > 0 => {
            let i = rng.below(n);
            data[i] ^= 1 << rng.below(8);
        }
        1 if n > 0 => {
            let i = rng.below(n);
            data[i] = TOKENS[rng.below(TOKENS.len())][0];
        }
        2 => {
            let at = rng.below(n + 1);
            let t = TOKENS[rng.below(TOKENS.len())];
            data.splice(at..at, t.iter().copied());
        }
        3 => {
            let at = rng.below(n + 1);
            let k = 1 + rng.below(16);
            let bytes: Vec<u8> = (0..k).map(|_| rng.next() as u8).collect();
            data.splice(at..at, bytes);
        }
        4 if n > 0 => {
            let at = rng.below(n);
            let len = 1 + rng.below(64.min(n - at));
            data.drain(at..at + len);
        }
        5 if n > 0 => {
            let at = rng.below(n);
            let len = 1 + rng.below(256.min(n - at));
            let copy = data[at..at + len].to_vec();
            let to = rng.below(n + 1);
            data.splice(to..to, copy);
        }
        6 => {
            // splice a piece of another corpus entry
            let other = &corpus[rng.below(corpus.len())];
            if !other.is_empty() {
                let at = rng.below(other.len());
                let len = 1 + rng.below(512.min(other.len() - at));
                let to = rng.below(n + 1);
                data.splice(to..to, other[at..at + len].iter().copied());
            }
        }
        7 | 8 => {
            let mut lines: Vec<Vec<u8>> = data.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
            let l = lines.len();
            match rng.below(4) {
                0 => {
                    let i = rng.below(l);
                    lines.insert(i, lines[i].clone());
                }
                1 if l > 1 => {
                    lines.remove(rng.below(l));
                }
                2 => {
                    let (a, b) = (rng.below(l), rng.below(l));
                    lines.swap(a, b);
                }
                _ => {
                    // a row with a column added or removed
                    let i = rng.below(l);
                    if rng.below(2) == 0 {
                        lines[i].push(b',');
                    } else if let Some(p) = lines[i].iter().rposition(|&b| b == b',') {
                        lines[i].truncate(p);
                    }
                }
            }
            *data = lines.join(&b'\n');
        }
        9 if n > 0 => data.truncate(rng.below(n)),
        _ => {
            let at = rng.below(n + 1);
            let k = 1 + rng.below(8);
            let b = TOKENS[rng.below(TOKENS.len())][0];
            data.splice(at..at, std::iter::repeat_n(b, k));
        }
    }
}

fn trace_header() -> Header {
    let src = SourceInfo::new("dev", "test", DeviceClass::Other).with_channels(vec![
        ChannelSpec::power("dev", "power", PowerMethod::Instant),
        ChannelSpec::energy_counter(
            "dev",
            "energy",
            CounterSpec {
                wrap_range: Some(100.0),
                max_rate: Some(1000.0),
            },
        ),
    ]);
    Header::new(
        10_000_000,
        ClockAnchor {
            mono_ns: 1_000,
            real_ns: 5_000,
        },
        vec![src],
    )
}

fn seed_trace() -> Vec<u8> {
    let clock = Arc::new(ManualClock::new(0, 0));
    let mut w = TraceWriter::new(Vec::new(), &trace_header(), clock, 1).unwrap();
    for i in 0..30u64 {
        w.sample(&Reading {
            channel: (i % 2) as u32,
            t_ns: 1_000 + i * 100,
            value: (i * 7 % 100) as f64,
        })
        .unwrap();
        if i % 5 == 0 {
            w.mark(&Mark {
                t_ns: 1_050 + i * 100,
                recv_ns: 1_070 + i * 100,
                t_from_client: i % 10 == 0,
                label: format!("m{i}"),
                fields: vec![("req".into(), format!("{}", i / 10))],
                via: MarkVia::Fifo,
            })
            .unwrap();
        }
    }
    w.anchor(ClockAnchor {
        mono_ns: 4_000,
        real_ns: 8_000,
    })
    .unwrap();
    w.gap(4_100, "dev", true, "lost: gone, 50%").unwrap();
    w.gap(4_200, "dev", false, "").unwrap();
    w.reset(4_300, 1, 99.0, 1.0).unwrap();
    w.flag(4_400, 1, 50.0, "implausible", "step").unwrap();
    w.dropped(4_450, "dev", 3).unwrap();
    w.bad_mark(4_500, "fifo", "bad, line", "label").unwrap();
    w.event(4_600, "command_exit", "status=0").unwrap();
    w.finish(Footer {
        ended_by: "stopped".into(),
        ..Default::default()
    })
    .unwrap()
}

/// What a run gave, reduced to a signature for the corpus.
type Outcome = String;

fn shape(n: usize) -> usize {
    // 0, 1, 2-3, 4-7, ...
    usize::BITS as usize - n.leading_zeros() as usize
}

fn fuzz_marks(data: &[u8]) -> Result<Outcome, String> {
    match parse_mark(data) {
        // The kind of error, without the offending value.
        Err(e) => Ok(format!(
            "err:{}",
            format!("{e:?}").split(['(', ' ']).next().unwrap_or("")
        )),
        Ok(m) => {
            if !is_valid_label(&m.label) || data.len() > MAX_MARK_BYTES {
                return Err(format!("accepted a bad mark: {m:?}"));
            }
            let mut keys: Vec<&str> = m.fields.iter().map(|(k, _)| k.as_str()).collect();
            if keys.iter().any(|k| !is_valid_label(k) || *k == "t") {
                return Err(format!("accepted a bad key: {m:?}"));
            }
            keys.sort_unstable();
            keys.dedup();
            if keys.len() != m.fields.len() {
                return Err(format!("accepted a duplicate key: {m:?}"));
            }
            let fields: Vec<(&str, &str)> = m
                .fields
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            if let Ok(line) = format_mark(&m.label, m.t_ns, &fields)
                && parse_mark(line.as_bytes()).as_ref() != Ok(&m)
            {
                return Err(format!("format/parse round trip changed {m:?}"));
            }
            // The trace row of the received mark reads back as the same mark.
            let mark = Mark::received(m.clone(), 42, MarkVia::Fifo);
            let clock = Arc::new(ManualClock::new(0, 0));
            let mut w = TraceWriter::new(Vec::new(), &trace_header(), clock, 1)
                .map_err(|e| e.to_string())?;
            w.mark(&mark).map_err(|e| e.to_string())?;
            let bytes = w.finish(Footer::default()).map_err(|e| e.to_string())?;
            let t = read_trace_from(&bytes[..], Path::new("m.csv"))
                .map_err(|e| format!("the row of {mark:?} does not read back: {e}"))?;
            if t.marks != [mark.clone()] {
                return Err(format!("{mark:?} read back as {:?}", t.marks));
            }
            Ok(format!(
                "ok:{}:{}:{}",
                m.t_ns.is_some(),
                shape(m.fields.len()),
                shape(m.label.len())
            ))
        }
    }
}

fn fuzz_splitter(data: &[u8], rng: &mut Rng) -> Result<Outcome, String> {
    let mut s = LineSplitter::default();
    let (mut complete, mut overlong) = (0usize, 0usize);
    let mut at = 0;
    let mut total = 0usize;
    while at < data.len() {
        let step = 1 + rng.below(data.len() - at).min(rng.below(9000));
        s.feed(&data[at..at + step], |l| match l {
            Line::Complete(b) => {
                complete += 1;
                total += b.len() + 1;
            }
            Line::Overlong(n) => {
                overlong += 1;
                total += n;
            }
        });
        if s.pending() >= MAX_MARK_BYTES {
            return Err(format!("the splitter holds {} bytes", s.pending()));
        }
        at += step;
    }
    s.finish(|l| match l {
        Line::Complete(b) => {
            complete += 1;
            total += b.len();
        }
        Line::Overlong(n) => {
            overlong += 1;
            total += n;
        }
    });
    if total != data.len() {
        return Err(format!(
            "the splitter accounted for {total} of {} bytes",
            data.len()
        ));
    }
    Ok(format!("{}:{}", shape(complete), shape(overlong)))
}

fn fuzz_trace(data: &[u8]) -> Result<Outcome, String> {
    match read_trace_from(data, Path::new("fuzz.csv")) {
        Err(Error::TraceParse { line, message, .. }) => {
            let lines = data.split(|&b| b == b'\n').count() as u64;
            if line == 0 || line > lines + 1 {
                return Err(format!("error names line {line} of {lines}: {message}"));
            }
            // The message up to its first quote: the kind of error, not the value.
            Ok(format!("err:{}", message.split('"').next().unwrap_or("")))
        }
        Err(e) => Err(format!("not a parse error: {e}")),
        Ok(t) => {
            let _ = (t.labels(), t.time_range_ns(), t.complete());
            let m = t.anchor_map();
            for real in [i64::MIN, -1, 0, 1, 8_000, i64::MAX] {
                let _ = (m.to_mono_ns(real), m.us_to_mono_ns(real));
            }
            for c in &t.channels {
                if c.t_ns.len() != c.values.len() || c.t_ns.windows(2).any(|w| w[0] > w[1]) {
                    return Err(format!("channel {} unsorted or ragged", c.spec.name));
                }
                if c.values.iter().any(|v| !v.is_finite()) {
                    return Err(format!("channel {} holds a non-finite value", c.spec.name));
                }
                if let Some(spec) = c.spec.counter_spec() {
                    let mut tr = CounterTracker::new(*spec, c.spec.update_period_ns);
                    for (&t, &v) in c.t_ns.iter().zip(&c.values) {
                        if let CounterStep::Delta { delta, .. } = tr.update(t, v)
                            && (delta.is_nan() || delta < 0.0)
                        {
                            return Err(format!("counter step {delta}"));
                        }
                    }
                }
            }
            if t.marks.windows(2).any(|w| w[0].t_ns > w[1].t_ns) {
                return Err("marks unsorted".into());
            }
            if t.gaps
                .iter()
                .any(|g| g.end_ns.is_some_and(|e| e < g.start_ns))
            {
                return Err("a gap ends before it starts".into());
            }
            let warnings: Vec<String> = t
                .warnings
                .iter()
                .map(|w| {
                    w.trim_start_matches(|c: char| !c.is_alphabetic())
                        .split(|c: char| c.is_ascii_digit() || c == '"')
                        .next()
                        .unwrap_or("")
                        .to_owned()
                })
                .collect();
            Ok(format!(
                "ok:{}:{}:{}:{}:{:?}",
                t.complete(),
                shape(t.sample_count()),
                shape(t.marks.len()),
                shape(t.events.len()),
                warnings
            ))
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Marks,
    Splitter,
    Trace,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Marks => "marks",
            Target::Splitter => "splitter",
            Target::Trace => "trace",
        }
    }
}

struct Stats {
    runs: u64,
    findings: u64,
    slowest: Duration,
    outcomes: usize,
    corpus: usize,
}

fn run_target(
    target: Target,
    seconds: f64,
    seed: u64,
    out: &Path,
    current: &Arc<(AtomicU64, std::sync::Mutex<Vec<u8>>)>,
) -> Stats {
    let mut rng = Rng(seed.max(1));
    let mut corpus: Vec<Vec<u8>> = match target {
        Target::Marks => vec![
            b"infer_start".to_vec(),
            b"MARK first_token req=42 t=123456789 model=llama\n".to_vec(),
            b"a.b:c/d-e_f  req=r-1\tt=18446744073709551615 x= \r\n".to_vec(),
            "tok req=7 text=h\u{e9}llo,\"#=1\"".as_bytes().to_vec(),
        ],
        Target::Splitter => vec![
            b"a t=1\nb t=2\n\nc".to_vec(),
            [vec![b'x'; 5000], b"\nok\n".to_vec()].concat(),
        ],
        Target::Trace => vec![seed_trace()],
    };
    let mut seen: HashSet<Outcome> = HashSet::new();
    let mut stats = Stats {
        runs: 0,
        findings: 0,
        slowest: Duration::ZERO,
        outcomes: 0,
        corpus: 0,
    };
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < seconds {
        let mut data = corpus[rng.below(corpus.len())].clone();
        for _ in 0..1 + rng.below(6) {
            mutate(&mut rng, &mut data, &corpus);
        }
        if target == Target::Marks && data.len() > 2 * MAX_MARK_BYTES {
            data.truncate(2 * MAX_MARK_BYTES);
        }
        if data.len() > 1 << 20 {
            data.truncate(1 << 20);
        }
        {
            let mut c = current.1.lock().unwrap();
            c.clear();
            c.extend_from_slice(&data);
        }
        let began = Instant::now();
        // Which input is running, for the watchdog (0: none).
        current.0.store(stats.runs + 1, Ordering::SeqCst);
        let mut split_rng = Rng(rng.next() | 1);
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| match target {
            Target::Marks => fuzz_marks(&data),
            Target::Splitter => fuzz_splitter(&data, &mut split_rng),
            Target::Trace => fuzz_trace(&data),
        }));
        current.0.store(0, Ordering::SeqCst);
        let took = began.elapsed();
        stats.slowest = stats.slowest.max(took);
        stats.runs += 1;
        let problem = match result {
            Ok(Ok(outcome)) => {
                if seen.insert(outcome) && corpus.len() < 4096 {
                    corpus.push(data.clone());
                }
                None
            }
            Ok(Err(invariant)) => Some(format!("invariant broken: {invariant}")),
            Err(payload) => Some(format!(
                "panic: {}",
                payload
                    .downcast_ref::<&str>()
                    .copied()
                    .or(payload.downcast_ref::<String>().map(String::as_str))
                    .unwrap_or("?")
            )),
        };
        if let Some(problem) = problem {
            stats.findings += 1;
            let file = out.join(format!("{}-{}.bin", target.name(), stats.findings));
            let _ = std::fs::create_dir_all(out);
            let _ = std::fs::write(&file, &data);
            eprintln!(
                "FINDING ({}): {problem}\n  input saved to {}",
                target.name(),
                file.display()
            );
        }
    }
    stats.outcomes = seen.len();
    stats.corpus = corpus.len();
    stats
}

fn main() {
    let mut seconds = 60.0;
    let mut seed: u64 = 0x5eed_f11c;
    let mut targets = vec![Target::Marks, Target::Splitter, Target::Trace];
    let mut out = PathBuf::from("target/fuzz-findings");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--seconds" => seconds = value().parse().expect("--seconds N"),
            "--seed" => seed = value().parse().expect("--seed N"),
            "--out" => out = PathBuf::from(value()),
            "--target" => {
                targets = match value().as_str() {
                    "marks" => vec![Target::Marks],
                    "splitter" => vec![Target::Splitter],
                    "trace" => vec![Target::Trace],
                    "all" => targets,
                    t => panic!("--target {t}: expected marks, splitter, trace or all"),
                }
            }
            "--help" | "-h" => {
                println!(
                    "fuzz [--seconds N (per target, default 60)] [--seed N] \
                     [--target marks|splitter|trace|all] [--out DIR]"
                );
                return;
            }
            other => panic!("unknown argument {other:?} (see --help)"),
        }
    }
    // Panics are caught and reported per input; keep the default hook's noise out.
    std::panic::set_hook(Box::new(|_| {}));
    // A watchdog: an input that runs for more than 5 s is a hang.
    let current = Arc::new((AtomicU64::new(0), std::sync::Mutex::new(Vec::new())));
    {
        let current = current.clone();
        let out = out.clone();
        std::thread::spawn(move || {
            // (input number, first seen running)
            let mut running: Option<(u64, Instant)> = None;
            loop {
                std::thread::sleep(Duration::from_millis(250));
                let now_running = current.0.load(Ordering::SeqCst);
                match running {
                    _ if now_running == 0 => running = None,
                    Some((n, _)) if n != now_running => {
                        running = Some((now_running, Instant::now()))
                    }
                    None => running = Some((now_running, Instant::now())),
                    Some((_, t)) if t.elapsed() > Duration::from_secs(5) => {
                        let data = current.1.lock().map(|d| d.clone()).unwrap_or_default();
                        let _ = std::fs::create_dir_all(&out);
                        let file = out.join("hang.bin");
                        let _ = std::fs::write(&file, &data);
                        eprintln!(
                            "HANG: an input ran for over 5 s; saved to {}",
                            file.display()
                        );
                        std::process::exit(3);
                    }
                    Some(_) => {}
                }
            }
        });
    }
    let mut total_findings = 0;
    for (i, t) in targets.iter().enumerate() {
        let began = Instant::now();
        let s = run_target(*t, seconds, seed.wrapping_add(i as u64), &out, &current);
        total_findings += s.findings;
        println!(
            "{:<8} {:>10} runs in {:>6.0} s ({:>7.0}/s), {} distinct outcomes, corpus {}, \
             slowest input {:.1} ms, findings {}",
            t.name(),
            s.runs,
            began.elapsed().as_secs_f64(),
            s.runs as f64 / began.elapsed().as_secs_f64(),
            s.outcomes,
            s.corpus,
            s.slowest.as_secs_f64() * 1e3,
            s.findings
        );
    }
    if total_findings > 0 {
        std::process::exit(1);
    }
}

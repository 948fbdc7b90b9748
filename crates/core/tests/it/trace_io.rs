//! Trace writer and reader: round trip, flush policy, and what damaged files give.

use flinch_core::clock::{ClockAnchor, ManualClock};
use flinch_core::marks::{Mark, MarkVia};
use flinch_core::trace::{
    Footer, Header, MachineInfo, RowKind, TraceWriter, create_trace_file, read_trace,
    read_trace_from,
};
use flinch_core::{Error, Reading};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

fn header() -> Header {
    let mut h = crate::common::header();
    h.sources[0]
        .attributes
        .insert("driver".to_owned(), "1.2.3".to_owned());
    h.meta.insert("batch".into(), "8".into());
    let mut m = MachineInfo::default();
    m.cpu_model = Some("AMD EPYC 9654 96-Core Processor".into());
    m.logical_cpus = Some(192);
    m.physical_cores = Some(96);
    m.memory_bytes = Some(1_622_000_000_000);
    m.os = Some("Debian GNU/Linux".into());
    m.os_version = Some("13".into());
    m.kernel = Some("Linux 6.12.13".into());
    m.arch = Some("x86_64".into());
    h.machine = Some(m);
    h
}

fn mark(t: u64, label: &str, fields: &[(&str, &str)], client: bool) -> Mark {
    Mark {
        t_ns: t,
        recv_ns: t + 500,
        t_from_client: client,
        label: label.into(),
        fields: fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        via: MarkVia::Fifo,
    }
}

#[test]
fn everything_written_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.flinch.csv");
    let clock = Arc::new(ManualClock::new(0, 0));
    let f = create_trace_file(&path, false).unwrap();
    let mut w = TraceWriter::new(f, &header(), clock, 1_000_000_000).unwrap();
    // out of order on purpose: driver buffers deliver older samples late
    for (t, v) in [(3_000, 1.5), (2_000, 250.0), (4_000, 1e-7)] {
        w.sample(&Reading {
            channel: 0,
            t_ns: t,
            value: v,
        })
        .unwrap();
    }
    w.sample(&Reading {
        channel: 1,
        t_ns: 2_500,
        value: 99.5,
    })
    .unwrap();
    w.mark(&mark(
        2_600,
        "infer_start",
        &[("req", "7"), ("note", "a,b#c%\"d")],
        true,
    ))
    .unwrap();
    w.mark(&mark(2_700, "first_token", &[], false)).unwrap();
    w.anchor(ClockAnchor {
        mono_ns: 3_500,
        real_ns: 9_000_000_000_000_000_000,
    })
    .unwrap();
    w.gap(3_600, "dev", true, "lost: GPU fell off the bus, code 15")
        .unwrap();
    w.gap(3_900, "dev", false, "").unwrap();
    w.reset(3_950, 1, 99.5, 0.25).unwrap();
    w.flag(3_960, 1, 50.0, "implausible", "step 50 exceeds 10")
        .unwrap();
    w.bad_mark(
        3_970,
        "fifo",
        "bad label!, with comma",
        "label \"bad label!\"",
    )
    .unwrap();
    w.event(3_980, "command_exit", "status=3").unwrap();
    w.finish(Footer {
        ended_by: "duration".into(),
        ..Default::default()
    })
    .unwrap();

    let t = read_trace(&path).unwrap();
    assert!(t.complete(), "{:?}", t.warnings);
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
    assert_eq!(t.header, header_with_created(&t.header));
    let p = t.channel("dev.power").unwrap();
    assert_eq!(p.t_ns, vec![2_000, 3_000, 4_000]);
    assert_eq!(p.values, vec![250.0, 1.5, 1e-7]);
    assert_eq!(t.channel("dev.energy").unwrap().values, vec![99.5]);
    assert_eq!(t.marks.len(), 2);
    assert_eq!(
        t.marks[0],
        mark(
            2_600,
            "infer_start",
            &[("req", "7"), ("note", "a,b#c%\"d")],
            true
        )
    );
    assert_eq!(t.marks[1].t_ns, 2_700);
    assert_eq!(t.marks[1].recv_ns, 2_700); // no client stamp: the receive time is the time
    assert!(!t.marks[1].t_from_client);
    assert_eq!(t.anchors.len(), 1);
    assert_eq!(t.anchors[0].real_ns, 9_000_000_000_000_000_000);
    assert_eq!(t.gaps.len(), 1);
    assert_eq!((t.gaps[0].start_ns, t.gaps[0].end_ns), (3_600, Some(3_900)));
    assert_eq!(t.gaps[0].reason, "lost: GPU fell off the bus, code 15");
    let kinds: Vec<RowKind> = t.events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            RowKind::Reset,
            RowKind::Flag,
            RowKind::BadMark,
            RowKind::Event
        ]
    );
    assert_eq!(t.events[0].text, "from=99.5");
    assert_eq!(t.events[2].text, "bad label!, with comma");
    let f = t.footer.as_ref().unwrap();
    assert_eq!((f.samples, f.marks, f.bad_marks, f.gaps), (4, 2, 1, 1));
    assert_eq!(t.labels().get("infer_start"), Some(&1));
    // every data row has exactly six columns: nothing needs CSV quoting
    let text = std::fs::read_to_string(&path).unwrap();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        assert_eq!(line.split(',').count(), 6, "{line}");
        assert!(!line.contains('"'), "{line}");
    }
}

fn header_with_created(read: &Header) -> Header {
    let mut h = header();
    h.created = read.created.clone();
    h
}

#[test]
fn rows_reach_the_file_on_every_mark_and_at_least_every_flush_interval() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.csv");
    let clock = Arc::new(ManualClock::new(0, 0));
    let f = create_trace_file(&path, false).unwrap();
    let mut w = TraceWriter::new(f, &header(), clock.clone(), 1_000_000_000).unwrap();
    let size = || std::fs::metadata(&path).unwrap().len();
    let after_header = size();
    assert!(after_header > 0, "the header is flushed at once");
    let sample = |t| Reading {
        channel: 0,
        t_ns: t,
        value: 1.0,
    };
    w.sample(&sample(1)).unwrap();
    clock.advance(999_999_999);
    assert!(!w.maybe_flush().unwrap());
    assert_eq!(size(), after_header, "buffered until the interval is up");
    clock.advance(1);
    assert!(w.maybe_flush().unwrap());
    let after_flush = size();
    assert!(after_flush > after_header);
    w.sample(&sample(2)).unwrap();
    assert_eq!(size(), after_flush);
    w.mark(&mark(3, "m", &[], true)).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.ends_with(",m,\n"),
        "a mark is on disk as soon as it is written: {text}"
    );
    assert_eq!(w.next_flush_ns(), 2_000_000_000);
}

fn write_raw(dir: &Path, body: &str) -> std::path::PathBuf {
    let p = dir.join("raw.csv");
    let mut f = std::fs::File::create(&p).unwrap();
    let h = serde_json::to_string(&header()).unwrap();
    write!(
        f,
        "# flinch-trace v1\n# header {h}\nt_ns,kind,channel,value,label,fields\n{body}"
    )
    .unwrap();
    p
}

fn parse_error(r: Result<flinch_core::trace::Trace, Error>) -> (u64, String) {
    match r {
        Err(Error::TraceParse { line, message, .. }) => (line, message),
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[test]
fn damaged_traces_give_line_numbers_or_the_valid_part() {
    let dir = tempfile::tempdir().unwrap();
    // A crash mid-write: the last line has no newline. The rest is kept.
    let p = write_raw(dir.path(), "10,sample,dev.power,5,,\n20,sample,dev.pow");
    let t = read_trace(&p).unwrap();
    assert_eq!(t.channel("dev.power").unwrap().values, vec![5.0]);
    assert!(!t.complete());
    assert!(
        t.warnings
            .iter()
            .any(|w| w.contains("line 5") && w.contains("cut short")),
        "{:?}",
        t.warnings
    );
    assert!(t.warnings.iter().any(|w| w.contains("no footer")));

    let cases: [(&str, u64, &str); 8] = [
        (
            "10,sample,dev.power,5,,\n11,sample,dev.power,5\n",
            5,
            "expected 6 comma-separated columns",
        ),
        ("x,sample,dev.power,5,,\n", 4, "not an unsigned integer"),
        ("10,sample,dev.power,abc,,\n", 4, "not a number"),
        ("10,sample,dev.power,inf,,\n", 4, "not finite"),
        ("10,sample,gpu9.power,1,,\n", 4, "does not list"),
        ("10,mark,pigeon,,m,\n", 4, "expected fifo, file or api"),
        ("10,anchor,,,,real=5\n", 4, "real_ns"),
        (
            "99999999999999999999,sample,dev.power,1,,\n",
            4,
            "not an unsigned integer",
        ),
    ];
    for (body, line, needle) in cases {
        let p = write_raw(dir.path(), body);
        let (l, m) = parse_error(read_trace(&p));
        assert_eq!(l, line, "{body:?}: {m}");
        assert!(m.contains(needle), "{body:?}: {m}");
    }
    // non-UTF-8 bytes
    let p = dir.path().join("bin.csv");
    let mut bytes = std::fs::read(write_raw(dir.path(), "")).unwrap();
    bytes.extend_from_slice(b"10,sample,dev.power,\xff\xfe,,\n");
    std::fs::write(&p, bytes).unwrap();
    let (l, m) = parse_error(read_trace(&p));
    assert_eq!((l, m.contains("UTF-8")), (4, true), "{m}");
    // not a trace at all
    let (l, m) = parse_error(read_trace_from(
        &b"time,power\n1,2\n"[..],
        Path::new("x.csv"),
    ));
    assert_eq!(l, 1);
    assert!(m.contains("not a flinch trace"), "{m}");
    let (_, m) = parse_error(read_trace_from(&b""[..], Path::new("e.csv")));
    assert!(m.contains("empty"));
    // a newer format
    let mut h = header();
    h.version = 99;
    let text = format!(
        "# flinch-trace v1\n# header {}\nt_ns,kind,channel,value,label,fields\n",
        serde_json::to_string(&h).unwrap()
    );
    let (_, m) = parse_error(read_trace_from(text.as_bytes(), Path::new("n.csv")));
    assert!(m.contains("upgrade flinch"), "{m}");
    // unknown row kinds from a newer writer are skipped with a warning
    let p = write_raw(dir.path(), "10,hologram,,,,\n10,sample,dev.power,5,,\n");
    let t = read_trace(&p).unwrap();
    assert!(t.warnings.iter().any(|w| w.contains("hologram")));
    assert_eq!(t.sample_count(), 1);
}

#[test]
fn an_existing_trace_is_never_overwritten_or_written_through_a_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.csv");
    std::fs::write(&p, "precious").unwrap();
    let e = create_trace_file(&p, false).unwrap_err().to_string();
    assert!(e.contains("already exists") && e.contains("--force"), "{e}");
    assert_eq!(std::fs::read_to_string(&p).unwrap(), "precious");
    let target = dir.path().join("target");
    std::fs::write(&target, "other user's file").unwrap();
    let link = dir.path().join("link.csv");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    assert!(create_trace_file(&link, false).is_err());
    // with --force the link itself is replaced, the target untouched
    create_trace_file(&link, true).unwrap();
    assert_eq!(
        std::fs::read_to_string(&target).unwrap(),
        "other user's file"
    );
    assert!(
        !std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

/// Every kind of row, rows out of order, `\r\n` and empty lines, a footer.
fn everything_body() -> String {
    let mut b = String::new();
    for k in 0..400u64 {
        let t = 1_000 + k * 10_000;
        b.push_str(&format!("{t},sample,dev.power,{}.5,,\n", k % 7));
        if k % 3 == 0 {
            b.push_str(&format!(
                "{},sample,dev.energy,{},,\r\n",
                t + 3,
                (k * 3) % 100
            ));
        }
        if k % 50 == 7 {
            // a driver-buffer sample arriving late
            b.push_str(&format!("{},sample,dev.power,9,,\n", t - 25_000));
            b.push_str(&format!("{t},mark,fifo,120,step,req={} x=a%2Cb\n", k % 4));
            b.push_str(&format!("{t},gap,dev,,start,timeout%3A 5 s\n"));
            b.push_str(&format!("{},gap,dev,,end,\n", t + 5_000));
            b.push_str(&format!("{t},reset,dev.energy,0,reset,from=99\n"));
            b.push_str(&format!("{t},hologram,,,,\n\n"));
            b.push_str(&format!("{t},anchor,,,,real_ns={}\n", t * 2));
        }
    }
    b.push_str("# end {\"complete\":true,\"ended_by\":\"duration\",\"end_anchor\":{\"mono_ns\":9,\"real_ns\":9},\"samples\":1,\"marks\":1,\"bad_marks\":0,\"dropped_readings\":0,\"gaps\":1,\"cadences\":[]}\n");
    b
}

fn read_in_blocks(p: &Path, block: usize) -> Result<flinch_core::trace::Trace, Error> {
    use flinch_core::trace::stream::{TraceBuilder, TraceStream};
    let f = std::io::BufReader::new(std::fs::File::open(p).unwrap());
    let mut s = TraceStream::open(f, p)?.with_block_bytes(block);
    let mut b = TraceBuilder::new(s.header().clone(), p);
    while let Some(batches) = s.next_chunk(3 * block)? {
        for batch in batches {
            b.push(batch);
        }
    }
    Ok(b.finish(s.warnings()))
}

#[test]
fn blocks_of_any_size_read_the_same_trace_and_name_the_same_lines() {
    let dir = tempfile::tempdir().unwrap();
    let body = everything_body();
    let p = write_raw(dir.path(), &body);
    let whole = format!("{:?}", read_trace(&p).unwrap());
    let t = read_trace(&p).unwrap();
    assert!(t.channel("dev.power").unwrap().t_ns.is_sorted());
    assert_eq!((t.marks.len(), t.gaps.len(), t.events.len()), (8, 8, 8));
    assert!(
        t.warnings
            .iter()
            .any(|w| w.contains("rows of unknown kinds"))
    );
    for block in [1, 7, 64, 100, 4096] {
        assert_eq!(
            format!("{:?}", read_in_blocks(&p, block).unwrap()),
            whole,
            "blocks of {block} bytes"
        );
    }
    // An error deep inside: the same line whatever the blocks.
    let lines = body.lines().count() as u64;
    let bad = format!("{body}1,sample,dev.power,oops,,\n");
    let p = write_raw(dir.path(), &bad);
    for block in [1, 7, 100, 1 << 20] {
        let (l, m) = parse_error(read_in_blocks(&p, block));
        assert_eq!(l, 3 + lines + 1, "blocks of {block}: {m}");
    }
    // A last line cut short, at every block size.
    let cut = format!("{body}77,sample,dev.po");
    let p = write_raw(dir.path(), &cut);
    for block in [1, 7, 100, 1 << 20] {
        let t = read_in_blocks(&p, block).unwrap();
        let want = format!("line {}: the last line is cut short", 3 + lines + 1);
        assert!(
            t.warnings.iter().any(|w| w.starts_with(&want)),
            "blocks of {block}: {:?}",
            t.warnings
        );
    }
}

/// Traces written before the header described the machine read as they did (the shipped
/// examples are such recordings), and a newer writer's additions to `machine` are ignored.
#[test]
fn headers_without_a_machine_or_with_more_in_it_still_read() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for name in [
        "examples/llm/llm.flinch.csv",
        "examples/workloads/busy-idle.flinch.csv",
    ] {
        let path = repo.join(name);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains("\"machine\""),
            "{name} is no longer an old trace"
        );
        let t = read_trace(&path).unwrap();
        assert_eq!(t.header.machine, None, "{name}");
        assert!(
            !t.header.host.is_empty() && !t.header.kernel.is_empty(),
            "{name}"
        );
        assert!(t.sample_count() > 0, "{name}");
    }

    let dir = tempfile::tempdir().unwrap();
    let mut h = serde_json::to_value(header()).unwrap();
    h["machine"]["gpu_topology"] = serde_json::json!("NV18");
    h["machine"].as_object_mut().unwrap().remove("os_version");
    let p = dir.path().join("newer.csv");
    std::fs::write(
        &p,
        format!("# flinch-trace v1\n# header {h}\nt_ns,kind,channel,value,label,fields\n"),
    )
    .unwrap();
    let m = read_trace(&p).unwrap().header.machine.unwrap();
    assert_eq!(m.logical_cpus, Some(192));
    assert_eq!(m.os_version, None);
    assert_eq!(m.memory_bytes, Some(1_622_000_000_000));
}

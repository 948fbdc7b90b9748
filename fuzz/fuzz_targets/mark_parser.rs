//! The mark parser, fed any bytes a client can write to the FIFO or the marks file.
//!
//! Properties (beyond "never panics"):
//! - the error is the right one for the input's class: over the limit, not UTF-8, blank;
//! - an accepted mark is well formed: a valid label, valid keys other than `t`, no key
//!   twice, no value holding a character the parser splits on;
//! - `format_mark` re-formats it into a line that parses back equal; it may refuse only a
//!   value with Unicode whitespace the parser keeps (the client is stricter than the
//!   receiver) or a line that would outgrow the limit by its added newline;
//! - the received mark's trace row reads back as the same mark.

#![no_main]

use flinch_core::clock::{ClockAnchor, ManualClock};
use flinch_core::marks::{
    MAX_MARK_BYTES, Mark, MarkParseError, MarkVia, format_mark, is_valid_label, parse_mark,
};
use flinch_core::trace::{Footer, Header, TraceWriter, read_trace_from};
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::sync::Arc;

fuzz_target!(|data: &[u8]| check(data));

fn check(data: &[u8]) {
    let parsed = parse_mark(data);
    if data.len() > MAX_MARK_BYTES {
        assert_eq!(parsed, Err(MarkParseError::TooLong { len: data.len() }));
        return;
    }
    let Ok(text) = std::str::from_utf8(data) else {
        assert_eq!(parsed, Err(MarkParseError::NotUtf8));
        return;
    };
    if text.split_ascii_whitespace().next().is_none() {
        assert_eq!(parsed, Err(MarkParseError::Empty));
        return;
    }
    let Ok(m) = parsed else { return };

    assert!(is_valid_label(&m.label), "accepted label {:?}", m.label);
    for (i, (k, v)) in m.fields.iter().enumerate() {
        assert!(is_valid_label(k) && k != "t", "accepted key {k:?}");
        assert!(
            m.fields[..i].iter().all(|(k2, _)| k2 != k),
            "accepted key {k:?} twice"
        );
        assert!(
            !v.bytes().any(|b| b.is_ascii_whitespace()),
            "value {v:?} holds a separator"
        );
    }

    let fields: Vec<(&str, &str)> = m
        .fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    match format_mark(&m.label, m.t_ns, &fields) {
        Ok(line) => {
            assert!(line.len() <= MAX_MARK_BYTES && line.ends_with('\n'));
            assert_eq!(
                parse_mark(line.as_bytes()).as_ref(),
                Ok(&m),
                "{line:?} parses to something else"
            );
        }
        Err(MarkParseError::BadField(_)) => assert!(
            m.fields
                .iter()
                .any(|(_, v)| v.chars().any(char::is_whitespace)),
            "format_mark refused {m:?}"
        ),
        Err(MarkParseError::TooLong { len }) => assert!(
            len <= data.len() + 1,
            "formatting {m:?} grew it from {} to {len} bytes",
            data.len()
        ),
        Err(e) => panic!("format_mark refused {m:?}: {e}"),
    }

    // The received mark's trace row reads back as the same mark; a client's stamp far from
    // the receive time (either way) gives an extreme delay column.
    let recv_ns = m.t_ns.map_or(42, |t| t ^ (1 << 63));
    let mark = Mark::received(m, recv_ns, MarkVia::Fifo);
    let header = Header::new(10_000_000, ClockAnchor::default(), Vec::new());
    let clock = Arc::new(ManualClock::new(0, 0));
    let mut w = TraceWriter::new(Vec::new(), &header, clock, u64::MAX).unwrap();
    w.mark(&mark).unwrap();
    let bytes = w.finish(Footer::default()).unwrap();
    let t = read_trace_from(&bytes[..], Path::new("mark.flinch.csv"))
        .unwrap_or_else(|e| panic!("the row of {mark:?} does not read back: {e}"));
    assert_eq!(t.marks, [mark]);
}

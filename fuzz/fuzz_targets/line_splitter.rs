//! The line splitter, fed the byte stream a FIFO or a marks file delivers, in reads of any
//! size.
//!
//! Properties: the lines out are exactly those of a reference split written from the
//! splitter's contract (a line of up to `MAX_MARK_BYTES` with its newline is complete,
//! a longer one is reported once as overlong with its length, the unfinished last line is
//! given at the end), whether the stream is fed whole, byte by byte or in reads of varied
//! sizes (chosen from the input); no complete line ever exceeds the limit or holds a
//! newline; the splitter never holds back a whole mark's worth of bytes.

#![no_main]

use flinch_core::marks::{Line, LineSplitter, MAX_MARK_BYTES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| check(data));

#[derive(Debug, PartialEq, Eq)]
enum Out {
    Complete(Vec<u8>),
    Overlong(usize),
}

/// The splitter's contract, written plainly over the whole stream.
fn reference(data: &[u8]) -> Vec<Out> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        match rest.iter().position(|&b| b == b'\n') {
            Some(i) => {
                // The line with its newline.
                out.push(if i < MAX_MARK_BYTES {
                    Out::Complete(rest[..i].to_vec())
                } else {
                    Out::Overlong(i + 1)
                });
                rest = &rest[i + 1..];
            }
            None => {
                // The unfinished last line, given at `finish`.
                out.push(if rest.len() < MAX_MARK_BYTES {
                    Out::Complete(rest.to_vec())
                } else {
                    Out::Overlong(rest.len())
                });
                rest = &[];
            }
        }
    }
    out
}

fn collect(out: &mut Vec<Out>) -> impl FnMut(Line<'_>) + '_ {
    |l| {
        out.push(match l {
            Line::Complete(b) => {
                assert!(b.len() < MAX_MARK_BYTES, "a line of {} bytes", b.len());
                assert!(!b.contains(&b'\n'), "a line with a newline in it");
                Out::Complete(b.to_vec())
            }
            Line::Overlong(n) => {
                assert!(n >= MAX_MARK_BYTES, "an overlong line of {n} bytes");
                Out::Overlong(n)
            }
        })
    }
}

/// Feeds `data` in reads of the given sizes (cycled), then finishes.
fn split(data: &[u8], sizes: impl Iterator<Item = usize>) -> Vec<Out> {
    let mut s = LineSplitter::default();
    let mut out = Vec::new();
    let mut rest = data;
    for n in sizes {
        if rest.is_empty() {
            break;
        }
        let (read, tail) = rest.split_at(n.clamp(1, rest.len()));
        s.feed(read, collect(&mut out));
        assert!(
            s.pending() < MAX_MARK_BYTES,
            "the splitter holds {} bytes",
            s.pending()
        );
        rest = tail;
    }
    s.finish(collect(&mut out));
    assert_eq!(s.pending(), 0);
    out
}

/// Read sizes drawn from the input (FNV-1a seeded xorshift): mostly small, some around and
/// over the limit, so reads end inside lines, on newlines and across several lines.
fn read_sizes(data: &[u8]) -> impl Iterator<Item = usize> {
    let mut x = data.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    }) | 1;
    std::iter::repeat_with(move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        match x % 4 {
            0 => (x >> 8) as usize % 8 + 1,
            1 => (x >> 8) as usize % 300 + 1,
            2 => MAX_MARK_BYTES - 2 + (x >> 8) as usize % 5,
            _ => (x >> 8) as usize % (3 * MAX_MARK_BYTES) + 1,
        }
    })
}

fn check(data: &[u8]) {
    let want = reference(data);
    assert_eq!(split(data, std::iter::once(data.len())), want, "fed whole");
    assert_eq!(split(data, std::iter::repeat(1)), want, "fed byte by byte");
    assert_eq!(split(data, read_sizes(data)), want, "fed in varied reads");
}

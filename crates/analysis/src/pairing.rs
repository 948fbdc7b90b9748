//! Which marks pair into spans: all at once ([`pair_marks`]) or one mark at a time as a
//! trace streams by ([`Pairer`]); both follow the same rules, as `pair_marks` is built on
//! `Pairer`.

use flinch_core::marks::Mark;
use std::collections::{BTreeSet, HashMap, VecDeque};

/// Which marks pair into spans.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pairing {
    /// (start mark index, end mark index), in start order.
    pub pairs: Vec<(usize, usize)>,
    /// `from` marks never closed.
    pub unmatched_starts: Vec<usize>,
    /// `to` marks with nothing open.
    pub unmatched_ends: Vec<usize>,
}

/// Pairs marks (sorted by time) into spans from `from` to `to`.
///
/// Marks pair within their request id (`req`; marks without one pair among themselves):
/// each `to` closes the oldest open `from` of its request (first in, first out). When
/// `from` and `to` are the same label, each mark closes the span opened by the previous
/// one of its request (consecutive marks delimit spans).
pub fn pair_marks(marks: &[Mark], from: &str, to: &str) -> Pairing {
    let mut p = Pairing::default();
    let mut pairer = Pairer::new(from, to);
    for (i, m) in marks.iter().enumerate() {
        match pairer.push(i as u64, m, ()) {
            Paired::Span { start, .. } => p.pairs.push((start.0 as usize, i)),
            Paired::UnmatchedEnd => p.unmatched_ends.push(i),
            Paired::Opened | Paired::Ignored => {}
        }
    }
    p.unmatched_starts = pairer
        .unmatched_starts()
        .into_iter()
        .map(|(i, _)| i as usize)
        .collect();
    p.pairs.sort_unstable();
    p
}

/// What one mark did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Paired<T> {
    /// It closed the span opened by the start mark `start` (index and item); with the same
    /// label for both ends it also opened the next one.
    Span {
        /// The start mark's index and item.
        start: (u64, T),
        /// The start mark's time.
        start_ns: u64,
    },
    /// It opened a span.
    Opened,
    /// A `to` mark with nothing open in its request.
    UnmatchedEnd,
    /// Neither label.
    Ignored,
}

struct Open<T> {
    idx: u64,
    t_ns: u64,
    item: T,
}

/// Pairs marks one at a time, in time order, carrying an item per open mark (the mark
/// itself, when the caller keeps nothing else). Memory: the marks still open.
pub struct Pairer<T> {
    from: String,
    to: String,
    /// Open marks without a `req`, and per `req` (entries removed when empty, so memory
    /// follows the marks open, not the requests seen).
    no_req: VecDeque<Open<T>>,
    open: HashMap<String, VecDeque<Open<T>>>,
    /// (time, index) of every open mark: the oldest is where a span may still start.
    by_time: BTreeSet<(u64, u64)>,
}

impl<T: Clone> Pairer<T> {
    /// Pairs `from` marks with `to` marks.
    pub fn new(from: &str, to: &str) -> Self {
        Pairer {
            from: from.to_owned(),
            to: to.to_owned(),
            no_req: VecDeque::new(),
            open: HashMap::new(),
            by_time: BTreeSet::new(),
        }
    }

    /// The next mark in time order, with its index in that order and an item to keep while
    /// it is open.
    pub fn push(&mut self, idx: u64, m: &Mark, item: T) -> Paired<T> {
        let same = self.from == self.to;
        let is_from = m.label == self.from;
        let is_to = m.label == self.to;
        if !is_from && !is_to {
            return Paired::Ignored;
        }
        let req = m.req();
        let q = match req {
            None => &mut self.no_req,
            Some(r) => {
                if !self.open.contains_key(r) {
                    self.open.insert(r.to_owned(), VecDeque::new());
                }
                self.open.get_mut(r).expect("just inserted")
            }
        };
        let closed = if same || is_to { q.pop_front() } else { None };
        if same || is_from {
            q.push_back(Open {
                idx,
                t_ns: m.t_ns,
                item,
            });
            self.by_time.insert((m.t_ns, idx));
        }
        if q.is_empty()
            && let Some(r) = req
        {
            self.open.remove(r);
        }
        match closed {
            Some(o) => {
                self.by_time.remove(&(o.t_ns, o.idx));
                Paired::Span {
                    start: (o.idx, o.item),
                    start_ns: o.t_ns,
                }
            }
            None if same || is_from => Paired::Opened,
            None => Paired::UnmatchedEnd,
        }
    }

    /// The (time, index) of the oldest open mark.
    pub fn oldest_open(&self) -> Option<(u64, u64)> {
        self.by_time.first().copied()
    }

    /// Marks still open.
    pub fn open_count(&self) -> usize {
        self.by_time.len()
    }

    /// `from` marks never closed, by index (none when both labels are the same: the last
    /// mark of each request only ends a span).
    pub fn unmatched_starts(self) -> Vec<(u64, T)> {
        if self.from == self.to {
            return Vec::new();
        }
        let mut v: Vec<(u64, T)> = self
            .open
            .into_values()
            .flatten()
            .chain(self.no_req)
            .map(|o| (o.idx, o.item))
            .collect();
        v.sort_unstable_by_key(|(i, _)| *i);
        v
    }
}

//! Which marks pair into spans.

use flinch_core::marks::Mark;
use std::collections::{HashMap, VecDeque};

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
    let mut open: HashMap<Option<&str>, VecDeque<usize>> = HashMap::new();
    for (i, m) in marks.iter().enumerate() {
        let q = open.entry(m.req()).or_default();
        if from == to {
            if m.label == from {
                if let Some(j) = q.pop_front() {
                    p.pairs.push((j, i));
                }
                q.push_back(i);
            }
        } else if m.label == from {
            q.push_back(i);
        } else if m.label == to {
            match q.pop_front() {
                Some(j) => p.pairs.push((j, i)),
                None => p.unmatched_ends.push(i),
            }
        }
    }
    if from != to {
        p.unmatched_starts = open.into_values().flatten().collect();
        p.unmatched_starts.sort_unstable();
    }
    p.pairs.sort_unstable();
    p
}

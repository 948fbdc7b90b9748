//! The in-process mark lane: marks posted from the recording's own process (the Python
//! package's `rec.mark()` and windows) reach the writer without waking it.
//!
//! [`MarkSender::mark`](crate::recorder::MarkSender::mark) sends on the writer's control
//! queue, which wakes the writer thread for every mark: a futex wake-up on the caller's
//! thread, and on a machine of many CPUs a writer running next to the caller, contending for
//! the queue's lock and for the allocator. A posted mark instead goes into a bounded
//! lock-free queue that the writer empties whenever it wakes for anything else: at the
//! latest at the next flush (the recording's flush interval, 1 s by default), at once when
//! the lane is a quarter full, and when asked to
//! ([`MarkSender::request_flush`](crate::recorder::MarkSender::request_flush)). The caller
//! allocates nothing per post, formats and parses no line (the label and fields are
//! checked once, in a [`MarkSpec`]) and makes no system call.

use crate::recorder::mark_heap_bytes;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use flinch_core::marks::{Mark, MarkParseError, MarkVia, check_mark};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// How many posted marks the lane holds; past this a post is refused (`Full`) until the
/// writer empties it.
pub(crate) const LANE_CAPACITY: usize = 8192;

/// A mark's label and fields, checked once with the rules of the line protocol
/// ([`check_mark`]), to be posted any number of times, each with its own stamp. Cheap to
/// clone (shared).
#[derive(Clone, Debug)]
pub struct MarkSpec(Arc<SpecInner>);

#[derive(Debug)]
struct SpecInner {
    label: String,
    fields: Vec<(String, String)>,
    /// About how much memory it holds, for the lane's byte budget.
    bytes: usize,
}

impl MarkSpec {
    /// Checks `label` and `fields` (as a mark line would be: label and keys
    /// `[A-Za-z0-9_.:/-]+`, values without blanks, no key twice, no `t`, the line at most
    /// 4096 bytes).
    pub fn new(label: &str, fields: Vec<(String, String)>) -> Result<Self, MarkParseError> {
        let borrowed: Vec<(&str, &str)> = fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        check_mark(label, &borrowed)?;
        let bytes = mark_heap_bytes(std::mem::size_of::<SpecInner>(), label.len(), &fields);
        Ok(MarkSpec(Arc::new(SpecInner {
            label: label.to_owned(),
            fields,
            bytes,
        })))
    }

    /// The label.
    pub fn label(&self) -> &str {
        &self.0.label
    }

    /// The fields, in the order given.
    pub fn fields(&self) -> &[(String, String)] {
        &self.0.fields
    }

    /// The mark it makes, stamped `t_ns` (the writer builds it, not the caller).
    fn mark(&self, t_ns: u64) -> Mark {
        Mark {
            t_ns,
            recv_ns: t_ns,
            t_from_client: true,
            label: self.0.label.clone(),
            fields: self.0.fields.clone(),
            via: MarkVia::Api,
        }
    }
}

/// One posted mark.
pub(crate) struct Posted {
    spec: MarkSpec,
    t_ns: u64,
}

/// State shared by the lane's two ends.
pub(crate) struct LaneShared {
    /// Bytes the posted marks' specs hold (counted once per post), against `budget`.
    bytes: AtomicUsize,
    budget: usize,
    /// Set when the recording stops: later posts are refused.
    closed: AtomicBool,
    /// Posts under way (between the `closed` check and the queue), which stopping waits
    /// out so that every post that succeeded is written.
    posting: AtomicUsize,
    /// A drain was asked for and the writer has not emptied the lane since.
    drain_asked: AtomicBool,
}

/// Why a post was refused.
pub(crate) enum PostError {
    Full,
    Closed,
}

/// The posting end (inside every [`crate::recorder::MarkSender`]).
#[derive(Clone)]
pub(crate) struct LaneSender {
    tx: Sender<Posted>,
    shared: Arc<LaneShared>,
}

/// The writer's end.
pub(crate) struct LaneReceiver {
    rx: Receiver<Posted>,
    shared: Arc<LaneShared>,
}

/// A lane whose posted marks hold at most `budget_bytes` at a time.
pub(crate) fn lane(budget_bytes: usize) -> (LaneSender, LaneReceiver) {
    let (tx, rx) = crossbeam_channel::bounded(LANE_CAPACITY);
    let shared = Arc::new(LaneShared {
        bytes: AtomicUsize::new(0),
        budget: budget_bytes,
        closed: AtomicBool::new(false),
        posting: AtomicUsize::new(0),
        drain_asked: AtomicBool::new(false),
    });
    (
        LaneSender {
            tx,
            shared: shared.clone(),
        },
        LaneReceiver { rx, shared },
    )
}

impl LaneSender {
    /// Posts `spec` stamped `t_ns`, never waiting. `Ok(true)`: taken, and the lane is
    /// filling: the writer should be asked to drain it (once, until it has).
    pub(crate) fn post(&self, spec: &MarkSpec, t_ns: u64) -> Result<bool, PostError> {
        let s = &*self.shared;
        s.posting.fetch_add(1, Ordering::SeqCst);
        let r = self.post_open(spec, t_ns);
        s.posting.fetch_sub(1, Ordering::Release);
        r
    }

    fn post_open(&self, spec: &MarkSpec, t_ns: u64) -> Result<bool, PostError> {
        let s = &*self.shared;
        if s.closed.load(Ordering::SeqCst) {
            return Err(PostError::Closed);
        }
        let bytes = spec.0.bytes;
        let used = s.bytes.fetch_add(bytes, Ordering::Relaxed);
        // An item over the whole budget still goes through when the lane is empty.
        if used != 0 && used + bytes > s.budget {
            s.bytes.fetch_sub(bytes, Ordering::Relaxed);
            return Err(PostError::Full);
        }
        let posted = Posted {
            spec: spec.clone(),
            t_ns,
        };
        match self.tx.try_send(posted) {
            Ok(()) => {}
            Err(e) => {
                s.bytes.fetch_sub(bytes, Ordering::Relaxed);
                return Err(match e {
                    TrySendError::Full(_) => PostError::Full,
                    TrySendError::Disconnected(_) => PostError::Closed,
                });
            }
        }
        let filling = self.tx.len() > LANE_CAPACITY / 4 || used + bytes > s.budget / 4;
        Ok(filling && !s.drain_asked.swap(true, Ordering::AcqRel))
    }

    /// Refuses every later post, and waits for the posts under way to land in the lane.
    pub(crate) fn close(&self) {
        let s = &*self.shared;
        s.closed.store(true, Ordering::SeqCst);
        while s.posting.load(Ordering::Acquire) != 0 {
            std::thread::yield_now();
        }
    }
}

impl LaneReceiver {
    /// Takes the oldest posted mark, if any, as the mark the trace gets.
    pub(crate) fn try_recv(&self) -> Option<Mark> {
        let p = self.rx.try_recv().ok()?;
        self.shared
            .bytes
            .fetch_sub(p.spec.0.bytes, Ordering::Relaxed);
        Some(p.spec.mark(p.t_ns))
    }

    /// Whether nothing is posted.
    pub(crate) fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    /// The writer is about to empty the lane: a later filling asks again.
    pub(crate) fn draining(&self) {
        self.shared.drain_asked.store(false, Ordering::Release);
    }
}

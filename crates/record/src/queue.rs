//! A queue bounded by the memory its items hold: how received marks travel to the trace
//! writer.
//!
//! A received mark must never be dropped, and a flood of marks must never grow memory
//! without bound. A queue bounded by a number of items cannot promise the second (a 4096-byte
//! mark of a thousand tiny fields holds a hundred times the memory of a short one), and a
//! queue that drops when full breaks the first. So [`ByteBoundedSender::send`] *blocks* while
//! the items in flight hold more than the budget: the thread reading the FIFO stops reading,
//! the kernel's pipe fills, and clients, which write non-blocking, drop and count their marks
//! instead of waiting. The backpressure ends up where losing a mark is visible and counted
//! (the client), never inside the recorder, where it would be silent.
//!
//! An item larger than the whole budget still goes through when the queue is empty, so a
//! small budget never deadlocks.
//!
//! ```
//! use flinch_record::queue::byte_bounded;
//! let (tx, rx) = byte_bounded::<String>(100);
//! tx.send("first".into(), 60).unwrap();
//! assert!(tx.try_send("second".into(), 60).is_err()); // would exceed the budget
//! assert_eq!(rx.try_recv().as_deref(), Some("first"));
//! tx.try_send("second".into(), 60).unwrap(); // room again
//! assert_eq!(rx.in_flight_bytes(), 60);
//! ```

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, unbounded};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

struct State {
    used: usize,
    peak: usize,
    closed: bool,
}

struct Shared {
    budget: usize,
    state: Mutex<State>,
    freed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the counters inconsistent (they are
        // updated in single statements), so a poisoned lock is still good to use.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn release(&self, bytes: usize) {
        let mut st = self.lock();
        st.used = st.used.saturating_sub(bytes);
        drop(st);
        self.freed.notify_all();
    }
    fn close(&self) {
        self.lock().closed = true;
        self.freed.notify_all();
    }
}

/// Why [`ByteBoundedSender::try_send`] did not take an item.
#[derive(Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TrySendError<T> {
    /// The budget is used up: the item is handed back.
    Full(T),
    /// The queue was closed (the recording is stopping) or the receiver is gone.
    Closed(T),
}

/// The queue was closed or its receiver dropped; the item is handed back.
#[derive(Debug, PartialEq, Eq)]
pub struct Closed<T>(pub T);

/// The sending half; cheap to clone.
pub struct ByteBoundedSender<T> {
    tx: Sender<(T, usize)>,
    shared: Arc<Shared>,
}

impl<T> Clone for ByteBoundedSender<T> {
    fn clone(&self) -> Self {
        ByteBoundedSender {
            tx: self.tx.clone(),
            shared: self.shared.clone(),
        }
    }
}

/// The receiving half. Dropping it closes the queue, which wakes every blocked sender.
pub struct ByteBoundedReceiver<T> {
    rx: Receiver<(T, usize)>,
    shared: Arc<Shared>,
}

/// A queue holding at most `budget_bytes` (as the senders count them) at a time.
pub fn byte_bounded<T>(budget_bytes: usize) -> (ByteBoundedSender<T>, ByteBoundedReceiver<T>) {
    let (tx, rx) = unbounded();
    let shared = Arc::new(Shared {
        budget: budget_bytes,
        state: Mutex::new(State {
            used: 0,
            peak: 0,
            closed: false,
        }),
        freed: Condvar::new(),
    });
    (
        ByteBoundedSender {
            tx,
            shared: shared.clone(),
        },
        ByteBoundedReceiver { rx, shared },
    )
}

impl<T> ByteBoundedSender<T> {
    fn admit(&self, st: &mut State, bytes: usize) -> bool {
        if st.used == 0 || st.used.saturating_add(bytes) <= self.shared.budget {
            st.used += bytes;
            st.peak = st.peak.max(st.used);
            true
        } else {
            false
        }
    }

    fn enqueue(&self, item: T, bytes: usize) -> Result<(), Closed<T>> {
        self.tx.send((item, bytes)).map_err(|e| {
            self.shared.release(bytes);
            Closed(e.into_inner().0)
        })
    }

    /// Queues `item`, which holds about `bytes` of memory, waiting while the queue is over
    /// its budget. Fails only once the queue is closed.
    pub fn send(&self, item: T, bytes: usize) -> Result<(), Closed<T>> {
        let mut st = self.shared.lock();
        loop {
            if st.closed {
                return Err(Closed(item));
            }
            if self.admit(&mut st, bytes) {
                break;
            }
            st = self
                .shared
                .freed
                .wait(st)
                .unwrap_or_else(|e| e.into_inner());
        }
        drop(st);
        self.enqueue(item, bytes)
    }

    /// Queues `item` if the budget allows, never waiting.
    pub fn try_send(&self, item: T, bytes: usize) -> Result<(), TrySendError<T>> {
        let mut st = self.shared.lock();
        if st.closed {
            return Err(TrySendError::Closed(item));
        }
        if !self.admit(&mut st, bytes) {
            return Err(TrySendError::Full(item));
        }
        drop(st);
        self.enqueue(item, bytes)
            .map_err(|Closed(item)| TrySendError::Closed(item))
    }

    /// Refuses every later send (those waiting are woken and fail). Items already queued
    /// stay receivable.
    pub fn close(&self) {
        self.shared.close();
    }
}

impl<T> ByteBoundedReceiver<T> {
    /// Takes the oldest item, if any, without waiting.
    pub fn try_recv(&self) -> Option<T> {
        let (item, bytes) = self.rx.try_recv().ok()?;
        self.shared.release(bytes);
        Some(item)
    }

    /// Takes the oldest item, waiting up to `timeout` for one (an error: none came, or
    /// every sender is gone and the queue is empty).
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        let (item, bytes) = self.rx.recv_timeout(timeout)?;
        self.shared.release(bytes);
        Ok(item)
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    /// The underlying channel, for waiting on it together with others
    /// ([`crossbeam_channel::Select`]); take items with [`Self::try_recv`] only, so the
    /// budget is given back.
    pub fn selectable(&self) -> &Receiver<(T, usize)> {
        &self.rx
    }

    /// Bytes held by queued items now.
    pub fn in_flight_bytes(&self) -> usize {
        self.shared.lock().used
    }

    /// The most bytes ever held at once.
    pub fn peak_bytes(&self) -> usize {
        self.shared.lock().peak
    }

    /// The budget.
    pub fn budget_bytes(&self) -> usize {
        self.shared.budget
    }
}

impl<T> Drop for ByteBoundedReceiver<T> {
    fn drop(&mut self) {
        self.shared.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn a_sender_waits_for_room_and_nothing_is_lost_or_reordered() {
        let (tx, rx) = byte_bounded::<u32>(10_000);
        let sent = Arc::new(AtomicUsize::new(0));
        let producer = {
            let sent = sent.clone();
            std::thread::spawn(move || {
                for i in 0..1000u32 {
                    tx.send(i, 1_000).unwrap();
                    sent.fetch_add(1, Ordering::SeqCst);
                }
            })
        };
        // With nobody receiving, the producer stops at the budget: ten items.
        let t = std::time::Instant::now();
        while sent.load(Ordering::SeqCst) < 10 {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "producer never started"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(sent.load(Ordering::SeqCst), 10, "the budget was exceeded");
        assert_eq!(rx.in_flight_bytes(), 10_000);
        let mut got = Vec::new();
        while got.len() < 1000 {
            match rx.recv_timeout(Duration::from_secs(10)) {
                Ok(i) => got.push(i),
                Err(_) => panic!("the producer hung after {} items", got.len()),
            }
        }
        producer.join().unwrap();
        assert_eq!(got, (0..1000).collect::<Vec<_>>());
        assert_eq!(rx.peak_bytes(), 10_000);
        assert_eq!(rx.in_flight_bytes(), 0);
    }

    #[test]
    fn an_item_over_the_budget_passes_alone_and_try_send_never_waits() {
        let (tx, rx) = byte_bounded::<&str>(10);
        tx.send("big", 1_000).unwrap();
        assert_eq!(tx.try_send("small", 1), Err(TrySendError::Full("small")));
        assert_eq!(rx.try_recv(), Some("big"));
        tx.try_send("small", 1).unwrap();
        assert_eq!(rx.try_recv(), Some("small"));
        assert_eq!(rx.try_recv(), None);
    }

    #[test]
    fn closing_wakes_blocked_senders_and_keeps_queued_items() {
        let (tx, rx) = byte_bounded::<u8>(1);
        tx.send(1, 1).unwrap();
        let tx2 = tx.clone();
        let blocked = std::thread::spawn(move || tx2.send(2, 1));
        std::thread::sleep(Duration::from_millis(50));
        tx.close();
        assert_eq!(blocked.join().unwrap(), Err(Closed(2)));
        assert_eq!(tx.try_send(3, 0), Err(TrySendError::Closed(3)));
        assert_eq!(rx.try_recv(), Some(1));
        // Dropping the receiver closes too.
        let (tx, rx) = byte_bounded::<u8>(1);
        tx.send(1, 1).unwrap();
        let blocked = std::thread::spawn(move || tx.send(2, 1));
        std::thread::sleep(Duration::from_millis(50));
        drop(rx);
        assert_eq!(blocked.join().unwrap(), Err(Closed(2)));
    }
}

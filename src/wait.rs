//! The slow path: a user's FIFO queue of waiting threads and tasks, and direct hand-off.
//!
//! # No lost wake-ups
//!
//! A waiter registers (increments `signal` with SeqCst, under the queue lock), then
//! searches for an idle connection with SeqCst loads. A releaser makes its slot idle
//! with a SeqCst CAS (and fixes the idle hint, see `slab::idle`), then loads `signal`
//! with SeqCst. In the single total order of SeqCst
//! operations one of the two comes first: either the waiter's re-check sees the bit, or
//! the releaser sees the waiter and dispatches. Both paths take the queue lock to
//! dispatch, so a connection is handed to the *front* waiter (FIFO).
//!
//! # Fairness
//!
//! While anyone waits, new acquirers see `signal != 0` and queue behind instead of
//! taking an idle connection, so a thread that releases and re-acquires in a loop
//! cannot starve waiters.
//!
//! # Cancellation
//!
//! A waiter that gives up (timeout, dropped future) removes itself under the lock. If a
//! connection was granted to it in the meantime, it either uses it (timeout) or gives
//! it back through the same release path (dropped future), so nothing is lost.

use std::collections::VecDeque;
use std::task::Waker;

use crossbeam_utils::CachePadded;

use crate::slab::CallSite;
// The shim: std normally, loom's under `--cfg loom`, so the models in `loom_models.rs`
// explore this queue's own code.
use crate::sync::{Arc, AtomicU32, AtomicU64, Mutex, MutexGuard, Ordering, Thread};

/// Set in `signal` once the pool is closed.
const CLOSED: u64 = 1 << 63;

const PENDING: u64 = u64::MAX;
const CLOSED_OUTCOME: u64 = u64::MAX - 1;

/// What a wait ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The waiter now holds the borrow `generation` of `slot`, claimed and stamped for
    /// it by the granter.
    Granted {
        /// Slab slot index.
        slot: u32,
        /// The borrow's generation.
        generation: u64,
    },
    /// The pool closed.
    Closed,
}

/// How to wake a waiter.
#[derive(Debug, Clone)]
pub(crate) enum Wakeup {
    Thread(Thread),
    Task(Waker),
}

impl Wakeup {
    fn wake(self) {
        match self {
            Wakeup::Thread(t) => t.unpark(),
            Wakeup::Task(w) => w.wake(),
        }
    }
}

/// Who waits: recorded at registration so that the granter can stamp the borrow it
/// hands over (a grant is a borrow from that instant: leak scans and `borrows()` see
/// it even if the waiter never runs again).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Waiter {
    /// Where the acquire was called.
    pub(crate) site: CallSite,
    /// The waiting thread's tag (see `thread_tag`).
    pub(crate) borrower: u64,
}

/// One waiting thread or task.
#[derive(Debug)]
pub(crate) struct WaitNode {
    /// PENDING, CLOSED_OUTCOME, or the granted generation (below 2^48, so never a
    /// marker). Written once, under the queue lock, by whoever completes the node.
    outcome: AtomicU64,
    /// The granted slot; written before `outcome` and published by it.
    granted_slot: AtomicU32,
    wakeup: Mutex<Wakeup>,
    /// Who waits.
    pub(crate) waiter: Waiter,
}

impl WaitNode {
    /// The outcome, if the wait has ended.
    pub(crate) fn outcome(&self) -> Option<Outcome> {
        // Acquire: pairs with the Release in `complete`, so the granted slot index and
        // the granter's stamp (and, through its claim, the connection) are visible.
        match self.outcome.load(Ordering::Acquire) {
            PENDING => None,
            CLOSED_OUTCOME => Some(Outcome::Closed),
            generation => Some(Outcome::Granted {
                slot: self.granted_slot.load(Ordering::Relaxed),
                generation,
            }),
        }
    }

    /// Replaces the task waker (a future may be polled with a new one).
    pub(crate) fn set_waker(&self, waker: &Waker) {
        let mut slot = lock(&self.wakeup);
        match &*slot {
            Wakeup::Task(old) if old.will_wake(waker) => {}
            _ => *slot = Wakeup::Task(waker.clone()),
        }
    }

    /// Records the outcome; the caller wakes the waiter afterwards, outside its locks.
    fn complete(&self, outcome: Outcome) {
        let raw = match outcome {
            Outcome::Granted { slot, generation } => {
                self.granted_slot.store(slot, Ordering::Relaxed);
                generation
            }
            Outcome::Closed => CLOSED_OUTCOME,
        };
        self.outcome.store(raw, Ordering::Release);
    }

    /// Wakes the waiter. Never called under a queue or timer lock: a waker may poll or
    /// drop the future inline, which takes those locks again. The waker is cloned out
    /// of its own lock for the same reason (`set_waker` takes it).
    pub(crate) fn wake(&self) {
        let wakeup = lock(&self.wakeup).clone();
        wakeup.wake();
    }
}

/// A user's waiters.
pub(crate) struct WaitQueue {
    /// Waiter count, plus [`CLOSED`]. Read on every acquire and release, written only
    /// when someone waits, so it sits alone on its cache line and stays shared.
    signal: CachePadded<AtomicU64>,
    queue: Mutex<VecDeque<Arc<WaitNode>>>,
}

/// What a registration found.
pub(crate) enum Registration {
    Waiting(Arc<WaitNode>),
    Closed,
}

impl WaitQueue {
    pub(crate) fn new() -> Self {
        WaitQueue {
            signal: CachePadded::new(AtomicU64::new(0)),
            queue: Mutex::new(VecDeque::new()),
        }
    }

    /// Whether the fast path must step aside: someone waits, or the pool is closed.
    /// Relaxed: a stale answer only sends one acquire down the other path.
    #[inline]
    pub(crate) fn busy(&self) -> bool {
        self.signal.load(Ordering::Relaxed) != 0
    }

    /// The releaser's half of the handshake: called after the SeqCst publication of an
    /// idle bit; true if a dispatch is needed.
    #[inline]
    pub(crate) fn needs_dispatch(&self) -> bool {
        crate::sync::handshake();
        self.signal.load(Ordering::SeqCst) != 0
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.signal.load(Ordering::Acquire) & CLOSED != 0
    }

    /// Number of waiters right now.
    pub(crate) fn waiting(&self) -> usize {
        (self.signal.load(Ordering::Relaxed) & !CLOSED) as usize
    }

    /// Joins the back of the queue.
    pub(crate) fn register(&self, wakeup: Wakeup, waiter: Waiter) -> Registration {
        let mut queue = lock(&self.queue);
        if self.is_closed() {
            return Registration::Closed;
        }
        let node = Arc::new(WaitNode {
            outcome: AtomicU64::new(PENDING),
            granted_slot: AtomicU32::new(0),
            wakeup: Mutex::new(wakeup),
            waiter,
        });
        queue.push_back(node.clone());
        // SeqCst: the waiter's half of the handshake (see the module docs): ordered
        // before the SeqCst loads of the search that follows (a fence under loom,
        // which models SeqCst accesses as AcqRel; without it the models find the
        // lost wake-up).
        self.signal.fetch_add(1, Ordering::SeqCst);
        crate::sync::handshake();
        Registration::Waiting(node)
    }

    /// Hands idle connections to waiters, front first, while `claim` finds one for the
    /// front waiter (it claims and stamps a borrow for that waiter and returns
    /// `(slot, generation)`; its reads must be SeqCst, see the module docs). Each
    /// waiter is woken after the lock is released. Returns false if the pool is closed
    /// (the caller drains).
    pub(crate) fn dispatch(&self, mut claim: impl FnMut(&Waiter) -> Option<(u32, u64)>) -> bool {
        loop {
            let granted = {
                let mut queue = lock(&self.queue);
                if self.is_closed() {
                    return false;
                }
                let Some(front) = queue.front() else {
                    return true;
                };
                let Some((slot, generation)) = claim(&front.waiter) else {
                    return true;
                };
                let node = queue.pop_front().expect("queue is non-empty");
                self.signal.fetch_sub(1, Ordering::Relaxed);
                node.complete(Outcome::Granted { slot, generation });
                node
            };
            granted.wake();
        }
    }

    /// Withdraws `node`. `None` if it was still waiting (now removed); otherwise the
    /// outcome it was completed with, which the caller now owns.
    pub(crate) fn cancel(&self, node: &Arc<WaitNode>) -> Option<Outcome> {
        let mut queue = lock(&self.queue);
        if let Some(pos) = queue.iter().position(|n| Arc::ptr_eq(n, node)) {
            queue.remove(pos);
            self.signal.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        drop(queue);
        node.outcome()
    }

    /// Closes the queue if nobody waits (its partition is being retired): a later
    /// registration finds it closed while the pool is open, and looks the user up
    /// again. Whether it closed. Under the queue lock, so no registration overlaps.
    pub(crate) fn close_if_empty(&self) -> bool {
        let queue = lock(&self.queue);
        if !queue.is_empty() || self.is_closed() {
            return false;
        }
        // Release is enough: registrations read CLOSED under the same lock; acquirers
        // that see the bit (Relaxed, in `busy`) only step off the fast path.
        self.signal.fetch_or(CLOSED, Ordering::Release);
        true
    }

    /// Opens a queue closed by [`close_if_empty`](Self::close_if_empty) (its partition
    /// is reused for another user).
    pub(crate) fn reopen(&self) {
        let _queue = lock(&self.queue);
        self.signal.fetch_and(!CLOSED, Ordering::Release);
    }

    /// Marks the queue closed and wakes every waiter with [`Outcome::Closed`] (after
    /// the lock is released).
    pub(crate) fn close(&self) {
        let closed: Vec<Arc<WaitNode>> = {
            let mut queue = lock(&self.queue);
            // SeqCst: a releaser that publishes an idle bit after this sees CLOSED and
            // drains; one that published before is drained by the closer.
            self.signal.fetch_or(CLOSED, Ordering::SeqCst);
            let waiters = queue.len() as u64;
            self.signal.fetch_sub(waiters, Ordering::Relaxed);
            let closed: Vec<_> = queue.drain(..).collect();
            for node in &closed {
                node.complete(Outcome::Closed);
            }
            closed
        };
        for node in closed {
            node.wake();
        }
    }
}

/// Poison-tolerant lock: the data behind these mutexes stays consistent across a panic
/// (each critical section is a few infallible steps), so a poisoned lock is still usable.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A runtime-agnostic timer for async waiters: one lazily started thread that wakes a
/// waiting task at its deadline, so `acquire().await` times out on any executor.
#[cfg(not(loom))]
pub(crate) mod timer {
    use std::collections::BinaryHeap;
    use std::sync::{Arc, Condvar, Mutex, Weak};
    use std::time::Instant;

    use once_cell::sync::Lazy;

    use super::{WaitNode, lock};

    struct Entry {
        deadline: Instant,
        node: Weak<WaitNode>,
    }

    impl PartialEq for Entry {
        fn eq(&self, other: &Self) -> bool {
            self.deadline == other.deadline
        }
    }
    impl Eq for Entry {}
    impl PartialOrd for Entry {
        fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
            Some(self.cmp(other))
        }
    }
    impl Ord for Entry {
        // Reversed: BinaryHeap is a max-heap and the earliest deadline must be on top.
        fn cmp(&self, other: &Self) -> std::cmp::Ordering {
            other.deadline.cmp(&self.deadline)
        }
    }

    struct Timer {
        entries: Mutex<BinaryHeap<Entry>>,
        changed: Condvar,
    }

    static TIMER: Lazy<&'static Timer> = Lazy::new(|| {
        let timer: &'static Timer = Box::leak(Box::new(Timer {
            entries: Mutex::new(BinaryHeap::new()),
            changed: Condvar::new(),
        }));
        std::thread::Builder::new()
            .name("heliosdb-timer".into())
            .spawn(move || run(timer))
            .expect("spawning the heliosdb-timer thread");
        timer
    });

    /// Wakes `node`'s task at `deadline` (unless it is gone by then).
    pub(crate) fn arm(deadline: Instant, node: &Arc<WaitNode>) {
        let timer = *TIMER;
        let mut entries = lock(&timer.entries);
        let earliest = entries.peek().is_none_or(|e| deadline < e.deadline);
        entries.push(Entry {
            deadline,
            node: Arc::downgrade(node),
        });
        if earliest {
            timer.changed.notify_one();
        }
    }

    fn run(timer: &'static Timer) {
        let mut entries = lock(&timer.entries);
        let mut due = Vec::new();
        loop {
            let now = Instant::now();
            while entries.peek().is_some_and(|e| e.deadline <= now) {
                due.push(entries.pop().expect("peeked").node);
            }
            if !due.is_empty() {
                // Woken outside the timer's lock: a waker that polls inline may arm
                // another deadline.
                drop(entries);
                for node in due.drain(..).filter_map(|n| n.upgrade()) {
                    node.wake();
                }
                entries = lock(&timer.entries);
                continue;
            }
            entries = match entries.peek().map(|e| e.deadline - now) {
                Some(wait) => {
                    timer
                        .changed
                        .wait_timeout(entries, wait)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
                None => timer
                    .changed
                    .wait(entries)
                    .unwrap_or_else(|p| p.into_inner()),
            };
        }
    }
}

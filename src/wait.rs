//! The slow path: a user's queue of waiting threads and tasks, with eventual fairness.
//!
//! # Eventual fairness
//!
//! Strict FIFO hand-off makes every release at saturation wake a parked thread (a futex
//! wake and a context switch per borrow). So, as Go's `sync.Mutex` (normal and
//! starvation modes) and WebKit's ParkingLot ("eventual fairness") do, a released
//! connection simply goes idle while no waiter has waited longer than the pool's
//! *fairness bound*: the releaser itself or an arriving caller may take it again
//! ("barging"), and the waiters compete for it from their place in the queue (their
//! polls give the releaser a moment first: `Partition::stays_idle`). A waiter
//! that has waited past the bound declares itself *overdue*; while any queued waiter
//! is overdue, the queue is in *hand-off* mode: arriving callers queue behind, and
//! every release grants its connection to the front (oldest) waiter. Hand-off mode ends
//! when the last overdue waiter has been served. A bound of zero makes every waiter
//! overdue at once: strict FIFO. A waiter never leaves its place while it waits, so a
//! barged waiter keeps its age and the bound always triggers.
//!
//! # No lost wake-ups
//!
//! `signal` holds the waiter count, [`CLOSED`], [`HANDOFF`] and [`AWAKE`]. A waiter
//! registers (SeqCst RMW under the queue lock), then searches for an idle connection
//! with SeqCst loads (a dispatch). A releaser makes its slot idle with a SeqCst CAS (and
//! fixes the idle hint, see `slab::idle`), then loads `signal` with SeqCst. In the single
//! total order of SeqCst operations one comes first: either the waiter's search sees the
//! idle bit, or the releaser sees the waiter. A releaser that sees a waiter then:
//!
//! - in hand-off mode (or closed): dispatches, under the queue lock, to the front;
//! - if [`AWAKE`] is set: does nothing. Some waiter is running and has promised to
//!   search again before it parks or leaves: it clears `AWAKE` (SeqCst RMW) first, then
//!   dispatches. The releaser's load saw `AWAKE` set, so it precedes the clear, and the
//!   dispatch after the clear sees the idle bit;
//! - otherwise: sets `AWAKE` and wakes the front waiter (under the lock), which makes
//!   that waiter the one that promised. At most one wake-up is in flight, so a thread
//!   releasing and re-acquiring in a loop makes no system call per borrow.
//!
//! A dispatch hands every idle connection it finds to the waiters, front first.
//!
//! # Deferred wake-ups for tasks
//!
//! A woken thread spins for a while, so it can catch a connection its releaser does
//! not take back at once. A woken task cannot: it runs only once its executor polls
//! it, and a task that releases in a loop has taken the connection back by then, so
//! each such wake-up is a wasted poll (and a scheduler round trip). The queue counts
//! consecutive polls of parked task waiters that found nothing (`missed_task_wakes`;
//! any poll after a park counts: a releaser's wake-up, the timer's, or an executor's
//! spurious one), reset by one that is served; after [`DEFER_TASK_WAKE_AFTER`] of
//! them, a releaser that would wake a task at the front arms the crate's timer to wake
//! it [`DEFERRED_TASK_WAKE`] later instead. It still sets [`AWAKE`] first, so the
//! promise above holds, only later: the woken task dispatches before it parks again.
//! Where releasers leave their connection to the waiters (the usual service), the
//! wake-ups find it, the count stays at zero, and tasks are woken at once. A deferral
//! costs the releaser the timer's lock and, usually, a futex call to wake the timer
//! thread; one per deferred wake-up, not per release (AWAKE stays set until the task
//! is polled).
//!
//! # Cancellation
//!
//! A waiter that gives up (timeout, dropped future) removes itself under the lock. If a
//! connection was granted to it in the meantime, it either uses it (timeout) or gives
//! it back through the same release path (dropped future), so nothing is lost. A waiter
//! that leaves in any way while `AWAKE` is set clears it and dispatches, keeping the
//! promise a releaser may have counted on.

use std::collections::VecDeque;
use std::task::Waker;

use crossbeam_utils::CachePadded;

use crate::slab::CallSite;
// The shim: std normally, loom's under `--cfg loom`, so the models in `loom_models.rs`
// explore this queue's own code.
use crate::sync::{Arc, AtomicU32, AtomicU64, Mutex, MutexGuard, Ordering, Thread};

/// Set in `signal` once the pool is closed, or the partition retired (`close_if_empty`;
/// cleared again by `reopen` when the partition is reused).
const CLOSED: u64 = 1;
/// Set in `signal` while a queued waiter is overdue: arrivals queue, releases hand off.
const HANDOFF: u64 = 1 << 1;
/// Set in `signal` while a waiter is running that will dispatch before it parks or
/// leaves; releasers then need not wake anyone.
const AWAKE: u64 = 1 << 2;
/// One waiter in `signal`'s count (the bits above the flags).
const ONE_WAITER: u64 = 1 << 3;

/// Consecutive polls of parked task waiters that found nothing, after which releasers
/// defer waking a task (see the module docs): a few, so that one unlucky wake-up does
/// not delay the next.
const DEFER_TASK_WAKE_AFTER: u32 = 4;

/// How much later a deferred wake-up comes: long enough for a releasing task to take
/// its connection back and yield several times over, short against a borrow's usual
/// length. The timer thread sleeps with the kernel's timer slack (50 us by default on
/// Linux), so the wake-up comes 20-70 us after the release.
#[cfg(not(loom))]
const DEFERRED_TASK_WAKE: std::time::Duration = std::time::Duration::from_micros(20);

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
    /// Whether `wakeup` is a task's (fixed at registration): its wake-ups may be
    /// deferred (see the module docs).
    task: bool,
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

/// A queued waiter and whether it has declared itself overdue.
struct Entry {
    node: Arc<WaitNode>,
    overdue: bool,
}

/// The queue proper, under the queue lock.
struct Queue {
    /// Oldest first.
    entries: VecDeque<Entry>,
    /// How many entries are overdue: hand-off mode is on while this is non-zero.
    overdue: usize,
}

impl Queue {
    /// Takes the entry at `pos` out, keeping the count and the flags right.
    fn remove(&mut self, pos: usize, signal: &AtomicU64) -> Arc<WaitNode> {
        let entry = self.entries.remove(pos).expect("a queued position");
        if entry.overdue {
            self.overdue -= 1;
            if self.overdue == 0 {
                // The last overdue waiter is served or gone: barging is allowed again.
                signal.fetch_and(!HANDOFF, Ordering::Relaxed);
            }
        }
        signal.fetch_sub(ONE_WAITER, Ordering::Relaxed);
        entry.node
    }
}

/// A user's waiters.
pub(crate) struct WaitQueue {
    /// Waiter count and flags. Read on every acquire and release, written only when
    /// someone waits, so it sits alone on its cache line and stays shared.
    signal: CachePadded<AtomicU64>,
    queue: Mutex<Queue>,
    /// Consecutive polls of parked task waiters that found nothing, up to
    /// [`DEFER_TASK_WAKE_AFTER`] (see the module docs). Relaxed loads and stores: a
    /// lost update only makes one wake-up come at once, or one deferred.
    missed_task_wakes: AtomicU32,
}

/// What a registration found.
pub(crate) enum Registration {
    /// Queued. The flag: whether this waiter became the awake one (no other was), so
    /// it should spin before parking; otherwise the awake one searches for it and it
    /// may park at once.
    Waiting(Arc<WaitNode>, bool),
    Closed,
}

impl WaitQueue {
    pub(crate) fn new() -> Self {
        WaitQueue {
            signal: CachePadded::new(AtomicU64::new(0)),
            queue: Mutex::new(Queue {
                entries: VecDeque::new(),
                overdue: 0,
            }),
            missed_task_wakes: AtomicU32::new(0),
        }
    }

    /// Whether the fast path must step aside: a waiter is overdue (hand-off mode), or
    /// the queue is closed (the pool closed, or the partition retired). Waiters that are not overdue yet do not stop an arriving
    /// caller from taking an idle connection. Relaxed: a stale answer only sends one
    /// acquire down the other path, or lets it take one connection before an overdue
    /// waiter (whose hand-off comes with the next release).
    #[inline]
    pub(crate) fn busy(&self) -> bool {
        self.signal.load(Ordering::Relaxed) & (CLOSED | HANDOFF) != 0
    }

    /// The releaser's half of the handshake: called after the SeqCst publication of an
    /// idle bit; true if a dispatch is needed (hand-off mode, or closed). Wakes the
    /// front waiter itself when nobody is awake to find the connection (see the module
    /// docs).
    #[inline]
    pub(crate) fn needs_dispatch(&self) -> bool {
        crate::sync::handshake();
        let signal = self.signal.load(Ordering::SeqCst);
        signal != 0 && self.idle_while_waiting(signal)
    }

    /// `needs_dispatch` when someone waits or the pool is closed.
    #[cold]
    #[inline(never)]
    fn idle_while_waiting(&self, signal: u64) -> bool {
        if signal & (CLOSED | HANDOFF) != 0 {
            return true;
        }
        if signal & AWAKE == 0 {
            self.wake_front();
        }
        false
    }

    /// Makes the front waiter the awake one: sets [`AWAKE`] and wakes it, so it
    /// searches again (unless a waiter became awake meanwhile). A task whose recent
    /// wake-ups kept finding nothing is woken a moment later, by the timer (see the
    /// module docs).
    fn wake_front(&self) {
        let front = {
            let queue = lock(&self.queue);
            let Some(front) = queue.entries.front() else {
                return; // Everyone left meanwhile.
            };
            // Relaxed: the lock orders this with the other writers of AWAKE that matter
            // here (a registration); a concurrent clear by a waiter leaving only makes
            // this wake-up spare.
            if self.signal.fetch_or(AWAKE, Ordering::Relaxed) & AWAKE != 0 {
                return;
            }
            front.node.clone()
        };
        #[cfg(not(loom))]
        if self.defers_wake_of(&front) {
            timer::arm(std::time::Instant::now() + DEFERRED_TASK_WAKE, &front);
            return;
        }
        front.wake();
    }

    /// Whether a releaser defers waking `front` (see the module docs): a task, after
    /// [`DEFER_TASK_WAKE_AFTER`] wake-ups in a row found nothing. Threads, never.
    fn defers_wake_of(&self, front: &WaitNode) -> bool {
        front.task && self.missed_task_wakes.load(Ordering::Relaxed) >= DEFER_TASK_WAKE_AFTER
    }

    /// A task waiter polled after it had parked reports whether that poll served it
    /// (it found or had been granted a connection, or the pool closed) or found nothing
    /// (it parks again). See the module docs.
    pub(crate) fn note_task_wake(&self, served: bool) {
        let missed = self.missed_task_wakes.load(Ordering::Relaxed);
        let next = match served {
            true => 0,
            false => (missed + 1).min(DEFER_TASK_WAKE_AFTER),
        };
        if next != missed {
            self.missed_task_wakes.store(next, Ordering::Relaxed);
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.signal.load(Ordering::Acquire) & CLOSED != 0
    }

    /// Number of waiters right now.
    pub(crate) fn waiting(&self) -> usize {
        (self.signal.load(Ordering::Relaxed) / ONE_WAITER) as usize
    }

    /// Joins the back of the queue, awake (the caller searches right after, see the
    /// module docs; if another waiter was awake already, that one keeps the promise
    /// and this one need not spin). `overdue`: the waiter is past the fairness bound already (a bound
    /// of zero), so hand-off mode starts now.
    pub(crate) fn register(&self, wakeup: Wakeup, waiter: Waiter, overdue: bool) -> Registration {
        let mut queue = lock(&self.queue);
        if self.is_closed() {
            return Registration::Closed;
        }
        let node = Arc::new(WaitNode {
            outcome: AtomicU64::new(PENDING),
            granted_slot: AtomicU32::new(0),
            task: matches!(wakeup, Wakeup::Task(_)),
            wakeup: Mutex::new(wakeup),
            waiter,
        });
        queue.entries.push_back(Entry {
            node: node.clone(),
            overdue,
        });
        let mut flags = AWAKE;
        if overdue {
            queue.overdue += 1;
            flags |= HANDOFF;
        }
        // SeqCst: the waiter's half of the handshake (see the module docs): ordered
        // before the SeqCst loads of the search that follows (a fence under loom,
        // which models SeqCst accesses as AcqRel; without it the models find the
        // lost wake-up). The flags first: a releaser that sees the count sees them.
        let before = self.signal.fetch_or(flags, Ordering::Relaxed);
        self.signal.fetch_add(ONE_WAITER, Ordering::SeqCst);
        crate::sync::handshake();
        Registration::Waiting(node, before & AWAKE == 0)
    }

    /// `node` has waited past the fairness bound: hand-off mode until it is served.
    /// The caller dispatches next (a connection may be idle already, barged for by
    /// nobody). Nothing if it is no longer queued.
    pub(crate) fn declare_overdue(&self, node: &Arc<WaitNode>) {
        let mut queue = lock(&self.queue);
        let Some(entry) = queue
            .entries
            .iter_mut()
            .find(|e| Arc::ptr_eq(&e.node, node))
        else {
            return;
        };
        if entry.overdue {
            return;
        }
        entry.overdue = true;
        queue.overdue += 1;
        // SeqCst: the waiter's half of the handshake with releasers, as in `register`;
        // a releaser that misses it is matched by the caller's dispatch.
        self.signal.fetch_or(HANDOFF, Ordering::SeqCst);
        crate::sync::handshake();
    }

    /// A running waiter stops being the awake one (it is about to park, or it left the
    /// queue): clears [`AWAKE`]. Returns whether it was set while others wait: then a
    /// releaser may have counted on it, and the caller must dispatch (see the module
    /// docs). A waiter about to park dispatches anyway, for itself.
    pub(crate) fn stop_awake(&self) -> bool {
        // SeqCst: the waiter's half of the AWAKE handshake; the dispatch that follows
        // reads SeqCst (and under loom, the fence orders the two).
        let before = self.signal.fetch_and(!AWAKE, Ordering::SeqCst);
        crate::sync::handshake();
        // Called after this waiter left the count, or (before parking) while still in
        // it; then it dispatches anyway and ignores the answer.
        before & AWAKE != 0 && before >= ONE_WAITER
    }

    /// Hands idle connections to waiters, front first, while `claim` finds one for the
    /// front waiter (it claims and stamps a borrow for that waiter and returns
    /// `(slot, generation)`; its reads must be SeqCst, see the module docs). Each
    /// waiter is woken after the lock is released. Returns false if the queue is closed
    /// (the caller drains if the pool closed; a retired partition has nothing to drain).
    pub(crate) fn dispatch(&self, mut claim: impl FnMut(&Waiter) -> Option<(u32, u64)>) -> bool {
        loop {
            let granted = {
                let mut queue = lock(&self.queue);
                if self.is_closed() {
                    return false;
                }
                let Some(front) = queue.entries.front() else {
                    return true;
                };
                let Some((slot, generation)) = claim(&front.node.waiter) else {
                    return true;
                };
                let node = queue.remove(0, &self.signal);
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
        if let Some(pos) = queue
            .entries
            .iter()
            .position(|e| Arc::ptr_eq(&e.node, node))
        {
            queue.remove(pos, &self.signal);
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
        if !queue.entries.is_empty() || self.is_closed() {
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
        let queue = lock(&self.queue);
        debug_assert!(queue.entries.is_empty(), "a retired queue stays empty");
        // The whole word: no waiter, no flag (a retired queue has had neither since it
        // closed; cleared outright so nothing stale outlives the reuse).
        self.signal.store(0, Ordering::Release);
        // The previous user's tasks' wake-up record is not the next user's.
        self.missed_task_wakes.store(0, Ordering::Relaxed);
    }

    /// Marks the queue closed and wakes every waiter with [`Outcome::Closed`] (after
    /// the lock is released).
    pub(crate) fn close(&self) {
        let closed: Vec<Arc<WaitNode>> = {
            let mut queue = lock(&self.queue);
            // SeqCst: a releaser that publishes an idle bit after this sees CLOSED and
            // drains; one that published before is drained by the closer.
            self.signal.fetch_or(CLOSED, Ordering::SeqCst);
            let mut closed = Vec::with_capacity(queue.entries.len());
            while !queue.entries.is_empty() {
                closed.push(queue.remove(0, &self.signal));
            }
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
/// waiting task at the instants armed for it: by the task (its fairness bound, its
/// deadline), so `acquire().await` declares itself overdue and times out on any
/// executor, and by a releaser deferring its wake-up (see the module docs).
///
/// A waiter arms an instant only when it goes to sleep, and each instant once, so a
/// borrow served by its own search never touches the timer. The thread is woken (a
/// futex call) only when a new instant is earlier than the one it sleeps until; while
/// it runs, it sees new entries before it sleeps again. It sleeps past the instants of
/// waiters gone already (served, or dropped), so a stream of short waits does not wake
/// it at every waiter's fairness bound.
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

    /// What the timer thread is doing, as far as an arming caller needs to know.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Sleep {
        /// Awake (or woken and not yet running): it looks at the heap before it
        /// sleeps again, so nobody need wake it.
        Running,
        /// Asleep until this instant.
        Until(Instant),
        /// Asleep with nothing armed.
        Idle,
    }

    struct State {
        entries: BinaryHeap<Entry>,
        sleep: Sleep,
    }

    struct Timer {
        state: Mutex<State>,
        changed: Condvar,
    }

    impl State {
        /// The earliest instant of a waiter still alive, after dropping the entries of
        /// waiters gone already: most waiters arm their fairness bound and are served
        /// long before it, and their entries would wake the thread for nothing.
        fn next_live_instant(&mut self) -> Option<Instant> {
            while self.entries.peek()?.node.strong_count() == 0 {
                self.entries.pop();
            }
            self.entries.peek().map(|e| e.deadline)
        }
    }

    impl Timer {
        fn new() -> Self {
            Timer {
                state: Mutex::new(State {
                    entries: BinaryHeap::new(),
                    sleep: Sleep::Running,
                }),
                changed: Condvar::new(),
            }
        }

        /// Adds the entry; wakes the thread only if it sleeps past `deadline`. Returns
        /// whether it did.
        fn arm(&self, deadline: Instant, node: &Arc<WaitNode>) -> bool {
            let mut state = lock(&self.state);
            state.entries.push(Entry {
                deadline,
                node: Arc::downgrade(node),
            });
            let wake = match state.sleep {
                Sleep::Running => false,
                Sleep::Until(until) => deadline < until,
                Sleep::Idle => true,
            };
            if wake {
                // Woken: it recomputes its sleep from the heap, so later arms until it
                // sleeps again need not wake it a second time.
                state.sleep = Sleep::Running;
                self.changed.notify_one();
            }
            wake
        }

        fn run(&self) -> ! {
            let mut state = lock(&self.state);
            let mut due = Vec::new();
            loop {
                let now = Instant::now();
                while state.entries.peek().is_some_and(|e| e.deadline <= now) {
                    due.push(state.entries.pop().expect("peeked").node);
                }
                if !due.is_empty() {
                    // Woken outside the timer's lock: a waker that polls inline may arm
                    // another instant.
                    drop(state);
                    for node in due.drain(..).filter_map(|n| n.upgrade()) {
                        node.wake();
                    }
                    state = lock(&self.state);
                    continue;
                }
                state = match state.next_live_instant() {
                    Some(deadline) => {
                        state.sleep = Sleep::Until(deadline);
                        self.changed
                            .wait_timeout(state, deadline - now)
                            .unwrap_or_else(|p| p.into_inner())
                            .0
                    }
                    None => {
                        state.sleep = Sleep::Idle;
                        self.changed.wait(state).unwrap_or_else(|p| p.into_inner())
                    }
                };
                state.sleep = Sleep::Running;
            }
        }
    }

    static TIMER: Lazy<&'static Timer> = Lazy::new(|| {
        let timer: &'static Timer = Box::leak(Box::new(Timer::new()));
        std::thread::Builder::new()
            .name("heliosdb-timer".into())
            .spawn(move || timer.run())
            .expect("spawning the heliosdb-timer thread");
        timer
    });

    /// Wakes `node`'s task at `deadline` (unless it is gone by then).
    pub(crate) fn arm(deadline: Instant, node: &Arc<WaitNode>) {
        TIMER.arm(deadline, node);
    }

    #[cfg(test)]
    mod tests {
        use std::time::Duration;

        use super::*;
        use crate::slab::CallSite;
        use crate::wait::{Registration, WaitQueue, Waiter, Wakeup};

        fn node() -> Arc<WaitNode> {
            let queue = WaitQueue::new();
            let waiter = Waiter {
                site: CallSite::Rust(std::panic::Location::caller()),
                borrower: 0,
            };
            match queue.register(Wakeup::Thread(std::thread::current()), waiter, false) {
                Registration::Waiting(node, _) => node,
                Registration::Closed => unreachable!("a new queue is open"),
            }
        }

        #[test]
        fn the_thread_is_woken_only_for_an_instant_earlier_than_its_sleep() {
            let timer = Timer::new();
            let node = node();
            let t = Instant::now() + Duration::from_secs(3600);
            lock(&timer.state).sleep = Sleep::Idle;
            assert!(timer.arm(t, &node), "an idle thread is woken");
            assert!(!timer.arm(t, &node), "a woken thread is not woken again");
            lock(&timer.state).sleep = Sleep::Until(t);
            assert!(
                !timer.arm(t + Duration::from_secs(1), &node),
                "later: not woken"
            );
            assert!(!timer.arm(t, &node), "the same instant: not woken");
            assert!(
                timer.arm(t - Duration::from_secs(1), &node),
                "earlier: woken"
            );
            assert_eq!(lock(&timer.state).entries.len(), 5, "every entry is kept");
        }

        #[test]
        fn the_thread_sleeps_until_a_live_waiters_instant() {
            let timer = Timer::new();
            let now = Instant::now();
            let (gone, alive) = (node(), node());
            timer.arm(now + Duration::from_millis(1), &gone);
            timer.arm(now + Duration::from_millis(2), &gone);
            timer.arm(now + Duration::from_millis(3), &alive);
            timer.arm(now + Duration::from_millis(4), &gone);
            drop(gone);
            let mut state = lock(&timer.state);
            assert_eq!(
                state.next_live_instant(),
                Some(now + Duration::from_millis(3)),
                "past the entries of a waiter gone, to the live one"
            );
            assert_eq!(
                state.entries.len(),
                2,
                "the gone waiter's earlier entries dropped"
            );
            drop(alive);
            assert_eq!(state.next_live_instant(), None, "nothing left to wake");
            assert!(state.entries.is_empty());
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;
    use std::thread::ThreadId;
    use std::time::{Duration, Instant};

    use super::*;

    /// A task waker that counts its wake-ups by where they came from: the thread that
    /// made it (a releaser's immediate wake-up, in these tests) or another (the timer).
    struct CountingWaker {
        caller: ThreadId,
        at_once: AtomicUsize,
        elsewhere: AtomicUsize,
    }

    impl Wake for CountingWaker {
        fn wake(self: std::sync::Arc<Self>) {
            match std::thread::current().id() == self.caller {
                true => self.at_once.fetch_add(1, Ordering::SeqCst),
                false => self.elsewhere.fetch_add(1, Ordering::SeqCst),
            };
        }
    }

    impl CountingWaker {
        fn new() -> std::sync::Arc<Self> {
            std::sync::Arc::new(CountingWaker {
                caller: std::thread::current().id(),
                at_once: AtomicUsize::new(0),
                elsewhere: AtomicUsize::new(0),
            })
        }

        /// (woken by the caller's thread, woken from another thread)
        fn counts(&self) -> (usize, usize) {
            (
                self.at_once.load(Ordering::SeqCst),
                self.elsewhere.load(Ordering::SeqCst),
            )
        }
    }

    fn waiter() -> Waiter {
        Waiter {
            site: CallSite::Rust(std::panic::Location::caller()),
            borrower: 0,
        }
    }

    /// Queues a waiter woken through `wakeup`.
    fn registered(queue: &WaitQueue, wakeup: Wakeup) -> Arc<WaitNode> {
        match queue.register(wakeup, waiter(), false) {
            Registration::Waiting(node, _) => node,
            Registration::Closed => unreachable!("an open queue"),
        }
    }

    /// A releaser that finds the waiter parked: the queue's half of a release.
    fn release(queue: &WaitQueue) {
        assert!(!queue.needs_dispatch(), "no hand-off: only a wake-up");
    }

    #[test]
    fn a_task_whose_wake_ups_keep_finding_nothing_is_woken_later_but_woken() {
        let queue = WaitQueue::new();
        let wakes = CountingWaker::new();
        let Registration::Waiting(_node, true) =
            queue.register(Wakeup::Task(Waker::from(wakes.clone())), waiter(), false)
        else {
            panic!("a new queue is open and nobody else is awake");
        };
        // The task parks (no longer awake); each release wakes it at once while its
        // wake-ups have missed fewer times than the threshold.
        let park = || assert!(queue.stop_awake(), "it was the awake one");
        park();
        for missed in 0..DEFER_TASK_WAKE_AFTER {
            release(&queue);
            assert_eq!(wakes.counts(), (missed as usize + 1, 0), "woken at once");
            queue.note_task_wake(false);
            park();
        }
        // Missed often enough: the release defers the wake-up to the timer thread, and
        // it still comes (the promise behind AWAKE is kept, later).
        let released = Instant::now();
        release(&queue);
        while wakes.counts().1 == 0 {
            assert!(
                released.elapsed() < Duration::from_secs(10),
                "the timer woke it"
            );
            std::thread::sleep(Duration::from_micros(50));
        }
        assert_eq!(
            wakes.counts(),
            (DEFER_TASK_WAKE_AFTER as usize, 1),
            "woken once, by the timer, not by the releaser"
        );
        assert!(
            released.elapsed() >= DEFERRED_TASK_WAKE,
            "not before the delay"
        );
        // Until a wake-up serves it: then at once again.
        queue.note_task_wake(true);
        park();
        release(&queue);
        assert_eq!(
            wakes.counts(),
            (DEFER_TASK_WAKE_AFTER as usize + 1, 1),
            "served once: woken at once again"
        );
    }

    #[test]
    fn only_a_task_whose_wake_ups_kept_missing_is_woken_later() {
        let queue = WaitQueue::new();
        let task = registered(&queue, Wakeup::Task(Waker::from(CountingWaker::new())));
        let thread = registered(&queue, Wakeup::Thread(std::thread::current()));
        for _ in 1..DEFER_TASK_WAKE_AFTER {
            queue.note_task_wake(false);
        }
        assert!(!queue.defers_wake_of(&task), "one miss short: at once");
        queue.note_task_wake(false);
        assert!(queue.defers_wake_of(&task), "missed enough: deferred");
        assert!(!queue.defers_wake_of(&thread), "a thread: always at once");
        queue.note_task_wake(true);
        assert!(!queue.defers_wake_of(&task), "served: at once again");
    }

    #[test]
    fn a_reused_queue_forgets_the_previous_users_missed_wake_ups() {
        let queue = WaitQueue::new();
        for _ in 0..DEFER_TASK_WAKE_AFTER {
            queue.note_task_wake(false);
        }
        assert!(queue.close_if_empty(), "retired: nobody waits");
        queue.reopen();
        let task = registered(&queue, Wakeup::Task(Waker::from(CountingWaker::new())));
        assert!(
            !queue.defers_wake_of(&task),
            "the next user's tasks start at once"
        );
    }
}

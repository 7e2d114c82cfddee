//! Loom models of the lock-free core, running the pool's own code: the state-word
//! claims, releases, flags and take-outs (`state::try_claim`, `end_borrow`, `end_check`,
//! `try_flag`, `take_out_of_service`), the idle hint search and repair
//! (`IdleSet::claim_hinted`, `IdleSet::repair`), and the wait queue (`WaitQueue`:
//! register, the releaser's handshake, dispatch, cancel, close, and eventual fairness:
//! barging, the awake waiter, overdue waiters and hand-off), and the C ABI's free
//! handshake (`quiesce`: releases marked inside a pool, free waiting them out). Loom
//! does not model SeqCst accesses, so the handshakes use SeqCst fences under loom (see
//! `sync::handshake`).
//!
//! The releaser's sequence in these models is the pool's `announce_idle` and `dispatch`
//! (`pool.rs`): repair the hint, read the waiter signal, dispatch (or drain if closed).
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test --release --lib loom_models`.

use loom::sync::Arc;
use loom::thread;

use crate::quiesce::{self, Mark};
use crate::slab::CallSite;
use crate::slab::idle::IdleSet;
use crate::slab::state::{self, Claim, Lifecycle, SlotState, TakeOut, flags};
use crate::sync::{AtomicU32, AtomicU64, Ordering, UnsafeCell};
use crate::wait::{Outcome, Registration, WaitNode, WaitQueue, Waiter, Wakeup};

/// A one-connection partition: the hint, the slot's state word, the connection.
struct MiniPool {
    hint: IdleSet,
    word: AtomicU64,
    value: UnsafeCell<u64>,
}

impl MiniPool {
    fn idle_at(generation: u64) -> Arc<Self> {
        let pool = Arc::new(MiniPool {
            hint: IdleSet::new(1),
            word: AtomicU64::new(SlotState::new(generation, Lifecycle::Idle).pack()),
            value: UnsafeCell::new(0),
        });
        pool.hint.mark(0);
        pool
    }

    fn state(&self) -> SlotState {
        SlotState::from_packed(self.word.load(Ordering::SeqCst))
    }

    /// Uses the connection; loom reports a data race if two owners ever overlap.
    fn use_connection(&self) {
        // SAFETY: only the slot's owner calls this; loom's tracking checks exactly
        // that claim, failing the model if two threads ever access it at once.
        self.value.with_mut(|v| unsafe { *v += 1 });
    }

    /// Acquire by search, as a thread without affinity does.
    fn search(&self) -> Option<u64> {
        let (_, claimed) = self.hint.claim_hinted(
            |_| Some(&self.word),
            |_| true,
            Claim::Borrow,
            Ordering::SeqCst,
        )?;
        self.use_connection();
        Some(claimed.generation())
    }

    /// Acquire by affinity: the slot this thread returned at `generation`.
    fn reclaim(&self, generation: u64) -> Option<u64> {
        let claimed = state::try_claim(&self.word, generation, Claim::Borrow).ok()?;
        self.use_connection();
        Some(claimed.generation())
    }

    /// Release as the pool does: validate + move the state, then repair the hint.
    fn release(&self, generation: u64) -> Result<(), SlotState> {
        let ended = state::end_borrow(&self.word, generation)?;
        assert!(!ended.closes(), "no flags in these models");
        self.hint.repair(0);
        Ok(())
    }
}

#[test]
fn two_threads_race_for_the_last_idle_connection_exactly_one_wins() {
    loom::model(|| {
        let pool = MiniPool::idle_at(7);
        let other = pool.clone();
        let t = thread::spawn(move || other.search());
        let mine = pool.reclaim(7);
        let theirs = t.join().unwrap();
        assert!(mine.is_some() ^ theirs.is_some(), "exactly one winner");
        assert_eq!(pool.state().lifecycle(), Lifecycle::InUse);
        assert_eq!(pool.state().generation(), 8);
    });
}

#[test]
fn acquire_racing_release_never_shares_and_never_loses_the_connection() {
    loom::model(|| {
        let pool = MiniPool::idle_at(0);
        // Borrowed by affinity: the hint bit is stale (still set) while it is in use.
        let held = pool.reclaim(0).expect("idle at start");
        let other = pool.clone();
        let t = thread::spawn(move || {
            let got = other.search();
            if let Some(generation) = got {
                other.release(generation).unwrap();
            }
            got
        });
        pool.use_connection();
        pool.release(held).unwrap();
        let got = t.join().unwrap();
        if let Some(generation) = got {
            assert_eq!(generation, held + 1, "borrowed only after our release");
        }
        // Whatever the interleaving, the idle connection is findable again.
        assert_eq!(pool.state().lifecycle(), Lifecycle::Idle);
        assert!(
            pool.hint.is_marked(0),
            "an idle slot must stay visible to searchers"
        );
        assert!(pool.search().is_some());
    });
}

#[test]
fn a_stale_release_racing_a_new_borrow_never_ends_it() {
    loom::model(|| {
        let pool = MiniPool::idle_at(41);
        let first = pool.search().expect("idle at start");
        pool.release(first).unwrap();
        let other = pool.clone();
        // A buggy caller releases the old handle again while a new borrow starts.
        let stale = thread::spawn(move || other.release(first));
        let second = pool.reclaim(first).expect("idle after release");
        assert!(stale.join().unwrap().is_err(), "a stale handle is rejected");
        assert_eq!(
            (pool.state().lifecycle(), pool.state().generation()),
            (Lifecycle::InUse, second)
        );
        pool.release(second).unwrap();
    });
}

// ---- The wait queue against the releaser: one user's partition of one slot ----

/// One slot, its hint, and the user's wait queue.
struct Waiting {
    hint: IdleSet,
    word: AtomicU64,
    queue: WaitQueue,
}

const SITE: CallSite = CallSite::Rust(std::panic::Location::caller());

impl Waiting {
    /// The slot borrowed at generation 0, its hint bit stale (set), as after an
    /// affinity borrow.
    fn borrowed() -> Arc<Self> {
        let w = Self::borrowed_unhinted();
        w.hint.mark(0);
        w
    }

    /// The slot borrowed, its stale hint bit already cleared by a searcher: the waiter's
    /// search then finds no bit at all.
    fn borrowed_unhinted() -> Arc<Self> {
        Arc::new(Waiting {
            hint: IdleSet::new(1),
            word: AtomicU64::new(SlotState::new(0, Lifecycle::InUse).pack()),
            queue: WaitQueue::new(),
        })
    }

    fn state(&self) -> SlotState {
        SlotState::from_packed(self.word.load(Ordering::SeqCst))
    }

    /// The dispatcher's claim for the front waiter (SeqCst reads).
    fn claim(&self) -> Option<(u32, u64)> {
        let (_, claimed) = self.hint.claim_hinted(
            |_| Some(&self.word),
            |_| true,
            Claim::Borrow,
            Ordering::SeqCst,
        )?;
        Some((0, claimed.generation()))
    }

    /// A closed pool's drain: claims what is idle to close it.
    fn drain(&self) {
        while self
            .hint
            .claim_hinted(
                |_| Some(&self.word),
                |_| true,
                Claim::Exclusive,
                Ordering::SeqCst,
            )
            .is_some()
        {}
    }

    /// After the slot became idle: the pool's `announce_idle` and `dispatch`.
    fn announce_idle(&self) {
        self.hint.repair(0);
        if self.queue.needs_dispatch() {
            self.dispatch();
        }
    }

    /// The pool's `dispatch`: grants front first, or drains a closed pool.
    fn dispatch(&self) {
        if !self.queue.dispatch(|_| self.claim()) {
            self.drain();
        }
    }

    /// Release as the pool does.
    fn release(&self, generation: u64) {
        let ended = state::end_borrow(&self.word, generation).expect("the current borrow");
        assert!(!ended.closes());
        self.announce_idle();
    }

    /// The fast path of an arriving (or re-acquiring) caller: unless a waiter is overdue
    /// (or the pool closed), take an idle connection ("barging").
    fn barge(&self) -> Option<u64> {
        if self.queue.busy() {
            return None;
        }
        let (_, claimed) = self.hint.claim_hinted(
            |_| Some(&self.word),
            |_| true,
            Claim::Borrow,
            Ordering::Relaxed,
        )?;
        Some(claimed.generation())
    }

    /// Register as the pool's acquire does, then re-check through a dispatch.
    /// `overdue`: already past the fairness bound (a bound of zero). With the node,
    /// whether this waiter became the awake one.
    fn register(&self, overdue: bool) -> Option<(Arc<WaitNode>, bool)> {
        let waiter = Waiter {
            site: SITE,
            borrower: 1,
        };
        match self
            .queue
            .register(Wakeup::Thread(thread::current()), waiter, overdue)
        {
            Registration::Waiting(node, awake) => {
                self.dispatch();
                Some((node, awake))
            }
            Registration::Closed => None,
        }
    }

    /// A registered waiter's life as `blocking_acquire` and the `Acquire` future live
    /// it (without the blocking spin, which only repeats the search): stop being the
    /// awake waiter if it is (`awake`: it registered as such, or was woken since; one
    /// that registered while another was awake leaves the flag to that one), search
    /// once more, park; a wake-up (a grant, or a releaser's) makes it search again.
    fn sleep_until_served(&self, node: &Arc<WaitNode>, mut awake: bool) -> Outcome {
        loop {
            if let Some(outcome) = node.outcome() {
                self.leave();
                return outcome;
            }
            if std::mem::take(&mut awake) {
                self.queue.stop_awake();
            }
            self.dispatch();
            if let Some(outcome) = node.outcome() {
                self.leave();
                return outcome;
            }
            thread::park();
            awake = true;
        }
    }

    /// A waiter left the queue: the pool's `leave_queue`.
    fn leave(&self) {
        if self.queue.stop_awake() {
            self.dispatch();
        }
    }

    /// Register, then sleep until served (`None`: closed before registering).
    fn wait(&self) -> Option<Outcome> {
        let (node, awake) = self.register(false)?;
        Some(self.sleep_until_served(&node, awake))
    }
}

const GRANTED_AT_1: Outcome = Outcome::Granted {
    slot: 0,
    generation: 1,
};

#[test]
fn a_waiter_registering_as_the_last_connection_returns_is_never_stranded() {
    for start in [
        Waiting::borrowed as fn() -> Arc<Waiting>,
        Waiting::borrowed_unhinted,
    ] {
        loom::model(move || never_stranded(start()));
    }
}

fn never_stranded(w: Arc<Waiting>) {
    let other = w.clone();
    let waiter = thread::spawn(move || other.wait().expect("not closed"));
    w.release(0);
    // Loom fails the model if the waiter parks for good (a lost wake-up): either its
    // search or the releaser's wake-up (no waiter is overdue: no hand-off) found it.
    assert_eq!(waiter.join().unwrap(), GRANTED_AT_1);
    assert_eq!(w.state().lifecycle(), Lifecycle::InUse);
    assert_eq!(w.queue.waiting(), 0);
}

#[test]
fn a_waiter_at_the_fairness_bound_is_handed_the_connection_before_a_barger() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(2);
    builder.check(|| {
        let w = Waiting::borrowed();
        let other = w.clone();
        let waiter = thread::spawn(move || {
            let (node, awake) = other.register(false).expect("not closed");
            // The waiter reaches the bound while the holder cycles.
            other.queue.declare_overdue(&node);
            other.dispatch();
            (other.sleep_until_served(&node, awake), node)
        });
        // The holder releases and tries to take the connection straight back.
        w.release(0);
        let barged = w.barge();
        if let Some(generation) = barged {
            // It won the race with the waiter's declaration; it must give it back.
            w.release(generation);
        }
        let (outcome, _node) = waiter.join().unwrap();
        assert!(matches!(outcome, Outcome::Granted { .. }), "served");
        assert_eq!(w.queue.waiting(), 0);
        assert_eq!(w.state().lifecycle(), Lifecycle::InUse);
        // Nobody barges once the overdue waiter is queued: hand-off mode is on.
    });
    // Once the waiter is past the bound, a release hands off: the barger gets nothing.
    loom::model(|| {
        let w = Waiting::borrowed();
        // Registered (and woken) on this thread.
        let (node, awake) = w.register(true).expect("not closed");
        assert_eq!(node.outcome(), None);
        let holder = {
            let w = w.clone();
            thread::spawn(move || {
                w.release(0);
                w.barge()
            })
        };
        assert_eq!(w.sleep_until_served(&node, awake), GRANTED_AT_1);
        assert_eq!(
            holder.join().unwrap(),
            None,
            "an overdue waiter is never barged"
        );
    });
}

#[test]
fn a_barger_racing_a_timing_out_waiter_strands_no_other_waiter() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(|| {
        let w = Waiting::borrowed();
        // A waiter parked first, at the front.
        let parked = {
            let w = w.clone();
            thread::spawn(move || w.wait().expect("not closed"))
        };
        // A second waiter, awake (releasers may count on it), then times out.
        let (late, _) = w.register(false).expect("not closed");
        let holder = {
            let w = w.clone();
            thread::spawn(move || {
                w.release(0);
                // Barges if it can, and gives it back.
                if let Some(generation) = w.barge() {
                    w.release(generation);
                }
            })
        };
        match w.queue.cancel(&late) {
            None => w.leave(),
            Some(Outcome::Granted { generation, .. }) => {
                w.leave();
                w.release(generation);
            }
            Some(Outcome::Closed) => unreachable!("never closed here"),
        }
        holder.join().unwrap();
        // Loom fails the model if the parked waiter is never woken.
        assert!(matches!(parked.join().unwrap(), Outcome::Granted { .. }));
        assert_eq!(w.queue.waiting(), 0);
    });
}

#[test]
fn a_grant_racing_a_cancel_has_exactly_one_owner_and_is_never_lost() {
    loom::model(|| {
        let w = Waiting::borrowed();
        let (node, _) = w.register(true).expect("not closed");
        assert_eq!(node.outcome(), None, "borrowed: nothing to grant yet");
        let other = w.clone();
        // The waiter times out (or its future is dropped) while the holder releases.
        let canceller = thread::spawn(move || {
            match other.queue.cancel(&node) {
                None => false,
                // Granted meanwhile: the canceller owns the borrow and gives it back.
                Some(Outcome::Granted { generation, .. }) => {
                    other.release(generation);
                    true
                }
                Some(Outcome::Closed) => unreachable!("never closed here"),
            }
        });
        w.release(0);
        let _granted = canceller.join().unwrap();
        assert_eq!(w.queue.waiting(), 0, "withdrawn or served");
        assert_eq!(
            w.state().lifecycle(),
            Lifecycle::Idle,
            "the connection is back"
        );
        assert!(w.hint.is_marked(0), "and findable");
    });
}

#[test]
fn close_racing_a_waiter_and_a_release_strands_nobody_and_drains_every_idle_slot() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(|| {
        let w = Waiting::borrowed();
        let (a, b) = (w.clone(), w.clone());
        let waiter = thread::spawn(move || a.wait());
        let releaser = thread::spawn(move || b.release(0));
        w.queue.close();
        w.drain();
        releaser.join().unwrap();
        // A registered waiter ends with an outcome, never pending in a closed pool
        // (loom fails the model if it parks for good).
        let granted = matches!(waiter.join().unwrap(), Some(Outcome::Granted { .. }));
        // No idle connection survives the close: drained (Reserved) or handed over.
        let lifecycle = w.state().lifecycle();
        if granted {
            assert_eq!(lifecycle, Lifecycle::InUse);
        } else {
            assert_eq!(lifecycle, Lifecycle::Reserved, "drained");
        }
    });
}

// ---- State-word races the sweeper and `remove_connection` take part in ----

#[test]
fn a_reclaim_racing_the_holders_release_is_seen_by_exactly_the_release_it_precedes() {
    loom::model(|| {
        let word = Arc::new(AtomicU64::new(SlotState::new(5, Lifecycle::InUse).pack()));
        let seen = SlotState::from_packed(word.load(Ordering::SeqCst));
        let sweeper = {
            let word = word.clone();
            thread::spawn(move || {
                let reclaim = flags::LEAK_ALERT | flags::LEAK_CRITICAL | flags::RECLAIMED;
                state::try_flag(&word, seen, reclaim)
            })
        };
        let ended = state::end_borrow(&word, 5).expect("the holder's borrow");
        let reclaimed = sweeper.join().unwrap();
        let now = SlotState::from_packed(word.load(Ordering::SeqCst));
        if reclaimed {
            // Flagged first: the release sees it and closes the connection.
            assert!(ended.has(flags::RECLAIMED) && ended.closes());
            assert_eq!(now.lifecycle(), Lifecycle::Reserved);
        } else {
            // Released first: the flag found another state and changed nothing.
            assert!(!ended.closes());
            assert_eq!(now, SlotState::new(5, Lifecycle::Idle));
        }
    });
}

#[test]
fn a_health_check_an_affinity_borrow_and_a_remove_never_share_the_slot() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(|| {
        let word = Arc::new(AtomicU64::new(SlotState::new(9, Lifecycle::Idle).pack()));
        let value = Arc::new(UnsafeCell::new(0u32));
        // The sweeper's check and an affinity borrow, both claiming generation 9.
        let contender = |claim: Claim| {
            let (word, value) = (word.clone(), value.clone());
            thread::spawn(move || {
                let claimed = state::try_claim(&word, 9, claim).ok()?;
                // SAFETY: only the slot's owner touches the value; loom fails the model
                // if two owners ever overlap.
                value.with_mut(|v| unsafe { *v += 1 });
                let ended = match claim {
                    Claim::Check => state::end_check(&word, claimed.generation(), false),
                    _ => state::end_borrow(&word, claimed.generation()),
                }
                .expect("the owner ends its own claim");
                Some(ended.closes())
            })
        };
        let check = contender(Claim::Check);
        let borrow = contender(Claim::Borrow);
        // remove_connection, as the pool loops it.
        let removed = loop {
            let seen = SlotState::from_packed(word.load(Ordering::Acquire));
            match state::take_out_of_service(&word, seen, flags::CLOSE_ON_RETURN) {
                TakeOut::Claimed => {
                    // SAFETY: as above: the remover owns the slot now.
                    value.with_mut(|v| unsafe { *v += 1 });
                    break true;
                }
                TakeOut::Marked => break false,
                TakeOut::Changed => {}
                TakeOut::Empty | TakeOut::Busy => unreachable!("not in this model"),
            }
        };
        let ends = [check.join().unwrap(), borrow.join().unwrap()];
        let now = SlotState::from_packed(word.load(Ordering::SeqCst));
        // Whoever owned it last, the remove took effect exactly once: claimed now, or
        // marked and then honoured by the owner's end (Reserved, for it to close).
        assert_eq!(now.lifecycle(), Lifecycle::Reserved);
        if !removed {
            assert!(
                ends.contains(&Some(true)),
                "a marked owner closes on return"
            );
        }
    });
}

#[test]
fn a_slot_retired_and_refilled_never_matches_a_claim_from_before() {
    loom::model(|| {
        let word = Arc::new(AtomicU64::new(SlotState::new(3, Lifecycle::Idle).pack()));
        // A thread whose affinity entry says "slot idle at 3".
        let stale = {
            let word = word.clone();
            thread::spawn(move || state::try_claim(&word, 3, Claim::Borrow).is_ok())
        };
        // The slot's connection is removed and another one added to it.
        let retired = state::try_claim(&word, 3, Claim::Exclusive).is_ok();
        if retired {
            let reserved = SlotState::from_packed(word.load(Ordering::Relaxed));
            word.store(reserved.retired().pack(), Ordering::Release);
            let empty = SlotState::from_packed(word.load(Ordering::Relaxed));
            word.store(
                empty.with_lifecycle(Lifecycle::Idle).pack(),
                Ordering::SeqCst,
            );
        }
        let claimed_old = stale.join().unwrap();
        assert!(
            claimed_old ^ retired,
            "exactly one of them got the generation-3 slot"
        );
        if retired {
            assert_eq!(
                SlotState::from_packed(word.load(Ordering::SeqCst)),
                SlotState::new(4, Lifecycle::Idle),
                "the refilled slot is idle at a new generation"
            );
        }
    });
}

/// The C ABI's free handshake on a pool (`quiesce`, `heliosdb_pool_free`): a release
/// marks its thread inside the pool, then reads "freed"; free stores "freed", then waits
/// for every mark on the pool to clear, then reclaims the memory.
struct FreedPool {
    freed: AtomicU32,
    /// The pool's memory, which a release on the normal path touches after its check
    /// (a part for each releasing thread, which in the pool are atomics they share).
    memory: [UnsafeCell<u64>; 2],
    marks: [Mark; 2],
}

impl FreedPool {
    fn object(&self) -> *const () {
        std::ptr::from_ref(self).cast()
    }

    /// One release through `mark`: the normal path if free was not seen, else the
    /// counted path (which, in the pool, waits for free to count it an owner and
    /// touches nothing before).
    fn release(&self, i: usize) -> bool {
        let mark = &self.marks[i];
        mark.enter(self.object());
        let normal = self.freed.load(Ordering::Relaxed) == 0;
        if normal {
            // SAFETY: loom checks the claim: no reclaim overlaps this access.
            self.memory[i].with_mut(|m| unsafe { *m += 1 });
        }
        mark.leave();
        normal
    }
}

/// `releasers` threads release while free runs; with `then_elsewhere`, the first then
/// enters another object, so free may read that mark instead of the release's leave
/// (and must still see the release's accesses).
fn release_racing_free(releasers: usize, then_elsewhere: bool) {
    loom::model(move || {
        let pool = Arc::new(FreedPool {
            freed: AtomicU32::new(0),
            memory: [UnsafeCell::new(0), UnsafeCell::new(0)],
            marks: [Mark::new(), Mark::new()],
        });
        let elsewhere = Arc::new(0u8);
        let threads: Vec<_> = (0..releasers)
            .map(|i| {
                let (pool, elsewhere) = (pool.clone(), elsewhere.clone());
                thread::spawn(move || {
                    let normal = pool.release(i);
                    if then_elsewhere && i == 0 {
                        pool.marks[i].enter(Arc::as_ptr(&elsewhere).cast());
                        pool.marks[i].leave();
                    }
                    usize::from(normal)
                })
            })
            .collect();
        pool.freed.store(1, Ordering::SeqCst);
        quiesce::wait_until_outside(pool.object(), || &pool.marks, None);
        // The reclaim: a data race (a loom failure) with any normal release not done.
        // SAFETY: loom checks it.
        let touched: u64 = pool
            .memory
            .iter()
            .map(|m| m.with_mut(|m| unsafe { *m }))
            .sum();
        let normal: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(
            touched, normal as u64,
            "every normal release finished first"
        );
    });
}

#[test]
fn a_release_racing_free_sees_it_or_finishes_before_the_reclaim() {
    release_racing_free(2, false);
}

#[test]
fn a_release_that_moves_on_to_another_object_is_still_waited_for() {
    release_racing_free(1, true);
}

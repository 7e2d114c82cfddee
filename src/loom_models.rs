//! Loom models of the lock-free core, running the pool's own code: the state-word
//! claims and releases (`state::try_claim`, `end_borrow`) and the idle
//! hint search and repair (`IdleSet::claim_hinted`, `IdleSet::repair`). Loom does not
//! model SeqCst accesses, so the handshakes use SeqCst fences under loom (see
//! `sync::handshake`).
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test --release --lib loom_models`.

use loom::sync::Arc;
use loom::thread;

use crate::slab::idle::IdleSet;
use crate::slab::state::{self, Claim, Lifecycle, SlotState};
use crate::sync::{AtomicU64, Ordering, UnsafeCell};

/// A one-connection partition: the hint, the slot's state word, the connection.
struct MiniPool {
    hint: IdleSet,
    word: AtomicU64,
    value: UnsafeCell<u64>,
}

impl MiniPool {
    fn idle_at(generation: u32) -> Arc<Self> {
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
    fn search(&self) -> Option<u32> {
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
    fn reclaim(&self, generation: u32) -> Option<u32> {
        let claimed = state::try_claim(&self.word, generation, Claim::Borrow).ok()?;
        self.use_connection();
        Some(claimed.generation())
    }

    /// Release as the pool does: validate + move the state, then repair the hint.
    fn release(&self, generation: u32) -> Result<(), SlotState> {
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

//! Loom models of the lock-free core: the idle set and the slot state word, exactly as
//! the pool uses them (`IdleSet::take`/`put`, `state::start_borrow`/`end_borrow`).
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test --release --lib loom_models`.

use loom::sync::Arc;
use loom::thread;

use crate::slab::idle::IdleSet;
use crate::slab::state::{self, Ended, Lifecycle, SlotState};
use crate::sync::{AtomicU64, Ordering, UnsafeCell};

/// A one-slot pool: the idle bit, the state word, and the connection value.
struct MiniSlot {
    idle: IdleSet,
    word: AtomicU64,
    value: UnsafeCell<u64>,
}

impl MiniSlot {
    fn idle_at(generation: u32) -> Arc<Self> {
        let slot = Arc::new(MiniSlot {
            idle: IdleSet::new(1),
            word: AtomicU64::new(SlotState::new(generation, Lifecycle::Idle).pack()),
            value: UnsafeCell::new(0),
        });
        slot.idle.put(0);
        slot
    }

    /// Acquire as the pool does: take the bit, start a borrow, use the connection.
    fn try_borrow(&self) -> Option<u32> {
        self.idle.take(Ordering::Relaxed)?;
        let borrow = state::start_borrow(&self.word);
        // A data race here (two owners) is reported by loom's UnsafeCell tracking.
        self.value.with_mut(|v| unsafe { *v += 1 });
        Some(borrow.generation())
    }

    /// Release as the pool does: validate + move the state, then give the bit back.
    fn release(&self, generation: u32) -> Result<(), SlotState> {
        match state::end_borrow(&self.word, generation)? {
            Ended::Idle => {
                self.idle.put(0);
                Ok(())
            }
            Ended::Close { .. } => unreachable!("no flags in these models"),
        }
    }
}

#[test]
fn two_threads_race_for_the_last_idle_connection_exactly_one_wins() {
    loom::model(|| {
        let slot = MiniSlot::idle_at(7);
        let other = slot.clone();
        let t = thread::spawn(move || other.try_borrow());
        let mine = slot.try_borrow();
        let theirs = t.join().unwrap();
        assert!(mine.is_some() ^ theirs.is_some(), "exactly one winner");
        let state = SlotState::from_packed(slot.word.load(Ordering::Relaxed));
        assert_eq!(state.lifecycle(), Lifecycle::InUse);
        assert_eq!(state.generation(), 8);
    });
}

#[test]
fn acquire_racing_release_hands_over_without_sharing() {
    loom::model(|| {
        let slot = MiniSlot::idle_at(0);
        let held = slot.try_borrow().expect("idle at start");
        let other = slot.clone();
        // Another thread tries to acquire while the holder uses and releases it.
        let t = thread::spawn(move || {
            let got = other.try_borrow();
            if let Some(generation) = got {
                other.release(generation).unwrap();
            }
            got
        });
        slot.value.with_mut(|v| unsafe { *v += 10 });
        slot.release(held).unwrap();
        let got = t.join().unwrap();
        // Either it found the slot busy, or it borrowed the next generation after us.
        if let Some(generation) = got {
            assert_eq!(generation, held + 1);
        }
        assert_eq!(slot.idle.count(), 1, "the connection is idle at the end");
        let uses = slot.value.with(|v| unsafe { *v });
        assert_eq!(uses, if got.is_some() { 12 } else { 11 });
    });
}

#[test]
fn a_stale_release_racing_a_new_borrow_never_ends_it() {
    loom::model(|| {
        let slot = MiniSlot::idle_at(41);
        let first = slot.try_borrow().expect("idle at start");
        slot.release(first).unwrap();
        let other = slot.clone();
        // A buggy caller releases the old handle again while a new borrow starts.
        let stale = thread::spawn(move || other.release(first));
        let second = slot.try_borrow().expect("idle after release");
        assert!(stale.join().unwrap().is_err(), "a stale handle is rejected");
        let state = SlotState::from_packed(slot.word.load(Ordering::Relaxed));
        assert_eq!(
            (state.lifecycle(), state.generation()),
            (Lifecycle::InUse, second)
        );
        assert_eq!(slot.idle.count(), 0, "the new borrow still owns the slot");
        slot.release(second).unwrap();
    });
}

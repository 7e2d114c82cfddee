//! The per-user idle hint: a bitmap of `AtomicU64` words over the user's local slot
//! indices, telling searchers where idle connections probably are.
//!
//! It is a hint, not the ownership token: a slot is claimed by CAS on its own state word
//! (`state::try_claim`), so a thread that re-borrows the connection it returned last
//! (its thread-local affinity, as in HikariCP's ConcurrentBag) touches only that slot's
//! cache line and never this shared bitmap. A set bit may therefore name a slot that is
//! borrowed again; searchers clear such stale bits as they pass.
//!
//! # The one invariant
//!
//! An idle slot's bit is set, except for the instant a searcher clears a stale bit and
//! re-checks. Both sides use SeqCst, so in the single total order one of them sees the
//! other: the releaser (CAS to `Idle`, then read the bit, set it if clear) or the
//! searcher (clear the bit, then read the state, restore the bit and claim if idle).
//! Searchers take the lowest set bit first, which concentrates use on few connections,
//! so surplus connections stay idle and can age out.

use crossbeam_utils::CachePadded;

use crate::slab::state::{self, Claim, Lifecycle, SlotState};
use crate::sync::{self, AtomicU64, Ordering};

/// A lock-free, allocation-free bitmap of local slot indices, fixed capacity.
pub(crate) struct IdleSet {
    /// Each word on its own cache line, so users never share one.
    words: Box<[CachePadded<AtomicU64>]>,
}

impl IdleSet {
    /// An empty set able to hold indices `0..capacity`.
    pub(crate) fn new(capacity: usize) -> Self {
        let words = capacity.div_ceil(64).max(1);
        IdleSet {
            words: (0..words)
                .map(|_| CachePadded::new(AtomicU64::new(0)))
                .collect(),
        }
    }

    /// Forgets every hint (a partition being reused). Relaxed: hints are only hints; a
    /// bit set concurrently by a thread that returned a connection long ago costs a
    /// searcher one failed check.
    pub(crate) fn clear(&self) {
        for word in self.words.iter() {
            word.store(0, Ordering::Relaxed);
        }
    }

    /// The words' current bits, lowest index first, as `(first index, bits)`.
    #[inline]
    pub(crate) fn words(&self, order: Ordering) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.words
            .iter()
            .enumerate()
            .map(move |(w, word)| (w as u32 * 64, word.load(order)))
    }

    /// Whether a slot that a set bit names reads idle now: a read-only look, for callers
    /// that poll while they wait (a spinner, the awake waiter) and then search with
    /// [`claim_hinted`](Self::claim_hinted) only when it answers yes (twice: see
    /// `Partition::stays_idle`). The search clears stale bits, a write to this shared
    /// line and then, by the releaser's repair, a locked RMW on the holder's release:
    /// done on every poll, it makes the holder pay for being watched. A hint like the
    /// bits: a yes may be gone by the search.
    #[inline]
    pub(crate) fn any_seen_idle<'s>(
        &self,
        state_of: impl Fn(u32) -> Option<&'s AtomicU64>,
    ) -> bool {
        self.words(Ordering::Relaxed).any(|(first, mut bits)| {
            while bits != 0 {
                let index = first + bits.trailing_zeros();
                if state_of(index).is_some_and(|word| {
                    SlotState::from_packed(word.load(Ordering::Relaxed)).claimable()
                }) {
                    return true;
                }
                bits &= bits - 1;
            }
            false
        })
    }

    /// Claims an idle slot, lowest marked index first, clearing stale bits on the way.
    /// Returns the index and the claimed state.
    ///
    /// `state_of` maps an index to the state word of the slot it names now (`None` if
    /// none; it must read the index's mapping with SeqCst, see below); `belongs` says
    /// whether that slot, seen idle, is still the one the index names (its owner and
    /// index fields: a slot can be emptied and refilled for someone else between two
    /// reads). The claim is a CAS at the exact generation seen, and emptying a slot
    /// bumps its generation, so a successful claim proves `belongs` still held.
    ///
    /// `order` is the first read of each word: `Relaxed` on the fast path (a stale
    /// read costs a retry at worst), `SeqCst` for a waiter's re-check, which must not be
    /// ordered before its registration (see `wait.rs`).
    pub(crate) fn claim_hinted<'s>(
        &self,
        state_of: impl Fn(u32) -> Option<&'s AtomicU64>,
        belongs: impl Fn(u32) -> bool,
        claim: Claim,
        order: Ordering,
    ) -> Option<(u32, SlotState)> {
        // Acquire at least: `belongs` reads fields written before the state was
        // published, and must see them at least as new as the state it judges.
        let state_order = if order == Ordering::SeqCst {
            Ordering::SeqCst
        } else {
            Ordering::Acquire
        };
        for (first, mut bits) in self.words(order) {
            // Bounded retries per bit: a bit stays only while its slot keeps turning idle
            // under us, and other bits (or the waiter path) serve meanwhile.
            let mut tries = 0;
            while bits != 0 {
                let index = first + bits.trailing_zeros();
                tries += 1;
                if tries > 4 {
                    bits &= bits - 1;
                    tries = 0;
                    continue;
                }
                if let Some(word) = state_of(index) {
                    let seen = SlotState::from_packed(word.load(state_order));
                    if seen.claimable() && belongs(index) {
                        match state::try_claim(word, seen.generation(), claim) {
                            Ok(claimed) => return Some((index, claimed)),
                            // Another claimer won, or the slot changed: look again.
                            Err(_) => continue,
                        }
                    }
                }
                // A stale hint: the slot is borrowed (by affinity), busy, gone, or no
                // longer the one this index names. Clear the bit, then re-check what the
                // index names now: if that is idle, its releaser (or filler) may have
                // seen the bit still set, so put it back and try again (the searcher's
                // half of the handshake in the module docs).
                self.unmark(index);
                sync::handshake();
                let now_idle = state_of(index).is_some_and(|word| {
                    SlotState::from_packed(word.load(Ordering::SeqCst)).lifecycle()
                        == Lifecycle::Idle
                });
                if now_idle {
                    self.mark(index);
                } else {
                    bits &= bits - 1;
                    tries = 0;
                }
            }
        }
        None
    }

    /// The releaser's half of the handshake: called right after the SeqCst write that
    /// made slot `index` idle; sets its bit unless it is still set. In the common case a
    /// plain read of a shared (unmodified) cache line.
    #[inline]
    pub(crate) fn repair(&self, index: u32) {
        sync::handshake();
        if !self.is_marked(index) {
            self.mark(index);
        }
    }

    /// Sets `index`'s bit. SeqCst: see the module docs.
    #[inline]
    pub(crate) fn mark(&self, index: u32) {
        let (word, bit) = Self::locate(index);
        self.words[word].fetch_or(bit, Ordering::SeqCst);
    }

    /// Clears `index`'s bit. SeqCst: see the module docs.
    #[inline]
    pub(crate) fn unmark(&self, index: u32) {
        let (word, bit) = Self::locate(index);
        self.words[word].fetch_and(!bit, Ordering::SeqCst);
    }

    /// Whether `index`'s bit is set. SeqCst: see the module docs.
    #[inline]
    pub(crate) fn is_marked(&self, index: u32) -> bool {
        let (word, bit) = Self::locate(index);
        self.words[word].load(Ordering::SeqCst) & bit != 0
    }

    #[inline]
    fn locate(index: u32) -> (usize, u64) {
        ((index / 64) as usize, 1u64 << (index % 64))
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn marks_and_lists_lowest_first() {
        let set = IdleSet::new(130);
        for i in [129, 3, 64, 0] {
            set.mark(i);
        }
        assert!(set.is_marked(64) && !set.is_marked(65));
        set.unmark(3);
        let words: Vec<_> = set.words(Ordering::Relaxed).collect();
        assert_eq!(words, [(0, 1), (64, 1), (128, 2)]);
    }

    #[test]
    fn the_read_only_look_sees_only_a_marked_slot_that_is_idle_and_writes_nothing() {
        let packed = |lifecycle| AtomicU64::new(SlotState::new(3, lifecycle).pack());
        // Slot 0 borrowed (a stale bit), 1 idle but unmarked, 70 idle with a flag set.
        let states = [packed(Lifecycle::InUse), packed(Lifecycle::Idle)];
        let flagged = AtomicU64::new(
            SlotState::new(3, Lifecycle::Idle)
                .with_flag(state::flags::CLOSE_ON_RETURN)
                .pack(),
        );
        let state_of = |index: u32| match index {
            0 | 1 => Some(&states[index as usize]),
            70 => Some(&flagged),
            _ => None,
        };
        let set = IdleSet::new(130);
        set.mark(0);
        set.mark(70);
        set.mark(100); // names no slot
        assert!(!set.any_seen_idle(state_of));
        let before: Vec<_> = set.words(Ordering::Relaxed).collect();
        assert_eq!(before, [(0, 1), (64, (1 << 6) | (1 << 36)), (128, 0)]);
        set.mark(1);
        assert!(set.any_seen_idle(state_of), "a marked idle slot");
        states[1].store(
            SlotState::new(3, Lifecycle::InUse).pack(),
            Ordering::Relaxed,
        );
        assert!(!set.any_seen_idle(state_of), "borrowed again");
        let after: Vec<_> = set.words(Ordering::Relaxed).collect();
        assert_eq!(
            after,
            [(0, 0b11), (64, (1 << 6) | (1 << 36)), (128, 0)],
            "no bit cleared"
        );
    }
}

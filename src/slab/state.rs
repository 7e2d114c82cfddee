//! The slot state word: a typed view of one packed `u64`.
//!
//! ```text
//!  63                                                   16 15       8 7        0
//! +-------------------------------------------------------+----------+----------+
//! |                  generation (48 bits)                 |  flags   | lifecycle|
//! +-------------------------------------------------------+----------+----------+
//! ```
//!
//! The state word is the slot's ownership token: every transition out of `Idle` and
//! `InUse` is a compare-and-swap against the full word, so exactly one party wins a
//! slot and a stale handle can never change the current holder's borrow. The
//! generation is bumped by every borrow and every retirement, so a borrow handle (slot
//! index + the generation it was issued under) names exactly one borrow.
//!
//! Why 48 bits: thread affinity sends one thread's borrows to one slot, so a 32-bit
//! generation wrapped after 2^32 borrows, a few minutes of one busy thread, after which
//! a stale handle validated again. 2^48 borrows of one slot take months at the fastest
//! cycle this pool has; handles and C leases carry all 48 bits, and handles also name
//! the connection, so a slot refilled for another connection never matches either.

use crate::sync::{AtomicU64, Ordering};

/// Where a slot is in its life. `Idle` slots are free for whoever claims them by CAS;
/// in `InUse`, `Checking` and `Reserved` exactly one party owns the slot (the borrower,
/// the sweeper, or whoever reserved it to fill or empty it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Lifecycle {
    /// No connection; the slot is on the pool's free list.
    Empty = 0,
    /// Holds an idle connection, free to be claimed.
    Idle = 1,
    /// Borrowed; the holder of the current generation's handle owns it.
    InUse = 2,
    /// Reserved by the sweeper for a health check.
    Checking = 3,
    /// Being filled by `add_connection` or emptied by a close; owned by that caller.
    Reserved = 4,
}

impl Lifecycle {
    const fn from_bits(bits: u64) -> Lifecycle {
        match bits & 0xff {
            0 => Lifecycle::Empty,
            1 => Lifecycle::Idle,
            2 => Lifecycle::InUse,
            3 => Lifecycle::Checking,
            _ => Lifecycle::Reserved,
        }
    }
}

/// Flags carried in the state word next to the lifecycle.
pub(crate) mod flags {
    /// The borrow has been reported as a leak at level Alert.
    pub(crate) const LEAK_ALERT: u64 = 1 << 8;
    /// The borrow has been reported as a leak at level Critical.
    pub(crate) const LEAK_CRITICAL: u64 = 1 << 9;
    /// Close the connection when the borrow or check ends (it was removed).
    pub(crate) const CLOSE_ON_RETURN: u64 = 1 << 10;
    /// The borrow was reclaimed as a critical leak; its handle is no longer honoured.
    pub(crate) const RECLAIMED: u64 = 1 << 11;
    /// Close the connection when the borrow ends: it outlived `max_connection_age_ms`.
    pub(crate) const AGED: u64 = 1 << 12;
    /// Close the connection when the borrow or check ends: evicted by a failover
    /// (`evict_all`, `evict_user`), counted under that cause.
    pub(crate) const FAILOVER: u64 = 1 << 13;
    /// Any of the flags that close the connection when its owner gives it back.
    pub(crate) const CLOSING: u64 = CLOSE_ON_RETURN | RECLAIMED | AGED | FAILOVER;
    /// All flag bits.
    pub(crate) const ALL: u64 = 0xff00;
    /// The leak-report flags.
    pub(crate) const LEAKED: u64 = LEAK_ALERT | LEAK_CRITICAL;
}

/// A decoded state word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlotState(u64);

/// Bits of the generation; generations count modulo 2^48.
pub(crate) const GENERATION_BITS: u32 = 48;
/// The largest generation; the next one is 0.
pub(crate) const GENERATION_MASK: u64 = (1 << GENERATION_BITS) - 1;
const GENERATION_SHIFT: u32 = 64 - GENERATION_BITS;

/// The generation after `generation`, wrapping at 2^48.
#[inline]
pub(crate) const fn next_generation(generation: u64) -> u64 {
    generation.wrapping_add(1) & GENERATION_MASK
}

impl SlotState {
    #[inline]
    pub(crate) const fn from_packed(word: u64) -> Self {
        SlotState(word)
    }

    /// A state with no flags; `generation` is taken modulo 2^48.
    #[inline]
    pub(crate) const fn new(generation: u64, lifecycle: Lifecycle) -> Self {
        SlotState(((generation & GENERATION_MASK) << GENERATION_SHIFT) | lifecycle as u64)
    }

    #[inline]
    pub(crate) const fn pack(self) -> u64 {
        self.0
    }

    #[inline]
    pub(crate) const fn generation(self) -> u64 {
        self.0 >> GENERATION_SHIFT
    }

    #[inline]
    pub(crate) const fn lifecycle(self) -> Lifecycle {
        Lifecycle::from_bits(self.0)
    }

    #[inline]
    pub(crate) const fn has(self, flag: u64) -> bool {
        self.0 & flag != 0
    }

    #[inline]
    pub(crate) const fn with_flag(self, flag: u64) -> Self {
        SlotState(self.0 | flag)
    }

    /// Same flags, next generation, another lifecycle (a slot emptied for reuse must
    /// not match a handle or a thread's cached claim from before).
    #[inline]
    pub(crate) const fn retired(self) -> Self {
        SlotState::new(next_generation(self.generation()), Lifecycle::Empty)
    }

    /// Same generation and flags, another lifecycle.
    #[inline]
    pub(crate) const fn with_lifecycle(self, lifecycle: Lifecycle) -> Self {
        SlotState((self.0 & !0xff) | lifecycle as u64)
    }

    /// The state a new borrow of this slot starts in: next generation, `InUse`, no flags.
    #[inline]
    pub(crate) const fn next_borrow(self) -> Self {
        SlotState::new(next_generation(self.generation()), Lifecycle::InUse)
    }

    /// Whether the connection must be closed when its owner gives it back.
    #[inline]
    pub(crate) const fn closes(self) -> bool {
        self.0 & flags::CLOSING != 0
    }

    /// Whether a searcher may claim the slot in this state: idle, with no flag set.
    #[inline]
    pub(crate) const fn claimable(self) -> bool {
        matches!(self.lifecycle(), Lifecycle::Idle) && self.0 & flags::ALL == 0
    }

    /// Same generation and lifecycle, no flags.
    #[inline]
    pub(crate) const fn without_flags(self) -> Self {
        SlotState(self.0 & !flags::ALL)
    }
}

/// What a claim of an idle slot turns it into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claim {
    /// A new borrow: next generation, `InUse`.
    Borrow,
    /// Exclusive ownership to close or remove it: same generation, `Reserved`.
    Exclusive,
    /// A sweeper health check: same generation, `Checking`.
    Check,
}

impl Claim {
    #[inline]
    const fn apply(self, idle: SlotState) -> SlotState {
        match self {
            Claim::Borrow => idle.next_borrow(),
            Claim::Exclusive => idle.with_lifecycle(Lifecycle::Reserved),
            Claim::Check => idle.with_lifecycle(Lifecycle::Checking),
        }
    }
}

/// Claims a slot that is `Idle` at `generation`: one CAS, which is the whole ownership
/// protocol (the idle bitmap is only a hint of where to look). Fails with the state
/// found if the slot is not idle, or was borrowed or emptied since `generation`.
///
/// Acquire: pairs with the Release of the `end_borrow` (or `add`) that made the slot
/// idle, so the claimer sees every write the previous owner made to the connection.
#[inline]
pub(crate) fn try_claim(
    word: &AtomicU64,
    generation: u64,
    claim: Claim,
) -> Result<SlotState, SlotState> {
    let idle = SlotState::new(generation, Lifecycle::Idle);
    let next = claim.apply(idle);
    match word.compare_exchange(
        idle.pack(),
        next.pack(),
        Ordering::Acquire,
        Ordering::Relaxed,
    ) {
        Ok(_) => Ok(next),
        Err(found) => Err(SlotState::from_packed(found)),
    }
}

/// Ends the borrow `generation` of a slot with one CAS that both validates the handle
/// and moves the state, so a stale or doubled handle can never end someone else's
/// borrow. Returns the state that ended (its flags say whether the connection must be
/// closed, see [`SlotState::closes`], and whether it had been reported as a leak), or
/// the state found if the handle is not the current borrow.
///
/// `PoolInner::end` runs these same two steps itself, with the slot's bookkeeping in
/// between (the common case inline, the rest out of line); this composition is what
/// the loom models and the slab's tests drive.
#[cfg(test)]
pub(crate) fn end_borrow(word: &AtomicU64, generation: u64) -> Result<SlotState, SlotState> {
    if end_plain_borrow(word, generation) {
        Ok(SlotState::new(generation, Lifecycle::InUse))
    } else {
        end_flagged_or_stale(word, generation)
    }
}

/// The common case of [`end_borrow`], a borrow nobody flagged: one CAS from exactly
/// that state to idle, ordered as in `finish_as` (SeqCst). `false` (nothing changed)
/// for anything else: a flag, a stale handle, another lifecycle; a current borrow is
/// still its holder's then.
#[inline]
pub(crate) fn end_plain_borrow(word: &AtomicU64, generation: u64) -> bool {
    let plain = SlotState::new(generation, Lifecycle::InUse);
    let idle = SlotState::new(generation, Lifecycle::Idle);
    word.compare_exchange(
        plain.pack(),
        idle.pack(),
        Ordering::SeqCst,
        Ordering::Relaxed,
    )
    .is_ok()
}

/// [`end_borrow`] when the state was not the plain borrow: the general loop, which
/// re-validates what it finds; out of line, so a release's common path is one CAS.
#[cold]
#[inline(never)]
pub(crate) fn end_flagged_or_stale(
    word: &AtomicU64,
    generation: u64,
) -> Result<SlotState, SlotState> {
    finish(word, generation, Lifecycle::InUse)
}

/// Ends a sweeper health check of the slot at `generation` (see [`end_borrow`]);
/// `evict` sends it to `Reserved` for the sweeper to close whatever its flags say.
pub(crate) fn end_check(
    word: &AtomicU64,
    generation: u64,
    evict: bool,
) -> Result<SlotState, SlotState> {
    finish_as(word, generation, Lifecycle::Checking, evict)
}

/// Moves a slot owned in `owned` at `generation` to `Idle`, or to `Reserved` for its
/// owner to close if a closing flag is set; clears all flags.
#[inline]
fn finish(word: &AtomicU64, generation: u64, owned: Lifecycle) -> Result<SlotState, SlotState> {
    finish_as(word, generation, owned, false)
}

#[inline]
fn finish_as(
    word: &AtomicU64,
    generation: u64,
    owned: Lifecycle,
    close: bool,
) -> Result<SlotState, SlotState> {
    let mut current = SlotState::from_packed(word.load(Ordering::Relaxed));
    loop {
        if current.generation() != generation || current.lifecycle() != owned {
            return Err(current);
        }
        let lifecycle = if close || current.closes() {
            Lifecycle::Reserved
        } else {
            Lifecycle::Idle
        };
        let next = current.without_flags().with_lifecycle(lifecycle);
        // SeqCst (on x86 the same `lock cmpxchg` as Release): a Release so the holder's
        // use of the connection happens-before the next claimer's Acquire, and SeqCst
        // because the releaser then reads the idle hint and the waiter signal: the
        // releaser's half of the handshakes described in `slab::idle` and `wait.rs`.
        match word.compare_exchange_weak(
            current.pack(),
            next.pack(),
            Ordering::SeqCst,
            Ordering::Relaxed,
        ) {
            Ok(_) => return Ok(current),
            // A flag was set concurrently (leak report, close-on-return) or the CAS
            // failed spuriously: re-validate against what is there now.
            Err(actual) => current = SlotState::from_packed(actual),
        }
    }
}

/// Sets `flag` on the state `expected` (exactly: same generation, lifecycle and
/// flags). The sweeper and `remove_connection` mark borrows this way; a concurrent
/// release wins or loses the race cleanly.
pub(crate) fn try_flag(word: &AtomicU64, expected: SlotState, flag: u64) -> bool {
    word.compare_exchange(
        expected.pack(),
        expected.with_flag(flag).pack(),
        Ordering::AcqRel,
        Ordering::Relaxed,
    )
    .is_ok()
}

/// What one attempt of [`take_out_of_service`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TakeOut {
    /// The slot was idle and is now `Reserved` by the caller, who empties it.
    Claimed,
    /// The slot is borrowed or being checked: its owner closes it when done.
    Marked,
    /// The slot holds no connection.
    Empty,
    /// Someone else is filling or emptying the slot; try again shortly.
    Busy,
    /// The state is no longer `seen`; load it and try again.
    Changed,
}

/// One attempt to take the connection in a slot, seen in state `seen`, out of service
/// (`remove_connection`, failover): an idle one is claimed for the caller to close now,
/// a borrowed or checked one is marked with `mark` (a closing flag, which also says
/// what its close is counted as). Both are CAS on the exact state seen, so a concurrent
/// borrow, check, release or retire wins or loses cleanly.
pub(crate) fn take_out_of_service(word: &AtomicU64, seen: SlotState, mark: u64) -> TakeOut {
    debug_assert!(mark & flags::CLOSING == mark && mark != 0);
    let done = match seen.lifecycle() {
        Lifecycle::Idle => try_claim(word, seen.generation(), Claim::Exclusive).is_ok(),
        Lifecycle::InUse | Lifecycle::Checking => {
            if try_flag(word, seen, mark) {
                return TakeOut::Marked;
            }
            false
        }
        Lifecycle::Empty => return TakeOut::Empty,
        Lifecycle::Reserved => return TakeOut::Busy,
    };
    if done {
        TakeOut::Claimed
    } else {
        TakeOut::Changed
    }
}

/// A borrow handle inside the crate: the slot and the generation the borrow was issued
/// under (the public, connection-checked form is [`RawHandle`](crate::RawHandle)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Handle {
    pub(crate) slot: u32,
    pub(crate) generation: u64,
}

impl Handle {
    #[inline]
    pub(crate) const fn new(slot: u32, generation: u64) -> Self {
        Handle { slot, generation }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn state_word_round_trips() {
        let s = SlotState::new(GENERATION_MASK, Lifecycle::Idle);
        assert_eq!(s.generation(), GENERATION_MASK);
        assert_eq!(
            SlotState::new(1 << 40, Lifecycle::Idle).generation(),
            1 << 40
        );
        assert_eq!(s.lifecycle(), Lifecycle::Idle);
        let b = s.next_borrow();
        assert_eq!(b.generation(), 0, "generation wraps");
        assert_eq!(b.lifecycle(), Lifecycle::InUse);
        let f = b
            .with_flag(flags::RECLAIMED)
            .with_flag(flags::CLOSE_ON_RETURN);
        assert!(f.has(flags::RECLAIMED) && f.has(flags::CLOSE_ON_RETURN));
        assert!(!b.has(flags::RECLAIMED));
        assert_eq!(
            f.with_lifecycle(Lifecycle::Idle).lifecycle(),
            Lifecycle::Idle
        );
        assert_eq!(f.without_flags(), b);
        assert_eq!(SlotState::from_packed(f.pack()), f);
        assert_eq!(f.generation(), 0, "flags never leak into the generation");
        assert_eq!(f.retired().generation(), 1);
    }
}

//! The slot state word: a typed view of one packed `u64`.
//!
//! ```text
//!  63                              32 31            16 15       8 7        0
//! +----------------------------------+----------------+----------+----------+
//! |           generation             |   (reserved)   |  flags   | lifecycle|
//! +----------------------------------+----------------+----------+----------+
//! ```
//!
//! The generation is bumped by every borrow, so a borrow handle (slot index + the
//! generation it was issued under) names exactly one borrow. Every transition of a
//! borrowed slot is a compare-and-swap against the full word, so a stale handle can
//! never change the current holder's borrow.

/// Where a slot is in its life. Exactly one party owns a slot in every state but
/// `Empty`: the idle-set bit owner (`Idle`), the borrower (`InUse`), the sweeper
/// (`Checking`), or whoever moved it to `Reserved`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Lifecycle {
    /// No connection; the slot is on the pool's free list.
    Empty = 0,
    /// Holds an idle connection; the idle-set bit is its ownership token.
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
    /// The borrow has been reported at level Alert.
    pub(crate) const LEAK_ALERT: u64 = 1 << 8;
    /// The borrow has been reported at level Critical.
    pub(crate) const LEAK_CRITICAL: u64 = 1 << 9;
    /// Close the connection when the borrow or check ends instead of idling it.
    pub(crate) const CLOSE_ON_RETURN: u64 = 1 << 10;
    /// The borrow was reclaimed as a critical leak; its handle is no longer honoured.
    pub(crate) const RECLAIMED: u64 = 1 << 11;
    /// All flag bits.
    pub(crate) const ALL: u64 = 0xff00;
}

/// A decoded state word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlotState(u64);

impl SlotState {
    #[inline]
    pub(crate) const fn from_packed(word: u64) -> Self {
        SlotState(word)
    }

    #[inline]
    pub(crate) const fn new(generation: u32, lifecycle: Lifecycle) -> Self {
        SlotState(((generation as u64) << 32) | lifecycle as u64)
    }

    #[inline]
    pub(crate) const fn pack(self) -> u64 {
        self.0
    }

    #[inline]
    pub(crate) const fn generation(self) -> u32 {
        (self.0 >> 32) as u32
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

    /// Same generation and flags, another lifecycle.
    #[inline]
    pub(crate) const fn with_lifecycle(self, lifecycle: Lifecycle) -> Self {
        SlotState((self.0 & !0xff) | lifecycle as u64)
    }

    /// The state a new borrow of this slot starts in: next generation, `InUse`, no flags.
    #[inline]
    pub(crate) const fn next_borrow(self) -> Self {
        SlotState::new(self.generation().wrapping_add(1), Lifecycle::InUse)
    }

    /// Same generation and lifecycle, no flags.
    #[inline]
    pub(crate) const fn without_flags(self) -> Self {
        SlotState(self.0 & !flags::ALL)
    }
}

/// A borrow handle: slot index in the low 32 bits, the borrow's generation in the high 32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Handle(u64);

impl Handle {
    #[inline]
    pub(crate) const fn new(slot: u32, generation: u32) -> Self {
        Handle(((generation as u64) << 32) | slot as u64)
    }
    #[inline]
    pub(crate) const fn from_raw(raw: u64) -> Self {
        Handle(raw)
    }
    #[inline]
    pub(crate) const fn raw(self) -> u64 {
        self.0
    }
    #[inline]
    pub(crate) const fn slot(self) -> u32 {
        self.0 as u32
    }
    #[inline]
    pub(crate) const fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_word_round_trips() {
        let s = SlotState::new(u32::MAX, Lifecycle::Idle);
        assert_eq!(s.generation(), u32::MAX);
        assert_eq!(s.lifecycle(), Lifecycle::Idle);
        let b = s.next_borrow();
        assert_eq!(b.generation(), 0, "generation wraps");
        assert_eq!(b.lifecycle(), Lifecycle::InUse);
        let f = b.with_flag(flags::LEAK_ALERT).with_flag(flags::CLOSE_ON_RETURN);
        assert!(f.has(flags::LEAK_ALERT) && f.has(flags::CLOSE_ON_RETURN));
        assert!(!f.has(flags::RECLAIMED));
        assert_eq!(f.with_lifecycle(Lifecycle::Idle).lifecycle(), Lifecycle::Idle);
        assert_eq!(f.without_flags(), b);
        assert_eq!(SlotState::from_packed(f.pack()), f);
        let h = Handle::new(7, 0xdead_beef);
        assert_eq!((h.slot(), h.generation()), (7, 0xdead_beef));
        assert_eq!(Handle::from_raw(h.raw()), h);
    }
}

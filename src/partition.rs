//! A user's share of the pool: its idle set, its waiters, and which slab slots it owns.
//!
//! A partition's capacity is `max_per_user`, fixed when the partition is created, so its
//! idle bitmap and slot table never grow. Partitions are created on a user's first
//! connection and live as long as the pool, which is what lets slots point at them.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU32, AtomicU64};

use crate::sync::Ordering;
use std::sync::{Arc, Mutex};

use crate::slab::Slab;
use crate::slab::idle::IdleSet;
use crate::slab::state::{Claim, Lifecycle, SlotState};
use crate::wait::{WaitQueue, lock};

/// Marks an unused entry of a partition's slot table.
pub(crate) const NO_SLOT: u32 = u32::MAX;

/// One user's connections.
pub(crate) struct Partition {
    /// The user, as given to `add_connection`.
    pub(crate) user: Arc<str>,
    /// Where this user's idle connections probably are (a hint; see `slab::idle`).
    pub(crate) idle: IdleSet,
    /// Local index -> slab slot index ([`NO_SLOT`] when unused). Written while the
    /// slot is `Reserved`, read by its owners.
    pub(crate) slots: Box<[AtomicU32]>,
    /// Threads and tasks waiting for one of this user's connections.
    pub(crate) waiters: WaitQueue,
    /// Local indices not holding a connection (add/remove path only).
    free_local: Mutex<Vec<u32>>,
    /// Acquires that timed out (slow path only).
    pub(crate) timeouts: AtomicU64,
}

impl Partition {
    pub(crate) fn new(user: Arc<str>, capacity: usize) -> Self {
        Partition {
            user,
            idle: IdleSet::new(capacity),
            slots: (0..capacity).map(|_| AtomicU32::new(NO_SLOT)).collect(),
            waiters: WaitQueue::new(),
            // Reversed so `pop` hands out the lowest index first.
            free_local: Mutex::new((0..capacity as u32).rev().collect()),
            timeouts: AtomicU64::new(0),
        }
    }

    /// Reserves a local index for a new connection, or `None` at `max_per_user`.
    pub(crate) fn reserve_local(&self) -> Option<u32> {
        lock(&self.free_local).pop()
    }

    /// Returns a local index whose connection is gone.
    pub(crate) fn release_local(&self, local: u32) {
        self.idle.unmark(local);
        self.slots[local as usize].store(NO_SLOT, Ordering::Relaxed);
        let mut free = lock(&self.free_local);
        free.push(local);
        // Keep handing out the lowest free index first, so use stays concentrated.
        free.sort_unstable_by(|a, b| b.cmp(a));
    }

    /// Connections this user holds (idle, borrowed or being checked).
    pub(crate) fn connection_count(&self) -> usize {
        self.slots.len() - lock(&self.free_local).len()
    }

    /// Claims one of this user's idle connections, lowest local index first.
    /// Returns `(local, slot, the claimed state)`.
    ///
    /// `order` is the first read of each hint word: `Relaxed` on the fast path (a stale
    /// read costs a retry at worst), `SeqCst` for a waiter's re-check, which must not be
    /// ordered before its registration (see `wait.rs`).
    pub(crate) fn claim_any(
        &self,
        slab: &Slab,
        claim: Claim,
        order: Ordering,
    ) -> Option<(u32, u32, SlotState)> {
        let state_of = |local: u32| slab.get(self.slot_of(local)).map(|h| &h.state);
        let (local, claimed) = self.idle.claim_hinted(state_of, claim, order)?;
        Some((local, self.slot_of(local), claimed))
    }

    /// Counts this user's idle connections (a snapshot, for statistics and errors).
    pub(crate) fn idle_count(&self, slab: &Slab) -> usize {
        self.slots
            .iter()
            .filter_map(|s| slab.get(s.load(Ordering::Relaxed)))
            .filter(|h| h.load_state(Ordering::Relaxed).lifecycle() == Lifecycle::Idle)
            .count()
    }

    /// The slab slot behind a local index.
    #[inline]
    pub(crate) fn slot_of(&self, local: u32) -> u32 {
        // Relaxed: the caller owns `local` (through the idle set or a grant), which
        // happened after the slot table entry was written.
        self.slots[local as usize].load(Ordering::Relaxed)
    }
}

/// FxHash: a multiply-rotate hash, several times faster than SipHash on short keys.
/// User names come from the service's own configuration, not from untrusted clients, so
/// HashDoS resistance is not needed here.
#[derive(Default, Clone, Copy)]
pub(crate) struct UserHasher(u64);

impl Hasher for UserHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let word = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
            self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }

    #[inline]
    fn write_u8(&mut self, b: u8) {
        self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

/// User name -> partition. Published through `ArcSwap`; replaced whole when a user is
/// added (rare), read lock-free on every acquire.
pub(crate) type UserMap = HashMap<Arc<str>, Arc<Partition>, BuildHasherDefault<UserHasher>>;

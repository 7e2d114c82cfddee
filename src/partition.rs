//! A user's share of the pool: its idle set, its waiters, and which slab slots it owns.
//!
//! A partition's capacity is `max_per_user`, fixed when the partition is created, so its
//! idle bitmap and slot table never grow. Partitions are created on a user's first
//! connection (see `users.rs`), and their memory lives as long as the pool, which is what
//! lets slots and thread-local affinity entries point at them: a partition whose user
//! had no connection and no waiter for a while is *retired* and later *reused* for
//! another user (a new serial, name and counters), never freed before the pool.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU32, AtomicU64};

use crate::sync::Ordering;
use std::sync::{Arc, Mutex};

use crate::factory::UserFactory;
use crate::slab::idle::IdleSet;
use crate::slab::state::{Claim, Lifecycle, SlotState};
use crate::slab::{Slab, SlotHeader};
use crate::wait::{WaitQueue, lock};

/// Marks an unused entry of a partition's slot table.
pub(crate) const NO_SLOT: u32 = u32::MAX;

/// `PAUSE`s a poller waits before it believes a connection it saw idle (see
/// [`Partition::stays_idle`]): 0.4-0.7 us on the x86 hosts measured (a `PAUSE` is
/// 25-40 ns there), far longer than a release-and-borrow loop's gap, and short against
/// any real hold. Two threads over one connection (a blocking loop): 23 M borrows a
/// second without the moment, 27 M with 1 `PAUSE`, 36-40 M with 4 to 256. On one core
/// the releaser cannot run during it; there it only delays the awake waiter's claim.
const RELEASER_MOMENT_PAUSES: u32 = 16;

/// One user's connections.
pub(crate) struct Partition {
    /// The user, as given to `add_connection`; see [`user`](Self::user). Replaced only
    /// by [`reuse`](Self::reuse).
    name: NameCell,
    /// Which user this partition serves: unique within the pool, new at each reuse. An
    /// affinity entry names a partition by address and serial, and trusts the address
    /// only after claiming the slot it names (see `PoolInner::take_affine`).
    serial: AtomicU64,
    /// When the sweeper first saw this partition with no connection, no waiter and no
    /// request (ms since the slab epoch, plus one; 0: not vacant). Set by the sweeper;
    /// cleared by it and by activity on a slow path (`note_activity`). Relaxed: a late
    /// clear only delays a retirement by a pass.
    pub(crate) vacant_since: AtomicU32,
    /// Where this user's idle connections probably are (a hint; see `slab::idle`).
    pub(crate) idle: IdleSet,
    /// Local index -> slab slot index ([`NO_SLOT`] when unused). Written while the
    /// slot is `Reserved`, read by its owners.
    pub(crate) slots: Box<[AtomicU32]>,
    /// Threads and tasks waiting for one of this user's connections.
    pub(crate) waiters: WaitQueue,
    /// Capacity accounting (add/remove path only).
    members: Mutex<Capacity>,
    /// Acquires that timed out (slow path only).
    pub(crate) timeouts: AtomicU64,
    /// Connections asked of the factory (by waiters, for replacements) that no connect
    /// has started on yet.
    pub(crate) factory_requests: AtomicU64,
    /// Factory failures for this user, and the last one's message.
    pub(crate) factory_errors: AtomicU64,
    pub(crate) last_factory_error: Mutex<Option<String>>,
    /// Connects in flight, creations and backoff (see `factory`).
    pub(crate) factory: UserFactory,
}

/// Fixed-size index space with a count limit below its size: the headroom holds
/// borrows reclaimed as critical leaks, which no longer count against the limit but
/// keep their slot until their holder gives them back.
#[derive(Debug)]
pub(crate) struct Capacity {
    /// Indices holding nothing, lowest first (a min-heap: O(log n) per add or remove,
    /// so filling or draining a million-slot pool stays fast).
    free: BinaryHeap<Reverse<u32>>,
    /// Indices that count against `limit`.
    counted: usize,
    limit: usize,
    /// The size of the index space (`limit` plus the headroom).
    size: usize,
    /// Set when the owning partition is retired: nothing more may be taken.
    retired: bool,
}

/// Why [`Partition::reserve_local`] found no place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoPlace {
    /// The user holds `max_per_user` connections.
    Full,
    /// The partition was retired: look the user up again.
    Retired,
}

impl Capacity {
    /// `limit` counted entries in an index space of `limit + headroom`.
    pub(crate) fn new(limit: usize, headroom: usize) -> Self {
        Capacity {
            // Lowest index first concentrates use on few slots.
            free: (0..(limit + headroom) as u32).map(Reverse).collect(),
            counted: 0,
            limit,
            size: limit + headroom,
            retired: false,
        }
    }

    /// The headroom for reclaimed borrows: a quarter of the limit, at least one.
    pub(crate) fn headroom(limit: usize) -> usize {
        (limit / 4).max(1)
    }

    /// Takes an index that counts against the limit; `None` at the limit (or when the
    /// headroom is exhausted by reclaimed borrows).
    pub(crate) fn take(&mut self) -> Option<u32> {
        if self.counted >= self.limit {
            return None;
        }
        let Reverse(index) = self.free.pop()?;
        self.counted += 1;
        Some(index)
    }

    /// Gives an index back; `counted` says whether it still counted against the limit.
    pub(crate) fn give(&mut self, index: u32, counted: bool) {
        if counted {
            self.counted -= 1;
        }
        self.free.push(Reverse(index));
    }

    /// Stops counting one index against the limit (its borrow was reclaimed).
    pub(crate) fn uncount(&mut self) {
        self.counted -= 1;
    }

    /// Indices that count against the limit.
    pub(crate) fn counted(&self) -> usize {
        self.counted
    }

    /// Whether [`take`](Self::take) would succeed now.
    pub(crate) fn has_room(&self) -> bool {
        self.counted < self.limit && !self.free.is_empty()
    }

    /// Whether no index is in use, counted or not (a reclaimed borrow keeps its index).
    fn all_free(&self) -> bool {
        self.counted == 0 && self.free.len() == self.size
    }
}

/// The user's name, replaceable by [`Partition::reuse`] only (see its contract).
struct NameCell(UnsafeCell<Arc<str>>);

// SAFETY: the cell is written only by `Partition::reuse`, whose contract excludes every
// concurrent reader (see `Partition::user`); all other accesses read it. `Arc<str>` is
// `Send + Sync`, so sharing the reads is sound.
unsafe impl Sync for NameCell {}

impl Partition {
    pub(crate) fn new(user: Arc<str>, serial: u64, max_per_user: usize) -> Self {
        let headroom = Capacity::headroom(max_per_user);
        let size = max_per_user + headroom;
        Partition {
            name: NameCell(UnsafeCell::new(user)),
            serial: AtomicU64::new(serial),
            vacant_since: AtomicU32::new(0),
            idle: IdleSet::new(size),
            slots: (0..size).map(|_| AtomicU32::new(NO_SLOT)).collect(),
            waiters: WaitQueue::new(),
            members: Mutex::new(Capacity::new(max_per_user, headroom)),
            timeouts: AtomicU64::new(0),
            factory_requests: AtomicU64::new(0),
            factory_errors: AtomicU64::new(0),
            last_factory_error: Mutex::new(None),
            factory: UserFactory::default(),
        }
    }

    /// The user this partition serves.
    ///
    /// Callers hold something that keeps the partition from being reused meanwhile: an
    /// `Arc` from the user map, a connection of it (a claimed or reserved slot), or
    /// the user registry's lock.
    #[inline]
    pub(crate) fn user(&self) -> &Arc<str> {
        // SAFETY: `reuse` writes the name only while no `Arc` but the registry's exists,
        // the partition is out of the map and has no slot, under the registry's lock;
        // every caller holds one of those (see above), so no write overlaps this read.
        unsafe { &*self.name.0.get() }
    }

    /// Which use of this partition this is (see the field).
    #[inline]
    pub(crate) fn serial(&self) -> u64 {
        // Relaxed: read after claiming a slot of the partition (an Acquire CAS that
        // follows the slot's publication, itself after any reuse's store).
        self.serial.load(Ordering::Relaxed)
    }

    /// Reserves a local index for a new connection: `Full` at `max_per_user`,
    /// `Retired` once the partition is retired.
    pub(crate) fn reserve_local(&self) -> Result<u32, NoPlace> {
        let mut members = lock(&self.members);
        if members.retired {
            return Err(NoPlace::Retired);
        }
        self.note_activity();
        members.take().ok_or(NoPlace::Full)
    }

    /// Whether the partition has no connection, no waiter and no request for one: a
    /// candidate for retirement (which re-checks under its locks).
    pub(crate) fn is_vacant(&self) -> bool {
        self.waiters.waiting() == 0
            && self.factory_requests.load(Ordering::Relaxed) == 0
            && self.factory.connecting() == 0
            // Not even a reclaimed borrow, which no longer counts but keeps its place.
            && lock(&self.members).all_free()
    }

    /// Someone asked for this user (a registration, an add): its vacancy, if the
    /// sweeper saw one, starts again from the next pass. Slow paths only.
    pub(crate) fn note_activity(&self) {
        self.vacant_since.store(0, Ordering::Relaxed);
    }

    /// Retires the partition if it holds no connection (not even a reclaimed borrow)
    /// and nobody waits: afterwards nothing can be added to it nor wait on it (its
    /// queue is closed), so it can leave the user map. Whether it was retired.
    ///
    /// Both checks are made under the locks that adding and waiting take, so a
    /// concurrent add or registration either comes first (and the retirement is
    /// refused) or sees the retirement (and looks the user up again).
    pub(crate) fn retire(&self) -> bool {
        let mut members = lock(&self.members);
        if members.retired || !members.all_free() {
            return false;
        }
        if !self.waiters.close_if_empty() {
            return false;
        }
        members.retired = true;
        true
    }

    /// Makes a retired partition serve `user`: a new name and serial, counters from
    /// zero, open for connections and waiters.
    ///
    /// # Safety
    ///
    /// The caller holds the registry's lock, the partition is retired and out of the
    /// user map, and the caller's `Arc` is its only one (so no operation that could
    /// read the name is under way: see [`user`](Self::user)). Threads that ended a
    /// borrow of it long ago may still touch its atomics (an idle hint, the waiter
    /// signal): harmless hints, which is why only the name needs this contract.
    pub(crate) unsafe fn reuse(&self, user: Arc<str>, serial: u64) {
        // SAFETY: the caller's contract: nothing reads the name meanwhile.
        unsafe { *self.name.0.get() = user };
        self.serial.store(serial, Ordering::Relaxed);
        self.vacant_since.store(0, Ordering::Relaxed);
        self.timeouts.store(0, Ordering::Relaxed);
        self.factory_requests.store(0, Ordering::Relaxed);
        self.factory_errors.store(0, Ordering::Relaxed);
        *lock(&self.last_factory_error) = None;
        self.factory.clear();
        self.idle.clear();
        // Reopened last, under the members lock: from here the partition takes
        // connections and waiters again.
        let mut members = lock(&self.members);
        self.waiters.reopen();
        members.retired = false;
    }

    /// Returns a local index whose connection is gone; `counted` is false for a
    /// reclaimed borrow, which stopped counting when it was reclaimed.
    pub(crate) fn release_local(&self, local: u32, counted: bool) {
        self.idle.unmark(local);
        self.slots[local as usize].store(NO_SLOT, Ordering::Relaxed);
        lock(&self.members).give(local, counted);
    }

    /// A borrow of this user was reclaimed: it no longer counts against
    /// `max_per_user`.
    pub(crate) fn uncount(&self) {
        lock(&self.members).uncount();
    }

    /// Connections this user holds that count against `max_per_user` (idle, borrowed
    /// or being checked; not reclaimed ones).
    pub(crate) fn connection_count(&self) -> usize {
        lock(&self.members).counted()
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
        let state_of = self.state_of(slab);
        let belongs = |local: u32| {
            slab.get(self.slot_of(local))
                .is_some_and(|h| self.owns(h, local))
        };
        let (local, claimed) = self.idle.claim_hinted(state_of, belongs, claim, order)?;
        // The claim succeeded at the generation `belongs` judged, so the mapping read
        // now is that slot's (it cannot be emptied while we own it).
        Some((local, self.slot_of(local), claimed))
    }

    /// Whether one of this user's connections looks idle now, read-only (see
    /// `IdleSet::any_seen_idle`).
    #[inline]
    fn looks_idle(&self, slab: &Slab) -> bool {
        self.idle.any_seen_idle(self.state_of(slab))
    }

    /// Whether one of this user's connections looks idle now and still does a moment
    /// later ([`RELEASER_MOMENT_PAUSES`] `PAUSE`s, under a microsecond): the poll of a
    /// caller that waits, before it searches. Read-only. The moment is the releaser's:
    /// a holder that releases and borrows again at once (a loop, a handler issuing its
    /// next query) takes its connection back within nanoseconds, and a poller that
    /// claimed it in that gap would move the connection's lines to its own core and
    /// send the holder down the waiting path, one change of owner per poll. A
    /// connection really given up is still idle after the moment, and is searched for.
    #[inline]
    pub(crate) fn stays_idle(&self, slab: &Slab) -> bool {
        if !self.looks_idle(slab) {
            return false;
        }
        for _ in 0..RELEASER_MOMENT_PAUSES {
            std::hint::spin_loop();
        }
        self.looks_idle(slab)
    }

    /// The state word of the slot a local index names now, if any: the idle hint's view
    /// of the slab.
    #[inline]
    fn state_of<'s>(&'s self, slab: &'s Slab) -> impl Fn(u32) -> Option<&'s AtomicU64> {
        move |local| slab.get(self.slot_of(local)).map(|h| &h.state)
    }

    /// Whether the slot behind `header` is this partition's local index `local` (its
    /// owner and index fields). A slot can be emptied and refilled for someone else
    /// between two reads, so callers act on the answer only through a CAS at the
    /// generation they saw before asking (a retire bumps it).
    #[inline]
    pub(crate) fn owns(&self, header: &SlotHeader, local: u32) -> bool {
        std::ptr::eq(
            header.partition.load(Ordering::Relaxed).cast_const(),
            (self as *const Partition).cast(),
        )
            && header.local.load(Ordering::Relaxed) == local
    }

    /// The size of the local index space (`max_per_user` plus the headroom for
    /// reclaimed borrows).
    pub(crate) fn capacity(&self) -> u32 {
        self.slots.len() as u32
    }

    /// Counts this user's idle connections (a snapshot, for statistics and errors).
    pub(crate) fn idle_count(&self, slab: &Slab) -> usize {
        self.slots
            .iter()
            .filter_map(|s| slab.get(s.load(Ordering::Relaxed)))
            .filter(|h| h.load_state(Ordering::Relaxed).lifecycle() == Lifecycle::Idle)
            .count()
    }

    /// The slab slot behind a local index. SeqCst: a searcher re-reads it after
    /// clearing a stale hint bit, against the SeqCst store in `add` (see
    /// `IdleSet::claim_hinted`); on x86 a SeqCst load is a plain load.
    #[inline]
    pub(crate) fn slot_of(&self, local: u32) -> u32 {
        self.slots[local as usize].load(Ordering::SeqCst)
    }
}

/// FxHash: a multiply-rotate hash, several times faster than SipHash on short keys,
/// started from a per-pool random seed ([`UserHashing`]). User names may come from a
/// service's clients, so the seed keeps precomputed collisions from working against
/// every pool; it is not a cryptographic defence, and does not need to be one: the map
/// holds at most `max_users` users (`users.rs`), which bounds what a flood can cost.
#[derive(Clone, Copy)]
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

/// Builds [`UserHasher`]s from one pool's random seed.
#[derive(Clone, Copy)]
pub(crate) struct UserHashing(u64);

impl UserHashing {
    /// A seed from the standard library's per-process random keys.
    pub(crate) fn random() -> Self {
        UserHashing(std::collections::hash_map::RandomState::new().hash_one(0x6865_6c69_6f73u64))
    }
}

impl BuildHasher for UserHashing {
    type Hasher = UserHasher;

    #[inline]
    fn build_hasher(&self) -> UserHasher {
        UserHasher(self.0)
    }
}

/// User name -> partition. Published through `ArcSwap`; replaced whole when a user is
/// added or retired (rare), read lock-free by acquires that miss their affinity entry.
pub(crate) type UserMap = HashMap<Arc<str>, Arc<Partition>, UserHashing>;

//! The slab: one fixed array of slot headers, allocated when the pool is built and never
//! reallocated, so a slot index stays valid for the pool's life.
//!
//! A header holds everything about a slot except the connection value itself (which is
//! generic and lives in the pool): the state word, timestamps, the current borrow's call
//! site and thread, and the connection's descriptive info. The header array is not
//! generic, so the leak scan and statistics read it without knowing the connection type.
//!
//! # Who writes what
//!
//! - `state` is the ownership token (see [`state`]); transitions of a borrowed slot are
//!   CAS on the whole word.
//! - `site`, `borrower`, `hold_extension_ms` (reset to 0), then `stamp` are written by a
//!   borrower right after its claim made the slot `InUse`; `hold_extension_ms` may be
//!   written again by the holder during the borrow (`PooledConnection::expect_hold`). `stamp` carries the borrow's generation next to its start
//!   time and is written last (Release), so a reader (the leak scan) that finds the
//!   stamp's generation equal to the state's knows the fields belong to this borrow; it
//!   re-reads the state afterwards and discards the read if the slot changed hands
//!   (seqlock-style validation).
//! - `released_ms` is written by the owner that makes the slot idle (a release, an add,
//!   a health check) when validation on borrow is on, and read by the next borrower
//!   after its claim.
//! - `conn_id`, `created_at`, `partition`, `local`, `info` are written while the slot is
//!   `Reserved` by whoever fills or empties it, and are read-only while it is occupied.

pub(crate) mod idle;
pub(crate) mod site;
pub(crate) mod state;

use site::SiteCell;
pub use site::{CSite, CallSite};

use std::sync::Arc;
use std::sync::atomic::fence;

use arc_swap::ArcSwapOption;
use crossbeam_utils::CachePadded;

use crate::clock;
use crate::metadata::ConnectionMetadata;
use crate::sync::{AtomicPtr, AtomicU32, AtomicU64, Ordering};
use state::SlotState;

/// Descriptive, immutable facts about the connection in a slot.
pub(crate) struct SlotInfo {
    pub(crate) user: Arc<str>,
    pub(crate) metadata: ConnectionMetadata,
}

/// One slot's header. See the module docs for who writes each field.
#[repr(C)] // Field order matters: see below.
pub(crate) struct SlotHeader {
    // First 64 bytes: everything the hot path and the sweeper's per-slot checks read,
    // so a sweeper pass touches one cache line per slot.
    /// The packed [`SlotState`].
    pub(crate) state: AtomicU64,
    /// Raw [`ConnectionId`](crate::ConnectionId) of the occupying connection.
    pub(crate) conn_id: AtomicU64,
    /// The owning user's partition (a `*const Partition`, opaque here), null when
    /// empty. A pointer, not an integer, so the partition's provenance travels with it.
    pub(crate) partition: AtomicPtr<()>,
    /// The current borrow's generation (high 32 bits) and its start in milliseconds
    /// since the slab's epoch (low 32 bits; wraps after 49 days, far beyond any
    /// threshold it is compared with).
    stamp: AtomicU64,
    /// When the connection was added, in slab nanoseconds ([`Slab::now_nanos`]).
    pub(crate) created_at: AtomicU64,
    /// Thread tag of the current borrower (see `thread_tag`).
    pub(crate) borrower: AtomicU64,
    /// Index of this slot within its partition.
    pub(crate) local: AtomicU32,
    /// Non-zero while a release that must be waited for is inside the pool for this
    /// slot (see [`SlotHeader::enter_release`]); on this line because the releaser
    /// owns it already.
    release_marker: AtomicU32,
    /// How much later than the thresholds the current borrow's leak levels fall
    /// (ms; `PooledConnection::expect_hold`): reset to 0 by each borrow before its
    /// stamp, written by the holder, read by the validated snapshot.
    hold_extension_ms: AtomicU32,
    /// When the connection last became idle (ms since the epoch), kept only while
    /// validation on borrow is on (`PoolBuilder::validate_after`).
    released_ms: AtomicU32,
    // Second line: read when a borrow is reported or described.
    site: SiteCell,
    /// The connection's user and metadata; set while the slot is `Reserved`.
    pub(crate) info: ArcSwapOption<SlotInfo>,
    /// The generation borrows are counted from (statistics): the first one, moved
    /// along by any test-only jump of the generation so that jump counts no borrows.
    pub(crate) baseline: AtomicU64,
}

// The hot path and the sweeper read one line per slot: the borrow's fields stay on it.
#[cfg(not(loom))]
const _: () = assert!(std::mem::offset_of!(SlotHeader, released_ms) + 4 <= 64);

/// A borrow whose holder is recorded but whose stamp (generation and start) is not
/// written yet: from [`SlotHeader::record_borrower`], published by [`stamp`](Self::stamp).
#[must_use = "a recorded borrow is published by `stamp`"]
pub(crate) struct BorrowRecord<'a> {
    header: &'a SlotHeader,
}

impl BorrowRecord<'_> {
    /// Publishes the borrow `generation`, begun at `now_ms`.
    #[inline(always)]
    pub(crate) fn stamp(self, generation: u64, now_ms: u32) {
        // Release: a reader that sees this stamp sees the fields `record_borrower` wrote.
        self.header.stamp.store(
            (u64::from(generation as u32) << 32) | u64::from(now_ms),
            Ordering::Release,
        );
    }
}

impl SlotHeader {
    fn new(initial_generation: u64) -> Self {
        SlotHeader {
            state: AtomicU64::new(
                SlotState::new(initial_generation, state::Lifecycle::Empty).pack(),
            ),
            stamp: AtomicU64::new(0),
            created_at: AtomicU64::new(0),
            site: SiteCell::new(),
            borrower: AtomicU64::new(0),
            conn_id: AtomicU64::new(0),
            partition: AtomicPtr::new(std::ptr::null_mut()),
            local: AtomicU32::new(0),
            release_marker: AtomicU32::new(0),
            hold_extension_ms: AtomicU32::new(0),
            released_ms: AtomicU32::new(0),
            info: ArcSwapOption::empty(),
            baseline: AtomicU64::new(initial_generation),
        }
    }

    #[inline]
    pub(crate) fn load_state(&self, order: Ordering) -> SlotState {
        SlotState::from_packed(self.state.load(order))
    }

    /// Records who holds the borrow just claimed by the caller (its call site and
    /// thread); the returned record's [`stamp`](BorrowRecord::stamp) then publishes it.
    /// Two steps so the caller reads the clock between them: the site's words are then
    /// stored before the clock's call instead of kept across it.
    #[inline(always)]
    pub(crate) fn record_borrower(&self, site: CallSite, borrower: u64) -> BorrowRecord<'_> {
        // Release fence: the seqlock writer's half. A reader that sees any field written
        // below (or by `stamp`) also sees the claim that preceded it (see
        // `borrow_snapshot`).
        fence(std::sync::atomic::Ordering::Release);
        self.site.store(site);
        self.borrower.store(borrower, Ordering::Relaxed);
        // A previous borrow's declared hold must not carry over to this one.
        self.hold_extension_ms.store(0, Ordering::Relaxed);
        BorrowRecord { header: self }
    }

    /// Moves the current borrow's leak levels `extension_ms` later; called by the
    /// borrow's holder only (a store on the slot's first line, which it owns).
    pub(crate) fn set_hold_extension(&self, extension_ms: u32) {
        // Release fence, as in `record_borrower`: a snapshot that reads this value and
        // then finds the state unchanged knows it belongs to the borrow it validated;
        // one that reads it from a later borrow sees that borrow's claim on re-reading
        // the state (the claim happens-before this fence) and discards the read.
        fence(std::sync::atomic::Ordering::Release);
        self.hold_extension_ms
            .store(extension_ms, Ordering::Relaxed);
    }

    /// Records that the connection becomes idle at `now_ms`; called by the slot's owner
    /// before it makes the slot idle (a store on the line it owns). The next borrower
    /// reads it after its claim (Acquire), so it sees this value or a later one.
    #[inline]
    pub(crate) fn note_idle_since(&self, now_ms: u32) {
        self.released_ms.store(now_ms, Ordering::Relaxed);
    }

    /// How long the current borrow's connection was idle before it (ms), read by the
    /// borrower after its stamp; negative if the clock readings crossed.
    #[inline]
    pub(crate) fn owner_idle_ms(&self) -> i32 {
        self.owner_started_ms()
            .wrapping_sub(self.released_ms.load(Ordering::Relaxed)) as i32
    }

    /// A release that an owner of the pool's memory must wait for (the C ABI's
    /// `heliosdb_pool_free`) enters; it leaves when the returned guard drops (also on
    /// unwinding). The C release marks its thread instead (`quiesce`, no locked RMW);
    /// this count serves the releases whose thread's mark is taken (made from another
    /// release's callback). A count, not a flag: two releases of one slot can be in
    /// flight at once (the first closes its connection in a `close` callback while the
    /// slot is refilled, borrowed and released again), and the first to leave must not
    /// clear the second's mark. SeqCst: the releaser's half of a Dekker handshake with the
    /// owner's "freed" flag (the releaser marks, then loads the flag; the owner stores
    /// the flag, then waits for every mark to clear), so one of them sees the other.
    /// One locked RMW on a line the releaser owns already.
    #[inline]
    pub(crate) fn enter_release(&self) -> ReleaseInFlight<'_> {
        self.release_marker.fetch_add(1, Ordering::SeqCst);
        ReleaseInFlight(self, std::marker::PhantomData)
    }

    /// Whether a release is inside the pool for this slot now. SeqCst: the owner's half
    /// of the handshake (after its SeqCst store of "freed"); an Acquire load here could
    /// miss a mark made before that store, and the release would then go the normal way
    /// while being counted as an owner (Miri found that interleaving).
    pub(crate) fn release_in_flight(&self) -> bool {
        self.release_marker.load(Ordering::SeqCst) != 0
    }

    /// Makes the stamp name `generation`, the slot's idle generation after a test-only
    /// jump (see `EnhancedConnectionPool::testing_advance_generation`): no borrow has
    /// that generation, so no snapshot accepts the stamp until the next borrow's own.
    pub(crate) fn restamp_idle(&self, generation: u64) {
        self.stamp
            .store(u64::from(generation as u32) << 32, Ordering::Release);
    }

    /// When the current borrow began (ms since the epoch), read by its owner.
    #[inline]
    pub(crate) fn owner_started_ms(&self) -> u32 {
        self.stamp.load(Ordering::Relaxed) as u32
    }

    /// A consistent snapshot of the current borrow, or `None` if the slot is not in use,
    /// its borrower has not stamped it yet, or it changed hands while it was read.
    pub(crate) fn borrow_snapshot(&self) -> Option<BorrowSnapshot> {
        let before = self.load_state(Ordering::Acquire);
        if before.lifecycle() != state::Lifecycle::InUse {
            return None;
        }
        // Acquire: pairs with the Release store of the stamp, so the fields read below
        // are at least as new as the borrow the stamp names. The stamp keeps the low 32
        // bits of the generation: it is never more than one borrow behind the state.
        let stamp = self.stamp.load(Ordering::Acquire);
        if (stamp >> 32) as u32 != before.generation() as u32 {
            return None;
        }
        let site = self.site.load_words();
        let borrower = self.borrower.load(Ordering::Relaxed);
        let hold_extension_ms = self.hold_extension_ms.load(Ordering::Relaxed);
        // Acquire fence: if a field above was written by a later borrower, that
        // borrower's claim (which changed `state`) happens-before this re-read.
        fence(std::sync::atomic::Ordering::Acquire);
        let after = self.load_state(Ordering::Relaxed);
        if after.generation() != before.generation() || after.lifecycle() != before.lifecycle() {
            return None;
        }
        Some(BorrowSnapshot {
            state: after,
            started_ms: stamp as u32,
            // SAFETY: validated just above: the state did not change while the words
            // were read, so they all belong to this borrow's one `store`.
            site: unsafe { site.decode() },
            borrower,
            hold_extension: std::time::Duration::from_millis(u64::from(hold_extension_ms)),
        })
    }

    /// The call site of the current borrow, read by its owner.
    pub(crate) fn owner_site(&self) -> Option<CallSite> {
        // SAFETY: the caller owns the borrow; nobody else writes the site meanwhile,
        // and its own stamp (or the granter's, published by the grant) came before.
        unsafe { self.site.load_words().decode() }
    }
}

/// A release inside the pool for one slot (see [`SlotHeader::enter_release`]); it
/// leaves when dropped. Release: whoever then sees the count at zero sees everything the
/// release did.
///
/// A pointer, not a reference: the guard may be passed to a function during which, once
/// it has been dropped, the pool's memory is reclaimed (the C release that turns out to
/// be the last owner of a freed pool), and a reference argument would have to stay
/// valid for the whole call.
pub(crate) struct ReleaseInFlight<'a>(*const SlotHeader, std::marker::PhantomData<&'a SlotHeader>);

impl Drop for ReleaseInFlight<'_> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: made from a `&'a SlotHeader` by `enter_release`; the count it holds
        // keeps the pool's owner waiting (`release_in_flight`), so the header is alive
        // until this decrement.
        let header = unsafe { &*self.0 };
        header.release_marker.fetch_sub(1, Ordering::Release);
    }
}

/// A validated view of one borrow, taken by [`SlotHeader::borrow_snapshot`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct BorrowSnapshot {
    pub(crate) state: SlotState,
    pub(crate) started_ms: u32,
    pub(crate) site: Option<CallSite>,
    pub(crate) borrower: u64,
    /// The hold the holder declared (`expect_hold`): the leak levels fall this much
    /// later than the thresholds.
    pub(crate) hold_extension: std::time::Duration,
}

impl BorrowSnapshot {
    /// How long the borrow has been held at `now_ms`.
    pub(crate) fn age(&self, now_ms: u32) -> std::time::Duration {
        Slab::since(self.started_ms, now_ms)
    }

    /// The age the leak thresholds are compared with: the age less the declared hold.
    pub(crate) fn leak_age(&self, now_ms: u32) -> std::time::Duration {
        self.age(now_ms).saturating_sub(self.hold_extension)
    }
}

/// The slot headers of one pool.
pub(crate) struct Slab {
    slots: Box<[CachePadded<SlotHeader>]>,
    /// Coarse-clock nanoseconds at the slab's time zero: every pool timestamp (borrow
    /// stamps, creation times) counts from it. Atomic only so that tests can move the
    /// pool's clock forward ([`Slab::advance_clock`]); a Relaxed load is a plain load.
    epoch: AtomicU64,
}

impl Slab {
    /// A slab of `capacity` empty slots whose generations start at `first_generation`
    /// (random per pool, so a handle from another pool almost never matches).
    pub(crate) fn new(capacity: usize, first_generation: u64) -> Self {
        Slab {
            slots: (0..capacity)
                .map(|_| CachePadded::new(SlotHeader::new(first_generation)))
                .collect(),
            epoch: AtomicU64::new(clock::now_nanos()),
        }
    }

    /// Nanoseconds of pool time (since the slab's time zero).
    #[inline]
    pub(crate) fn now_nanos(&self) -> u64 {
        clock::now_nanos().wrapping_sub(self.epoch.load(Ordering::Relaxed))
    }

    /// Milliseconds of pool time, as stored in borrow stamps (wrapping after 49 days,
    /// far beyond any threshold it is compared with).
    #[inline]
    pub(crate) fn now_ms(&self) -> u32 {
        Self::ms(self.now_nanos())
    }

    /// A pool-time reading in nanoseconds as milliseconds (wrapping).
    #[inline]
    pub(crate) fn ms(nanos: u64) -> u32 {
        (nanos / 1_000_000) as u32
    }

    /// Moves this pool's clock forward by `by`, for tests of time-driven behaviour
    /// (leak levels, idle and age eviction) that must not sleep.
    pub(crate) fn advance_clock(&self, by: std::time::Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.epoch.fetch_sub(by, Ordering::Relaxed);
    }

    /// Time from a stamp's start to `now_ms`.
    #[inline]
    pub(crate) fn since(started_ms: u32, now_ms: u32) -> std::time::Duration {
        std::time::Duration::from_millis(u64::from(now_ms.wrapping_sub(started_ms)))
    }

    #[inline]
    pub(crate) fn get(&self, index: u32) -> Option<&SlotHeader> {
        self.slots.get(index as usize).map(|s| &**s)
    }

    /// Hints the CPU to start loading slot `index`'s first line (a no-op off x86_64 or
    /// out of range). The sweeper scans one padded line per slot; fetching a few slots
    /// ahead hides the memory latency that otherwise dominates a pass.
    #[inline]
    pub(crate) fn prefetch(&self, index: usize) {
        #[cfg(target_arch = "x86_64")]
        if let Some(slot) = self.slots.get(index) {
            let ptr = (&**slot as *const SlotHeader).cast::<i8>();
            // SAFETY: `_mm_prefetch` only hints the cache; it reads nothing and cannot
            // fault, and SSE (its target feature) is part of the x86_64 baseline.
            unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(ptr) };
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = index;
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &SlotHeader)> {
        self.slots.iter().enumerate().map(|(i, s)| (i as u32, &**s))
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::panic::Location;
    use std::sync::atomic::AtomicBool;

    use super::state::{self, Claim, Lifecycle};
    use super::*;

    const C_SITE: CSite = CSite::from_static(c"borrower.c", 42, Some(c"work"));

    /// A borrower alternating Rust and C call sites while another thread takes
    /// snapshots: every snapshot decodes to one whole site. Under Miri (`.ci/run`, many
    /// seeds) this also proves that no reference is built from a mix of two sites'
    /// words, e.g. a `&Location` from a C string pointer.
    #[test]
    fn snapshots_decode_only_whole_call_sites() {
        let slab = Arc::new(Slab::new(1, 7));
        let header = slab.get(0).expect("one slot");
        header
            .state
            .store(SlotState::new(7, Lifecycle::Idle).pack(), Ordering::SeqCst);
        let rounds = if cfg!(miri) { 40 } else { 20_000 };
        let done = Arc::new(AtomicBool::new(false));
        let writer = {
            let (slab, done) = (slab.clone(), done.clone());
            std::thread::spawn(move || {
                let header = slab.get(0).expect("one slot");
                for i in 0..rounds {
                    let idle = header.load_state(Ordering::Acquire);
                    let claimed = state::try_claim(&header.state, idle.generation(), Claim::Borrow)
                        .expect("the writer is the only borrower");
                    let site = if i % 2 == 0 {
                        CallSite::Rust(Location::caller())
                    } else {
                        CallSite::C(C_SITE)
                    };
                    header.record_borrower(site, 1).stamp(claimed.generation(), i);
                    state::end_borrow(&header.state, claimed.generation()).expect("our borrow");
                }
                done.store(true, Ordering::Release);
            })
        };
        while !done.load(Ordering::Acquire) {
            if let Some(snapshot) = header.borrow_snapshot() {
                match snapshot.site.expect("stamped borrows have a site") {
                    CallSite::Rust(location) => assert_eq!(location.file(), file!()),
                    CallSite::C(site) => {
                        assert_eq!((site.file(), site.line()), (c"borrower.c", 42));
                        assert_eq!(site.function(), Some(c"work"));
                    }
                }
            }
        }
        // How many snapshots were taken is up to the scheduler; every one was whole.
        writer.join().expect("the writer finishes");
    }
}

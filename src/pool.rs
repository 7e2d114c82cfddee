//! [`EnhancedConnectionPool`]: add, acquire, release, remove, close, stats.
//!
//! The acquire path reads like a short story: find the user's partition (this thread's
//! cached one, or a lock-free `ArcSwap` load and a hash lookup); claim the connection
//! this thread returned last with one CAS on its slot's state word (affinity), checking
//! that the slot still belongs to the user, or else search the user's idle hints and
//! claim the lowest idle slot by CAS; then stamp the borrow (a coarse clock read and a
//! few stores). Release validates the handle and ends the borrow with one CAS on the
//! state word, then makes sure the slot's idle hint is set and reads the waiter count.
//! Only when a user has no idle connection does `wait.rs` take a lock.

use std::cell::Cell;
use std::panic::Location;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::{Duration, Instant};

use crate::acquire::Acquire;
use crate::builder::{Hooks, PoolBuilder, Tuning};
use crate::clock;
use crate::config::EnhancedPoolConfig;
use crate::error::{Error, Result};
use crate::guard::PooledConnection;
use crate::guard::RawHandle;
use crate::health::ConnectionHealth;
use crate::metadata::{ConnectionId, ConnectionMetadata};
use crate::metrics::{BorrowInfo, Counters, Eviction, LeakStats, PoolStats, UserStats};
use crate::partition::{Capacity, NoPlace, Partition};
use crate::pool_leaks::PoolLeakDetector;
use crate::slab::state::{self, Claim, Handle, Lifecycle, SlotState, TakeOut, flags};
use crate::slab::{CallSite, Slab, SlotHeader, SlotInfo};
use crate::factory::Connector;
use crate::sweeper::{HealthTable, SweepProgress, SweepState, SweeperHandle};
use crate::sync::{Ordering, UnsafeCell};
use crate::thread_tag;
use crate::users::Users;
use crate::wait::{Outcome, Registration, Waiter, Wakeup, lock};

/// What [`EnhancedConnectionPool::remove_connection`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// The connection was idle and has been closed.
    Closed,
    /// The connection is borrowed; it will be closed when its holder returns it.
    ClosesOnReturn,
}

/// A lock-free pool of connections of type `C`, partitioned by user.
///
/// # Ownership
///
/// The pool owns every connection added to it. A borrow ([`PooledConnection`]) gives
/// its holder exclusive access until the guard drops; the connection then returns to
/// the pool. A connection leaves the pool (and is dropped, which is its close) when it
/// is removed, evicted (failover included), discarded, detached, or when the pool closes.
///
/// # Threading
///
/// `EnhancedConnectionPool<C>` is `Send + Sync` when `C: Send`; share it by reference or
/// in an `Arc`. Every method takes `&self`.
///
/// # Acquire forms
///
/// Following tokio's naming: [`acquire`](Self::acquire) is async,
/// [`blocking_acquire`](Self::blocking_acquire) parks the calling thread, and
/// [`try_acquire`](Self::try_acquire) never waits. All three record their caller's
/// source location (`#[track_caller]`) for leak reports.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use heliosdb_pool::{ConnectionMetadata, EnhancedConnectionPool, EnhancedPoolConfig, Error};
///
/// let pool = EnhancedConnectionPool::new(EnhancedPoolConfig::default());
/// let metadata = ConnectionMetadata {
///     user: "alice".to_string(),
///     database: Some("orders".to_string()),
///     protocol: "postgres".to_string(),
///     remote_addr: Some("10.0.0.1:5432".to_string()),
///     tags: vec!["primary".to_string()],
/// };
/// // Any `Send + 'static` value can be pooled; a String stands in for a connection here.
/// let id = pool.add_connection_sync(String::from("conn-1"), "alice", metadata)?;
///
/// {
///     let conn = pool.blocking_acquire("alice")?; // parks up to acquire_timeout_ms
///     assert_eq!(conn.connection_id(), id);
///     assert_eq!(conn.as_str(), "conn-1"); // the guard derefs to the connection
///     assert!(conn.call_site().to_string().contains(".rs:")); // file:line, for leak reports
///     // Borrowed: nothing idle for alice, and a short wait times out with the counts.
///     let waited = pool.blocking_acquire_timeout("alice", Duration::from_millis(20));
///     assert!(matches!(waited, Err(Error::Timeout { in_use: 1, idle: 0, .. })));
/// } // returned here, on every path (`?`, panics included)
///
/// // The same from async code, on any executor.
/// let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// runtime.block_on(async {
///     let conn = pool.acquire("alice").await?;
///     assert_eq!(conn.user(), "alice");
///     Ok::<(), Error>(())
/// })?;
///
/// assert!(matches!(pool.try_acquire("bob"), Err(Error::UnknownUser { .. })));
/// let stats = pool.stats();
/// assert_eq!((stats.total_connections, stats.idle_connections), (1, 1));
/// assert_eq!((stats.acquires, stats.timeouts), (2, 1));
///
/// pool.close(); // dropping the pool closes it too
/// assert!(matches!(pool.try_acquire("alice"), Err(Error::Closed)));
/// # Ok::<(), Error>(())
/// ```
pub struct EnhancedConnectionPool<C> {
    pub(crate) inner: Arc<PoolInner<C>>,
    /// The pool's leak view, as the design guide uses it:
    /// `pool.leak_detector.check_leaks()`.
    pub leak_detector: PoolLeakDetector,
    sweeper: Mutex<Option<SweeperHandle>>,
}

/// The shared state behind a pool handle.
pub(crate) struct PoolInner<C> {
    pub(crate) config: EnhancedPoolConfig,
    pub(crate) slab: Slab,
    /// The connections, indexed like the slab. Access protocol: see `value_ptr`.
    values: Box<[UnsafeCell<Option<C>>]>,
    /// The users' partitions: lookup, creation, limits and retirement.
    pub(crate) users: Users,
    /// Slab slots holding no connection, and how many count against
    /// `max_connections`. Add/remove path only.
    slots: Mutex<Capacity>,
    /// Settings beyond the config, and the user's hooks.
    pub(crate) tuning: Tuning,
    pub(crate) hooks: Hooks<C>,
    /// Event counters (never touched by the fast path).
    pub(crate) counters: Counters,
    /// The sweeper's per-slot bookkeeping; also locked by `sweep_now`.
    pub(crate) sweep: Mutex<SweepState>,
    /// The sweeper's progress, readable without its lock.
    pub(crate) sweep_progress: SweepProgress,
    /// Health-check records by slot.
    pub(crate) health: HealthTable,
    /// The factory's connector threads (see `factory`).
    pub(crate) connector: Connector,
    closed: AtomicBool,
    next_sequence: AtomicU64,
    /// Unique for the process's life (never reused, unlike addresses).
    id: u64,
    /// Slots emptied so far (each bumped a generation without a borrow).
    retirements: AtomicU64,
    /// The largest acquire count `stats` has reported: counts never go backwards.
    acquires_reported: AtomicU64,
    /// Held by `stats` and by the test-only generation jump, never by the hot path.
    generation_jumps: Mutex<()>,
}

/// The longest user name an affinity entry keeps a copy of; longer names are looked
/// up on every acquire.
const AFFINITY_NAME_BYTES: usize = 48;

/// The connection this thread returned last: its first choice for the next borrow
/// (affinity, as in HikariCP), with a copy of its user's name.
///
/// The entry owns nothing: its partition may be retired and reused for another user
/// at any time. So the name is compared against the entry's own copy, the slot is
/// claimed at the generation it was returned at, and only then, holding the slot, is
/// the partition read (its address from the slot, its serial against the entry's).
#[derive(Clone, Copy)]
struct LastReturned {
    /// Unique per pool for the process's life; 0 means none.
    pool_id: u64,
    /// The partition's address: its memory is the pool's for the pool's life, so its
    /// atomics may be read before the claim (a hint: the user may have changed).
    partition: *const Partition,
    /// The serial of the slot's partition when the slot was returned (see
    /// `Partition::serial`).
    serial: u64,
    slot: u32,
    /// The generation the slot was returned at: claiming it succeeds only if nobody
    /// borrowed or emptied it since (or its generation came round, which is why the
    /// claim also checks the serial).
    generation: u64,
    /// The serial of the partition whose user's name `name` holds (0: none). The entry
    /// names a user only while it equals `serial`: a release of another user's
    /// connection moves `serial` on without touching the name (the releaser may not
    /// read a name: see `end`).
    name_serial: u64,
    /// The name's length, or [`NAME_NOT_KEPT`].
    name_len: u32,
    name: [u8; AFFINITY_NAME_BYTES],
}

/// Rounds of [`PoolInner::spin_for_idle`]: crossbeam's `Backoff::spin` doubles its
/// `PAUSE`s each round (1, 2, ... 32: 63 in all, 1.5-2.5 us on the x86 hosts measured).
const SPIN_ROUNDS: u32 = 6;

/// Whether this process may run on more than one core (read once).
fn several_cores() -> bool {
    static SEVERAL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SEVERAL.get_or_init(|| std::thread::available_parallelism().is_ok_and(|n| n.get() > 1))
}

/// `LastReturned::name_len` of a name too long to keep.
const NAME_NOT_KEPT: u32 = u32::MAX;

impl LastReturned {
    /// Whether `user` is the entry's user, by its own copy of the name.
    #[inline]
    fn names(&self, user: &[u8]) -> bool {
        self.name_serial == self.serial
            && user.len() <= AFFINITY_NAME_BYTES
            && self.name_len as usize == user.len()
            && same_bytes(&self.name[..user.len()], user)
    }

    /// For the C boundary: whether the NUL-terminated `user` is the entry's user,
    /// compared without measuring or validating the C string first.
    ///
    /// # Safety
    ///
    /// `user` is non-NULL and NUL-terminated.
    #[inline]
    unsafe fn names_c(&self, user: *const std::ffi::c_char) -> bool {
        // `NAME_NOT_KEPT` is longer than the array: no name, like a name of another serial.
        let Some(name) = self.name.get(..self.name_len as usize) else {
            return false;
        };
        if self.name_serial != self.serial {
            return false;
        }
        let mut at = user.cast::<u8>();
        // Whether `user`'s next byte is `expected`; it moves on past a match only, so
        // each byte is read only after every one before it matched.
        let mut next_is = |expected: u8| {
            // SAFETY: every byte before `at` equalled a kept name's byte, never NUL (see
            // `remember_user`), so `at` is within the string. A NUL here differs from
            // `expected` and ends the match.
            if unsafe { at.read() } != expected {
                return false;
            }
            // SAFETY: `at` is within the string and not its NUL, so one past it is too.
            at = unsafe { at.add(1) };
            true
        };
        // Four bytes a step, which the compiler unrolls (about half the instructions of
        // a byte loop), then the rest.
        let mut quads = name.chunks_exact(4);
        if !quads.all(|quad| quad.iter().all(|&b| next_is(b)))
            || !quads.remainder().iter().all(|&b| next_is(b))
        {
            return false;
        }
        // SAFETY: as in `next_is`: the bytes before `at` were the name's, none NUL.
        unsafe { at.read() == 0 }
    }
}

thread_local! {
    /// The id of the pool whose sweeper pass runs on this thread now (0: none).
    static SWEEPING: Cell<u64> = const { Cell::new(0) };
    /// Read and written only by this thread, through short borrows that never overlap
    /// (no call out of this module happens while one is live).
    static LAST_RETURNED: std::cell::UnsafeCell<LastReturned> = const {
        std::cell::UnsafeCell::new(LastReturned {
            pool_id: 0,
            partition: std::ptr::null(),
            serial: 0,
            slot: 0,
            generation: 0,
            name_serial: 0,
            name_len: NAME_NOT_KEPT,
            name: [0; AFFINITY_NAME_BYTES],
        })
    };
}

/// This thread's affinity entry. The pointer is taken out of `with` in a closure small
/// enough to inline, so the hot path pays a thread-pointer offset, not a call.
///
/// The entry has no destructor (const-initialised, `Copy`), so the pointer stays valid
/// for the thread's life; every use is a short borrow that ends before anything that
/// could borrow the entry again runs (see `LAST_RETURNED`).
#[inline(always)]
fn last_returned() -> *mut LastReturned {
    LAST_RETURNED.with(std::cell::UnsafeCell::get)
}

// SAFETY: the only non-Sync field is `values`. Each value is accessed only by the
// slot's current owner under the state-machine protocol (idle-bit owner, borrower,
// or the party that moved the slot to `Reserved`), so no two threads touch one value
// at once; values move between threads, hence `C: Send`.
unsafe impl<C: Send> Sync for PoolInner<C> {}
// SAFETY: as above; the pool owns `C` values and may drop them on any thread.
unsafe impl<C: Send> Send for PoolInner<C> {}

impl<C: Send + 'static> EnhancedConnectionPool<C> {
    /// Builds a pool, allocating its whole slab now.
    ///
    /// # Panics
    ///
    /// If `config` is invalid ([`EnhancedPoolConfig::validate`]); use
    /// [`try_new`](Self::try_new) to get the error instead.
    pub fn new(config: EnhancedPoolConfig) -> Self {
        match Self::try_new(config) {
            Ok(pool) => pool,
            Err(e) => panic!("EnhancedConnectionPool::new: {e}"),
        }
    }

    /// Builds a pool after validating `config`, with no hooks and default tuning.
    /// [`builder`](Self::builder) adds hooks (health check, factory, leak callbacks).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] naming the offending field.
    pub fn try_new(config: EnhancedPoolConfig) -> Result<Self> {
        Self::builder(config).build()
    }

    /// A builder for a pool with hooks and settings beyond the config.
    pub fn builder(config: EnhancedPoolConfig) -> PoolBuilder<C> {
        PoolBuilder::new(config)
    }

    /// Assembles a validated pool and starts its sweeper if a background feature is on.
    pub(crate) fn from_parts(config: EnhancedPoolConfig, tuning: Tuning, hooks: Hooks<C>) -> Self {
        static NEXT_POOL_ID: AtomicU64 = AtomicU64::new(1);
        let headroom = Capacity::headroom(config.max_connections);
        let size = config.max_connections + headroom;
        let first_generation = pool_seed();
        // Relaxed: the id only needs to be unique.
        let id = NEXT_POOL_ID.fetch_add(1, Ordering::Relaxed);
        let connects = tuning.max_concurrent_connects;
        let inner = Arc::new_cyclic(|pool| PoolInner {
            slab: Slab::new(size, first_generation),
            values: (0..size).map(|_| UnsafeCell::new(None)).collect(),
            users: Users::new(tuning.user_limits, config.max_per_user),
            slots: Mutex::new(Capacity::new(config.max_connections, headroom)),
            closed: AtomicBool::new(false),
            next_sequence: AtomicU64::new(1),
            id,
            retirements: AtomicU64::new(0),
            acquires_reported: AtomicU64::new(0),
            generation_jumps: Mutex::new(()),
            counters: Counters::default(),
            sweep: Mutex::new(SweepState::new(size)),
            sweep_progress: SweepProgress::default(),
            health: Mutex::new(vec![None; size]),
            connector: Connector::new(pool.clone(), connects),
            tuning,
            hooks,
            config,
        });
        let sweeper = SweeperHandle::start(&inner);
        EnhancedConnectionPool {
            leak_detector: PoolLeakDetector::new(inner.clone()),
            inner,
            sweeper: Mutex::new(sweeper),
        }
    }

    /// The configuration the pool was built with.
    pub fn config(&self) -> &EnhancedPoolConfig {
        &self.inner.config
    }

    /// Adds a connection owned by `user`; returns its id. Async to match the design
    /// guide; it never waits. See [`add_connection_sync`](Self::add_connection_sync).
    ///
    /// # Errors
    ///
    /// As [`add_connection_sync`](Self::add_connection_sync).
    pub async fn add_connection(
        &self,
        conn: C,
        user: impl Into<Arc<str>>,
        metadata: ConnectionMetadata,
    ) -> Result<ConnectionId> {
        self.add_connection_sync(conn, user, metadata)
    }

    /// Adds a connection owned by `user`; returns its id. The connection is idle at
    /// once, and is handed to the longest waiter of `user` if there is one.
    ///
    /// This is the one place the pool allocates per connection (the metadata and, for a
    /// new user, the partition).
    ///
    /// `user` is the one source of truth for whom the connection serves: an empty
    /// `metadata.user` is filled in with it, and a different one is refused.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`], [`Error::UserAtCapacity`], [`Error::PoolFull`];
    /// [`Error::InvalidArgument`] if `metadata.user` names another user. On error the
    /// connection is dropped.
    pub fn add_connection_sync(
        &self,
        conn: C,
        user: impl Into<Arc<str>>,
        metadata: ConnectionMetadata,
    ) -> Result<ConnectionId> {
        self.inner.add(conn, user.into(), metadata)
    }

    /// Borrows an idle connection of `user`, waiting up to `acquire_timeout_ms`.
    ///
    /// The returned future is runtime-agnostic and cancellation-safe: dropping it
    /// before completion leaves the pool as if it had never been called.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownUser`], [`Error::Timeout`], [`Error::Closed`].
    #[track_caller]
    pub fn acquire<'a>(&'a self, user: &'a str) -> Acquire<'a, C> {
        self.acquire_timeout(user, self.inner.config.acquire_timeout())
    }

    /// [`acquire`](Self::acquire) with an explicit timeout.
    #[track_caller]
    pub fn acquire_timeout<'a>(&'a self, user: &'a str, timeout: Duration) -> Acquire<'a, C> {
        Acquire::new(
            &self.inner,
            user,
            timeout,
            CallSite::Rust(Location::caller()),
        )
    }

    /// Borrows an idle connection of `user`, parking the thread up to
    /// `acquire_timeout_ms`. Do not call it from an async task.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownUser`], [`Error::Timeout`], [`Error::Closed`].
    #[track_caller]
    #[inline]
    pub fn blocking_acquire(&self, user: &str) -> Result<PooledConnection<'_, C>> {
        self.inner.blocking_acquire(
            user,
            self.inner.config.acquire_timeout(),
            CallSite::Rust(Location::caller()),
        )
    }

    /// [`blocking_acquire`](Self::blocking_acquire) with an explicit timeout.
    #[track_caller]
    #[inline]
    pub fn blocking_acquire_timeout(
        &self,
        user: &str,
        timeout: Duration,
    ) -> Result<PooledConnection<'_, C>> {
        self.inner
            .blocking_acquire(user, timeout, CallSite::Rust(Location::caller()))
    }

    /// [`blocking_acquire_timeout`](Self::blocking_acquire_timeout) recording a given
    /// call site (the C ABI passes `__FILE__`/`__LINE__`/`__func__` through it).
    pub fn blocking_acquire_at(
        &self,
        user: &str,
        timeout: Duration,
        site: CallSite,
    ) -> Result<PooledConnection<'_, C>> {
        self.inner.blocking_acquire(user, timeout, site)
    }

    /// Borrows an idle connection of `user` if one is free right now; never waits.
    /// While other callers wait for `user`, it fails rather than jump the queue.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownUser`], [`Error::NoIdleConnection`], [`Error::Closed`].
    #[track_caller]
    #[inline]
    pub fn try_acquire(&self, user: &str) -> Result<PooledConnection<'_, C>> {
        self.inner
            .try_acquire(user, CallSite::Rust(Location::caller()))
    }

    /// [`try_acquire`](Self::try_acquire) recording a given call site.
    pub fn try_acquire_at(&self, user: &str, site: CallSite) -> Result<PooledConnection<'_, C>> {
        self.inner.try_acquire(user, site)
    }

    /// Ends a borrow given by its raw handle (from
    /// [`PooledConnection::into_raw_handle`]). A stale, doubled, forged or
    /// never-issued handle is rejected and changes nothing: the handle must name the
    /// connection in its slot and that slot's current borrow.
    ///
    /// # Errors
    ///
    /// [`Error::StaleHandle`]; [`Error::Reclaimed`] if the borrow had been reclaimed as
    /// a critical leak (the connection is closed now).
    #[inline]
    pub fn release_raw_handle(&self, raw: RawHandle) -> Result<()> {
        let (header, handle) = self.inner.borrow_of_raw(raw)?;
        self.inner.release_at(header, handle)
    }

    /// Ends a borrow given by its raw handle by closing its connection instead of
    /// returning it (see [`PooledConnection::discard`]); the handle is checked as by
    /// [`release_raw_handle`](Self::release_raw_handle), and a rejected one changes
    /// nothing.
    ///
    /// # Errors
    ///
    /// [`Error::StaleHandle`]; [`Error::Reclaimed`] if the borrow had been reclaimed as
    /// a critical leak (the connection is closed now, counted as reclaimed).
    pub fn discard_raw_handle(&self, raw: RawHandle) -> Result<()> {
        let (_, handle) = self.inner.borrow_of_raw(raw)?;
        self.inner.discard(handle)
    }

    /// [`PooledConnection::expect_hold`] for a borrow held as a [`RawHandle`] (the C
    /// ABI's `heliosdb_pool_expect_hold`): the borrow's leak levels and reclaim move `d`
    /// later. Changes nothing on error.
    ///
    /// # Errors
    ///
    /// [`Error::StaleHandle`] if the handle is not the current borrow of its slot;
    /// [`Error::Reclaimed`] if the borrow was reclaimed already (too late to declare).
    ///
    /// Only the handle's holder may call it (from any thread): the check and the store
    /// are two steps, so a call racing the borrow's release could mark the next borrow.
    pub fn expect_hold_raw_handle(&self, raw: RawHandle, d: Duration) -> Result<()> {
        let slot = self.inner.check_raw(raw)?;
        self.inner.set_hold_extension(slot, d);
        Ok(())
    }

    /// Runs `f` on the connection of a live raw handle.
    ///
    /// # Errors
    ///
    /// [`Error::StaleHandle`] or [`Error::Reclaimed`] if the handle is not the current
    /// borrow of its slot.
    ///
    /// # Safety
    ///
    /// The caller must be the holder of the borrow `raw` names (no other thread may use
    /// that borrow's connection during `f`), as the C ABI guarantees by contract.
    pub unsafe fn with_raw_handle<R>(
        &self,
        raw: RawHandle,
        f: impl FnOnce(&mut C) -> R,
    ) -> Result<R> {
        let slot = self.inner.check_raw(raw)?;
        // SAFETY: the handle is the slot's current borrow and the caller holds it.
        let conn = unsafe { self.inner.value_mut(slot) };
        Ok(f(conn))
    }

    /// For tests of generation wraparound: moves the generation of the idle connection
    /// `id` forward by `by` (modulo 2^48), as if `by` borrows had happened, without
    /// counting them in [`stats`](Self::stats). Handles and affinity entries issued
    /// before keep their old generation, so a test can bring a slot round to any
    /// generation in a few borrows. Not for production use: it changes nothing a
    /// correct program can observe, but serves no purpose there either.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownConnection`]; [`Error::InvalidArgument`] if the connection is
    /// not idle now.
    #[doc(hidden)]
    pub fn testing_advance_generation(&self, id: ConnectionId, by: u64) -> Result<()> {
        self.inner.advance_generation(id, by)
    }

    /// For tests of time-driven behaviour: moves this pool's clock (the one borrow
    /// stamps, leak levels, idle and age eviction read) forward by `by`, so a test can
    /// step through thresholds without sleeping. Other pools are not affected.
    #[doc(hidden)]
    pub fn testing_advance_clock(&self, by: Duration) {
        self.inner.slab.advance_clock(by);
    }

    /// Removes a connection. An idle one is closed now; a borrowed one is closed when
    /// its holder returns it.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownConnection`] if no connection has this id.
    pub fn remove_connection(&self, id: ConnectionId) -> Result<Removal> {
        self.inner.remove(id)
    }

    /// Failover: takes every connection of the pool out of service, as after the
    /// database failed over and every session to the old primary is useless. Idle
    /// connections are closed now, borrowed ones (and ones being health-checked) when
    /// their holder gives them back; each counts as an eviction with cause `failover`
    /// (`evictions.failover`). With a factory, callers waiting are served by new
    /// connections at once, and `min_idle` is restored by the next sweeper pass.
    ///
    /// Returns how many connections were evicted (closed now or marked to close).
    /// A connection added while it runs may or may not be evicted. May be called from
    /// any thread, concurrently with anything, and from the pool's hooks (from a
    /// `reset` hook it also marks the connection being reset, which then closes instead
    /// of going idle).
    pub fn evict_all(&self) -> usize {
        self.inner
            .all_partitions()
            .iter()
            .map(|p| self.inner.evict_partition(p))
            .sum()
    }

    /// [`evict_all`](Self::evict_all) for one user's connections only.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownUser`] if `user` has no partition (never had a connection, or
    /// was retired after a time with none: see
    /// [`PoolBuilder::retire_users_after`](crate::PoolBuilder::retire_users_after)).
    pub fn evict_user(&self, user: &str) -> Result<usize> {
        let partition = self
            .inner
            .users
            .get(user)
            .ok_or_else(|| Error::UnknownUser {
                user: user.to_owned(),
            })?;
        Ok(self.inner.evict_partition(&partition))
    }

    /// Closes the pool: new acquires and adds fail with [`Error::Closed`], waiters wake
    /// with `Closed`, idle connections are dropped now and borrowed ones when returned.
    /// Idempotent. Dropping the pool closes it.
    ///
    /// May be called from the pool's own callbacks: the sweeper thread then ends after
    /// the pass that runs the callback, without being waited for. With a factory, close
    /// waits for the connects in flight (a slow connect delays it) and drops what they
    /// made; from the factory itself, that connector thread is not waited for.
    pub fn close(&self) {
        self.shut_down();
    }

    /// See `PoolInner::take_affine_c`.
    ///
    /// # Safety
    ///
    /// `user` is non-NULL and NUL-terminated.
    #[inline]
    pub(crate) unsafe fn take_affine_c(
        &self,
        user: *const std::ffi::c_char,
        site: CallSite,
    ) -> Option<PooledConnection<'_, C>> {
        // SAFETY: forwarded contract.
        unsafe { self.inner.take_affine_c(user, site) }
    }

    /// Runs one sweeper pass now, on the calling thread (leak scan, health checks,
    /// eviction, handing refills to the factory), whether or not the sweeper thread
    /// runs; waits for a pass in progress on another thread. With a factory it then
    /// waits (up to 10 s) for the connects the pool wants, except those of users
    /// backing off, so their connections are there when it returns (not when called
    /// from the factory itself). For tests, tools and benchmarks; the background
    /// sweeper makes it unnecessary in production.
    ///
    /// # Errors
    ///
    /// [`Error::Reentrant`] when called from one of this pool's sweeper callbacks
    /// (`on_leak`, `on_reclaim`, the health check): that pass is still
    /// running on this thread, and a nested one would wait for it forever.
    pub fn sweep_now(&self) -> Result<()> {
        if self.inner.in_own_sweep() {
            return Err(Error::Reentrant {
                call: "sweep_now",
                reason: "called from a sweeper callback of the same pool, whose pass would wait for itself",
            });
        }
        self.inner.sweep_pass();
        self.inner.settle_connects();
        Ok(())
    }

    /// The pool's statistics in the Prometheus text format (`heliosdb_pool_*` families,
    /// labelled with the builder's `name`), for a `/metrics` endpoint.
    pub fn prometheus(&self) -> String {
        crate::metrics::prometheus::render(&self.inner.tuning.name, &self.stats())
    }

    /// Health of every connection the sweeper has checked or watched, by connection id.
    pub fn connection_health(&self) -> Vec<ConnectionHealth> {
        self.inner.connection_health()
    }

    /// Whether [`close`](Self::close) has been called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    /// A snapshot of the pool's counts, computed by scanning the slab (O(slots)); the
    /// hot path keeps no global counters for it.
    pub fn stats(&self) -> PoolStats {
        self.inner.stats()
    }

    /// Every borrow outstanding now, longest-held first: which connection, for which
    /// user, since when, taken where and by which thread. Scans the slab (O(slots));
    /// each borrow is read without stopping its holder and validated, so a borrow that
    /// changes hands during the scan is left out rather than misreported.
    pub fn borrows(&self) -> Vec<BorrowInfo> {
        self.inner.borrows()
    }
}

impl<C> EnhancedConnectionPool<C> {
    /// `close`, also for pools whose connection type is not `Send` (`Drop`).
    fn shut_down(&self) {
        self.inner.close();
        self.inner.connector.stop_and_join();
        let mut handle = lock(&self.sweeper);
        let Some(sweeper) = handle.as_mut() else {
            return;
        };
        sweeper.signal_stop();
        // Inside one of this pool's passes (a callback), the sweeper thread may be this
        // thread, or waiting for this very pass: joining would wait for itself. Keep the
        // handle, so that a later close or free outside a pass joins it (and no sweeper
        // callback runs after that returns).
        if self.inner.in_own_sweep() || sweeper.is_current() {
            return;
        }
        let sweeper = handle.take().expect("checked above");
        drop(handle);
        sweeper.join();
    }
}

impl<C> Drop for EnhancedConnectionPool<C> {
    fn drop(&mut self) {
        self.shut_down();
    }
}

impl<C> std::fmt::Debug for EnhancedConnectionPool<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnhancedConnectionPool")
            .field("max_connections", &self.inner.config.max_connections)
            .field("closed", &self.inner.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// How an acquire starts: with a connection, or with the partition to wait on.
pub(crate) enum Start<'a, C> {
    /// Claimed and stamped.
    Got(PooledConnection<'a, C>),
    /// None idle: the user's partition, held so that it is not reused meanwhile.
    Wait(Arc<Partition>),
}

impl<C> PoolInner<C> {
    /// An acquire's first attempt: this thread's last returned connection if it was
    /// `user`'s and is still idle; else the user's partition (looked up, or created
    /// with a factory) and its lowest idle connection.
    ///
    /// A thread that keeps borrowing for one user pays a thread-local read, a compare
    /// with its copy of the name and one CAS; otherwise one lock-free `ArcSwap` load,
    /// a hash lookup and a reference count.
    #[inline]
    pub(crate) fn start_acquire(&self, user: &str, site: CallSite) -> Result<Start<'_, C>> {
        match self.take_affine_for(user, site) {
            Some(conn) => Ok(Start::Got(conn)),
            None => self.start_from_map(user, site),
        }
    }

    /// The affinity part of [`start_acquire`](Self::start_acquire): this thread's last
    /// returned connection, if the entry is for `user`, nobody waits for the user, and
    /// the connection is still idle.
    #[inline(always)]
    fn take_affine_for(&self, user: &str, site: CallSite) -> Option<PooledConnection<'_, C>> {
        self.take_affine_if(|last| last.names(user.as_bytes()), site)
    }

    /// For the C boundary: [`take_affine_for`](Self::take_affine_for) with the user
    /// recognised without measuring or validating the C string (a byte match against
    /// the entry's copy, a name that is valid UTF-8); `None` sends the caller to the
    /// checked path.
    ///
    /// # Safety
    ///
    /// `user` is non-NULL and NUL-terminated.
    #[inline(always)]
    pub(crate) unsafe fn take_affine_c(
        &self,
        user: *const std::ffi::c_char,
        site: CallSite,
    ) -> Option<PooledConnection<'_, C>> {
        // SAFETY: forwarded contract.
        self.take_affine_if(|last| unsafe { last.names_c(user) }, site)
    }

    #[inline(always)]
    fn take_affine_if(
        &self,
        names_user: impl FnOnce(&LastReturned) -> bool,
        site: CallSite,
    ) -> Option<PooledConnection<'_, C>> {
        // SAFETY: this thread's entry (see `last_returned`); the borrow ends before
        // `take_affine`, which may write the entry.
        let last = unsafe { &*last_returned() };
        if last.pool_id != self.id || !names_user(last) {
            return None;
        }
        // SAFETY: an entry of this pool names one of its partitions, whose memory lives
        // as long as the pool (`users.rs`), which `&self` keeps alive. Only its atomics
        // are read before the claim: if someone waits for the user (or did, if the
        // partition was reused), the slow path queues behind them.
        if unsafe { (*last.partition).waiters.busy() } {
            return None;
        }
        let (slot, generation, serial) = (last.slot, last.generation, last.serial);
        self.take_affine(slot, generation, serial, site)
    }

    /// The rest of [`start_acquire`](Self::start_acquire): the user's partition
    /// through the map and its lowest idle connection.
    fn start_from_map(&self, user: &str, site: CallSite) -> Result<Start<'_, C>> {
        let partition = self.lookup_partition(user)?;
        Ok(match self.take_idle(&partition, site) {
            Some(conn) => {
                self.remember_user(&partition);
                Start::Got(conn)
            }
            None => Start::Wait(partition),
        })
    }

    /// Claims `slot` at `generation` for the affinity entry's user (`serial`): only
    /// then, holding the slot, is its partition's user known. The claim is given back
    /// if the slot turned out to be another user's (its generation came round, or its
    /// partition was reused).
    #[inline(always)]
    fn take_affine(
        &self,
        slot: u32,
        generation: u64,
        serial: u64,
        site: CallSite,
    ) -> Option<PooledConnection<'_, C>> {
        let header = self.slab.get(slot)?;
        let claimed = state::try_claim(&header.state, generation, Claim::Borrow).ok()?;
        // Holding the slot, its partition has a connection: neither retired nor reused
        // while we hold it. (Acquire claim: the owner field is current.)
        let partition = self.partition_of(header);
        if partition.serial() != serial {
            self.give_back_foreign(Handle::new(slot, claimed.generation()));
            return None;
        }
        let conn = self.begin_borrow(header, slot, claimed.generation(), site);
        let handle = match self.tuning.validate_after_ms {
            None => conn.into_handle(),
            Some(window) if header.owner_idle_ms() < window => conn.into_handle(),
            // Merged as handles, rebuilt below: two guards from two calls would be
            // merged through the stack on the common path.
            Some(window) => self
                .validate_affine(conn, window, partition, site)?
                .into_handle(),
        };
        Some(PooledConnection::new(self, handle))
    }

    /// The rare part of [`take_affine`](Self::take_affine), out of line so the common
    /// path keeps a small frame: the connection was idle past the validation window.
    #[cold]
    #[inline(never)]
    fn validate_affine<'a>(
        &'a self,
        conn: PooledConnection<'a, C>,
        window: i32,
        partition: &Partition,
        site: CallSite,
    ) -> Option<PooledConnection<'a, C>> {
        // The replacement search needs the partition beyond this connection's life:
        // hold it through the map (it is live: we hold its connection).
        let held = self.users.get(partition.user())?;
        self.validated(conn, window, &held, site)
    }

    /// Records `partition`'s user in this thread's affinity entry (after a borrow
    /// through the map), so the next acquire can recognise it without a lookup. The
    /// caller holds the partition, so its name is stable.
    #[inline]
    fn remember_user(&self, partition: &Partition) {
        let serial = partition.serial();
        {
            // SAFETY: this thread's entry (see `last_returned`); the borrow ends here.
            let last = unsafe { &mut *last_returned() };
            if last.pool_id == self.id && last.serial == serial && last.name_serial == serial {
                return;
            }
            let name = partition.user().as_bytes();
            last.pool_id = self.id;
            last.partition = partition;
            last.serial = serial;
            last.name_serial = serial;
            // The slot is unknown until the connection comes back: `u32::MAX` is no
            // slot, so the next acquire looks the user up again meanwhile.
            last.slot = u32::MAX;
            // A name with a NUL byte is not kept: `names_c` relies on kept names having none.
            if name.len() <= AFFINITY_NAME_BYTES && !name.contains(&0) {
                last.name[..name.len()].copy_from_slice(name);
                last.name_len = name.len() as u32;
            } else {
                last.name_len = NAME_NOT_KEPT;
            }
        }
    }

    /// The user's live partition; with a factory, created if it does not exist.
    #[inline]
    fn lookup_partition(&self, user: &str) -> Result<Arc<Partition>> {
        match self.users.get(user) {
            Some(found) => Ok(found),
            None => self.missing_partition(user),
        }
    }

    /// The user's partition, created if needed; at `max_users`, users vacant now are
    /// retired first (without waiting for `retire_users_after`), so names that came and
    /// went do not lock new users out until the sweeper's next retirement. That needs
    /// the sweep lock (retirement happens only under it, see `partition_if_occupied`):
    /// taken without waiting, so a sweeper callback adding a user, or a pass in
    /// progress, gets `TooManyUsers` rather than a wait.
    fn partition_or_create(&self, user: &str) -> Result<Arc<Partition>> {
        match self.users.get_or_create(user) {
            Err(Error::TooManyUsers { .. }) if self.retire_vacant_users_now() > 0 => {
                self.users.get_or_create(user)
            }
            found => found,
        }
    }

    #[cold]
    fn retire_vacant_users_now(&self) -> usize {
        let pass = match self.sweep.try_lock() {
            Ok(pass) => pass,
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return 0,
        };
        let retired = self.users.retire_vacant_now(Partition::is_vacant);
        drop(pass);
        retired
    }

    #[cold]
    #[inline(never)]
    fn missing_partition(&self, user: &str) -> Result<Arc<Partition>> {
        if self.closed() {
            return Err(Error::Closed);
        }
        // With a factory, any user is welcome: its connections will be opened.
        if self.hooks.factory.is_some() {
            return self.partition_or_create(user);
        }
        self.users.check_name(user)?;
        Err(Error::UnknownUser {
            user: user.to_owned(),
        })
    }

    /// The partition that owns a slot the caller owns (claimed, borrowed or
    /// `Reserved`).
    #[inline]
    pub(crate) fn partition_of(&self, header: &SlotHeader) -> &Partition {
        let ptr = header.partition.load(Ordering::Acquire).cast::<Partition>();
        debug_assert!(!ptr.is_null(), "slot has no partition");
        // SAFETY: set when the slot was filled, from a partition whose memory lives as
        // long as the pool (`users.rs`); the caller owns the slot, so the partition has
        // a connection and is neither retired nor reused while the caller holds it.
        unsafe { &*ptr }
    }

    /// The partition of a slot the caller does not own, if it is occupied now. Always
    /// memory that stays valid (partitions are never freed before the pool). Its user
    /// is stable only for a caller holding the sweep lock (a sweeper pass): partitions
    /// are retired only under that lock, so one that had a connection when this was
    /// read stays live, its user unchanged, until the pass ends. Other callers (`end`,
    /// before its CAS) read only its atomics.
    pub(crate) fn partition_if_occupied(&self, header: &SlotHeader) -> Option<&Partition> {
        let ptr = header.partition.load(Ordering::Acquire).cast::<Partition>();
        // SAFETY: non-null pointers name partitions whose memory lives as long as the
        // pool (`users.rs`), so the reference outlives nothing it points to.
        (!ptr.is_null()).then(|| unsafe { &*ptr })
    }

    /// Whether any live partition matches `f`, without cloning the list.
    pub(crate) fn any_partition(&self, f: impl Fn(&Partition) -> bool) -> bool {
        self.users.any(f)
    }

    /// The pool's process-unique id.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Whether the pool is closed.
    pub(crate) fn closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Whether the pool has a place for one more connection now (`max_connections`
    /// and the slots kept by reclaimed borrows allowing).
    pub(crate) fn has_room(&self) -> bool {
        lock(&self.slots).has_room()
    }

    /// A borrow was reclaimed: its slot no longer counts against `max_connections`.
    pub(crate) fn uncount_slot(&self) {
        lock(&self.slots).uncount();
    }

    /// Every live partition (a clone of the list).
    pub(crate) fn all_partitions(&self) -> Vec<Arc<Partition>> {
        self.users.all()
    }

    pub(crate) fn add(
        &self,
        conn: C,
        user: Arc<str>,
        mut metadata: ConnectionMetadata,
    ) -> Result<ConnectionId> {
        if metadata.user.is_empty() {
            metadata.user = user.to_string();
        } else if *metadata.user != *user {
            return Err(Error::InvalidArgument {
                argument: "metadata.user",
                reason: format!(
                    "{:?} differs from the user the connection is added for ({user:?})",
                    metadata.user
                ),
            });
        }
        if self.closed() {
            return Err(Error::Closed);
        }
        let (partition, local) = loop {
            let partition = self.partition_or_create(&user)?;
            match partition.reserve_local() {
                Ok(local) => break (partition, local),
                Err(NoPlace::Full) => {
                    return Err(Error::UserAtCapacity {
                        user: user.to_string(),
                        max_per_user: self.config.max_per_user,
                    });
                }
                // Retired since the lookup: the registry's next answer is current.
                Err(NoPlace::Retired) => self.users.settle(),
            }
        };
        let Some(slot) = lock(&self.slots).take() else {
            partition.release_local(local, true);
            return Err(Error::PoolFull {
                max_connections: self.config.max_connections,
            });
        };
        let header = self.header(slot);
        let empty = header.load_state(Ordering::Relaxed);
        debug_assert_eq!(empty.lifecycle(), Lifecycle::Empty);
        // SAFETY: `slot` came off the free list, so this thread alone owns it.
        unsafe { *self.value_ptr(slot) = Some(conn) };
        let id = ConnectionId::new(self.next_sequence.fetch_add(1, Ordering::Relaxed), slot);
        header.conn_id.store(id.raw(), Ordering::Relaxed);
        let now = self.slab.now_nanos();
        header.created_at.store(now, Ordering::Relaxed);
        // A new connection is as good as a just-checked one: idle from now.
        header.note_idle_since(Slab::ms(now));
        // Release: whoever reads this pointer before owning the slot (a release, the
        // sweeper) then sees the partition's construction.
        header
            .partition
            .store(Arc::as_ptr(&partition).cast_mut().cast(), Ordering::Release);
        header.local.store(local, Ordering::Relaxed);
        header
            .info
            .store(Some(Arc::new(SlotInfo { user, metadata })));
        // SeqCst: a searcher that clears a stale hint bit re-reads this entry with
        // SeqCst (see `IdleSet::claim_hinted`); in the single order it either sees this
        // slot, or our `announce_idle` below sees its cleared bit and sets it again.
        partition.slots[local as usize].store(slot, Ordering::SeqCst);
        // SeqCst (a Release for claimers): publishes every write above, and is the
        // releaser's half of the hint and waiter handshakes, like `end_borrow`.
        header.state.store(
            empty.with_lifecycle(Lifecycle::Idle).pack(),
            Ordering::SeqCst,
        );
        self.announce_idle(&partition, local);
        Ok(id)
    }

    #[inline]
    fn header(&self, slot: u32) -> &SlotHeader {
        self.slab.get(slot).expect("slot index within the slab")
    }

    /// A raw pointer to a slot's value.
    ///
    /// Protocol: only the slot's current owner dereferences it: the borrower while
    /// `InUse`, the sweeper while `Checking`, whoever moved it to `Reserved` (add,
    /// retire), or the pool's destructor when no other reference exists.
    #[inline]
    pub(crate) fn value_ptr(&self, slot: u32) -> *mut Option<C> {
        self.values[slot as usize].get()
    }

    /// Shared access to the connection in an occupied slot.
    ///
    /// # Safety
    ///
    /// The caller owns the slot (see `value_ptr`) and makes no `&mut` to it for the
    /// lifetime of the reference.
    #[inline]
    pub(crate) unsafe fn value_ref(&self, slot: u32) -> &C {
        debug_assert!(
            matches!(
                self.values.get(slot as usize),
                // SAFETY: a shared read of a slot the caller owns (see below).
                Some(cell) if unsafe { (*cell.get()).is_some() }
            ),
            "an owned slot is a slot of this pool and holds a connection"
        );
        // SAFETY: the caller owns the slot, so it is one of this pool's slots (the
        // slab and `values` have one length, and only existing slots are claimed) and
        // occupied (a slot is filled before it is first made idle and emptied only by
        // an owner that then retires it); no `&mut` exists by the caller's contract.
        // The guard derefs on every use: no bounds or `None` test on that path.
        unsafe {
            (*self.values.get_unchecked(slot as usize).get())
                .as_ref()
                .unwrap_unchecked()
        }
    }

    /// The connection in an occupied slot.
    ///
    /// # Safety
    ///
    /// The caller owns the slot (see `value_ptr`) for the lifetime of the reference.
    #[inline]
    #[allow(clippy::mut_from_ref)] // Exclusivity comes from the slot protocol, not `&self`.
    pub(crate) unsafe fn value_mut(&self, slot: u32) -> &mut C {
        // SAFETY: ownership per the caller's contract; an owned slot is occupied.
        match unsafe { &mut *self.value_ptr(slot) } {
            Some(conn) => conn,
            None => unreachable!("an owned slot holds a connection"),
        }
    }

    /// After a slot became `Idle` (by a SeqCst write): make sure searchers can find it,
    /// then let waiters (or a closing pool) have it. The releaser's half of both
    /// handshakes; a plain load of each word in the common case.
    #[inline]
    pub(crate) fn announce_idle(&self, partition: &Partition, local: u32) {
        partition.idle.repair(local);
        if partition.waiters.needs_dispatch() {
            self.dispatch(partition);
        }
    }

    /// Hands idle connections to waiters, or drains them if the pool is closed.
    /// A grant is stamped here, by the granter, with the waiter's call site and thread:
    /// from this instant it is a borrow that leak scans, reclaim and `borrows()` see,
    /// even if the waiter never runs again (an async acquire granted, then never
    /// polled nor dropped).
    pub(crate) fn dispatch(&self, partition: &Partition) {
        let claimed = partition.waiters.dispatch(|waiter| {
            let (_, slot, state) =
                partition.claim_any(&self.slab, Claim::Borrow, Ordering::SeqCst)?;
            self.header(slot)
                .record_borrower(waiter.site, waiter.borrower)
                .stamp(state.generation(), self.slab.now_ms());
            Some((slot, state.generation()))
        });
        // The queue is closed: the pool closed (drain what is idle), or the partition
        // was retired (nothing to drain; a late releaser may get here long after, when
        // the partition serves another user whose idle connections must stay).
        if !claimed && self.closed() {
            self.drain_idle(partition);
        }
    }

    /// Closes every idle connection of a closed pool's partition. It walks the
    /// partition's slot table rather than the idle hints, whose search gives up on a
    /// contended bit: close must close every idle connection itself, not leave one to
    /// the pool's drop. A connection borrowed meanwhile is drained by its release.
    fn drain_idle(&self, partition: &Partition) {
        for local in 0..partition.capacity() {
            while let Some(header) = self.slab.get(partition.slot_of(local)) {
                let seen = header.load_state(Ordering::SeqCst);
                if seen.lifecycle() != Lifecycle::Idle || !partition.owns(header, local) {
                    break;
                }
                if state::try_claim(&header.state, seen.generation(), Claim::Exclusive).is_ok() {
                    drop(self.retire(partition, local, partition.slot_of(local), true, None));
                    break;
                }
                // Lost a race (a late borrower, or a refill): look at the slot again.
            }
        }
    }

    /// Empties a slot the caller moved to `Reserved`; returns its connection for the
    /// caller to drop (outside any lock) or hand out. `counted`: whether the slot still
    /// counted against the limits (false once reclaimed); `cause`: the eviction to count.
    pub(crate) fn retire(
        &self,
        partition: &Partition,
        local: u32,
        slot: u32,
        counted: bool,
        cause: Option<Eviction>,
    ) -> Option<C> {
        let header = self.header(slot);
        // What `on_evict` is told, read before the slot is emptied.
        let evicted = match (cause, &self.hooks.on_evict) {
            (Some(cause @ (Eviction::Idle | Eviction::Age | Eviction::Health)), Some(_)) => {
                header
                    .info
                    .load_full()
                    .map(|info| (cause, info, header.conn_id.load(Ordering::Relaxed)))
            }
            _ => None,
        };
        // SAFETY: the slot is `Reserved` by the caller, who owns it.
        let conn = unsafe { (*self.value_ptr(slot)).take() };
        header.info.store(None);
        header.conn_id.store(0, Ordering::Relaxed);
        header
            .partition
            .store(std::ptr::null_mut(), Ordering::Relaxed);
        partition.release_local(local, counted);
        let state = header.load_state(Ordering::Relaxed);
        // Counted before the bump it accounts for: `stats` reads the states (Acquire)
        // before this count, so it may see the count without the bump (an undercount
        // its running maximum hides) but never the bump without the count.
        self.retirements.fetch_add(1, Ordering::Relaxed);
        // Release: the slot's next filler sees it empty. The new generation keeps old
        // handles and thread-local affinity entries from matching the next connection.
        header
            .state
            .store(state.retired().pack(), Ordering::Release);
        lock(&self.slots).give(slot, counted);
        if let Some(cause) = cause {
            self.counters.evicted(cause);
        }
        self.capacity_freed(partition);
        if let Some((cause, info, id)) = evicted {
            // Closed first, then reported: the hook may add its replacement.
            drop(conn);
            self.report_eviction(cause, &info, id);
            return None;
        }
        conn
    }

    /// Runs `on_evict` for a connection the pool closed by itself; a panic is caught.
    #[cold]
    fn report_eviction(&self, cause: Eviction, info: &SlotInfo, connection_id: u64) {
        let Some(hook) = &self.hooks.on_evict else {
            return;
        };
        if self.closed() {
            return; // Nobody may add a replacement to a closed (or freed) pool.
        }
        let evicted = crate::builder::Evicted {
            connection_id: ConnectionId::from_raw(connection_id),
            user: &info.user,
            cause,
            metadata: &info.metadata,
        };
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hook(&evicted))).is_err() {
            log::error!("heliosdb-pool: the on_evict callback panicked; the pool goes on");
        }
    }

    /// Whether the pool may close connections by itself for idle time or age: only if
    /// it can refill them (a factory) or tell someone who can (`on_evict`). See
    /// [`PoolBuilder::on_evict`].
    pub(crate) fn may_shrink(&self) -> bool {
        self.hooks.factory.is_some() || self.hooks.on_evict.is_some()
    }

    /// A place was freed (in the user's partition, the pool, or both): callers waiting
    /// at `max_per_user` or `max_connections` may now be served by the factory. Every
    /// path that frees capacity (close on return, detach, remove, eviction, reclaim)
    /// ends here, so none can strand a waiter.
    pub(crate) fn capacity_freed(&self, partition: &Partition) {
        if self.hooks.factory.is_none() || self.closed() {
            return; // Only an `add_connection` can serve them (it dispatches itself), or
            // nobody: a closed pool serves no one.
        }
        if partition.waiters.waiting() > 0 {
            self.request_connection(partition);
        } else if self.waiting_anywhere() {
            // A pool-wide place: another user's waiter may have been refused for
            // `max_connections`. The connector serves every waiting user.
            self.connector.wake();
        }
    }

    /// Whether any user has a waiter (the slow path only: it locks the partition list).
    fn waiting_anywhere(&self) -> bool {
        self.any_partition(|p| p.waiters.waiting() > 0)
    }

    /// The fast path: no waiter ahead; this thread's last returned connection if it is
    /// still idle (its own cache line only), else the user's lowest idle one; with
    /// validation on borrow, one that was idle too long is checked first.
    #[inline(always)]
    pub(crate) fn take_idle<'a>(
        &'a self,
        partition: &Partition,
        site: CallSite,
    ) -> Option<PooledConnection<'a, C>> {
        let conn = self.claim_idle(partition, site)?;
        match self.tuning.validate_after_ms {
            None => Some(conn),
            Some(window) => self.validated(conn, window, partition, site),
        }
    }

    /// Validation on borrow (see `PoolBuilder::validate_after`): hands out `conn` if it
    /// was idle less than `window` ms (one compare) or passes the health check;
    /// otherwise closes it as a health eviction and tries the user's next idle one.
    #[inline]
    fn validated<'a>(
        &'a self,
        mut conn: PooledConnection<'a, C>,
        window: i32,
        partition: &Partition,
        site: CallSite,
    ) -> Option<PooledConnection<'a, C>> {
        loop {
            if self.header(conn.slot()).owner_idle_ms() < window
                || self.check_on_borrow(conn.slot(), conn.connection_id())
            {
                return Some(conn);
            }
            let handle = conn.into_handle();
            if let Err(e) = self.take_back(handle, Eviction::Health) {
                log::warn!("heliosdb-pool: closing a connection that failed validation: {e}");
            }
            self.want_replacement(partition);
            conn = self.claim_idle(partition, site)?;
        }
    }

    /// `take_idle` without validation: claim and stamp.
    #[inline(always)]
    fn claim_idle<'a>(
        &'a self,
        partition: &Partition,
        site: CallSite,
    ) -> Option<PooledConnection<'a, C>> {
        if partition.waiters.busy() {
            return None;
        }
        let (_, slot, claimed) =
            partition.claim_any(&self.slab, Claim::Borrow, Ordering::Relaxed)?;
        Some(self.begin_borrow(self.header(slot), slot, claimed.generation(), site))
    }

    /// Returns a slot claimed by affinity that turned out to be another user's, as a
    /// release would (its owner may be waiting for it).
    #[cold]
    #[inline(never)]
    fn give_back_foreign(&self, handle: Handle) {
        // `end`, not `release`: nobody used the connection, so there is nothing to reset.
        if let Err(e) = self.end(handle) {
            log::error!("heliosdb-pool: returning a slot claimed by a stale affinity entry: {e}");
        }
    }

    /// Records the hold the current borrow of `slot` declared; the holder's call.
    pub(crate) fn set_hold_extension(&self, slot: u32, d: Duration) {
        let ms = u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
        self.header(slot).set_hold_extension(ms);
    }

    /// Stamps a borrow the caller has just claimed and wraps it in a guard.
    #[inline(always)]
    pub(crate) fn begin_borrow(
        &self,
        header: &SlotHeader,
        slot: u32,
        generation: u64,
        site: CallSite,
    ) -> PooledConnection<'_, C> {
        // The clock is read after the record (the receiver is evaluated first).
        header
            .record_borrower(site, thread_tag::current())
            .stamp(generation, self.slab.now_ms());
        PooledConnection::new(self, Handle::new(slot, generation))
    }

    /// Borrows an idle connection of `user` if one is free now, never waiting; `site`
    /// is recorded as the borrow's call site. The affinity claim inline, the map search
    /// out of line.
    #[inline]
    pub(crate) fn try_acquire(
        &self,
        user: &str,
        site: CallSite,
    ) -> Result<PooledConnection<'_, C>> {
        match self.take_affine_for(user, site) {
            Some(conn) => Ok(conn),
            None => self.try_acquire_from_map(user, site),
        }
    }

    #[inline(never)]
    fn try_acquire_from_map(
        &self,
        user: &str,
        site: CallSite,
    ) -> Result<PooledConnection<'_, C>> {
        let partition = match self.start_from_map(user, site)? {
            Start::Got(conn) => return Ok(conn),
            Start::Wait(partition) => partition,
        };
        if self.closed() {
            return Err(Error::Closed);
        }
        // The partition's own name (a reference count, no allocation: a caller may
        // retry in a loop), and counts that a concurrent add cannot make underflow.
        // (A partition retired since the lookup has no connection: the same answer.)
        Err(Error::NoIdleConnection {
            user: partition.user().clone(),
            in_use: partition
                .connection_count()
                .saturating_sub(partition.idle_count(&self.slab)),
        })
    }

    /// Borrows an idle connection of `user`, waiting up to `timeout`; `site` is
    /// recorded as the borrow's call site. The affinity claim inline (the common case),
    /// everything else in [`blocking_acquire_slow`](Self::blocking_acquire_slow).
    #[inline]
    pub(crate) fn blocking_acquire(
        &self,
        user: &str,
        timeout: Duration,
        site: CallSite,
    ) -> Result<PooledConnection<'_, C>> {
        match self.take_affine_for(user, site) {
            Some(conn) => Ok(conn),
            None => self.blocking_acquire_slow(user, timeout, site),
        }
    }

    /// [`blocking_acquire`](Self::blocking_acquire) past the affinity claim, out of
    /// line: the search through the map, the spin, the queue.
    #[inline(never)]
    fn blocking_acquire_slow(
        &self,
        user: &str,
        timeout: Duration,
        site: CallSite,
    ) -> Result<PooledConnection<'_, C>> {
        let (partition, node, mut awake, mut overdue) = loop {
            // The affinity claim was tried by the caller (and a retry after a retired
            // partition has nothing to find there): the map.
            let partition = match self.start_from_map(user, site)? {
                Start::Got(conn) => return Ok(conn),
                Start::Wait(partition) => partition,
            };
            if let Some(conn) = self.spin_for_idle(&partition, site) {
                return Ok(conn);
            }
            let waiter = Waiter {
                site,
                borrower: thread_tag::current(),
            };
            let overdue = self.overdue_after(Duration::ZERO);
            match partition.waiters.register(
                Wakeup::Thread(std::thread::current()),
                waiter,
                overdue,
            ) {
                Registration::Waiting(node, awake) => break (partition, node, awake, overdue),
                Registration::Closed if self.closed() => return Err(Error::Closed),
                // Retired since the lookup: the registry's next answer is current.
                Registration::Closed => self.users.settle(),
            }
        };
        let started = Instant::now();
        let partition = &*partition;
        self.dispatch(partition);
        self.request_connection(partition);
        // Borrows are often short: the awake waiter spins, then yields, for a few
        // microseconds before parking. Releasers wake nobody while a waiter is awake,
        // and a hand-off to a spinning waiter costs no futex wake-up. The others park
        // at once: one release serves one waiter, and spinners would only take CPU
        // from the holders they wait for.
        let backoff = crossbeam_utils::Backoff::new();
        loop {
            if let Some(outcome) = node.outcome() {
                return self.finish_wait(partition, outcome, started);
            }
            let waited = started.elapsed();
            if waited >= timeout {
                return match partition.waiters.cancel(&node) {
                    None => {
                        self.leave_queue(partition);
                        Err(self.timeout_error(partition, waited))
                    }
                    Some(outcome) => self.finish_wait(partition, outcome, started),
                };
            }
            if !overdue && self.overdue_after(waited) {
                overdue = true;
                partition.waiters.declare_overdue(&node);
                self.dispatch(partition);
                continue;
            }
            if awake && !backoff.is_completed() {
                backoff.snooze();
                // Compete for a connection released meanwhile (barging is allowed
                // until someone is overdue; then releasers hand off themselves). The
                // read-only look first, and the releaser's moment (see
                // `Partition::stays_idle`): a dispatch takes the queue's lock and
                // clears stale hints, which the holder would pay for on every poll.
                // The dispatch before parking, below, is the one the handshake needs.
                if !partition.waiters.busy() && partition.stays_idle(&self.slab) {
                    self.dispatch(partition);
                }
                continue;
            }
            // About to park: no longer the awake waiter, so search once more first.
            if awake {
                partition.waiters.stop_awake();
                self.dispatch(partition);
            }
            if node.outcome().is_none() {
                // Until the deadline, or until the fairness bound makes this waiter
                // overdue (then it declares so, and the next release hands off to the
                // front); a release or a grant wakes it sooner.
                let until = match overdue {
                    true => timeout,
                    false => timeout.min(self.tuning.fairness_bound),
                };
                std::thread::park_timeout(until.saturating_sub(waited));
                // Woken: a releaser may have made it the awake one (or a timeout ran
                // out: then its clearing of AWAKE before the next park costs at most a
                // spare wake-up), so it spins again before the next park.
                awake = true;
                backoff.reset();
            }
        }
    }

    /// A blocking acquire that found nothing idle first spins briefly (a couple of
    /// microseconds of `PAUSE`s, retrying between them), as Go's mutex does before it
    /// queues: a holder on another core often gives its connection back within that
    /// time, and catching it costs far less than queueing (the queue lock, a node, a
    /// park and a wake-up). A connection its releaser takes straight back is left to
    /// it (see `Partition::stays_idle`). Only while nobody is queued for the user:
    /// with callers queued already, more spinners would only take CPU from the holders
    /// (and the queue's awake waiter searches anyway). Not on a single core, where the
    /// holder cannot run while this spins; not past the fairness bound (`take_idle`
    /// defers to overdue waiters).
    #[cold]
    #[inline(never)]
    fn spin_for_idle<'a>(
        &'a self,
        partition: &Partition,
        site: CallSite,
    ) -> Option<PooledConnection<'a, C>> {
        if !several_cores() || partition.waiters.waiting() > 0 {
            return None;
        }
        let backoff = crossbeam_utils::Backoff::new();
        for _ in 0..SPIN_ROUNDS {
            backoff.spin();
            if partition.waiters.waiting() > 0 {
                return None;
            }
            // Read-only until something looks idle, and stays so for the releaser's
            // moment (see `Partition::stays_idle`).
            if !partition.stays_idle(&self.slab) {
                continue;
            }
            if let Some(conn) = self.take_idle(partition, site) {
                self.counters.spin_acquires.fetch_add(1, Ordering::Relaxed);
                return Some(conn);
            }
        }
        None
    }

    /// Whether a waiter that has waited `waited` is past the fairness bound (see
    /// `wait`'s module docs); a bound of zero makes every waiter overdue at once.
    pub(crate) fn overdue_after(&self, waited: Duration) -> bool {
        waited >= self.tuning.fairness_bound
    }

    /// A waiter left the queue (granted, closed, timed out, cancelled): if it was the
    /// awake one that releasers relied on, the next waiters are served in its place.
    pub(crate) fn leave_queue(&self, partition: &Partition) {
        if partition.waiters.stop_awake() {
            self.dispatch(partition);
        }
    }

    /// Turns a wait's outcome into the caller's result, and records the wait. A grant
    /// was stamped by its granter already (see `dispatch`).
    pub(crate) fn finish_wait(
        &self,
        partition: &Partition,
        outcome: Outcome,
        started: Instant,
    ) -> Result<PooledConnection<'_, C>> {
        self.leave_queue(partition);
        match outcome {
            Outcome::Granted { slot, generation } => {
                self.counters.acquire_wait.record(started.elapsed());
                self.counters.waits_granted.fetch_add(1, Ordering::Relaxed);
                Ok(PooledConnection::new(self, Handle::new(slot, generation)))
            }
            Outcome::Closed => Err(Error::Closed),
        }
    }

    /// A caller waits for `partition`: if a factory can open another connection for
    /// it (user and pool under their limits), ask the connector to, now. The waiter
    /// itself is the request: the connector counts callers waiting, so a request a
    /// full pool turns away is renewed when a place frees, and one served by a returned
    /// connection is not made anyway.
    pub(crate) fn request_connection(&self, partition: &Partition) {
        // Every waiting form calls this once registered: the user is in demand.
        partition.note_activity();
        if self.hooks.factory.is_none() || partition.connection_count() >= self.config.max_per_user
        {
            return;
        }
        self.connector.wake();
    }

    /// Gives back a borrow granted to a waiter that stopped waiting.
    pub(crate) fn return_grant(&self, outcome: Outcome) {
        if let Outcome::Granted { slot, generation } = outcome {
            // Unused: nothing to reset.
            if let Err(e) = self.end(Handle::new(slot, generation)) {
                log::warn!("heliosdb-pool: returning an unused grant: {e}");
            }
        }
    }

    /// Builds the timeout error, with the user's counts at the end of the wait.
    pub(crate) fn timeout_error(&self, partition: &Partition, waited: Duration) -> Error {
        partition.timeouts.fetch_add(1, Ordering::Relaxed);
        self.counters.timeouts.fetch_add(1, Ordering::Relaxed);
        self.counters.acquire_wait.record(waited);
        let idle = partition.idle_count(&self.slab);
        Error::Timeout {
            user: partition.user().to_string(),
            waited,
            in_use: partition.connection_count().saturating_sub(idle),
            idle,
            last_factory_error: lock(&partition.last_factory_error).clone(),
            factory_backoff: partition.factory.backoff().map(Box::new),
        }
    }

    /// The error for a handle that does not name a live borrow.
    #[cold]
    #[inline(never)]
    pub(crate) fn stale(&self, handle: Handle) -> Error {
        Error::StaleHandle {
            connection_id: self
                .slab
                .get(handle.slot)
                .map_or(0, |h| h.conn_id.load(Ordering::Relaxed)),
            generation: handle.generation,
        }
    }

    /// The borrow a raw handle names, if its slot's state has the handle's generation
    /// and the slot holds the handle's connection: the state first (Acquire: the id read
    /// after it is at least as new as the borrow it shows), then the id. A retire bumps
    /// the generation, so if the caller then acts on the slot by a CAS at this
    /// generation, no retire came between and the id read was the connection's. The
    /// slot's header comes with it, so that a caller needs one lookup of the slot.
    #[inline(always)]
    fn raw_borrow(&self, raw: RawHandle) -> Result<(&SlotHeader, Handle, SlotState)> {
        let id = raw.connection_id();
        let handle = Handle::new(id.slot(), raw.generation());
        let header = self.slab.get(handle.slot).ok_or_else(|| stale_raw(raw))?;
        let state = header.load_state(Ordering::Acquire);
        if state.generation() != handle.generation || header.conn_id.load(Ordering::Relaxed) != id.raw()
        {
            return Err(stale_raw(raw));
        }
        Ok((header, handle, state))
    }

    /// Validates that `raw` names the connection in its slot and that slot's current,
    /// unreclaimed borrow; returns the slot.
    pub(crate) fn check_raw(&self, raw: RawHandle) -> Result<u32> {
        let (_, handle, state) = self.raw_borrow(raw)?;
        if state.lifecycle() != Lifecycle::InUse {
            return Err(stale_raw(raw));
        }
        if state.has(flags::RECLAIMED) {
            return Err(Error::Reclaimed {
                connection_id: raw.connection_id().raw(),
            });
        }
        Ok(handle.slot)
    }

    /// The borrow a raw handle names, for ending it: checks that the handle also names
    /// the connection in its slot (a C lease carries the id); the end's CAS at the
    /// handle's generation validates the rest. The slot's header comes with it, found
    /// once (the C boundary ends the borrow there). A reclaimed borrow is still ended
    /// (and its connection closed) by its holder's release or discard.
    #[inline(always)]
    pub(crate) fn borrow_of_raw(&self, raw: RawHandle) -> Result<(&SlotHeader, Handle)> {
        let (header, handle, _) = self.raw_borrow(raw)?;
        Ok((header, handle))
    }

    /// The header of the slot `handle` names, or the handle's stale-handle error if the
    /// slot index is out of range (a forged or foreign handle; the caller's CAS at the
    /// handle's generation validates the rest).
    #[inline(always)]
    pub(crate) fn header_of(&self, handle: Handle) -> Result<&SlotHeader> {
        self.slab.get(handle.slot).ok_or_else(|| self.stale(handle))
    }

    /// Ends the borrow `handle` as its holder gives it back: the `reset` hook first, if
    /// there is one (the only cost of the hook on this path when it is not set is this
    /// branch), then [`end`](Self::end).
    #[inline(always)]
    pub(crate) fn release(&self, handle: Handle) -> Result<()> {
        let header = self.header_of(handle)?;
        self.release_at(header, handle)
    }

    /// [`release`](Self::release) for a caller that has found the slot's header
    /// already (the C boundary's lease check): one lookup of the slot, not two.
    #[inline(always)]
    pub(crate) fn release_at(&self, header: &SlotHeader, handle: Handle) -> Result<()> {
        if let Some(reset) = &self.hooks.reset {
            return self.reset_then_end(handle, reset);
        }
        self.end_at(header, handle)
    }

    /// Runs the `reset` hook on the connection of the borrow `handle` while its holder
    /// still owns it, then ends the borrow; a failed or panicking reset discards the
    /// connection instead. Not run for a stale handle, nor for a borrow that will close
    /// anyway (reclaimed, removed, aged, failed over, the pool closed).
    #[inline(never)]
    fn reset_then_end(&self, handle: Handle, reset: &crate::builder::ResetFn<C>) -> Result<()> {
        let header = self.header_of(handle)?;
        // Acquire: pairs with the claim that began this borrow, like the holder's own
        // accesses. A flag set after this load (a reclaim, a removal) only makes the end
        // below close the connection; the sweeper never touches an `InUse` value.
        let seen = header.load_state(Ordering::Acquire);
        // A closed pool closes the connection once it is idle: nothing to reset for.
        if seen.generation() != handle.generation
            || seen.lifecycle() != Lifecycle::InUse
            || seen.closes()
            || self.closed()
        {
            return self.end(handle);
        }
        // Own the connection for the hook: `InUse` to `Reserved` at this exact state, so
        // a copy of this handle released, discarded or detached meanwhile is refused as
        // stale (a `RawHandle` is `Copy`, a C lease is plain data), a removal or a
        // failover waits for it (`TakeOut::Busy`), and the sweeper leaves it alone. A
        // state changed since the load (a flag, or another end) goes the plain way.
        let reserved = seen.with_lifecycle(Lifecycle::Reserved);
        if header
            .state
            .compare_exchange(seen.pack(), reserved.pack(), Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return self.end(handle);
        }
        // SAFETY: the CAS above made this caller the slot's only owner (`Reserved`); it
        // stays so until the store below.
        let conn = unsafe { self.value_mut(handle.slot) };
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| reset(conn)))
            .unwrap_or_else(|_| Err(String::from("the reset hook panicked")));
        // Back to the borrow it was (nothing sets a flag on a `Reserved` slot, so this is
        // exactly `seen`), then ended as a release or a discard ends it. Release: the
        // hook's writes happen-before whoever claims the connection next.
        header.state.store(seen.pack(), Ordering::Release);
        match outcome {
            Ok(()) => self.end(handle),
            Err(reason) => {
                log::warn!(
                    "heliosdb-pool: closing connection {}: reset failed: {reason}",
                    header.conn_id.load(Ordering::Relaxed)
                );
                self.take_back(handle, Eviction::ResetFailed).map(drop)
            }
        }
    }

    /// Ends the borrow `handle`: one CAS validates it and changes the state; the
    /// connection goes idle, or is closed if it was marked to be. The slot becomes
    /// this thread's affinity candidate for its next borrow.
    #[inline(always)]
    pub(crate) fn end(&self, handle: Handle) -> Result<()> {
        let header = self.header_of(handle)?;
        self.end_at(header, handle)
    }

    /// [`end`](Self::end) with the slot's header found by the caller (`header` is
    /// `handle.slot`'s).
    #[inline(always)]
    fn end_at(&self, header: &SlotHeader, handle: Handle) -> Result<()> {
        let generation = handle.generation;
        // Read what the idle connection's bookkeeping needs while the borrow (if the
        // handle is current) still owns the slot: once the CAS below makes it idle,
        // another thread may claim and even empty it at once. For a stale handle these
        // reads are meaningless, and the CAS fails before any of them is used.
        let partition = self
            .partition_if_occupied(header)
            .ok_or_else(|| self.stale(handle))?;
        let local = header.local.load(Ordering::Relaxed);
        // The serial, not the name: after the CAS the partition may be retired and
        // reused, and a stale handle's partition may be being reused now. (Its memory
        // is the pool's for the pool's life, and the serial is atomic.)
        let serial = partition.serial();
        // Validation on borrow needs the time the connection becomes idle: written by
        // the holder (the state still names its borrow) before the end CAS publishes it.
        if self.tuning.validate_after_ms.is_some() && {
            // The borrow itself, in use (not a doubled release of an idle slot at the
            // same generation, which must not touch a slot it does not own).
            let now = header.load_state(Ordering::Relaxed);
            now.lifecycle() == Lifecycle::InUse && now.generation() == generation
        } {
            header.note_idle_since(self.slab.now_ms());
        }
        if state::end_plain_borrow(&header.state, generation) {
            self.went_idle(partition, serial, handle, local);
            return Ok(());
        }
        self.end_unusual(handle, header, partition, serial, local)
    }

    /// [`end`](Self::end) when the borrow was not a plain one: flagged (reported as a
    /// leak, marked to close) or the handle stale. Out of line, so a plain release
    /// keeps a small frame. A current borrow is still the caller's here (the failed
    /// CAS gave nothing up), so its fields are still this borrow's.
    #[cold]
    #[inline(never)]
    fn end_unusual(
        &self,
        handle: Handle,
        header: &SlotHeader,
        partition: &Partition,
        serial: u64,
        local: u32,
    ) -> Result<()> {
        let connection_id = header.conn_id.load(Ordering::Relaxed);
        let started_ms = header.owner_started_ms();
        let ended = state::end_flagged_or_stale(&header.state, handle.generation)
            .map_err(|_| self.stale(handle))?;
        if ended.has(flags::LEAK_ALERT) {
            self.note_leak_returned(connection_id, started_ms);
        }
        if !ended.closes() {
            self.went_idle(partition, serial, handle, local);
            return Ok(());
        }
        self.end_closing(partition, local, handle.slot, ended, connection_id)
    }

    /// A borrow of `partition`'s slot `handle.slot` (local index `local`) has just
    /// ended idle: it becomes this thread's affinity candidate, and searchers and
    /// waiters are told.
    #[inline(always)]
    fn went_idle(&self, partition: &Partition, serial: u64, handle: Handle, local: u32) {
        {
            // SAFETY: this thread's entry (see `last_returned`); the borrow ends here.
            let last = unsafe { &mut *last_returned() };
            // Plain stores: if this is another user's (or pool's) connection than the
            // kept name's, `name_serial` no longer matches and the next borrow through
            // the map records the name (`remember_user`).
            last.pool_id = self.id;
            last.partition = partition;
            last.serial = serial;
            last.slot = handle.slot;
            last.generation = handle.generation;
        }
        self.announce_idle(partition, local);
    }

    /// The rare part of [`end`](Self::end), out of line so a plain release keeps a
    /// small frame: the borrow ended marked to close (reclaimed, removed, aged, failed
    /// over, the pool closed), so the connection is closed instead of going idle.
    #[cold]
    #[inline(never)]
    fn end_closing(
        &self,
        partition: &Partition,
        local: u32,
        slot: u32,
        ended: SlotState,
        connection_id: u64,
    ) -> Result<()> {
        let reclaimed = ended.has(flags::RECLAIMED);
        drop(self.retire(
            partition,
            local,
            slot,
            !reclaimed,
            Some(closing_cause(ended)),
        ));
        if reclaimed {
            return Err(Error::Reclaimed { connection_id });
        }
        Ok(())
    }

    /// A borrow reported as a leak came back: say so once, and count it.
    #[cold]
    fn note_leak_returned(&self, connection_id: u64, started_ms: u32) {
        self.counters
            .returned_after_leak
            .fetch_add(1, Ordering::Relaxed);
        let held = Slab::since(started_ms, self.slab.now_ms());
        log::info!(
            "heliosdb-pool: leaked connection {connection_id} returned after {:.1} s",
            held.as_secs_f64()
        );
    }

    /// Takes a borrowed connection out of the pool for good.
    pub(crate) fn detach(&self, handle: Handle) -> Result<C> {
        self.take_back(handle, Eviction::Detached)
            .map(|conn| conn.expect("a detached connection is returned, never closed"))
    }

    /// Ends a borrow by closing its connection instead of returning it.
    pub(crate) fn discard(&self, handle: Handle) -> Result<()> {
        // Dropped here, outside any lock: the close.
        self.take_back(handle, Eviction::Discarded).map(drop)
    }

    /// Ends the borrow `handle` by taking its connection out of the pool (detach,
    /// discard, a failed reset): one CAS from `InUse` at the handle's generation to
    /// `Reserved`, then `retire`, which counts `cause` and asks the factory for anyone
    /// waiting. A reclaimed borrow is ended as its release would (closed, counted as
    /// reclaimed) and reported as [`Error::Reclaimed`]. The connection, unless `retire`
    /// closed it already (to report it to `on_evict`: a borrow that was marked to close
    /// for its age, say); a detach always gets it.
    fn take_back(&self, handle: Handle, cause: Eviction) -> Result<Option<C>> {
        let header = self.header_of(handle)?;
        let ended = loop {
            let current = header.load_state(Ordering::Relaxed);
            if current.generation() != handle.generation || current.lifecycle() != Lifecycle::InUse
            {
                return Err(self.stale(handle));
            }
            if current.has(flags::RECLAIMED) {
                // Reclaimed: the holder's handle is stale; close it as release would.
                let stale = self.stale(handle);
                return self.end(handle).and(Err(stale));
            }
            let next = current.without_flags().with_lifecycle(Lifecycle::Reserved);
            if header
                .state
                .compare_exchange(
                    current.pack(),
                    next.pack(),
                    Ordering::Acquire,
                    Ordering::Relaxed,
                )
                .is_ok()
            {
                break current;
            }
        };
        // A borrow already marked to close (removed, aged, failed over) was evicted for
        // that reason first: closed by a discard or a failed reset, it counts as its
        // release would have. A detach keeps the connection alive: it counts as such.
        let cause = if ended.closes() && cause != Eviction::Detached {
            closing_cause(ended)
        } else {
            cause
        };
        let partition = self.partition_of(header);
        let local = header.local.load(Ordering::Relaxed);
        Ok(self.retire(partition, local, handle.slot, true, Some(cause)))
    }

    /// See [`EnhancedConnectionPool::testing_advance_generation`].
    fn advance_generation(&self, id: ConnectionId, by: u64) -> Result<()> {
        let unknown = || Error::UnknownConnection {
            connection_id: id.raw(),
        };
        let header = self.slab.get(id.slot()).ok_or_else(unknown)?;
        // As `remove`: the state (Acquire), then the id; a claim at that exact state
        // then proves the id was this connection's (a retire bumps the generation).
        let state = header.load_state(Ordering::Acquire);
        if header.conn_id.load(Ordering::Relaxed) != id.raw() {
            return Err(unknown());
        }
        let not_idle = || Error::InvalidArgument {
            argument: "id",
            reason: String::from("the connection is not idle"),
        };
        if state.lifecycle() != Lifecycle::Idle {
            return Err(not_idle());
        }
        // Serialised with `stats`, which must not see the new state with the old
        // baseline (or the reverse): that would count 2^48 borrows, for good.
        let _jump = lock(&self.generation_jumps);
        state::try_claim(&header.state, state.generation(), Claim::Exclusive)
            .map_err(|_| not_idle())?;
        // Ours until the store below; read what announcing needs while it is.
        let partition = self.partition_of(header);
        let local = header.local.load(Ordering::Relaxed);
        let moved = state.generation().wrapping_add(by) & state::GENERATION_MASK;
        header.baseline.store(
            header.baseline.load(Ordering::Relaxed).wrapping_add(by) & state::GENERATION_MASK,
            Ordering::Relaxed,
        );
        // The last borrow's stamp could name the next borrow's generation after a jump
        // of k * 2^32 (it keeps 32 bits): make it name the idle generation, which no
        // borrow has, so a leak scan never takes a half-written borrow for a stamped one.
        header.restamp_idle(moved);
        header.state.store(
            SlotState::new(moved, Lifecycle::Idle).pack(),
            Ordering::SeqCst,
        );
        self.announce_idle(partition, local);
        Ok(())
    }

    fn remove(&self, id: ConnectionId) -> Result<Removal> {
        let unknown = || Error::UnknownConnection {
            connection_id: id.raw(),
        };
        let slot = id.slot();
        let header = self.slab.get(slot).ok_or_else(unknown)?;
        self.take_out(slot, header, flags::CLOSE_ON_RETURN, Eviction::Removed, || {
            header.conn_id.load(Ordering::Relaxed) == id.raw()
        })
        .ok_or_else(unknown)
    }

    /// Takes every connection of `partition` out of service (failover): idle ones
    /// closed now, borrowed or checked ones marked `FAILOVER`, as `remove` does.
    /// Returns how many it evicted.
    fn evict_partition(&self, partition: &Partition) -> usize {
        (0..partition.capacity())
            .filter(|&local| {
                let slot = partition.slot_of(local);
                self.slab.get(slot).is_some_and(|header| {
                    self.take_out(slot, header, flags::FAILOVER, Eviction::Failover, || {
                        partition.owns(header, local)
                    })
                    .is_some()
                })
            })
            .count()
    }

    /// Takes the connection in `slot` out of service, while `still_it` says the slot
    /// holds the connection the caller means: an idle one is closed now (counted as
    /// `cause`), a borrowed or checked one is marked with `mark` to close when its owner
    /// is done. `None` if the slot no longer holds it.
    ///
    /// The state first (Acquire: the fields `still_it` reads are at least as new as
    /// it), then `still_it`: a CAS on this exact state (a retire bumps the generation)
    /// then acts on that connection or fails, and the loop looks again.
    fn take_out(
        &self,
        slot: u32,
        header: &SlotHeader,
        mark: u64,
        cause: Eviction,
        still_it: impl Fn() -> bool,
    ) -> Option<Removal> {
        loop {
            let seen = header.load_state(Ordering::Acquire);
            if !still_it() {
                return None;
            }
            match state::take_out_of_service(&header.state, seen, mark) {
                TakeOut::Claimed => {
                    // Ours now, and still that connection (see above).
                    let partition = self.partition_of(header);
                    let local = header.local.load(Ordering::Relaxed);
                    drop(self.retire(partition, local, slot, true, Some(cause)));
                    return Some(Removal::Closed);
                }
                TakeOut::Marked => return Some(Removal::ClosesOnReturn),
                TakeOut::Empty => return None,
                // Being filled, emptied or reset by someone else: a few steps away.
                TakeOut::Busy => std::thread::yield_now(),
                TakeOut::Changed => {}
            }
        }
    }

    fn close(&self) {
        // Marked under the registry's lock: no user is created after it.
        let live = self
            .users
            .close(|| self.closed.store(true, Ordering::Release));
        for partition in live {
            partition.waiters.close();
            self.drain_idle(&partition);
        }
    }

    /// Whether this thread is inside a sweeper pass of this pool (a callback).
    pub(crate) fn in_own_sweep(&self) -> bool {
        SWEEPING.with(Cell::get) == self.id
    }

    /// Runs `pass` marked as this pool's sweeper pass on this thread, so callbacks it
    /// runs can be recognised (see `sweep_now`). Restores any outer mark (a callback of
    /// one pool may sweep another).
    pub(crate) fn as_sweeper<R>(&self, pass: impl FnOnce() -> R) -> R {
        struct Restore(u64);
        impl Drop for Restore {
            fn drop(&mut self) {
                SWEEPING.with(|s| s.set(self.0));
            }
        }
        let _restore = Restore(SWEEPING.with(|s| s.replace(self.id)));
        pass()
    }

    fn borrows(&self) -> Vec<BorrowInfo> {
        let now_ms = self.slab.now_ms();
        let mut borrows: Vec<BorrowInfo> = self
            .slab
            .iter()
            .filter_map(|(_, header)| {
                let borrow = header.borrow_snapshot()?;
                let info = header.info.load_full()?;
                let connection_id = ConnectionId::from_raw(header.conn_id.load(Ordering::Relaxed));
                // The slot may have changed hands while `info` was read: re-validate.
                if header.load_state(Ordering::Acquire) != borrow.state {
                    return None;
                }
                Some(BorrowInfo {
                    connection_id,
                    user: info.user.to_string(),
                    held_for: Slab::since(borrow.started_ms, now_ms),
                    call_site: borrow.site,
                    thread: thread_tag::name_of(borrow.borrower),
                    metadata: info.metadata.clone(),
                })
            })
            .collect();
        borrows.sort_by_key(|b| std::cmp::Reverse(b.held_for));
        borrows
    }

    fn stats(&self) -> PoolStats {
        let mut users = Vec::new();
        let (mut total, mut active, mut idle, mut waiting) = (0, 0, 0, 0);
        for partition in self.all_partitions() {
            let mut user = UserStats {
                user: partition.user().to_string(),
                waiting: partition.waiters.waiting(),
                timeouts: partition.timeouts.load(Ordering::Relaxed),
                ..UserStats::default()
            };
            partition.factory_stats(&mut user);
            for entry in partition.slots.iter() {
                let Some(header) = self.slab.get(entry.load(Ordering::Relaxed)) else {
                    continue;
                };
                user.total_connections += 1;
                match header.load_state(Ordering::Relaxed).lifecycle() {
                    Lifecycle::InUse => user.active_connections += 1,
                    Lifecycle::Idle => user.idle_connections += 1,
                    _ => {}
                }
            }
            total += user.total_connections;
            active += user.active_connections;
            idle += user.idle_connections;
            waiting += user.waiting;
            users.push(user);
        }
        // Every borrow and every retirement bumps a slot's generation once; modulo 2^48
        // per slot, which no slot's count reaches. The states are read (Acquire) before
        // the retirement count (see `retire`), with no generation jump in between.
        let jumps = lock(&self.generation_jumps);
        let bumps: u64 = self
            .slab
            .iter()
            .map(|(_, h)| {
                h.load_state(Ordering::Acquire)
                    .generation()
                    .wrapping_sub(h.baseline.load(Ordering::Relaxed))
                    & state::GENERATION_MASK
            })
            .sum();
        drop(jumps);
        // Saturating: a retirement bumps its generation just before it is counted. The
        // running maximum: slots read one by one, a moment apart, must not make the
        // count go backwards between two calls.
        let computed = bumps.saturating_sub(self.retirements.load(Ordering::Relaxed));
        let acquires = computed.max(
            self.acquires_reported
                .fetch_max(computed, Ordering::Relaxed),
        );
        let counters = &self.counters;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut acquire_wait = counters.acquire_wait.snapshot();
        acquire_wait.add_immediate(acquires.saturating_sub(get(&counters.waits_granted)));
        PoolStats {
            total_connections: total,
            active_connections: active,
            idle_connections: idle,
            waiting,
            acquires,
            timeouts: get(&counters.timeouts),
            spin_acquires: get(&counters.spin_acquires),
            users,
            users_retired: self.users.retired_count(),
            leak_stats: self.leak_stats(active),
            evictions: counters.evictions(),
            health_checks: get(&counters.health_checks),
            health_failures: get(&counters.health_failures),
            factory_creates: get(&counters.factory_creates),
            factory_errors: get(&counters.factory_errors),
            connects_in_flight: self.connector.in_flight(),
            acquire_wait,
            sweep: self.sweep_progress.stats(),
        }
    }

    /// Borrows held now (a scan of the slab).
    pub(crate) fn borrows_held(&self) -> usize {
        self.slab
            .iter()
            .filter(|(_, h)| h.load_state(Ordering::Relaxed).lifecycle() == Lifecycle::InUse)
            .count()
    }

    /// Leak accounting, with `current_tracked` = the borrows held now.
    pub(crate) fn leak_stats(&self, current_tracked: usize) -> LeakStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        LeakStats {
            leaks_detected: get(&self.counters.leaks_detected),
            current_tracked,
            alerts: get(&self.counters.leak_alerts),
            criticals: get(&self.counters.leak_criticals),
            returned_after_leak: get(&self.counters.returned_after_leak),
        }
    }
}

/// The error for a raw handle that names no live borrow (off the hot path).
#[cold]
#[inline(never)]
fn stale_raw(raw: RawHandle) -> Error {
    Error::StaleHandle {
        connection_id: raw.connection_id().raw(),
        generation: raw.generation(),
    }
}

/// Why a connection closed on return (or after a health check), from the flags of the
/// borrow or check that ended.
pub(crate) fn closing_cause(ended: SlotState) -> Eviction {
    if ended.has(flags::RECLAIMED) {
        Eviction::Reclaimed
    } else if ended.has(flags::FAILOVER) {
        Eviction::Failover
    } else if ended.has(flags::AGED) {
        Eviction::Age
    } else {
        Eviction::Removed
    }
}

/// Byte-string equality of two equally long strings without a `memcmp` call, for the
/// short names users have: whole words, the last one overlapping the one before (so a
/// 5-byte name is two 4-byte compares, not five byte compares).
#[inline]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    debug_assert_eq!(a.len(), b.len());
    let n = a.len().min(b.len());
    let word8 = |s: &[u8], at: usize| u64::from_ne_bytes(s[at..at + 8].try_into().expect("8"));
    let word4 = |s: &[u8], at: usize| u32::from_ne_bytes(s[at..at + 4].try_into().expect("4"));
    match n {
        0..4 => a[..n] == b[..n],
        4..8 => word4(a, 0) == word4(b, 0) && word4(a, n - 4) == word4(b, n - 4),
        _ => {
            let mut at = 0;
            while at + 8 < n {
                if word8(a, at) != word8(b, at) {
                    return false;
                }
                at += 8;
            }
            word8(a, n - 8) == word8(b, n - 8)
        }
    }
}

/// A per-pool starting generation below 2^32 (far from the 2^48 wrap), so handles of
/// different pools rarely coincide.
fn pool_seed() -> u64 {
    static POOLS: AtomicU64 = AtomicU64::new(0);
    let n = POOLS.fetch_add(1, Ordering::Relaxed);
    let stack_entropy = NonNull::<u8>::dangling().as_ptr() as u64 ^ (&n as *const u64 as u64);
    let mixed = (n ^ stack_entropy ^ clock::now_nanos()).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    mixed >> 32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_c_affinity_path_matches_whole_names_only() {
        let pool = EnhancedConnectionPool::new(EnhancedPoolConfig::default());
        for user in ["alice", "a\0b"] {
            pool.add_connection_sync(0u8, user, ConnectionMetadata::for_user(user))
                .unwrap();
        }
        // SAFETY: every argument below is a NUL-terminated literal.
        let takes = |pool: &EnhancedConnectionPool<u8>, name: &std::ffi::CStr| unsafe {
            pool.take_affine_c(name.as_ptr(), CallSite::Rust(Location::caller()))
                .map(|c| c.user().to_owned())
        };
        assert_eq!(takes(&pool, c"alice"), None, "nothing cached before a borrow");
        drop(pool.try_acquire("alice").unwrap());
        assert_eq!(takes(&pool, c"alice").as_deref(), Some("alice"));
        for other in [c"alic", c"alicex", c"", c"bob"] {
            assert_eq!(takes(&pool, other), None, "{other:?}");
        }
        let other = EnhancedConnectionPool::<u8>::new(EnhancedPoolConfig::default());
        assert_eq!(takes(&other, c"alice"), None, "per pool");
        // A name with a NUL byte is never kept: "a" must not match "a\0b".
        drop(pool.try_acquire("a\0b").unwrap());
        assert_eq!(takes(&pool, c"a"), None);
        assert_eq!(pool.try_acquire("a\0b").unwrap().user(), "a\0b");
    }

    #[test]
    fn stays_idle_follows_the_connection_state() {
        let pool = EnhancedConnectionPool::new(EnhancedPoolConfig::default());
        pool.add_connection_sync(0u8, "alice", ConnectionMetadata::for_user("alice"))
            .unwrap();
        let partition = pool.inner.lookup_partition("alice").unwrap();
        // The states only; the moment itself (a connection taken back during it) is a
        // timing, measured by the contention benchmarks rather than tested.
        let stays_idle = || partition.stays_idle(&pool.inner.slab);
        assert!(stays_idle(), "an idle connection, left idle through the moment");
        let held = pool.try_acquire("alice").unwrap();
        assert!(!stays_idle(), "the only connection is borrowed");
        drop(held);
        assert!(stays_idle(), "given back");
    }

    #[test]
    fn names_c_compares_every_byte_of_every_length_and_the_nul() {
        let base: Vec<u8> = (0..=AFFINITY_NAME_BYTES as u8)
            .map(|b| b.wrapping_mul(37) | 1)
            .collect();
        let entry = |n: usize| {
            let mut name = [0; AFFINITY_NAME_BYTES];
            name[..n].copy_from_slice(&base[..n]);
            LastReturned {
                pool_id: 1,
                partition: std::ptr::null(),
                serial: 7,
                slot: 0,
                generation: 0,
                name_serial: 7,
                name_len: n as u32,
                name,
            }
        };
        // SAFETY: every string passed is NUL-terminated.
        let names = |last: &LastReturned, user: &[u8]| unsafe {
            last.names_c(std::ffi::CString::new(user).unwrap().as_ptr())
        };
        for n in 0..=AFFINITY_NAME_BYTES {
            let last = entry(n);
            assert!(names(&last, &base[..n]), "length {n}");
            for flip in 0..n {
                let mut other = base[..n].to_vec();
                other[flip] ^= 0x20;
                assert!(!names(&last, &other), "length {n}, byte {flip}");
            }
            if n > 0 {
                assert!(!names(&last, &base[..n - 1]), "length {n}, a prefix");
            }
            assert!(!names(&last, &base[..n + 1]), "length {n}, one byte longer");
        }
        let stale = LastReturned {
            name_serial: 6,
            ..entry(5)
        };
        assert!(!names(&stale, &base[..5]), "a name of another serial");
        let not_kept = LastReturned {
            name_len: NAME_NOT_KEPT,
            ..entry(5)
        };
        assert!(!names(&not_kept, &base[..5]), "no name kept");
    }

    #[test]
    fn same_bytes_compares_every_byte_of_every_length() {
        let base: Vec<u8> = (0..48u8).map(|b| b.wrapping_mul(37) | 1).collect();
        for n in 0..=48 {
            let a = &base[..n];
            assert!(same_bytes(a, a), "{n}");
            for flip in 0..n {
                let mut b = a.to_vec();
                b[flip] ^= 0x20;
                assert!(!same_bytes(a, &b), "length {n}, byte {flip}");
            }
        }
    }
}

//! [`PooledConnection`]: the RAII guard for one borrow, and [`RawHandle`], the same
//! borrow without its guard (how borrows cross the C boundary).

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

use crate::error::Result;
use crate::metadata::ConnectionId;
use crate::pool::PoolInner;
use crate::slab::CallSite;
use crate::slab::state::Handle;
use crate::sync::Ordering;

/// One borrowed connection. Dereferences to the connection; returns it to the pool when
/// dropped, on every path (normal return, `?`, panic unwinding).
///
/// # Ownership
///
/// The guard gives exclusive access to the connection for as long as it lives. To keep
/// the connection for good, [`detach`](Self::detach) it; to hand the borrow across a C
/// boundary, [`into_raw_handle`](Self::into_raw_handle).
///
/// # Threading
///
/// `Send` (and `Sync` when `C: Sync`): a borrow may be returned from another thread.
#[must_use = "dropping the guard returns the connection at once"]
pub struct PooledConnection<'a, C> {
    pool: &'a PoolInner<C>,
    handle: Handle,
    /// The guard is an exclusive borrow of a `C`: `Send` iff `C: Send`, `Sync` iff
    /// `C: Sync` (the pool itself is `Sync` for any `C: Send`, which must not leak
    /// through to shared access to one connection).
    _exclusive: PhantomData<&'a mut C>,
}

impl<'a, C> PooledConnection<'a, C> {
    #[inline]
    pub(crate) fn new(pool: &'a PoolInner<C>, handle: Handle) -> Self {
        PooledConnection {
            pool,
            handle,
            _exclusive: PhantomData,
        }
    }

    /// The borrowed slot.
    pub(crate) fn slot(&self) -> u32 {
        self.handle.slot
    }

    /// Forgets the guard, keeping the borrow as its handle (the pool ends it).
    pub(crate) fn into_handle(self) -> Handle {
        let handle = self.handle;
        std::mem::forget(self);
        handle
    }

    fn header(&self) -> &'a crate::slab::SlotHeader {
        self.pool
            .slab
            .get(self.handle.slot)
            .expect("a guard's slot is in the slab")
    }

    /// The borrowed connection's id.
    pub fn connection_id(&self) -> ConnectionId {
        ConnectionId::from_raw(self.header().conn_id.load(Ordering::Relaxed))
    }

    /// The user the connection belongs to.
    pub fn user(&self) -> &str {
        self.pool.partition_of(self.header()).user()
    }

    /// How long this borrow has been held (coarse clock: a few ms resolution).
    pub fn held_for(&self) -> Duration {
        let started = self.header().owner_started_ms();
        crate::slab::Slab::since(started, self.pool.slab.now_ms())
    }

    /// Declares that this borrow is expected to be held for `d` (a migration, a long
    /// report): its leak Alert, Critical and reclaim points all move `d` later (the
    /// sweeper compares the borrow's age less `d` with the thresholds), so a long
    /// operation is neither reported nor reclaimed while within its declared time, and
    /// is reported as usual once past it. This is the design guide's "mark long-running
    /// operations explicitly" (Pattern 4), without a separate tracker.
    ///
    /// A later call replaces the declaration (it is not added to it); `Duration::ZERO`
    /// withdraws it. It applies to this borrow only: the next borrow of the connection
    /// starts with none. Reports and [`held_for`](Self::held_for) still show the real
    /// age. Durations beyond `u32::MAX` ms (about 49 days) are capped there. A level
    /// already reported stays reported.
    ///
    /// Ownership and threading: the holder's own call, through the guard (any thread
    /// the guard is on); one relaxed store on the slot's header after a fence, no
    /// lock, no allocation.
    pub fn expect_hold(&self, d: Duration) {
        self.pool.set_hold_extension(self.handle.slot, d);
    }

    /// Where in the source this borrow was taken.
    pub fn call_site(&self) -> CallSite {
        self.header()
            .owner_site()
            .expect("a borrow always records its call site")
    }

    /// Ends the borrow now and reports what the pool said.
    ///
    /// # Errors
    ///
    /// [`Error::Reclaimed`](crate::Error::Reclaimed) if the sweeper reclaimed the borrow
    /// as a critical leak (the connection has now been closed).
    pub fn release(self) -> Result<()> {
        let (pool, handle) = (self.pool, self.handle);
        std::mem::forget(self);
        pool.release(handle)
    }

    /// Ends the borrow by closing the connection instead of returning it: for a
    /// connection the holder knows is broken (a protocol error, a lost session, a
    /// transaction in an unknown state). The connection is dropped (closed) exactly
    /// once, on this thread, before this returns; it counts as an eviction with cause
    /// `discarded` (`stats().evictions.discarded`, Prometheus `cause="discarded"`); its
    /// place is freed, and a caller waiting for that user is served by the factory if
    /// there is one. The `reset` hook does not run.
    ///
    /// # Errors
    ///
    /// [`Error::Reclaimed`](crate::Error::Reclaimed) if the sweeper reclaimed the borrow
    /// as a critical leak: the connection is closed now all the same (counted as
    /// reclaimed).
    pub fn discard(self) -> Result<()> {
        let (pool, handle) = (self.pool, self.handle);
        std::mem::forget(self);
        pool.discard(handle)
    }

    /// Takes the connection out of the pool for good; its slot and the user's capacity
    /// are freed (and a caller waiting for that capacity is served by the factory). It
    /// counts as an eviction with cause `detached` (`stats().evictions.detached`); the
    /// `reset` hook does not run.
    ///
    /// # Errors
    ///
    /// [`Error::Reclaimed`](crate::Error::Reclaimed) if the borrow had been reclaimed as
    /// a critical leak: the connection is closed now, as its release would.
    pub fn detach(self) -> Result<C> {
        let (pool, handle) = (self.pool, self.handle);
        std::mem::forget(self);
        pool.detach(handle)
    }

    /// Forgets the guard and returns the borrow as a [`RawHandle`], to be released with
    /// [`EnhancedConnectionPool::release_raw_handle`](crate::EnhancedConnectionPool::release_raw_handle).
    /// This is how the C ABI hands borrows to C callers.
    pub fn into_raw_handle(self) -> RawHandle {
        let raw = RawHandle {
            connection_id: self.connection_id(),
            generation: self.handle.generation,
        };
        std::mem::forget(self);
        raw
    }
}

/// A borrow without its guard: which connection, and which of its borrows (the
/// borrow's 48-bit generation). Plain data (`Copy`); it owns nothing, and releasing it
/// twice, or releasing a forged or outdated one, is rejected with
/// [`Error::StaleHandle`](crate::Error::StaleHandle) and changes nothing.
///
/// A handle names exactly one borrow: the pool bumps a slot's generation on every
/// borrow and checks the connection id too, so a handle never matches a later borrow
/// of the same connection (until 2^48 borrows of that one slot) nor any borrow of
/// another connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RawHandle {
    connection_id: ConnectionId,
    generation: u64,
}

impl RawHandle {
    /// Rebuilds a handle from its parts (as a C lease carries them).
    pub const fn from_parts(connection_id: ConnectionId, generation: u64) -> Self {
        RawHandle {
            connection_id,
            generation,
        }
    }

    /// The borrowed connection.
    pub const fn connection_id(self) -> ConnectionId {
        self.connection_id
    }

    /// The borrow's generation (below 2^48).
    pub const fn generation(self) -> u64 {
        self.generation
    }
}

impl<C> Deref for PooledConnection<'_, C> {
    type Target = C;

    #[inline]
    fn deref(&self) -> &C {
        // SAFETY: this guard is the slot's current borrow; by the pool's protocol the
        // borrower alone touches the value until release (the sweeper never touches an
        // `InUse` value, and closes a reclaimed one only after its holder returns it).
        unsafe { self.pool.value_ref(self.handle.slot) }
    }
}

impl<C> DerefMut for PooledConnection<'_, C> {
    #[inline]
    fn deref_mut(&mut self) -> &mut C {
        // SAFETY: as in `deref`, and `&mut self` makes this reference unique.
        unsafe { self.pool.value_mut(self.handle.slot) }
    }
}

impl<C> Drop for PooledConnection<'_, C> {
    #[inline]
    fn drop(&mut self) {
        if let Err(e) = self.pool.release(self.handle) {
            warn_release_failed(&e);
        }
    }
}

/// Out of line, so a drop's common path carries no formatting code.
#[cold]
#[inline(never)]
fn warn_release_failed(e: &crate::error::Error) {
    log::warn!("heliosdb-pool: returning connection: {e}");
}

impl<C: fmt::Debug> fmt::Debug for PooledConnection<'_, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledConnection")
            .field("connection_id", &self.connection_id())
            .field("connection", &**self)
            .finish()
    }
}

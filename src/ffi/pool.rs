//! `heliosdb_pool`: the opaque pool handle, its leases, and the calls on it.
//!
//! A C connection is an opaque `void *`. The pool stores it in a `CConnection`, whose
//! `Drop` calls the config's `close` callback, so every path that closes a connection
//! (remove, close, eviction, reclaim, free) closes it exactly once. A borrow crosses
//! the boundary as a [`heliosdb_lease`]: the core's raw borrow handle plus the
//! connection, its id, and the pool it came from.
//!
//! Acquire and release allocate nothing on success: the user string is read in place
//! (`CStr` to `&str`), the lease is written into the caller's struct, and the release
//! path is the core's one CAS plus one load of the `freed` flag.

use std::ffi::{c_char, c_int, c_void};
use std::mem::size_of;
use std::ptr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::error::{Error, Result, Status};
use crate::guard::PooledConnection;
use crate::metadata::{ConnectionId, ConnectionMetadata};
use crate::pool::{EnhancedConnectionPool, Removal};
use crate::slab::{CSite, CallSite};

use super::boundary::{self, check_out, check_ptr, check_str, opt_out, opt_str};
use super::config::{
    heliosdb_close_fn, heliosdb_connect_fn, heliosdb_health_check_fn, heliosdb_leak_fn,
    heliosdb_pool_config, heliosdb_user_data_free_fn, read_config,
};

/// Pass as `timeout_ms` to wait for the pool's configured `acquire_timeout_ms`.
pub const HELIOSDB_TIMEOUT_DEFAULT: u64 = u64::MAX;

/// The leak level of a report: held past the alert threshold.
pub const HELIOSDB_LEAK_ALERT: i32 = 1;
/// The leak level of a report: held past the critical threshold.
pub const HELIOSDB_LEAK_CRITICAL: i32 = 2;

/// The config's callbacks and `user_data`, shared by the pool and every connection it
/// owns; `user_data_free` runs when the last of them is gone.
pub(crate) struct Callbacks {
    close: heliosdb_close_fn,
    // The sweeper's callbacks: kept so the hooks can be wired without an ABI change.
    #[allow(dead_code)]
    health_check: heliosdb_health_check_fn,
    #[allow(dead_code)]
    connect: heliosdb_connect_fn,
    #[allow(dead_code)]
    on_leak: heliosdb_leak_fn,
    #[allow(dead_code)]
    on_reclaim: heliosdb_leak_fn,
    user_data: *mut c_void,
    user_data_free: heliosdb_user_data_free_fn,
}

// SAFETY: the callbacks and `user_data` are documented to be callable from any thread,
// concurrently; the pool never dereferences `user_data` itself.
unsafe impl Send for Callbacks {}
// SAFETY: as above; `Callbacks` is immutable after construction.
unsafe impl Sync for Callbacks {}

impl Drop for Callbacks {
    fn drop(&mut self) {
        if let Some(free) = self.user_data_free {
            // SAFETY: the config's contract: `user_data_free(user_data)` is valid to call
            // once; this is the last owner of `user_data`, so it runs exactly once and
            // after every other callback.
            unsafe { free(self.user_data) }
        }
    }
}

/// A C connection in the pool: the caller's pointer, closed through the `close`
/// callback when dropped.
pub(crate) struct CConnection {
    raw: *mut c_void,
    callbacks: Arc<Callbacks>,
}

// SAFETY: the pool gives one thread at a time access to a connection (the borrower) and
// may close it on any thread; the C contract says connections may move between threads.
unsafe impl Send for CConnection {}

impl Drop for CConnection {
    fn drop(&mut self) {
        if let Some(close) = self.callbacks.close {
            // SAFETY: the config's contract: `close(connection, user_data)` is callable
            // on any thread; the pool owns `raw` and drops this wrapper exactly once.
            unsafe { close(self.raw, self.callbacks.user_data) }
        }
    }
}

/// A pool of C connections. Create with `heliosdb_pool_new`, destroy with
/// `heliosdb_pool_free`.
///
/// Thread-safety: every function on a pool may be called from any number of threads
/// at once, except `heliosdb_pool_free`, which must not run concurrently with any
/// other call on the same pool (leases still out when it runs may be released after it
/// returns, from any thread).
pub struct heliosdb_pool {
    pool: EnhancedConnectionPool<CConnection>,
    callbacks: Arc<Callbacks>,
    /// Set by `heliosdb_pool_free` when borrows were out: the last release reclaims the
    /// allocation. Read (one load) on every C release.
    freed: AtomicBool,
    /// Borrows still out after `heliosdb_pool_free`; touched only once `freed` is set.
    outstanding_after_free: AtomicUsize,
}

/// One borrowed connection, written by the acquire functions and given back to
/// `heliosdb_pool_release`.
///
/// The caller has exclusive use of `connection` until it releases the lease. Every
/// field is informative except `handle` and `pool`, which release checks: a lease of
/// another pool is `HELIOSDB_ERR_FOREIGN_HANDLE`; one already released (or a copy of
/// one) is `HELIOSDB_ERR_STALE_HANDLE`, and changes nothing.
///
/// Thread-safety: plain data. A lease may be released from any thread, once.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct heliosdb_lease {
    /// The borrow's handle: names this borrow, and no later borrow of the connection.
    pub handle: u64,
    /// The connection, as given to `heliosdb_pool_add_connection`.
    pub connection: *mut c_void,
    /// The connection's id (as returned by `heliosdb_pool_add_connection`).
    pub connection_id: u64,
    /// The pool the lease came from.
    pub pool: *const heliosdb_pool,
}

/// What the service knows about a connection, given to `heliosdb_pool_add_connection`
/// and repeated in leak reports and statistics. Every string is NUL-terminated UTF-8
/// and is copied by the call.
///
/// Thread-safety: plain data owned by the caller; not retained after the call.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct heliosdb_connection_metadata {
    /// `sizeof(heliosdb_connection_metadata)` as the caller was compiled.
    pub struct_size: usize,
    /// The database, or NULL.
    pub database: *const c_char,
    /// The wire protocol ("postgres", "mysql", ...), or NULL for "".
    pub protocol: *const c_char,
    /// The server's address, or NULL.
    pub remote_addr: *const c_char,
    /// `tag_count` labels ("read-only", "replica", ...); may be NULL when
    /// `tag_count` is 0.
    pub tags: *const *const c_char,
    /// The number of entries in `tags`.
    pub tag_count: usize,
}

/// A leak report, passed to the `on_leak` and `on_reclaim` callbacks. Every pointer
/// is valid only during the callback.
///
/// Thread-safety: read it on the callback's thread, during the call.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct heliosdb_leak_report {
    /// The leaked borrow's connection.
    pub connection_id: u64,
    /// The connection's user (NUL-terminated).
    pub user: *const c_char,
    /// How long the borrow has been held.
    pub held_ms: u64,
    /// `HELIOSDB_LEAK_ALERT` or `HELIOSDB_LEAK_CRITICAL`.
    pub level: i32,
    /// Where it was acquired: the file (NUL-terminated), or NULL if unknown.
    pub file: *const c_char,
    /// Where it was acquired: the line, or 0.
    pub line: u32,
    /// Where it was acquired: the function (NUL-terminated), or NULL.
    pub function: *const c_char,
}

/// A snapshot of a pool's counts, from `heliosdb_pool_get_stats`.
///
/// Set `struct_size` to `sizeof(heliosdb_pool_stats)` before the call. Counts are read
/// without stopping the pool, so under load they describe a moment approximately.
///
/// Thread-safety: plain data owned by the caller.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct heliosdb_pool_stats {
    /// `sizeof(heliosdb_pool_stats)` as the caller was compiled; set it before the call.
    pub struct_size: usize,
    /// Connections in the pool.
    pub total_connections: usize,
    /// Connections borrowed now.
    pub active_connections: usize,
    /// Connections idle now.
    pub idle_connections: usize,
    /// Callers waiting for a connection.
    pub waiting: usize,
    /// Borrows handed out since the pool was built.
    pub acquires: u64,
    /// Acquires that timed out.
    pub timeouts: u64,
    /// Leaks reported so far.
    pub leaks_detected: u64,
    /// Leak reports at level Alert so far.
    pub leak_alerts: u64,
    /// Leak reports at level Critical so far.
    pub leak_criticals: u64,
    /// Leaked borrows that were eventually returned.
    pub returned_after_leak: u64,
}

/// The pool behind a non-NULL handle.
///
/// # Safety
///
/// `pool` is NULL or a live pool from `heliosdb_pool_new`.
unsafe fn pool_ref<'a>(pool: *const heliosdb_pool) -> Result<&'a heliosdb_pool> {
    // SAFETY: forwarded contract.
    unsafe { check_ptr(pool, "pool") }
}

/// Creates a pool. `config` may be NULL for the defaults without callbacks.
///
/// On success `*out_pool` is the new pool and the pool owns `config->user_data` (it
/// calls `user_data_free` once, when its memory is reclaimed). On failure nothing is
/// written and the caller keeps `user_data`. `HELIOSDB_ERR_INVALID_CONFIG` names the
/// offending field in `heliosdb_last_error_message()`.
///
/// # Safety
///
/// `config` is NULL or initialized by a `heliosdb_pool_config_*` function;
/// `out_pool` is NULL (an error) or writable.
///
/// Thread-safety: callable from any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn heliosdb_pool_new(
    config: *const heliosdb_pool_config,
    out_pool: *mut *mut heliosdb_pool,
) -> Status {
    boundary::call(|| {
        // SAFETY: the export's contract on `out_pool`.
        let out = unsafe { check_out(out_pool, "out_pool") }?;
        let config = if config.is_null() {
            heliosdb_pool_config::from_settings(&crate::EnhancedPoolConfig::default())
        } else {
            // SAFETY: the export's contract on `config`.
            unsafe { read_config(config) }?
        };
        let pool = EnhancedConnectionPool::try_new(config.settings())?;
        // Only now does the pool take `user_data`: `Callbacks::drop` frees it.
        let callbacks = Arc::new(Callbacks {
            close: config.close,
            health_check: config.health_check,
            connect: config.connect,
            on_leak: config.on_leak,
            on_reclaim: config.on_reclaim,
            user_data: config.user_data,
            user_data_free: config.user_data_free,
        });
        let handle = Box::new(heliosdb_pool {
            pool,
            callbacks,
            freed: AtomicBool::new(false),
            outstanding_after_free: AtomicUsize::new(0),
        });
        out.write(Box::into_raw(handle));
        Ok(())
    })
}

/// Frees a pool. NULL does nothing.
///
/// The pool is closed first: waiting acquires fail with `HELIOSDB_ERR_CLOSED` and idle
/// connections are closed now. Leases still out stay valid: their connections stay
/// usable by their holders, and releasing them through this same pool pointer (from
/// any thread) closes them. The pool's memory (and `user_data`, through
/// `user_data_free`) is reclaimed when the last of them is released, or now if none
/// is out. After that the pointer is dangling.
///
/// # Safety
///
/// `pool` is NULL or a live pool that is not freed twice. No other call on this pool
/// may run concurrently with this one; after it returns only `heliosdb_pool_release`
/// of leases that were out may be called on it.
///
/// Thread-safety: see above.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn heliosdb_pool_free(pool: *mut heliosdb_pool) {
    boundary::call_or((), || {
        if pool.is_null() {
            return;
        }
        // SAFETY: non-NULL and live by the contract.
        let p = unsafe { &*pool };
        if p.freed.load(Ordering::Acquire) {
            // A second free while leases are still out: ignore it (the memory is still
            // ours to detect this with) rather than free twice.
            boundary::fail(&Error::InvalidArgument {
                argument: "pool",
                reason: String::from("heliosdb_pool_free called twice"),
            });
            return;
        }
        p.pool.close();
        // Exact: the pool is closed (no new borrows) and, by contract, no other call
        // runs now; every borrow still out is `InUse` and will be released at most once.
        let borrowed = p.pool.stats().active_connections;
        if borrowed == 0 {
            // SAFETY: `pool` came from `Box::into_raw` in `heliosdb_pool_new`, no
            // lease is out, and no other call runs: this is the last use.
            drop(unsafe { Box::from_raw(pool) });
            return;
        }
        p.outstanding_after_free.store(borrowed, Ordering::Relaxed);
        // Release: a releaser that sees `freed` also sees the count.
        p.freed.store(true, Ordering::Release);
    })
}

/// Adds a connection owned by `user` to the pool; its id goes to `*out_connection_id`
/// (which may be NULL). The connection is idle at once, and goes to the longest waiter
/// of `user` if there is one.
///
/// Ownership: once `pool` is non-NULL the pool owns `connection`, even if the call
/// fails: a failed add closes it through the `close` callback before returning (as
/// SQLite does with destructors). With a NULL `pool` or `connection`, nothing is closed.
///
/// `metadata` may be NULL (only the user is recorded); its strings are copied.
///
/// Errors: `HELIOSDB_ERR_POOL_FULL`, `HELIOSDB_ERR_USER_AT_CAPACITY`,
/// `HELIOSDB_ERR_CLOSED`, `HELIOSDB_ERR_NULL_ARGUMENT`, `HELIOSDB_ERR_INVALID_UTF8`,
/// `HELIOSDB_ERR_UNSUPPORTED_VERSION` (metadata's `struct_size`).
///
/// # Safety
///
/// `pool` is NULL or live; `user` NULL or a NUL-terminated string; `metadata` NULL or
/// a valid struct whose strings and `tags` array are valid; `out_connection_id` NULL or
/// writable.
///
/// Thread-safety: callable concurrently with any call but `heliosdb_pool_free`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn heliosdb_pool_add_connection(
    pool: *mut heliosdb_pool,
    connection: *mut c_void,
    user: *const c_char,
    metadata: *const heliosdb_connection_metadata,
    out_connection_id: *mut u64,
) -> Status {
    boundary::call(|| {
        // SAFETY: the export's contract on `pool`.
        let p = unsafe { pool_ref(pool) }?;
        if connection.is_null() {
            return Err(Error::NullArgument {
                argument: "connection",
            });
        }
        // From here on the pool owns the connection: dropping `conn` closes it.
        let conn = CConnection {
            raw: connection,
            callbacks: p.callbacks.clone(),
        };
        // SAFETY: the export's contract on `user`, `metadata`, `out_connection_id`.
        let (user, metadata, out) = unsafe {
            (
                check_str(user, "user")?,
                read_metadata(metadata)?,
                opt_out(out_connection_id),
            )
        };
        let metadata = ConnectionMetadata {
            user: user.to_owned(),
            ..metadata
        };
        let id = p.pool.add_connection_sync(conn, user, metadata)?;
        if let Some(out) = out {
            out.write(id.raw());
        }
        Ok(())
    })
}

/// Copies a caller's metadata (NULL: empty).
///
/// # Safety
///
/// `metadata` is NULL or a valid struct with valid strings and tags.
unsafe fn read_metadata(md: *const heliosdb_connection_metadata) -> Result<ConnectionMetadata> {
    if md.is_null() {
        return Ok(ConnectionMetadata::default());
    }
    // Read the size first: a struct of another version must not be read whole.
    // SAFETY: non-NULL; `struct_size` is the first field of every version.
    let struct_size = unsafe { md.cast::<usize>().read() };
    if struct_size != size_of::<heliosdb_connection_metadata>() {
        return Err(Error::UnsupportedVersion {
            what: "heliosdb_connection_metadata.struct_size",
            found: boundary::usize_to_u64(struct_size),
        });
    }
    // SAFETY: this version's size, so the whole struct is readable.
    let md = unsafe { &*md };
    let tags = if md.tag_count == 0 {
        Vec::new()
    } else {
        if md.tags.is_null() {
            return Err(Error::NullArgument {
                argument: "metadata.tags",
            });
        }
        // SAFETY: by contract `tags` points to `tag_count` string pointers.
        let raw = unsafe { std::slice::from_raw_parts(md.tags, md.tag_count) };
        raw.iter()
            // SAFETY: by contract each tag is a valid NUL-terminated string.
            .map(|&t| unsafe { check_str(t, "metadata.tags[]") }.map(str::to_owned))
            .collect::<Result<Vec<_>>>()?
    };
    // SAFETY: by contract each string field is NULL or NUL-terminated.
    let (database, protocol, remote_addr) = unsafe {
        (
            opt_str(md.database, "metadata.database")?,
            opt_str(md.protocol, "metadata.protocol")?,
            opt_str(md.remote_addr, "metadata.remote_addr")?,
        )
    };
    Ok(ConnectionMetadata {
        user: String::new(),
        database: database.map(str::to_owned),
        protocol: protocol.unwrap_or_default().to_owned(),
        remote_addr: remote_addr.map(str::to_owned),
        tags,
    })
}

/// The call site recorded by the acquire functions that are given none.
const UNKNOWN_SITE: CallSite = CallSite::C(CSite::from_static(
    c"<C caller: use HELIOSDB_POOL_ACQUIRE to record the call site>",
    0,
    None,
));

/// Builds a call site from `__FILE__`, `__LINE__`, `__func__`.
///
/// # Safety
///
/// `file` and `function` are NULL or NUL-terminated strings that outlive the pool.
unsafe fn call_site(file: *const c_char, line: c_int, function: *const c_char) -> Result<CallSite> {
    let line = boundary::line_to_u32(line)?;
    // SAFETY: forwarded contract (string literals live for the whole program). Only the
    // pointers are kept: no `strlen` on the acquire path.
    let site = unsafe { CSite::new(file, line, function) };
    Ok(CallSite::C(
        site.ok_or(Error::NullArgument { argument: "file" })?,
    ))
}

/// Shared by every acquire form: checks the arguments, runs `how`, writes the lease.
///
/// # Safety
///
/// The acquire exports' contract on `pool`, `user`, `out_lease`.
#[inline]
unsafe fn acquire_with(
    pool: *mut heliosdb_pool,
    user: *const c_char,
    out_lease: *mut heliosdb_lease,
    how: impl for<'p> FnOnce(
        &'p EnhancedConnectionPool<CConnection>,
        &str,
    ) -> Result<PooledConnection<'p, CConnection>>,
) -> Result<()> {
    // SAFETY: forwarded contract.
    let (p, user, out) = unsafe {
        (
            pool_ref(pool)?,
            check_str(user, "user")?,
            check_out(out_lease, "out_lease")?,
        )
    };
    let guard = how(&p.pool, user)?;
    let connection = guard.raw;
    let connection_id = guard.connection_id().raw();
    out.write(heliosdb_lease {
        handle: guard.into_raw_handle(),
        connection,
        connection_id,
        pool: pool.cast_const(),
    });
    Ok(())
}

fn timeout_of(p: &EnhancedConnectionPool<CConnection>, timeout_ms: u64) -> Duration {
    if timeout_ms == HELIOSDB_TIMEOUT_DEFAULT {
        p.config().acquire_timeout()
    } else {
        Duration::from_millis(timeout_ms)
    }
}

/// Borrows an idle connection of `user`, waiting up to `timeout_ms` milliseconds
/// (`HELIOSDB_TIMEOUT_DEFAULT`: the pool's `acquire_timeout_ms`; 0: do not wait). On
/// success `*out_lease` is the borrow; release it with `heliosdb_pool_release`.
///
/// Prefer the `HELIOSDB_POOL_ACQUIRE` macro, which also records the call site for
/// leak reports at no cost.
///
/// Errors: `HELIOSDB_ERR_TIMEOUT`, `HELIOSDB_ERR_UNKNOWN_USER`, `HELIOSDB_ERR_CLOSED`,
/// `HELIOSDB_ERR_NULL_ARGUMENT`, `HELIOSDB_ERR_INVALID_UTF8`. Allocates nothing on
/// success.
///
/// # Safety
///
/// `pool` is NULL or live; `user` NULL or NUL-terminated; `out_lease` NULL or writable.
///
/// Thread-safety: callable concurrently with any call but `heliosdb_pool_free`; parks
/// the calling thread while it waits.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn heliosdb_pool_acquire(
    pool: *mut heliosdb_pool,
    user: *const c_char,
    timeout_ms: u64,
    out_lease: *mut heliosdb_lease,
) -> Status {
    boundary::call(|| {
        // SAFETY: forwarded contract.
        unsafe {
            acquire_with(pool, user, out_lease, |p, user| {
                p.blocking_acquire_at(user, timeout_of(p, timeout_ms), UNKNOWN_SITE)
            })
        }
    })
}

/// `heliosdb_pool_acquire` recording the call site (`file`, `line`, `function`) for
/// leak reports; use it through `HELIOSDB_POOL_ACQUIRE`. `function` may be NULL;
/// `file` may not; a negative `line` is `HELIOSDB_ERR_INVALID_ARGUMENT`.
///
/// # Safety
///
/// As `heliosdb_pool_acquire`; `file` and `function` (when non-NULL) are
/// NUL-terminated strings that outlive the pool: string literals such as `__FILE__`
/// and `__func__` do.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn heliosdb_pool_acquire_at(
    pool: *mut heliosdb_pool,
    user: *const c_char,
    timeout_ms: u64,
    out_lease: *mut heliosdb_lease,
    file: *const c_char,
    line: c_int,
    function: *const c_char,
) -> Status {
    boundary::call(|| {
        // SAFETY: forwarded contract.
        let site = unsafe { call_site(file, line, function) }?;
        // SAFETY: forwarded contract.
        unsafe {
            acquire_with(pool, user, out_lease, |p, user| {
                p.blocking_acquire_at(user, timeout_of(p, timeout_ms), site)
            })
        }
    })
}

/// Borrows an idle connection of `user` if one is free right now; never waits, and
/// does not jump ahead of callers already waiting.
///
/// Errors: `HELIOSDB_ERR_NO_IDLE_CONNECTION`, `HELIOSDB_ERR_UNKNOWN_USER`,
/// `HELIOSDB_ERR_CLOSED`, `HELIOSDB_ERR_NULL_ARGUMENT`, `HELIOSDB_ERR_INVALID_UTF8`.
/// Allocates nothing on success. Prefer `HELIOSDB_POOL_TRY_ACQUIRE`.
///
/// # Safety
///
/// As `heliosdb_pool_acquire`.
///
/// Thread-safety: callable concurrently with any call but `heliosdb_pool_free`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn heliosdb_pool_try_acquire(
    pool: *mut heliosdb_pool,
    user: *const c_char,
    out_lease: *mut heliosdb_lease,
) -> Status {
    boundary::call(|| {
        // SAFETY: forwarded contract.
        unsafe {
            acquire_with(pool, user, out_lease, |p, user| {
                p.try_acquire_at(user, UNKNOWN_SITE)
            })
        }
    })
}

/// `heliosdb_pool_try_acquire` recording the call site; use it through
/// `HELIOSDB_POOL_TRY_ACQUIRE`.
///
/// # Safety
///
/// As `heliosdb_pool_acquire_at`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn heliosdb_pool_try_acquire_at(
    pool: *mut heliosdb_pool,
    user: *const c_char,
    out_lease: *mut heliosdb_lease,
    file: *const c_char,
    line: c_int,
    function: *const c_char,
) -> Status {
    boundary::call(|| {
        // SAFETY: forwarded contract.
        let site = unsafe { call_site(file, line, function) }?;
        // SAFETY: forwarded contract.
        unsafe {
            acquire_with(pool, user, out_lease, |p, user| {
                p.try_acquire_at(user, site)
            })
        }
    })
}

/// Returns a borrowed connection to the pool. The lease is not modified; do not use
/// its connection afterwards.
///
/// Errors (each changes nothing): `HELIOSDB_ERR_FOREIGN_HANDLE` for a lease of another
/// pool, `HELIOSDB_ERR_STALE_HANDLE` for a lease already released (or a copy of one),
/// `HELIOSDB_ERR_NULL_ARGUMENT`. `HELIOSDB_ERR_RECLAIMED`: the borrow had been
/// reclaimed as a critical leak; the connection is closed now and the lease is ended.
/// Allocates nothing on success.
///
/// After `heliosdb_pool_free`, the leases that were out are still released here; the
/// last one reclaims the pool's memory, after which `pool` is dangling.
///
/// # Safety
///
/// `pool` is NULL or live (or freed with this lease still out); `lease` is NULL or
/// readable.
///
/// Thread-safety: callable from any thread, concurrently with any call but
/// `heliosdb_pool_free`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn heliosdb_pool_release(
    pool: *mut heliosdb_pool,
    lease: *const heliosdb_lease,
) -> Status {
    boundary::call(|| {
        // SAFETY: the export's contract on `pool` and `lease`.
        let (p, lease) = unsafe { (pool_ref(pool)?, check_ptr(lease, "lease")?) };
        if !ptr::eq(lease.pool, pool) {
            return Err(Error::ForeignHandle);
        }
        let result = p.pool.release_raw_handle(lease.handle);
        let ended = matches!(result, Ok(()) | Err(Error::Reclaimed { .. }));
        // Acquire: pairs with the Release store in `heliosdb_pool_free`.
        if ended
            && p.freed.load(Ordering::Acquire)
            && p.outstanding_after_free.fetch_sub(1, Ordering::AcqRel) == 1
        {
            // SAFETY: the pool was freed with borrows out and this was the last of them
            // (AcqRel: every other release finished with the pool before this point);
            // `pool` came from `Box::into_raw`, and nothing else may use it now.
            drop(unsafe { Box::from_raw(pool) });
        }
        result
    })
}

/// Removes a connection by id. An idle one is closed now; a borrowed one is closed
/// when its holder releases it (`*out_deferred` is then true; `out_deferred` may be
/// NULL).
///
/// Errors: `HELIOSDB_ERR_UNKNOWN_CONNECTION`, `HELIOSDB_ERR_NULL_ARGUMENT`.
///
/// # Safety
///
/// `pool` is NULL or live; `out_deferred` NULL or writable.
///
/// Thread-safety: callable concurrently with any call but `heliosdb_pool_free`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn heliosdb_pool_remove_connection(
    pool: *mut heliosdb_pool,
    connection_id: u64,
    out_deferred: *mut bool,
) -> Status {
    boundary::call(|| {
        // SAFETY: the export's contract.
        let (p, out) = unsafe { (pool_ref(pool)?, opt_out(out_deferred)) };
        let removal = p
            .pool
            .remove_connection(ConnectionId::from_raw(connection_id))?;
        if let Some(out) = out {
            out.write(removal == Removal::ClosesOnReturn);
        }
        Ok(())
    })
}

/// Closes the pool: acquires and adds fail with `HELIOSDB_ERR_CLOSED` from now on,
/// waiters wake with it, idle connections are closed now and borrowed ones when
/// released. Idempotent. The pool must still be freed.
///
/// # Safety
///
/// `pool` is NULL or live.
///
/// Thread-safety: callable concurrently with any call but `heliosdb_pool_free`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn heliosdb_pool_close(pool: *mut heliosdb_pool) -> Status {
    boundary::call(|| {
        // SAFETY: the export's contract.
        unsafe { pool_ref(pool) }?.pool.close();
        Ok(())
    })
}

/// Whether `heliosdb_pool_close` (or free) has been called: `*out_closed`.
///
/// # Safety
///
/// `pool` is NULL or live; `out_closed` NULL or writable.
///
/// Thread-safety: callable concurrently with any call but `heliosdb_pool_free`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn heliosdb_pool_is_closed(
    pool: *const heliosdb_pool,
    out_closed: *mut bool,
) -> Status {
    boundary::call(|| {
        // SAFETY: the export's contract.
        let (p, out) = unsafe { (pool_ref(pool)?, check_out(out_closed, "out_closed")?) };
        out.write(p.pool.is_closed());
        Ok(())
    })
}

/// Writes a snapshot of the pool's counts into `*out_stats`, whose `struct_size` the
/// caller sets to `sizeof(heliosdb_pool_stats)` first (another size is
/// `HELIOSDB_ERR_UNSUPPORTED_VERSION`). O(connections); allocates.
///
/// # Safety
///
/// `pool` is NULL or live; `out_stats` NULL or a writable struct with `struct_size`
/// set.
///
/// Thread-safety: callable concurrently with any call but `heliosdb_pool_free`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn heliosdb_pool_get_stats(
    pool: *const heliosdb_pool,
    out_stats: *mut heliosdb_pool_stats,
) -> Status {
    boundary::call(|| {
        // SAFETY: the export's contract.
        let (p, out) = unsafe { (pool_ref(pool)?, check_out(out_stats, "out_stats")?) };
        // SAFETY: non-NULL (checked) and, by contract, `struct_size` is set.
        let struct_size = unsafe { out_stats.cast::<usize>().read() };
        if struct_size != size_of::<heliosdb_pool_stats>() {
            return Err(Error::UnsupportedVersion {
                what: "heliosdb_pool_stats.struct_size",
                found: boundary::usize_to_u64(struct_size),
            });
        }
        let s = p.pool.stats();
        out.write(heliosdb_pool_stats {
            struct_size,
            total_connections: s.total_connections,
            active_connections: s.active_connections,
            idle_connections: s.idle_connections,
            waiting: s.waiting,
            acquires: s.acquires,
            timeouts: s.timeouts,
            leaks_detected: s.leak_stats.leaks_detected,
            leak_alerts: s.leak_stats.alerts,
            leak_criticals: s.leak_stats.criticals,
            returned_after_leak: s.leak_stats.returned_after_leak,
        });
        Ok(())
    })
}

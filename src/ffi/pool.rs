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
//! path is the core's one CAS plus the free handshake (see [`heliosdb_pool`]).

use std::cell::RefCell;
use std::ffi::{CString, c_char, c_int, c_void};
use std::mem::{offset_of, size_of};
use std::ptr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::error::{Error, Result, Status};
use crate::guard::PooledConnection;
use crate::guard::RawHandle;
use crate::leak::LeakReport;
use crate::metadata::{ConnectionId, ConnectionMetadata};
use crate::pool::{EnhancedConnectionPool, PoolInner, Removal};
use crate::quiesce;
use crate::slab::state::Handle;
use crate::slab::state::Lifecycle;
use crate::slab::{CSite, CallSite, SlotHeader};

use super::boundary::{self, Failed, check_out, check_ptr, check_str, opt_out, opt_str};
use super::config::{
    heliosdb_close_fn, heliosdb_leak_fn, heliosdb_pool_config, heliosdb_user_data_free_fn,
    read_config,
};
use super::leak::{CReports, heliosdb_leak_report};

/// Pass as `timeout_ms` to wait for the pool's configured `acquire_timeout_ms`.
pub const HELIOSDB_TIMEOUT_DEFAULT: u64 = u64::MAX;

/// The config's `close` and `user_data`, shared by the pool, its hooks and every
/// connection it owns; `user_data_free` runs when the last of them is gone, if the pool
/// was built (`armed`).
pub(crate) struct Callbacks {
    close: heliosdb_close_fn,
    user_data: *mut c_void,
    user_data_free: heliosdb_user_data_free_fn,
    /// Set once `heliosdb_pool_new` succeeds: only then does the pool own `user_data`.
    armed: AtomicBool,
}

// SAFETY: the callbacks and `user_data` are documented to be callable from any thread,
// concurrently; the pool never dereferences `user_data` itself.
unsafe impl Send for Callbacks {}
// SAFETY: as above; `Callbacks` is immutable after construction.
unsafe impl Sync for Callbacks {}

impl Drop for Callbacks {
    fn drop(&mut self) {
        if !*self.armed.get_mut() {
            return; // `heliosdb_pool_new` failed: the caller keeps `user_data`.
        }
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
/// other call on the same pool but `heliosdb_pool_release` or `heliosdb_pool_discard`
/// of leases that are out (each ended once, while free runs or after it returns, from
/// any thread).
///
/// Freeing with leases out: the pool's memory has owners, `heliosdb_pool_free` and each
/// lease still out, and the last of them to leave reclaims it, whoever it is. A
/// release marks itself inside the pool before it reads `freed`, and free sets `freed`
/// before it waits for every mark on the pool to clear: one of the two sees the other,
/// so a release either finishes on the normal path before free counts the leases out,
/// or takes the counted path, waits until free has counted, and leaves as one of the
/// owners. The mark is the releasing thread's (`quiesce`: a plain store, with the
/// barrier's cost moved to free); a release made from inside another release's
/// callback, whose thread's mark is taken, marks its slot instead (a count, SeqCst).
pub struct heliosdb_pool {
    pool: EnhancedConnectionPool<CConnection>,
    callbacks: Arc<Callbacks>,
    /// Set by `heliosdb_pool_free` (SeqCst, see above). Read on every C release.
    freed: AtomicBool,
    /// Set by `heliosdb_pool_free` once `owners` counts every lease still out.
    counted: AtomicBool,
    /// After free: free itself plus the leases out when it counted. The party that
    /// takes it to zero reclaims the pool.
    owners: AtomicUsize,
}

/// One borrowed connection, written by the acquire functions and given back to
/// `heliosdb_pool_release`.
///
/// The caller has exclusive use of `connection` until it releases the lease.
/// `connection` is informative; `handle`, `connection_id` and `pool` are checked by release: a lease of
/// another pool is `HELIOSDB_ERR_FOREIGN_HANDLE`; one already released (or a copy of one, or
/// one whose `handle` or `connection_id` was changed) is `HELIOSDB_ERR_STALE_HANDLE`, and changes nothing.
///
/// Thread-safety: plain data. A lease may be released from any thread, once.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct heliosdb_lease {
    /// The borrow's generation (48 bits): with `connection_id`, names this borrow and
    /// no later borrow of the connection (until 2^48 borrows of its slot) nor any
    /// borrow of another connection.
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
    // ---- version 2 (fields appended; a version-1 caller gets the fields above) ----
    /// Connections closed by the sweeper for being idle longer than `idle_timeout_ms`.
    pub evicted_idle: u64,
    /// Connections closed for being older than `max_connection_age_ms`.
    pub evicted_age: u64,
    /// Connections closed after failing health checks.
    pub evicted_health: u64,
    /// Reclaimed critical leaks, closed when their holder released them.
    pub evicted_reclaimed: u64,
    /// Connections removed by `heliosdb_pool_remove_connection` (now or on release).
    pub evicted_removed: u64,
    /// Health checks run (the `health_check` callback).
    pub health_checks: u64,
    /// Of those, the failures.
    pub health_failures: u64,
    /// Connections opened by the `connect` callback.
    pub factory_creates: u64,
    /// `connect` calls that failed.
    pub factory_errors: u64,
    /// Sweeper passes completed (background or `heliosdb_pool_sweep_now`).
    pub sweep_passes: u64,
    // ---- version 3 (fields appended; older callers get the fields above) ----
    /// Connections closed by `heliosdb_pool_discard`.
    pub evicted_discarded: u64,
    /// Connections taken out of the pool for good by their holder (Rust's `detach`).
    pub evicted_detached: u64,
    /// Connections closed on release because the `reset` callback returned false.
    pub evicted_reset_failed: u64,
    /// Connections closed by `heliosdb_pool_evict_all` / `heliosdb_pool_evict_user`
    /// (idle ones at once, leased ones on release).
    pub evicted_failover: u64,
    // ---- version 4 (fields appended; older callers get the fields above) ----
    /// Blocking acquires that found nothing idle and were served by their brief spin
    /// (a connection given back within about a microsecond, on another core) instead
    /// of queueing. Zero on a single core, where acquires never spin.
    pub spin_acquires: u64,
    /// Users retired so far: by the sweeper, after `retire_users_after_ms` without a
    /// connection, a waiter or a connection requested, or at once to make room for a
    /// new user at `max_users` (see `heliosdb_pool_config`).
    pub users_retired: u64,
    /// Connects running now (`connect` or `connect_with_metadata` calls, all users), at
    /// most `max_concurrent_connects`.
    pub connects_in_flight: usize,
}

/// The size of version 1 of `heliosdb_pool_stats` (before `evicted_idle`).
const STATS_V1_SIZE: usize = offset_of!(heliosdb_pool_stats, evicted_idle);
/// The size of version 2 of `heliosdb_pool_stats` (before `evicted_discarded`).
const STATS_V2_SIZE: usize = offset_of!(heliosdb_pool_stats, evicted_discarded);
/// The size of version 3 of `heliosdb_pool_stats` (before `spin_acquires`).
const STATS_V3_SIZE: usize = offset_of!(heliosdb_pool_stats, spin_acquires);

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
/// System calls: on Linux, the process's first call registers it for `membarrier(2)`
/// (`MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED`, Linux 4.14+; with other threads
/// running it may take the kernel a few milliseconds), and each `heliosdb_pool_free`
/// then makes one `membarrier` call, so that releases need no memory barrier of their
/// own. Where registration fails (an older kernel, a seccomp filter that returns an
/// error), releases use one fence each instead. A filter installed afterwards must
/// still allow `membarrier` (free falls back to `MEMBARRIER_CMD_GLOBAL`, then aborts
/// the process: without the barrier it could free memory a release is using), and a
/// filter that kills the process on unknown system calls must allow it from the start.
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
        // Not armed yet: if the build fails, dropping these frees nothing.
        let callbacks = Arc::new(Callbacks {
            close: config.close,
            user_data: config.user_data,
            user_data_free: config.user_data_free,
            armed: AtomicBool::new(false),
        });
        // Before the first pool exists: its releases' barrier depends on it.
        quiesce::init();
        let pool = build(&config, &callbacks)?;
        // Only now does the pool take `user_data`: `Callbacks::drop` frees it.
        callbacks.armed.store(true, Ordering::Relaxed);
        let handle = Box::new(heliosdb_pool {
            pool,
            callbacks,
            freed: AtomicBool::new(false),
            counted: AtomicBool::new(false),
            owners: AtomicUsize::new(0),
        });
        out.write(Box::into_raw(handle));
        Ok(())
    })
}

/// Builds the Rust pool of a C config, its callbacks installed as the builder's hooks.
fn build(
    config: &heliosdb_pool_config,
    callbacks: &Arc<Callbacks>,
) -> Result<EnhancedConnectionPool<CConnection>> {
    let mut builder = EnhancedConnectionPool::builder(config.settings())
        .min_idle(config.min_idle)
        .health_policy(config.health_policy())
        .validate_after(Duration::from_millis(config.validate_after_ms))
        .user_limits(config.user_limits())
        .fairness_bound(config.fairness_bound()?);
    if let Some(critical) = config.critical_threshold() {
        builder = builder.leak_critical_threshold(critical);
    }
    if let Some(interval) = config.sweep_interval() {
        builder = builder.sweep_interval(interval);
    }
    // SAFETY: the config's contract: `name` is NULL or a NUL-terminated string.
    if let Some(name) = unsafe { config.name() }? {
        builder = builder.name(name);
    }
    if let Some(check) = config.health_check {
        let cb = callbacks.clone();
        builder = builder.health_check(move |conn: &CConnection| {
            // SAFETY: the config's contract: `health_check(connection, user_data)` is
            // callable on any thread; the sweeper has reserved `conn` for the check.
            if unsafe { check(conn.raw, cb.user_data) } {
                Ok(())
            } else {
                Err(String::from("the health_check callback returned false"))
            }
        });
    }
    if let Some(reset) = config.reset {
        let cb = callbacks.clone();
        builder = builder.reset(move |conn: &mut CConnection| {
            // SAFETY: the config's contract: `reset(connection, user_data)` is callable
            // on any thread; the releasing thread still owns `conn` during the call.
            if unsafe { reset(conn.raw, cb.user_data) } {
                Ok(())
            } else {
                Err(String::from("the reset callback returned false"))
            }
        });
    }
    if let Some(on_evict) = config.on_evict {
        let cb = callbacks.clone();
        builder = builder.on_evict(move |evicted: &crate::Evicted<'_>| {
            // A Rust user name cannot hold a NUL: it came from a C string.
            let Ok(user) = CString::new(evicted.user) else {
                return;
            };
            // SAFETY: the config's contract: `on_evict(id, user, cause, user_data)` is
            // callable on any thread; both strings are NUL-terminated and outlive the
            // call.
            unsafe {
                on_evict(
                    evicted.connection_id.raw(),
                    user.as_ptr(),
                    evicted.cause.c_name().as_ptr(),
                    cb.user_data,
                )
            };
        });
    }
    if let Some(connect) = config.connect_with_metadata {
        let cb = callbacks.clone();
        builder = builder.connection_factory_with_metadata(move |user: &str| {
            let mut md = heliosdb_connection_metadata {
                struct_size: size_of::<heliosdb_connection_metadata>(),
                database: ptr::null(),
                protocol: ptr::null(),
                remote_addr: ptr::null(),
                tags: ptr::null(),
                tag_count: 0,
            };
            let conn = c_connect(&cb, user, |user, out| {
                // SAFETY: the config's contract: `connect_with_metadata(user, out, md,
                // user_data)` is callable on any thread; `user` is NUL-terminated and
                // outlives the call; `out` and `md` are valid out-pointers.
                unsafe { connect(user, out, &mut md, cb.user_data) }
            })?;
            // Copied now, as the callback type documents; a failure drops (closes) `conn`.
            // SAFETY: the callback's contract: what it stored in `md` is NULL or valid
            // strings (and a `tags` array of `tag_count` of them) until copied here.
            let metadata = unsafe { read_metadata(&md) }
                .map_err(|e| format!("the connect callback's metadata was refused: {e}"))?;
            Ok((conn, metadata))
        });
    } else if let Some(connect) = config.connect {
        let cb = callbacks.clone();
        builder = builder.connection_factory(move |user: &str| {
            c_connect(&cb, user, |user, out| {
                // SAFETY: the config's contract: `connect(user, out, user_data)` is
                // callable on any thread; `user` is NUL-terminated and outlives the
                // call; `out` is a valid out-pointer.
                unsafe { connect(user, out, cb.user_data) }
            })
        });
    }
    builder = builder.max_concurrent_connects(config.max_concurrent_connects);
    if let Some(on_leak) = config.on_leak {
        let cb = callbacks.clone();
        builder = builder.on_leak(move |report| deliver(on_leak, &cb, report));
    }
    if let Some(on_reclaim) = config.on_reclaim {
        let cb = callbacks.clone();
        builder = builder.on_reclaim(move |report| deliver(on_reclaim, &cb, report));
    }
    builder.build()
}

/// Runs a C connect callback through `call(user, out_connection)`: its status, its
/// connection and its reason (`heliosdb_callback_set_error`) as the factory's result.
fn c_connect(
    callbacks: &Arc<Callbacks>,
    user: &str,
    call: impl FnOnce(*const c_char, *mut *mut c_void) -> i32,
) -> std::result::Result<CConnection, String> {
    let user = CString::new(user).map_err(|e| e.to_string())?;
    let mut raw: *mut c_void = ptr::null_mut();
    // The callback may give its reason through `heliosdb_callback_set_error`.
    super::callback_error::clear();
    let rc = call(user.as_ptr(), &mut raw);
    let reason = super::callback_error::take();
    if rc != 0 {
        return Err(match reason {
            Some(reason) => format!("the connect callback failed ({rc}): {reason}"),
            None => format!("the connect callback returned {rc}"),
        });
    }
    if raw.is_null() {
        return Err(String::from(
            "the connect callback returned 0 but no connection",
        ));
    }
    Ok(CConnection {
        raw,
        callbacks: callbacks.clone(),
    })
}

/// Gives one report to a C leak callback. The core runs hooks inside `catch_unwind`,
/// and the C callback cannot unwind (an `extern "C"` function that tries aborts), so no
/// panic crosses a C frame.
fn deliver(
    f: unsafe extern "C" fn(*const heliosdb_leak_report, *mut c_void),
    callbacks: &Callbacks,
    report: &LeakReport,
) {
    let c = CReports::new(std::slice::from_ref(report), true);
    for r in c.reports() {
        // SAFETY: the config's contract: the callback is callable on any thread with a
        // report valid during the call; `c` owns every string `r` points to.
        unsafe { f(r, callbacks.user_data) }
    }
}

/// Frees a pool. NULL does nothing.
///
/// The pool is closed first: waiting acquires fail with `HELIOSDB_ERR_CLOSED`, idle
/// connections are closed now, and the sweeper thread is stopped (a pass in progress,
/// with its callbacks, finishes first; no sweeper callback runs afterwards), as are the
/// connector threads (a `connect` in progress finishes first, and its connection is
/// closed through `close`). Must not be
/// called from the pool's own callbacks. Leases still out stay valid: their connections
/// stay usable by their holders, and releasing them through this same pool pointer
/// (from any thread, also while this call runs) closes them. The pool's memory (and
/// `user_data`, through `user_data_free`) is reclaimed by whichever comes last: this
/// call, or the release of the last lease that was out. After that the pointer is
/// dangling.
///
/// # Safety
///
/// `pool` is NULL or a live pool that is not freed twice. No other call on this pool
/// but `heliosdb_pool_release` and `heliosdb_pool_discard` may run concurrently with
/// this one; after it returns only those two, on leases that were out, may be called
/// on it, once per lease.
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
        // SeqCst: free's half of the handshake (see `heliosdb_pool`), before the heavy
        // barrier that `wait_until_outside` begins with.
        p.freed.store(true, Ordering::SeqCst);
        let slab = &p.pool.inner.slab;
        // Releases that read `freed` before the store above finish on the normal path;
        // a release is a few atomics, plus a `close` callback if it closes. Its thread
        // is marked inside the pool, or (nested in another release) its slot is.
        quiesce::wait_until_outside(pool.cast(), quiesce::thread_marks, quiesce::own_mark());
        for (_, header) in slab.iter() {
            let backoff = crossbeam_utils::Backoff::new();
            while header.release_in_flight() {
                backoff.snooze();
            }
        }
        // Exact: no release is on the normal path now, and those on the counted path
        // wait for `counted` before ending their borrow, so every lease out is `InUse`.
        let out = slab
            .iter()
            .filter(|(_, h)| h.load_state(Ordering::Acquire).lifecycle() == Lifecycle::InUse)
            .count();
        p.owners.store(out + 1, Ordering::Relaxed);
        // Release: a counted release that sees this sees `owners`.
        p.counted.store(true, Ordering::Release);
        // SAFETY: free is one of the owners it counted, and is done with the pool.
        unsafe { leave(pool) };
    })
}

/// One owner of a freed pool leaves; the last reclaims it.
///
/// # Safety
///
/// `pool` was freed by `heliosdb_pool_free`, which counted the caller as an owner; the
/// caller calls this once, after its last use of the pool.
unsafe fn leave(pool: *mut heliosdb_pool) {
    // SAFETY: the pool is alive until its last owner leaves, and the caller is one.
    let p = unsafe { &*pool };
    // AcqRel: every other owner's uses of the pool happen before the reclaim.
    if p.owners.fetch_sub(1, Ordering::AcqRel) == 1 {
        // SAFETY: `pool` came from `Box::into_raw` in `heliosdb_pool_new`; it was freed
        // (so no new calls) and this was its last owner: nothing else uses it now.
        drop(unsafe { Box::from_raw(pool) });
    }
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
// Lazy error on purpose: see `boundary::check_ptr` (this runs on every `_at` acquire).
#[allow(clippy::unnecessary_lazy_evaluations)]
unsafe fn call_site(file: *const c_char, line: c_int, function: *const c_char) -> Result<CallSite> {
    let line = boundary::line_to_u32(line)?;
    // SAFETY: forwarded contract (string literals live for the whole program). Only the
    // pointers are kept: no `strlen` on the acquire path.
    let site = unsafe { CSite::new(file, line, function) };
    Ok(CallSite::C(
        site.ok_or_else(|| Error::NullArgument { argument: "file" })?,
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
    site: CallSite,
    how: impl for<'p> FnOnce(
        &'p EnhancedConnectionPool<CConnection>,
        &str,
        CallSite,
    ) -> Result<PooledConnection<'p, CConnection>>,
) -> std::result::Result<(), Failed> {
    // SAFETY: forwarded contract.
    let (p, out) = unsafe { (pool_ref(pool)?, check_out(out_lease, "out_lease")?) };
    // The steady state: this thread's last connection, for a user recognised without
    // strlen or UTF-8 validation (a byte match against a name that is valid UTF-8).
    let affine = if user.is_null() {
        None
    } else {
        // SAFETY: non-NULL, and NUL-terminated by the export's contract.
        unsafe { p.pool.take_affine_c(user, site) }
    };
    let guard = match affine {
        Some(guard) => guard,
        // SAFETY: forwarded contract.
        None => how(&p.pool, unsafe { check_str(user, "user")? }, site)?,
    };
    let connection = guard.raw;
    let raw = guard.into_raw_handle();
    out.write(heliosdb_lease {
        handle: raw.generation(),
        connection,
        connection_id: raw.connection_id().raw(),
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
    boundary::call_recorded(|| {
        // SAFETY: forwarded contract.
        unsafe {
            acquire_with(pool, user, out_lease, UNKNOWN_SITE, |p, user, site| {
                p.blocking_acquire_at(user, timeout_of(p, timeout_ms), site)
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
    boundary::call_recorded(|| {
        // SAFETY: forwarded contract.
        let site = unsafe { call_site(file, line, function) }?;
        // SAFETY: forwarded contract.
        unsafe {
            acquire_with(pool, user, out_lease, site, |p, user, site| {
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
    boundary::call_recorded(|| {
        // SAFETY: forwarded contract.
        unsafe {
            acquire_with(pool, user, out_lease, UNKNOWN_SITE, |p, user, site| {
                p.try_acquire_at(user, site)
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
    boundary::call_recorded(|| {
        // SAFETY: forwarded contract.
        let site = unsafe { call_site(file, line, function) }?;
        // SAFETY: forwarded contract.
        unsafe {
            acquire_with(pool, user, out_lease, site, |p, user, site| {
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
/// With a `reset` callback, it runs here first, on this thread (see
/// `heliosdb_reset_fn`); if it returns false the connection is closed instead, counted
/// as `evicted_reset_failed`, and the release still succeeds.
///
/// While `heliosdb_pool_free` runs and after it returns, the leases that were out are
/// still released here, each once; whichever leaves last (free or a release) reclaims
/// the pool's memory, after which `pool` is dangling. Only leases that were out may be
/// released then: a stale or doubled lease may find the memory gone.
///
/// # Safety
///
/// `pool` is NULL or live (or being freed, or freed, with this lease still out);
/// `lease` is NULL or readable.
///
/// Thread-safety: callable from any thread, concurrently with any call, including
/// `heliosdb_pool_free` for a lease that is out.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn heliosdb_pool_release(
    pool: *mut heliosdb_pool,
    lease: *const heliosdb_lease,
) -> Status {
    // SAFETY: the export's contract, which `end_lease` shares.
    boundary::call_recorded(|| unsafe { end_lease(pool, lease, LeaseEnd::Release) })
}

/// Ends a lease by closing its connection instead of returning it: for a connection
/// the caller knows is broken (a protocol error, a lost session, a transaction in an
/// unknown state). The connection is closed through `close` exactly once, on this
/// thread, before the call returns; it counts as `evicted_discarded` (Prometheus
/// `cause="discarded"`); its place is freed, and with a `connect` callback a caller
/// waiting for that user gets a new connection. The `reset` callback is not called.
///
/// The lease is checked as by `heliosdb_pool_release`, with the same errors, each of
/// which changes nothing: `HELIOSDB_ERR_FOREIGN_HANDLE`, `HELIOSDB_ERR_STALE_HANDLE`
/// (already released or discarded), `HELIOSDB_ERR_NULL_ARGUMENT`.
/// `HELIOSDB_ERR_RECLAIMED`: the borrow had been reclaimed as a critical leak; the
/// connection is closed now (counted as reclaimed) and the lease is ended. After
/// `heliosdb_pool_free`, leases that were out may be discarded instead of released,
/// with the same ownership rules.
///
/// # Safety
///
/// As `heliosdb_pool_release`.
///
/// Thread-safety: as `heliosdb_pool_release`; callable from the pool's callbacks for
/// another lease (the `close` callback excepted).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn heliosdb_pool_discard(
    pool: *mut heliosdb_pool,
    lease: *const heliosdb_lease,
) -> Status {
    // SAFETY: the export's contract, which `end_lease` shares.
    boundary::call_recorded(|| unsafe { end_lease(pool, lease, LeaseEnd::Discard) })
}

/// Declares that the borrow `lease` is expected to be held for `ms` milliseconds (a
/// long-running operation): its leak alert, critical and reclaim points all move `ms`
/// later, so it is neither reported nor reclaimed while within its declared time, and
/// is reported as usual once past it. A later call replaces the declaration (0
/// withdraws it); the next borrow of the connection starts with none. Values above
/// `UINT32_MAX` are capped there (about 49 days). Leak reports still show the real age.
/// Allocates nothing.
///
/// Errors (each changes nothing): `HELIOSDB_ERR_FOREIGN_HANDLE` for a lease of another
/// pool, `HELIOSDB_ERR_STALE_HANDLE` for a lease released already,
/// `HELIOSDB_ERR_RECLAIMED` for a borrow reclaimed already, `HELIOSDB_ERR_NULL_ARGUMENT`.
///
/// # Safety
///
/// `pool` is NULL or live, or freed with this lease still out (as for
/// `heliosdb_pool_release`); `lease` is NULL or readable, and the caller holds it: only
/// the lease's holder may call this (a call racing the lease's release could mark the
/// connection's next borrow).
///
/// Thread-safety: callable from any thread that holds the lease, concurrently with any
/// call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn heliosdb_pool_expect_hold(
    pool: *const heliosdb_pool,
    lease: *const heliosdb_lease,
    ms: u64,
) -> Status {
    boundary::call(|| {
        // SAFETY: the export's contract: `pool` stays allocated while this lease is out.
        let (p, lease) = unsafe { (pool_ref(pool)?, check_ptr(lease, "lease")?) };
        if !ptr::eq(lease.pool, pool) {
            return Err(Error::ForeignHandle);
        }
        let raw = RawHandle::from_parts(ConnectionId::from_raw(lease.connection_id), lease.handle);
        p.pool
            .expect_hold_raw_handle(raw, Duration::from_millis(ms))
    })
}

/// How [`end_lease`] ends a borrow: the two exports that end leases. A value rather
/// than a closure, so that the release's whole path is inlined into its export (a
/// closure or function item handed down was compiled as a call of its own).
#[derive(Clone, Copy)]
enum LeaseEnd {
    /// `heliosdb_pool_release`: back to the pool (through `reset`, if set).
    Release,
    /// `heliosdb_pool_discard`: closed instead.
    Discard,
}

impl LeaseEnd {
    /// Ends the borrow `handle`, whose slot's header is `header`.
    #[inline(always)]
    fn run(self, inner: &PoolInner<CConnection>, header: &SlotHeader, handle: Handle) -> Result<()> {
        match self {
            LeaseEnd::Release => inner.release_at(header, handle),
            LeaseEnd::Discard => inner.discard(handle),
        }
    }
}

/// The body of `heliosdb_pool_release` and `heliosdb_pool_discard`: checks the lease,
/// ends it with `end`, and takes part in the free handshake (see [`heliosdb_pool`]).
///
/// The core's raw-handle check finds the slot's header once, for itself and for the
/// end. The check may come before the handshake's mark: a lease that is out keeps the
/// pool's memory alive (it is one of its owners once freed), and the end's CAS at the
/// lease's generation validates it again after the mark.
///
/// # Safety
///
/// The two exports' contract on `pool` and `lease`.
#[inline(always)]
unsafe fn end_lease(
    pool: *mut heliosdb_pool,
    lease: *const heliosdb_lease,
    end: LeaseEnd,
) -> std::result::Result<(), Failed> {
    // SAFETY: forwarded contract.
    let (p, lease) = unsafe { (pool_ref(pool)?, check_ptr(lease, "lease")?) };
    if !ptr::eq(lease.pool, pool) {
        return Err(Error::ForeignHandle.into());
    }
    let raw = RawHandle::from_parts(ConnectionId::from_raw(lease.connection_id), lease.handle);
    let inner = &p.pool.inner;
    let (header, handle) = inner.borrow_of_raw(raw)?;
    // The release's half of the free handshake (see `heliosdb_pool`): the thread's mark,
    // unless the thread is inside another release already (this one runs from its
    // callback), or its thread-locals are being destroyed.
    let Some(mark) = quiesce::thread_mark().filter(|mark| mark.is_clear()) else {
        // SAFETY: forwarded contract.
        return unsafe { end_lease_nested(pool, handle, end) };
    };
    let inside = Inside::enter(mark, pool);
    // Relaxed: the mark's barrier orders this load after the mark (see `quiesce`).
    let freed = p.freed.load(Ordering::Relaxed);
    // SAFETY: forwarded contract; `header` is the checked lease's slot.
    unsafe { end_marked(pool, inside, freed, header, handle, end) }
}

/// The rest of [`end_lease`] once the release has taken its half of the free handshake
/// (`marked`: the thread's mark or the slot's count, dropped once the release is done
/// with the pool): the end on the normal path, or on the counted one if free came first
/// (`freed`, read after marking).
///
/// # Safety
///
/// As `end_lease`; `header` is the slot of the checked lease `handle`. A raw pointer:
/// `end_after_free` may reclaim the pool, and a reference argument would have to stay
/// valid for the whole call.
#[inline(always)]
unsafe fn end_marked(
    pool: *mut heliosdb_pool,
    marked: impl Sized,
    freed: bool,
    header: *const SlotHeader,
    handle: Handle,
    end: LeaseEnd,
) -> std::result::Result<(), Failed> {
    if freed {
        drop(marked);
        // SAFETY: forwarded contract; the lease passed the check.
        return unsafe { end_after_free(pool, handle, end) };
    }
    // SAFETY: not freed before the mark, so free waits for it: the pool and its slab
    // live while `marked` does.
    let (inner, header) = unsafe { (&(*pool).pool.inner, &*header) };
    let result = end.run(inner, header, handle);
    drop(marked);
    Ok(result?)
}

/// The calling thread inside a pool, for the free handshake; it leaves when dropped
/// (also on unwinding, so a panic cannot leave a mark that free would wait on).
struct Inside(&'static quiesce::Mark);

impl Inside {
    #[inline(always)]
    fn enter(mark: &'static quiesce::Mark, pool: *mut heliosdb_pool) -> Self {
        mark.enter(pool.cast_const().cast());
        Inside(mark)
    }
}

impl Drop for Inside {
    #[inline(always)]
    fn drop(&mut self) {
        self.0.leave();
    }
}

/// [`end_lease`] for a release whose thread's mark is taken (it runs from another
/// release's callback): the slot's in-flight count takes part in the handshake
/// instead. Out of line: rare. The slot's header is looked up here, not passed in: a
/// reference argument would have to stay valid for the whole call, and `end_marked`
/// may reclaim the pool (it takes the header as a raw pointer for that reason).
///
/// # Safety
///
/// As `end_lease`; `handle` is the checked lease's.
#[cold]
#[inline(never)]
unsafe fn end_lease_nested(
    pool: *mut heliosdb_pool,
    handle: Handle,
    end: LeaseEnd,
) -> std::result::Result<(), Failed> {
    // SAFETY: forwarded contract: the lease is out, so the pool's memory is alive.
    let p = unsafe { &*pool };
    let header = p.pool.inner.header_of(handle)?; // Never fails: the lease was checked.
    let in_flight = header.enter_release();
    // SeqCst: the count's side of the handshake (see `SlotHeader::enter_release`).
    let freed = p.freed.load(Ordering::SeqCst);
    // SAFETY: forwarded contract; `header` is the checked lease's slot.
    unsafe { end_marked(pool, in_flight, freed, header, handle, end) }
}

/// [`end_lease`] once the pool has been freed with leases out: this lease is one of the
/// pool's owners once free has counted them, so it waits for the count, ends the
/// borrow, and leaves. Out of line: the release's frame is then sized for its normal
/// path only.
///
/// # Safety
///
/// `pool` was freed by `heliosdb_pool_free` with the lease `handle` names still out,
/// and this is the lease's one end.
#[cold]
#[inline(never)]
unsafe fn end_after_free(
    pool: *mut heliosdb_pool,
    handle: Handle,
    end: LeaseEnd,
) -> std::result::Result<(), Failed> {
    // SAFETY: a lease that is out keeps the freed pool alive (see `heliosdb_pool_free`).
    let p = unsafe { &*pool };
    let backoff = crossbeam_utils::Backoff::new();
    while !p.counted.load(Ordering::Acquire) {
        backoff.snooze();
    }
    // The slot's header looked up here, not passed in: a reference argument would
    // have to stay valid for the whole call, and `leave` below may free the pool.
    let inner = &p.pool.inner;
    let header = inner.header_of(handle)?; // Never fails: the lease was checked.
    let result = end.run(inner, header, handle);
    if matches!(result, Ok(()) | Err(Error::Reclaimed { .. })) {
        // SAFETY: this lease was out when free counted its owners (it was `InUse`
        // until the end just above), and this is its only end.
        unsafe { leave(pool) };
    }
    Ok(result?)
}

/// Failover: takes every connection of the pool out of service, as after the database
/// failed over. Idle connections are closed now (through `close`, on this thread),
/// leased ones when they are released or discarded (their holders keep using them
/// meanwhile; nothing is closed under them); each counts as `evicted_failover`
/// (Prometheus `cause="failover"`). With a `connect` callback, callers waiting are
/// served by new connections, and `min_idle` is restored by the next sweeper pass.
/// `*out_count` (which may be NULL) is the number of connections evicted, closed now
/// or marked to close. A connection added while this runs may or may not be evicted.
///
/// Errors: `HELIOSDB_ERR_NULL_ARGUMENT` (`pool`).
///
/// # Safety
///
/// `pool` is NULL or live; `out_count` NULL or writable.
///
/// Thread-safety: callable concurrently with any call but `heliosdb_pool_free`, and
/// from the pool's callbacks (but `close`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn heliosdb_pool_evict_all(
    pool: *mut heliosdb_pool,
    out_count: *mut usize,
) -> Status {
    boundary::call(|| {
        // SAFETY: the export's contract.
        let (p, out) = unsafe { (pool_ref(pool)?, opt_out(out_count)) };
        let evicted = p.pool.evict_all();
        if let Some(out) = out {
            out.write(evicted);
        }
        Ok(())
    })
}

/// `heliosdb_pool_evict_all` for the connections of one `user` only.
///
/// Errors: `HELIOSDB_ERR_UNKNOWN_USER` (the pool never had a connection of `user`),
/// `HELIOSDB_ERR_NULL_ARGUMENT`, `HELIOSDB_ERR_INVALID_UTF8`; `*out_count` is written
/// on success only.
///
/// # Safety
///
/// `pool` is NULL or live; `user` NULL or NUL-terminated; `out_count` NULL or writable.
///
/// Thread-safety: as `heliosdb_pool_evict_all`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn heliosdb_pool_evict_user(
    pool: *mut heliosdb_pool,
    user: *const c_char,
    out_count: *mut usize,
) -> Status {
    boundary::call(|| {
        // SAFETY: the export's contract.
        let (p, user, out) = unsafe {
            (
                pool_ref(pool)?,
                check_str(user, "user")?,
                opt_out(out_count),
            )
        };
        let evicted = p.pool.evict_user(user)?;
        if let Some(out) = out {
            out.write(evicted);
        }
        Ok(())
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

/// For tests of generation wraparound: moves the borrow generation of the idle
/// connection `connection_id` forward by `by` (modulo 2^48), as if `by` borrows had
/// happened, without counting them in the statistics, so a test can bring a slot round
/// to the generation of an old lease in a few borrows. Serves no purpose in production.
///
/// Errors: `HELIOSDB_ERR_UNKNOWN_CONNECTION`; `HELIOSDB_ERR_INVALID_ARGUMENT` if the
/// connection is not idle; `HELIOSDB_ERR_NULL_ARGUMENT`.
///
/// # Safety
///
/// `pool` is NULL or live.
///
/// Thread-safety: callable concurrently with any call but `heliosdb_pool_free`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn heliosdb_pool_testing_advance_generation(
    pool: *mut heliosdb_pool,
    connection_id: u64,
    by: u64,
) -> Status {
    boundary::call(|| {
        // SAFETY: the export's contract.
        let p = unsafe { pool_ref(pool) }?;
        p.pool
            .testing_advance_generation(ConnectionId::from_raw(connection_id), by)
    })
}

/// Closes the pool: acquires and adds fail with `HELIOSDB_ERR_CLOSED` from now on,
/// waiters wake with it, idle connections are closed now and borrowed ones when
/// released. Idempotent. The pool must still be freed. A `connect` in progress is
/// waited for (outside a `connect` callback) and its connection closed through `close`.
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
/// caller sets to `sizeof(heliosdb_pool_stats)` first. A caller compiled against an
/// older header gets its version's fields and nothing past them; an unknown size is
/// `HELIOSDB_ERR_UNSUPPORTED_VERSION`. O(connections); allocates.
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
        if ![
            STATS_V1_SIZE,
            STATS_V2_SIZE,
            STATS_V3_SIZE,
            size_of::<heliosdb_pool_stats>(),
        ]
        .contains(&struct_size)
        {
            return Err(Error::UnsupportedVersion {
                what: "heliosdb_pool_stats.struct_size",
                found: boundary::usize_to_u64(struct_size),
            });
        }
        let s = p.pool.stats();
        let e = &s.evictions;
        let value = heliosdb_pool_stats {
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
            evicted_idle: e.idle,
            evicted_age: e.age,
            evicted_health: e.health,
            evicted_reclaimed: e.reclaimed,
            evicted_removed: e.removed,
            health_checks: s.health_checks,
            health_failures: s.health_failures,
            factory_creates: s.factory_creates,
            factory_errors: s.factory_errors,
            sweep_passes: s.sweep.passes,
            evicted_discarded: e.discarded,
            evicted_detached: e.detached,
            evicted_reset_failed: e.reset_failed,
            evicted_failover: e.failover,
            spin_acquires: s.spin_acquires,
            users_retired: s.users_retired,
            connects_in_flight: s.connects_in_flight,
        };
        out.write_prefix(value, struct_size);
        Ok(())
    })
}

thread_local! {
    /// The reports of this thread's last successful `heliosdb_pool_leaks`: the strings
    /// its output points to.
    static LAST_LEAKS: RefCell<Option<CReports>> = const { RefCell::new(None) };
}

/// Writes the pool's current leaks (borrows held past `leak_detection_threshold_ms`,
/// each at the level its age reaches now) into `out[0 .. *out_count]`, in no
/// particular order. Side-effect free: it neither reports nor counts (the sweeper's
/// `on_leak` does, once per level).
///
/// Size-query convention: if `capacity` is smaller than the number of leaks (e.g.
/// `out` NULL and `capacity` 0), the call returns `HELIOSDB_ERR_BUFFER_TOO_SMALL`,
/// writes the number needed to `*out_count` and nothing to `out`; call again with a
/// larger array (leaks may appear meanwhile, so allow some slack). With no leaks, a
/// NULL `out` and 0 `capacity` succeed with `*out_count` = 0. `*out_count` is
/// written on success and on `HELIOSDB_ERR_BUFFER_TOO_SMALL`, nothing on other
/// failures.
///
/// The reports' strings stay valid until the next successful `heliosdb_pool_leaks` on
/// the calling thread, or its exit (the call site pointers, which are the caller's own
/// `__FILE__` / `__func__`, stay valid as long as those strings). Copy what you keep.
///
/// Errors: `HELIOSDB_ERR_NULL_ARGUMENT` (`pool`, `out_count`, or `out` with a non-zero
/// `capacity`), `HELIOSDB_ERR_BUFFER_TOO_SMALL`.
///
/// # Safety
///
/// `pool` is NULL or live; `out` NULL or writable for `capacity` reports; `out_count`
/// NULL or writable.
///
/// Thread-safety: callable concurrently with any call but `heliosdb_pool_free`, and
/// from the pool's callbacks.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn heliosdb_pool_leaks(
    pool: *const heliosdb_pool,
    out: *mut heliosdb_leak_report,
    capacity: usize,
    out_count: *mut usize,
) -> Status {
    boundary::call(|| {
        // SAFETY: the export's contract.
        let (p, count) = unsafe { (pool_ref(pool)?, check_out(out_count, "out_count")?) };
        if out.is_null() && capacity > 0 {
            return Err(Error::NullArgument { argument: "out" });
        }
        let leaks = p.pool.leak_detector.check_leaks();
        if leaks.len() > capacity {
            count.write(leaks.len());
            return Err(Error::BufferTooSmall {
                needed: leaks.len(),
            });
        }
        let reports = CReports::new(&leaks, true);
        if !reports.reports().is_empty() {
            // SAFETY: `out` is non-NULL here (capacity >= len > 0) and writable for
            // `capacity >= len` reports by contract; the source is a distinct buffer.
            unsafe {
                ptr::copy_nonoverlapping(reports.reports().as_ptr(), out, reports.reports().len());
            }
        }
        count.write(reports.reports().len());
        // Keep the strings alive until the next successful call on this thread.
        LAST_LEAKS.with(|last| *last.borrow_mut() = Some(reports));
        Ok(())
    })
}

/// Calls `callback(report, user_data)` for each of the pool's current leaks (as
/// `heliosdb_pool_leaks` lists them), on the calling thread; the number of reports
/// goes to `*out_count` (which may be NULL). Each report and its strings are valid
/// during its call only.
///
/// The callback may call any function on this pool except `heliosdb_pool_free`; it
/// must not unwind.
///
/// # Safety
///
/// `pool` is NULL or live; `callback` NULL (an error) or a function as described;
/// `out_count` NULL or writable.
///
/// Thread-safety: callable concurrently with any call but `heliosdb_pool_free`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn heliosdb_pool_for_each_leak(
    pool: *const heliosdb_pool,
    callback: heliosdb_leak_fn,
    user_data: *mut c_void,
    out_count: *mut usize,
) -> Status {
    boundary::call(|| {
        // SAFETY: the export's contract.
        let (p, count) = unsafe { (pool_ref(pool)?, opt_out(out_count)) };
        let callback = callback.ok_or(Error::NullArgument {
            argument: "callback",
        })?;
        let leaks = p.pool.leak_detector.check_leaks();
        let reports = CReports::new(&leaks, true);
        for r in reports.reports() {
            // SAFETY: the export's contract on `callback`; `reports` owns the strings.
            unsafe { callback(r, user_data) }
        }
        if let Some(count) = count {
            count.write(reports.reports().len());
        }
        Ok(())
    })
}

/// Writes the pool's statistics in the Prometheus text exposition format
/// (`heliosdb_pool_*` families, labelled `pool="<config.name>"`), NUL-terminated, into
/// `buf`, and its size including the NUL to `*out_needed`.
///
/// Size-query convention: if `len` is smaller than needed (e.g. `buf` NULL and `len`
/// 0), the call returns `HELIOSDB_ERR_BUFFER_TOO_SMALL`, writes the size needed to
/// `*out_needed` and nothing to `buf`; call again with a buffer that large (the text
/// may grow meanwhile, so allow some slack). `*out_needed` is written on success and on
/// `HELIOSDB_ERR_BUFFER_TOO_SMALL`, nothing on other failures.
///
/// Errors: `HELIOSDB_ERR_NULL_ARGUMENT` (`pool`, `out_needed`, or `buf` with a non-zero
/// `len`), `HELIOSDB_ERR_BUFFER_TOO_SMALL`.
///
/// # Safety
///
/// `pool` is NULL or live; `buf` NULL or writable for `len` bytes; `out_needed` NULL or
/// writable.
///
/// Thread-safety: callable concurrently with any call but `heliosdb_pool_free`, and
/// from the pool's callbacks.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn heliosdb_pool_prometheus(
    pool: *const heliosdb_pool,
    buf: *mut c_char,
    len: usize,
    out_needed: *mut usize,
) -> Status {
    boundary::call(|| {
        // SAFETY: the export's contract.
        let (p, needed_out) = unsafe { (pool_ref(pool)?, check_out(out_needed, "out_needed")?) };
        if buf.is_null() && len > 0 {
            return Err(Error::NullArgument { argument: "buf" });
        }
        let text = p.pool.prometheus();
        // The text holds no NUL (names and labels come from C strings).
        let needed = text.len() + 1;
        if len < needed {
            needed_out.write(needed);
            return Err(Error::BufferTooSmall { needed });
        }
        // SAFETY: `buf` is non-NULL (len >= needed > 0) and writable for `len >= needed`
        // bytes by contract; the source is a distinct buffer.
        unsafe {
            ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), text.len());
            buf.add(text.len()).write(0);
        }
        needed_out.write(needed);
        Ok(())
    })
}

/// Runs one sweeper pass now, on the calling thread: leak reports and reclaim, idle and
/// age eviction, health checks, `connect` refills; the callbacks it triggers run on
/// this thread. Waits for a pass in progress on the sweeper thread. For tests and tools:
/// the background sweeper makes it unnecessary in production.
///
/// From the pool's own sweeper callbacks it fails with `HELIOSDB_ERR_REENTRANT` (the
/// pass in progress would wait for itself).
///
/// # Safety
///
/// `pool` is NULL or live.
///
/// Thread-safety: callable concurrently with any call but `heliosdb_pool_free`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn heliosdb_pool_sweep_now(pool: *const heliosdb_pool) -> Status {
    boundary::call(|| {
        // SAFETY: the export's contract.
        unsafe { pool_ref(pool) }?.pool.sweep_now()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffi::config::default_config;

    unsafe extern "C" fn close_nothing(_connection: *mut c_void, _user_data: *mut c_void) {}

    /// The version-4 counts through the C export are the Rust pool's: one user retired
    /// by the sweeper, and a spin count (which only a multi-core race produces, see
    /// `tests/fairness.rs`) set on the counter directly.
    #[test]
    fn version_4_fields_are_the_rust_counts() {
        let mut config = default_config();
        config.close = Some(close_nothing);
        config.retire_users_after_ms = 0;
        let mut pool = ptr::null_mut();
        // SAFETY: a valid config; `pool` is writable.
        assert_eq!(unsafe { heliosdb_pool_new(&config, &mut pool) }, Status::Ok);
        let mut id = 0;
        // The connection is never dereferenced: `close_nothing` ignores it.
        let connection = ptr::NonNull::<u8>::dangling().as_ptr().cast();
        // SAFETY: a live pool, a NUL-terminated user, a writable id.
        let added = unsafe {
            heliosdb_pool_add_connection(pool, connection, c"alice".as_ptr(), ptr::null(), &mut id)
        };
        assert_eq!(added, Status::Ok);
        // SAFETY: a live pool; an idle connection of it.
        let removed = unsafe { heliosdb_pool_remove_connection(pool, id, ptr::null_mut()) };
        assert_eq!(removed, Status::Ok);
        for _ in 0..2 {
            // SAFETY: a live pool. Two passes: alice seen vacant, then retired.
            assert_eq!(unsafe { heliosdb_pool_sweep_now(pool) }, Status::Ok);
        }
        // SAFETY: live until the free below.
        let rust = unsafe { &(*pool).pool };
        rust.inner
            .counters
            .spin_acquires
            .fetch_add(3, Ordering::Relaxed);

        let mut stats = heliosdb_pool_stats {
            struct_size: size_of::<heliosdb_pool_stats>(),
            ..Default::default()
        };
        // SAFETY: a live pool; a writable struct of the size it declares.
        assert_eq!(
            unsafe { heliosdb_pool_get_stats(pool, &mut stats) },
            Status::Ok
        );
        let expected = rust.stats();
        assert_eq!((expected.spin_acquires, expected.users_retired), (3, 1));
        assert_eq!(stats.spin_acquires, expected.spin_acquires);
        assert_eq!(stats.users_retired, expected.users_retired);
        assert_eq!(stats.connects_in_flight, expected.connects_in_flight);
        // SAFETY: live, no call in flight, no lease out.
        unsafe { heliosdb_pool_free(pool) };
    }
}

//! `heliosdb_pool_config`: the pool's settings and callbacks, versioned by its size.
//!
//! The struct mirrors [`EnhancedPoolConfig`] field for field and adds the callbacks.
//! Its first field is `struct_size`, which the init functions set to the size the
//! caller was compiled with; fields are only ever appended, so a library can tell an
//! older caller's struct from a newer one and never reads or writes past its end.

use std::ffi::{c_char, c_void};
use std::mem::{MaybeUninit, offset_of, size_of};
use std::time::Duration;

use crate::config::EnhancedPoolConfig;
use crate::error::{Error, Result, Status};
use crate::builder::UserLimits;
use crate::health::HealthMonitorConfig;

use super::boundary::{self, check_out, opt_str};
use super::leak::heliosdb_leak_report;

/// Closes a connection: called exactly once per connection the pool owns, when the
/// connection leaves the pool (removed, evicted, reclaimed, pool closed or freed).
///
/// Runs on whichever thread made the connection leave: the caller of
/// `heliosdb_pool_remove_connection`, `heliosdb_pool_close`, `heliosdb_pool_free`,
/// `heliosdb_pool_release`, `heliosdb_pool_discard`, `heliosdb_pool_evict_all` or
/// `heliosdb_pool_evict_user`, an acquiring thread (a connection that failed validation
/// on borrow), or the sweeper thread. It may run concurrently with
/// other callbacks and with calls on other threads. It must not call back into the
/// same pool, and must not unwind (no C++ exception may escape it).
pub type heliosdb_close_fn =
    Option<unsafe extern "C" fn(connection: *mut c_void, user_data: *mut c_void)>;

/// Health-checks an idle connection: return true if it is usable, false if not (a
/// failure; `unhealthy_after_failures` failures in a row evict the connection, which is
/// then closed through `close` and, with a `connect` callback, replaced).
///
/// Runs on the sweeper thread (or the caller of `heliosdb_pool_sweep_now`), every
/// `health_check_interval_ms` per idle connection, while `health_check_enabled`; and,
/// with validation on borrow (`validate_after_ms`, a version-4 config), on an acquiring
/// thread for a connection idle that long, where one failure closes it. Either way the
/// connection is reserved for the check: no borrower can have it meanwhile. Checks of
/// different connections may run at once (on the sweeper and acquiring threads): the
/// callback must be thread-safe. Re-entrancy: see `heliosdb_leak_fn`. Must not unwind.
pub type heliosdb_health_check_fn =
    Option<unsafe extern "C" fn(connection: *mut c_void, user_data: *mut c_void) -> bool>;

/// Opens a new connection for `user` (the connection factory): on success store it in
/// `*out_connection` and return 0 (`HELIOSDB_OK`). Any other return value, or a NULL
/// `*out_connection`, is a failure: the pool then ignores `*out_connection`, counts
/// the error (`factory_errors`), backs that user off alone (100 ms doubling to 10 s;
/// other users' connects go on), and a caller whose acquire times out meanwhile gets
/// `HELIOSDB_ERR_TIMEOUT` with the failure and the backoff in
/// `heliosdb_last_error_message()` ("the connect callback returned 7 (2 failures in a
/// row, next retry in 0.1 s)"; a callback that calls `heliosdb_callback_set_error("...")`
/// before it fails has its own message there: "the connect callback failed (7): ...").
///
/// Called when a caller waits for a user below `max_per_user` (any user name is then
/// accepted by acquire: its connections are opened on demand), to keep `min_idle` idle
/// connections per user, and to replace connections evicted by health checks or age
/// (a replacement nobody waits for is given up after three failures in a row). The new
/// connection is owned by the pool (closed through `close`); one made after
/// `heliosdb_pool_close` is closed through `close` at once, before `user_data_free`.
///
/// Runs on the pool's connector threads (`heliosdb-connect-<pool id>-<n>`, started on
/// demand, stopped and joined by `heliosdb_pool_close`/`heliosdb_pool_free`), up to
/// `max_concurrent_connects` calls at once (for different users or the same one: it
/// must be thread-safe), never on the sweeper or an acquiring thread. `user` is valid
/// during the call. Re-entrancy: see `heliosdb_leak_fn` (here `heliosdb_pool_sweep_now`
/// works too). Must not unwind.
pub type heliosdb_connect_fn = Option<
    unsafe extern "C" fn(
        user: *const c_char,
        out_connection: *mut *mut c_void,
        user_data: *mut c_void,
    ) -> i32,
>;

/// Opens a new connection for `user` and describes it (version 5): as
/// `heliosdb_connect_fn`, and on success the callback may also fill `*out_metadata`
/// (database, protocol, remote_addr, tags), which leak reports, `heliosdb_pool_leaks`
/// and statistics then show. The pool passes a zeroed struct with its `struct_size`
/// set; fields left NULL (and `tag_count` 0) stay empty.
///
/// Ownership of the strings (and the `tags` array) stored in `*out_metadata`: they stay
/// the callback's; the pool copies them right after the callback returns, on the same
/// thread, before it calls any callback again on that thread, and never frees them. So
/// they must outlive the callback's return: point them at static strings, at memory the
/// new connection owns (freed by your `close`), or at a thread-local buffer the next
/// call on the same thread may reuse; never at the callback's own stack, nor at one
/// buffer shared by concurrent calls. They are read only when the callback returns 0
/// with a connection; invalid UTF-8 there is a failed connect (the connection is then
/// closed through `close`).
pub type heliosdb_connect_with_metadata_fn = Option<
    unsafe extern "C" fn(
        user: *const c_char,
        out_connection: *mut *mut c_void,
        out_metadata: *mut super::pool::heliosdb_connection_metadata,
        user_data: *mut c_void,
    ) -> i32,
>;

/// Receives a leak report (`on_leak`: once per leaked borrow at each level, Alert then
/// Critical) or a reclaim notice (`on_reclaim`: a critically leaked borrow's capacity
/// was given back, `auto_cleanup_enabled`; its lease will be refused with
/// `HELIOSDB_ERR_RECLAIMED` and its connection closed when released). The report and
/// every string it points to are valid only during the call: copy what you keep.
///
/// Runs on the sweeper thread (or the caller of `heliosdb_pool_sweep_now`), concurrently
/// with calls on other threads, one sweeper callback at a time per pool.
///
/// Re-entrancy (for the sweeper callbacks `on_leak`, `on_reclaim`, `health_check`, and
/// for `connect`, which runs on the connector threads instead): they may call `heliosdb_pool_get_stats`, `heliosdb_pool_prometheus`,
/// `heliosdb_pool_leaks`, `heliosdb_pool_for_each_leak`, `heliosdb_pool_is_closed`,
/// `heliosdb_pool_try_acquire`, `heliosdb_pool_release`, `heliosdb_pool_add_connection`,
/// `heliosdb_pool_remove_connection` and `heliosdb_pool_close` on the same pool (a
/// close from a callback closes the pool; the sweeper thread ends after its pass).
/// `heliosdb_pool_sweep_now` fails with `HELIOSDB_ERR_REENTRANT` in a sweeper callback
/// (the pass in progress would wait for itself). They must not call `heliosdb_pool_free` (the pool
/// must outlive the callback that is running), and should not wait in
/// `heliosdb_pool_acquire` (that stalls the sweeper). Must not unwind (no C++ exception
/// or `longjmp` may leave a callback).
pub type heliosdb_leak_fn =
    Option<unsafe extern "C" fn(report: *const heliosdb_leak_report, user_data: *mut c_void)>;

/// Resets a connection its holder gives back, before the next borrower can have it
/// (roll back an open transaction, `DISCARD ALL`, clear session state): return true if
/// it is ready for reuse, false to have the pool close it instead (through `close`,
/// counted as `evicted_reset_failed`; with a `connect` callback, a caller waiting for
/// that user gets a new connection).
///
/// Runs on the thread that calls `heliosdb_pool_release` (or the C++ Lease's release or
/// destructor), inside that call and before it returns, while that thread still owns
/// the connection: no other thread can use it meanwhile. It delays the release by its
/// own duration. Not called by `heliosdb_pool_discard`, nor for a lease that closes on
/// release anyway (reclaimed, removed, aged, evicted by a failover, the pool closed or
/// freed), nor for a stale or foreign lease.
///
/// Re-entrancy: it may call any function on the same pool but `heliosdb_pool_free`
/// (the lease being released is not its to release or discard again). It should not
/// wait in `heliosdb_pool_acquire` for the same user: the connection being reset is
/// not idle yet. Must not unwind (no C++ exception or `longjmp` may leave it).
pub type heliosdb_reset_fn =
    Option<unsafe extern "C" fn(connection: *mut c_void, user_data: *mut c_void) -> bool>;

/// Told of a connection the pool closed by itself (after its `close`): for its idle
/// time (`cause` "idle"), its age ("age") or failed health checks ("health"), so the
/// service can add a fresh one (`heliosdb_pool_add_connection` may be called from it).
/// `connection_id` is the id `heliosdb_pool_add_connection` returned; `user` and
/// `cause` are NUL-terminated and valid during the call.
///
/// Setting it also lets the pool shrink by itself without `connect`: idle timeout and
/// max age close a connection only when the pool has a `connect` callback or an
/// `on_evict` callback. Without either, nothing could replace it, so nothing is closed
/// for idle time or age (an idle connection past its age is logged once and kept).
///
/// Runs on the sweeper thread (or the caller of `heliosdb_pool_sweep_now`), on the
/// thread that releases a leased connection past its age, or on an acquiring thread
/// whose connection failed validation on borrow; never once the pool is closed.
/// Re-entrancy: as `heliosdb_leak_fn`. Must not unwind.
pub type heliosdb_evict_fn = Option<
    unsafe extern "C" fn(
        connection_id: u64,
        user: *const c_char,
        cause: *const c_char,
        user_data: *mut c_void,
    ),
>;

/// Frees `user_data`: called exactly once, after the last callback, when the pool's
/// memory is reclaimed (by `heliosdb_pool_free`, or by the release of the last lease
/// outstanding when it was called). Not called if `heliosdb_pool_new` fails: the
/// caller then still owns `user_data`.
pub type heliosdb_user_data_free_fn = Option<unsafe extern "C" fn(user_data: *mut c_void)>;

/// The largest `max_connections` a pool accepts: slot ids have 24 bits, and a fifth of
/// them is kept as headroom for reclaimed borrows (which keep their slot until their
/// holder releases them).
pub const HELIOSDB_MAX_CONNECTIONS: usize = 13421772;
const _: () = assert!(HELIOSDB_MAX_CONNECTIONS == crate::config::MAX_SLOTS);

/// Settings of a pool, and its callbacks.
///
/// Always initialize it with `heliosdb_pool_config_init` (defaults) or a preset
/// (`heliosdb_pool_config_development`, `_staging`, `_production`), passing
/// `sizeof(heliosdb_pool_config)`, then change fields. Durations are milliseconds; a
/// zero `idle_timeout_ms` or `max_connection_age_ms` disables that eviction.
///
/// Thread-safety: plain data owned by the caller; `heliosdb_pool_new` copies it, so it
/// may be reused or discarded afterwards. Do not share one being modified.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct heliosdb_pool_config {
    /// `sizeof(heliosdb_pool_config)` as the caller was compiled; set by the init
    /// functions. A size this library does not know is `HELIOSDB_ERR_UNSUPPORTED_VERSION`.
    pub struct_size: usize,
    /// Capacity of the whole pool (1 .. `HELIOSDB_MAX_CONNECTIONS`); the slab is
    /// allocated once.
    pub max_connections: usize,
    /// Most connections one user may hold, idle plus borrowed (1 .. max_connections).
    pub max_per_user: usize,
    /// The pool's default acquire timeout (`HELIOSDB_TIMEOUT_DEFAULT`). 0: do not wait.
    pub acquire_timeout_ms: u64,
    /// An idle connection unused this long is closed by the sweeper (0: never).
    pub idle_timeout_ms: u64,
    /// A connection older than this is closed (0: never).
    pub max_connection_age_ms: u64,
    /// Whether the sweeper health-checks idle connections. Read as a byte: any
    /// non-zero value is true.
    pub health_check_enabled: bool,
    /// An idle connection not checked for this long is checked on the next sweep.
    pub health_check_interval_ms: u64,
    /// Whether borrows held too long are reported as leaks (non-zero: true).
    pub leak_detection_enabled: bool,
    /// A borrow held longer than this is reported as a leak.
    pub leak_detection_threshold_ms: u64,
    /// Whether the sweeper reclaims the capacity of critically leaked borrows (non-zero:
    /// true).
    pub auto_cleanup_enabled: bool,
    /// How often the sweeper runs idle/age eviction and reclaim.
    pub cleanup_interval_ms: u64,
    /// Closes a connection (nullable: then the pool just forgets it).
    pub close: heliosdb_close_fn,
    /// Health-checks an idle connection (nullable: no health checks).
    pub health_check: heliosdb_health_check_fn,
    /// Opens a connection for a user (nullable: the pool only has the connections added
    /// to it).
    pub connect: heliosdb_connect_fn,
    /// Receives leak reports (nullable).
    pub on_leak: heliosdb_leak_fn,
    /// Told when a leaked borrow is reclaimed (nullable).
    pub on_reclaim: heliosdb_leak_fn,
    /// Passed as the last argument of every callback; owned by the pool once
    /// `heliosdb_pool_new` succeeds.
    pub user_data: *mut c_void,
    /// Frees `user_data` exactly once (nullable).
    pub user_data_free: heliosdb_user_data_free_fn,
    // ---- version 2 (fields appended; a version-1 caller gets the defaults) ----
    /// Borrows held this long are reported at level Critical (and reclaimed when
    /// `auto_cleanup_enabled`); must exceed `leak_detection_threshold_ms`. 0: ten times
    /// `leak_detection_threshold_ms` (the default).
    pub leak_critical_threshold_ms: u64,
    /// Idle connections per user that idle eviction keeps and `connect` maintains
    /// (at most `max_per_user`). Default 0.
    pub min_idle: usize,
    /// How often the sweeper runs. 0 (the default): the smallest interval among the
    /// enabled features (a quarter of the leak threshold, the health-check interval,
    /// the cleanup interval).
    pub sweep_interval_ms: u64,
    /// Consecutive failed health checks that evict a connection (fewer make it
    /// Degraded). Default 3; must be at least 1.
    pub unhealthy_after_failures: u32,
    /// The pool's name: the `pool` label of its Prometheus metrics. NULL (the default):
    /// "default". NUL-terminated UTF-8, copied by `heliosdb_pool_new`.
    pub name: *const c_char,
    // ---- version 3 (fields appended; older callers get the defaults) ----
    /// Resets each connection when it is released, before it becomes idle (nullable:
    /// no reset, and release pays nothing for it). See `heliosdb_reset_fn`.
    pub reset: heliosdb_reset_fn,
    // ---- version 4 (fields appended; older callers get the defaults) ----
    /// Told of each connection the pool closed by itself (nullable); with it, idle and
    /// age eviction happen without `connect` too. See `heliosdb_evict_fn`.
    pub on_evict: heliosdb_evict_fn,
    /// Validation on borrow: with a `health_check` callback and `health_check_enabled`,
    /// a connection idle at least this long is checked by the acquiring thread before
    /// it is handed out; one that fails (once: not `unhealthy_after_failures` times) is
    /// closed (counted as `evicted_health`, told to `on_evict`, replaced by `connect`)
    /// and the next idle one is tried. Default 500 from the init functions; a caller
    /// compiled against an older header (a smaller `struct_size`) gets it off. 0 checks
    /// every borrow; `UINT64_MAX` (anything over 24 days) turns it off. A
    /// connection in steady use pays one compare on acquire; with validation on, a
    /// release also records its time (a coarse-clock read and a store).
    pub validate_after_ms: u64,
    // ---- version 5 (fields appended; older callers get the defaults) ----
    /// The most users the pool keeps at once (a user exists from its first connection,
    /// or with `connect` its first acquire, until it is retired). Beyond it, adding a
    /// connection or (with `connect`) acquiring for a new user fails with
    /// `HELIOSDB_ERR_TOO_MANY_USERS`. Bounds memory and metric series when user names
    /// come from outside. Default 1024; at least 1.
    pub max_users: usize,
    /// The longest user name accepted, in bytes: longer is
    /// `HELIOSDB_ERR_USER_NAME_TOO_LONG` (from add, and from acquires for users the pool
    /// does not have). Default 256; at least 1.
    pub max_user_name_len: usize,
    /// A user with no connection, no waiter and no connection requested for this long
    /// is retired by the sweeper: out of the stats and metrics, its memory reused for the
    /// next new user; a later acquire or add starts it afresh. Default 60000; 0: at the
    /// first pass that sees it vacant again; `UINT64_MAX`: never; otherwise under 2^31
    /// (24 days). At `max_users`, a new user first retires the users vacant at that
    /// moment, without waiting for this delay.
    pub retire_users_after_ms: u64,
    /// Most connect calls running at once, all users together (and most connector
    /// threads); at least 1. Default 4 (also for older callers). With 1, a slow
    /// connect delays every other one.
    pub max_concurrent_connects: usize,
    /// Opens a connection and returns its metadata (nullable); when set it is used
    /// instead of `connect`. See `heliosdb_connect_with_metadata_fn`.
    pub connect_with_metadata: heliosdb_connect_with_metadata_fn,
    /// Eventual fairness (microseconds): while no waiting caller has waited longer
    /// than this, a released connection may be taken by whoever asks first (the
    /// releasing thread included), so a busy pool does not wake a thread per borrow;
    /// past it, each release goes to the oldest waiter (strictly FIFO) until that
    /// waiter is served. 0: strictly FIFO at all times. Default 1000 (1 ms), also
    /// for a caller compiled against an older header; at most 1000000 (1 s), more is
    /// `HELIOSDB_ERR_INVALID_CONFIG`.
    pub fairness_bound_us: u64,
}

/// The size of version 1 of `heliosdb_pool_config` (before `leak_critical_threshold_ms`).
pub(crate) const CONFIG_V1_SIZE: usize =
    offset_of!(heliosdb_pool_config, leak_critical_threshold_ms);

/// The size of version 2 of `heliosdb_pool_config` (before `reset`).
pub(crate) const CONFIG_V2_SIZE: usize = offset_of!(heliosdb_pool_config, reset);

/// The size of version 3 of `heliosdb_pool_config` (before `on_evict`).
pub(crate) const CONFIG_V3_SIZE: usize = offset_of!(heliosdb_pool_config, on_evict);

/// The size of version 4 of `heliosdb_pool_config` (before `max_users`).
pub(crate) const CONFIG_V4_SIZE: usize = offset_of!(heliosdb_pool_config, max_users);

/// The sizes of every released version of `heliosdb_pool_config`, oldest first.
const KNOWN_SIZES: [usize; 5] = [
    CONFIG_V1_SIZE,
    CONFIG_V2_SIZE,
    CONFIG_V3_SIZE,
    CONFIG_V4_SIZE,
    size_of::<heliosdb_pool_config>(),
];

impl heliosdb_pool_config {
    /// A config holding `settings` and no callbacks.
    pub(crate) fn from_settings(settings: &EnhancedPoolConfig) -> Self {
        heliosdb_pool_config {
            struct_size: size_of::<heliosdb_pool_config>(),
            max_connections: settings.max_connections,
            max_per_user: settings.max_per_user,
            acquire_timeout_ms: settings.acquire_timeout_ms,
            idle_timeout_ms: settings.idle_timeout_ms,
            max_connection_age_ms: settings.max_connection_age_ms,
            health_check_enabled: settings.health_check_enabled,
            health_check_interval_ms: settings.health_check_interval_ms,
            leak_detection_enabled: settings.leak_detection_enabled,
            leak_detection_threshold_ms: settings.leak_detection_threshold_ms,
            auto_cleanup_enabled: settings.auto_cleanup_enabled,
            cleanup_interval_ms: settings.cleanup_interval_ms,
            close: None,
            health_check: None,
            connect: None,
            on_leak: None,
            on_reclaim: None,
            user_data: std::ptr::null_mut(),
            user_data_free: None,
            leak_critical_threshold_ms: 0,
            min_idle: 0,
            sweep_interval_ms: 0,
            unhealthy_after_failures: HealthMonitorConfig::default().unhealthy_after_failures,
            name: std::ptr::null(),
            reset: None,
            on_evict: None,
            validate_after_ms: crate::builder::DEFAULT_VALIDATE_AFTER.as_millis() as u64,
            max_users: crate::builder::DEFAULT_MAX_USERS,
            max_user_name_len: crate::builder::DEFAULT_MAX_USER_NAME_LEN,
            retire_users_after_ms: crate::builder::DEFAULT_RETIRE_USERS_AFTER.as_millis() as u64,
            max_concurrent_connects: crate::factory::DEFAULT_MAX_CONCURRENT_CONNECTS,
            connect_with_metadata: None,
            fairness_bound_us: crate::builder::DEFAULT_FAIRNESS_BOUND.as_micros() as u64,
        }
    }

    /// The limits on users (`UINT64_MAX` ms: never retire).
    pub(crate) fn user_limits(&self) -> UserLimits {
        UserLimits {
            max_users: self.max_users,
            max_name_len: self.max_user_name_len,
            retire_after: (self.retire_users_after_ms != u64::MAX)
                .then(|| Duration::from_millis(self.retire_users_after_ms)),
        }
    }

    /// The Rust settings of this config.
    pub(crate) fn settings(&self) -> EnhancedPoolConfig {
        EnhancedPoolConfig {
            max_connections: self.max_connections,
            max_per_user: self.max_per_user,
            acquire_timeout_ms: self.acquire_timeout_ms,
            idle_timeout_ms: self.idle_timeout_ms,
            max_connection_age_ms: self.max_connection_age_ms,
            health_check_enabled: self.health_check_enabled,
            health_check_interval_ms: self.health_check_interval_ms,
            leak_detection_enabled: self.leak_detection_enabled,
            leak_detection_threshold_ms: self.leak_detection_threshold_ms,
            auto_cleanup_enabled: self.auto_cleanup_enabled,
            cleanup_interval_ms: self.cleanup_interval_ms,
        }
    }

    /// The critical leak threshold, if set (0: the builder's default).
    pub(crate) fn critical_threshold(&self) -> Option<Duration> {
        (self.leak_critical_threshold_ms > 0)
            .then(|| Duration::from_millis(self.leak_critical_threshold_ms))
    }

    /// The sweeper interval, if set (0: the builder's default).
    pub(crate) fn sweep_interval(&self) -> Option<Duration> {
        (self.sweep_interval_ms > 0).then(|| Duration::from_millis(self.sweep_interval_ms))
    }

    /// The health policy: the defaults with this config's `unhealthy_after_failures`.
    pub(crate) fn health_policy(&self) -> HealthMonitorConfig {
        HealthMonitorConfig {
            unhealthy_after_failures: self.unhealthy_after_failures,
            ..HealthMonitorConfig::default()
        }
    }

    /// The fairness bound, checked against [`MAX_FAIRNESS_BOUND`] here: a C caller's
    /// microseconds could overflow a `Duration` conversion the builder never sees.
    ///
    /// [`MAX_FAIRNESS_BOUND`]: crate::builder::MAX_FAIRNESS_BOUND
    pub(crate) fn fairness_bound(&self) -> Result<Duration> {
        let bound = Duration::from_micros(self.fairness_bound_us);
        if bound > crate::builder::MAX_FAIRNESS_BOUND {
            return Err(Error::invalid_config(
                "fairness_bound_us",
                format!(
                    "{} exceeds the maximum of {} (1 s)",
                    self.fairness_bound_us,
                    crate::builder::MAX_FAIRNESS_BOUND.as_micros()
                ),
            ));
        }
        Ok(bound)
    }

    /// The pool name, copied out of `name` (NULL: none).
    ///
    /// # Safety
    ///
    /// `name` is NULL or a NUL-terminated string (the config's contract).
    pub(crate) unsafe fn name(&self) -> Result<Option<&str>> {
        // SAFETY: forwarded contract.
        unsafe { opt_str(self.name, "config.name") }
    }
}

fn check_size(struct_size: usize) -> Result<()> {
    if KNOWN_SIZES.contains(&struct_size) {
        Ok(())
    } else {
        Err(Error::UnsupportedVersion {
            what: "heliosdb_pool_config.struct_size",
            found: boundary::usize_to_u64(struct_size),
        })
    }
}

/// Reads a caller's config after checking its `struct_size`. An older (shorter)
/// version is read up to its size; the fields it lacks get their defaults.
///
/// # Safety
///
/// `config` is NULL or points to a readable `heliosdb_pool_config` prefix of at least
/// `struct_size` bytes, as the exports' contracts say.
pub(crate) unsafe fn read_config(
    config: *const heliosdb_pool_config,
) -> Result<heliosdb_pool_config> {
    if config.is_null() {
        return Err(Error::NullArgument { argument: "config" });
    }
    // Read the size field alone first: an older, shorter struct must not be read whole.
    // SAFETY: non-NULL and (by contract) points to at least the `struct_size` field,
    // which is first in every version.
    let struct_size = unsafe { config.cast::<usize>().read() };
    check_size(struct_size)?;
    let mut out = MaybeUninit::new(heliosdb_pool_config::from_settings(
        &EnhancedPoolConfig::default(),
    ));
    let base = out.as_mut_ptr().cast::<u8>();
    // SAFETY: the caller's struct is readable for `struct_size` bytes (a known size, at
    // most ours); `out` is a distinct local of our full size; the bytes copied are a
    // prefix of the same `repr(C)` layout. Nothing reads `out` as a typed value until
    // its flags are normalised below.
    unsafe { std::ptr::copy_nonoverlapping(config.cast::<u8>(), base, struct_size) };
    // A C caller may have stored any byte in a flag (C's `bool` is one byte, but a
    // memcpy, a union or a `char` field can put 2 there), and a Rust `bool` must be 0 or
    // 1: read each flag as a byte, non-zero meaning true.
    for offset in [
        offset_of!(heliosdb_pool_config, health_check_enabled),
        offset_of!(heliosdb_pool_config, leak_detection_enabled),
        offset_of!(heliosdb_pool_config, auto_cleanup_enabled),
    ] {
        // SAFETY: `offset` is a field of `out`, within its size; reading and writing
        // it as a `u8` is valid whatever byte it holds.
        unsafe {
            let flag = base.add(offset);
            flag.write(u8::from(flag.read() != 0));
        }
    }
    // SAFETY: every byte now holds a valid value of its field (the flags just fixed;
    // the other fields accept any bit pattern or kept our defaults).
    let mut out = unsafe { out.assume_init() };
    out.struct_size = struct_size;
    if struct_size <= offset_of!(heliosdb_pool_config, validate_after_ms) {
        // A caller built before validation on borrow existed: its health check was
        // documented to run on the sweeper thread only, so it is not called on acquiring
        // threads unless the caller asks (a version-4 struct).
        out.validate_after_ms = u64::MAX;
    }
    Ok(out)
}

/// The checks `PoolBuilder::build` makes beyond `EnhancedPoolConfig::validate`, so
/// `heliosdb_pool_config_validate` agrees with `heliosdb_pool_new` without building a
/// pool (which would allocate its slab and start a thread).
fn validate_tuning(config: &heliosdb_pool_config) -> Result<()> {
    let settings = config.settings();
    settings.validate()?;
    if let Some(critical) = config.critical_threshold() {
        // Checked whether or not leak detection is on now, as the builder does.
        settings.validate_leak_critical("leak_critical_threshold_ms", critical)?;
    }
    if config.min_idle > settings.max_per_user {
        return Err(Error::invalid_config(
            "min_idle",
            format!(
                "{} exceeds max_per_user ({})",
                config.min_idle, settings.max_per_user
            ),
        ));
    }
    config.health_policy().validate()?;
    config.user_limits().validate()?;
    crate::factory::check_connect_bound(config.max_concurrent_connects)?;
    config.fairness_bound()?;
    // SAFETY: the config's contract on `name`.
    unsafe { config.name() }?;
    Ok(())
}

/// The shared body of the config initializers (each runs it inside the boundary).
///
/// # Safety
///
/// The initializers' contract: `config` is NULL or writable for `struct_size` bytes.
unsafe fn init_with(
    config: *mut heliosdb_pool_config,
    struct_size: usize,
    settings: EnhancedPoolConfig,
) -> Result<()> {
    // SAFETY: forwarded contract: NULL or writable for `struct_size` bytes.
    let out = unsafe { check_out(config, "config") }?;
    check_size(struct_size)?;
    // Only the caller's version of the struct is written.
    let mut value = heliosdb_pool_config::from_settings(&settings);
    value.struct_size = struct_size;
    out.write_prefix(value, struct_size);
    Ok(())
}

/// Fills `*config` with the defaults: the values of the Rust
/// `EnhancedPoolConfig::default()` (see the README's configuration table), no
/// callbacks, and the extension fields at their documented defaults.
///
/// `struct_size` must be `sizeof(heliosdb_pool_config)` as the caller sees it; an
/// unknown size is `HELIOSDB_ERR_UNSUPPORTED_VERSION` and nothing is written. A caller
/// compiled against an older header gets its version of the struct, and no byte past
/// it is written.
///
/// # Safety
///
/// `config` is NULL (`HELIOSDB_ERR_NULL_ARGUMENT`) or writable for `struct_size` bytes.
///
/// Thread-safety: touches only `*config`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn heliosdb_pool_config_init(
    config: *mut heliosdb_pool_config,
    struct_size: usize,
) -> Status {
    // SAFETY: the export's contract, which `init_with` shares.
    boundary::call(|| unsafe { init_with(config, struct_size, EnhancedPoolConfig::default()) })
}

/// Fills `*config` with the development preset (100 connections, 10 per user, quick
/// leak reports) and no callbacks. As `heliosdb_pool_config_init` otherwise.
///
/// # Safety
///
/// As `heliosdb_pool_config_init`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn heliosdb_pool_config_development(
    config: *mut heliosdb_pool_config,
    struct_size: usize,
) -> Status {
    // SAFETY: the export's contract, which `init_with` shares.
    boundary::call(|| unsafe { init_with(config, struct_size, EnhancedPoolConfig::development()) })
}

/// Fills `*config` with the staging preset (1 000 connections, 50 per user) and no
/// callbacks. As `heliosdb_pool_config_init` otherwise.
///
/// # Safety
///
/// As `heliosdb_pool_config_init`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn heliosdb_pool_config_staging(
    config: *mut heliosdb_pool_config,
    struct_size: usize,
) -> Status {
    // SAFETY: the export's contract, which `init_with` shares.
    boundary::call(|| unsafe { init_with(config, struct_size, EnhancedPoolConfig::staging()) })
}

/// Fills `*config` with the production preset (10 000 connections, 100 per user,
/// patient timeouts) and no callbacks. As `heliosdb_pool_config_init` otherwise.
///
/// # Safety
///
/// As `heliosdb_pool_config_init`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn heliosdb_pool_config_production(
    config: *mut heliosdb_pool_config,
    struct_size: usize,
) -> Status {
    // SAFETY: the export's contract, which `init_with` shares.
    boundary::call(|| unsafe { init_with(config, struct_size, EnhancedPoolConfig::production()) })
}

/// Checks a config as `heliosdb_pool_new` would, without building a pool:
/// `HELIOSDB_ERR_UNSUPPORTED_VERSION` for an unknown `struct_size`,
/// `HELIOSDB_ERR_INVALID_CONFIG` (the last error message names the field) for a bad
/// value, `HELIOSDB_ERR_INVALID_UTF8` for a bad `name`.
///
/// # Safety
///
/// `config` is NULL or points to a config initialized by one of the init functions.
///
/// Thread-safety: reads `*config` only.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn heliosdb_pool_config_validate(
    config: *const heliosdb_pool_config,
) -> Status {
    boundary::call(|| {
        // SAFETY: forwarded contract.
        let config = unsafe { read_config(config) }?;
        validate_tuning(&config)
    })
}

/// A full-size configuration with its defaults, as `heliosdb_pool_config_init` gives a
/// current caller: for the unit tests of the C boundary.
#[cfg(test)]
pub(crate) fn default_config() -> heliosdb_pool_config {
    let mut config = MaybeUninit::<heliosdb_pool_config>::uninit();
    // SAFETY: a writable struct of the full size.
    let status = unsafe {
        heliosdb_pool_config_init(config.as_mut_ptr(), size_of::<heliosdb_pool_config>())
    };
    assert_eq!(status, Status::Ok);
    // SAFETY: initialised by the call above.
    unsafe { config.assume_init() }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A caller compiled before validation on borrow existed must not have its health
    /// check called on acquiring threads; a current caller gets the documented default.
    #[test]
    fn older_configs_get_validation_on_borrow_off() {
        let mut config = default_config();
        for (size, expected) in [
            (CONFIG_V1_SIZE, u64::MAX),
            (CONFIG_V2_SIZE, u64::MAX),
            (CONFIG_V3_SIZE, u64::MAX),
            (CONFIG_V4_SIZE, 500),
            (size_of::<heliosdb_pool_config>(), 500),
        ] {
            config.struct_size = size;
            // SAFETY: `config` is a full, initialised struct; `size` is at most its size.
            let read = unsafe { read_config(&config) }.unwrap();
            assert_eq!(read.validate_after_ms, expected, "struct_size {size}");
        }
    }

    /// A version-4 caller's struct ends before the user limits: whatever lies beyond it
    /// is not read, and the pool gets the documented defaults.
    #[test]
    fn older_configs_get_the_default_user_limits() {
        let mut config = heliosdb_pool_config::from_settings(&EnhancedPoolConfig::default());
        (config.max_users, config.max_user_name_len) = (0, 0); // Invalid if read.
        config.retire_users_after_ms = 7;
        config.struct_size = CONFIG_V4_SIZE;
        // SAFETY: a full, initialised struct; the size is at most its size.
        let read = unsafe { read_config(&config) }.unwrap();
        assert_eq!(read.user_limits(), UserLimits::default());
        assert_eq!(validate_tuning(&read), Ok(()));
        config.struct_size = size_of::<heliosdb_pool_config>();
        // SAFETY: as above.
        let read = unsafe { read_config(&config) }.unwrap();
        assert!(matches!(
            validate_tuning(&read),
            Err(Error::InvalidConfig {
                field: "max_users",
                ..
            })
        ));
        config.retire_users_after_ms = u64::MAX;
        assert_eq!(config.user_limits().retire_after, None, "UINT64_MAX: never");
    }

    #[test]
    fn presets_round_trip_and_validate() {
        let presets: [(
            unsafe extern "C" fn(*mut heliosdb_pool_config, usize) -> Status,
            _,
        ); 4] = [
            (heliosdb_pool_config_init, EnhancedPoolConfig::default()),
            (
                heliosdb_pool_config_development,
                EnhancedPoolConfig::development(),
            ),
            (heliosdb_pool_config_staging, EnhancedPoolConfig::staging()),
            (
                heliosdb_pool_config_production,
                EnhancedPoolConfig::production(),
            ),
        ];
        for (init, expected) in presets {
            let mut cfg = MaybeUninit::<heliosdb_pool_config>::uninit();
            // SAFETY: a writable config of the right size.
            let status = unsafe { init(cfg.as_mut_ptr(), size_of::<heliosdb_pool_config>()) };
            assert_eq!(status, Status::Ok);
            // SAFETY: initialized by the successful call.
            let cfg = unsafe { cfg.assume_init() };
            assert_eq!(cfg.settings(), expected);
            // SAFETY: a valid config.
            assert_eq!(unsafe { heliosdb_pool_config_validate(&cfg) }, Status::Ok);
        }
    }

    #[test]
    fn an_unknown_size_writes_nothing() {
        let mut cfg = heliosdb_pool_config::from_settings(&EnhancedPoolConfig::default());
        cfg.max_connections = 7;
        // SAFETY: writable; the size check fails before any write.
        let status = unsafe { heliosdb_pool_config_init(&mut cfg, 8) };
        assert_eq!(status, Status::UnsupportedVersion);
        assert_eq!(cfg.max_connections, 7);
        cfg.struct_size = 9999;
        // SAFETY: readable config.
        assert_eq!(
            unsafe { heliosdb_pool_config_validate(&cfg) },
            Status::UnsupportedVersion
        );
    }
}

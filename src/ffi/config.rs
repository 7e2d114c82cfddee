//! `heliosdb_pool_config`: the pool's settings and callbacks, versioned by its size.
//!
//! The struct mirrors [`EnhancedPoolConfig`] field for field and adds the callbacks.
//! Its first field is `struct_size`, which the init functions set to the size the
//! caller was compiled with; fields are only ever appended, so a library can tell an
//! older caller's struct from a newer one and never reads or writes past its end.

use std::ffi::{c_char, c_void};
use std::mem::size_of;

use crate::config::EnhancedPoolConfig;
use crate::error::{Error, Result, Status};

use super::boundary::{self, check_out, check_ptr};
use super::pool::heliosdb_leak_report;

/// Closes a connection: called exactly once per connection the pool owns, when the
/// connection leaves the pool (removed, evicted, reclaimed, pool closed or freed).
///
/// Runs on whichever thread made the connection leave: the caller of
/// `heliosdb_pool_remove_connection`, `heliosdb_pool_close`, `heliosdb_pool_free` or
/// `heliosdb_pool_release`, or the sweeper thread. It may run concurrently with
/// other callbacks and with calls on other threads. It must not call back into the
/// same pool, and must not unwind (no C++ exception may escape it).
pub type heliosdb_close_fn =
    Option<unsafe extern "C" fn(connection: *mut c_void, user_data: *mut c_void)>;

/// Health-checks an idle connection: return true if it is usable. Not invoked yet by
/// this version (it is wired to the sweeper's health check when that lands); it will
/// run on the sweeper thread, concurrently with calls on other threads, and must not
/// call back into the same pool or unwind.
pub type heliosdb_health_check_fn =
    Option<unsafe extern "C" fn(connection: *mut c_void, user_data: *mut c_void) -> bool>;

/// Opens a new connection for `user` (the connection factory): on success store it in
/// `*out_connection` and return `HELIOSDB_OK` (0); any other value is a failure. Not
/// invoked yet by this version (wired when the pool learns to grow on demand); it will
/// run on a thread calling acquire, concurrently with other calls, and must not call
/// back into the same pool or unwind.
pub type heliosdb_connect_fn = Option<
    unsafe extern "C" fn(
        user: *const c_char,
        out_connection: *mut *mut c_void,
        user_data: *mut c_void,
    ) -> i32,
>;

/// Receives a leak report (`on_leak`) or a reclaim notice (`on_reclaim`). The report
/// and its strings are valid only during the call. Not invoked yet by this version
/// (wired to the sweeper when it lands); it will run on the sweeper thread and must
/// not call back into the same pool or unwind.
pub type heliosdb_leak_fn =
    Option<unsafe extern "C" fn(report: *const heliosdb_leak_report, user_data: *mut c_void)>;

/// Frees `user_data`: called exactly once, after the last callback, when the pool's
/// memory is reclaimed (by `heliosdb_pool_free`, or by the release of the last lease
/// outstanding when it was called). Not called if `heliosdb_pool_new` fails: the
/// caller then still owns `user_data`.
pub type heliosdb_user_data_free_fn = Option<unsafe extern "C" fn(user_data: *mut c_void)>;

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
    /// Capacity of the whole pool (1 .. 16M); the slab is allocated once.
    pub max_connections: usize,
    /// Most connections one user may hold, idle plus borrowed (1 .. max_connections).
    pub max_per_user: usize,
    /// The pool's default acquire timeout (`HELIOSDB_TIMEOUT_DEFAULT`). 0: do not wait.
    pub acquire_timeout_ms: u64,
    /// An idle connection unused this long is closed by the sweeper (0: never).
    pub idle_timeout_ms: u64,
    /// A connection older than this is closed (0: never).
    pub max_connection_age_ms: u64,
    /// Whether the sweeper health-checks idle connections.
    pub health_check_enabled: bool,
    /// An idle connection not checked for this long is checked on the next sweep.
    pub health_check_interval_ms: u64,
    /// Whether borrows held too long are reported as leaks.
    pub leak_detection_enabled: bool,
    /// A borrow held longer than this is reported as a leak.
    pub leak_detection_threshold_ms: u64,
    /// Whether the sweeper reclaims the capacity of critically leaked borrows.
    pub auto_cleanup_enabled: bool,
    /// How often the sweeper runs idle/age eviction and reclaim.
    pub cleanup_interval_ms: u64,
    /// Closes a connection (nullable: then the pool just forgets it).
    pub close: heliosdb_close_fn,
    /// Health-checks an idle connection (nullable). Not invoked yet by this version.
    pub health_check: heliosdb_health_check_fn,
    /// Opens a connection for a user (nullable). Not invoked yet by this version.
    pub connect: heliosdb_connect_fn,
    /// Receives leak reports (nullable). Not invoked yet by this version.
    pub on_leak: heliosdb_leak_fn,
    /// Told when a leaked borrow is reclaimed (nullable). Not invoked yet by this
    /// version.
    pub on_reclaim: heliosdb_leak_fn,
    /// Passed as the last argument of every callback; owned by the pool once
    /// `heliosdb_pool_new` succeeds.
    pub user_data: *mut c_void,
    /// Frees `user_data` exactly once (nullable).
    pub user_data_free: heliosdb_user_data_free_fn,
}

/// The sizes of every released version of `heliosdb_pool_config`, oldest first.
const KNOWN_SIZES: [usize; 1] = [size_of::<heliosdb_pool_config>()];

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

/// Reads a caller's config after checking its `struct_size`.
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
    // SAFETY: the size is this version's, so the whole struct is readable.
    let config = unsafe { check_ptr(config, "config") }?;
    Ok(*config)
}

fn init_with(
    config: *mut heliosdb_pool_config,
    struct_size: usize,
    settings: EnhancedPoolConfig,
) -> Status {
    boundary::call(|| {
        // SAFETY: the export's contract: NULL or writable for `struct_size` bytes.
        let out = unsafe { check_out(config, "config") }?;
        check_size(struct_size)?;
        out.write(heliosdb_pool_config::from_settings(&settings));
        Ok(())
    })
}

/// Fills `*config` with the defaults: the development preset's sizes and timeouts,
/// leak detection on at a 30 s threshold, `auto_cleanup_enabled` off, no callbacks.
///
/// `struct_size` must be `sizeof(heliosdb_pool_config)` as the caller sees it; an
/// unknown size is `HELIOSDB_ERR_UNSUPPORTED_VERSION` and nothing is written.
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
    init_with(config, struct_size, EnhancedPoolConfig::default())
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
    init_with(config, struct_size, EnhancedPoolConfig::development())
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
    init_with(config, struct_size, EnhancedPoolConfig::staging())
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
    init_with(config, struct_size, EnhancedPoolConfig::production())
}

/// Checks a config as `heliosdb_pool_new` would, without building a pool:
/// `HELIOSDB_ERR_UNSUPPORTED_VERSION` for an unknown `struct_size`,
/// `HELIOSDB_ERR_INVALID_CONFIG` (the last error message names the field) for a bad
/// value.
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
        config.settings().validate()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::MaybeUninit;

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

//! `heliosdb_health_monitor`: the standalone [`EnhancedHealthMonitor`] from C. A thin
//! wrapper: every function forwards to one monitor method; a C check function becomes
//! a [`HealthCheck`].

use std::ffi::{c_char, c_void};
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::error::{Error, Result, Status};
use crate::health::{
    ConnectionHealth, EnhancedHealthMonitor, HealthCheck, HealthMonitorConfig, HealthStatus,
};
use crate::leak::LeakDetector;

use super::boundary::{self, check_out, check_ptr, check_str, opt_out};
use super::config::{heliosdb_health_check_fn, heliosdb_user_data_free_fn};
use super::detector::heliosdb_leak_detector;

/// A connection's health: the last check succeeded in time (or none ran yet).
pub const HELIOSDB_HEALTH_HEALTHY: i32 = 0;
/// A connection's health: the last check failed or was slow, but fewer than
/// `unhealthy_after_failures` failed in a row.
pub const HELIOSDB_HEALTH_DEGRADED: i32 = 1;
/// A connection's health: `unhealthy_after_failures` checks in a row failed.
pub const HELIOSDB_HEALTH_UNHEALTHY: i32 = 2;

/// A standalone health monitor: checks registered connections on demand and, once
/// started, on a background thread. Create with `heliosdb_health_monitor_new`, destroy
/// with `heliosdb_health_monitor_free`.
///
/// Thread-safety: every function may be called from any number of threads at once,
/// except `heliosdb_health_monitor_free`, which must not run concurrently with another
/// call on the same monitor, nor from a check function.
pub struct heliosdb_health_monitor {
    inner: EnhancedHealthMonitor,
}

/// A monitored C connection: its check function, and the release that runs when the
/// monitor no longer needs it.
struct CCheck {
    connection: *mut c_void,
    check: unsafe extern "C" fn(*mut c_void, *mut c_void) -> bool,
    user_data: *mut c_void,
    release: heliosdb_user_data_free_fn,
}

// SAFETY: `heliosdb_health_monitor_monitor`'s contract: the check function may be
// called from any thread (the background thread and callers of check), concurrently,
// with these pointers; the monitor never dereferences them itself.
unsafe impl Send for CCheck {}
// SAFETY: as above.
unsafe impl Sync for CCheck {}

impl HealthCheck for CCheck {
    fn health_check(&self) -> std::result::Result<(), String> {
        // SAFETY: the monitor contract above; a C function cannot unwind into Rust.
        if unsafe { (self.check)(self.connection, self.user_data) } {
            Ok(())
        } else {
            Err(String::from("the check function returned false"))
        }
    }
}

impl Drop for CCheck {
    fn drop(&mut self) {
        if let Some(release) = self.release {
            // SAFETY: the monitor contract: `release(user_data)` is called once, after
            // the last check of this connection (this is the last owner).
            unsafe { release(self.user_data) }
        }
    }
}

/// Runs a future that never waits (the monitor's async methods complete on first poll).
fn now<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(value) = future.as_mut().poll(&mut cx) {
            return value;
        }
        std::thread::yield_now();
    }
}

fn c_status(status: HealthStatus) -> i32 {
    match status {
        HealthStatus::Healthy => HELIOSDB_HEALTH_HEALTHY,
        HealthStatus::Degraded => HELIOSDB_HEALTH_DEGRADED,
        HealthStatus::Unhealthy => HELIOSDB_HEALTH_UNHEALTHY,
    }
}

/// The monitor behind a non-NULL handle.
///
/// # Safety
///
/// `monitor` is NULL or live.
unsafe fn monitor_ref<'a>(
    monitor: *const heliosdb_health_monitor,
) -> Result<&'a EnhancedHealthMonitor> {
    // SAFETY: forwarded contract.
    unsafe { check_ptr(monitor, "monitor") }.map(|m| &m.inner)
}

/// Creates a monitor. `detector` (may be NULL: a private one with the defaults) tells
/// whether a connection is leaked, by its id; the monitor keeps it alive. The
/// background thread, once started, checks every connection each `check_interval_ms`;
/// a successful check slower than `slow_check_ms` makes it Degraded;
/// `unhealthy_after_failures` failures in a row make it Unhealthy. 0 for any of the
/// three: its default (30 000 ms, 1 000 ms, 3). Starts no thread.
///
/// # Safety
///
/// `detector` NULL or live; `out_monitor` NULL (an error) or writable.
///
/// Thread-safety: callable from any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn heliosdb_health_monitor_new(
    detector: *const heliosdb_leak_detector,
    check_interval_ms: u64,
    slow_check_ms: u64,
    unhealthy_after_failures: u32,
    out_monitor: *mut *mut heliosdb_health_monitor,
) -> Status {
    boundary::call(|| {
        // SAFETY: the export's contract.
        let out = unsafe { check_out(out_monitor, "out_monitor") }?;
        let detector = if detector.is_null() {
            Arc::new(LeakDetector::new())
        } else {
            // SAFETY: non-NULL and live by contract.
            unsafe { &*detector }.inner.clone()
        };
        let defaults = HealthMonitorConfig::default();
        let ms = |v: u64, default: Duration| {
            if v == 0 {
                default
            } else {
                Duration::from_millis(v)
            }
        };
        let config = HealthMonitorConfig {
            check_interval: ms(check_interval_ms, defaults.check_interval),
            slow_check_threshold: ms(slow_check_ms, defaults.slow_check_threshold),
            unhealthy_after_failures: if unhealthy_after_failures == 0 {
                defaults.unhealthy_after_failures
            } else {
                unhealthy_after_failures
            },
        };
        let inner = EnhancedHealthMonitor::try_new(config, detector)?;
        out.write(Box::into_raw(Box::new(heliosdb_health_monitor { inner })));
        Ok(())
    })
}

/// Frees a monitor (NULL does nothing): stops the background thread (waiting for the
/// check in progress) and releases every monitored connection (their `release`
/// functions run before this returns).
///
/// # Safety
///
/// `monitor` is NULL or live, not freed twice, with no call on it running, and not
/// called from a check function.
///
/// Thread-safety: see `heliosdb_health_monitor`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn heliosdb_health_monitor_free(monitor: *mut heliosdb_health_monitor) {
    boundary::call_or((), || {
        if !monitor.is_null() {
            // SAFETY: from `Box::into_raw` in `heliosdb_health_monitor_new`, freed once.
            drop(unsafe { Box::from_raw(monitor) });
        }
    })
}

/// Monitors `connection` as `id` (replacing any connection monitored under that id,
/// with a fresh record). `check(connection, user_data)` returns true when the
/// connection is usable; it runs on the background thread and on the callers of
/// `heliosdb_health_monitor_check`, possibly concurrently, and must not unwind.
/// `release(user_data)` (may be NULL) is called exactly once when the monitor no
/// longer uses the connection: after it is unmonitored or replaced and any check in
/// progress on it ended, or when the monitor is freed. On failure nothing is kept and
/// `release` is not called.
///
/// # Safety
///
/// `monitor` NULL or live; `id` NULL or NUL-terminated; `check` NULL (an error) or a
/// function as described, callable with `connection` and `user_data` until `release`.
///
/// Thread-safety: see `heliosdb_health_monitor`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn heliosdb_health_monitor_monitor(
    monitor: *const heliosdb_health_monitor,
    id: *const c_char,
    connection: *mut c_void,
    check: heliosdb_health_check_fn,
    user_data: *mut c_void,
    release: heliosdb_user_data_free_fn,
) -> Status {
    boundary::call(|| {
        // SAFETY: the export's contract.
        let (m, id) = unsafe { (monitor_ref(monitor)?, check_str(id, "id")?) };
        let check = check.ok_or(Error::NullArgument { argument: "check" })?;
        let conn = Arc::new(CCheck {
            connection,
            check,
            user_data,
            release,
        });
        now(m.monitor_connection(id.to_owned(), conn));
        Ok(())
    })
}

/// Stops monitoring `id`; whether it was monitored goes to `*out_was_monitored` (may
/// be NULL). Its `release` runs now, or when a check in progress on it ends.
///
/// # Safety
///
/// `monitor` NULL or live; `id` NULL or NUL-terminated; `out_was_monitored` NULL or
/// writable.
///
/// Thread-safety: see `heliosdb_health_monitor`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn heliosdb_health_monitor_unmonitor(
    monitor: *const heliosdb_health_monitor,
    id: *const c_char,
    out_was_monitored: *mut bool,
) -> Status {
    boundary::call(|| {
        // SAFETY: the export's contract.
        let (m, id, out) = unsafe {
            (
                monitor_ref(monitor)?,
                check_str(id, "id")?,
                opt_out(out_was_monitored),
            )
        };
        let was = m.unmonitor_connection(id);
        if let Some(out) = out {
            out.write(was);
        }
        Ok(())
    })
}

fn write_health(
    health: &ConnectionHealth,
    status: super::boundary::Out<i32>,
    leaked: Option<super::boundary::Out<bool>>,
) {
    status.write(c_status(health.status));
    if let Some(leaked) = leaked {
        leaked.write(health.is_leaked);
    }
}

/// Checks `id` now, on the calling thread, and writes its health
/// (`HELIOSDB_HEALTH_*`) to `*out_status` and whether the detector sees it leaked to
/// `*out_leaked` (may be NULL).
///
/// Errors: `HELIOSDB_ERR_UNKNOWN_RESOURCE` (not monitored), `HELIOSDB_ERR_NULL_ARGUMENT`,
/// `HELIOSDB_ERR_INVALID_UTF8`.
///
/// # Safety
///
/// `monitor` NULL or live; `id` NULL or NUL-terminated; `out_status` NULL (an error) or
/// writable; `out_leaked` NULL or writable.
///
/// Thread-safety: see `heliosdb_health_monitor`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn heliosdb_health_monitor_check(
    monitor: *const heliosdb_health_monitor,
    id: *const c_char,
    out_status: *mut i32,
    out_leaked: *mut bool,
) -> Status {
    boundary::call(|| {
        // SAFETY: the export's contract.
        let (m, id, status, leaked) = unsafe {
            (
                monitor_ref(monitor)?,
                check_str(id, "id")?,
                check_out(out_status, "out_status")?,
                opt_out(out_leaked),
            )
        };
        let health = now(m.check_connection(id))
            .ok_or_else(|| Error::UnknownResource { id: id.to_owned() })?;
        write_health(&health, status, leaked);
        Ok(())
    })
}

/// Like `heliosdb_health_monitor_check`, but runs no check: the health from the checks
/// so far.
///
/// # Safety
///
/// As `heliosdb_health_monitor_check`.
///
/// Thread-safety: see `heliosdb_health_monitor`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn heliosdb_health_monitor_status(
    monitor: *const heliosdb_health_monitor,
    id: *const c_char,
    out_status: *mut i32,
    out_leaked: *mut bool,
) -> Status {
    boundary::call(|| {
        // SAFETY: the export's contract.
        let (m, id, status, leaked) = unsafe {
            (
                monitor_ref(monitor)?,
                check_str(id, "id")?,
                check_out(out_status, "out_status")?,
                opt_out(out_leaked),
            )
        };
        let all = m.get_all_health();
        let health = all
            .iter()
            .find(|h| h.connection_id == id)
            .ok_or_else(|| Error::UnknownResource { id: id.to_owned() })?;
        write_health(health, status, leaked);
        Ok(())
    })
}

/// Starts the background thread ("heliosdb-health"), which checks every monitored
/// connection each `check_interval_ms`, the first pass one interval from now. Does
/// nothing if it runs already.
///
/// # Safety
///
/// `monitor` NULL or live.
///
/// Thread-safety: see `heliosdb_health_monitor`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn heliosdb_health_monitor_start(
    monitor: *const heliosdb_health_monitor,
) -> Status {
    boundary::call(|| {
        // SAFETY: the export's contract.
        unsafe { monitor_ref(monitor) }?.start_background_monitoring();
        Ok(())
    })
}

/// Stops the background thread and waits for the check in progress (if called from a
/// check function, it stops the thread without waiting). Does nothing if it is not
/// running.
///
/// # Safety
///
/// `monitor` NULL or live.
///
/// Thread-safety: see `heliosdb_health_monitor`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn heliosdb_health_monitor_stop(
    monitor: *const heliosdb_health_monitor,
) -> Status {
    boundary::call(|| {
        // SAFETY: the export's contract.
        unsafe { monitor_ref(monitor) }?.stop_background_monitoring();
        Ok(())
    })
}

/// Whether the background thread runs: `*out_running`.
///
/// # Safety
///
/// `monitor` NULL or live; `out_running` NULL (an error) or writable.
///
/// Thread-safety: see `heliosdb_health_monitor`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn heliosdb_health_monitor_is_running(
    monitor: *const heliosdb_health_monitor,
    out_running: *mut bool,
) -> Status {
    boundary::call(|| {
        // SAFETY: the export's contract.
        let (m, out) = unsafe {
            (
                monitor_ref(monitor)?,
                check_out(out_running, "out_running")?,
            )
        };
        out.write(m.is_background_monitoring());
        Ok(())
    })
}

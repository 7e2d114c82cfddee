//! `heliosdb_leak_detector`: the standalone [`LeakDetector`] from C, for resources the
//! pool does not manage (transactions, cursors, files, ...). A thin wrapper: every
//! function forwards to one `LeakDetector` method.

use std::ffi::{c_char, c_void};
use std::mem::{offset_of, size_of};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result, Status};
use crate::leak::{LeakDetector, LeakDetectorConfig, ResourceId, ResourceInfo, ResourceType};

use super::boundary::{self, check_out, check_ptr, check_str, opt_out, opt_str};
use super::config::heliosdb_leak_fn;
use super::leak::{CReports, heliosdb_metadata_entry};

/// A standalone leak detector: tracks resources by string id from `track` to
/// `release`, and reports those held past its thresholds. Create with
/// `heliosdb_leak_detector_new`, destroy with `heliosdb_leak_detector_free`.
///
/// Thread-safety: every function may be called from any number of threads at once,
/// except `heliosdb_leak_detector_free`, which must not run concurrently with another
/// call on the same detector. A health monitor built on a detector keeps it alive:
/// the detector may be freed first.
pub struct heliosdb_leak_detector {
    pub(crate) inner: Arc<LeakDetector>,
}

/// Leak counters of a standalone detector, from `heliosdb_leak_detector_stats`. Set
/// `struct_size` to `sizeof(heliosdb_leak_stats)` before the call.
///
/// Thread-safety: plain data owned by the caller.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct heliosdb_leak_stats {
    /// `sizeof(heliosdb_leak_stats)` as the caller was compiled; set it before the call.
    pub struct_size: usize,
    /// Leaks reported so far (each resource counts once, at its first level).
    pub leaks_detected: u64,
    /// Resources tracked now.
    pub current_tracked: usize,
    /// Reports at level Alert so far.
    pub alerts: u64,
    /// Reports at level Critical so far.
    pub criticals: u64,
    /// Leaked resources that were eventually released.
    pub returned_after_leak: u64,
}

const LEAK_STATS_SIZES: [usize; 1] = [size_of::<heliosdb_leak_stats>()];
// The first field every version has.
const _: () = assert!(offset_of!(heliosdb_leak_stats, struct_size) == 0);

/// The detector behind a non-NULL handle.
///
/// # Safety
///
/// `detector` is NULL or a live detector.
unsafe fn detector_ref<'a>(detector: *const heliosdb_leak_detector) -> Result<&'a LeakDetector> {
    // SAFETY: forwarded contract.
    unsafe { check_ptr(detector, "detector") }.map(|d| &*d.inner)
}

/// Creates a detector. A resource held `alert_ms` milliseconds is a leak at level
/// Alert, `critical_ms` at level Critical (at least `alert_ms`); at most `max_tracked`
/// resources are tracked at once. 0 for any of them: its default (30 000 ms,
/// 300 000 ms, 100 000).
///
/// Errors: `HELIOSDB_ERR_INVALID_CONFIG` (the message names the field),
/// `HELIOSDB_ERR_NULL_ARGUMENT`.
///
/// # Safety
///
/// `out_detector` is NULL (an error) or writable.
///
/// Thread-safety: callable from any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn heliosdb_leak_detector_new(
    alert_ms: u64,
    critical_ms: u64,
    max_tracked: usize,
    out_detector: *mut *mut heliosdb_leak_detector,
) -> Status {
    boundary::call(|| {
        // SAFETY: the export's contract.
        let out = unsafe { check_out(out_detector, "out_detector") }?;
        let defaults = LeakDetectorConfig::default();
        let ms = |v: u64, default: Duration| {
            if v == 0 {
                default
            } else {
                Duration::from_millis(v)
            }
        };
        let config = LeakDetectorConfig {
            alert_threshold: ms(alert_ms, defaults.alert_threshold),
            critical_threshold: ms(critical_ms, defaults.critical_threshold),
            max_tracked_resources: if max_tracked == 0 {
                defaults.max_tracked_resources
            } else {
                max_tracked
            },
        };
        let inner = Arc::new(LeakDetector::try_with_config(config)?);
        out.write(Box::into_raw(Box::new(heliosdb_leak_detector { inner })));
        Ok(())
    })
}

/// Frees a detector (NULL does nothing). Resources still tracked are forgotten; a
/// health monitor built on it keeps using it until the monitor is freed.
///
/// # Safety
///
/// `detector` is NULL or a live detector, not freed twice, with no call on it running.
///
/// Thread-safety: see `heliosdb_leak_detector`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn heliosdb_leak_detector_free(detector: *mut heliosdb_leak_detector) {
    boundary::call_or((), || {
        if !detector.is_null() {
            // SAFETY: from `Box::into_raw` in `heliosdb_leak_detector_new`, freed once.
            drop(unsafe { Box::from_raw(detector) });
        }
    })
}

/// The Rust resource type named by a C string: "Connection", "Transaction",
/// "Statement", "Cursor", "File", "Lock", or any other name (a custom type).
fn resource_type(name: Option<&str>) -> ResourceType {
    match name {
        None | Some("Connection") => ResourceType::Connection,
        Some("Transaction") => ResourceType::Transaction,
        Some("Statement") => ResourceType::Statement,
        Some("Cursor") => ResourceType::Cursor,
        Some("File") => ResourceType::File,
        Some("Lock") => ResourceType::Lock,
        Some(other) => ResourceType::Custom(other.to_owned()),
    }
}

/// Starts tracking resource `id`, taken by `user`; its age counts from now.
/// `resource_type` names its kind ("Connection" (also for NULL), "Transaction",
/// "Statement", "Cursor", "File", "Lock", or any other name); `metadata` (may be NULL
/// when `metadata_count` is 0) is copied and repeated in its leak reports. The
/// thread's name is recorded.
///
/// Errors: `HELIOSDB_ERR_DUPLICATE_RESOURCE` (already tracked),
/// `HELIOSDB_ERR_TRACKING_LIMIT` (`max_tracked` reached), `HELIOSDB_ERR_NULL_ARGUMENT`,
/// `HELIOSDB_ERR_INVALID_UTF8`.
///
/// # Safety
///
/// `detector` is NULL or live; `id`, `user` NULL or NUL-terminated; `resource_type`
/// NULL or NUL-terminated; `metadata` NULL or `metadata_count` valid entries.
///
/// Thread-safety: see `heliosdb_leak_detector`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn heliosdb_leak_detector_track(
    detector: *const heliosdb_leak_detector,
    id: *const c_char,
    user: *const c_char,
    resource_type: *const c_char,
    metadata: *const heliosdb_metadata_entry,
    metadata_count: usize,
) -> Status {
    boundary::call(|| {
        // SAFETY: the export's contract.
        let (d, id, user, kind) = unsafe {
            (
                detector_ref(detector)?,
                check_str(id, "id")?,
                check_str(user, "user")?,
                opt_str(resource_type, "resource_type")?,
            )
        };
        let mut info = ResourceInfo::new(self::resource_type(kind), user);
        if metadata_count > 0 {
            if metadata.is_null() {
                return Err(Error::NullArgument {
                    argument: "metadata",
                });
            }
            // SAFETY: by contract `metadata` points to `metadata_count` entries.
            let entries = unsafe { std::slice::from_raw_parts(metadata, metadata_count) };
            for entry in entries {
                // SAFETY: by contract every key and value is NUL-terminated.
                let (key, value) = unsafe {
                    (
                        check_str(entry.key, "metadata[].key")?,
                        check_str(entry.value, "metadata[].value")?,
                    )
                };
                info = info.with_metadata(key, value);
            }
        }
        d.track(ResourceId::new(id), info)
    })
}

/// Stops tracking `id`; how long it was held goes to `*out_held_ms` (which may be
/// NULL). A resource already reported as leaked counts in `returned_after_leak`.
///
/// Errors: `HELIOSDB_ERR_UNKNOWN_RESOURCE` (not tracked), `HELIOSDB_ERR_NULL_ARGUMENT`,
/// `HELIOSDB_ERR_INVALID_UTF8`.
///
/// # Safety
///
/// `detector` is NULL or live; `id` NULL or NUL-terminated; `out_held_ms` NULL or
/// writable.
///
/// Thread-safety: see `heliosdb_leak_detector`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn heliosdb_leak_detector_release(
    detector: *const heliosdb_leak_detector,
    id: *const c_char,
    out_held_ms: *mut u64,
) -> Status {
    boundary::call(|| {
        // SAFETY: the export's contract.
        let (d, id, out) = unsafe {
            (
                detector_ref(detector)?,
                check_str(id, "id")?,
                opt_out(out_held_ms),
            )
        };
        let held = d.release(&ResourceId::new(id))?;
        if let Some(out) = out {
            out.write(u64::try_from(held.as_millis()).unwrap_or(u64::MAX));
        }
        Ok(())
    })
}

/// Checks for leaks: every resource held past the alert threshold, oldest first, is
/// passed to `callback(report, user_data)` (which may be NULL: then they are only
/// counted), on the calling thread; their number goes to `*out_count` (may be NULL).
/// A resource's first report at a level is counted in the stats and logged.
///
/// In the reports `connection_id` is 0, `resource_id` / `resource_type` / `user` /
/// `metadata` are what `track` was given, `thread` the tracking thread's name, and
/// `file` / `function` are NULL (`line` 0). Each report is valid during its call only.
/// The callback may call any detector function except `heliosdb_leak_detector_free`.
///
/// # Safety
///
/// `detector` is NULL or live; `callback` NULL or a function that does not unwind;
/// `out_count` NULL or writable.
///
/// Thread-safety: see `heliosdb_leak_detector`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn heliosdb_leak_detector_check(
    detector: *const heliosdb_leak_detector,
    callback: heliosdb_leak_fn,
    user_data: *mut c_void,
    out_count: *mut usize,
) -> Status {
    boundary::call(|| {
        // SAFETY: the export's contract.
        let (d, count) = unsafe { (detector_ref(detector)?, opt_out(out_count)) };
        let leaks = d.check_leaks();
        if let Some(callback) = callback {
            let reports = CReports::new(&leaks, false);
            for r in reports.reports() {
                // SAFETY: the export's contract on `callback`; `reports` owns the strings.
                unsafe { callback(r, user_data) }
            }
        }
        if let Some(count) = count {
            count.write(leaks.len());
        }
        Ok(())
    })
}

/// Whether `id` is tracked and held past the alert threshold: `*out_leaked`.
///
/// # Safety
///
/// `detector` is NULL or live; `id` NULL or NUL-terminated; `out_leaked` NULL or
/// writable.
///
/// Thread-safety: see `heliosdb_leak_detector`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn heliosdb_leak_detector_is_leaked(
    detector: *const heliosdb_leak_detector,
    id: *const c_char,
    out_leaked: *mut bool,
) -> Status {
    boundary::call(|| {
        // SAFETY: the export's contract.
        let (d, id, out) = unsafe {
            (
                detector_ref(detector)?,
                check_str(id, "id")?,
                check_out(out_leaked, "out_leaked")?,
            )
        };
        out.write(d.is_leaked(&ResourceId::new(id)));
        Ok(())
    })
}

/// Writes the detector's counters into `*out_stats`, whose `struct_size` the caller
/// sets to `sizeof(heliosdb_leak_stats)` first (an unknown size is
/// `HELIOSDB_ERR_UNSUPPORTED_VERSION`).
///
/// # Safety
///
/// `detector` is NULL or live; `out_stats` NULL or a writable struct with
/// `struct_size` set.
///
/// Thread-safety: see `heliosdb_leak_detector`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn heliosdb_leak_detector_stats(
    detector: *const heliosdb_leak_detector,
    out_stats: *mut heliosdb_leak_stats,
) -> Status {
    boundary::call(|| {
        // SAFETY: the export's contract.
        let (d, out) = unsafe { (detector_ref(detector)?, check_out(out_stats, "out_stats")?) };
        // SAFETY: non-NULL (checked); `struct_size` is set by contract.
        let struct_size = unsafe { out_stats.cast::<usize>().read() };
        if !LEAK_STATS_SIZES.contains(&struct_size) {
            return Err(Error::UnsupportedVersion {
                what: "heliosdb_leak_stats.struct_size",
                found: boundary::usize_to_u64(struct_size),
            });
        }
        let s = d.stats();
        out.write_prefix(
            heliosdb_leak_stats {
                struct_size,
                leaks_detected: s.leaks_detected,
                current_tracked: s.current_tracked,
                alerts: s.alerts,
                criticals: s.criticals,
                returned_after_leak: s.returned_after_leak,
            },
            struct_size,
        );
        Ok(())
    })
}

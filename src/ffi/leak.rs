//! `heliosdb_leak_report`: a [`LeakReport`] as C sees it, and the one conversion from
//! the Rust report, shared by the pool's callbacks and exports and the standalone
//! leak detector.
//!
//! The C report points to NUL-terminated strings. The call site of a C borrow is the
//! caller's own `__FILE__` / `__func__` pointer ([`CSite`](crate::CSite) keeps them
//! without copying); every other string (ids, user, thread, metadata) is copied into
//! one byte arena per batch of reports, owned by a `CReports` that lives as long as
//! the reports may be read (a callback's duration, or until the next call on the
//! thread for `heliosdb_pool_leaks`).

use std::ffi::c_char;

use crate::CallSite;
use crate::leak::{LeakLevel, LeakReport, ResourceType};

/// The leak level of a report: held past the alert threshold.
pub const HELIOSDB_LEAK_ALERT: i32 = 1;
/// The leak level of a report: held past the critical threshold.
pub const HELIOSDB_LEAK_CRITICAL: i32 = 2;

/// One key/value pair of a leak report's metadata (NUL-terminated strings).
///
/// Thread-safety: plain data, valid as long as the report that points to it.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct heliosdb_metadata_entry {
    /// The key ("database", "protocol", "remote_addr", "tags", or a detector
    /// caller's own key).
    pub key: *const c_char,
    /// The value (a pool's tags are joined with commas).
    pub value: *const c_char,
}

/// A leak report: passed to the `on_leak` / `on_reclaim` callbacks and to
/// `heliosdb_pool_for_each_leak` / `heliosdb_leak_detector_check` callbacks (valid
/// during the call), or written by `heliosdb_pool_leaks` (valid until the next
/// successful `heliosdb_pool_leaks` call on the same thread, or the thread's exit).
///
/// Every string is NUL-terminated UTF-8 and belongs to the library: copy what you keep.
/// Its layout only changes with the SONAME: `heliosdb_pool_leaks` writes arrays of it.
///
/// Thread-safety: read it on the thread that received it, while it is valid.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct heliosdb_leak_report {
    /// The leaked borrow's connection id (as returned by `heliosdb_pool_add_connection`);
    /// 0 in reports of the standalone leak detector.
    pub connection_id: u64,
    /// The resource's id: the connection id in decimal for a pool, the id given to
    /// `heliosdb_leak_detector_track` for the detector.
    pub resource_id: *const c_char,
    /// The resource's kind: "Connection" for a pool; for the detector, the type given
    /// to `heliosdb_leak_detector_track`.
    pub resource_type: *const c_char,
    /// Who holds it: the connection's user (pool) or the `user` given to track.
    pub user: *const c_char,
    /// How long it has been held, in milliseconds (a few ms resolution for a pool).
    pub held_ms: u64,
    /// `HELIOSDB_LEAK_ALERT` or `HELIOSDB_LEAK_CRITICAL`: the level its age reaches.
    pub level: i32,
    /// The line of the call site (`__LINE__` of `HELIOSDB_POOL_ACQUIRE`), or 0 when
    /// unknown.
    pub line: u32,
    /// The file of the call site: the `__FILE__` pointer the caller passed to
    /// `heliosdb_pool_acquire_at` (through `HELIOSDB_POOL_ACQUIRE`), not a copy. For an
    /// acquire without a call site, a placeholder naming `HELIOSDB_POOL_ACQUIRE`. NULL
    /// when the call site is not a C one (the standalone detector, whose calls are made
    /// from inside the library, has none worth reporting).
    pub file: *const c_char,
    /// The function of the call site (the caller's `__func__` pointer), or NULL.
    pub function: *const c_char,
    /// The thread that took it, or NULL when unknown (a pool only knows it while that
    /// thread lives): its name with its id, as "worker-3 (tid 12345)" for a C thread
    /// named with `pthread_setname_np` before its first call into the pool (Linux) or
    /// "report-job (ThreadId(7))" for a named Rust thread; the id alone for a thread
    /// with no name of its own.
    pub thread: *const c_char,
    /// `metadata_count` key/value pairs: a pool connection's database, protocol,
    /// remote_addr and tags (each only when set); a detector resource's metadata.
    pub metadata: *const heliosdb_metadata_entry,
    /// The number of entries in `metadata`.
    pub metadata_count: usize,
}

/// The C level of a Rust level.
pub(crate) fn c_level(level: LeakLevel) -> i32 {
    match level {
        LeakLevel::Alert => HELIOSDB_LEAK_ALERT,
        LeakLevel::Critical => HELIOSDB_LEAK_CRITICAL,
    }
}

/// Offsets of one report's strings in the arena (`usize::MAX`: NULL).
struct Offsets {
    resource_id: usize,
    resource_type: usize,
    user: usize,
    thread: usize,
    metadata: std::ops::Range<usize>,
}

const NULL_OFFSET: usize = usize::MAX;

/// A batch of C reports and the storage their pointers point into. Moving it moves no
/// heap buffer, so the pointers stay valid until it is dropped.
pub(crate) struct CReports {
    /// NUL-terminated strings, back to back.
    _bytes: Vec<u8>,
    /// Every report's metadata pairs, back to back.
    _metadata: Vec<heliosdb_metadata_entry>,
    reports: Vec<heliosdb_leak_report>,
}

// SAFETY: the raw pointers point into the `CReports`'s own heap buffers (never mutated
// after construction) or to immutable static C strings; sending the batch to another
// thread sends the buffers with it.
unsafe impl Send for CReports {}

impl CReports {
    /// Converts `reports`. `pool`: the resource ids are pool connection ids (parsed
    /// into `connection_id`).
    pub(crate) fn new(reports: &[LeakReport], pool: bool) -> Self {
        let mut bytes = Vec::new();
        let mut pairs: Vec<(usize, usize)> = Vec::new();
        let push = |bytes: &mut Vec<u8>, s: &str| {
            let at = bytes.len();
            // A C string ends at its first NUL: cut there (no string here should hold
            // one: they come from C strings or Rust thread names).
            bytes.extend(s.bytes().take_while(|&b| b != 0));
            bytes.push(0);
            at
        };
        let offsets: Vec<Offsets> = reports
            .iter()
            .map(|r| {
                let resource_id = push(&mut bytes, r.resource_id.as_str());
                let resource_type = match &r.resource_type {
                    ResourceType::Custom(name) => push(&mut bytes, name),
                    other => push(&mut bytes, &other.to_string()),
                };
                let user = push(&mut bytes, &r.acquired_by);
                let thread = r
                    .thread
                    .as_deref()
                    .map_or(NULL_OFFSET, |t| push(&mut bytes, t));
                let start = pairs.len();
                for (key, value) in &r.metadata {
                    let k = push(&mut bytes, key);
                    let v = push(&mut bytes, value);
                    pairs.push((k, v));
                }
                Offsets {
                    resource_id,
                    resource_type,
                    user,
                    thread,
                    metadata: start..pairs.len(),
                }
            })
            .collect();
        // The arena is complete: pointers into it stay valid from here on.
        let base = bytes.as_ptr().cast::<c_char>();
        let at = |offset: usize| {
            if offset == NULL_OFFSET {
                std::ptr::null()
            } else {
                base.wrapping_add(offset)
            }
        };
        let metadata: Vec<heliosdb_metadata_entry> = pairs
            .iter()
            .map(|&(k, v)| heliosdb_metadata_entry {
                key: at(k),
                value: at(v),
            })
            .collect();
        let reports = reports
            .iter()
            .zip(&offsets)
            .map(|(r, o)| {
                let (file, line, function) = match r.call_site {
                    Some(CallSite::C(site)) => (
                        site.file().as_ptr(),
                        site.line(),
                        site.function().map_or(std::ptr::null(), |f| f.as_ptr()),
                    ),
                    // A Rust call site (the detector's) is inside this library: reported
                    // as unknown rather than as a misleading Rust file name.
                    Some(CallSite::Rust(_)) | None => (std::ptr::null(), 0, std::ptr::null()),
                };
                heliosdb_leak_report {
                    connection_id: if pool {
                        r.resource_id.as_str().parse().unwrap_or(0)
                    } else {
                        0
                    },
                    resource_id: at(o.resource_id),
                    resource_type: at(o.resource_type),
                    user: at(o.user),
                    held_ms: u64::try_from(r.age.as_millis()).unwrap_or(u64::MAX),
                    level: c_level(r.level),
                    line,
                    file,
                    function,
                    thread: at(o.thread),
                    metadata: if o.metadata.is_empty() {
                        std::ptr::null()
                    } else {
                        metadata.as_ptr().wrapping_add(o.metadata.start)
                    },
                    metadata_count: o.metadata.len(),
                }
            })
            .collect();
        CReports {
            _bytes: bytes,
            _metadata: metadata,
            reports,
        }
    }

    /// The C reports; their pointers are valid while `self` lives.
    pub(crate) fn reports(&self) -> &[heliosdb_leak_report] {
        &self.reports
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CSite, ResourceId};
    use std::ffi::CStr;
    use std::time::Duration;

    #[test]
    fn a_report_points_at_the_c_call_site_and_copies_the_rest() {
        static FILE: &CStr = c"app.c";
        let report = LeakReport {
            resource_id: ResourceId::new(42),
            resource_type: ResourceType::Connection,
            age: Duration::from_millis(1500),
            acquired_by: "alice".into(),
            metadata: vec![("database".into(), "orders".into())],
            level: LeakLevel::Critical,
            call_site: Some(CallSite::C(CSite::from_static(FILE, 7, Some(c"main")))),
            thread: None,
        };
        let c = CReports::new(std::slice::from_ref(&report), true);
        let r = c.reports()[0];
        assert_eq!(r.connection_id, 42);
        assert_eq!(r.file, FILE.as_ptr());
        assert_eq!(r.line, 7);
        assert_eq!(r.held_ms, 1500);
        assert_eq!(r.level, HELIOSDB_LEAK_CRITICAL);
        assert!(r.thread.is_null());
        // SAFETY: pointers into `c`, alive here.
        unsafe {
            assert_eq!(CStr::from_ptr(r.user).to_str().unwrap(), "alice");
            assert_eq!(
                CStr::from_ptr(r.resource_type).to_str().unwrap(),
                "Connection"
            );
            assert_eq!(CStr::from_ptr(r.function).to_str().unwrap(), "main");
            assert_eq!(r.metadata_count, 1);
            let md = *r.metadata;
            assert_eq!(CStr::from_ptr(md.key).to_str().unwrap(), "database");
            assert_eq!(CStr::from_ptr(md.value).to_str().unwrap(), "orders");
        }
    }
}

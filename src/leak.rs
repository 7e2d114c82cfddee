//! Leak detection for any resource identified by a string id.
//!
//! [`LeakDetector`] tracks resources (connections, transactions, files, ...) from
//! [`LeakDetector::track`] to [`LeakDetector::release`]. [`LeakDetector::check_leaks`]
//! reports every resource held past the alert threshold as a [`LeakReport`], naming who
//! took it, where in the code ([`ResourceInfo::new`] records its caller) and on which
//! thread. [`ResourceGuard`] releases on drop, so early returns and panics cannot leak.
//!
//! The threshold logic lives in one place, [`LeakThresholds::level`], and the report type
//! is [`LeakReport`]: the pool's own leak scan, which answers from its slab instead of this
//! map, uses both, so the two views cannot disagree.
//!
//! This detector is not on the pool's hot path. It keeps resources in 16 mutex-protected
//! shards chosen by hash, so threads tracking different resources rarely contend, and an
//! atomic counter enforces `max_tracked_resources` exactly.
//!
//! ```
//! use heliosdb_pool::{LeakDetector, ResourceId, ResourceInfo, ResourceType};
//!
//! let detector = LeakDetector::new();
//! let id = ResourceId::new("txn-1");
//! detector.track(id.clone(), ResourceInfo::new(ResourceType::Transaction, "alice"))?;
//! assert_eq!(detector.tracked_count(), 1);
//! detector.release(&id)?;
//! assert!(detector.check_leaks().is_empty());
//! # Ok::<(), heliosdb_pool::Error>(())
//! ```

use std::collections::HashMap;
use std::collections::hash_map::{Entry, RandomState};
use std::fmt;
use std::hash::BuildHasher;
use std::panic::Location;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::metrics::LeakStats;

/// Number of shards; a power of two so a shard is picked with a mask.
const SHARDS: usize = 16;

/// Identifies a tracked resource. Owns its string; cheap to clone for short ids.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceId(String);

impl ResourceId {
    /// Makes an id from anything printable: a `&str`, a `String`, a connection id.
    ///
    /// ```
    /// # use heliosdb_pool::ResourceId;
    /// assert_eq!(ResourceId::new("conn-7").as_str(), "conn-7");
    /// assert_eq!(ResourceId::new(42).as_str(), "42");
    /// ```
    pub fn new(id: impl fmt::Display) -> Self {
        ResourceId(id.to_string())
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What [`EnhancedHealthMonitor`](crate::EnhancedHealthMonitor) asks a leak
/// detector: whether a resource is held past its alert threshold now. Implemented by the
/// standalone [`LeakDetector`] (tracked resources) and by the pool's leak view,
/// [`PoolLeakDetector`](crate::PoolLeakDetector) (`pool.leak_detector`: borrows of the
/// pool's connections, by connection id), so a monitor can be given either.
///
/// Threading: called from the monitor's background thread and from its callers'
/// threads, hence `Send + Sync`; it must not block for long.
pub trait LeakView: Send + Sync {
    /// Whether `id` is held past its alert threshold now.
    fn is_leaked(&self, id: &ResourceId) -> bool;
}

impl LeakView for LeakDetector {
    fn is_leaked(&self, id: &ResourceId) -> bool {
        LeakDetector::is_leaked(self, id)
    }
}

/// What kind of resource is tracked; shown in reports.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ResourceType {
    /// A database or network connection.
    Connection,
    /// An open transaction.
    Transaction,
    /// A prepared statement.
    Statement,
    /// An open cursor.
    Cursor,
    /// An open file.
    File,
    /// A held lock.
    Lock,
    /// Anything else, named by the caller.
    Custom(String),
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ResourceType::Connection => "Connection",
            ResourceType::Transaction => "Transaction",
            ResourceType::Statement => "Statement",
            ResourceType::Cursor => "Cursor",
            ResourceType::File => "File",
            ResourceType::Lock => "Lock",
            ResourceType::Custom(name) => name,
        })
    }
}

/// Who took a resource, where, on which thread, and any caller metadata.
///
/// Built on the thread that acquires the resource, since it records that thread and the
/// caller's source location.
#[derive(Debug, Clone)]
pub struct ResourceInfo {
    resource_type: ResourceType,
    acquired_by: String,
    metadata: Vec<(String, String)>,
    call_site: &'static Location<'static>,
    thread: String,
}

impl ResourceInfo {
    /// Describes a resource of `resource_type` taken by `acquired_by` (a user, a task).
    ///
    /// Records the caller's source location (through `#[track_caller]`) and the current
    /// thread's name, or its id when it has no name.
    #[track_caller]
    pub fn new(resource_type: ResourceType, acquired_by: impl Into<String>) -> Self {
        let current = thread::current();
        let thread = match current.name() {
            Some(name) => name.to_owned(),
            None => format!("{:?}", current.id()),
        };
        ResourceInfo {
            resource_type,
            acquired_by: acquired_by.into(),
            metadata: Vec::new(),
            call_site: Location::caller(),
            thread,
        }
    }

    /// Adds a key/value pair shown in leak reports, in insertion order.
    #[must_use]
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.push((key.into(), value.into()));
        self
    }

    /// The kind of resource.
    pub fn resource_type(&self) -> &ResourceType {
        &self.resource_type
    }

    /// Who took the resource.
    pub fn acquired_by(&self) -> &str {
        &self.acquired_by
    }

    /// Caller metadata, in insertion order.
    pub fn metadata(&self) -> &[(String, String)] {
        &self.metadata
    }

    /// The source location that called [`ResourceInfo::new`].
    pub fn call_site(&self) -> &'static Location<'static> {
        self.call_site
    }

    /// The name (or id) of the thread that called [`ResourceInfo::new`].
    pub fn thread(&self) -> &str {
        &self.thread
    }
}

/// How serious a leak is. `Alert < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LeakLevel {
    /// Held past the alert threshold.
    Alert,
    /// Held past the critical threshold.
    Critical,
}

impl fmt::Display for LeakLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LeakLevel::Alert => "ALERT",
            LeakLevel::Critical => "CRITICAL",
        })
    }
}

/// The alert and critical thresholds: the one place that turns an age into a level.
///
/// Both the detector and the pool's own leak scan call [`LeakThresholds::level`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeakThresholds {
    /// A resource held at least this long is a leak at level [`LeakLevel::Alert`].
    pub alert: Duration,
    /// A resource held at least this long is a leak at level [`LeakLevel::Critical`].
    pub critical: Duration,
}

impl LeakThresholds {
    /// The leak level of a resource held for `age`, or `None` below the alert threshold.
    ///
    /// Allocation-free and lock-free.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use heliosdb_pool::{leak::LeakThresholds, LeakLevel};
    /// let t = LeakThresholds { alert: Duration::from_secs(30), critical: Duration::from_secs(300) };
    /// assert_eq!(t.level(Duration::from_secs(29)), None);
    /// assert_eq!(t.level(Duration::from_secs(30)), Some(LeakLevel::Alert));
    /// assert_eq!(t.level(Duration::from_secs(300)), Some(LeakLevel::Critical));
    /// ```
    #[inline]
    pub fn level(&self, age: Duration) -> Option<LeakLevel> {
        if age >= self.critical {
            Some(LeakLevel::Critical)
        } else if age >= self.alert {
            Some(LeakLevel::Alert)
        } else {
            None
        }
    }
}

/// One leaked resource, as reported by [`LeakDetector::check_leaks`] or the pool's scan.
///
/// Plain data with public fields; `Display` renders one line for logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeakReport {
    /// The leaked resource.
    pub resource_id: ResourceId,
    /// Its kind.
    pub resource_type: ResourceType,
    /// How long it has been held.
    pub age: Duration,
    /// Who took it.
    pub acquired_by: String,
    /// Caller metadata, in insertion order.
    pub metadata: Vec<(String, String)>,
    /// The level its age reaches now.
    pub level: LeakLevel,
    /// Where it was taken, when known (`Display` prints `file:line`, and the function
    /// for C call sites).
    pub call_site: Option<crate::CallSite>,
    /// The thread that took it, when known.
    pub thread: Option<String>,
}

impl fmt::Display for LeakReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "resource {} ({}) held by {} for {:.1}s [{}]",
            self.resource_id,
            self.resource_type,
            self.acquired_by,
            self.age.as_secs_f64(),
            self.level
        )?;
        if let Some(site) = &self.call_site {
            write!(f, " at {site}")?;
        }
        if let Some(thread) = &self.thread {
            write!(f, " on thread {thread}")?;
        }
        for (i, (key, value)) in self.metadata.iter().enumerate() {
            let sep = if i == 0 { "; metadata: " } else { ", " };
            write!(f, "{sep}{key}={value}")?;
        }
        Ok(())
    }
}

/// Configuration of a [`LeakDetector`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeakDetectorConfig {
    /// Age at which a tracked resource is reported at level Alert. Default 30 s.
    pub alert_threshold: Duration,
    /// Age at which it is reported at level Critical. Default 300 s.
    pub critical_threshold: Duration,
    /// The most resources tracked at once; [`LeakDetector::track`] fails beyond it.
    /// Default 100 000.
    pub max_tracked_resources: usize,
}

impl Default for LeakDetectorConfig {
    fn default() -> Self {
        LeakDetectorConfig {
            alert_threshold: Duration::from_secs(30),
            critical_threshold: Duration::from_secs(300),
            max_tracked_resources: 100_000,
        }
    }
}

impl LeakDetectorConfig {
    /// Checks that `0 < alert_threshold <= critical_threshold` and
    /// `max_tracked_resources > 0`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] naming the first offending field and why.
    pub fn validate(&self) -> Result<()> {
        if self.alert_threshold.is_zero() {
            return Err(Error::invalid_config(
                "alert_threshold",
                "must be greater than zero",
            ));
        }
        if self.critical_threshold < self.alert_threshold {
            return Err(Error::invalid_config(
                "critical_threshold",
                format!(
                    "must be at least alert_threshold ({:?}), got {:?}",
                    self.alert_threshold, self.critical_threshold
                ),
            ));
        }
        if self.max_tracked_resources == 0 {
            return Err(Error::invalid_config(
                "max_tracked_resources",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    /// The thresholds as a [`LeakThresholds`].
    pub fn thresholds(&self) -> LeakThresholds {
        LeakThresholds {
            alert: self.alert_threshold,
            critical: self.critical_threshold,
        }
    }
}

/// A tracked resource: its description, when tracking began, the highest level reported.
#[derive(Debug)]
struct Tracked {
    info: ResourceInfo,
    since: Instant,
    /// Highest level already reported, so each level is counted and logged once.
    reported: Option<LeakLevel>,
}

/// Tracks resources by id and reports those held too long.
///
/// Thread-safe (`Send + Sync`): share it by reference or in an `Arc`; every method takes
/// `&self`. Methods lock one shard at a time, briefly, and never call out while locked
/// (logging happens after the shard is unlocked).
pub struct LeakDetector {
    config: LeakDetectorConfig,
    thresholds: LeakThresholds,
    hasher: RandomState,
    shards: [Mutex<HashMap<ResourceId, Tracked>>; SHARDS],
    /// Resources tracked right now, across all shards; never exceeds
    /// `config.max_tracked_resources` because `track` reserves a place with a bounded
    /// compare-and-swap before inserting.
    tracked: AtomicUsize,
    leaks_detected: AtomicU64,
    alerts: AtomicU64,
    criticals: AtomicU64,
    returned_after_leak: AtomicU64,
}

impl Default for LeakDetector {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for LeakDetector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeakDetector")
            .field("config", &self.config)
            .field("tracked", &self.tracked_count())
            .finish_non_exhaustive()
    }
}

impl LeakDetector {
    /// A detector with [`LeakDetectorConfig::default`].
    pub fn new() -> Self {
        Self::with_config(LeakDetectorConfig::default())
    }

    /// A detector with `config`.
    ///
    /// # Panics
    ///
    /// If `config` is invalid (see [`LeakDetectorConfig::validate`]), with the validation
    /// message. Use [`LeakDetector::try_with_config`] to get the error instead.
    pub fn with_config(config: LeakDetectorConfig) -> Self {
        Self::try_with_config(config).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A detector with `config`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] when `config` is invalid.
    pub fn try_with_config(config: LeakDetectorConfig) -> Result<Self> {
        config.validate()?;
        Ok(LeakDetector {
            thresholds: config.thresholds(),
            config,
            hasher: RandomState::new(),
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
            tracked: AtomicUsize::new(0),
            leaks_detected: AtomicU64::new(0),
            alerts: AtomicU64::new(0),
            criticals: AtomicU64::new(0),
            returned_after_leak: AtomicU64::new(0),
        })
    }

    /// Starts tracking `id`; its age counts from now. Takes ownership of `info`.
    ///
    /// # Errors
    ///
    /// [`Error::DuplicateResource`] if `id` is already tracked;
    /// [`Error::TrackingLimit`] if `max_tracked_resources` resources are tracked.
    pub fn track(&self, id: ResourceId, info: ResourceInfo) -> Result<()> {
        let mut shard = self.shard(&id);
        // Duplicates are rejected before a place is reserved, under the shard lock, so a
        // duplicate neither reports TrackingLimit nor briefly holds a place that a
        // concurrent `track` needed.
        let slot = match shard.entry(id) {
            Entry::Occupied(existing) => {
                return Err(Error::DuplicateResource {
                    id: existing.key().as_str().to_owned(),
                });
            }
            Entry::Vacant(slot) => slot,
        };
        let max = self.config.max_tracked_resources;
        self.tracked
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .map_err(|_| Error::TrackingLimit {
                max_tracked_resources: max,
            })?;
        slot.insert(Tracked {
            info,
            since: Instant::now(),
            reported: None,
        });
        Ok(())
    }

    /// Stops tracking `id` and returns how long it was held.
    ///
    /// A resource already reported as leaked is counted in
    /// [`LeakStats::returned_after_leak`] and logged at info level.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownResource`] if `id` is not tracked.
    pub fn release(&self, id: &ResourceId) -> Result<Duration> {
        let removed = self.shard(id).remove(id);
        let Some(tracked) = removed else {
            return Err(Error::UnknownResource {
                id: id.as_str().to_owned(),
            });
        };
        self.tracked.fetch_sub(1, Ordering::AcqRel);
        let held = tracked.since.elapsed();
        if let Some(level) = tracked.reported {
            self.returned_after_leak.fetch_add(1, Ordering::Relaxed);
            log::info!(
                "leaked resource {id} ({level}) returned after {:.1}s",
                held.as_secs_f64()
            );
        }
        Ok(held)
    }

    /// Reports every tracked resource held at least the alert threshold, oldest first,
    /// each at the level its age reaches now.
    ///
    /// A resource's first report at a level updates [`LeakStats`] (`leaks_detected` once
    /// per resource, `alerts`/`criticals` once per level reached) and is logged: `warn`
    /// for Alert, `error` for Critical. Later calls report it again without counting or
    /// logging it again.
    pub fn check_leaks(&self) -> Vec<LeakReport> {
        let now = Instant::now();
        let mut reports = Vec::new();
        // Indices into `reports` of first-time reports, logged after the locks are gone.
        let mut fresh = Vec::new();
        for shard in &self.shards {
            let mut shard = lock(shard);
            for (id, tracked) in shard.iter_mut() {
                let age = now.saturating_duration_since(tracked.since);
                let Some(level) = self.thresholds.level(age) else {
                    continue;
                };
                if tracked.reported < Some(level) {
                    self.count_first_report(tracked.reported, level);
                    tracked.reported = Some(level);
                    fresh.push(reports.len());
                }
                reports.push(report(id, tracked, age, level));
            }
        }
        for &i in &fresh {
            let r = &reports[i];
            match r.level {
                LeakLevel::Alert => log::warn!("leak detected: {r}"),
                LeakLevel::Critical => log::error!("critical leak: {r}"),
            }
        }
        reports.sort_by_key(|r| std::cmp::Reverse(r.age));
        reports
    }

    /// The counters, and the number of resources tracked now.
    pub fn stats(&self) -> LeakStats {
        LeakStats {
            leaks_detected: self.leaks_detected.load(Ordering::Relaxed),
            current_tracked: self.tracked_count(),
            alerts: self.alerts.load(Ordering::Relaxed),
            criticals: self.criticals.load(Ordering::Relaxed),
            returned_after_leak: self.returned_after_leak.load(Ordering::Relaxed),
        }
    }

    /// The number of resources tracked now.
    pub fn tracked_count(&self) -> usize {
        self.tracked.load(Ordering::Acquire)
    }

    /// Whether `id` is tracked and has been held at least the alert threshold, whether or
    /// not [`LeakDetector::check_leaks`] has reported it yet. (Also [`LeakView::is_leaked`].)
    pub fn is_leaked(&self, id: &ResourceId) -> bool {
        self.shard(id)
            .get(id)
            .is_some_and(|t| self.thresholds.level(t.since.elapsed()).is_some())
    }

    /// The detector's thresholds.
    pub fn thresholds(&self) -> LeakThresholds {
        self.thresholds
    }

    /// The detector's configuration.
    pub fn config(&self) -> &LeakDetectorConfig {
        &self.config
    }

    fn shard(&self, id: &ResourceId) -> MutexGuard<'_, HashMap<ResourceId, Tracked>> {
        // The low bits of a per-detector random hash pick the shard.
        let index = self.hasher.hash_one(id) as usize & (SHARDS - 1);
        lock(&self.shards[index])
    }

    fn count_first_report(&self, previous: Option<LeakLevel>, level: LeakLevel) {
        if previous.is_none() {
            self.leaks_detected.fetch_add(1, Ordering::Relaxed);
        }
        let counter = match level {
            LeakLevel::Alert => &self.alerts,
            LeakLevel::Critical => &self.criticals,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Locks a shard. A panic while a shard was held cannot leave it inconsistent (every
/// update is a single map operation), so a poisoned lock is used as is.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn report(id: &ResourceId, tracked: &Tracked, age: Duration, level: LeakLevel) -> LeakReport {
    let info = &tracked.info;
    LeakReport {
        resource_id: id.clone(),
        resource_type: info.resource_type.clone(),
        age,
        acquired_by: info.acquired_by.clone(),
        metadata: info.metadata.clone(),
        level,
        call_site: Some(crate::CallSite::Rust(info.call_site)),
        thread: Some(info.thread.clone()),
    }
}

/// Tracks a resource for as long as the guard lives and releases it on drop, including
/// during a panic unwind.
///
/// Borrows the detector, so it cannot outlive it; it is `Send` and `Sync`, so it may be
/// dropped on another thread.
///
/// ```
/// use heliosdb_pool::{LeakDetector, ResourceGuard, ResourceId, ResourceInfo, ResourceType};
///
/// let detector = LeakDetector::new();
/// {
///     let _guard = ResourceGuard::new(
///         &detector,
///         ResourceId::new("auto-resource"),
///         ResourceInfo::new(ResourceType::Connection, "user"),
///     )?;
///     assert_eq!(detector.tracked_count(), 1);
/// }
/// assert_eq!(detector.tracked_count(), 0);
/// # Ok::<(), heliosdb_pool::Error>(())
/// ```
#[must_use = "dropping the guard releases the resource at once"]
#[derive(Debug)]
pub struct ResourceGuard<'a> {
    detector: &'a LeakDetector,
    id: ResourceId,
    /// False once [`ResourceGuard::release`] has run, so drop does not release again.
    armed: bool,
}

impl<'a> ResourceGuard<'a> {
    /// Tracks `id` in `detector` until the guard is dropped or released.
    ///
    /// # Errors
    ///
    /// As [`LeakDetector::track`]: [`Error::DuplicateResource`], [`Error::TrackingLimit`].
    pub fn new(detector: &'a LeakDetector, id: ResourceId, info: ResourceInfo) -> Result<Self> {
        detector.track(id.clone(), info)?;
        Ok(ResourceGuard {
            detector,
            id,
            armed: true,
        })
    }

    /// The tracked resource's id.
    pub fn id(&self) -> &ResourceId {
        &self.id
    }

    /// Releases now and returns how long the resource was held.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownResource`] if it was already released through the detector.
    pub fn release(mut self) -> Result<Duration> {
        self.armed = false;
        self.detector.release(&self.id)
    }
}

impl Drop for ResourceGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            // UnknownResource (the only error) means someone released it through the
            // detector already: the resource is untracked, which is what drop wants.
            let _ = self.detector.release(&self.id);
        }
    }
}

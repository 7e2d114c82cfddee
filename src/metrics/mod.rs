//! Point-in-time statistics: [`PoolStats`], [`UserStats`], [`LeakStats`],
//! [`Evictions`], the acquire-wait histogram, and their Prometheus text exposition.
//!
//! Statistics are computed on demand by scanning the slab; the acquire/release hot path
//! keeps no contended global counter for them. Counters of rarer events (evictions,
//! health checks, factory calls, waits) are atomics touched only on those paths.

pub mod histogram;
pub mod prometheus;

pub use histogram::{WAIT_BUCKETS_US, WaitHistogram, WaitHistogramSnapshot};

/// Leak accounting, shared by the pool's `leak_stats` and the standalone
/// [`LeakDetector`](crate::LeakDetector).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeakStats {
    /// Leaks reported so far (each borrow or resource counts once, at its first level).
    pub leaks_detected: u64,
    /// Borrows (pool) or resources (detector) tracked right now.
    pub current_tracked: usize,
    /// Reports at level Alert so far.
    pub alerts: u64,
    /// Reports at level Critical so far.
    pub criticals: u64,
    /// Leaked borrows or resources that were eventually returned.
    pub returned_after_leak: u64,
}

/// One user's share of [`PoolStats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserStats {
    /// The user.
    pub user: String,
    /// Connections the user holds.
    pub total_connections: usize,
    /// Of those, borrowed now.
    pub active_connections: usize,
    /// Of those, idle now.
    pub idle_connections: usize,
    /// Callers waiting for one of the user's connections.
    pub waiting: usize,
    /// Acquires for the user that timed out.
    pub timeouts: u64,
    /// Connections the factory failed to create for the user.
    pub factory_errors: u64,
    /// The factory's last error for the user, if any.
    pub last_factory_error: Option<String>,
    /// Connections the factory made for the user (and the pool took).
    pub factory_creates: u64,
    /// Connects running now for the user.
    pub connects_in_flight: usize,
    /// The user's factory backoff, while its last connect failed: how many failures in
    /// a row, and when the next try may start.
    pub factory_backoff: Option<FactoryBackoff>,
}

/// A user's connection factory backing off after failures (in [`UserStats`] and the
/// acquire timeout error). Displays as `5 failures in a row, next retry in 3.2 s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FactoryBackoff {
    /// Connects that failed in a row for the user (reset by a success).
    pub failures_in_a_row: u32,
    /// Time until the next connect for the user may start (zero: due now, when the user
    /// still wants one).
    pub next_retry_in: std::time::Duration,
}

impl std::fmt::Display for FactoryBackoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.failures_in_a_row;
        write!(
            f,
            "{n} failure{} in a row, next retry in {:.1} s",
            if n == 1 { "" } else { "s" },
            self.next_retry_in.as_secs_f64()
        )
    }
}

/// Connections closed by the pool, by cause.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Evictions {
    /// Idle longer than `idle_timeout_ms`.
    pub idle: u64,
    /// Older than `max_connection_age_ms` (idle, or on return).
    pub age: u64,
    /// Failed health checks.
    pub health: u64,
    /// Reclaimed critical leaks, closed when their holder returned them.
    pub reclaimed: u64,
    /// Removed by `remove_connection` (now or on return).
    pub removed: u64,
    /// Discarded by their holder (`PooledConnection::discard`, `heliosdb_pool_discard`).
    pub discarded: u64,
    /// Taken out of the pool for good by their holder (`PooledConnection::detach`).
    pub detached: u64,
    /// Closed on return because the `reset` hook failed or panicked.
    pub reset_failed: u64,
    /// Closed by `evict_all` / `evict_user` (idle ones at once, borrowed ones on return).
    pub failover: u64,
}

/// The sweeper's progress: a stalled sweeper shows as a growing `completed_ago`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepStats {
    /// Passes completed.
    pub passes: u64,
    /// Duration of the last completed pass.
    pub last_duration: std::time::Duration,
    /// Time since the last pass completed (`None` before the first).
    pub completed_ago: Option<std::time::Duration>,
}

/// A snapshot of a pool, from [`EnhancedConnectionPool::stats`](crate::EnhancedConnectionPool::stats).
///
/// Counts are read without stopping the pool, so under load they describe a moment
/// only approximately (a connection may be counted in the middle of changing hands).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolStats {
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
    /// Blocking acquires that found nothing idle and were served by their brief spin
    /// (a connection given back within about a microsecond, on another core) instead
    /// of queueing. Zero on a single core, where acquires never spin.
    pub spin_acquires: u64,
    /// Per-user counts of the users the pool keeps now (retired ones are gone), in
    /// the order they were created.
    pub users: Vec<UserStats>,
    /// Users retired so far (see
    /// [`PoolBuilder::retire_users_after`](crate::PoolBuilder::retire_users_after)).
    pub users_retired: u64,
    /// Leak accounting; `current_tracked` is the number of borrows held now.
    pub leak_stats: LeakStats,
    /// Connections closed by the pool, by cause.
    pub evictions: Evictions,
    /// Health checks run, and how many failed (an error or a panic).
    pub health_checks: u64,
    /// Of `health_checks`, the failures.
    pub health_failures: u64,
    /// Connections the factory created.
    pub factory_creates: u64,
    /// Factory calls that failed.
    pub factory_errors: u64,
    /// Connects running now (all users), at most `max_concurrent_connects`.
    pub connects_in_flight: usize,
    /// How long acquires waited: every acquire, the ones served at once in the first
    /// bucket.
    pub acquire_wait: WaitHistogramSnapshot,
    /// The sweeper's progress (all zero when no sweeper runs).
    pub sweep: SweepStats,
}

/// One outstanding borrow, from
/// [`EnhancedConnectionPool::borrows`](crate::EnhancedConnectionPool::borrows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BorrowInfo {
    /// The borrowed connection.
    pub connection_id: crate::ConnectionId,
    /// The user it belongs to.
    pub user: String,
    /// How long it has been held (coarse clock: a few ms resolution).
    pub held_for: std::time::Duration,
    /// Where it was borrowed.
    pub call_site: Option<crate::CallSite>,
    /// The borrowing thread, while it lives: its name with its id beside it,
    /// `report-job (ThreadId(7))` for a named Rust thread, `worker-3 (tid 12345)` for a
    /// thread named by the OS only (a C thread named with `pthread_setname_np`, Linux),
    /// the id alone for an unnamed thread. The name is read once per thread, when it
    /// first borrows.
    pub thread: Option<String>,
    /// The connection's metadata, as given when it was added.
    pub metadata: crate::ConnectionMetadata,
}

/// The pool's event counters: atomics written only on the paths of the events they
/// count (eviction, health check, factory call, leak report, wait), never on the
/// acquire/release fast path. Relaxed: each is an independent tally.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) evicted_idle: std::sync::atomic::AtomicU64,
    pub(crate) evicted_age: std::sync::atomic::AtomicU64,
    pub(crate) evicted_health: std::sync::atomic::AtomicU64,
    pub(crate) evicted_reclaimed: std::sync::atomic::AtomicU64,
    pub(crate) evicted_removed: std::sync::atomic::AtomicU64,
    pub(crate) evicted_discarded: std::sync::atomic::AtomicU64,
    pub(crate) evicted_detached: std::sync::atomic::AtomicU64,
    pub(crate) evicted_reset_failed: std::sync::atomic::AtomicU64,
    pub(crate) evicted_failover: std::sync::atomic::AtomicU64,
    pub(crate) health_checks: std::sync::atomic::AtomicU64,
    pub(crate) health_failures: std::sync::atomic::AtomicU64,
    pub(crate) factory_creates: std::sync::atomic::AtomicU64,
    pub(crate) factory_errors: std::sync::atomic::AtomicU64,
    pub(crate) leaks_detected: std::sync::atomic::AtomicU64,
    pub(crate) leak_alerts: std::sync::atomic::AtomicU64,
    pub(crate) leak_criticals: std::sync::atomic::AtomicU64,
    pub(crate) returned_after_leak: std::sync::atomic::AtomicU64,
    /// Acquires that timed out, all users together (users come and go: see `users.rs`).
    pub(crate) timeouts: std::sync::atomic::AtomicU64,
    /// Acquires that waited and got a connection (the rest of the acquires were served
    /// at once and go into the wait histogram's first bucket).
    pub(crate) waits_granted: std::sync::atomic::AtomicU64,
    /// Blocking acquires served by their spin before queueing (`PoolStats::spin_acquires`).
    pub(crate) spin_acquires: std::sync::atomic::AtomicU64,
    pub(crate) acquire_wait: WaitHistogram,
}

/// Why the pool closed a connection (the causes of [`Evictions`], and of an
/// [`Evicted`](crate::Evicted) report).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Eviction {
    /// Idle longer than `idle_timeout_ms` (above `min_idle`).
    Idle,
    /// Older than `max_connection_age_ms` (less its jitter).
    Age,
    /// Failed its health checks.
    Health,
    /// Reclaimed as a critical leak, closed when returned.
    Reclaimed,
    /// Removed by `remove_connection`.
    Removed,
    /// Discarded by its holder.
    Discarded,
    /// Detached by its holder.
    Detached,
    /// The `reset` hook failed.
    ResetFailed,
    /// Taken out of service by `evict_all`/`evict_user`.
    Failover,
}

impl Eviction {
    /// The cause as the Prometheus `cause` label and the C `on_evict` callback name it
    /// (`"idle"`, `"age"`, `"health"`, ...).
    pub fn as_str(self) -> &'static str {
        self.c_name().to_str().expect("ASCII names")
    }

    /// [`as_str`](Self::as_str), NUL-terminated for C.
    pub(crate) fn c_name(self) -> &'static std::ffi::CStr {
        match self {
            Eviction::Idle => c"idle",
            Eviction::Age => c"age",
            Eviction::Health => c"health",
            Eviction::Reclaimed => c"reclaimed",
            Eviction::Removed => c"removed",
            Eviction::Discarded => c"discarded",
            Eviction::Detached => c"detached",
            Eviction::ResetFailed => c"reset_failed",
            Eviction::Failover => c"failover",
        }
    }
}

impl Counters {
    pub(crate) fn evicted(&self, cause: Eviction) {
        let counter = match cause {
            Eviction::Idle => &self.evicted_idle,
            Eviction::Age => &self.evicted_age,
            Eviction::Health => &self.evicted_health,
            Eviction::Reclaimed => &self.evicted_reclaimed,
            Eviction::Removed => &self.evicted_removed,
            Eviction::Discarded => &self.evicted_discarded,
            Eviction::Detached => &self.evicted_detached,
            Eviction::ResetFailed => &self.evicted_reset_failed,
            Eviction::Failover => &self.evicted_failover,
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn evictions(&self) -> Evictions {
        let get = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        Evictions {
            idle: get(&self.evicted_idle),
            age: get(&self.evicted_age),
            health: get(&self.evicted_health),
            reclaimed: get(&self.evicted_reclaimed),
            removed: get(&self.evicted_removed),
            discarded: get(&self.evicted_discarded),
            detached: get(&self.evicted_detached),
            reset_failed: get(&self.evicted_reset_failed),
            failover: get(&self.evicted_failover),
        }
    }
}

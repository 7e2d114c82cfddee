//! Point-in-time statistics: [`PoolStats`], [`UserStats`], [`LeakStats`].
//!
//! Statistics are computed on demand by scanning the slab; the acquire/release hot path
//! keeps no contended global counter for them.

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
    /// Per-user counts, in the order users were first seen.
    pub users: Vec<UserStats>,
    /// Leak accounting; `current_tracked` is the number of borrows held now.
    pub leak_stats: LeakStats,
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
    /// The borrowing thread's name (or id), while that thread lives.
    pub thread: Option<String>,
    /// The connection's metadata, as given when it was added.
    pub metadata: crate::ConnectionMetadata,
}

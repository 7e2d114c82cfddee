//! [`ConnectionMetadata`] (what the service tells the pool about a connection) and
//! [`ConnectionId`] (how the pool names it).

use std::fmt;

/// Descriptive facts about a connection, given to
/// [`EnhancedConnectionPool::add_connection`](crate::EnhancedConnectionPool::add_connection)
/// and repeated in leak reports and statistics. The pool stores it once, when the
/// connection is added; borrowing never copies it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionMetadata {
    /// The database user the connection is authenticated as.
    pub user: String,
    /// The database, when the protocol has one.
    pub database: Option<String>,
    /// The wire protocol ("postgres", "mysql", "redis", ...).
    pub protocol: String,
    /// The server's address, when known.
    pub remote_addr: Option<String>,
    /// Free-form labels ("read-only", "replica", ...).
    pub tags: Vec<String>,
}

impl ConnectionMetadata {
    /// Metadata naming only the user; every other field empty.
    pub fn for_user(user: impl Into<String>) -> Self {
        ConnectionMetadata {
            user: user.into(),
            ..Default::default()
        }
    }
}

/// Identifies one connection for as long as it is in the pool, and is never reused for
/// another connection of the same pool.
///
/// The low 24 bits are the slot index, the rest a per-pool sequence number. `Display`
/// prints the raw number, so it can be used as a [`ResourceId`](crate::ResourceId).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(u64);

impl ConnectionId {
    const SLOT_BITS: u32 = 24;

    pub(crate) fn new(sequence: u64, slot: u32) -> Self {
        ConnectionId((sequence << Self::SLOT_BITS) | u64::from(slot))
    }

    /// Rebuilds an id from [`ConnectionId::raw`].
    pub const fn from_raw(raw: u64) -> Self {
        ConnectionId(raw)
    }

    /// The id as a number (stable for the connection's life; what the C ABI uses).
    pub const fn raw(self) -> u64 {
        self.0
    }

    pub(crate) const fn slot(self) -> u32 {
        (self.0 & ((1 << Self::SLOT_BITS) - 1)) as u32
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl From<ConnectionId> for u64 {
    fn from(id: ConnectionId) -> u64 {
        id.0
    }
}

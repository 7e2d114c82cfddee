//! # heliosdb-pool
//!
//! A lock-free, allocation-conscious connection pool with leak detection and health
//! monitoring, usable from Rust and, through a C ABI, from C and C++.
//!
//! The service opens its own connections and hands them to the pool with
//! [`ConnectionMetadata`]; threads and async tasks borrow one for a user with
//! [`EnhancedConnectionPool::acquire`] (async), [`EnhancedConnectionPool::blocking_acquire`]
//! or [`EnhancedConnectionPool::try_acquire`], and the returned [`PooledConnection`] guard
//! gives it back on drop. Borrowing and returning take no lock, make no heap allocation
//! and no system call in the steady state: see `docs/ARCHITECTURE.md` and `BENCHMARKS.md`.
//!
//! With the cargo feature `postgres`, the `postgres` module pools the sync `postgres`
//! crate's clients (a factory per role, a health check, a reset, discard of lost
//! connections), as a client of the builder's hooks.
//!
//! ```
//! use heliosdb_pool::{ConnectionMetadata, EnhancedConnectionPool, EnhancedPoolConfig};
//!
//! let pool = EnhancedConnectionPool::new(EnhancedPoolConfig::default());
//! pool.add_connection_sync(String::from("conn"), "alice", ConnectionMetadata::for_user("alice"))
//!     .unwrap();
//! let conn = pool.try_acquire("alice").unwrap();
//! assert_eq!(conn.as_str(), "conn");
//! ```
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![cfg_attr(loom, allow(dead_code, unused_imports))]

mod sync;

/// The full crate. Under `--cfg loom` only the lock-free core (below) is built, with
/// loom's atomics, and its models run (`.ci/run` does this in release mode): one gate
/// for every item rather than one per line.
macro_rules! full_crate {
    ($($item:item)*) => { $( #[cfg(not(loom))] $item )* };
}

full_crate! {
    mod acquire;
    pub mod builder;
    mod clock;
    pub mod config;
    pub mod error;
    mod factory;
    pub mod ffi;
    pub mod guard;
    pub mod health;
    pub mod leak;
    pub mod metadata;
    pub mod metrics;
    mod partition;
    pub mod pool;
    #[cfg(feature = "postgres")]
    pub mod postgres;
    mod pool_leaks;
    mod quiesce;
    mod slab;
    mod sweeper;
    mod thread_tag;
    mod users;
    mod wait;

    pub use acquire::Acquire;
    pub use builder::{Evicted, PoolBuilder};
    pub use config::EnhancedPoolConfig;
    pub use error::{Error, Result, Status};
    pub use guard::{PooledConnection, RawHandle};
    pub use health::{
        ConnectionHealth, EnhancedHealthMonitor, HealthCheck, HealthMonitorConfig, HealthStatus,
    };
    pub use leak::{
        LeakDetector, LeakDetectorConfig, LeakLevel, LeakReport, LeakView, ResourceGuard,
        ResourceId, ResourceInfo, ResourceType,
    };
    pub use metadata::{ConnectionId, ConnectionMetadata};
    pub use metrics::{BorrowInfo, Eviction, Evictions, LeakStats, PoolStats, SweepStats, UserStats};
    pub use metrics::FactoryBackoff;
    pub use factory::DEFAULT_MAX_CONCURRENT_CONNECTS;
    pub use pool::{EnhancedConnectionPool, Removal};
    pub use pool_leaks::PoolLeakDetector;
    pub use slab::{CSite, CallSite};
}

// The lock-free core alone, under `--cfg loom`.
#[cfg(loom)]
mod slab {
    pub(crate) mod idle;
    pub(crate) mod site;
    pub(crate) mod state;
    pub(crate) use site::CallSite;
}
#[cfg(all(loom, test))]
mod loom_models;
#[cfg(loom)]
mod quiesce;
#[cfg(loom)]
mod wait;

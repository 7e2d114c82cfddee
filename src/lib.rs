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

#[cfg(not(loom))]
mod acquire;
#[cfg(not(loom))]
pub mod builder;
#[cfg(not(loom))]
mod clock;
#[cfg(not(loom))]
pub mod config;
#[cfg(not(loom))]
pub mod error;
#[cfg(not(loom))]
pub mod ffi;
#[cfg(not(loom))]
pub mod guard;
#[cfg(not(loom))]
pub mod health;
#[cfg(not(loom))]
pub mod leak;
#[cfg(not(loom))]
pub mod metadata;
#[cfg(not(loom))]
pub mod metrics;
#[cfg(not(loom))]
mod partition;
#[cfg(not(loom))]
pub mod pool;
#[cfg(not(loom))]
mod pool_leaks;
#[cfg(not(loom))]
mod slab;
#[cfg(not(loom))]
mod sweeper;
mod sync;
#[cfg(not(loom))]
mod thread_tag;
#[cfg(not(loom))]
mod wait;

// Under `--cfg loom` only the lock-free core is built, with loom's atomics, and its
// models run (`.ci/run` does this in release mode).
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
mod wait;

#[cfg(not(loom))]
pub use acquire::Acquire;
#[cfg(not(loom))]
pub use builder::PoolBuilder;
#[cfg(not(loom))]
pub use config::EnhancedPoolConfig;
#[cfg(not(loom))]
pub use error::{Error, Result, Status};
#[cfg(not(loom))]
pub use guard::{PooledConnection, RawHandle};
#[cfg(not(loom))]
pub use health::{
    ConnectionHealth, EnhancedHealthMonitor, HealthCheck, HealthMonitorConfig, HealthStatus,
};
#[cfg(not(loom))]
pub use leak::{
    LeakDetector, LeakDetectorConfig, LeakLevel, LeakReport, ResourceGuard, ResourceId,
    ResourceInfo, ResourceType,
};
#[cfg(not(loom))]
pub use metadata::{ConnectionId, ConnectionMetadata};
#[cfg(not(loom))]
pub use metrics::{BorrowInfo, Evictions, LeakStats, PoolStats, SweepStats, UserStats};
#[cfg(not(loom))]
pub use pool::{EnhancedConnectionPool, Removal};
#[cfg(not(loom))]
pub use pool_leaks::PoolLeakDetector;
#[cfg(not(loom))]
pub use slab::{CSite, CallSite};

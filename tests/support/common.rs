//! Helpers shared by the integration tests, included with
//! `#[path = "support/common.rs"] mod common;` (each test file uses what it needs).
#![allow(dead_code)]

use std::time::{Duration, Instant};

use heliosdb_pool::{ConnectionMetadata, EnhancedConnectionPool, EnhancedPoolConfig};

/// Polls `done` every 2 ms until it holds or `limit` passes; whether it held.
pub fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    done()
}

/// A configuration with every background feature off (no idle or age eviction, no
/// health checks, no leak detection, no cleanup) and a 1 s acquire timeout, for tests
/// that turn on only what they exercise.
pub fn quiet(max_connections: usize, max_per_user: usize) -> EnhancedPoolConfig {
    EnhancedPoolConfig {
        max_connections,
        max_per_user,
        acquire_timeout_ms: 1_000,
        idle_timeout_ms: 0,
        max_connection_age_ms: 0,
        health_check_enabled: false,
        health_check_interval_ms: 0,
        leak_detection_enabled: false,
        leak_detection_threshold_ms: 0,
        auto_cleanup_enabled: false,
        cleanup_interval_ms: 0,
    }
}

/// A quiet pool of one connection (the value 7) for "alice", with the given fairness
/// bound: the shape of the waiting-path tests.
pub fn one_connection(bound: Duration) -> EnhancedConnectionPool<u32> {
    let pool = EnhancedConnectionPool::builder(quiet(4, 4))
        .fairness_bound(bound)
        .build()
        .unwrap();
    pool.add_connection_sync(7, "alice", ConnectionMetadata::for_user("alice"))
        .unwrap();
    pool
}

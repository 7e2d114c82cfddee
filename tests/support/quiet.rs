//! A pool configuration with every background feature off (no idle or age eviction, no
//! health checks, no leak detection, no cleanup) and a 1 s acquire timeout, for tests
//! that turn on only what they exercise. Included with `#[path = "support/quiet.rs"]`.

use heliosdb_pool::EnhancedPoolConfig;

/// The quiet configuration with these capacities.
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

//! A sweeper pass with nothing to report allocates nothing (counting allocator), even
//! over a pool with idle and borrowed connections.

use heliosdb_pool::{ConnectionMetadata, EnhancedConnectionPool, EnhancedPoolConfig};

#[path = "support/alloc_counter.rs"]
mod alloc_counter;

#[global_allocator]
static GLOBAL: alloc_counter::Counting = alloc_counter::Counting;

#[test]
fn a_quiet_sweep_pass_allocates_nothing() {
    let config = EnhancedPoolConfig {
        max_connections: 1_000,
        max_per_user: 100,
        idle_timeout_ms: 600_000,
        max_connection_age_ms: 3_600_000,
        leak_detection_enabled: true,
        leak_detection_threshold_ms: 60_000,
        ..EnhancedPoolConfig::default()
    };
    // A sweep interval far beyond the test, so only our passes run.
    let pool = EnhancedConnectionPool::builder(config)
        .sweep_interval(std::time::Duration::from_secs(3_600))
        .health_check(|_: &u32| Ok(()))
        .build()
        .unwrap();
    for user in ["alice", "bob", "carol"] {
        for _ in 0..50 {
            pool.add_connection_sync(0u32, user, ConnectionMetadata::for_user(user))
                .unwrap();
        }
    }
    let held: Vec<_> = (0..20).map(|_| pool.try_acquire("bob").unwrap()).collect();
    pool.sweep_now().unwrap(); // first sight of each connection
    let allocations = alloc_counter::count_allocations(|| {
        for _ in 0..100 {
            pool.sweep_now().unwrap();
        }
    });
    assert_eq!(allocations, 0);
    assert_eq!(pool.stats().sweep.passes, 101);
    drop(held);
}

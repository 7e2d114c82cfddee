//! A sweeper pass with nothing to report allocates nothing (counting allocator), even
//! over a pool with idle and borrowed connections.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use heliosdb_pool::{ConnectionMetadata, EnhancedConnectionPool, EnhancedPoolConfig};

struct Counting;
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: forwards every call unchanged to the system allocator; the counter is a
// side effect that allocates nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.try_with(Cell::get).unwrap_or(false) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

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
    pool.sweep_now(); // first sight of each connection
    COUNTING.with(|c| c.set(true));
    for _ in 0..100 {
        pool.sweep_now();
    }
    COUNTING.with(|c| c.set(false));
    assert_eq!(ALLOCATIONS.load(Ordering::Relaxed), 0);
    assert_eq!(pool.stats().sweep.passes, 101);
    drop(held);
}

//! The hot path allocates nothing: a counting global allocator sees zero heap
//! allocations across 100k acquire/release cycles of each form, after warm-up.

use heliosdb_pool::{ConnectionMetadata, EnhancedConnectionPool, EnhancedPoolConfig};

#[path = "support/alloc_counter.rs"]
mod alloc_counter;

use alloc_counter::count_allocations;

#[global_allocator]
static GLOBAL: alloc_counter::Counting = alloc_counter::Counting;

const CYCLES: usize = 100_000;

#[test]
fn acquire_and_release_allocate_nothing() {
    let pool = EnhancedConnectionPool::new(EnhancedPoolConfig::default());
    for _ in 0..2 {
        pool.add_connection_sync(0u64, "alice", ConnectionMetadata::for_user("alice"))
            .unwrap();
    }
    // Warm-up: first use on this thread registers its tag and arc-swap's debt slot.
    for _ in 0..100 {
        drop(pool.try_acquire("alice").unwrap());
        drop(pool.blocking_acquire("alice").unwrap());
    }
    // The counter itself works: an allocation inside the window is seen.
    assert_eq!(count_allocations(|| drop(Box::new(1u8))), 1);

    let try_form = count_allocations(|| {
        for _ in 0..CYCLES {
            let mut guard = pool.try_acquire("alice").unwrap();
            *guard += 1;
        }
    });
    let blocking_form = count_allocations(|| {
        for _ in 0..CYCLES {
            let mut guard = pool.blocking_acquire("alice").unwrap();
            *guard += 1;
        }
    });
    let two_in_flight = count_allocations(|| {
        for _ in 0..CYCLES {
            let a = pool.try_acquire("alice").unwrap();
            let b = pool.blocking_acquire("alice").unwrap();
            drop((a, b));
        }
    });
    let raw_handles = count_allocations(|| {
        for _ in 0..CYCLES {
            let handle = pool.try_acquire("alice").unwrap().into_raw_handle();
            pool.release_raw_handle(handle).unwrap();
        }
    });
    assert_eq!(
        (try_form, blocking_form, two_in_flight, raw_handles),
        (0, 0, 0, 0),
        "heap allocations per form over {CYCLES} cycles"
    );
    assert_eq!(pool.stats().acquires, (200 + 5 * CYCLES) as u64);
}

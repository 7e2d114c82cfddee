//! The hot path allocates nothing: a counting global allocator sees zero heap
//! allocations across 100k acquire/release cycles of each form, after warm-up, nor
//! across 100k `try_acquire` misses.

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
    // The counter itself works: an allocation inside the window is seen (`black_box`:
    // an optimized build may otherwise drop the box's allocation altogether).
    assert_eq!(
        count_allocations(|| drop(std::hint::black_box(Box::new(1u8)))),
        1
    );

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
    // With validation on borrow (a health check set), steady use allocates nothing
    // either: the connection is never idle long enough to be checked.
    let validating = EnhancedConnectionPool::builder(EnhancedPoolConfig::default())
        .health_check(|_: &u64| Ok(()))
        .build()
        .unwrap();
    validating
        .add_connection_sync(0u64, "alice", ConnectionMetadata::for_user("alice"))
        .unwrap();
    for _ in 0..100 {
        drop(validating.try_acquire("alice").unwrap());
    }
    let validated = count_allocations(|| {
        for _ in 0..CYCLES {
            let mut guard = validating.try_acquire("alice").unwrap();
            *guard += 1;
        }
    });
    assert_eq!(validated, 0, "with validation on borrow");
    assert_eq!(
        validating.stats().health_checks,
        0,
        "steady use is not checked"
    );
    // In the same test: the counter is process-wide, so windows must not overlap.
    a_try_acquire_miss_allocates_nothing();
}

fn a_try_acquire_miss_allocates_nothing() {
    let pool = EnhancedConnectionPool::new(EnhancedPoolConfig::default());
    pool.add_connection_sync(0u64, "alice", ConnectionMetadata::for_user("alice"))
        .unwrap();
    let held = pool.try_acquire("alice").unwrap();
    // Warm-up, as above.
    for _ in 0..100 {
        assert!(pool.try_acquire("alice").is_err());
    }
    // A caller that retries in a loop must not allocate per miss: the error carries
    // the pool's own copy of the user's name.
    let misses = count_allocations(|| {
        for _ in 0..CYCLES {
            match pool.try_acquire("alice") {
                Err(heliosdb_pool::Error::NoIdleConnection { in_use, .. }) => {
                    assert_eq!(in_use, 1)
                }
                other => panic!("{:?}", other.map(|c| *c)),
            }
        }
    });
    assert_eq!(misses, 0, "heap allocations over {CYCLES} misses");
    drop(held);
}

//! The hot path allocates nothing: a counting global allocator sees zero heap
//! allocations across 100k acquire/release cycles of each form, after warm-up.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use heliosdb_pool::{ConnectionMetadata, EnhancedConnectionPool, EnhancedPoolConfig};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    // Count only the measuring thread: the test harness allocates on its own threads.
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
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.try_with(Cell::get).unwrap_or(false) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn count_allocations(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.load(Ordering::Relaxed) - before
}

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

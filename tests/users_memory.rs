//! A service that takes user names from its clients cannot make the pool grow without
//! limit: 100,000 distinct names pass through a pool with `max_users` 64, and the heap
//! it holds after the last name is what it held after the first thousand (a counting
//! global allocator measures live bytes), while users are retired and their partitions
//! reused. One test in its own binary, so nothing else allocates meanwhile.

use std::time::{Duration, Instant};

use heliosdb_pool::{ConnectionMetadata, EnhancedConnectionPool};

#[path = "support/alloc_counter.rs"]
mod alloc_counter;
#[path = "support/common.rs"]
mod common;

#[global_allocator]
static GLOBAL: alloc_counter::Counting = alloc_counter::Counting;

const NAMES: usize = 100_000;
const MAX_USERS: usize = 64;

#[test]
fn a_hundred_thousand_names_leave_memory_and_lookups_bounded() {
    let pool = EnhancedConnectionPool::<u64>::builder(common::quiet(8, 2))
        .max_users(MAX_USERS)
        .retire_users_after(Duration::ZERO)
        .build()
        .unwrap();
    let mut name = String::with_capacity(32);
    let mut live_after_warmup = 0;
    let mut batch_started = Instant::now();
    let mut batch_micros = Vec::new();
    for i in 0..NAMES {
        name.clear();
        name.push_str("client-");
        name.push_str(&i.to_string());
        let id = match pool.add_connection_sync(
            i as u64,
            name.as_str(),
            ConnectionMetadata::default(),
        ) {
            Ok(id) => id,
            Err(e) => panic!("name {i}: {e}"),
        };
        let conn = pool.try_acquire(&name).unwrap();
        assert_eq!((conn.user(), *conn), (name.as_str(), i as u64));
        drop(conn);
        pool.remove_connection(id).unwrap();
        if i % (MAX_USERS / 2) == MAX_USERS / 2 - 1 {
            // Two passes: the first sees the users vacant, the second retires them.
            pool.sweep_now().unwrap();
            pool.sweep_now().unwrap();
            assert!(pool.stats().users.len() <= MAX_USERS / 2, "at name {i}");
        }
        if i == 999 {
            live_after_warmup = alloc_counter::live_bytes();
        }
        if i % 10_000 == 9_999 {
            batch_micros.push(batch_started.elapsed().as_micros() / 10_000);
            batch_started = Instant::now();
        }
    }
    let growth = alloc_counter::live_bytes() - live_after_warmup;
    let stats = pool.stats();
    eprintln!(
        "{NAMES} names: live heap growth after the first 1,000: {growth} bytes; \
         users now {}, retired {}; mean us per name (add + acquire + remove), by 10k batch: {batch_micros:?}",
        stats.users.len(),
        stats.users_retired
    );
    assert!(stats.users_retired as usize >= NAMES - MAX_USERS);
    // One partition is about 1.5 KiB here; 99,000 more names kept would be ~150 MB.
    assert!(
        growth < 64 * 1024,
        "live heap grew by {growth} bytes over {} names",
        NAMES - 1_000
    );
}

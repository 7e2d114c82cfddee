//! Acquire cost independent of the names a pool has seen (bounded users): a thread
//! that alternates between 64 live users, so that every acquire looks its user up in
//! the map (no affinity), in pools that first saw and retired 0, 10,000 and 100,000
//! other names. Flat medians across the three mean the cost does not grow with the
//! names ever seen.
//!
//! `cargo bench --bench users`

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use heliosdb_pool::{ConnectionMetadata, EnhancedConnectionPool, EnhancedPoolConfig};

const LIVE_USERS: usize = 64;

/// A pool with `LIVE_USERS` users of one connection each, after `seen` other names
/// came and were retired.
fn pool_after(seen: usize) -> (EnhancedConnectionPool<u64>, Vec<String>) {
    let config = EnhancedPoolConfig {
        max_connections: 256,
        max_per_user: 2,
        ..EnhancedPoolConfig::default()
    };
    let pool = EnhancedConnectionPool::<u64>::builder(config)
        .max_users(2 * LIVE_USERS)
        .retire_users_after(Duration::ZERO)
        .sweep_interval(Duration::from_secs(3_600))
        .build()
        .expect("a valid config");
    for i in 0..seen {
        let id = pool
            .add_connection_sync(0, format!("gone-{i}"), ConnectionMetadata::default())
            .expect("room for a passing name");
        pool.remove_connection(id).expect("its own connection");
        if i % 32 == 31 {
            // Seen vacant, then retired.
            pool.sweep_now().expect("not from a callback");
            pool.sweep_now().expect("not from a callback");
        }
    }
    let live: Vec<String> = (0..LIVE_USERS).map(|i| format!("live-{i}")).collect();
    for user in &live {
        pool.add_connection_sync(0, user.as_str(), ConnectionMetadata::default())
            .expect("room for the live users");
    }
    (pool, live)
}

fn lookup_after_names_seen(c: &mut Criterion) {
    let mut group = c.benchmark_group("users/lookup_after_names_seen");
    for seen in [0, 10_000, 100_000] {
        let (pool, live) = pool_after(seen);
        let mut next = 0;
        group.bench_function(BenchmarkId::from_parameter(seen), |b| {
            b.iter(|| {
                next = (next + 1) % LIVE_USERS;
                drop(pool.try_acquire(&live[next]).expect("an idle connection"));
            })
        });
    }
    group.finish();
}

criterion_group!(benches, lookup_after_names_seen);
criterion_main!(benches);

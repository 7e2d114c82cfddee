//! Single-thread acquire+release of this pool against the floor: a bare crossbeam
//! `ArrayQueue` pop+push cycle over the same number of items, in the same run, so the
//! result is a ratio that survives a noisy machine.
//!
//! `cargo bench --bench hot_path`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use crossbeam_queue::ArrayQueue;
use heliosdb_pool::{ConnectionMetadata, EnhancedConnectionPool, EnhancedPoolConfig};

const CONNECTIONS: usize = 8;

fn hot_path(c: &mut Criterion) {
    let mut group = c.benchmark_group("hot_path");

    let queue = ArrayQueue::new(CONNECTIONS);
    for i in 0..CONNECTIONS as u64 {
        queue.push(i).unwrap();
    }
    group.bench_function("floor: ArrayQueue pop+push", |b| {
        b.iter(|| {
            let item = queue.pop().unwrap();
            black_box(&item);
            queue.push(item).unwrap();
        })
    });

    // Leak timestamps and call sites are recorded on every borrow (always on).
    let pool = EnhancedConnectionPool::new(EnhancedPoolConfig {
        max_connections: CONNECTIONS,
        max_per_user: CONNECTIONS,
        ..EnhancedPoolConfig::default()
    });
    for _ in 0..CONNECTIONS {
        pool.add_connection_sync(0u64, "bench", ConnectionMetadata::for_user("bench"))
            .unwrap();
    }
    group.bench_function("heliosdb: try_acquire+drop", |b| {
        b.iter(|| {
            let guard = pool.try_acquire(black_box("bench")).unwrap();
            black_box(&*guard);
        })
    });
    group.bench_function("heliosdb: blocking_acquire+drop", |b| {
        b.iter(|| {
            let guard = pool.blocking_acquire(black_box("bench")).unwrap();
            black_box(&*guard);
        })
    });
    group.finish();
}

criterion_group!(benches, hot_path);
criterion_main!(benches);

//! The sweeper's cost: one pass over 1k, 10k, 100k and 1M occupied slots (it must be
//! linear in slots), and the hot path with the sweeper running every 1 ms against no
//! sweeper at all, in the same run.
//!
//! `cargo bench --bench sweeper`

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use heliosdb_pool::{ConnectionMetadata, EnhancedConnectionPool, EnhancedPoolConfig};

/// A pool with every slot holding a connection: `users` users of `per_user` each, all
/// idle, every background feature on (so a pass does all its checks), and a sweeper
/// interval far beyond the bench so only the measured passes run.
fn populated(slots: usize) -> EnhancedConnectionPool<u64> {
    let per_user = slots.min(1_000);
    let config = EnhancedPoolConfig {
        max_connections: slots,
        max_per_user: per_user,
        idle_timeout_ms: 600_000,
        max_connection_age_ms: 3_600_000,
        leak_detection_enabled: true,
        leak_detection_threshold_ms: 60_000,
        health_check_enabled: true,
        health_check_interval_ms: 3_600_000,
        ..EnhancedPoolConfig::default()
    };
    let pool = EnhancedConnectionPool::builder(config)
        .sweep_interval(Duration::from_secs(3_600))
        .health_check(|_: &u64| Ok(()))
        .build()
        .unwrap();
    for user in 0..slots / per_user {
        let name = format!("user{user}");
        for i in 0..per_user {
            pool.add_connection_sync(i as u64, name.as_str(), ConnectionMetadata::for_user(&name))
                .unwrap();
        }
    }
    // The first pass meets every connection; the measured ones are steady state.
    pool.sweep_now().unwrap();
    pool
}

fn pass_cost(c: &mut Criterion) {
    let mut group = c.benchmark_group("sweep_pass");
    group.sample_size(20);
    for slots in [1_000usize, 10_000, 100_000, 1_000_000] {
        let pool = populated(slots);
        // A tenth of them borrowed, so the leak scan has borrows to validate.
        let held: Vec<heliosdb_pool::RawHandle> = (0..slots / 10)
            .map(|i| {
                pool.try_acquire(&format!("user{}", i / slots.min(1_000)))
                    .unwrap()
                    .into_raw_handle()
            })
            .collect();
        group.throughput(Throughput::Elements(slots as u64));
        group.bench_with_input(BenchmarkId::from_parameter(slots), &slots, |b, _| {
            b.iter(|| pool.sweep_now().unwrap())
        });
        for handle in held {
            pool.release_raw_handle(handle).unwrap();
        }
    }
    group.finish();
}

fn hot_path_under_sweeper(c: &mut Criterion) {
    let mut group = c.benchmark_group("hot_path_under_sweeper");
    let base = EnhancedPoolConfig {
        max_connections: 8,
        max_per_user: 8,
        ..EnhancedPoolConfig::default()
    };
    let quiet = EnhancedPoolConfig {
        idle_timeout_ms: 0,
        max_connection_age_ms: 0,
        health_check_enabled: false,
        leak_detection_enabled: false,
        auto_cleanup_enabled: false,
        ..base.clone()
    };
    let without = EnhancedConnectionPool::new(quiet);
    let with = EnhancedConnectionPool::builder(base.clone())
        .sweep_interval(Duration::from_millis(1))
        .build()
        .unwrap();
    // Same configuration, sweeper thread present but asleep: separates the cost of the
    // sweeper's work from that of a different pool layout.
    let asleep = EnhancedConnectionPool::builder(base)
        .sweep_interval(Duration::from_secs(3_600))
        .build()
        .unwrap();
    for pool in [&without, &with, &asleep] {
        for i in 0..8u64 {
            pool.add_connection_sync(i, "bench", ConnectionMetadata::for_user("bench"))
                .unwrap();
        }
    }
    group.bench_function("no sweeper", |b| {
        b.iter(|| black_box(*without.try_acquire(black_box("bench")).unwrap()))
    });
    group.bench_function("sweeper every 1 ms", |b| {
        b.iter(|| black_box(*with.try_acquire(black_box("bench")).unwrap()))
    });
    group.bench_function("sweeper asleep", |b| {
        b.iter(|| black_box(*asleep.try_acquire(black_box("bench")).unwrap()))
    });
    group.finish();
    assert!(
        with.stats().sweep.passes > 0,
        "the sweeper ran during the bench"
    );
}

criterion_group!(benches, pass_cost, hot_path_under_sweeper);
criterion_main!(benches);

//! Single-thread acquire+release of this pool against the floor, a bare crossbeam
//! `ArrayQueue` pop+push cycle over the same number of items, in the same run, so the
//! result is a ratio that survives a noisy machine. (`peers` adds the other pools.)
//!
//! `cargo bench --bench hot_path`

mod common;

use criterion::{Criterion, criterion_group, criterion_main};

/// Connections in the pool, items in the queue.
const CONNECTIONS: usize = 8;

fn hot_path(c: &mut Criterion) {
    let mut group = c.benchmark_group("hot_path");
    common::bench_floor_and_pool(&mut group, CONNECTIONS);
    group.finish();
}

criterion_group!(benches, hot_path);
criterion_main!(benches);

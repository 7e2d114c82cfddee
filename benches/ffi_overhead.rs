//! The C ABI's overhead: single-thread acquire+release through the exported C
//! functions (`heliosdb_pool_try_acquire` + `heliosdb_pool_release`, called from Rust
//! exactly as C calls them) against the Rust API (`try_acquire` + drop) in the same
//! run, on pools of the same shape (8 connections of one user, the default config).
//! Target (issue 10): the C path at most 1.15x the Rust path. `ffi-tests/bench_c_api.c`
//! (`scripts/bench-c-api.sh`) times the C API from a C program, and
//! `ffi-tests/bench_soci.cpp` (`scripts/bench-soci.sh`) from C and C++ next to SOCI.
//!
//! `cargo bench --bench ffi_overhead`

use std::ffi::c_void;
use std::hint::black_box;
use std::mem::{MaybeUninit, size_of};
use std::ptr;

use ::heliosdb_pool::Status;
use ::heliosdb_pool::ffi::*;
use ::heliosdb_pool::{ConnectionMetadata, EnhancedConnectionPool, EnhancedPoolConfig};
use criterion::{Criterion, criterion_group, criterion_main};

const CONNECTIONS: usize = 8;

fn settings() -> EnhancedPoolConfig {
    EnhancedPoolConfig {
        max_connections: CONNECTIONS,
        max_per_user: CONNECTIONS,
        ..EnhancedPoolConfig::default()
    }
}

fn ffi_overhead(c: &mut Criterion) {
    let mut group = c.benchmark_group("ffi_overhead");

    let pool = EnhancedConnectionPool::new(settings());
    for _ in 0..CONNECTIONS {
        pool.add_connection_sync(0u64, "bench", ConnectionMetadata::for_user("bench"))
            .unwrap();
    }
    group.bench_function("rust: try_acquire+drop", |b| {
        b.iter(|| {
            let guard = pool.try_acquire(black_box("bench")).unwrap();
            black_box(&*guard);
        })
    });

    // The same pool shape through the C ABI: the defaults with the same sizes.
    let mut cfg = MaybeUninit::<heliosdb_pool_config>::uninit();
    let mut c_pool: *mut heliosdb_pool = ptr::null_mut();
    // SAFETY: valid out-pointers of the right sizes; the connections are dummy non-NULL
    // pointers that are never dereferenced (no close callback).
    unsafe {
        assert_eq!(
            heliosdb_pool_config_init(cfg.as_mut_ptr(), size_of::<heliosdb_pool_config>()),
            Status::Ok
        );
        let cfg = cfg.assume_init_mut();
        cfg.max_connections = CONNECTIONS;
        cfg.max_per_user = CONNECTIONS;
        assert_eq!(heliosdb_pool_new(cfg, &mut c_pool), Status::Ok);
        for i in 1..=CONNECTIONS {
            let conn = ptr::without_provenance_mut::<c_void>(i * 8);
            let status = heliosdb_pool_add_connection(
                c_pool,
                conn,
                c"bench".as_ptr(),
                ptr::null(),
                ptr::null_mut(),
            );
            assert_eq!(status, Status::Ok);
        }
    }
    let mut lease = MaybeUninit::<heliosdb_lease>::uninit();
    group.bench_function("c abi: try_acquire+release", |b| {
        b.iter(|| {
            // SAFETY: a live pool, a NUL-terminated user, a writable lease that the
            // successful acquire initialized before release reads it.
            unsafe {
                let s = heliosdb_pool_try_acquire(
                    black_box(c_pool),
                    black_box(c"bench".as_ptr()),
                    lease.as_mut_ptr(),
                );
                debug_assert_eq!(s, Status::Ok);
                black_box(lease.assume_init_ref().connection);
                let s = heliosdb_pool_release(c_pool, lease.as_ptr());
                debug_assert_eq!(s, Status::Ok);
                black_box(s);
            }
        })
    });
    group.bench_function(
        "c abi: HELIOSDB_POOL_TRY_ACQUIRE (call site)+release",
        |b| {
            b.iter(|| {
                // SAFETY: as above; the call-site strings are 'static.
                unsafe {
                    let s = heliosdb_pool_try_acquire_at(
                        black_box(c_pool),
                        black_box(c"bench".as_ptr()),
                        lease.as_mut_ptr(),
                        c"bench.c".as_ptr(),
                        42,
                        c"main".as_ptr(),
                    );
                    debug_assert_eq!(s, Status::Ok);
                    let s = heliosdb_pool_release(c_pool, lease.as_ptr());
                    black_box(s);
                }
            })
        },
    );
    group.finish();
    // SAFETY: a live pool with no lease out.
    unsafe { heliosdb_pool_free(c_pool) };
}

criterion_group!(benches, ffi_overhead);
criterion_main!(benches);

//! Single thread, acquire+release, every peer in the same run over the same no-op
//! connection and the same pool size (`POOL_SIZE`), so the results are ratios:
//!
//! - floor: a bare crossbeam `ArrayQueue` pop+push;
//! - `Mutex<Vec>` pop+push (std mutex, uncontended);
//! - this pool: `try_acquire`+drop and `blocking_acquire`+drop, default settings (leak
//!   tracking on, the sweeper thread running);
//! - this pool through the C ABI: `heliosdb_pool_try_acquire` + `heliosdb_pool_release`
//!   and `heliosdb_pool_acquire` + release (see `c_abi`);
//! - r2d2 0.8 `get`+drop, with `test_on_check_out` off, and at its default (on);
//! - deadpool 0.12 managed `get`+drop, polled once by a no-op-waker executor
//!   (`common::block_on`), so no runtime is measured;
//! - two object pools that neither wait nor track leaks (a miss allocates a new object
//!   instead of waiting, and nothing records who holds what): opool 0.2's concurrent
//!   `Pool` (a crossbeam `ArrayQueue` plus an allocator) `get`+drop, prefilled with
//!   `POOL_SIZE` objects, and lockfree-object-pool 0.1's `LinearObjectPool` `pull`+drop
//!   (its reset closure a no-op).
//!
//! `cargo bench --bench peers` (smoke: add `-- --warm-up-time 1 --measurement-time 2`).

mod common;

use std::hint::black_box;
use std::sync::Mutex;

use criterion::{Criterion, criterion_group, criterion_main};

use common::{NoopConn, bench_floor_and_pool, block_on, deadpool_pool, r2d2_pool};

/// Connections in every pool.
const POOL_SIZE: usize = 8;

/// opool's object factory: the same no-op connection as every other peer.
struct NoopAllocator;

impl opool::PoolAllocator<NoopConn> for NoopAllocator {
    fn allocate(&self) -> NoopConn {
        0
    }
}

fn peers(c: &mut Criterion) {
    let mut group = c.benchmark_group("peers");

    bench_floor_and_pool(&mut group, POOL_SIZE);

    let vec = Mutex::new((0..POOL_SIZE as u64).collect::<Vec<_>>());
    group.bench_function("Mutex<Vec> pop+push", |b| {
        b.iter(|| {
            let item = vec.lock().unwrap().pop().unwrap();
            black_box(&item);
            vec.lock().unwrap().push(item);
        })
    });

    c_abi::bench(&mut group);

    let r2d2_off = r2d2_pool(POOL_SIZE, false);
    group.bench_function("r2d2: get+drop (test_on_check_out off)", |b| {
        b.iter(|| {
            let conn = r2d2_off.get().unwrap();
            black_box(&*conn);
        })
    });
    drop(r2d2_off);

    let r2d2_default = r2d2_pool(POOL_SIZE, true);
    group.bench_function("r2d2: get+drop (default, test_on_check_out on)", |b| {
        b.iter(|| {
            let conn = r2d2_default.get().unwrap();
            black_box(&*conn);
        })
    });
    drop(r2d2_default);

    let deadpool = deadpool_pool(POOL_SIZE);
    group.bench_function("deadpool: get+drop (no-op executor)", |b| {
        b.iter(|| {
            let obj = block_on(deadpool.get()).unwrap();
            black_box(&*obj);
        })
    });
    drop(deadpool);

    let opool = opool::Pool::new_prefilled(POOL_SIZE, NoopAllocator);
    group.bench_function(
        "opool: get+drop (object pool: no wait, no leak tracking)",
        |b| {
            b.iter(|| {
                let obj = opool.get();
                black_box(&*obj);
            })
        },
    );
    drop(opool);

    let linear = lockfree_object_pool::LinearObjectPool::<NoopConn>::new(|| 0, |_| {});
    group.bench_function(
        "lockfree-object-pool: LinearObjectPool pull+drop (no wait, no leak tracking)",
        |b| {
            b.iter(|| {
                let obj = linear.pull();
                black_box(&*obj);
            })
        },
    );
    drop(linear);

    group.finish();
}

/// The C-ABI row: this pool through `heliosdb_pool::ffi`, as a C caller uses it (user
/// passed as a C string and looked up on every call, lease struct out, status code
/// back). HOOK: if the C ABI's signatures change, this is the only function to update.
mod c_abi {
    use std::ffi::CStr;
    use std::hint::black_box;
    use std::mem::MaybeUninit;
    use std::ptr;

    use ::heliosdb_pool::Status;
    use ::heliosdb_pool::ffi::{
        heliosdb_lease, heliosdb_pool, heliosdb_pool_acquire, heliosdb_pool_add_connection,
        heliosdb_pool_config, heliosdb_pool_config_init, heliosdb_pool_free, heliosdb_pool_new,
        heliosdb_pool_release, heliosdb_pool_try_acquire,
    };
    use criterion::BenchmarkGroup;
    use criterion::measurement::WallTime;

    use super::POOL_SIZE;

    const USER: &CStr = c"bench";

    /// Builds a C pool of `POOL_SIZE` connections with the default settings (as the
    /// Rust rows) and no callbacks; the "connections" are non-NULL dangling pointers.
    fn new_pool() -> *mut heliosdb_pool {
        let mut config = MaybeUninit::<heliosdb_pool_config>::uninit();
        // SAFETY: `config` is writable for its size; init fills every field.
        let status = unsafe {
            heliosdb_pool_config_init(config.as_mut_ptr(), size_of::<heliosdb_pool_config>())
        };
        assert_eq!(status, Status::Ok);
        // SAFETY: initialized just above.
        let mut config = unsafe { config.assume_init() };
        config.max_connections = POOL_SIZE;
        config.max_per_user = POOL_SIZE;
        let mut pool = ptr::null_mut();
        // SAFETY: `config` came from the init function; `pool` is writable.
        assert_eq!(unsafe { heliosdb_pool_new(&config, &mut pool) }, Status::Ok);
        for i in 1..=POOL_SIZE {
            let conn = ptr::without_provenance_mut(i * 16);
            // SAFETY: live pool, NUL-terminated user, NULL metadata and id; with no
            // `close` callback the pool never dereferences `conn`.
            let status = unsafe {
                heliosdb_pool_add_connection(
                    pool,
                    conn,
                    USER.as_ptr(),
                    ptr::null(),
                    ptr::null_mut(),
                )
            };
            assert_eq!(status, Status::Ok);
        }
        pool
    }

    pub fn bench(group: &mut BenchmarkGroup<'_, WallTime>) {
        let pool = new_pool();
        let mut lease = MaybeUninit::<heliosdb_lease>::uninit();
        group.bench_function("heliosdb C ABI: try_acquire+release", |b| {
            b.iter(|| {
                // SAFETY: live pool, NUL-terminated user, writable lease; the lease is
                // released once, right after it is filled.
                unsafe {
                    let s = heliosdb_pool_try_acquire(
                        pool,
                        black_box(USER.as_ptr()),
                        lease.as_mut_ptr(),
                    );
                    assert!(s == Status::Ok);
                    black_box(lease.assume_init_ref().connection);
                    let s = heliosdb_pool_release(pool, lease.as_ptr());
                    assert!(s == Status::Ok);
                }
            })
        });
        group.bench_function("heliosdb C ABI: acquire+release", |b| {
            b.iter(|| {
                // SAFETY: as above (60 s timeout: never reached, the pool has idle connections).
                unsafe {
                    let s = heliosdb_pool_acquire(
                        pool,
                        black_box(USER.as_ptr()),
                        60_000,
                        lease.as_mut_ptr(),
                    );
                    assert!(s == Status::Ok);
                    black_box(lease.assume_init_ref().connection);
                    let s = heliosdb_pool_release(pool, lease.as_ptr());
                    assert!(s == Status::Ok);
                }
            })
        });
        // SAFETY: live pool, no lease out, no concurrent call.
        unsafe { heliosdb_pool_free(pool) };
    }
}

criterion_group!(benches, peers);
criterion_main!(benches);

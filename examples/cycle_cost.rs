//! Runs N acquire+release cycles of one variant, for instruction counting under
//! `valgrind --tool=callgrind`, whose counts (unlike times) do not move with the load
//! of a shared machine. `scripts/instruction-counts.sh` runs each variant at two N and
//! divides the difference, which cancels the setup.
//!
//! `cargo run --release --example cycle_cost -- <variant> <cycles>`, the variant one of
//! `floor` (a bare crossbeam `ArrayQueue` pop+push), `rust` (`try_acquire` + drop),
//! `rust-blocking` (`blocking_acquire` + drop),
//! `rust-reset` (the same with a `reset` hook that does nothing: the hook's own cost),
//! `c` and `c-site` (the C calls, without and with a call site), `opool` and
//! `lockfree` (two object pools that neither wait nor track leaks: opool's `get`,
//! lockfree-object-pool's `LinearObjectPool::pull`, each + drop).

use std::hint::black_box;
use std::mem::MaybeUninit;

use crossbeam_queue::ArrayQueue;
use heliosdb_pool::ffi::{
    heliosdb_lease, heliosdb_pool_add_connection, heliosdb_pool_config, heliosdb_pool_config_init,
    heliosdb_pool_free, heliosdb_pool_new, heliosdb_pool_release, heliosdb_pool_try_acquire,
    heliosdb_pool_try_acquire_at,
};
use heliosdb_pool::{ConnectionMetadata, EnhancedConnectionPool, EnhancedPoolConfig, Status};

const CONNECTIONS: usize = 8;

fn main() {
    let mut args = std::env::args().skip(1);
    let variant = args.next().unwrap_or_default();
    let cycles: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(100_000);
    match variant.as_str() {
        "floor" => floor(cycles),
        "rust" => rust(cycles, false),
        "rust-blocking" => rust_blocking(cycles),
        "rust-reset" => rust(cycles, true),
        "c" => c_abi(cycles, false),
        "c-site" => c_abi(cycles, true),
        "opool" => opool(cycles),
        "lockfree" => lockfree(cycles),
        _ => {
            eprintln!(
                "usage: cycle_cost <floor|rust|rust-blocking|rust-reset|c|c-site|opool|lockfree> <cycles>"
            );
            std::process::exit(2);
        }
    }
}

fn floor(cycles: u64) {
    let queue = ArrayQueue::new(CONNECTIONS);
    for i in 0..CONNECTIONS as u64 {
        queue.push(i).unwrap();
    }
    for _ in 0..cycles {
        let item = queue.pop().unwrap();
        black_box(&item);
        queue.push(item).unwrap();
    }
}

/// opool's object factory: a no-op `u64` connection.
struct NoopAllocator;

impl opool::PoolAllocator<u64> for NoopAllocator {
    fn allocate(&self) -> u64 {
        0
    }
}

fn opool(cycles: u64) {
    let pool = opool::Pool::new_prefilled(CONNECTIONS, NoopAllocator);
    for _ in 0..cycles {
        let obj = pool.get();
        black_box(&*obj);
    }
}

fn lockfree(cycles: u64) {
    let pool = lockfree_object_pool::LinearObjectPool::<u64>::new(|| 0, |_| {});
    for _ in 0..cycles {
        let obj = pool.pull();
        black_box(&*obj);
    }
}

/// The pool of the `rust` variants: `CONNECTIONS` no-op connections of one user, with
/// a `reset` hook that does nothing if `with_reset`.
fn rust_pool<C: Send + 'static>(
    connection: impl Fn(u64) -> C,
    with_reset: bool,
) -> EnhancedConnectionPool<C> {
    let mut builder = EnhancedConnectionPool::builder(EnhancedPoolConfig {
        max_connections: CONNECTIONS,
        max_per_user: CONNECTIONS,
        ..EnhancedPoolConfig::default()
    });
    if with_reset {
        builder = builder.reset(|conn: &mut C| {
            black_box(conn);
            Ok(())
        });
    }
    let pool = builder.build().unwrap();
    for i in 0..CONNECTIONS as u64 {
        pool.add_connection_sync(
            connection(i),
            "bench",
            ConnectionMetadata::for_user("bench"),
        )
        .unwrap();
    }
    pool
}

// Each form is measured as the only code that borrows from its pool's type (`u64`
// connections for `try_acquire`, `u32` for `blocking_acquire`): the compiler inlines
// a guard's drop into a caller only while few callers share it, so a program that
// drops guards of one type in many places may get it out of line (about 28 more
// instructions per cycle, measured with both forms on one type).
fn rust(cycles: u64, with_reset: bool) {
    let pool = rust_pool(|i| i, with_reset);
    for _ in 0..cycles {
        let guard = pool.try_acquire(black_box("bench")).unwrap();
        black_box(&*guard);
    }
}

fn rust_blocking(cycles: u64) {
    let pool = rust_pool(|i| i as u32, false);
    for _ in 0..cycles {
        let guard = pool.blocking_acquire(black_box("bench")).unwrap();
        black_box(&*guard);
    }
}

fn c_abi(cycles: u64, with_site: bool) {
    let mut config = MaybeUninit::<heliosdb_pool_config>::uninit();
    let mut pool = std::ptr::null_mut();
    // SAFETY: valid out-pointers of the right sizes; the connections are opaque words
    // the pool never dereferences (no close callback).
    unsafe {
        let size = size_of::<heliosdb_pool_config>();
        assert_eq!(
            heliosdb_pool_config_init(config.as_mut_ptr(), size),
            Status::Ok
        );
        let config = config.assume_init_mut();
        config.max_connections = CONNECTIONS;
        config.max_per_user = CONNECTIONS;
        assert_eq!(heliosdb_pool_new(config, &mut pool), Status::Ok);
        for i in 1..=CONNECTIONS {
            let conn = std::ptr::without_provenance_mut(i * 8);
            let status = heliosdb_pool_add_connection(
                pool,
                conn,
                c"bench".as_ptr(),
                std::ptr::null(),
                std::ptr::null_mut(),
            );
            assert_eq!(status, Status::Ok);
        }
    }
    let mut lease = MaybeUninit::<heliosdb_lease>::uninit();
    for _ in 0..cycles {
        // SAFETY: a live pool, NUL-terminated literals, a writable lease that the
        // successful acquire initialised before release reads it.
        unsafe {
            let status = if with_site {
                heliosdb_pool_try_acquire_at(
                    pool,
                    black_box(c"bench".as_ptr()),
                    lease.as_mut_ptr(),
                    c"bench.c".as_ptr(),
                    42,
                    c"main".as_ptr(),
                )
            } else {
                heliosdb_pool_try_acquire(pool, black_box(c"bench".as_ptr()), lease.as_mut_ptr())
            };
            assert_eq!(status, Status::Ok);
            assert_eq!(heliosdb_pool_release(pool, lease.as_ptr()), Status::Ok);
        }
    }
    // SAFETY: a live pool with no lease out.
    unsafe { heliosdb_pool_free(pool) };
}

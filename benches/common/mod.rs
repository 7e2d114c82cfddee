//! Shared by the peer benchmarks (`peers`, `contention`, `async_acquire`, `memory`):
//! the no-op connection, each peer's manager, a minimal executor, the fair
//! Mutex+Condvar baseline, the spin used as simulated work, and where results go.
//!
//! Every peer manages the same no-op connection (`NoopConn`, one `u64`) and does no
//! work in its create/recycle/validate hooks, so what is measured is each pool's own
//! bookkeeping.
#![allow(dead_code)] // Each bench binary uses part of this module.

use std::future::Future;
use std::hint::black_box;
use std::path::PathBuf;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use heliosdb_pool::{ConnectionMetadata, EnhancedConnectionPool, EnhancedPoolConfig};

/// The connection every pool hands out: one word, no behaviour.
pub type NoopConn = u64;

/// The user every benchmark borrows as.
pub const USER: &str = "bench";

/// This pool with `size` connections of one user and the default settings otherwise
/// (leak detection on, health checks on, so the sweeper thread runs). The fairness
/// bound is the default unless `HELIOSDB_BENCH_FAIRNESS_US` gives one in microseconds
/// (to measure its trade between throughput and fairness).
pub fn heliosdb_pool(size: usize) -> EnhancedConnectionPool<NoopConn> {
    let mut builder = EnhancedConnectionPool::builder(EnhancedPoolConfig {
        max_connections: size,
        max_per_user: size,
        // Waits in the contention runs must never time out.
        acquire_timeout_ms: 60_000,
        ..EnhancedPoolConfig::default()
    });
    if let Some(us) = std::env::var("HELIOSDB_BENCH_FAIRNESS_US")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        builder = builder.fairness_bound(std::time::Duration::from_micros(us));
    }
    let pool = builder.build().expect("a valid benchmark pool");
    for i in 0..size as u64 {
        pool.add_connection_sync(i, USER, ConnectionMetadata::for_user(USER))
            .expect("add_connection_sync");
    }
    pool
}

/// The rows every single-thread comparison starts with, registered in `group`: the
/// floor (a bare crossbeam `ArrayQueue` pop+push over `size` items) and this pool's
/// `try_acquire`+drop and `blocking_acquire`+drop over `size` connections (leak
/// timestamps and call sites recorded on every borrow).
pub fn bench_floor_and_pool(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    size: usize,
) {
    let queue = crossbeam_queue::ArrayQueue::new(size);
    for i in 0..size as u64 {
        queue.push(i).unwrap();
    }
    group.bench_function("floor: ArrayQueue pop+push", |b| {
        b.iter(|| {
            let item = queue.pop().unwrap();
            black_box(&item);
            queue.push(item).unwrap();
        })
    });
    let pool = heliosdb_pool(size);
    group.bench_function("heliosdb: try_acquire+drop", |b| {
        b.iter(|| {
            let guard = pool.try_acquire(black_box(USER)).unwrap();
            black_box(&*guard);
        })
    });
    group.bench_function("heliosdb: blocking_acquire+drop", |b| {
        b.iter(|| {
            let guard = pool.blocking_acquire(black_box(USER)).unwrap();
            black_box(&*guard);
        })
    });
}

// ---------------------------------------------------------------------------------
// r2d2 0.8

/// r2d2's manager: connect returns a fresh word; `is_valid` and `has_broken` do nothing.
#[derive(Debug, Default)]
pub struct R2d2Noop {
    next: AtomicU64,
}

impl r2d2::ManageConnection for R2d2Noop {
    type Connection = NoopConn;
    type Error = std::io::Error;

    fn connect(&self) -> Result<NoopConn, Self::Error> {
        Ok(self.next.fetch_add(1, Ordering::Relaxed))
    }

    fn is_valid(&self, conn: &mut NoopConn) -> Result<(), Self::Error> {
        black_box(conn);
        Ok(())
    }

    fn has_broken(&self, _conn: &mut NoopConn) -> bool {
        false
    }
}

/// An r2d2 pool of `size` connections, all opened before it returns (`min_idle` left
/// at its default, which is `max_size`). `test_on_check_out` is r2d2's default `true`
/// unless `test_on_check_out` is false; the reaper and timeouts are r2d2's defaults
/// except a long `connection_timeout` so contended waits never fail.
pub fn r2d2_pool(size: usize, test_on_check_out: bool) -> r2d2::Pool<R2d2Noop> {
    r2d2::Pool::builder()
        .max_size(size as u32)
        .test_on_check_out(test_on_check_out)
        .connection_timeout(Duration::from_secs(60))
        .build(R2d2Noop::default())
        .expect("r2d2 build")
}

// ---------------------------------------------------------------------------------
// deadpool 0.12 (managed)

/// deadpool's manager: create returns a fresh word; recycle does nothing.
#[derive(Debug, Default)]
pub struct DeadpoolNoop {
    next: AtomicU64,
}

impl deadpool::managed::Manager for DeadpoolNoop {
    type Type = NoopConn;
    type Error = std::io::Error;

    async fn create(&self) -> Result<NoopConn, Self::Error> {
        Ok(self.next.fetch_add(1, Ordering::Relaxed))
    }

    async fn recycle(
        &self,
        conn: &mut NoopConn,
        _metrics: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<Self::Error> {
        black_box(conn);
        Ok(())
    }
}

pub type DeadpoolPool = deadpool::managed::Pool<DeadpoolNoop>;

/// A deadpool pool of `size` objects, all created before it returns (deadpool creates
/// lazily, so this borrows `size` at once and returns them). Queue mode is deadpool's
/// default (FIFO); no timeouts (its default), so no runtime is needed.
pub fn deadpool_pool(size: usize) -> DeadpoolPool {
    let pool = deadpool::managed::Pool::builder(DeadpoolNoop::default())
        .max_size(size)
        .build()
        .expect("deadpool build");
    let held: Vec<_> = (0..size)
        .map(|_| block_on(pool.get()).expect("deadpool get"))
        .collect();
    drop(held);
    pool
}

// ---------------------------------------------------------------------------------
// bb8 0.9 (async only; tokio-bound)

/// bb8's manager: connect returns a fresh word; `is_valid` and `has_broken` do nothing.
#[derive(Debug, Default)]
pub struct Bb8Noop {
    next: AtomicU64,
}

impl bb8::ManageConnection for Bb8Noop {
    type Connection = NoopConn;
    type Error = std::io::Error;

    async fn connect(&self) -> Result<NoopConn, Self::Error> {
        Ok(self.next.fetch_add(1, Ordering::Relaxed))
    }

    async fn is_valid(&self, conn: &mut NoopConn) -> Result<(), Self::Error> {
        black_box(conn);
        Ok(())
    }

    fn has_broken(&self, _conn: &mut NoopConn) -> bool {
        false
    }
}

// ---------------------------------------------------------------------------------
// The minimal executor

/// Polls `fut` to completion on this thread with a no-op waker, spinning (with a
/// yield) while it is pending. For futures that are ready at once (an uncontended
/// pool), this is one poll and nothing else: the runtime costs nothing.
pub fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        thread::yield_now();
    }
}

/// Wakes a parked thread.
struct ThreadWaker(Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// A waker that unparks the current thread; build it once per thread and reuse it
/// with [`block_on_parking`], so the executor allocates nothing per call.
pub fn thread_waker() -> Waker {
    Waker::from(Arc::new(ThreadWaker(thread::current())))
}

/// Polls `fut` to completion on this thread, parking while it is pending; `waker`
/// (from [`thread_waker`]) unparks it. The executor for contended async peers driven
/// from plain threads.
pub fn block_on_parking<F: Future>(waker: &Waker, fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(waker);
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        thread::park();
    }
}

// ---------------------------------------------------------------------------------
// The fair Mutex+Condvar baseline

/// r2d2's structure without r2d2: a `Mutex<Vec>` of idle items and a `Condvar`, with
/// the waiter count tracked under the lock so a release calls `notify_one` only when
/// someone waits (std's `notify_one` makes a futex syscall even with no waiter, which
/// would make this baseline slower than it needs to be).
pub struct MutexCondvarPool {
    state: Mutex<MutexState>,
    available: Condvar,
}

struct MutexState {
    idle: Vec<NoopConn>,
    waiters: usize,
}

impl MutexCondvarPool {
    pub fn new(size: usize) -> Self {
        MutexCondvarPool {
            state: Mutex::new(MutexState {
                idle: (0..size as u64).collect(),
                waiters: 0,
            }),
            available: Condvar::new(),
        }
    }

    pub fn acquire(&self) -> NoopConn {
        let mut state = self.state.lock().unwrap();
        loop {
            if let Some(conn) = state.idle.pop() {
                return conn;
            }
            state.waiters += 1;
            state = self.available.wait(state).unwrap();
            state.waiters -= 1;
        }
    }

    pub fn release(&self, conn: NoopConn) {
        let mut state = self.state.lock().unwrap();
        state.idle.push(conn);
        let wake = state.waiters > 0;
        drop(state);
        if wake {
            self.available.notify_one();
        }
    }
}

// ---------------------------------------------------------------------------------
// Simulated work

/// Busy work of about `d` (calibrated once per process against the clock, so it costs
/// no clock read itself). `Duration::ZERO` does nothing.
pub struct Spin {
    iterations: u64,
}

impl Spin {
    pub fn calibrate(d: Duration) -> Spin {
        if d.is_zero() {
            return Spin { iterations: 0 };
        }
        // Measure a long run and scale; take the fastest of a few tries.
        let probe = 1_000_000u64;
        let mut best = Duration::MAX;
        for _ in 0..5 {
            let start = Instant::now();
            spin_iterations(probe);
            best = best.min(start.elapsed());
        }
        let per_iter = best.as_secs_f64() / probe as f64;
        Spin {
            iterations: (d.as_secs_f64() / per_iter).round().max(1.0) as u64,
        }
    }

    #[inline]
    pub fn run(&self) {
        if self.iterations != 0 {
            spin_iterations(self.iterations);
        }
    }
}

#[inline(never)]
fn spin_iterations(n: u64) {
    let mut x = 0u64;
    for i in 0..n {
        x = black_box(x.wrapping_add(i));
    }
    black_box(x);
}

// ---------------------------------------------------------------------------------
// Machine and output

/// Cores this process may use.
pub fn cores() -> usize {
    thread::available_parallelism().map_or(1, |n| n.get())
}

/// Thread counts to run: `HELIOSDB_BENCH_THREADS` (comma-separated) if set, else
/// 1, 2, 4, 8, and 16 when there are at least 16 cores.
pub fn thread_counts() -> Vec<usize> {
    if let Ok(list) = std::env::var("HELIOSDB_BENCH_THREADS") {
        let parsed: Vec<usize> = list
            .split(',')
            .filter_map(|s| s.trim().parse().ok())
            .filter(|&n| n > 0)
            .collect();
        if !parsed.is_empty() {
            return parsed;
        }
    }
    let mut counts = vec![1, 2, 4, 8];
    if cores() >= 16 {
        counts.push(16);
    }
    counts
}

/// Folder for this crate's own result files: `HELIOSDB_BENCH_OUT` if set, else
/// `$CARGO_TARGET_DIR/heliosdb-bench` or `target/heliosdb-bench`. Created if missing.
pub fn out_dir() -> PathBuf {
    let dir = std::env::var_os("HELIOSDB_BENCH_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("target"))
                .join("heliosdb-bench")
        });
    std::fs::create_dir_all(&dir).expect("create the benchmark output folder");
    dir
}

/// True when `name` passes criterion-style filters given on the command line (any
/// non-flag argument is a substring filter; none means everything). Flags that take a
/// value are skipped with their value.
pub fn selected(name: &str) -> bool {
    let mut filters = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg.starts_with("--") {
            let takes_value = matches!(
                arg.as_str(),
                "--warm-up-time"
                    | "--measurement-time"
                    | "--sample-size"
                    | "--save-baseline"
                    | "--baseline"
                    | "--load-baseline"
                    | "--noise-threshold"
                    | "--confidence-level"
                    | "--significance-level"
                    | "--nresamples"
                    | "--output-format"
                    | "--color"
                    | "--profile-time"
                    | "--plotting-backend"
            );
            if takes_value {
                args.next();
            }
        } else if !arg.starts_with('-') {
            filters.push(arg);
        }
    }
    filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()))
}

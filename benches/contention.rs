//! Contention: N threads (1, 2, 4, 8, and 16 on a machine with 16+ cores) borrow and
//! return connections as fast as they can, holding each for ~0 or ~1 us of simulated
//! work, on a pool of N connections and of 1, 2 and 4 below N (so the waiting path
//! runs). Peers, each over the same no-op connection and pool size:
//!
//! - floor: crossbeam `ArrayQueue`, spinning (then yielding) while empty;
//! - this pool: `blocking_acquire` + drop, default settings (sweeper running);
//! - Mutex+Condvar: `Mutex<Vec>` + `Condvar` that counts waiters and notifies only when
//!   one waits (`common::MutexCondvarPool`);
//! - r2d2 0.8: `get` + drop, `test_on_check_out` off (its best configuration here);
//! - deadpool 0.12 managed: `get` + drop, driven per thread by a parking executor
//!   (`common::block_on_parking`).
//!
//! Two measurements:
//!
//! 1. Throughput (criterion, `iter_custom`): one iteration is one acquire+release by
//!    any thread; threads claim work in chunks of 64 from a shared counter until the
//!    total is done, and the time is the wall time from a barrier start until the last
//!    thread finishes, so criterion's elements/s is the aggregate throughput. Groups are
//!    `contention/hold_<0ns|1us>/pool_<threads|1|2|4>` (threads: one connection per
//!    thread), ids `<peer>/<threads>`.
//! 2. Latency and fairness (own harness, before criterion): every thread records the
//!    wait of each acquire (clock read before and after) into a preallocated buffer for
//!    `HELIOSDB_BENCH_LATENCY_MS` (default 600) ms, and counts its operations per 200 ms
//!    window; the summary (p50, p90, p99, p99.9, max wait; per-thread operations and
//!    total wait; fairness = the slowest thread's operations over the fastest's in the
//!    worst full 200 ms window, 1.0 being perfectly fair; and the older measure, the
//!    longest per-thread total wait over the median one) goes to
//!    `target/heliosdb-bench/latency.json` and `latency.csv`, and to stdout.
//!
//! `HELIOSDB_BENCH_MODE=latency|throughput` runs only one of them;
//! `HELIOSDB_BENCH_THREADS=1,2,4` picks thread counts; criterion filters (a substring
//! of the id) apply to both parts.
//!
//! `cargo bench --bench contention -- --warm-up-time 1 --measurement-time 2`

mod common;

use std::fmt::Write as _;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use crossbeam_queue::ArrayQueue;
use heliosdb_pool::{EnhancedConnectionPool, PooledConnection};
use std::task::Waker;

use common::{
    DeadpoolPool, MutexCondvarPool, NoopConn, R2d2Noop, Spin, USER, block_on_parking,
    deadpool_pool, heliosdb_pool, r2d2_pool, thread_counts, thread_waker,
};

/// Per-thread context: what a peer may need on its thread.
struct ThreadCtx {
    waker: Waker,
}

/// A pool under test: `acquire` borrows one connection (waiting if need be); dropping
/// the guard returns it.
trait Peer: Sync {
    type Guard<'a>
    where
        Self: 'a;
    fn acquire<'a>(&'a self, ctx: &ThreadCtx) -> Self::Guard<'a>;
}

// --- floor ---------------------------------------------------------------------------

struct Floor(ArrayQueue<NoopConn>);

struct FloorGuard<'a> {
    queue: &'a ArrayQueue<NoopConn>,
    item: NoopConn,
}

impl Drop for FloorGuard<'_> {
    fn drop(&mut self) {
        // Cannot fail: at most `capacity` items exist.
        let _ = self.queue.push(self.item);
    }
}

impl Peer for Floor {
    type Guard<'a> = FloorGuard<'a>;
    #[inline]
    fn acquire<'a>(&'a self, _: &ThreadCtx) -> FloorGuard<'a> {
        let mut tries = 0u32;
        loop {
            if let Some(item) = self.0.pop() {
                return FloorGuard {
                    queue: &self.0,
                    item,
                };
            }
            tries += 1;
            if tries < 64 {
                std::hint::spin_loop();
            } else {
                thread::yield_now();
            }
        }
    }
}

// --- this pool ------------------------------------------------------------------------

struct Helios(EnhancedConnectionPool<NoopConn>);

impl Peer for Helios {
    type Guard<'a> = PooledConnection<'a, NoopConn>;
    #[inline]
    fn acquire<'a>(&'a self, _: &ThreadCtx) -> PooledConnection<'a, NoopConn> {
        self.0.blocking_acquire(USER).expect("heliosdb acquire")
    }
}

// --- Mutex+Condvar ----------------------------------------------------------------------

struct MutexCondvar(MutexCondvarPool);

struct MutexGuard<'a> {
    pool: &'a MutexCondvarPool,
    item: NoopConn,
}

impl Drop for MutexGuard<'_> {
    fn drop(&mut self) {
        self.pool.release(self.item);
    }
}

impl Peer for MutexCondvar {
    type Guard<'a> = MutexGuard<'a>;
    #[inline]
    fn acquire<'a>(&'a self, _: &ThreadCtx) -> MutexGuard<'a> {
        MutexGuard {
            pool: &self.0,
            item: self.0.acquire(),
        }
    }
}

// --- r2d2 ---------------------------------------------------------------------------------

struct R2d2(r2d2::Pool<R2d2Noop>);

impl Peer for R2d2 {
    type Guard<'a> = r2d2::PooledConnection<R2d2Noop>;
    #[inline]
    fn acquire<'a>(&'a self, _: &ThreadCtx) -> Self::Guard<'a> {
        self.0.get().expect("r2d2 get")
    }
}

// --- deadpool -----------------------------------------------------------------------------

struct Deadpool(DeadpoolPool);

impl Peer for Deadpool {
    type Guard<'a> = deadpool::managed::Object<common::DeadpoolNoop>;
    #[inline]
    fn acquire<'a>(&'a self, ctx: &ThreadCtx) -> Self::Guard<'a> {
        block_on_parking(&ctx.waker, self.0.get()).expect("deadpool get")
    }
}

// --- the runs -----------------------------------------------------------------------------

const PEERS: [&str; 5] = ["floor", "heliosdb", "mutex+condvar", "r2d2", "deadpool"];

/// Runs `f` with the named peer built over `size` connections.
fn with_peer(name: &str, size: usize, f: &mut dyn FnMut(&dyn PeerRun)) {
    match name {
        "floor" => {
            let q = ArrayQueue::new(size);
            for i in 0..size as u64 {
                q.push(i).unwrap();
            }
            f(&Floor(q))
        }
        "heliosdb" => f(&Helios(heliosdb_pool(size))),
        "mutex+condvar" => f(&MutexCondvar(MutexCondvarPool::new(size))),
        "r2d2" => f(&R2d2(r2d2_pool(size, false))),
        "deadpool" => f(&Deadpool(deadpool_pool(size))),
        other => unreachable!("unknown peer {other}"),
    }
}

/// The two runs, type-erased over the peer.
trait PeerRun: Sync {
    /// `threads` threads do `iters` cycles in all; returns the wall time.
    fn throughput(&self, threads: usize, iters: u64, hold: &Spin) -> Duration;
    /// `threads` threads cycle for `run_for`, recording each acquire's wait.
    fn latency(&self, threads: usize, run_for: Duration, hold: &Spin) -> Vec<ThreadRecord>;
}

struct ThreadRecord {
    ops: u64,
    waits_ns: Vec<u32>,
    total_wait_ns: u64,
    /// Operations completed in each 200 ms window since the start.
    window_ops: Vec<u64>,
}

/// The fairness window.
const WINDOW: Duration = Duration::from_millis(200);

/// The slowest thread's operations over the fastest's, in the worst full window of
/// `full` windows (1.0: every thread did as much as every other in every window).
fn window_fairness(records: &[ThreadRecord], full: usize) -> f64 {
    (0..full)
        .map(|w| {
            let ops = records
                .iter()
                .map(|r| r.window_ops.get(w).copied().unwrap_or(0));
            let max = ops.clone().max().unwrap_or(0);
            let min = ops.min().unwrap_or(0);
            if max == 0 {
                1.0
            } else {
                min as f64 / max as f64
            }
        })
        .fold(1.0, f64::min)
}

/// Most waits recorded per thread (4 bytes each); later ones are counted, not stored.
const RECORD_CAP: usize = 1 << 21;

impl<P: Peer> PeerRun for P {
    fn throughput(&self, threads: usize, iters: u64, hold: &Spin) -> Duration {
        // Work is claimed in chunks from a shared counter, so every thread stays busy
        // until the total is done: a thread that gets ahead cannot finish its share
        // early and leave the others to run uncontended.
        const CHUNK: u64 = 64;
        let barrier = Barrier::new(threads + 1);
        let next = AtomicU64::new(0);
        thread::scope(|s| {
            for _ in 0..threads {
                let (barrier, next) = (&barrier, &next);
                s.spawn(move || {
                    let ctx = ThreadCtx {
                        waker: thread_waker(),
                    };
                    barrier.wait();
                    loop {
                        let from = next.fetch_add(CHUNK, Ordering::Relaxed);
                        if from >= iters {
                            break;
                        }
                        for _ in from..(from + CHUNK).min(iters) {
                            let guard = self.acquire(&ctx);
                            black_box(&guard);
                            hold.run();
                            drop(guard);
                        }
                    }
                });
            }
            barrier.wait();
            // The scope joins every thread before returning.
            Instant::now()
        })
        .elapsed()
    }

    fn latency(&self, threads: usize, run_for: Duration, hold: &Spin) -> Vec<ThreadRecord> {
        let barrier = Barrier::new(threads + 1);
        let stop = AtomicBool::new(false);
        let results = Mutex::new(Vec::with_capacity(threads));
        thread::scope(|s| {
            for _ in 0..threads {
                let (barrier, stop, results) = (&barrier, &stop, &results);
                s.spawn(move || {
                    let ctx = ThreadCtx {
                        waker: thread_waker(),
                    };
                    // Touch every page now so recording does not fault.
                    let mut waits = vec![1u32; RECORD_CAP];
                    let mut n = 0usize;
                    let mut ops = 0u64;
                    let mut total = 0u64;
                    let mut window_ops = vec![0u64; run_for.div_duration_f64(WINDOW) as usize + 2];
                    barrier.wait();
                    let base = Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        let t0 = Instant::now();
                        let guard = self.acquire(&ctx);
                        let waited = t0.elapsed().as_nanos() as u64;
                        let window = (t0 - base).div_duration_f64(WINDOW) as usize;
                        if let Some(count) = window_ops.get_mut(window) {
                            *count += 1;
                        }
                        black_box(&guard);
                        hold.run();
                        drop(guard);
                        ops += 1;
                        total += waited;
                        if n < RECORD_CAP {
                            waits[n] = waited.min(u64::from(u32::MAX)) as u32;
                            n += 1;
                        }
                    }
                    waits.truncate(n);
                    results.lock().unwrap().push(ThreadRecord {
                        ops,
                        waits_ns: waits,
                        total_wait_ns: total,
                        window_ops,
                    });
                });
            }
            barrier.wait();
            thread::sleep(run_for);
            stop.store(true, Ordering::Relaxed);
        });
        results.into_inner().unwrap()
    }
}

/// The configurations: (hold label, hold, pool label, pool size for `threads`).
fn holds() -> [(&'static str, Duration); 2] {
    [("0ns", Duration::ZERO), ("1us", Duration::from_micros(1))]
}

/// The pool sizes run at `threads`: one connection per thread, and 1, 2 and 4 where
/// that is fewer (the waiting path).
fn pool_modes(threads: usize) -> Vec<(&'static str, usize)> {
    let mut modes = vec![("threads", threads)];
    for (label, size) in POOL_LABELS[1..].iter().zip([1, 2, 4]) {
        if size < threads {
            modes.push((label, size));
        }
    }
    modes
}

const POOL_LABELS: [&str; 4] = ["threads", "1", "2", "4"];

fn group_name(hold: &str, pool: &str) -> String {
    format!("contention/hold_{hold}/pool_{pool}")
}

// --- latency harness --------------------------------------------------------------------

fn percentile(sorted: &[u32], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
    u64::from(sorted[idx])
}

fn latency_harness() {
    let run_for = Duration::from_millis(
        std::env::var("HELIOSDB_BENCH_LATENCY_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(600),
    );
    let full_windows = run_for.div_duration_f64(WINDOW) as usize;
    let mut json = String::from("[\n");
    let mut csv = String::from(
        "group,peer,threads,pool_size,ops_per_sec,p50_ns,p90_ns,p99_ns,p999_ns,max_ns,\
         p99_over_p50,fairness_window_slowest_over_fastest_thread,\
         fairness_longest_over_median_thread_wait,ops_max_over_min_thread\n",
    );
    println!(
        "{:<40} {:<14} {:>3} {:>4} {:>12} {:>8} {:>8} {:>9} {:>10} {:>8} {:>9}",
        "latency group",
        "peer",
        "thr",
        "pool",
        "ops/s",
        "p50 ns",
        "p99 ns",
        "p99.9 ns",
        "max ns",
        "p99/p50",
        "fairness"
    );
    println!("(fairness: slowest thread's operations over the fastest's, worst 200 ms window)");
    let mut first = true;
    for (hold_label, hold) in holds() {
        let spin = Spin::calibrate(hold);
        for threads in thread_counts() {
            for (pool_label, size) in pool_modes(threads) {
                let group = group_name(hold_label, pool_label);
                for peer in PEERS {
                    let id = format!("{group}/{peer}/{threads}");
                    if !common::selected(&id) {
                        continue;
                    }
                    let mut records = Vec::new();
                    with_peer(peer, size, &mut |p| {
                        records = p.latency(threads, run_for, &spin);
                    });
                    let ops: u64 = records.iter().map(|r| r.ops).sum();
                    let mut all: Vec<u32> =
                        Vec::with_capacity(records.iter().map(|r| r.waits_ns.len()).sum());
                    for r in &records {
                        all.extend_from_slice(&r.waits_ns);
                    }
                    all.sort_unstable();
                    let (p50, p90, p99, p999) = (
                        percentile(&all, 0.50),
                        percentile(&all, 0.90),
                        percentile(&all, 0.99),
                        percentile(&all, 0.999),
                    );
                    let max = all.last().copied().map_or(0, u64::from);
                    let mut totals: Vec<u64> = records.iter().map(|r| r.total_wait_ns).collect();
                    totals.sort_unstable();
                    let median_total = totals[(totals.len() - 1) / 2].max(1);
                    let wait_spread = *totals.last().unwrap() as f64 / median_total as f64;
                    let fairness = window_fairness(&records, full_windows);
                    let ops_max = records.iter().map(|r| r.ops).max().unwrap_or(0);
                    let ops_min = records.iter().map(|r| r.ops).min().unwrap_or(0).max(1);
                    let ops_ratio = ops_max as f64 / ops_min as f64;
                    let ops_per_sec = ops as f64 / run_for.as_secs_f64();
                    let p99_over_p50 = p99 as f64 / p50.max(1) as f64;
                    println!(
                        "{group:<40} {peer:<14} {threads:>3} {size:>4} {ops_per_sec:>12.0} {p50:>8} {p99:>8} {p999:>9} {max:>10} {p99_over_p50:>8.1} {fairness:>9.2}"
                    );
                    let per_thread_ops: Vec<String> =
                        records.iter().map(|r| r.ops.to_string()).collect();
                    let per_thread_wait: Vec<String> = records
                        .iter()
                        .map(|r| r.total_wait_ns.to_string())
                        .collect();
                    if !first {
                        json.push_str(",\n");
                    }
                    first = false;
                    let _ = write!(
                        json,
                        "  {{\"group\": \"{group}\", \"peer\": \"{peer}\", \"threads\": {threads}, \
                         \"pool_size\": {size}, \"hold\": \"{hold_label}\", \"run_ms\": {}, \
                         \"ops\": {ops}, \"ops_per_sec\": {ops_per_sec:.0}, \"recorded\": {}, \
                         \"p50_ns\": {p50}, \"p90_ns\": {p90}, \"p99_ns\": {p99}, \"p999_ns\": {p999}, \
                         \"max_ns\": {max}, \"p99_over_p50\": {p99_over_p50:.3}, \
                         \"fairness_window_slowest_over_fastest_thread\": {fairness:.3}, \
                         \"fairness_longest_over_median_thread_wait\": {wait_spread:.3}, \
                         \"ops_max_over_min_thread\": {ops_ratio:.3}, \
                         \"per_thread_ops\": [{}], \"per_thread_wait_ns\": [{}]}}",
                        run_for.as_millis(),
                        all.len(),
                        per_thread_ops.join(", "),
                        per_thread_wait.join(", "),
                    );
                    let _ = writeln!(
                        csv,
                        "{group},{peer},{threads},{size},{ops_per_sec:.0},{p50},{p90},{p99},{p999},{max},{p99_over_p50:.3},{fairness:.3},{wait_spread:.3},{ops_ratio:.3}"
                    );
                }
            }
        }
    }
    json.push_str("\n]\n");
    let dir = common::out_dir();
    std::fs::write(dir.join("latency.json"), json).expect("write latency.json");
    std::fs::write(dir.join("latency.csv"), csv).expect("write latency.csv");
    println!(
        "latency summary written to {}",
        dir.join("latency.json").display()
    );
}

// --- criterion ------------------------------------------------------------------------------

fn throughput(c: &mut Criterion) {
    for (hold_label, hold) in holds() {
        let spin = Spin::calibrate(hold);
        let counts = thread_counts();
        for pool_label in POOL_LABELS {
            let mut group = c.benchmark_group(group_name(hold_label, pool_label));
            group.sample_size(10);
            group.throughput(Throughput::Elements(1));
            for &threads in &counts {
                let Some(&(_, size)) = pool_modes(threads).iter().find(|(l, _)| *l == pool_label)
                else {
                    continue;
                };
                for peer in PEERS {
                    let id = format!("{}/{peer}/{threads}", group_name(hold_label, pool_label));
                    if !common::selected(&id) {
                        continue;
                    }
                    with_peer(peer, size, &mut |p| {
                        group.bench_with_input(
                            BenchmarkId::new(peer, threads),
                            &threads,
                            |b, &t| b.iter_custom(|iters| p.throughput(t, iters, &spin)),
                        );
                    });
                }
            }
            group.finish();
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo test --benches` and `--list` want no long runs.
    let quick = args.iter().any(|a| a == "--test" || a == "--list");
    let mode = std::env::var("HELIOSDB_BENCH_MODE").unwrap_or_default();
    if !quick && mode != "throughput" {
        latency_harness();
    }
    if mode != "latency" {
        let mut c = Criterion::default().configure_from_args();
        throughput(&mut c);
        c.final_summary();
    }
}

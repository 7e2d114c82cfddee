//! Async acquire on a tokio multi-thread runtime (default worker count = cores), in two
//! shapes: 4 tasks sharing 1 connection, and 64 tasks sharing 8; each task borrows and
//! returns in a loop. Peers over the same no-op connection:
//!
//! - this pool: `acquire(user).await` + drop (default settings);
//! - deadpool 0.12 managed: `get().await` + drop (FIFO, no timeouts: its defaults);
//! - bb8 0.9: `get().await` + drop, `test_on_check_out` off (its default `true` would
//!   add an `is_valid` await per get), `min_idle` = 8 so every connection exists first.
//!
//! Three holds: `none` (drop at once), `yield` (one `tokio::task::yield_now().await`
//! while holding, so borrows overlap and the waiting path runs), and `leave` (`yield`,
//! then three more yields after the release before the next borrow: the releaser does
//! other work, as a service's task does, and leaves the connection to the waiters).
//! One iteration is one acquire+release by any task; the time is the wall time of all
//! the tasks. Groups are `async_<tasks>_tasks_<connections>_conns`, ids
//! `<peer>/<hold>`.
//!
//! `cargo bench --bench async_acquire -- --warm-up-time 1 --measurement-time 2`

mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tokio::runtime::Runtime;

use common::{Bb8Noop, USER, deadpool_pool, heliosdb_pool};

/// The shapes: (tasks, connections).
const SHAPES: [(u64, usize); 2] = [(4, 1), (64, 8)];

/// What a task does around each borrow (see the module docs).
#[derive(Clone, Copy)]
enum Hold {
    None,
    Yield,
    Leave,
}

impl Hold {
    const ALL: [Hold; 3] = [Hold::None, Hold::Yield, Hold::Leave];

    fn name(self) -> &'static str {
        match self {
            Hold::None => "none",
            Hold::Yield => "yield",
            Hold::Leave => "leave",
        }
    }

    async fn while_held(self) {
        if !matches!(self, Hold::None) {
            tokio::task::yield_now().await;
        }
    }

    async fn after_release(self) {
        if matches!(self, Hold::Leave) {
            for _ in 0..3 {
                tokio::task::yield_now().await;
            }
        }
    }
}

/// One task's share: `n` borrows through `borrow`, each held and followed as `hold`
/// says.
async fn borrow_loop<G, E, Fut>(n: u64, hold: Hold, borrow: impl Fn() -> Fut)
where
    Fut: Future<Output = Result<G, E>>,
    E: std::fmt::Debug,
{
    for _ in 0..n {
        let guard = borrow().await.unwrap();
        black_box(&guard);
        hold.while_held().await;
        drop(guard);
        hold.after_release().await;
    }
}

/// One task's whole run, boxed once per task (not per borrow), so that one runner
/// serves every peer.
type TaskFuture = std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Splits `iters` over `tasks` tasks running `body(share)` and returns the wall time.
fn run_tasks(rt: &Runtime, tasks: u64, iters: u64, body: &dyn Fn(u64) -> TaskFuture) -> Duration {
    rt.block_on(async {
        let tasks: Vec<_> = (0..tasks)
            .map(|t| body(iters / tasks + u64::from(t < iters % tasks)))
            .collect();
        let start = Instant::now();
        let handles: Vec<_> = tasks.into_iter().map(tokio::spawn).collect();
        for h in handles {
            h.await.unwrap();
        }
        start.elapsed()
    })
}

fn async_acquire(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    for (tasks, connections) in SHAPES {
        shape(c, &rt, tasks, connections);
    }
}

fn shape(c: &mut Criterion, rt: &Runtime, tasks: u64, connections: usize) {
    let helios = Arc::new(heliosdb_pool(connections));
    let deadpool = deadpool_pool(connections);
    let bb8 = rt.block_on(async {
        bb8::Pool::builder()
            .max_size(connections as u32)
            .min_idle(connections as u32)
            .test_on_check_out(false)
            .connection_timeout(Duration::from_secs(60))
            .build(Bb8Noop::default())
            .await
            .unwrap()
    });

    let mut group = c.benchmark_group(format!("async_{tasks}_tasks_{connections}_conns"));
    group.sample_size(10);
    group.throughput(Throughput::Elements(1));
    for hold in Hold::ALL {
        let mut peer = |name: &str, task: &dyn Fn(u64) -> TaskFuture| {
            group.bench_function(BenchmarkId::new(name, hold.name()), |b| {
                b.iter_custom(|iters| run_tasks(rt, tasks, iters, task))
            });
        };
        peer("heliosdb", &|n| {
            let pool = Arc::clone(&helios);
            Box::pin(async move { borrow_loop(n, hold, || pool.acquire(USER)).await })
        });
        peer("deadpool", &|n| {
            let pool = deadpool.clone();
            Box::pin(async move { borrow_loop(n, hold, || pool.get()).await })
        });
        peer("bb8", &|n| {
            let pool = bb8.clone();
            Box::pin(async move { borrow_loop(n, hold, || pool.get()).await })
        });
    }
    group.finish();
}

criterion_group!(benches, async_acquire);
criterion_main!(benches);

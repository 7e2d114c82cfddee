//! The core pool's contract: every error, handles and generations, user isolation,
//! reuse order, waiting (FIFO, timeouts, cancellation), close.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use heliosdb_pool::{
    ConnectionId, ConnectionMetadata, EnhancedConnectionPool, EnhancedPoolConfig, Error, RawHandle,
    Removal,
};

/// A connection that counts its closes (drops).
#[derive(Debug)]
struct Conn {
    name: &'static str,
    closes: Arc<AtomicUsize>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.closes.fetch_add(1, Ordering::SeqCst);
    }
}

fn config(max_connections: usize, max_per_user: usize, timeout_ms: u64) -> EnhancedPoolConfig {
    EnhancedPoolConfig {
        max_connections,
        max_per_user,
        acquire_timeout_ms: timeout_ms,
        ..EnhancedPoolConfig::default()
    }
}

fn add(
    pool: &EnhancedConnectionPool<Conn>,
    closes: &Arc<AtomicUsize>,
    user: &str,
    name: &'static str,
) -> ConnectionId {
    pool.add_connection_sync(
        Conn {
            name,
            closes: closes.clone(),
        },
        user,
        ConnectionMetadata::for_user(user),
    )
    .unwrap()
}

#[test]
fn invalid_config_is_refused_by_try_new_and_new_panics() {
    let bad = config(2, 3, 10);
    assert!(matches!(
        EnhancedConnectionPool::<Conn>::try_new(bad.clone()),
        Err(Error::InvalidConfig {
            field: "max_per_user",
            ..
        })
    ));
    let panic = std::panic::catch_unwind(|| EnhancedConnectionPool::<Conn>::new(bad)).unwrap_err();
    let msg = panic.downcast_ref::<String>().unwrap();
    assert!(msg.contains("max_per_user"), "{msg}");
}

#[test]
fn add_connection_errors() {
    let closes = Arc::new(AtomicUsize::new(0));
    let pool = EnhancedConnectionPool::new(config(3, 2, 10));
    add(&pool, &closes, "a", "a1");
    add(&pool, &closes, "a", "a2");
    let err = pool
        .add_connection_sync(
            Conn {
                name: "a3",
                closes: closes.clone(),
            },
            "a",
            ConnectionMetadata::for_user("a"),
        )
        .unwrap_err();
    assert_eq!(
        err,
        Error::UserAtCapacity {
            user: "a".into(),
            max_per_user: 2
        }
    );
    assert_eq!(
        closes.load(Ordering::SeqCst),
        1,
        "a refused connection is dropped"
    );
    add(&pool, &closes, "b", "b1");
    let err = pool
        .add_connection_sync(
            Conn {
                name: "b2",
                closes: closes.clone(),
            },
            "b",
            ConnectionMetadata::for_user("b"),
        )
        .unwrap_err();
    assert_eq!(err, Error::PoolFull { max_connections: 3 });
    pool.close();
    let err = pool
        .add_connection_sync(
            Conn {
                name: "c",
                closes: closes.clone(),
            },
            "c",
            ConnectionMetadata::for_user("c"),
        )
        .unwrap_err();
    assert_eq!(err, Error::Closed);
}

#[test]
fn acquire_errors() {
    let closes = Arc::new(AtomicUsize::new(0));
    let pool = EnhancedConnectionPool::new(config(4, 2, 30));
    assert_eq!(
        pool.try_acquire("nobody").unwrap_err(),
        Error::UnknownUser {
            user: "nobody".into()
        }
    );
    assert!(matches!(
        pool.blocking_acquire("nobody"),
        Err(Error::UnknownUser { .. })
    ));
    add(&pool, &closes, "a", "a1");
    let held = pool.try_acquire("a").unwrap();
    assert_eq!(
        pool.try_acquire("a").unwrap_err(),
        Error::NoIdleConnection {
            user: "a".into(),
            in_use: 1
        }
    );
    drop(held);
    pool.close();
    assert_eq!(pool.try_acquire("a").unwrap_err(), Error::Closed);
    assert_eq!(pool.blocking_acquire("a").unwrap_err(), Error::Closed);
    assert_eq!(pool.try_acquire("nobody").unwrap_err(), Error::Closed);
}

#[test]
fn timeout_reports_wait_and_counts() {
    let closes = Arc::new(AtomicUsize::new(0));
    let pool = EnhancedConnectionPool::new(config(4, 2, 100));
    add(&pool, &closes, "a", "a1");
    let _held = pool.try_acquire("a").unwrap();
    let started = Instant::now();
    let err = pool.blocking_acquire("a").unwrap_err();
    let elapsed = started.elapsed();
    match &err {
        Error::Timeout {
            user,
            waited,
            in_use,
            idle,
            last_factory_error,
            ..
        } => {
            assert_eq!(user, "a");
            assert!(*waited >= Duration::from_millis(100), "{waited:?}");
            assert_eq!((*in_use, *idle), (1, 0));
            assert!(last_factory_error.is_none());
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(
        elapsed >= Duration::from_millis(100) && elapsed < Duration::from_secs(5),
        "{elapsed:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("1 in use, 0 idle") && text.contains("ms"),
        "{text}"
    );
    assert_eq!(pool.stats().timeouts, 1);
}

#[test]
fn guard_exposes_id_site_user_and_hold_time() {
    let closes = Arc::new(AtomicUsize::new(0));
    let pool = EnhancedConnectionPool::new(config(4, 2, 10));
    let id = add(&pool, &closes, "alice", "a1");
    let line = line!() + 1;
    let guard = pool.try_acquire("alice").unwrap();
    assert_eq!(guard.connection_id(), id);
    assert_eq!(guard.user(), "alice");
    assert_eq!(guard.name, "a1");
    assert!(guard.call_site().file().ends_with("pool_core.rs"));
    assert_eq!(guard.call_site().line(), line);
    std::thread::sleep(Duration::from_millis(30));
    assert!(
        guard.held_for() >= Duration::from_millis(15),
        "{:?}",
        guard.held_for()
    );
}

#[test]
fn stale_and_double_releases_are_rejected_without_touching_the_holder() {
    let closes = Arc::new(AtomicUsize::new(0));
    let pool = EnhancedConnectionPool::new(config(4, 2, 10));
    add(&pool, &closes, "a", "a1");
    let first = pool.try_acquire("a").unwrap().into_raw_handle();
    pool.release_raw_handle(first).unwrap();
    // Doubled release.
    assert_eq!(
        pool.release_raw_handle(first),
        Err(Error::StaleHandle {
            connection_id: first.connection_id().raw(),
            generation: first.generation()
        })
    );
    // The slot is borrowed again: the old handle must not end the new borrow.
    let current = pool.try_acquire("a").unwrap();
    assert_eq!(
        pool.release_raw_handle(first),
        Err(Error::StaleHandle {
            connection_id: first.connection_id().raw(),
            generation: first.generation()
        })
    );
    assert_eq!(pool.stats().active_connections, 1);
    assert!(pool.try_acquire("a").is_err(), "the holder still has it");
    // Never-issued handles: a slot out of range, a wrong generation, another
    // connection's id with the live generation.
    let forged = [
        RawHandle::from_parts(ConnectionId::from_raw(u64::MAX), 0),
        RawHandle::from_parts(first.connection_id(), first.generation() ^ (1 << 40)),
        RawHandle::from_parts(
            ConnectionId::from_raw(first.connection_id().raw() + (1 << 24)),
            first.generation() + 1,
        ),
    ];
    for raw in forged {
        assert!(matches!(
            pool.release_raw_handle(raw),
            Err(Error::StaleHandle { .. })
        ));
    }
    // SAFETY: the closure does not run for a stale handle.
    let stale = unsafe { pool.with_raw_handle(first, |_| ()) };
    assert!(matches!(stale, Err(Error::StaleHandle { .. })));
    drop(current);
    assert_eq!(pool.stats().active_connections, 0);
}

#[test]
fn users_never_get_each_others_connections() {
    let closes = Arc::new(AtomicUsize::new(0));
    let pool = EnhancedConnectionPool::new(config(8, 4, 10));
    add(&pool, &closes, "a", "a1");
    add(&pool, &closes, "b", "b1");
    add(&pool, &closes, "b", "b2");
    let a = pool.try_acquire("a").unwrap();
    assert_eq!(a.name, "a1");
    // "a" is exhausted even though "b" has idle connections.
    assert!(matches!(
        pool.try_acquire("a"),
        Err(Error::NoIdleConnection { .. })
    ));
    let b1 = pool.try_acquire("b").unwrap();
    let b2 = pool.try_acquire("b").unwrap();
    assert!(b1.name.starts_with('b') && b2.name.starts_with('b'));
    let stats = pool.stats();
    let per_user: Vec<_> = stats
        .users
        .iter()
        .map(|u| (u.user.as_str(), u.total_connections, u.active_connections))
        .collect();
    assert_eq!(per_user, [("a", 1, 1), ("b", 2, 2)]);
}

#[test]
fn reuse_concentrates_on_few_connections_so_surplus_ones_go_idle() {
    let closes = Arc::new(AtomicUsize::new(0));
    let pool = EnhancedConnectionPool::new(config(8, 4, 10));
    for name in ["c0", "c1", "c2", "c3"] {
        add(&pool, &closes, "a", name);
    }
    let mut used = std::collections::BTreeMap::<&str, usize>::new();
    // Sequential use keeps hitting the same connection (the one returned last)...
    for _ in 0..100 {
        *used.entry(pool.try_acquire("a").unwrap().name).or_default() += 1;
    }
    assert_eq!(used.len(), 1, "{used:?}");
    // ...and with two in flight, only two are ever used; the others stay idle and
    // can age out.
    for _ in 0..100 {
        let x = pool.try_acquire("a").unwrap();
        let y = pool.try_acquire("a").unwrap();
        *used.entry(x.name).or_default() += 1;
        *used.entry(y.name).or_default() += 1;
    }
    assert_eq!(
        used.keys().copied().collect::<Vec<_>>(),
        ["c0", "c1"],
        "{used:?}"
    );
    assert_eq!(pool.stats().acquires, 300);
}

#[test]
fn remove_connection_idle_now_in_use_on_return() {
    let closes = Arc::new(AtomicUsize::new(0));
    let pool = EnhancedConnectionPool::new(config(8, 4, 10));
    let idle = add(&pool, &closes, "a", "idle");
    let busy = add(&pool, &closes, "a", "busy");
    let guard_idle_first = pool.try_acquire("a").unwrap();
    assert_eq!(guard_idle_first.name, "idle");
    drop(guard_idle_first);
    let _first = pool.try_acquire("a").unwrap(); // "idle" again (lowest)
    let second = pool.try_acquire("a").unwrap();
    assert_eq!(second.name, "busy");
    drop(_first);
    assert_eq!(pool.remove_connection(idle), Ok(Removal::Closed));
    assert_eq!(closes.load(Ordering::SeqCst), 1);
    assert_eq!(pool.remove_connection(busy), Ok(Removal::ClosesOnReturn));
    assert_eq!(
        closes.load(Ordering::SeqCst),
        1,
        "never taken from its holder"
    );
    assert_eq!(second.name, "busy");
    drop(second);
    assert_eq!(closes.load(Ordering::SeqCst), 2, "closed when returned");
    assert_eq!(
        pool.remove_connection(idle),
        Err(Error::UnknownConnection {
            connection_id: idle.raw()
        })
    );
    assert_eq!(pool.stats().total_connections, 0);
    // The freed capacity is usable again, and ids are never reused.
    let again = add(&pool, &closes, "a", "again");
    assert_ne!(again, idle);
    assert_ne!(again, busy);
}

#[test]
fn detach_takes_the_connection_out_for_good() {
    let closes = Arc::new(AtomicUsize::new(0));
    let pool = EnhancedConnectionPool::new(config(1, 1, 10));
    add(&pool, &closes, "a", "a1");
    let conn = pool.try_acquire("a").unwrap().detach().unwrap();
    assert_eq!(conn.name, "a1");
    assert_eq!(pool.stats().total_connections, 0);
    assert_eq!(closes.load(Ordering::SeqCst), 0);
    add(&pool, &closes, "a", "a2"); // capacity freed
    drop(conn);
    assert_eq!(closes.load(Ordering::SeqCst), 1);
}

#[test]
fn a_guard_returns_its_connection_when_the_holder_panics() {
    let closes = Arc::new(AtomicUsize::new(0));
    let pool = EnhancedConnectionPool::new(config(2, 1, 10));
    add(&pool, &closes, "a", "a1");
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _guard = pool.try_acquire("a").unwrap();
        panic!("work failed");
    }));
    assert!(result.is_err());
    assert_eq!(pool.stats().idle_connections, 1);
    assert!(pool.try_acquire("a").is_ok());
}

#[test]
fn waiters_are_served_in_fifo_order() {
    let closes = Arc::new(AtomicUsize::new(0));
    let pool = Arc::new(EnhancedConnectionPool::new(config(2, 1, 10_000)));
    add(&pool, &closes, "a", "a1");
    let held = pool.try_acquire("a").unwrap().into_raw_handle();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut threads = Vec::new();
    for i in 0..4 {
        let (p, order) = (pool.clone(), order.clone());
        threads.push(std::thread::spawn(move || {
            let guard = p.blocking_acquire("a").unwrap();
            order.lock().unwrap().push(i);
            std::thread::sleep(Duration::from_millis(5));
            drop(guard);
        }));
        // Let waiter i queue before i+1.
        while pool.stats().waiting < i + 1 {
            std::thread::yield_now();
        }
    }
    // A newcomer must not jump the queue while others wait.
    assert!(matches!(
        pool.try_acquire("a"),
        Err(Error::NoIdleConnection { .. })
    ));
    pool.release_raw_handle(held).unwrap();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(*order.lock().unwrap(), [0, 1, 2, 3]);
    assert_eq!(pool.stats().waiting, 0);
}

#[test]
fn a_release_reaches_a_waiting_thread_promptly() {
    let closes = Arc::new(AtomicUsize::new(0));
    let pool = Arc::new(EnhancedConnectionPool::new(config(2, 1, 10_000)));
    add(&pool, &closes, "a", "a1");
    for _ in 0..200 {
        let held = pool.try_acquire("a").unwrap().into_raw_handle();
        let p = pool.clone();
        let waiter = std::thread::spawn(move || {
            let started = Instant::now();
            drop(p.blocking_acquire("a").unwrap());
            started.elapsed()
        });
        while pool.stats().waiting == 0 {
            std::thread::yield_now();
        }
        pool.release_raw_handle(held).unwrap();
        let waited = waiter.join().unwrap();
        assert!(
            waited < Duration::from_secs(2),
            "lost wake-up? waited {waited:?}"
        );
    }
}

/// A waker that counts wakes, for driving futures by hand.
struct CountingWaker(AtomicUsize);
impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn a_dropped_acquire_future_leaks_nothing_and_swallows_no_wakeup() {
    let closes = Arc::new(AtomicUsize::new(0));
    let pool = EnhancedConnectionPool::new(config(2, 1, 10_000));
    add(&pool, &closes, "a", "a1");
    let held = pool.try_acquire("a").unwrap().into_raw_handle();
    let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
    let waker = Waker::from(counter.clone());
    let mut cx = Context::from_waker(&waker);

    // Two queued futures; the first is granted the connection, then dropped unpolled.
    let mut first = Box::pin(pool.acquire("a"));
    let mut second = Box::pin(pool.acquire("a"));
    assert!(first.as_mut().poll(&mut cx).is_pending());
    assert!(second.as_mut().poll(&mut cx).is_pending());
    assert_eq!(pool.stats().waiting, 2);
    pool.release_raw_handle(held).unwrap();
    assert!(
        counter.0.load(Ordering::SeqCst) >= 1,
        "the front waiter was woken"
    );
    drop(first);
    // The grant passed on to the second future.
    match second.as_mut().poll(&mut cx) {
        Poll::Ready(Ok(guard)) => assert_eq!(guard.name, "a1"),
        other => panic!(
            "expected the connection, got {:?}",
            other.map(|r| r.map(|_| ()))
        ),
    }
    drop(second);
    let stats = pool.stats();
    assert_eq!(
        (
            stats.waiting,
            stats.active_connections,
            stats.idle_connections
        ),
        (0, 0, 1)
    );

    // A pending future dropped before any grant just leaves the queue.
    let held = pool.try_acquire("a").unwrap();
    let mut pending = Box::pin(pool.acquire("a"));
    assert!(pending.as_mut().poll(&mut cx).is_pending());
    drop(pending);
    assert_eq!(pool.stats().waiting, 0);
    drop(held);
    assert_eq!(pool.stats().idle_connections, 1);
}

#[tokio::test(flavor = "current_thread")]
async fn async_acquire_times_out_without_a_runtime_timer() {
    let closes = Arc::new(AtomicUsize::new(0));
    let pool = EnhancedConnectionPool::new(config(2, 1, 80));
    add(&pool, &closes, "a", "a1");
    let _held = pool.try_acquire("a").unwrap();
    let started = Instant::now();
    let err = pool.acquire("a").await.unwrap_err();
    let Error::Timeout {
        user,
        waited,
        in_use,
        idle,
        last_factory_error,
        ..
    } = err
    else {
        panic!("{err}");
    };
    assert_eq!((user.as_str(), in_use, idle), ("a", 1, 0));
    assert_eq!(last_factory_error, None);
    assert!(waited >= Duration::from_millis(80), "{waited:?}");
    assert!(waited <= started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_waiters_get_released_connections() {
    let closes = Arc::new(AtomicUsize::new(0));
    let pool = Arc::new(EnhancedConnectionPool::new(config(4, 2, 10_000)));
    add(&pool, &closes, "a", "a1");
    add(&pool, &closes, "a", "a2");
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (pool, done) = (pool.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..50 {
                let guard = pool.acquire("a").await.unwrap();
                tokio::task::yield_now().await;
                drop(guard);
            }
            done.fetch_add(1, Ordering::SeqCst);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(done.load(Ordering::SeqCst), 32);
    assert_eq!(pool.stats().acquires, 32 * 50);
}

#[test]
fn close_wakes_waiters_and_closes_everything_exactly_once() {
    let closes = Arc::new(AtomicUsize::new(0));
    let pool = Arc::new(EnhancedConnectionPool::new(config(4, 2, 10_000)));
    add(&pool, &closes, "a", "a1");
    add(&pool, &closes, "a", "a2");
    add(&pool, &closes, "b", "b1");
    let held = pool.try_acquire("a").unwrap().into_raw_handle();
    let _held2 = pool.try_acquire("a").unwrap().into_raw_handle();
    let p = pool.clone();
    let waiter = std::thread::spawn(move || p.blocking_acquire("a").map(|_| ()));
    while pool.stats().waiting == 0 {
        std::thread::yield_now();
    }
    pool.close();
    assert_eq!(waiter.join().unwrap(), Err(Error::Closed));
    assert_eq!(
        closes.load(Ordering::SeqCst),
        1,
        "the idle b1 is closed at once"
    );
    pool.release_raw_handle(held).unwrap();
    assert_eq!(
        closes.load(Ordering::SeqCst),
        2,
        "a borrowed one is closed when returned"
    );
    // The last borrow is still out when the pool is dropped: the pool closes it.
    drop(pool);
    assert_eq!(closes.load(Ordering::SeqCst), 3);
}

#[test]
fn dropping_the_pool_closes_idle_connections() {
    let closes = Arc::new(AtomicUsize::new(0));
    let pool = EnhancedConnectionPool::new(config(4, 4, 10));
    for name in ["x", "y", "z"] {
        add(&pool, &closes, "a", name);
    }
    drop(pool.try_acquire("a").unwrap());
    drop(pool);
    assert_eq!(closes.load(Ordering::SeqCst), 3);
}

#[test]
fn stats_count_users_waiters_and_acquires() {
    let closes = Arc::new(AtomicUsize::new(0));
    let pool = EnhancedConnectionPool::new(config(8, 3, 10));
    add(&pool, &closes, "a", "a1");
    add(&pool, &closes, "a", "a2");
    add(&pool, &closes, "b", "b1");
    let g = pool.try_acquire("a").unwrap();
    let stats = pool.stats();
    assert_eq!(stats.total_connections, 3);
    assert_eq!(stats.active_connections, 1);
    assert_eq!(stats.idle_connections, 2);
    assert_eq!(stats.leak_stats.current_tracked, 1);
    assert_eq!(stats.acquires, 1);
    drop(g);
}

#[test]
fn borrows_lists_who_holds_what_and_where() {
    let closes = Arc::new(AtomicUsize::new(0));
    let pool = Arc::new(EnhancedConnectionPool::new(config(4, 2, 10)));
    let id = add(&pool, &closes, "alice", "a1");
    add(&pool, &closes, "bob", "b1");
    assert!(pool.borrows().is_empty());
    let (tx, rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let p = pool.clone();
    let line = line!() + 4;
    let holder = std::thread::Builder::new()
        .name("report-writer".into())
        .spawn(move || {
            let guard = p.blocking_acquire("alice").unwrap();
            tx.send(()).unwrap();
            done_rx.recv().unwrap();
            drop(guard);
        })
        .unwrap();
    rx.recv().unwrap();
    std::thread::sleep(Duration::from_millis(30));
    let bob = pool.try_acquire("bob").unwrap();
    let borrows = pool.borrows();
    assert_eq!(borrows.len(), 2);
    let first = &borrows[0];
    assert_eq!(first.connection_id, id, "longest-held first");
    assert_eq!(first.user, "alice");
    let thread = first.thread.as_deref().unwrap_or_default();
    assert!(thread.starts_with("report-writer (ThreadId("), "{thread}");
    assert!(
        first.held_for >= Duration::from_millis(15),
        "{:?}",
        first.held_for
    );
    let site = first.call_site.unwrap();
    assert!(site.file().ends_with("pool_core.rs"));
    assert_eq!(site.line(), line);
    assert_eq!(borrows[1].user, "bob");
    done_tx.send(()).unwrap();
    holder.join().unwrap();
    drop(bob);
    assert!(pool.borrows().is_empty());
}

/// Compiles only if `T` is not `Sync` (two blanket impls become ambiguous otherwise).
trait AmbiguousIfSync<A> {
    fn check() {}
}
impl<T: ?Sized> AmbiguousIfSync<()> for T {}
impl<T: ?Sized + Sync> AmbiguousIfSync<u8> for T {}

#[test]
fn a_guard_is_send_and_shares_its_connection_only_if_the_connection_is_sync() {
    fn assert_send<T: Send>() {}
    fn assert_sync<T: Sync>() {}
    assert_send::<heliosdb_pool::PooledConnection<'static, std::cell::Cell<u64>>>();
    assert_sync::<heliosdb_pool::PooledConnection<'static, u64>>();
    // A `Cell` connection must not be reachable from two threads through `&guard`.
    <heliosdb_pool::PooledConnection<'static, std::cell::Cell<u64>> as AmbiguousIfSync<_>>::check();
}

#[test]
fn the_added_user_is_the_one_source_of_truth_for_metadata_user() {
    let closes = Arc::new(AtomicUsize::new(0));
    let pool = EnhancedConnectionPool::new(config(4, 2, 10));
    let conn = |name: &'static str| Conn {
        name,
        closes: closes.clone(),
    };
    // Empty: filled in with the user the connection is added for.
    pool.add_connection_sync(conn("a1"), "alice", ConnectionMetadata::default())
        .unwrap();
    let borrowed = pool.try_acquire("alice").unwrap();
    assert_eq!(pool.borrows()[0].metadata.user, "alice");
    drop(borrowed);
    // Another user's name: refused, and the connection is closed (dropped).
    let refused =
        pool.add_connection_sync(conn("a2"), "alice", ConnectionMetadata::for_user("bob"));
    assert!(
        matches!(
            refused,
            Err(Error::InvalidArgument {
                argument: "metadata.user",
                ..
            })
        ),
        "{refused:?}"
    );
    assert_eq!(closes.load(Ordering::SeqCst), 1);
    assert_eq!(pool.stats().total_connections, 1);
}

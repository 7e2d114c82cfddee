//! The promises at the edges: generation wraparound (a cached affinity entry or an old
//! handle never matches a later borrow), every path that frees capacity serves the
//! callers waiting for it, a granted but never-polled async acquire is a visible
//! borrow, wake-ups never run under the pool's locks, `close` closes every idle
//! connection itself, and `sweep_now` from a sweeper callback is refused, not a hang.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Wake, Waker};
use std::time::{Duration, Instant};

use heliosdb_pool::{
    Acquire, ConnectionId, ConnectionMetadata, EnhancedConnectionPool, EnhancedPoolConfig, Error,
    HealthMonitorConfig, LeakReport, PoolBuilder, RawHandle, Removal,
};

#[path = "support/common.rs"]
mod common;
use common::{quiet, wait_until};

/// A connection that knows its user and counts its closes (drops).
#[derive(Debug)]
struct Conn {
    user: String,
    closes: Arc<AtomicUsize>,
    healthy: Arc<AtomicBool>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.closes.fetch_add(1, Ordering::SeqCst);
    }
}

#[derive(Clone, Default)]
struct Fixture {
    closes: Arc<AtomicUsize>,
    healthy: Arc<AtomicBool>,
}

impl Fixture {
    fn new() -> Self {
        let f = Fixture::default();
        f.healthy.store(true, Ordering::SeqCst);
        f
    }
    fn conn(&self, user: &str) -> Conn {
        Conn {
            user: user.to_owned(),
            closes: self.closes.clone(),
            healthy: self.healthy.clone(),
        }
    }
    fn add(&self, pool: &EnhancedConnectionPool<Conn>, user: &str) -> ConnectionId {
        pool.add_connection_sync(self.conn(user), user, ConnectionMetadata::for_user(user))
            .unwrap()
    }
    fn closes(&self) -> usize {
        self.closes.load(Ordering::SeqCst)
    }
    /// A builder whose factory opens connections like `conn`.
    fn builder(&self, config: EnhancedPoolConfig) -> PoolBuilder<Conn> {
        let me = self.clone();
        EnhancedConnectionPool::builder(config)
            .age_jitter(0.0)
            .connection_factory(move |user| Ok(me.conn(user)))
    }
}

fn slot_of(id: ConnectionId) -> u64 {
    id.raw() & ((1 << 24) - 1)
}

const WRAP: u64 = 1 << 48;

#[test]
fn an_affinity_entry_never_hands_out_another_users_connection_after_a_wrap() {
    let f = Fixture::new();
    let pool = Arc::new(EnhancedConnectionPool::new(quiet(4, 2)));
    let alice = f.add(&pool, "alice");
    // This thread's affinity entry: alice's slot at the borrow's generation g.
    let handle = pool.try_acquire("alice").unwrap().into_raw_handle();
    let g = handle.generation();
    pool.release_raw_handle(handle).unwrap();
    assert_eq!(pool.remove_connection(alice), Ok(Removal::Closed));
    let bob = f.add(&pool, "bob");
    assert_eq!(
        slot_of(bob),
        slot_of(alice),
        "bob's connection takes alice's slot"
    );
    // The retire made it g + 1; move it past the 2^48 wrap to g - 4, and let bob's
    // borrows (on another thread: this one must keep its entry) bring it round to g.
    pool.testing_advance_generation(bob, WRAP - 5).unwrap();
    let acquires = pool.stats().acquires;
    let other = pool.clone();
    let last = std::thread::spawn(move || {
        let mut last = 0;
        for _ in 0..4 {
            let guard = other.try_acquire("bob").unwrap();
            assert_eq!(guard.user, "bob");
            let raw = guard.into_raw_handle();
            last = raw.generation();
            other.release_raw_handle(raw).unwrap();
        }
        last
    });
    let last = last.join().unwrap();
    assert_eq!(last, g, "the slot is idle at the cached generation");
    assert_eq!(
        pool.stats().acquires,
        acquires + 4,
        "counts only real borrows"
    );
    // Alice has no connection: the cached entry must not give her bob's.
    match pool.try_acquire("alice") {
        Err(Error::NoIdleConnection { user, in_use: 0 }) => assert_eq!(&*user, "alice"),
        other => panic!("alice got {:?}", other.map(|c| c.user.clone())),
    }
    // Bob's connection was given back, idle and his.
    assert_eq!(pool.stats().idle_connections, 1);
    assert_eq!(pool.try_acquire("bob").unwrap().user, "bob");
    assert!(
        pool.stats().acquires >= acquires + 4,
        "counts never go backwards"
    );
}

#[test]
fn a_stale_handle_is_refused_after_a_32_bit_wrap_and_for_a_refilled_slot() {
    let f = Fixture::new();
    let pool = EnhancedConnectionPool::new(quiet(4, 2));
    let first = f.add(&pool, "alice");
    let old = pool.try_acquire("alice").unwrap().into_raw_handle();
    pool.release_raw_handle(old).unwrap();
    // 2^32 borrows later the low 32 bits of the generation are the old handle's again.
    pool.testing_advance_generation(first, (1 << 32) - 1)
        .unwrap();
    let current = pool.try_acquire("alice").unwrap();
    let stale = Err(Error::StaleHandle {
        connection_id: old.connection_id().raw(),
        generation: old.generation(),
    });
    assert_eq!(pool.release_raw_handle(old), stale);
    // SAFETY: the closure never runs for a stale handle.
    assert!(unsafe { pool.with_raw_handle(old, |_| ()) }.is_err());
    assert_eq!(pool.stats().active_connections, 1, "the holder keeps it");
    drop(current);

    // Another connection in the same slot, brought to the old handle's exact
    // generation: the connection id tells them apart.
    assert_eq!(pool.remove_connection(first), Ok(Removal::Closed));
    let second = f.add(&pool, "alice");
    assert_eq!(slot_of(second), slot_of(first));
    let now = pool.try_acquire("alice").unwrap().into_raw_handle();
    pool.release_raw_handle(now).unwrap();
    let to_old = old.generation().wrapping_sub(now.generation() + 1) % WRAP;
    pool.testing_advance_generation(second, to_old).unwrap();
    let current = pool.try_acquire("alice").unwrap().into_raw_handle();
    assert_eq!(
        current.generation(),
        old.generation(),
        "same slot, same generation"
    );
    assert!(matches!(
        pool.release_raw_handle(old),
        Err(Error::StaleHandle { .. })
    ));
    let forged = RawHandle::from_parts(current.connection_id(), current.generation() ^ 1);
    assert!(matches!(
        pool.release_raw_handle(forged),
        Err(Error::StaleHandle { .. })
    ));
    pool.release_raw_handle(current).unwrap();
    assert_eq!(pool.stats().idle_connections, 1);
    // Only idle connections can be moved, and only known ones.
    let held = pool.try_acquire("alice").unwrap();
    assert!(matches!(
        pool.testing_advance_generation(second, 1),
        Err(Error::InvalidArgument { .. })
    ));
    drop(held);
    assert!(matches!(
        pool.testing_advance_generation(first, 1),
        Err(Error::UnknownConnection { .. })
    ));
}

/// A caller of `user` waits (the user or the pool at its limit); `free_a_place` frees
/// capacity; the factory must serve the waiter well within its 5 s timeout.
fn waiter_is_served(
    pool: &Arc<EnhancedConnectionPool<Conn>>,
    user: &'static str,
    free_a_place: impl FnOnce(),
) {
    let waiting_before = pool.stats().waiting;
    let (tx, rx) = mpsc::channel();
    let waiter = {
        let pool = pool.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            let got = pool
                .blocking_acquire_timeout(user, Duration::from_secs(5))
                .map(|c| c.user.clone());
            tx.send((got, started.elapsed())).unwrap();
        })
    };
    assert!(wait_until(Duration::from_secs(2), || pool.stats().waiting
        > waiting_before));
    let creates = pool.stats().factory_creates;
    free_a_place();
    let (got, waited) = rx
        .recv_timeout(Duration::from_secs(8))
        .expect("the waiter returns");
    waiter.join().unwrap();
    assert_eq!(got, Ok(user.to_string()), "served after {waited:?}");
    assert!(waited < Duration::from_secs(3), "served late: {waited:?}");
    // The sweeper counts a create after the add that handed it over.
    assert!(
        wait_until(Duration::from_secs(2), || pool.stats().factory_creates
            > creates),
        "the factory served it"
    );
}

#[test]
fn a_waiter_at_max_per_user_is_served_when_a_removed_borrow_closes_on_return() {
    let f = Fixture::new();
    // The sweeper sleeps for minutes: only the request made when capacity frees wakes it.
    let pool = Arc::new(
        f.builder(quiet(4, 1))
            .sweep_interval(Duration::from_secs(600))
            .build()
            .unwrap(),
    );
    f.add(&pool, "alice");
    let held = pool.try_acquire("alice").unwrap();
    waiter_is_served(&pool, "alice", || {
        assert_eq!(
            pool.remove_connection(held.connection_id()),
            Ok(Removal::ClosesOnReturn)
        );
        drop(held);
    });
    assert_eq!(f.closes(), 1);
}

#[test]
fn a_waiter_is_served_when_a_detached_connection_leaves() {
    let f = Fixture::new();
    let pool = Arc::new(
        f.builder(quiet(4, 1))
            .sweep_interval(Duration::from_secs(600))
            .build()
            .unwrap(),
    );
    f.add(&pool, "alice");
    let held = pool.try_acquire("alice").unwrap();
    waiter_is_served(&pool, "alice", || {
        let conn = held.detach().unwrap();
        assert_eq!(conn.user, "alice");
    });
}

#[test]
fn a_waiter_is_served_when_an_aged_borrow_closes_on_return() {
    let f = Fixture::new();
    let pool = Arc::new(
        f.builder(EnhancedPoolConfig {
            max_connection_age_ms: 150,
            ..quiet(4, 1)
        })
        .sweep_interval(Duration::from_millis(10))
        .build()
        .unwrap(),
    );
    f.add(&pool, "alice");
    let held = pool.try_acquire("alice").unwrap();
    waiter_is_served(&pool, "alice", || {
        // Past its age, the borrow is marked to close on return.
        std::thread::sleep(Duration::from_millis(250));
        drop(held);
    });
}

#[test]
fn a_waiter_is_served_when_a_critical_leak_is_reclaimed() {
    let f = Fixture::new();
    let pool = Arc::new(
        f.builder(EnhancedPoolConfig {
            leak_detection_enabled: true,
            leak_detection_threshold_ms: 150,
            auto_cleanup_enabled: true,
            cleanup_interval_ms: 10,
            ..quiet(4, 1)
        })
        .leak_critical_threshold(Duration::from_millis(300))
        .sweep_interval(Duration::from_millis(10))
        .build()
        .unwrap(),
    );
    f.add(&pool, "alice");
    let held = pool.try_acquire("alice").unwrap();
    // The reclaim itself frees the place; the holder has not returned anything yet.
    waiter_is_served(&pool, "alice", || {});
    assert!(matches!(held.release(), Err(Error::Reclaimed { .. })));
}

/// `max_connections` 1: bob's idle connection fills the pool; alice waits until it
/// leaves by `evict`.
fn pool_wide_waiter_is_served(
    config: EnhancedPoolConfig,
    tune: impl FnOnce(PoolBuilder<Conn>) -> PoolBuilder<Conn>,
    evict: impl FnOnce(&EnhancedConnectionPool<Conn>, ConnectionId, &Fixture),
) {
    let f = Fixture::new();
    let pool = Arc::new(tune(f.builder(config)).build().unwrap());
    let bob = f.add(&pool, "bob");
    waiter_is_served(&pool, "alice", || evict(&pool, bob, &f));
    // Closed by the evicting thread just after the place was freed; the connector may
    // serve the waiter first.
    assert!(
        wait_until(Duration::from_secs(2), || f.closes() >= 1),
        "bob's connection was closed"
    );
}

#[test]
fn a_waiter_at_max_connections_is_served_when_another_users_idle_connection_is_removed() {
    pool_wide_waiter_is_served(
        quiet(1, 1),
        |b| b.sweep_interval(Duration::from_secs(600)),
        |pool, bob, _| assert_eq!(pool.remove_connection(bob), Ok(Removal::Closed)),
    );
}

#[test]
fn a_waiter_at_max_connections_is_served_after_an_idle_eviction() {
    pool_wide_waiter_is_served(
        EnhancedPoolConfig {
            idle_timeout_ms: 100,
            ..quiet(1, 1)
        },
        |b| b.sweep_interval(Duration::from_millis(10)),
        |_, _, _| {},
    );
}

#[test]
fn a_waiter_at_max_connections_is_served_after_an_age_eviction() {
    pool_wide_waiter_is_served(
        EnhancedPoolConfig {
            max_connection_age_ms: 100,
            ..quiet(1, 1)
        },
        |b| b.sweep_interval(Duration::from_millis(10)),
        |_, _, _| {},
    );
}

#[test]
fn a_waiter_at_max_connections_is_served_after_a_health_eviction() {
    pool_wide_waiter_is_served(
        EnhancedPoolConfig {
            health_check_enabled: true,
            health_check_interval_ms: 10,
            ..quiet(1, 1)
        },
        |b| {
            b.sweep_interval(Duration::from_millis(10))
                .health_policy(HealthMonitorConfig {
                    unhealthy_after_failures: 1,
                    ..HealthMonitorConfig::default()
                })
                .health_check(|c: &Conn| {
                    if c.user == "bob" && !c.healthy.load(Ordering::SeqCst) {
                        Err("bob's backend is gone".into())
                    } else {
                        Ok(())
                    }
                })
        },
        |_, _, f| f.healthy.store(false, Ordering::SeqCst),
    );
}

/// A waker that counts its wake-ups.
#[derive(Default)]
struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn a_granted_but_never_polled_acquire_is_a_visible_borrow_and_leaks_are_reported() {
    let f = Fixture::new();
    let reports: Arc<Mutex<Vec<LeakReport>>> = Arc::default();
    let sink = reports.clone();
    let pool = EnhancedConnectionPool::builder(EnhancedPoolConfig {
        leak_detection_enabled: true,
        leak_detection_threshold_ms: 100,
        ..quiet(4, 1)
    })
    .sweep_interval(Duration::from_millis(10))
    // Strict FIFO: the release grants the connection to the waiter (with eventual
    // fairness it would wake the task and leave the connection idle for it to take).
    .fairness_bound(Duration::ZERO)
    .on_leak(move |r| sink.lock().unwrap().push(r.clone()))
    .build()
    .unwrap();
    f.add(&pool, "alice");
    let held = pool.try_acquire("alice").unwrap();
    let waker = Arc::new(CountingWaker::default());
    let task = Waker::from(waker.clone());
    let mut cx = Context::from_waker(&task);
    let line = line!() + 1;
    let mut pending: Acquire<'_, Conn> = pool.acquire("alice");
    assert!(Pin::new(&mut pending).poll(&mut cx).is_pending());
    drop(held);
    assert_eq!(waker.0.load(Ordering::SeqCst), 1, "the grant woke the task");
    // Never polled again: the grant is a borrow from the granting instant.
    let borrows = pool.borrows();
    assert_eq!(borrows.len(), 1);
    let site = borrows[0].call_site.expect("stamped by the granter");
    assert_eq!((site.file().as_ref(), site.line()), (file!(), line));
    assert!(wait_until(Duration::from_secs(3), || !reports
        .lock()
        .unwrap()
        .is_empty()));
    let report = reports.lock().unwrap()[0].clone();
    assert_eq!(report.call_site.map(|s| s.line()), Some(line));
    assert_eq!(report.acquired_by, "alice");
    // Dropping the future gives the grant back.
    drop(pending);
    assert_eq!(pool.stats().idle_connections, 1);
}

/// A waker that drops the future it wakes, inline, as some executors do when a task is
/// cancelled: the future's drop takes the wait queue's lock again.
struct DropOnWake(Mutex<Option<Acquire<'static, Conn>>>);

impl Wake for DropOnWake {
    fn wake(self: Arc<Self>) {
        let future = self.0.lock().unwrap().take();
        drop(future);
    }
}

#[test]
fn a_waker_that_drops_its_future_inline_does_not_deadlock() {
    let f = Fixture::new();
    let pool: &'static EnhancedConnectionPool<Conn> =
        Box::leak(Box::new(EnhancedConnectionPool::new(quiet(4, 1))));
    f.add(pool, "alice");
    let held = pool.try_acquire("alice").unwrap();
    let slot = Arc::new(DropOnWake(Mutex::new(Some(pool.acquire("alice")))));
    let waker = Waker::from(slot.clone());
    {
        let mut future = slot.0.lock().unwrap();
        let future = future.as_mut().unwrap();
        assert!(
            Pin::new(future)
                .poll(&mut Context::from_waker(&waker))
                .is_pending()
        );
    }
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        drop(held); // grants to the future, whose waker drops it
        tx.send(()).unwrap();
    });
    rx.recv_timeout(Duration::from_secs(5))
        .expect("the release returned: no wake-up under a lock");
    assert!(slot.0.lock().unwrap().is_none(), "the waker dropped it");
    assert_eq!(pool.stats().idle_connections, 1, "the grant came back");
    assert!(pool.try_acquire("alice").is_ok());
}

#[test]
fn close_closes_every_idle_connection_itself() {
    let f = Fixture::new();
    let pool = Arc::new(EnhancedConnectionPool::new(quiet(256, 256)));
    for _ in 0..200 {
        f.add(&pool, "alice");
    }
    // Borrowers churning while it closes: whatever they hold is closed on return.
    let stop = Arc::new(AtomicBool::new(false));
    let churn: Vec<_> = (0..2)
        .map(|_| {
            let (pool, stop) = (pool.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match pool.try_acquire("alice") {
                        Ok(c) => drop(c),
                        Err(Error::Closed) => break,
                        Err(_) => {}
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(20));
    pool.close();
    stop.store(true, Ordering::Relaxed);
    for t in churn {
        t.join().unwrap();
    }
    assert_eq!(
        f.closes(),
        200,
        "all closed by close and returns, not at drop"
    );
    assert_eq!(pool.stats().total_connections, 0);
}

static REENTRANT_POOL: OnceLock<&'static EnhancedConnectionPool<Conn>> = OnceLock::new();

#[test]
fn sweep_now_from_a_sweeper_callback_is_refused_and_close_from_one_works() {
    let f = Fixture::new();
    let seen: Arc<Mutex<Vec<Result<(), Error>>>> = Arc::default();
    let sink = seen.clone();
    let pool = EnhancedConnectionPool::builder(EnhancedPoolConfig {
        leak_detection_enabled: true,
        leak_detection_threshold_ms: 20,
        ..quiet(4, 2)
    })
    .sweep_interval(Duration::from_secs(600))
    .on_leak(move |_| {
        let pool = REENTRANT_POOL.get().unwrap();
        sink.lock().unwrap().push(pool.sweep_now());
        pool.close();
    })
    .build()
    .unwrap();
    let pool: &'static EnhancedConnectionPool<Conn> = Box::leak(Box::new(pool));
    REENTRANT_POOL.set(pool).ok().unwrap();
    f.add(pool, "alice");
    f.add(pool, "alice");
    let held = pool.try_acquire("alice").unwrap();
    std::thread::sleep(Duration::from_millis(60));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(pool.sweep_now()).unwrap());
    let outer = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("no hang: the nested sweep is refused and close does not wait for it");
    assert_eq!(outer, Ok(()));
    let seen = seen.lock().unwrap();
    assert!(
        matches!(seen[..], [Err(Error::Reentrant { .. })]),
        "{seen:?}"
    );
    assert!(pool.is_closed());
    assert_eq!(f.closes(), 1, "the idle one closed by close");
    drop(held);
    assert_eq!(f.closes(), 2, "the borrowed one on return");
    // The close inside the callback could not wait for the sweeper thread; one from
    // outside a pass does (ThreadSanitizer reports a thread never joined).
    pool.close();
}

#[test]
fn a_full_pool_does_not_open_and_throw_away_connections_while_callers_wait() {
    let f = Fixture::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let maker = f.clone();
    let pool = EnhancedConnectionPool::builder(quiet(1, 1))
        .sweep_interval(Duration::from_millis(5))
        .connection_factory(move |user| {
            counted.fetch_add(1, Ordering::SeqCst);
            Ok(maker.conn(user))
        })
        .build()
        .unwrap();
    f.add(&pool, "bob");
    let held = pool.try_acquire("bob").unwrap();
    // Alice waits at max_connections through many sweeper passes.
    let waited = pool.blocking_acquire_timeout("alice", Duration::from_millis(200));
    assert!(matches!(waited, Err(Error::Timeout { .. })));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "connections opened for a full pool"
    );
    assert_eq!(f.closes(), 0);
    drop(held);
}

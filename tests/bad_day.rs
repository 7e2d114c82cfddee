//! A database's bad day: discarding a broken connection, detach counted, the `reset`
//! hook between borrowers, failover (`evict_all`, `evict_user`), and thread names in
//! `borrows()` and leak reports.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use heliosdb_pool::{
    ConnectionMetadata, EnhancedConnectionPool, EnhancedPoolConfig, Error, RawHandle,
};

#[path = "support/common.rs"]
mod common;
use common::{quiet, wait_until};

/// A connection that counts its closes (drops) and carries session state that a
/// borrower can dirty and `reset` can clean.
#[derive(Debug)]
struct Conn {
    closes: Arc<AtomicUsize>,
    session: String,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.closes.fetch_add(1, Ordering::SeqCst);
    }
}

#[derive(Clone, Default)]
struct Fixture {
    closes: Arc<AtomicUsize>,
    opened: Arc<AtomicUsize>,
}

impl Fixture {
    fn conn(&self) -> Conn {
        self.opened.fetch_add(1, Ordering::SeqCst);
        Conn {
            closes: self.closes.clone(),
            session: String::from("clean"),
        }
    }
    fn closes(&self) -> usize {
        self.closes.load(Ordering::SeqCst)
    }
    fn opened(&self) -> usize {
        self.opened.load(Ordering::SeqCst)
    }
}

fn md(user: &str) -> ConnectionMetadata {
    ConnectionMetadata::for_user(user)
}

/// The value of one `heliosdb_pool_evictions_total` sample.
fn prometheus_eviction(text: &str, cause: &str) -> Option<u64> {
    let label = format!("cause=\"{cause}\"");
    text.lines()
        .filter(|l| l.starts_with("heliosdb_pool_evictions_total{") && l.contains(&label))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn discard_closes_once_counts_and_a_waiter_gets_a_replacement() {
    let fx = Fixture::default();
    let factory_fx = fx.clone();
    let pool = EnhancedConnectionPool::builder(quiet(4, 1))
        .connection_factory(move |_user: &str| Ok(factory_fx.conn()))
        .build()
        .unwrap();
    let first = pool
        .add_connection_sync(fx.conn(), "alice", md("alice"))
        .unwrap();
    let held = pool.try_acquire("alice").unwrap();
    std::thread::scope(|s| {
        // At max_per_user: this waiter can only be served by a replacement.
        let waiter = s.spawn(|| {
            let conn = pool
                .blocking_acquire_timeout("alice", Duration::from_secs(10))
                .unwrap();
            conn.connection_id()
        });
        assert!(wait_until(Duration::from_secs(5), || pool.stats().waiting == 1));
        held.discard().unwrap();
        assert_eq!(fx.closes(), 1, "closed before discard returns");
        let served = waiter.join().unwrap();
        assert_ne!(served, first, "a new connection from the factory");
    });
    let stats = pool.stats();
    assert_eq!(stats.evictions.discarded, 1);
    assert_eq!(stats.evictions.removed, 0);
    assert_eq!(stats.total_connections, 1);
    assert_eq!(
        prometheus_eviction(&pool.prometheus(), "discarded"),
        Some(1)
    );
    drop(pool);
    assert_eq!(fx.closes(), 2, "each connection closed exactly once");
}

#[test]
fn a_discarded_raw_handle_is_checked_like_a_release() {
    let fx = Fixture::default();
    let pool = EnhancedConnectionPool::new(quiet(4, 2));
    pool.add_connection_sync(fx.conn(), "alice", md("alice"))
        .unwrap();
    let raw = pool.try_acquire("alice").unwrap().into_raw_handle();
    let forged = RawHandle::from_parts(raw.connection_id(), raw.generation() ^ 1);
    assert!(matches!(
        pool.discard_raw_handle(forged),
        Err(Error::StaleHandle { .. })
    ));
    assert_eq!(fx.closes(), 0, "a rejected discard changes nothing");
    pool.discard_raw_handle(raw).unwrap();
    assert_eq!(fx.closes(), 1);
    assert!(matches!(
        pool.discard_raw_handle(raw),
        Err(Error::StaleHandle { .. })
    ));
    assert!(matches!(
        pool.release_raw_handle(raw),
        Err(Error::StaleHandle { .. })
    ));
    assert_eq!(fx.closes(), 1, "closed exactly once");
    assert_eq!(pool.stats().evictions.discarded, 1);
    assert_eq!(pool.stats().total_connections, 0);
}

#[test]
fn discarding_a_reclaimed_borrow_closes_it_once_as_reclaimed() {
    let fx = Fixture::default();
    let resets = Arc::new(AtomicUsize::new(0));
    let counted = resets.clone();
    let pool = EnhancedConnectionPool::builder(EnhancedPoolConfig {
        leak_detection_enabled: true,
        leak_detection_threshold_ms: 1_000,
        auto_cleanup_enabled: true,
        cleanup_interval_ms: 1_000,
        ..quiet(4, 2)
    })
    .leak_critical_threshold(Duration::from_secs(2))
    .reset(move |_: &mut Conn| {
        counted.fetch_add(1, Ordering::SeqCst);
        Ok(())
    })
    .build()
    .unwrap();
    let id = pool
        .add_connection_sync(fx.conn(), "alice", md("alice"))
        .unwrap();
    let held = pool.try_acquire("alice").unwrap();
    pool.testing_advance_clock(Duration::from_secs(3));
    pool.sweep_now().unwrap();
    assert!(wait_until(Duration::from_secs(5), || pool
        .stats()
        .leak_stats
        .criticals
        == 1));
    assert_eq!(fx.closes(), 0, "never closed under its holder");
    assert_eq!(
        held.discard(),
        Err(Error::Reclaimed {
            connection_id: id.raw()
        })
    );
    assert_eq!(fx.closes(), 1);
    let evictions = pool.stats().evictions;
    assert_eq!((evictions.reclaimed, evictions.discarded), (1, 0));
    assert_eq!(
        resets.load(Ordering::SeqCst),
        0,
        "no reset for a reclaimed borrow"
    );
}

#[test]
fn detach_is_counted_as_an_eviction() {
    let fx = Fixture::default();
    let pool = EnhancedConnectionPool::new(quiet(4, 2));
    pool.add_connection_sync(fx.conn(), "alice", md("alice"))
        .unwrap();
    let conn = pool.try_acquire("alice").unwrap().detach().unwrap();
    assert_eq!(fx.closes(), 0, "the caller owns it now");
    let stats = pool.stats();
    assert_eq!(stats.evictions.detached, 1);
    assert_eq!(stats.evictions.discarded, 0);
    assert_eq!(stats.total_connections, 0);
    assert_eq!(prometheus_eviction(&pool.prometheus(), "detached"), Some(1));
    drop(conn);
    assert_eq!(fx.closes(), 1);
}

#[test]
fn reset_cleans_a_connection_before_its_next_borrower() {
    let fx = Fixture::default();
    let resets = Arc::new(AtomicUsize::new(0));
    let counted = resets.clone();
    let pool = EnhancedConnectionPool::builder(quiet(4, 2))
        .reset(move |conn: &mut Conn| {
            counted.fetch_add(1, Ordering::SeqCst);
            match conn.session.as_str() {
                "broken" => Err(String::from("cannot roll back")),
                "poison" => panic!("the reset hook panics"),
                _ => {
                    conn.session = String::from("clean");
                    Ok(())
                }
            }
        })
        .build()
        .unwrap();
    let id = pool
        .add_connection_sync(fx.conn(), "alice", md("alice"))
        .unwrap();

    let mut conn = pool.try_acquire("alice").unwrap();
    conn.session = String::from("in a transaction");
    drop(conn);
    assert_eq!(resets.load(Ordering::SeqCst), 1);
    let conn = pool.try_acquire("alice").unwrap();
    assert_eq!(conn.connection_id(), id);
    assert_eq!(
        conn.session, "clean",
        "the next borrower sees the reset state"
    );
    conn.release().unwrap();

    // Not run on discard or detach.
    pool.try_acquire("alice").unwrap().discard().unwrap();
    pool.add_connection_sync(fx.conn(), "alice", md("alice"))
        .unwrap();
    drop(pool.try_acquire("alice").unwrap().detach().unwrap());
    assert_eq!(resets.load(Ordering::SeqCst), 2, "one more for the release");
    assert_eq!(fx.closes(), 2);

    // A failing reset closes the connection instead, counted as reset_failed.
    for state in ["broken", "poison"] {
        pool.add_connection_sync(fx.conn(), "alice", md("alice"))
            .unwrap();
        let closes = fx.closes();
        let mut conn = pool.try_acquire("alice").unwrap();
        conn.session = String::from(state);
        drop(conn);
        assert_eq!(fx.closes(), closes + 1, "{state}: closed on return");
        assert_eq!(pool.stats().total_connections, 0, "{state}");
        assert!(matches!(
            pool.try_acquire("alice"),
            Err(Error::NoIdleConnection { .. })
        ));
    }
    let stats = pool.stats();
    assert_eq!(stats.evictions.reset_failed, 2);
    assert_eq!(stats.evictions.discarded, 1);
    assert_eq!(stats.evictions.detached, 1);
    assert_eq!(
        prometheus_eviction(&pool.prometheus(), "reset_failed"),
        Some(2)
    );

    // Not run for a borrow that closes on return anyway, nor for a stale release.
    let id = pool
        .add_connection_sync(fx.conn(), "alice", md("alice"))
        .unwrap();
    let raw = pool.try_acquire("alice").unwrap().into_raw_handle();
    pool.remove_connection(id).unwrap();
    let before = resets.load(Ordering::SeqCst);
    pool.release_raw_handle(raw).unwrap();
    assert!(matches!(
        pool.release_raw_handle(raw),
        Err(Error::StaleHandle { .. })
    ));
    assert_eq!(resets.load(Ordering::SeqCst), before);
    assert_eq!(pool.stats().evictions.removed, 1);
}

#[test]
fn a_failed_reset_is_replaced_for_a_waiter() {
    let fx = Fixture::default();
    let factory_fx = fx.clone();
    let pool = EnhancedConnectionPool::builder(quiet(4, 1))
        .reset(|conn: &mut Conn| {
            if conn.session == "broken" {
                Err(String::from("broken"))
            } else {
                Ok(())
            }
        })
        .connection_factory(move |_user: &str| Ok(factory_fx.conn()))
        .build()
        .unwrap();
    let first = pool
        .add_connection_sync(fx.conn(), "alice", md("alice"))
        .unwrap();
    let mut held = pool.try_acquire("alice").unwrap();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            let conn = pool
                .blocking_acquire_timeout("alice", Duration::from_secs(10))
                .unwrap();
            (conn.connection_id(), conn.session.clone())
        });
        assert!(wait_until(Duration::from_secs(5), || pool.stats().waiting == 1));
        held.session = String::from("broken");
        drop(held);
        let (served, session) = waiter.join().unwrap();
        assert_ne!(served, first, "never the broken connection");
        assert_eq!(session, "clean");
    });
    assert_eq!(pool.stats().evictions.reset_failed, 1);
    assert_eq!(fx.closes(), 1);
}

#[test]
fn evict_user_closes_idle_now_and_borrowed_on_return() {
    let fx = Fixture::default();
    let pool = EnhancedConnectionPool::new(quiet(8, 4));
    for _ in 0..3 {
        pool.add_connection_sync(fx.conn(), "alice", md("alice"))
            .unwrap();
    }
    pool.add_connection_sync(fx.conn(), "bob", md("bob"))
        .unwrap();
    let held = pool.try_acquire("alice").unwrap();
    let discarded = pool.try_acquire("alice").unwrap();
    assert_eq!(pool.evict_user("alice").unwrap(), 3);
    assert_eq!(fx.closes(), 1, "the idle one, now");
    // Failed over first: a discard closes it as its release would, counted there.
    discarded.discard().unwrap();
    assert_eq!(fx.closes(), 2);
    assert_eq!(pool.stats().evictions.discarded, 0);
    assert_eq!(held.session, "clean", "the borrowed one is still usable");
    drop(held);
    assert_eq!(fx.closes(), 3, "the borrowed one, when returned");
    let stats = pool.stats();
    assert_eq!(stats.evictions.failover, 3);
    assert_eq!(stats.evictions.removed, 0);
    assert_eq!(stats.total_connections, 1, "bob's is untouched");
    assert!(pool.try_acquire("bob").is_ok());
    assert!(matches!(
        pool.evict_user("carol"),
        Err(Error::UnknownUser { .. })
    ));
    assert_eq!(pool.evict_user("alice").unwrap(), 0);
    assert_eq!(prometheus_eviction(&pool.prometheus(), "failover"), Some(3));
}

#[test]
fn evict_all_serves_a_waiter_from_the_factory_and_refills_min_idle() {
    let fx = Fixture::default();
    let factory_fx = fx.clone();
    let pool = EnhancedConnectionPool::builder(quiet(8, 2))
        .min_idle(1)
        .connection_factory(move |_user: &str| Ok(factory_fx.conn()))
        .build()
        .unwrap();
    let old: Vec<_> = (0..2)
        .map(|_| {
            pool.add_connection_sync(fx.conn(), "alice", md("alice"))
                .unwrap()
        })
        .collect();
    let a = pool.try_acquire("alice").unwrap();
    let b = pool.try_acquire("alice").unwrap();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            pool.blocking_acquire_timeout("alice", Duration::from_secs(10))
                .unwrap()
                .connection_id()
        });
        assert!(wait_until(Duration::from_secs(5), || pool.stats().waiting == 1));
        assert_eq!(pool.evict_all(), 2);
        assert_eq!(fx.closes(), 0, "nothing closed under its holder");
        drop(a);
        let served = waiter.join().unwrap();
        assert!(!old.contains(&served), "the waiter got a new connection");
    });
    drop(b);
    assert_eq!(fx.closes(), 2);
    assert_eq!(pool.stats().evictions.failover, 2);

    // Idle connections are closed at once, and min_idle comes back on the next sweep.
    let opened = fx.opened();
    let evicted = pool.evict_all();
    assert!(evicted >= 1);
    assert_eq!(pool.stats().idle_connections, 0);
    pool.sweep_now().unwrap();
    assert!(wait_until(Duration::from_secs(5), || pool
        .stats()
        .idle_connections
        >= 1));
    assert!(fx.opened() > opened, "refilled by the factory");
}

#[test]
fn borrows_and_leak_reports_name_the_thread_with_its_id() {
    let pool = EnhancedConnectionPool::new(EnhancedPoolConfig {
        leak_detection_enabled: true,
        leak_detection_threshold_ms: 60_000,
        ..quiet(4, 2)
    });
    pool.add_connection_sync(0u8, "alice", md("alice")).unwrap();
    let seen: Arc<Mutex<Option<String>>> = Arc::default();
    let sink = seen.clone();
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("report-job".into())
            .spawn_scoped(s, || {
                let _conn = pool.try_acquire("alice").unwrap();
                let expected = format!("report-job ({:?})", std::thread::current().id());
                let thread = pool.borrows()[0].thread.clone().unwrap();
                assert_eq!(thread, expected);
                // The leak report, read while the thread lives, names it the same way.
                pool.testing_advance_clock(Duration::from_secs(61));
                let leaks = pool.leak_detector.check_leaks();
                assert_eq!(leaks.len(), 1);
                assert_eq!(leaks[0].thread.as_deref(), Some(expected.as_str()));
                *sink.lock().unwrap() = Some(thread);
            })
            .unwrap();
    });
    assert!(seen.lock().unwrap().is_some());
}

/// Issue #9, item 8 (the guide's long-running operations): a borrow that declared its
/// hold is neither reported nor reclaimed within it, and is reported once past it; the
/// connection's next borrow starts without the declaration.
#[test]
fn a_declared_hold_moves_the_leak_levels_and_the_reclaim() {
    let fx = Fixture::default();
    let reports = Arc::new(Mutex::new(Vec::new()));
    let seen = reports.clone();
    let pool = EnhancedConnectionPool::builder(EnhancedPoolConfig {
        leak_detection_enabled: true,
        leak_detection_threshold_ms: 1_000,
        auto_cleanup_enabled: true,
        cleanup_interval_ms: 1_000,
        ..quiet(4, 2)
    })
    .leak_critical_threshold(Duration::from_secs(2))
    .on_leak(move |report| seen.lock().unwrap().push(report.level))
    .build()
    .unwrap();
    let id = pool
        .add_connection_sync(fx.conn(), "alice", md("alice"))
        .unwrap();

    // A declaration applies to its own borrow only.
    let held = pool.try_acquire("alice").unwrap();
    held.expect_hold(Duration::from_secs(3_600));
    drop(held);
    let held = pool.try_acquire("alice").unwrap();
    pool.testing_advance_clock(Duration::from_millis(1_500));
    assert_eq!(
        pool.leak_detector.check_leaks().len(),
        1,
        "no carried-over hold"
    );
    assert!(pool.leak_detector.is_leaked(id));
    drop(held);

    let held = pool.try_acquire("alice").unwrap();
    held.expect_hold(Duration::from_secs(60));
    pool.testing_advance_clock(Duration::from_secs(59));
    pool.sweep_now().unwrap();
    assert!(
        pool.leak_detector.check_leaks().is_empty(),
        "within its declared time"
    );
    assert!(!pool.leak_detector.is_leaked(id));
    assert_eq!(pool.stats().leak_stats.leaks_detected, 0);
    assert!(reports.lock().unwrap().is_empty());

    // Past the declared time plus the alert threshold: reported once, not reclaimed.
    pool.testing_advance_clock(Duration::from_millis(2_500)); // 61.5 s: 1.5 s over
    pool.sweep_now().unwrap();
    pool.sweep_now().unwrap();
    let leaks = pool.leak_detector.check_leaks();
    assert_eq!(leaks.len(), 1);
    assert!(
        leaks[0].age >= Duration::from_millis(61_500),
        "the real age is reported"
    );
    assert!(pool.leak_detector.is_leaked(id));
    assert_eq!(*reports.lock().unwrap(), [heliosdb_pool::LeakLevel::Alert]);
    assert_eq!(pool.stats().evictions.reclaimed, 0);

    // Past the declared time plus the critical threshold: reclaimed.
    pool.testing_advance_clock(Duration::from_secs(1));
    pool.sweep_now().unwrap();
    assert_eq!(
        *reports.lock().unwrap(),
        [
            heliosdb_pool::LeakLevel::Alert,
            heliosdb_pool::LeakLevel::Critical
        ]
    );
    assert_eq!(
        held.release(),
        Err(Error::Reclaimed {
            connection_id: id.raw()
        })
    );
    assert_eq!(fx.closes(), 1);
}

/// A declaration through a raw handle (the C form) is checked like a release.
#[test]
fn a_declared_hold_through_a_raw_handle_is_checked() {
    let fx = Fixture::default();
    let pool = EnhancedConnectionPool::builder(EnhancedPoolConfig {
        leak_detection_enabled: true,
        leak_detection_threshold_ms: 1_000,
        ..quiet(4, 2)
    })
    .build()
    .unwrap();
    let id = pool
        .add_connection_sync(fx.conn(), "alice", md("alice"))
        .unwrap();
    let raw = pool.try_acquire("alice").unwrap().into_raw_handle();
    pool.expect_hold_raw_handle(raw, Duration::from_secs(10))
        .unwrap();
    pool.testing_advance_clock(Duration::from_secs(5));
    assert!(pool.leak_detector.check_leaks().is_empty());
    pool.release_raw_handle(raw).unwrap();
    assert!(matches!(
        pool.expect_hold_raw_handle(raw, Duration::from_secs(10)),
        Err(Error::StaleHandle { .. })
    ));
    let forged = RawHandle::from_parts(id, raw.generation() + 7);
    assert!(matches!(
        pool.expect_hold_raw_handle(forged, Duration::from_secs(10)),
        Err(Error::StaleHandle { .. })
    ));
}

/// With leak detection off, the pool's leak view reports nothing, however long a
/// borrow is held.
#[test]
fn with_leak_detection_off_the_leak_view_reports_nothing() {
    let fx = Fixture::default();
    let pool = EnhancedConnectionPool::new(EnhancedPoolConfig {
        leak_detection_enabled: false,
        leak_detection_threshold_ms: 1_000,
        ..quiet(4, 2)
    });
    let id = pool
        .add_connection_sync(fx.conn(), "alice", md("alice"))
        .unwrap();
    let held = pool.try_acquire("alice").unwrap();
    pool.testing_advance_clock(Duration::from_secs(3_600));
    assert!(pool.leak_detector.check_leaks().is_empty());
    assert!(!pool.leak_detector.is_leaked(id));
    assert_eq!(pool.stats().leak_stats.leaks_detected, 0);
    drop(held);
}

/// The pool's leak view given to `EnhancedHealthMonitor` as the guide gives it a
/// `LeakDetector`: a pool connection held past its threshold is `is_leaked`.
#[tokio::test]
async fn a_health_monitor_sees_the_pools_leaks() {
    struct Checkable;
    impl heliosdb_pool::HealthCheck for Checkable {
        fn health_check(&self) -> Result<(), String> {
            Ok(())
        }
    }
    let fx = Fixture::default();
    let pool = EnhancedConnectionPool::new(EnhancedPoolConfig {
        leak_detection_enabled: true,
        leak_detection_threshold_ms: 1_000,
        ..quiet(4, 2)
    });
    let id = pool
        .add_connection_sync(fx.conn(), "alice", md("alice"))
        .unwrap();
    let monitor = heliosdb_pool::EnhancedHealthMonitor::new(
        heliosdb_pool::HealthMonitorConfig::default(),
        Arc::new(pool.leak_detector.clone()),
    );
    monitor
        .monitor_connection(id.to_string(), Arc::new(Checkable))
        .await;
    monitor
        .monitor_connection("not-a-pool-id".to_string(), Arc::new(Checkable))
        .await;
    let leaked = |monitor: &heliosdb_pool::EnhancedHealthMonitor| {
        monitor
            .get_all_health()
            .into_iter()
            .filter(|h| h.is_leaked)
            .map(|h| h.connection_id)
            .collect::<Vec<_>>()
    };
    assert!(leaked(&monitor).is_empty(), "idle: not leaked");
    let held = pool.try_acquire("alice").unwrap();
    assert!(leaked(&monitor).is_empty(), "held briefly: not leaked");
    pool.testing_advance_clock(Duration::from_millis(1_500));
    assert_eq!(leaked(&monitor), [id.to_string()]);
    let health = monitor.check_connection(&id.to_string()).await.unwrap();
    assert!(health.is_leaked);
    assert_eq!(monitor.get_unhealthy_connections().len(), 1);
    drop(held);
    assert!(leaked(&monitor).is_empty(), "returned: not leaked");
}

/// Issue #9, item 7: a pool fed only by `add_connection`, with the default config,
/// keeps serving after its idle timeout and max age have passed: without a factory or
/// an `on_evict` hook nothing could replace a closed connection, so none is closed.
#[test]
fn a_pool_without_a_factory_or_hook_never_shrinks_by_idle_time_or_age() {
    let fx = Fixture::default();
    let pool = EnhancedConnectionPool::new(EnhancedPoolConfig::default());
    for _ in 0..2 {
        pool.add_connection_sync(fx.conn(), "alice", md("alice"))
            .unwrap();
    }
    pool.sweep_now().unwrap(); // the sweeper sees them idle from now
    let held = pool.try_acquire("alice").unwrap();
    // Past idle_timeout_ms (10 min) and max_connection_age_ms (30 min), several passes.
    for _ in 0..4 {
        pool.testing_advance_clock(Duration::from_secs(30 * 60));
        pool.sweep_now().unwrap();
    }
    held.release().unwrap(); // not closed on return either
    pool.sweep_now().unwrap();
    let stats = pool.stats();
    assert_eq!((stats.total_connections, stats.idle_connections), (2, 2));
    assert_eq!((stats.evictions.idle, stats.evictions.age), (0, 0));
    assert_eq!(fx.closes(), 0);
    let (a, b) = (
        pool.try_acquire("alice").unwrap(),
        pool.try_acquire("alice").unwrap(),
    );
    assert_ne!(a.connection_id(), b.connection_id());
}

/// With an `on_evict` hook (and no factory), idle and age evictions happen and are
/// reported after the close, with id, user, cause and metadata; the hook can add the
/// replacement itself. A borrowed connection past its age is reported when returned.
#[test]
fn on_evict_reports_idle_and_age_evictions_and_can_add_a_replacement() {
    let fx = Fixture::default();
    type Pool = EnhancedConnectionPool<Conn>;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let this: Arc<Mutex<std::sync::Weak<Pool>>> = Arc::default();
    let (hook_seen, hook_this, hook_fx) = (seen.clone(), this.clone(), fx.clone());
    let pool: Arc<Pool> = Arc::new(
        EnhancedConnectionPool::builder(EnhancedPoolConfig::default())
            .age_jitter(0.0)
            .on_evict(move |e: &heliosdb_pool::Evicted<'_>| {
                assert_eq!(
                    hook_fx.closes(),
                    hook_seen.lock().unwrap().len() + 1,
                    "closed first"
                );
                hook_seen.lock().unwrap().push((
                    e.connection_id,
                    e.user.to_owned(),
                    e.cause,
                    e.metadata.database.clone(),
                ));
                if e.cause == heliosdb_pool::Eviction::Idle {
                    let pool = hook_this.lock().unwrap().upgrade().unwrap();
                    let metadata = e.metadata.clone();
                    pool.add_connection_sync(hook_fx.conn(), e.user, metadata)
                        .unwrap();
                }
            })
            .build()
            .unwrap(),
    );
    *this.lock().unwrap() = Arc::downgrade(&pool);
    let orders = ConnectionMetadata {
        database: Some("orders".into()),
        ..md("alice")
    };
    let first = pool
        .add_connection_sync(fx.conn(), "alice", orders.clone())
        .unwrap();
    pool.sweep_now().unwrap(); // the sweeper sees it idle from now
    pool.testing_advance_clock(Duration::from_secs(11 * 60)); // past the idle timeout
    pool.sweep_now().unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        [(
            first,
            "alice".to_owned(),
            heliosdb_pool::Eviction::Idle,
            Some("orders".to_owned())
        )]
    );
    assert_eq!(heliosdb_pool::Eviction::Idle.as_str(), "idle");
    // The hook's replacement serves; held past its age, it closes on return.
    let held = pool.try_acquire("alice").unwrap();
    let second = held.connection_id();
    assert_ne!(second, first);
    pool.testing_advance_clock(Duration::from_secs(31 * 60));
    pool.sweep_now().unwrap();
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "never closed under its holder"
    );
    held.release().unwrap();
    assert_eq!(seen.lock().unwrap()[1].0, second);
    assert_eq!(seen.lock().unwrap()[1].2, heliosdb_pool::Eviction::Age);
    assert_eq!(fx.closes(), 2);
    let stats = pool.stats();
    assert_eq!((stats.evictions.idle, stats.evictions.age), (1, 1));
    assert_eq!(stats.total_connections, 0);
}

/// A borrow marked to close for its age and then discarded (or failing its reset) is
/// closed once and reported to `on_evict` as an age eviction.
#[test]
fn discarding_an_aged_borrow_with_on_evict_reports_its_age() {
    let fx = Fixture::default();
    let causes = Arc::new(Mutex::new(Vec::new()));
    let seen = causes.clone();
    let pool = EnhancedConnectionPool::builder(EnhancedPoolConfig {
        max_connection_age_ms: 1_000,
        ..quiet(4, 2)
    })
    .age_jitter(0.0)
    .on_evict(move |e: &heliosdb_pool::Evicted<'_>| seen.lock().unwrap().push(e.cause))
    .build()
    .unwrap();
    pool.add_connection_sync(fx.conn(), "alice", md("alice"))
        .unwrap();
    let held = pool.try_acquire("alice").unwrap();
    pool.testing_advance_clock(Duration::from_secs(2));
    pool.sweep_now().unwrap(); // marks it to close on return
    assert!(causes.lock().unwrap().is_empty());
    held.discard().unwrap();
    assert_eq!(*causes.lock().unwrap(), [heliosdb_pool::Eviction::Age]);
    assert_eq!(fx.closes(), 1);
    assert_eq!(pool.stats().evictions.age, 1);
}

/// A pool that validates on borrow (checks count in `checks`), with three connections
/// whose health the returned flags control; the sweeper's own health checks are an hour
/// apart.
#[allow(clippy::type_complexity)]
fn validating_pool(
    fx: &Fixture,
    checks: &Arc<AtomicUsize>,
) -> (
    EnhancedConnectionPool<(Arc<AtomicBool>, Conn)>,
    Vec<(heliosdb_pool::ConnectionId, Arc<AtomicBool>)>,
) {
    let counted = checks.clone();
    let pool = EnhancedConnectionPool::builder(EnhancedPoolConfig {
        health_check_enabled: true,
        health_check_interval_ms: 3_600_000,
        ..quiet(8, 4)
    })
    .health_check(move |(alive, _): &(Arc<AtomicBool>, Conn)| {
        counted.fetch_add(1, Ordering::SeqCst);
        if alive.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err("server closed the connection".into())
        }
    })
    .build()
    .unwrap();
    let conns = (0..3)
        .map(|_| {
            let alive = Arc::new(AtomicBool::new(true));
            let id = pool
                .add_connection_sync((alive.clone(), fx.conn()), "alice", md("alice"))
                .unwrap();
            (id, alive)
        })
        .collect();
    (pool, conns)
}

/// Issue #9, item 3: a connection idle past the validation window is checked by the
/// borrower; a dead one is closed (a health eviction) and never handed out.
#[test]
fn a_dead_idle_connection_is_never_handed_out() {
    let fx = Fixture::default();
    let checks = Arc::default();
    let (pool, conns) = validating_pool(&fx, &checks);
    conns[0].1.store(false, Ordering::SeqCst);
    conns[1].1.store(false, Ordering::SeqCst);
    pool.testing_advance_clock(Duration::from_millis(600)); // past the 500 ms default
    let conn = pool.try_acquire("alice").unwrap();
    assert_eq!(conn.connection_id(), conns[2].0, "the live one");
    assert!(conn.0.load(Ordering::SeqCst));
    drop(conn);
    let stats = pool.stats();
    assert_eq!((stats.evictions.health, stats.total_connections), (2, 1));
    assert_eq!((stats.health_checks, stats.health_failures), (3, 2));
    assert_eq!(fx.closes(), 2);
    // All dead: nothing is handed out.
    conns[2].1.store(false, Ordering::SeqCst);
    pool.testing_advance_clock(Duration::from_millis(600));
    assert!(matches!(
        pool.try_acquire("alice"),
        Err(Error::NoIdleConnection { .. })
    ));
    assert_eq!((pool.stats().evictions.health, fx.closes()), (3, 3));
}

/// A connection in steady use (idle less than the window) is never checked, however
/// long each borrow is held; one idle past the window is checked once.
#[test]
fn a_busy_connection_is_not_checked() {
    let fx = Fixture::default();
    let checks = Arc::default();
    let (pool, conns) = validating_pool(&fx, &checks);
    for _ in 0..50 {
        let conn = pool.try_acquire("alice").unwrap();
        pool.testing_advance_clock(Duration::from_secs(2)); // a long borrow
        drop(conn);
        pool.testing_advance_clock(Duration::from_millis(100)); // a short idle time
    }
    assert_eq!(checks.load(Ordering::SeqCst), 0, "no check in steady use");
    pool.testing_advance_clock(Duration::from_millis(500));
    let conn = pool.try_acquire("alice").unwrap();
    assert_eq!(
        checks.load(Ordering::SeqCst),
        1,
        "idle past the window: checked"
    );
    assert!(conns.iter().any(|(id, _)| *id == conn.connection_id()));
    drop(conn);
    let again = pool.try_acquire("alice").unwrap();
    assert_eq!(
        checks.load(Ordering::SeqCst),
        1,
        "returned just now: not checked"
    );
    drop(again);
    assert_eq!(pool.stats().evictions.health, 0);
}

/// `validate_after(Duration::MAX)` turns validation off; `ZERO` checks every borrow.
#[test]
fn validate_after_can_be_turned_off_or_made_strict() {
    for (window, expected) in [(Duration::MAX, 0), (Duration::ZERO, 3)] {
        let checks = Arc::new(AtomicUsize::new(0));
        let counted = checks.clone();
        let pool = EnhancedConnectionPool::builder(EnhancedPoolConfig {
            health_check_enabled: true,
            health_check_interval_ms: 3_600_000,
            ..quiet(8, 4)
        })
        .health_check(move |_: &u32| {
            counted.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
        .validate_after(window)
        .build()
        .unwrap();
        pool.add_connection_sync(7, "alice", md("alice")).unwrap();
        pool.testing_advance_clock(Duration::from_secs(3_600));
        for _ in 0..3 {
            drop(pool.try_acquire("alice").unwrap());
        }
        assert_eq!(checks.load(Ordering::SeqCst), expected, "{window:?}");
    }
}

/// A connection that notices being closed in the middle of its reset.
struct Resettable {
    in_reset: AtomicBool,
    closes: Arc<AtomicUsize>,
}

impl Drop for Resettable {
    fn drop(&mut self) {
        assert!(
            !self.in_reset.load(Ordering::SeqCst),
            "closed while its reset hook ran"
        );
        self.closes.fetch_add(1, Ordering::SeqCst);
    }
}

/// A `RawHandle` is `Copy`: two threads may end the same borrow (a bug in the caller).
/// The reset hook must own the connection while it runs: the second end is refused as
/// stale, never runs a second hook at once nor closes the connection under the first.
#[test]
fn a_copied_handle_ended_twice_during_a_reset_is_refused_not_shared() {
    let closes = Arc::new(AtomicUsize::new(0));
    let hooks_at_once = Arc::new(AtomicUsize::new(0));
    let overlap = Arc::new(AtomicBool::new(false));
    let (at_once, seen) = (hooks_at_once.clone(), overlap.clone());
    let pool = Arc::new(
        EnhancedConnectionPool::builder(quiet(4, 1))
            .reset(move |c: &mut Resettable| {
                if at_once.fetch_add(1, Ordering::SeqCst) > 0 {
                    seen.store(true, Ordering::SeqCst);
                }
                c.in_reset.store(true, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(60));
                c.in_reset.store(false, Ordering::SeqCst);
                at_once.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            })
            .build()
            .unwrap(),
    );
    pool.add_connection_sync(
        Resettable {
            in_reset: AtomicBool::new(false),
            closes: closes.clone(),
        },
        "alice",
        ConnectionMetadata::for_user("alice"),
    )
    .unwrap();
    for second_discards in [false, true] {
        let raw = pool.try_acquire("alice").unwrap().into_raw_handle();
        let first = {
            let pool = pool.clone();
            std::thread::spawn(move || pool.release_raw_handle(raw))
        };
        std::thread::sleep(Duration::from_millis(15)); // the first is in its hook
        let second = if second_discards {
            pool.discard_raw_handle(raw)
        } else {
            pool.release_raw_handle(raw)
        };
        assert!(
            matches!(second, Err(Error::StaleHandle { .. })),
            "{second:?}"
        );
        assert_eq!(first.join().unwrap(), Ok(()));
        assert!(!overlap.load(Ordering::SeqCst), "two resets ran at once");
        assert_eq!(closes.load(Ordering::SeqCst), 0);
        assert_eq!(pool.stats().idle_connections, 1);
    }
}

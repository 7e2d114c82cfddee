//! The sweeper: leak reports (levels, call site, thread, metadata, exactly once),
//! reclaim, health checks, idle/age eviction, the factory, and shutdown.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use heliosdb_pool::{
    ConnectionMetadata, EnhancedConnectionPool, EnhancedPoolConfig, Error, HealthMonitorConfig,
    HealthStatus, LeakLevel, LeakReport,
};

#[path = "support/common.rs"]
mod common;
use common::{quiet, wait_until};

/// A connection that counts its closes and can be told to fail its health check.
#[derive(Debug)]
struct Conn {
    closes: Arc<AtomicUsize>,
    healthy: Arc<AtomicBool>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.closes.fetch_add(1, Ordering::SeqCst);
    }
}

struct Fixture {
    closes: Arc<AtomicUsize>,
    healthy: Arc<AtomicBool>,
}

impl Fixture {
    fn new() -> Self {
        Fixture {
            closes: Arc::new(AtomicUsize::new(0)),
            healthy: Arc::new(AtomicBool::new(true)),
        }
    }
    fn conn(&self) -> Conn {
        Conn {
            closes: self.closes.clone(),
            healthy: self.healthy.clone(),
        }
    }
    fn closes(&self) -> usize {
        self.closes.load(Ordering::SeqCst)
    }
}

fn metadata(user: &str) -> ConnectionMetadata {
    ConnectionMetadata {
        user: user.into(),
        database: Some("orders".into()),
        protocol: "postgres".into(),
        remote_addr: Some("127.0.0.1:5432".into()),
        tags: vec!["primary".into()],
    }
}

#[test]
fn a_held_borrow_is_reported_once_per_level_with_site_thread_and_metadata() {
    let fx = Fixture::new();
    let reports: Arc<Mutex<Vec<(Instant, LeakReport)>>> = Arc::default();
    let sink = reports.clone();
    let pool = Arc::new(
        EnhancedConnectionPool::builder(EnhancedPoolConfig {
            leak_detection_enabled: true,
            leak_detection_threshold_ms: 100,
            ..quiet(4, 2)
        })
        .leak_critical_threshold(Duration::from_millis(300))
        .sweep_interval(Duration::from_millis(20))
        .on_leak(move |r| sink.lock().unwrap().push((Instant::now(), r.clone())))
        .build()
        .unwrap(),
    );
    let id = pool
        .add_connection_sync(fx.conn(), "alice", metadata("alice"))
        .unwrap();
    let p = pool.clone();
    let line = line!() + 5;
    let holder = std::thread::Builder::new()
        .name("slow-report".into())
        .spawn(move || {
            let started = Instant::now();
            let guard = p.blocking_acquire("alice").unwrap();
            std::thread::sleep(Duration::from_millis(450));
            drop(guard);
            started
        })
        .unwrap();
    let started = holder.join().unwrap();
    let reports = reports.lock().unwrap();
    assert_eq!(reports.len(), 2, "one report per level: {reports:?}");
    let (alert_at, alert) = &reports[0];
    let (critical_at, critical) = &reports[1];
    assert_eq!(
        (alert.level, critical.level),
        (LeakLevel::Alert, LeakLevel::Critical)
    );
    // Reported within threshold + one sweep interval (+ coarse-clock and scheduling slack).
    let alert_after = alert_at.duration_since(started);
    assert!(alert_after >= Duration::from_millis(95), "{alert_after:?}");
    assert!(
        alert_after <= Duration::from_millis(100 + 20 + 60),
        "{alert_after:?}"
    );
    let critical_after = critical_at.duration_since(started);
    assert!(
        critical_after >= Duration::from_millis(295),
        "{critical_after:?}"
    );
    assert!(
        critical_after <= Duration::from_millis(300 + 20 + 60),
        "{critical_after:?}"
    );
    assert_eq!(alert.resource_id.as_str(), id.to_string());
    assert_eq!(alert.acquired_by, "alice");
    let thread = alert.thread.as_deref().unwrap_or_default();
    assert!(thread.starts_with("slow-report (ThreadId("), "{thread}");
    let site = alert.call_site.unwrap().to_string();
    assert!(site.ends_with(&format!("sweeper.rs:{line}")), "{site}");
    assert!(
        alert
            .metadata
            .contains(&("database".into(), "orders".into()))
    );
    assert!(alert.metadata.contains(&("tags".into(), "primary".into())));
    let text = alert.to_string();
    assert!(text.contains("alice") && text.contains("ALERT"), "{text}");
    let leaks = pool.leak_detector.stats();
    assert_eq!(
        (leaks.leaks_detected, leaks.alerts, leaks.criticals),
        (1, 1, 1)
    );
    assert_eq!(leaks.returned_after_leak, 1);
    assert_eq!(leaks.current_tracked, 0);
}

#[test]
fn check_leaks_on_demand_and_no_false_positives_under_a_million_short_borrows() {
    let fx = Fixture::new();
    let pool = EnhancedConnectionPool::builder(EnhancedPoolConfig {
        leak_detection_enabled: true,
        leak_detection_threshold_ms: 50,
        ..quiet(4, 4)
    })
    .sweep_interval(Duration::from_millis(1))
    .build()
    .unwrap();
    for _ in 0..2 {
        pool.add_connection_sync(fx.conn(), "alice", metadata("alice"))
            .unwrap();
    }
    // Each borrow lasts far less than 1 ms: at least 50x shorter than the threshold.
    for _ in 0..1_000_000 {
        drop(pool.try_acquire("alice").unwrap());
    }
    assert_eq!(pool.stats().leak_stats.leaks_detected, 0);
    assert!(pool.leak_detector.check_leaks().is_empty());
    assert!(pool.stats().sweep.passes > 0, "the sweeper ran meanwhile");
    // A real leak shows on demand, before and independently of the sweeper's report.
    let held = pool.try_acquire("alice").unwrap();
    std::thread::sleep(Duration::from_millis(80));
    let leaks = pool.leak_detector.check_leaks();
    assert_eq!(leaks.len(), 1);
    assert_eq!(
        leaks[0].resource_id.as_str(),
        held.connection_id().to_string()
    );
    assert!(leaks[0].age >= Duration::from_millis(50));
}

#[test]
fn a_reclaimed_borrow_restores_capacity_and_closes_exactly_once_on_return() {
    let fx = Fixture::new();
    let reclaimed: Arc<Mutex<Vec<LeakReport>>> = Arc::default();
    let sink = reclaimed.clone();
    let pool = EnhancedConnectionPool::builder(EnhancedPoolConfig {
        leak_detection_enabled: true,
        leak_detection_threshold_ms: 20,
        auto_cleanup_enabled: true,
        cleanup_interval_ms: 10,
        ..quiet(2, 1)
    })
    .leak_critical_threshold(Duration::from_millis(60))
    .sweep_interval(Duration::from_millis(5))
    .on_reclaim(move |r| sink.lock().unwrap().push(r.clone()))
    .build()
    .unwrap();
    let id = pool
        .add_connection_sync(fx.conn(), "alice", metadata("alice"))
        .unwrap();
    let held = pool.try_acquire("alice").unwrap();
    // The user is at max_per_user...
    assert!(matches!(
        pool.add_connection_sync(fx.conn(), "alice", metadata("alice")),
        Err(Error::UserAtCapacity { .. })
    ));
    assert_eq!(fx.closes(), 1);
    assert!(wait_until(Duration::from_secs(2), || !reclaimed
        .lock()
        .unwrap()
        .is_empty()));
    assert_eq!(
        reclaimed.lock().unwrap()[0].resource_id.as_str(),
        id.to_string()
    );
    // ...and after the reclaim its capacity is back, while the holder keeps its connection.
    pool.add_connection_sync(fx.conn(), "alice", metadata("alice"))
        .unwrap();
    assert_eq!(fx.closes(), 1, "not closed under its holder");
    assert!(
        held.healthy.load(Ordering::SeqCst),
        "still usable by its holder"
    );
    assert_eq!(
        held.release(),
        Err(Error::Reclaimed {
            connection_id: id.raw()
        })
    );
    assert_eq!(fx.closes(), 2, "closed when returned, once");
    let stats = pool.stats();
    assert_eq!(stats.evictions.reclaimed, 1);
    assert_eq!(stats.total_connections, 1);
    drop(pool);
    assert_eq!(fx.closes(), 3);
}

fn health_pool(fx: &Fixture, policy: HealthMonitorConfig) -> EnhancedConnectionPool<Conn> {
    let factory_fx = Fixture {
        closes: fx.closes.clone(),
        healthy: Arc::new(AtomicBool::new(true)),
    };
    EnhancedConnectionPool::builder(EnhancedPoolConfig {
        health_check_enabled: true,
        health_check_interval_ms: 5,
        ..quiet(4, 2)
    })
    .sweep_interval(Duration::from_millis(5))
    .health_policy(policy)
    .health_check(|c: &Conn| {
        if c.healthy.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err("server closed the connection".into())
        }
    })
    .connection_factory(move |_user| Ok(factory_fx.conn()))
    .build()
    .unwrap()
}

#[test]
fn a_failing_connection_is_evicted_and_replaced_by_the_factory() {
    let fx = Fixture::new();
    let policy = HealthMonitorConfig {
        unhealthy_after_failures: 1,
        ..HealthMonitorConfig::default()
    };
    let pool = health_pool(&fx, policy);
    let bad = pool
        .add_connection_sync(fx.conn(), "alice", metadata("alice"))
        .unwrap();
    assert!(wait_until(Duration::from_secs(2), || pool
        .stats()
        .health_checks
        >= 2));
    fx.healthy.store(false, Ordering::SeqCst);
    assert!(wait_until(Duration::from_secs(2), || pool
        .stats()
        .evictions
        .health
        == 1));
    assert_eq!(fx.closes(), 1);
    assert!(wait_until(Duration::from_secs(2), || pool
        .stats()
        .factory_creates
        == 1));
    // Waits rather than `try_acquire`: the sweeper checks the replacement every 5 ms,
    // holding it for the check, and a try at that instant finds it in use.
    let replacement = pool.blocking_acquire("alice").unwrap();
    assert_ne!(replacement.connection_id(), bad);
    assert!(replacement.healthy.load(Ordering::SeqCst));
    assert!(pool.stats().health_failures >= 1);
}

#[test]
fn a_panicking_check_is_a_failure_and_the_sweeper_survives() {
    let fx = Fixture::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let pool = EnhancedConnectionPool::builder(EnhancedPoolConfig {
        health_check_enabled: true,
        health_check_interval_ms: 5,
        ..quiet(4, 2)
    })
    .sweep_interval(Duration::from_millis(5))
    .health_check(move |_c: &Conn| {
        seen.fetch_add(1, Ordering::SeqCst);
        panic!("driver bug")
    })
    .build()
    .unwrap();
    pool.add_connection_sync(fx.conn(), "alice", metadata("alice"))
        .unwrap();
    // Default policy: unhealthy after 3 failures in a row, then evicted.
    assert!(wait_until(Duration::from_secs(2), || pool
        .stats()
        .evictions
        .health
        == 1));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(pool.stats().health_failures, 3);
    // The sweeper is alive: it keeps completing passes.
    let passes = pool.stats().sweep.passes;
    assert!(wait_until(Duration::from_secs(2), || pool
        .stats()
        .sweep
        .passes
        > passes + 2));
}

#[test]
fn a_flapping_connection_moves_between_statuses() {
    let fx = Fixture::new();
    let pool = health_pool(&fx, HealthMonitorConfig::default());
    pool.add_connection_sync(fx.conn(), "alice", metadata("alice"))
        .unwrap();
    let status = |pool: &EnhancedConnectionPool<Conn>| {
        pool.connection_health()
            .first()
            .map(|h| (h.status, h.consecutive_failures))
    };
    assert!(wait_until(Duration::from_secs(2), || status(&pool)
        == Some((HealthStatus::Healthy, 0))));
    fx.healthy.store(false, Ordering::SeqCst);
    assert!(wait_until(Duration::from_secs(2), || status(&pool)
        == Some((HealthStatus::Degraded, 1))));
    fx.healthy.store(true, Ordering::SeqCst);
    assert!(wait_until(Duration::from_secs(2), || status(&pool)
        == Some((HealthStatus::Healthy, 0))));
    let health = &pool.connection_health()[0];
    assert_eq!(
        health.last_error.as_deref(),
        Some("server closed the connection")
    );
    assert_eq!(pool.stats().evictions.health, 0);
}

#[test]
fn idle_eviction_keeps_min_idle() {
    let fx = Fixture::new();
    let pool = EnhancedConnectionPool::builder(EnhancedPoolConfig {
        idle_timeout_ms: 50,
        cleanup_interval_ms: 10,
        ..quiet(8, 4)
    })
    .min_idle(1)
    .on_evict(|_| {}) // without a factory, the pool shrinks only with a hook
    .build()
    .unwrap();
    for _ in 0..4 {
        pool.add_connection_sync(fx.conn(), "alice", metadata("alice"))
            .unwrap();
    }
    assert!(wait_until(Duration::from_secs(2), || pool
        .stats()
        .evictions
        .idle
        == 3));
    std::thread::sleep(Duration::from_millis(150));
    let stats = pool.stats();
    assert_eq!(
        (stats.total_connections, stats.evictions.idle),
        (1, 3),
        "min_idle kept"
    );
    assert_eq!(fx.closes(), 3);
}

#[test]
fn a_used_connection_is_not_idle_evicted() {
    let fx = Fixture::new();
    let pool = EnhancedConnectionPool::builder(EnhancedPoolConfig {
        idle_timeout_ms: 100,
        cleanup_interval_ms: 10,
        ..quiet(8, 4)
    })
    .on_evict(|_| {}) // without a factory, the pool shrinks only with a hook
    .build()
    .unwrap();
    pool.add_connection_sync(fx.conn(), "alice", metadata("alice"))
        .unwrap();
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(300) {
        drop(pool.try_acquire("alice").unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(pool.stats().evictions.idle, 0);
}

#[test]
fn age_eviction_spreads_expiry_and_never_takes_a_borrowed_connection() {
    let fx = Fixture::new();
    let pool = EnhancedConnectionPool::builder(EnhancedPoolConfig {
        max_connection_age_ms: 400,
        cleanup_interval_ms: 5,
        ..quiet(64, 64)
    })
    .age_jitter(0.5)
    .on_evict(|_| {}) // without a factory, the pool shrinks only with a hook
    .build()
    .unwrap();
    let start = Instant::now();
    for _ in 0..40 {
        pool.add_connection_sync(fx.conn(), "alice", metadata("alice"))
            .unwrap();
    }
    let held = pool.try_acquire("alice").unwrap();
    let mut seen = 0;
    let mut first = None;
    let mut last = None;
    while start.elapsed() < Duration::from_secs(2) && seen < 39 {
        let closes = fx.closes();
        if closes > seen {
            first.get_or_insert(start.elapsed());
            last = Some(start.elapsed());
            seen = closes;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(seen, 39, "every idle connection aged out");
    let (first, last) = (first.unwrap(), last.unwrap());
    assert!(first >= Duration::from_millis(180), "{first:?}");
    assert!(
        last - first >= Duration::from_millis(80),
        "jitter spreads expiry: {first:?}..{last:?}"
    );
    // The borrowed one is past its age too, but is closed only when returned.
    assert_eq!(pool.stats().total_connections, 1);
    drop(held);
    assert_eq!(fx.closes(), 40);
    assert_eq!(pool.stats().evictions.age, 40);
}

#[test]
fn the_factory_serves_unknown_users_and_its_errors_reach_the_timeout() {
    let fx = Fixture::new();
    let fail = Arc::new(AtomicBool::new(false));
    let failing = fail.clone();
    let factory_fx = Fixture {
        closes: fx.closes.clone(),
        healthy: fx.healthy.clone(),
    };
    let pool = EnhancedConnectionPool::builder(EnhancedPoolConfig {
        acquire_timeout_ms: 300,
        ..quiet(4, 1)
    })
    .connection_factory(move |user| {
        if failing.load(Ordering::SeqCst) {
            Err(format!("connection refused for {user}"))
        } else {
            Ok(factory_fx.conn())
        }
    })
    .build()
    .unwrap();
    let started = Instant::now();
    let guard = pool.blocking_acquire("newcomer").unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(guard.user(), "newcomer");
    drop(guard);
    fail.store(true, Ordering::SeqCst);
    let err = pool.blocking_acquire("stranger").unwrap_err();
    match &err {
        Error::Timeout {
            last_factory_error,
            factory_backoff,
            ..
        } => {
            assert_eq!(
                last_factory_error.as_deref(),
                Some("connection refused for stranger")
            );
            // The user's backoff, for whoever reads the error at 3 a.m.
            let backoff = factory_backoff.as_deref().expect("backing off");
            assert!(backoff.failures_in_a_row >= 1);
            assert!(backoff.next_retry_in <= Duration::from_secs(10));
        }
        other => panic!("expected a timeout, got {other}"),
    }
    let text = err.to_string();
    assert!(text.contains(" in a row, next retry in "), "{text}");
    let stats = pool.stats();
    assert!(stats.factory_errors >= 1);
    assert_eq!(stats.factory_creates, 1);
    let stranger = |stats: &heliosdb_pool::PoolStats| {
        stats
            .users
            .iter()
            .find(|u| u.user == "stranger")
            .cloned()
            .unwrap()
    };
    let before = stranger(&stats);
    assert!(before.factory_errors >= 1 && before.factory_backoff.is_some());
    assert_eq!(
        before.last_factory_error.as_deref(),
        Some("connection refused for stranger")
    );
    // A success clears the user's error and backoff.
    fail.store(false, Ordering::SeqCst);
    let guard = pool
        .blocking_acquire_timeout("stranger", Duration::from_secs(15))
        .unwrap();
    let after = stranger(&pool.stats());
    assert_eq!(
        (after.factory_backoff, after.last_factory_error.as_deref()),
        (None, None)
    );
    assert_eq!(after.factory_creates, 1);
    drop(guard);
}

#[test]
fn shutdown_with_borrows_out_closes_everything_once_and_joins_the_sweeper() {
    let fx = Fixture::new();
    let pool = Arc::new(
        EnhancedConnectionPool::builder(EnhancedPoolConfig {
            leak_detection_enabled: true,
            leak_detection_threshold_ms: 60_000,
            ..quiet(8, 4)
        })
        .sweep_interval(Duration::from_millis(1))
        .build()
        .unwrap(),
    );
    for _ in 0..4 {
        pool.add_connection_sync(fx.conn(), "alice", metadata("alice"))
            .unwrap();
    }
    assert!(wait_until(Duration::from_secs(2), || pool
        .stats()
        .sweep
        .passes
        > 3));
    let a = pool.try_acquire("alice").unwrap().into_raw_handle();
    let b = pool.try_acquire("alice").unwrap().into_raw_handle();
    let closing = Instant::now();
    pool.close();
    // `close` returns once the sweeper is joined: no pass runs after it.
    assert!(closing.elapsed() < Duration::from_secs(1));
    let passes = pool.stats().sweep.passes;
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(pool.stats().sweep.passes, passes, "the sweeper stopped");
    assert_eq!(fx.closes(), 2, "idle ones closed at once");
    pool.release_raw_handle(a).unwrap();
    assert_eq!(fx.closes(), 3);
    pool.release_raw_handle(b).unwrap();
    assert_eq!(fx.closes(), 4);
    drop(pool);
    assert_eq!(fx.closes(), 4, "each closed exactly once");
}

//! The connection factory per user: connects off the sweeper thread, several at a
//! time up to `max_concurrent_connects`, per-user backoff and last error, metadata
//! returned by the factory, and connects in flight while the pool closes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use heliosdb_pool::{
    ConnectionMetadata, EnhancedConnectionPool, EnhancedPoolConfig, Error, LeakReport,
};

#[path = "support/common.rs"]
mod common;
use common::{quiet, wait_until};

/// A connection that counts its closes.
#[derive(Debug)]
struct Conn {
    user: String,
    closes: Arc<AtomicUsize>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.closes.fetch_add(1, Ordering::SeqCst);
    }
}

/// Counts factory calls per user, connections made, closed, and connects in flight
/// (with the largest number seen at once).
#[derive(Default)]
struct Ledger {
    calls: Mutex<HashMap<String, usize>>,
    made: AtomicUsize,
    closes: Arc<AtomicUsize>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl Ledger {
    fn calls(&self, user: &str) -> usize {
        self.calls.lock().unwrap().get(user).copied().unwrap_or(0)
    }

    /// Records a call for `user`, runs `connect` counted in flight, and makes a
    /// connection if it says so.
    fn connect(
        &self,
        user: &str,
        connect: impl FnOnce() -> Result<(), String>,
    ) -> Result<Conn, String> {
        *self.calls.lock().unwrap().entry(user.into()).or_default() += 1;
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let result = connect();
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        result?;
        self.made.fetch_add(1, Ordering::SeqCst);
        Ok(Conn {
            user: user.into(),
            closes: self.closes.clone(),
        })
    }

    fn closes(&self) -> usize {
        self.closes.load(Ordering::SeqCst)
    }

    /// Adds a connection of `user` made without the factory.
    fn add(&self, pool: &EnhancedConnectionPool<Conn>, user: &str) {
        let conn = Conn {
            user: user.into(),
            closes: self.closes.clone(),
        };
        pool.add_connection_sync(conn, user, ConnectionMetadata::for_user(user))
            .unwrap();
    }
}

fn config(max_connections: usize, max_per_user: usize, timeout_ms: u64) -> EnhancedPoolConfig {
    EnhancedPoolConfig {
        acquire_timeout_ms: timeout_ms,
        ..quiet(max_connections, max_per_user)
    }
}

/// alice's connects work, mallory's always fail; mallory always has callers waiting.
/// Over the window alice is served every time (each borrow discarded, so each acquire
/// needs a connect), and mallory's connects are paced by her own backoff.
#[test]
fn alice_is_served_while_mallory_always_fails() {
    let ledger = Arc::new(Ledger::default());
    let fx = ledger.clone();
    let pool = Arc::new(
        EnhancedConnectionPool::builder(config(20, 5, 2_000))
            .connection_factory(move |user: &str| {
                fx.connect(user, || match user {
                    "mallory" => Err("role \"mallory\" does not exist".into()),
                    _ => Ok(()),
                })
            })
            .build()
            .unwrap(),
    );
    let window = Duration::from_secs(2);
    let started = Instant::now();
    let mallory: Vec<_> = (0..3)
        .map(|_| {
            let pool = pool.clone();
            std::thread::spawn(move || {
                while started.elapsed() < window {
                    let got = pool.blocking_acquire_timeout("mallory", Duration::from_millis(150));
                    assert!(matches!(got, Err(Error::Timeout { .. })), "{got:?}");
                }
            })
        })
        .collect();
    let mut served = 0;
    while started.elapsed() < window {
        let conn = pool
            .blocking_acquire("alice")
            .expect("alice never times out");
        assert_eq!(conn.user, "alice");
        conn.discard().unwrap();
        served += 1;
    }
    for t in mallory {
        t.join().unwrap();
    }
    let (alice, mallory) = (ledger.calls("alice"), ledger.calls("mallory"));
    eprintln!("in {window:?}: alice {alice} connects ({served} borrows), mallory {mallory}");
    assert!(served >= 20, "alice served only {served} times");
    assert!(alice >= served, "{alice} connects for {served} borrows");
    // 100 ms doubling: failures at about 0, 0.1, 0.3, 0.7, 1.5 s (a few at once at
    // first, up to the per-user share of the bound).
    assert!(
        (1..=10).contains(&mallory),
        "mallory retried {mallory} times in {window:?}"
    );
    let stats = pool.stats();
    let mallory = stats.users.iter().find(|u| u.user == "mallory").unwrap();
    assert!(mallory.factory_backoff.unwrap().failures_in_a_row >= 3);
    let alice = stats.users.iter().find(|u| u.user == "alice").unwrap();
    assert_eq!((alice.factory_errors, alice.factory_backoff), (0, None));
    assert!(alice.factory_creates >= served as u64);
}

/// One user's connect takes 2 s. Meanwhile another user's connect completes at once, a
/// leak is reported and an idle connection is evicted on time: nothing waits for it.
#[test]
fn a_slow_connect_delays_no_other_connect_nor_leak_report_nor_eviction() {
    let ledger = Arc::new(Ledger::default());
    let fx = ledger.clone();
    let leaks: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let seen = leaks.clone();
    let cfg = EnhancedPoolConfig {
        leak_detection_enabled: true,
        leak_detection_threshold_ms: 100,
        idle_timeout_ms: 100,
        cleanup_interval_ms: 20,
        ..config(10, 5, 5_000)
    };
    let pool = Arc::new(
        EnhancedConnectionPool::builder(cfg)
            .sweep_interval(Duration::from_millis(10))
            .connection_factory(move |user: &str| {
                fx.connect(user, || {
                    if user == "slow" {
                        std::thread::sleep(Duration::from_secs(2));
                    }
                    Ok(())
                })
            })
            .on_leak(move |_: &LeakReport| seen.lock().unwrap().push(Instant::now()))
            .build()
            .unwrap(),
    );
    ledger.add(&pool, "idler");
    let slow = {
        let pool = pool.clone();
        std::thread::spawn(move || pool.blocking_acquire("slow").map(|c| c.user.clone()))
    };
    assert!(wait_until(Duration::from_secs(1), || ledger
        .in_flight
        .load(Ordering::SeqCst)
        == 1));
    let started = Instant::now();
    let fast = pool.blocking_acquire("fast").unwrap();
    let fast_took = started.elapsed();
    // Held past the leak threshold, while the slow connect still runs.
    assert!(wait_until(Duration::from_millis(1_000), || !leaks
        .lock()
        .unwrap()
        .is_empty()));
    let leak_after = leaks.lock().unwrap()[0] - started;
    assert!(wait_until(Duration::from_millis(1_000), || pool
        .stats()
        .evictions
        .idle
        == 1));
    let evicted_after = started.elapsed();
    assert_eq!(
        ledger.in_flight.load(Ordering::SeqCst),
        1,
        "all of this while the slow connect runs"
    );
    eprintln!(
        "during a 2 s connect: another user's connect served in {fast_took:?}, a leak reported \
         after {leak_after:?}, an idle connection evicted after {evicted_after:?}"
    );
    assert!(fast_took < Duration::from_millis(500), "{fast_took:?}");
    drop(fast);
    assert_eq!(slow.join().unwrap().unwrap(), "slow");
}

/// Ten users each with a caller waiting, connects of 50 ms, a bound of 3: never more
/// than 3 at once, and more than one at once.
#[test]
fn the_bound_on_concurrent_connects_holds() {
    let ledger = Arc::new(Ledger::default());
    let fx = ledger.clone();
    let pool = Arc::new(
        EnhancedConnectionPool::builder(config(100, 5, 5_000))
            .max_concurrent_connects(3)
            .connection_factory(move |user: &str| {
                fx.connect(user, || {
                    std::thread::sleep(Duration::from_millis(50));
                    Ok(())
                })
            })
            .build()
            .unwrap(),
    );
    let sampled_max = Arc::new(AtomicUsize::new(0));
    let callers: Vec<_> = (0..10)
        .flat_map(|u| (0..2).map(move |_| u))
        .map(|u| {
            let pool = pool.clone();
            let sampled_max = sampled_max.clone();
            std::thread::spawn(move || {
                let user = format!("user-{u}");
                let conn = pool.blocking_acquire(&user).unwrap();
                sampled_max.fetch_max(pool.stats().connects_in_flight, Ordering::SeqCst);
                assert_eq!(conn.user, user);
            })
        })
        .collect();
    for c in callers {
        c.join().unwrap();
    }
    let max = ledger.max_in_flight.load(Ordering::SeqCst);
    eprintln!(
        "{} connects, at most {max} at once (stats saw {})",
        ledger.made.load(Ordering::SeqCst),
        sampled_max.load(Ordering::SeqCst)
    );
    assert!((2..=3).contains(&max), "{max} connects at once");
    assert!(sampled_max.load(Ordering::SeqCst) <= 3);
    assert!(wait_until(Duration::from_secs(2), || pool
        .stats()
        .connects_in_flight
        == 0));
}

fn described(user: &str) -> ConnectionMetadata {
    ConnectionMetadata {
        user: String::new(), // filled in by the pool
        database: Some("orders".into()),
        protocol: "postgres".into(),
        remote_addr: Some("10.0.0.7:5432".into()),
        tags: vec!["primary".into(), format!("for-{user}")],
    }
}

/// What the factory says about a connection is what leak reports and `borrows()` say.
#[test]
fn metadata_returned_by_the_factory_appears_in_leak_reports_and_borrows() {
    let ledger = Arc::new(Ledger::default());
    let fx = ledger.clone();
    let reports: Arc<Mutex<Vec<LeakReport>>> = Arc::default();
    let sink = reports.clone();
    let cfg = EnhancedPoolConfig {
        leak_detection_enabled: true,
        leak_detection_threshold_ms: 20,
        ..config(10, 5, 2_000)
    };
    let pool = EnhancedConnectionPool::builder(cfg)
        .sweep_interval(Duration::from_secs(3_600))
        .connection_factory_with_metadata(move |user: &str| {
            let conn = fx.connect(user, || Ok(()))?;
            Ok((conn, described(user)))
        })
        .on_leak(move |r: &LeakReport| sink.lock().unwrap().push(r.clone()))
        .build()
        .unwrap();
    let conn = pool.blocking_acquire("alice").unwrap();
    let borrows = pool.borrows();
    assert_eq!(borrows.len(), 1);
    assert_eq!(
        borrows[0].metadata,
        ConnectionMetadata {
            user: "alice".into(),
            ..described("alice")
        }
    );
    std::thread::sleep(Duration::from_millis(40));
    pool.sweep_now().unwrap();
    let reports = reports.lock().unwrap();
    assert_eq!(reports.len(), 1);
    let md: HashMap<_, _> = reports[0].metadata.iter().cloned().collect();
    assert_eq!(md["database"], "orders");
    assert_eq!(md["protocol"], "postgres");
    assert_eq!(md["remote_addr"], "10.0.0.7:5432");
    assert_eq!(md["tags"], "primary,for-alice");
    drop(conn);

    // The plain factory still tags its connections `factory`.
    let plain = EnhancedConnectionPool::builder(config(10, 5, 2_000))
        .connection_factory(|user: &str| Ok(user.to_string()))
        .build()
        .unwrap();
    let conn = plain.blocking_acquire("bob").unwrap();
    assert_eq!(plain.borrows()[0].metadata.tags, ["factory"]);
    drop(conn);
}

/// Metadata naming another user is refused: the connection is closed and the failure
/// is the user's last error.
#[test]
fn metadata_for_another_user_is_a_failed_connect_and_the_connection_is_closed() {
    let ledger = Arc::new(Ledger::default());
    let fx = ledger.clone();
    let pool = EnhancedConnectionPool::builder(config(10, 5, 300))
        .connection_factory_with_metadata(move |user: &str| {
            let conn = fx.connect(user, || Ok(()))?;
            Ok((conn, ConnectionMetadata::for_user("someone-else")))
        })
        .build()
        .unwrap();
    let err = pool.blocking_acquire("alice").unwrap_err();
    let Error::Timeout {
        last_factory_error: Some(error),
        ..
    } = &err
    else {
        panic!("{err:?}");
    };
    assert!(error.contains("someone-else"), "{error}");
    assert_eq!(ledger.closes(), ledger.made.load(Ordering::SeqCst));
    assert_eq!(pool.stats().total_connections, 0);
}

/// A panicking connect counts as a failure of its user only; the pool goes on.
#[test]
fn a_panicking_connect_is_a_failure_and_the_pool_goes_on() {
    // Long enough for the panic hook to print a backtrace on a loaded machine.
    let pool = EnhancedConnectionPool::builder(config(10, 5, 2_000))
        .connection_factory(|user: &str| {
            if user == "boom" {
                panic!("driver bug");
            }
            Ok(user.to_string())
        })
        .build()
        .unwrap();
    let err = pool.blocking_acquire("boom").unwrap_err();
    assert!(
        err.to_string().contains("the connection factory panicked"),
        "{err}"
    );
    assert_eq!(pool.blocking_acquire("alice").unwrap().as_str(), "alice");
    let stats = pool.stats();
    assert!(stats.factory_errors >= 1);
    assert_eq!(stats.factory_creates, 1);
}

/// A failing user nobody waits for is not retried forever: after its caller leaves,
/// its outstanding request is given up after a few failures.
#[test]
fn a_failing_user_nobody_waits_for_is_not_retried_forever() {
    let ledger = Arc::new(Ledger::default());
    let fx = ledger.clone();
    let pool = EnhancedConnectionPool::builder(config(10, 5, 100))
        .connection_factory(move |user: &str| fx.connect(user, || Err("unreachable".into())))
        .build()
        .unwrap();
    assert!(pool.blocking_acquire("mallory").is_err());
    // Backoff: 100, 200, 400 ms; the request is dropped at the third failure.
    std::thread::sleep(Duration::from_millis(1_500));
    let settled = ledger.calls("mallory");
    std::thread::sleep(Duration::from_millis(2_000));
    assert_eq!(
        ledger.calls("mallory"),
        settled,
        "retried with nobody waiting"
    );
    assert!((1..=4).contains(&settled), "{settled} calls");
}

/// A replacement for an evicted connection of a failing user, with nobody waiting, is
/// tried a few times (backing off) and then given up.
#[test]
fn a_failing_replacement_nobody_waits_for_is_given_up() {
    let ledger = Arc::new(Ledger::default());
    let fx = ledger.clone();
    let cfg = EnhancedPoolConfig {
        health_check_enabled: true,
        health_check_interval_ms: 1,
        ..config(10, 5, 100)
    };
    let pool = EnhancedConnectionPool::builder(cfg)
        .sweep_interval(Duration::from_millis(5))
        .health_policy(heliosdb_pool::HealthMonitorConfig {
            unhealthy_after_failures: 1,
            ..Default::default()
        })
        .health_check(|_: &Conn| Err("the backend is gone".into()))
        .connection_factory(move |user: &str| fx.connect(user, || Err("unreachable".into())))
        .build()
        .unwrap();
    ledger.add(&pool, "mallory");
    assert!(wait_until(Duration::from_secs(2), || pool
        .stats()
        .evictions
        .health
        == 1));
    // Backoff 100, 200 ms: the third failure (at about 0.3 s) gives the request up.
    std::thread::sleep(Duration::from_millis(1_500));
    let settled = ledger.calls("mallory");
    std::thread::sleep(Duration::from_millis(2_000));
    assert_eq!(
        ledger.calls("mallory"),
        settled,
        "retried with nobody waiting"
    );
    // Given up after three failures in a row, as `connection_factory_with_metadata`
    // documents.
    assert_eq!(settled, 3);
}

/// A connect in flight when the pool closes (or is dropped): close waits for it, and
/// its connection is closed exactly once, never added.
#[test]
fn a_connect_in_flight_during_close_or_drop_is_closed_exactly_once() {
    for by_drop in [false, true] {
        let ledger = Arc::new(Ledger::default());
        let fx = ledger.clone();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let released = Mutex::new(released);
        // min_idle asks for the connect: nobody waits, the sweeper hands it over.
        let pool = EnhancedConnectionPool::builder(config(10, 5, 5_000))
            .min_idle(1)
            .sweep_interval(Duration::from_millis(5))
            .connection_factory(move |user: &str| {
                fx.connect(user, || {
                    let _ = released.lock().unwrap().recv();
                    Ok(())
                })
            })
            .build()
            .unwrap();
        ledger.add(&pool, "alice");
        let held = pool.try_acquire("alice").unwrap().detach().unwrap();
        assert!(wait_until(Duration::from_secs(2), || ledger
            .in_flight
            .load(Ordering::SeqCst)
            == 1));
        std::thread::scope(|s| {
            let closer = s.spawn(|| {
                if by_drop {
                    drop(pool);
                } else {
                    pool.close();
                    assert_eq!(pool.stats().total_connections, 0, "never added");
                }
            });
            std::thread::sleep(Duration::from_millis(50));
            assert!(
                !closer.is_finished(),
                "close waits for the connect in flight"
            );
            release.send(()).unwrap();
            closer.join().unwrap();
        });
        // Closed by the time close (or drop) returned: the connect's thread is joined.
        assert_eq!(ledger.made.load(Ordering::SeqCst), 1);
        assert_eq!(
            ledger.closes(),
            1,
            "closed exactly once (by_drop: {by_drop})"
        );
        drop(held);
        assert_eq!(ledger.closes(), 2);
    }
}

/// A full pool opens nothing while callers wait (their connects could not be added).
#[test]
fn a_full_pool_opens_nothing_while_callers_wait() {
    let ledger = Arc::new(Ledger::default());
    let fx = ledger.clone();
    let pool = EnhancedConnectionPool::builder(config(2, 2, 300))
        .max_concurrent_connects(4)
        .connection_factory(move |user: &str| fx.connect(user, || Ok(())))
        .build()
        .unwrap();
    let a = pool.blocking_acquire("alice").unwrap();
    let b = pool.blocking_acquire("alice").unwrap();
    assert_eq!(ledger.calls("alice"), 2);
    let err = pool.blocking_acquire("bob").unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert_eq!(ledger.calls("bob"), 0, "a full pool opened a connection");
    // A place frees: the waiting caller is served by the factory.
    let bob = std::thread::scope(|s| {
        let waiter = s.spawn(|| pool.blocking_acquire_timeout("bob", Duration::from_secs(5)));
        std::thread::sleep(Duration::from_millis(50));
        a.discard().unwrap();
        waiter.join().unwrap()
    });
    assert_eq!(bob.unwrap().user, "bob");
    assert_eq!(ledger.calls("bob"), 1);
    drop(b);
}

/// `max_concurrent_connects` must be at least 1.
#[test]
fn a_zero_bound_is_a_config_error() {
    let err = EnhancedConnectionPool::<u32>::builder(EnhancedPoolConfig::default())
        .max_concurrent_connects(0)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("max_concurrent_connects"), "{err}");
}

/// The connector threads are named after the pool and started only on demand.
#[test]
fn connector_threads_are_named_and_started_on_demand() {
    let names: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = names.clone();
    let pool = EnhancedConnectionPool::builder(config(10, 5, 2_000))
        .connection_factory(move |user: &str| {
            let name = std::thread::current().name().unwrap_or("").to_string();
            seen.lock().unwrap().push(name);
            Ok(user.to_string())
        })
        .build()
        .unwrap();
    assert!(names.lock().unwrap().is_empty());
    drop(pool.blocking_acquire("alice").unwrap());
    let names = names.lock().unwrap();
    assert_eq!(names.len(), 1);
    assert!(names[0].starts_with("heliosdb-connect-"), "{names:?}");
}

//! Everything at once, for a while: borrowers of three users (blocking, try, C call
//! sites, async acquires cancelled mid-wait, long holds that get reclaimed, removes,
//! detaches) with the sweeper at 1 ms, health checks that fail at random, a factory that
//! fails at random, idle and age eviction, and a reader taking `borrows()`, leak scans
//! and stats throughout. Checked: no connection is ever held twice, none is handed to
//! another user, and every connection ever made is dropped exactly once.
//!
//! Runs `HELIOSDB_STRESS_SECS` seconds (default 5; `.ci/run` sets 20).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use heliosdb_pool::{
    CSite, CallSite, ConnectionMetadata, EnhancedConnectionPool, EnhancedPoolConfig, Error,
    HealthMonitorConfig,
};

const USERS: [&str; 3] = ["alice", "bob", "carol"];

/// Which connections were made and how often each was dropped.
#[derive(Default)]
struct Ledger {
    made: AtomicU64,
    drops: Mutex<HashMap<u64, u32>>,
}

struct Conn {
    id: u64,
    user: &'static str,
    in_use: AtomicBool,
    ledger: Arc<Ledger>,
}

impl Conn {
    fn new(user: &'static str, ledger: &Arc<Ledger>) -> Self {
        Conn {
            id: ledger.made.fetch_add(1, Ordering::SeqCst),
            user,
            in_use: AtomicBool::new(false),
            ledger: ledger.clone(),
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        assert!(!self.in_use.load(Ordering::SeqCst), "closed while in use");
        *self
            .ledger
            .drops
            .lock()
            .unwrap()
            .entry(self.id)
            .or_default() += 1;
    }
}

/// A small, fast, shared pseudo-random source (xorshift over an atomic).
struct Dice(AtomicU64);

impl Dice {
    fn roll(&self, below: u64) -> u64 {
        let mut x = self.0.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0.store(x, Ordering::Relaxed);
        x % below
    }
}

fn user_of(name: &str) -> &'static str {
    USERS.iter().find(|u| **u == name).expect("a known user")
}

const C_SITE: CSite = CSite::from_static(c"chaos.c", 99, Some(c"borrow"));

#[test]
fn chaos_never_shares_never_crosses_users_and_closes_everything_once() {
    let secs: u64 = std::env::var("HELIOSDB_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let ledger = Arc::new(Ledger::default());
    let dice = Arc::new(Dice(AtomicU64::new(0x9e37_79b9_7f4a_7c15)));
    let factory_ledger = ledger.clone();
    let factory_dice = dice.clone();
    let check_dice = dice.clone();
    let pool = EnhancedConnectionPool::builder(EnhancedPoolConfig {
        max_connections: 8,
        max_per_user: 3,
        acquire_timeout_ms: 50,
        idle_timeout_ms: 40,
        max_connection_age_ms: 300,
        health_check_enabled: true,
        health_check_interval_ms: 5,
        leak_detection_enabled: true,
        leak_detection_threshold_ms: 10,
        auto_cleanup_enabled: true,
        cleanup_interval_ms: 1,
    })
    .leak_critical_threshold(Duration::from_millis(20))
    .sweep_interval(Duration::from_millis(1))
    .min_idle(1)
    .health_policy(HealthMonitorConfig {
        unhealthy_after_failures: 1,
        ..HealthMonitorConfig::default()
    })
    .health_check(move |_: &Conn| {
        if check_dice.roll(20) == 0 {
            Err("flaky".into())
        } else {
            Ok(())
        }
    })
    .connection_factory(move |user| {
        if factory_dice.roll(10) == 0 {
            Err("connect refused".into())
        } else {
            Ok(Conn::new(user_of(user), &factory_ledger))
        }
    })
    .build()
    .unwrap();
    let pool = Arc::new(pool);
    for user in USERS {
        pool.add_connection_sync(
            Conn::new(user, &ledger),
            user,
            ConnectionMetadata::for_user(user),
        )
        .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(secs);
    let violations = Arc::new(AtomicU64::new(0));
    let borrows = Arc::new(AtomicU64::new(0));
    let borrowers: Vec<_> = (0..5u64)
        .map(|t| {
            let (pool, ledger, violations, borrows) = (
                pool.clone(),
                ledger.clone(),
                violations.clone(),
                borrows.clone(),
            );
            let dice = Dice(AtomicU64::new(0x2545_f491_4f6c_dd1d ^ (t + 1)));
            std::thread::spawn(move || {
                while Instant::now() < deadline {
                    let user = USERS[dice.roll(3) as usize];
                    let guard = match dice.roll(10) {
                        0 => match pool.try_acquire_at(user, CallSite::C(C_SITE)) {
                            Ok(g) => g,
                            Err(_) => continue,
                        },
                        1 | 2 => match pool.try_acquire(user) {
                            Ok(g) => g,
                            Err(_) => continue,
                        },
                        3 => {
                            // An async acquire, cancelled unless it completes at once.
                            let mut future = pool.acquire(user);
                            let mut cx = Context::from_waker(Waker::noop());
                            match Pin::new(&mut future).poll(&mut cx) {
                                Poll::Ready(Ok(g)) => g,
                                _ => {
                                    std::thread::sleep(Duration::from_micros(200));
                                    match Pin::new(&mut future).poll(&mut cx) {
                                        Poll::Ready(Ok(g)) => g,
                                        _ => continue, // dropped: withdraws or gives back
                                    }
                                }
                            }
                        }
                        _ => match pool.blocking_acquire(user) {
                            Ok(g) => g,
                            Err(Error::Timeout { .. }) => continue,
                            Err(e) => panic!("{e}"),
                        },
                    };
                    borrows.fetch_add(1, Ordering::Relaxed);
                    if guard.user != user || guard.in_use.swap(true, Ordering::SeqCst) {
                        violations.fetch_add(1, Ordering::SeqCst);
                    }
                    match dice.roll(50) {
                        // Held past the critical threshold: reclaimed under our feet.
                        0 => std::thread::sleep(Duration::from_millis(25)),
                        1 => std::thread::sleep(Duration::from_millis(2)),
                        _ => {}
                    }
                    guard.in_use.store(false, Ordering::SeqCst);
                    match dice.roll(40) {
                        0 => {
                            let _ = pool.remove_connection(guard.connection_id());
                            drop(guard);
                        }
                        1 => {
                            if let Ok(conn) = guard.detach() {
                                drop(conn); // closed by us, once
                            }
                        }
                        2 => {
                            // A replacement added by hand, as a service would.
                            drop(guard);
                            let _ = pool.add_connection_sync(
                                Conn::new(user, &ledger),
                                user,
                                ConnectionMetadata::for_user(user),
                            );
                        }
                        _ => match guard.release() {
                            Ok(()) | Err(Error::Reclaimed { .. }) => {}
                            Err(e) => panic!("{e}"),
                        },
                    }
                }
            })
        })
        .collect();
    let reader = {
        let pool = pool.clone();
        std::thread::spawn(move || {
            let mut scans = 0u64;
            while Instant::now() < deadline {
                for b in pool.borrows() {
                    assert!(USERS.contains(&b.user.as_str()));
                    if let Some(site) = b.call_site {
                        assert!(site.line() > 0);
                    }
                }
                for report in pool.leak_detector.check_leaks() {
                    assert!(USERS.contains(&report.acquired_by.as_str()));
                }
                let stats = pool.stats();
                assert!(stats.total_connections <= 8 + 2, "{stats:?}");
                scans += 1;
                std::thread::sleep(Duration::from_micros(300));
            }
            scans
        })
    };
    for b in borrowers {
        b.join().unwrap();
    }
    let scans = reader.join().unwrap();
    let stats = pool.stats();
    assert_eq!(
        violations.load(Ordering::SeqCst),
        0,
        "shared or crossed users"
    );
    assert!(borrows.load(Ordering::Relaxed) > 1_000, "{stats:?}");
    assert!(scans > 10);
    pool.close();
    drop(pool);
    let made = ledger.made.load(Ordering::SeqCst);
    let drops = ledger.drops.lock().unwrap();
    assert_eq!(drops.len() as u64, made, "every connection dropped");
    assert!(drops.values().all(|&n| n == 1), "each exactly once");
    eprintln!(
        "chaos: {} borrows, {made} connections made, {} reclaimed, {} health failures, {} factory errors, {scans} scans",
        borrows.load(Ordering::Relaxed),
        stats.evictions.reclaimed,
        stats.health_failures,
        stats.factory_errors,
    );
}

//! Bounded users: `max_users`, `max_user_name_len`, and the retirement of users that
//! had no connection, no waiter and no request for `retire_users_after` (issue: "a
//! database's bad day", unbounded user names as a denial of service).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use heliosdb_pool::{ConnectionMetadata, EnhancedConnectionPool, Error, Status};

#[path = "support/common.rs"]
mod common;
use common::quiet;

const WRAP: u64 = 1 << 48;

/// A pool whose sweeper runs only when the test says (`sweep_now`).
fn pool_with(
    max_users: usize,
    retire_after: Duration,
    factory: bool,
) -> EnhancedConnectionPool<String> {
    let mut builder = EnhancedConnectionPool::<String>::builder(quiet(8, 2))
        .max_users(max_users)
        .max_user_name_len(16)
        .retire_users_after(retire_after)
        .sweep_interval(Duration::from_secs(3600));
    if factory {
        builder = builder.connection_factory(|user: &str| Ok(format!("made for {user}")));
    }
    builder.build().unwrap()
}

fn add(pool: &EnhancedConnectionPool<String>, user: &str) -> heliosdb_pool::ConnectionId {
    pool.add_connection_sync(user.to_string(), user, ConnectionMetadata::default())
        .unwrap()
}

fn users(pool: &EnhancedConnectionPool<String>) -> Vec<String> {
    pool.stats().users.into_iter().map(|u| u.user).collect()
}

#[test]
fn a_new_user_beyond_max_users_is_refused_and_the_others_are_not_affected() {
    let pool = pool_with(2, Duration::MAX, false);
    add(&pool, "alice");
    add(&pool, "bob");
    let refused = pool.add_connection_sync("c".into(), "carol", ConnectionMetadata::default());
    assert_eq!(refused, Err(Error::TooManyUsers { max_users: 2 }));
    assert_eq!(
        Error::TooManyUsers { max_users: 2 }.status(),
        Status::TooManyUsers
    );
    assert!(refused.unwrap_err().to_string().contains("max_users (2)"));
    // Existing users still add and borrow.
    add(&pool, "alice");
    assert_eq!(pool.try_acquire("bob").unwrap().as_str(), "bob");
    // With a factory, an acquire for a new user is refused the same way, at once.
    let with_factory = pool_with(1, Duration::MAX, true);
    drop(
        with_factory
            .blocking_acquire_timeout("alice", Duration::from_secs(5))
            .unwrap(),
    );
    assert_eq!(
        with_factory
            .blocking_acquire_timeout("mallory", Duration::from_secs(5))
            .err(),
        Some(Error::TooManyUsers { max_users: 1 })
    );
    assert_eq!(users(&with_factory), ["alice"]);
}

#[test]
fn a_user_name_over_the_limit_is_refused_everywhere_without_being_kept() {
    let long = "x".repeat(1 << 20); // 1 MiB
    let refusal = Error::UserNameTooLong {
        len: 1 << 20,
        max: 16,
    };
    let pool = pool_with(8, Duration::MAX, false);
    assert_eq!(
        pool.add_connection_sync("c".into(), long.as_str(), ConnectionMetadata::default()),
        Err(refusal.clone())
    );
    assert_eq!(pool.try_acquire(&long).err(), Some(refusal.clone()));
    assert_eq!(refusal.status(), Status::UserNameTooLong);
    assert!(
        refusal.to_string().len() < 200,
        "the message does not carry the name"
    );
    let with_factory = pool_with(8, Duration::MAX, true);
    assert_eq!(
        with_factory
            .blocking_acquire_timeout(&long, Duration::from_millis(50))
            .err(),
        Some(refusal)
    );
    assert!(users(&pool).is_empty() && users(&with_factory).is_empty());
    assert!(with_factory.prometheus().len() < 64 * 1024);
    // At the limit is fine.
    add(&pool, &"y".repeat(16));
    // Zero limits are refused at build time.
    for refused in [
        EnhancedConnectionPool::<String>::builder(quiet(8, 2))
            .max_users(0)
            .build(),
        EnhancedConnectionPool::<String>::builder(quiet(8, 2))
            .max_user_name_len(0)
            .build(),
    ] {
        assert!(matches!(refused, Err(Error::InvalidConfig { .. })));
    }
}

#[test]
fn a_vacant_user_is_retired_after_the_delay_and_comes_back_afresh() {
    let pool = pool_with(8, Duration::from_secs(60), false);
    let alice = add(&pool, "alice");
    add(&pool, "bob");
    drop(pool.try_acquire("alice").unwrap()); // This thread's affinity entry: alice.
    pool.remove_connection(alice).unwrap();
    pool.sweep_now().unwrap(); // Seen vacant now.
    pool.testing_advance_clock(Duration::from_secs(59));
    pool.sweep_now().unwrap();
    assert_eq!(users(&pool), ["alice", "bob"], "not before the delay");
    pool.testing_advance_clock(Duration::from_secs(2));
    pool.sweep_now().unwrap();
    assert_eq!(users(&pool), ["bob"], "bob has a connection: kept");
    let stats = pool.stats();
    assert_eq!(stats.users_retired, 1);
    let text = pool.prometheus();
    assert!(!text.contains("user=\"alice\""), "{text}");
    assert!(text.contains("heliosdb_pool_users_retired_total{pool=\"default\"} 1"));
    // Gone: unknown until a connection is added again, then served as before.
    assert!(matches!(
        pool.try_acquire("alice"),
        Err(Error::UnknownUser { .. })
    ));
    assert!(matches!(
        pool.evict_user("alice"),
        Err(Error::UnknownUser { .. })
    ));
    add(&pool, "alice");
    assert_eq!(pool.try_acquire("alice").unwrap().as_str(), "alice");
    assert_eq!(users(&pool), ["bob", "alice"]);
}

#[test]
fn a_user_with_a_waiter_or_a_borrow_is_never_retired() {
    let pool = Arc::new(pool_with(8, Duration::ZERO, false));
    let alice = add(&pool, "alice");
    // A borrow reclaimed as a leak would still hold its place; a plain borrow holds it.
    let held = pool.try_acquire("alice").unwrap();
    for _ in 0..3 {
        pool.sweep_now().unwrap();
    }
    assert_eq!(users(&pool), ["alice"]);
    drop(held);
    // A waiter: the only connection is removed while someone waits for alice.
    let held = pool.try_acquire("alice").unwrap();
    let waiter = {
        let pool = pool.clone();
        std::thread::spawn(move || {
            pool.blocking_acquire_timeout("alice", Duration::from_secs(10))
                .map(|c| c.clone())
        })
    };
    assert!(common::wait_until(Duration::from_secs(5), || pool
        .stats()
        .waiting
        == 1));
    pool.remove_connection(alice).unwrap(); // Closes on return.
    drop(held);
    for _ in 0..3 {
        pool.sweep_now().unwrap();
    }
    assert_eq!(users(&pool), ["alice"], "the waiter keeps the user");
    add(&pool, "alice");
    assert_eq!(waiter.join().unwrap().unwrap(), "alice", "and is served");
}

#[test]
fn an_affinity_entry_of_a_retired_user_never_hands_out_the_next_users_connection() {
    let pool = Arc::new(pool_with(8, Duration::ZERO, false));
    let alice = add(&pool, "alice");
    // This thread's entry: alice's slot at generation g.
    let handle = pool.try_acquire("alice").unwrap().into_raw_handle();
    let g = handle.generation();
    pool.release_raw_handle(handle).unwrap();
    pool.remove_connection(alice).unwrap();
    pool.sweep_now().unwrap();
    pool.sweep_now().unwrap();
    assert!(users(&pool).is_empty(), "alice retired");
    // Bob reuses alice's partition and takes her slot; his borrows (on another
    // thread: this one keeps its entry) bring the slot round to generation g.
    let bob = add(&pool, "bob");
    let slot_of = |id: heliosdb_pool::ConnectionId| id.raw() & ((1 << 24) - 1);
    assert_eq!(slot_of(bob), slot_of(alice));
    pool.testing_advance_generation(bob, WRAP - 5).unwrap();
    let other = pool.clone();
    let last = std::thread::spawn(move || {
        let mut last = 0;
        for _ in 0..4 {
            let raw = other.try_acquire("bob").unwrap().into_raw_handle();
            last = raw.generation();
            other.release_raw_handle(raw).unwrap();
        }
        last
    })
    .join()
    .unwrap();
    assert_eq!(last, g, "the slot is idle at the cached generation");
    // Alice is unknown again; the cached entry must not give her bob's connection.
    assert!(matches!(
        pool.try_acquire("alice"),
        Err(Error::UnknownUser { .. })
    ));
    assert_eq!(pool.try_acquire("bob").unwrap().as_str(), "bob");
}

#[test]
fn retirement_racing_acquires_never_hands_out_another_users_connection() {
    let secs = 2;
    let pool = Arc::new(
        EnhancedConnectionPool::<String>::builder(quiet(16, 2))
            .max_users(6)
            .retire_users_after(Duration::ZERO)
            .sweep_interval(Duration::from_secs(3600))
            .connection_factory(|user: &str| Ok(user.to_string()))
            .build()
            .unwrap(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..3)
        .map(|w| {
            let (pool, stop) = (pool.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut served = 0u64;
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let user = format!("u{}", (i * 7 + w) % 9);
                    match pool.blocking_acquire_timeout(&user, Duration::from_millis(20)) {
                        Ok(conn) => {
                            assert_eq!(
                                (conn.user(), conn.as_str()),
                                (user.as_str(), user.as_str())
                            );
                            served += 1;
                            if i % 3 == 0 {
                                conn.discard().unwrap(); // Leaves the user vacant.
                            }
                        }
                        Err(Error::Timeout { .. } | Error::TooManyUsers { .. }) => {}
                        Err(e) => panic!("{user}: {e}"),
                    }
                }
                served
            })
        })
        .collect();
    let sweeper = {
        let (pool, stop) = (pool.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                pool.sweep_now().unwrap();
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    let served: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    sweeper.join().unwrap();
    let stats = pool.stats();
    eprintln!("served {served}, users retired {}", stats.users_retired);
    assert!(
        served > 100 && stats.users_retired > 10,
        "{served} {stats:?}"
    );
    assert!(stats.users.len() <= 6);
}

#[test]
fn affinity_comes_back_after_a_borrow_of_another_user_was_interleaved() {
    let pool = pool_with(8, Duration::MAX, false);
    let (a0, a1) = (add(&pool, "alice"), add(&pool, "alice"));
    add(&pool, "bob");
    // Alice's borrow is returned while this thread's entry names bob, who stays held.
    let first = pool.try_acquire("alice").unwrap();
    let bob = pool.try_acquire("bob").unwrap();
    drop(first);
    // Two borrows of alice through the map (lowest idle first), returned a0 then a1.
    let (p, q) = (
        pool.try_acquire("alice").unwrap(),
        pool.try_acquire("alice").unwrap(),
    );
    assert_eq!((p.connection_id(), q.connection_id()), (a0, a1));
    drop(p);
    drop(q);
    // The entry holds a1, returned last, which a lookup (lowest idle first) would not
    // pick: only affinity gives it.
    for _ in 0..3 {
        assert_eq!(pool.try_acquire("alice").unwrap().connection_id(), a1);
    }
    drop(bob);
}

/// Serials are unique for the process: an entry naming pool X's first user must not
/// match pool Y's first user when this thread returns one of Y's connections.
#[test]
fn an_affinity_entry_never_crosses_pools() {
    let x = pool_with(8, Duration::MAX, false);
    let y = pool_with(8, Duration::MAX, false);
    add(&x, "alice");
    add(&y, "bob");
    drop(x.try_acquire("alice").unwrap()); // The entry: pool x, "alice".
    let raw = std::thread::scope(|s| {
        s.spawn(|| y.try_acquire("bob").unwrap().into_raw_handle())
            .join()
            .unwrap()
    });
    y.release_raw_handle(raw).unwrap(); // The entry: pool y, bob's slot.
    match y.try_acquire("alice") {
        Err(Error::UnknownUser { .. }) => {}
        Ok(conn) => panic!("asked y for alice, got {}'s connection", conn.user()),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn pool_wide_counters_never_go_backwards_when_a_user_is_retired() {
    let pool = pool_with(8, Duration::ZERO, false);
    let alice = add(&pool, "alice");
    let held = pool.try_acquire("alice").unwrap();
    assert!(matches!(
        pool.blocking_acquire_timeout("alice", Duration::from_millis(10)),
        Err(Error::Timeout { .. })
    ));
    drop(held);
    pool.remove_connection(alice).unwrap();
    pool.sweep_now().unwrap();
    pool.sweep_now().unwrap();
    let stats = pool.stats();
    assert_eq!((stats.users_retired, stats.timeouts), (1, 1));
}

fn leaky(retire_after: Duration) -> EnhancedConnectionPool<String> {
    EnhancedConnectionPool::<String>::builder(heliosdb_pool::EnhancedPoolConfig {
        leak_detection_enabled: true,
        leak_detection_threshold_ms: 100,
        auto_cleanup_enabled: true,
        cleanup_interval_ms: 10,
        ..quiet(4, 1)
    })
    .leak_critical_threshold(Duration::from_millis(200))
    .retire_users_after(retire_after)
    .sweep_interval(Duration::from_secs(3600))
    .build()
    .unwrap()
}

/// A reclaimed borrow keeps its user (its place is still taken), and the vacancy clock
/// starts only when it comes back.
#[test]
fn a_reclaimed_borrow_keeps_its_user_and_holds_the_vacancy_clock() {
    let pool = leaky(Duration::from_secs(60));
    add(&pool, "alice");
    let held = pool.try_acquire("alice").unwrap();
    pool.testing_advance_clock(Duration::from_secs(1));
    pool.sweep_now().unwrap();
    assert_eq!(pool.stats().leak_stats.criticals, 1, "reclaimed");
    pool.sweep_now().unwrap();
    pool.testing_advance_clock(Duration::from_secs(61));
    pool.sweep_now().unwrap();
    assert_eq!(
        users(&pool),
        ["alice"],
        "the reclaimed borrow keeps the user"
    );
    assert!(matches!(held.release(), Err(Error::Reclaimed { .. })));
    pool.sweep_now().unwrap();
    assert_eq!(users(&pool), ["alice"], "vacant only from now");
    pool.testing_advance_clock(Duration::from_secs(61));
    pool.sweep_now().unwrap();
    assert!(users(&pool).is_empty());
}

#[test]
fn a_caller_waiting_between_passes_restarts_the_vacancy_clock() {
    let pool = pool_with(8, Duration::from_secs(60), false);
    let alice = add(&pool, "alice");
    pool.remove_connection(alice).unwrap();
    pool.sweep_now().unwrap(); // Seen vacant.
    pool.testing_advance_clock(Duration::from_secs(50));
    assert!(matches!(
        pool.blocking_acquire_timeout("alice", Duration::from_millis(20)),
        Err(Error::Timeout { .. })
    ));
    pool.testing_advance_clock(Duration::from_secs(11));
    pool.sweep_now().unwrap();
    assert_eq!(users(&pool), ["alice"], "asked for 11 s ago");
}

/// Names that came and went (here: acquires through a factory for names nobody uses
/// again) do not lock a new user out: at `max_users` the vacant ones are retired at
/// once, even with no sweeper thread and a long `retire_users_after`.
#[test]
fn names_that_came_and_went_never_lock_new_users_out() {
    let pool = EnhancedConnectionPool::<String>::builder(quiet(8, 2))
        .max_users(4)
        .retire_users_after(Duration::from_secs(3600))
        .connection_factory(|user: &str| Ok(user.to_string()))
        .sweep_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    for i in 0..4 {
        let _ = pool.try_acquire(&format!("junk{i}"));
    }
    assert_eq!(pool.stats().users.len(), 4);
    let conn = pool
        .blocking_acquire_timeout("alice", Duration::from_secs(5))
        .unwrap();
    assert_eq!(conn.as_str(), "alice");
    // Without a factory or any sweeper feature, the same through add_connection.
    let plain = EnhancedConnectionPool::<String>::builder(quiet(8, 2))
        .max_users(1)
        .build()
        .unwrap();
    let alice = add(&plain, "alice");
    plain.remove_connection(alice).unwrap();
    add(&plain, "bob");
    assert_eq!(users(&plain), ["bob"]);
    // A user with a connection is not vacant: still refused.
    assert_eq!(
        plain.add_connection_sync("c".into(), "carol", ConnectionMetadata::default()),
        Err(Error::TooManyUsers { max_users: 1 })
    );
}

#[test]
fn a_retirement_delay_beyond_the_clock_is_refused() {
    let refused = EnhancedConnectionPool::<String>::builder(quiet(8, 2))
        .retire_users_after(Duration::from_secs(30 * 24 * 3600))
        .build();
    assert!(matches!(
        refused,
        Err(Error::InvalidConfig {
            field: "retire_users_after",
            ..
        })
    ));
}

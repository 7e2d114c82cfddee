//! Exclusivity under contention: 8 threads x 200k acquire/release over two users whose
//! pools are smaller than the thread count. Every connection carries an in-use sentinel
//! and its owner; a borrower asserts it was free and belongs to the requesting user.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use heliosdb_pool::{ConnectionMetadata, EnhancedConnectionPool, EnhancedPoolConfig, Error};

struct Sentinel {
    owner: &'static str,
    in_use: AtomicBool,
    uses: AtomicU64,
}

const THREADS: usize = 8;
const ITERATIONS: usize = 200_000;
const PER_USER: usize = 3;

#[test]
fn eight_threads_never_share_a_connection_or_cross_users() {
    let pool = Arc::new(EnhancedConnectionPool::new(EnhancedPoolConfig {
        max_connections: 2 * PER_USER,
        max_per_user: PER_USER,
        acquire_timeout_ms: 30_000,
        ..EnhancedPoolConfig::default()
    }));
    for user in ["alice", "bob"] {
        for _ in 0..PER_USER {
            pool.add_connection_sync(
                Sentinel {
                    owner: user,
                    in_use: AtomicBool::new(false),
                    uses: AtomicU64::new(0),
                },
                user,
                ConnectionMetadata::for_user(user),
            )
            .unwrap();
        }
    }
    let violations = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (pool, violations) = (pool.clone(), violations.clone());
            std::thread::spawn(move || {
                let user = if t % 2 == 0 { "alice" } else { "bob" };
                let mut done = 0;
                while done < ITERATIONS {
                    // Mix the forms: mostly blocking, every 4th a try that may miss.
                    let guard = if done % 4 == 3 {
                        match pool.try_acquire(user) {
                            Ok(g) => g,
                            Err(Error::NoIdleConnection { .. }) => continue,
                            Err(e) => panic!("{e}"),
                        }
                    } else {
                        pool.blocking_acquire(user).unwrap()
                    };
                    if guard.owner != user {
                        violations.fetch_add(1, Ordering::Relaxed);
                    }
                    if guard.in_use.swap(true, Ordering::Acquire) {
                        violations.fetch_add(1, Ordering::Relaxed);
                    }
                    guard.uses.fetch_add(1, Ordering::Relaxed);
                    if done % 1024 == 0 {
                        std::thread::yield_now();
                    }
                    guard.in_use.store(false, Ordering::Release);
                    drop(guard);
                    done += 1;
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(violations.load(Ordering::Relaxed), 0);
    let stats = pool.stats();
    assert_eq!(stats.total_connections, 2 * PER_USER, "nothing lost");
    assert_eq!(stats.idle_connections, 2 * PER_USER);
    assert_eq!(stats.active_connections, 0);
    assert_eq!(stats.waiting, 0);
    assert_eq!(stats.acquires, (THREADS * ITERATIONS) as u64);
    // Every connection is still there and accounts for every use.
    let mut uses = 0;
    for user in ["alice", "bob"] {
        let guards: Vec<_> = (0..PER_USER)
            .map(|_| {
                pool.blocking_acquire_timeout(user, Duration::from_secs(1))
                    .unwrap()
            })
            .collect();
        uses += guards
            .iter()
            .map(|g| g.uses.load(Ordering::Relaxed))
            .sum::<u64>();
    }
    assert_eq!(uses, (THREADS * ITERATIONS) as u64);
}

/// Connections are removed and re-added for the other user while threads borrow: a
/// slot emptied and refilled for someone else between a searcher's reads must never be
/// handed to the wrong user, and no idle connection may become unfindable (a waiter
/// would then time out with connections idle).
#[test]
fn churn_of_slots_between_users_never_crosses_users_or_loses_connections() {
    const PER_USER: usize = 4;
    let pool = Arc::new(EnhancedConnectionPool::new(EnhancedPoolConfig {
        max_connections: 2 * PER_USER,
        max_per_user: PER_USER,
        acquire_timeout_ms: 10_000,
        ..EnhancedPoolConfig::default()
    }));
    let sentinel = |owner| Sentinel {
        owner,
        in_use: AtomicBool::new(false),
        uses: AtomicU64::new(0),
    };
    for user in ["alice", "bob"] {
        for _ in 0..PER_USER - 1 {
            pool.add_connection_sync(sentinel(user), user, ConnectionMetadata::for_user(user))
                .unwrap();
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let violations = Arc::new(AtomicU64::new(0));
    let borrowers: Vec<_> = (0..4)
        .map(|t| {
            let (pool, stop, violations) = (pool.clone(), stop.clone(), violations.clone());
            std::thread::spawn(move || {
                let user = if t % 2 == 0 { "alice" } else { "bob" };
                let mut done = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let guard = pool.blocking_acquire(user).expect("never times out");
                    if guard.owner != user || guard.in_use.swap(true, Ordering::Acquire) {
                        violations.fetch_add(1, Ordering::Relaxed);
                    }
                    guard.in_use.store(false, Ordering::Release);
                    drop(guard);
                    done += 1;
                }
                done
            })
        })
        .collect();
    // The churner: take an idle connection of one user out, give a new one to the
    // other, so slots keep changing owners under the borrowers' searches.
    let churner = {
        let (pool, stop) = (pool.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut moves = 0u64;
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let (from, to) = if i % 2 == 0 {
                    ("alice", "bob")
                } else {
                    ("bob", "alice")
                };
                i += 1;
                if let Ok(conn) = pool.try_acquire(from) {
                    let _ = conn.detach();
                    let _ = pool.add_connection_sync(
                        sentinel(to),
                        to,
                        ConnectionMetadata::for_user(to),
                    );
                    // Keep both users served: give the donor one back.
                    let _ = pool.add_connection_sync(
                        sentinel(from),
                        from,
                        ConnectionMetadata::for_user(from),
                    );
                    moves += 1;
                }
                let stats = pool.stats();
                for user in &stats.users {
                    if user.total_connections > PER_USER - 1 {
                        // Trim back so the next move has room.
                        if let Ok(conn) = pool.try_acquire(&user.user) {
                            let _ = conn.detach();
                        }
                    }
                }
            }
            moves
        })
    };
    std::thread::sleep(Duration::from_millis(1_500));
    stop.store(true, Ordering::Relaxed);
    let borrows: u64 = borrowers.into_iter().map(|b| b.join().unwrap()).sum();
    let moves = churner.join().unwrap();
    assert_eq!(violations.load(Ordering::Relaxed), 0);
    assert!(
        borrows > 1_000 && moves > 10,
        "borrows {borrows}, moves {moves}"
    );
    // Everything idle is findable: each user can borrow all of its connections.
    let stats = pool.stats();
    assert_eq!(stats.active_connections, 0);
    for user in &stats.users {
        let held: Vec<_> = (0..user.total_connections)
            .map(|_| {
                pool.try_acquire(&user.user)
                    .expect("every idle connection is findable")
            })
            .collect();
        assert!(held.iter().all(|g| g.owner == user.user));
    }
}

//! The main job: a tour of heliosdb-pool under load, in one run.
//!
//! `cargo run --release --example demo`
//!
//! 1. Builds a pool (the guide's development preset), adds connections for two users.
//! 2. Eight threads borrow and return connections for ~1 s; every connection carries an
//!    in-use sentinel, so a double hand-out or a cross-user hand-out would be counted.
//! 3. Async tasks share the same pool through `acquire().await`.
//! 4. Shows what callers see when a user is exhausted (the timeout error), a stale
//!    handle is released, and the pool is closed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use heliosdb_pool::{ConnectionMetadata, EnhancedConnectionPool, EnhancedPoolConfig};

/// A stand-in for a real connection (a libpq `PGconn*`, a socket...).
#[derive(Debug)]
struct DemoConnection {
    owner: &'static str,
    in_use: AtomicBool,
    queries: AtomicU64,
}

fn main() {
    let config = EnhancedPoolConfig {
        acquire_timeout_ms: 200,
        ..EnhancedPoolConfig::development()
    };
    println!("== heliosdb-pool demo ==");
    println!("config: {config:?}\n");
    let pool = Arc::new(EnhancedConnectionPool::new(config));
    for (user, count) in [("app", 4), ("reporting", 2)] {
        for i in 0..count {
            let metadata = ConnectionMetadata {
                user: user.to_string(),
                database: Some("test".into()),
                protocol: "postgres".into(),
                remote_addr: Some("127.0.0.1:5432".into()),
                tags: vec![format!("replica-{i}")],
            };
            let conn = DemoConnection {
                owner: user,
                in_use: AtomicBool::new(false),
                queries: AtomicU64::new(0),
            };
            let id = pool.add_connection_sync(conn, user, metadata).unwrap();
            println!("added connection {id} for {user}");
        }
    }

    println!("\n-- 8 threads borrowing for 1 s (pools smaller than the thread count) --");
    let violations = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(1);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let (pool, violations) = (pool.clone(), violations.clone());
            std::thread::spawn(move || {
                let user = if t % 4 == 3 { "reporting" } else { "app" };
                let mut borrows = 0u64;
                while Instant::now() < deadline {
                    let conn = pool.blocking_acquire(user).expect("acquire");
                    if conn.owner != user || conn.in_use.swap(true, Ordering::Acquire) {
                        violations.fetch_add(1, Ordering::Relaxed);
                    }
                    conn.queries.fetch_add(1, Ordering::Relaxed);
                    conn.in_use.store(false, Ordering::Release);
                    borrows += 1;
                }
                borrows
            })
        })
        .collect();
    let borrows: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let stats = pool.stats();
    println!(
        "{borrows} borrows in 1 s, {} exclusivity violations, {} acquires counted by the pool",
        violations.load(Ordering::Relaxed),
        stats.acquires
    );
    for user in &stats.users {
        println!(
            "  {:<10} {} connections, {} active, {} idle, {} timeouts",
            user.user,
            user.total_connections,
            user.active_connections,
            user.idle_connections,
            user.timeouts
        );
    }

    println!("\n-- 64 async tasks over the 4 'app' connections --");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    runtime.block_on(async {
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    for _ in 0..100 {
                        let conn = pool.acquire("app").await.expect("acquire");
                        conn.queries.fetch_add(1, Ordering::Relaxed);
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    println!("6400 async borrows in {:?}", started.elapsed());

    println!("\n-- what callers see when things go wrong --");
    let held: Vec<_> = (0..2)
        .map(|_| pool.try_acquire("reporting").unwrap())
        .collect();
    let site = held[0].call_site();
    println!(
        "borrow 1 of 'reporting' was taken at {site}, held for {:?}",
        held[0].held_for()
    );
    match pool.blocking_acquire("reporting") {
        Err(e) => println!("exhausted user: {e}"),
        Ok(_) => println!("unexpected: got a third connection"),
    }
    drop(held);
    let handle = pool.try_acquire("app").unwrap().into_raw_handle();
    pool.release_raw_handle(handle).unwrap();
    println!(
        "double release: {}",
        pool.release_raw_handle(handle).unwrap_err()
    );
    println!("unknown user: {}", pool.try_acquire("mallory").unwrap_err());
    pool.close();
    println!("after close: {}", pool.try_acquire("app").unwrap_err());
    let stats = pool.stats();
    println!(
        "\nfinal: {} connections, {} active, {} acquires, {} timeouts",
        stats.total_connections, stats.active_connections, stats.acquires, stats.timeouts
    );
    assert_eq!(
        violations.load(Ordering::Relaxed),
        0,
        "exclusivity violated"
    );
}

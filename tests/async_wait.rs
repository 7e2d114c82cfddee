//! The async waiting path under barging: a waiter that a release wakes but a barger
//! beats to the connection parks again, and is still woken by a later release (it
//! gave up being the awake one when it parked), and the timer it armed once still
//! ends its wait at the deadline however often it is woken in between.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use heliosdb_pool::builder::MAX_FAIRNESS_BOUND;
use heliosdb_pool::{ConnectionMetadata, EnhancedConnectionPool, Error};

#[path = "support/common.rs"]
mod common;
use common::quiet;

type Pool = EnhancedConnectionPool<u32>;

/// One connection for "alice"; a bound past every wait here, so barging is allowed
/// throughout and nothing but a release (or the deadline) wakes the waiter.
fn one_connection_barging() -> Arc<Pool> {
    let pool = EnhancedConnectionPool::builder(quiet(4, 4))
        .fairness_bound(MAX_FAIRNESS_BOUND)
        .build()
        .unwrap();
    pool.add_connection_sync(7, "alice", ConnectionMetadata::for_user("alice"))
        .unwrap();
    Arc::new(pool)
}

/// On its own thread: releases and re-takes the connection in a loop for `cycle_for`
/// (each release wakes the parked waiter, and the re-take beats it), pausing `hold`
/// between the rounds; then keeps whatever it holds until `stop`. Returns once it
/// holds the connection; the thread returns the rounds.
fn barge(
    pool: Arc<Pool>,
    stop: Arc<AtomicBool>,
    hold: Duration,
    cycle_for: Duration,
) -> thread::JoinHandle<u64> {
    let (taken, is_taken) = std::sync::mpsc::channel();
    let barger = thread::spawn(move || {
        let mut held = Some(pool.try_acquire("alice").unwrap());
        taken.send(()).unwrap();
        let until = Instant::now() + cycle_for;
        let mut rounds = 0;
        while Instant::now() < until {
            drop(held.take());
            held = pool.try_acquire("alice").ok();
            rounds += 1;
            thread::sleep(hold);
        }
        while !stop.load(Ordering::Relaxed) {
            thread::sleep(Duration::from_millis(1));
        }
        drop(held);
        rounds
    });
    is_taken.recv().unwrap();
    barger
}

#[tokio::test(flavor = "current_thread")]
async fn a_waiter_beaten_by_a_barger_parks_again_and_the_next_release_wakes_it() {
    let pool = one_connection_barging();
    let (taken, is_taken) = std::sync::mpsc::channel();
    let barger = {
        let pool = pool.clone();
        thread::spawn(move || {
            let mut held = Some(pool.try_acquire("alice").unwrap());
            taken.send(()).unwrap();
            // Many wake-ups, each beaten: the waiter is woken by the release and finds
            // the connection taken again.
            for _ in 0..200 {
                drop(held.take());
                held = pool.try_acquire("alice").ok();
                thread::sleep(Duration::from_micros(100));
            }
            // Then one last release, for good. Only its wake-up can serve the waiter
            // before the bound (1 s) or the deadline (10 s).
            drop(held);
            Instant::now()
        })
    };
    is_taken.recv().unwrap();
    let guard = tokio::time::timeout(
        Duration::from_secs(20),
        pool.acquire_timeout("alice", Duration::from_secs(10)),
    )
    .await
    .expect("the deadline ends the wait in any case")
    .expect("served");
    let served = Instant::now();
    let released = barger.join().unwrap();
    // A waiter that stayed the awake one after parking would be left asleep by every
    // later release, until the bound's timer (1 s).
    assert!(
        served.saturating_duration_since(released) < Duration::from_millis(500),
        "served {:?} after the last release",
        served.saturating_duration_since(released)
    );
    drop(guard);
}

#[tokio::test(flavor = "current_thread")]
async fn a_waiter_woken_again_and_again_then_left_alone_times_out_at_its_deadline() {
    let pool = one_connection_barging();
    let stop = Arc::new(AtomicBool::new(false));
    // The waiter is woken by nearly every release for 30 ms and beaten every time;
    // then the barger keeps the connection, so only the timer armed when the waiter
    // first parked can end the wait. (If the waiter wins a race instead, the test
    // learns nothing about the deadline and tries again.)
    for _ in 0..20 {
        let barger = barge(
            pool.clone(),
            stop.clone(),
            Duration::from_micros(200),
            Duration::from_millis(30),
        );
        let timeout = Duration::from_millis(100);
        let started = Instant::now();
        let result = tokio::time::timeout(
            Duration::from_secs(20),
            pool.acquire_timeout("alice", timeout),
        )
        .await
        .expect("the timer wakes the waiter at its deadline");
        stop.store(true, Ordering::Relaxed);
        let rounds = barger.join().unwrap();
        stop.store(false, Ordering::Relaxed);
        match result {
            Err(Error::Timeout { waited, .. }) => {
                assert!(waited >= timeout, "{waited:?}");
                assert!(started.elapsed() < Duration::from_secs(5), "{waited:?}");
                assert!(rounds > 0, "the barger ran");
                return;
            }
            Ok(guard) => drop(guard),
            Err(e) => panic!("{e}"),
        }
    }
    panic!("the waiter won every race against the barger");
}

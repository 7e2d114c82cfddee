//! Eventual fairness on the waiting path: callers may take a just-released connection
//! ahead of waiters only while no waiter is past the fairness bound; past it, and at
//! all times with a bound of zero, hand-off is strictly FIFO. Not timed: the async
//! waiters are polled by hand, so what each step sees does not depend on scheduling
//! (sleeps only make sure the bound has passed).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use heliosdb_pool::builder::{DEFAULT_FAIRNESS_BOUND, MAX_FAIRNESS_BOUND};
use heliosdb_pool::{Acquire, EnhancedConnectionPool, Error, PooledConnection};

#[path = "support/common.rs"]
mod common;
use common::{one_connection, quiet};

struct NoopWake;
impl Wake for NoopWake {
    fn wake(self: Arc<Self>) {}
}

fn poll<'a>(
    acquire: &mut Acquire<'a, u32>,
) -> Poll<heliosdb_pool::Result<PooledConnection<'a, u32>>> {
    let waker = Waker::from(Arc::new(NoopWake));
    Pin::new(acquire).poll(&mut Context::from_waker(&waker))
}

#[test]
fn a_waiter_past_the_bound_is_served_before_a_caller_that_keeps_cycling() {
    let bound = Duration::from_millis(20);
    let pool = one_connection(bound);
    let mut held = pool.try_acquire("alice").unwrap();
    let mut waiter = pool.acquire_timeout("alice", Duration::from_secs(30));
    assert!(poll(&mut waiter).is_pending(), "queued behind the holder");
    // While the waiter is young, the holder may release and take the connection back
    // at once (no hand-off, no wake-up of the waiter to wait for).
    for _ in 0..100 {
        drop(held);
        held = pool
            .try_acquire("alice")
            .expect("barging is allowed within the bound");
    }
    // Past the bound: the waiter, polled (its timer does that at the bound), declares
    // itself overdue. The next release hands the connection to it, and the cycling
    // caller gets nothing.
    std::thread::sleep(bound + Duration::from_millis(5));
    assert!(poll(&mut waiter).is_pending());
    drop(held);
    assert!(matches!(
        pool.try_acquire("alice"),
        Err(Error::NoIdleConnection { .. })
    ));
    let Poll::Ready(Ok(conn)) = poll(&mut waiter) else {
        panic!("the overdue waiter was handed the connection");
    };
    assert_eq!(*conn, 7);
    // Served: barging is allowed again once it gives the connection back.
    drop(conn);
    assert!(pool.try_acquire("alice").is_ok());
}

#[test]
fn a_blocked_thread_past_the_bound_is_served_while_another_keeps_cycling() {
    let pool = one_connection(Duration::from_millis(5));
    let served = AtomicBool::new(false);
    let cycles = AtomicUsize::new(0);
    std::thread::scope(|s| {
        // The barger: takes the connection whenever it may and holds it a little,
        // so that it holds it almost all the time.
        s.spawn(|| {
            while !served.load(Ordering::SeqCst) {
                if let Ok(conn) = pool.try_acquire("alice") {
                    let until = Instant::now() + Duration::from_micros(200);
                    while Instant::now() < until {
                        std::hint::spin_loop();
                    }
                    drop(conn);
                    cycles.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        while cycles.load(Ordering::Relaxed) < 10 {
            std::thread::yield_now();
        }
        let got = pool.blocking_acquire_timeout("alice", Duration::from_secs(20));
        served.store(true, Ordering::SeqCst);
        assert!(got.is_ok(), "starved: {:?}", got.err());
    });
}

#[test]
fn a_bound_of_zero_is_strict_fifo() {
    let pool = one_connection(Duration::ZERO);
    let held = pool.try_acquire("alice").unwrap();
    let mut first = pool.acquire("alice");
    let mut second = pool.acquire("alice");
    assert!(poll(&mut first).is_pending());
    assert!(poll(&mut second).is_pending());
    // Any waiter: arriving callers queue behind, and a release hands off to the oldest.
    assert!(matches!(
        pool.try_acquire("alice"),
        Err(Error::NoIdleConnection { .. })
    ));
    drop(held);
    assert!(pool.try_acquire("alice").is_err(), "granted, not left idle");
    assert!(poll(&mut second).is_pending(), "the younger one waits on");
    let Poll::Ready(Ok(conn)) = poll(&mut first) else {
        panic!("the oldest waiter is served first");
    };
    drop(conn);
    assert!(pool.try_acquire("alice").is_err());
    assert!(matches!(poll(&mut second), Poll::Ready(Ok(_))));
}

#[test]
fn an_out_of_range_bound_is_refused_by_the_builder() {
    for bad in [
        MAX_FAIRNESS_BOUND + Duration::from_nanos(1),
        Duration::from_secs(3600),
        Duration::MAX,
    ] {
        let refused = EnhancedConnectionPool::<u32>::builder(quiet(4, 4))
            .fairness_bound(bad)
            .build();
        assert!(
            matches!(
                refused,
                Err(Error::InvalidConfig {
                    field: "fairness_bound",
                    ..
                })
            ),
            "{bad:?}"
        );
    }
    for good in [Duration::ZERO, Duration::from_micros(1), MAX_FAIRNESS_BOUND] {
        assert!(
            EnhancedConnectionPool::<u32>::builder(quiet(4, 4))
                .fairness_bound(good)
                .build()
                .is_ok(),
            "{good:?}"
        );
    }
    // The default is valid too, and documented as 1 ms.
    assert_eq!(DEFAULT_FAIRNESS_BOUND, Duration::from_millis(1));
}

/// A blocking acquire that finds nothing idle spins briefly before it queues, and
/// catches a connection given back on another core meanwhile (counted in
/// `stats().spin_acquires`); on a single core it never spins. In lockstep rounds, one
/// thread holds the only connection while the other starts a blocking acquire, and
/// gives it back a moment later, inside the spin; every borrow is served.
#[test]
fn a_blocking_acquire_catches_a_connection_given_back_on_another_core_by_spinning() {
    let pool = one_connection(DEFAULT_FAIRNESS_BOUND);
    let several = std::thread::available_parallelism().map_or(1, |n| n.get()) > 1;
    // Rounds until the first catch on several cores (each catch is likely: the taker is
    // running on the other core when the holder gives back); a few on one core.
    let rounds: usize = if several { 20_000 } else { 100 };
    let taking = AtomicUsize::new(0); // the round whose acquire the taker has started
    let held = AtomicUsize::new(0); // the round whose connection the holder holds
    let done = AtomicUsize::new(0); // the round the taker has finished
    let borrow = || {
        pool.blocking_acquire_timeout("alice", Duration::from_secs(30))
            .expect("served")
    };
    // Waits for the other thread to reach `round`; bounded, so a failure there ends
    // the test instead of hanging it.
    let reach = |at: &AtomicUsize, round: usize| {
        let limit = Instant::now() + Duration::from_secs(60);
        while at.load(Ordering::Acquire) < round {
            assert!(
                Instant::now() < limit,
                "the other thread stopped at round {round}"
            );
            // On one core, yield: the other thread must run for this one to go on.
            if several {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    };
    let played = std::thread::scope(|s| {
        s.spawn(|| {
            for round in 1..=rounds {
                reach(&held, round);
                if held.load(Ordering::Acquire) == usize::MAX {
                    return;
                }
                taking.store(round, Ordering::Release);
                drop(borrow());
                done.store(round, Ordering::Release);
            }
        });
        for round in 1..=rounds {
            if several && pool.stats().spin_acquires > 0 {
                held.store(usize::MAX, Ordering::Release);
                return round - 1;
            }
            let conn = borrow();
            held.store(round, Ordering::Release);
            reach(&taking, round);
            // Past the taker's first claim, well within its spin (about a microsecond).
            for _ in 0..50 {
                std::hint::spin_loop();
            }
            drop(conn);
            reach(&done, round);
        }
        rounds
    });
    let stats = pool.stats();
    assert_eq!(stats.acquires, 2 * played as u64, "every borrow was served");
    if several {
        assert!(
            stats.spin_acquires > 0,
            "no borrow was caught by spinning in {played} rounds"
        );
    } else {
        assert_eq!(stats.spin_acquires, 0, "a single core never spins");
    }
    let text = pool.prometheus();
    assert!(
        text.lines().any(
            |line| line.starts_with("heliosdb_pool_spin_acquires_total{")
                && line.ends_with(&format!(" {}", stats.spin_acquires))
        ),
        "the count is exported:\n{text}"
    );
}

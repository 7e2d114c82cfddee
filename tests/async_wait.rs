//! The async waiting path under barging: a waiter that a release wakes but a barger
//! beats to the connection parks again, and is still woken by a later release (it
//! gave up being the awake one when it parked), and the timer it armed once still
//! ends its wait at the deadline however often it is woken in between. Once its
//! wake-ups have kept finding nothing, releasers defer them to the crate's timer (a
//! few tens of microseconds later): they still come, and the last release, after
//! which nobody takes the connection back, still serves the waiter.
//!
//! The waiter is an `acquire` future polled by hand on the test thread, between the
//! test's own releases and re-takes: it runs only when polled, so the barger wins
//! every race by construction (a barger on another thread races the woken task, and
//! on an idle second core the task may win them all).

use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use heliosdb_pool::builder::MAX_FAIRNESS_BOUND;
use heliosdb_pool::{EnhancedConnectionPool, Error};

#[path = "support/common.rs"]
mod common;
use common::one_connection;

type Pool = EnhancedConnectionPool<u32>;

/// One connection for "alice"; a bound past every wait here, so barging is allowed
/// throughout and nothing but a release (or the deadline) wakes the waiter.
fn one_connection_barging() -> Pool {
    one_connection(MAX_FAIRNESS_BOUND)
}

/// A waker that counts its wake-ups, and those that came from another thread than the
/// test's (the crate's timer, when a release deferred the wake-up), and lets the test
/// wait for the next one.
struct CountingWaker {
    test_thread: ThreadId,
    /// (all wake-ups, those from another thread)
    wakes: Mutex<(u64, u64)>,
    woken: Condvar,
}

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let mut wakes = self.wakes.lock().unwrap();
        wakes.0 += 1;
        wakes.1 += u64::from(std::thread::current().id() != self.test_thread);
        self.woken.notify_all();
    }
}

impl CountingWaker {
    /// A counter and the waker that counts into it.
    fn new() -> (Arc<Self>, Waker) {
        let counting = Arc::new(CountingWaker {
            test_thread: std::thread::current().id(),
            wakes: Mutex::new((0, 0)),
            woken: Condvar::new(),
        });
        let waker = Waker::from(counting.clone());
        (counting, waker)
    }

    fn wakes(&self) -> u64 {
        self.wakes.lock().unwrap().0
    }

    /// The wake-ups that came from another thread than the test's.
    fn deferred(&self) -> u64 {
        self.wakes.lock().unwrap().1
    }

    /// Waits until the count passes `seen` or `limit` passes; the count then.
    fn wait_past(&self, seen: u64, limit: Duration) -> u64 {
        let wakes = self.wakes.lock().unwrap();
        self.woken
            .wait_timeout_while(wakes, limit, |n| n.0 <= seen)
            .unwrap()
            .0
            .0
    }
}

/// How long a release's wake-up may take when it is deferred to the timer (it comes
/// tens of microseconds later; the margin is for a loaded machine), well short of the
/// fairness bound's timer (1 s), which would also wake a waiter that nobody woke.
const DEFERRED_WAKE_LIMIT: Duration = Duration::from_millis(300);

/// Waits for the wake-up a release owes the waiter (`before`: the count before the
/// release), at once or from the timer.
fn woken_after_release(waker: &CountingWaker, before: u64, what: &str) {
    let waiting = Instant::now();
    assert!(
        waker.wait_past(before, DEFERRED_WAKE_LIMIT) > before,
        "{what}: the release's wake-up came (waited {:?})",
        waiting.elapsed()
    );
}

/// Parks a waiter for the connection the test holds, then round after round while
/// `again(round)`: releases it (which must wake the waiter, at once or a moment
/// later), takes it straight back (the waiter has not run), and polls the waiter once
/// woken, which finds nothing and parks again. Returns with the test holding the
/// connection and the waiter parked, and how many rounds' wake-ups were deferred.
fn beaten_again_and_again<'a, F>(
    pool: &'a Pool,
    mut held: heliosdb_pool::PooledConnection<'a, u32>,
    waiter: &mut std::pin::Pin<&mut F>,
    cx: &mut Context<'_>,
    waker: &CountingWaker,
    mut again: impl FnMut(u32) -> bool,
) -> (heliosdb_pool::PooledConnection<'a, u32>, u32)
where
    F: Future<Output = heliosdb_pool::Result<heliosdb_pool::PooledConnection<'a, u32>>>,
{
    assert!(
        waiter.as_mut().poll(cx).is_pending(),
        "parks: the test holds it"
    );
    let mut deferred = 0;
    for round in (0..).take_while(|&round| again(round)) {
        let (before, deferred_before) = (waker.wakes(), waker.deferred());
        drop(held);
        held = pool
            .try_acquire("alice")
            .expect("the barger takes it back before the waiter runs");
        woken_after_release(waker, before, &format!("round {round}"));
        deferred += u32::from(waker.deferred() > deferred_before);
        assert!(
            waiter.as_mut().poll(cx).is_pending(),
            "round {round}: beaten, the waiter parks again"
        );
    }
    (held, deferred)
}

#[test]
fn a_waiter_beaten_by_a_barger_parks_again_and_the_next_release_wakes_it() {
    let pool = one_connection_barging();
    let held = pool.try_acquire("alice").unwrap();
    let (counting, waker) = CountingWaker::new();
    let mut cx = Context::from_waker(&waker);
    let started = Instant::now();
    let mut waiter = pin!(pool.acquire_timeout("alice", Duration::from_secs(10)));
    let (held, deferred) =
        beaten_again_and_again(&pool, held, &mut waiter, &mut cx, &counting, |round| {
            // Well within the bound (1 s), past which the waiter would be overdue and
            // the test's re-take refused.
            assert!(
                started.elapsed() < Duration::from_millis(500),
                "round {round}: too slow"
            );
            round < 100
        });
    // The first few wake-ups came at once, from the releasing thread; the rest, after
    // as many found nothing, from the timer (a scheduler round trip saved per borrow
    // in a task that releases in a loop).
    assert!(
        (90..100).contains(&deferred),
        "{deferred} of 100 wake-ups deferred"
    );
    // The last release, for good, deferred too: a waiter that stayed the awake one
    // after parking, or a deferred wake-up lost, would leave the waiter asleep until
    // the bound's timer (1 s).
    let (before, deferred_before) = (counting.wakes(), counting.deferred());
    drop(held);
    woken_after_release(&counting, before, "the last release");
    assert!(counting.deferred() > deferred_before, "deferred as well");
    let held = match waiter.as_mut().poll(&mut cx) {
        Poll::Ready(Ok(guard)) => guard,
        Poll::Ready(Err(e)) => panic!("{e}"),
        Poll::Pending => panic!("woken by the release, the waiter finds the connection"),
    };
    assert_eq!(*held, 7);
    // Served by a wake-up: the next waiter's first is at once again.
    let (next_counting, next_waker) = CountingWaker::new();
    let mut next_cx = Context::from_waker(&next_waker);
    let mut next = pin!(pool.acquire_timeout("alice", Duration::from_secs(10)));
    assert!(
        next.as_mut().poll(&mut next_cx).is_pending(),
        "the test holds it"
    );
    drop(held);
    assert_eq!(
        (next_counting.wakes(), next_counting.deferred()),
        (1, 0),
        "woken at once, by the release itself"
    );
    assert!(matches!(
        next.as_mut().poll(&mut next_cx),
        Poll::Ready(Ok(_))
    ));
}

#[test]
fn a_waiter_woken_again_and_again_then_left_alone_times_out_at_its_deadline() {
    let pool = one_connection_barging();
    let held = pool.try_acquire("alice").unwrap();
    let (counting, waker) = CountingWaker::new();
    let mut cx = Context::from_waker(&waker);
    let timeout = Duration::from_millis(400);
    let started = Instant::now();
    let mut waiter = pin!(pool.acquire_timeout("alice", timeout));
    // Woken and beaten again and again for half the timeout (at least 50 times); then
    // the test keeps the connection, so only the timer armed when the waiter first
    // parked can end the wait. A deadline counted from a later park would end it at
    // least half a timeout late.
    let (_held, _) =
        beaten_again_and_again(&pool, held, &mut waiter, &mut cx, &counting, |round| {
            let elapsed = started.elapsed();
            assert!(
                elapsed < timeout * 3 / 4,
                "round {round}: too slow ({elapsed:?})"
            );
            if round >= 50 && elapsed >= timeout / 2 {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
            true
        });
    let result = loop {
        let seen = counting.wakes();
        if let Poll::Ready(result) = waiter.as_mut().poll(&mut cx) {
            break result;
        }
        assert!(
            counting.wait_past(seen, Duration::from_secs(5)) > seen,
            "the timer wakes the waiter at its deadline (waited {:?})",
            started.elapsed()
        );
    };
    match result {
        Err(Error::Timeout { waited, .. }) => {
            assert!(waited >= timeout, "{waited:?}");
            // At the deadline the first park armed (plus the timer's latency), not a
            // timeout after a later park.
            let ended = started.elapsed();
            assert!(ended < timeout + timeout / 3, "ended after {ended:?}");
        }
        Ok(_) => panic!("the test holds the only connection"),
        Err(e) => panic!("{e}"),
    }
}

//! [`Acquire`]: the future returned by
//! [`EnhancedConnectionPool::acquire`](crate::EnhancedConnectionPool::acquire).
//!
//! Runtime-agnostic: it parks on a `Waker` (woken by the releasing thread, or by the
//! crate's timer thread at the deadline), so it works on any executor. Cancellation-safe:
//! dropping it withdraws the wait, and gives back a connection granted in the meantime.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::guard::PooledConnection;
use crate::partition::Partition;
use crate::pool::{PoolInner, Start};
use crate::slab::CallSite;
use crate::thread_tag;
use crate::wait::{Registration, WaitNode, Waiter, Wakeup, timer};

/// A pending borrow. Resolves to a [`PooledConnection`] or an error; see
/// [`EnhancedConnectionPool::acquire`](crate::EnhancedConnectionPool::acquire).
#[must_use = "futures do nothing unless polled"]
pub struct Acquire<'a, C> {
    pool: &'a PoolInner<C>,
    user: &'a str,
    timeout: Duration,
    site: CallSite,
    state: State,
}

enum State {
    Start,
    Waiting {
        /// Held so that the partition is not reused while this waits on it.
        partition: Arc<Partition>,
        node: Arc<WaitNode>,
        started: Instant,
        /// Whether this waiter has declared itself past the fairness bound.
        overdue: bool,
        /// Whether the timer will poll it at the fairness bound.
        bound_armed: bool,
    },
    Done,
}

impl<'a, C> Acquire<'a, C> {
    pub(crate) fn new(
        pool: &'a PoolInner<C>,
        user: &'a str,
        timeout: Duration,
        site: CallSite,
    ) -> Self {
        Acquire {
            pool,
            user,
            timeout,
            site,
            state: State::Start,
        }
    }
}

impl<'a, C> Future for Acquire<'a, C> {
    type Output = Result<PooledConnection<'a, C>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // `Acquire` holds no self-references, so it is `Unpin`.
        let this = self.get_mut();
        let pool = this.pool;
        if let State::Start = this.state {
            let overdue = pool.overdue_after(Duration::ZERO);
            let (partition, node) = loop {
                // One fast attempt, exactly like `try_acquire`, before queueing.
                let partition = match pool.start_acquire(this.user, this.site) {
                    Ok(Start::Got(conn)) => {
                        this.state = State::Done;
                        return Poll::Ready(Ok(conn));
                    }
                    Ok(Start::Wait(partition)) => partition,
                    Err(e) => {
                        this.state = State::Done;
                        return Poll::Ready(Err(e));
                    }
                };
                let waiter = Waiter {
                    site: this.site,
                    borrower: thread_tag::current(),
                };
                match partition.waiters.register(
                    Wakeup::Task(cx.waker().clone()),
                    waiter,
                    overdue,
                ) {
                    Registration::Waiting(node, _) => break (partition, node),
                    Registration::Closed if pool.closed() => {
                        this.state = State::Done;
                        return Poll::Ready(Err(Error::Closed));
                    }
                    // Retired since the lookup: the registry's next answer is current.
                    Registration::Closed => pool.users.settle(),
                }
            };
            let started = Instant::now();
            if let Some(deadline) = started.checked_add(this.timeout) {
                timer::arm(deadline, &node);
            }
            pool.request_connection(&partition);
            this.state = State::Waiting {
                partition,
                node,
                started,
                overdue,
                bound_armed: false,
            };
        }
        let State::Waiting {
            ref partition,
            ref node,
            started,
            ref mut overdue,
            ref mut bound_armed,
        } = this.state
        else {
            panic!("`Acquire` polled after completion");
        };
        let waited = started.elapsed();
        let outcome = match node.outcome() {
            Some(outcome) => Some(outcome),
            None if waited >= this.timeout => match partition.waiters.cancel(node) {
                None => {
                    pool.leave_queue(partition);
                    let error = pool.timeout_error(partition, started.elapsed());
                    this.state = State::Done;
                    return Poll::Ready(Err(error));
                }
                Some(outcome) => Some(outcome),
            },
            None => {
                if !*overdue && pool.overdue_after(waited) {
                    *overdue = true;
                    partition.waiters.declare_overdue(node);
                }
                node.set_waker(cx.waker());
                // A polled waiter is the awake one (registered, or woken by a release
                // or a grant): it stops being so and searches before it sleeps, after
                // publishing the waker (a grant before `set_waker` woke the old waker,
                // and must not be missed).
                partition.waiters.stop_awake();
                pool.dispatch(partition);
                let outcome = node.outcome();
                // Going to sleep: polled again at the fairness bound, to declare itself
                // overdue. Armed only now, so an acquire served at once by its own
                // search never wakes the timer thread.
                let bound = pool.tuning.fairness_bound;
                if outcome.is_none() && !*overdue && !*bound_armed && bound < this.timeout {
                    *bound_armed = true;
                    timer::arm(started + bound, node);
                }
                outcome
            }
        };
        match outcome {
            None => Poll::Pending,
            Some(outcome) => {
                let result = pool.finish_wait(partition, outcome, started);
                this.state = State::Done;
                Poll::Ready(result)
            }
        }
    }
}

impl<C> Drop for Acquire<'_, C> {
    fn drop(&mut self) {
        if let State::Waiting {
            partition, node, ..
        } = std::mem::replace(&mut self.state, State::Done)
        {
            // A connection granted after the caller stopped listening goes back through
            // the normal release path, so the next waiter gets it.
            if let Some(outcome) = partition.waiters.cancel(&node) {
                self.pool.return_grant(outcome);
            }
            self.pool.leave_queue(&partition);
        }
    }
}

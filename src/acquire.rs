//! [`Acquire`]: the future returned by
//! [`EnhancedConnectionPool::acquire`](crate::EnhancedConnectionPool::acquire).
//!
//! Runtime-agnostic: it parks on a `Waker` (woken by the releasing thread, or by the
//! crate's timer thread at the fairness bound or the deadline, or a moment after a
//! release once its wake-ups have kept finding nothing: see `wait`'s module docs), so
//! it works on any executor. Cancellation-safe: dropping it withdraws the wait, and
//! gives back a connection granted in the meantime.

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
        /// Whether this waiter may be the awake one (see `wait`'s module docs): it
        /// registered as such, or was woken (perhaps by a releaser that made it so).
        /// It clears the flag when it parks; one that registered while another was
        /// awake leaves the flag to that one.
        awake: bool,
        /// When the timer will poll this waiter next (the fairness bound or the
        /// deadline), once armed: each instant is armed once, however often the
        /// waiter is woken and re-parks.
        armed: Option<Instant>,
        /// Whether it has parked (returned `Pending`) before: then this poll follows a
        /// wake-up (or is an executor's spurious poll), and the queue counts whether it
        /// found anything (see `wait`'s module docs).
        parked: bool,
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
            let (partition, node, awake) = loop {
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
                    Registration::Waiting(node, awake) => break (partition, node, awake),
                    Registration::Closed if pool.closed() => {
                        this.state = State::Done;
                        return Poll::Ready(Err(Error::Closed));
                    }
                    // Retired since the lookup: the registry's next answer is current.
                    Registration::Closed => pool.users.settle(),
                }
            };
            let started = Instant::now();
            pool.request_connection(&partition);
            this.state = State::Waiting {
                partition,
                node,
                started,
                overdue,
                awake,
                armed: None,
                parked: false,
            };
        }
        let State::Waiting {
            ref partition,
            ref node,
            started,
            ref mut overdue,
            ref mut awake,
            ref mut armed,
            ref mut parked,
        } = this.state
        else {
            panic!("`Acquire` polled after completion");
        };
        let outcome = 'found: {
            if let Some(outcome) = node.outcome() {
                break 'found outcome;
            }
            let waited = started.elapsed();
            if waited >= this.timeout {
                match partition.waiters.cancel(node) {
                    None => {
                        pool.leave_queue(partition);
                        let error = pool.timeout_error(partition, started.elapsed());
                        this.state = State::Done;
                        return Poll::Ready(Err(error));
                    }
                    Some(outcome) => break 'found outcome,
                }
            }
            if !*overdue && pool.overdue_after(waited) {
                *overdue = true;
                partition.waiters.declare_overdue(node);
            }
            node.set_waker(cx.waker());
            // Parking: no longer the awake one, so search once more first, after
            // publishing the waker (a grant before `set_waker` woke the old waker, and
            // must not be missed). A waiter that registered while another was awake
            // leaves the flag to that one, which searches for it before it parks.
            if std::mem::take(awake) {
                partition.waiters.stop_awake();
            }
            pool.dispatch(partition);
            if let Some(outcome) = node.outcome() {
                break 'found outcome;
            }
            // Polled again by the timer at the fairness bound (to declare itself
            // overdue) or at the deadline, whichever comes first. Armed only when going
            // to sleep, so a waiter served by its first search never touches the timer.
            let wake_at = match *overdue || pool.tuning.fairness_bound >= this.timeout {
                true => started.checked_add(this.timeout),
                false => started.checked_add(pool.tuning.fairness_bound),
            };
            if let Some(at) = wake_at.filter(|at| *armed != Some(*at)) {
                *armed = Some(at);
                timer::arm(at, node);
            }
            // Whoever wakes it next may have made it the awake one (a releaser).
            *awake = true;
            if std::mem::replace(parked, true) {
                partition.waiters.note_task_wake(false);
            }
            return Poll::Pending;
        };
        if *parked {
            partition.waiters.note_task_wake(true);
        }
        let result = pool.finish_wait(partition, outcome, started);
        this.state = State::Done;
        Poll::Ready(result)
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

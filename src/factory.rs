//! The connection factory's scheduler: opens connections off the sweeper thread, up to
//! `max_concurrent_connects` at a time, with each user's failures backing off that user
//! alone.
//!
//! A client of the core, like the sweeper: it reads the partitions' demand (callers
//! waiting, `min_idle`, replacements asked for), calls the user's factory on a connector
//! thread (`heliosdb-connect-<pool id>`), and gives what it made to the pool through the
//! ordinary `add`. The core only tells it that demand may have changed ([`Connector::wake`]),
//! which takes one short lock and never waits for a connect.
//!
//! Rules:
//! - A user is connected for only while it has callers waiting, is below `min_idle`, or
//!   has asked-for connections outstanding (replacements, waiters' requests); each
//!   failure backs that user off (100 ms doubling to 10 s); after
//!   [`UNWANTED_RETRIES`] failures in a row its outstanding requests are dropped, so a
//!   failing user nobody waits for is not retried forever.
//! - Users with callers waiting go first, then those with fewer connects in flight; one
//!   user never holds more than `max_concurrent_connects - 1` connects (when the bound
//!   is above 1), so a slow user leaves room for the others.
//! - Nothing is opened that the pool could not hold: the user's and the pool's limits
//!   count the connects in flight.
//! - Threads start on demand (at most the bound), and are stopped and joined by the
//!   pool's close (a connect in progress finishes first; what it made is closed, never
//!   added to a closed pool).

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::metadata::ConnectionMetadata;
use crate::metrics::{FactoryBackoff, UserStats};
use crate::partition::Partition;
use crate::pool::PoolInner;
use crate::wait::lock;

/// The default of [`PoolBuilder::max_concurrent_connects`](crate::PoolBuilder::max_concurrent_connects).
pub const DEFAULT_MAX_CONCURRENT_CONNECTS: usize = 4;

/// Refuses a bound that would never connect (the builder's and the C config's check).
pub(crate) fn check_connect_bound(bound: usize) -> crate::error::Result<()> {
    if bound == 0 {
        return Err(crate::error::Error::invalid_config(
            "max_concurrent_connects",
            "must be at least 1",
        ));
    }
    Ok(())
}

/// The first backoff after a failure; it doubles with each failure in a row.
const FIRST_RETRY: Duration = Duration::from_millis(100);
/// The longest backoff.
const MAX_RETRY: Duration = Duration::from_secs(10);
/// Failures in a row after which a user's outstanding requests (replacements, asks of
/// callers who may have gone) are dropped; callers still waiting and `min_idle` keep
/// asking, at the backoff's pace.
pub(crate) const UNWANTED_RETRIES: u32 = 3;
/// The longest `sweep_now` waits for the connects its pass handed over.
const SETTLE_LIMIT: Duration = Duration::from_secs(10);

thread_local! {
    /// The id of the pool whose connector runs on this thread (0: none).
    static CONNECTOR_OF: Cell<u64> = const { Cell::new(0) };
}

/// One user's dealings with the factory (a field of its partition).
#[derive(Debug, Default)]
pub(crate) struct UserFactory {
    /// Connects running now for this user.
    connecting: AtomicUsize,
    /// Connections the factory made for this user and the pool took.
    creates: AtomicU64,
    backoff: Mutex<Backoff>,
}

#[derive(Debug, Default)]
struct Backoff {
    failures_in_a_row: u32,
    /// Not before this may the user be connected for again.
    retry_at: Option<Instant>,
}

impl UserFactory {
    /// Connects running now for this user. Acquire, against the Release decrement
    /// after a connect's add: a reader that sees the connect ended also sees the
    /// connection it added, so reading this before the user's counts never misses both.
    pub(crate) fn connecting(&self) -> usize {
        self.connecting.load(Ordering::Acquire)
    }

    /// Forgets the user's creations and backoff (its partition is reused for another
    /// user; no connect runs for it then: the connector holds the partition meanwhile).
    pub(crate) fn clear(&self) {
        debug_assert_eq!(self.connecting(), 0, "a reused partition has no connect running");
        self.creates.store(0, Ordering::Relaxed);
        *lock(&self.backoff) = Backoff::default();
    }

    /// When the user's backoff ends, if it is backing off now.
    fn backing_off_until(&self, now: Instant) -> Option<Instant> {
        lock(&self.backoff).retry_at.filter(|&at| at > now)
    }

    /// The backoff state, if the user's last connect failed.
    pub(crate) fn backoff(&self) -> Option<FactoryBackoff> {
        let backoff = lock(&self.backoff);
        (backoff.failures_in_a_row > 0).then(|| FactoryBackoff {
            failures_in_a_row: backoff.failures_in_a_row,
            next_retry_in: backoff
                .retry_at
                .map_or(Duration::ZERO, |at| {
                    at.saturating_duration_since(Instant::now())
                }),
        })
    }

    /// Records a failure; returns the failures in a row.
    fn failed(&self) -> u32 {
        let mut backoff = lock(&self.backoff);
        backoff.failures_in_a_row = backoff.failures_in_a_row.saturating_add(1);
        let doublings = (backoff.failures_in_a_row - 1).min(16);
        let delay = FIRST_RETRY.saturating_mul(1 << doublings).min(MAX_RETRY);
        backoff.retry_at = Some(Instant::now() + delay);
        backoff.failures_in_a_row
    }

    fn succeeded(&self) {
        *lock(&self.backoff) = Backoff::default();
        self.creates.fetch_add(1, Ordering::Relaxed);
    }
}

impl Partition {
    /// This user's factory figures, into its statistics.
    pub(crate) fn factory_stats(&self, stats: &mut UserStats) {
        stats.factory_errors = self.factory_errors.load(Ordering::Relaxed);
        stats.last_factory_error = lock(&self.last_factory_error).clone();
        stats.factory_creates = self.factory.creates.load(Ordering::Relaxed);
        stats.connects_in_flight = self.factory.connecting();
        stats.factory_backoff = self.factory.backoff();
    }
}

/// Starts connector thread number `index` of the pool; `None` if the pool is gone or
/// the thread could not start.
type StartWorker = Box<dyn Fn(usize) -> Option<JoinHandle<()>> + Send + Sync>;

/// The pool's connector threads and their work signal (a field of the pool).
pub(crate) struct Connector {
    /// Most connects at once (and most threads).
    bound: usize,
    crew: Mutex<Crew>,
    work: Condvar,
    /// Connects running now, all users.
    in_flight: AtomicUsize,
    start_worker: StartWorker,
}

#[derive(Default)]
struct Crew {
    threads: Vec<JoinHandle<()>>,
    /// Threads waiting for work.
    idle: usize,
    stopping: bool,
}

/// What a connector thread does next.
enum Plan {
    /// Connect for this user; `took_request`: for one of its `factory_requests`.
    Connect {
        partition: Arc<Partition>,
        took_request: bool,
    },
    /// Nothing to do until woken, or until this instant (a backoff ends).
    Wait(Option<Instant>),
}

impl Connector {
    /// A connector for the pool behind `pool` (not yet constructed: threads start on the
    /// first [`wake`](Self::wake) that finds none idle).
    pub(crate) fn new<C: Send + 'static>(pool: Weak<PoolInner<C>>, bound: usize) -> Self {
        let start_worker: StartWorker = Box::new(move |index| {
            let pool = pool.upgrade()?;
            let name = format!("heliosdb-connect-{}-{index}", pool.id());
            let spawned = std::thread::Builder::new()
                .name(name)
                .spawn(move || pool.run_connector());
            match spawned {
                Ok(thread) => Some(thread),
                Err(e) => {
                    log::error!("heliosdb-pool: cannot start a connector thread: {e}");
                    None
                }
            }
        });
        Connector {
            bound: bound.max(1),
            crew: Mutex::new(Crew::default()),
            work: Condvar::new(),
            in_flight: AtomicUsize::new(0),
            start_worker,
        }
    }

    /// Connects running now, all users. Acquire: as [`UserFactory::connecting`].
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Demand may have changed: a connector thread looks again, and one more starts if
    /// all are busy and the bound allows. Never waits for a connect.
    pub(crate) fn wake(&self) {
        self.nudge(&mut lock(&self.crew));
    }

    /// With the crew locked: an idle thread looks for work, or one more starts if none
    /// is idle and the bound allows.
    fn nudge(&self, crew: &mut Crew) {
        if crew.stopping {
            return;
        }
        if crew.idle > 0 {
            self.work.notify_one();
            return;
        }
        if crew.threads.len() < self.bound {
            // Counted as idle until it runs, so a burst of wakes starts one thread.
            let index = crew.threads.len();
            if let Some(thread) = (self.start_worker)(index) {
                crew.threads.push(thread);
                crew.idle += 1;
            }
        }
    }

    /// Stops the threads and joins them (a connect in progress finishes first, and what
    /// it made is closed by the closed pool). A thread calling this from a connect
    /// callback is not joined (it would wait for itself); it ends after that callback.
    pub(crate) fn stop_and_join(&self) {
        let threads = {
            let mut crew = lock(&self.crew);
            crew.stopping = true;
            self.work.notify_all();
            std::mem::take(&mut crew.threads)
        };
        let me = std::thread::current().id();
        for thread in threads {
            if thread.thread().id() == me {
                // Kept, so that a later close or drop on another thread joins it.
                lock(&self.crew).threads.push(thread);
            } else if thread.join().is_err() {
                log::error!("heliosdb-pool: a connector thread panicked");
            }
        }
    }
}

impl<C: Send + 'static> PoolInner<C> {
    /// A connector thread's life: plan, connect, repeat; sleep when there is nothing
    /// to do; end when the pool stops its connector.
    fn run_connector(self: Arc<Self>) {
        CONNECTOR_OF.with(|c| c.set(self.id()));
        let connector = &self.connector;
        let mut crew = lock(&connector.crew);
        crew.idle -= 1; // Counted idle by `wake` until now.
        loop {
            if crew.stopping || self.closed() {
                return;
            }
            match self.plan_connect() {
                Plan::Connect {
                    partition,
                    took_request,
                } => {
                    // Another thread looks for more work meanwhile (a burst of demand
                    // may have woken only this one).
                    connector.nudge(&mut crew);
                    drop(crew);
                    self.connect(&partition, took_request);
                    crew = lock(&connector.crew);
                }
                Plan::Wait(until) => {
                    crew.idle += 1;
                    crew = match until {
                        Some(at) => {
                            let wait = at.saturating_duration_since(Instant::now());
                            connector
                                .work
                                .wait_timeout(crew, wait)
                                .unwrap_or_else(|p| p.into_inner())
                                .0
                        }
                        None => connector.work.wait(crew).unwrap_or_else(|p| p.into_inner()),
                    };
                    crew.idle -= 1;
                }
            }
        }
    }

    /// Picks the next connect (and counts it in flight), or says how long to wait.
    /// Called with the connector's crew lock held, so two threads never plan at once.
    fn plan_connect(&self) -> Plan {
        let now = Instant::now();
        let mut retry_at: Option<Instant> = None;
        // Callers waiting first, then fewer connects in flight, then more wanted.
        type Rank = (bool, std::cmp::Reverse<usize>, usize);
        let mut best: Option<(Arc<Partition>, Rank)> = None;
        // A slow user leaves at least one connect to the others.
        let per_user = self.connector.bound.saturating_sub(1).max(1);
        // A full pool opens nothing (an add would refuse it): `capacity_freed` wakes
        // the connector when a place frees.
        if self.connector.in_flight() >= self.connector.bound || self.free_places() == 0 {
            return Plan::Wait(None);
        }
        for partition in self.all_partitions() {
            let need = self.connects_wanted(&partition);
            if need == 0 {
                continue;
            }
            if let Some(at) = partition.factory.backing_off_until(now) {
                retry_at = Some(retry_at.map_or(at, |r| r.min(at)));
                continue;
            }
            let connecting = partition.factory.connecting();
            if connecting >= per_user {
                continue;
            }
            let waited_for = partition.waiters.waiting() > 0;
            let rank = (waited_for, std::cmp::Reverse(connecting), need);
            if best.as_ref().is_none_or(|(_, r)| rank > *r) {
                best = Some((partition, rank));
            }
        }
        match best {
            Some((partition, _)) => {
                // A connect for callers waiting or `min_idle` leaves the requests be;
                // otherwise it is for a request, and takes one.
                let live = self.live_demand(&partition) > 0;
                let took_request = !live
                    && partition
                        .factory_requests
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                            n.checked_sub(1)
                        })
                        .is_ok();
                partition.factory.connecting.fetch_add(1, Ordering::Relaxed);
                self.connector.in_flight.fetch_add(1, Ordering::Relaxed);
                Plan::Connect {
                    partition,
                    took_request,
                }
            }
            None => Plan::Wait(retry_at),
        }
    }

    /// Runs the factory once for `partition`'s user and gives the pool what it made.
    /// `started_for_request`: the connect took one of the user's `factory_requests`.
    fn connect(&self, partition: &Partition, started_for_request: bool) {
        let user = partition.user().clone();
        let made = match &self.hooks.factory {
            Some(factory) => {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| factory(&user)))
                    .unwrap_or_else(|_| Err("the connection factory panicked".to_string()))
            }
            None => Err("no connection factory".to_string()),
        };
        let made = made.and_then(|(conn, metadata)| {
            if !metadata.user.is_empty() && *metadata.user != *user {
                // `conn` is dropped (closed) here.
                return Err(format!(
                    "the factory's connection was refused: its metadata names user {:?}",
                    metadata.user
                ));
            }
            Ok((conn, metadata))
        });
        match made {
            Ok((conn, metadata)) => {
                // Recorded before the add, which may hand the connection to a waiter at
                // once: what that caller then reads in the stats is already true.
                self.counters
                    .factory_creates
                    .fetch_add(1, Ordering::Relaxed);
                partition.factory.succeeded();
                *lock(&partition.last_factory_error) = None;
                if let Err(e) = self.add(conn, user, metadata) {
                    // Closed (dropped) by the failed add. Not the user's failure: the
                    // pool closed, or `add_connection` took the place meanwhile.
                    log::debug!("heliosdb-pool: factory connection not added: {e}");
                    self.counters
                        .factory_creates
                        .fetch_sub(1, Ordering::Relaxed);
                    partition.factory.creates.fetch_sub(1, Ordering::Relaxed);
                }
            }
            Err(message) => {
                log::warn!("heliosdb-pool: connection factory failed for {user:?}: {message}");
                self.counters.factory_errors.fetch_add(1, Ordering::Relaxed);
                partition.factory_errors.fetch_add(1, Ordering::Relaxed);
                *lock(&partition.last_factory_error) = Some(message);
                let failures = partition.factory.failed();
                if failures >= UNWANTED_RETRIES {
                    partition.factory_requests.store(0, Ordering::Relaxed);
                } else if started_for_request {
                    // A replacement nobody waits for, not yet given up on: asked again
                    // after the backoff. (Callers waiting ask by waiting.)
                    partition.factory_requests.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        // After the add: the connection (or the waiter it served) now stands for what
        // this connect was counted as, so no plan sees the demand twice.
        // Release: see `UserFactory::connecting`.
        partition.factory.connecting.fetch_sub(1, Ordering::Release);
        self.connector.in_flight.fetch_sub(1, Ordering::Release);
    }
}

impl<C> PoolInner<C> {
    /// Connections `partition`'s user wants from the factory now, beyond those in
    /// flight: for its callers waiting, for `min_idle`, and what was asked for, within
    /// `max_per_user` (counting the connects in flight).
    pub(crate) fn connects_wanted(&self, partition: &Partition) -> usize {
        if self.hooks.factory.is_none() {
            return 0;
        }
        let asked = partition.factory_requests.load(Ordering::Relaxed) as usize;
        // In flight first, then the count (see `UserFactory::connecting`).
        let connecting = partition.factory.connecting();
        let room = self
            .config
            .max_per_user
            .saturating_sub(partition.connection_count() + connecting);
        self.live_demand(partition).max(asked).min(room)
    }

    /// Connections wanted for `partition`'s callers waiting and its `min_idle`, beyond
    /// its idle ones and its connects in flight.
    fn live_demand(&self, partition: &Partition) -> usize {
        // In flight first, then the idle ones (see `UserFactory::connecting`).
        let connecting = partition.factory.connecting();
        let idle = partition.idle_count(&self.slab);
        partition
            .waiters
            .waiting()
            .max(self.tuning.min_idle)
            .saturating_sub(idle + connecting)
    }

    /// Places the pool can still fill, less the connects in flight (0 when full).
    fn free_places(&self) -> usize {
        if !self.has_room() {
            return 0;
        }
        // In flight first, then the counts (see `UserFactory::connecting`).
        let in_flight = self.connector.in_flight();
        let held = Cell::new(0);
        let _ = self.any_partition(|p| {
            held.set(held.get() + p.connection_count());
            false
        });
        self.config
            .max_connections
            .saturating_sub(held.get() + in_flight)
    }

    /// The sweeper's part of the factory: notices demand (a user below `min_idle`, a
    /// request a full pool turned away, a replacement) and hands it to the connector,
    /// without waiting. Allocates nothing when nothing is wanted.
    pub(crate) fn hand_over_demand(&self) {
        if self.hooks.factory.is_none() || self.closed() {
            return;
        }
        let now = Instant::now();
        let wanted = self.any_partition(|p| {
            self.connects_wanted(p) > 0 && p.factory.backing_off_until(now).is_none()
        });
        if wanted {
            self.connector.wake();
        }
    }

    /// For `sweep_now`: waits until the connects its pass handed over are done (none in
    /// flight and none wanted but for users backing off), so a caller sees their
    /// result. Not from a connector thread of this pool (it would wait for itself).
    pub(crate) fn settle_connects(&self) {
        if self.hooks.factory.is_none() || CONNECTOR_OF.with(Cell::get) == self.id() {
            return;
        }
        // A bound, should a connect never return: `sweep_now` is for tests and tools.
        let give_up = Instant::now() + SETTLE_LIMIT;
        while !self.closed() && Instant::now() < give_up {
            let now = Instant::now();
            let busy = self.connector.in_flight() > 0
                || (self.free_places() > 0
                    && self.any_partition(|p| {
                        self.connects_wanted(p) > 0 && p.factory.backing_off_until(now).is_none()
                    }));
            if !busy {
                return;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

/// Wraps a plain factory (`connection_factory`) as one that returns metadata: the user
/// and the tag `factory`, as before metadata could be returned.
pub(crate) fn with_default_metadata<C>(
    factory: impl Fn(&str) -> std::result::Result<C, String> + Send + Sync + 'static,
) -> impl Fn(&str) -> std::result::Result<(C, ConnectionMetadata), String> + Send + Sync + 'static
{
    move |user: &str| {
        factory(user).map(|conn| {
            let metadata = ConnectionMetadata {
                tags: vec!["factory".into()],
                ..ConnectionMetadata::for_user(user)
            };
            (conn, metadata)
        })
    }
}

//! Connection health: the [`HealthCheck`] hook, the status rule, and a standalone monitor.
//!
//! [`HealthRecord`] keeps the outcomes of one connection's checks and turns them into a
//! [`HealthStatus`] with [`HealthRecord::status`]: the one status rule. The pool's sweeper
//! keeps one record per slot and runs checks through [`run_health_check`];
//! [`EnhancedHealthMonitor`] keeps one per monitored connection. Both report
//! [`ConnectionHealth`].
//!
//! The status rule, for a [`HealthMonitorConfig`]:
//!
//! - `unhealthy_after_failures` or more consecutive failures: [`HealthStatus::Unhealthy`];
//! - fewer consecutive failures, but at least one: [`HealthStatus::Degraded`];
//! - last check succeeded but took longer than `slow_check_threshold`: `Degraded`;
//! - otherwise (including never checked): [`HealthStatus::Healthy`].
//!
//! A panicking check counts as a failure; it never unwinds into the caller or kills the
//! monitor's thread.

use std::collections::HashMap;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};

use crate::error::{Error, Result};
use crate::leak::{LeakView, ResourceId};

/// Name of the monitor's background thread.
const THREAD_NAME: &str = "heliosdb-health";

/// A connection's health, from its recent checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HealthStatus {
    /// The last check succeeded in time (or there was none yet).
    Healthy,
    /// The last check failed, or succeeded slowly, but not enough failures in a row to
    /// give up on it.
    Degraded,
    /// `unhealthy_after_failures` consecutive checks failed.
    Unhealthy,
}

/// A connection that can check itself (e.g. run `SELECT 1`).
///
/// Called from the pool's sweeper thread or the monitor's background thread, on a
/// connection no one else is using, or from [`EnhancedHealthMonitor::check_connection`].
/// It should be quick: it blocks the thread that runs it.
pub trait HealthCheck {
    /// Checks the connection.
    ///
    /// # Errors
    ///
    /// A message saying why the connection is not usable. A panic counts as a failure too.
    fn health_check(&self) -> std::result::Result<(), String>;
}

/// Runs `conn`'s check and times it; a panic becomes `Err` with the panic message.
///
/// Runs on the calling thread and holds no lock.
pub fn run_health_check<C: HealthCheck + ?Sized>(
    conn: &C,
) -> (std::result::Result<(), String>, Duration) {
    let start = Instant::now();
    // AssertUnwindSafe: after a panic we only record a failure and never look at state
    // the check may have left half-updated, so unwind safety cannot be broken here.
    let outcome =
        panic::catch_unwind(AssertUnwindSafe(|| conn.health_check())).unwrap_or_else(|payload| {
            Err(format!(
                "health check panicked: {}",
                panic_message(&*payload)
            ))
        });
    (outcome, start.elapsed())
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "non-string panic payload"
    }
}

/// Configuration of health checking, shared by [`EnhancedHealthMonitor`] and
/// [`HealthRecord::status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthMonitorConfig {
    /// How often the background thread checks every monitored connection. Default 30 s.
    pub check_interval: Duration,
    /// A successful check slower than this makes the connection Degraded. Default 1 s.
    pub slow_check_threshold: Duration,
    /// Consecutive failures that make a connection Unhealthy; fewer make it Degraded.
    /// Default 3.
    pub unhealthy_after_failures: u32,
}

impl Default for HealthMonitorConfig {
    fn default() -> Self {
        HealthMonitorConfig {
            check_interval: Duration::from_secs(30),
            slow_check_threshold: Duration::from_secs(1),
            unhealthy_after_failures: 3,
        }
    }
}

impl HealthMonitorConfig {
    /// Checks that `check_interval` and `slow_check_threshold` are non-zero and
    /// `unhealthy_after_failures >= 1`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] naming the first offending field and why.
    pub fn validate(&self) -> Result<()> {
        if self.check_interval.is_zero() {
            return Err(Error::invalid_config(
                "check_interval",
                "must be greater than zero",
            ));
        }
        if self.slow_check_threshold.is_zero() {
            return Err(Error::invalid_config(
                "slow_check_threshold",
                "must be greater than zero",
            ));
        }
        if self.unhealthy_after_failures == 0 {
            return Err(Error::invalid_config(
                "unhealthy_after_failures",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// The outcomes of one connection's health checks.
///
/// Plain data with no interior locking: its owner (a pool slot, a monitor entry) provides
/// exclusion. Recording a success allocates nothing.
///
/// ```
/// # use std::time::Duration;
/// use heliosdb_pool::{health::HealthRecord, HealthMonitorConfig, HealthStatus};
///
/// let config = HealthMonitorConfig::default();
/// let mut record = HealthRecord::new();
/// record.record_failure("connection reset".into(), Duration::from_millis(2));
/// assert_eq!(record.status(&config), HealthStatus::Degraded);
/// record.record_success(Duration::from_millis(1));
/// assert_eq!(record.status(&config), HealthStatus::Healthy);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthRecord {
    consecutive_failures: u32,
    checks: u64,
    failures: u64,
    last_latency: Option<Duration>,
    /// The most recent failure's message; kept after recovery, for diagnosis.
    last_error: Option<String>,
    last_checked: Option<Instant>,
}

impl HealthRecord {
    /// A record with no checks yet (status Healthy).
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a successful check that took `latency`; resets the consecutive failures.
    pub fn record_success(&mut self, latency: Duration) {
        self.consecutive_failures = 0;
        self.note_check(latency);
    }

    /// Records a failed check that took `latency`, with its message.
    pub fn record_failure(&mut self, error: String, latency: Duration) {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.failures += 1;
        self.last_error = Some(error);
        self.note_check(latency);
    }

    /// Records an outcome as returned by [`run_health_check`].
    pub fn record(&mut self, outcome: std::result::Result<(), String>, latency: Duration) {
        match outcome {
            Ok(()) => self.record_success(latency),
            Err(error) => self.record_failure(error, latency),
        }
    }

    /// The status these outcomes give under `config` (see the [module docs](self)).
    pub fn status(&self, config: &HealthMonitorConfig) -> HealthStatus {
        if self.consecutive_failures >= config.unhealthy_after_failures {
            HealthStatus::Unhealthy
        } else if self.consecutive_failures > 0
            || self
                .last_latency
                .is_some_and(|l| l > config.slow_check_threshold)
        {
            HealthStatus::Degraded
        } else {
            HealthStatus::Healthy
        }
    }

    /// Failures since the last success.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// Checks recorded so far.
    pub fn checks(&self) -> u64 {
        self.checks
    }

    /// Failures recorded so far.
    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// How long the last check took.
    pub fn last_latency(&self) -> Option<Duration> {
        self.last_latency
    }

    /// The most recent failure's message, even if later checks succeeded.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// When the last check was recorded.
    pub fn last_checked(&self) -> Option<Instant> {
        self.last_checked
    }

    fn note_check(&mut self, latency: Duration) {
        self.checks += 1;
        self.last_latency = Some(latency);
        self.last_checked = Some(Instant::now());
    }
}

/// A snapshot of one connection's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionHealth {
    /// The connection.
    pub connection_id: String,
    /// Its status under the monitor's configuration.
    pub status: HealthStatus,
    /// Whether the leak detector sees it as held past its alert threshold.
    pub is_leaked: bool,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// How long the last check took.
    pub last_latency: Option<Duration>,
    /// The most recent failure's message, even if later checks succeeded.
    pub last_error: Option<String>,
    /// When the last check was recorded.
    pub last_checked: Option<Instant>,
    /// Checks so far.
    pub checks: u64,
    /// Failures so far.
    pub failures: u64,
}

impl ConnectionHealth {
    /// A snapshot of `record` for `connection_id`, with its status under `config`.
    pub fn from_record(
        connection_id: String,
        record: &HealthRecord,
        config: &HealthMonitorConfig,
        is_leaked: bool,
    ) -> Self {
        ConnectionHealth {
            connection_id,
            status: record.status(config),
            is_leaked,
            consecutive_failures: record.consecutive_failures,
            last_latency: record.last_latency,
            last_error: record.last_error.clone(),
            last_checked: record.last_checked,
            checks: record.checks,
            failures: record.failures,
        }
    }
}

/// A monitored connection. The connection is behind an `Arc` so a check can run after
/// the map lock is released, and the record behind its own mutex, held only to read or
/// record an outcome, never during a check.
struct Monitored {
    conn: Arc<dyn HealthCheck + Send + Sync>,
    record: Mutex<HealthRecord>,
}

/// State shared with the background thread.
struct Shared {
    config: HealthMonitorConfig,
    leak_detector: Arc<dyn LeakView>,
    connections: RwLock<HashMap<String, Arc<Monitored>>>,
}

impl Shared {
    /// The monitored connections, copied out so no map lock is held while using them.
    fn snapshot(&self) -> Vec<(String, Arc<Monitored>)> {
        let map = self
            .connections
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        map.iter()
            .map(|(id, m)| (id.clone(), Arc::clone(m)))
            .collect()
    }

    fn check(&self, monitored: &Monitored) {
        let (outcome, latency) = run_health_check(&*monitored.conn);
        lock(&monitored.record).record(outcome, latency);
    }

    fn health(&self, id: String, monitored: &Monitored) -> ConnectionHealth {
        let is_leaked = self.leak_detector.is_leaked(&ResourceId::new(&id));
        let record = lock(&monitored.record);
        ConnectionHealth::from_record(id, &record, &self.config, is_leaked)
    }

    /// The background thread: one pass every `check_interval` until the sender is
    /// dropped. Between connections it looks at the channel again, so a stop waits for
    /// at most the check in progress.
    fn run(&self, stop: &Receiver<()>) {
        loop {
            match stop.recv_timeout(self.config.check_interval) {
                Err(RecvTimeoutError::Timeout) => {}
                // Disconnected (the monitor dropped the sender) or an explicit message.
                _ => return,
            }
            for (_, monitored) in self.snapshot() {
                if !matches!(stop.try_recv(), Err(TryRecvError::Empty)) {
                    return;
                }
                self.check(&monitored);
            }
        }
    }
}

/// The running background thread and the channel that stops it.
struct Worker {
    stop: Sender<()>,
    handle: JoinHandle<()>,
}

/// Monitors connections' health with periodic background checks, and reports which are
/// unhealthy or leaked.
///
/// Thread-safe (`Send + Sync`); every method takes `&self`. Checks run with no monitor
/// lock held, on the background thread or on the caller's thread
/// ([`check_connection`](Self::check_connection)). Dropping the monitor stops and joins the
/// background thread.
///
/// ```
/// use std::sync::Arc;
/// use heliosdb_pool::{EnhancedHealthMonitor, HealthCheck, HealthMonitorConfig, LeakDetector};
///
/// struct Conn;
/// impl HealthCheck for Conn {
///     fn health_check(&self) -> Result<(), String> { Ok(()) }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let detector = Arc::new(LeakDetector::new());
/// let monitor = EnhancedHealthMonitor::new(HealthMonitorConfig::default(), detector);
/// monitor.monitor_connection("conn-1".to_string(), Arc::new(Conn)).await;
/// monitor.start_background_monitoring();
/// let health = monitor.check_connection("conn-1").await.unwrap();
/// assert_eq!(health.checks, 1);
/// assert!(monitor.get_unhealthy_connections().is_empty());
/// monitor.stop_background_monitoring();
/// # }
/// ```
pub struct EnhancedHealthMonitor {
    shared: Arc<Shared>,
    worker: Mutex<Option<Worker>>,
}

impl fmt::Debug for EnhancedHealthMonitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnhancedHealthMonitor")
            .field("config", &self.shared.config)
            .field("background", &self.is_background_monitoring())
            .finish_non_exhaustive()
    }
}

impl EnhancedHealthMonitor {
    /// A monitor with `config` that asks `leak_detector` whether a connection is leaked
    /// (by its connection id as [`ResourceId`]). Starts no thread. The detector is a
    /// standalone [`LeakDetector`](crate::LeakDetector) or the pool's view
    /// (`Arc::new(pool.leak_detector.clone())`, for connections monitored under their
    /// pool [`ConnectionId`](crate::ConnectionId)): anything that is a [`LeakView`]
    /// (taken generically, so `Arc::clone(&detector)` of either kind needs no cast).
    ///
    /// # Panics
    ///
    /// If `config` is invalid, with the validation message; see
    /// [`EnhancedHealthMonitor::try_new`].
    pub fn new(config: HealthMonitorConfig, leak_detector: Arc<impl LeakView + 'static>) -> Self {
        Self::try_new(config, leak_detector).unwrap_or_else(|e| panic!("{e}"))
    }

    /// As [`EnhancedHealthMonitor::new`].
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] when `config` is invalid.
    pub fn try_new(
        config: HealthMonitorConfig,
        leak_detector: Arc<impl LeakView + 'static>,
    ) -> Result<Self> {
        config.validate()?;
        Ok(EnhancedHealthMonitor {
            shared: Arc::new(Shared {
                config,
                leak_detector,
                connections: RwLock::new(HashMap::new()),
            }),
            worker: Mutex::new(None),
        })
    }

    /// The monitor's configuration.
    pub fn config(&self) -> &HealthMonitorConfig {
        &self.shared.config
    }

    /// Starts monitoring `conn` as `id`, replacing (with a fresh record) any connection
    /// already monitored under that id. The monitor shares ownership of `conn`.
    ///
    /// Async for the seed's API shape; it never waits and needs no particular runtime.
    pub async fn monitor_connection<T>(&self, id: String, conn: Arc<T>)
    where
        T: HealthCheck + Send + Sync + 'static,
    {
        let monitored = Arc::new(Monitored {
            conn,
            record: Mutex::new(HealthRecord::new()),
        });
        self.shared
            .connections
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, monitored);
    }

    /// Stops monitoring `id`; returns whether it was monitored. A check already running
    /// on it finishes, and its outcome is discarded.
    pub fn unmonitor_connection(&self, id: &str) -> bool {
        self.shared
            .connections
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id)
            .is_some()
    }

    /// Checks `id` now, on the calling thread, and returns its health; `None` if it is not
    /// monitored.
    ///
    /// The check runs synchronously inside the future (it blocks the executor thread for
    /// as long as the check takes); no lock is held meanwhile.
    pub async fn check_connection(&self, id: &str) -> Option<ConnectionHealth> {
        let monitored = self
            .shared
            .connections
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()?;
        self.shared.check(&monitored);
        Some(self.shared.health(id.to_owned(), &monitored))
    }

    /// Health of every monitored connection that is not Healthy or is leaked, sorted by
    /// id. Runs no check.
    pub fn get_unhealthy_connections(&self) -> Vec<ConnectionHealth> {
        let mut all = self.get_all_health();
        all.retain(|h| h.status != HealthStatus::Healthy || h.is_leaked);
        all
    }

    /// Health of every monitored connection, sorted by id. Runs no check.
    pub fn get_all_health(&self) -> Vec<ConnectionHealth> {
        let mut all: Vec<_> = self
            .shared
            .snapshot()
            .into_iter()
            .map(|(id, monitored)| self.shared.health(id, &monitored))
            .collect();
        all.sort_by(|a, b| a.connection_id.cmp(&b.connection_id));
        all
    }

    /// Starts the background thread (named `heliosdb-health`), which checks every
    /// monitored connection each `check_interval`, the first pass one interval from now.
    /// Does nothing if it is already running.
    ///
    /// # Panics
    ///
    /// If the OS cannot create the thread, as [`std::thread::spawn`] does.
    pub fn start_background_monitoring(&self) {
        let mut worker = lock(&self.worker);
        if worker.is_some() {
            return;
        }
        let (stop, stop_rx) = crossbeam_channel::bounded(0);
        let shared = Arc::clone(&self.shared);
        let handle = thread::Builder::new()
            .name(THREAD_NAME.to_owned())
            .spawn(move || shared.run(&stop_rx))
            .expect("failed to spawn the heliosdb-health thread");
        *worker = Some(Worker { stop, handle });
    }

    /// Stops the background thread and waits for it, which takes at most the check in
    /// progress, not an interval. Does nothing if it is not running. Called on the background
    /// thread itself (from a health check), it stops the thread without waiting for it.
    pub fn stop_background_monitoring(&self) {
        let Some(Worker { stop, handle }) = lock(&self.worker).take() else {
            return;
        };
        // Dropping the only sender wakes the thread's recv_timeout with Disconnected.
        drop(stop);
        if handle.thread().id() != thread::current().id() {
            // The thread catches check panics, so join can only fail if the monitor
            // itself has a bug; there is nothing better to do than carry on.
            let _ = handle.join();
        }
    }

    /// Whether the background thread is running.
    pub fn is_background_monitoring(&self) -> bool {
        lock(&self.worker).is_some()
    }
}

impl Drop for EnhancedHealthMonitor {
    fn drop(&mut self) {
        self.stop_background_monitoring();
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked (each update is a
/// single assignment), so a poisoned lock is used as is.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

//! [`PoolBuilder`]: a pool with hooks (health check, connection factory, leak and
//! reclaim callbacks) and the settings beyond the design guide's eleven fields.
//!
//! ```
//! use std::time::Duration;
//! use heliosdb_pool::{EnhancedConnectionPool, EnhancedPoolConfig};
//!
//! let pool = EnhancedConnectionPool::<String>::builder(EnhancedPoolConfig::default())
//!     .leak_critical_threshold(Duration::from_secs(600))
//!     .min_idle(1)
//!     .health_check(|conn: &String| if conn.is_empty() { Err("empty".into()) } else { Ok(()) })
//!     .connection_factory(|user: &str| Ok(format!("connection for {user}")))
//!     .on_leak(|report| eprintln!("{report}"))
//!     .build()
//!     .unwrap();
//! assert_eq!(pool.try_acquire("alice").map(|c| c.len()).ok(), None); // made in the background
//! ```

use std::time::Duration;

use crate::config::EnhancedPoolConfig;
use crate::error::{Error, Result};
use crate::health::HealthMonitorConfig;
use crate::leak::{LeakReport, LeakThresholds};
use crate::metadata::{ConnectionId, ConnectionMetadata};
use crate::metrics::Eviction;
use crate::pool::EnhancedConnectionPool;
pub(crate) use crate::users::UserLimits;
pub use crate::users::{DEFAULT_MAX_USER_NAME_LEN, DEFAULT_MAX_USERS, DEFAULT_RETIRE_USERS_AFTER};

/// A health check: `Ok` if the connection is usable. Runs on the sweeper thread, on an
/// idle connection nobody else can touch meanwhile; a panic counts as a failure.
pub type HealthCheckFn<C> = Box<dyn Fn(&C) -> std::result::Result<(), String> + Send + Sync>;
/// A connection factory: opens a connection for a user and describes it (the metadata
/// leak reports and `borrows()` show). Runs on the pool's connector threads
/// (`heliosdb-connect-<pool id>-<n>`), up to
/// [`max_concurrent_connects`](PoolBuilder::max_concurrent_connects) calls at once
/// (for different users, or the same one), concurrently with the pool's users; a panic
/// counts as a failure. See [`PoolBuilder::connection_factory_with_metadata`].
pub type FactoryFn<C> =
    Box<dyn Fn(&str) -> std::result::Result<(C, ConnectionMetadata), String> + Send + Sync>;
/// A reset: makes a returned connection ready for its next borrower (roll back an open
/// transaction, `DISCARD ALL`, clear session state); `Err` if it cannot. Runs on the
/// releasing thread, before the connection becomes idle; see
/// [`PoolBuilder::reset`].
pub type ResetFn<C> = Box<dyn Fn(&mut C) -> std::result::Result<(), String> + Send + Sync>;
/// A leak or reclaim callback. Runs on the sweeper thread; a panic is caught and logged.
pub type ReportFn = Box<dyn Fn(&LeakReport) + Send + Sync>;

/// The default of [`PoolBuilder::validate_after`] (HikariCP's).
pub const DEFAULT_VALIDATE_AFTER: Duration = Duration::from_millis(500);

/// The default of [`PoolBuilder::fairness_bound`].
pub const DEFAULT_FAIRNESS_BOUND: Duration = Duration::from_millis(1);

/// The largest [`PoolBuilder::fairness_bound`] accepted: past this, waiters would be
/// passed over for longer than a request can sensibly wait.
pub const MAX_FAIRNESS_BOUND: Duration = Duration::from_secs(1);

/// An eviction hook; see [`PoolBuilder::on_evict`].
pub type EvictFn = Box<dyn Fn(&Evicted<'_>) + Send + Sync>;

/// What [`PoolBuilder::on_evict`] is told about a connection the pool closed by itself:
/// which one, whose, why, and its metadata, so the service can open a replacement.
/// Borrowed for the call: copy what you keep.
#[derive(Debug, Clone, Copy)]
pub struct Evicted<'a> {
    /// The connection (its id is never reused).
    pub connection_id: ConnectionId,
    /// The user it belonged to.
    pub user: &'a str,
    /// Why it was closed: [`Eviction::Idle`], [`Eviction::Age`] or [`Eviction::Health`].
    pub cause: Eviction,
    /// The metadata it was added with.
    pub metadata: &'a ConnectionMetadata,
}

/// The user's hooks. All optional; they run on the sweeper thread, concurrently with
/// the pool's users, except: the factory on the connector threads; `reset` on the
/// releasing thread (one branch on release when it is not set); the health check also on an acquiring thread with validation on
/// borrow; `on_evict` also where a connection leaves on a user's path (see its docs).
pub(crate) struct Hooks<C> {
    pub(crate) health_check: Option<HealthCheckFn<C>>,
    pub(crate) reset: Option<ResetFn<C>>,
    pub(crate) factory: Option<FactoryFn<C>>,
    pub(crate) on_leak: Option<ReportFn>,
    pub(crate) on_reclaim: Option<ReportFn>,
    pub(crate) on_evict: Option<EvictFn>,
}

/// Settings beyond [`EnhancedPoolConfig`], with their defaults.
#[derive(Debug, Clone)]
pub(crate) struct Tuning {
    /// Alert at `leak_detection_threshold_ms`, Critical at this.
    pub(crate) leak_thresholds: LeakThresholds,
    /// Idle connections per user that idle eviction keeps and the factory maintains.
    pub(crate) min_idle: usize,
    /// Up to this fraction of `max_connection_age_ms` is taken off each connection's
    /// age limit (deterministically per connection), so a batch opened together does
    /// not expire together.
    pub(crate) age_jitter: f64,
    /// How often the sweeper runs; by default the smallest enabled interval.
    pub(crate) sweep_interval: Option<Duration>,
    /// When a connection counts as Degraded or Unhealthy; an Unhealthy one is evicted.
    pub(crate) health_policy: HealthMonitorConfig,
    /// The `pool` label of the Prometheus exposition.
    pub(crate) name: String,
    /// Validation on borrow: a connection idle at least this long (ms) is checked by
    /// the borrower first. `None`: no validation (no health check, or turned off).
    pub(crate) validate_after_ms: Option<i32>,
    /// How many users, how long their names, when quiet ones are retired.
    pub(crate) user_limits: UserLimits,
    /// Most factory connects running at once (and most connector threads).
    pub(crate) max_concurrent_connects: usize,
    /// Eventual fairness: how long a waiter may be passed over by callers taking a
    /// just-released connection before hand-off turns strictly FIFO (zero: always).
    pub(crate) fairness_bound: Duration,
}

/// Builds an [`EnhancedConnectionPool`] with hooks. Made by
/// [`EnhancedConnectionPool::builder`].
///
/// Every setting is optional; [`build`](Self::build) validates them all together with
/// the [`EnhancedPoolConfig`] and starts the sweeper thread if a background feature is
/// on. The hooks run on that thread, never on the caller's acquire or release.
///
/// ```
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use std::time::Duration;
/// use heliosdb_pool::{ConnectionMetadata, EnhancedConnectionPool, EnhancedPoolConfig, Error};
///
/// struct Conn {
///     healthy: AtomicBool,
/// }
///
/// let config = EnhancedPoolConfig {
///     health_check_interval_ms: 10,
///     ..EnhancedPoolConfig::development()
/// };
/// let pool = EnhancedConnectionPool::<Conn>::builder(config)
///     .name("orders")                                  // the Prometheus `pool` label
///     .leak_critical_threshold(Duration::from_secs(60)) // default: 10x the alert threshold
///     .sweep_interval(Duration::from_millis(5))
///     .health_check(|c: &Conn| {
///         if c.healthy.load(Ordering::Relaxed) { Ok(()) } else { Err("gone".into()) }
///     })
///     .connection_factory(|_user: &str| Ok(Conn { healthy: AtomicBool::new(true) }))
///     .on_leak(|report| eprintln!("leak: {report}"))
///     .build()?;
///
/// // A connection that fails its checks is evicted and the factory replaces it.
/// let sick = Conn { healthy: AtomicBool::new(false) };
/// let id = pool.add_connection_sync(sick, "alice", ConnectionMetadata::for_user("alice"))?;
/// let deadline = std::time::Instant::now() + Duration::from_secs(10);
/// while pool.stats().evictions.health == 0 || pool.stats().idle_connections == 0 {
///     assert!(std::time::Instant::now() < deadline, "{:?}", pool.stats());
///     std::thread::sleep(Duration::from_millis(5));
/// }
/// let conn = pool.try_acquire("alice")?;
/// assert_ne!(conn.connection_id(), id, "a new connection from the factory");
/// assert!(conn.healthy.load(Ordering::Relaxed));
/// drop(conn);
///
/// // Settings are checked together: Critical must come after Alert (10 s here).
/// let refused = EnhancedConnectionPool::<Conn>::builder(EnhancedPoolConfig::development())
///     .leak_critical_threshold(Duration::from_secs(5))
///     .build();
/// assert!(matches!(refused, Err(Error::InvalidConfig { field: "leak_critical_threshold", .. })));
/// # Ok::<(), Error>(())
/// ```
pub struct PoolBuilder<C> {
    config: EnhancedPoolConfig,
    critical_threshold: Option<Duration>,
    min_idle: usize,
    age_jitter: f64,
    sweep_interval: Option<Duration>,
    health_policy: HealthMonitorConfig,
    name: String,
    validate_after: Duration,
    user_limits: UserLimits,
    max_concurrent_connects: usize,
    fairness_bound: Duration,
    hooks: Hooks<C>,
}

impl<C: Send + 'static> PoolBuilder<C> {
    pub(crate) fn new(config: EnhancedPoolConfig) -> Self {
        PoolBuilder {
            config,
            critical_threshold: None,
            min_idle: 0,
            age_jitter: 0.025,
            sweep_interval: None,
            health_policy: HealthMonitorConfig::default(),
            name: "default".to_string(),
            validate_after: DEFAULT_VALIDATE_AFTER,
            user_limits: UserLimits::default(),
            max_concurrent_connects: crate::factory::DEFAULT_MAX_CONCURRENT_CONNECTS,
            fairness_bound: DEFAULT_FAIRNESS_BOUND,
            hooks: Hooks {
                health_check: None,
                reset: None,
                factory: None,
                on_leak: None,
                on_reclaim: None,
                on_evict: None,
            },
        }
    }

    /// Borrows held this long are reported at level Critical (and reclaimed when
    /// `auto_cleanup_enabled`). Default: ten times `leak_detection_threshold_ms`, the
    /// same ratio as [`LeakDetectorConfig`](crate::LeakDetectorConfig)'s defaults.
    /// Must exceed `leak_detection_threshold_ms` and stay within a year; [`build`](Self::build)
    /// checks this whether or not leak detection is enabled.
    pub fn leak_critical_threshold(mut self, threshold: Duration) -> Self {
        self.critical_threshold = Some(threshold);
        self
    }

    /// Idle connections per user that idle eviction never goes below, and that the
    /// factory (if any) keeps available. Default 0.
    pub fn min_idle(mut self, per_user: usize) -> Self {
        self.min_idle = per_user;
        self
    }

    /// Spread of connection age limits, as a fraction of `max_connection_age_ms`
    /// (0.0 to 0.5). Default 0.025: up to 2.5% earlier.
    pub fn age_jitter(mut self, fraction: f64) -> Self {
        self.age_jitter = fraction;
        self
    }

    /// Runs the sweeper at this interval instead of the smallest enabled one.
    pub fn sweep_interval(mut self, interval: Duration) -> Self {
        self.sweep_interval = Some(interval);
        self
    }

    /// When health checks count a connection as Degraded or Unhealthy (evicted).
    /// Default: [`HealthMonitorConfig::default`] (three failures in a row, or a check
    /// slower than 1 s for Degraded).
    pub fn health_policy(mut self, policy: HealthMonitorConfig) -> Self {
        self.health_policy = policy;
        self
    }

    /// The pool's name: the `pool` label of its Prometheus metrics. Default "default".
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Checks idle connections every `health_check_interval_ms`; see [`HealthCheckFn`].
    pub fn health_check(
        mut self,
        check: impl Fn(&C) -> std::result::Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        self.hooks.health_check = Some(Box::new(check));
        self
    }

    /// Validation on borrow (as HikariCP's `aliveBypassWindowMs`): with a
    /// [`health_check`](Self::health_check) and `health_check_enabled`, a connection
    /// that has been idle for `window` or longer is checked by the borrower before it
    /// is handed out. One that fails (or whose check panics) is closed, counted as a
    /// health eviction (`evictions.health`, and told to `on_evict`; the factory, if
    /// any, replaces it), and the next idle one is tried; if none is left the acquire
    /// goes on as usual (waits, or fails with `NoIdleConnection`). A dead connection is
    /// thus never handed out after sitting idle. Default 500 ms; `Duration::ZERO`
    /// checks every borrow; `Duration::MAX` (anything over 24 days) turns it off.
    ///
    /// Cost: a connection in steady use (idle less than `window`) pays nothing but one
    /// compare on acquire; with validation on, a release also records its time (one
    /// coarse-clock read, one store on the slot's own line). Without a health check,
    /// or turned off, acquire pays one predictable branch and release one more (beside
    /// the `reset` hook's). The check
    /// runs on the acquiring thread (inside `acquire().await`'s poll for async
    /// callers), so it should be quick. A connection handed to a caller that was
    /// waiting was released for it just then, and is not checked.
    pub fn validate_after(mut self, window: Duration) -> Self {
        self.validate_after = window;
        self
    }

    /// All three user limits at once (the C boundary's form).
    pub(crate) fn user_limits(mut self, limits: UserLimits) -> Self {
        self.user_limits = limits;
        self
    }

    /// The most users the pool keeps at once (a user has a partition from its first
    /// connection, or its first acquire with a factory, until it is retired: see
    /// [`retire_users_after`](Self::retire_users_after)). Beyond it, adding a connection
    /// or (with a factory) acquiring for a new user fails with
    /// [`Error::TooManyUsers`]; existing users are not affected. Bounds the pool's memory
    /// and its Prometheus series when user names come from outside (a name per client,
    /// say). Default [`DEFAULT_MAX_USERS`] (1024); at least 1.
    pub fn max_users(mut self, max: usize) -> Self {
        self.user_limits.max_users = max;
        self
    }

    /// The longest user name accepted, in bytes: a longer one is refused with
    /// [`Error::UserNameTooLong`] by `add_connection` and by acquires that would
    /// create it (with a factory) or look it up (without one, instead of
    /// `UnknownUser`). Default [`DEFAULT_MAX_USER_NAME_LEN`] (256); at least 1.
    pub fn max_user_name_len(mut self, max: usize) -> Self {
        self.user_limits.max_name_len = max;
        self
    }

    /// A user that has had no connection (idle, borrowed or reclaimed), no caller
    /// waiting and no connection requested for this long is retired by the sweeper: it
    /// no longer counts against [`max_users`](Self::max_users), leaves `stats()` and the
    /// Prometheus text, and its memory is reused for the next new user. A later
    /// acquire or add for it starts afresh (with a factory, the acquire opens its
    /// connection as for any new user; without one it is `UnknownUser` until a
    /// connection is added). Default [`DEFAULT_RETIRE_USERS_AFTER`] (60 s);
    /// `Duration::ZERO` retires at the first pass that sees the user vacant again;
    /// `Duration::MAX` never retires; other values must be under 24 days. Runs in
    /// sweeper passes (the sweeper runs whenever leak detection, health checks,
    /// eviction or a factory is on); and at `max_users`, a new user first retires the
    /// users vacant at that moment, without waiting for this delay, so names that came
    /// and went never lock new ones out.
    pub fn retire_users_after(mut self, after: Duration) -> Self {
        self.user_limits.retire_after = (after != Duration::MAX).then_some(after);
        self
    }

    /// Eventual fairness on the waiting path (as Go's `sync.Mutex` starvation mode and
    /// WebKit's ParkingLot): while no waiter has waited longer than `bound`, a released
    /// connection goes idle and whoever asks first takes it, the releasing thread
    /// included, so a busy pool does not pay a thread wake-up per borrow. A waiter past
    /// `bound` turns hand-off strictly FIFO until it is served: each release then goes
    /// to the oldest waiter, and new callers queue behind. Default 1 ms
    /// ([`DEFAULT_FAIRNESS_BOUND`]); `Duration::ZERO` is strict FIFO at all times (every
    /// release hands its connection to the oldest waiter). At most
    /// [`MAX_FAIRNESS_BOUND`]; [`build`](Self::build) refuses more with
    /// [`Error::InvalidConfig`] naming `fairness_bound`.
    pub fn fairness_bound(mut self, bound: Duration) -> Self {
        self.fairness_bound = bound;
        self
    }

    /// Resets each connection its holder gives back, before the next borrower can have
    /// it: `Ok` keeps it, `Err(reason)` (or a panic, caught) closes it instead, counted
    /// as `evictions.reset_failed` (Prometheus `cause="reset_failed"`), and a caller
    /// waiting for that user is served by the factory if there is one.
    ///
    /// Runs on the releasing thread (the guard's drop, [`PooledConnection::release`](crate::PooledConnection::release),
    /// a raw-handle release) while the releaser still owns the connection, so nobody
    /// else can touch it meanwhile; it delays that release by its own duration. Not run
    /// for a [`discard`](crate::PooledConnection::discard) or
    /// [`detach`](crate::PooledConnection::detach), nor for a borrow that closes on
    /// return anyway (reclaimed, removed, aged, failed over, the pool closed), nor for
    /// a grant a waiter
    /// gave back unused. It may use the pool (stats, acquire of another user), but
    /// should not wait for this pool's connections: its own is not idle yet.
    pub fn reset(
        mut self,
        reset: impl Fn(&mut C) -> std::result::Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        self.hooks.reset = Some(Box::new(reset));
        self
    }

    /// Opens connections: when a caller waits and the user is under `max_per_user`
    /// (and the pool under `max_connections`), to keep `min_idle`, and to replace
    /// evicted ones. Unknown users become known through it. The connections are
    /// described by the user and the tag `factory`; see
    /// [`connection_factory_with_metadata`](Self::connection_factory_with_metadata) for
    /// what else this factory shares with it (threads, backoff, errors).
    pub fn connection_factory(
        self,
        factory: impl Fn(&str) -> std::result::Result<C, String> + Send + Sync + 'static,
    ) -> Self {
        self.connection_factory_with_metadata(crate::factory::with_default_metadata(factory))
    }

    /// Opens connections as [`connection_factory`](Self::connection_factory) does, each
    /// with its [`ConnectionMetadata`] (database, protocol, address, tags), which leak
    /// reports and [`borrows`](crate::EnhancedConnectionPool::borrows) then show. An
    /// empty `metadata.user` is filled in; another user's name is a failure.
    ///
    /// Threading: runs on the pool's connector threads (`heliosdb-connect-<pool id>-<n>`,
    /// started on demand, stopped and joined by `close`/drop), never on the sweeper or
    /// an acquiring thread; up to [`max_concurrent_connects`](Self::max_concurrent_connects)
    /// calls at once, so a slow connect delays neither another user's connect nor any
    /// leak report, health check or eviction. One user never holds every connect (at
    /// most the bound less one, when the bound is above 1).
    ///
    /// Errors: an `Err` (or a panic, caught) is counted (`factory_errors`, per user and
    /// in all), kept as the user's `last_factory_error`, and backs that user off alone
    /// (100 ms, doubling to 10 s; shown in [`UserStats::factory_backoff`](crate::UserStats)
    /// and in an acquire's [`Error::Timeout`]). A user is connected for only while
    /// callers wait for it, it is below `min_idle`, or a replacement or request is
    /// outstanding (dropped after three failures in a row), so a failing user nobody
    /// waits for is not retried forever.
    ///
    /// A connect that finishes after `close` has its connection dropped (closed), never
    /// added. Calling back into the pool from the factory is allowed (`close` too; the
    /// thread is then joined by a later close or drop on another thread).
    pub fn connection_factory_with_metadata(
        mut self,
        factory: impl Fn(&str) -> std::result::Result<(C, ConnectionMetadata), String>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        self.hooks.factory = Some(Box::new(factory));
        self
    }

    /// Most factory connects running at once, all users together (and most connector
    /// threads). Default [`DEFAULT_MAX_CONCURRENT_CONNECTS`](crate::DEFAULT_MAX_CONCURRENT_CONNECTS)
    /// (4); at least 1. With 1, a slow connect delays the next one (of any user).
    pub fn max_concurrent_connects(mut self, bound: usize) -> Self {
        self.max_concurrent_connects = bound;
        self
    }

    /// Told of every connection the pool closes by itself for its idle time, its age or
    /// its health ([`Evicted`]: connection id, user, cause, metadata), after the
    /// connection is closed and its place freed, so the service can add a fresh one
    /// (`add_connection` works from inside the hook).
    ///
    /// Setting it also lets the pool shrink by itself without a factory. **The rule:**
    /// idle timeout and max age close a connection only when the pool can refill it (a
    /// [`connection_factory`](Self::connection_factory)) or tell someone who can (this
    /// hook). Without either, nothing could replace it, so an idle connection past
    /// `idle_timeout_ms` stays, one past `max_connection_age_ms` stays too and is logged
    /// once (warn), and a borrowed one past its age is not closed on return: a pool fed
    /// only by `add_connection` keeps serving with the default config. Health evictions
    /// happen either way (a dead connection serves no one).
    ///
    /// Threading: runs on the sweeper thread (or the caller of `sweep_now`; there with
    /// the sweeper's lock held, which is why `sweep_now` from it is refused), on the
    /// thread that returns a borrowed connection past its age, or on an acquiring thread
    /// whose connection failed validation on borrow; concurrently with the pool's users,
    /// never with a pool lock a user call needs (it may call `add_connection`), and not
    /// at all once the pool is closed. A panic is caught and logged. It should be quick.
    pub fn on_evict(mut self, callback: impl Fn(&Evicted<'_>) + Send + Sync + 'static) -> Self {
        self.hooks.on_evict = Some(Box::new(callback));
        self
    }

    /// Called once per leaked borrow at each level (Alert, then Critical).
    pub fn on_leak(mut self, callback: impl Fn(&LeakReport) + Send + Sync + 'static) -> Self {
        self.hooks.on_leak = Some(Box::new(callback));
        self
    }

    /// Called when a critically leaked borrow is reclaimed (`auto_cleanup_enabled`):
    /// the holder's handle is stale from now on, and the connection will be closed when
    /// the holder returns it; abort its work safely here.
    pub fn on_reclaim(mut self, callback: impl Fn(&LeakReport) + Send + Sync + 'static) -> Self {
        self.hooks.on_reclaim = Some(Box::new(callback));
        self
    }

    /// Validates everything and builds the pool, starting its sweeper thread when a
    /// background feature is enabled.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] naming the offending setting.
    pub fn build(self) -> Result<EnhancedConnectionPool<C>> {
        self.config.validate()?;
        let alert = Duration::from_millis(self.config.leak_detection_threshold_ms);
        // Checked even with leak detection off: a config switched on later must not
        // turn contradictory. The default (10x) cannot contradict a valid config.
        if let Some(critical) = self.critical_threshold {
            self.config
                .validate_leak_critical("leak_critical_threshold", critical)?;
        }
        let critical = self.critical_threshold.unwrap_or(alert * 10);
        if self.min_idle > self.config.max_per_user {
            return Err(Error::invalid_config(
                "min_idle",
                format!(
                    "{} exceeds max_per_user ({})",
                    self.min_idle, self.config.max_per_user
                ),
            ));
        }
        if !(0.0..=0.5).contains(&self.age_jitter) {
            return Err(Error::invalid_config(
                "age_jitter",
                "must be within 0.0..=0.5",
            ));
        }
        crate::factory::check_connect_bound(self.max_concurrent_connects)?;
        if self.sweep_interval == Some(Duration::ZERO) {
            return Err(Error::invalid_config("sweep_interval", "must be non-zero"));
        }
        self.user_limits.validate()?;
        if self.fairness_bound > MAX_FAIRNESS_BOUND {
            return Err(Error::invalid_config(
                "fairness_bound",
                format!(
                    "{:?} exceeds the maximum of {MAX_FAIRNESS_BOUND:?}",
                    self.fairness_bound
                ),
            ));
        }
        self.health_policy.validate()?;
        let validating = self.hooks.health_check.is_some() && self.config.health_check_enabled;
        let tuning = Tuning {
            leak_thresholds: LeakThresholds { alert, critical },
            min_idle: self.min_idle,
            age_jitter: self.age_jitter,
            sweep_interval: self.sweep_interval,
            health_policy: self.health_policy,
            name: self.name,
            validate_after_ms: i32::try_from(self.validate_after.as_millis())
                .ok()
                .filter(|_| validating),
            user_limits: self.user_limits,
            max_concurrent_connects: self.max_concurrent_connects,
            fairness_bound: self.fairness_bound,
        };
        Ok(EnhancedConnectionPool::from_parts(
            self.config,
            tuning,
            self.hooks,
        ))
    }
}

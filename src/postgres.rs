//! The PostgreSQL adapter (cargo feature `postgres`): pooled [`postgres::Client`]s
//! through the builder's hooks, as deadpool-postgres and bb8-postgres do for their
//! pools.
//!
//! [`PgConnector`] turns a [`postgres::Config`] (and a TLS choice, [`NoTls`] by default)
//! into the three hooks a database pool needs, installed by [`PgConnector::install`]:
//!
//! - **a factory per user**: the pool's user name is the PostgreSQL role to connect as
//!   (the config's `user` is replaced by it), unless
//!   [`configure_user`](PgConnector::configure_user) maps users to configs another way;
//! - **a health check** ([`health_check`]): a closed client fails at once, an open one
//!   must answer a trivial query within [`check_timeout`](PgConnector::check_timeout).
//!   The sweeper runs it on idle connections, and the borrower runs it first on a
//!   connection idle longer than the builder's `validate_after` (500 ms by default), so
//!   a backend killed while its connection sat idle is never handed out;
//! - **a reset** ([`reset`]) when a connection comes back: `DISCARD ALL` (session
//!   settings, roles, temporary tables, prepared statements, cursors, advisory locks,
//!   `LISTEN`s), preceded by `ROLLBACK` when the borrower left a transaction open or
//!   aborted. A connection whose reset fails is closed instead of reused. Schemas with
//!   user-defined types want [`ResetMode::KeepDriverStatements`] (see
//!   [`ResetMode::DiscardAll`] for why).
//!
//! Connections the server dropped while borrowed (a killed backend, a restart, a lost
//! network) are the caller's to report: [`is_connection_lost`] tells such an error
//! apart from an ordinary SQL error, and [`release_or_discard`] gives the connection back
//! or discards it accordingly, so a dead connection is never handed to the next caller.
//! (If the caller just drops the guard, the reset finds the client closed and the pool
//! closes it all the same, counted as `reset_failed` rather than `discarded`.)
//!
//! The core of the pool knows nothing of this module: it only calls the hooks.
//!
//! # Example
//!
//! ```no_run
//! use heliosdb_pool::postgres::{PgConnection, PgConnector, release_or_discard};
//! use heliosdb_pool::{EnhancedConnectionPool, EnhancedPoolConfig};
//!
//! let mut config = postgres::Config::new();
//! config.host("127.0.0.1").port(5432).dbname("test");
//! let pool = PgConnector::new(config)
//!     .install(EnhancedConnectionPool::<PgConnection>::builder(EnhancedPoolConfig::default()))
//!     .build()?;
//!
//! // Connects as the role "alice" (the factory opens the connection on first use).
//! let mut conn = pool.blocking_acquire("alice")?;
//! let result = conn.client().query_one("SELECT current_user", &[]);
//! // A lost connection is discarded; anything else goes back, reset, for the next borrower.
//! release_or_discard(conn, result.as_ref().err())?;
//! let who: String = result.expect("a query error").get(0);
//! assert_eq!(who, "alice");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::error::Error as _;
use std::fmt;
use std::io;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use ::postgres::error::{DbError, Severity, SqlState};
use ::postgres::tls::{MakeTlsConnect, TlsConnect};
use ::postgres::{Client, Config, NoTls, Socket};

use crate::builder::PoolBuilder;
use crate::guard::PooledConnection;

/// The default of [`PgConnector::check_timeout`].
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// A pooled PostgreSQL connection: a [`postgres::Client`] the pool can health-check
/// through a shared reference.
///
/// The builder's health check sees `&C`, but every query on a `Client` needs
/// `&mut Client`; the client therefore sits in a [`Mutex`]. The borrower reaches it
/// through [`client`](Self::client), which needs `&mut self` and so takes no lock (the
/// guard's `DerefMut` already proves exclusive access); only the health check locks,
/// on a connection nobody else can touch at that moment, so the lock is never
/// contended.
///
/// Ownership: owns the client; dropping it closes the connection. Threading: `Send`
/// and `Sync`, like any pooled connection.
pub struct PgConnection {
    client: Mutex<Client>,
}

impl PgConnection {
    /// Wraps an open client (one made outside the [`PgConnector`], say, for
    /// `add_connection`).
    pub fn new(client: Client) -> Self {
        PgConnection {
            client: Mutex::new(client),
        }
    }

    /// The client, for queries. No lock is taken: `&mut self` is exclusive already.
    pub fn client(&mut self) -> &mut Client {
        // A poisoned lock means a health check panicked mid-query; the client itself
        // is still a valid value (and such a connection was counted as failing).
        self.client.get_mut().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the client out (the connection stays open).
    pub fn into_client(self) -> Client {
        self.client
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the client knows its connection to be closed (the server hung up, or a
    /// fatal error ended the session). `false` does not prove it open: only a round
    /// trip does ([`health_check`]).
    pub fn is_closed(&mut self) -> bool {
        self.client().is_closed()
    }

    /// Runs `f` on the client from a shared reference: the health check's path (it
    /// locks; see the type's docs).
    fn with_shared<R>(&self, f: impl FnOnce(&mut Client) -> R) -> R {
        f(&mut self.client.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl From<Client> for PgConnection {
    fn from(client: Client) -> Self {
        PgConnection::new(client)
    }
}

impl fmt::Debug for PgConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `try_lock`: formatting must never wait (a health check may hold the lock).
        let closed = self.client.try_lock().ok().map(|c| c.is_closed());
        f.debug_struct("PgConnection")
            .field("closed", &closed)
            .finish_non_exhaustive()
    }
}

/// How [`PgConnector`] makes the config of one user's connections.
type UserConfigFn = Box<dyn Fn(&str, &mut Config) -> Result<(), String> + Send + Sync>;

/// Opens PostgreSQL connections for the pool's users and installs the adapter's hooks
/// into a [`PoolBuilder`]: see the [module docs](self).
///
/// `T` is the TLS connector (any [`MakeTlsConnect`], e.g. from `postgres-native-tls` or
/// `postgres-openssl`); [`PgConnector::new`] uses [`NoTls`].
///
/// Threading: the factory runs on the pool's sweeper thread and blocks it for the
/// length of a connect, so give the config a `connect_timeout`. Each connection owns
/// its own single-threaded runtime (as every sync `postgres::Client` does), so borrow
/// with `blocking_acquire` or `try_acquire` from plain threads: inside a tokio worker
/// (including `acquire().await`, where validation on borrow runs the health check
/// inside the poll) the client's runtime would refuse to block, the check would
/// panic and every connection it checks would be evicted as failing.
pub struct PgConnector<T = NoTls> {
    config: Config,
    tls: T,
    user_config: Option<UserConfigFn>,
    check_timeout: Duration,
    reset_mode: ResetMode,
}

impl PgConnector<NoTls> {
    /// A connector without TLS. `config` names the server and database; its `user`,
    /// if any, is replaced by the pool's user name on each connect (see
    /// [`configure_user`](Self::configure_user) to change that).
    pub fn new(config: Config) -> Self {
        PgConnector::with_tls(config, NoTls)
    }
}

impl<T> PgConnector<T>
where
    T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
    T::TlsConnect: Send,
    T::Stream: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    /// A connector with the TLS connector `tls` (cloned for each connect).
    pub fn with_tls(config: Config, tls: T) -> Self {
        PgConnector {
            config,
            tls,
            user_config: None,
            check_timeout: DEFAULT_CHECK_TIMEOUT,
            reset_mode: ResetMode::default(),
        }
    }

    /// Replaces the default mapping (pool user name = PostgreSQL role): `map` is given
    /// the pool's user name and a copy of the base config, unchanged, and sets what
    /// that user's connections need (role, password, database, `options`...). An
    /// `Err` fails that connect (the pool counts it and retries with backoff). Runs on
    /// the sweeper thread; it should not block.
    pub fn configure_user(
        mut self,
        map: impl Fn(&str, &mut Config) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        self.user_config = Some(Box::new(map));
        self
    }

    /// How long the health check waits for the server's answer before declaring the
    /// connection dead. Default [`DEFAULT_CHECK_TIMEOUT`] (5 s).
    pub fn check_timeout(mut self, timeout: Duration) -> Self {
        self.check_timeout = timeout;
        self
    }

    /// What the reset clears between borrowers. Default [`ResetMode::DiscardAll`];
    /// [`ResetMode::KeepDriverStatements`] for schemas with user-defined types.
    pub fn reset_mode(mut self, mode: ResetMode) -> Self {
        self.reset_mode = mode;
        self
    }

    /// Opens a connection for `user`.
    ///
    /// # Errors
    ///
    /// The mapping's error, or the server's (unknown role, refused, timed out), as a
    /// message naming the user; the password is never in it.
    pub fn connect(&self, user: &str) -> Result<PgConnection, String> {
        let mut config = self.config.clone();
        match &self.user_config {
            Some(map) => map(user, &mut config)?,
            None => {
                config.user(user);
            }
        }
        config
            .connect(self.tls.clone())
            .map(PgConnection::new)
            .map_err(|e| format!("connecting as {user:?}: {e}"))
    }

    /// Installs the adapter into `builder`: its factory ([`connect`](Self::connect)),
    /// [`health_check`] (bounded by [`check_timeout`](Self::check_timeout)) and
    /// [`reset`] (in [`reset_mode`](Self::reset_mode)). Other settings (`validate_after`, `min_idle`, `on_evict`...) are the
    /// builder's own and stay as they are; a hook set on it earlier is replaced.
    pub fn install(self, builder: PoolBuilder<PgConnection>) -> PoolBuilder<PgConnection> {
        let (timeout, mode) = (self.check_timeout, self.reset_mode);
        builder
            .health_check(move |conn: &PgConnection| health_check(conn, timeout))
            .reset(move |conn: &mut PgConnection| reset(conn, mode))
            .connection_factory(move |user: &str| self.connect(user))
    }
}

impl<T> fmt::Debug for PgConnector<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `Config`'s own Debug redacts the password.
        f.debug_struct("PgConnector")
            .field("config", &self.config)
            .field("configure_user", &self.user_config.is_some())
            .field("check_timeout", &self.check_timeout)
            .field("reset_mode", &self.reset_mode)
            .finish_non_exhaustive()
    }
}

/// The adapter's health check: `Err` if the client is closed, or if the server does not
/// answer a trivial query (an empty one, as [`Client::is_valid`]: one round trip,
/// nothing parsed) within `timeout`.
///
/// Runs where the pool runs health checks: on the sweeper thread for idle connections,
/// and on the acquiring thread for validation on borrow; it blocks that thread for one
/// round trip.
pub fn health_check(conn: &PgConnection, timeout: Duration) -> Result<(), String> {
    conn.with_shared(|client| {
        if client.is_closed() {
            return Err("the connection is closed".to_string());
        }
        client
            .is_valid(timeout)
            .map_err(|e| format!("health check: {e}"))
    })
}

/// What the adapter's [`reset`] clears between borrowers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResetMode {
    /// `DISCARD ALL`: every session setting, role change, temporary table, cursor,
    /// advisory lock, `LISTEN` and prepared statement. The default.
    ///
    /// It also deallocates the statements the driver prepared itself to look up
    /// user-defined types (enums, domains, composites, extension types) and keeps for
    /// the client's lifetime: on a connection that was reset, the first query needing
    /// a type the client has not seen yet fails with `prepared statement "sN" does not
    /// exist` (SQLSTATE 26000), on every later borrow too. Use
    /// [`KeepDriverStatements`](Self::KeepDriverStatements) with such schemas.
    #[default]
    DiscardAll,
    /// `DISCARD ALL` but for the driver's own prepared statements: `CLOSE ALL; SET
    /// SESSION AUTHORIZATION DEFAULT; RESET ALL; UNLISTEN *; SELECT
    /// pg_advisory_unlock_all(); DISCARD PLANS; DISCARD TEMP; DISCARD SEQUENCES`, and
    /// `DEALLOCATE` of each statement prepared by SQL (`PREPARE`, the only ones a
    /// borrower can leave behind: the driver closes its own when their `Statement` is
    /// dropped). One round trip, as `DISCARD ALL`; the server does more work (a
    /// PL/pgSQL block and eight statements).
    KeepDriverStatements,
}

impl ResetMode {
    /// The reset as one simple-protocol query. Each fails inside a transaction block
    /// (SQLSTATE 25001) or an aborted one (25P02), which is how [`reset`] knows to roll
    /// back first: `DISCARD ALL` by itself; the other because its first statement
    /// raises 25001 when `now()` (the transaction's start) differs from
    /// `statement_timestamp()` (this query's start), that is, when a transaction began
    /// before this query.
    fn sql(self) -> &'static str {
        match self {
            ResetMode::DiscardAll => "DISCARD ALL",
            ResetMode::KeepDriverStatements => {
                "DO $heliosdb_reset$ DECLARE s record; BEGIN
                   IF now() <> statement_timestamp() THEN
                     RAISE EXCEPTION 'a transaction is open' USING ERRCODE = 'active_sql_transaction';
                   END IF;
                   FOR s IN SELECT name FROM pg_prepared_statements WHERE from_sql LOOP
                     EXECUTE format('DEALLOCATE %I', s.name);
                   END LOOP;
                 END $heliosdb_reset$;
                 CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; UNLISTEN *;
                 SELECT pg_advisory_unlock_all(); DISCARD PLANS; DISCARD TEMP; DISCARD SEQUENCES"
            }
        }
    }
}

/// The adapter's reset: clears the session as `mode` says (`DISCARD ALL` by default),
/// after `ROLLBACK` when the borrower left a transaction open or aborted.
///
/// The driver does not expose the server's transaction status, so the reset lets the
/// server tell: it sends the reset alone (one round trip, the common case), which the
/// server refuses inside a transaction block (SQLSTATE 25001) or an aborted one
/// (25P02); on those two it sends `ROLLBACK` and the reset again (three round trips,
/// only after a borrower left a transaction behind).
///
/// Runs on the releasing thread (see the builder's `reset`). `Err` (a closed client,
/// a failing server) makes the pool close the connection.
pub fn reset(conn: &mut PgConnection, mode: ResetMode) -> Result<(), String> {
    let client = conn.client();
    if client.is_closed() {
        return Err("the connection is closed".to_string());
    }
    let sql = mode.sql();
    match client.batch_execute(sql) {
        Err(e) if e.code().is_some_and(is_in_transaction_block) => client
            .batch_execute("ROLLBACK")
            .and_then(|()| client.batch_execute(sql)),
        other => other,
    }
    .map_err(|e| format!("reset: {e}"))
}

/// The server's refusals of a reset that a `ROLLBACK` cures.
fn is_in_transaction_block(code: &SqlState) -> bool {
    *code == SqlState::ACTIVE_SQL_TRANSACTION || *code == SqlState::IN_FAILED_SQL_TRANSACTION
}

/// Whether `error` means the connection itself is gone, so the connection must be
/// discarded rather than returned: the client was closed, the socket failed (an I/O
/// error), the server reported a connection exception (SQLSTATE class `08`), or it
/// ended the session (severity `FATAL` or `PANIC`, e.g. `pg_terminate_backend`'s
/// 57P01 `admin_shutdown`).
///
/// `false` for ordinary SQL errors (a syntax error, a constraint violation, a
/// cancelled statement): the session survives those, and the reset makes it clean for
/// the next borrower.
pub fn is_connection_lost(error: &::postgres::Error) -> bool {
    if error.is_closed() {
        return true;
    }
    if let Some(db) = error.as_db_error() {
        return db_error_ends_session(db);
    }
    // The driver keeps the socket's error as the source of its own.
    let mut source = error.source();
    while let Some(cause) = source {
        if cause.is::<io::Error>() {
            return true;
        }
        source = cause.source();
    }
    false
}

/// A server error that leaves no session behind.
fn db_error_ends_session(db: &DbError) -> bool {
    db.code().code().starts_with("08")
        || matches!(
            db.parsed_severity(),
            Some(Severity::Fatal | Severity::Panic)
        )
}

/// Ends a borrow according to how it went: discards the connection if the client is
/// closed or `error` [means the connection is lost](is_connection_lost), and releases
/// it (the reset runs) otherwise. Pass the error of the borrow's last failing query, or
/// `None`.
///
/// # Errors
///
/// As [`PooledConnection::release`] or [`PooledConnection::discard`]:
/// [`Error::Reclaimed`](crate::Error::Reclaimed) if the sweeper reclaimed the borrow as
/// a critical leak.
pub fn release_or_discard(
    mut conn: PooledConnection<'_, PgConnection>,
    error: Option<&::postgres::Error>,
) -> crate::Result<()> {
    if conn.is_closed() || error.is_some_and(is_connection_lost) {
        conn.discard()
    } else {
        conn.release()
    }
}

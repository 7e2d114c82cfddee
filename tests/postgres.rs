//! The PostgreSQL adapter (`--features postgres`) against a real server: the local
//! PostgreSQL at 127.0.0.1:5432 (trust auth, database `test`, superuser `postgres`), or
//! the libpq-style connection string in `HELIOSDB_PG`. The tests create the roles they
//! need, idempotently. Where no server answers, every test prints a loud SKIPPED banner
//! and passes: the rest of the suite needs no database.
//!
//! Run: `cargo test --features postgres --test postgres -- --nocapture` (the killed-backend
//! test prints its measurements).
#![cfg(feature = "postgres")]

use std::collections::HashSet;
use std::io::Write as _;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use heliosdb_pool::postgres::{
    PgConnection, PgConnector, ResetMode, health_check, is_connection_lost, release_or_discard,
};
use heliosdb_pool::{ConnectionId, EnhancedConnectionPool, EnhancedPoolConfig, Error};
use postgres::{Client, Config, NoTls, SimpleQueryMessage};

#[path = "support/common.rs"]
mod common;
use common::{quiet, wait_until};

/// Roles the tests connect as; each test has its own, so that one test's killed
/// backends are never another's.
const ISOLATION_ROLES: [&str; 2] = ["heliosdb_pg_alice", "heliosdb_pg_bob"];
const KILL_ROLES: [&str; 2] = ["heliosdb_pg_kill_a", "heliosdb_pg_kill_b"];
const IDLE_ROLE: &str = "heliosdb_pg_idle";
const RESET_ROLE: &str = "heliosdb_pg_reset";
/// Held by the tests that use [`RESET_ROLE`] and its probe table.
static RESET_ROLE_IN_USE: Mutex<()> = Mutex::new(());
const ERRORS_ROLE: &str = "heliosdb_pg_errors";
/// A role the reset role may `SET ROLE` to: a borrower's `SET ROLE` must not reach the
/// next borrower.
const OTHER_ROLE: &str = "heliosdb_pg_other";
/// A table the reset test writes to in a transaction it leaves open.
const PROBE_TABLE: &str = "heliosdb_pg_reset_probe";

/// The server's base config (without a user), or `None`, after a loud banner, when no
/// server answers. Decided once per test binary; the roles and the probe table are
/// created then.
fn server() -> Option<Config> {
    static SERVER: OnceLock<Option<Config>> = OnceLock::new();
    SERVER.get_or_init(find_server).clone()
}

fn find_server() -> Option<Config> {
    let conninfo = std::env::var("HELIOSDB_PG")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 dbname=test user=postgres".into());
    let mut config = Config::from_str(&conninfo).expect("HELIOSDB_PG is a connection string");
    config.connect_timeout(Duration::from_secs(3));
    let mut admin = match config.connect(NoTls) {
        Ok(admin) => admin,
        Err(e) => {
            // Straight to the process's stderr: `eprintln!` in a passing test would be
            // captured by the test harness and never seen.
            let _ = writeln!(
                std::io::stderr(),
                "\n************************************************************************\n\
                 SKIPPED: the PostgreSQL adapter tests: no PostgreSQL answered ({conninfo}):\n\
                 {e}\n\
                 They need a server with trust auth for a superuser and a database named\n\
                 test (Debian: apt-get install postgresql, then start the cluster), or a\n\
                 connection string in HELIOSDB_PG.\n\
                 ************************************************************************"
            );
            return None;
        }
    };
    let mut roles: Vec<&str> = vec![IDLE_ROLE, RESET_ROLE, ERRORS_ROLE];
    roles.extend(ISOLATION_ROLES);
    roles.extend(KILL_ROLES);
    for role in roles {
        create_role(&mut admin, role, "LOGIN");
    }
    create_role(&mut admin, OTHER_ROLE, "NOLOGIN");
    admin
        .batch_execute(&format!(
            "GRANT {OTHER_ROLE} TO {RESET_ROLE};
             CREATE TABLE IF NOT EXISTS {PROBE_TABLE} (note text);
             GRANT SELECT, INSERT ON {PROBE_TABLE} TO {RESET_ROLE};"
        ))
        .expect("setting up the reset test's grants and table");
    Some(config)
}

/// Creates `role` unless it exists (a concurrent creator is fine too).
fn create_role(admin: &mut Client, role: &str, options: &str) {
    admin
        .batch_execute(&format!(
            "DO $$ BEGIN
               IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN
                 CREATE ROLE {role} {options};
               END IF;
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
             END $$;"
        ))
        .unwrap_or_else(|e| panic!("creating role {role}: {e}"));
}

/// The superuser's own connection, for killing backends and checking results.
fn admin(base: &Config) -> Client {
    base.connect(NoTls).expect("the admin connection")
}

/// A pool of `per_user` connections per role through the adapter, with validation on
/// borrow at its default window (500 ms) and sweeper health checks rare enough that
/// they do not take part.
fn pool(base: &Config, per_user: usize) -> EnhancedConnectionPool<PgConnection> {
    pool_resetting(base, per_user, ResetMode::default())
}

/// [`pool`] with the reset in `mode`.
fn pool_resetting(
    base: &Config,
    per_user: usize,
    mode: ResetMode,
) -> EnhancedConnectionPool<PgConnection> {
    let config = EnhancedPoolConfig {
        acquire_timeout_ms: 10_000,
        health_check_enabled: true,
        health_check_interval_ms: 600_000,
        ..quiet(4 * per_user, per_user)
    };
    PgConnector::new(base.clone())
        .reset_mode(mode)
        .install(EnhancedConnectionPool::builder(config))
        .build()
        .expect("a valid pool")
}

/// Terminates every backend of `roles`; how many were terminated.
fn kill_backends(admin: &mut Client, roles: &[&str]) -> u64 {
    let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
    let row = admin
        .query_one(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))
               FROM pg_stat_activity WHERE usename = ANY($1)",
            &[&roles],
        )
        .expect("pg_terminate_backend");
    row.get::<_, i64>(0) as u64
}

/// How many backends of `roles` the server has.
fn backends(admin: &mut Client, roles: &[&str]) -> u64 {
    let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
    let row = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = ANY($1)",
            &[&roles],
        )
        .expect("counting backends");
    row.get::<_, i64>(0) as u64
}

/// Connections that left the pool as dead or broken, by any path.
fn dead_evictions(pool: &EnhancedConnectionPool<PgConnection>) -> u64 {
    let e = pool.stats().evictions;
    e.discarded + e.health + e.reset_failed
}

#[test]
fn two_roles_under_load_each_query_runs_as_its_own_role() {
    let Some(base) = server() else { return };
    const THREADS_PER_ROLE: usize = 4;
    const QUERIES: usize = 150;
    let pool = pool(&base, 2);
    let queries = AtomicU64::new(0);
    std::thread::scope(|s| {
        for role in ISOLATION_ROLES {
            for _ in 0..THREADS_PER_ROLE {
                let (pool, queries) = (&pool, &queries);
                s.spawn(move || {
                    for i in 0..QUERIES as i32 {
                        let mut conn = pool.blocking_acquire(role).expect("acquire");
                        let row = conn
                            .client()
                            .query_one(
                                "SELECT current_user::text, session_user::text, $1::int",
                                &[&i],
                            )
                            .expect("query");
                        let (current, session): (String, String) = (row.get(0), row.get(1));
                        assert_eq!((current.as_str(), session.as_str()), (role, role));
                        assert_eq!(row.get::<_, i32>(2), i);
                        queries.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        }
    });
    let stats = pool.stats();
    println!(
        "isolation: {} queries by 2 roles x {THREADS_PER_ROLE} threads over {} connections, \
         current_user always right",
        queries.load(Ordering::Relaxed),
        stats.total_connections
    );
    assert_eq!(
        queries.load(Ordering::Relaxed),
        (2 * THREADS_PER_ROLE * QUERIES) as u64
    );
    assert_eq!(
        stats.total_connections, 4,
        "two per role, made by the factory"
    );
    assert_eq!(stats.evictions.reset_failed, 0, "{:?}", stats.evictions);
}

/// What the workers of the killed-backend test saw.
#[derive(Default)]
struct Observed {
    queries: u64,
    failed: u64,
    /// Connections a query failed on; none may be handed out again.
    dead: HashSet<ConnectionId>,
    /// Dead connections handed out again (must stay empty).
    handed_out_again: Vec<ConnectionId>,
    /// Errors that were not a lost connection (must stay empty).
    other_errors: Vec<String>,
    last_failure: Option<Instant>,
}

#[test]
fn killed_backends_under_load_cost_at_most_one_query_each_and_the_pool_heals() {
    let Some(base) = server() else { return };
    const PER_USER: usize = 3;
    const THREADS_PER_ROLE: usize = 4;
    const ROUNDS: usize = 5;
    let pool = pool(&base, PER_USER);
    let mut admin = admin(&base);
    let observed = Mutex::new(Observed::default());
    let stop = AtomicBool::new(false);
    let expected_backends = (2 * PER_USER) as u64;
    let mut report = Vec::new();

    std::thread::scope(|s| {
        for role in KILL_ROLES {
            for _ in 0..THREADS_PER_ROLE {
                let (pool, observed, stop) = (&pool, &observed, &stop);
                s.spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let mut conn = pool.blocking_acquire(role).expect("acquire");
                        let id = conn.connection_id();
                        if observed.lock().unwrap().dead.contains(&id) {
                            observed.lock().unwrap().handed_out_again.push(id);
                        }
                        let result = conn.client().query_one("SELECT current_user::text", &[]);
                        {
                            let mut o = observed.lock().unwrap();
                            o.queries += 1;
                            match &result {
                                Ok(row) => assert_eq!(row.get::<_, String>(0), role),
                                Err(e) => {
                                    o.failed += 1;
                                    o.dead.insert(id);
                                    o.last_failure = Some(Instant::now());
                                    if !is_connection_lost(e) {
                                        o.other_errors.push(format!("{e:?}"));
                                    }
                                }
                            }
                        }
                        release_or_discard(conn, result.as_ref().err()).expect("give back");
                    }
                });
            }
        }

        // Under load, all connections open; then kill every backend, ROUNDS times.
        assert!(
            wait_until(Duration::from_secs(20), || {
                pool.stats().total_connections == 2 * PER_USER
                    && backends(&mut admin, &KILL_ROLES) == expected_backends
            }),
            "the pool fills: {:?}",
            pool.stats()
        );
        for _ in 0..ROUNDS {
            std::thread::sleep(Duration::from_millis(300));
            assert!(
                wait_until(Duration::from_secs(10), || backends(
                    &mut admin,
                    &KILL_ROLES
                ) == expected_backends),
                "the last round's backends are gone"
            );
            let (failed_before, evicted_before) =
                (observed.lock().unwrap().failed, dead_evictions(&pool));
            let killed_at = Instant::now();
            let killed = kill_backends(&mut admin, &KILL_ROLES);
            assert_eq!(
                killed, expected_backends,
                "every backend of the pool was killed"
            );
            // Whole: every killed connection has left the pool, and the factory has
            // refilled it, each new connection with a live backend.
            let whole = wait_until(Duration::from_secs(20), || {
                dead_evictions(&pool) - evicted_before >= killed
                    && pool.stats().total_connections == 2 * PER_USER
            });
            let whole_after = killed_at.elapsed();
            assert!(whole, "the pool heals: {:?}", pool.stats());
            let o = observed.lock().unwrap();
            let last_failure = o
                .last_failure
                .map(|t| t.saturating_duration_since(killed_at));
            report.push((killed, o.failed - failed_before, whole_after, last_failure));
        }
        stop.store(true, Ordering::Relaxed);
    });

    let o = observed.into_inner().unwrap();
    let stats = pool.stats();
    println!(
        "killed backends under load: {ROUNDS} rounds, 2 roles x {THREADS_PER_ROLE} threads \
         over {PER_USER} connections per role, {} queries in all",
        o.queries
    );
    for (round, (killed, failed, whole, last_failure)) in report.iter().enumerate() {
        println!(
            "  round {}: {killed} backends killed, {failed} queries failed ({:.2} per killed \
             backend), last failure {:.1} ms and pool whole {:.1} ms after the kill",
            round + 1,
            *failed as f64 / *killed as f64,
            last_failure.unwrap_or_default().as_secs_f64() * 1e3,
            whole.as_secs_f64() * 1e3,
        );
    }
    println!(
        "  evictions: {:?}; factory: {} connects, {} failed",
        stats.evictions, stats.factory_creates, stats.factory_errors
    );
    assert!(
        o.handed_out_again.is_empty(),
        "dead connections handed out again: {:?}",
        o.handed_out_again
    );
    assert!(
        o.other_errors.is_empty(),
        "errors other than a lost connection: {:?}",
        o.other_errors
    );
    for (killed, failed, _, _) in &report {
        assert!(
            failed <= killed,
            "at most one failed query per killed backend"
        );
    }
    // Validation on borrow and the reset's closed-client check catch what the queries
    // did not: nothing dead stays in the pool.
    assert_eq!(backends(&mut admin, &KILL_ROLES), expected_backends);
}

#[test]
fn backends_killed_while_idle_are_caught_by_validation_on_borrow() {
    let Some(base) = server() else { return };
    const PER_USER: usize = 3;
    let pool = pool(&base, PER_USER);
    let mut admin = admin(&base);
    let role = IDLE_ROLE;
    let hold_all = |pool: &EnhancedConnectionPool<PgConnection>| {
        let mut held: Vec<_> = (0..PER_USER)
            .map(|_| pool.blocking_acquire(role).expect("acquire"))
            .collect();
        for conn in &mut held {
            conn.client()
                .query_one("SELECT 1", &[])
                .expect("no query fails: validation on borrow caught the dead connections");
        }
    };
    hold_all(&pool);
    // Idle past the validation window (500 ms), then killed.
    std::thread::sleep(Duration::from_millis(700));
    let killed = kill_backends(&mut admin, &[role]);
    assert_eq!(killed, PER_USER as u64);
    let start = Instant::now();
    hold_all(&pool);
    let whole = start.elapsed();
    let stats = pool.stats();
    println!(
        "killed while idle: {killed} backends, 0 queries failed, pool whole {:.1} ms after the \
         next borrows (validation evicted {}, the factory made {})",
        whole.as_secs_f64() * 1e3,
        stats.evictions.health,
        stats.factory_creates
    );
    assert_eq!(stats.evictions.health, killed, "{stats:?}");
}

/// One borrow of the reset role's single connection: runs `sql`, returns the backend.
fn borrow_and_run(pool: &EnhancedConnectionPool<PgConnection>, sql: &str) -> i32 {
    let mut conn = pool.blocking_acquire(RESET_ROLE).expect("acquire");
    let pid = conn
        .client()
        .query_one("SELECT pg_backend_pid()", &[])
        .expect("the connection is clean")
        .get(0);
    // Errors are part of some scripts (an aborted transaction).
    let _ = conn.client().batch_execute(sql);
    pid
}

#[test]
fn session_state_never_reaches_the_next_borrower_discard_all() {
    session_state_never_reaches_the_next_borrower(ResetMode::DiscardAll);
}

#[test]
fn session_state_never_reaches_the_next_borrower_keep_driver_statements() {
    session_state_never_reaches_the_next_borrower(ResetMode::KeepDriverStatements);
}

/// Each way a borrower can dirty its session, then the next borrower's view of the
/// same connection. The two modes share the reset role: one runs at a time.
fn session_state_never_reaches_the_next_borrower(mode: ResetMode) {
    let Some(base) = server() else { return };
    let _one_at_a_time = RESET_ROLE_IN_USE.lock().unwrap_or_else(|e| e.into_inner());
    let pool = pool_resetting(&base, 1, mode);
    let mut admin = admin(&base);
    admin
        .execute(&format!("DELETE FROM {PROBE_TABLE}"), &[])
        .expect("emptying the probe table");
    let dirty = [
        // An open transaction with a write in it: the next borrower's COMMIT must not
        // commit it.
        format!("BEGIN; INSERT INTO {PROBE_TABLE} VALUES ('left behind')"),
        // An aborted transaction: the next borrower's queries must not fail.
        "BEGIN; SELECT 1/0".to_string(),
        "SET statement_timeout = '1ms'; SET search_path = nowhere".to_string(),
        "CREATE TEMP TABLE leftover (x int)".to_string(),
        format!("SET ROLE {OTHER_ROLE}"),
        "PREPARE leftover_stmt AS SELECT 1".to_string(),
        "SELECT pg_advisory_lock(4242)".to_string(),
        "DECLARE leftover_cursor CURSOR WITH HOLD FOR SELECT 1".to_string(),
    ];
    let mut pid = None;
    for sql in &dirty {
        let this = borrow_and_run(&pool, sql);
        let mut conn = pool.blocking_acquire(RESET_ROLE).expect("acquire");
        let client = conn.client();
        // The simple protocol: there, `now() = statement_timestamp()` exactly when the
        // query did not run inside a transaction begun before it.
        let seen = client
            .simple_query(
                "SELECT pg_backend_pid(), now() = statement_timestamp(), current_user,
                        current_setting('statement_timeout'), current_setting('search_path'),
                        to_regclass('pg_temp.leftover') IS NULL,
                        (SELECT count(*) FROM pg_prepared_statements WHERE name = 'leftover_stmt'),
                        (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'
                           AND pid = pg_backend_pid()),
                        (SELECT count(*) FROM pg_cursors WHERE name = 'leftover_cursor')",
            )
            .unwrap_or_else(|e| panic!("{mode:?}: after {sql:?}: {e}"));
        let Some(row) = seen.iter().find_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row),
            _ => None,
        }) else {
            panic!("after {sql:?}: no row: {seen:?}")
        };
        let seen: Vec<&str> = (0..row.len())
            .map(|i| row.get(i).unwrap_or("NULL"))
            .collect();
        assert_eq!(
            seen[0],
            this.to_string(),
            "the same connection, reset (not a new one)"
        );
        assert_eq!(
            seen[1..],
            [
                "t",
                RESET_ROLE,
                "0",
                "\"$user\", public",
                "t",
                "0",
                "0",
                "0"
            ],
            "{mode:?}: after {sql:?}: not in a transaction, own role, default settings, no temp \
             table, no prepared statement, no advisory lock, no cursor"
        );
        client
            .batch_execute(&format!(
                "BEGIN; INSERT INTO {PROBE_TABLE} VALUES ('mine'); COMMIT"
            ))
            .expect("the next borrower's own transaction");
        drop(conn);
        assert!(pid.is_none_or(|p| p == this), "one connection throughout");
        pid = Some(this);
    }
    let notes: Vec<String> = admin
        .query(&format!("SELECT note FROM {PROBE_TABLE}"), &[])
        .expect("reading the probe table")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        !notes.iter().any(|n| n == "left behind"),
        "a borrower's uncommitted write was committed: {notes:?}"
    );
    assert_eq!(notes.len(), dirty.len());
    let stats = pool.stats();
    assert_eq!(stats.evictions.reset_failed, 0, "{stats:?}");
    assert_eq!(stats.factory_creates, 1, "{stats:?}");
}

#[test]
fn lost_connections_are_told_from_sql_errors_and_discarded() {
    let Some(base) = server() else { return };
    let pool = pool(&base, 1);
    let mut admin = admin(&base);

    // An ordinary SQL error: not lost; the connection goes back and stays.
    let mut conn = pool.blocking_acquire(ERRORS_ROLE).expect("acquire");
    let id = conn.connection_id();
    let err = conn
        .client()
        .query_one("SELECT 1/0", &[])
        .expect_err("division by zero");
    assert!(!is_connection_lost(&err), "{err}");
    release_or_discard(conn, Some(&err)).expect("released");
    let mut conn = pool.blocking_acquire(ERRORS_ROLE).expect("acquire");
    assert_eq!(
        conn.connection_id(),
        id,
        "an SQL error does not cost the connection"
    );
    assert!(health_check(&conn, Duration::from_secs(5)).is_ok());

    // Its backend killed while borrowed: the next query's error is a lost connection.
    let pid: i32 = conn
        .client()
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .expect("pg_terminate_backend");
    let err = conn
        .client()
        .query_one("SELECT 1", &[])
        .expect_err("the backend is gone");
    assert!(is_connection_lost(&err), "{err:?}");
    assert!(health_check(&conn, Duration::from_secs(5)).is_err());
    release_or_discard(conn, Some(&err)).expect("discarded");
    assert_eq!(
        pool.stats().evictions.discarded,
        1,
        "{:?}",
        pool.stats().evictions
    );

    // The factory replaces it.
    let mut conn = pool
        .blocking_acquire(ERRORS_ROLE)
        .expect("a new connection");
    assert_ne!(conn.connection_id(), id);
    conn.client()
        .query_one("SELECT 1", &[])
        .expect("a live connection");
}

#[test]
fn a_connect_that_fails_names_the_role_in_the_timeout() {
    let Some(base) = server() else { return };
    let config = EnhancedPoolConfig {
        acquire_timeout_ms: 1_500,
        ..quiet(4, 1)
    };
    let pool = PgConnector::new(base)
        .install(EnhancedConnectionPool::builder(config))
        .build()
        .expect("a valid pool");
    let started = Instant::now();
    let err = pool
        .blocking_acquire("heliosdb_pg_no_such_role")
        .expect_err("no such role");
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("connecting as \"heliosdb_pg_no_such_role\""),
        "after {:?}: {message}",
        started.elapsed()
    );
}

#[test]
fn keep_driver_statements_keeps_user_defined_types_working_across_resets() {
    let Some(base) = server() else { return };
    let _one_at_a_time = RESET_ROLE_IN_USE.lock().unwrap_or_else(|e| e.into_inner());
    let mut admin = admin(&base);
    for mood in ["heliosdb_pg_mood1", "heliosdb_pg_mood2"] {
        admin
            .batch_execute(&format!(
                "DO $$ BEGIN CREATE TYPE {mood} AS ENUM ('ok', 'sad');
                 EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
            ))
            .expect("creating the enum");
    }
    let pool = pool_resetting(&base, 1, ResetMode::KeepDriverStatements);
    // The first borrow makes the driver prepare its type-lookup statement; the second,
    // after a reset, needs it again for a type it has not seen.
    for mood in ["heliosdb_pg_mood1", "heliosdb_pg_mood2"] {
        let mut conn = pool.blocking_acquire(RESET_ROLE).expect("acquire");
        let rows = conn
            .client()
            .query(&format!("SELECT NULL::{mood}"), &[])
            .unwrap_or_else(|e| panic!("{mood}: {e:?}"));
        assert_eq!(rows.len(), 1);
    }
    assert_eq!(
        pool.stats().factory_creates,
        1,
        "one connection, reset in between"
    );
}

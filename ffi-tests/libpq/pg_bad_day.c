/* A database's bad day through the C calls, over real PostgreSQL connections (PGconn *):
 * what the Rust adapter (src/postgres.rs) does, done with libpq and the C ABI.
 *
 * - The `connect` callback opens a connection per pool user, the user name being the
 *   role; two roles share the pool under load and every query checks current_user.
 * - Backends are killed with pg_terminate_backend under load: a query that fails on a
 *   connection that is gone (PQstatus == CONNECTION_BAD, or a FATAL / class 08 error)
 *   makes the worker call heliosdb_pool_discard, so no query is handed the same dead
 *   connection twice, and the `connect` callback refills the pool. Measured and
 *   printed: failed queries per killed backend, time until the pool is whole.
 * - Backends killed while idle are caught by validation on borrow (`health_check` +
 *   `validate_after_ms`): no query fails.
 * - The `reset` callback rolls back an open or aborted transaction
 *   (PQtransactionStatus) and runs DISCARD ALL, so no session state reaches the next
 *   borrower.
 * - Every PGconn is PQfinish-ed exactly once (counted per connection).
 *
 * Run by ffi-tests/libpq/run.sh (directly and under valgrind). HELIOSDB_PG overrides
 * the server's connection string (a superuser's; the roles are created here). */
#define _POSIX_C_SOURCE 200809L /* clock_gettime, nanosleep under -std=c11 */
#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../check.h"

#define PER_USER 3
#define THREADS_PER_ROLE 3
#define ROUNDS 3
/* Every connection ever opened has a record here, never freed before the end, so a
 * second close of one is counted rather than a use after free. */
#define MAX_CONNECTIONS 256

static const char *const LOAD_ROLES[2] = {"heliosdb_c_alice", "heliosdb_c_bob"};
static const char *const IDLE_ROLE = "heliosdb_c_idle";
static const char *const RESET_ROLE = "heliosdb_c_reset";

typedef struct {
  PGconn *pg;
  atomic_int in_use;
  atomic_int finished; /* PQfinish calls: must end at exactly 1 */
  atomic_int dead;     /* a query failed on it: it must never be handed out again */
} pg_slot;

static pg_slot slots[MAX_CONNECTIONS];
static atomic_int opened;
static const char *conninfo;

static atomic_int violations;
static atomic_int stop;
static atomic_long queries;
static atomic_long failed_queries;
static atomic_long ordinary_errors;
static heliosdb_pool *pool;
static _Atomic double slowest_connect_ms;

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static void violation(const char *what, const char *detail) {
  fprintf(stderr, "VIOLATION: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
  atomic_fetch_add(&violations, 1);
}

/* ---- the pool's callbacks ---- */

static int32_t pg_connect(const char *user, void **out_connection, void *user_data) {
  (void)user_data;
  /* Keys apply in order: sslmode, gssencmode and connect_timeout are defaults that
   * HELIOSDB_PG (expanded from "dbname") may override; the role always comes from the
   * pool. No TLS or GSS encryption by default, as the Rust tests (NoTls): over loopback
   * they only add negotiation, which on this machine sometimes stalled past the
   * timeout. */
  const char *keys[] = {"sslmode", "gssencmode", "connect_timeout", "dbname", "user", NULL};
  const char *values[] = {"disable", "disable", "5", conninfo, user, NULL};
  double started = now_ms();
  PGconn *pg = PQconnectdbParams(keys, values, 1);
  double took = now_ms() - started;
  double slowest = atomic_load(&slowest_connect_ms);
  while (took > slowest && !atomic_compare_exchange_weak(&slowest_connect_ms, &slowest, took)) {
  }
  if (PQstatus(pg) != CONNECTION_OK) {
    fprintf(stderr, "connect as %s failed after %.1f ms: %s", user, took, PQerrorMessage(pg));
    heliosdb_callback_set_error(PQerrorMessage(pg));
    PQfinish(pg);
    return 1;
  }
  int index = atomic_fetch_add(&opened, 1);
  if (index >= MAX_CONNECTIONS) {
    heliosdb_callback_set_error("the example's connection table is full");
    PQfinish(pg);
    return 2;
  }
  slots[index].pg = pg;
  *out_connection = &slots[index];
  return 0;
}

static void pg_close(void *connection, void *user_data) {
  (void)user_data;
  pg_slot *slot = connection;
  if (atomic_fetch_add(&slot->finished, 1) != 0) {
    violation("a PGconn closed twice", NULL);
    return;
  }
  PQfinish(slot->pg);
}

/* Closed? Then one round trip (an empty query). */
static bool pg_health_check(void *connection, void *user_data) {
  (void)user_data;
  pg_slot *slot = connection;
  if (PQstatus(slot->pg) != CONNECTION_OK) return false;
  PGresult *r = PQexec(slot->pg, "");
  bool ok = PQresultStatus(r) == PGRES_EMPTY_QUERY;
  PQclear(r);
  return ok;
}

static bool exec_ok(PGconn *pg, const char *sql) {
  PGresult *r = PQexec(pg, sql);
  bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
  PQclear(r);
  return ok;
}

/* ROLLBACK when the borrower left a transaction open or aborted (libpq knows the
 * server's transaction status from its last ReadyForQuery), then DISCARD ALL. */
static bool pg_reset(void *connection, void *user_data) {
  (void)user_data;
  pg_slot *slot = connection;
  if (PQstatus(slot->pg) != CONNECTION_OK) return false;
  switch (PQtransactionStatus(slot->pg)) {
    case PQTRANS_IDLE:
      break;
    case PQTRANS_INTRANS:
    case PQTRANS_INERROR:
      if (!exec_ok(slot->pg, "ROLLBACK")) return false;
      break;
    default: /* a command in progress, or the connection is bad */
      return false;
  }
  return exec_ok(slot->pg, "DISCARD ALL");
}

/* ---- the workers ---- */

/* Whether a failed query's result means the connection itself is gone. */
static bool connection_lost(PGconn *pg, const PGresult *r) {
  if (PQstatus(pg) == CONNECTION_BAD) return true;
  const char *severity = PQresultErrorField(r, PG_DIAG_SEVERITY_NONLOCALIZED);
  const char *sqlstate = PQresultErrorField(r, PG_DIAG_SQLSTATE);
  return (severity != NULL && (strcmp(severity, "FATAL") == 0 || strcmp(severity, "PANIC") == 0)) ||
         (sqlstate != NULL && strncmp(sqlstate, "08", 2) == 0);
}

static void *worker(void *arg) {
  const char *role = arg;
  while (!atomic_load(&stop)) {
    heliosdb_lease lease;
    if (HELIOSDB_POOL_ACQUIRE(pool, role, HELIOSDB_TIMEOUT_DEFAULT, &lease) != HELIOSDB_OK) {
      violation("acquire", heliosdb_last_error_message());
      return NULL;
    }
    pg_slot *slot = lease.connection;
    if (atomic_exchange(&slot->in_use, 1) != 0) violation("a connection used twice at once", NULL);
    if (atomic_load(&slot->dead)) violation("a dead connection handed out again", role);
    PGresult *r = PQexec(slot->pg, "SELECT current_user");
    atomic_fetch_add(&queries, 1);
    bool lost = false;
    if (PQresultStatus(r) == PGRES_TUPLES_OK) {
      if (strcmp(PQgetvalue(r, 0, 0), role) != 0) violation("another role's connection", role);
    } else {
      atomic_fetch_add(&failed_queries, 1);
      atomic_store(&slot->dead, 1);
      lost = connection_lost(slot->pg, r);
      if (!lost) {
        atomic_fetch_add(&ordinary_errors, 1);
        violation("an error that is not a lost connection", PQresultErrorMessage(r));
      }
    }
    PQclear(r);
    atomic_store(&slot->in_use, 0);
    heliosdb_status s = lost ? heliosdb_pool_discard(pool, &lease) : heliosdb_pool_release(pool, &lease);
    if (s != HELIOSDB_OK) violation("release/discard", heliosdb_last_error_message());
    /* A service's think time between queries. Flat out (no pause), six backends kept
     * both cores of the 2-vCPU test machine busy and the server sometimes took over
     * 5 s (the connect timeout) to accept a new connection. */
    nanosleep(&(struct timespec){0, 200000}, NULL);
  }
  return NULL;
}

/* ---- the killer's view (a superuser connection of its own) ---- */

static long admin_count(PGconn *admin, const char *sql_fmt, const char *roles) {
  char sql[512];
  snprintf(sql, sizeof sql, sql_fmt, roles);
  PGresult *r = PQexec(admin, sql);
  if (PQresultStatus(r) != PGRES_TUPLES_OK) {
    fprintf(stderr, "admin query: %s\n", PQerrorMessage(admin));
    exit(1);
  }
  long n = atol(PQgetvalue(r, 0, 0));
  PQclear(r);
  return n;
}

static long backends(PGconn *admin, const char *roles) {
  return admin_count(admin, "SELECT count(*) FROM pg_stat_activity WHERE usename IN (%s)", roles);
}

static long kill_backends(PGconn *admin, const char *roles) {
  return admin_count(admin,
                     "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) "
                     "FROM pg_stat_activity WHERE usename IN (%s)",
                     roles);
}

static heliosdb_pool_stats stats(void) {
  heliosdb_pool_stats s;
  s.struct_size = sizeof s;
  CHECK_OK(heliosdb_pool_get_stats(pool, &s));
  return s;
}

/* Connections that left the pool as dead or broken, by any path. */
static uint64_t dead_evictions(void) {
  heliosdb_pool_stats s = stats();
  return s.evicted_discarded + s.evicted_health + s.evicted_reset_failed;
}

static size_t user_connections(void) { return stats().total_connections; }

/* Polls `done(admin, arg)` every 2 ms for up to `limit_ms`; whether it held. */
static bool wait_until(double limit_ms, bool (*done)(PGconn *, long), PGconn *admin, long arg) {
  double deadline = now_ms() + limit_ms;
  for (;;) {
    if (done(admin, arg)) return true;
    if (now_ms() >= deadline) return false;
    sleep_ms(2);
  }
}

static const char *const LOAD_ROLE_LIST = "'heliosdb_c_alice', 'heliosdb_c_bob'";

static bool load_backends_are(PGconn *admin, long n) { return backends(admin, LOAD_ROLE_LIST) == n; }

static uint64_t evicted_before;
static bool healed(PGconn *admin, long killed) {
  (void)admin;
  return dead_evictions() - evicted_before >= (uint64_t)killed &&
         user_connections() == 2 * PER_USER;
}

static void create_role(PGconn *admin, const char *role) {
  char sql[512];
  snprintf(sql, sizeof sql,
           "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '%s') THEN "
           "CREATE ROLE %s LOGIN; END IF; "
           "EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$",
           role, role);
  if (!exec_ok(admin, sql)) {
    fprintf(stderr, "creating role %s: %s\n", role, PQerrorMessage(admin));
    exit(1);
  }
}

/* ---- the phases ---- */

static void under_load(PGconn *admin) {
  pthread_t threads[2 * THREADS_PER_ROLE];
  for (int t = 0; t < 2 * THREADS_PER_ROLE; t++) {
    CHECK(pthread_create(&threads[t], NULL, worker, (void *)LOAD_ROLES[t % 2]) == 0);
  }
  CHECK(wait_until(60000, load_backends_are, admin, 2 * PER_USER));
  for (int round = 1; round <= ROUNDS; round++) {
    sleep_ms(300);
    CHECK(wait_until(30000, load_backends_are, admin, 2 * PER_USER));
    long failed_before = atomic_load(&failed_queries);
    evicted_before = dead_evictions();
    double killed_at = now_ms();
    long killed = kill_backends(admin, LOAD_ROLE_LIST);
    CHECK(killed == 2 * PER_USER);
    if (!wait_until(60000, healed, admin, killed)) {
      heliosdb_pool_stats st = stats();
      fprintf(stderr,
              "not whole after 60 s: %zu connections (%zu idle, %zu waiting), %llu dead "
              "evictions of %ld killed, %llu connects, %llu failed: %s\n",
              st.total_connections, st.idle_connections, st.waiting,
              (unsigned long long)(dead_evictions() - evicted_before), killed,
              (unsigned long long)st.factory_creates, (unsigned long long)st.factory_errors,
              heliosdb_last_error_message());
      exit(1);
    }
    double whole_ms = now_ms() - killed_at;
    long failed = atomic_load(&failed_queries) - failed_before;
    printf("  round %d: %ld backends killed, %ld queries failed (%.2f per killed backend), "
           "pool whole %.1f ms after the kill\n",
           round, killed, failed, (double)failed / (double)killed, whole_ms);
    CHECK(failed <= killed);
  }
  atomic_store(&stop, 1);
  for (int t = 0; t < 2 * THREADS_PER_ROLE; t++) pthread_join(threads[t], NULL);
}

static void killed_while_idle(PGconn *admin) {
  heliosdb_lease leases[PER_USER];
  for (int pass = 0; pass < 2; pass++) {
    double start = now_ms();
    for (int i = 0; i < PER_USER; i++) {
      CHECK_OK(HELIOSDB_POOL_ACQUIRE(pool, IDLE_ROLE, HELIOSDB_TIMEOUT_DEFAULT, &leases[i]));
      pg_slot *slot = leases[i].connection;
      PGresult *r = PQexec(slot->pg, "SELECT 1");
      if (PQresultStatus(r) != PGRES_TUPLES_OK) violation("a query after an idle kill", PQerrorMessage(slot->pg));
      PQclear(r);
    }
    for (int i = 0; i < PER_USER; i++) CHECK_OK(heliosdb_pool_release(pool, &leases[i]));
    if (pass == 1) {
      printf("  killed while idle: %d backends, 0 queries failed, pool whole %.1f ms after the "
             "next borrows (validation evicted %llu)\n",
             PER_USER, now_ms() - start, (unsigned long long)stats().evicted_health);
      return;
    }
    sleep_ms(700); /* idle past validate_after_ms (500) */
    CHECK(kill_backends(admin, "'heliosdb_c_idle'") == PER_USER);
  }
}

/* One borrow of the reset role's single connection: checks it is clean, then dirties it
 * with `sql`. Returns the backend pid. */
static int borrow_check_and_dirty(const char *sql) {
  heliosdb_lease lease;
  CHECK_OK(HELIOSDB_POOL_ACQUIRE(pool, RESET_ROLE, HELIOSDB_TIMEOUT_DEFAULT, &lease));
  pg_slot *slot = lease.connection;
  PGresult *r = PQexec(slot->pg,
                       "SELECT now() = statement_timestamp(), current_setting('statement_timeout'), "
                       "to_regclass('pg_temp.leftover') IS NULL, current_user");
  if (PQresultStatus(r) != PGRES_TUPLES_OK) {
    violation("the next borrower's first query failed", PQerrorMessage(slot->pg));
  } else if (strcmp(PQgetvalue(r, 0, 0), "t") != 0 || strcmp(PQgetvalue(r, 0, 1), "0") != 0 ||
             strcmp(PQgetvalue(r, 0, 2), "t") != 0 || strcmp(PQgetvalue(r, 0, 3), RESET_ROLE) != 0) {
    violation("session state reached the next borrower", sql);
  }
  PQclear(r);
  int pid = PQbackendPID(slot->pg);
  PQclear(PQexec(slot->pg, sql)); /* some fail by design (an aborted transaction) */
  CHECK_OK(heliosdb_pool_release(pool, &lease));
  return pid;
}

static void session_state(void) {
  const char *dirty[] = {
      "BEGIN; SELECT 1",      "BEGIN; SELECT 1/0", "SET statement_timeout = '1ms'",
      "CREATE TEMP TABLE leftover (x int)", "SELECT 1",
  };
  int pid = 0;
  for (size_t i = 0; i < sizeof dirty / sizeof dirty[0]; i++) {
    int this = borrow_check_and_dirty(dirty[i]);
    if (pid != 0 && this != pid) violation("the reset role's connection was replaced", dirty[i]);
    pid = this;
  }
  printf("  session state: %zu dirty borrows, each next borrower clean, one connection\n",
         sizeof dirty / sizeof dirty[0]);
}

int main(void) {
  conninfo = getenv("HELIOSDB_PG");
  if (conninfo == NULL) conninfo = "host=127.0.0.1 port=5432 dbname=test user=postgres";
  PGconn *admin = PQconnectdb(conninfo);
  if (PQstatus(admin) != CONNECTION_OK) {
    fprintf(stderr, "connect (%s): %s\n", conninfo, PQerrorMessage(admin));
    PQfinish(admin);
    return 1;
  }
  create_role(admin, LOAD_ROLES[0]);
  create_role(admin, LOAD_ROLES[1]);
  create_role(admin, IDLE_ROLE);
  create_role(admin, RESET_ROLE);

  heliosdb_pool_config config;
  CHECK_OK(heliosdb_pool_config_init(&config, sizeof config));
  config.max_connections = 4 * PER_USER;
  config.max_per_user = PER_USER;
  config.acquire_timeout_ms = 30000;
  config.idle_timeout_ms = 0;
  config.max_connection_age_ms = 0;
  config.leak_detection_enabled = false;
  config.auto_cleanup_enabled = false;
  config.health_check_enabled = true;
  config.health_check_interval_ms = 600000; /* validation on borrow does the checking */
  config.validate_after_ms = 500;
  config.connect = pg_connect;
  config.close = pg_close;
  config.health_check = pg_health_check;
  config.reset = pg_reset;
  CHECK_OK(heliosdb_pool_new(&config, &pool));

  printf("libpq bad day: 2 roles x %d threads over %d PGconn per role, %d kill rounds\n",
         THREADS_PER_ROLE, PER_USER, ROUNDS);
  under_load(admin);
  killed_while_idle(admin);
  session_state();

  heliosdb_pool_stats s = stats();
  printf("  %ld queries, %ld failed, %ld not a lost connection; evictions: discarded %llu, "
         "health %llu, reset_failed %llu; connect: %llu made, %llu failed, slowest %.1f ms\n",
         atomic_load(&queries), atomic_load(&failed_queries), atomic_load(&ordinary_errors),
         (unsigned long long)s.evicted_discarded, (unsigned long long)s.evicted_health,
         (unsigned long long)s.evicted_reset_failed, (unsigned long long)s.factory_creates,
         (unsigned long long)s.factory_errors, atomic_load(&slowest_connect_ms));
  heliosdb_pool_free(pool);
  PQfinish(admin);

  int total = atomic_load(&opened);
  int once = 0;
  for (int i = 0; i < total; i++) once += atomic_load(&slots[i].finished) == 1;
  printf("  closed %d of %d connections exactly once\n", once, total);
  CHECK(once == total);
  CHECK(atomic_load(&violations) == 0);
  return 0;
}

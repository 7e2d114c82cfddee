/* The libpq example: a pool of real PostgreSQL connections (PGconn *) shared by
 * threads through the C ABI. Connects to the local server (127.0.0.1:5432, database
 * "test", trust auth), borrows with HELIOSDB_POOL_ACQUIRE so leak reports would name
 * this file, runs queries, and checks that no connection was ever used by two threads
 * at once and that the pool closes each PGconn exactly once (PQfinish).
 *
 * Run by .ci/run through ffi-tests/libpq/run.sh. */
#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "heliosdb_pool.h"

#define CONNECTIONS 4
#define THREADS 8
#define QUERIES_PER_THREAD 200

typedef struct {
  PGconn *pg;
  atomic_int in_use;
  int backend_pid;
} pg_slot;

static atomic_int closed;
static atomic_int violations;
static heliosdb_pool *pool;

static void pg_close(void *connection, void *user_data) {
  (void)user_data;
  pg_slot *slot = connection;
  PQfinish(slot->pg);
  free(slot);
  atomic_fetch_add(&closed, 1);
}

static void *worker(void *arg) {
  (void)arg;
  char sql[64];
  for (int i = 0; i < QUERIES_PER_THREAD; i++) {
    heliosdb_lease lease;
    heliosdb_status s = HELIOSDB_POOL_ACQUIRE(pool, "app", HELIOSDB_TIMEOUT_DEFAULT, &lease);
    if (s != HELIOSDB_OK) {
      fprintf(stderr, "acquire: %s\n", heliosdb_last_error_message());
      atomic_fetch_add(&violations, 1);
      return NULL;
    }
    pg_slot *slot = lease.connection;
    if (atomic_exchange(&slot->in_use, 1) != 0) atomic_fetch_add(&violations, 1);
    snprintf(sql, sizeof sql, "SELECT pg_backend_pid(), %d", i);
    PGresult *r = PQexec(slot->pg, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || atoi(PQgetvalue(r, 0, 0)) != slot->backend_pid ||
        atoi(PQgetvalue(r, 0, 1)) != i) {
      fprintf(stderr, "query: %s\n", PQerrorMessage(slot->pg));
      atomic_fetch_add(&violations, 1);
    }
    PQclear(r);
    atomic_store(&slot->in_use, 0);
    s = heliosdb_pool_release(pool, &lease);
    if (s != HELIOSDB_OK) {
      fprintf(stderr, "release: %s\n", heliosdb_last_error_message());
      atomic_fetch_add(&violations, 1);
    }
  }
  return NULL;
}

int main(void) {
  const char *conninfo = getenv("HELIOSDB_PG");
  if (conninfo == NULL) conninfo = "host=127.0.0.1 port=5432 dbname=test user=postgres";

  heliosdb_pool_config config;
  if (heliosdb_pool_config_development(&config, sizeof config) != HELIOSDB_OK) return 1;
  config.max_connections = CONNECTIONS;
  config.max_per_user = CONNECTIONS;
  config.close = pg_close;
  if (heliosdb_pool_new(&config, &pool) != HELIOSDB_OK) {
    fprintf(stderr, "pool: %s\n", heliosdb_last_error_message());
    return 1;
  }
  const char *tags[] = {"libpq-example"};
  heliosdb_connection_metadata md = {sizeof md, "test", "postgres", "127.0.0.1:5432", tags, 1};
  for (int i = 0; i < CONNECTIONS; i++) {
    pg_slot *slot = calloc(1, sizeof *slot);
    if (slot == NULL) return 1;
    slot->pg = PQconnectdb(conninfo);
    if (PQstatus(slot->pg) != CONNECTION_OK) {
      fprintf(stderr, "connect (%s): %s\n", conninfo, PQerrorMessage(slot->pg));
      PQfinish(slot->pg);
      free(slot);
      heliosdb_pool_free(pool);
      return 1;
    }
    slot->backend_pid = PQbackendPID(slot->pg);
    if (heliosdb_pool_add_connection(pool, slot, "app", &md, NULL) != HELIOSDB_OK) {
      fprintf(stderr, "add: %s\n", heliosdb_last_error_message());
      return 1;
    }
  }

  pthread_t threads[THREADS];
  for (int t = 0; t < THREADS; t++) pthread_create(&threads[t], NULL, worker, NULL);
  for (int t = 0; t < THREADS; t++) pthread_join(threads[t], NULL);

  heliosdb_pool_stats stats;
  stats.struct_size = sizeof stats;
  if (heliosdb_pool_get_stats(pool, &stats) != HELIOSDB_OK) return 1;
  printf("libpq example: %d threads x %d queries over %d PGconn: %llu acquires, %zu idle, "
         "%d violations\n",
         THREADS, QUERIES_PER_THREAD, CONNECTIONS, (unsigned long long)stats.acquires,
         stats.idle_connections, atomic_load(&violations));
  heliosdb_pool_free(pool);
  printf("closed %d of %d connections\n", atomic_load(&closed), CONNECTIONS);
  if (atomic_load(&violations) != 0 || atomic_load(&closed) != CONNECTIONS ||
      stats.acquires != (uint64_t)THREADS * QUERIES_PER_THREAD) {
    return 1;
  }
  return 0;
}

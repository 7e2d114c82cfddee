/* Lifecycle through the C API: config, presets, add, acquire (macro and plain),
 * try_acquire, timeouts, stats, remove, close, free; versions and status strings. */
#define _POSIX_C_SOURCE 200809L

#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "heliosdb_pool.h"

typedef struct {
  int id;
  const char *user;
  atomic_int closed;
} conn_t;

typedef struct {
  atomic_int closes;
  atomic_int frees;
} counters_t;

static void close_conn(void *connection, void *user_data) {
  conn_t *c = (conn_t *)connection;
  counters_t *k = (counters_t *)user_data;
  CHECK(atomic_fetch_add(&c->closed, 1) == 0); /* exactly once */
  atomic_fetch_add(&k->closes, 1);
}

static void free_counters(void *user_data) {
  counters_t *k = (counters_t *)user_data;
  atomic_fetch_add(&k->frees, 1);
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void versions_and_statuses(void) {
  char expected[64];
  snprintf(expected, sizeof expected, "%u.%u.%u", heliosdb_version_major(),
           heliosdb_version_minor(), heliosdb_version_patch());
  CHECK(strcmp(expected, heliosdb_version_string()) == 0);
  CHECK(strcmp(HELIOSDB_VERSION_STRING, heliosdb_version_string()) == 0);
  CHECK(heliosdb_version_major() == HELIOSDB_VERSION_MAJOR);
  CHECK(heliosdb_version_minor() == HELIOSDB_VERSION_MINOR);
  CHECK(heliosdb_version_patch() == HELIOSDB_VERSION_PATCH);
  CHECK(HELIOSDB_VERSION_NUMBER == HELIOSDB_VERSION_MAJOR * 1000000 +
                                       HELIOSDB_VERSION_MINOR * 1000 +
                                       HELIOSDB_VERSION_PATCH);

  CHECK(strcmp(heliosdb_status_str(HELIOSDB_OK), "ok") == 0);
  for (int code = 0; code <= HELIOSDB_ERR_USER_NAME_TOO_LONG; code++) {
    const char *s = heliosdb_status_str(code);
    CHECK(s != NULL && s[0] != '\0' && strcmp(s, "unknown status") != 0);
  }
  CHECK(strcmp(heliosdb_status_str(-1), "unknown status") == 0);
  CHECK(strcmp(heliosdb_status_str(HELIOSDB_ERR_USER_NAME_TOO_LONG + 1), "unknown status") == 0);
  CHECK(strcmp(heliosdb_status_str(INT32_MAX), "unknown status") == 0);
  CHECK(heliosdb_last_error_message() != NULL);
}

static void configs(void) {
  heliosdb_pool_config cfg;
  CHECK_OK(heliosdb_pool_config_init(&cfg, sizeof cfg));
  CHECK(cfg.struct_size == sizeof cfg);
  CHECK(cfg.max_connections == 100 && cfg.max_per_user == 10);
  CHECK(cfg.auto_cleanup_enabled == false);
  CHECK(cfg.close == NULL && cfg.user_data == NULL && cfg.user_data_free == NULL);
  CHECK_OK(heliosdb_pool_config_validate(&cfg));

  CHECK_OK(heliosdb_pool_config_development(&cfg, sizeof cfg));
  CHECK(cfg.max_connections == 100 && cfg.auto_cleanup_enabled);
  CHECK_OK(heliosdb_pool_config_staging(&cfg, sizeof cfg));
  CHECK(cfg.max_connections == 1000 && cfg.max_per_user == 50);
  CHECK_OK(heliosdb_pool_config_production(&cfg, sizeof cfg));
  CHECK(cfg.max_connections == 10000 && cfg.max_per_user == 100);
  CHECK_OK(heliosdb_pool_config_validate(&cfg));

  cfg.max_per_user = cfg.max_connections + 1;
  CHECK_STATUS(heliosdb_pool_config_validate(&cfg), HELIOSDB_ERR_INVALID_CONFIG);
  CHECK(strstr(heliosdb_last_error_message(), "max_per_user") != NULL);
  heliosdb_pool *pool = (heliosdb_pool *)&cfg; /* must stay untouched */
  CHECK_STATUS(heliosdb_pool_new(&cfg, &pool), HELIOSDB_ERR_INVALID_CONFIG);
  CHECK(pool == (heliosdb_pool *)&cfg);

  /* A NULL config is the defaults. */
  CHECK_OK(heliosdb_pool_new(NULL, &pool));
  heliosdb_pool_free(pool);
}

static void lifecycle(void) {
  static conn_t conns[5] = {
      {1, "alice", 0}, {2, "alice", 0}, {3, "alice", 0}, {4, "bob", 0}, {5, "alice", 0}};
  counters_t counters = {0, 0};
  heliosdb_pool_config cfg;
  CHECK_OK(heliosdb_pool_config_init(&cfg, sizeof cfg));
  cfg.max_connections = 8;
  cfg.max_per_user = 4;
  cfg.acquire_timeout_ms = 50;
  cfg.close = close_conn;
  cfg.user_data = &counters;
  cfg.user_data_free = free_counters;

  heliosdb_pool *pool = NULL;
  CHECK_OK(heliosdb_pool_new(&cfg, &pool));
  CHECK(pool != NULL);

  const char *tags[] = {"primary", "read-write"};
  heliosdb_connection_metadata md;
  memset(&md, 0, sizeof md);
  md.struct_size = sizeof md;
  md.database = "orders";
  md.protocol = "postgres";
  md.remote_addr = "10.0.0.1:5432";
  md.tags = tags;
  md.tag_count = 2;

  uint64_t ids[4];
  for (int i = 0; i < 3; i++) {
    CHECK_OK(heliosdb_pool_add_connection(pool, &conns[i], "alice", &md, &ids[i]));
  }
  CHECK_OK(heliosdb_pool_add_connection(pool, &conns[3], "bob", NULL, &ids[3]));
  CHECK(ids[0] != ids[1] && ids[1] != ids[2] && ids[2] != ids[3]);

  heliosdb_pool_stats stats;
  stats.struct_size = sizeof stats;
  CHECK_OK(heliosdb_pool_get_stats(pool, &stats));
  CHECK(stats.total_connections == 4 && stats.idle_connections == 4);
  CHECK(stats.active_connections == 0 && stats.acquires == 0);

  /* The macro records the call site; plain acquire and try_acquire too. */
  heliosdb_lease a, b, c, d;
  CHECK_OK(HELIOSDB_POOL_ACQUIRE(pool, "alice", 1000, &a));
  CHECK(a.pool == pool);
  conn_t *ca = (conn_t *)a.connection;
  CHECK(strcmp(ca->user, "alice") == 0);
  CHECK(a.connection_id == ids[ca->id - 1]);
  CHECK_OK(heliosdb_pool_acquire(pool, "alice", HELIOSDB_TIMEOUT_DEFAULT, &b));
  CHECK_OK(HELIOSDB_POOL_TRY_ACQUIRE(pool, "alice", &c));
  CHECK(a.connection != b.connection && b.connection != c.connection &&
        a.connection != c.connection);

  /* All of alice's connections are out now. */
  memset(&d, 0x5a, sizeof d);
  heliosdb_lease untouched = d;
  CHECK_STATUS(heliosdb_pool_try_acquire(pool, "alice", &d), HELIOSDB_ERR_NO_IDLE_CONNECTION);
  CHECK(memcmp(&d, &untouched, sizeof d) == 0); /* out-params only on success */
  double t0 = now_ms();
  CHECK_STATUS(heliosdb_pool_acquire(pool, "alice", 30, &d), HELIOSDB_ERR_TIMEOUT);
  CHECK(now_ms() - t0 >= 25.0);
  CHECK(strstr(heliosdb_last_error_message(), "alice") != NULL);
  t0 = now_ms();
  CHECK_STATUS(heliosdb_pool_acquire(pool, "alice", HELIOSDB_TIMEOUT_DEFAULT, &d),
               HELIOSDB_ERR_TIMEOUT); /* the config's 50 ms */
  CHECK(now_ms() - t0 >= 45.0);
  CHECK_STATUS(heliosdb_pool_acquire(pool, "alice", 0, &d), HELIOSDB_ERR_TIMEOUT);
  CHECK_STATUS(heliosdb_pool_acquire(pool, "carol", 0, &d), HELIOSDB_ERR_UNKNOWN_USER);
  CHECK(memcmp(&d, &untouched, sizeof d) == 0);

  CHECK_OK(heliosdb_pool_get_stats(pool, &stats));
  CHECK(stats.active_connections == 3 && stats.idle_connections == 1);
  CHECK(stats.acquires == 3 && stats.timeouts == 3);

  /* Capacity: alice may hold 4, the pool 8. */
  CHECK_OK(heliosdb_pool_add_connection(pool, &conns[4], "alice", NULL, NULL));
  static conn_t extra = {6, "alice", 0};
  CHECK_STATUS(heliosdb_pool_add_connection(pool, &extra, "alice", NULL, NULL),
               HELIOSDB_ERR_USER_AT_CAPACITY);
  CHECK(atomic_load(&extra.closed) == 1); /* a failed add closes the connection */

  /* Remove: a borrowed connection closes on return, an idle one now. */
  bool deferred = false;
  CHECK_OK(heliosdb_pool_remove_connection(pool, a.connection_id, &deferred));
  CHECK(deferred);
  CHECK(atomic_load(&ca->closed) == 0);
  CHECK_OK(heliosdb_pool_release(pool, &a));
  CHECK(atomic_load(&ca->closed) == 1);
  CHECK_OK(heliosdb_pool_remove_connection(pool, ids[3], &deferred));
  CHECK(!deferred);
  CHECK(atomic_load(&conns[3].closed) == 1);
  CHECK_STATUS(heliosdb_pool_remove_connection(pool, ids[3], NULL),
               HELIOSDB_ERR_UNKNOWN_CONNECTION);

  CHECK_OK(heliosdb_pool_release(pool, &b));
  CHECK_OK(heliosdb_pool_release(pool, &c));

  /* Close: no more acquires or adds; idle connections closed now. */
  bool closed = true;
  CHECK_OK(heliosdb_pool_is_closed(pool, &closed));
  CHECK(!closed);
  CHECK_OK(heliosdb_pool_close(pool));
  CHECK_OK(heliosdb_pool_close(pool)); /* idempotent */
  CHECK_OK(heliosdb_pool_is_closed(pool, &closed));
  CHECK(closed);
  CHECK_STATUS(heliosdb_pool_acquire(pool, "alice", 10, &d), HELIOSDB_ERR_CLOSED);
  static conn_t late = {7, "alice", 0};
  CHECK_STATUS(heliosdb_pool_add_connection(pool, &late, "alice", NULL, NULL),
               HELIOSDB_ERR_CLOSED);
  CHECK(atomic_load(&late.closed) == 1);
  for (int i = 0; i < 5; i++) {
    CHECK(atomic_load(&conns[i].closed) == 1);
  }
  CHECK(atomic_load(&counters.frees) == 0);
  heliosdb_pool_free(pool);
  heliosdb_pool_free(NULL);
  CHECK(atomic_load(&counters.frees) == 1);
  CHECK(atomic_load(&counters.closes) == 7);
}

int main(void) {
  versions_and_statuses();
  configs();
  lifecycle();
  printf("lifecycle: ok\n");
  return 0;
}

/* The sweeper's callbacks through the C API: leak reports naming the C call site,
 * reclaim, health eviction through a C health check and replacement through the C
 * connect callback; leak and Prometheus exports with the size-query convention;
 * versioned config and stats structs of version 1. Waits poll with deadlines, so the
 * test is slow-tolerant (valgrind) rather than timing-sensitive. */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "heliosdb_pool.h"

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Polls `cond` (sweeping on this thread too) for up to 20 s. */
#define WAIT_FOR(pool, cond)                                      \
  do {                                                            \
    double wait_deadline_ = now_ms() + 20000.0;                   \
    while (!(cond)) {                                             \
      CHECK(now_ms() < wait_deadline_);                           \
      CHECK_OK(heliosdb_pool_sweep_now(pool));                    \
      sleep_ms(2);                                                \
    }                                                             \
  } while (0)

typedef struct {
  int id;
  atomic_int closed;
  atomic_bool healthy;
  char user[16];
} conn_t;

/* What the callbacks saw; written on the sweeper thread, read after a WAIT_FOR. */
typedef struct {
  pthread_mutex_t lock;
  heliosdb_pool *pool;
  atomic_int closes;
  atomic_int frees;
  atomic_int alerts;
  atomic_int criticals;
  atomic_int reclaims;
  atomic_int health_calls;
  atomic_int connects;
  atomic_int connect_failures;
  atomic_int reentrant_ok;
  /* The last leak report, copied. */
  char file[256];
  char function[64];
  char user[32];
  char tags[64];
  unsigned line;
  uint64_t connection_id;
  uint64_t held_ms;
  size_t metadata_count;
  uint64_t reclaimed_id;
  conn_t made[16];
  atomic_int made_count;
} state_t;

static void state_init(state_t *s) {
  memset(s, 0, sizeof *s);
  CHECK(pthread_mutex_init(&s->lock, NULL) == 0);
}

static void close_conn(void *connection, void *user_data) {
  conn_t *c = (conn_t *)connection;
  CHECK(atomic_fetch_add(&c->closed, 1) == 0); /* exactly once */
  atomic_fetch_add(&((state_t *)user_data)->closes, 1);
}

static void free_state(void *user_data) { atomic_fetch_add(&((state_t *)user_data)->frees, 1); }

static void copy(char *dst, size_t n, const char *src) {
  CHECK(src != NULL);
  snprintf(dst, n, "%s", src);
}

static void on_leak(const heliosdb_leak_report *r, void *user_data) {
  state_t *s = (state_t *)user_data;
  CHECK(r != NULL && r->user != NULL && r->resource_id != NULL);
  CHECK(strcmp(r->resource_type, "Connection") == 0);
  CHECK(r->level == HELIOSDB_LEAK_ALERT || r->level == HELIOSDB_LEAK_CRITICAL);
  pthread_mutex_lock(&s->lock);
  copy(s->file, sizeof s->file, r->file);
  copy(s->function, sizeof s->function, r->function != NULL ? r->function : "(none)");
  copy(s->user, sizeof s->user, r->user);
  s->line = r->line;
  s->connection_id = r->connection_id;
  s->held_ms = r->held_ms;
  s->metadata_count = r->metadata_count;
  for (size_t i = 0; i < r->metadata_count; i++) {
    if (strcmp(r->metadata[i].key, "tags") == 0) copy(s->tags, sizeof s->tags, r->metadata[i].value);
  }
  pthread_mutex_unlock(&s->lock);
  /* Re-entrancy: stats, the Prometheus size query and the leak list are allowed. */
  heliosdb_pool_stats st;
  st.struct_size = sizeof st;
  size_t needed = 0, count = 0;
  if (heliosdb_pool_get_stats(s->pool, &st) == HELIOSDB_OK &&
      heliosdb_pool_prometheus(s->pool, NULL, 0, &needed) == HELIOSDB_ERR_BUFFER_TOO_SMALL &&
      needed > 0 && heliosdb_pool_for_each_leak(s->pool, NULL, NULL, NULL) == HELIOSDB_ERR_NULL_ARGUMENT &&
      heliosdb_pool_leaks(s->pool, NULL, 0, &count) != HELIOSDB_ERR_PANIC) {
    atomic_fetch_add(&s->reentrant_ok, 1);
  }
  atomic_fetch_add(r->level == HELIOSDB_LEAK_ALERT ? &s->alerts : &s->criticals, 1);
}

static void on_reclaim(const heliosdb_leak_report *r, void *user_data) {
  state_t *s = (state_t *)user_data;
  CHECK(r->level == HELIOSDB_LEAK_CRITICAL);
  s->reclaimed_id = r->connection_id;
  atomic_fetch_add(&s->reclaims, 1);
}

static bool health_check(void *connection, void *user_data) {
  atomic_fetch_add(&((state_t *)user_data)->health_calls, 1);
  return atomic_load(&((conn_t *)connection)->healthy);
}

static int32_t connect_cb(const char *user, void **out_connection, void *user_data) {
  state_t *s = (state_t *)user_data;
  atomic_fetch_add(&s->connects, 1);
  if (strcmp(user, "nobody") == 0) {
    atomic_fetch_add(&s->connect_failures, 1);
    return 7; /* a failure with a code */
  }
  int n = atomic_fetch_add(&s->made_count, 1);
  CHECK(n < 16);
  conn_t *c = &s->made[n];
  c->id = 100 + n;
  snprintf(c->user, sizeof c->user, "%s", user);
  atomic_store(&c->healthy, true);
  *out_connection = c;
  return 0;
}

static heliosdb_pool *new_pool(heliosdb_pool_config *cfg, state_t *s) {
  cfg->close = close_conn;
  cfg->user_data = s;
  cfg->user_data_free = free_state;
  heliosdb_pool *pool = NULL;
  CHECK_OK(heliosdb_pool_new(cfg, &pool));
  s->pool = pool;
  return pool;
}

static void base_config(heliosdb_pool_config *cfg) {
  CHECK_OK(heliosdb_pool_config_init(cfg, sizeof *cfg));
  cfg->max_connections = 8;
  cfg->max_per_user = 4;
  cfg->health_check_enabled = false;
  cfg->idle_timeout_ms = 0;
  cfg->max_connection_age_ms = 0;
}

/* Leak reports name the HELIOSDB_POOL_ACQUIRE line; the exports list the leaks. */
static void leak_reports(void) {
  state_t s;
  state_init(&s);
  heliosdb_pool_config cfg;
  base_config(&cfg);
  cfg.leak_detection_threshold_ms = 20;
  cfg.leak_critical_threshold_ms = 60;
  cfg.auto_cleanup_enabled = false;
  cfg.on_leak = on_leak;
  cfg.name = "leaky";
  heliosdb_pool *pool = new_pool(&cfg, &s);

  static conn_t conns[2];
  const char *tags[] = {"primary", "rw"};
  heliosdb_connection_metadata md = {sizeof md, "orders", "postgres", NULL, tags, 2};
  uint64_t ids[2];
  CHECK_OK(heliosdb_pool_add_connection(pool, &conns[0], "alice", &md, &ids[0]));
  CHECK_OK(heliosdb_pool_add_connection(pool, &conns[1], "alice", NULL, &ids[1]));

  /* No leaks yet: the size query succeeds with 0. */
  size_t count = 99;
  CHECK_OK(heliosdb_pool_leaks(pool, NULL, 0, &count));
  CHECK(count == 0);

  heliosdb_lease a, b;
  const unsigned line = __LINE__; heliosdb_status st = HELIOSDB_POOL_ACQUIRE(pool, "alice", 1000, &a);
  CHECK_OK(st);
  CHECK_OK(heliosdb_pool_acquire(pool, "alice", 1000, &b)); /* no call site */
  uint64_t leaked_id = a.connection_id;

  WAIT_FOR(pool, atomic_load(&s.criticals) >= 2);
  /* Once per level per borrow (a slow sweep may find a borrow critical at once). */
  CHECK(atomic_load(&s.alerts) <= 2);
  CHECK(atomic_load(&s.reentrant_ok) == atomic_load(&s.alerts) + 2);

  /* The report of lease a (the metadata one) names this file, line and function. */
  heliosdb_leak_report reports[4];
  memset(reports, 0x5a, sizeof reports);
  heliosdb_leak_report untouched = reports[0];
  count = 0;
  CHECK_STATUS(heliosdb_pool_leaks(pool, NULL, 0, &count), HELIOSDB_ERR_BUFFER_TOO_SMALL);
  CHECK(count == 2);
  count = 0;
  CHECK_STATUS(heliosdb_pool_leaks(pool, reports, 1, &count), HELIOSDB_ERR_BUFFER_TOO_SMALL);
  CHECK(count == 2);
  CHECK(memcmp(&reports[0], &untouched, sizeof untouched) == 0); /* nothing written */
  CHECK_STATUS(heliosdb_pool_leaks(pool, NULL, 3, &count), HELIOSDB_ERR_NULL_ARGUMENT);
  CHECK_STATUS(heliosdb_pool_leaks(pool, reports, 4, NULL), HELIOSDB_ERR_NULL_ARGUMENT);
  CHECK_STATUS(heliosdb_pool_leaks(NULL, reports, 4, &count), HELIOSDB_ERR_NULL_ARGUMENT);
  CHECK_OK(heliosdb_pool_leaks(pool, reports, 4, &count));
  CHECK(count == 2);
  int seen_site = 0;
  for (size_t i = 0; i < count; i++) {
    const heliosdb_leak_report *r = &reports[i];
    CHECK(r->level == HELIOSDB_LEAK_CRITICAL && r->held_ms >= 60);
    CHECK(strcmp(r->user, "alice") == 0);
    CHECK(r->file != NULL);
    if (r->connection_id == leaked_id) {
      /* The macro's own pointers, not copies. */
      CHECK(strcmp(r->file, __FILE__) == 0);
      CHECK(r->line == line);
      CHECK(strcmp(r->function, __func__) == 0);
      CHECK(r->metadata_count == 3); /* database, protocol, tags */
      seen_site = 1;
    } else {
      CHECK(r->connection_id == b.connection_id);
      CHECK(strstr(r->file, "HELIOSDB_POOL_ACQUIRE") != NULL); /* the placeholder */
      CHECK(r->line == 0 && r->function == NULL && r->metadata_count == 0);
    }
  }
  CHECK(seen_site);

  /* The callback saw the same (the last report may be either borrow). */
  pthread_mutex_lock(&s.lock);
  CHECK(strcmp(s.user, "alice") == 0);
  pthread_mutex_unlock(&s.lock);

  /* for_each: the same two reports, valid during the call. */
  size_t visited = 0;
  CHECK_OK(heliosdb_pool_for_each_leak(pool, on_leak, &s, &visited));
  CHECK(visited == 2);
  CHECK(atomic_load(&s.criticals) == 4); /* our direct calls above */
  pthread_mutex_lock(&s.lock);
  s.file[0] = '\0';
  pthread_mutex_unlock(&s.lock);

  /* Prometheus: the size-query convention, too small buffers untouched. */
  size_t needed = 0;
  CHECK_STATUS(heliosdb_pool_prometheus(pool, NULL, 0, &needed), HELIOSDB_ERR_BUFFER_TOO_SMALL);
  CHECK(needed > 1);
  CHECK(strstr(heliosdb_last_error_message(), "buffer too small") != NULL);
  size_t len = needed + 4096; /* slack: the text may grow */
  char *buf = malloc(len);
  CHECK(buf != NULL);
  memset(buf, 'x', len);
  size_t small = 0;
  CHECK_STATUS(heliosdb_pool_prometheus(pool, buf, 10, &small), HELIOSDB_ERR_BUFFER_TOO_SMALL);
  CHECK(small >= needed - 64 && buf[0] == 'x' && buf[9] == 'x');
  CHECK_STATUS(heliosdb_pool_prometheus(pool, buf, 10, NULL), HELIOSDB_ERR_NULL_ARGUMENT);
  CHECK_STATUS(heliosdb_pool_prometheus(pool, NULL, 10, &small), HELIOSDB_ERR_NULL_ARGUMENT);
  size_t written = 0;
  CHECK_OK(heliosdb_pool_prometheus(pool, buf, len, &written));
  CHECK(written == strlen(buf) + 1);
  CHECK(strstr(buf, "pool=\"leaky\"") != NULL);
  CHECK(strstr(buf, "heliosdb_pool_") != NULL);
  /* An exact fit works too. */
  char *exact = malloc(written);
  CHECK(exact != NULL);
  size_t again = 0;
  heliosdb_status ps = heliosdb_pool_prometheus(pool, exact, written, &again);
  CHECK(ps == HELIOSDB_OK || ps == HELIOSDB_ERR_BUFFER_TOO_SMALL); /* text may have grown */
  if (ps == HELIOSDB_OK) CHECK(strlen(exact) + 1 == again);
  free(exact);
  free(buf);

  /* Releasing the leaked borrows: counted as returned after leak. */
  CHECK_OK(heliosdb_pool_release(pool, &a));
  CHECK_OK(heliosdb_pool_release(pool, &b));
  heliosdb_pool_stats stats;
  stats.struct_size = sizeof stats;
  CHECK_OK(heliosdb_pool_get_stats(pool, &stats));
  CHECK(stats.leaks_detected == 2 && stats.leak_alerts <= 2 && stats.leak_criticals == 2);
  CHECK(stats.returned_after_leak == 2);
  CHECK(stats.sweep_passes > 0);
  CHECK_OK(heliosdb_pool_leaks(pool, NULL, 0, &count));
  CHECK(count == 0);

  heliosdb_pool_free(pool);
  CHECK(atomic_load(&s.closes) == 2 && atomic_load(&s.frees) == 1);
  pthread_mutex_destroy(&s.lock);
}

/* auto_cleanup: a critical leak is reclaimed; capacity comes back; the late release is
 * refused with HELIOSDB_ERR_RECLAIMED and closes the connection exactly once. */
static void reclaim(void) {
  state_t s;
  state_init(&s);
  heliosdb_pool_config cfg;
  base_config(&cfg);
  cfg.max_per_user = 1;
  cfg.leak_detection_threshold_ms = 100;
  cfg.leak_critical_threshold_ms = 300;
  cfg.auto_cleanup_enabled = true;
  cfg.on_leak = on_leak;
  cfg.on_reclaim = on_reclaim;
  heliosdb_pool *pool = new_pool(&cfg, &s);

  static conn_t first, second;
  uint64_t id = 0;
  CHECK_OK(heliosdb_pool_add_connection(pool, &first, "alice", NULL, &id));
  static conn_t refused;
  CHECK_STATUS(heliosdb_pool_add_connection(pool, &refused, "alice", NULL, NULL),
               HELIOSDB_ERR_USER_AT_CAPACITY);
  heliosdb_lease lease;
  CHECK_OK(HELIOSDB_POOL_ACQUIRE(pool, "alice", 1000, &lease));

  WAIT_FOR(pool, atomic_load(&s.reclaims) == 1);
  CHECK(s.reclaimed_id == id);
  CHECK(atomic_load(&first.closed) == 0); /* never closed under its holder */

  /* Capacity restored: alice may have another connection, and borrow it. */
  CHECK_OK(heliosdb_pool_add_connection(pool, &second, "alice", NULL, NULL));
  heliosdb_lease other;
  CHECK_OK(heliosdb_pool_try_acquire(pool, "alice", &other));
  CHECK(other.connection == &second);

  /* The late release: refused, and the connection is closed now, once. */
  CHECK_STATUS(heliosdb_pool_release(pool, &lease), HELIOSDB_ERR_RECLAIMED);
  CHECK(atomic_load(&first.closed) == 1);
  CHECK_STATUS(heliosdb_pool_release(pool, &lease), HELIOSDB_ERR_STALE_HANDLE);
  CHECK(atomic_load(&first.closed) == 1);
  CHECK_OK(heliosdb_pool_release(pool, &other));

  heliosdb_pool_stats stats;
  stats.struct_size = sizeof stats;
  CHECK_OK(heliosdb_pool_get_stats(pool, &stats));
  CHECK(stats.evicted_reclaimed == 1);
  CHECK(stats.total_connections == 1 && stats.active_connections == 0);

  heliosdb_pool_free(pool);
  CHECK(atomic_load(&first.closed) == 1 && atomic_load(&second.closed) == 1);
  CHECK(atomic_load(&refused.closed) == 1);
  CHECK(atomic_load(&s.frees) == 1);
  pthread_mutex_destroy(&s.lock);
}

/* A failing C health check evicts its connection; the C connect callback replaces it
 * and opens connections for users the pool has never seen. */
static void health_and_connect(void) {
  state_t s;
  state_init(&s);
  heliosdb_pool_config cfg;
  base_config(&cfg);
  cfg.leak_detection_enabled = false;
  cfg.health_check_enabled = true;
  cfg.health_check_interval_ms = 1;
  cfg.unhealthy_after_failures = 2;
  cfg.sweep_interval_ms = 5;
  cfg.health_check = health_check;
  cfg.connect = connect_cb;
  heliosdb_pool *pool = new_pool(&cfg, &s);

  static conn_t good, bad;
  atomic_store(&good.healthy, true);
  atomic_store(&bad.healthy, false);
  CHECK_OK(heliosdb_pool_add_connection(pool, &good, "alice", NULL, NULL));
  CHECK_OK(heliosdb_pool_add_connection(pool, &bad, "alice", NULL, NULL));

  heliosdb_pool_stats stats;
  stats.struct_size = sizeof stats;
  WAIT_FOR(pool, heliosdb_pool_get_stats(pool, &stats) == HELIOSDB_OK &&
                     stats.evicted_health == 1 && stats.factory_creates >= 1 &&
                     stats.total_connections == 2);
  CHECK(atomic_load(&bad.closed) == 1);
  CHECK(atomic_load(&good.closed) == 0);
  CHECK(stats.health_failures >= 2 && stats.health_checks > stats.health_failures);
  CHECK(atomic_load(&s.made_count) >= 1 && strcmp(s.made[0].user, "alice") == 0);

  /* The replacement is borrowable. (A connection being checked when we ask makes
   * us wait, and a waiter may get connect to open one more: both are fine.) */
  heliosdb_lease l1, l2;
  CHECK_OK(heliosdb_pool_acquire(pool, "alice", 10000, &l1));
  CHECK_OK(heliosdb_pool_acquire(pool, "alice", 10000, &l2));
  CHECK(l1.connection != l2.connection);
  CHECK(l1.connection != &bad && l2.connection != &bad);
  CHECK_OK(heliosdb_pool_release(pool, &l1));
  CHECK_OK(heliosdb_pool_release(pool, &l2));

  /* A user the pool has never seen: a waiting acquire asks connect for one. */
  heliosdb_lease carol;
  CHECK_OK(heliosdb_pool_acquire(pool, "carol", 10000, &carol));
  CHECK(strcmp(((conn_t *)carol.connection)->user, "carol") == 0);
  CHECK_OK(heliosdb_pool_release(pool, &carol));

  /* connect failing: the acquire times out with the callback's failure as detail. */
  heliosdb_lease none;
  CHECK_STATUS(heliosdb_pool_acquire(pool, "nobody", 300, &none), HELIOSDB_ERR_TIMEOUT);
  CHECK(atomic_load(&s.connect_failures) >= 1);
  CHECK(strstr(heliosdb_last_error_message(), "connect callback returned 7") != NULL);
  CHECK_OK(heliosdb_pool_get_stats(pool, &stats));
  CHECK(stats.factory_errors >= 1);

  heliosdb_pool_free(pool);
  CHECK(atomic_load(&good.closed) == 1);
  int made = atomic_load(&s.made_count);
  for (int i = 0; i < made; i++) CHECK(atomic_load(&s.made[i].closed) == 1);
  CHECK(atomic_load(&s.closes) == 2 + made);
  CHECK(atomic_load(&s.frees) == 1);
  pthread_mutex_destroy(&s.lock);
}

/* A caller compiled against version 1 of the config and stats structs. */
static void version_one_structs(void) {
  const size_t cfg_v1 = offsetof(heliosdb_pool_config, leak_critical_threshold_ms);
  const size_t stats_v1 = offsetof(heliosdb_pool_stats, evicted_idle);
  heliosdb_pool_config cfg;
  memset(&cfg, 0x5a, sizeof cfg);
  CHECK_OK(heliosdb_pool_config_init(&cfg, cfg_v1));
  CHECK(cfg.struct_size == cfg_v1 && cfg.max_connections == 100);
  CHECK(cfg.min_idle == (size_t)0x5a5a5a5a5a5a5a5aULL); /* nothing past version 1 */
  CHECK_OK(heliosdb_pool_config_validate(&cfg));
  heliosdb_pool *pool = NULL;
  CHECK_OK(heliosdb_pool_new(&cfg, &pool)); /* the v2 fields get their defaults */

  heliosdb_pool_stats stats;
  memset(&stats, 0x5a, sizeof stats);
  stats.struct_size = stats_v1;
  CHECK_OK(heliosdb_pool_get_stats(pool, &stats));
  CHECK(stats.total_connections == 0 && stats.acquires == 0);
  CHECK(stats.evicted_idle == 0x5a5a5a5a5a5a5a5aULL); /* untouched */
  stats.struct_size = stats_v1 + 8;
  CHECK_STATUS(heliosdb_pool_get_stats(pool, &stats), HELIOSDB_ERR_UNSUPPORTED_VERSION);
  heliosdb_pool_free(pool);

  /* Version 2's own checks. */
  CHECK_OK(heliosdb_pool_config_init(&cfg, sizeof cfg));
  CHECK(cfg.unhealthy_after_failures == 3 && cfg.name == NULL && cfg.min_idle == 0);
  cfg.leak_critical_threshold_ms = cfg.leak_detection_threshold_ms;
  CHECK_STATUS(heliosdb_pool_config_validate(&cfg), HELIOSDB_ERR_INVALID_CONFIG);
  CHECK(strstr(heliosdb_last_error_message(), "leak_critical_threshold_ms") != NULL);
  CHECK_STATUS(heliosdb_pool_new(&cfg, &pool), HELIOSDB_ERR_INVALID_CONFIG);
  cfg.leak_critical_threshold_ms = 0;
  cfg.min_idle = cfg.max_per_user + 1;
  CHECK_STATUS(heliosdb_pool_config_validate(&cfg), HELIOSDB_ERR_INVALID_CONFIG);
  CHECK_STATUS(heliosdb_pool_new(&cfg, &pool), HELIOSDB_ERR_INVALID_CONFIG);
  cfg.min_idle = 0;
  cfg.unhealthy_after_failures = 0;
  CHECK_STATUS(heliosdb_pool_config_validate(&cfg), HELIOSDB_ERR_INVALID_CONFIG);
  cfg.unhealthy_after_failures = 1;
  cfg.name = "\xff";
  CHECK_STATUS(heliosdb_pool_config_validate(&cfg), HELIOSDB_ERR_INVALID_UTF8);
  /* A failed new does not take user_data. */
  state_t s;
  state_init(&s);
  cfg.user_data = &s;
  cfg.user_data_free = free_state;
  CHECK_STATUS(heliosdb_pool_new(&cfg, &pool), HELIOSDB_ERR_INVALID_UTF8);
  CHECK(atomic_load(&s.frees) == 0);
  pthread_mutex_destroy(&s.lock);
  CHECK_STATUS(heliosdb_pool_sweep_now(NULL), HELIOSDB_ERR_NULL_ARGUMENT);
}

int main(void) {
  version_one_structs();
  leak_reports();
  reclaim();
  health_and_connect();
  printf("sweeper: ok\n");
  return 0;
}

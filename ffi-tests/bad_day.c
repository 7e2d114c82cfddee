/* A database's bad day, through the C ABI: heliosdb_pool_discard (closed exactly once,
 * counted, a waiter served by connect, every bad lease refused, a lease discarded after
 * heliosdb_pool_free), the reset callback (the next borrower sees the reset state; a
 * failing reset closes the connection), failover (heliosdb_pool_evict_all and
 * heliosdb_pool_evict_user: idle closed now, leased closed on release, a waiter served
 * by connect), the version-2 config and stats structs next to version 3, the
 * version-3 stats struct next to version 4, and a leak report naming a thread by the
 * name it set with pthread_setname_np. */
#define _GNU_SOURCE /* pthread_setname_np */

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "heliosdb_pool.h"

typedef struct {
  int session; /* 0: clean; a borrower dirties it; 13: the reset fails */
  atomic_int closed;
} conn_t;

static atomic_int closes;
static atomic_int resets;
static atomic_int frees;

static void close_conn(void *connection, void *user_data) {
  (void)user_data;
  conn_t *c = (conn_t *)connection;
  CHECK(atomic_fetch_add(&c->closed, 1) == 0); /* exactly once */
  atomic_fetch_add(&closes, 1);
  free(c);
}

static bool reset_conn(void *connection, void *user_data) {
  (void)user_data;
  conn_t *c = (conn_t *)connection;
  atomic_fetch_add(&resets, 1);
  if (c->session == 13) {
    return false;
  }
  c->session = 0;
  return true;
}

static void free_user_data(void *user_data) {
  (void)user_data;
  atomic_fetch_add(&frees, 1);
}

static conn_t *new_conn(void) {
  conn_t *c = calloc(1, sizeof *c);
  CHECK(c != NULL);
  atomic_init(&c->closed, 0);
  return c;
}

static int connect_conn(const char *user, void **out, void *user_data) {
  (void)user;
  (void)user_data;
  *out = new_conn();
  return 0;
}

static heliosdb_pool_config quiet_config(void) {
  heliosdb_pool_config config = quiet_test_config(8, 1, close_conn);
  CHECK(config.reset == NULL);
  config.user_data_free = free_user_data;
  return config;
}

static uint64_t add(heliosdb_pool *pool, const char *user) {
  uint64_t id = 0;
  CHECK_OK(heliosdb_pool_add_connection(pool, new_conn(), user, NULL, &id));
  return id;
}

/* The value of `heliosdb_pool_evictions_total{...cause="<cause>"}`, or -1. */
static long prometheus_eviction(heliosdb_pool *pool, const char *cause) {
  static char text[16384];
  size_t needed = 0;
  CHECK_OK(heliosdb_pool_prometheus(pool, text, sizeof text, &needed));
  char label[64];
  snprintf(label, sizeof label, "cause=\"%s\"} ", cause);
  for (char *line = strstr(text, "heliosdb_pool_evictions_total{"); line != NULL;
       line = strstr(line + 1, "heliosdb_pool_evictions_total{")) {
    char *end = strchr(line, '\n');
    char *at = strstr(line, label);
    if (at != NULL && (end == NULL || at < end)) {
      return strtol(at + strlen(label), NULL, 10);
    }
  }
  return -1;
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

typedef struct {
  heliosdb_pool *pool;
  const char *user;
  heliosdb_status status;
  uint64_t connection_id;
} waiter_t;

static void *wait_for_user(void *arg) {
  waiter_t *w = (waiter_t *)arg;
  heliosdb_lease lease;
  w->status = HELIOSDB_POOL_ACQUIRE(w->pool, w->user, 10000, &lease);
  if (w->status == HELIOSDB_OK) {
    w->connection_id = lease.connection_id;
    CHECK_OK(heliosdb_pool_release(w->pool, &lease));
  }
  return NULL;
}

static void wait_for_waiters(heliosdb_pool *pool, size_t n) {
  for (int i = 0; stats_of(pool).waiting != n; i++) {
    CHECK(i < 5000);
    sleep_ms(1);
  }
}

static void discard(void) {
  atomic_store(&closes, 0);
  heliosdb_pool_config config = quiet_config();
  config.connect = connect_conn;
  heliosdb_pool *pool = NULL, *other = NULL;
  CHECK_OK(heliosdb_pool_new(&config, &pool));
  heliosdb_pool_config other_config = quiet_config();
  other_config.user_data_free = NULL;
  CHECK_OK(heliosdb_pool_new(&other_config, &other));
  uint64_t first = add(pool, "alice");
  add(other, "alice");

  heliosdb_lease lease, foreign;
  CHECK_OK(HELIOSDB_POOL_ACQUIRE(pool, "alice", 0, &lease));
  CHECK_OK(HELIOSDB_POOL_ACQUIRE(other, "alice", 0, &foreign));
  /* Every bad lease is refused, as by heliosdb_pool_release, and changes nothing. */
  CHECK_STATUS(heliosdb_pool_discard(NULL, &lease), HELIOSDB_ERR_NULL_ARGUMENT);
  CHECK_STATUS(heliosdb_pool_discard(pool, NULL), HELIOSDB_ERR_NULL_ARGUMENT);
  CHECK_STATUS(heliosdb_pool_discard(pool, &foreign), HELIOSDB_ERR_FOREIGN_HANDLE);
  heliosdb_lease forged = lease;
  forged.handle ^= 1;
  CHECK_STATUS(heliosdb_pool_discard(pool, &forged), HELIOSDB_ERR_STALE_HANDLE);
  forged = lease;
  forged.connection_id += (uint64_t)1 << 24; /* another connection in the same slot */
  CHECK_STATUS(heliosdb_pool_discard(pool, &forged), HELIOSDB_ERR_STALE_HANDLE);
  CHECK(atomic_load(&closes) == 0);

  /* At max_per_user: the waiter can only be served by a new connection. */
  waiter_t w = {pool, "alice", HELIOSDB_ERR_TIMEOUT, 0};
  pthread_t t;
  CHECK(pthread_create(&t, NULL, wait_for_user, &w) == 0);
  wait_for_waiters(pool, 1);
  CHECK_OK(heliosdb_pool_discard(pool, &lease));
  CHECK(atomic_load(&closes) == 1); /* closed before the call returned */
  CHECK(pthread_join(t, NULL) == 0);
  CHECK(w.status == HELIOSDB_OK && w.connection_id != first);

  CHECK_STATUS(heliosdb_pool_discard(pool, &lease), HELIOSDB_ERR_STALE_HANDLE);
  CHECK_STATUS(heliosdb_pool_release(pool, &lease), HELIOSDB_ERR_STALE_HANDLE);
  CHECK(atomic_load(&closes) == 1); /* exactly once */
  heliosdb_pool_stats s = stats_of(pool);
  CHECK(s.evicted_discarded == 1 && s.evicted_removed == 0 && s.total_connections == 1);
  CHECK(prometheus_eviction(pool, "discarded") == 1);
  CHECK(prometheus_eviction(pool, "detached") == 0);

  /* A lease discarded after the pool was freed: closed, and the last owner frees. */
  atomic_store(&frees, 0);
  CHECK_OK(HELIOSDB_POOL_ACQUIRE(pool, "alice", 0, &lease));
  heliosdb_pool_free(pool);
  CHECK(atomic_load(&frees) == 0);
  CHECK(atomic_load(&closes) == 1);
  CHECK_OK(heliosdb_pool_discard(pool, &lease));
  CHECK(atomic_load(&closes) == 2 && atomic_load(&frees) == 1);

  CHECK_OK(heliosdb_pool_release(other, &foreign));
  heliosdb_pool_free(other);
  CHECK(atomic_load(&closes) == 3);
}

static void reset(void) {
  atomic_store(&closes, 0);
  atomic_store(&resets, 0);
  heliosdb_pool_config config = quiet_config();
  config.reset = reset_conn;
  heliosdb_pool *pool = NULL;
  CHECK_OK(heliosdb_pool_new(&config, &pool));
  add(pool, "alice");

  heliosdb_lease lease;
  CHECK_OK(HELIOSDB_POOL_ACQUIRE(pool, "alice", 0, &lease));
  ((conn_t *)lease.connection)->session = 7; /* e.g. a transaction left open */
  CHECK_OK(heliosdb_pool_release(pool, &lease));
  CHECK(atomic_load(&resets) == 1);
  CHECK_OK(HELIOSDB_POOL_ACQUIRE(pool, "alice", 0, &lease));
  CHECK(((conn_t *)lease.connection)->session == 0); /* the next borrower: reset */
  /* Not run on discard, nor on a refused release. */
  CHECK_STATUS(heliosdb_pool_release(NULL, &lease), HELIOSDB_ERR_NULL_ARGUMENT);
  CHECK_OK(heliosdb_pool_discard(pool, &lease));
  CHECK_STATUS(heliosdb_pool_release(pool, &lease), HELIOSDB_ERR_STALE_HANDLE);
  CHECK(atomic_load(&resets) == 1 && atomic_load(&closes) == 1);

  /* A failing reset closes the connection; the release itself succeeds. */
  add(pool, "alice");
  CHECK_OK(HELIOSDB_POOL_ACQUIRE(pool, "alice", 0, &lease));
  ((conn_t *)lease.connection)->session = 13;
  CHECK_OK(heliosdb_pool_release(pool, &lease));
  CHECK(atomic_load(&resets) == 2 && atomic_load(&closes) == 2);
  CHECK_STATUS(HELIOSDB_POOL_TRY_ACQUIRE(pool, "alice", &lease), HELIOSDB_ERR_NO_IDLE_CONNECTION);
  heliosdb_pool_stats s = stats_of(pool);
  CHECK(s.evicted_reset_failed == 1 && s.evicted_discarded == 1 && s.total_connections == 0);
  CHECK(prometheus_eviction(pool, "reset_failed") == 1);
  heliosdb_pool_free(pool);
  CHECK(atomic_load(&closes) == 2);
}

static void failover(void) {
  atomic_store(&closes, 0);
  heliosdb_pool_config config = quiet_config();
  config.max_per_user = 3;
  config.connect = connect_conn;
  heliosdb_pool *pool = NULL;
  CHECK_OK(heliosdb_pool_new(&config, &pool));
  uint64_t old[3] = {add(pool, "alice"), add(pool, "alice"), add(pool, "alice")};
  add(pool, "bob");

  size_t count = 99;
  CHECK_STATUS(heliosdb_pool_evict_user(NULL, "alice", &count), HELIOSDB_ERR_NULL_ARGUMENT);
  CHECK_STATUS(heliosdb_pool_evict_user(pool, NULL, &count), HELIOSDB_ERR_NULL_ARGUMENT);
  CHECK_STATUS(heliosdb_pool_evict_user(pool, "carol", &count), HELIOSDB_ERR_UNKNOWN_USER);
  CHECK_STATUS(heliosdb_pool_evict_user(pool, "\xff", &count), HELIOSDB_ERR_INVALID_UTF8);
  CHECK_STATUS(heliosdb_pool_evict_all(NULL, &count), HELIOSDB_ERR_NULL_ARGUMENT);
  CHECK(count == 99); /* nothing written on failure */
  CHECK(atomic_load(&closes) == 0);

  /* Every alice connection leased: a waiter needs a new one. */
  heliosdb_lease leases[3];
  for (int i = 0; i < 3; i++) CHECK_OK(HELIOSDB_POOL_ACQUIRE(pool, "alice", 0, &leases[i]));
  waiter_t w = {pool, "alice", HELIOSDB_ERR_TIMEOUT, 0};
  pthread_t t;
  CHECK(pthread_create(&t, NULL, wait_for_user, &w) == 0);
  wait_for_waiters(pool, 1);
  CHECK_OK(heliosdb_pool_evict_user(pool, "alice", &count));
  CHECK(count == 3);
  CHECK(atomic_load(&closes) == 0); /* nothing closed under its holder */
  CHECK_OK(heliosdb_pool_release(pool, &leases[0]));
  CHECK(atomic_load(&closes) == 1); /* closed on release */
  CHECK(pthread_join(t, NULL) == 0);
  CHECK(w.status == HELIOSDB_OK);
  for (int i = 0; i < 3; i++) CHECK(w.connection_id != old[i]); /* from connect */
  CHECK_OK(heliosdb_pool_discard(pool, &leases[1])); /* discarded: counted as failover */
  CHECK_OK(heliosdb_pool_release(pool, &leases[2]));
  CHECK(atomic_load(&closes) == 3);

  /* evict_all: the idle ones (the waiter's new connection, bob's) closed now. */
  CHECK_OK(heliosdb_pool_evict_all(pool, NULL));
  CHECK(atomic_load(&closes) == 5);
  heliosdb_pool_stats s = stats_of(pool);
  CHECK(s.evicted_failover == 5 && s.evicted_discarded == 0 && s.evicted_removed == 0);
  CHECK(s.idle_connections == 0);
  CHECK(prometheus_eviction(pool, "failover") == 5);
  CHECK_OK(heliosdb_pool_evict_all(pool, &count));
  CHECK(count == 0);
  heliosdb_pool_free(pool);
}

/* A caller compiled against version 2 of the config and stats structs. */
static void version_two_structs(void) {
  const size_t cfg_v2 = offsetof(heliosdb_pool_config, reset);
  const size_t stats_v2 = offsetof(heliosdb_pool_stats, evicted_discarded);
  heliosdb_pool_config cfg;
  memset(&cfg, 0x5a, sizeof cfg);
  CHECK_OK(heliosdb_pool_config_init(&cfg, cfg_v2));
  CHECK(cfg.struct_size == cfg_v2 && cfg.min_idle == 0 && cfg.name == NULL);
  uintptr_t reset_bits;
  memcpy(&reset_bits, (const char *)&cfg + cfg_v2, sizeof reset_bits);
  CHECK(reset_bits == (uintptr_t)0x5a5a5a5a5a5a5a5aULL); /* nothing past version 2 */
  CHECK_OK(heliosdb_pool_config_validate(&cfg));
  cfg.close = close_conn;
  heliosdb_pool *pool = NULL;
  CHECK_OK(heliosdb_pool_new(&cfg, &pool)); /* the garbage `reset` is never read */
  add(pool, "alice");
  heliosdb_lease lease;
  CHECK_OK(HELIOSDB_POOL_ACQUIRE(pool, "alice", 0, &lease));
  CHECK_OK(heliosdb_pool_release(pool, &lease)); /* no reset called */
  CHECK_OK(HELIOSDB_POOL_ACQUIRE(pool, "alice", 0, &lease));
  CHECK_OK(heliosdb_pool_discard(pool, &lease));

  heliosdb_pool_stats stats;
  memset(&stats, 0x5a, sizeof stats);
  stats.struct_size = stats_v2;
  CHECK_OK(heliosdb_pool_get_stats(pool, &stats));
  CHECK(stats.acquires == 2 && stats.evicted_removed == 0);
  CHECK(stats.evicted_discarded == 0x5a5a5a5a5a5a5a5aULL); /* untouched */
  stats.struct_size = stats_v2 + 8;
  CHECK_STATUS(heliosdb_pool_get_stats(pool, &stats), HELIOSDB_ERR_UNSUPPORTED_VERSION);
  stats.struct_size = sizeof stats;
  CHECK_OK(heliosdb_pool_get_stats(pool, &stats));
  CHECK(stats.evicted_discarded == 1 && stats.evicted_detached == 0);
  heliosdb_pool_free(pool);

  cfg.struct_size = cfg_v2 + 4; /* (cfg_v2 + 8 is version 3, + 16 version 4) */
  CHECK_STATUS(heliosdb_pool_config_validate(&cfg), HELIOSDB_ERR_UNSUPPORTED_VERSION);
}

/* A caller compiled against version 3 of the stats struct (it ends at
 * evicted_failover), every size between versions 3 and 4, and version 4's fields. */
static void version_three_stats(void) {
  const size_t stats_v3 = offsetof(heliosdb_pool_stats, spin_acquires);
  heliosdb_pool_config config = quiet_config();
  heliosdb_pool *pool = NULL;
  CHECK_OK(heliosdb_pool_new(&config, &pool));
  add(pool, "alice");
  CHECK_OK(heliosdb_pool_evict_all(pool, NULL)); /* version 3's last field: 1 */

  heliosdb_pool_stats stats;
  memset(&stats, 0x5a, sizeof stats);
  stats.struct_size = stats_v3;
  CHECK_OK(heliosdb_pool_get_stats(pool, &stats));
  CHECK(stats.struct_size == stats_v3 && stats.evicted_failover == 1);
  for (size_t i = stats_v3; i < sizeof stats; i++) {
    CHECK(((const unsigned char *)&stats)[i] == 0x5a); /* nothing past version 3 */
  }
  for (size_t size = stats_v3 + 1; size < sizeof stats; size++) {
    heliosdb_pool_stats before;
    stats.struct_size = size;
    memcpy(&before, &stats, sizeof stats);
    CHECK_STATUS(heliosdb_pool_get_stats(pool, &stats), HELIOSDB_ERR_UNSUPPORTED_VERSION);
    CHECK(memcmp(&stats, &before, sizeof stats) == 0); /* nothing written */
  }
  stats.struct_size = sizeof stats;
  CHECK_OK(heliosdb_pool_get_stats(pool, &stats));
  CHECK(stats.evicted_failover == 1);
  /* Version 4's fields: nothing spun, retired or connecting yet. */
  CHECK(stats.spin_acquires == 0 && stats.users_retired == 0 && stats.connects_in_flight == 0);
  heliosdb_pool_free(pool);
}

typedef struct {
  heliosdb_pool *pool;
  atomic_int stage; /* 1: holding a lease; 2: may release */
  long tid;
} named_t;

static void *named_worker(void *arg) {
  named_t *n = (named_t *)arg;
  CHECK(pthread_setname_np(pthread_self(), "worker-3") == 0); /* before any pool call */
  n->tid = (long)syscall(SYS_gettid);
  heliosdb_lease lease;
  CHECK_OK(HELIOSDB_POOL_ACQUIRE(n->pool, "alice", 0, &lease));
  atomic_store(&n->stage, 1);
  while (atomic_load(&n->stage) != 2) sleep_ms(1);
  CHECK_OK(heliosdb_pool_release(n->pool, &lease));
  return NULL;
}

/* A leak report names a C thread by the name it gave itself, with its kernel id. */
static void thread_names(void) {
  heliosdb_pool_config config = quiet_config();
  config.leak_detection_enabled = true;
  config.leak_detection_threshold_ms = 20;
  heliosdb_pool *pool = NULL;
  CHECK_OK(heliosdb_pool_new(&config, &pool));
  add(pool, "alice");
  named_t n = {pool, 0, 0};
  pthread_t t;
  CHECK(pthread_create(&t, NULL, named_worker, &n) == 0);
  while (atomic_load(&n.stage) != 1) sleep_ms(1);
  heliosdb_leak_report reports[4];
  size_t count = 0;
  for (int i = 0; count == 0; i++) {
    CHECK(i < 5000);
    sleep_ms(1);
    CHECK_OK(heliosdb_pool_leaks(pool, reports, 4, &count));
  }
  CHECK(count == 1 && reports[0].thread != NULL);
  char expected[64];
  snprintf(expected, sizeof expected, "worker-3 (tid %ld)", n.tid);
  if (strcmp(reports[0].thread, expected) != 0) {
    fprintf(stderr, "thread: %s, expected %s\n", reports[0].thread, expected);
    CHECK(0);
  }
  atomic_store(&n.stage, 2);
  CHECK(pthread_join(t, NULL) == 0);
  heliosdb_pool_free(pool);
}

/* A lease that declared a long hold is not reported within it; withdrawn, it is. The
 * lease is checked like a release. */
static void expect_hold(void) {
  heliosdb_pool_config config = quiet_config();
  config.leak_detection_enabled = true;
  config.leak_detection_threshold_ms = 20;
  heliosdb_pool *pool = NULL;
  CHECK_OK(heliosdb_pool_new(&config, &pool));
  add(pool, "alice");
  heliosdb_lease lease;
  CHECK_OK(HELIOSDB_POOL_ACQUIRE(pool, "alice", 0, &lease));
  CHECK_OK(heliosdb_pool_expect_hold(pool, &lease, 3600u * 1000u));
  sleep_ms(60);
  heliosdb_leak_report reports[4];
  size_t count = 9;
  CHECK_OK(heliosdb_pool_leaks(pool, reports, 4, &count));
  CHECK(count == 0);
  CHECK_OK(heliosdb_pool_expect_hold(pool, &lease, 0)); /* withdrawn */
  CHECK_OK(heliosdb_pool_leaks(pool, reports, 4, &count));
  CHECK(count == 1 && reports[0].connection_id == lease.connection_id);

  heliosdb_lease forged = lease;
  forged.handle += 7;
  CHECK(heliosdb_pool_expect_hold(pool, &forged, 1000) == HELIOSDB_ERR_STALE_HANDLE);
  forged = lease;
  forged.pool = NULL;
  CHECK(heliosdb_pool_expect_hold(pool, &forged, 1000) == HELIOSDB_ERR_FOREIGN_HANDLE);
  CHECK(heliosdb_pool_expect_hold(pool, NULL, 1000) == HELIOSDB_ERR_NULL_ARGUMENT);
  CHECK(heliosdb_pool_expect_hold(NULL, &lease, 1000) == HELIOSDB_ERR_NULL_ARGUMENT);
  CHECK_OK(heliosdb_pool_release(pool, &lease));
  CHECK(heliosdb_pool_expect_hold(pool, &lease, 1000) == HELIOSDB_ERR_STALE_HANDLE);
  heliosdb_pool_free(pool);
}

static atomic_int evictions;
static uint64_t evicted_id;
static heliosdb_pool *evicting_pool;

static void on_evict(uint64_t connection_id, const char *user, const char *cause,
                     void *user_data) {
  (void)user_data;
  CHECK(strcmp(user, "alice") == 0 && strcmp(cause, "idle") == 0);
  CHECK(atomic_load(&closes) == atomic_load(&evictions) + 1); /* closed first */
  evicted_id = connection_id;
  add(evicting_pool, "alice"); /* the service's replacement */
  atomic_fetch_add(&evictions, 1);
}

/* Without connect or on_evict, idle eviction closes nothing (nothing could replace the
 * connection); with on_evict it does, and tells the callback, which adds a new one. A
 * version-3 config (before on_evict) still works. */
static void on_evict_and_idle_eviction(void) {
  for (int with_hook = 0; with_hook < 2; with_hook++) {
    atomic_store(&closes, 0);
    heliosdb_pool_config config = quiet_config();
    config.idle_timeout_ms = 20;
    if (with_hook) config.on_evict = on_evict;
    heliosdb_pool *pool = NULL;
    CHECK_OK(heliosdb_pool_new(&config, &pool));
    evicting_pool = pool;
    uint64_t first = add(pool, "alice");
    CHECK_OK(heliosdb_pool_sweep_now(pool)); /* seen idle from now */
    sleep_ms(40);
    CHECK_OK(heliosdb_pool_sweep_now(pool));
    heliosdb_pool_stats s = stats_of(pool);
    if (with_hook) {
      CHECK(atomic_load(&evictions) == 1 && evicted_id == first);
      CHECK(atomic_load(&closes) == 1 && s.evicted_idle == 1 && s.total_connections == 1);
    } else {
      CHECK(atomic_load(&closes) == 0 && s.evicted_idle == 0 && s.total_connections == 1);
    }
    heliosdb_pool_free(pool);
  }

  const size_t cfg_v3 = offsetof(heliosdb_pool_config, on_evict);
  heliosdb_pool_config cfg;
  memset(&cfg, 0x5a, sizeof cfg);
  CHECK_OK(heliosdb_pool_config_init(&cfg, cfg_v3));
  CHECK(cfg.struct_size == cfg_v3 && cfg.reset == NULL);
  uintptr_t bits;
  memcpy(&bits, (const char *)&cfg + cfg_v3, sizeof bits);
  CHECK(bits == (uintptr_t)0x5a5a5a5a5a5a5a5aULL); /* nothing past version 3 */
  cfg.close = close_conn;
  cfg.user_data_free = NULL;
  heliosdb_pool *pool = NULL;
  CHECK_OK(heliosdb_pool_new(&cfg, &pool)); /* the garbage `on_evict` is never read */
  add(pool, "alice");
  heliosdb_pool_free(pool);
  cfg.struct_size = cfg_v3 + 4;
  CHECK_STATUS(heliosdb_pool_config_validate(&cfg), HELIOSDB_ERR_UNSUPPORTED_VERSION);
}

static atomic_int checks;

/* Alive unless its session says 99 (the server closed it). */
static bool check_conn(void *connection, void *user_data) {
  (void)user_data;
  atomic_fetch_add(&checks, 1);
  return ((conn_t *)connection)->session != 99;
}

/* Validation on borrow: a dead idle connection is closed (evicted_health), never
 * handed out; with the default 500 ms window a connection just released is not
 * checked. */
static void validate_on_borrow(void) {
  heliosdb_pool_config config = quiet_config();
  CHECK(config.validate_after_ms == 500);
  config.health_check = check_conn;
  config.health_check_enabled = true;
  config.health_check_interval_ms = 3600u * 1000u;
  config.max_per_user = 2;
  heliosdb_pool *pool = NULL;
  CHECK_OK(heliosdb_pool_new(&config, &pool));
  add(pool, "alice");
  heliosdb_lease lease;
  for (int i = 0; i < 20; i++) { /* steady use: no check */
    CHECK_OK(HELIOSDB_POOL_ACQUIRE(pool, "alice", 0, &lease));
    CHECK_OK(heliosdb_pool_release(pool, &lease));
  }
  CHECK(atomic_load(&checks) == 0);
  heliosdb_pool_free(pool);

  atomic_store(&closes, 0);
  config.validate_after_ms = 0; /* check every borrow */
  CHECK_OK(heliosdb_pool_new(&config, &pool));
  uint64_t dead = add(pool, "alice");
  uint64_t live = add(pool, "alice");
  CHECK_OK(HELIOSDB_POOL_ACQUIRE(pool, "alice", 0, &lease));
  CHECK(lease.connection_id == dead);
  ((conn_t *)lease.connection)->session = 99;
  CHECK_OK(heliosdb_pool_release(pool, &lease));
  CHECK_OK(HELIOSDB_POOL_ACQUIRE(pool, "alice", 0, &lease));
  CHECK(lease.connection_id == live);
  heliosdb_pool_stats s = stats_of(pool);
  CHECK(s.evicted_health == 1 && s.health_failures == 1 && atomic_load(&closes) == 1);
  CHECK_OK(heliosdb_pool_release(pool, &lease));
  heliosdb_pool_free(pool);
}

int main(void) {
  validate_on_borrow();
  on_evict_and_idle_eviction();
  expect_hold();
  thread_names();
  discard();
  reset();
  failover();
  version_two_structs();
  version_three_stats();
  printf("bad_day: ok\n");
  return 0;
}

/* The connection factory per user, through the C ABI (config version 5):
 * connect_with_metadata's metadata in leak reports; a failing user's error and backoff
 * in the timeout message while another user is served; the bound on concurrent
 * connects (max_concurrent_connects, counted in flight with an atomic maximum); a bad
 * metadata string is a failed connect whose connection is closed; a version-4 config
 * with the old connect; a connect in flight (in the stats' connects_in_flight) during
 * heliosdb_pool_free (closed exactly once, through close, before user_data_free, which
 * frees the user data those callbacks use: ASan and valgrind see any use after it). */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "heliosdb_pool.h"

/* A connection owns the strings its metadata points to: valid until close. */
typedef struct {
  char database[32];
  const char *tags[2];
  char tag[32];
  atomic_int closed;
} conn_t;

/* The callbacks' user data, heap-allocated and freed by user_data_free. */
typedef struct {
  atomic_int connects;
  atomic_int made;
  atomic_int closes;
  atomic_int in_flight;
  atomic_int max_in_flight;
  int connect_ms;                 /* how long each connect takes */
  atomic_int gate;                /* 1: connects wait until it is 0 */
  atomic_int *freed;              /* set by user_data_free (outlives the state) */
} state_t;

/* Counts that outlive a pool's user data. */
static atomic_int g_closes;
static atomic_int g_made;

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static void close_conn(void *connection, void *user_data) {
  state_t *s = (state_t *)user_data;
  conn_t *c = (conn_t *)connection;
  CHECK(atomic_fetch_add(&c->closed, 1) == 0); /* exactly once */
  /* Before user_data_free: reading s after it would be a use after free. */
  CHECK(atomic_load(s->freed) == 0);
  atomic_fetch_add(&s->closes, 1);
  atomic_fetch_add(&g_closes, 1);
  free(c);
}

static void free_state(void *user_data) {
  state_t *s = (state_t *)user_data;
  atomic_store(s->freed, 1);
  free(s);
}

static conn_t *open_conn(state_t *s, const char *user) {
  atomic_fetch_add(&s->connects, 1);
  int now = atomic_fetch_add(&s->in_flight, 1) + 1;
  int seen = atomic_load(&s->max_in_flight);
  while (now > seen && !atomic_compare_exchange_weak(&s->max_in_flight, &seen, now)) {
  }
  while (atomic_load(&s->gate) != 0) {
    sleep_ms(1);
  }
  if (s->connect_ms > 0) {
    sleep_ms(s->connect_ms);
  }
  atomic_fetch_sub(&s->in_flight, 1);
  if (strcmp(user, "mallory") == 0) {
    heliosdb_callback_set_error("role \"mallory\" does not exist");
    return NULL;
  }
  conn_t *c = calloc(1, sizeof *c);
  CHECK(c != NULL);
  atomic_init(&c->closed, 0);
  snprintf(c->database, sizeof c->database, "orders-%s", user);
  snprintf(c->tag, sizeof c->tag, "for-%s", user);
  c->tags[0] = "primary";
  c->tags[1] = c->tag;
  atomic_fetch_add(&s->made, 1);
  atomic_fetch_add(&g_made, 1);
  return c;
}

static int32_t connect_md(const char *user, void **out_connection,
                          heliosdb_connection_metadata *out_metadata, void *user_data) {
  state_t *s = (state_t *)user_data;
  CHECK(out_metadata != NULL && out_metadata->struct_size == sizeof *out_metadata);
  CHECK(out_metadata->database == NULL && out_metadata->tag_count == 0);
  conn_t *c = open_conn(s, user);
  if (c == NULL) {
    return 7;
  }
  if (strcmp(user, "badutf8") == 0) {
    c->database[0] = (char)0xff; /* invalid UTF-8: refused, and c closed */
  }
  out_metadata->database = c->database;
  out_metadata->protocol = "postgres";
  out_metadata->remote_addr = "10.0.0.7:5432";
  out_metadata->tags = c->tags;
  out_metadata->tag_count = 2;
  *out_connection = c;
  return 0;
}

static int32_t connect_plain(const char *user, void **out_connection, void *user_data) {
  conn_t *c = open_conn((state_t *)user_data, user);
  if (c == NULL) {
    return 7;
  }
  *out_connection = c;
  return 0;
}

static state_t *new_state(atomic_int *freed) {
  state_t *s = calloc(1, sizeof *s);
  CHECK(s != NULL);
  s->freed = freed;
  return s;
}

static heliosdb_pool_config base_config(state_t *s) {
  heliosdb_pool_config cfg;
  CHECK_OK(heliosdb_pool_config_init(&cfg, sizeof cfg));
  CHECK(cfg.max_concurrent_connects == 4); /* the documented default */
  CHECK(cfg.connect_with_metadata == NULL);
  cfg.max_connections = 20;
  cfg.max_per_user = 4;
  cfg.idle_timeout_ms = 0;
  cfg.max_connection_age_ms = 0;
  cfg.health_check_enabled = false;
  cfg.close = close_conn;
  cfg.connect_with_metadata = connect_md;
  cfg.user_data = s;
  cfg.user_data_free = free_state;
  return cfg;
}

static const char *entry(const heliosdb_leak_report *r, const char *key) {
  for (size_t i = 0; i < r->metadata_count; i++) {
    if (strcmp(r->metadata[i].key, key) == 0) {
      return r->metadata[i].value;
    }
  }
  return NULL;
}

static void metadata_backoff_and_bad_metadata(void) {
  atomic_int freed = 0;
  state_t *s = new_state(&freed);
  heliosdb_pool_config cfg = base_config(s);
  cfg.leak_detection_enabled = true;
  cfg.leak_detection_threshold_ms = 20;
  cfg.sweep_interval_ms = 3600000;
  heliosdb_pool *pool = NULL;
  CHECK_OK(heliosdb_pool_new(&cfg, &pool));

  heliosdb_lease alice;
  CHECK_OK(HELIOSDB_POOL_ACQUIRE(pool, "alice", 2000, &alice));
  sleep_ms(40);
  heliosdb_leak_report reports[2];
  size_t count = 0;
  CHECK_OK(heliosdb_pool_leaks(pool, reports, 2, &count));
  CHECK(count == 1);
  CHECK(strcmp(entry(&reports[0], "database"), "orders-alice") == 0);
  CHECK(strcmp(entry(&reports[0], "protocol"), "postgres") == 0);
  CHECK(strcmp(entry(&reports[0], "remote_addr"), "10.0.0.7:5432") == 0);
  CHECK(strcmp(entry(&reports[0], "tags"), "primary,for-alice") == 0);

  /* mallory fails; her callers time out with the reason and the backoff. */
  heliosdb_lease lease;
  CHECK_STATUS(heliosdb_pool_acquire(pool, "mallory", 300, &lease), HELIOSDB_ERR_TIMEOUT);
  const char *message = heliosdb_last_error_message();
  CHECK(strstr(message, "role \"mallory\" does not exist") != NULL);
  CHECK(strstr(message, "in a row, next retry in") != NULL);
  /* ... while bob is served at once. */
  heliosdb_lease bob;
  CHECK_OK(HELIOSDB_POOL_ACQUIRE(pool, "bob", 2000, &bob));
  CHECK_OK(heliosdb_pool_release(pool, &bob));

  /* Metadata that is not UTF-8: a failed connect; its connection closed. */
  int closes = atomic_load(&s->closes);
  CHECK_STATUS(heliosdb_pool_acquire(pool, "badutf8", 200, &lease), HELIOSDB_ERR_TIMEOUT);
  CHECK(strstr(heliosdb_last_error_message(), "metadata") != NULL);
  CHECK(atomic_load(&s->closes) > closes);

  CHECK_OK(heliosdb_pool_release(pool, &alice));
  heliosdb_pool_free(pool);
  CHECK(atomic_load(&freed) == 1);
}

typedef struct {
  heliosdb_pool *pool;
  char user[32];
} caller_t;

static void *acquire_once(void *arg) {
  caller_t *c = (caller_t *)arg;
  heliosdb_lease lease;
  CHECK_OK(HELIOSDB_POOL_ACQUIRE(c->pool, c->user, 5000, &lease));
  CHECK_OK(heliosdb_pool_release(c->pool, &lease));
  return NULL;
}

static void the_bound_holds(void) {
  atomic_int freed = 0;
  state_t *s = new_state(&freed);
  s->connect_ms = 30;
  heliosdb_pool_config cfg = base_config(s);
  cfg.max_concurrent_connects = 2;
  heliosdb_pool *pool = NULL;
  CHECK_OK(heliosdb_pool_new(&cfg, &pool));
  enum { N = 8 };
  pthread_t threads[N];
  caller_t callers[N];
  for (int i = 0; i < N; i++) {
    callers[i].pool = pool;
    snprintf(callers[i].user, sizeof callers[i].user, "user-%d", i);
    CHECK(pthread_create(&threads[i], NULL, acquire_once, &callers[i]) == 0);
  }
  for (int i = 0; i < N; i++) {
    CHECK(pthread_join(threads[i], NULL) == 0);
  }
  int max = atomic_load(&s->max_in_flight);
  printf("factory: %d connects, at most %d at once (bound 2)\n", atomic_load(&s->connects), max);
  CHECK(max >= 1 && max <= 2);
  heliosdb_pool_free(pool);
  CHECK(atomic_load(&freed) == 1);
}

static void a_version_4_config_with_the_old_connect(void) {
  atomic_int freed = 0;
  state_t *s = new_state(&freed);
  heliosdb_pool_config cfg = base_config(s);
  cfg.connect_with_metadata = NULL;
  cfg.connect = connect_plain;
  cfg.max_concurrent_connects = 0;
  CHECK_STATUS(heliosdb_pool_config_validate(&cfg), HELIOSDB_ERR_INVALID_CONFIG);
  CHECK(strstr(heliosdb_last_error_message(), "max_concurrent_connects") != NULL);
  /* An older caller's struct ends before the version-5 fields: the default bound. */
  cfg.struct_size = offsetof(heliosdb_pool_config, max_users);
  heliosdb_pool *pool = NULL;
  CHECK_OK(heliosdb_pool_new(&cfg, &pool));
  heliosdb_lease lease;
  CHECK_OK(HELIOSDB_POOL_ACQUIRE(pool, "carol", 2000, &lease));
  CHECK_OK(heliosdb_pool_release(pool, &lease));
  heliosdb_pool_free(pool);
  CHECK(atomic_load(&freed) == 1);
}

static void *open_gate_later(void *arg) {
  sleep_ms(100);
  atomic_store(&((state_t *)arg)->gate, 0);
  return NULL;
}

static void a_connect_in_flight_during_free(void) {
  atomic_int freed = 0;
  state_t *s = new_state(&freed);
  atomic_store(&s->gate, 1);
  heliosdb_pool_config cfg = base_config(s);
  cfg.min_idle = 1; /* the sweeper asks for it: nobody waits */
  cfg.sweep_interval_ms = 5;
  heliosdb_pool *pool = NULL;
  CHECK_OK(heliosdb_pool_new(&cfg, &pool));
  conn_t *first = calloc(1, sizeof *first);
  CHECK(first != NULL);
  atomic_init(&first->closed, 0);
  CHECK_OK(heliosdb_pool_add_connection(pool, first, "alice", NULL, NULL));
  heliosdb_lease held;
  CHECK_OK(HELIOSDB_POOL_ACQUIRE(pool, "alice", 0, &held));
  for (int i = 0; i < 2000 && atomic_load(&s->in_flight) == 0; i++) {
    sleep_ms(1);
  }
  CHECK(atomic_load(&s->in_flight) == 1);
  CHECK(stats_of(pool).connects_in_flight == 1); /* held at the gate */
  pthread_t opener;
  CHECK(pthread_create(&opener, NULL, open_gate_later, s) == 0);
  CHECK_OK(heliosdb_pool_release(pool, &held));
  /* Waits for the connect; its connection is closed through close, never added. */
  int closes_before = atomic_load(&g_closes);
  int made_before = atomic_load(&g_made);
  heliosdb_pool_free(pool);
  CHECK(pthread_join(opener, NULL) == 0);
  CHECK(atomic_load(&freed) == 1);
  /* The connect made one connection while free waited; it and `first` were closed,
   * each exactly once (close checks that), before user_data_free. */
  CHECK(atomic_load(&g_made) == made_before + 1);
  CHECK(atomic_load(&g_closes) == closes_before + 2);
}

int main(void) {
  metadata_backoff_and_bad_metadata();
  the_bound_holds();
  a_version_4_config_with_the_old_connect();
  a_connect_in_flight_during_free();
  printf("factory: ok\n");
  return 0;
}

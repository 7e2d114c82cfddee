/* The promises at the edges, through the C ABI: a lease is refused after its slot's
 * generation wrapped 32 bits or when its connection id is changed; a thread's cached
 * affinity never hands a user another user's connection; a waiter at max_per_user is
 * served when a removed borrow closes on return; heliosdb_pool_sweep_now from a sweeper
 * callback is refused; config flags are read as bytes; contradictory configs are
 * refused; and heliosdb_pool_free racing a release on another thread, round after
 * round (HELIOSDB_RACE_ROUNDS, default 2000), frees everything exactly once. */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "heliosdb_pool.h"

#define WRAP32 ((uint64_t)1 << 32)
#define WRAP48 ((uint64_t)1 << 48)

typedef struct {
  char user[16];
  atomic_int closed;
} conn_t;

static atomic_int closes;
static atomic_int frees;

static void close_conn(void *connection, void *user_data) {
  (void)user_data;
  conn_t *c = (conn_t *)connection;
  CHECK(atomic_fetch_add(&c->closed, 1) == 0); /* exactly once */
  atomic_fetch_add(&closes, 1);
  free(c);
}

static void free_user_data(void *user_data) {
  (void)user_data;
  atomic_fetch_add(&frees, 1);
}

static conn_t *new_conn(const char *user) {
  conn_t *c = calloc(1, sizeof *c);
  CHECK(c != NULL);
  strncpy(c->user, user, sizeof c->user - 1);
  atomic_init(&c->closed, 0);
  return c;
}

static int connect_conn(const char *user, void **out, void *user_data) {
  (void)user_data;
  *out = new_conn(user);
  return 0;
}

static heliosdb_pool_config quiet_config(void) {
  return quiet_test_config(8, 2, close_conn);
}

static uint64_t add(heliosdb_pool *pool, const char *user) {
  uint64_t id = 0;
  CHECK_OK(heliosdb_pool_add_connection(pool, new_conn(user), user, NULL, &id));
  return id;
}

static uint64_t slot_of(uint64_t id) { return id & ((1u << 24) - 1); }

static void *acquire_and_release_bob(void *arg) {
  heliosdb_pool *pool = (heliosdb_pool *)arg;
  for (int i = 0; i < 4; i++) {
    heliosdb_lease lease;
    CHECK_OK(HELIOSDB_POOL_TRY_ACQUIRE(pool, "bob", &lease));
    CHECK(strcmp(((conn_t *)lease.connection)->user, "bob") == 0);
    CHECK_OK(heliosdb_pool_release(pool, &lease));
  }
  return NULL;
}

static void generations(void) {
  heliosdb_pool_config config = quiet_config();
  heliosdb_pool *pool = NULL;
  CHECK_OK(heliosdb_pool_new(&config, &pool));

  /* A lease after a 32-bit wrap of its slot, and one with a changed id. */
  uint64_t first = add(pool, "alice");
  heliosdb_lease old;
  CHECK_OK(HELIOSDB_POOL_TRY_ACQUIRE(pool, "alice", &old));
  CHECK(old.connection_id == first);
  CHECK_OK(heliosdb_pool_release(pool, &old));
  CHECK_OK(heliosdb_pool_testing_advance_generation(pool, first, WRAP32 - 1));
  heliosdb_lease current;
  CHECK_OK(HELIOSDB_POOL_TRY_ACQUIRE(pool, "alice", &current));
  CHECK((uint32_t)current.handle == (uint32_t)old.handle);
  CHECK_STATUS(heliosdb_pool_release(pool, &old), HELIOSDB_ERR_STALE_HANDLE);
  heliosdb_lease forged = current;
  forged.connection_id += (uint64_t)1 << 24; /* same slot, another connection */
  CHECK_STATUS(heliosdb_pool_release(pool, &forged), HELIOSDB_ERR_STALE_HANDLE);
  CHECK_OK(heliosdb_pool_release(pool, &current));
  CHECK_STATUS(heliosdb_pool_release(pool, &current), HELIOSDB_ERR_STALE_HANDLE);

  /* This thread's affinity entry names alice's slot at generation g. Alice's
   * connection goes; bob's takes the slot, and bob's borrows bring it round to g past
   * the 2^48 wrap: alice must not get bob's connection. */
  heliosdb_lease mine;
  CHECK_OK(HELIOSDB_POOL_TRY_ACQUIRE(pool, "alice", &mine));
  CHECK_OK(heliosdb_pool_release(pool, &mine));
  bool deferred = true;
  CHECK_OK(heliosdb_pool_remove_connection(pool, first, &deferred));
  CHECK(!deferred);
  uint64_t bob = add(pool, "bob");
  CHECK(slot_of(bob) == slot_of(first));
  CHECK_OK(heliosdb_pool_testing_advance_generation(pool, bob, WRAP48 - 5));
  pthread_t t;
  CHECK(pthread_create(&t, NULL, acquire_and_release_bob, pool) == 0);
  CHECK(pthread_join(t, NULL) == 0);
  heliosdb_lease stolen;
  CHECK_STATUS(HELIOSDB_POOL_TRY_ACQUIRE(pool, "alice", &stolen), HELIOSDB_ERR_NO_IDLE_CONNECTION);
  CHECK_OK(HELIOSDB_POOL_TRY_ACQUIRE(pool, "bob", &stolen));
  CHECK(strcmp(((conn_t *)stolen.connection)->user, "bob") == 0);
  CHECK_OK(heliosdb_pool_release(pool, &stolen));
  CHECK_STATUS(heliosdb_pool_testing_advance_generation(pool, first, 1),
               HELIOSDB_ERR_UNKNOWN_CONNECTION);
  heliosdb_pool_free(pool);
}

typedef struct {
  heliosdb_pool *pool;
  int status;
  char user[16];
} waiter_t;

static void *wait_for_alice(void *arg) {
  waiter_t *w = (waiter_t *)arg;
  heliosdb_lease lease;
  w->status = HELIOSDB_POOL_ACQUIRE(w->pool, "alice", 5000, &lease);
  if (w->status == HELIOSDB_OK) {
    strcpy(w->user, ((conn_t *)lease.connection)->user);
    CHECK_OK(heliosdb_pool_release(w->pool, &lease));
  }
  return NULL;
}

static void waiter_served_when_a_place_frees(void) {
  heliosdb_pool_config config = quiet_config();
  config.max_per_user = 1;
  config.connect = connect_conn;
  config.sweep_interval_ms = 600000; /* only the freed place's request wakes it */
  heliosdb_pool *pool = NULL;
  CHECK_OK(heliosdb_pool_new(&config, &pool));
  add(pool, "alice");
  heliosdb_lease held;
  CHECK_OK(HELIOSDB_POOL_TRY_ACQUIRE(pool, "alice", &held));
  waiter_t w = {pool, -1, {0}};
  pthread_t t;
  CHECK(pthread_create(&t, NULL, wait_for_alice, &w) == 0);
  for (int i = 0; i < 2000; i++) {
    heliosdb_pool_stats stats = {0};
    stats.struct_size = sizeof stats;
    CHECK_OK(heliosdb_pool_get_stats(pool, &stats));
    if (stats.waiting == 1) break;
    struct timespec ms = {0, 1000000};
    nanosleep(&ms, NULL);
  }
  bool deferred = false;
  CHECK_OK(heliosdb_pool_remove_connection(pool, held.connection_id, &deferred));
  CHECK(deferred);
  CHECK_OK(heliosdb_pool_release(pool, &held)); /* closes it: a place frees */
  CHECK(pthread_join(t, NULL) == 0);
  CHECK_STATUS(w.status, HELIOSDB_OK);
  CHECK(strcmp(w.user, "alice") == 0);
  heliosdb_pool_free(pool);
}

static heliosdb_pool *reentrant_pool;
static atomic_int reentrant_status = -1;
static atomic_int leak_reports;

static void on_leak_sweeps(const heliosdb_leak_report *report, void *user_data) {
  (void)report;
  (void)user_data;
  atomic_fetch_add(&leak_reports, 1);
  atomic_store(&reentrant_status, (int)heliosdb_pool_sweep_now(reentrant_pool));
}

static void sweep_now_from_a_callback_and_byte_flags(void) {
  heliosdb_pool_config config = quiet_config();
  /* A C caller may put any non-zero byte in a flag: read as true. */
  memset(&config.leak_detection_enabled, 2, 1);
  config.leak_detection_threshold_ms = 20;
  config.on_leak = on_leak_sweeps;
  config.sweep_interval_ms = 600000;
  CHECK_OK(heliosdb_pool_new(&config, &reentrant_pool));
  add(reentrant_pool, "alice");
  heliosdb_lease held;
  CHECK_OK(HELIOSDB_POOL_TRY_ACQUIRE(reentrant_pool, "alice", &held));
  struct timespec wait = {0, 60 * 1000000};
  nanosleep(&wait, NULL);
  CHECK_OK(heliosdb_pool_sweep_now(reentrant_pool));
  CHECK(atomic_load(&leak_reports) == 1);
  CHECK(atomic_load(&reentrant_status) == HELIOSDB_ERR_REENTRANT);
  CHECK_OK(heliosdb_pool_release(reentrant_pool, &held));
  heliosdb_pool_free(reentrant_pool);
}

/* The call site recorded by the try-acquire macro is the caller's line. */
static void try_acquire_macro_records_its_call_site(void) {
  heliosdb_pool_config config = quiet_config();
  config.leak_detection_enabled = true;
  config.leak_detection_threshold_ms = 1;
  config.sweep_interval_ms = 600000;
  heliosdb_pool *pool = NULL;
  CHECK_OK(heliosdb_pool_new(&config, &pool));
  add(pool, "alice");
  heliosdb_lease held;
  int line = __LINE__ + 1;
  CHECK_OK(HELIOSDB_POOL_TRY_ACQUIRE(pool, "alice", &held));
  struct timespec wait = {0, 20 * 1000000};
  nanosleep(&wait, NULL);
  heliosdb_leak_report report;
  size_t count = 0;
  CHECK_OK(heliosdb_pool_leaks(pool, &report, 1, &count));
  CHECK(count == 1);
  CHECK(report.line == (uint32_t)line);
  CHECK(strcmp(report.file, __FILE__) == 0);
  CHECK(strcmp(report.function, "try_acquire_macro_records_its_call_site") == 0);
  CHECK_OK(heliosdb_pool_release(pool, &held));
  heliosdb_pool_free(pool);
}

static void contradictory_configs(void) {
  heliosdb_pool_config config = quiet_config();
  config.leak_detection_enabled = false; /* checked anyway */
  config.leak_detection_threshold_ms = 5000;
  config.leak_critical_threshold_ms = 1000;
  CHECK_STATUS(heliosdb_pool_config_validate(&config), HELIOSDB_ERR_INVALID_CONFIG);
  heliosdb_pool *pool = NULL;
  CHECK_STATUS(heliosdb_pool_new(&config, &pool), HELIOSDB_ERR_INVALID_CONFIG);
  CHECK(pool == NULL);
  config = quiet_config();
  config.max_connections = HELIOSDB_MAX_CONNECTIONS;
  CHECK_OK(heliosdb_pool_config_validate(&config));
  config.max_connections = HELIOSDB_MAX_CONNECTIONS + 1;
  CHECK_STATUS(heliosdb_pool_config_validate(&config), HELIOSDB_ERR_INVALID_CONFIG);
}

/* ---- heliosdb_pool_free racing a release on another thread ---- */

typedef struct {
  heliosdb_pool *pool;
  heliosdb_lease lease;
  pthread_barrier_t *start;
} race_t;

static void *release_racing_free(void *arg) {
  race_t *r = (race_t *)arg;
  pthread_barrier_wait(r->start);
  CHECK_OK(heliosdb_pool_release(r->pool, &r->lease));
  return NULL;
}

static void free_races_release(int rounds) {
  pthread_barrier_t start;
  CHECK(pthread_barrier_init(&start, NULL, 2) == 0);
  for (int round = 0; round < rounds; round++) {
    atomic_store(&closes, 0);
    atomic_store(&frees, 0);
    heliosdb_pool_config config = quiet_config();
    config.user_data_free = free_user_data;
    heliosdb_pool *pool = NULL;
    CHECK_OK(heliosdb_pool_new(&config, &pool));
    add(pool, "alice");
    add(pool, "alice");
    race_t r = {pool, {0}, &start};
    CHECK_OK(HELIOSDB_POOL_TRY_ACQUIRE(pool, "alice", &r.lease));
    /* Alternate which side is first out of the barrier's gate. */
    pthread_t t;
    CHECK(pthread_create(&t, NULL, release_racing_free, &r) == 0);
    pthread_barrier_wait(&start);
    if (round % 2 == 0) {
      sched_yield();
    }
    heliosdb_pool_free(pool);
    CHECK(pthread_join(t, NULL) == 0);
    CHECK(atomic_load(&closes) == 2); /* both connections, once each */
    CHECK(atomic_load(&frees) == 1);  /* the pool, once, by whoever left last */
  }
  CHECK(pthread_barrier_destroy(&start) == 0);
}

int main(void) {
  generations();
  waiter_served_when_a_place_frees();
  sweep_now_from_a_callback_and_byte_flags();
  try_acquire_macro_records_its_call_site();
  contradictory_configs();
  const char *env = getenv("HELIOSDB_RACE_ROUNDS");
  int rounds = env ? atoi(env) : 2000;
  free_races_release(rounds);
  printf("edges ok (%d free/release rounds)\n", rounds);
  return 0;
}

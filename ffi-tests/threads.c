/* Exclusivity under contention: 8 pthreads borrow and return the connections of two
 * users; a sentinel per connection asserts it is never held twice and never handed to
 * the wrong user. Then timeouts and hand-off to a waiter, and release from another
 * thread. */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "heliosdb_pool.h"

#define THREADS 8
#define PER_USER 3
#define ITERATIONS 4000

typedef struct {
  int user;           /* 0 or 1 */
  atomic_int in_use;  /* the sentinel */
  atomic_long borrows;
  atomic_int closed;
} conn_t;

static const char *const USERS[2] = {"alice", "bob"};
static conn_t conns[2 * PER_USER];
static heliosdb_pool *pool;
static atomic_long total_borrows;
static atomic_int closes;

static void close_conn(void *connection, void *user_data) {
  (void)user_data;
  conn_t *c = (conn_t *)connection;
  CHECK(atomic_load(&c->in_use) == 0);
  CHECK(atomic_fetch_add(&c->closed, 1) == 0);
  atomic_fetch_add(&closes, 1);
}

static void *worker(void *arg) {
  int me = (int)(intptr_t)arg;
  int user = me % 2;
  for (int i = 0; i < ITERATIONS; i++) {
    heliosdb_lease lease;
    int status;
    if (i % 3 == 0) {
      status = HELIOSDB_POOL_TRY_ACQUIRE(pool, USERS[user], &lease);
      if (status == HELIOSDB_ERR_NO_IDLE_CONNECTION) {
        continue;
      }
    } else {
      status = HELIOSDB_POOL_ACQUIRE(pool, USERS[user], 10000, &lease);
    }
    CHECK_STATUS(status, HELIOSDB_OK);
    conn_t *c = (conn_t *)lease.connection;
    CHECK(c->user == user);                         /* never the wrong user */
    CHECK(atomic_exchange(&c->in_use, 1) == 0);     /* never held twice */
    atomic_fetch_add(&c->borrows, 1);
    if (i % 7 == 0) {
      sched_yield();
    }
    CHECK(atomic_exchange(&c->in_use, 0) == 1);
    atomic_fetch_add(&total_borrows, 1);
    CHECK_OK(heliosdb_pool_release(pool, &lease));
    /* A second release of the same lease is stale and changes nothing. */
    if (i % 97 == 0) {
      CHECK_STATUS(heliosdb_pool_release(pool, &lease), HELIOSDB_ERR_STALE_HANDLE);
    }
  }
  return NULL;
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void exclusivity(void) {
  heliosdb_pool_config cfg;
  CHECK_OK(heliosdb_pool_config_init(&cfg, sizeof cfg));
  cfg.max_connections = 2 * PER_USER;
  cfg.max_per_user = PER_USER;
  cfg.close = close_conn;
  CHECK_OK(heliosdb_pool_new(&cfg, &pool));
  for (int i = 0; i < 2 * PER_USER; i++) {
    conns[i].user = i % 2;
    CHECK_OK(heliosdb_pool_add_connection(pool, &conns[i], USERS[i % 2], NULL, NULL));
  }
  pthread_t threads[THREADS];
  for (intptr_t t = 0; t < THREADS; t++) {
    CHECK(pthread_create(&threads[t], NULL, worker, (void *)t) == 0);
  }
  for (int t = 0; t < THREADS; t++) {
    CHECK(pthread_join(threads[t], NULL) == 0);
  }
  heliosdb_pool_stats stats;
  stats.struct_size = sizeof stats;
  CHECK_OK(heliosdb_pool_get_stats(pool, &stats));
  CHECK(stats.active_connections == 0 && stats.idle_connections == 2 * PER_USER);
  CHECK(stats.acquires == (uint64_t)atomic_load(&total_borrows));
  long sum = 0;
  for (int i = 0; i < 2 * PER_USER; i++) {
    sum += atomic_load(&conns[i].borrows);
  }
  CHECK(sum == atomic_load(&total_borrows));
  heliosdb_pool_free(pool);
  CHECK(atomic_load(&closes) == 2 * PER_USER);
  printf("exclusivity: %ld borrows by %d threads\n", sum, THREADS);
}

/* Timeouts and hand-off: one connection; a holder keeps it while short waits time
 * out, and a long waiter gets it when a third thread releases the holder's lease. */
static heliosdb_pool *one_pool;
static heliosdb_lease held;
static atomic_int waiter_got_it;

static void *long_waiter(void *arg) {
  (void)arg;
  heliosdb_lease lease;
  CHECK_OK(HELIOSDB_POOL_ACQUIRE(one_pool, "solo", 10000, &lease));
  atomic_store(&waiter_got_it, 1);
  CHECK_OK(heliosdb_pool_release(one_pool, &lease));
  return NULL;
}

static void *releaser(void *arg) {
  (void)arg;
  CHECK_OK(heliosdb_pool_release(one_pool, &held)); /* released by another thread */
  return NULL;
}

static void timeouts(void) {
  static conn_t solo;
  heliosdb_pool_config cfg;
  CHECK_OK(heliosdb_pool_config_init(&cfg, sizeof cfg));
  cfg.max_connections = 1;
  cfg.max_per_user = 1;
  CHECK_OK(heliosdb_pool_new(&cfg, &one_pool));
  CHECK_OK(heliosdb_pool_add_connection(one_pool, &solo, "solo", NULL, NULL));
  CHECK_OK(HELIOSDB_POOL_ACQUIRE(one_pool, "solo", 0, &held));

  for (int i = 0; i < 3; i++) {
    heliosdb_lease lease;
    double t0 = now_ms();
    CHECK_STATUS(HELIOSDB_POOL_ACQUIRE(one_pool, "solo", 20, &lease), HELIOSDB_ERR_TIMEOUT);
    double waited = now_ms() - t0;
    CHECK(waited >= 19.0);
    CHECK(waited < 5000.0);
  }

  pthread_t w, r;
  CHECK(pthread_create(&w, NULL, long_waiter, NULL) == 0);
  /* Let the waiter queue up, then release the held lease from another thread. */
  struct timespec pause = {0, 30 * 1000 * 1000};
  nanosleep(&pause, NULL);
  CHECK(atomic_load(&waiter_got_it) == 0);
  CHECK(pthread_create(&r, NULL, releaser, NULL) == 0);
  CHECK(pthread_join(r, NULL) == 0);
  CHECK(pthread_join(w, NULL) == 0);
  CHECK(atomic_load(&waiter_got_it) == 1);

  heliosdb_pool_stats stats;
  stats.struct_size = sizeof stats;
  CHECK_OK(heliosdb_pool_get_stats(one_pool, &stats));
  CHECK(stats.timeouts == 3 && stats.acquires == 2 && stats.waiting == 0);
  heliosdb_pool_free(one_pool);
  printf("timeouts: ok\n");
}

int main(void) {
  exclusivity();
  timeouts();
  return 0;
}

/* Every bad input: each NULL, stale, doubled, forged and foreign leases, invalid
 * UTF-8, bad struct sizes; and freeing a pool with borrows out. Failures must change
 * nothing and write no out-parameter. */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "heliosdb_pool.h"

typedef struct {
  atomic_int closed;
  atomic_int in_use;
} conn_t;

typedef struct {
  atomic_int closes;
  atomic_int frees;
} counters_t;

static void close_conn(void *connection, void *user_data) {
  conn_t *c = (conn_t *)connection;
  counters_t *k = (counters_t *)user_data;
  CHECK(atomic_fetch_add(&c->closed, 1) == 0);
  atomic_fetch_add(&k->closes, 1);
}

static void free_counters(void *user_data) {
  atomic_fetch_add(&((counters_t *)user_data)->frees, 1);
}

static heliosdb_pool *new_pool(counters_t *counters, size_t max) {
  heliosdb_pool_config cfg;
  CHECK_OK(heliosdb_pool_config_init(&cfg, sizeof cfg));
  cfg.max_connections = max;
  cfg.max_per_user = max;
  cfg.close = close_conn;
  cfg.user_data = counters;
  cfg.user_data_free = free_counters;
  heliosdb_pool *pool = NULL;
  CHECK_OK(heliosdb_pool_new(&cfg, &pool));
  return pool;
}

static void last_error_names(const char *what) {
  if (strstr(heliosdb_last_error_message(), what) == NULL) {
    fprintf(stderr, "last error \"%s\" does not mention \"%s\"\n",
            heliosdb_last_error_message(), what);
    exit(1);
  }
}

static void nulls(void) {
  counters_t k = {0, 0};
  heliosdb_pool_config cfg;
  heliosdb_pool *pool = NULL;
  heliosdb_lease lease;
  heliosdb_pool_stats stats;
  bool flag;
  static conn_t c1, c2, c3;

  CHECK_STATUS(heliosdb_pool_config_init(NULL, sizeof cfg), HELIOSDB_ERR_NULL_ARGUMENT);
  CHECK_STATUS(heliosdb_pool_config_development(NULL, sizeof cfg), HELIOSDB_ERR_NULL_ARGUMENT);
  CHECK_STATUS(heliosdb_pool_config_staging(NULL, sizeof cfg), HELIOSDB_ERR_NULL_ARGUMENT);
  CHECK_STATUS(heliosdb_pool_config_production(NULL, sizeof cfg), HELIOSDB_ERR_NULL_ARGUMENT);
  last_error_names("config");
  CHECK_STATUS(heliosdb_pool_config_validate(NULL), HELIOSDB_ERR_NULL_ARGUMENT);
  CHECK_OK(heliosdb_pool_config_init(&cfg, sizeof cfg));
  CHECK_STATUS(heliosdb_pool_new(&cfg, NULL), HELIOSDB_ERR_NULL_ARGUMENT);
  last_error_names("out_pool");
  CHECK_STATUS(heliosdb_pool_new(NULL, NULL), HELIOSDB_ERR_NULL_ARGUMENT);

  pool = new_pool(&k, 4);

  /* add_connection: a NULL pool or connection closes nothing; after that the pool owns
   * the connection and a failed add closes it. */
  CHECK_STATUS(heliosdb_pool_add_connection(NULL, &c1, "u", NULL, NULL),
               HELIOSDB_ERR_NULL_ARGUMENT);
  CHECK(atomic_load(&c1.closed) == 0);
  CHECK_STATUS(heliosdb_pool_add_connection(pool, NULL, "u", NULL, NULL),
               HELIOSDB_ERR_NULL_ARGUMENT);
  last_error_names("connection");
  CHECK_STATUS(heliosdb_pool_add_connection(pool, &c1, NULL, NULL, NULL),
               HELIOSDB_ERR_NULL_ARGUMENT);
  last_error_names("user");
  CHECK(atomic_load(&c1.closed) == 1);
  CHECK_OK(heliosdb_pool_add_connection(pool, &c2, "u", NULL, NULL)); /* NULL out id ok */

  /* acquire forms. */
  memset(&lease, 0x77, sizeof lease);
  heliosdb_lease before = lease;
  CHECK_STATUS(heliosdb_pool_acquire(NULL, "u", 0, &lease), HELIOSDB_ERR_NULL_ARGUMENT);
  last_error_names("pool");
  CHECK_STATUS(heliosdb_pool_acquire(pool, NULL, 0, &lease), HELIOSDB_ERR_NULL_ARGUMENT);
  CHECK_STATUS(heliosdb_pool_acquire(pool, "u", 0, NULL), HELIOSDB_ERR_NULL_ARGUMENT);
  last_error_names("out_lease");
  CHECK_STATUS(heliosdb_pool_acquire_at(pool, "u", 0, &lease, NULL, 1, "f"),
               HELIOSDB_ERR_NULL_ARGUMENT);
  last_error_names("file");
  CHECK_STATUS(heliosdb_pool_acquire_at(pool, "u", 0, &lease, "f.c", -1, "f"),
               HELIOSDB_ERR_INVALID_ARGUMENT);
  last_error_names("line");
  CHECK_STATUS(heliosdb_pool_try_acquire(NULL, "u", &lease), HELIOSDB_ERR_NULL_ARGUMENT);
  CHECK_STATUS(heliosdb_pool_try_acquire(pool, NULL, &lease), HELIOSDB_ERR_NULL_ARGUMENT);
  CHECK_STATUS(heliosdb_pool_try_acquire(pool, "u", NULL), HELIOSDB_ERR_NULL_ARGUMENT);
  CHECK_STATUS(heliosdb_pool_try_acquire_at(pool, "u", &lease, NULL, 1, NULL),
               HELIOSDB_ERR_NULL_ARGUMENT);
  CHECK_STATUS(heliosdb_pool_try_acquire_at(pool, "u", &lease, "f.c", -5, NULL),
               HELIOSDB_ERR_INVALID_ARGUMENT);
  CHECK(memcmp(&lease, &before, sizeof lease) == 0);
  /* A NULL function name is allowed. */
  CHECK_OK(heliosdb_pool_acquire_at(pool, "u", 0, &lease, __FILE__, __LINE__, NULL));

  /* release, remove, close, is_closed, stats. */
  CHECK_STATUS(heliosdb_pool_release(NULL, &lease), HELIOSDB_ERR_NULL_ARGUMENT);
  CHECK_STATUS(heliosdb_pool_release(pool, NULL), HELIOSDB_ERR_NULL_ARGUMENT);
  last_error_names("lease");
  CHECK_OK(heliosdb_pool_release(pool, &lease));
  CHECK_STATUS(heliosdb_pool_remove_connection(NULL, 1, NULL), HELIOSDB_ERR_NULL_ARGUMENT);
  CHECK_STATUS(heliosdb_pool_close(NULL), HELIOSDB_ERR_NULL_ARGUMENT);
  CHECK_STATUS(heliosdb_pool_is_closed(NULL, &flag), HELIOSDB_ERR_NULL_ARGUMENT);
  CHECK_STATUS(heliosdb_pool_is_closed(pool, NULL), HELIOSDB_ERR_NULL_ARGUMENT);
  stats.struct_size = sizeof stats;
  CHECK_STATUS(heliosdb_pool_get_stats(NULL, &stats), HELIOSDB_ERR_NULL_ARGUMENT);
  CHECK_STATUS(heliosdb_pool_get_stats(pool, NULL), HELIOSDB_ERR_NULL_ARGUMENT);

  /* Metadata: tags NULL with a count, a NULL tag. */
  heliosdb_connection_metadata md;
  memset(&md, 0, sizeof md);
  md.struct_size = sizeof md;
  md.tag_count = 2;
  CHECK_STATUS(heliosdb_pool_add_connection(pool, &c3, "u", &md, NULL),
               HELIOSDB_ERR_NULL_ARGUMENT);
  last_error_names("metadata.tags");
  CHECK(atomic_load(&c3.closed) == 1);

  heliosdb_pool_free(NULL);
  heliosdb_pool_free(pool);
  CHECK(atomic_load(&k.frees) == 1);
  CHECK(atomic_load(&k.closes) == 3);
}

static void invalid_utf8(void) {
  counters_t k = {0, 0};
  static conn_t c1, c2, c3;
  const char *bad = "caf\xc3"; /* truncated two-byte sequence */
  heliosdb_pool *pool = new_pool(&k, 4);
  CHECK_STATUS(heliosdb_pool_add_connection(pool, &c1, bad, NULL, NULL),
               HELIOSDB_ERR_INVALID_UTF8);
  last_error_names("user");
  CHECK(atomic_load(&c1.closed) == 1);
  CHECK_OK(heliosdb_pool_add_connection(pool, &c2, "ok", NULL, NULL));
  heliosdb_lease lease;
  CHECK_STATUS(heliosdb_pool_acquire(pool, bad, 0, &lease), HELIOSDB_ERR_INVALID_UTF8);
  CHECK_STATUS(heliosdb_pool_try_acquire(pool, "\xff\xfe", &lease), HELIOSDB_ERR_INVALID_UTF8);

  const char *tags[] = {"fine", "\x80"};
  heliosdb_connection_metadata md;
  memset(&md, 0, sizeof md);
  md.struct_size = sizeof md;
  md.tags = tags;
  md.tag_count = 2;
  CHECK_STATUS(heliosdb_pool_add_connection(pool, &c3, "ok", &md, NULL),
               HELIOSDB_ERR_INVALID_UTF8);
  last_error_names("metadata.tags");
  heliosdb_pool_free(pool);
  CHECK(atomic_load(&k.frees) == 1 && atomic_load(&k.closes) == 3);
}

static void struct_sizes(void) {
  counters_t k = {0, 0};
  heliosdb_pool_config cfg;
  memset(&cfg, 0x11, sizeof cfg);
  heliosdb_pool_config before = cfg;
  CHECK_STATUS(heliosdb_pool_config_init(&cfg, 8), HELIOSDB_ERR_UNSUPPORTED_VERSION);
  CHECK_STATUS(heliosdb_pool_config_init(&cfg, sizeof cfg + 8), HELIOSDB_ERR_UNSUPPORTED_VERSION);
  CHECK(memcmp(&cfg, &before, sizeof cfg) == 0); /* nothing written */

  CHECK_OK(heliosdb_pool_config_init(&cfg, sizeof cfg));
  cfg.user_data = &k;
  cfg.user_data_free = free_counters;
  cfg.struct_size = sizeof cfg - 4; /* no version has this size */
  CHECK_STATUS(heliosdb_pool_config_validate(&cfg), HELIOSDB_ERR_UNSUPPORTED_VERSION);
  heliosdb_pool *pool = NULL;
  CHECK_STATUS(heliosdb_pool_new(&cfg, &pool), HELIOSDB_ERR_UNSUPPORTED_VERSION);
  last_error_names("struct_size");
  CHECK(pool == NULL);
  cfg.struct_size = 0;
  CHECK_STATUS(heliosdb_pool_new(&cfg, &pool), HELIOSDB_ERR_UNSUPPORTED_VERSION);
  cfg.struct_size = sizeof cfg;
  cfg.max_connections = 0;
  CHECK_STATUS(heliosdb_pool_new(&cfg, &pool), HELIOSDB_ERR_INVALID_CONFIG);
  last_error_names("max_connections");
  CHECK(atomic_load(&k.frees) == 0); /* a failed new leaves user_data to the caller */

  pool = new_pool(&k, 2);
  static conn_t c1;
  heliosdb_connection_metadata md;
  memset(&md, 0, sizeof md);
  md.struct_size = sizeof md + 1;
  CHECK_STATUS(heliosdb_pool_add_connection(pool, &c1, "u", &md, NULL),
               HELIOSDB_ERR_UNSUPPORTED_VERSION);
  CHECK(atomic_load(&c1.closed) == 1);
  heliosdb_pool_stats stats, stats_before;
  memset(&stats, 0x5a, sizeof stats);
  /* No version has these sizes: too small, between versions 3 and 4, a newer caller's. */
  const size_t refused[] = {16, sizeof stats - sizeof(size_t), sizeof stats + 8};
  for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
    stats.struct_size = refused[i];
    memcpy(&stats_before, &stats, sizeof stats);
    CHECK_STATUS(heliosdb_pool_get_stats(pool, &stats), HELIOSDB_ERR_UNSUPPORTED_VERSION);
    CHECK(memcmp(&stats, &stats_before, sizeof stats) == 0); /* nothing written */
  }
  heliosdb_pool_free(pool);
  CHECK(atomic_load(&k.frees) == 1);
}

static void stale_doubled_foreign(void) {
  counters_t ka = {0, 0}, kb = {0, 0};
  static conn_t a1, b1;
  heliosdb_pool *pa = new_pool(&ka, 2);
  heliosdb_pool *pb = new_pool(&kb, 2);
  CHECK_OK(heliosdb_pool_add_connection(pa, &a1, "u", NULL, NULL));
  CHECK_OK(heliosdb_pool_add_connection(pb, &b1, "u", NULL, NULL));

  heliosdb_lease first, second, forged;
  CHECK_OK(HELIOSDB_POOL_ACQUIRE(pa, "u", 0, &first));
  /* Foreign: a lease of pool A given to pool B, and B's lease given to A. */
  CHECK_STATUS(heliosdb_pool_release(pb, &first), HELIOSDB_ERR_FOREIGN_HANDLE);
  last_error_names("another pool");
  CHECK_OK(heliosdb_pool_release(pa, &first));
  /* Doubled. */
  CHECK_STATUS(heliosdb_pool_release(pa, &first), HELIOSDB_ERR_STALE_HANDLE);
  /* Stale: the same connection borrowed again; the old copy must not end it. */
  CHECK_OK(HELIOSDB_POOL_ACQUIRE(pa, "u", 0, &second));
  CHECK(second.connection == first.connection && second.handle != first.handle);
  CHECK_STATUS(heliosdb_pool_release(pa, &first), HELIOSDB_ERR_STALE_HANDLE);
  heliosdb_pool_stats stats;
  stats.struct_size = sizeof stats;
  CHECK_OK(heliosdb_pool_get_stats(pa, &stats));
  CHECK(stats.active_connections == 1);
  /* Forged handles. */
  forged = second;
  forged.handle ^= 1;
  CHECK_STATUS(heliosdb_pool_release(pa, &forged), HELIOSDB_ERR_STALE_HANDLE);
  forged.handle = UINT64_MAX;
  CHECK_STATUS(heliosdb_pool_release(pa, &forged), HELIOSDB_ERR_STALE_HANDLE);
  forged.handle = 0;
  CHECK_STATUS(heliosdb_pool_release(pa, &forged), HELIOSDB_ERR_STALE_HANDLE);
  /* A lease claiming pool B but holding A's handle: B's generations differ. */
  forged = second;
  forged.pool = pb;
  CHECK_STATUS(heliosdb_pool_release(pb, &forged), HELIOSDB_ERR_STALE_HANDLE);
  CHECK_OK(heliosdb_pool_release(pa, &second));
  CHECK_STATUS(heliosdb_pool_release(pa, &second), HELIOSDB_ERR_STALE_HANDLE);

  heliosdb_pool_free(pa);
  heliosdb_pool_free(pb);
  CHECK(atomic_load(&ka.frees) == 1 && atomic_load(&kb.frees) == 1);
  CHECK(atomic_load(&a1.closed) == 1 && atomic_load(&b1.closed) == 1);
}

/* Free with borrows out: idle connections close at once; the borrowed ones stay
 * usable and close when released (from any thread); the last release reclaims the
 * pool and frees user_data. */
static heliosdb_pool *freed_pool;
static heliosdb_lease out_leases[3];

static void *release_later(void *arg) {
  heliosdb_lease *lease = (heliosdb_lease *)arg;
  conn_t *c = (conn_t *)lease->connection;
  CHECK(atomic_load(&c->closed) == 0);
  CHECK(atomic_exchange(&c->in_use, 0) == 1); /* still ours, still usable */
  CHECK_OK(heliosdb_pool_release(freed_pool, lease));
  return NULL;
}

static void free_with_borrows_out(void) {
  counters_t k = {0, 0};
  static conn_t cs[5];
  freed_pool = new_pool(&k, 5);
  for (int i = 0; i < 5; i++) {
    CHECK_OK(heliosdb_pool_add_connection(freed_pool, &cs[i], "u", NULL, NULL));
  }
  for (int i = 0; i < 3; i++) {
    CHECK_OK(HELIOSDB_POOL_ACQUIRE(freed_pool, "u", 0, &out_leases[i]));
    conn_t *c = (conn_t *)out_leases[i].connection;
    CHECK(atomic_exchange(&c->in_use, 1) == 0);
  }
  heliosdb_pool_free(freed_pool);
  CHECK(atomic_load(&k.closes) == 2); /* the two idle ones */
  CHECK(atomic_load(&k.frees) == 0);

  /* First release on this thread; a doubled one is still rejected. */
  CHECK(atomic_exchange(&((conn_t *)out_leases[0].connection)->in_use, 0) == 1);
  CHECK_OK(heliosdb_pool_release(freed_pool, &out_leases[0]));
  CHECK(atomic_load(&k.closes) == 3);
  CHECK_STATUS(heliosdb_pool_release(freed_pool, &out_leases[0]), HELIOSDB_ERR_STALE_HANDLE);
  CHECK(atomic_load(&k.frees) == 0);

  /* The last two from two threads at once. */
  pthread_t t1, t2;
  CHECK(pthread_create(&t1, NULL, release_later, &out_leases[1]) == 0);
  CHECK(pthread_create(&t2, NULL, release_later, &out_leases[2]) == 0);
  CHECK(pthread_join(t1, NULL) == 0);
  CHECK(pthread_join(t2, NULL) == 0);
  CHECK(atomic_load(&k.closes) == 5);
  CHECK(atomic_load(&k.frees) == 1);
  for (int i = 0; i < 5; i++) {
    CHECK(atomic_load(&cs[i].closed) == 1);
  }
}

int main(void) {
  nulls();
  invalid_utf8();
  struct_sizes();
  stale_doubled_foreign();
  free_with_borrows_out();
  printf("bad_input: ok\n");
  return 0;
}

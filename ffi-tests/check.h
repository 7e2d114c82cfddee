/* Small assertion helpers shared by the C and C++ tests. */
#ifndef HELIOSDB_FFI_TESTS_CHECK_H
#define HELIOSDB_FFI_TESTS_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "heliosdb_pool.h"

#define CHECK(cond)                                                              \
  do {                                                                           \
    if (!(cond)) {                                                               \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);   \
      exit(1);                                                                   \
    }                                                                            \
  } while (0)

#define CHECK_STATUS(expr, expected)                                             \
  do {                                                                           \
    int check_status_ = (int)(expr);                                             \
    if (check_status_ != (int)(expected)) {                                      \
      fprintf(stderr, "%s:%d: %s returned %d (%s: %s), expected %s\n", __FILE__, \
              __LINE__, #expr, check_status_,                                    \
              heliosdb_status_str(check_status_),                                \
              heliosdb_last_error_message(), #expected);                         \
      exit(1);                                                                   \
    }                                                                            \
  } while (0)

#define CHECK_OK(expr) CHECK_STATUS(expr, HELIOSDB_OK)

#ifndef __cplusplus
/* For the C tests: the defaults, with nothing running behind a test's back: no idle or
   age eviction, no health checks, no leak detection, no sweeper; `close` closes the
   connections. */
static inline heliosdb_pool_config quiet_test_config(size_t max_connections,
                                                     size_t max_per_user,
                                                     heliosdb_close_fn close) {
  heliosdb_pool_config config;
  CHECK_OK(heliosdb_pool_config_init(&config, sizeof config));
  config.max_connections = max_connections;
  config.max_per_user = max_per_user;
  config.idle_timeout_ms = 0;
  config.max_connection_age_ms = 0;
  config.health_check_enabled = false;
  config.leak_detection_enabled = false;
  config.auto_cleanup_enabled = false;
  config.close = close;
  return config;
}

/* The pool's counts, in the full (current) struct. */
static inline heliosdb_pool_stats stats_of(const heliosdb_pool *pool) {
  heliosdb_pool_stats s;
  memset(&s, 0, sizeof s);
  s.struct_size = sizeof s;
  CHECK_OK(heliosdb_pool_get_stats(pool, &s));
  return s;
}
#endif

#endif /* HELIOSDB_FFI_TESTS_CHECK_H */

/* The version-5 config field `fairness_bound_us` (eventual fairness on the waiting
 * path): its default, its range, and what a bad value gets. */
#include <string.h>

#include "check.h"

static void last_error_names(const char *what) {
  CHECK(strstr(heliosdb_last_error_message(), what) != NULL);
}

int main(void) {
  heliosdb_pool_config cfg;
  CHECK_OK(heliosdb_pool_config_init(&cfg, sizeof cfg));
  CHECK(cfg.fairness_bound_us == 1000);

  /* Out of range: refused by validate and by pool_new, naming the field; no pool. */
  const uint64_t bad[] = {1000001u, UINT64_MAX};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    cfg.fairness_bound_us = bad[i];
    CHECK_STATUS(heliosdb_pool_config_validate(&cfg), HELIOSDB_ERR_INVALID_CONFIG);
    last_error_names("fairness_bound_us");
    heliosdb_pool *pool = NULL;
    CHECK_STATUS(heliosdb_pool_new(&cfg, &pool), HELIOSDB_ERR_INVALID_CONFIG);
    last_error_names("fairness_bound_us");
    CHECK(pool == NULL);
  }

  /* The ends of the range build pools: 0 (strict FIFO) and 1 s. */
  const uint64_t good[] = {0u, 1000000u};
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
    cfg.fairness_bound_us = good[i];
    CHECK_OK(heliosdb_pool_config_validate(&cfg));
    heliosdb_pool *pool = NULL;
    CHECK_OK(heliosdb_pool_new(&cfg, &pool));
    CHECK(pool != NULL);
    heliosdb_pool_free(pool);
  }
  puts("fairness: ok");
  return 0;
}

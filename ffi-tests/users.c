/* Bounded users through the C ABI (config version 5): max_users
 * (HELIOSDB_ERR_TOO_MANY_USERS, with the limit in the message), max_user_name_len
 * (HELIOSDB_ERR_USER_NAME_TOO_LONG from add and acquire, for a 1 MiB name), a vacant
 * user retired by the sweeper (retire_users_after_ms; counted in the stats'
 * users_retired) so that a new one fits, contradictory limits refused, and a
 * version-4 config (no user limits) getting the defaults. */
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "heliosdb_pool.h"

static atomic_int closes;

static void close_conn(void *connection, void *user_data) {
  (void)user_data;
  free(connection);
  atomic_fetch_add(&closes, 1);
}

static uint64_t add(heliosdb_pool *pool, const char *user) {
  uint64_t id = 0;
  CHECK_OK(heliosdb_pool_add_connection(pool, malloc(1), user, NULL, &id));
  return id;
}

static heliosdb_pool_config users_config(void) {
  heliosdb_pool_config config = quiet_test_config(8, 2, close_conn);
  CHECK(config.max_users == 1024);
  CHECK(config.max_user_name_len == 256);
  CHECK(config.retire_users_after_ms == 60000);
  config.max_users = 2;
  config.max_user_name_len = 8;
  config.retire_users_after_ms = 0;
  return config;
}

int main(void) {
  heliosdb_pool_config config = users_config();
  heliosdb_pool *pool = NULL;
  CHECK_OK(heliosdb_pool_new(&config, &pool));
  uint64_t alice = add(pool, "alice");
  add(pool, "bob");
  heliosdb_pool_stats stats = stats_of(pool);
  CHECK(stats.users_retired == 0 && stats.spin_acquires == 0);

  /* A third user: refused, and what was given is closed (the add owns it). */
  int before = atomic_load(&closes);
  CHECK_STATUS(heliosdb_pool_add_connection(pool, malloc(1), "carol", NULL, NULL),
               HELIOSDB_ERR_TOO_MANY_USERS);
  CHECK(strstr(heliosdb_last_error_message(), "max_users (2)") != NULL);
  CHECK(atomic_load(&closes) == before + 1);
  CHECK(strcmp(heliosdb_status_str(HELIOSDB_ERR_TOO_MANY_USERS), "the pool is at max_users") == 0);

  /* A 1 MiB name: refused by add and by acquire, named by its length only. */
  size_t huge = (size_t)1 << 20;
  char *name = malloc(huge + 1);
  CHECK(name != NULL);
  memset(name, 'x', huge);
  name[huge] = '\0';
  CHECK_STATUS(heliosdb_pool_add_connection(pool, malloc(1), name, NULL, NULL),
               HELIOSDB_ERR_USER_NAME_TOO_LONG);
  CHECK(strlen(heliosdb_last_error_message()) < 200);
  heliosdb_lease lease;
  CHECK_STATUS(heliosdb_pool_try_acquire(pool, name, &lease), HELIOSDB_ERR_USER_NAME_TOO_LONG);
  free(name);

  /* Alice's only connection goes; two passes (seen vacant, then retired) make room. */
  CHECK_OK(heliosdb_pool_try_acquire(pool, "alice", &lease));
  CHECK_OK(heliosdb_pool_release(pool, &lease));
  CHECK_OK(heliosdb_pool_remove_connection(pool, alice, NULL));
  CHECK_OK(heliosdb_pool_sweep_now(pool));
  CHECK_OK(heliosdb_pool_sweep_now(pool));
  stats = stats_of(pool);
  CHECK(stats.users_retired == 1 && stats.spin_acquires == 0); /* alice */
  add(pool, "carol");
  CHECK_STATUS(heliosdb_pool_try_acquire(pool, "alice", &lease), HELIOSDB_ERR_UNKNOWN_USER);
  CHECK_OK(heliosdb_pool_try_acquire(pool, "carol", &lease));
  CHECK_OK(heliosdb_pool_release(pool, &lease));

  /* Contradictory limits. */
  heliosdb_pool_config bad = users_config();
  bad.max_users = 0;
  CHECK_STATUS(heliosdb_pool_config_validate(&bad), HELIOSDB_ERR_INVALID_CONFIG);
  heliosdb_pool *refused = NULL;
  CHECK_STATUS(heliosdb_pool_new(&bad, &refused), HELIOSDB_ERR_INVALID_CONFIG);
  CHECK(strstr(heliosdb_last_error_message(), "max_users") != NULL);
  CHECK(refused == NULL);
  bad = users_config();
  bad.retire_users_after_ms = (uint64_t)30 * 24 * 3600 * 1000; /* past the 24-day bound */
  CHECK_STATUS(heliosdb_pool_config_validate(&bad), HELIOSDB_ERR_INVALID_CONFIG);
  CHECK(strstr(heliosdb_last_error_message(), "retire_users_after") != NULL);
  bad.retire_users_after_ms = UINT64_MAX; /* never: valid */
  CHECK_OK(heliosdb_pool_config_validate(&bad));
  heliosdb_pool_free(pool);

  /* A version-4 caller: the struct ends before max_users; defaults apply (1024 users). */
  heliosdb_pool_config v4 = users_config();
  v4.struct_size = offsetof(heliosdb_pool_config, max_users);
  v4.max_users = 0; /* beyond its struct: never read */
  CHECK_OK(heliosdb_pool_new(&v4, &pool));
  const char *names[] = {"u1", "u2", "u3"};
  for (int i = 0; i < 3; i++) {
    add(pool, names[i]);
  }
  heliosdb_pool_free(pool);
  puts("users: ok");
  return 0;
}

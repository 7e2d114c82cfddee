/* The complete example of docs/using-from-c.md: build a pool, hand it connections,
 * borrow one, give it back, free the pool. "db_conn" stands for a real client handle
 * (a PGconn *, a MYSQL *, ...). */
#include <stdio.h>
#include <stdlib.h>

#include <heliosdb_pool.h>

typedef struct {
  int fd;
} db_conn;

/* The pool calls this exactly once per connection it owns, when the connection leaves
 * the pool (removed, pool closed or freed). */
static void db_close(void *connection, void *user_data) {
  int *closed = (int *)user_data;
  free(connection);
  (*closed)++;
}

static int fail(const char *what, heliosdb_status status) {
  fprintf(stderr, "%s: %s (%s)\n", what, heliosdb_status_str(status),
          heliosdb_last_error_message());
  return 1;
}

int main(void) {
  if (heliosdb_version_major() != HELIOSDB_VERSION_MAJOR) {
    fprintf(stderr, "header and library versions differ\n");
    return 1;
  }

  int closed = 0;
  heliosdb_pool_config config;
  heliosdb_status s = heliosdb_pool_config_production(&config, sizeof config);
  if (s != HELIOSDB_OK) return fail("config", s);
  config.max_connections = 16;
  config.max_per_user = 4;
  config.close = db_close;
  config.user_data = &closed;

  heliosdb_pool *pool = NULL;
  s = heliosdb_pool_new(&config, &pool);
  if (s != HELIOSDB_OK) return fail("heliosdb_pool_new", s);

  const char *tags[] = {"primary"};
  heliosdb_connection_metadata md = {sizeof md, "orders", "postgres", "10.0.0.1:5432", tags, 1};
  for (int i = 0; i < 4; i++) {
    db_conn *conn = malloc(sizeof *conn);
    if (conn == NULL) return 1;
    conn->fd = 100 + i;
    /* From here on the pool owns conn, even if the call fails. */
    s = heliosdb_pool_add_connection(pool, conn, "alice", &md, NULL);
    if (s != HELIOSDB_OK) return fail("add_connection", s);
  }

  heliosdb_lease lease;
  s = HELIOSDB_POOL_ACQUIRE(pool, "alice", 5000, &lease); /* records file:line:func */
  if (s != HELIOSDB_OK) return fail("acquire", s);
  db_conn *conn = (db_conn *)lease.connection;
  printf("borrowed connection %llu (fd %d)\n", (unsigned long long)lease.connection_id,
         conn->fd);
  s = heliosdb_pool_release(pool, &lease);
  if (s != HELIOSDB_OK) return fail("release", s);

  heliosdb_pool_stats stats;
  stats.struct_size = sizeof stats;
  s = heliosdb_pool_get_stats(pool, &stats);
  if (s != HELIOSDB_OK) return fail("stats", s);
  printf("%zu connections, %zu idle, %llu acquires\n", stats.total_connections,
         stats.idle_connections, (unsigned long long)stats.acquires);

  heliosdb_pool_free(pool); /* closes the four connections */
  printf("closed %d connections\n", closed);
  return closed == 4 ? 0 : 1;
}

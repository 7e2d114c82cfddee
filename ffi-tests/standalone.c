/* The standalone leak detector and health monitor from C. */
#define _POSIX_C_SOURCE 200809L

#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "heliosdb_pool.h"

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

typedef struct {
  int count;
  int critical;
  int with_metadata;
  int txn_seen;
} seen_t;

static void on_report(const heliosdb_leak_report *r, void *user_data) {
  seen_t *seen = (seen_t *)user_data;
  seen->count++;
  CHECK(r->connection_id == 0);
  CHECK(r->file == NULL && r->function == NULL && r->line == 0);
  CHECK(r->thread != NULL);
  CHECK(strcmp(r->user, "alice") == 0);
  if (r->level == HELIOSDB_LEAK_CRITICAL) seen->critical++;
  if (strcmp(r->resource_id, "txn-1") == 0) {
    CHECK(strcmp(r->resource_type, "Transaction") == 0);
    CHECK(r->metadata_count == 2);
    CHECK(strcmp(r->metadata[0].key, "db") == 0 && strcmp(r->metadata[0].value, "orders") == 0);
    CHECK(strcmp(r->metadata[1].key, "sql") == 0);
    seen->txn_seen = 1;
  } else {
    CHECK(strcmp(r->resource_id, "cursor-9") == 0);
    CHECK(strcmp(r->resource_type, "my-cursor") == 0); /* a custom type */
    CHECK(r->metadata_count == 0);
  }
}

static void detector(void) {
  heliosdb_leak_detector *d = (heliosdb_leak_detector *)&d;
  CHECK_STATUS(heliosdb_leak_detector_new(100, 50, 10, &d), HELIOSDB_ERR_INVALID_CONFIG);
  CHECK(strstr(heliosdb_last_error_message(), "critical_threshold") != NULL);
  CHECK(d == (heliosdb_leak_detector *)&d);
  CHECK_STATUS(heliosdb_leak_detector_new(1, 2, 3, NULL), HELIOSDB_ERR_NULL_ARGUMENT);
  /* Thresholds wide enough for the "not leaked yet" checks under valgrind. */
  CHECK_OK(heliosdb_leak_detector_new(400, 800, 2, &d));

  heliosdb_metadata_entry md[2] = {{"db", "orders"}, {"sql", "UPDATE t SET x = 1"}};
  CHECK_OK(heliosdb_leak_detector_track(d, "txn-1", "alice", "Transaction", md, 2));
  CHECK_OK(heliosdb_leak_detector_track(d, "cursor-9", "alice", "my-cursor", NULL, 0));
  CHECK_STATUS(heliosdb_leak_detector_track(d, "txn-1", "alice", NULL, NULL, 0),
               HELIOSDB_ERR_DUPLICATE_RESOURCE);
  CHECK_STATUS(heliosdb_leak_detector_track(d, "third", "alice", NULL, NULL, 0),
               HELIOSDB_ERR_TRACKING_LIMIT);
  CHECK_STATUS(heliosdb_leak_detector_track(d, "x", "alice", NULL, NULL, 1),
               HELIOSDB_ERR_NULL_ARGUMENT);
  CHECK_STATUS(heliosdb_leak_detector_track(d, "\xc3", "alice", NULL, NULL, 0),
               HELIOSDB_ERR_INVALID_UTF8);
  CHECK_STATUS(heliosdb_leak_detector_track(NULL, "x", "alice", NULL, NULL, 0),
               HELIOSDB_ERR_NULL_ARGUMENT);

  bool leaked = true;
  CHECK_OK(heliosdb_leak_detector_is_leaked(d, "txn-1", &leaked));
  CHECK(!leaked);
  size_t count = 99;
  CHECK_OK(heliosdb_leak_detector_check(d, NULL, NULL, &count));
  CHECK(count == 0);

  sleep_ms(850);
  CHECK_OK(heliosdb_leak_detector_is_leaked(d, "txn-1", &leaked));
  CHECK(leaked);
  seen_t seen = {0, 0, 0, 0};
  CHECK_OK(heliosdb_leak_detector_check(d, on_report, &seen, &count));
  CHECK(count == 2 && seen.count == 2 && seen.critical == 2 && seen.txn_seen);

  uint64_t held = 0;
  CHECK_OK(heliosdb_leak_detector_release(d, "txn-1", &held));
  CHECK(held >= 800);
  held = 12345;
  CHECK_STATUS(heliosdb_leak_detector_release(d, "txn-1", &held), HELIOSDB_ERR_UNKNOWN_RESOURCE);
  CHECK(held == 12345);
  CHECK_OK(heliosdb_leak_detector_release(d, "cursor-9", NULL));

  heliosdb_leak_stats stats;
  stats.struct_size = sizeof stats;
  CHECK_OK(heliosdb_leak_detector_stats(d, &stats));
  CHECK(stats.leaks_detected == 2 && stats.criticals == 2 && stats.returned_after_leak == 2);
  CHECK(stats.current_tracked == 0);
  stats.struct_size = 1;
  CHECK_STATUS(heliosdb_leak_detector_stats(d, &stats), HELIOSDB_ERR_UNSUPPORTED_VERSION);
  heliosdb_leak_detector_free(d);
  heliosdb_leak_detector_free(NULL);

  /* Zeros are the defaults. */
  CHECK_OK(heliosdb_leak_detector_new(0, 0, 0, &d));
  heliosdb_leak_detector_free(d);
}

typedef struct {
  atomic_bool ok;
  atomic_int checks;
  atomic_int releases;
} mconn_t;

static bool check_conn(void *connection, void *user_data) {
  mconn_t *c = (mconn_t *)connection;
  CHECK(user_data == connection);
  atomic_fetch_add(&c->checks, 1);
  return atomic_load(&c->ok);
}

static void release_conn(void *user_data) { atomic_fetch_add(&((mconn_t *)user_data)->releases, 1); }

static void monitor(void) {
  heliosdb_leak_detector *d = NULL;
  CHECK_OK(heliosdb_leak_detector_new(400, 800, 10, &d));
  heliosdb_health_monitor *m = NULL;
  CHECK_STATUS(heliosdb_health_monitor_new(d, 10, 1000, 2, NULL), HELIOSDB_ERR_NULL_ARGUMENT);
  CHECK_OK(heliosdb_health_monitor_new(d, 10, 1000, 2, &m));
  /* The monitor keeps the detector alive; track through it first. */
  CHECK_OK(heliosdb_leak_detector_track(d, "c1", "alice", NULL, NULL, 0));

  static mconn_t c1, c2;
  atomic_store(&c1.ok, true);
  atomic_store(&c2.ok, true);
  CHECK_STATUS(heliosdb_health_monitor_monitor(m, "c1", &c1, NULL, &c1, release_conn),
               HELIOSDB_ERR_NULL_ARGUMENT);
  CHECK(atomic_load(&c1.releases) == 0); /* a failed monitor keeps nothing */
  CHECK_OK(heliosdb_health_monitor_monitor(m, "c1", &c1, check_conn, &c1, release_conn));
  CHECK_OK(heliosdb_health_monitor_monitor(m, "c2", &c2, check_conn, &c2, release_conn));

  int32_t status = -1;
  bool leaked = true;
  CHECK_OK(heliosdb_health_monitor_status(m, "c1", &status, &leaked));
  CHECK(status == HELIOSDB_HEALTH_HEALTHY && !leaked && atomic_load(&c1.checks) == 0);
  CHECK_OK(heliosdb_health_monitor_check(m, "c1", &status, NULL));
  CHECK(status == HELIOSDB_HEALTH_HEALTHY && atomic_load(&c1.checks) == 1);
  atomic_store(&c1.ok, false);
  CHECK_OK(heliosdb_health_monitor_check(m, "c1", &status, NULL));
  CHECK(status == HELIOSDB_HEALTH_DEGRADED);
  CHECK_OK(heliosdb_health_monitor_check(m, "c1", &status, NULL));
  CHECK(status == HELIOSDB_HEALTH_UNHEALTHY);
  status = -1;
  CHECK_STATUS(heliosdb_health_monitor_check(m, "nope", &status, NULL),
               HELIOSDB_ERR_UNKNOWN_RESOURCE);
  CHECK(status == -1);
  CHECK_STATUS(heliosdb_health_monitor_status(m, "nope", &status, NULL),
               HELIOSDB_ERR_UNKNOWN_RESOURCE);

  /* The detector's view: c1 is leaked once held past 400 ms. */
  sleep_ms(450);
  CHECK_OK(heliosdb_health_monitor_status(m, "c1", &status, &leaked));
  CHECK(leaked && status == HELIOSDB_HEALTH_UNHEALTHY);
  heliosdb_leak_detector_free(d); /* the monitor still holds it */
  CHECK_OK(heliosdb_health_monitor_status(m, "c1", &status, &leaked));
  CHECK(leaked);

  /* The background thread checks every connection each 10 ms. */
  bool running = true;
  CHECK_OK(heliosdb_health_monitor_is_running(m, &running));
  CHECK(!running);
  CHECK_OK(heliosdb_health_monitor_start(m));
  CHECK_OK(heliosdb_health_monitor_start(m)); /* idempotent */
  CHECK_OK(heliosdb_health_monitor_is_running(m, &running));
  CHECK(running);
  for (int i = 0; i < 10000 && atomic_load(&c2.checks) < 2; i++) sleep_ms(2);
  CHECK(atomic_load(&c2.checks) >= 2);
  CHECK_OK(heliosdb_health_monitor_stop(m));
  CHECK_OK(heliosdb_health_monitor_is_running(m, &running));
  CHECK(!running);

  /* Unmonitor releases once; free releases the rest. */
  bool was = false;
  CHECK_OK(heliosdb_health_monitor_unmonitor(m, "c1", &was));
  CHECK(was && atomic_load(&c1.releases) == 1);
  CHECK_OK(heliosdb_health_monitor_unmonitor(m, "c1", &was));
  CHECK(!was);
  CHECK_OK(heliosdb_health_monitor_start(m));
  heliosdb_health_monitor_free(m); /* stops the thread, releases c2 */
  CHECK(atomic_load(&c2.releases) == 1 && atomic_load(&c1.releases) == 1);
  heliosdb_health_monitor_free(NULL);

  /* NULL detector and zeros: the defaults. */
  CHECK_OK(heliosdb_health_monitor_new(NULL, 0, 0, 0, &m));
  CHECK_STATUS(heliosdb_health_monitor_check(NULL, "c", &status, NULL), HELIOSDB_ERR_NULL_ARGUMENT);
  CHECK_STATUS(heliosdb_health_monitor_check(m, "c", NULL, NULL), HELIOSDB_ERR_NULL_ARGUMENT);
  heliosdb_health_monitor_free(m);
}

int main(void) {
  detector();
  monitor();
  printf("standalone: ok\n");
  return 0;
}

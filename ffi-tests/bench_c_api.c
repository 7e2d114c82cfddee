/* Times acquire+release through the C API from C: HELIOSDB_POOL_TRY_ACQUIRE (call
 * site recorded) + heliosdb_pool_release, and the plain heliosdb_pool_try_acquire,
 * single-threaded on a pool of 8 connections of one user. Prints the median of RUNS
 * runs of N cycles each, in ns per cycle. Built and run by scripts/bench-c-api.sh.
 *
 *   bench_c_api [N [RUNS]]      (defaults: 1000000 cycles, 7 runs) */
#define _POSIX_C_SOURCE 200809L

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "heliosdb_pool.h"

#define CONNECTIONS 8
#define MAX_RUNS 101

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static void die(const char *what, heliosdb_status s) {
  fprintf(stderr, "%s: %s (%s)\n", what, heliosdb_status_str(s), heliosdb_last_error_message());
  exit(1);
}

/* One run of n cycles; returns ns per cycle. */
static double run(heliosdb_pool *pool, long n, int with_site) {
  heliosdb_lease lease;
  double t0 = now_ns();
  for (long i = 0; i < n; i++) {
    heliosdb_status s = with_site ? HELIOSDB_POOL_TRY_ACQUIRE(pool, "bench", &lease)
                                  : heliosdb_pool_try_acquire(pool, "bench", &lease);
    if (s != HELIOSDB_OK) die("acquire", s);
    s = heliosdb_pool_release(pool, &lease);
    if (s != HELIOSDB_OK) die("release", s);
  }
  return (now_ns() - t0) / (double)n;
}

static double median(heliosdb_pool *pool, long n, int runs, int with_site) {
  double samples[MAX_RUNS];
  run(pool, n / 10 + 1, with_site); /* warm-up */
  for (int r = 0; r < runs; r++) samples[r] = run(pool, n, with_site);
  qsort(samples, (size_t)runs, sizeof samples[0], cmp_double);
  return samples[runs / 2];
}

int main(int argc, char **argv) {
  long n = argc > 1 ? atol(argv[1]) : 1000000L;
  int runs = argc > 2 ? atoi(argv[2]) : 7;
  if (n <= 0 || runs <= 0 || runs > MAX_RUNS) {
    fprintf(stderr, "usage: %s [N>0 [RUNS 1..%d]]\n", argv[0], MAX_RUNS);
    return 2;
  }
  heliosdb_pool_config cfg;
  heliosdb_status s = heliosdb_pool_config_init(&cfg, sizeof cfg);
  if (s != HELIOSDB_OK) die("config", s);
  cfg.max_connections = CONNECTIONS;
  cfg.max_per_user = CONNECTIONS;
  heliosdb_pool *pool = NULL;
  s = heliosdb_pool_new(&cfg, &pool);
  if (s != HELIOSDB_OK) die("heliosdb_pool_new", s);
  static int conns[CONNECTIONS];
  for (int i = 0; i < CONNECTIONS; i++) {
    s = heliosdb_pool_add_connection(pool, &conns[i], "bench", NULL, NULL);
    if (s != HELIOSDB_OK) die("add_connection", s);
  }
  printf("C API, 1 thread, %d connections, median of %d runs of %ld cycles:\n", CONNECTIONS,
         runs, n);
  printf("  HELIOSDB_POOL_TRY_ACQUIRE + heliosdb_pool_release: %.1f ns/cycle\n",
         median(pool, n, runs, 1));
  printf("  heliosdb_pool_try_acquire + heliosdb_pool_release: %.1f ns/cycle\n",
         median(pool, n, runs, 0));
  heliosdb_pool_free(pool);
  return 0;
}

// SOCI 4's soci::connection_pool against this pool through its C calls and its C++
// wrapper, in one binary, over the same kind of connection: real SOCI sessions on
// SQLite3 in-memory databases (only the borrow and the return are timed; no query runs).
//
// - single thread: every variant borrows and returns one connection per cycle from a
//   pool of 8; each repetition runs every variant once, in alternating order; the
//   program prints the median ns per cycle and the ratios of the medians;
// - 2, 4 and 8 threads (up to MAX_THREADS): each thread borrows, touches and returns in
//   a loop for MS milliseconds over a pool of 1 connection (callers always wait), of 2,
//   and of as many connections as threads (no caller waits); the program prints the
//   median throughput of RUNS runs (Mops/s), the ratios against SOCI, and each
//   variant's median fairness (the slowest thread's operations over the fastest's in
//   a run: 1 when every thread got as many borrows, 0 when one never got any).
//
// The variants: SOCI `lease()` + `at()` + `give_back()`; the C calls
// `heliosdb_pool_acquire` (no call site) and `HELIOSDB_POOL_ACQUIRE` (call site
// recorded), `HELIOSDB_POOL_TRY_ACQUIRE`, each + `heliosdb_pool_release`; the wrapper's
// `pool.acquire(user, 10s)` and `pool.try_acquire(user)` + `~Lease`. This pool runs
// with the C defaults (leak detection on, the sweeper thread running); SOCI's pool
// neither tracks leaks nor checks health.
//
//   bench_soci [N [RUNS [MS [MAX_THREADS]]]]   (defaults: 1000000, 11, 200, 8)
//
// Built and run by scripts/bench-soci.sh (which installs libsoci-dev when missing);
// results and the machine in BENCHMARKS.md, "SOCI in the suite".
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include <soci/soci.h>
#include <soci/sqlite3/soci-sqlite3.h>

#include "bench_timing.hpp"
#include "heliosdb_pool.hpp"

namespace {

constexpr int kConnections = 8;
constexpr const char *kUser = "bench";

[[noreturn]] void die(const char *what) { bench::die("bench_soci", what); }

/// Keeps `p` observable, so the loop that borrows it cannot be optimised away.
template <typename T>
inline void keep(T *p) {
  asm volatile("" : : "g"(p) : "memory");
}

/// The SOCI pool of `size` sessions, each on its own in-memory SQLite database.
std::unique_ptr<soci::connection_pool> soci_pool(int size) {
  auto pool = std::make_unique<soci::connection_pool>(static_cast<std::size_t>(size));
  for (int i = 0; i < size; i++) {
    pool->at(static_cast<std::size_t>(i)).open(soci::sqlite3, ":memory:");
  }
  return pool;
}

/// This pool with `size` sessions of one user, the C defaults otherwise.
std::unique_ptr<heliosdb::Pool<soci::session>> helios_pool(int size) {
  heliosdb::Config config = heliosdb::Config::defaults();
  config.settings.max_connections = static_cast<size_t>(size);
  config.settings.max_per_user = static_cast<size_t>(size);
  auto pool = std::make_unique<heliosdb::Pool<soci::session>>(config);
  for (int i = 0; i < size; i++) {
    pool->emplace_connection(kUser, soci::sqlite3, ":memory:");
  }
  return pool;
}

// ---- one cycle of each variant (named functions: callgrind_annotate finds them) ----

__attribute__((noinline)) void soci_cycle(soci::connection_pool &pool) {
  const std::size_t pos = pool.lease();
  keep(&pool.at(pos));
  pool.give_back(pos);
}

__attribute__((noinline)) void c_cycle(heliosdb_pool *pool) {
  heliosdb_lease lease;
  if (heliosdb_pool_acquire(pool, kUser, 10000, &lease) != HELIOSDB_OK) die("C acquire");
  keep(lease.connection);
  if (heliosdb_pool_release(pool, &lease) != HELIOSDB_OK) die("C release");
}

__attribute__((noinline)) void c_site_cycle(heliosdb_pool *pool) {
  heliosdb_lease lease;
  if (HELIOSDB_POOL_ACQUIRE(pool, kUser, 10000, &lease) != HELIOSDB_OK) die("C acquire");
  keep(lease.connection);
  if (heliosdb_pool_release(pool, &lease) != HELIOSDB_OK) die("C release");
}

__attribute__((noinline)) void c_try_cycle(heliosdb_pool *pool) {
  heliosdb_lease lease;
  if (HELIOSDB_POOL_TRY_ACQUIRE(pool, kUser, &lease) != HELIOSDB_OK) die("C try_acquire");
  keep(lease.connection);
  if (heliosdb_pool_release(pool, &lease) != HELIOSDB_OK) die("C release");
}

__attribute__((noinline)) void cxx_cycle(heliosdb::Pool<soci::session> &pool) {
  heliosdb::Lease<soci::session> lease = pool.acquire(kUser, std::chrono::seconds(10));
  keep(lease.get());
}

__attribute__((noinline)) void cxx_try_cycle(heliosdb::Pool<soci::session> &pool) {
  std::optional<heliosdb::Lease<soci::session>> lease = pool.try_acquire(kUser);
  if (!lease) die("C++ try_acquire");
  keep(lease->get());
}

// ---- single thread ----

void single_thread(long n, int runs) {
  std::unique_ptr<soci::connection_pool> soci = soci_pool(kConnections);
  std::unique_ptr<heliosdb::Pool<soci::session>> helios = helios_pool(kConnections);
  heliosdb_pool *raw = helios->get();
  soci::connection_pool &sp = *soci;
  heliosdb::Pool<soci::session> &hp = *helios;

  std::vector<bench::Variant> rows{
      {"SOCI connection_pool lease + at + give_back", {}},
      {"C   heliosdb_pool_acquire + release", {}},
      {"C   HELIOSDB_POOL_ACQUIRE + release (call site)", {}},
      {"C   HELIOSDB_POOL_TRY_ACQUIRE + release (call site)", {}},
      {"C++ pool.acquire(user, 10s) + ~Lease", {}},
      {"C++ pool.try_acquire(user) + ~Lease", {}},
  };
  auto run = [&](std::size_t i, long cycles) {
    switch (i) {
      case 0:
        return bench::time_run(cycles, [&sp] { soci_cycle(sp); });
      case 1:
        return bench::time_run(cycles, [raw] { c_cycle(raw); });
      case 2:
        return bench::time_run(cycles, [raw] { c_site_cycle(raw); });
      case 3:
        return bench::time_run(cycles, [raw] { c_try_cycle(raw); });
      case 4:
        return bench::time_run(cycles, [&hp] { cxx_cycle(hp); });
      default:
        return bench::time_run(cycles, [&hp] { cxx_try_cycle(hp); });
    }
  };
  for (std::size_t i = 0; i < rows.size(); i++) {
    run(i, n / 10 + 1);  // warm-up
  }
  for (int r = 0; r < runs; r++) {
    for (std::size_t k = 0; k < rows.size(); k++) {
      const std::size_t i = r % 2 == 0 ? k : rows.size() - 1 - k;
      rows[i].samples.push_back(run(i, n));
    }
  }
  const double soci_ns = bench::median(rows[0].samples);
  const double c_site_ns = bench::median(rows[2].samples);
  const double c_try_ns = bench::median(rows[3].samples);
  std::printf("1 thread, pools of %d sessions, median of %d runs of %ld cycles (ns/cycle):\n",
              kConnections, runs, n);
  for (std::size_t i = 0; i < rows.size(); i++) {
    const double m = bench::median(rows[i].samples);
    std::printf("  %-52s %7.1f ns  /SOCI %.2f", rows[i].name, m, m / soci_ns);
    if (i == 4) std::printf("  /C acquire %.2f", m / c_site_ns);
    if (i == 5) std::printf("  /C try %.2f", m / c_try_ns);
    std::printf("\n");
  }
}

// ---- threads ----

/// A thread's operation count, on a cache line of its own.
struct alignas(64) Counter {
  std::atomic<long> ops{0};
};

/// What one run of `throughput` measured.
struct Run {
  double ops_per_sec;
  /// The slowest thread's operations over the fastest's.
  double fairness;
};

/// Runs `threads` threads of `body` for `ms` milliseconds.
template <typename F>
Run throughput(int threads, int ms, F body) {
  std::vector<Counter> counts(static_cast<std::size_t>(threads));
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::atomic<bool> stop{false};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; t++) {
    pool.emplace_back([&, t] {
      ready.fetch_add(1);
      while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
      long ops = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        body();
        ops++;
      }
      counts[static_cast<std::size_t>(t)].ops.store(ops, std::memory_order_relaxed);
    });
  }
  while (ready.load() < threads) std::this_thread::yield();
  const bench::Clock::time_point t0 = bench::Clock::now();
  go.store(true, std::memory_order_release);
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  stop.store(true, std::memory_order_relaxed);
  for (std::thread &th : pool) th.join();
  const double secs = std::chrono::duration<double>(bench::Clock::now() - t0).count();
  long total = 0, least = -1, most = 0;
  for (const Counter &c : counts) {
    const long ops = c.ops.load(std::memory_order_relaxed);
    total += ops;
    least = least < 0 || ops < least ? ops : least;
    most = ops > most ? ops : most;
  }
  const double fairness = most > 0 ? static_cast<double>(least) / static_cast<double>(most) : 0;
  return Run{static_cast<double>(total) / secs, fairness};
}

/// A variant's throughput and fairness samples.
struct Samples {
  std::vector<double> ops, fairness;
  void add(Run run) {
    ops.push_back(run.ops_per_sec);
    fairness.push_back(run.fairness);
  }
};

void contended(int runs, int ms, int max_threads) {
  std::printf(
      "\nthreads, median of %d runs of %d ms (Mops/s; ratio against SOCI; fairness: slowest "
      "thread's borrows over the fastest's):\n",
      runs, ms);
  std::printf("  %-8s %-6s %10s %6s %12s %8s %6s %12s %8s %6s\n", "threads", "pool", "SOCI",
              "fair", "C acquire", "/SOCI", "fair", "C++ acquire", "/SOCI", "fair");
  for (int threads = 2; threads <= max_threads; threads *= 2) {
    std::vector<int> sizes{1, 2};
    if (threads > 2) sizes.push_back(threads);
    for (int size : sizes) {
      std::unique_ptr<soci::connection_pool> soci = soci_pool(size);
      std::unique_ptr<heliosdb::Pool<soci::session>> helios = helios_pool(size);
      heliosdb_pool *raw = helios->get();
      soci::connection_pool &sp = *soci;
      heliosdb::Pool<soci::session> &hp = *helios;
      Samples v_soci, v_c, v_cxx;
      for (int r = 0; r < runs; r++) {
        v_soci.add(throughput(threads, ms, [&sp] { soci_cycle(sp); }));
        v_c.add(throughput(threads, ms, [raw] { c_site_cycle(raw); }));
        v_cxx.add(throughput(threads, ms, [&hp] { cxx_cycle(hp); }));
      }
      const double s = bench::median(v_soci.ops);
      const double c = bench::median(v_c.ops);
      const double x = bench::median(v_cxx.ops);
      std::printf("  %-8d %-6d %10.2f %6.2f %12.2f %8.2f %6.2f %12.2f %8.2f %6.2f\n", threads,
                  size, s / 1e6, bench::median(v_soci.fairness), c / 1e6, c / s,
                  bench::median(v_c.fairness), x / 1e6, x / s, bench::median(v_cxx.fairness));
    }
  }
}

}  // namespace

int main(int argc, char **argv) {
  const long n = argc > 1 ? std::atol(argv[1]) : 1000000L;
  const int runs = argc > 2 ? std::atoi(argv[2]) : 11;
  const int ms = argc > 3 ? std::atoi(argv[3]) : 200;
  const int max_threads = argc > 4 ? std::atoi(argv[4]) : 8;
  if (n <= 0 || runs <= 0 || runs > 1001 || ms <= 0 || max_threads < 0 || max_threads > 64) {
    std::fprintf(stderr, "usage: %s [N>0 [RUNS 1..1001 [MS>0 [MAX_THREADS 0..64]]]]\n",
                 argv[0]);
    return 2;
  }
  try {
    single_thread(n, runs);
    if (max_threads >= 2) contended(runs, ms, max_threads);
  } catch (const std::exception &e) {
    std::fprintf(stderr, "bench_soci: %s\n", e.what());
    return 1;
  }
  return 0;
}

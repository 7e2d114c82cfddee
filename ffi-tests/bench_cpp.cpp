// Times single-thread acquire+release through the C calls and through the typed C++
// wrapper (heliosdb::Pool<T>) on the same pool, in the same run: each repetition runs
// every variant once, in alternating order, and the program prints the median ns per
// cycle of each and the wrapper/C ratio of the medians. Also times the misses, with
// every connection borrowed: C try_acquire against the wrapper's try_acquire, and a C
// acquire with a 0 ms timeout against the wrapper's try_acquire_for(0ms) (std::nullopt)
// and its throwing acquire(0ms).
//
//   bench_cpp [N [RUNS]]      (defaults: 1000000 cycles, 11 runs)
//
// Build (see BENCHMARKS.md, "The C++ wrapper against the C calls"):
//   cargo build --release --lib
//   g++ -std=c++17 -O2 -I include -I ffi-tests ffi-tests/bench_cpp.cpp
//       target/release/libheliosdb_pool.a -lpthread -ldl -lm -o target/tmp/bench_cpp
//   (one line)
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "bench_timing.hpp"
#include "heliosdb_pool.hpp"

namespace {

constexpr int kConnections = 8;

struct Conn {
  int id = 0;
};

[[noreturn]] void die(const char *what) { bench::die("bench_cpp", what); }

using bench::median;
using bench::time_run;
using bench::Variant;

}  // namespace

int main(int argc, char **argv) {
  const long n = argc > 1 ? std::atol(argv[1]) : 1000000L;
  const int runs = argc > 2 ? std::atoi(argv[2]) : 11;
  if (n <= 0 || runs <= 0 || runs > 1001) {
    std::fprintf(stderr, "usage: %s [N>0 [RUNS 1..1001]]\n", argv[0]);
    return 2;
  }
  heliosdb::Config config = heliosdb::Config::defaults();
  config.settings.max_connections = kConnections;
  config.settings.max_per_user = kConnections;
  heliosdb::Pool<Conn> pool(config);
  for (int i = 0; i < kConnections; i++) {
    pool.emplace_connection("bench");
  }
  heliosdb_pool *raw = pool.get();
  const std::string_view user_view = std::string_view("bench-and-more").substr(0, 5);

  // ---- hits: the same cycles through C and through the wrapper ----
  auto c_try = [raw] {
    heliosdb_lease lease;
    if (HELIOSDB_POOL_TRY_ACQUIRE(raw, "bench", &lease) != HELIOSDB_OK) die("C try_acquire");
    if (heliosdb_pool_release(raw, &lease) != HELIOSDB_OK) die("C release");
  };
  auto cxx_try = [&pool] {
    std::optional<heliosdb::Lease<Conn>> lease = pool.try_acquire("bench");
    if (!lease) die("C++ try_acquire");
  };
  auto c_timed = [raw] {
    heliosdb_lease lease;
    if (HELIOSDB_POOL_ACQUIRE(raw, "bench", 1000, &lease) != HELIOSDB_OK) die("C acquire");
    if (heliosdb_pool_release(raw, &lease) != HELIOSDB_OK) die("C release");
  };
  auto cxx_timed = [&pool] {
    heliosdb::Lease<Conn> lease = pool.acquire("bench", std::chrono::seconds(1));
    lease->id++;
  };
  auto cxx_timed_view = [&pool, user_view] {
    heliosdb::Lease<Conn> lease = pool.acquire(user_view, std::chrono::seconds(1));
    lease->id++;
  };

  Variant v_c_try{"C   HELIOSDB_POOL_TRY_ACQUIRE + heliosdb_pool_release", {}};
  Variant v_cxx_try{"C++ pool.try_acquire(\"bench\") + ~Lease", {}};
  Variant v_c_timed{"C   HELIOSDB_POOL_ACQUIRE(1000 ms) + heliosdb_pool_release", {}};
  Variant v_cxx_timed{"C++ pool.acquire(\"bench\", 1s) + ~Lease", {}};
  Variant v_cxx_view{"C++ pool.acquire(string_view, 1s) + ~Lease", {}};

  const long warm = n / 10 + 1;
  time_run(warm, c_try);
  time_run(warm, cxx_try);
  time_run(warm, c_timed);
  time_run(warm, cxx_timed);
  time_run(warm, cxx_timed_view);
  for (int r = 0; r < runs; r++) {
    if (r % 2 == 0) {
      v_c_try.samples.push_back(time_run(n, c_try));
      v_cxx_try.samples.push_back(time_run(n, cxx_try));
      v_c_timed.samples.push_back(time_run(n, c_timed));
      v_cxx_timed.samples.push_back(time_run(n, cxx_timed));
      v_cxx_view.samples.push_back(time_run(n, cxx_timed_view));
    } else {
      v_cxx_view.samples.push_back(time_run(n, cxx_timed_view));
      v_cxx_timed.samples.push_back(time_run(n, cxx_timed));
      v_c_timed.samples.push_back(time_run(n, c_timed));
      v_cxx_try.samples.push_back(time_run(n, cxx_try));
      v_c_try.samples.push_back(time_run(n, c_try));
    }
  }

  // ---- misses: every connection borrowed ----
  std::vector<heliosdb::Lease<Conn>> all;
  for (int i = 0; i < kConnections; i++) {
    all.push_back(pool.acquire("bench", std::chrono::seconds(1)));
  }
  auto c_miss = [raw] {
    heliosdb_lease lease;
    if (HELIOSDB_POOL_TRY_ACQUIRE(raw, "bench", &lease) != HELIOSDB_ERR_NO_IDLE_CONNECTION) {
      die("C miss");
    }
  };
  auto c_miss_timed = [raw] {
    heliosdb_lease lease;
    if (HELIOSDB_POOL_ACQUIRE(raw, "bench", 0, &lease) != HELIOSDB_ERR_TIMEOUT) {
      die("C timed miss");
    }
  };
  auto cxx_miss = [&pool] {
    if (pool.try_acquire("bench")) die("C++ try_acquire miss");
  };
  auto cxx_miss_for = [&pool] {
    if (pool.try_acquire_for("bench", std::chrono::milliseconds(0))) die("C++ miss");
  };
  auto cxx_miss_throw = [&pool] {
    try {
      pool.acquire("bench", std::chrono::milliseconds(0));
      die("C++ acquire(0ms) did not time out");
    } catch (const heliosdb::Error &) {
    }
  };
  const long misses = n / 10 + 1;
  Variant v_c_miss{"C   HELIOSDB_POOL_TRY_ACQUIRE miss (NO_IDLE_CONNECTION)", {}};
  Variant v_cxx_miss{"C++ pool.try_acquire miss (std::nullopt)", {}};
  Variant v_c_miss_timed{"C   HELIOSDB_POOL_ACQUIRE(0 ms) miss (TIMEOUT)", {}};
  Variant v_cxx_miss_for{"C++ pool.try_acquire_for(0ms) miss (std::nullopt)", {}};
  Variant v_cxx_throw{"C++ pool.acquire(0ms) miss (throws Error)", {}};
  time_run(misses / 10 + 1, c_miss);
  time_run(misses / 10 + 1, cxx_miss);
  time_run(misses / 10 + 1, c_miss_timed);
  time_run(misses / 10 + 1, cxx_miss_for);
  time_run(misses / 10 + 1, cxx_miss_throw);
  for (int r = 0; r < runs; r++) {
    v_c_miss.samples.push_back(time_run(misses, c_miss));
    v_cxx_miss.samples.push_back(time_run(misses, cxx_miss));
    v_c_miss_timed.samples.push_back(time_run(misses, c_miss_timed));
    v_cxx_miss_for.samples.push_back(time_run(misses, cxx_miss_for));
    v_cxx_throw.samples.push_back(time_run(misses, cxx_miss_throw));
  }
  all.clear();

  std::printf("C++ wrapper vs C calls, 1 thread, %d connections, median of %d runs of %ld "
              "cycles (misses: %ld):\n",
              kConnections, runs, n, misses);
  auto line = [](const Variant &v, const Variant *base) {
    const double m = median(v.samples);
    if (base != nullptr) {
      std::printf("  %-58s %7.1f ns/cycle  ratio %.3f\n", v.name, m, m / median(base->samples));
    } else {
      std::printf("  %-58s %7.1f ns/cycle\n", v.name, m);
    }
  };
  line(v_c_try, nullptr);
  line(v_cxx_try, &v_c_try);
  line(v_c_timed, nullptr);
  line(v_cxx_timed, &v_c_timed);
  line(v_cxx_view, &v_c_timed);
  line(v_c_miss, nullptr);
  line(v_cxx_miss, &v_c_miss);
  line(v_c_miss_timed, nullptr);
  line(v_cxx_miss_for, &v_c_miss_timed);
  line(v_cxx_throw, &v_c_miss_timed);
  return 0;
}

// A Pool<T> destroyed on one thread while a Lease<T> is released (or destroyed) on
// another, round after round (HELIOSDB_RACE_ROUNDS, default 2000): every connection is
// destroyed exactly once and nothing is touched after it is freed. Built and run by
// `cargo test --test ffi`, under valgrind and ASan+UBSan by .ci/ffi.sh (20000 rounds
// there) and under ThreadSanitizer by .ci/tsan.sh; prints "cxx_free_race: ok".
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <thread>
#include <utility>

#include "check.h"
#include "heliosdb_pool.hpp"

using namespace std::chrono_literals;

namespace {

std::atomic<int> g_destroyed{0};

struct Db {
  std::atomic<bool> destroyed{false};
  ~Db() {
    CHECK(!destroyed.exchange(true));
    g_destroyed++;
  }
};

heliosdb::Config quiet() {
  heliosdb::Config config = heliosdb::Config::defaults();
  config.settings.idle_timeout_ms = 0;
  config.settings.max_connection_age_ms = 0;
  config.settings.health_check_enabled = false;
  config.settings.leak_detection_enabled = false;
  config.settings.auto_cleanup_enabled = false;
  return config;
}

}  // namespace

int main() {
  const char *env = std::getenv("HELIOSDB_RACE_ROUNDS");
  const int rounds = env != nullptr ? std::atoi(env) : 2000;
  for (int round = 0; round < rounds; round++) {
    g_destroyed = 0;
    auto pool = std::make_unique<heliosdb::Pool<Db>>(quiet());
    pool->add_connection(std::make_unique<Db>(), "alice");
    pool->add_connection(std::make_unique<Db>(), "alice");
    std::optional<heliosdb::Lease<Db>> lease = pool->try_acquire("alice");
    CHECK(lease.has_value());
    std::atomic<int> ready{0};
    std::thread releaser([&ready, round, l = std::move(*lease)]() mutable {
      ready++;
      while (ready.load() < 2) {
      }
      if (round % 2 == 0) {
        l.release();  // explicitly, checking the status
      }
      // otherwise the Lease's destructor releases it
    });
    ready++;
    while (ready.load() < 2) {
    }
    pool.reset();  // the Pool dies while the lease may still be out
    releaser.join();
    CHECK(g_destroyed.load() == 2);
  }
  std::printf("cxx_free_race: ok (%d rounds)\n", rounds);
  return 0;
}

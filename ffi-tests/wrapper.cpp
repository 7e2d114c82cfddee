// The C++17 wrapper, untyped form (Pool<void>: void* connections, config.callbacks):
// RAII leases, move-only pool, exceptions, lambda callbacks. The typed Pool<T> is
// tested in typed_pool.cpp.
#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "check.h"
#include "heliosdb_pool.hpp"

namespace {

struct Conn {
  int id;
  std::string user;
  std::atomic<int> in_use{0};
  std::atomic<int> closed{0};
};

template <typename F>
heliosdb_status status_of(F &&f) {
  try {
    f();
  } catch (const heliosdb::Error &e) {
    CHECK(std::strlen(e.what()) > 0);
    return e.status();
  }
  return HELIOSDB_OK;
}

void basics() {
  std::vector<std::unique_ptr<Conn>> conns;
  for (int i = 0; i < 4; i++) {
    conns.push_back(std::make_unique<Conn>());
    conns.back()->id = i;
    conns.back()->user = i < 3 ? "alice" : "bob";
  }
  auto closes = std::make_shared<std::atomic<int>>(0);
  {
    heliosdb::Config config = heliosdb::Config::development();
    config.settings.max_connections = 4;
    config.settings.max_per_user = 3;
    // A capturing lambda: its state lives in the heap box the pool frees at the end.
    config.callbacks.close = [closes](void *connection) {
      auto *c = static_cast<Conn *>(connection);
      CHECK(c->closed.fetch_add(1) == 0);
      closes->fetch_add(1);
    };
    heliosdb::Pool pool(config);
    heliosdb::Metadata md{"orders", "postgres", "10.0.0.1:5432", {"primary", "rw"}};
    std::vector<std::uint64_t> ids;
    for (auto &c : conns) {
      ids.push_back(c->id == 0 ? pool.add_connection(c.get(), c->user, md)
                               : pool.add_connection(c.get(), c->user));
    }

    {
      heliosdb::Lease a = pool.acquire("alice", std::chrono::milliseconds(1000));
      CHECK(a);
      CHECK(a.as<Conn>()->user == "alice");
      CHECK(a.as<Conn>()->in_use.exchange(1) == 0);
      const heliosdb::ConnectionId id = a.connection_id();
      heliosdb::Lease moved = std::move(a);
      CHECK(!a && moved);
      // A moved-from lease holds nothing, its id included.
      CHECK(a.connection_id() == 0 && a.connection() == nullptr && moved.connection_id() == id);
      CHECK(pool.stats().active_connections == 1);
      moved.as<Conn>()->in_use.store(0);
    }  // released here
    CHECK(pool.stats().active_connections == 0);

    // try_acquire: nullopt when nothing is idle.
    std::vector<heliosdb::Lease<>> held;
    for (int i = 0; i < 3; i++) {
      std::optional<heliosdb::Lease<>> l = pool.try_acquire("alice");
      CHECK(l.has_value());
      held.push_back(std::move(*l));
    }
    CHECK(!pool.try_acquire("alice").has_value());

    // Errors are exceptions carrying the status and the detail.
    CHECK(status_of([&] { pool.acquire("alice", std::chrono::milliseconds(10)); }) ==
          HELIOSDB_ERR_TIMEOUT);
    CHECK(status_of([&] { pool.acquire("nobody", std::chrono::milliseconds(0)); }) ==
          HELIOSDB_ERR_UNKNOWN_USER);
    try {
      pool.acquire("nobody", std::chrono::milliseconds(0));
      CHECK(false);
    } catch (const heliosdb::Error &e) {
      CHECK(std::string(e.what()).find("nobody") != std::string::npos);
    }

    // Explicit release reports errors; the lease is empty afterwards.
    held[0].release();
    CHECK(!held[0]);
    held[0].release();  // no-op on an empty lease

    // Move-only pool.
    heliosdb::Pool other = std::move(pool);
    CHECK(other.get() != nullptr && pool.get() == nullptr);
    CHECK(other.remove_connection(ids[3]) == false);
    CHECK(conns[3]->closed.load() == 1);
    CHECK(status_of([&] { other.remove_connection(ids[3]); }) ==
          HELIOSDB_ERR_UNKNOWN_CONNECTION);

    // add_connection on the moved-from pool still closes what it is handed, as the
    // ownership rule says, and throws.
    {
      Conn stray;
      stray.user = "stray";
      int before = closes->load();
      CHECK(status_of([&] { pool.add_connection(&stray, "alice"); }) ==
            HELIOSDB_ERR_NULL_ARGUMENT);
      CHECK(stray.closed.load() == 1 && closes->load() == before + 1);
      // So does a failing add on a live pool (a user name with a NUL byte).
      Conn stray2;
      CHECK(status_of([&] { other.add_connection(&stray2, std::string("a\0b", 3)); }) ==
            HELIOSDB_ERR_INVALID_ARGUMENT);
      CHECK(stray2.closed.load() == 1 && closes->load() == before + 2);
    }

    // A lease released on another thread.
    std::thread t([lease = std::move(held[1])]() mutable { lease.release(); });
    t.join();
    CHECK(other.stats().active_connections == 1);
    // held[2] is still out when `other` is destroyed: it stays valid and is released
    // (and closed) when `held` is destroyed below.
    other.close();
    CHECK(other.is_closed());
  }
  CHECK(closes->load() == 6);  // the four pooled, the two strays
  for (auto &c : conns) {
    CHECK(c->closed.load() == 1);
  }
}

void bad_config() {
  heliosdb::Config config = heliosdb::Config::production();
  config.settings.max_per_user = config.settings.max_connections + 1;
  bool called = false;
  config.callbacks.close = [&called](void *) { called = true; };
  CHECK(status_of([&] { heliosdb::Pool pool(config); }) == HELIOSDB_ERR_INVALID_CONFIG);
  config.settings.struct_size = 3;
  CHECK(status_of([&] { heliosdb::Pool pool(config); }) == HELIOSDB_ERR_UNSUPPORTED_VERSION);
  CHECK(!called);
}

void throwing_callback() {
  Conn c;
  {
    heliosdb::Config config = heliosdb::Config::defaults();
    config.callbacks.close = [](void *) { throw std::runtime_error("close failed"); };
    heliosdb::Pool pool(config);
    pool.add_connection(&c, "u");
  }  // the exception is swallowed at the boundary
}

void threads() {
  constexpr int kConns = 3;
  std::vector<std::unique_ptr<Conn>> conns;
  heliosdb::Config config = heliosdb::Config::defaults();
  config.settings.max_connections = kConns;
  config.settings.max_per_user = kConns;
  heliosdb::Pool pool(config);
  for (int i = 0; i < kConns; i++) {
    conns.push_back(std::make_unique<Conn>());
    pool.add_connection(conns.back().get(), "u");
  }
  std::vector<std::thread> workers;
  for (int t = 0; t < 8; t++) {
    workers.emplace_back([&pool] {
      for (int i = 0; i < 1000; i++) {
        heliosdb::Lease lease = pool.acquire("u", std::chrono::seconds(10));
        CHECK(lease.as<Conn>()->in_use.exchange(1) == 0);
        lease.as<Conn>()->in_use.store(0);
      }
    });
  }
  for (auto &w : workers) {
    w.join();
  }
  CHECK(pool.stats().acquires == 8000);
}

// The sweeper's callbacks as lambdas: on_leak names the C++ call site, on_reclaim,
// a health check that evicts, connect that replaces; prometheus() and leaks().
void sweeper_callbacks() {
  std::vector<std::unique_ptr<Conn>> made;  // owned here, closed by the pool
  std::mutex mu;
  std::vector<heliosdb::LeakReport> reports;
  std::atomic<int> reclaims{0};
  std::atomic<int> health_calls{0};
  std::atomic<int> connects{0};
  Conn first, bad;
  unsigned acquire_line = 0;
  {
    heliosdb::Config config = heliosdb::Config::defaults();
    config.settings.max_connections = 8;
    config.settings.max_per_user = 2;
    config.settings.leak_detection_threshold_ms = 100;
    config.settings.leak_critical_threshold_ms = 300;
    config.settings.auto_cleanup_enabled = true;
    config.settings.health_check_enabled = true;
    config.settings.health_check_interval_ms = 1;
    config.settings.unhealthy_after_failures = 1;
    config.settings.name = "cxx";
    config.callbacks.close = [](void *connection) {
      CHECK(static_cast<Conn *>(connection)->closed.fetch_add(1) == 0);
    };
    config.callbacks.on_leak = [&](const heliosdb::LeakReportView &r) {
      std::lock_guard<std::mutex> guard(mu);
      reports.emplace_back(r);
    };
    config.callbacks.on_reclaim = [&](const heliosdb::LeakReportView &) { reclaims++; };
    config.callbacks.health_check = [&](void *connection) {
      health_calls++;
      if (static_cast<Conn *>(connection) == &bad) throw std::runtime_error("unhealthy");
      return true;
    };
    config.callbacks.connect = [&](const char *user) -> void * {
      connects++;
      if (std::strcmp(user, "dave") == 0) {
        throw std::runtime_error("dave's server refused: too many clients");
      }
      if (std::strcmp(user, "bob") != 0) return nullptr;
      std::lock_guard<std::mutex> guard(mu);
      made.push_back(std::make_unique<Conn>());
      made.back()->user = user;
      return made.back().get();
    };
    heliosdb::Pool pool(config);
    pool.add_connection(&first, "alice");
    pool.add_connection(&bad, "bob");

    acquire_line = __LINE__ + 1;
    heliosdb::Lease lease = pool.acquire("alice", std::chrono::milliseconds(1000));
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    auto none_made = [&] {
      std::lock_guard<std::mutex> guard(mu);
      return made.empty();
    };
    while (reclaims.load() == 0 || none_made()) {
      CHECK(std::chrono::steady_clock::now() < deadline);
      pool.sweep_now();
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    CHECK(bad.closed.load() == 1);  // the throwing health check evicted it
    {
      std::lock_guard<std::mutex> guard(mu);
      CHECK(!reports.empty());
      const heliosdb::LeakReport &r = reports.back();
      CHECK(r.level == heliosdb::LeakLevel::critical && r.user == "alice");
      CHECK(r.file == __FILE__ && r.line == acquire_line);
      CHECK(r.function.find("sweeper_callbacks") != std::string::npos);
    }
    CHECK(pool.leaks().size() == 1);
    CHECK(pool.leaks()[0].line == acquire_line);
    std::string text = pool.prometheus();
    CHECK(text.find("pool=\"cxx\"") != std::string::npos);
    CHECK(text.size() == std::strlen(text.c_str()));
    CHECK(status_of([&] { lease.release(); }) == HELIOSDB_ERR_RECLAIMED);
    CHECK(first.closed.load() == 1);
    // bob's replacement came from the connect lambda.
    heliosdb::Lease b = pool.acquire("bob", std::chrono::seconds(10));
    CHECK(b.as<Conn>()->user == "bob");
    // connect throwing: the exception's text reaches the waiter's timeout error. (First:
    // the factory's retry backoff is shared by all users, so a user whose connect keeps
    // failing delays the others.)
    try {
      pool.acquire("dave", std::chrono::milliseconds(1000));
      CHECK(false);
    } catch (const heliosdb::Error &e) {
      CHECK(e.code() == heliosdb::errc::timeout && e.code() == std::errc::timed_out);
      CHECK(std::string(e.what()).find("too many clients") != std::string::npos);
    }
    // connect returning nullptr: a timeout carrying the failure.
    CHECK(status_of([&] { pool.acquire("carol", std::chrono::milliseconds(200)); }) ==
          HELIOSDB_ERR_TIMEOUT);
    heliosdb::PoolStats stats = pool.stats();
    CHECK(stats.evicted_reclaimed == 1 && stats.evicted_health == 1);
    CHECK(stats.factory_creates >= 1 && stats.health_checks >= 1);
  }
  CHECK(health_calls.load() >= 1 && connects.load() >= 1);
  for (auto &c : made) CHECK(c->closed.load() == 1);
}

void standalone() {
  heliosdb::LeakDetector detector(std::chrono::milliseconds(10), std::chrono::milliseconds(20), 4);
  detector.track("txn", "alice", "Transaction", {{"db", "orders"}});
  CHECK(status_of([&] { detector.track("txn", "alice"); }) == HELIOSDB_ERR_DUPLICATE_RESOURCE);
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  CHECK(detector.is_leaked("txn"));
  std::vector<heliosdb::LeakReport> leaks = detector.check();
  CHECK(leaks.size() == 1 && leaks[0].resource_type == "Transaction");
  CHECK(leaks[0].metadata.size() == 1 && leaks[0].metadata[0].second == "orders");
  CHECK(detector.release("txn").count() >= 20);
  CHECK(detector.stats().returned_after_leak == 1);

  std::atomic<bool> ok{true};
  heliosdb::HealthMonitor monitor(&detector, std::chrono::milliseconds(5),
                                  std::chrono::milliseconds(1000), 1);
  monitor.monitor("c", [&ok] { return ok.load(); });
  monitor.monitor("throws", [] () -> bool { throw std::runtime_error("boom"); });
  CHECK(monitor.check("c") == heliosdb::Health::healthy);
  ok = false;
  CHECK(monitor.check("c") == heliosdb::Health::unhealthy);
  CHECK(monitor.check("throws") == heliosdb::Health::unhealthy);
  CHECK(status_of([&] { monitor.check("none"); }) == HELIOSDB_ERR_UNKNOWN_RESOURCE);
  monitor.start();
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  monitor.stop();
  CHECK(monitor.unmonitor("c") && !monitor.unmonitor("c"));
}

}  // namespace

int main() {
  basics();
  bad_config();
  throwing_callback();
  threads();
  sweeper_callbacks();
  standalone();
  printf("wrapper: ok\n");
  return 0;
}

// An example C++17 service on heliosdb::Pool<T>, as a C++ developer would write it:
// a connection class with a destructor (no close callback), lambdas taking Session&,
// worker threads borrowing typed connections, a leak report naming this file's line, a
// health eviction with a replacement opened by the connect hook, and shutdown with a
// lease still out. Built and run by `cargo test --test ffi` (and under valgrind and
// ASan+UBSan by .ci/ffi.sh); prints "service: ok".
//
// The "database" is simulated: Session stands for a wrapper over PGconn*, MYSQL*, ...
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "heliosdb_pool.hpp"

using namespace std::chrono_literals;

namespace {

[[noreturn]] void fail(const char *what, int line) {
  std::fprintf(stderr, "service.cpp:%d: %s\n", line, what);
  std::exit(1);
}
#define EXPECT(cond)               \
  do {                             \
    if (!(cond)) {                 \
      fail("expected " #cond, __LINE__); \
    }                              \
  } while (0)

// ---------------------------------------------------------------- the "driver" ----

std::atomic<int> g_opened{0};
std::atomic<int> g_closed{0};

/// One database session. The destructor closes it: the pool calls it exactly once,
/// on whichever thread the session leaves the pool.
class Session {
 public:
  Session(std::string_view tenant, int serial) : tenant_(tenant), serial_(serial) { g_opened++; }
  Session(const Session &) = delete;
  Session &operator=(const Session &) = delete;
  ~Session() { g_closed++; }

  /// Runs a statement; the pool guarantees one borrower at a time.
  long execute(std::string_view sql) {
    if (busy_.exchange(true)) {
      fail("two borrowers on one session", __LINE__);
    }
    rows_ += static_cast<long>(sql.size() % 7) + 1;
    busy_.store(false);
    return rows_;
  }
  bool ping() const { return link_up_.load(); }
  void drop_link() { link_up_.store(false); }  // the server went away
  const std::string &tenant() const { return tenant_; }
  int serial() const { return serial_; }

 private:
  std::string tenant_;
  int serial_;
  long rows_ = 0;
  std::atomic<bool> busy_{false};
  std::atomic<bool> link_up_{true};
};

// ---------------------------------------------------------------- the service ----

class OrderService {
 public:
  OrderService() : pool_(make_config(), make_hooks()) {
    for (int i = 0; i < 3; i++) {
      pool_.emplace_connection("orders", "orders", next_serial_++);
    }
    pool_.add_connection(std::make_unique<Session>("reports", next_serial_++), "reports",
                         heliosdb::Metadata{"warehouse", "postgres", "10.0.0.7:5432", {"replica"}});
  }

  /// Places an order: borrows a session for "orders" for the length of the call.
  long place_order(int customer) {
    heliosdb::Lease<Session> db = pool_.acquire("orders", 2s);
    return db->execute("INSERT INTO orders VALUES ($1)") + customer % 2;
  }

  /// A best-effort read: skips the work rather than wait more than 5 ms.
  std::optional<long> try_count(std::string_view tenant) {
    if (auto db = pool_.try_acquire_for(tenant, 5ms)) {
      return (*db)->execute("SELECT count(*) FROM orders");
    }
    return std::nullopt;
  }

  /// Starts a long report and hands its session to the caller (who forgets it: a leak).
  heliosdb::Lease<Session> start_report() { return pool_.acquire("reports", 1s); }

  heliosdb::Pool<Session> &pool() { return pool_; }

  std::vector<std::string> leak_log() {
    std::lock_guard<std::mutex> guard(log_mu_);
    return leak_log_;
  }

 private:
  static heliosdb::Config make_config() {
    heliosdb::Config config = heliosdb::Config::production();
    config.settings.max_connections = 16;
    config.settings.max_per_user = 4;
    config.settings.leak_detection_threshold_ms = 150;
    config.settings.leak_critical_threshold_ms = 60000;  // report, never reclaim here
    config.settings.health_check_enabled = true;
    config.settings.health_check_interval_ms = 20;
    config.settings.unhealthy_after_failures = 1;
    config.settings.sweep_interval_ms = 10;
    config.settings.name = "orders-service";
    return config;
  }

  heliosdb::Hooks<Session> make_hooks() {
    heliosdb::Hooks<Session> hooks;
    hooks.connect = [this](std::string_view tenant) {
      return std::make_unique<Session>(tenant, next_serial_++);
    };
    hooks.health_check = [](Session &s) { return s.ping(); };
    hooks.on_leak = [this](const heliosdb::LeakReportView &r) {
      char line[512];
      std::snprintf(line, sizeof line, "LEAK %.*s: connection %llu of %.*s held %lld ms, taken at %.*s:%u (%.*s)",
                    static_cast<int>(heliosdb::to_string(r.level).size()),
                    heliosdb::to_string(r.level).data(),
                    static_cast<unsigned long long>(r.connection_id),
                    static_cast<int>(r.user.size()), r.user.data(),
                    static_cast<long long>(r.held.count()), static_cast<int>(r.file.size()),
                    r.file.data(), r.line, static_cast<int>(r.function.size()), r.function.data());
      std::printf("%s\n", line);
      std::lock_guard<std::mutex> guard(log_mu_);
      leak_log_.emplace_back(line);
    };
    return hooks;
  }

  std::atomic<int> next_serial_{1};
  std::mutex log_mu_;
  std::vector<std::string> leak_log_;
  // Last: destroyed first, so no hook runs after the members it uses are gone.
  heliosdb::Pool<Session> pool_;
};

template <typename F>
void wait_until(F &&done, const char *what) {
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) {
      fail(what, __LINE__);
    }
    std::this_thread::sleep_for(5ms);
  }
}

}  // namespace

int main() {
  std::thread late_worker;
  std::atomic<bool> go{false};
  {
    OrderService service;

    // 1. Worker threads borrowing typed connections.
    std::atomic<long> done{0};
    std::atomic<long> skipped{0};
    std::vector<std::thread> workers;
    for (int t = 0; t < 4; t++) {
      workers.emplace_back([&service, &done, &skipped, t] {
        for (int i = 0; i < 200; i++) {
          service.place_order(t * 1000 + i);
          done++;
          if (i % 50 == 0 && !service.try_count("orders")) {
            skipped++;
          }
        }
      });
    }
    for (std::thread &w : workers) {
      w.join();
    }
    EXPECT(done.load() == 800);
    std::printf("orders placed: %ld (best-effort counts skipped: %ld)\n", done.load(),
                skipped.load());

    // 2. A leak: a report's session is held past the threshold; the sweeper reports it
    //    with the call site inside OrderService::start_report.
    heliosdb::Lease<Session> report = service.start_report();
    wait_until([&] { return !service.leak_log().empty(); }, "no leak report");
    const std::string first = service.leak_log().front();
    EXPECT(first.find("LEAK alert") != std::string::npos);
    EXPECT(first.find("service.cpp") != std::string::npos);
    EXPECT(first.find("start_report") != std::string::npos);
    std::vector<heliosdb::LeakReport> leaks = service.pool().leaks();
    EXPECT(leaks.size() == 1 && leaks[0].user == "reports" && leaks[0].held >= 150ms);
    report = heliosdb::Lease<Session>();  // returned after all: counted as such
    EXPECT(service.pool().stats().returned_after_leak == 1);

    // 3. A health eviction: one idle session loses its link; the health check evicts it
    //    (its destructor runs) and the connect hook opens a replacement.
    const std::uint64_t created_before = service.pool().stats().factory_creates;
    {
      heliosdb::Lease<Session> s = service.pool().acquire("orders", 1s);
      s->drop_link();
    }
    wait_until([&] { return service.pool().stats().evicted_health >= 1; }, "no eviction");
    wait_until([&] { return service.pool().stats().factory_creates > created_before; },
               "no replacement");
    EXPECT(service.pool().prometheus().find("pool=\"orders-service\"") != std::string::npos);
    heliosdb::PoolStats stats = service.pool().stats();
    std::printf("evicted (health): %llu, opened by connect: %llu, sessions now: %zu\n",
                static_cast<unsigned long long>(stats.evicted_health),
                static_cast<unsigned long long>(stats.factory_creates), stats.total_connections);

    // 4. Shutdown with a lease out: a worker still holds a session when the service
    //    (and its pool) is destroyed; the session stays usable and is closed when the
    //    worker lets go.
    heliosdb::Lease<Session> held = service.pool().acquire("orders", 1s);
    late_worker = std::thread([lease = std::move(held), &go]() mutable {
      while (!go.load()) {
        std::this_thread::yield();
      }
      lease->execute("UPDATE orders SET shipped = true");
      lease = heliosdb::Lease<Session>();  // released (and closed) here, after the pool
    });
    // `service` is destroyed at the end of this block, with the lease still out.
  }
  EXPECT(g_opened.load() - g_closed.load() == 1);  // only the borrowed session is open
  go.store(true);
  late_worker.join();
  std::printf("sessions opened: %d, closed: %d\n", g_opened.load(), g_closed.load());
  EXPECT(g_opened.load() == g_closed.load());
  std::printf("service: ok\n");
  return 0;
}

// The typed C++ wrapper, heliosdb::Pool<T>: connections owned as std::unique_ptr<T> and
// destroyed exactly once on every path; Lease<T> with -> and *; hooks taking T&;
// std::string_view users with no allocation per acquire (counted through a replaced
// operator new); any std::chrono::duration; try_acquire_for; std::error_code; enum
// class levels; C++ stats and leak reports; the connect hook's exception text in the
// waiter's timeout error; call sites through std::source_location (C++20), the
// builtins, or HELIOSDB_HERE.
//
// tests/ffi.rs builds it three ways: C++17 (-Wall -Wextra -Wpedantic -Werror); C++20
// with -Wconversion -Wshadow -Wold-style-cast; and C++17 with the same warnings and
// HELIOSDB_CPP_NO_SOURCE_LOCATION (the macro form).
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

#include "heliosdb_pool.hpp"

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      std::exit(1);                                                            \
    }                                                                          \
  } while (0)

// ---- every operator new of the program is counted ----

namespace {
std::atomic<long> g_allocations{0};
}  // namespace

// Out of line, so that GCC does not see malloc/free through an inlined new/delete pair
// (-Wmismatched-new-delete).
#if defined(__GNUC__)
#define TEST_NOINLINE __attribute__((noinline))
#else
#define TEST_NOINLINE
#endif

TEST_NOINLINE void *operator new(std::size_t size) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void *p = std::malloc(size == 0 ? 1 : size)) {
    return p;
  }
  throw std::bad_alloc();
}
TEST_NOINLINE void *operator new[](std::size_t size) { return ::operator new(size); }
TEST_NOINLINE void operator delete(void *p) noexcept { std::free(p); }
TEST_NOINLINE void operator delete[](void *p) noexcept { std::free(p); }
TEST_NOINLINE void operator delete(void *p, std::size_t) noexcept { std::free(p); }
TEST_NOINLINE void operator delete[](void *p, std::size_t) noexcept { std::free(p); }

namespace {

using namespace std::chrono_literals;

// A connection type with a real destructor; every construction and destruction is
// counted, and a second destruction of the same object is caught.
struct Db {
  static std::atomic<int> opened;
  static std::atomic<int> destroyed;

  explicit Db(std::string_view u, int n = 0) : user(u), number(n) { opened++; }
  Db(const Db &) = delete;
  Db &operator=(const Db &) = delete;
  ~Db() {
    CHECK(magic == 0xdb);
    magic = 0;
    destroyed++;
  }

  int query(int x) {
    CHECK(in_use.exchange(1) == 0);
    in_use.store(0);
    return x + number;
  }

  std::string user;
  int number;
  std::atomic<int> in_use{0};
  std::atomic<bool> healthy{true};
  int magic = 0xdb;
};
std::atomic<int> Db::opened{0};
std::atomic<int> Db::destroyed{0};

int alive() { return Db::opened.load() - Db::destroyed.load(); }

template <typename F>
std::error_code error_of(F &&f) {
  try {
    f();
  } catch (const heliosdb::Error &e) {
    CHECK(std::strlen(e.what()) > 0);
    return e.code();
  }
  return {};
}

heliosdb::Config small_config(std::size_t max_connections, std::size_t max_per_user) {
  heliosdb::Config config = heliosdb::Config::defaults();
  config.settings.max_connections = max_connections;
  config.settings.max_per_user = max_per_user;
  return config;
}

void durations_and_errors() {
  using heliosdb::Duration;
  CHECK(Duration(1500us).milliseconds() == 2);  // rounded up: never "do not wait"
  CHECK(Duration(1ns).milliseconds() == 1);
  CHECK(Duration(1000000ns).milliseconds() == 1);
  CHECK(Duration(0ms).milliseconds() == 0);
  CHECK(Duration(-5s).milliseconds() == 0);
  CHECK(Duration(2s).milliseconds() == 2000);
  CHECK(Duration(std::chrono::duration<double>(0.25)).milliseconds() == 250);
  CHECK(Duration(std::chrono::duration<double, std::milli>(0.5)).milliseconds() == 1);
  CHECK(Duration(std::chrono::duration<double>(std::nan(""))).milliseconds() == 0);
  CHECK(Duration(std::chrono::duration<double>(1e300)).milliseconds() == Duration::kMaxMs);
  CHECK(Duration(std::chrono::hours::max()).milliseconds() == Duration::kMaxMs);

  std::error_code ec = heliosdb::errc::pool_full;
  CHECK(std::string(ec.category().name()) == "heliosdb");
  CHECK(ec.value() == HELIOSDB_ERR_POOL_FULL && !ec.message().empty());
  CHECK(ec == heliosdb::make_error_code(HELIOSDB_ERR_POOL_FULL));
  CHECK(!heliosdb::make_error_code(HELIOSDB_OK));
  CHECK(std::error_code(heliosdb::errc::timeout) == std::errc::timed_out);
  CHECK(std::error_code(heliosdb::errc::null_argument) == std::errc::invalid_argument);
  CHECK(std::error_code(heliosdb::errc::closed) != std::errc::timed_out);
  CHECK(heliosdb::to_string(heliosdb::LeakLevel::critical) == "critical");
  CHECK(heliosdb::to_string(heliosdb::Health::degraded) == "degraded");
  try {
    throw heliosdb::Error(HELIOSDB_ERR_CLOSED, "detail");
  } catch (const std::system_error &e) {  // catchable as the standard type
    CHECK(e.code() == heliosdb::errc::closed);
    CHECK(std::string(e.what()).find("detail") != std::string::npos);
  }
}

void typed_basics() {
  const int before = alive();
  const std::string long_user(200, 'x');  // longer than kUserBufferSize
  {
    heliosdb::Pool<Db> pool(small_config(8, 4));
    heliosdb::ConnectionId first = pool.add_connection(std::make_unique<Db>("alice", 1), "alice");
    pool.emplace_connection("alice", "alice", 2);  // constructed in place
    pool.add_connection(std::make_unique<Db>(long_user, 3), long_user,
                        heliosdb::Metadata{"orders", "postgres", "", {"primary"}});
    CHECK(alive() == before + 3);

    {
      heliosdb::Lease<Db> a = pool.acquire("alice", 1s);
      CHECK(a && a->user == "alice" && (*a).number >= 1 && a.get() == &*a);
      CHECK(a->query(10) == 10 + a->number);
      const heliosdb::ConnectionId id = a.connection_id();
      CHECK(id != 0);
      heliosdb::Lease<Db> moved = std::move(a);
      CHECK(!a && a.get() == nullptr && a.connection_id() == 0);  // nothing stale
      CHECK(moved.connection_id() == id);
      // Users as std::string_view, not NUL-terminated: copied to the stack.
      std::string_view names = "alice-and-bob";
      heliosdb::Lease<Db> b = pool.acquire(names.substr(0, 5), 500us);
      CHECK(b->user == "alice" && b.connection_id() != id);
      // Nothing idle for alice: the non-throwing timed form says so with nullopt.
      CHECK(!pool.try_acquire_for("alice", std::chrono::duration<double>(0.001)));
      CHECK(!pool.try_acquire_for(std::string("alice"), 0ms));
      CHECK(!pool.try_acquire("alice"));
      CHECK(error_of([&] { pool.acquire("alice", 1ms); }) == std::errc::timed_out);
      CHECK(pool.stats().active_connections == 2);
    }
    CHECK(pool.stats().active_connections == 0);

    // A long string_view user (the heap path) and a std::string one.
    {
      heliosdb::Lease<Db> l = pool.acquire(std::string_view(long_user), 1s);
      CHECK(l->number == 3);
      std::optional<heliosdb::Lease<Db>> m = pool.try_acquire(long_user);
      CHECK(!m);
    }
    // Bad users: unknown; a NUL byte inside a std::string or string_view.
    CHECK(error_of([&] { pool.acquire("nobody", 0ms); }) == heliosdb::errc::unknown_user);
    CHECK(error_of([&] { pool.acquire(std::string("ali\0ce", 6), 0ms); }) ==
          heliosdb::errc::invalid_argument);
    CHECK(error_of([&] { pool.try_acquire(std::string_view("ali\0ce", 6)); }) ==
          heliosdb::errc::invalid_argument);

    // remove_connection: idle now (destroyed now); borrowed (destroyed on release).
    {
      const int n = alive();
      CHECK(pool.remove_connection(first) == false);
      CHECK(alive() == n - 1);
    }
    {
      const int n = alive();
      heliosdb::Lease<Db> l = pool.acquire("alice", 1s);
      CHECK(pool.remove_connection(l.connection_id()) == true);
      CHECK(alive() == n);
      l.release();
      CHECK(!l && l.connection_id() == 0 && alive() == n - 1);
      l.release();  // no-op on an empty lease
    }
  }
  CHECK(alive() == before);  // every Db destroyed exactly once (Db's destructor checks)
}

// Every failing add destroys the connection it was handed, and throws.
void failure_paths_destroy() {
  const int before = alive();
  {
    heliosdb::Pool<Db> pool(small_config(2, 2));
    pool.emplace_connection("u", "u");
    pool.emplace_connection("u", "u");
    CHECK(alive() == before + 2);
    CHECK(error_of([&] { pool.add_connection(std::make_unique<Db>("u"), "u"); }) ==
          heliosdb::errc::user_at_capacity);
    CHECK(error_of([&] { pool.add_connection(std::make_unique<Db>("v"), "v"); }) ==
          heliosdb::errc::pool_full);
    CHECK(alive() == before + 2);
    CHECK(error_of([&] { pool.emplace_connection(std::string_view("u\0v", 3), "u"); }) ==
          heliosdb::errc::invalid_argument);
    CHECK(alive() == before + 2);
    CHECK(error_of([&] { pool.add_connection(nullptr, "u"); }) == heliosdb::errc::null_argument);

    heliosdb::Pool<Db> other = std::move(pool);
    // The moved-from pool: the connection is destroyed, the call throws.
    CHECK(error_of([&] { pool.add_connection(std::make_unique<Db>("u"), "u"); }) ==
          heliosdb::errc::null_argument);
    CHECK(error_of([&] { pool.emplace_connection("u", "u"); }) == heliosdb::errc::null_argument);
    CHECK(alive() == before + 2);
    CHECK(error_of([&] { pool.acquire("u", 1ms); }) == heliosdb::errc::null_argument);

    other.close();
    CHECK(other.is_closed() && alive() == before);  // idle connections destroyed now
    CHECK(error_of([&] { other.emplace_connection("u", "u"); }) == heliosdb::errc::closed);
    CHECK(alive() == before);
  }
  // A typed pool takes its hooks as Hooks<T>, not config.callbacks.
  heliosdb::Config config = heliosdb::Config::defaults();
  config.callbacks.close = [](void *) {};
  CHECK(error_of([&] { heliosdb::Pool<Db> pool(config); }) == heliosdb::errc::invalid_argument);
  config = heliosdb::Config::defaults();
  config.settings.max_per_user = config.settings.max_connections + 1;
  CHECK(error_of([&] { heliosdb::Pool<Db> pool(config); }) == heliosdb::errc::invalid_config);
  // Bounded users: a user beyond max_users, a name over max_user_name_len; the
  // connection handed over is destroyed either way. A vacant user is retired at once
  // to make room (counted in users_retired).
  {
    heliosdb::Config bounded = small_config(8, 2);
    bounded.settings.max_users = 1;
    bounded.settings.max_user_name_len = 8;
    heliosdb::Pool<Db> pool(bounded);
    const heliosdb::ConnectionId alice = pool.emplace_connection("alice", "alice");
    std::error_code refused =
        error_of([&] { pool.add_connection(std::make_unique<Db>("bob"), "bob"); });
    CHECK(refused == heliosdb::errc::too_many_users);
    CHECK(refused == std::errc::resource_unavailable_try_again);
    std::error_code too_long = error_of(
        [&] { pool.add_connection(std::make_unique<Db>("x"), std::string(4096, 'x')); });
    CHECK(too_long == heliosdb::errc::user_name_too_long);
    CHECK(too_long == std::errc::invalid_argument);
    CHECK(alive() == before + 1);
    CHECK(pool.stats().users_retired == 0);
    CHECK(!pool.remove_connection(alice));  // idle: destroyed now, alice vacant
    pool.emplace_connection("bob", "bob");
    const heliosdb::PoolStats stats = pool.stats();
    CHECK(stats.users_retired == 1 && stats.total_connections == 1);
    CHECK(stats.spin_acquires == 0 && stats.connects_in_flight == 0);
  }
  // PoolStats::from copies every version-4 field.
  {
    heliosdb_pool_stats raw{};
    raw.struct_size = sizeof raw;
    raw.spin_acquires = 3;
    raw.users_retired = 5;
    raw.connects_in_flight = 7;
    const heliosdb::PoolStats stats = heliosdb::PoolStats::from(raw);
    CHECK(stats.spin_acquires == 3 && stats.users_retired == 5 && stats.connects_in_flight == 7);
  }
  CHECK(alive() == before);
}

// Hooks as lambdas taking Db&: health eviction, connect (and its exception text in the
// waiter's timeout error), leak reports as LeakReportView with the C++ call site.
void hooks() {
  const int before = alive();
  std::mutex mu;
  std::vector<heliosdb::LeakReport> reports;
  std::atomic<int> reclaims{0};
  std::atomic<int> connects{0};
  unsigned here_line = 0;
  unsigned default_line = 0;
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
    heliosdb::Hooks<Db> hooks;
    hooks.health_check = [](Db &db) { return db.healthy.load(); };
    hooks.connect = [&connects](std::string_view user) -> std::unique_ptr<Db> {
      connects++;
      if (user == "dave") {
        throw std::runtime_error("dave's server refused: too many clients");
      }
      if (user == "erin") {
        return nullptr;
      }
      return std::make_unique<Db>(user, 100);
    };
    hooks.on_leak = [&](const heliosdb::LeakReportView &r) {
      CHECK(r.level == heliosdb::LeakLevel::alert || r.level == heliosdb::LeakLevel::critical);
      CHECK(r.held >= 100ms && r.resource_type == "Connection");
      std::lock_guard<std::mutex> guard(mu);
      reports.emplace_back(r);
    };
    hooks.on_reclaim = [&](const heliosdb::LeakReportView &) { reclaims++; };
    heliosdb::Pool<Db> pool(config, std::move(hooks));
    pool.add_connection(std::make_unique<Db>("alice"), "alice",
                        heliosdb::Metadata{"orders", "postgres", "10.0.0.1:5432", {}});
    pool.add_connection(std::make_unique<Db>("alice"), "alice");
    auto *sick = new Db("bob");
    pool.add_connection(std::unique_ptr<Db>(sick), "bob");

    // Two leaks: one recorded with HELIOSDB_HERE, one with the default capture.
    here_line = __LINE__ + 1;
    heliosdb::Lease<Db> leak1 = pool.acquire("alice", 1s, HELIOSDB_HERE);
    default_line = __LINE__ + 1;
    heliosdb::Lease<Db> leak2 = pool.acquire("alice", 1s);

    sick->healthy = false;  // the health check evicts it; connect replaces it
    auto deadline = std::chrono::steady_clock::now() + 20s;
    while (reclaims.load() < 2 || pool.stats().evicted_health == 0) {
      CHECK(std::chrono::steady_clock::now() < deadline);
      pool.sweep_now();
      std::this_thread::sleep_for(2ms);
    }
    {
      heliosdb::Lease<Db> bob = pool.acquire("bob", 10s);  // the replacement
      CHECK(bob->number == 100);
    }
    {
      std::lock_guard<std::mutex> guard(mu);
      bool saw_here = false;
      bool saw_default = false;
      for (const heliosdb::LeakReport &r : reports) {
        CHECK(r.user == "alice");
        if (r.line == here_line) {
          CHECK(r.file == __FILE__ && r.function.find("hooks") != std::string::npos);
          saw_here = true;
        }
#if HELIOSDB_CPP_LOCATION != 0
        if (r.line == default_line) {
          CHECK(r.file == __FILE__ && r.function.find("hooks") != std::string::npos);
          saw_default = true;
        }
#else
        (void)default_line;  // the default capture records a placeholder, line 0
        if (r.line == 0) {
          CHECK(r.file.find("HELIOSDB_HERE") != std::string::npos);
          saw_default = true;
        }
#endif
        if (r.connection_id == leak1.connection_id() && !r.metadata.empty()) {
          CHECK(r.metadata[0].first == "database" && r.metadata[0].second == "orders");
        }
      }
      CHECK(saw_here && saw_default);
    }
    CHECK(error_of([&] { leak1.release(); }) == heliosdb::errc::reclaimed);
    CHECK(error_of([&] { leak2.release(); }) == heliosdb::errc::reclaimed);

    // The connect hook's exception text reaches the waiter's timeout error, and
    // heliosdb_last_error_message() on this thread.
    try {
      pool.acquire("dave", 1000ms);
      CHECK(false);
    } catch (const heliosdb::Error &e) {
      CHECK(e.code() == std::errc::timed_out);
      CHECK(std::string(e.what()).find("too many clients") != std::string::npos);
      CHECK(std::strstr(heliosdb_last_error_message(), "connect callback failed (17)") != nullptr);
      CHECK(std::strstr(heliosdb_last_error_message(), "too many clients") != nullptr);
    }
    heliosdb::PoolStats stats = pool.stats();
    CHECK(stats.evicted_reclaimed == 2 && stats.evicted_health == 1);
    CHECK(stats.factory_creates >= 1 && stats.factory_errors >= 1 && stats.leak_criticals >= 2);
    CHECK(pool.leaks().empty());
  }
  CHECK(connects.load() >= 2);
  CHECK(alive() == before);
}

// Destroying the pool with leases out: they stay usable; each connection is destroyed
// when its lease is released, on whichever thread.
void shutdown_with_leases_out() {
  const int before = alive();
  std::optional<heliosdb::Lease<Db>> kept;
  heliosdb::Lease<Db> other;
  {
    heliosdb::Pool<Db> pool(small_config(4, 4));
    for (int i = 0; i < 3; i++) {
      pool.emplace_connection("u", "u", i);
    }
    kept = pool.acquire("u", 1s);
    other = pool.acquire("u", 1s);
  }  // the idle one is destroyed here
  CHECK(alive() == before + 2);
  CHECK((*kept)->query(1) >= 1);
  std::thread t([lease = std::move(other)]() mutable { lease = heliosdb::Lease<Db>(); });
  t.join();
  CHECK(alive() == before + 1);
  kept.reset();
  CHECK(alive() == before);
}

// Acquire and release through the wrapper allocate nothing for users up to the stack
// buffer (const char*, std::string, std::string_view); a longer string_view costs one.
void no_allocation_per_acquire() {
  // Under valgrind, memcheck replaces operator new itself, and nothing is counted.
  const long probe = g_allocations.load();
  ::operator delete(::operator new(16));  // a direct call: never elided
  if (g_allocations.load() == probe) {
    std::printf("allocations: not counted (operator new is replaced by the runner)\n");
    return;
  }
  const std::string mid(heliosdb::kUserBufferSize - 1, 'm');  // the longest on the stack
  const std::string big(heliosdb::kUserBufferSize, 'b');      // one too long
  heliosdb::Pool<Db> pool(small_config(8, 4));
  for (const std::string &u : {std::string("alice"), mid, big}) {
    pool.emplace_connection(u, u);
    pool.emplace_connection(u, u);
  }
  const std::string alice = "alice";
  const std::string_view alice_view = std::string_view("alice!").substr(0, 5);
  const std::string_view mid_view = mid;
  auto cycle = [&] {
    { auto l = pool.try_acquire("alice"); CHECK(l); }
    { auto l = pool.acquire("alice", 1s); CHECK(l); }
    { auto l = pool.acquire(alice, 1s); CHECK(l); }
    { auto l = pool.acquire(alice_view, 1s); CHECK(l); }
    { auto l = pool.acquire(mid_view, 1s); CHECK(l); }
    { auto l = pool.try_acquire_for(mid_view, 250ms); CHECK(l); }
    {
      heliosdb::Lease<Db> a = pool.acquire("alice", 1s);
      heliosdb::Lease<Db> b = pool.acquire("alice", 1s);
      CHECK(!pool.try_acquire_for("alice", 0ms));  // a miss, without an exception
      CHECK(!pool.try_acquire("alice"));
    }
  };
  for (int i = 0; i < 100; i++) {
    cycle();
  }
  const long start = g_allocations.load();
  for (int i = 0; i < 2000; i++) {
    cycle();
  }
  const long allocations = g_allocations.load() - start;
  CHECK(allocations == 0);

  const std::string_view big_view = big;
  const long start_big = g_allocations.load();
  for (int i = 0; i < 100; i++) {
    auto l = pool.acquire(big_view, 1s);  // the documented slow path
    CHECK(l);
  }
  const long big_allocations = g_allocations.load() - start_big;
  CHECK(big_allocations == 100);
  std::printf("allocations per cycle: %ld for users up to %zu bytes, %.1f per acquire above\n",
              allocations, heliosdb::kUserBufferSize - 1,
              static_cast<double>(big_allocations) / 100.0);
}

// The untyped Pool<void> still works as before (README's snippet), deduced by CTAD.
void untyped_still_deduced() {
  heliosdb::Config config = heliosdb::Config::production();
  std::atomic<int> closed{0};
  config.callbacks.close = [&closed](void *conn) {
    delete static_cast<Db *>(conn);
    closed++;
  };
  heliosdb::Pool pool(config);
  static_assert(std::is_same_v<decltype(pool), heliosdb::Pool<void>>, "CTAD gives Pool<void>");
  pool.add_connection(new Db("alice"), "alice");
  {
    heliosdb::Lease lease = pool.acquire("alice", std::chrono::seconds(5));
    static_assert(std::is_same_v<decltype(lease), heliosdb::Lease<void>>, "and Lease<void>");
    CHECK(lease.as<Db>()->user == "alice");
  }
  pool.close();
  CHECK(closed.load() == 1);
}

// Discard, the reset hook and failover through the typed wrapper: each connection is
// destroyed exactly once (Db's destructor checks), when the test says.
void bad_day() {
  const int before = alive();
  std::atomic<int> resets{0};
  {
    heliosdb::Hooks<Db> hooks;
    hooks.reset = [&resets](Db &db) {
      resets++;
      if (db.number < 0) {
        throw std::runtime_error("cannot roll back");
      }
      if (db.number == 13) {
        return false;
      }
      db.number = 0;
      return true;
    };
    heliosdb::Pool<Db> pool(small_config(8, 2), std::move(hooks));
    pool.add_connection(std::make_unique<Db>("alice"), "alice");
    {
      heliosdb::Lease<Db> db = pool.acquire("alice", 1s);
      db->number = 7;  // session state left behind
    }
    CHECK(resets.load() == 1);
    {
      heliosdb::Lease<Db> db = pool.acquire("alice", 1s);
      CHECK(db->number == 0);  // the next borrower sees the reset state
      const int was = alive();
      db.discard();
      CHECK(!db && alive() == was - 1);
      db.discard();  // empty: nothing
    }
    CHECK(resets.load() == 1);  // not run on discard
    // A reset that fails, or throws, destroys the connection instead.
    for (int bad : {13, -1}) {
      pool.add_connection(std::make_unique<Db>("alice"), "alice");
      const int was = alive();
      {
        heliosdb::Lease<Db> db = pool.acquire("alice", 1s);
        db->number = bad;
      }
      CHECK(alive() == was - 1);
    }
    heliosdb::PoolStats s = pool.stats();
    CHECK(s.evicted_discarded == 1 && s.evicted_reset_failed == 2 && s.total_connections == 0);

    // Failover: idle destroyed now, leased when released.
    pool.add_connection(std::make_unique<Db>("alice"), "alice");
    pool.add_connection(std::make_unique<Db>("bob"), "bob");
    heliosdb::Lease<Db> held = pool.acquire("bob", 1s);
    const int was = alive();
    CHECK(pool.evict_user("alice") == 1);
    CHECK(alive() == was - 1);
    CHECK(pool.evict_all() == 1);
    CHECK(alive() == was - 1 && held->user == "bob");
    held.release();
    CHECK(alive() == was - 2);
    CHECK(pool.stats().evicted_failover == 2);
    CHECK(error_of([&] { pool.evict_user("nobody"); }) == heliosdb::errc::unknown_user);
  }
  {
    // A long operation declares its hold; an ended lease cannot.
    heliosdb::Pool<Db> pool(small_config(8, 2));
    pool.add_connection(std::make_unique<Db>("alice"), "alice");
    heliosdb::Lease<Db> held = pool.acquire("alice", 1s);
    held.expect_hold(std::chrono::hours(1));
    held.expect_hold(std::chrono::duration<double>(0.5));
    held.release();
    CHECK(error_of([&] { held.expect_hold(1s); }) == heliosdb::errc::stale_handle);
  }
  {
    // Without connect, idle eviction happens only with on_evict, which is told.
    std::vector<std::string> told;
    heliosdb::Hooks<Db> hooks;
    hooks.on_evict = [&told](const heliosdb::Evicted &e) {
      told.push_back(std::string(e.user) + ":" + std::string(e.cause));
    };
    heliosdb::Config config = small_config(8, 2);
    CHECK(config.settings.validate_after_ms == 500);  // validation on borrow's window
    config.settings.idle_timeout_ms = 20;
    heliosdb::Pool<Db> pool(config, std::move(hooks));
    const int was = alive();
    pool.add_connection(std::make_unique<Db>("alice"), "alice");
    pool.sweep_now();  // seen idle from now
    std::this_thread::sleep_for(40ms);
    pool.sweep_now();
    CHECK(alive() == was && told.size() == 1 && told[0] == "alice:idle");
  }
  CHECK(alive() == before);

  // The untyped pool's reset callback, on void*.
  static std::atomic<int> untyped_resets{0};
  heliosdb::Config config = small_config(4, 1);
  config.callbacks.close = [](void *c) { delete static_cast<int *>(c); };
  config.callbacks.reset = [](void *c) {
    untyped_resets++;
    return *static_cast<int *>(c) == 0;
  };
  heliosdb::Pool untyped(config);
  untyped.add_connection(new int(0), "alice");
  { heliosdb::Lease<> lease = untyped.acquire("alice", 1s); }
  {
    heliosdb::Lease<> lease = untyped.acquire("alice", 1s);
    *lease.as<int>() = 1;
  }
  CHECK(untyped_resets.load() == 2 && untyped.stats().evicted_reset_failed == 1);
}

}  // namespace

// connect_with_metadata: the connection and its Metadata from one lambda, shown in leak
// reports; a throwing or empty one is a failed connect, and `connect` is not used.
void connect_with_metadata() {
  const int before = alive();
  {
    heliosdb::Config config = small_config(8, 2);
    config.settings.leak_detection_threshold_ms = 20;
    config.settings.max_concurrent_connects = 2;
    heliosdb::Hooks<Db> hooks;
    hooks.connect = [](std::string_view) -> std::unique_ptr<Db> {
      CHECK(!"connect is not used when connect_with_metadata is set");
      return nullptr;
    };
    hooks.connect_with_metadata = [](std::string_view user) {
      if (user == "dave") {
        throw std::runtime_error("dave's server refused");
      }
      heliosdb::Connected<Db> made;
      if (user != "erin") {
        made.connection = std::make_unique<Db>(user, 7);
        made.metadata = {"orders", "postgres", "10.0.0.9:5432", {"primary", std::string(user)}};
      }
      return made;
    };
    heliosdb::Pool<Db> pool(config, std::move(hooks));
    heliosdb::Lease<Db> held = pool.acquire("alice", 2s);
    CHECK(held->number == 7);
    std::this_thread::sleep_for(40ms);
    std::vector<heliosdb::LeakReport> leaks = pool.leaks();
    CHECK(leaks.size() == 1);
    std::vector<std::pair<std::string, std::string>> expected = {
        {"database", "orders"},
        {"protocol", "postgres"},
        {"remote_addr", "10.0.0.9:5432"},
        {"tags", "primary,alice"}};
    CHECK(leaks[0].metadata == expected);
    try {
      (void)pool.acquire("dave", 200ms);
      CHECK(!"dave's acquire times out");
    } catch (const heliosdb::Error &e) {
      CHECK(e.code() == heliosdb::errc::timeout);
      CHECK(std::strstr(e.what(), "dave's server refused") != nullptr);
    }
    CHECK(!pool.try_acquire_for("erin", 200ms));
  }
  CHECK(alive() == before);
}

int main() {
  durations_and_errors();
  typed_basics();
  failure_paths_destroy();
  hooks();
  shutdown_with_leases_out();
  no_allocation_per_acquire();
  untyped_still_deduced();
  bad_day();
  connect_with_metadata();
  CHECK(alive() == 0);
  std::printf("typed_pool (call sites: %s): ok\n",
              HELIOSDB_CPP_LOCATION == 2   ? "std::source_location"
              : HELIOSDB_CPP_LOCATION == 1 ? "builtins"
                                           : "HELIOSDB_HERE");
  return 0;
}

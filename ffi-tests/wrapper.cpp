// The C++17 wrapper: RAII leases, move-only pool, exceptions, lambda callbacks.
#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
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
      heliosdb::Lease moved = std::move(a);
      CHECK(!a && moved);
      CHECK(pool.stats().active_connections == 1);
      moved.as<Conn>()->in_use.store(0);
    }  // released here
    CHECK(pool.stats().active_connections == 0);

    // try_acquire: nullopt when nothing is idle.
    std::vector<heliosdb::Lease> held;
    for (int i = 0; i < 3; i++) {
      std::optional<heliosdb::Lease> l = pool.try_acquire("alice");
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

    // A lease released on another thread.
    std::thread t([lease = std::move(held[1])]() mutable { lease.release(); });
    t.join();
    CHECK(other.stats().active_connections == 1);
    // held[2] is still out when `other` is destroyed: it stays valid and is released
    // (and closed) when `held` is destroyed below.
    other.close();
    CHECK(other.is_closed());
  }
  CHECK(closes->load() == 4);
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

}  // namespace

int main() {
  basics();
  bad_config();
  throwing_callback();
  threads();
  printf("wrapper: ok\n");
  return 0;
}

// heliosdb_pool.hpp: a header-only C++17 wrapper over heliosdb_pool.h.
// SPDX-License-Identifier: MIT OR Apache-2.0
//
//   heliosdb::Config config = heliosdb::Config::production();
//   config.callbacks.close = [](void *conn) { db_close(static_cast<Db *>(conn)); };
//   heliosdb::Pool pool(config);
//   pool.add_connection(db_open(), "alice");
//   {
//     heliosdb::Lease lease = pool.acquire("alice", std::chrono::seconds(5));
//     db_query(lease.as<Db>(), "SELECT 1");
//   } // released here
//
// Errors: every call that fails throws heliosdb::Error, which carries the C status and
// the library's detailed message. Destructors never throw.
//
// Ownership: Pool owns its heliosdb_pool and Lease owns one borrow; both are move-only.
// Destroying a Pool while Leases are out is allowed: the pool closes, and each Lease
// still releases (and closes) its connection when destroyed; the pool's memory is
// reclaimed with the last one.
//
// Threading: a Pool may be used from many threads at once (but not moved or destroyed
// while others use it). A Lease is used by one thread at a time; it may be destroyed
// on another thread than the one that acquired it.
//
// Callbacks: std::function objects, kept in a heap object passed to the C library as
// user_data and deleted through user_data_free when the pool's memory is reclaimed.
// They run on the threads described in heliosdb_pool.h (close: the releasing/removing
// thread or the sweeper; health_check, connect, on_leak, on_reclaim: the sweeper
// thread or the caller of Pool::sweep_now), concurrently with the pool's users. An
// exception escaping one is caught: swallowed (close, on_leak, on_reclaim), counted
// as "unhealthy" (health_check) or as a failed connect; it never crosses into the C
// library. From inside a callback, Pool::stats/prometheus/leaks/try_acquire and
// Lease::release are fine; destroying or closing the Pool, or Pool::sweep_now, is not.
#ifndef HELIOSDB_POOL_HPP
#define HELIOSDB_POOL_HPP

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "heliosdb_pool.h"

#if defined(__GNUC__) || defined(__clang__)
#define HELIOSDB_CPP_FILE __builtin_FILE()
#define HELIOSDB_CPP_LINE __builtin_LINE()
#define HELIOSDB_CPP_FUNCTION __builtin_FUNCTION()
#else
#define HELIOSDB_CPP_FILE "<unknown C++ caller>"
#define HELIOSDB_CPP_LINE 0
#define HELIOSDB_CPP_FUNCTION nullptr
#endif

namespace heliosdb {

/// The exception every failing wrapper call throws: the C status and the library's
/// detailed message (heliosdb_last_error_message() at the time of the failure).
class Error : public std::runtime_error {
 public:
  Error(heliosdb_status status, const std::string &message)
      : std::runtime_error(message), status_(status) {}

  /// The C status code (never HELIOSDB_OK).
  heliosdb_status status() const noexcept { return status_; }

 private:
  heliosdb_status status_;
};

namespace detail {

inline void check(heliosdb_status status) {
  if (status != HELIOSDB_OK) {
    throw Error(status, std::string(heliosdb_status_str(status)) + ": " +
                            heliosdb_last_error_message());
  }
}

}  // namespace detail

/// The pool's callbacks as C++ callables. Empty ones are not installed.
struct Callbacks {
  /// Closes a connection; called exactly once per connection the pool owns.
  std::function<void(void *connection)> close;
  /// Health-checks an idle connection: true if usable (an exception counts as false).
  std::function<bool(void *connection)> health_check;
  /// Opens a connection for a user (the factory): the connection, or nullptr (or an
  /// exception) on failure. The pool owns what it returns (closed through `close`).
  std::function<void *(const char *user)> connect;
  /// Receives leak reports; the report is valid during the call (LeakReport::from
  /// copies it).
  std::function<void(const heliosdb_leak_report &report)> on_leak;
  /// Told when a critically leaked borrow is reclaimed (auto_cleanup_enabled).
  std::function<void(const heliosdb_leak_report &report)> on_reclaim;
};

/// A leak report, copied out of a heliosdb_leak_report (owns its strings).
struct LeakReport {
  std::uint64_t connection_id = 0;
  std::string resource_id;
  std::string resource_type;
  std::string user;
  std::uint64_t held_ms = 0;
  /// HELIOSDB_LEAK_ALERT or HELIOSDB_LEAK_CRITICAL.
  int level = 0;
  /// The call site ("" and 0 when unknown).
  std::string file;
  unsigned line = 0;
  std::string function;
  std::string thread;
  std::vector<std::pair<std::string, std::string>> metadata;

  static LeakReport from(const heliosdb_leak_report &r) {
    auto str = [](const char *s) { return s != nullptr ? std::string(s) : std::string(); };
    LeakReport out;
    out.connection_id = r.connection_id;
    out.resource_id = str(r.resource_id);
    out.resource_type = str(r.resource_type);
    out.user = str(r.user);
    out.held_ms = r.held_ms;
    out.level = r.level;
    out.file = str(r.file);
    out.line = r.line;
    out.function = str(r.function);
    out.thread = str(r.thread);
    for (std::size_t i = 0; i < r.metadata_count; i++) {
      out.metadata.emplace_back(str(r.metadata[i].key), str(r.metadata[i].value));
    }
    return out;
  }
};

namespace detail {

/// A heliosdb_leak_fn that appends copies to a std::vector<LeakReport>.
inline void collect_report(const heliosdb_leak_report *report, void *user_data) {
  try {
    static_cast<std::vector<LeakReport> *>(user_data)->push_back(LeakReport::from(*report));
  } catch (...) {
    // Out of memory: the report is dropped rather than thrown across C.
  }
}

}  // namespace detail

/// Settings (the C struct, initialized by a preset) plus callbacks. The C callback
/// fields of `settings` (close, health_check, connect, on_leak, on_reclaim, user_data,
/// user_data_free) are replaced by the Pool constructor: use `callbacks`. `settings.name`
/// is copied by the constructor.
struct Config {
  heliosdb_pool_config settings{};
  Callbacks callbacks;

  /// The library defaults (heliosdb_pool_config_init).
  static Config defaults() { return make(heliosdb_pool_config_init); }
  /// The development preset.
  static Config development() { return make(heliosdb_pool_config_development); }
  /// The staging preset.
  static Config staging() { return make(heliosdb_pool_config_staging); }
  /// The production preset.
  static Config production() { return make(heliosdb_pool_config_production); }

 private:
  static Config make(heliosdb_status (*init)(heliosdb_pool_config *, size_t)) {
    Config config;
    detail::check(init(&config.settings, sizeof config.settings));
    return config;
  }
};

/// Descriptive facts about a connection (see heliosdb_connection_metadata).
struct Metadata {
  std::string database;
  std::string protocol;
  std::string remote_addr;
  std::vector<std::string> tags;
};

class Pool;

/// One borrowed connection; releases it when destroyed. Move-only.
class Lease {
 public:
  /// An empty lease (holds nothing).
  Lease() noexcept = default;
  Lease(const Lease &) = delete;
  Lease &operator=(const Lease &) = delete;
  Lease(Lease &&other) noexcept
      : pool_(std::exchange(other.pool_, nullptr)), lease_(other.lease_) {}
  Lease &operator=(Lease &&other) noexcept {
    if (this != &other) {
      reset();
      pool_ = std::exchange(other.pool_, nullptr);
      lease_ = other.lease_;
    }
    return *this;
  }
  /// Releases the connection; errors are ignored (use release() to see them).
  ~Lease() { reset(); }

  /// Whether the lease holds a connection.
  explicit operator bool() const noexcept { return pool_ != nullptr; }
  /// The connection, as given to Pool::add_connection.
  void *connection() const noexcept { return pool_ ? lease_.connection : nullptr; }
  /// The connection cast to its type.
  template <typename T>
  T *as() const noexcept {
    return static_cast<T *>(connection());
  }
  /// The connection's id.
  std::uint64_t connection_id() const noexcept { return lease_.connection_id; }
  /// The C lease (for calls the wrapper does not cover).
  const heliosdb_lease &raw() const noexcept { return lease_; }

  /// Releases now; throws Error if the library refuses (e.g. HELIOSDB_ERR_RECLAIMED).
  /// The lease is empty afterwards either way.
  void release() {
    if (pool_ != nullptr) {
      heliosdb_pool *pool = std::exchange(pool_, nullptr);
      detail::check(heliosdb_pool_release(pool, &lease_));
    }
  }

  /// Gives up ownership: the caller must pass the returned lease to
  /// heliosdb_pool_release itself.
  heliosdb_lease detach() noexcept {
    pool_ = nullptr;
    return lease_;
  }

 private:
  friend class Pool;
  Lease(heliosdb_pool *pool, const heliosdb_lease &lease) noexcept : pool_(pool), lease_(lease) {}

  void reset() noexcept {
    if (pool_ != nullptr) {
      (void)heliosdb_pool_release(std::exchange(pool_, nullptr), &lease_);
    }
  }

  heliosdb_pool *pool_ = nullptr;
  heliosdb_lease lease_{};
};

/// An owning, move-only handle on a heliosdb_pool.
class Pool {
 public:
  /// Builds a pool; throws Error (e.g. HELIOSDB_ERR_INVALID_CONFIG).
  explicit Pool(const Config &config = Config::defaults()) {
    heliosdb_pool_config settings = config.settings;
    auto *box = new Box{config.callbacks};
    settings.user_data = box;
    settings.user_data_free = [](void *user_data) { delete static_cast<Box *>(user_data); };
    settings.close = nullptr;
    settings.health_check = nullptr;
    settings.connect = nullptr;
    settings.on_leak = nullptr;
    settings.on_reclaim = nullptr;
    if (box->callbacks.close) {
      settings.close = [](void *connection, void *user_data) {
        try {
          static_cast<Box *>(user_data)->callbacks.close(connection);
        } catch (...) {
          // Never let an exception cross into the C library.
        }
      };
    }
    if (box->callbacks.health_check) {
      settings.health_check = [](void *connection, void *user_data) -> bool {
        try {
          return static_cast<Box *>(user_data)->callbacks.health_check(connection);
        } catch (...) {
          return false;
        }
      };
    }
    if (box->callbacks.connect) {
      settings.connect = [](const char *user, void **out, void *user_data) -> std::int32_t {
        try {
          void *connection = static_cast<Box *>(user_data)->callbacks.connect(user);
          if (connection == nullptr) {
            return HELIOSDB_ERR_CALLBACK_FAILED;
          }
          *out = connection;
          return HELIOSDB_OK;
        } catch (...) {
          return HELIOSDB_ERR_CALLBACK_FAILED;
        }
      };
    }
    if (box->callbacks.on_leak) {
      settings.on_leak = [](const heliosdb_leak_report *report, void *user_data) {
        try {
          static_cast<Box *>(user_data)->callbacks.on_leak(*report);
        } catch (...) {
        }
      };
    }
    if (box->callbacks.on_reclaim) {
      settings.on_reclaim = [](const heliosdb_leak_report *report, void *user_data) {
        try {
          static_cast<Box *>(user_data)->callbacks.on_reclaim(*report);
        } catch (...) {
        }
      };
    }
    heliosdb_status status = heliosdb_pool_new(&settings, &pool_);
    if (status != HELIOSDB_OK) {
      delete box;  // on failure the library does not take user_data
      detail::check(status);
    }
  }

  Pool(const Pool &) = delete;
  Pool &operator=(const Pool &) = delete;
  Pool(Pool &&other) noexcept : pool_(std::exchange(other.pool_, nullptr)) {}
  Pool &operator=(Pool &&other) noexcept {
    if (this != &other) {
      heliosdb_pool_free(pool_);
      pool_ = std::exchange(other.pool_, nullptr);
    }
    return *this;
  }
  /// Frees the pool (see heliosdb_pool_free: leases still out stay valid).
  ~Pool() { heliosdb_pool_free(pool_); }

  /// Adds a connection; the pool owns it from now on, even if this throws (the close
  /// callback has then run).
  std::uint64_t add_connection(void *connection, const std::string &user) {
    std::uint64_t id = 0;
    detail::check(heliosdb_pool_add_connection(pool_, connection, user.c_str(), nullptr, &id));
    return id;
  }

  /// Adds a connection with metadata.
  std::uint64_t add_connection(void *connection, const std::string &user, const Metadata &md) {
    std::vector<const char *> tags;
    tags.reserve(md.tags.size());
    for (const std::string &tag : md.tags) {
      tags.push_back(tag.c_str());
    }
    heliosdb_connection_metadata raw{};
    raw.struct_size = sizeof raw;
    raw.database = md.database.empty() ? nullptr : md.database.c_str();
    raw.protocol = md.protocol.c_str();
    raw.remote_addr = md.remote_addr.empty() ? nullptr : md.remote_addr.c_str();
    raw.tags = tags.data();
    raw.tag_count = tags.size();
    std::uint64_t id = 0;
    detail::check(heliosdb_pool_add_connection(pool_, connection, user.c_str(), &raw, &id));
    return id;
  }

  /// Borrows a connection of `user`, waiting up to `timeout`; records the caller's
  /// source location (GCC/Clang) for leak reports. Throws Error (HELIOSDB_ERR_TIMEOUT...).
  Lease acquire(const std::string &user, std::chrono::milliseconds timeout,
                const char *file = HELIOSDB_CPP_FILE, int line = HELIOSDB_CPP_LINE,
                const char *function = HELIOSDB_CPP_FUNCTION) {
    std::uint64_t ms = timeout.count() < 0 ? 0 : static_cast<std::uint64_t>(timeout.count());
    return acquire_ms(user, ms, file, line, function);
  }

  /// Borrows a connection of `user`, waiting up to the pool's acquire_timeout_ms.
  Lease acquire(const std::string &user, const char *file = HELIOSDB_CPP_FILE,
                int line = HELIOSDB_CPP_LINE, const char *function = HELIOSDB_CPP_FUNCTION) {
    return acquire_ms(user, HELIOSDB_TIMEOUT_DEFAULT, file, line, function);
  }

  /// Borrows an idle connection of `user` if one is free now; std::nullopt if none is.
  /// Other failures throw Error.
  std::optional<Lease> try_acquire(const std::string &user, const char *file = HELIOSDB_CPP_FILE,
                                   int line = HELIOSDB_CPP_LINE,
                                   const char *function = HELIOSDB_CPP_FUNCTION) {
    heliosdb_lease lease;
    heliosdb_status status =
        heliosdb_pool_try_acquire_at(pool_, user.c_str(), &lease, file, line, function);
    if (status == HELIOSDB_ERR_NO_IDLE_CONNECTION) {
      return std::nullopt;
    }
    detail::check(status);
    return Lease(pool_, lease);
  }

  /// Removes a connection; returns true if it is borrowed and closes on return.
  bool remove_connection(std::uint64_t connection_id) {
    bool deferred = false;
    detail::check(heliosdb_pool_remove_connection(pool_, connection_id, &deferred));
    return deferred;
  }

  /// Closes the pool (see heliosdb_pool_close).
  void close() { detail::check(heliosdb_pool_close(pool_)); }

  /// Whether the pool is closed.
  bool is_closed() const {
    bool closed = false;
    detail::check(heliosdb_pool_is_closed(pool_, &closed));
    return closed;
  }

  /// A snapshot of the pool's counts.
  heliosdb_pool_stats stats() const {
    heliosdb_pool_stats stats{};
    stats.struct_size = sizeof stats;
    detail::check(heliosdb_pool_get_stats(pool_, &stats));
    return stats;
  }

  /// The statistics in the Prometheus text format.
  std::string prometheus() const {
    std::string text(4096, '\0');
    for (;;) {
      std::size_t needed = 0;
      heliosdb_status status = heliosdb_pool_prometheus(pool_, &text[0], text.size(), &needed);
      if (status == HELIOSDB_ERR_BUFFER_TOO_SMALL) {
        text.resize(needed + 1024);  // slack: the text may grow before the next try
        continue;
      }
      detail::check(status);
      text.resize(needed - 1);  // drop the NUL
      return text;
    }
  }

  /// The borrows held past the leak threshold now (copies; nothing is counted).
  std::vector<LeakReport> leaks() const {
    std::vector<LeakReport> out;
    detail::check(heliosdb_pool_for_each_leak(pool_, detail::collect_report, &out, nullptr));
    return out;
  }

  /// Runs one sweeper pass on this thread (tests and tools); its callbacks run here.
  void sweep_now() { detail::check(heliosdb_pool_sweep_now(pool_)); }

  /// The C pool (for calls the wrapper does not cover); still owned by this object.
  heliosdb_pool *get() const noexcept { return pool_; }

 private:
  struct Box {
    Callbacks callbacks;
  };

  Lease acquire_ms(const std::string &user, std::uint64_t ms, const char *file, int line,
                   const char *function) {
    heliosdb_lease lease;
    detail::check(
        heliosdb_pool_acquire_at(pool_, user.c_str(), ms, &lease, file, line, function));
    return Lease(pool_, lease);
  }

  heliosdb_pool *pool_ = nullptr;
};

/// An owning, move-only handle on a standalone heliosdb_leak_detector.
class LeakDetector {
 public:
  /// Thresholds and limit; zeros are the library defaults (30 s, 300 s, 100 000).
  explicit LeakDetector(std::chrono::milliseconds alert = std::chrono::milliseconds(0),
                        std::chrono::milliseconds critical = std::chrono::milliseconds(0),
                        std::size_t max_tracked = 0) {
    detail::check(heliosdb_leak_detector_new(ms(alert), ms(critical), max_tracked, &d_));
  }
  LeakDetector(const LeakDetector &) = delete;
  LeakDetector &operator=(const LeakDetector &) = delete;
  LeakDetector(LeakDetector &&other) noexcept : d_(std::exchange(other.d_, nullptr)) {}
  LeakDetector &operator=(LeakDetector &&other) noexcept {
    if (this != &other) {
      heliosdb_leak_detector_free(d_);
      d_ = std::exchange(other.d_, nullptr);
    }
    return *this;
  }
  ~LeakDetector() { heliosdb_leak_detector_free(d_); }

  /// Tracks `id`, taken by `user`; throws Error (duplicate, limit).
  void track(const std::string &id, const std::string &user,
             const std::string &type = "Connection",
             const std::vector<std::pair<std::string, std::string>> &metadata = {}) {
    std::vector<heliosdb_metadata_entry> md;
    md.reserve(metadata.size());
    for (const auto &kv : metadata) {
      md.push_back(heliosdb_metadata_entry{kv.first.c_str(), kv.second.c_str()});
    }
    detail::check(heliosdb_leak_detector_track(d_, id.c_str(), user.c_str(), type.c_str(),
                                               md.data(), md.size()));
  }

  /// Stops tracking `id`; returns how long it was held. Throws Error if unknown.
  std::chrono::milliseconds release(const std::string &id) {
    std::uint64_t held = 0;
    detail::check(heliosdb_leak_detector_release(d_, id.c_str(), &held));
    return std::chrono::milliseconds(static_cast<std::chrono::milliseconds::rep>(held));
  }

  /// The resources held past the alert threshold (first reports are counted and logged).
  std::vector<LeakReport> check() {
    std::vector<LeakReport> out;
    detail::check(heliosdb_leak_detector_check(d_, detail::collect_report, &out, nullptr));
    return out;
  }

  /// Whether `id` is held past the alert threshold.
  bool is_leaked(const std::string &id) const {
    bool leaked = false;
    detail::check(heliosdb_leak_detector_is_leaked(d_, id.c_str(), &leaked));
    return leaked;
  }

  /// The counters.
  heliosdb_leak_stats stats() const {
    heliosdb_leak_stats stats{};
    stats.struct_size = sizeof stats;
    detail::check(heliosdb_leak_detector_stats(d_, &stats));
    return stats;
  }

  /// The C detector; still owned by this object.
  heliosdb_leak_detector *get() const noexcept { return d_; }

 private:
  static std::uint64_t ms(std::chrono::milliseconds d) {
    return d.count() < 0 ? 0 : static_cast<std::uint64_t>(d.count());
  }
  heliosdb_leak_detector *d_ = nullptr;
};

/// An owning, move-only handle on a standalone heliosdb_health_monitor.
class HealthMonitor {
 public:
  /// `detector` may be null (a private one); the monitor keeps the C detector alive,
  /// so the LeakDetector object may be destroyed first. Zeros are the defaults.
  explicit HealthMonitor(const LeakDetector *detector = nullptr,
                         std::chrono::milliseconds interval = std::chrono::milliseconds(0),
                         std::chrono::milliseconds slow = std::chrono::milliseconds(0),
                         std::uint32_t unhealthy_after_failures = 0) {
    detail::check(heliosdb_health_monitor_new(detector != nullptr ? detector->get() : nullptr,
                                              ms(interval), ms(slow), unhealthy_after_failures,
                                              &m_));
  }
  HealthMonitor(const HealthMonitor &) = delete;
  HealthMonitor &operator=(const HealthMonitor &) = delete;
  HealthMonitor(HealthMonitor &&other) noexcept : m_(std::exchange(other.m_, nullptr)) {}
  HealthMonitor &operator=(HealthMonitor &&other) noexcept {
    if (this != &other) {
      heliosdb_health_monitor_free(m_);
      m_ = std::exchange(other.m_, nullptr);
    }
    return *this;
  }
  /// Stops the background thread; the check callables are destroyed before it returns.
  ~HealthMonitor() { heliosdb_health_monitor_free(m_); }

  /// Monitors `id` with `check` (true: healthy; an exception counts as false). The
  /// callable runs on the background thread and on callers of check(), possibly
  /// concurrently; it is destroyed when the monitor no longer needs it.
  void monitor(const std::string &id, std::function<bool()> check) {
    auto *fn = new std::function<bool()>(std::move(check));
    heliosdb_status status = heliosdb_health_monitor_monitor(
        m_, id.c_str(), nullptr,
        [](void *, void *user_data) -> bool {
          try {
            return (*static_cast<std::function<bool()> *>(user_data))();
          } catch (...) {
            return false;
          }
        },
        fn, [](void *user_data) { delete static_cast<std::function<bool()> *>(user_data); });
    if (status != HELIOSDB_OK) {
      delete fn;  // not taken on failure
      detail::check(status);
    }
  }

  /// Stops monitoring `id`; whether it was monitored.
  bool unmonitor(const std::string &id) {
    bool was = false;
    detail::check(heliosdb_health_monitor_unmonitor(m_, id.c_str(), &was));
    return was;
  }

  /// Checks `id` now: HELIOSDB_HEALTH_HEALTHY, _DEGRADED or _UNHEALTHY. Throws if unknown.
  int check(const std::string &id) {
    std::int32_t status = 0;
    detail::check(heliosdb_health_monitor_check(m_, id.c_str(), &status, nullptr));
    return status;
  }

  /// The health from the checks so far (runs none).
  int status(const std::string &id) const {
    std::int32_t status = 0;
    detail::check(heliosdb_health_monitor_status(m_, id.c_str(), &status, nullptr));
    return status;
  }

  /// Starts / stops the background thread.
  void start() { detail::check(heliosdb_health_monitor_start(m_)); }
  void stop() { detail::check(heliosdb_health_monitor_stop(m_)); }

  /// The C monitor; still owned by this object.
  heliosdb_health_monitor *get() const noexcept { return m_; }

 private:
  static std::uint64_t ms(std::chrono::milliseconds d) {
    return d.count() < 0 ? 0 : static_cast<std::uint64_t>(d.count());
  }
  heliosdb_health_monitor *m_ = nullptr;
};

}  // namespace heliosdb

#endif  // HELIOSDB_POOL_HPP

// heliosdb_pool.hpp: a header-only C++17 wrapper over heliosdb_pool.h.
// SPDX-License-Identifier: MIT OR Apache-2.0
//
// A typed pool: the pool owns each connection as a std::unique_ptr<T> and destroys it
// with T's destructor exactly once, whatever path it leaves by (removed, evicted,
// reclaimed, pool closed or destroyed, a failed add); there is no close callback to
// write.
//
//   struct Db { explicit Db(std::string_view user); ~Db(); bool ping(); void query(...); };
//
//   heliosdb::Config config = heliosdb::Config::production();
//   heliosdb::Hooks<Db> hooks;
//   hooks.health_check = [](Db &db) { return db.ping(); };
//   hooks.connect = [](std::string_view user) { return std::make_unique<Db>(user); };
//   heliosdb::Pool<Db> pool(config, std::move(hooks));
//   pool.add_connection(std::make_unique<Db>("alice"), "alice");
//   pool.emplace_connection("alice", "alice");            // constructed in place
//   {
//     heliosdb::Lease<Db> db = pool.acquire("alice", std::chrono::seconds(5));
//     db->query("SELECT 1");
//   }                                                     // released here
//   if (auto db = pool.try_acquire_for("alice", std::chrono::microseconds(500))) {
//     (*db)->query("SELECT 2");                           // std::nullopt on timeout
//   }
//
// The untyped form, Pool<void> (`heliosdb::Pool pool(config)` deduces it), keeps the
// C library's void* connections and `config.callbacks` (close included), for code that
// pools C handles.
//
// Errors: every call that fails throws heliosdb::Error, a std::system_error whose
// code() is in heliosdb::error_category() (heliosdb::errc, one value per C status;
// compare with std::errc::timed_out etc. through error conditions) and whose what()
// has the library's detailed message. The try_ forms return std::nullopt for the
// expected misses (nothing idle, timed out) instead. Destructors never throw.
//
// Ownership: Pool owns its heliosdb_pool and Lease owns one borrow; both are move-only.
// Destroying a Pool while Leases are out is allowed: the pool closes, and each Lease
// still releases (and closes) its connection when destroyed; the pool's memory and
// hooks are reclaimed with the last one.
//
// Threading: a Pool may be used from many threads at once (but not moved or destroyed
// while others use it). A Lease is used by one thread at a time; it may be destroyed
// on another thread than the one that acquired it.
//
// Hooks (typed) and callbacks (untyped): std::function objects, kept in a heap object
// passed to the C library as user_data and deleted when the pool's memory is
// reclaimed. They run on the threads described in heliosdb_pool.h (a connection's
// destructor / close: the releasing, removing or closing thread, or the sweeper;
// reset: the releasing thread, inside Lease::release or ~Lease; connect: the pool's
// connector threads, several at once; health_check, on_leak, on_reclaim: the sweeper
// thread or the caller of Pool::sweep_now),
// concurrently with the pool's users. An exception escaping one is caught at the
// boundary: swallowed (destructor, close, on_leak, on_reclaim), counted as "unhealthy"
// (health_check) or as a failed reset (the connection is then closed), or a failed
// connect whose what() reaches the waiter's timeout error; it never crosses into the C
// library. From inside a hook,
// Pool::stats/prometheus/leaks/try_acquire and Lease::release are fine; destroying or
// closing the Pool, or Pool::sweep_now, is not.
//
// Call sites: acquire records the caller's file, line and function for leak reports,
// through std::source_location (C++20), the compiler builtins (GCC, Clang, MSVC) before
// that, or, for a compiler with neither, the HELIOSDB_HERE macro passed as the last
// argument: pool.acquire("alice", 5s, HELIOSDB_HERE).
//
// Allocation: acquire, try_acquire, try_acquire_for and release allocate nothing for a
// user given as a const char* or a std::string (passed to C as is) or as a
// std::string_view shorter than heliosdb::kUserBufferSize bytes (copied into a stack
// buffer to add the NUL); a longer std::string_view costs one heap copy per call.
#ifndef HELIOSDB_POOL_HPP
#define HELIOSDB_POOL_HPP

#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include "heliosdb_pool.h"

// ---- how call sites are captured ----
//
// HELIOSDB_CPP_LOCATION is 2 with std::source_location, 1 with the builtins, 0 with
// neither (then pass HELIOSDB_HERE). Define HELIOSDB_CPP_NO_SOURCE_LOCATION to force 0.
#if defined(_MSVC_LANG)
#define HELIOSDB_CPP_STD _MSVC_LANG
#else
#define HELIOSDB_CPP_STD __cplusplus
#endif

#if !defined(HELIOSDB_CPP_LOCATION)
#if defined(HELIOSDB_CPP_NO_SOURCE_LOCATION)
#define HELIOSDB_CPP_LOCATION 0
#elif HELIOSDB_CPP_STD >= 202002L && defined(__has_include)
#if __has_include(<source_location>)
#include <source_location>
#endif
#endif
#endif

#if !defined(HELIOSDB_CPP_LOCATION)
#if defined(__cpp_lib_source_location) && __cpp_lib_source_location >= 201907L
#define HELIOSDB_CPP_LOCATION 2
#elif defined(__GNUC__) || defined(__clang__) || (defined(_MSC_VER) && _MSC_VER >= 1926)
#define HELIOSDB_CPP_LOCATION 1
#else
#define HELIOSDB_CPP_LOCATION 0
#endif
#endif

/// The call site of the expression it is written in, as a heliosdb::SourceLocation:
/// pass it as the last argument of acquire/try_acquire/try_acquire_for where the
/// compiler cannot capture call sites itself (HELIOSDB_CPP_LOCATION == 0).
#define HELIOSDB_HERE (::heliosdb::SourceLocation::at(__FILE__, __LINE__, __func__))

// The hot path (acquire, release, the user and call-site arguments) is forced inline,
// so the wrapper compiles to the same C calls a C caller makes; the error paths are
// out of line and cold.
#if defined(__GNUC__) || defined(__clang__)
#define HELIOSDB_CPP_INLINE inline __attribute__((always_inline))
#define HELIOSDB_CPP_COLD __attribute__((noinline, cold))
#define HELIOSDB_CPP_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define HELIOSDB_CPP_INLINE inline
#define HELIOSDB_CPP_COLD
#define HELIOSDB_CPP_UNLIKELY(x) (x)
#endif

namespace heliosdb {

// ============================== errors ==============================

/// One value per failing C status (heliosdb_status), same numbers: the error codes of
/// heliosdb::error_category(). `std::error_code ec = heliosdb::errc::timeout;` works.
enum class errc : int {
  null_argument = HELIOSDB_ERR_NULL_ARGUMENT,
  invalid_utf8 = HELIOSDB_ERR_INVALID_UTF8,
  invalid_config = HELIOSDB_ERR_INVALID_CONFIG,
  pool_full = HELIOSDB_ERR_POOL_FULL,
  user_at_capacity = HELIOSDB_ERR_USER_AT_CAPACITY,
  unknown_user = HELIOSDB_ERR_UNKNOWN_USER,
  timeout = HELIOSDB_ERR_TIMEOUT,
  no_idle_connection = HELIOSDB_ERR_NO_IDLE_CONNECTION,
  closed = HELIOSDB_ERR_CLOSED,
  stale_handle = HELIOSDB_ERR_STALE_HANDLE,
  reclaimed = HELIOSDB_ERR_RECLAIMED,
  unknown_connection = HELIOSDB_ERR_UNKNOWN_CONNECTION,
  duplicate_resource = HELIOSDB_ERR_DUPLICATE_RESOURCE,
  unknown_resource = HELIOSDB_ERR_UNKNOWN_RESOURCE,
  tracking_limit = HELIOSDB_ERR_TRACKING_LIMIT,
  buffer_too_small = HELIOSDB_ERR_BUFFER_TOO_SMALL,
  callback_failed = HELIOSDB_ERR_CALLBACK_FAILED,
  foreign_handle = HELIOSDB_ERR_FOREIGN_HANDLE,
  unsupported_version = HELIOSDB_ERR_UNSUPPORTED_VERSION,
  panic = HELIOSDB_ERR_PANIC,
  invalid_argument = HELIOSDB_ERR_INVALID_ARGUMENT,
  reentrant = HELIOSDB_ERR_REENTRANT,
  too_many_users = HELIOSDB_ERR_TOO_MANY_USERS,
  user_name_too_long = HELIOSDB_ERR_USER_NAME_TOO_LONG,
};

namespace detail {

/// The "heliosdb" category: messages from heliosdb_status_str; the generic conditions
/// (std::errc) that some statuses are equivalent to.
class ErrorCategory final : public std::error_category {
 public:
  const char *name() const noexcept override { return "heliosdb"; }

  std::string message(int code) const override { return heliosdb_status_str(code); }

  std::error_condition default_error_condition(int code) const noexcept override {
    switch (static_cast<errc>(code)) {
      case errc::timeout:
        return std::errc::timed_out;
      case errc::no_idle_connection:
      case errc::too_many_users:
        return std::errc::resource_unavailable_try_again;
      case errc::null_argument:
      case errc::user_name_too_long:
      case errc::invalid_utf8:
      case errc::invalid_config:
      case errc::invalid_argument:
      case errc::unsupported_version:
        return std::errc::invalid_argument;
      case errc::buffer_too_small:
        return std::errc::no_buffer_space;
      default:
        return std::error_condition(code, *this);
    }
  }
};

}  // namespace detail

/// The category of every heliosdb error code (one object program-wide; thread-safe).
inline const std::error_category &error_category() noexcept {
  static const detail::ErrorCategory category;
  return category;
}

/// `errc` as a std::error_code (found by argument-dependent lookup).
inline std::error_code make_error_code(errc e) noexcept {
  return std::error_code(static_cast<int>(e), error_category());
}

/// A C status as a std::error_code (HELIOSDB_OK: the empty error_code).
inline std::error_code make_error_code(heliosdb_status status) noexcept {
  if (status == HELIOSDB_OK) {
    return std::error_code();
  }
  return std::error_code(static_cast<int>(status), error_category());
}

}  // namespace heliosdb

namespace std {
/// heliosdb::errc converts to std::error_code implicitly.
template <>
struct is_error_code_enum<heliosdb::errc> : true_type {};
}  // namespace std

namespace heliosdb {

/// The exception every failing wrapper call throws: a std::system_error whose code()
/// is in heliosdb::error_category() and whose what() is the library's detailed message
/// (heliosdb_last_error_message() at the time of the failure) followed by the status
/// description. Copyable, as exceptions are; thread-independent once made.
class Error : public std::system_error {
 public:
  /// An error with `code` and the detail text `detail`.
  Error(std::error_code code, const std::string &detail) : std::system_error(code, detail) {}
  /// An error for a failing C status (never HELIOSDB_OK).
  Error(heliosdb_status status, const std::string &detail)
      : std::system_error(make_error_code(status), detail) {}

  /// The C status code (never HELIOSDB_OK for a heliosdb error).
  heliosdb_status status() const noexcept { return static_cast<heliosdb_status>(code().value()); }
};

namespace detail {

/// Throws the Error of a failing status, with this thread's last error message. Out of
/// line and cold: the success path is one compare.
[[noreturn]] HELIOSDB_CPP_COLD inline void throw_status(heliosdb_status status) {
  throw Error(status, heliosdb_last_error_message());
}

HELIOSDB_CPP_INLINE void check(heliosdb_status status) {
  if (HELIOSDB_CPP_UNLIKELY(status != HELIOSDB_OK)) {
    throw_status(status);
  }
}

[[noreturn]] HELIOSDB_CPP_COLD inline void throw_error(errc code, const char *detail) {
  throw Error(make_error_code(code), detail);
}

}  // namespace detail

// ============================== small vocabulary types ==============================

/// A connection id, as heliosdb_pool_add_connection returns it (never 0).
using ConnectionId = std::uint64_t;

/// The level of a leak report.
enum class LeakLevel : std::int32_t {
  /// Held past the alert threshold (leak_detection_threshold_ms).
  alert = HELIOSDB_LEAK_ALERT,
  /// Held past the critical threshold (leak_critical_threshold_ms).
  critical = HELIOSDB_LEAK_CRITICAL,
};

/// A connection's health, as the standalone HealthMonitor reports it.
enum class Health : std::int32_t {
  /// The last check succeeded in time (or none ran yet).
  healthy = HELIOSDB_HEALTH_HEALTHY,
  /// The last check failed or was slow, but not enough failed in a row.
  degraded = HELIOSDB_HEALTH_DEGRADED,
  /// `unhealthy_after_failures` checks in a row failed.
  unhealthy = HELIOSDB_HEALTH_UNHEALTHY,
};

/// "alert" / "critical".
constexpr std::string_view to_string(LeakLevel level) noexcept {
  return level == LeakLevel::critical ? "critical" : "alert";
}

/// "healthy" / "degraded" / "unhealthy".
constexpr std::string_view to_string(Health health) noexcept {
  return health == Health::healthy ? "healthy"
         : health == Health::degraded ? "degraded"
                                      : "unhealthy";
}

/// A timeout or threshold: any std::chrono::duration (integer or floating-point),
/// converted implicitly and rounded up to whole milliseconds, so a positive duration
/// never becomes "do not wait". Zero, negative and NaN durations are 0 ms; durations
/// too long for the C API are clamped to the longest wait it accepts. Only durations
/// convert: a bare number (a literal 0 included) does not compile.
class Duration {
 public:
  /// The longest wait, in ms (HELIOSDB_TIMEOUT_DEFAULT, UINT64_MAX, means "default").
  static constexpr std::uint64_t kMaxMs = UINT64_MAX - 1;

  template <typename Rep, typename Period>
  HELIOSDB_CPP_INLINE constexpr Duration(std::chrono::duration<Rep, Period> d) noexcept
      : ms_(to_ms(d)) {}

  /// The duration in milliseconds, as the C API takes it.
  constexpr std::uint64_t milliseconds() const noexcept { return ms_; }

 private:
  template <typename Rep, typename Period>
  static constexpr std::uint64_t to_ms(std::chrono::duration<Rep, Period> d) noexcept {
    if constexpr (std::is_floating_point_v<Rep>) {
      const double ms = std::chrono::duration<double, std::milli>(d).count();
      if (!(ms > 0.0)) {  // also NaN
        return 0;
      }
      if (ms >= 18446744073709551616.0) {  // 2^64
        return kMaxMs;
      }
      const std::uint64_t whole = static_cast<std::uint64_t>(ms);
      const std::uint64_t up = static_cast<double>(whole) < ms ? whole + 1 : whole;
      return up > kMaxMs ? kMaxMs : up;
    } else {
      if (d.count() <= 0) {
        return 0;
      }
      // Exact integer arithmetic: count * num / den, rounded up, clamped.
      using r = std::ratio_divide<Period, std::milli>;
      constexpr std::uint64_t num = static_cast<std::uint64_t>(r::num);
      constexpr std::uint64_t den = static_cast<std::uint64_t>(r::den);
      const std::uint64_t count = static_cast<std::uint64_t>(d.count());
      if (count > kMaxMs / num) {
        return kMaxMs;
      }
      const std::uint64_t scaled = count * num;
      return scaled / den + (scaled % den != 0 ? 1 : 0);
    }
  }

  std::uint64_t ms_;
};

/// The size of the stack buffer a std::string_view user is copied into (NUL included):
/// users shorter than this cost no allocation per call.
inline constexpr std::size_t kUserBufferSize = 128;

/// A user name argument, valid during the call it is passed to: a const char* or a
/// std::string (passed to the C library as is, no copy) or a std::string_view (copied
/// into a stack buffer to add the NUL; heap-copied once per call when it is
/// kUserBufferSize bytes or longer). A name containing a NUL byte is refused
/// (errc::invalid_argument): the C API could not see past it. A literal 0 or nullptr
/// does not compile. Holds pointers only: do not store one.
class UserRef {
 public:
  /// A NUL-terminated name (NULL is refused by the library: errc::null_argument).
  HELIOSDB_CPP_INLINE UserRef(const char *user) noexcept : data_(user), size_(kUnknownSize) {}
  /// A std::string's characters, NUL-terminated by std::string itself.
  HELIOSDB_CPP_INLINE UserRef(const std::string &user) noexcept
      : data_(user.data()), size_(user.size()) {}
  /// Any characters; copied to add the NUL.
  HELIOSDB_CPP_INLINE UserRef(std::string_view user) noexcept
      : data_(user.data()), size_(user.size() | kNeedsCopy) {}
  UserRef(std::nullptr_t) = delete;
  UserRef(int) = delete;

  /// Calls `f(const char *)` with the name NUL-terminated; returns what f returns.
  /// Throws errc::invalid_argument for a name with a NUL byte, std::bad_alloc.
  template <typename F>
  HELIOSDB_CPP_INLINE decltype(auto) with_c_str(F &&f) const {
    if (size_ == kUnknownSize) {
      return f(data_);
    }
    const std::size_t size = size_ & ~kNeedsCopy;
    if (size != 0 && std::memchr(data_, 0, size) != nullptr) {
      detail::throw_error(errc::invalid_argument, "the user name contains a NUL byte");
    }
    if ((size_ & kNeedsCopy) == 0) {
      return f(data_);
    }
    if (size < kUserBufferSize) {
      char buf[kUserBufferSize];
      if (size != 0) {
        std::memcpy(buf, data_, size);
      }
      buf[size] = '\0';
      return f(static_cast<const char *>(buf));
    }
    const std::string copy(data_, size);  // the documented slow path
    return f(copy.c_str());
  }

 private:
  // Two words, so it travels in registers: the size, with its top bit set when the
  // characters need a copy (a string_view), or all ones for a const char*.
  static constexpr std::size_t kUnknownSize = ~std::size_t{0};
  static constexpr std::size_t kNeedsCopy = ~(~std::size_t{0} >> 1);
  const char *data_;
  std::size_t size_;
};

/// Where a call was made: recorded by acquire for leak reports (file, line, function).
/// Made by current() (the default argument of every acquire) or HELIOSDB_HERE; the
/// strings are static (string literals, __func__), as the C library requires.
class SourceLocation {
 public:
#if HELIOSDB_CPP_LOCATION == 2
  /// The caller's location (std::source_location).
  HELIOSDB_CPP_INLINE static constexpr SourceLocation current(
      std::source_location where = std::source_location::current()) noexcept {
    return SourceLocation(where.file_name(), where.line(), where.function_name());
  }
#elif HELIOSDB_CPP_LOCATION == 1
  /// The caller's location (compiler builtins).
  HELIOSDB_CPP_INLINE static constexpr SourceLocation current(const char *file = __builtin_FILE(),
                                          std::uint_least32_t line = __builtin_LINE(),
                                          const char *function = __builtin_FUNCTION()) noexcept {
    return SourceLocation(file, line, function);
  }
#else
  /// No way to see the caller: a placeholder that says to pass HELIOSDB_HERE.
  static constexpr SourceLocation current() noexcept {
    return SourceLocation("<C++ caller: pass HELIOSDB_HERE to record the call site>", 0,
                          nullptr);
  }
#endif

  /// A location from __FILE__, __LINE__, __func__ (what HELIOSDB_HERE passes).
  static constexpr SourceLocation at(const char *file, long line, const char *function) noexcept {
    return SourceLocation(file, static_cast<std::uint_least32_t>(line), function);
  }

  constexpr const char *file_name() const noexcept { return file_; }
  constexpr std::uint_least32_t line() const noexcept { return line_; }
  /// May be nullptr (unknown).
  constexpr const char *function_name() const noexcept { return function_; }

 private:
  constexpr SourceLocation(const char *file, std::uint_least32_t line,
                           const char *function) noexcept
      : file_(file), line_(line), function_(function) {}

  const char *file_;
  std::uint_least32_t line_;
  const char *function_;
};

// ============================== reports and statistics ==============================

/// The metadata of a leak report: a read-only range of (key, value) pairs of
/// std::string_view, valid as long as the report it came from.
class MetadataView {
 public:
  using value_type = std::pair<std::string_view, std::string_view>;

  /// An input iterator over the pairs.
  class iterator {
   public:
    using iterator_category = std::input_iterator_tag;
    using value_type = MetadataView::value_type;
    using difference_type = std::ptrdiff_t;
    using pointer = void;
    using reference = value_type;

    iterator() noexcept = default;
    value_type operator*() const noexcept { return pair_of(*entry_); }
    iterator &operator++() noexcept {
      ++entry_;
      return *this;
    }
    iterator operator++(int) noexcept {
      iterator before = *this;
      ++entry_;
      return before;
    }
    bool operator==(const iterator &other) const noexcept { return entry_ == other.entry_; }
    bool operator!=(const iterator &other) const noexcept { return entry_ != other.entry_; }

   private:
    friend class MetadataView;
    explicit iterator(const heliosdb_metadata_entry *entry) noexcept : entry_(entry) {}
    const heliosdb_metadata_entry *entry_ = nullptr;
  };

  MetadataView() noexcept = default;
  MetadataView(const heliosdb_metadata_entry *entries, std::size_t count) noexcept
      : entries_(count == 0 ? nullptr : entries), count_(count == 0 ? 0 : count) {}

  iterator begin() const noexcept { return iterator(entries_); }
  iterator end() const noexcept { return iterator(entries_ + count_); }
  std::size_t size() const noexcept { return count_; }
  bool empty() const noexcept { return count_ == 0; }
  /// The i-th pair (i < size()).
  value_type operator[](std::size_t i) const noexcept { return pair_of(entries_[i]); }

 private:
  static std::string_view view(const char *s) noexcept {
    return s != nullptr ? std::string_view(s) : std::string_view();
  }
  static value_type pair_of(const heliosdb_metadata_entry &e) noexcept {
    return value_type(view(e.key), view(e.value));
  }

  const heliosdb_metadata_entry *entries_ = nullptr;
  std::size_t count_ = 0;
};

/// A leak report as the library hands it to a hook: views (std::string_view fields,
/// "" when the C field is NULL) valid only during the call; copy it into a LeakReport
/// to keep it. Reading it allocates nothing.
struct LeakReportView {
  /// The leaked borrow's connection id (0 for the standalone detector).
  ConnectionId connection_id = 0;
  /// The connection id in decimal (pool), or the id given to LeakDetector::track.
  std::string_view resource_id;
  /// "Connection" (pool), or the type given to track.
  std::string_view resource_type;
  /// Who holds it.
  std::string_view user;
  /// How long it has been held (a few ms resolution for a pool).
  std::chrono::milliseconds held{0};
  /// The level its age reaches.
  LeakLevel level = LeakLevel::alert;
  /// The call site of the acquire ("" and 0 when unknown).
  std::string_view file;
  std::uint32_t line = 0;
  std::string_view function;
  /// The borrowing thread's name or id ("" when unknown).
  std::string_view thread;
  /// The connection's metadata (database, protocol, remote_addr, tags) or the
  /// detector's.
  MetadataView metadata;

  LeakReportView() noexcept = default;
  /// Views over a C report (which must outlive this object).
  explicit LeakReportView(const heliosdb_leak_report &r) noexcept
      : connection_id(r.connection_id),
        resource_id(view(r.resource_id)),
        resource_type(view(r.resource_type)),
        user(view(r.user)),
        held(static_cast<std::chrono::milliseconds::rep>(r.held_ms)),
        level(static_cast<LeakLevel>(r.level)),
        file(view(r.file)),
        line(r.line),
        function(view(r.function)),
        thread(view(r.thread)),
        metadata(r.metadata, r.metadata_count) {}

 private:
  static std::string_view view(const char *s) noexcept {
    return s != nullptr ? std::string_view(s) : std::string_view();
  }
};

/// A leak report that owns its strings (what Pool::leaks and LeakDetector::check
/// return; make one from a LeakReportView to keep a hook's report).
struct LeakReport {
  ConnectionId connection_id = 0;
  std::string resource_id;
  std::string resource_type;
  std::string user;
  std::chrono::milliseconds held{0};
  LeakLevel level = LeakLevel::alert;
  std::string file;
  std::uint32_t line = 0;
  std::string function;
  std::string thread;
  std::vector<std::pair<std::string, std::string>> metadata;

  LeakReport() = default;
  /// Copies a view. Throws std::bad_alloc.
  explicit LeakReport(const LeakReportView &v)
      : connection_id(v.connection_id),
        resource_id(v.resource_id),
        resource_type(v.resource_type),
        user(v.user),
        held(v.held),
        level(v.level),
        file(v.file),
        line(v.line),
        function(v.function),
        thread(v.thread) {
    metadata.reserve(v.metadata.size());
    for (const auto &kv : v.metadata) {
      metadata.emplace_back(std::string(kv.first), std::string(kv.second));
    }
  }
  /// Copies a C report. Throws std::bad_alloc.
  static LeakReport from(const heliosdb_leak_report &r) { return LeakReport(LeakReportView(r)); }
};

/// A snapshot of a pool's counts (Pool::stats; see heliosdb_pool_stats). Approximate
/// under load: read without stopping the pool.
struct PoolStats {
  std::size_t total_connections = 0;
  std::size_t active_connections = 0;
  std::size_t idle_connections = 0;
  std::size_t waiting = 0;
  std::uint64_t acquires = 0;
  std::uint64_t timeouts = 0;
  std::uint64_t leaks_detected = 0;
  std::uint64_t leak_alerts = 0;
  std::uint64_t leak_criticals = 0;
  std::uint64_t returned_after_leak = 0;
  std::uint64_t evicted_idle = 0;
  std::uint64_t evicted_age = 0;
  std::uint64_t evicted_health = 0;
  std::uint64_t evicted_reclaimed = 0;
  std::uint64_t evicted_removed = 0;
  std::uint64_t health_checks = 0;
  std::uint64_t health_failures = 0;
  std::uint64_t factory_creates = 0;
  std::uint64_t factory_errors = 0;
  std::uint64_t sweep_passes = 0;
  std::uint64_t evicted_discarded = 0;
  std::uint64_t evicted_detached = 0;
  std::uint64_t evicted_reset_failed = 0;
  std::uint64_t evicted_failover = 0;
  std::uint64_t spin_acquires = 0;
  std::uint64_t users_retired = 0;
  std::size_t connects_in_flight = 0;

  /// From the C struct.
  static PoolStats from(const heliosdb_pool_stats &s) noexcept {
    PoolStats out;
    out.total_connections = s.total_connections;
    out.active_connections = s.active_connections;
    out.idle_connections = s.idle_connections;
    out.waiting = s.waiting;
    out.acquires = s.acquires;
    out.timeouts = s.timeouts;
    out.leaks_detected = s.leaks_detected;
    out.leak_alerts = s.leak_alerts;
    out.leak_criticals = s.leak_criticals;
    out.returned_after_leak = s.returned_after_leak;
    out.evicted_idle = s.evicted_idle;
    out.evicted_age = s.evicted_age;
    out.evicted_health = s.evicted_health;
    out.evicted_reclaimed = s.evicted_reclaimed;
    out.evicted_removed = s.evicted_removed;
    out.health_checks = s.health_checks;
    out.health_failures = s.health_failures;
    out.factory_creates = s.factory_creates;
    out.factory_errors = s.factory_errors;
    out.sweep_passes = s.sweep_passes;
    out.evicted_discarded = s.evicted_discarded;
    out.evicted_detached = s.evicted_detached;
    out.evicted_reset_failed = s.evicted_reset_failed;
    out.evicted_failover = s.evicted_failover;
    out.spin_acquires = s.spin_acquires;
    out.users_retired = s.users_retired;
    out.connects_in_flight = s.connects_in_flight;
    return out;
  }
};

/// The counters of a standalone LeakDetector (see heliosdb_leak_stats).
struct LeakStats {
  std::uint64_t leaks_detected = 0;
  std::size_t current_tracked = 0;
  std::uint64_t alerts = 0;
  std::uint64_t criticals = 0;
  std::uint64_t returned_after_leak = 0;

  /// From the C struct.
  static LeakStats from(const heliosdb_leak_stats &s) noexcept {
    LeakStats out;
    out.leaks_detected = s.leaks_detected;
    out.current_tracked = s.current_tracked;
    out.alerts = s.alerts;
    out.criticals = s.criticals;
    out.returned_after_leak = s.returned_after_leak;
    return out;
  }
};

namespace detail {

/// Collects reports from a C leak callback into a std::vector<LeakReport>; an
/// exception (std::bad_alloc) is kept and rethrown after the C call returns, never
/// thrown across C.
struct ReportCollector {
  std::vector<LeakReport> reports;
  std::exception_ptr error;

  static void collect(const heliosdb_leak_report *report, void *user_data) noexcept {
    auto *self = static_cast<ReportCollector *>(user_data);
    if (self->error) {
      return;
    }
    try {
      self->reports.emplace_back(LeakReportView(*report));
    } catch (...) {
      self->error = std::current_exception();
    }
  }

  std::vector<LeakReport> take() {
    if (error) {
      std::rethrow_exception(error);
    }
    return std::move(reports);
  }
};

}  // namespace detail

// ============================== configuration ==============================

/// Descriptive facts about a connection (see heliosdb_connection_metadata); copied by
/// add_connection.
struct Metadata {
  std::string database;
  std::string protocol;
  std::string remote_addr;
  std::vector<std::string> tags;
};

/// What Hooks<T>::connect_with_metadata returns: the new connection (nullptr: a failed
/// connect) and what leak reports and statistics say about it.
template <typename T>
struct Connected {
  std::unique_ptr<T> connection;
  Metadata metadata;
};

/// A connection the pool closed by itself (see heliosdb_evict_fn), as on_evict gets it:
/// `user` and `cause` ("idle", "age", "health") are valid during the call only.
struct Evicted {
  ConnectionId connection_id = 0;
  std::string_view user;
  std::string_view cause;
};

/// The untyped pool's callbacks (Pool<void>), as C++ callables taking the connection
/// as void*. Empty ones are not installed. A typed Pool<T> takes Hooks<T> instead.
struct Callbacks {
  /// Closes a connection; called exactly once per connection the pool owns.
  std::function<void(void *connection)> close;
  /// Health-checks an idle connection: true if usable (an exception counts as false).
  std::function<bool(void *connection)> health_check;
  /// Opens a connection for a user (the factory): the connection, or nullptr (or an
  /// exception, whose what() reaches the waiter's timeout error) on failure. The pool
  /// owns what it returns (closed through `close`).
  std::function<void *(const char *user)> connect;
  /// Receives leak reports (valid during the call).
  std::function<void(const LeakReportView &report)> on_leak;
  /// Told when a critically leaked borrow is reclaimed (auto_cleanup_enabled).
  std::function<void(const LeakReportView &report)> on_reclaim;
  /// Resets a released connection before its next borrower (see heliosdb_reset_fn):
  /// true to keep it, false (or an exception) to have it closed instead.
  std::function<bool(void *connection)> reset;
  /// Told of each connection the pool closed by itself (idle, age, health), after its
  /// close, so the service can add a fresh one; with it, idle and age eviction happen
  /// without `connect` too (see heliosdb_evict_fn). An exception is swallowed.
  std::function<void(const Evicted &evicted)> on_evict;

  /// Whether no callback is set.
  bool empty() const noexcept {
    return !close && !health_check && !connect && !on_leak && !on_reclaim && !reset &&
           !on_evict;
  }
};

/// A typed pool's hooks, as C++ callables that receive the connection as T&. Empty ones
/// are not installed. There is no close: the pool destroys each connection with T's
/// destructor (which may run on any thread, see the top of this file).
template <typename T>
struct Hooks {
  /// Health-checks an idle connection: true if usable (an exception counts as false).
  /// The connection is reserved for the check: no borrower has it meanwhile.
  std::function<bool(T &connection)> health_check;
  /// Opens a connection for `user` (valid during the call): the connection, or nullptr
  /// or an exception on failure. An exception's what() reaches the timeout error of a
  /// caller waiting for that user. The pool owns what it returns.
  std::function<std::unique_ptr<T>(std::string_view user)> connect;
  /// As `connect`, and describes the connection (database, protocol, remote_addr,
  /// tags: see heliosdb_connect_with_metadata_fn), which leak reports show. When set,
  /// used instead of `connect`. Runs on the pool's connector threads, up to
  /// config.settings.max_concurrent_connects at once: it must be thread-safe.
  std::function<Connected<T>(std::string_view user)> connect_with_metadata;
  /// Receives leak reports (valid during the call; copy into a LeakReport to keep).
  std::function<void(const LeakReportView &report)> on_leak;
  /// Told when a critically leaked borrow is reclaimed (auto_cleanup_enabled).
  std::function<void(const LeakReportView &report)> on_reclaim;
  /// Resets a connection when its Lease is released, on the releasing thread, before
  /// the next borrower can have it (roll back, clear session state): true keeps it;
  /// false, or an exception (caught), destroys it instead, counted as
  /// evicted_reset_failed. Not run by Lease::discard. See heliosdb_reset_fn for what
  /// it may call.
  std::function<bool(T &connection)> reset;
  /// Told of each connection the pool destroyed by itself (idle, age, health), after
  /// its destruction, so the service can add a fresh one; with it, idle and age
  /// eviction happen without `connect` too (see heliosdb_evict_fn). An exception is
  /// swallowed.
  std::function<void(const Evicted &evicted)> on_evict;
};

/// The untyped pool has no hooks: its callbacks live in Config::callbacks.
template <>
struct Hooks<void> {};

/// Settings (the C struct, initialized by a preset) plus the untyped pool's callbacks.
/// The C callback fields of `settings` (close, health_check, connect,
/// connect_with_metadata, on_leak, on_reclaim, reset, on_evict, user_data,
/// user_data_free) are replaced by the Pool constructor: use
/// `callbacks` (Pool<void>) or Hooks<T> (Pool<T>). `settings.name` is copied by the
/// constructor. Plain data: copy it freely, share it read-only.
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

// ============================== leases ==============================

template <typename T>
class Pool;

/// One borrowed connection of a Pool<T>; releases it when destroyed. Move-only.
///
/// Lease<T> gives the connection as T (operator->, operator*, get()); the untyped
/// Lease<void> (Lease<>) as void* (connection(), as<U>()). An empty lease (default
/// constructed, moved from, released, detached) holds nothing: connection_id() is 0
/// and get() nullptr.
///
/// Threading: used by one thread at a time; may be released or destroyed on another
/// thread than the one that acquired it.
template <typename T = void>
class Lease {
 public:
  /// An empty lease.
  Lease() noexcept = default;
  Lease(const Lease &) = delete;
  Lease &operator=(const Lease &) = delete;
  HELIOSDB_CPP_INLINE Lease(Lease &&other) noexcept
      : pool_(std::exchange(other.pool_, nullptr)), lease_(std::exchange(other.lease_, {})) {}
  Lease &operator=(Lease &&other) noexcept {
    if (this != &other) {
      reset();
      pool_ = std::exchange(other.pool_, nullptr);
      lease_ = std::exchange(other.lease_, {});
    }
    return *this;
  }
  /// Releases the connection; errors are ignored (use release() to see them).
  HELIOSDB_CPP_INLINE ~Lease() { reset(); }

  /// Whether the lease holds a connection.
  explicit operator bool() const noexcept { return pool_ != nullptr; }

  /// The connection (nullptr when empty).
  T *get() const noexcept { return static_cast<T *>(lease_.connection); }

  /// The connection (the lease must not be empty).
  template <typename U = T, typename = std::enable_if_t<!std::is_void_v<U>>>
  U &operator*() const noexcept {
    return *get();
  }
  /// The connection's members (the lease must not be empty).
  template <typename U = T, typename = std::enable_if_t<!std::is_void_v<U>>>
  U *operator->() const noexcept {
    return get();
  }

  /// Untyped leases: the connection, as given to Pool<void>::add_connection.
  template <typename U = T, typename = std::enable_if_t<std::is_void_v<U>>>
  void *connection() const noexcept {
    return lease_.connection;
  }
  /// Untyped leases: the connection cast to `U` (unchecked: prefer Pool<U>).
  template <typename U, typename V = T, typename = std::enable_if_t<std::is_void_v<V>>>
  U *as() const noexcept {
    return static_cast<U *>(lease_.connection);
  }

  /// The connection's id (0 when empty).
  ConnectionId connection_id() const noexcept { return lease_.connection_id; }
  /// The C lease (for calls the wrapper does not cover); all zero when empty.
  const heliosdb_lease &raw() const noexcept { return lease_; }

  /// Releases now; throws Error if the library refuses (errc::reclaimed: the borrow
  /// was reclaimed as a critical leak, and the connection is destroyed now). The lease
  /// is empty afterwards either way; releasing an empty lease does nothing.
  void release() {
    if (pool_ != nullptr) {
      heliosdb_pool *pool = std::exchange(pool_, nullptr);
      const heliosdb_status status = heliosdb_pool_release(pool, &lease_);
      lease_ = heliosdb_lease{};
      detail::check(status);
    }
  }

  /// Ends the borrow by destroying (closing) the connection instead of returning it:
  /// for a connection known to be broken. Counted as evicted_discarded; a caller
  /// waiting for that user is served by the connect hook, if any; the reset hook does
  /// not run. Throws Error if the library refuses (errc::reclaimed: the borrow was
  /// reclaimed as a critical leak; the connection is destroyed now all the same). The
  /// lease is empty afterwards either way; discarding an empty lease does nothing.
  void discard() {
    if (pool_ != nullptr) {
      heliosdb_pool *pool = std::exchange(pool_, nullptr);
      const heliosdb_status status = heliosdb_pool_discard(pool, &lease_);
      lease_ = heliosdb_lease{};
      detail::check(status);
    }
  }

  /// Declares that this borrow is expected to be held for `d` (a long-running
  /// operation): its leak alert, critical and reclaim points move `d` later, so it is
  /// neither reported nor reclaimed within its declared time (heliosdb_pool_expect_hold).
  /// A later call replaces the declaration. Throws Error (errc::reclaimed: reclaimed
  /// already; errc::stale_handle: the lease is empty or ended).
  void expect_hold(Duration d) {
    if (pool_ == nullptr) {
      detail::throw_error(errc::stale_handle, "expect_hold on an empty lease");
    }
    detail::check(heliosdb_pool_expect_hold(pool_, &lease_, d.milliseconds()));
  }

  /// Gives up ownership: the caller must pass the returned lease (whole) to
  /// heliosdb_pool_release itself. The Lease is empty afterwards.
  heliosdb_lease detach() noexcept {
    pool_ = nullptr;
    return std::exchange(lease_, {});
  }

 private:
  // Pool<T> fills lease_ in place (the library writes the C lease straight into it)
  // and then sets pool_.
  friend class Pool<T>;

  HELIOSDB_CPP_INLINE void reset() noexcept {
    if (pool_ != nullptr) {
      (void)heliosdb_pool_release(pool_, &lease_);
      pool_ = nullptr;
    }
  }

  heliosdb_pool *pool_ = nullptr;
  heliosdb_lease lease_{};
};

// ============================== the pool ==============================

/// An owning, move-only pool of connections of type T.
///
/// Pool<T> (T an object type): connections are handed over as std::unique_ptr<T> (or
/// constructed in place) and destroyed with T's destructor exactly once, on every
/// path: removed, evicted, reclaimed, the pool closed or destroyed, or an add that
/// fails (a failed add destroys the connection before it throws, moved-from pool
/// included). Hooks receive T&.
///
/// Pool<void> (Pool<>, what `heliosdb::Pool pool(config)` deduces): connections are
/// void*, closed through config.callbacks.close, which also closes a connection whose
/// add fails (a moved-from pool included).
///
/// Threading: every member may be called from many threads at once, except moving,
/// assigning and destroying the Pool.
template <typename T = void>
class Pool {
  static_assert(std::is_void_v<T> || (std::is_object_v<T> && !std::is_array_v<T>),
                "Pool<T>: T is an object type (the connection), or void for the untyped pool");

 public:
  /// The connection type.
  using connection_type = T;
  /// What add_connection takes: std::unique_ptr<T>, or void* for Pool<void>.
  using owner_type = std::conditional_t<std::is_void_v<T>, void *, std::unique_ptr<T>>;

  /// Builds a pool. Throws Error (errc::invalid_config, naming the field), or
  /// errc::invalid_argument when a typed pool is given config.callbacks (its hooks
  /// belong in `hooks`). The pool owns the hooks/callbacks from now on.
  explicit Pool(const Config &config = Config::defaults(), Hooks<T> hooks = {}) {
    heliosdb_pool_config settings = config.settings;
    settings.close = nullptr;
    settings.health_check = nullptr;
    settings.connect = nullptr;
    settings.connect_with_metadata = nullptr;
    settings.on_leak = nullptr;
    settings.on_reclaim = nullptr;
    settings.reset = nullptr;
    settings.on_evict = nullptr;
    if constexpr (std::is_void_v<T>) {
      (void)hooks;
      box_ = std::make_shared<UntypedBox>(UntypedBox{config.callbacks});
      auto holder = std::make_unique<std::shared_ptr<UntypedBox>>(box_);
      install_untyped(settings, holder.get());
      create(settings);
      (void)holder.release();  // the pool owns it now (deleted by user_data_free)
    } else {
      if (!config.callbacks.empty()) {
        detail::throw_error(errc::invalid_argument,
                            "Pool<T> takes its callbacks as Hooks<T>: config.callbacks is for "
                            "the untyped Pool<void>");
      }
      auto box = std::make_unique<Hooks<T>>(std::move(hooks));
      install_typed(settings, box.get());
      create(settings);
      (void)box.release();  // the pool owns it now (deleted by user_data_free)
    }
  }

  Pool(const Pool &) = delete;
  Pool &operator=(const Pool &) = delete;
  /// Moves the pool; `other` is left empty (get() == nullptr): its calls throw
  /// errc::null_argument, and add_connection still closes what it is given.
  Pool(Pool &&other) noexcept : pool_(std::exchange(other.pool_, nullptr)), box_(other.box_) {}
  Pool &operator=(Pool &&other) noexcept {
    if (this != &other) {
      heliosdb_pool_free(pool_);
      pool_ = std::exchange(other.pool_, nullptr);
      box_ = other.box_;  // copied: the moved-from pool can still close what it is given
    }
    return *this;
  }
  /// Frees the pool (see heliosdb_pool_free): idle connections are destroyed now;
  /// leases still out stay valid and destroy theirs when released.
  ~Pool() { heliosdb_pool_free(pool_); }

  // ---- adding connections ----

  /// Adds a connection owned by `user`; returns its id. The pool owns the connection
  /// from now on, even if this throws: a failed add (errc::pool_full,
  /// errc::user_at_capacity, errc::closed, a moved-from pool, a bad user name,
  /// std::bad_alloc) has destroyed (typed) or closed (untyped) it before throwing. A
  /// null connection throws errc::null_argument.
  ConnectionId add_connection(owner_type connection, UserRef user) {
    return add(std::move(connection), user, nullptr);
  }

  /// Adds a connection with metadata (copied); as add_connection above.
  ConnectionId add_connection(owner_type connection, UserRef user, const Metadata &metadata) {
    return add(std::move(connection), user, &metadata);
  }

  /// Constructs a T in place from `args` and adds it for `user` (typed pools only).
  /// Throws what T's constructor throws, or as add_connection.
  template <typename... Args>
  ConnectionId emplace_connection(UserRef user, Args &&...args) {
    static_assert(!std::is_void_v<T>, "emplace_connection needs a typed Pool<T>");
    return add(std::make_unique<T>(std::forward<Args>(args)...), user, nullptr);
  }

  // ---- borrowing ----

  /// Borrows a connection of `user`, waiting up to `timeout` (any duration, rounded up
  /// to ms); records the caller's location for leak reports. Throws Error:
  /// errc::timeout (with the connect hook's last failure, if any, in what()),
  /// errc::unknown_user, errc::closed, ... Allocates nothing (see UserRef).
  HELIOSDB_CPP_INLINE Lease<T> acquire(UserRef user, Duration timeout,
                   SourceLocation where = SourceLocation::current()) {
    // The library writes straight into the returned object (NRVO): no copy of the C
    // lease on the hot path. It writes nothing on failure, so `lease` stays empty.
    Lease<T> lease;
    detail::check(acquire_raw(user, timeout.milliseconds(), &lease.lease_, where));
    lease.pool_ = pool_;
    return lease;
  }

  /// Borrows a connection of `user`, waiting up to the pool's acquire_timeout_ms.
  HELIOSDB_CPP_INLINE Lease<T> acquire(UserRef user, SourceLocation where = SourceLocation::current()) {
    Lease<T> lease;
    detail::check(acquire_raw(user, HELIOSDB_TIMEOUT_DEFAULT, &lease.lease_, where));
    lease.pool_ = pool_;
    return lease;
  }

  /// Borrows a connection of `user`, waiting up to `timeout`; std::nullopt if it timed
  /// out (no exception: as cheap as a try_acquire miss). Other failures throw Error.
  HELIOSDB_CPP_INLINE std::optional<Lease<T>> try_acquire_for(UserRef user, Duration timeout,
                                          SourceLocation where = SourceLocation::current()) {
    std::optional<Lease<T>> out(std::in_place);  // written in place, returned by NRVO
    const heliosdb_status status =
        acquire_raw(user, timeout.milliseconds(), &out->lease_, where);
    if (status == HELIOSDB_OK) {
      out->pool_ = pool_;
      return out;
    }
    if (status != HELIOSDB_ERR_TIMEOUT && status != HELIOSDB_ERR_NO_IDLE_CONNECTION) {
      detail::throw_status(status);
    }
    out.reset();
    return out;
  }

  /// Borrows an idle connection of `user` if one is free now (never waits, never jumps
  /// ahead of waiters); std::nullopt if none is. Other failures throw Error.
  HELIOSDB_CPP_INLINE std::optional<Lease<T>> try_acquire(UserRef user,
                                      SourceLocation where = SourceLocation::current()) {
    std::optional<Lease<T>> out(std::in_place);  // as in try_acquire_for
    const heliosdb_status status = user.with_c_str([&](const char *name) {
      return heliosdb_pool_try_acquire_at(pool_, name, &out->lease_, where.file_name(),
                                          static_cast<int>(where.line()),
                                          where.function_name());
    });
    if (status == HELIOSDB_OK) {
      out->pool_ = pool_;
      return out;
    }
    if (status != HELIOSDB_ERR_NO_IDLE_CONNECTION) {
      detail::throw_status(status);
    }
    out.reset();
    return out;
  }

  // ---- management ----

  /// Removes a connection; returns true if it is borrowed and is destroyed (closed) on
  /// return, false if it was idle and is destroyed now. Throws errc::unknown_connection.
  bool remove_connection(ConnectionId connection_id) {
    bool deferred = false;
    detail::check(heliosdb_pool_remove_connection(pool_, connection_id, &deferred));
    return deferred;
  }

  /// Failover (see heliosdb_pool_evict_all): idle connections are destroyed now,
  /// leased ones when their Lease is released; counted as evicted_failover. Returns how
  /// many were evicted. Callable from hooks (but a connection's destructor).
  std::size_t evict_all() {
    std::size_t evicted = 0;
    detail::check(heliosdb_pool_evict_all(pool_, &evicted));
    return evicted;
  }

  /// evict_all for one user's connections. Throws errc::unknown_user.
  std::size_t evict_user(UserRef user) {
    std::size_t evicted = 0;
    detail::check(user.with_c_str(
        [&](const char *name) { return heliosdb_pool_evict_user(pool_, name, &evicted); }));
    return evicted;
  }

  /// Closes the pool (see heliosdb_pool_close): acquires fail with errc::closed, idle
  /// connections are destroyed now, borrowed ones when released. Idempotent.
  void close() { detail::check(heliosdb_pool_close(pool_)); }

  /// Whether the pool is closed.
  bool is_closed() const {
    bool closed = false;
    detail::check(heliosdb_pool_is_closed(pool_, &closed));
    return closed;
  }

  /// A snapshot of the pool's counts. Allocates inside the library (O(connections)).
  PoolStats stats() const {
    heliosdb_pool_stats raw{};
    raw.struct_size = sizeof raw;
    detail::check(heliosdb_pool_get_stats(pool_, &raw));
    return PoolStats::from(raw);
  }

  /// The statistics in the Prometheus text format.
  std::string prometheus() const {
    std::string text(4096, '\0');
    for (;;) {
      std::size_t needed = 0;
      const heliosdb_status status =
          heliosdb_pool_prometheus(pool_, &text[0], text.size(), &needed);
      if (status == HELIOSDB_ERR_BUFFER_TOO_SMALL) {
        text.resize(needed + 1024);  // slack: the text may grow before the next try
        continue;
      }
      detail::check(status);
      text.resize(needed - 1);  // drop the NUL
      return text;
    }
  }

  /// The borrows held past the leak threshold now (owning copies; nothing is counted
  /// or reported).
  std::vector<LeakReport> leaks() const {
    detail::ReportCollector collector;
    detail::check(
        heliosdb_pool_for_each_leak(pool_, detail::ReportCollector::collect, &collector, nullptr));
    return collector.take();
  }

  /// Runs one sweeper pass on this thread (tests and tools); its hooks run here. Must
  /// not be called from a hook.
  void sweep_now() { detail::check(heliosdb_pool_sweep_now(pool_)); }

  /// The C pool (for calls the wrapper does not cover); still owned by this object.
  heliosdb_pool *get() const noexcept { return pool_; }

 private:
  struct UntypedBox {
    Callbacks callbacks;
  };

  static UntypedBox *untyped(void *user_data) noexcept {
    return static_cast<std::shared_ptr<UntypedBox> *>(user_data)->get();
  }
  static Hooks<T> *typed(void *user_data) noexcept { return static_cast<Hooks<T> *>(user_data); }

  /// Hands `message` to the pool as the reason a connect failed (never throws).
  static void connect_failed(const char *message) noexcept { heliosdb_callback_set_error(message); }

  static void deliver(const std::function<void(const LeakReportView &)> &f,
                      const heliosdb_leak_report *report) noexcept {
    try {
      f(LeakReportView(*report));
    } catch (...) {
      // Never let an exception cross into the C library.
    }
  }

  static void tell_evicted(const std::function<void(const Evicted &)> &f, ConnectionId id,
                           const char *user, const char *cause) noexcept {
    try {
      f(Evicted{id, user, cause});
    } catch (...) {
      // Never let an exception cross into the C library.
    }
  }

  /// Runs a connect hook (typed: a std::unique_ptr<T>) or callback (untyped: a void*):
  /// its connection to `*out` (the pool owns it then), or its failure (no connection,
  /// an exception) as the callback's reason.
  template <typename Connect>
  static std::int32_t run_connect(Connect &&connect, void **out) noexcept {
    try {
      auto connection = connect();
      if (!connection) {
        connect_failed("the connect hook returned no connection");
        return HELIOSDB_ERR_CALLBACK_FAILED;
      }
      if constexpr (std::is_pointer_v<decltype(connection)>) {
        *out = connection;
      } else {
        *out = connection.release();  // the pool owns it now
      }
      return HELIOSDB_OK;
    } catch (const std::exception &e) {
      connect_failed(e.what());
    } catch (...) {
      connect_failed("the connect hook threw an exception not derived from std::exception");
    }
    return HELIOSDB_ERR_CALLBACK_FAILED;
  }

  /// Points `raw` (its struct_size already set) at `md`'s strings; `tags` holds the
  /// tag pointers. Both must outlive the library's use of `raw`.
  static void to_c(const Metadata &md, std::vector<const char *> &tags,
                   heliosdb_connection_metadata &raw) {
    tags.clear();
    tags.reserve(md.tags.size());
    for (const std::string &tag : md.tags) {
      tags.push_back(tag.c_str());
    }
    raw.database = md.database.empty() ? nullptr : md.database.c_str();
    raw.protocol = md.protocol.c_str();
    raw.remote_addr = md.remote_addr.empty() ? nullptr : md.remote_addr.c_str();
    raw.tags = tags.data();
    raw.tag_count = tags.size();
  }

  void create(heliosdb_pool_config &settings) {
    // On failure the library does not take user_data: the caller's unique_ptr frees it.
    detail::check(heliosdb_pool_new(&settings, &pool_));
  }

  // The C trampolines: captureless lambdas converted to C function pointers; each
  // catches everything, since no exception may unwind through the C library.

  static void install_untyped(heliosdb_pool_config &s, std::shared_ptr<UntypedBox> *holder) {
    const Callbacks &cb = (*holder)->callbacks;
    s.user_data = holder;
    s.user_data_free = [](void *user_data) {
      delete static_cast<std::shared_ptr<UntypedBox> *>(user_data);
    };
    if (cb.close) {
      s.close = [](void *connection, void *user_data) {
        try {
          untyped(user_data)->callbacks.close(connection);
        } catch (...) {
        }
      };
    }
    if (cb.health_check) {
      s.health_check = [](void *connection, void *user_data) -> bool {
        try {
          return untyped(user_data)->callbacks.health_check(connection);
        } catch (...) {
          return false;
        }
      };
    }
    if (cb.connect) {
      s.connect = [](const char *user, void **out, void *user_data) -> std::int32_t {
        return run_connect([&] { return untyped(user_data)->callbacks.connect(user); }, out);
      };
    }
    if (cb.on_leak) {
      s.on_leak = [](const heliosdb_leak_report *report, void *user_data) {
        deliver(untyped(user_data)->callbacks.on_leak, report);
      };
    }
    if (cb.on_reclaim) {
      s.on_reclaim = [](const heliosdb_leak_report *report, void *user_data) {
        deliver(untyped(user_data)->callbacks.on_reclaim, report);
      };
    }
    if (cb.reset) {
      s.reset = [](void *connection, void *user_data) -> bool {
        try {
          return untyped(user_data)->callbacks.reset(connection);
        } catch (...) {
          return false;  // a reset that threw left the connection in an unknown state
        }
      };
    }
    if (cb.on_evict) {
      s.on_evict = [](ConnectionId id, const char *user, const char *cause, void *user_data) {
        tell_evicted(untyped(user_data)->callbacks.on_evict, id, user, cause);
      };
    }
  }

  static void install_typed(heliosdb_pool_config &s, Hooks<T> *hooks) {
    s.user_data = hooks;
    s.user_data_free = [](void *user_data) { delete typed(user_data); };
    // Always installed: the pool destroys every T it owns.
    s.close = [](void *connection, void *) {
      try {
        delete static_cast<T *>(connection);
      } catch (...) {
        // A throwing destructor (noexcept(false)) must not unwind into C.
      }
    };
    if (hooks->health_check) {
      s.health_check = [](void *connection, void *user_data) -> bool {
        try {
          return typed(user_data)->health_check(*static_cast<T *>(connection));
        } catch (...) {
          return false;
        }
      };
    }
    if (hooks->connect_with_metadata) {
      s.connect_with_metadata = [](const char *user, void **out, heliosdb_connection_metadata *md,
                                   void *user_data) -> std::int32_t {
        return run_connect([&] {
          Connected<T> made = typed(user_data)->connect_with_metadata(std::string_view(user));
          if (made.connection) {
            // The library copies these right after this returns, on this thread, before
            // its next connect here: a thread-local copy outlives the call long enough.
            thread_local Metadata kept;
            thread_local std::vector<const char *> tags;
            kept = std::move(made.metadata);
            to_c(kept, tags, *md);
          }
          return std::move(made.connection);
        }, out);
      };
    } else if (hooks->connect) {
      s.connect = [](const char *user, void **out, void *user_data) -> std::int32_t {
        return run_connect([&] { return typed(user_data)->connect(std::string_view(user)); }, out);
      };
    }
    if (hooks->on_leak) {
      s.on_leak = [](const heliosdb_leak_report *report, void *user_data) {
        deliver(typed(user_data)->on_leak, report);
      };
    }
    if (hooks->on_reclaim) {
      s.on_reclaim = [](const heliosdb_leak_report *report, void *user_data) {
        deliver(typed(user_data)->on_reclaim, report);
      };
    }
    if (hooks->reset) {
      s.reset = [](void *connection, void *user_data) -> bool {
        try {
          return typed(user_data)->reset(*static_cast<T *>(connection));
        } catch (...) {
          return false;  // a reset that threw left the connection in an unknown state
        }
      };
    }
    if (hooks->on_evict) {
      s.on_evict = [](ConnectionId id, const char *user, const char *cause, void *user_data) {
        tell_evicted(typed(user_data)->on_evict, id, user, cause);
      };
    }
  }

  HELIOSDB_CPP_INLINE heliosdb_status acquire_raw(const UserRef &user, std::uint64_t ms, heliosdb_lease *out,
                              const SourceLocation &where) {
    return user.with_c_str([&](const char *name) {
      return heliosdb_pool_acquire_at(pool_, name, ms, out, where.file_name(),
                                      static_cast<int>(where.line()), where.function_name());
    });
  }

  /// Closes an untyped connection the library never took (best effort, never throws).
  void close_untaken(void *connection) noexcept {
    if (connection != nullptr && box_ && box_->callbacks.close) {
      try {
        box_->callbacks.close(connection);
      } catch (...) {
      }
    }
  }

  ConnectionId add(owner_type connection, const UserRef &user, const Metadata *metadata) {
    if constexpr (std::is_void_v<T>) {
      bool taken = false;
      try {
        return add_raw(user, metadata, [&] {
          taken = true;
          return connection;
        });
      } catch (...) {
        if (!taken) {
          close_untaken(connection);
        }
        throw;
      }
    } else {
      // Until release() below, `connection` owns the T: any throw destroys it.
      if (!connection) {
        detail::throw_error(errc::null_argument, "add_connection: the connection is null");
      }
      return add_raw(user, metadata, [&] { return static_cast<void *>(connection.release()); });
    }
  }

  /// Prepares everything that can fail, then hands `take()` to the library, which owns
  /// it from then on (and closes it itself if the add fails).
  template <typename Take>
  ConnectionId add_raw(const UserRef &user, const Metadata *md, Take &&take) {
    if (pool_ == nullptr) {
      detail::throw_error(errc::null_argument,
                          "add_connection on a moved-from Pool: the connection was closed");
    }
    std::vector<const char *> tags;
    heliosdb_connection_metadata raw{};
    if (md != nullptr) {
      raw.struct_size = sizeof raw;
      to_c(*md, tags, raw);
    }
    return user.with_c_str([&](const char *name) {
      ConnectionId id = 0;
      detail::check(heliosdb_pool_add_connection(pool_, take(), name,
                                                 md != nullptr ? &raw : nullptr, &id));
      return id;
    });
  }

  heliosdb_pool *pool_ = nullptr;
  /// Untyped pools: the callbacks, shared with the library's user_data, so that a
  /// moved-from pool can still close a connection handed to it.
  std::shared_ptr<UntypedBox> box_;
};

// ============================== standalone detector and monitor ==============================

/// An owning, move-only handle on a standalone heliosdb_leak_detector. Every member may
/// be called from many threads at once, except moving and destroying it.
class LeakDetector {
 public:
  /// Thresholds and limit; zeros are the library defaults (30 s, 300 s, 100 000).
  /// Throws Error (errc::invalid_config).
  explicit LeakDetector(Duration alert = std::chrono::milliseconds(0),
                        Duration critical = std::chrono::milliseconds(0),
                        std::size_t max_tracked = 0) {
    detail::check(heliosdb_leak_detector_new(alert.milliseconds(), critical.milliseconds(),
                                             max_tracked, &d_));
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

  /// Tracks `id`, taken by `user` (strings copied); throws Error
  /// (errc::duplicate_resource, errc::tracking_limit).
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

  /// Stops tracking `id`; returns how long it was held. Throws errc::unknown_resource.
  std::chrono::milliseconds release(const std::string &id) {
    std::uint64_t held = 0;
    detail::check(heliosdb_leak_detector_release(d_, id.c_str(), &held));
    return std::chrono::milliseconds(static_cast<std::chrono::milliseconds::rep>(held));
  }

  /// The resources held past the alert threshold (first reports are counted and logged).
  std::vector<LeakReport> check() {
    detail::ReportCollector collector;
    detail::check(
        heliosdb_leak_detector_check(d_, detail::ReportCollector::collect, &collector, nullptr));
    return collector.take();
  }

  /// Whether `id` is held past the alert threshold.
  bool is_leaked(const std::string &id) const {
    bool leaked = false;
    detail::check(heliosdb_leak_detector_is_leaked(d_, id.c_str(), &leaked));
    return leaked;
  }

  /// The counters.
  LeakStats stats() const {
    heliosdb_leak_stats raw{};
    raw.struct_size = sizeof raw;
    detail::check(heliosdb_leak_detector_stats(d_, &raw));
    return LeakStats::from(raw);
  }

  /// The C detector; still owned by this object.
  heliosdb_leak_detector *get() const noexcept { return d_; }

 private:
  heliosdb_leak_detector *d_ = nullptr;
};

/// An owning, move-only handle on a standalone heliosdb_health_monitor. Every member may
/// be called from many threads at once, except moving and destroying it.
class HealthMonitor {
 public:
  /// `detector` may be null (a private one); the monitor keeps the C detector alive,
  /// so the LeakDetector object may be destroyed first. Zeros are the defaults
  /// (30 s, 1 s, 3).
  explicit HealthMonitor(const LeakDetector *detector = nullptr,
                         Duration interval = std::chrono::milliseconds(0),
                         Duration slow = std::chrono::milliseconds(0),
                         std::uint32_t unhealthy_after_failures = 0) {
    detail::check(heliosdb_health_monitor_new(detector != nullptr ? detector->get() : nullptr,
                                              interval.milliseconds(), slow.milliseconds(),
                                              unhealthy_after_failures, &m_));
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
  /// concurrently; the monitor owns it and destroys it when it no longer needs it (it is
  /// destroyed here if this throws).
  void monitor(const std::string &id, std::function<bool()> check) {
    auto fn = std::make_unique<std::function<bool()>>(std::move(check));
    detail::check(heliosdb_health_monitor_monitor(
        m_, id.c_str(), nullptr,
        [](void *, void *user_data) -> bool {
          try {
            return (*static_cast<std::function<bool()> *>(user_data))();
          } catch (...) {
            return false;
          }
        },
        fn.get(), [](void *user_data) { delete static_cast<std::function<bool()> *>(user_data); }));
    (void)fn.release();  // taken on success only
  }

  /// Stops monitoring `id`; whether it was monitored.
  bool unmonitor(const std::string &id) {
    bool was = false;
    detail::check(heliosdb_health_monitor_unmonitor(m_, id.c_str(), &was));
    return was;
  }

  /// Checks `id` now, on this thread. Throws errc::unknown_resource.
  Health check(const std::string &id) {
    std::int32_t health = 0;
    detail::check(heliosdb_health_monitor_check(m_, id.c_str(), &health, nullptr));
    return static_cast<Health>(health);
  }

  /// The health from the checks so far (runs none).
  Health status(const std::string &id) const {
    std::int32_t health = 0;
    detail::check(heliosdb_health_monitor_status(m_, id.c_str(), &health, nullptr));
    return static_cast<Health>(health);
  }

  /// Starts / stops the background thread.
  void start() { detail::check(heliosdb_health_monitor_start(m_)); }
  void stop() { detail::check(heliosdb_health_monitor_stop(m_)); }

  /// The C monitor; still owned by this object.
  heliosdb_health_monitor *get() const noexcept { return m_; }

 private:
  heliosdb_health_monitor *m_ = nullptr;
};

}  // namespace heliosdb

#endif  // HELIOSDB_POOL_HPP

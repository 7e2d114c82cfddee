// Compile-time checks of the C++ wrapper: every MISUSE_* case below must fail to
// compile. tests/ffi.rs builds this file with -fsyntax-only once with no case defined
// (the well-formed calls must compile) and once per case (each must fail).
#include <chrono>
#include <memory>
#include <string>

#include "heliosdb_pool.hpp"

struct Db {
  int x = 0;
};

void calls(heliosdb::Pool<Db> &pool, heliosdb::Pool<> &untyped) {
  using namespace std::chrono_literals;
  // The well-formed forms of the calls below.
  heliosdb::Lease<Db> a = pool.acquire("alice", 0ms);
  heliosdb::Lease<Db> b = pool.acquire(std::string("alice"), 1.5s);
  heliosdb::Lease<Db> c = pool.acquire("alice", HELIOSDB_HERE);
  std::optional<heliosdb::Lease<Db>> d = pool.try_acquire_for("alice", 250us);
  pool.add_connection(std::make_unique<Db>(), "alice");
  pool.emplace_connection("alice");
  a->x = (*b).x + c.get()->x + (d ? (*d)->x : 0);
  heliosdb::Lease<> u = untyped.acquire("alice", 1s);
  untyped.add_connection(static_cast<void *>(nullptr), "alice");
  (void)u.as<Db>();

#if defined(MISUSE_LITERAL_ZERO_TIMEOUT)
  pool.acquire("alice", 0);  // the old footgun: 0 bound to the call site's `file`
#elif defined(MISUSE_INTEGER_TIMEOUT)
  pool.acquire("alice", 100);  // milliseconds? seconds? a duration says which
#elif defined(MISUSE_LITERAL_ZERO_LOCATION)
  pool.acquire("alice", 1s, 0);
#elif defined(MISUSE_ZERO_USER)
  pool.acquire(0, 1s);
#elif defined(MISUSE_NULLPTR_USER)
  pool.try_acquire(nullptr);
#elif defined(MISUSE_RAW_POINTER_TO_TYPED_POOL)
  pool.add_connection(new Db, "alice");  // ownership is handed over as std::unique_ptr
#elif defined(MISUSE_VOID_POINTER_TO_TYPED_POOL)
  pool.add_connection(static_cast<void *>(nullptr), "alice");
#elif defined(MISUSE_COPY_LEASE)
  heliosdb::Lease<Db> copy = a;
#elif defined(MISUSE_WRONG_LEASE_TYPE)
  heliosdb::Lease<int> wrong = pool.acquire("alice", 1s);
#elif defined(MISUSE_UNCHECKED_CAST_ON_TYPED_LEASE)
  (void)a.as<int>();
#elif defined(MISUSE_ARROW_ON_UNTYPED_LEASE)
  (void)u.operator->();
#elif defined(MISUSE_EMPLACE_ON_UNTYPED_POOL)
  untyped.emplace_connection("alice");
#elif defined(MISUSE_COPY_POOL)
  heliosdb::Pool<Db> copy = pool;
#endif
}

int main() { return 0; }

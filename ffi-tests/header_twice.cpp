// The C header and the C++ wrapper compile on their own and twice, as C++17.
#include "heliosdb_pool.hpp"
#include "heliosdb_pool.hpp"
#include "heliosdb_pool.h"
#include "heliosdb_pool.h"

static_assert(HELIOSDB_OK == 0, "HELIOSDB_OK is zero");

int main() {
  heliosdb_status status = HELIOSDB_OK;
  return static_cast<int>(status);
}

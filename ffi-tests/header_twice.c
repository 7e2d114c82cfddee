/* The header compiles on its own (it is the first include) and twice. */
#include "heliosdb_pool.h"
#include "heliosdb_pool.h"

#ifndef HELIOSDB_POOL_H
#error "include guard missing"
#endif

int main(void) {
  heliosdb_lease lease = {0, 0, 0, 0};
  heliosdb_status status = HELIOSDB_OK;
  (void)lease;
  return (int)status;
}

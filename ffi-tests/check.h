/* Small assertion helpers shared by the C and C++ tests. */
#ifndef HELIOSDB_FFI_TESTS_CHECK_H
#define HELIOSDB_FFI_TESTS_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#include "heliosdb_pool.h"

#define CHECK(cond)                                                              \
  do {                                                                           \
    if (!(cond)) {                                                               \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);   \
      exit(1);                                                                   \
    }                                                                            \
  } while (0)

#define CHECK_STATUS(expr, expected)                                             \
  do {                                                                           \
    int check_status_ = (int)(expr);                                             \
    if (check_status_ != (int)(expected)) {                                      \
      fprintf(stderr, "%s:%d: %s returned %d (%s: %s), expected %s\n", __FILE__, \
              __LINE__, #expr, check_status_,                                    \
              heliosdb_status_str(check_status_),                                \
              heliosdb_last_error_message(), #expected);                         \
      exit(1);                                                                   \
    }                                                                            \
  } while (0)

#define CHECK_OK(expr) CHECK_STATUS(expr, HELIOSDB_OK)

#endif /* HELIOSDB_FFI_TESTS_CHECK_H */

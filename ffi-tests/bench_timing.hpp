// Timing helpers shared by the C++ benchmark programs (bench_cpp.cpp, bench_soci.cpp):
// one run of N cycles of a body in ns per cycle, medians over repeated runs, and a
// fatal error that prints the library's last error message.
#ifndef HELIOSDB_BENCH_TIMING_HPP
#define HELIOSDB_BENCH_TIMING_HPP

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "heliosdb_pool.h"

namespace bench {

using Clock = std::chrono::steady_clock;

/// Prints `what` and the library's last error message on this thread, and exits 1.
[[noreturn]] inline void die(const char *program, const char *what) {
  std::fprintf(stderr, "%s: %s (%s)\n", program, what, heliosdb_last_error_message());
  std::exit(1);
}

/// One run of `n` cycles of `body`; ns per cycle.
template <typename F>
double time_run(long n, F &&body) {
  const Clock::time_point t0 = Clock::now();
  for (long i = 0; i < n; i++) {
    body();
  }
  return std::chrono::duration<double, std::nano>(Clock::now() - t0).count() /
         static_cast<double>(n);
}

/// The median of the samples (the upper one of an even count); 0 for none.
inline double median(std::vector<double> v) {
  if (v.empty()) {
    return 0.0;
  }
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

/// A named series of samples (ns per cycle, or operations per second).
struct Variant {
  const char *name;
  std::vector<double> samples;
};

}  // namespace bench

#endif

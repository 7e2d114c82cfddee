#!/usr/bin/env sh
# SOCI 4's soci::connection_pool against this pool's C calls and C++ wrapper, in one
# binary (ffi-tests/bench_soci.cpp): single thread and 2-8 threads, medians and ratios.
# Installs Debian's libsoci-dev (SOCI 4 with its SQLite3 backend) and libboost-dev
# (SOCI's Debian headers include Boost) when they are missing.
#
#   scripts/bench-soci.sh [N [RUNS [MS [MAX_THREADS]]]]   (defaults: 1000000 11 200 8)
#   scripts/bench-soci.sh --instructions [N]              (callgrind: instructions per
#                                                          cycle, single thread only)
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
if [ ! -f /usr/include/soci/sqlite3/soci-sqlite3.h ] || [ ! -f /usr/include/boost/version.hpp ]; then
  echo "bench-soci: installing libsoci-dev libboost-dev" >&2
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libsoci-dev libboost-dev >/dev/null
fi
cargo build --release --lib --quiet
target=${CARGO_TARGET_DIR:-$root/target}
out="$target/tmp/bench-soci"
mkdir -p "$out"
${CXX:-g++} -std=c++17 -O2 -Wall -Wextra -Wpedantic -Werror -I include -I ffi-tests \
  ffi-tests/bench_soci.cpp "$target/release/libheliosdb_pool.a" \
  -lsoci_sqlite3 -lsoci_core -lpthread -ldl -lm -o "$out/bench_soci"
if [ "${1:-}" = "--instructions" ]; then
  n=${2:-20000}
  valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.out" \
    "$out/bench_soci" "$n" 1 1 0 >/dev/null 2>&1
  # Each variant runs n/10+1 warm-up cycles and n timed ones.
  cycles=$((n + n / 10 + 1))
  callgrind_annotate --inclusive=yes "$out/callgrind.out" 2>/dev/null |
    grep -E '_cycle\(' | grep -v '=>' |
    sed -E 's/^ *([0-9,]+).*::([a-z_]+_cycle)\(.*/\1 \2/' |
    awk -v c="$cycles" '{gsub(",", "", $1); printf "  %-14s %8.1f instructions/cycle\n", $2, $1 / c}'
  exit 0
fi
"$out/bench_soci" "$@"

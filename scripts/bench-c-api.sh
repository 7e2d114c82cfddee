#!/usr/bin/env sh
# Builds ffi-tests/bench_c_api.c against the release staticlib and runs it: the C
# API's acquire+release cost from C, in ns per cycle (median of several runs).
#
#   scripts/bench-c-api.sh [N [RUNS]]       (defaults: 1000000 cycles, 7 runs)
#
# Compare with `cargo bench --bench ffi_overhead`, which times the same calls from
# Rust next to the Rust API in one criterion run.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cargo build --release --lib --quiet
target=${CARGO_TARGET_DIR:-$root/target}
out="$target/tmp/bench-c-api"
mkdir -p "$out"
${CC:-cc} -std=c11 -O2 -Wall -Wextra -Wpedantic -Werror -I include \
  ffi-tests/bench_c_api.c "$target/release/libheliosdb_pool.a" \
  -lpthread -ldl -lm -o "$out/bench_c_api"
"$out/bench_c_api" "$@"

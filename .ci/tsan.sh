#!/usr/bin/env bash
# ThreadSanitizer (called from .ci/run): the Rust stress and edge tests, built with
# -Zsanitizer=thread and a sanitized std (-Zbuild-std, nightly); then the C programs that
# race threads over the C ABI (ffi-tests/threads.c, edges.c's and cxx_free_race.cpp's
# free-racing-release rounds), compiled with gcc's -fsanitize=thread and linked against that same sanitized
# staticlib and Rust's TSan runtime, so both sides of the boundary are checked.
# Installs the nightly component it needs; idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src'; then
  rustup component add --toolchain nightly rust-src
fi
target=x86_64-unknown-linux-gnu
export RUSTFLAGS="-Zsanitizer=thread"
export RUSTDOCFLAGS="-Zsanitizer=thread"
export CARGO_TARGET_DIR="$PWD/target/tsan"
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1"
tsan_test() { cargo +nightly test -Zbuild-std --target "$target" "$@"; }

tsan_test --test stress --test chaos --test edges --test unsafe_paths

# The C side. gcc's own libtsan is older than the LLVM runtime the Rust side was built
# for, so the C objects are linked with Rust's runtime (one runtime for the process).
sysroot=$(rustc +nightly --print sysroot)
runtime="$sysroot/lib/rustlib/$target/lib/librustc-nightly_rt.tsan.a"
staticlib="$CARGO_TARGET_DIR/$target/debug/deps/libheliosdb_pool.a"
out="$CARGO_TARGET_DIR/c-programs"
mkdir -p "$out"
for source in threads.c edges.c cxx_free_race.cpp; do
  program="${source%.*}"
  case "$source" in
    *.c) compile=(gcc -std=c11) ;;
    *) compile=(g++ -std=c++17) ;;
  esac
  "${compile[@]}" -Wall -Wextra -Wpedantic -Werror -g -O1 -fsanitize=thread -fno-omit-frame-pointer \
    -Iinclude -Iffi-tests -c "ffi-tests/$source" -o "$out/$program.o"
  g++ "$out/$program.o" -Wl,--whole-archive "$runtime" -Wl,--no-whole-archive "$staticlib" \
    -lpthread -ldl -lm -lstdc++ -o "$out/$program"
  # (grep -c, not -q: an early exit would SIGPIPE nm under pipefail.)
  if [ "$(nm "$out/$program.o" | grep -c __tsan_func_entry)" = 0 ]; then
    echo "$program is not instrumented" >&2
    exit 1
  fi
done
"$out/threads"
HELIOSDB_RACE_ROUNDS="${HELIOSDB_RACE_ROUNDS:-20000}" "$out/edges"
HELIOSDB_RACE_ROUNDS="${HELIOSDB_RACE_ROUNDS:-20000}" "$out/cxx_free_race"
echo "ThreadSanitizer: clean"

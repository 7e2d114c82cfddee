#!/usr/bin/env bash
# C ABI checks (called from .ci/run): header drift; the C/C++ tests of ffi-tests/ under
# valgrind memcheck and built with ASan+UBSan; install to a temporary prefix and build
# a C program there with pkg-config. Idempotent; about a minute on 2 cores once the
# crate is built.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# --- tools (installed only when absent) ---
missing=()
for tool in gcc:gcc g++:g++ valgrind:valgrind pkg-config:pkg-config; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  step "installing ${missing[*]}"
  apt-get update -qq >/dev/null
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Every build below regenerates the header strictly: a cbindgen failure fails the build.
# (Set for the whole script so the build script runs once, not once per setting.)
export HELIOSDB_HEADER_STRICT=1

# --- header drift: regenerate and compare with the committed header ---
step "header drift"
cargo build --quiet --lib
if ! git ls-files --error-unmatch include/heliosdb_pool.h >/dev/null 2>&1; then
  echo "include/heliosdb_pool.h is not committed" >&2
  exit 1
fi
if ! git diff --exit-code HEAD -- include/; then
  echo "include/ differs from the committed header: commit the regenerated header" >&2
  exit 1
fi

# --- valgrind memcheck over every C/C++ test program ---
step "ffi-tests under valgrind"
HELIOSDB_FFI_RUNNER="valgrind -q --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite,indirect" \
  cargo test --quiet --test ffi

# --- ASan + UBSan (staticlib: the interceptors then see Rust's malloc/free) ---
step "ffi-tests with -fsanitize=address,undefined"
export ASAN_OPTIONS=detect_leaks=1:halt_on_error=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
asan_flags="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
asan_dir="$PWD/target/tmp/ffi-tests/sanitize"
rm -rf "$asan_dir"
# edges.c races heliosdb_pool_free against a release: tens of thousands of rounds here.
HELIOSDB_RACE_ROUNDS=20000 HELIOSDB_FFI_OUT_DIR="$asan_dir" HELIOSDB_FFI_CFLAGS="$asan_flags" \
  cargo test --quiet --test ffi
if ! nm "$asan_dir/lifecycle" | grep __asan_init >/dev/null; then
  echo "the sanitizer build of ffi-tests/lifecycle.c is not instrumented" >&2
  exit 1
fi
unset ASAN_OPTIONS UBSAN_OPTIONS

# --- install into a temporary prefix; build and run a program with pkg-config ---
step "install + pkg-config"
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
scripts/install.sh --prefix "$prefix" --profile dev >/dev/null
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
pkg-config --exists heliosdb_pool
test "$(pkg-config --modversion heliosdb_pool)" = "$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)"
soname=$(readelf -d "$prefix/lib/libheliosdb_pool.so" | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p')
test -e "$prefix/lib/$soname"
# shellcheck disable=SC2046 # pkg-config output is meant to be word-split
gcc -std=c11 -Wall -Wextra -Wpedantic -Werror ffi-tests/example.c -o "$prefix/example" \
  $(pkg-config --cflags --libs heliosdb_pool) \
  -Wl,-rpath,"$(pkg-config --variable=libdir heliosdb_pool)"
ldd "$prefix/example" | grep "$prefix/lib/$soname" >/dev/null
"$prefix/example" >/dev/null
# shellcheck disable=SC2046
g++ -std=c++17 -Wall -Wextra -Wpedantic -Werror -x c++ ffi-tests/header_twice.cpp -x none \
  -o "$prefix/header_twice" $(pkg-config --cflags --libs heliosdb_pool) \
  -Wl,-rpath,"$(pkg-config --variable=libdir heliosdb_pool)"
"$prefix/header_twice"
# The static library with the private libs pkg-config lists.
# shellcheck disable=SC2046
gcc -std=c11 ffi-tests/example.c -o "$prefix/example-static" $(pkg-config --cflags heliosdb_pool) \
  "$prefix/lib/libheliosdb_pool.a" $(pkg-config --static --libs-only-l heliosdb_pool | sed 's/-lheliosdb_pool//')
"$prefix/example-static" >/dev/null
if ldd "$prefix/example-static" | grep heliosdb >/dev/null; then
  echo "example-static links the shared library" >&2
  exit 1
fi

step "C ABI checks passed"

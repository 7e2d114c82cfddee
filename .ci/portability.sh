#!/usr/bin/env bash
# Portability checks for heliosdb-pool, run from a checkout as `bash .ci/portability.sh`:
#
#   1. the README's two commands build on the declared MSRV (`rust-version` in
#      Cargo.toml), with the committed Cargo.lock, and the demo runs there;
#   2. the library compiles for macOS and FreeBSD (`cargo check --lib --target ...`);
#   3. `cargo doc --no-deps` has no warnings;
#   4. an install to a temporary prefix gives a program that links with the README's
#      pkg-config line and starts through the documented recipe (rpath, or
#      LD_LIBRARY_PATH). With PORTABILITY_SYSTEM_INSTALL=1 (as root, on a throwaway
#      machine) it also installs to /usr/local, where install.sh runs ldconfig, checks
#      the README's line alone, and removes what it installed.
#
# Self-installing and idempotent: rustup adds the MSRV toolchain and the targets when
# they are missing; gcc and pkg-config come from apt when absent. The MSRV build has its
# own target directory (target/msrv), so it does not invalidate the main one. About
# 4 minutes on 2 cores from cold, seconds when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

step() { printf '\n==> [%4d s] %s\n' "$SECONDS" "$*"; }
fail() {
  echo "portability: $*" >&2
  exit 1
}

msrv=$(sed -n 's/^rust-version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
[ -n "$msrv" ] || fail "no rust-version in Cargo.toml"
targets=(x86_64-apple-darwin x86_64-unknown-freebsd)

step "tools: Rust $msrv (the declared MSRV), targets ${targets[*]}, gcc, pkg-config"
if ! rustup run "$msrv" rustc --version >/dev/null 2>&1; then
  rustup toolchain install "$msrv" --profile minimal
fi
rustup run "$msrv" rustc --version
installed_targets=$(rustup target list --installed)
for target in "${targets[@]}"; do
  grep -qx "$target" <<<"$installed_targets" || rustup target add "$target"
done
missing=()
for pair in gcc:gcc pkg-config:pkg-config; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# --- 1. MSRV ---
# --locked: the committed Cargo.lock is what users get; a dependency that needs a newer
# Rust must be pinned there (e.g. `cargo update -p NAME --precise OLDER`).
step "MSRV $msrv: cargo test --no-run (the README's test command, built)"
CARGO_TARGET_DIR=target/msrv cargo "+$msrv" test --locked --no-run --quiet
step "MSRV $msrv: cargo run --release --example demo (the README's main job)"
CARGO_TARGET_DIR=target/msrv cargo "+$msrv" run --locked --quiet --release --example demo >target/msrv/demo.out ||
  { cat target/msrv/demo.out; fail "the demo failed on Rust $msrv"; }
tail -n 1 target/msrv/demo.out

# --- 2. other platforms: the library compiles (no linker or SDK needed for check) ---
for target in "${targets[@]}"; do
  step "cargo check --lib --target $target"
  cargo check --locked --quiet --lib --target "$target"
done

# --- 3. docs ---
step "cargo doc --no-deps, warnings denied"
RUSTDOCFLAGS="-D warnings" cargo doc --locked --quiet --no-deps

step "the docs are self-contained: links resolve, nothing points outside the repository"
# Relative Markdown links of README.md and docs/ must name files of the repository.
for doc in README.md docs/*.md; do
  links=$(grep -o '](\([^) #]*\)\(#[^) ]*\)\{0,1\})' "$doc" | sed 's/^](\([^)#]*\).*/\1/' |
    grep -v -e '^[a-z]*:' -e '^$' || true)
  for link in $links; do
    [ -e "$(dirname "$doc")/$link" ] || fail "$doc links to $link, which does not exist"
  done
done
# No file may depend on a design document outside the repository (the folder's name is
# assembled here, so this check does not match itself).
outside=shared
if git grep -n -e "\.\./$outside" -e "$outside/seed" -e "$outside/ARCHITECTURE"; then
  fail "the lines above point outside the repository (the design is docs/ARCHITECTURE.md)"
fi
# The complete program of docs/using-from-c.md is ffi-tests/example.c, which CI runs.
awk 'found && /^```$/ {exit} found {print} /^This is `ffi-tests\/example.c`/ {intro=1}
     intro && /^```c$/ {found=1}' docs/using-from-c.md | diff -u ffi-tests/example.c - ||
  fail "docs/using-from-c.md's complete program differs from ffi-tests/example.c"

# --- 4. install: the README's pkg-config line, and how the program starts ---
step "install to a temporary prefix; link ffi-tests/example.c with the README's line"
work=$(mktemp -d)
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
prefix="$work/prefix"
scripts/install.sh --prefix "$prefix" --profile dev >"$work/install.out"
cat "$work/install.out"
grep -q -- "-Wl,-rpath" "$work/install.out" || fail "install.sh printed no rpath recipe for $prefix"
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
cp ffi-tests/example.c "$work/app.c"
(
  cd "$work"
  # The README's line, verbatim.
  # shellcheck disable=SC2046 # pkg-config output is meant to be word-split
  cc app.c $(pkg-config --cflags --libs heliosdb_pool) -o app
  # Documented recipe 1: LD_LIBRARY_PATH (no rebuild).
  LD_LIBRARY_PATH="$prefix/lib" ./app >/dev/null || fail "app did not start with LD_LIBRARY_PATH"
  echo "README line + LD_LIBRARY_PATH=$prefix/lib: starts"
  # Documented recipe 2: the README's line plus an rpath.
  # shellcheck disable=SC2046
  cc app.c $(pkg-config --cflags --libs heliosdb_pool) \
    -Wl,-rpath,"$(pkg-config --variable=libdir heliosdb_pool)" -o app-rpath
  env -u LD_LIBRARY_PATH ./app-rpath >/dev/null || fail "app-rpath did not start"
  echo "README line + -Wl,-rpath,\$(pkg-config --variable=libdir heliosdb_pool): starts"
)

if [ "${PORTABILITY_SYSTEM_INSTALL:-0}" = 1 ]; then
  step "install to /usr/local (ldconfig); the README's line alone"
  [ "$(id -u)" = 0 ] || fail "PORTABILITY_SYSTEM_INSTALL=1 needs root"
  if ls /usr/local/lib/libheliosdb_pool.* /usr/local/include/heliosdb_pool.h >/dev/null 2>&1; then
    fail "/usr/local already has heliosdb_pool files; not touching them"
  fi
  had_pcdir=0
  [ -d /usr/local/lib/pkgconfig ] && had_pcdir=1
  remove_system_install() {
    rm -f /usr/local/lib/libheliosdb_pool.* /usr/local/lib/pkgconfig/heliosdb_pool.pc \
      /usr/local/include/heliosdb_pool.h /usr/local/include/heliosdb_pool.hpp
    if [ "$had_pcdir" = 0 ]; then rmdir /usr/local/lib/pkgconfig 2>/dev/null || true; fi
    ldconfig
    cleanup
  }
  trap remove_system_install EXIT
  scripts/install.sh --prefix /usr/local --profile dev --no-build
  (
    cd "$work"
    unset PKG_CONFIG_PATH LD_LIBRARY_PATH
    # shellcheck disable=SC2046
    cc app.c $(pkg-config --cflags --libs heliosdb_pool) -o app-system
    ./app-system >/dev/null || fail "app-system did not start"
  )
  echo "README line against /usr/local: starts"
fi

step "portability checks passed"

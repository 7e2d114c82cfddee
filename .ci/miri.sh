#!/usr/bin/env bash
# Miri over the tests that exercise the crate's unsafe code (called from .ci/run): the
# slab's call-site seqlock, the guard, raw handles, C call sites and the C ABI's
# free-with-a-lease-out path, each under several seeds (thread schedules and weak-memory
# outcomes differ per seed). Installs the nightly components it needs; idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^miri'; then
  rustup component add --toolchain nightly miri rust-src
fi
cargo +nightly miri setup >/dev/null 2>&1 || cargo +nightly miri setup

export MIRIFLAGS="-Zmiri-many-seeds=0..${HELIOSDB_MIRI_SEEDS:-8}"
# The seqlock reader racing a borrower that alternates Rust and C call sites; the
# per-thread marks of the C free handshake (their registry, reuse at thread exit).
cargo +nightly miri test --lib -- slab:: quiesce::
# Guards, raw handles, C call sites, free racing a release (tests/unsafe_paths.rs).
cargo +nightly miri test --test unsafe_paths

#!/usr/bin/env bash
# Builds and runs the libpq example against the local PostgreSQL (started if it is
# installed but down), under valgrind memcheck as well. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
  for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
cargo build --quiet --lib
out=target/libpq-example
mkdir -p "$out"
gcc -std=c11 -Wall -Wextra -Wpedantic -Werror -O1 -g \
  -I include -I "$(pg_config --includedir)" ffi-tests/libpq/pg_pool.c \
  target/debug/libheliosdb_pool.a -L "$(pg_config --libdir)" -lpq -lpthread -ldl -lm \
  -o "$out/pg_pool"
"$out/pg_pool"
valgrind -q --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite,indirect \
  "$out/pg_pool"

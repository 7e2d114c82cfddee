#!/usr/bin/env bash
# Builds and runs the libpq examples against the local PostgreSQL (started if it is
# installed but down), under valgrind memcheck as well. Idempotent.
#   pg_pool.c     threads sharing PGconn * added with heliosdb_pool_add_connection
#   pg_bad_day.c  the connect/health_check/reset callbacks, discard on a lost
#                 connection, backends killed under load and while idle
set -euo pipefail
cd "$(dirname "$0")/../.."
source ffi-tests/libpq/pg-up.sh
if ! postgres_up; then
  postgres_skipped "the libpq examples"
  exit 0
fi
cargo build --quiet --lib
out=target/libpq-example
mkdir -p "$out"
for program in pg_pool pg_bad_day; do
  gcc -std=c11 -Wall -Wextra -Wpedantic -Werror -O1 -g \
    -I include -I "$(pg_config --includedir)" "ffi-tests/libpq/$program.c" \
    target/debug/libheliosdb_pool.a -L "$(pg_config --libdir)" -lpq -lpthread -ldl -lm \
    -o "$out/$program"
  "$out/$program"
  valgrind -q --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite,indirect \
    "$out/$program"
done

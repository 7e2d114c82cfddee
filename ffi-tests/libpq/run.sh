#!/usr/bin/env bash
# Builds and runs the libpq example against the local PostgreSQL (started if it is
# installed but down), under valgrind memcheck as well. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  # An installed cluster that is down is started; with none installed, there is nothing
  # to start.
  version=$(ls /etc/postgresql 2>/dev/null | head -n 1 || true)
  if [ -n "$version" ]; then
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
  fi
fi
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  # Said loudly, not failed: the rest of the suite does not need a database.
  echo "************************************************************************" >&2
  echo "SKIPPED: the libpq example: no PostgreSQL answered on 127.0.0.1:5432." >&2
  echo "It needs a server there with trust auth for user postgres and a database" >&2
  echo "named test (Debian: apt-get install postgresql, then start the cluster)." >&2
  echo "************************************************************************" >&2
  exit 0
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

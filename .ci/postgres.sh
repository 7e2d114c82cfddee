#!/usr/bin/env bash
# The PostgreSQL adapter (cargo feature `postgres`) and the libpq examples, against the
# local PostgreSQL (started if installed but down). Without a server, each part says
# so loudly (SKIPPED banners) and passes: the rest of the suite needs no database.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
source ffi-tests/libpq/pg-up.sh
postgres_up || postgres_skipped "the PostgreSQL adapter tests (tests/postgres.rs)"
cargo clippy --all-targets --features postgres -- -D warnings
# The tests decide again for themselves (and print their own banner without a server).
cargo test --features postgres --test postgres -- --nocapture
bash ffi-tests/libpq/run.sh

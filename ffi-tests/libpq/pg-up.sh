# Sourced (not run) by ffi-tests/libpq/run.sh and .ci/postgres.sh: whether the local
# PostgreSQL answers, and the loud banner for when it does not. One place decides both.

# Starts an installed cluster that is down; returns 0 when a server answers on
# 127.0.0.1:5432. With none installed there is nothing to start.
postgres_up() {
  pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null && return 0
  local version
  version=$(ls /etc/postgresql 2>/dev/null | head -n 1 || true)
  if [ -n "$version" ]; then
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null && return 0; sleep 1; done
  fi
  return 1
}

# Says loudly that "$1" was skipped (to stderr); the caller then passes: the rest of
# the suite does not need a database.
postgres_skipped() {
  {
    echo "************************************************************************"
    echo "SKIPPED: $1: no PostgreSQL answered on 127.0.0.1:5432."
    echo "It needs a server there with trust auth for user postgres and a database"
    echo "named test (Debian: apt-get install postgresql, then start the cluster)."
    echo "************************************************************************"
  } >&2
}

#!/usr/bin/env bash
# Makes sure the services the tests use are up on this machine: Redis on
# 127.0.0.1:6379 and PostgreSQL on 127.0.0.1:5432 with trust auth. Installs
# them from Debian's packages when missing, starts them when stopped.
# Source it, or run it: scripts/services.sh
set -euo pipefail

apt_ready=""

# wait_until CHECK WHAT: polls CHECK for up to 10 s.
wait_until() {
  for _ in $(seq 100); do
    "$1" && return 0
    sleep 0.1
  done
  echo "services: $2 did not start" >&2
  return 1
}
apt_install() {
  if [ -z "$apt_ready" ]; then
    apt-get update -qq >/dev/null
    apt_ready=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

redis_ok() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ]; }

ensure_redis() {
  # The tests also start private redis-servers on free ports.
  command -v redis-server >/dev/null || { echo "services: installing redis-server" >&2; apt_install redis-server; }
  if command -v redis-cli >/dev/null && redis_ok; then
    return
  fi
  echo "services: starting redis on 127.0.0.1:6379" >&2
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/perfproxy-tests.log
  wait_until redis_ok redis
}

pg_ok() { psql -h 127.0.0.1 -p 5432 -U postgres -d postgres -Atqc 'select 1' >/dev/null 2>&1; }

ensure_postgres() {
  if command -v psql >/dev/null && pg_ok; then
    return
  fi
  if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    echo "services: installing postgresql" >&2
    apt_install postgresql postgresql-contrib
  fi
  local version
  version=$(ls /usr/lib/postgresql | sort -V | tail -n1)
  if ! ls /etc/postgresql/"$version"/main >/dev/null 2>&1; then
    pg_createcluster "$version" main -- --auth-host=trust --auth-local=trust >/dev/null
  fi
  local hba=/etc/postgresql/$version/main/pg_hba.conf
  if ! grep -q "perfproxy-tests" "$hba"; then
    # Trust on loopback, as on the development machines (tests only).
    sed -i "1i host all all 127.0.0.1/32 trust # perfproxy-tests\nhost all all ::1/128 trust # perfproxy-tests\nlocal all all trust # perfproxy-tests" "$hba"
  fi
  echo "services: starting postgresql $version" >&2
  pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null \
    || pg_ctlcluster --skip-systemctl-redirect "$version" main reload 2>/dev/null || true
  wait_until pg_ok postgresql
}

# A private cluster with pg_stat_statements preloaded, for the database-watch
# tests (the main one on 5432 is left as the machine has it).
PGSS_PORT=${PERFPROXY_TEST_PGSS_PORT:-5433}
pgss_ok() { psql -h 127.0.0.1 -p "$PGSS_PORT" -U postgres -d postgres -Atqc 'select 1' >/dev/null 2>&1; }

ensure_pgss_cluster() {
  if pgss_ok; then
    # Databases left by earlier test runs.
    psql -h 127.0.0.1 -p "$PGSS_PORT" -U postgres -d postgres -Atqc \
      "select datname from pg_database where datname like 'pp\_test\_%'" 2>/dev/null |
      while read -r db; do dropdb -h 127.0.0.1 -p "$PGSS_PORT" -U postgres --if-exists "$db" 2>/dev/null || true; done
    return
  fi
  local version conf
  version=$(ls /usr/lib/postgresql | sort -V | tail -n1)
  conf=/etc/postgresql/$version/perfproxy
  if [ ! -d "$conf" ]; then
    echo "services: creating postgresql cluster 'perfproxy' on port $PGSS_PORT (pg_stat_statements preloaded)" >&2
    pg_createcluster "$version" perfproxy -p "$PGSS_PORT" -- --auth-host=trust --auth-local=trust >/dev/null
    cat >> "$conf/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track = all
CONF
  fi
  pg_ctlcluster --skip-systemctl-redirect "$version" perfproxy start 2>/dev/null || true
  wait_until pgss_ok "the pg_stat_statements cluster"
}

ensure_tools() {
  command -v curl >/dev/null || apt_install curl
  # promtool (Debian package prometheus) lints /metrics in the tests.
  command -v promtool >/dev/null || { echo "services: installing promtool" >&2; apt_install --no-install-recommends prometheus; }
  # Headless Chromium renders the dashboard in tests/dashboard.rs.
  command -v chromium >/dev/null || { echo "services: installing chromium" >&2; apt_install --no-install-recommends chromium; }
  # A real gRPC server and client (grpcio, from PyPI) in tests/grpc.rs.
  python3 -c 'import grpc' 2>/dev/null || { echo "services: installing grpcio" >&2; python3 -m pip install --quiet grpcio; }
}

# Stops what the tests started that the machine did not have: the
# pg_stat_statements cluster on $PGSS_PORT (Redis and the main PostgreSQL
# may be the machine's own; `service redis-server stop` and
# `pg_ctlcluster <version> main stop` stop those).
stop_test_services() {
  local version
  version=$(ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -n1)
  if [ -n "$version" ] && [ -d "/etc/postgresql/$version/perfproxy" ]; then
    pg_ctlcluster --skip-systemctl-redirect "$version" perfproxy stop 2>/dev/null || true
    echo "services: stopped the 'perfproxy' cluster on port $PGSS_PORT" >&2
  fi
}

if [ "${BASH_SOURCE[0]}" = "$0" ] && [ "${1:-}" = "stop" ]; then
  stop_test_services
  exit 0
fi

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  ensure_tools
  ensure_redis
  ensure_postgres
  ensure_pgss_cluster
  echo "services: redis and postgresql are up"
fi

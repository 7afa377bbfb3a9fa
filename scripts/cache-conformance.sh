#!/usr/bin/env bash
# Runs the public HTTP cache conformance suite (npm `http-cache-tests`)
# against perfproxy: the suite's origin on 127.0.0.1, perfproxy (release
# build, memory cache, or Redis with REDIS_URL) in front, the suite's CLI
# through perfproxy. Prints counts per kind and the required tests that fail.
#   REDIS_URL=redis://127.0.0.1:6379/5 PERFPROXY_ARGS="--config redis-only.toml" \
#     scripts/cache-conformance.sh      # every hit read from Redis (memory_bytes = 0)
# The suite is installed at run time into a scratch directory, never committed.
set -euo pipefail
cd "$(dirname "$0")/.."
work="${CACHE_TESTS_DIR:-/tmp/perfproxy-cache-tests}"
origin_port="${ORIGIN_PORT:-8765}"
proxy_port="${PROXY_PORT:-8766}"

command -v node >/dev/null || { echo "node is required" >&2; exit 1; }
if [ ! -d "$work/node_modules/http-cache-tests" ]; then
  mkdir -p "$work"
  (cd "$work" && npm install --no-audit --no-fund http-cache-tests@0.4.5 >/dev/null)
fi
suite="$work/node_modules/http-cache-tests"
# Bind the origin to loopback only.
sed -i 's/^server.listen(port)$/server.listen(port, "127.0.0.1")/' "$suite/server/server.mjs"

cargo build --release --quiet
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; }
trap cleanup EXIT

(cd "$suite" && npm_config_protocol=http npm_config_port="$origin_port" npm_config_pidfile="$work/server.pid" \
  node server/server.mjs >"$work/origin.log" 2>&1) &
pids+=($!)
redis_args=()
if [ -n "${REDIS_URL:-}" ]; then redis_args=(--redis-url "$REDIS_URL"); fi
# shellcheck disable=SC2086
RUST_LOG=warn target/release/perfproxy --listen "127.0.0.1:$proxy_port" \
  --upstream "http://127.0.0.1:$origin_port" "${redis_args[@]}" ${PERFPROXY_ARGS:-} >"$work/proxy.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  curl -s -o /dev/null "http://127.0.0.1:$origin_port/" && curl -fs -o /dev/null "http://127.0.0.1:$proxy_port/health/live" && break
  sleep 0.1
done

(cd "$suite" && npm_config_base="http://127.0.0.1:$proxy_port" npm_config_id="" npm_package_config_id="" \
  node --no-warnings cli.mjs) >"$work/results.json"
node "$(pwd)/scripts/cache-conformance-summary.mjs" "$suite" "$work/results.json"

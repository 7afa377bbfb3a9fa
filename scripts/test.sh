#!/usr/bin/env bash
# The whole test suite, on a fresh machine of this kind: starts (installing
# when missing) Redis and PostgreSQL, then builds and runs every test, then
# runs the request-path suites again with every request through hyper
# (PERFPROXY_EXPRESS_LANE=false), so a drift between the lanes fails a test.
#   scripts/test.sh                 # everything, both lanes
#   scripts/test.sh --test proxy    # extra arguments go to cargo test (express lane only)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/services.sh
source scripts/services.sh
ensure_tools
ensure_redis
ensure_postgres
ensure_pgss_cluster
cargo test --all-targets "$@"
if [ "$#" -eq 0 ]; then
  echo "== the same request-path suites with express_lane = false (every request through hyper)"
  PERFPROXY_EXPRESS_LANE=false cargo test --test proxy --test hardening --test express --test cache --test cache_answers --test security --test rulebook --test request_id --test latency_split --test access_log --test tracing --test lifecycle --test limits --test http2 --test grpc
fi

#!/usr/bin/env bash
# The whole test suite, on a fresh machine of this kind: starts (installing
# when missing) Redis and PostgreSQL, then builds and runs every test.
#   scripts/test.sh                 # everything
#   scripts/test.sh --test proxy    # extra arguments go to cargo test
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/services.sh
source scripts/services.sh
ensure_tools
ensure_redis
ensure_postgres
ensure_pgss_cluster
cargo test --all-targets "$@"

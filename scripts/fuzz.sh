#!/usr/bin/env bash
# A long differential fuzz run of the two lanes (tests/differential.rs):
#   scripts/fuzz.sh [CASES] [SEED]      # default 50000 cases, a random seed
# A failure prints its seed and case; rerun it with the same SEED.
set -euo pipefail
cd "$(dirname "$0")/.."
PERFPROXY_FUZZ_CASES="${1:-50000}" PERFPROXY_FUZZ_SEED="${2:-$RANDOM$RANDOM}" \
  cargo test --release --test differential -- --nocapture

#!/usr/bin/env bash
# What a storm of /performance readers costs proxied traffic: wrk on a
# proxied 1 KiB path alone, then the same while 16 clients call
# /performance in a loop (readers share one merge per 50 ms), alternated.
#   DURATION=8 ROUNDS=2 bench/admin-storm.sh
# Prints proxied req/s and p99 each way and the ratio (goal: >= 0.8x).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-8}
ROUNDS=${ROUNDS:-2}
UP_PORT=${UP_PORT:-18480}
PP_PORT=${PP_PORT:-18481}

# shellcheck source=bench/lib.sh
source bench/lib.sh
bench_tools
bench_workdir storm
bench_upstream "$UP_PORT"
bench_perfproxy "$PP_PORT" "$UP_PORT"
# Some routes, so a merge has something to merge.
for i in $(seq 200); do curl -fs "http://127.0.0.1:$PP_PORT/r$i/x" >/dev/null; done

proxied() {
  wrk -t1 -c50 -d"${DURATION}s" --latency "http://127.0.0.1:$PP_PORT/api/items" >"$work/wrk.out" 2>&1
  echo "$(awk '/Requests\/sec/ {print $2}' "$work/wrk.out") $(awk '$1 == "99%" {print $2}' "$work/wrk.out")"
}
alone=() storm=()
for r in $(seq "$ROUNDS"); do
  read -r rps p99 < <(proxied)
  alone+=("$rps")
  echo "round $r alone:        $rps req/s  p99 $p99"
  wrk -t1 -c16 -d"$((DURATION + 1))s" "http://127.0.0.1:$PP_PORT/performance" >"$work/storm.out" 2>&1 &
  storm_pid=$!
  sleep 0.5
  read -r rps p99 < <(proxied)
  wait "$storm_pid"
  storm+=("$rps")
  echo "round $r with storm:   $rps req/s  p99 $p99  (/performance: $(awk '/Requests\/sec/ {print $2}' "$work/storm.out") req/s)"
done
builds=$(curl -fs "http://127.0.0.1:$PP_PORT/metrics" | awk '/^perfproxy_admin_document_builds_total/ {print $2}')
python3 -c "
a=[$(IFS=,; echo "${alone[*]}")]; s=[$(IFS=,; echo "${storm[*]}")]
print(f'ratio with storm / alone: {sum(s)/sum(a):.2f}x  (goal >= 0.8x); documents built: $builds')"

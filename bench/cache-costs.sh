#!/usr/bin/env bash
# What the cache costs as it fills, on this machine, in one run:
#   1. POST to random paths, empty cache vs a full memory layer (10 000+
#      entries): a write's invalidation must not grow with what is cached;
#   2. RSS with the memory layer full (cache.memory_bytes of 1 KiB
#      bodies; BUDGET_MIB, default 32) against the bound memory_bytes x 1.25 +
#      24 MB, and RSS before the fill (what the rest of the process holds);
#   3. unique uncacheable GETs with the cache on vs off (a miss nearly free).
#   DURATION=5 CONNECTIONS=50 bench/cache-costs.sh
# Prints req/s, p99 and the ratios. Compare ratios within one run.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-5}
CONNECTIONS=${CONNECTIONS:-50}
UP_PORT=${UP_PORT:-18280}
ON_PORT=${ON_PORT:-18281}
OFF_PORT=${OFF_PORT:-18282}
BUDGET=$((${BUDGET_MIB:-32} * 1024 * 1024))

# shellcheck source=bench/lib.sh
source bench/lib.sh
bench_tools
bench_workdir cache-costs
bench_upstream "$UP_PORT"

printf '[cache]\nmemory_bytes = %s\n' "$BUDGET" > "$work/on.toml"
printf '[cache]\nenabled = false\n' > "$work/off.toml"
bench_perfproxy "$ON_PORT" "$UP_PORT" --config "$work/on.toml"
bench_perfproxy "$OFF_PORT" "$UP_PORT" --config "$work/off.toml"

cat > "$work/post.lua" <<'LUA'
request = function() return wrk.format("POST", "/p/" .. math.random(1, 1000000000), nil, "x") end
LUA
cat > "$work/unique.lua" <<'LUA'
request = function() return wrk.format("GET", "/u/" .. math.random(1, 1000000000)) end
LUA
cat > "$work/fill.lua" <<'LUA'
counter = 0
request = function() counter = counter + 1; return wrk.format("GET", "/c/" .. math.random(1, 1000000) .. counter) end
LUA

# req/s and p99 (ms) of one wrk run.
run() {
  local port=$1 script=$2
  wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$script" "http://127.0.0.1:$port" >"$work/wrk.out" 2>&1
  local rps p99
  rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.out")
  p99=$(awk '$1 == "99%" {print $2}' "$work/wrk.out")
  echo "$rps $p99"
}
perf() { curl -fs "http://127.0.0.1:$ON_PORT/performance" | python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

rss_before=$(perf "d['memory']['rss_bytes']")
echo "== 1. POST to random paths (each a write that invalidates its path)"
read -r empty_rps empty_p99 < <(run "$ON_PORT" "$work/post.lua")
echo "empty cache:            $empty_rps req/s  p99 $empty_p99  (entries: $(perf "d['cache']['entries']"))"
run "$ON_PORT" "$work/fill.lua" >/dev/null
run "$ON_PORT" "$work/fill.lua" >/dev/null
entries=$(perf "d['cache']['entries']")
read -r full_rps full_p99 < <(run "$ON_PORT" "$work/post.lua")
echo "full cache:             $full_rps req/s  p99 $full_p99  (entries: $entries)"
python3 -c "print(f'ratio full/empty:       {$full_rps/$empty_rps:.2f}x  (goal >= 0.8x with 10 000+ entries)')"

echo "== 2. RSS with the memory layer full"
rss=$(perf "d['memory']['rss_bytes']")
held=$(perf "d['cache']['memory_bytes']")
python3 -c "
b=$BUDGET; r=$rss; bound=b*1.25+24e6
print(f'memory_bytes budget {b/1e6:.1f} MB, weighted held {$held/1e6:.1f} MB, {$entries} entries')
print(f'RSS before the fill {$rss_before/1e6:.1f} MB, full {r/1e6:.1f} MB; bound {bound/1e6:.1f} MB: {\"within\" if r <= bound else \"OVER\"}')"

echo "== 3. unique uncacheable GETs, cache on vs off"
read -r on_rps on_p99 < <(run "$ON_PORT" "$work/unique.lua")
read -r off_rps off_p99 < <(run "$OFF_PORT" "$work/unique.lua")
read -r on2_rps on2_p99 < <(run "$ON_PORT" "$work/unique.lua")
read -r off2_rps off2_p99 < <(run "$OFF_PORT" "$work/unique.lua")
echo "cache on:  $on_rps / $on2_rps req/s  p99 $on_p99 / $on2_p99"
echo "cache off: $off_rps / $off2_rps req/s  p99 $off_p99 / $off2_p99"
python3 -c "print(f'ratio on/off:           {($on_rps+$on2_rps)/($off_rps+$off2_rps):.2f}x  (goal >= 0.9x)')"

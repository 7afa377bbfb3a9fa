#!/usr/bin/env bash
# Memory over a long run: does anything grow that should not?
#   bench/soak.sh [MINUTES]          (default 30; CI runs 3)
# A release perfproxy with the Redis layer on (SOAK_REDIS, default
# redis://127.0.0.1:6379/7, a database of its own, emptied first; a local
# Redis is started when none answers) and a
# 16 MiB memory layer, in front of nginx, under wrk -c64 with a mixed load:
#   - 40 % GET of random cacheable paths (/s/N, a 5 s cache rule);
#   - 30 % POST to the same paths (each a write that invalidates its path);
#   - 30 % GET of random uncacheable paths two segments deep
#     (/private/WORD/N, `Cache-Control: private`: hit-for-pass entries, and route
#     labels past max_routes).
# Every 10 s it samples RSS (/proc) and the size of every structure a client
# can grow (`/performance` `memory.held`). At the end it prints each
# structure over time, the RSS slope after the first minute (Theil-Sen)
# and the growth it predicts over the rest of the run, and RSS against the
# README's formula. Exit 1 when the growth after the first minute reaches
# GROWTH_LIMIT_MB (default 1) or RSS is above the formula.
#   MINUTES=3 CONNECTIONS=64 MEMORY_MIB=16 GROWTH_LIMIT_MB=1
set -euo pipefail
cd "$(dirname "$0")/.."

MINUTES=${1:-${MINUTES:-30}}
CONNECTIONS=${CONNECTIONS:-64}
MEMORY_MIB=${MEMORY_MIB:-16}
GROWTH_LIMIT_MB=${GROWTH_LIMIT_MB:-1}
SAMPLE_SECONDS=${SAMPLE_SECONDS:-10}
UP_PORT=${UP_PORT:-18290}
PORT=${PORT:-18291}
SOAK_REDIS=${SOAK_REDIS:-redis://127.0.0.1:6379/7}

# shellcheck source=bench/lib.sh
source bench/lib.sh
bench_tools
bench_workdir soak

# shellcheck source=scripts/services.sh
source scripts/services.sh
ensure_redis
redis-cli -u "$SOAK_REDIS" flushdb >/dev/null

bench_upstream "$UP_PORT"

cat > "$work/soak.toml" <<TOML
[cache]
memory_bytes = $((MEMORY_MIB * 1024 * 1024))
[[cache.rules]]
pattern = "GET /s/*"
ttl_ms = 5000
TOML
REDIS_URL=$SOAK_REDIS bench_perfproxy "$PORT" "$UP_PORT" --config "$work/soak.toml"
pid=${pids[-1]}
# The run measures the Redis layer: it must be connected.
for _ in $(seq 50); do
  backend=$(curl -fs "http://127.0.0.1:$PORT/performance" | python3 -c "import json,sys; print(json.load(sys.stdin)['cache']['backend'])" || true)
  [ "$backend" = redis ] && break
  sleep 0.1
done
if [ "$backend" != redis ]; then
  echo "soak: the Redis layer did not connect to $SOAK_REDIS" >&2
  exit 1
fi

cat > "$work/mix.lua" <<'LUA'
local words = {"alpha", "beta", "gamma", "delta", "omega", "kappa", "sigma", "theta"}
request = function()
  local r = math.random(100)
  if r <= 40 then
    return wrk.format("GET", "/s/" .. math.random(1, 200000))
  elseif r <= 70 then
    return wrk.format("POST", "/s/" .. math.random(1, 200000), nil, "x")
  end
  local word = words[math.random(#words)] .. math.random(1, 100000000)
  return wrk.format("GET", "/private/" .. word .. "/" .. math.random(1, 1000000000))
end
LUA

seconds=$((MINUTES * 60))
echo "soak: $MINUTES min, wrk -c$CONNECTIONS, ${MEMORY_MIB} MiB memory layer, Redis $SOAK_REDIS (perfproxy pid $pid)"
wrk -t2 -c"$CONNECTIONS" -d"${seconds}s" --latency -s "$work/mix.lua" "http://127.0.0.1:$PORT" >"$work/wrk.out" 2>&1 &
wrk_pid=$!
pids+=("$wrk_pid")

# One sample: seconds since start, RSS from /proc, then /performance's
# memory.held as JSON (one line).
start=$(date +%s)
: > "$work/samples"
sample() {
  local rss held
  rss=$(awk '/^VmRSS:/ {print $2 * 1024}' "/proc/$pid/status")
  held=$(curl -fs --max-time 5 "http://127.0.0.1:$PORT/performance" |
    python3 -c "import json,sys; d=json.load(sys.stdin); print(json.dumps(d['memory'].get('held', {})))" || echo '{}')
  echo "$(($(date +%s) - start)) $rss $held" >> "$work/samples"
}
while kill -0 "$wrk_pid" 2>/dev/null; do
  sample
  sleep "$SAMPLE_SECONDS"
done
wait "$wrk_pid" || true
sample
sed -n '/Latency Distribution/,$p' "$work/wrk.out" | grep -E '99%|Requests/sec|requests in|Non-2xx|Socket errors' || true
# A run that answered nothing, or answered errors, measured nothing.
if ! grep -q ' requests in ' "$work/wrk.out" || grep -q 'Non-2xx' "$work/wrk.out"; then
  echo "soak: FAIL: wrk saw no requests or non-2xx answers" >&2
  cat "$work/wrk.out" >&2
  exit 1
fi

workers=$(sed -n 's/.*perfproxy serving.* workers=\([0-9]*\).*/\1/p' "$work/perfproxy-$PORT.log" | head -1)
python3 - "$work/samples" "$GROWTH_LIMIT_MB" "$MEMORY_MIB" "$CONNECTIONS" "${workers:-1}" <<'PY'
import json, sys
path, limit_mb, memory_mib, connections, workers = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
rows = []
for line in open(path):
    t, rss, held = line.split(" ", 2)
    rows.append((int(t), int(rss), json.loads(held)))
names = sorted({k for _, _, h in rows for k in h})
# One line per structure: its size at 8 points in time, then its change
# after the first minute (sizes that only follow the load, like
# connections, move both ways; a leak only climbs).
picks = sorted({round(i * (len(rows) - 1) / 7) for i in range(8)})
print("\n" + " " * 20 + "".join(f"{rows[i][0]:>11d}s" for i in picks) + "   after 1 min")
first = next((i for i, (t, _, _) in enumerate(rows) if t >= 60), len(rows) - 1)
def line(name, values, scale=1, fmt="{:>12.0f}"):
    change = values[-1] - values[first]
    print(f"{name:<20}" + "".join(fmt.format(values[i] / scale) for i in picks) + f"   {change / scale:+.1f}")
line("rss_mb", [r for _, r, _ in rows], 1e6, "{:>12.1f}")
for n in names:
    line(n, [h.get(n, 0) for _, _, h in rows])

after = [(t, rss) for t, rss, _ in rows if t >= 60]
if len(after) < 3:
    print("too short to fit a slope (needs samples past the first minute)")
    sys.exit(1)
# Theil-Sen: the median of the slopes between every two samples, so one
# sample caught while the allocator returned (or took) a few MB does not
# tilt the line the way it tilts least squares.
slopes = sorted((r2 - r1) / (t2 - t1) for i, (t1, r1) in enumerate(after) for t2, r2 in after[i + 1:] if t2 > t1)
slope = slopes[len(slopes) // 2]
span = after[-1][0] - after[0][0]
growth = slope * span / 1e6
print(f"\nRSS after the first minute: {after[0][1] / 1e6:.1f} -> {after[-1][1] / 1e6:.1f} MB "
      f"(min {min(r for _, r in after) / 1e6:.1f}, max {max(r for _, r in after) / 1e6:.1f})")
print(f"slope {slope * 3600 / 1e6:+.2f} MB/hour (Theil-Sen): {growth:+.2f} MB over {span} s (limit {limit_mb} MB)")

# The README's formula (docs/memory.md): 10 MB + 2 MB per worker +
# 1.4 x cache.memory_bytes + 10 KB per route label + 20 KB per open
# connection + 10 MB for the Redis layer.
routes = max(h.get("route_labels", 0) for _, _, h in rows)
bound = 10e6 + 2e6 * workers + 1.4 * memory_mib * 1048576 + 10e3 * routes + 20e3 * connections + 10e6
peak = max(r for _, r in after)
print(f"RSS peak after the first minute {peak / 1e6:.1f} MB; formula {bound / 1e6:.1f} MB "
      f"(10 MB + {workers} workers x 2 MB + {memory_mib} MiB x 1.4 + {routes} routes x 10 KB "
      f"+ {connections} connections x 20 KB + 10 MB Redis)")
failed = False
if growth >= limit_mb:
    print(f"FAIL: RSS grew {growth:.2f} MB after the first minute (limit {limit_mb} MB)")
    failed = True
if peak > bound:
    print("FAIL: RSS above the formula")
    failed = True
sys.exit(1 if failed else 0)
PY

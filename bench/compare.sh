#!/usr/bin/env bash
# Compare perfproxy with nginx proxy_pass on the same upstream, with wrk.
#
#   bench/compare.sh                 # 3 rounds x 10 s per target, 50 connections
#   ROUNDS=5 DURATION=15 CONNECTIONS=100 bench/compare.sh
#   PERFPROXY_ARGS="--performance-monitoring-enabled false" bench/compare.sh
#   VARIANT_ARGS="--config /tmp/one-worker.toml" bench/compare.sh   # a second perfproxy, same run
#   VARIANT_BIN=/tmp/perfproxy-before VARIANT_ARGS=" " bench/compare.sh  # another build, same run
#   TRACING=0.01 bench/compare.sh    # a variant tracing 1 % (spans to the upstream nginx), same run
#   NGX_WORKERS=1 PERFPROXY_ARGS="--workers 1" bench/compare.sh   # one worker each, same run
#   bench/cache.sh                   # cache hits (memory layer, Redis layer) against pass-through
#
# Targets, alternated within each round so drift on this noisy 2-core machine
# hits them alike: the upstream directly (an nginx serving a 1 KiB body),
# nginx proxy_pass (NGX_WORKERS, 2 by default; keepalive 64, HTTP/1.1, Connection ""), and
# perfproxy (release build). Prints req/s, p50/p99 per run, medians, and the
# ratios perfproxy/nginx. Compare ratios within one run, never absolute times.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-50}
THREADS=${THREADS:-1}
UP_PORT=${UP_PORT:-18180}
NGX_PORT=${NGX_PORT:-18181}
PP_PORT=${PP_PORT:-18182}
PATH_UNDER_TEST=${PATH_UNDER_TEST:-/bench/1k.bin}
# More paths through perfproxy, e.g. "perfproxy-cached=/bench/cached.bin"
# (cacheable: max-age=3600); "name=variant:/path" goes through the variant,
# "name=ngx:/path" through the nginx proxy, which also answers
# /nginx-cache/<file> from its proxy_cache and /nginx-static/<file> itself.
EXTRA_TARGETS=${EXTRA_TARGETS:-}

bench_tools
bench_workdir bench
mkdir -p "$work/root/bench"
head -c 1024 /dev/zero | tr '\0' 'x' > "$work/root/bench/1k.bin"
cp "$work/root/bench/1k.bin" "$work/root/bench/cached.bin"
bench_nginx up <<NGX
  server {
    listen 127.0.0.1:$UP_PORT;
    root $work/root;
    location /bench/cached.bin { add_header Cache-Control "public, max-age=3600"; }
    # An OTLP sink for runs with tracing on: takes the spans, answers 200.
    location = /v1/traces { client_body_buffer_size 1m; return 200; }
  }
NGX
bench_nginx ngx "${NGX_WORKERS:-2}" <<NGX
  upstream backend { server 127.0.0.1:$UP_PORT; keepalive 64; }
  proxy_cache_path $work/ngx-cache levels=1:2 keys_zone=bench:10m max_size=100m inactive=60m use_temp_path=off;
  server {
    listen 127.0.0.1:$NGX_PORT;
    location /nginx-cache/ {
      proxy_pass http://backend/bench/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache bench;
      add_header X-Cache \$upstream_cache_status;
    }
    location /nginx-static/ { alias $work/root/bench/; add_header Cache-Control "public, max-age=3600"; }
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
NGX
if [ -n "${TRACING:-}" ]; then
  # The variant traces (spans to the upstream nginx's sink), perfproxy does not.
  printf '[tracing]\nendpoint = "http://127.0.0.1:%s"\nsample_ratio = %s\n' "$UP_PORT" "$TRACING" > "$work/tracing.toml"
  VARIANT_ARGS="--config $work/tracing.toml"
fi
# shellcheck disable=SC2086
RUST_LOG=warn ./target/release/perfproxy --listen "127.0.0.1:$PP_PORT" --upstream "http://127.0.0.1:$UP_PORT" ${PERFPROXY_ARGS:-} &
pp=$!
pids+=("$pp")
VARIANT_PORT=$((PP_PORT + 1))
if [ -n "${VARIANT_ARGS:-}" ]; then
  # shellcheck disable=SC2086
  RUST_LOG=warn "${VARIANT_BIN:-./target/release/perfproxy}" --listen "127.0.0.1:$VARIANT_PORT" --upstream "http://127.0.0.1:$UP_PORT" $VARIANT_ARGS &
  pids+=("$!")
fi
for port in "$PP_PORT" ${VARIANT_ARGS:+"$VARIANT_PORT"}; do
  for _ in $(seq 50); do curl -sf -o /dev/null "http://127.0.0.1:$port$PATH_UNDER_TEST" && break; sleep 0.1; done
done
rss() { awk '/VmRSS/ {print $2}' "/proc/$pp/status"; }
idle_rss=$(rss)

targets=("direct=http://127.0.0.1:$UP_PORT$PATH_UNDER_TEST" "nginx=http://127.0.0.1:$NGX_PORT$PATH_UNDER_TEST" "perfproxy=http://127.0.0.1:$PP_PORT$PATH_UNDER_TEST")
[ -n "${VARIANT_ARGS:-}" ] && targets+=("variant=http://127.0.0.1:$VARIANT_PORT$PATH_UNDER_TEST")
for extra in $EXTRA_TARGETS; do
  name=${extra%%=*}; path=${extra#*=}; port=$PP_PORT
  if [[ $path == variant:* ]]; then path=${path#variant:}; port=$VARIANT_PORT; fi
  if [[ $path == ngx:* ]]; then path=${path#ngx:}; port=$NGX_PORT; fi
  targets+=("$name=http://127.0.0.1:$port$path")
done

# wrk latency figures → milliseconds
to_ms() { awk -v v="$1" 'BEGIN { n=v; sub(/[a-z]+$/,"",n); u=v; sub(/^[0-9.]+/,"",u);
  if (u=="us") n/=1000; else if (u=="s") n*=1000; else if (u=="m") n*=60000; printf "%.3f", n }'; }

results="$work/results.tsv"
: > "$results"
printf '%-18s %6s %12s %10s %10s\n' target round req/s p50_ms p99_ms
for round in $(seq "$ROUNDS"); do
  for t in "${targets[@]}"; do
    name=${t%%=*}; url=${t#*=}
    wrk -t"$THREADS" -c"$CONNECTIONS" -d1s "$url" >/dev/null 2>&1 || true   # warm-up
    out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "$url")
    rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
    p50=$(to_ms "$(awk '$1=="50%" {print $2}' <<<"$out")")
    p99=$(to_ms "$(awk '$1=="99%" {print $2}' <<<"$out")")
    errs=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out")
    printf '%-18s %6s %12s %10s %10s %s\n' "$name" "$round" "$rps" "$p50" "$p99" "$errs"
    printf '%s\t%s\t%s\t%s\n' "$name" "$rps" "$p50" "$p99" >> "$results"
  done
done
loaded_rss=$(rss)

echo
echo "medians over $ROUNDS rounds (wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s, 1 KiB body):"
python3 - "$results" <<'PY'
import sys; sys.path.insert(0, "bench"); from medians import medians
med = medians(sys.argv[1])
for n, (rps, p50, p99) in med.items():
    print(f"  {n:<18} {rps:>12.0f} req/s   p50 {p50:7.3f} ms   p99 {p99:7.3f} ms")
if "nginx" in med:
    base = med["nginx"]
    print("ratios to nginx proxy_pass (throughput higher is better; p99 lower is better):")
    for n, (rps, p50, p99) in med.items():
        if n in ("nginx", "direct"):
            continue
        print(f"  {n:<18} throughput {rps / base[0]:.2f}x   p99 {p99 / base[2]:.2f}x")
if "perfproxy-cached" in med:
    hit = med["perfproxy-cached"]
    for n, what in (("nginx-cache", "nginx proxy_cache hits"), ("nginx-static", "nginx serving the body itself")):
        if n in med:
            print(f"perfproxy memory hits / {what}: throughput {hit[0] / med[n][0]:.2f}x   p99 {hit[2] / med[n][2]:.2f}x")
PY
echo "perfproxy RSS: idle ${idle_rss} KiB, after load ${loaded_rss} KiB"

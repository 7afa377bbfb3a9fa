#!/usr/bin/env bash
# HTTP/2 (h2c, prior knowledge) clients: perfproxy against nginx, with
# h2load (Debian's nghttp2-client), on the same HTTP/1.1 upstream in one run.
#
#   bench/h2.sh                          # 3 rounds x 20 000 requests, 50 connections x 10 streams
#   ROUNDS=5 REQUESTS=50000 CONNECTIONS=20 STREAMS=50 bench/h2.sh
#
# Targets, alternated within each round: nginx (2 workers, `listen ...
# http2` on a cleartext port, proxy_pass with keepalive 64 over HTTP/1.1)
# and perfproxy (release build) in front of the same nginx upstream
# answering a 1 KiB body. Prints req/s and p50/p99 (from h2load's
# per-request log) per run, medians, and the ratios perfproxy/nginx.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh

ROUNDS=${ROUNDS:-3}
REQUESTS=${REQUESTS:-20000}
CONNECTIONS=${CONNECTIONS:-50}
STREAMS=${STREAMS:-10}
UP_PORT=${UP_PORT:-18280}
NGX_PORT=${NGX_PORT:-18281}
PP_PORT=${PP_PORT:-18282}

command -v h2load >/dev/null || { echo "installing nghttp2-client (h2load)..." >&2; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nghttp2-client >/dev/null; }
bench_tools
bench_workdir h2
bench_upstream "$UP_PORT"
bench_nginx ngx 2 <<NGX
  http2_max_concurrent_streams 128;
  upstream backend { server 127.0.0.1:$UP_PORT; keepalive 64; }
  server {
    listen 127.0.0.1:$NGX_PORT http2;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
NGX
RUST_LOG=warn bench_perfproxy "$PP_PORT" "$UP_PORT"

results="$work/results.tsv"
: > "$results"
printf '%-10s %6s %12s %10s %10s\n' target round req/s p50_ms p99_ms
for round in $(seq "$ROUNDS"); do
  for t in "nginx=$NGX_PORT" "perfproxy=$PP_PORT"; do
    name=${t%%=*}; port=${t#*=}
    url="http://127.0.0.1:$port/bench/1k"
    h2load -n 2000 -c "$CONNECTIONS" -m "$STREAMS" "$url" >/dev/null 2>&1 || true   # warm-up
    out=$(h2load -n "$REQUESTS" -c "$CONNECTIONS" -m "$STREAMS" --log-file="$work/log" "$url")
    rps=$(awk '/^finished in/ {print $4}' <<<"$out")
    ok=$(awk '/^status codes:/ {print $3}' <<<"$out")
    # The log: start (µs since epoch), status, time for the request (µs).
    read -r p50 p99 < <(sort -n -k3 "$work/log" | awk '{ t[NR] = $3 } END { printf "%.3f %.3f\n", t[int(NR*0.5)]/1000, t[int(NR*0.99)]/1000 }')
    printf '%-10s %6s %12s %10s %10s  2xx %s\n' "$name" "$round" "$rps" "$p50" "$p99" "$ok"
    printf '%s\t%s\t%s\t%s\n' "$name" "$rps" "$p50" "$p99" >> "$results"
  done
done

echo
echo "medians over $ROUNDS rounds (h2load -n $REQUESTS -c $CONNECTIONS -m $STREAMS, 1 KiB body):"
python3 - "$results" <<'PY'
import sys; sys.path.insert(0, "bench"); from medians import medians
med = medians(sys.argv[1])
for n, (rps, p50, p99) in med.items():
    print(f"  {n:<10} {rps:>12.0f} req/s   p50 {p50:7.3f} ms   p99 {p99:7.3f} ms")
base, pp = med["nginx"], med["perfproxy"]
print(f"perfproxy / nginx (HTTP/2 in, HTTP/1.1 upstream): throughput {pp[0] / base[0]:.2f}x   p99 {pp[2] / base[2]:.2f}x")
PY

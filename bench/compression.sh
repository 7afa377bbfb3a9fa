#!/usr/bin/env bash
# Compressed cache hits: perfproxy ([compression] on, its memory cache)
# against nginx (proxy_cache + gzip on, gzip_comp_level 1), one worker each,
# in front of the same upstream, serving memory hits of the same 25 KB JSON
# object to wrk with "Accept-Encoding: gzip", in one run. nginx stores the
# plain object and deflates it on every hit; perfproxy stores each coding it
# served and answers a hit from the stored bytes. Then perfproxy's br and
# zstd hits, and each coding's size against the object's.
#
#   bench/compression.sh                        # 3 rounds x 10 s, 50 connections
#   ROUNDS=5 DURATION=15 CONNECTIONS=100 bench/compression.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-50}
UP_PORT=${UP_PORT:-18390}
NGX_PORT=${NGX_PORT:-18391}
PP_PORT=${PP_PORT:-18392}

bench_tools
bench_workdir compression
mkdir -p "$work/www" "$work/cache"
# A JSON document of about 25 KB: records with repeated keys, as an API answers.
python3 - "$work/www/doc.json" <<'PY'
import json, sys
items = []
while len(json.dumps({"items": items})) < 24_800:
    i = len(items)
    items.append({"id": i, "name": f"customer {i}", "email": f"user{i}@example.com", "active": i % 3 != 0,
                  "plan": ["free", "team", "business"][i % 3], "balance": round(i * 13.37 % 1000, 2)})
open(sys.argv[1], "w").write(json.dumps({"items": items, "total": len(items)}))
PY
size=$(stat -c %s "$work/www/doc.json")
bench_nginx up <<NGX
  types { application/json json; }
  server {
    listen 127.0.0.1:$UP_PORT;
    root $work/www;
    location / { add_header Cache-Control "max-age=3600"; etag on; }
  }
NGX
bench_nginx ngx <<NGX
  proxy_cache_path $work/cache keys_zone=hits:10m;
  upstream backend { server 127.0.0.1:$UP_PORT; keepalive 64; }
  gzip on;
  gzip_comp_level 1;
  gzip_types application/json;
  gzip_proxied any;
  gzip_vary on;
  server {
    listen 127.0.0.1:$NGX_PORT;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache hits;
    }
  }
NGX

printf '[compression]\nenabled = true\n' > "$work/perfproxy.toml"
RUST_LOG=warn bench_perfproxy "$PP_PORT" "$UP_PORT" --workers 1 --config "$work/perfproxy.toml"

# Warm both caches (each coding once on perfproxy) and check what comes back.
printf 'the object: %s bytes of JSON\n' "$size"
for coding in gzip br zstd identity; do
  curl -fs -H "Accept-Encoding: $coding" "http://127.0.0.1:$PP_PORT/doc.json" -o /dev/null
done
curl -fs "http://127.0.0.1:$NGX_PORT/doc.json" -o /dev/null
for t in "nginx=$NGX_PORT:gzip" "perfproxy=$PP_PORT:gzip" "perfproxy=$PP_PORT:br" "perfproxy=$PP_PORT:zstd"; do
  name=${t%%=*}; rest=${t#*=}; port=${rest%%:*}; coding=${rest#*:}
  head=$(curl -fs -D - -o "$work/body.$name.$coding" -H "Accept-Encoding: $coding" "http://127.0.0.1:$port/doc.json")
  got=$(awk -F': *' 'tolower($1) == "content-encoding" {gsub(/\r/, "", $2); print $2}' <<<"$head")
  [ "$got" = "$coding" ] || { echo "$name did not answer $coding (Content-Encoding: ${got:-none})" >&2; exit 1; }
  bytes=$(stat -c %s "$work/body.$name.$coding")
  printf '  %-10s %-5s %6s bytes  ratio %.3f\n' "$name" "$coding" "$bytes" "$(echo "$bytes / $size" | bc -l)"
done

results="$work/results.tsv"
: > "$results"
printf '%-10s %-5s %6s %12s %10s\n' target enc round req/s p99_ms
for round in $(seq "$ROUNDS"); do
  for t in "nginx=$NGX_PORT:gzip" "perfproxy=$PP_PORT:gzip" "perfproxy=$PP_PORT:br" "perfproxy=$PP_PORT:zstd"; do
    name=${t%%=*}; rest=${t#*=}; port=${rest%%:*}; coding=${rest#*:}
    IFS=$'\t' read -r rps p99 errors < <(bench_wrk "http://127.0.0.1:$port/doc.json" -H "Accept-Encoding: $coding")
    printf '%-10s %-5s %6s %12s %10s  %s\n' "$name" "$coding" "$round" "$rps" "$p99" "$errors"
    printf '%s\t%s\t%s\t%s\n' "$name" "$coding" "$rps" "$p99" >> "$results"
  done
done
echo
curl -fs "http://127.0.0.1:$PP_PORT/performance" | python3 -c '
import json, sys
c = json.load(sys.stdin)["compression"]
print("perfproxy compressed (misses only):", {k: c[k]["responses"] for k in ("gzip", "br", "zstd")})'
echo "medians over $ROUNDS rounds (wrk -t1 -c $CONNECTIONS -d ${DURATION}s, $size-byte JSON, memory hits, one worker each):"
python3 - "$results" <<'PY'
import sys; sys.path.insert(0, "bench"); from medians import medians
med = medians(sys.argv[1], keys=2)
for (n, enc), (rps, p99) in sorted(med.items()):
    print(f"  {n:<10} {enc:<5} {rps:>10.0f} req/s   p99 {p99:8.3f} ms")
base = med[("nginx", "gzip")]
for enc in ("gzip", "br", "zstd"):
    pp = med[("perfproxy", enc)]
    print(f"perfproxy {enc} hits / nginx gzip hits: throughput {pp[0] / base[0]:.2f}x   p99 {pp[1] / base[1]:.2f}x")
PY

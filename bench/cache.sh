#!/usr/bin/env bash
# Cache hits against pass-through, in one alternating run (bench/compare.sh):
#   perfproxy          pass-through of an uncacheable 1 KiB body
#   perfproxy-cached   memory-layer hits (Cache-Control: max-age=3600)
#   nginx-cache        nginx proxy_cache hits on the same object
#   nginx-static       the nginx proxy serving the same 1 KiB body itself
#   variant            pass-through on a perfproxy whose memory layer holds nothing
#   variant-redis-hit  Redis-layer hits on that perfproxy (every hit read from Redis)
# Needs Redis on 127.0.0.1:6379 (database 4 is used).
set -euo pipefail
cd "$(dirname "$0")/.."
cfg=$(mktemp /tmp/perfproxy-redis-only.XXXXXX.toml)
printf '[cache]\nmemory_bytes = 0\n' > "$cfg"
redis-cli -n 4 FLUSHDB >/dev/null
EXTRA_TARGETS="perfproxy-cached=/bench/cached.bin nginx-cache=ngx:/nginx-cache/cached.bin nginx-static=ngx:/nginx-static/cached.bin variant-redis-hit=variant:/bench/cached.bin" \
VARIANT_ARGS="--redis-url redis://127.0.0.1:6379/4 --config $cfg" \
  bench/compare.sh "$@"
rm -f "$cfg"

#!/usr/bin/env bash
# User-space instructions per proxied request, counted by callgrind: stable
# on this noisy machine where wall-clock runs move ±10 %. Two runs (N1 and N2
# requests over 10 keep-alive connections, 1 KiB body from an nginx upstream);
# the difference divided by N2-N1 leaves start-up out. The kernel's share
# (about 60 % of the CPU, see docs/performance.md) is not counted.
#
#   bench/instructions.sh                               # this tree's release build
#   BIN=/tmp/perfproxy-before bench/instructions.sh     # another build
#   bench/instructions.sh --config /tmp/nocache.toml    # extra perfproxy arguments
#   BENCH_PATH=/bench/42/1k.bin bench/instructions.sh   # another path (a route with an id:
#                                                       # its label is worked out on every request)
#   TRACING=0.01 bench/instructions.sh                  # tracing on, 1 % sampled, spans
#                                                       # exported to the upstream nginx (200)
#   bench/instructions.sh --check                       # the CPU budget (CI): cache on and
#                                                       # cache off against bench/budget.toml;
#                                                       # fails past a budget plus its tolerance
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--check" ]; then
  shift
  budget=bench/budget.toml
  value() { awk -F= -v k="$1" '$1 ~ "^"k" *$" {gsub(/[ _]/, "", $2); print $2}' "$budget"; }
  tolerance=$(value tolerance_percent)
  nocache=$(mktemp /tmp/perfproxy-nocache.XXXXXX.toml)
  printf '[cache]\nenabled = false\n' > "$nocache"
  failed=0
  for run in cache_on cache_off; do
    args=()
    [ "$run" = cache_off ] && args=(--config "$nocache")
    got=$(bash "$0" "${args[@]}" "$@" | awk '/instructions per request/ {print $(NF-3)}')
    allowed=$(value "$run")
    limit=$(( allowed + allowed * tolerance / 100 ))
    if [ -z "$got" ]; then
      echo "CPU budget, $run: no figure measured"; failed=1
    elif [ "$got" -gt "$limit" ]; then
      echo "CPU budget, $run: $got instructions per request, over the budget $allowed (+$tolerance % = $limit)"
      failed=1
    else
      echo "CPU budget, $run: $got instructions per request, budget $allowed (+$tolerance % = $limit): ok"
    fi
  done
  rm -f "$nocache"
  exit "$failed"
fi
N1=${N1:-2000}
N2=${N2:-12000}
UP_PORT=${UP_PORT:-18380}
PP_PORT=${PP_PORT:-18383}
command -v valgrind >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null; }
command -v nginx >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null; }
if [ -z "${BIN:-}" ]; then cargo build --release --quiet; BIN=target/release/perfproxy; fi

work=$(mktemp -d /tmp/perfproxy-instr.XXXXXX)
chmod 755 "$work"; mkdir -p "$work/root/bench"
BENCH_PATH=${BENCH_PATH:-/bench/1k.bin}
mkdir -p "$work/root$(dirname "$BENCH_PATH")"
head -c 1024 /dev/zero | tr '\0' 'x' > "$work/root$BENCH_PATH"
cat > "$work/up.conf" <<NGX
worker_processes 1; daemon on; pid $work/up.pid; error_log $work/up.err;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$UP_PORT; root $work/root;
    # An OTLP sink for TRACING runs: takes the spans, answers 200.
    location = /v1/traces { client_body_buffer_size 1m; return 200; } } }
NGX
nginx -c "$work/up.conf"
trap 'kill "$(cat "$work/up.pid")" 2>/dev/null || true; rm -rf "$work"' EXIT

cat > "$work/drive.py" <<'PY'
import socket, sys
port, n, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(10)]
req = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: drive\r\nAccept: */*\r\n\r\n".encode()
bufs = [b""] * 10
def read_one(i):
    b = bufs[i]
    while b"\r\n\r\n" not in b:
        b += conns[i].recv(65536)
    head, rest = b.split(b"\r\n\r\n", 1)
    length = next(int(l.split(b":", 1)[1]) for l in head.split(b"\r\n")[1:] if l.lower().startswith(b"content-length:"))
    while len(rest) < length:
        rest += conns[i].recv(65536)
    bufs[i] = rest[length:]
    assert head.startswith(b"HTTP/1.1 200"), head[:40]
done = 0
while done < n:
    k = min(10, n - done)
    for i in range(k): conns[i].sendall(req)
    for i in range(k): read_one(i)
    done += k
PY

# count N HOLD: the process's instructions for N requests, the run held open
# until HOLD seconds after the first request (0: not held), and how long the
# requests took ("instructions seconds"). perfproxy's timers (the 50 ms
# publication of figures, health checks, alerts) cost instructions per
# second, not per request: the shorter run is held as long as the longer
# one, so the difference holds the requests' work only, however fast this
# machine drives them under callgrind.
count() {
  local n=$1 hold=$2 out="$work/callgrind.$1"
  shift 2
  valgrind --tool=callgrind --callgrind-out-file="$out" "$BIN" --listen "127.0.0.1:$PP_PORT" \
    --upstream "http://127.0.0.1:$UP_PORT" "$@" >/dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 150); do curl -s -o /dev/null "http://127.0.0.1:$PP_PORT/health/live" && break; sleep 0.2; done
  local began took
  began=$(date +%s.%N)
  python3 "$work/drive.py" "$PP_PORT" "$n" "$BENCH_PATH"
  took=$(awk -v a="$began" -v b="$(date +%s.%N)" 'BEGIN { printf "%.3f", b - a }')
  local rest
  rest=$(awk -v h="$hold" -v t="$took" 'BEGIN { printf "%.3f", (h > t) ? h - t : 0 }')
  sleep "$rest"
  kill -INT "$pid"; wait "$pid" 2>/dev/null || true
  echo "$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}') $took"
}
if [ -n "${TRACING:-}" ]; then
  printf '[tracing]\nendpoint = "http://127.0.0.1:%s"\nsample_ratio = %s\nbatch_delay_ms = 200\n' \
    "$UP_PORT" "$TRACING" > "$work/tracing.toml"
  set -- --config "$work/tracing.toml" "$@"
fi
read -r b took <<<"$(count "$N2" 0 "$@")"
read -r a _ <<<"$(count "$N1" "$took" "$@")"
echo "$BIN $*: $(( (b - a) / (N2 - N1) )) instructions per request"

#!/usr/bin/env bash
# What perfproxy's resources cost as what it holds grows, next to nginx's
# where nginx has an equivalent:
#   - idle keep-alive client connections (1k, 4k, 10k), each after one
#     request: RSS per connection, perfproxy and nginx proxy_pass;
#   - idle h2c connections (1k, 4k), each after one request (prior
#     knowledge): RSS per connection, both;
#   - idle pooled upstream connections (400 requests at once to a slow
#     upstream, clients gone): RSS per pooled connection, both;
#   - routes in use (1k, 10k, with max_routes = 10000): RSS, and the time to
#     receive /performance to its last byte;
#   - memory-cache entries (10k, 100k): RSS per entry;
#   - distinct clients (10k, 100k, each sending one request through a
#     trusted hop), without and with a per-client rate limit: RSS growth.
#
#   bench/scale.sh                      # this tree's release build
#   BIN=/tmp/perfproxy-before bench/scale.sh
#   ONLY=connections bench/scale.sh     # one part: connections, h2c, upstream, routes, cache, clients
#   IDLE_CONFIG='express_lane = false\n' ONLY=connections bench/scale.sh   # the hyper lane's idle connections
set -euo pipefail
cd "$(dirname "$0")/.."
UP_PORT=${UP_PORT:-18580}
NGX_PORT=${NGX_PORT:-18581}
PP_PORT=${PP_PORT:-18582}
SLOW_PORT=${SLOW_PORT:-18583}
ONLY=${ONLY:-}
command -v nginx >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null; }
if [ -z "${BIN:-}" ]; then cargo build --release --quiet; BIN=target/release/perfproxy; fi
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

work=$(mktemp -d /tmp/perfproxy-scale.XXXXXX)
chmod 755 "$work"; mkdir -p "$work/root/bench"
head -c 1024 /dev/zero | tr '\0' 'x' > "$work/root/bench/1k.bin"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for f in up ngx; do [ -f "$work/$f.pid" ] && kill "$(cat "$work/$f.pid")" 2>/dev/null || true; done
  sleep 0.3; rm -rf "$work"
}
trap cleanup EXIT

cat > "$work/up.conf" <<NGX
worker_processes 1; daemon on; pid $work/up.pid; error_log $work/up.err;
events { worker_connections 32768; }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 300s;
  server { listen 127.0.0.1:$UP_PORT backlog=8192; root $work/root;
    location /c/ { add_header Cache-Control "max-age=3600"; return 200 "cached"; }
    location /r/ { return 200 "route"; } } }
NGX
# nginx as the proxy beside perfproxy: one worker, its RSS measured.
cat > "$work/ngx.conf" <<NGX
worker_processes 1; daemon on; pid $work/ngx.pid; error_log $work/ngx.err;
events { worker_connections 32768; }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 300s;
  upstream backend { server 127.0.0.1:$UP_PORT; keepalive 64; }
  server { listen 127.0.0.1:$NGX_PORT backlog=8192;
    location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
NGX
nginx -c "$work/up.conf"

cat > "$work/idle.py" <<'PY'
import socket, sys, time
port, n, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
conns = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(65536)
    head, rest = buf.split(b"\r\n\r\n", 1)
    length = next(int(l.split(b":", 1)[1]) for l in head.split(b"\r\n")[1:] if l.lower().startswith(b"content-length:"))
    while len(rest) < length:
        rest += s.recv(65536)
    conns.append(s)
print("ready", flush=True)
sys.stdin.readline()
PY
cat > "$work/many.py" <<'PY'
# One request each to n distinct paths (prefix + a letters-only name, so
# every path is its own route), over one keep-alive connection; with a 4th
# argument `clients`, n requests to the path `prefix` from n distinct
# clients (X-Forwarded-For, sent from a trusted peer).
import socket, sys
port, n, prefix = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
clients = len(sys.argv) > 4 and sys.argv[4] == "clients"
def name(i):
    s = ""
    while True:
        s = chr(97 + i % 26) + s
        i //= 26
        if i == 0:
            return s
s = socket.create_connection(("127.0.0.1", port))
buf = b""
for i in range(n):
    if clients:
        who = f"100.{64 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}"
        s.sendall(f"GET {prefix} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Forwarded-For: {who}\r\n\r\n".encode())
    else:
        s.sendall(f"GET {prefix}{name(i)} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    while b"\r\n\r\n" not in buf:
        buf += s.recv(65536)
    head, buf = buf.split(b"\r\n\r\n", 1)
    length = next(int(l.split(b":", 1)[1]) for l in head.split(b"\r\n")[1:] if l.lower().startswith(b"content-length:"))
    while len(buf) < length:
        buf += s.recv(65536)
    buf = buf[length:]
PY

# nginx serving h2c (prior knowledge) in front of the same upstream.
cat > "$work/ngx-h2c.conf" <<NGX
worker_processes 1; daemon on; pid $work/ngx.pid; error_log $work/ngx.err;
events { worker_connections 32768; }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 300s;
  upstream backend { server 127.0.0.1:$UP_PORT; keepalive 64; }
  server { listen 127.0.0.1:$NGX_PORT http2 backlog=8192;
    location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
NGX
cat > "$work/idle_h2c.py" <<'PY'
# n h2c connections (prior knowledge), one GET each answered in full, then
# held open and idle.
import socket, struct, sys
port, n, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3].encode()
def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload
authority = b"127.0.0.1"
# HPACK: :method GET, :scheme http (indexed); :path and :authority literal, indexed names.
block = b"\x82\x86" + bytes([0x44, len(path)]) + path + bytes([0x41, len(authority)]) + authority
conns = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0) + frame(1, 5, 1, block))
    buf, done = b"", False
    while not done:
        chunk = s.recv(65536)
        if not chunk:
            raise SystemExit("closed")
        buf += chunk
        while len(buf) >= 9:
            length = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + length:
                break
            kind, flags, stream = buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7fffffff
            buf = buf[9 + length:]
            if kind == 4 and not flags & 1:
                s.sendall(frame(4, 1, 0))
            if stream == 1 and kind in (0, 1) and flags & 1:
                done = True
    conns.append(s)
print("ready", flush=True)
sys.stdin.readline()
PY

rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
wait_up() { for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$1/$2" && return; sleep 0.1; done; }
start_pp() {
  RUST_LOG=warn "$BIN" --listen "127.0.0.1:$PP_PORT" --upstream "http://127.0.0.1:$UP_PORT" --config "$1" >/dev/null 2>&1 &
  pp=$!; pids+=("$pp"); wait_up "$PP_PORT" health/live
}
stop_pp() { kill "$pp"; wait "$pp" 2>/dev/null || true; }
# RSS growth (KiB) of process $1 while n idle connections to port $2 are open.
idle_growth() {
  local pid=$1 port=$2 n=$3 script=${4:-idle.py} before after
  before=$(rss "$pid")
  coproc IDLE { python3 "$work/$script" "$port" "$n" /bench/1k.bin; }
  read -r _ <&"${IDLE[0]}"
  sleep 0.5; after=$(rss "$pid")
  echo >&"${IDLE[1]}"; wait "$IDLE_PID" 2>/dev/null || true
  echo $((after - before))
}

printf 'header_read_timeout_ms = 300000\nmax_connections = 20000\n%b' "${IDLE_CONFIG:-}" > "$work/idle.toml"
if [ -z "$ONLY" ] || [ "$ONLY" = connections ]; then
  echo "== idle keep-alive client connections (one request each, then idle)"
  printf '%-8s %22s %22s\n' conns "perfproxy B/conn" "nginx B/conn"
  for n in 1000 4000 10000; do
    start_pp "$work/idle.toml"
    # Warmed as nginx is below (one proxied request first): the growth is
    # what the connections add, not the first request's one-time setup.
    wait_up "$PP_PORT" bench/1k.bin
    pg=$(idle_growth "$pp" "$PP_PORT" "$n")
    stop_pp
    nginx -c "$work/ngx.conf"; sleep 0.3
    worker=$(pgrep -P "$(cat "$work/ngx.pid")" | head -1)
    wait_up "$NGX_PORT" bench/1k.bin
    ng=$(idle_growth "$worker" "$NGX_PORT" "$n")
    kill "$(cat "$work/ngx.pid")"; sleep 0.5
    printf '%-8s %22s %22s\n' "$n" "$((pg * 1024 / n))" "$((ng * 1024 / n))"
  done
fi

if [ -z "$ONLY" ] || [ "$ONLY" = h2c ]; then
  echo "== idle h2c connections (prior knowledge; one request each, then idle)"
  printf '%-8s %22s %22s\n' conns "perfproxy B/conn" "nginx B/conn"
  for n in 1000 4000; do
    start_pp "$work/idle.toml"
    wait_up "$PP_PORT" bench/1k.bin
    pg=$(idle_growth "$pp" "$PP_PORT" "$n" idle_h2c.py)
    stop_pp
    nginx -c "$work/ngx-h2c.conf"; sleep 0.3
    worker=$(pgrep -P "$(cat "$work/ngx.pid")" | head -1)
    python3 "$work/idle_h2c.py" "$NGX_PORT" 1 /bench/1k.bin </dev/null >/dev/null
    ng=$(idle_growth "$worker" "$NGX_PORT" "$n" idle_h2c.py)
    kill "$(cat "$work/ngx.pid")"; sleep 0.5
    printf '%-8s %22s %22s\n' "$n" "$((pg * 1024 / n))" "$((ng * 1024 / n))"
  done
fi

if [ -z "$ONLY" ] || [ "$ONLY" = upstream ]; then
  # Pooled idle upstream connections: n requests at once to an upstream
  # that answers after 1 s (so each takes its own upstream connection),
  # each client closing after its answer. Run twice on a fresh process:
  # the upstream keeps its connections open (they stay pooled, idle), or
  # closes each after its answer (nothing pooled); the difference in RSS
  # growth, per pooled connection, leaves out what the allocator kept of
  # the client connections just freed.
  echo "== idle pooled upstream connections (n requests at once, clients gone)"
  cat > "$work/slow.py" <<'PY'
import sys, time
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        if self.path.startswith("/slow"):
            time.sleep(1)
        self.send_response(200); self.send_header("Content-Length", "4")
        if "close" in self.path:
            self.send_header("Connection", "close")
        self.end_headers(); self.wfile.write(b"slow")
    def log_message(self, *a): pass
ThreadingHTTPServer.request_queue_size = 2048
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
  cat > "$work/burst.py" <<'PY'
import socket, sys, threading
port, n, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
def one(i):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(f"GET {path}{i} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
    while s.recv(65536):
        pass
    s.close()
ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]
for t in ts: t.start()
for t in ts: t.join()
PY
  python3 "$work/slow.py" "$SLOW_PORT" & pids+=("$!")
  sleep 0.5
  printf 'max_connections = 20000\nupstream_timeout_ms = 10000\n' > "$work/slow.toml"
  cat > "$work/ngx-slow.conf" <<NGX
worker_processes 1; daemon on; pid $work/ngx.pid; error_log $work/ngx.err;
events { worker_connections 32768; }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 300s;
  upstream backend { server 127.0.0.1:$SLOW_PORT; keepalive 512; keepalive_timeout 300s; }
  server { listen 127.0.0.1:$NGX_PORT backlog=8192;
    location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
NGX
  pooled() { ss -Htn state established "( dport = :$SLOW_PORT )" | wc -l; }
  # RSS growth (KiB) of process $1 over a burst of n requests to port $2, path $3.
  burst_growth() {
    local before after
    before=$(rss "$1"); python3 "$work/burst.py" "$2" "$n" "$3"; sleep 0.5; after=$(rss "$1")
    echo $((after - before))
  }
  n=400
  out=()
  for path in /slow/ /slow/close/; do
    RUST_LOG=warn "$BIN" --listen "127.0.0.1:$PP_PORT" --upstream "http://127.0.0.1:$SLOW_PORT" \
      --config "$work/slow.toml" >/dev/null 2>&1 &
    pp=$!; pids+=("$pp"); wait_up "$PP_PORT" fast
    out+=("$(burst_growth "$pp" "$PP_PORT" "$path")" "$(pooled)"); stop_pp; sleep 0.3
    nginx -c "$work/ngx-slow.conf"; sleep 0.3
    worker=$(pgrep -P "$(cat "$work/ngx.pid")" | head -1)
    wait_up "$NGX_PORT" fast
    out+=("$(burst_growth "$worker" "$NGX_PORT" "$path")" "$(pooled)"); kill "$(cat "$work/ngx.pid")"; sleep 0.5
  done
  # out: pp pooled-run growth, pooled; nginx pooled-run growth, pooled; then the closing runs.
  echo "RSS growth KiB: perfproxy ${out[0]} pooled, ${out[4]} closing; nginx ${out[2]} pooled, ${out[6]} closing"
  printf '%-8s %10s %22s %10s %22s\n' requests pooled "perfproxy B/conn" pooled "nginx B/conn"
  printf '%-8s %10s %22s %10s %22s\n' "$n" "${out[1]}" "$(((out[0] - out[4]) * 1024 / out[1]))" \
    "${out[3]}" "$(((out[2] - out[6]) * 1024 / out[3]))"
fi

if [ -z "$ONLY" ] || [ "$ONLY" = routes ]; then
  echo "== routes in use (max_routes = 10000); /performance timed to its last byte (median of 5)"
  printf 'max_routes = 10000\n' > "$work/routes.toml"
  printf '%-8s %12s %18s\n' routes "RSS MiB" "/performance ms"
  for n in 1000 10000; do
    start_pp "$work/routes.toml"
    python3 "$work/many.py" "$PP_PORT" "$n" /r/
    sleep 0.3
    times=$(for _ in 1 2 3 4 5; do curl -s -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:$PP_PORT/performance"; sleep 0.1; done | sort -n | sed -n 3p)
    printf '%-8s %12s %18s\n' "$n" "$(awk -v k="$(rss "$pp")" 'BEGIN {printf "%.1f", k / 1024}')" "$(awk -v t="$times" 'BEGIN {printf "%.1f", t * 1000}')"
    stop_pp
  done
  # Steady traffic: every route requested in each of the window's six slots
  # (a 6 s window: 1 s slots), so every route holds all its histograms.
  printf 'max_routes = 10000\n[alerts]\nwindow_ms = 6000\n' > "$work/steady.toml"
  start_pp "$work/steady.toml"
  for _ in 1 2 3 4 5 6 7; do python3 "$work/many.py" "$PP_PORT" 10000 /r/; sleep 1; done
  times=$(for _ in 1 2 3 4 5; do curl -s -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:$PP_PORT/performance"; sleep 0.1; done | sort -n | sed -n 3p)
  printf '%-8s %12s %18s   (every route in all 6 window slots)\n' 10000 "$(awk -v k="$(rss "$pp")" 'BEGIN {printf "%.1f", k / 1024}')" "$(awk -v t="$times" 'BEGIN {printf "%.1f", t * 1000}')"
  stop_pp
fi

if [ -z "$ONLY" ] || [ "$ONLY" = cache ]; then
  echo "== memory-cache entries (cache.memory_bytes = 256 MiB; 6-byte bodies)"
  printf '[cache]\nenabled = true\nmemory_bytes = 268435456\n' > "$work/cache.toml"
  printf '%-8s %14s %14s\n' entries "RSS growth MiB" "B/entry"
  for n in 10000 100000; do
    start_pp "$work/cache.toml"
    before=$(rss "$pp")
    python3 "$work/many.py" "$PP_PORT" "$n" /c/
    sleep 0.5; after=$(rss "$pp")
    printf '%-8s %14s %14s\n' "$n" "$(awk -v k=$((after - before)) 'BEGIN {printf "%.1f", k / 1024}')" "$(((after - before) * 1024 / n))"
    stop_pp
  done
fi

if [ -z "$ONLY" ] || [ "$ONLY" = clients ]; then
  echo "== distinct clients (X-Forwarded-For through a trusted hop): RSS growth"
  : > "$work/noclients.toml"
  printf '[[rate_limits]]\npattern = "/r/*"\nkey = "client"\nrps = 1000\n' > "$work/limit.toml"
  printf '%-8s %22s %26s\n' clients "top clients KiB" "+ per-client limit KiB"
  for n in 10000 100000; do
    out=()
    for conf in noclients limit; do
      start_pp "$work/$conf.toml"
      python3 "$work/many.py" "$PP_PORT" 200 /r/x clients
      sleep 0.3; before=$(rss "$pp")
      python3 "$work/many.py" "$PP_PORT" "$n" /r/x clients
      sleep 0.3; after=$(rss "$pp")
      out+=("$((after - before))")
      stop_pp
    done
    printf '%-8s %22s %26s\n' "$n" "${out[0]}" "${out[1]}"
  done
fi

#!/usr/bin/env bash
# Shared by the bench scripts: tools, a work
# directory cleaned on exit, an nginx upstream answering a 1 KiB body, and
# perfproxy instances started and waited for. Source it; it defines
# functions and the array `pids` only.

pids=()

# nginx and wrk (Debian packages) and a release build.
bench_tools() {
  if ! command -v nginx >/dev/null 2>&1 || ! command -v wrk >/dev/null 2>&1; then
    echo "installing nginx and wrk (Debian packages)..." >&2
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light wrk >/dev/null
  fi
  cargo build --release --quiet
}

# A fresh directory in $work, removed (with what runs from it) on exit.
bench_workdir() {
  work=$(mktemp -d "/tmp/perfproxy-$1.XXXXXX")
  chmod 755 "$work"
  trap bench_cleanup EXIT
}

bench_cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  # Every nginx bench_upstream or bench_nginx started (their pid files).
  for f in "$work"/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
  sleep 0.3
  rm -rf "$work"
}

# nginx on 127.0.0.1:$1 answering a 1 KiB body to any method; paths under
# /c/ say Cache-Control: max-age=3600, under /private/ Cache-Control: private.
bench_upstream() {
  local body
  body=$(head -c 1024 /dev/zero | tr '\0' 'x')
  cat > "$work/up.conf" <<NGX
worker_processes 1;
daemon on;
pid $work/up.pid;
error_log $work/up.err;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$1;
    location /c/ { add_header Cache-Control "max-age=3600"; return 200 "$body"; }
    location /private/ { add_header Cache-Control "private"; return 200 "$body"; }
    location / { return 200 "$body"; }
  }
}
NGX
  nginx -c "$work/up.conf" -p "$work"
}

# perfproxy (release) on 127.0.0.1:$1 in front of 127.0.0.1:$2, more
# arguments after; returns once it answers /health/live.
bench_perfproxy() {
  local port=$1 up=$2
  shift 2
  ./target/release/perfproxy --listen "127.0.0.1:$port" --upstream "http://127.0.0.1:$up" "$@" \
    >"$work/perfproxy-$port.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 50); do curl -fs "http://127.0.0.1:$port/health/live" >/dev/null && return; sleep 0.1; done
}

# Writes $work/$1.conf: $2 nginx workers (1 if not given), daemonised, its
# pid and error log in $work, the `http` block's lines from stdin (access
# log off, keep-alive unbounded before them); starts it.
bench_nginx() {
  local name=$1 workers=${2:-1}
  {
    printf 'worker_processes %s;\ndaemon on;\npid %s/%s.pid;\nerror_log %s/%s.err;\n' "$workers" "$work" "$name" "$work" "$name"
    printf 'events { worker_connections 4096; }\nhttp {\n  access_log off;\n  keepalive_requests 1000000;\n'
    cat
    printf '}\n'
  } > "$work/$name.conf"
  nginx -c "$work/$name.conf" -p "$work"
}

# One measured wrk run (-t1, $CONNECTIONS connections, $DURATION s) after a
# 2 s warm-up; wrk's other arguments after the URL. Prints
# "req/s<TAB>p99_ms<TAB>errors".
bench_wrk() {
  local url=$1 out rps p99 errors
  shift
  wrk -t1 -c "$CONNECTIONS" -d 2s "$@" "$url" >/dev/null 2>&1 || true
  out=$(wrk -t1 -c "$CONNECTIONS" -d "${DURATION}s" --latency "$@" "$url")
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; print v}' <<<"$out")
  errors=$(awk '/Socket errors|Non-2xx/ {print}' <<<"$out" | tr '\n' ' ')
  printf '%s\t%s\t%s\n' "$rps" "$p99" "$errors"
}

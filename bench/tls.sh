#!/usr/bin/env bash
# TLS clients: perfproxy terminating TLS against nginx terminating TLS, one
# worker each, in front of the same nginx upstream (1 KiB body), with wrk
# (OpenSSL) in one run. Two loads, alternated within each round:
#   keep-alive   wrk -c CONNECTIONS over TLS: requests per second once the
#                connections are up (what TLS costs per request: records);
#   handshakes   wrk with "Connection: close": a new TCP connection and a
#                full TLS handshake per request (wrk resumes no session).
# The certificate is ECDSA P-256, made with openssl for this run; TLS 1.3
# is what both end up speaking with wrk.
#
#   bench/tls.sh                               # 3 rounds x 10 s, 50 connections
#   ROUNDS=5 DURATION=15 CONNECTIONS=100 bench/tls.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-50}
UP_PORT=${UP_PORT:-18380}
NGX_PORT=${NGX_PORT:-18381}
PP_PORT=${PP_PORT:-18382}
PP_TLS_PORT=${PP_TLS_PORT:-18383}

bench_tools
bench_workdir tls
bench_upstream "$UP_PORT"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
bench_nginx ngx <<NGX
  upstream backend { server 127.0.0.1:$UP_PORT; keepalive 64; }
  server {
    listen 127.0.0.1:$NGX_PORT ssl;
    ssl_certificate $work/cert.pem;
    ssl_certificate_key $work/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:10m;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
NGX

printf '[tls]\ncert_file = "%s"\nkey_file = "%s"\n' "$work/cert.pem" "$work/key.pem" > "$work/perfproxy.toml"
RUST_LOG=warn bench_perfproxy "$PP_PORT" "$UP_PORT" --workers 1 --tls-listen "127.0.0.1:$PP_TLS_PORT" \
  --config "$work/perfproxy.toml"
curl -fsk "https://127.0.0.1:$PP_TLS_PORT/bench/1k" >/dev/null
curl -fsk "https://127.0.0.1:$NGX_PORT/bench/1k" >/dev/null

results="$work/results.tsv"
: > "$results"
printf '%-10s %-11s %6s %12s %10s\n' target load round req/s p99_ms
for round in $(seq "$ROUNDS"); do
  for load in keep-alive handshakes; do
    for t in "nginx=$NGX_PORT" "perfproxy=$PP_TLS_PORT"; do
      name=${t%%=*}; port=${t#*=}
      url="https://127.0.0.1:$port/bench/1k"
      headers=()
      [ "$load" = handshakes ] && headers=(-H "Connection: close")
      IFS=$'\t' read -r rps p99 errors < <(bench_wrk "$url" "${headers[@]}")
      printf '%-10s %-11s %6s %12s %10s  %s\n' "$name" "$load" "$round" "$rps" "$p99" "$errors"
      printf '%s\t%s\t%s\t%s\n' "$name" "$load" "$rps" "$p99" >> "$results"
    done
  done
done

echo
echo "medians over $ROUNDS rounds (wrk -t1 -c $CONNECTIONS -d ${DURATION}s, 1 KiB body, one worker each):"
python3 - "$results" <<'PY'
import sys; sys.path.insert(0, "bench"); from medians import medians
med = medians(sys.argv[1], keys=2)
for (n, load), (rps, p99) in sorted(med.items()):
    print(f"  {n:<10} {load:<11} {rps:>10.0f} req/s   p99 {p99:8.3f} ms")
for load in ("keep-alive", "handshakes"):
    base, pp = med[("nginx", load)], med[("perfproxy", load)]
    print(f"perfproxy / nginx, TLS {load}: throughput {pp[0] / base[0]:.2f}x   p99 {pp[1] / base[1]:.2f}x")
PY

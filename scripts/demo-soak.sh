#!/usr/bin/env bash
# Runs the demo (the README's run command) for DURATION seconds (default 600)
# and checks what its alerts did, as an operator would read them:
#   - slow_requests for GET /api/documents/search fires at most once and
#     does not resolve while the demo keeps one in ten searches over 2 s;
#   - cache_hit_rate never fires (the demo's IDs make uncacheable misses,
#     which do not count against the hit rate);
#   - every firing alert's message states its current value.
# /performance is read every 5 s; the demo's log is kept in $LOG.
#   DURATION=600 scripts/demo-soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-600}
PORT=${PORT:-14001}
LOG=${LOG:-/tmp/perfproxy-demo-soak.log}

cargo build --release --example demo --quiet
NO_COLOR=1 ./target/release/examples/demo --listen "127.0.0.1:$PORT" >"$LOG" 2>&1 &
demo=$!
trap 'kill "$demo" 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$PORT/health/live" >/dev/null && break; sleep 0.1; done

python3 - "$PORT" "$DURATION" "$LOG" <<'PY'
import json, re, sys, time, urllib.request
port, duration, log = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
problems, seen_firing = [], set()
end = time.time() + duration
while time.time() < end:
    time.sleep(5)
    doc = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/performance", timeout=5))
    for a in doc["alerts"]:
        seen_firing.add((a["rule"], a.get("subject")))
        shown = f"{round(a['value'], 3):g}".rstrip(".")
        numbers = re.findall(r"[0-9]+(?:\.[0-9]+)?", a["message"])
        if not any(abs(float(n) - round(a["value"], 3)) < 1e-9 for n in numbers):
            problems.append(f"message does not state the value {shown}: {a['message']}")
text = open(log).read()
def count(status, rule, subject=None):
    pat = re.compile(r"alert " + status + r".*rule=\"?" + rule + (r".*" + re.escape(subject) if subject else ""))
    return sum(1 for line in text.splitlines() if pat.search(line))
search = "GET /api/documents/search"
fired, resolved = count("firing", "slow_requests", search), count("resolved", "slow_requests", search)
hit_rate = count("firing", "cache_hit_rate")
print(f"after {duration} s: slow_requests({search}) fired {fired}, resolved {resolved}; cache_hit_rate fired {hit_rate}")
print(f"alerts seen firing: {sorted(str(s) for s in seen_firing)}")
if fired > 1:
    problems.append(f"slow_requests for {search} fired {fired} times")
if resolved:
    problems.append(f"slow_requests for {search} resolved {resolved} times while the slow share held")
if duration >= 120 and fired == 0:
    problems.append(f"slow_requests for {search} never fired")
if hit_rate:
    problems.append(f"cache_hit_rate fired {hit_rate} times")
for p in problems[:20]:
    print("PROBLEM:", p)
sys.exit(1 if problems else 0)
PY

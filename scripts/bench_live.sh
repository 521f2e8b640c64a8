#!/usr/bin/env bash
# The live page's cost (BENCHMARKS.md, "Live page"): the daemon's CPU with
# the page open in headless chromium (it polls /history, /model and
# /recent once a second) against without, idle and under heavy ingest, and
# the page's render time for K = 32 and 2,048 recent points (the page logs
# each render's time to the console when its address has `#bench`).
#
#   scripts/bench_live.sh [SECONDS]    (default 30 per idle measurement)
#
# Needs chromium and python3. Prints one line per measurement.
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-30}"
cargo build --release --quiet --bin emstream --example daemon_load
bin=target/release/emstream
load=target/release/examples/daemon_load
work="$(mktemp -d)"
browser=""
trap '[ -n "$browser" ] && kill "$browser" 2>/dev/null; kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT
tck="$(getconf CLK_TCK)"

# Starts the daemon with ARGS; sets pid, listen, admin.
start() {
    "$bin" run --listen 127.0.0.1:0 --admin 127.0.0.1:0 "$@" 2>"$work/err" &
    pid=$!
    for _ in $(seq 400); do
        grep -q 'listening on' "$work/err" 2>/dev/null && break
        sleep 0.05
    done
    listen="$(grep -o 'listening on [0-9.:]*' "$work/err" | awk '{print $3}')"
    admin="$(grep -o 'admin on [0-9.:]*' "$work/err" | awk '{print $3}')"
}

# CPU seconds the daemon has used.
cpu() { awk -v t="$tck" '{printf "%.3f\n", ($14 + $15) / t}' "/proc/$pid/stat"; }

# Opens the page in headless chromium (real time), its console on
# $work/console; sets browser.
open_page() {
    chromium --headless --no-sandbox --disable-gpu --disable-dev-shm-usage \
        --user-data-dir="$work/profile" --window-size=1280,900 \
        --enable-logging=stderr --v=0 "http://$admin/#bench" 2>"$work/console" &
    browser=$!
}

close_page() { kill "$browser" 2>/dev/null; wait "$browser" 2>/dev/null || true; browser=""; }

# 1. Idle daemon, K = 32, the ring full: CPU without and with the page.
start -k 32 --warmup 3000 --batch-size 200 --seed 3
python3 - "$listen" <<'EOF'
import random, socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
random.seed(1)
centres = [(random.uniform(0, 100), random.uniform(0, 100)) for _ in range(32)]
s = socket.create_connection((host, int(port)))
s.sendall(b"speed,load\n")
for _ in range(100):
    rows = []
    for _ in range(200):
        cx, cy = random.choice(centres)
        rows.append("%.4f,%.4f" % (random.gauss(cx, 2), random.gauss(cy, 2)))
    s.sendall(("\n".join(rows) + "\n").encode())
    time.sleep(0.02)
s.close()
EOF
until curl -sf "http://$admin/history" | grep -q '"points":20000'; do sleep 0.2; done
sleep 2
a="$(cpu)"; sleep "$secs"; b="$(cpu)"
echo "idle daemon, K = 32, no page: $(awk -v a="$a" -v b="$b" -v s="$secs" 'BEGIN {printf "%.3f", 100 * (b - a) / s}') % of a core"
open_page
sleep 5
a="$(cpu)"; sleep "$secs"; b="$(cpu)"
close_page
echo "idle daemon, K = 32, page open: $(awk -v a="$a" -v b="$b" -v s="$secs" 'BEGIN {printf "%.3f", 100 * (b - a) / s}') % of a core"
grep -o 'render-ms [0-9.]* points [0-9]* K [0-9]*' "$work/console" >"$work/renders" || true
# The first render compiles the scripts: reported apart.
first="$(head -1 "$work/renders" | awk '{print $2}')"
what="$(tail -1 "$work/renders" | awk '{print "K = " $6 ", " $4 " points"}')"
tail -n +2 "$work/renders" | awk '{print $2}' | sort -n >"$work/times"
n="$(wc -l <"$work/times")"
echo "page render, $what: median $(sed -n "$(((n + 1) / 2))p" "$work/times") ms, max $(tail -1 "$work/times") ms over $n renders (first $first ms)"
kill "$pid"; wait "$pid" 2>/dev/null || true

# 2. Heavy ingest, K = 2, 4 connections of 2.5M points: the daemon's CPU
#    and wall time without and with the page.
for page in no yes; do
    start -k 2 --max-connections 16
    [ "$page" = yes ] && { open_page; sleep 5; }
    a="$(cpu)"; t0="$(date +%s.%N)"
    "$load" send "$listen" 4 2500000 >/dev/null
    until curl -sf "http://$admin/history" | grep -q '"points":10000000'; do sleep 0.05; done
    t1="$(date +%s.%N)"; b="$(cpu)"
    [ "$page" = yes ] && close_page
    awk -v a="$a" -v b="$b" -v t0="$t0" -v t1="$t1" -v p="$page" 'BEGIN {
        printf "10M points on 4 connections, page open: %s: %.2f s wall (%.1f M points/s), daemon %.2f CPU s\n", p, t1 - t0, 10 / (t1 - t0), b - a }'
    kill "$pid"; wait "$pid" 2>/dev/null || true
done

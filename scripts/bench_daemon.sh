#!/usr/bin/env bash
# Daemon benchmarks (BENCHMARKS.md, "TCP daemon"): aggregate loopback
# throughput with 4 client connections, resident memory with 1,000 idle
# connections, time from SIGTERM to exit with 100 idle connections.
#
#   scripts/bench_daemon.sh [POINTS_PER_CLIENT]    (default 5,000,000)
#
# Needs curl. Prints one line per measurement.
set -euo pipefail
cd "$(dirname "$0")/.."

per_client="${1:-5000000}"
cargo build --release --quiet --bin emstream --example daemon_load
bin=target/release/emstream
load=target/release/examples/daemon_load
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
ulimit -n 8192

# Starts the daemon; sets pid, listen, admin.
start() {
    "$bin" run --listen 127.0.0.1:0 --admin 127.0.0.1:0 --max-connections 2000 \
        -k 2 --checkpoint "$work/model.ckpt" --overwrite "$@" 2>"$work/err" &
    pid=$!
    for _ in $(seq 100); do
        grep -q 'listening on' "$work/err" 2>/dev/null && break
        sleep 0.05
    done
    listen="$(grep -o 'listening on [0-9.:]*' "$work/err" | awk '{print $3}')"
    admin="$(grep -o 'admin on [0-9.:]*' "$work/err" | awk '{print $3}')"
}

metric() {
    curl -s "http://$admin/metrics" | awk -v m="$1" '$1 == m {print $2}'
}

# 1. Throughput: 4 clients at full speed; the clock runs from the first
#    connect until the daemon has learned every point (read from /metrics).
#    The daemon's CPU time (user + system, all its threads) is printed too:
#    on a shared machine it is steadier than the wall clock.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
start
total=$((4 * per_client))
c0=$(cpu_ticks "$pid")
sent="$("$load" send "$listen" 4 "$per_client")"
# The clock starts at the first connect, which the load tool reports: the
# seconds it spends rendering the points before are not the daemon's.
t0="$(awk '{print $NF}' <<<"$sent")"
while [ "$(metric emstream_points_learned_total)" != "$total" ]; do sleep 0.01; done
t1=$(date +%s.%N)
c1=$(cpu_ticks "$pid")
kill -TERM "$pid"; wait "$pid"
awk -v n="$total" -v a="$t0" -v b="$t1" -v c="$((c1 - c0))" -v hz="$(getconf CLK_TCK)" -v la="$(cut -d' ' -f1 /proc/loadavg)" \
    'BEGIN { printf "throughput: %d points over 4 connections in %.3f s = %.2f M points/s wall; daemon CPU %.2f s = %.2f M points per CPU-second (load average %s)\n", n, b - a, n / (b - a) / 1e6, c / hz, n / (c / hz) / 1e6, la }'

# 2. Resident memory with 1,000 idle connections.
start
coproc IDLE { "$load" idle "$listen" 1000; }
read -r _ <&"${IDLE[0]}"
while [ "$(metric emstream_connections_open)" != "1000" ]; do sleep 0.05; done
rss_kib=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
echo "rss: $((rss_kib / 1024)) MiB ($rss_kib KiB) with 1000 idle connections"
kill -TERM "$pid"; wait "$pid" || true
eval "exec ${IDLE[1]}>&-"; wait "$IDLE_PID" 2>/dev/null || true

# 3. SIGTERM to exit with 100 idle connections (a model to save).
start
"$load" send "$listen" 1 100000 >/dev/null
while [ "$(metric emstream_points_learned_total)" != "100000" ]; do sleep 0.01; done
coproc IDLE { "$load" idle "$listen" 100; }
read -r _ <&"${IDLE[0]}"
while [ "$(metric emstream_connections_open)" != "100" ]; do sleep 0.05; done
t0=$(date +%s.%N)
kill -TERM "$pid"; wait "$pid"
t1=$(date +%s.%N)
eval "exec ${IDLE[1]}>&-"; wait "$IDLE_PID" 2>/dev/null || true
awk -v a="$t0" -v b="$t1" 'BEGIN { printf "sigterm-to-exit: %.3f s with 100 idle connections (final checkpoint included)\n", b - a }'

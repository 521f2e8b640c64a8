#!/usr/bin/env bash
# Group benchmark: aggregate throughput of `emstream worker` x W
# + `emstream reducer` learning one model from a partitioned JetStream
# stream, for d = 2 (two-clusters) and d = 32 (wide-32), K = 10.
#
# For each dimension and each worker count, a fresh nats-server (free
# loopback port, its own store) gets N points in P partitions (bench.p0 ..,
# crates/emstream-core/examples/gen_stream.rs piped into crates/emstream/examples/jetstream_load.rs, 100 lines a
# message); then the reducer (--stop-after N) and W workers run until the
# group is finished. Throughput = points / wall time of the reducer, from
# its start (warm-up fit included) to its exit. The reducer's and workers'
# summary lines give the measured per-message costs (µs per statistics
# message applied, per KV commit, per E-step, per publish).
#
# Usage: scripts/bench_group.sh [--points N] [--partitions P] [--workers "1 2"]
#                               [--batch B] [--dims "2 32"] [--no-build]
#   --no-build  use the release binaries already in target/release
# Needs nats-server (Debian package nats-server) on the PATH or in /usr/sbin.
set -euo pipefail

points=400000
partitions=4
workers_list="1 2"
batch=1000
dims="2 32"
build=1
while [ $# -gt 0 ]; do
    case "$1" in
        --points) points="$2"; shift ;;
        --partitions) partitions="$2"; shift ;;
        --workers) workers_list="$2"; shift ;;
        --batch) batch="$2"; shift ;;
        --dims) dims="$2"; shift ;;
        --no-build) build=0 ;;
        -h|--help) sed -n "2,18p" "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench_group.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
say() { echo "bench_group.sh: $*" >&2; }

server="$(command -v nats-server || true)"
[ -z "$server" ] && [ -x /usr/sbin/nats-server ] && server=/usr/sbin/nats-server
if [ -z "$server" ]; then
    say "nats-server is not installed (apt-get install nats-server)"
    exit 1
fi

if [ "$build" = 1 ]; then
    cargo build --release --quiet --bin emstream --example gen_stream --example jetstream_load
fi
bin="$root/target/release/emstream"
gen="$root/target/release/examples/gen_stream"
load="$root/target/release/examples/jetstream_load"

tmp="$(mktemp -d)"
server_pid=""
pids=()
stop_server() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
    server_pid=""
}
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    stop_server
    rm -rf "$tmp"
}
trap cleanup EXIT

start_server() {
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
    rm -rf "$tmp/store"
    "$server" -a 127.0.0.1 -p "$port" -js -sd "$tmp/store" >"$tmp/server.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return; fi
        sleep 0.05
    done
    say "nats-server did not start"; exit 1
}

echo "| d | workers | points | wall s | points/s | reducer: per message, per commit | worker: per E-step, per publish |"
echo "|---:|---:|---:|---:|---:|---|---|"
for d in $dims; do
    case "$d" in
        2) mixture=two-clusters ;;
        32) mixture=wide-32 ;;
        *) say "--dims: 2 and 32 only"; exit 2 ;;
    esac
    for w in $workers_list; do
        start_server
        per=$((points / partitions))
        for k in $(seq 0 $((partitions - 1))); do
            "$gen" --mixture "$mixture" --n "$per" --seed $((k + 1)) |
                "$load" --url "127.0.0.1:$port" --stream BENCH --subject "bench.p$k" --lines 100 >/dev/null
        done
        total=$((per * partitions))
        common=(--nats "nats://127.0.0.1:$port" --group bench --stream BENCH --subject-prefix bench
            --partitions "$partitions" --dim "$d")
        start=$(date +%s.%N)
        "$bin" reducer "${common[@]}" -k 10 --batch-size "$batch" --warmup 5000 --seed 1 \
            --stop-after "$total" 2>"$tmp/reducer.log" &
        reducer=$!
        pids=()
        for i in $(seq "$w"); do
            "$bin" worker "${common[@]}" --id "w$i" 2>"$tmp/worker$i.log" &
            pids+=($!)
        done
        wait "$reducer" || { cat "$tmp/reducer.log" >&2; exit 1; }
        end=$(date +%s.%N)
        for p in "${pids[@]}"; do wait "$p" || true; done
        pids=()
        line=$(grep "points learned, revision" "$tmp/reducer.log" | tail -1)
        got=$(sed -n 's/.*emstream: \([0-9]*\) points learned.*/\1/p' <<<"$line")
        [ "$got" = "$total" ] || { say "learned $got points, not $total"; cat "$tmp/reducer.log" >&2; exit 1; }
        red=$(sed -n 's/.*points\/s; \(.*\)$/\1/p' <<<"$line")
        wk=$(grep -h "worker w.*per E-step" "$tmp"/worker*.log | sed -n 's/.*re-reads; \(.*\)$/\1/p' | paste -sd ';' -)
        python3 -c "w=$end-$start; print(f'| $d | $w | $total | {w:.2f} | {$total/w/1e3:.0f} k | $red | $wk |')"
        stop_server
    done
done

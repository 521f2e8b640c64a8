#!/usr/bin/env bash
# JetStream replay benchmark: loads 1M 2-D points (crates/emstream-core/examples/gen_stream.rs)
# into a stream of a nats-server this script starts on a free loopback port,
# in messages of 100 lines (crates/emstream/examples/jetstream_load.rs), then times
# `emstream run --nats ... --stop-when-idle 0.5` replaying the whole stream
# into a model with a checkpoint, several times.
#
# Usage: scripts/bench_jetstream.sh [--points N] [--lines L] [--runs R]
# Needs nats-server (Debian package nats-server) on the PATH or in /usr/sbin.
#
# The rate is points / (wall time - the idle wait): the run ends 0.5 s after
# the last message arrived, and that wait is not replay work. The raw wall
# time is printed too.
set -euo pipefail

points=1000000
lines=100
runs=5
while [ $# -gt 0 ]; do
    case "$1" in
        --points) points="$2"; shift ;;
        --lines) lines="$2"; shift ;;
        --runs) runs="$2"; shift ;;
        -h|--help) sed -n "2,15p" "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench_jetstream.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done
idle=0.5

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
say() { echo "bench_jetstream.sh: $*" >&2; }

server="$(command -v nats-server || true)"
[ -z "$server" ] && [ -x /usr/sbin/nats-server ] && server=/usr/sbin/nats-server
if [ -z "$server" ]; then
    say "nats-server is not installed (apt-get install nats-server)"
    exit 1
fi

cargo build --release --quiet --bin emstream --example gen_stream --example jetstream_load
bin="$root/target/release/emstream"

tmp="$(mktemp -d)"
server_pid=""
cleanup() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
"$server" -a 127.0.0.1 -p "$port" -js -sd "$tmp/store" >"$tmp/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
    sleep 0.05
done

say "loading $points points in messages of $lines lines"
"$root/target/release/examples/gen_stream" --n "$points" --seed 1 |
    "$root/target/release/examples/jetstream_load" --url "127.0.0.1:$port" --stream BENCH --lines "$lines" >&2

echo "| run | wall s | replay s (wall - ${idle} s idle) | points/s |"
echo "|---:|---:|---:|---:|"
rates=()
for r in $(seq "$runs"); do
    rm -f "$tmp/model.ckpt"*
    start=$(date +%s.%N)
    "$bin" run --nats "nats://127.0.0.1:$port" --stream BENCH --consumer "bench$r" \
        --checkpoint "$tmp/model.ckpt" -k 2 --stop-when-idle "$idle" 2>"$tmp/run.log"
    end=$(date +%s.%N)
    grep -q "points used" "$tmp/run.log" || { cat "$tmp/run.log" >&2; exit 1; }
    got=$(sed -n 's/.*: \([0-9]*\) points used.*/\1/p' "$tmp/run.log")
    [ "$got" = "$points" ] || { say "run $r learned $got points, not $points"; cat "$tmp/run.log" >&2; exit 1; }
    rate=$(python3 -c "w=$end-$start; print(f'{w:.3f} {w-$idle:.3f} {$points/(w-$idle)/1e6:.2f} M')")
    read -r wall replay mps _ <<<"$rate"
    echo "| $r | $wall | $replay | $mps M |"
    rates+=("$mps")
done
median=$(printf '%s\n' "${rates[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
echo
echo "median: $median M points/s (target >= 2 M points/s)"

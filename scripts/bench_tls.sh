#!/usr/bin/env bash
# Plain TCP vs TLS + token ingestion of 1M 2-D points over loopback.
# Needs openssl (the test certificate) and socat (the clients). Usage: scripts/bench_tls.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="${BENCH_TMP:-/tmp}/emstream-tls-bench"; mkdir -p "$dir"; cd "$dir"
(cd "$root" && cargo build --release --quiet --bin emstream --example gen_stream)
B="$root/target/release/emstream"
[ -f p.csv ] || "$root/target/release/examples/gen_stream" --n 1000000 > p.csv
[ -f cert.pem ] || openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout key.pem -out cert.pem -subj /CN=localhost -days 1 2>/dev/null
echo "s3cret-token" > token; chmod 600 token key.pem
one() {
    local mode="$1"; shift
    rm -f err.log ck ck.*
    "$B" run --listen 127.0.0.1:0 --checkpoint ck --checkpoint-every 1000000 "$@" 2> err.log < /dev/null &
    local pid=$!
    local port=""
    for _ in $(seq 200); do
        port=$(grep -o 'listening on 127.0.0.1:[0-9]*' err.log 2>/dev/null | sed 's/.*://' || true)
        [ -n "$port" ] && break; sleep 0.02
    done
    local t0=$(date +%s.%N)
    if [ "$mode" = plain ]; then
        socat -u FILE:p.csv TCP:127.0.0.1:$port
    else
        (cat token; cat p.csv) | socat -u STDIN OPENSSL:127.0.0.1:$port,verify=0
    fi
    # The checkpoint due at 1M points: every point is learned.
    while [ ! -f ck ]; do sleep 0.005; done
    local t1=$(date +%s.%N)
    kill -TERM $pid; wait $pid || true
    echo "$mode: $(echo "$t1 - $t0" | bc) s wall; $(grep 'points used' err.log)"
}
for i in 1 2 3; do
    one plain
    one tls --tls-cert cert.pem --tls-key key.pem --auth-token-file token
done

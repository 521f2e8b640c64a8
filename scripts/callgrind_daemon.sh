#!/usr/bin/env bash
# Instructions per point of the TCP daemon (BENCHMARKS.md, "TCP daemon:
# where the time goes"): the `profiling` build under callgrind, fed by
# `daemon_load` over 4 connections as in scripts/bench_daemon.sh, run for
# two sizes; the difference of the totals over the difference of the points
# is the marginal cost per point (start-up and warm-up cancel out). Exact
# and repeatable on a loaded machine, unlike the wall clock.
#
#   scripts/callgrind_daemon.sh [POINTS_PER_CLIENT]    (default 250,000; the
#                                                       second run doubles it)
#
# Needs valgrind and curl. Leaves callgrind.daemon.{1,2}.out in the current
# directory for callgrind_annotate --inclusive=yes.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
per="${1:-250000}"
(cd "$root" && cargo build --profile profiling --quiet --bin emstream --example daemon_load)
bin="$root/target/profiling/emstream"
load="$root/target/profiling/examples/daemon_load"

# Runs the daemon under callgrind for 4 x $1 points; writes $2.
measure() {
    local work pid listen admin total
    work="$(mktemp -d)"
    valgrind --tool=callgrind --callgrind-out-file="$2" "$bin" run --listen 127.0.0.1:0 \
        --admin 127.0.0.1:0 -k 2 --checkpoint "$work/model.ckpt" --overwrite 2>"$work/err" &
    pid=$!
    for _ in $(seq 600); do
        grep -q 'listening on' "$work/err" 2>/dev/null && break
        sleep 0.1
    done
    listen="$(grep -o 'listening on [0-9.:]*' "$work/err" | awk '{print $3}')"
    admin="$(grep -o 'admin on [0-9.:]*' "$work/err" | awk '{print $3}')"
    total=$((4 * $1))
    "$load" send "$listen" 4 "$1" >/dev/null
    until [ "$(curl -s "http://$admin/metrics" | awk '$1 == "emstream_points_learned_total" {print $2}')" = "$total" ]; do
        sleep 0.5
    done
    kill -TERM "$pid"
    wait "$pid"
    rm -rf "$work"
}

total_ir() { callgrind_annotate "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}'; }
# (awk reads to the end: an early exit would stop callgrind_annotate with
# SIGPIPE, which pipefail makes fatal.)
stage_ir() { callgrind_annotate --inclusive=yes "$1" 2>/dev/null | awk -v f="$2" '!done && index($0, f) {gsub(",", "", $1); print $1; done = 1}'; }

measure "$per" callgrind.daemon.1.out
measure "$((2 * per))" callgrind.daemon.2.out
points=$((4 * per))
for what in total "learner:pipeline::learn::Learner::run [" "parser:pipeline::parse::parser_loop ["; do
    if [ "$what" = total ]; then
        a=$(total_ir callgrind.daemon.1.out); b=$(total_ir callgrind.daemon.2.out); name=total
    else
        name=${what%%:*}; f=${what#*:}
        a=$(stage_ir callgrind.daemon.1.out "$f"); b=$(stage_ir callgrind.daemon.2.out "$f")
    fi
    awk -v n="$name" -v a="$a" -v b="$b" -v p="$points" \
        'BEGIN { printf "%s: %.0f instructions per point\n", n, (b - a) / p }'
done

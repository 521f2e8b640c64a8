#!/usr/bin/env bash
# Whole-process benchmark of emstream: builds release, generates CSV streams
# with crates/emstream-core/examples/gen_stream.rs, times `emstream run` (and `emstream score` if
# present) reading them on stdin, measures peak RSS over a 10M-point stream,
# and prints a markdown table with the targets.
#
# Usage: scripts/bench.sh [--quick] [--runs N] [--keep]
#   --quick   10x fewer points (a smoke test of the script, not a benchmark)
#   --runs N  timed runs per command (default 5)
#   --keep    keep the temporary directory with the streams
# Environment:
#   EMSTREAM_BIN  binary to benchmark instead of target/release/emstream
#                 (it must accept the same `run`/`score` arguments)
#   BENCH_NO_HYPERFINE=1  time with the plain loop even if hyperfine exists
#   BENCH_TMP     parent directory for the streams (default: $TMPDIR or /tmp);
#                 needs about 600 MB free
#
# Timing uses hyperfine if it is installed or can be installed with apt-get;
# otherwise a plain loop timed with `date`. Peak RSS comes from
# `/usr/bin/time -v` (package `time`, installed if missing).
set -euo pipefail
shopt -s inherit_errexit

quick=0
runs=5
keep=0
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1 ;;
        --runs) runs="$2"; shift ;;
        --runs=*) runs="${1#--runs=}" ;;
        --keep) keep=1 ;;
        -h|--help) sed -n "2,20p" "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

say() { echo "bench.sh: $*" >&2; }

# ---- tools ----------------------------------------------------------------
as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo -n "$@"; else return 1; fi
}
apt_updated=0
apt_install() {
    command -v apt-get >/dev/null || return 1
    if [ "$apt_updated" = 0 ]; then
        as_root apt-get update -qq >/dev/null 2>&1 || return 1
        apt_updated=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1
}

have_hyperfine=0
if [ "${BENCH_NO_HYPERFINE:-0}" = 1 ]; then
    :
elif command -v hyperfine >/dev/null || { say "installing hyperfine"; apt_install hyperfine; }; then
    command -v hyperfine >/dev/null && have_hyperfine=1
fi
[ "$have_hyperfine" = 1 ] || say "hyperfine unavailable: timing with a plain loop"
if [ ! -x /usr/bin/time ]; then
    say "installing time (for peak RSS)"
    apt_install time || say "/usr/bin/time unavailable: peak RSS will be n/a"
fi

# ---- build ----------------------------------------------------------------
say "building release"
cargo build --release --quiet --bin emstream --example gen_stream
bin="${EMSTREAM_BIN:-$root/target/release/emstream}"
gen="$root/target/release/examples/gen_stream"
if ! "$bin" run --help >/dev/null 2>&1; then
    say "$bin has no 'run' subcommand yet: nothing to benchmark"
    exit 1
fi
has_score=0
"$bin" score --help >/dev/null 2>&1 && has_score=1

tmp="$(mktemp -d "${BENCH_TMP:-${TMPDIR:-/tmp}}/emstream-bench.XXXXXX")"
if [ "$keep" = 1 ]; then say "streams kept in $tmp"; else trap 'rm -rf "$tmp"' EXIT; fi

load_before=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- streams --------------------------------------------------------------
scale=1
[ "$quick" = 1 ] && scale=10
n1=$((1000000 / scale))
n10=$((10000000 / scale))
say "generating streams in $tmp"
"$gen" --mixture two-clusters --n "$n1" --seed 1 >"$tmp/two.csv"
"$gen" --mixture eight-d --n "$n1" --seed 2 >"$tmp/eight.csv"
"$gen" --mixture two-clusters --n "$n10" --seed 3 >"$tmp/big.csv"
"$gen" --mixture wide-32 --n "$n1" --seed 4 >"$tmp/wide32.csv"

# ---- measuring ------------------------------------------------------------
# Each run starts from an empty checkpoint directory: an existing checkpoint
# would be resumed (no warm-up) or refused (other dimension).
fresh() { rm -rf "$tmp/ck" && mkdir "$tmp/ck"; }

# time_cmd NAME CMD -> prints "mean sd cpu" in seconds (cpu: mean user+system
# CPU seconds, "-" when the plain loop cannot tell)
time_cmd() {
    local name="$1" cmd="$2"
    if [ "$have_hyperfine" = 1 ]; then
        hyperfine --style none --warmup 1 --runs "$runs" \
            --prepare "rm -rf '$tmp/ck' && mkdir '$tmp/ck'" \
            --export-csv "$tmp/$name.timing.csv" "$cmd" >/dev/null 2>"$tmp/hyperfine.err" \
            || { cat "$tmp/hyperfine.err" >&2; return 1; }
        # command,mean,stddev,median,user,system,min,max
        awk -F, 'NR == 2 { printf "%.4f %.4f %.3f\n", $2, ($3 == "" ? 0 : $3), $5 + $6 }' "$tmp/$name.timing.csv"
    else
        local i t0 t1
        fresh
        bash -c "$cmd" >/dev/null || { say "failed: $cmd"; return 1; }
        : >"$tmp/$name.times"
        for i in $(seq "$runs"); do
            fresh
            t0=$(date +%s.%N)
            bash -c "$cmd" >/dev/null
            t1=$(date +%s.%N)
            echo "$t0 $t1" | awk '{ printf "%.6f\n", $2 - $1 }' >>"$tmp/$name.times"
        done
        awk '{ s += $1; ss += $1 * $1; n++ }
             END { m = s / n; v = (n > 1) ? (ss - n * m * m) / (n - 1) : 0;
                   printf "%.4f %.4f -\n", m, (v > 0 ? sqrt(v) : 0) }' "$tmp/$name.times"
    fi
}

# peak_rss CMD -> "MiB cpu-seconds" of one run (or "n/a -")
peak_rss() {
    local cmd="$1"
    if [ ! -x /usr/bin/time ]; then echo "n/a -"; return; fi
    fresh
    /usr/bin/time -v -o "$tmp/rss.txt" bash -c "exec $cmd" >/dev/null 2>"$tmp/rss.err" \
        || { cat "$tmp/rss.err" >&2; say "failed: $cmd"; return 1; }
    awk -F: '/Maximum resident set size/ { rss = $2 / 1024 }
             /User time \(seconds\)|System time \(seconds\)/ { cpu += $2 }
             END { printf "%.1f %.3f\n", rss, cpu }' "$tmp/rss.txt"
}

rows=()
fails=0
# measure NAME POINTS CMD THROUGHPUT_TARGET(M/s or -) RSS_TARGET(MiB or -)
measure() {
    local name="$1" points="$2" cmd="$3" tput_target="$4" rss_target="$5"
    say "timing $name"
    local mean sd cpu rss cpu1 mps target verdict timing memory
    timing=$(time_cmd "$name" "$cmd")
    read -r mean sd cpu <<<"$timing"
    memory=$(peak_rss "$cmd")
    read -r rss cpu1 <<<"$memory"
    [ "$cpu" = "-" ] && cpu="$cpu1"
    mps=$(awk -v n="$points" -v t="$mean" 'BEGIN { printf "%.2f", n / t / 1e6 }')
    target=""
    verdict="pass"
    if [ "$tput_target" != "-" ]; then
        target=">= $tput_target M pts/s"
        awk -v a="$mps" -v b="$tput_target" 'BEGIN { exit !(a >= b) }' || verdict="FAIL"
    fi
    if [ "$rss_target" != "-" ]; then
        target="${target:+$target, }RSS <= $rss_target MiB"
        if [ "$rss" = "n/a" ] || ! awk -v a="$rss" -v b="$rss_target" 'BEGIN { exit !(a <= b) }'; then
            verdict="FAIL"
        fi
    fi
    [ "$verdict" = pass ] || fails=$((fails + 1))
    rows+=("| $name | $points | $mean ± $sd | $cpu | $mps | $rss | $target | $verdict |")
}

ck="$tmp/ck/m.ckpt"
measure "run 2-D K=2 full" "$n1" "'$bin' run -k 2 --checkpoint '$ck' < '$tmp/two.csv'" 10 -
measure "run 8-D K=6 full" "$n1" "'$bin' run -k 6 --checkpoint '$ck' < '$tmp/eight.csv'" 3 -
# Wide points, the E-step on 1 thread and on every core (the
# default), the same model either way.
measure "run 32-D K=10 full, 1 thread" "$n1" "'$bin' run -k 10 --threads 1 --checkpoint '$ck' < '$tmp/wide32.csv'" - -
measure "run 32-D K=10 full, default threads" "$n1" "'$bin' run -k 10 --checkpoint '$ck' < '$tmp/wide32.csv'" - -
# The parser stage alone sets the pace when learning costs little (K = 1,
# diagonal): one parse thread against two (--parse-threads).
measure "run 32-D K=1 diag, 1 parse thread" "$n1" "'$bin' run -k 1 --covariance diag --threads 1 --parse-threads 1 --checkpoint '$ck' < '$tmp/wide32.csv'" - -
measure "run 32-D K=1 diag, 2 parse threads" "$n1" "'$bin' run -k 1 --covariance diag --threads 1 --parse-threads 2 --checkpoint '$ck' < '$tmp/wide32.csv'" - -
measure "run 2-D K=2 full (memory)" "$n10" "'$bin' run -k 2 --checkpoint '$ck' < '$tmp/big.csv'" - 32
if [ "$has_score" = 1 ]; then
    fresh
    "$bin" run -k 2 --checkpoint "$tmp/model.ckpt" <"$tmp/two.csv" >/dev/null
    measure "score 2-D K=2" "$n1" "'$bin' score --model '$tmp/model.ckpt' < '$tmp/two.csv'" 10 -
else
    say "no 'score' subcommand: skipping the score benchmark"
fi

# ---- report ---------------------------------------------------------------
timer="hyperfine, $runs runs after 1 warm-up"
[ "$have_hyperfine" = 1 ] || timer="shell loop, $runs runs after 1 warm-up"
echo
echo "emstream whole-process benchmark ($(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); $timer)"
echo "load average before: $load_before, after: $(cut -d' ' -f1-3 /proc/loadavg) (above 0.5 per core, other work shares the CPUs; compare CPU s)"
[ "$quick" = 1 ] && echo "QUICK MODE: 10x fewer points, not a benchmark"
echo
echo "| stream | points | seconds (mean ± sd) | CPU s | M points/s | peak RSS MiB | target | result |"
echo "|---|---:|---:|---:|---:|---:|---|---|"
printf '%s\n' "${rows[@]}"
echo
if [ "$fails" -gt 0 ]; then
    say "$fails row(s) missed their target"
    exit 3
fi

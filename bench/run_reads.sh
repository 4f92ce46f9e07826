#!/usr/bin/env bash
# bench/run_reads.sh - finished jobs: what they cost the broker, and how
# fast it answers for them.
#
# For each store mode (default: memory and normal) starts a broker on free
# loopback ports and WORKERS `dagq-worker --builtins --concurrency 64`, then
# runs bench_reads: JOBS echo jobs of SIZE bytes (at most 5,000 unfinished
# at a time), the broker's RSS growth per finished job once they have all
# finished, then 20,000 STATUS and 20,000 RESULT requests one at a time
# for jobs picked at random. A --memory broker holds finished jobs in
# memory; with a store the broker reads them from SQLite. With a store the
# broker is then restarted (SIGTERM, start on the same data dir): the time
# to its first answer and its RSS after.
#
# Usage: bench/run_reads.sh [--store memory|full|normal|off]... [-n JOBS]
#                           [--size BYTES] [-w WORKERS] [--reads N]
#                           [--ids-per-status K] [--no-build]
# (--reads: requests of each kind, default 20,000; --ids-per-status: job
# ids in each STATUS, default 1)
# Environment: BUILD_DIR (default <repo>/build-bench), KEEP_LOGS=1.
# Exit status: 0 all runs completed, 1 a run failed, 2 usage.
set -euo pipefail
NAME=run_reads.sh
. "$(dirname "${BASH_SOURCE[0]}")/bench_lib.sh"
WORKERS=3
JOBS=300000
SIZE=1024
READS_N=20000
PER_STATUS=1
DO_BUILD=1
MODES=()
usage () {
    sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'
}
while [ $# -gt 0 ]; do
    case "$1" in
        --store)
            case "${2:-}" in
                memory|full|normal|off) MODES+=("$2") ;;
                *) echo "$NAME: --store takes memory, full, normal or off" >&2; exit 2 ;;
            esac
            shift 2 ;;
        -n|--jobs) need_number "$1" "${2:-}"; JOBS=$2; shift 2 ;;
        --size) need_number "$1" "${2:-}"; SIZE=$2; shift 2 ;;
        -w|--workers) need_number "$1" "${2:-}"; WORKERS=$2; shift 2 ;;
        --reads) need_number "$1" "${2:-}"; READS_N=$2; shift 2 ;;
        --ids-per-status) need_number "$1" "${2:-}"; PER_STATUS=$2; shift 2 ;;
        --no-build) DO_BUILD=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
done
[ ${#MODES[@]} -gt 0 ] || MODES=(memory normal)
READS=$BUILD_DIR/bench/bench_reads
PROBE=$BUILD_DIR/bench/bench_probe
if [ $DO_BUILD = 1 ]; then
    bench_build dagq-broker dagq-worker bench_reads bench_probe
fi
bench_need "$BROKER" "$WORKER" "$READS" "$PROBE"
bench_init

rss_kb () {
    awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"
}

SUMMARY=()
for mode in "${MODES[@]}"; do
    echo "== $mode: $JOBS jobs of $SIZE B, $WORKERS workers (load average $(loadavg))"
    mode_args "$mode"
    args=("${MODE_ARGS[@]}")
    start_broker "broker-$mode" "${args[@]}"
    start_workers "$WORKERS" "worker-$mode"
    run_bench "reads-$mode" "$READS" --frontend "$FE" --pid "$BROKER_PID" \
              --jobs "$JOBS" --size "$SIZE" --reads "$READS_N" \
              --ids-per-status "$PER_STATUS" --timeout 600
    r=$LAST_RESULT
    line=$(printf '%-7s %6.0f B of RSS per finished job (%s of %s held in memory); STATUS p50/p99 %s/%s us, RESULT %s/%s us' \
        "$mode" "$(echo "$(field rss_grown_kib "$r") * 1024 / $JOBS" | bc -l)" \
        "$(field in_memory "$r")" "$(field held "$r")" \
        "$(field status_p50_us "$r")" "$(field status_p99_us "$r")" \
        "$(field result_p50_us "$r")" "$(field result_p99_us "$r")")
    if [ "$mode" != memory ]; then
        stop_broker
        t0=$(date +%s%N)
        "$BROKER" --frontend "$FE" --backend "$BE" --events "$EV" --log-level info \
                  "${args[@]}" >>"$LOGS/broker-$mode-restart.log" 2>&1 &
        BROKER_PID=$!
        PIDS+=("$BROKER_PID")
        run_bench "up-$mode" "$PROBE" --wait-up --frontend "$FE" --since-ns "$t0" \
                  --pid "$BROKER_PID" --timeout 300
        line="$line; restart $(field up_s "$LAST_RESULT") s, RSS after $(rss_kb "$BROKER_PID") KiB"
        grep -h "store - loaded" "$LOGS/broker-$mode-restart.log" | sed 's/.*store - /    /'
    fi
    SUMMARY+=("$line")
    stop_all
done
echo
echo "summary ($JOBS jobs of $SIZE B; load average now $(loadavg))"
printf '  %s\n' "${SUMMARY[@]}"

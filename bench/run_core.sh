#!/usr/bin/env bash
# bench/run_core.sh - the core benchmark of docs/benchmarks.md.
#
# Builds (Release) what it needs, and for each store mode asked for starts
# a broker (--memory, or a fresh --data-dir with --sync MODE) on free
# loopback ports and WORKERS `dagq-worker --builtins --concurrency 64`, then:
#   1. bench_throughput: JOBS echo jobs of 100 bytes at full speed;
#   2. bench_throughput again, paced at half the rate measured in 1, for
#      the latency percentiles (p99) below saturation;
#   with --sweep "R1 R2 ...", also paced runs at each of those rates
#   (max(20000, 4 R) jobs each): latency against load;
# and once, unless --no-memory:
#   3. bench_queued_memory: a fresh --memory broker with no workers,
#      1,000,000 jobs queued, RSS growth per job.
# With --repeat R each mode runs R times (fresh broker and workers each
# time) and the summary gives the best and the median. Prints one summary
# line per mode and stops everything it started (also on Ctrl-C).
#
# Usage: bench/run_core.sh [--store memory|full|normal|off | --all-modes]
#                          [--repeat R] [--sweep "RATE..."] [-w WORKERS]
#                          [-n JOBS] [-b BATCH] [--window W]
#                          [--memory-jobs N] [--no-memory] [--no-build]
# Environment: BUILD_DIR (default <repo>/build-bench), KEEP_LOGS=1.
# Exit status: 0 all runs completed, 1 a run failed, 2 usage.
set -euo pipefail

NAME=run_core.sh
. "$(dirname "${BASH_SOURCE[0]}")/bench_lib.sh"

WORKERS=3
JOBS=200000
BATCH=100
WINDOW=20000
PACED_BATCH=10
CONCURRENCY=64
MEMORY_JOBS=1000000
DO_MEMORY=1
DO_BUILD=1
REPEAT=1
MODES=(memory)
SWEEP=""

usage () {
    sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'
}

while [ $# -gt 0 ]; do
    case "$1" in
        --store)
            case "${2:-}" in
                memory|full|normal|off) MODES=("$2") ;;
                *) echo "$NAME: --store takes memory, full, normal or off" >&2; exit 2 ;;
            esac
            shift 2 ;;
        --all-modes) MODES=(memory full normal off); shift ;;
        --repeat) REPEAT=${2:-}; shift 2 ;;
        --sweep) SWEEP=${2:-}; shift 2 ;;
        -w|--workers) WORKERS=${2:-}; shift 2 ;;
        -n|--jobs) JOBS=${2:-}; shift 2 ;;
        -b|--batch) BATCH=${2:-}; shift 2 ;;
        --window) WINDOW=${2:-}; shift 2 ;;
        --memory-jobs) MEMORY_JOBS=${2:-}; shift 2 ;;
        --no-memory) DO_MEMORY=0; shift ;;
        --no-build) DO_BUILD=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "$NAME: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
for v in WORKERS JOBS BATCH WINDOW MEMORY_JOBS REPEAT; do need_number "$v" "${!v}"; done
for rate in $SWEEP; do need_number "--sweep rate" "$rate"; done
[ "$REPEAT" -ge 1 ] && [ "$WORKERS" -ge 1 ] || { echo "$NAME: --repeat and -w must be >= 1" >&2; exit 2; }

BENCH=$BUILD_DIR/bench/bench_throughput
BENCH_MEM=$BUILD_DIR/bench/bench_queued_memory
[ "$DO_BUILD" = 1 ] && bench_build dagq-broker dagq-worker bench_throughput bench_queued_memory
bench_need "$BROKER" "$WORKER" "$BENCH" "$BENCH_MEM"
bench_init

echo "dagq core benchmark: $WORKERS workers x concurrency $CONCURRENCY, $JOBS echo jobs" \
     "of 100 B, batch $BATCH, window $WINDOW; $(nproc) cores; modes: ${MODES[*]};" \
     "$REPEAT run(s) each"

declare -A E2E P50 P99 HALFRATE LOST SW50 SW99
for mode in "${MODES[@]}"; do
    E2E[$mode]="" P50[$mode]="" P99[$mode]="" HALFRATE[$mode]="" LOST[$mode]=0
    for r in $(seq "$REPEAT"); do
        echo
        echo "== $mode, run $r of $REPEAT (load average $(loadavg))"
        mode_args "$mode"
        start_broker "broker-$mode-$r" "${MODE_ARGS[@]}"
        start_workers "$WORKERS" "worker-$mode-$r"

        echo "1. full speed"
        run_bench "max-$mode-$r" "$BENCH" --frontend "$FE" --events "$EV" --jobs "$JOBS" \
                  --size 100 --type echo --window "$WINDOW" --batch "$BATCH" \
                  --wait-workers "$WORKERS"
        MAX=$LAST_RESULT
        RATE=$(field e2e_rate "$MAX")
        HALF=$(( ${RATE%.*} / 2 ))
        [ "$HALF" -gt 0 ] || die "no rate measured"

        echo "2. paced at half that rate ($HALF jobs/s), batch $PACED_BATCH"
        run_bench "half-$mode-$r" "$BENCH" --frontend "$FE" --events "$EV" --jobs "$JOBS" \
                  --size 100 --type echo --window "$WINDOW" --batch "$PACED_BATCH" \
                  --rate "$HALF"
        PACED=$LAST_RESULT

        for rate in $SWEEP; do
            n=$(( rate * 4 > 20000 ? rate * 4 : 20000 ))
            echo "3. paced at $rate jobs/s, $n jobs, batch $PACED_BATCH"
            run_bench "sweep-$mode-$r-$rate" "$BENCH" --frontend "$FE" --events "$EV" \
                      --jobs "$n" --size 100 --type echo --window "$WINDOW" \
                      --batch "$PACED_BATCH" --rate "$rate"
            SW50[$mode:$rate]+=" $(field p50_ms "$LAST_RESULT")"
            SW99[$mode:$rate]+=" $(field p99_ms "$LAST_RESULT")"
        done
        stop_all

        E2E[$mode]+=" $RATE"
        HALFRATE[$mode]+=" $HALF"
        P50[$mode]+=" $(field p50_ms "$PACED")"
        P99[$mode]+=" $(field p99_ms "$PACED")"
        LOST[$mode]=$(( LOST[$mode] + $(field lost_events "$MAX") + $(field lost_events "$PACED") ))
        echo "   -> $mode: $RATE jobs/s end to end; at $HALF jobs/s p50 $(field p50_ms "$PACED") ms," \
             "p99 $(field p99_ms "$PACED") ms (load average now $(loadavg))"
    done
done

if [ "$DO_MEMORY" = 1 ]; then
    echo
    echo "== memory: $MEMORY_JOBS jobs queued, no workers, --memory broker (load average $(loadavg))"
    start_broker broker-memory --memory
    run_bench memory "$BENCH_MEM" --frontend "$FE" --pid "$BROKER_PID" \
              --jobs "$MEMORY_JOBS" --size 100
    MEM=$LAST_RESULT
    stop_all
fi

echo
echo "summary ($JOBS jobs of 100 B, $WORKERS workers; best / median of $REPEAT; load average now $(loadavg))"
for mode in "${MODES[@]}"; do
    # shellcheck disable=SC2086  # word lists
    printf '  %-7s %8.0f / %8.0f jobs/s end to end;  at half rate (%s jobs/s): p50 %s ms, p99 %s ms (median; best p99 %s ms)\n' \
           "$mode" "$(best_max ${E2E[$mode]})" "$(median ${E2E[$mode]})" \
           "$(median ${HALFRATE[$mode]})" "$(median ${P50[$mode]})" \
           "$(median ${P99[$mode]})" "$(best_min ${P99[$mode]})"
done
if [ -n "$SWEEP" ]; then
    echo "  latency against load (p50 / p99 in ms, median of $REPEAT):"
    for mode in "${MODES[@]}"; do
        line=$(printf '    %-7s' "$mode")
        for rate in $SWEEP; do
            # shellcheck disable=SC2086  # word lists
            line+=$(printf '  %s/s: %s / %s' "$rate" "$(median ${SW50[$mode:$rate]})" \
                           "$(median ${SW99[$mode:$rate]})")
        done
        echo "$line"
    done
fi
if [ "$DO_MEMORY" = 1 ]; then
    printf '  queued memory: %s bytes per job, %s beyond the payload (%s jobs of %s B)\n' \
           "$(field bytes_per_job "$MEM")" "$(field overhead_per_job "$MEM")" \
           "$MEMORY_JOBS" "$(field size "$MEM")"
fi
for mode in "${MODES[@]}"; do
    if [ "${LOST[$mode]}" != 0 ]; then
        echo "  note: in $mode mode the PUB dropped ${LOST[$mode]} events in all;" \
             "those jobs were confirmed by STATUS (no latency sample)"
    fi
done

#!/usr/bin/env bash
# bench/run_dag.sh - the DAG benchmark of docs/benchmarks.md.
#
# Builds (Release) what it needs, then:
#   a. accept: for each of --accept-modes (default: memory full), a fresh
#      broker with no workers gets ONE SUBMIT holding a random DAG of
#      ACCEPT_JOBS jobs (each with 1..5 distinct parents among the earlier
#      jobs, 3 on average; type "n", which nobody runs; no payload; about
#      41 MiB encoded, well under the broker's --max-message)
#      from bench_dag: time from sending to the SUBMITTED reply, the
#      broker's CPU time meanwhile, and its RSS growth per job;
#   b. run: a fresh broker (--store MODE, default memory) and WORKERS
#      `dagq-worker --builtins --concurrency 64`; bench_dag --run submits a
#      RUN_JOBS-job DAG of echo jobs with empty payloads (LAYERS layers,
#      3 parents per job on average, the first in the layer before) and
#      waits for its terminal event; then, on a fresh broker and workers
#      again, bench_throughput runs the same number of independent echo
#      jobs with empty payloads. Prints both jobs/s and their ratio
#      (target: the DAG at >= 80% of the independent jobs).
# With --repeat R each measurement runs R times; the summary gives the
# best and the median. Stops everything it started (also on Ctrl-C).
#
# Usage: bench/run_dag.sh [--repeat R] [--accept-jobs N] [--accept-modes "M..."]
#                         [--run-jobs N] [--layers L] [--avg-deps D]
#                         [--store memory|full|normal|off] [-w WORKERS]
#                         [--no-accept] [--no-run] [--no-build]
# Environment: BUILD_DIR (default <repo>/build-bench), KEEP_LOGS=1.
# Exit status: 0 all runs completed, 1 a run failed, 2 usage.
set -euo pipefail

NAME=run_dag.sh
. "$(dirname "${BASH_SOURCE[0]}")/bench_lib.sh"

WORKERS=3
CONCURRENCY=64
ACCEPT_JOBS=1000000
ACCEPT_MODES="memory full"
RUN_JOBS=100000
LAYERS=100
AVG_DEPS=3
RUN_MODE=memory
REPEAT=1
DO_ACCEPT=1
DO_RUN=1
DO_BUILD=1

usage () {
    sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//'
}

while [ $# -gt 0 ]; do
    case "$1" in
        --repeat) REPEAT=${2:-}; shift 2 ;;
        --accept-jobs) ACCEPT_JOBS=${2:-}; shift 2 ;;
        --accept-modes) ACCEPT_MODES=${2:-}; shift 2 ;;
        --run-jobs) RUN_JOBS=${2:-}; shift 2 ;;
        --layers) LAYERS=${2:-}; shift 2 ;;
        --avg-deps) AVG_DEPS=${2:-}; shift 2 ;;
        --store) RUN_MODE=${2:-}; shift 2 ;;
        -w|--workers) WORKERS=${2:-}; shift 2 ;;
        --no-accept) DO_ACCEPT=0; shift ;;
        --no-run) DO_RUN=0; shift ;;
        --no-build) DO_BUILD=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "$NAME: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
for v in REPEAT ACCEPT_JOBS RUN_JOBS LAYERS AVG_DEPS WORKERS; do need_number "$v" "${!v}"; done
[ "$REPEAT" -ge 1 ] && [ "$WORKERS" -ge 1 ] || { echo "$NAME: --repeat and -w must be >= 1" >&2; exit 2; }
for m in $ACCEPT_MODES $RUN_MODE; do
    case "$m" in
        memory|full|normal|off) ;;
        *) echo "$NAME: unknown store mode '$m' (memory, full, normal, off)" >&2; exit 2 ;;
    esac
done

BENCH_DAG=$BUILD_DIR/bench/bench_dag
BENCH=$BUILD_DIR/bench/bench_throughput
[ "$DO_BUILD" = 1 ] && bench_build dagq-broker dagq-worker bench_dag bench_throughput
bench_need "$BROKER" "$WORKER" "$BENCH_DAG" "$BENCH"
bench_init

echo "dagq DAG benchmark; $(nproc) cores; $REPEAT run(s) of each measurement"

declare -A ACC CPU PERJOB
if [ "$DO_ACCEPT" = 1 ]; then
    for mode in $ACCEPT_MODES; do
        ACC[$mode]="" CPU[$mode]="" PERJOB[$mode]=""
        for r in $(seq "$REPEAT"); do
            echo
            echo "== accept: $ACCEPT_JOBS-job DAG, $mode broker, run $r of $REPEAT" \
                 "(load average $(loadavg))"
            mode_args "$mode"
            start_broker "broker-accept-$mode-$r" "${MODE_ARGS[@]}"
            run_bench "accept-$mode-$r" "$BENCH_DAG" --frontend "$FE" --pid "$BROKER_PID" \
                      --jobs "$ACCEPT_JOBS" --avg-deps "$AVG_DEPS" --type n --timeout 900
            stop_all
            ACC[$mode]+=" $(field accept_s "$LAST_RESULT")"
            CPU[$mode]+=" $(field broker_cpu_s "$LAST_RESULT")"
            PERJOB[$mode]+=" $(field rss_per_job "$LAST_RESULT")"
        done
    done
fi

DAGR="" DAGRUN="" DAGACC="" INDR=""
if [ "$DO_RUN" = 1 ]; then
    for r in $(seq "$REPEAT"); do
        echo
        echo "== run: $RUN_JOBS-job DAG ($LAYERS layers) of echo jobs, $RUN_MODE broker," \
             "$WORKERS workers, run $r of $REPEAT (load average $(loadavg))"
        mode_args "$RUN_MODE"
        start_broker "broker-dag-$r" "${MODE_ARGS[@]}"
        start_workers "$WORKERS" "worker-dag-$r"
        run_bench "dag-$r" "$BENCH_DAG" --frontend "$FE" --events "$EV" --run \
                  --wait-workers "$WORKERS" --jobs "$RUN_JOBS" --avg-deps "$AVG_DEPS" \
                  --layers "$LAYERS" --type echo --size 0 --timeout 600
        stop_all
        DAGR+=" $(field e2e_rate "$LAST_RESULT")"
        DAGRUN+=" $(field run_rate "$LAST_RESULT")"
        DAGACC+=" $(field accept_s "$LAST_RESULT")"

        echo
        echo "== run: $RUN_JOBS independent echo jobs, $RUN_MODE broker, $WORKERS workers," \
             "run $r of $REPEAT (load average $(loadavg))"
        mode_args "$RUN_MODE"
        start_broker "broker-ind-$r" "${MODE_ARGS[@]}"
        start_workers "$WORKERS" "worker-ind-$r"
        run_bench "ind-$r" "$BENCH" --frontend "$FE" --events "$EV" --jobs "$RUN_JOBS" \
                  --size 0 --type echo --wait-workers "$WORKERS" --timeout 600
        stop_all
        INDR+=" $(field e2e_rate "$LAST_RESULT")"
    done
fi

echo
echo "summary (best / median of $REPEAT; load average now $(loadavg))"
if [ "$DO_ACCEPT" = 1 ]; then
    for mode in $ACCEPT_MODES; do
        # shellcheck disable=SC2086  # word lists
        printf '  accept %s-job DAG, %-6s  %s / %s s (target < 2 s); broker CPU %s / %s s; broker RSS %s bytes per job\n' \
               "$ACCEPT_JOBS" "$mode" "$(best_min ${ACC[$mode]})" "$(median ${ACC[$mode]})" \
               "$(best_min ${CPU[$mode]})" "$(median ${CPU[$mode]})" "$(median ${PERJOB[$mode]})"
    done
fi
if [ "$DO_RUN" = 1 ]; then
    # shellcheck disable=SC2086
    {
        db=$(best_max $DAGR) dm=$(median $DAGR) ib=$(best_max $INDR) im=$(median $INDR)
        rb=$(best_max $DAGRUN) rm=$(median $DAGRUN) ab=$(best_min $DAGACC) am=$(median $DAGACC)
    }
    printf '  %s-job DAG end to end (%s)      %.0f / %.0f jobs/s\n' "$RUN_JOBS" "$RUN_MODE" "$db" "$dm"
    printf '    of which accepting it         %s / %s s; after SUBMITTED: %.0f / %.0f jobs/s\n' \
           "$ab" "$am" "$rb" "$rm"
    printf '  %s independent jobs (%s)       %.0f / %.0f jobs/s\n' "$RUN_JOBS" "$RUN_MODE" "$ib" "$im"
    awk -v db="$db" -v dm="$dm" -v ib="$ib" -v im="$im" -v rb="$rb" -v rm="$rm" 'BEGIN {
        printf "  DAG / independent              %.0f%% (best / best), %.0f%% (median / median); target >= 80%%\n",
               (ib > 0)? 100 * db / ib: 0, (im > 0)? 100 * dm / im: 0
        printf "  DAG after SUBMITTED / indep.   %.0f%% (best / best), %.0f%% (median / median)\n",
               (ib > 0)? 100 * rb / ib: 0, (im > 0)? 100 * rm / im: 0 }'
fi

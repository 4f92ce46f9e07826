#!/usr/bin/env bash
# bench/run_core.sh - the core benchmark of docs/benchmarks.md.
#
# Builds (Release) what it needs, starts `dagq-broker --memory` on free
# loopback ports and WORKERS `dagq-worker --builtins --concurrency 64`, then:
#   1. bench_throughput: JOBS echo jobs of 100 bytes at full speed;
#   2. bench_throughput again, paced at half the rate measured in 1, for
#      the latency percentiles (p99) below saturation;
#   3. bench_queued_memory: a fresh broker with no workers, 1,000,000 jobs
#      queued, RSS growth per job.
# Prints the figures and stops everything it started (also on Ctrl-C).
#
# Usage: bench/run_core.sh [-w WORKERS] [-n JOBS] [-b BATCH] [--window W]
#                          [--memory-jobs N] [--no-memory] [--no-build]
# Environment: BUILD_DIR (default <repo>/build-bench), KEEP_LOGS=1.
# Exit status: 0 all runs completed, 1 a run failed, 2 usage.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build-bench}
WORKERS=3
JOBS=200000
BATCH=100
WINDOW=20000
PACED_BATCH=10
CONCURRENCY=64
MEMORY_JOBS=1000000
DO_MEMORY=1
DO_BUILD=1
RUN_TIMEOUT=600            # seconds, per bench run

usage () {
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
}

while [ $# -gt 0 ]; do
    case "$1" in
        -w|--workers) WORKERS=$2; shift 2 ;;
        -n|--jobs) JOBS=$2; shift 2 ;;
        -b|--batch) BATCH=$2; shift 2 ;;
        --window) WINDOW=$2; shift 2 ;;
        --memory-jobs) MEMORY_JOBS=$2; shift 2 ;;
        --no-memory) DO_MEMORY=0; shift ;;
        --no-build) DO_BUILD=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "run_core.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
for v in WORKERS JOBS BATCH WINDOW MEMORY_JOBS; do
    case "${!v}" in
        ''|*[!0-9]*) echo "run_core.sh: $v must be a number, not '${!v}'" >&2; exit 2 ;;
    esac
done

BROKER=$BUILD_DIR/broker/dagq-broker
WORKER=$BUILD_DIR/worker/dagq-worker
BENCH=$BUILD_DIR/bench/bench_throughput
BENCH_MEM=$BUILD_DIR/bench/bench_queued_memory

if [ "$DO_BUILD" = 1 ]; then
    if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
        cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release \
              -DDAGQ_BUILD_TESTS=OFF -DDAGQ_BUILD_GATEWAY=OFF >/dev/null
    fi
    cmake --build "$BUILD_DIR" -j"$(nproc)" --target dagq-broker dagq-worker \
          bench_throughput bench_queued_memory >/dev/null
fi
for b in "$BROKER" "$WORKER" "$BENCH" "$BENCH_MEM"; do
    [ -x "$b" ] || { echo "run_core.sh: $b is missing (build it, or drop --no-build)" >&2; exit 1; }
done

LOGS=$(mktemp -d /tmp/dagq-bench.XXXXXX)
PIDS=()
BROKER_PID=
KEEP_LOGS=${KEEP_LOGS:-0}      # 1: keep the logs even on success

# Stop what we started: TERM, a grace period, then KILL.
stop_pids () {
    local pid
    for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
    for _ in $(seq 50); do
        local alive=0
        for pid in "$@"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && break
        sleep 0.1
    done
    for pid in "$@"; do
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}

cleanup () {
    local rc=$?
    trap - EXIT INT TERM
    if [ ${#PIDS[@]} -gt 0 ]; then stop_pids "${PIDS[@]}"; fi
    PIDS=()
    if [ "$KEEP_LOGS" = 1 ] || [ $rc != 0 ]; then
        echo "logs kept in $LOGS" >&2
    else
        rm -rf "$LOGS"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

forget_pid () {
    local keep=() pid
    for pid in "${PIDS[@]}"; do [ "$pid" = "$1" ] || keep+=("$pid"); done
    PIDS=("${keep[@]}")
}

port_free () {
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Start a --memory broker on three free ports; sets BROKER_PID, FE, BE, EV.
start_broker () {
    local name=$1 p
    for _ in $(seq 20); do
        p=$(( 20000 + (RANDOM * 32768 + RANDOM) % 40000 ))
        port_free $p && port_free $((p + 1)) && port_free $((p + 2)) || continue
        FE=tcp://127.0.0.1:$p
        BE=tcp://127.0.0.1:$((p + 1))
        EV=tcp://127.0.0.1:$((p + 2))
        "$BROKER" --memory --frontend "$FE" --backend "$BE" --events "$EV" \
                  --log-level warn >>"$LOGS/$name.log" 2>&1 &
        BROKER_PID=$!
        PIDS+=("$BROKER_PID")
        # Listening, or gone (a port taken meanwhile: try others).
        for _ in $(seq 100); do
            kill -0 "$BROKER_PID" 2>/dev/null || break
            port_free $p || return 0
            sleep 0.1
        done
        stop_pids "$BROKER_PID"
        forget_pid "$BROKER_PID"
    done
    echo "run_core.sh: could not start a broker (see $LOGS/$name.log)" >&2
    return 1
}

# Run a bench, show its output, keep its RESULT line in LAST_RESULT.
run_bench () {
    local out=$LOGS/run-$1.txt rc=0 pid
    shift
    # In the background, so that a signal runs the trap at once rather
    # than after the bench ends.
    timeout "$RUN_TIMEOUT" "$@" >"$out" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait "$pid" || rc=$?
    forget_pid "$pid"
    if [ $rc != 0 ]; then
        cat "$out"
        echo "run_core.sh: bench failed: $*" >&2
        return 1
    fi
    sed 's/^/    /' "$out" | grep -v '^    RESULT'
    LAST_RESULT=$(grep '^RESULT' "$out" | tail -1)
}

field () {          # field NAME "RESULT a=1 b=2"
    echo "$2" | tr ' ' '\n' | sed -n "s/^$1=//p"
}

echo "dagq core benchmark: $WORKERS workers x concurrency $CONCURRENCY, $JOBS echo jobs" \
     "of 100 B, batch $BATCH, window $WINDOW; $(nproc) cores"
start_broker broker
for i in $(seq "$WORKERS"); do
    "$WORKER" --broker "$BE" --builtins --concurrency "$CONCURRENCY" --name "bench-w$i" \
              --log-level warn >>"$LOGS/worker-$i.log" 2>&1 &
    PIDS+=($!)
done

echo
echo "1. full speed"
run_bench max "$BENCH" --frontend "$FE" --events "$EV" --jobs "$JOBS" --size 100 \
          --type echo --window "$WINDOW" --batch "$BATCH" --wait-workers "$WORKERS"
MAX=$LAST_RESULT
RATE=$(field e2e_rate "$MAX")
HALF=$(( ${RATE%.*} / 2 ))
[ "$HALF" -gt 0 ] || { echo "run_core.sh: no rate measured" >&2; exit 1; }

echo
echo "2. paced at half that rate ($HALF jobs/s), batch $PACED_BATCH"
run_bench half "$BENCH" --frontend "$FE" --events "$EV" --jobs "$JOBS" --size 100 \
          --type echo --window "$WINDOW" --batch "$PACED_BATCH" --rate "$HALF"
PACED=$LAST_RESULT

stop_pids "${PIDS[@]}"
PIDS=()

if [ "$DO_MEMORY" = 1 ]; then
    echo
    echo "3. memory: $MEMORY_JOBS jobs queued, no workers"
    start_broker broker-memory
    run_bench memory "$BENCH_MEM" --frontend "$FE" --pid "$BROKER_PID" \
              --jobs "$MEMORY_JOBS" --size 100
    MEM=$LAST_RESULT
    stop_pids "${PIDS[@]}"
    PIDS=()
fi

echo
echo "summary"
printf '  end to end          %s jobs/s (submit acknowledged %s jobs/s), p50 %s ms, p99 %s ms\n' \
       "$(field e2e_rate "$MAX")" "$(field submit_rate "$MAX")" \
       "$(field p50_ms "$MAX")" "$(field p99_ms "$MAX")"
printf '  at %s jobs/s     %s jobs/s done, p50 %s ms, p90 %s ms, p99 %s ms, max %s ms\n' \
       "$HALF" "$(field e2e_rate "$PACED")" "$(field p50_ms "$PACED")" \
       "$(field p90_ms "$PACED")" "$(field p99_ms "$PACED")" "$(field max_ms "$PACED")"
if [ "$DO_MEMORY" = 1 ]; then
    printf '  queued memory       %s bytes per job, %s beyond the payload\n' \
           "$(field bytes_per_job "$MEM")" "$(field overhead_per_job "$MEM")"
fi
for r in "$MAX" "$PACED"; do
    if [ "$(field lost_events "$r")" != 0 ]; then
        echo "  note: the PUB dropped $(field lost_events "$r") events in one run;" \
             "those jobs were confirmed by STATUS"
    fi
done

#!/usr/bin/env bash
# bench/run_store.sh - the store benchmarks of docs/benchmarks.md.
#
# Builds (Release) what it needs, then, on a fresh data dir in a temp dir:
#   1. a `--sync SYNC` broker (default normal) with no workers gets JOBS echo
#      jobs of SIZE bytes (bulk SUBMITs of 1000, bench_queued_memory), and is
#      stopped with SIGTERM; the size of dagq.db + dagq.db-wal divided by
#      JOBS is the store's bytes per unfinished job;
#   2. the broker is started again on the same dir RESTARTS times (SIGTERM
#      between): the time from its start to its first STATS answer is the
#      restart time with JOBS stored unfinished jobs (target < 10 s);
#   3. the last one gets WORKERS `dagq-worker --builtins --concurrency 64`,
#      which run every stored job; stopped again, the store's bytes per
#      finished job (now with its 100-byte output) are measured;
#   4. with --soak only: a fresh `--sync full --result-ttl TTL` broker and
#      WORKERS workers under a steady paced load of SOAK_RATE jobs/s for
#      SOAK_SECONDS (default 300), the store size sampled every 10 s, and
#      TTL + 30 s more after the load stops: the series shows whether the
#      store levels off.
# The sizes are read after the broker stopped (SQLite checkpoints the WAL
# when the last connection closes); a WAL left behind is counted too.
# Stops everything it started (also on Ctrl-C) and removes the data dirs.
#
# Usage: bench/run_store.sh [--jobs N] [--size BYTES] [--sync full|normal|off]
#                           [--restarts R] [-w WORKERS] [--soak]
#                           [--soak-seconds S] [--soak-rate R] [--soak-ttl S]
#                           [--no-store] [--no-build]
# Environment: BUILD_DIR (default <repo>/build-bench), KEEP_LOGS=1.
# Exit status: 0 all runs completed, 1 a run failed, 2 usage.
set -euo pipefail

NAME=run_store.sh
. "$(dirname "${BASH_SOURCE[0]}")/bench_lib.sh"

JOBS=1000000
SIZE=100
SYNC=normal
RESTARTS=3
WORKERS=3
CONCURRENCY=64
DO_STORE=1
DO_SOAK=0
SOAK_SECONDS=300
SOAK_RATE=5000
SOAK_TTL=30
DO_BUILD=1

usage () {
    sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//'
}

while [ $# -gt 0 ]; do
    case "$1" in
        --jobs) JOBS=${2:-}; shift 2 ;;
        --size) SIZE=${2:-}; shift 2 ;;
        --sync)
            case "${2:-}" in
                full|normal|off) SYNC=$2 ;;
                *) echo "$NAME: --sync takes full, normal or off" >&2; exit 2 ;;
            esac
            shift 2 ;;
        --restarts) RESTARTS=${2:-}; shift 2 ;;
        -w|--workers) WORKERS=${2:-}; shift 2 ;;
        --soak) DO_SOAK=1; shift ;;
        --soak-seconds) SOAK_SECONDS=${2:-}; shift 2 ;;
        --soak-rate) SOAK_RATE=${2:-}; shift 2 ;;
        --soak-ttl) SOAK_TTL=${2:-}; shift 2 ;;
        --no-store) DO_STORE=0; shift ;;
        --no-build) DO_BUILD=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "$NAME: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
for v in JOBS SIZE RESTARTS WORKERS SOAK_SECONDS SOAK_RATE SOAK_TTL; do need_number "$v" "${!v}"; done
[ "$JOBS" -ge 1 ] && [ "$RESTARTS" -ge 1 ] && [ "$WORKERS" -ge 1 ] && [ "$SOAK_RATE" -ge 1 ] \
    && [ "$SOAK_SECONDS" -ge 10 ] \
    || { echo "$NAME: --jobs, --restarts, -w, --soak-rate must be >= 1, --soak-seconds >= 10" >&2; exit 2; }

BENCH=$BUILD_DIR/bench/bench_throughput
BENCH_MEM=$BUILD_DIR/bench/bench_queued_memory
PROBE=$BUILD_DIR/bench/bench_probe
[ "$DO_BUILD" = 1 ] && bench_build dagq-broker dagq-worker bench_throughput \
                                   bench_queued_memory bench_probe
bench_need "$BROKER" "$WORKER" "$BENCH" "$BENCH_MEM" "$PROBE"
bench_init

fsize () {          # fsize FILE: its size in bytes, 0 when absent
    stat -c %s "$1" 2>/dev/null || echo 0
}

store_bytes () {    # store_bytes DIR: dagq.db + dagq.db-wal
    echo $(( $(fsize "$1/dagq.db") + $(fsize "$1/dagq.db-wal") ))
}

rss_kb () {
    sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\).*/\1/p' "/proc/$1/status" 2>/dev/null || echo 0
}

mib () {
    awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'
}

per_job () {        # per_job BYTES JOBS
    awk -v b="$1" -v n="$2" 'BEGIN { printf "%.0f", b / n }'
}

echo "dagq store benchmark; $(nproc) cores; data dirs under $LOGS ($(df -h "$LOGS" | awk 'NR == 2 { print $1 }'))"

if [ "$DO_STORE" = 1 ]; then
    DATA=$LOGS/data-store
    echo
    echo "== 1. $JOBS echo jobs of $SIZE B into a --sync $SYNC broker, no workers" \
         "(load average $(loadavg))"
    start_broker store-1 --data-dir "$DATA" --sync "$SYNC"
    t=$(date +%s%N)
    run_bench submit "$BENCH_MEM" --frontend "$FE" --pid "$BROKER_PID" --jobs "$JOBS" \
              --size "$SIZE" --type echo --timeout 1800
    SUBMIT=$LAST_RESULT
    SUBMIT_RATE=$(awk -v a="$t" -v b="$(date +%s%N)" -v n="$JOBS" \
                  'BEGIN { printf "%.0f", n / ((b - a) / 1e9) }')
    t=$(date +%s%N)
    stop_broker || die "the broker exited with status $? on SIGTERM (see $LOGS/store-1.log)"
    STOP_S=$(awk -v a="$t" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
    DB0=$(fsize "$DATA/dagq.db") WAL0=$(fsize "$DATA/dagq.db-wal")
    BEFORE=$(( DB0 + WAL0 ))
    echo "   stopped in $STOP_S s; dagq.db $(mib "$DB0") MiB, dagq.db-wal $(mib "$WAL0") MiB" \
         "= $(per_job "$BEFORE" "$JOBS") bytes per unfinished job"

    echo
    echo "== 2. restart with $JOBS unfinished jobs, $RESTARTS time(s)"
    UPS=""
    for r in $(seq "$RESTARTS"); do
        echo "   restart $r (load average $(loadavg))"
        # Fresh ports each time: a port can be taken by another program
        # between two runs; a broker that cannot bind (status 4) is started
        # again on others.
        up=
        for _ in $(seq 5); do
            pick_ports
            t=$(date +%s%N)
            "$BROKER" --frontend "$FE" --backend "$BE" --events "$EV" --log-level warn \
                      --data-dir "$DATA" --sync "$SYNC" >>"$LOGS/store-restart-$r.log" 2>&1 &
            BROKER_PID=$!
            PIDS+=("$BROKER_PID")
            rc=0
            "$PROBE" --wait-up --since-ns "$t" --frontend "$FE" --pid "$BROKER_PID" \
                     --timeout 300 >"$LOGS/run-up-$r.txt" 2>&1 || rc=$?
            if [ $rc = 0 ]; then up=1; break; fi
            brc=0
            [ $rc = 3 ] && { wait "$BROKER_PID" || brc=$?; }
            forget_pid "$BROKER_PID"
            cat "$LOGS/run-up-$r.txt" >&2
            [ $rc = 3 ] && [ $brc = 4 ] || die "restart $r failed (see $LOGS/store-restart-$r.log)"
            echo "   (ports taken meanwhile; again on others)"
        done
        [ -n "$up" ] || die "restart $r: no free ports"
        sed 's/^/    /' "$LOGS/run-up-$r.txt" | grep -v '^    RESULT'
        LAST_RESULT=$(grep '^RESULT' "$LOGS/run-up-$r.txt" | tail -1)
        UP=$(field up_s "$LAST_RESULT")
        [ "$(field jobs_total "$LAST_RESULT")" = "$JOBS" ] \
            || die "the restarted broker has $(field jobs_total "$LAST_RESULT") jobs, not $JOBS"
        UPS+=" $UP"
        echo "   RSS after the restart: $(( $(rss_kb "$BROKER_PID") / 1024 )) MiB"
        if [ "$r" -lt "$RESTARTS" ]; then
            stop_broker || die "the broker exited with status $? on SIGTERM"
        fi
    done

    echo
    echo "== 3. $WORKERS workers run the $JOBS stored jobs (load average $(loadavg))"
    n=${#PIDS[@]}
    start_workers "$WORKERS" worker-store
    WPIDS=("${PIDS[@]:$n}")
    run_bench drain "$PROBE" --wait-done "$JOBS" --type echo --frontend "$FE" --timeout 1800
    DRAIN=$LAST_RESULT
    stop_pids "${WPIDS[@]}"                 # the workers first
    for p in "${WPIDS[@]}"; do forget_pid "$p"; done
    stop_broker || die "the broker exited with status $? on SIGTERM"
    DB1=$(fsize "$DATA/dagq.db") WAL1=$(fsize "$DATA/dagq.db-wal")
    AFTER=$(( DB1 + WAL1 ))
    echo "   dagq.db $(mib "$DB1") MiB, dagq.db-wal $(mib "$WAL1") MiB" \
         "= $(per_job "$AFTER" "$JOBS") bytes per finished job"
    rm -rf "$DATA"
fi

if [ "$DO_SOAK" = 1 ]; then
    SOAK_JOBS=$(( SOAK_RATE * SOAK_SECONDS ))
    DATA=$LOGS/data-soak
    echo
    echo "== 4. soak: $SOAK_RATE jobs/s for $SOAK_SECONDS s ($SOAK_JOBS echo jobs of $SIZE B)," \
         "--sync full --result-ttl $SOAK_TTL, $WORKERS workers (load average $(loadavg))"
    start_broker soak --data-dir "$DATA" --sync full --result-ttl "$SOAK_TTL"
    start_workers "$WORKERS" worker-soak
    timeout $(( SOAK_SECONDS + 300 )) "$BENCH" --frontend "$FE" --events "$EV" \
            --jobs "$SOAK_JOBS" --size "$SIZE" --type echo --rate "$SOAK_RATE" --batch 10 \
            --wait-workers "$WORKERS" --timeout $(( SOAK_SECONDS + 240 )) \
            >"$LOGS/run-soak.txt" 2>&1 &
    LOAD_PID=$!
    PIDS+=("$LOAD_PID")
    printf '   %6s  %10s  %9s  %9s  %9s  %8s\n' "t (s)" "jobs held" "db MiB" "wal MiB" \
           "RSS MiB" "load"
    t0=$(date +%s)
    load_done=
    tail_until=
    SERIES=""
    while true; do
        now=$(date +%s)
        el=$(( now - t0 ))
        if [ -z "$load_done" ] && ! kill -0 "$LOAD_PID" 2>/dev/null; then
            load_done=$el
            tail_until=$(( el + SOAK_TTL + 30 ))
            echo "   -- load stopped at $el s; watching $(( SOAK_TTL + 30 )) s more"
        fi
        HELD=$("$PROBE" --stats --frontend "$FE" --timeout 10 2>/dev/null \
               | sed -n 's/.*jobs_total=\([0-9]*\).*/\1/p')
        B=$(fsize "$DATA/dagq.db") W=$(fsize "$DATA/dagq.db-wal")
        printf '   %6d  %10s  %9s  %9s  %9s  %8s\n' "$el" "${HELD:-?}" "$(mib "$B")" \
               "$(mib "$W")" "$(( $(rss_kb "$BROKER_PID") / 1024 ))" "$(cut -d' ' -f1 /proc/loadavg)"
        SERIES+=" $el:$(( B + W ))"
        if [ -n "$tail_until" ] && [ "$el" -ge "$tail_until" ]; then break; fi
        sleep $(( 10 - ( $(date +%s) - now ) > 0 ? 10 - ( $(date +%s) - now ) : 1 ))
    done
    rc=0
    wait "$LOAD_PID" || rc=$?
    forget_pid "$LOAD_PID"
    sed 's/^/    /' "$LOGS/run-soak.txt" | grep -v '^    RESULT'
    [ $rc = 0 ] || die "the soak load failed (status $rc)"
    SOAK=$(grep '^RESULT' "$LOGS/run-soak.txt" | tail -1)
    stop_all
    rm -rf "$DATA"
fi

echo
echo "summary (load average now $(loadavg))"
if [ "$DO_STORE" = 1 ]; then
    printf '  submit %s jobs (--sync %s)      %s jobs/s acknowledged (bulk SUBMITs of 1000); broker RSS %s bytes per job\n' \
           "$JOBS" "$SYNC" "$SUBMIT_RATE" "$(field bytes_per_job "$SUBMIT")"
    # shellcheck disable=SC2086  # word list
    printf '  restart with %s stored jobs  best %s s, median %s s of %s (target < 10 s)\n' \
           "$JOBS" "$(best_min $UPS)" "$(median $UPS)" "$RESTARTS"
    printf '  store per job, %s-byte payload  %s bytes unfinished, %s bytes finished (with output)\n' \
           "$SIZE" "$(per_job "$BEFORE" "$JOBS")" "$(per_job "$AFTER" "$JOBS")"
    printf '  stored jobs run by %s workers    %s jobs/s\n' "$WORKERS" "$(field rate "$DRAIN")"
fi
if [ "$DO_SOAK" = 1 ]; then
    printf '  soak: %s jobs at %s jobs/s, TTL %s s; store size (s:bytes):%s\n' \
           "$(field completed "$SOAK")" "$SOAK_RATE" "$SOAK_TTL" "$SERIES"
fi

#!/usr/bin/env bash
# bench/run_beanstalkd.sh - the core workload on beanstalkd, for comparison.
#
# Runs bench_beanstalkd (one producer pipelining `put`s of 100 bytes,
# 3 consumers with 64 pipelined `reserve`s each, `delete` per job) against
# a beanstalkd on a free loopback port in three modes:
#   memory   no binlog
#   fsync    binlog with -f 0: fsync after every write (before replying);
#            FSYNC_JOBS jobs only (default 10000), as it is slow
#   window   binlog with its default -f 50: fsync at most every 50 ms
# beanstalkd comes from $BEANSTALKD, or `beanstalkd` on PATH (Debian package
# beanstalkd; `apt-get download beanstalkd && dpkg -x beanstalkd_*.deb DIR`
# gives the binary without starting a service).
#
# Usage: bench/run_beanstalkd.sh [-n JOBS] [--fsync-jobs N] [--repeat R]
#                                [--modes "M..."] [--no-build]
# Environment: BEANSTALKD, BUILD_DIR (default <repo>/build-bench), KEEP_LOGS=1.
# Exit status: 0 all runs completed, 1 a run failed, 2 usage.
set -euo pipefail

NAME=run_beanstalkd.sh
. "$(dirname "${BASH_SOURCE[0]}")/bench_lib.sh"

JOBS=200000
FSYNC_JOBS=10000
REPEAT=1
MODES="memory fsync window"
DO_BUILD=1

usage () {
    sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
}

while [ $# -gt 0 ]; do
    case "$1" in
        -n|--jobs) JOBS=${2:-}; shift 2 ;;
        --fsync-jobs) FSYNC_JOBS=${2:-}; shift 2 ;;
        --repeat) REPEAT=${2:-}; shift 2 ;;
        --modes) MODES=${2:-}; shift 2 ;;
        --no-build) DO_BUILD=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "$NAME: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
for v in JOBS FSYNC_JOBS REPEAT; do need_number "$v" "${!v}"; done
[ "$REPEAT" -ge 1 ] || { echo "$NAME: --repeat must be >= 1" >&2; exit 2; }
for m in $MODES; do
    case "$m" in
        memory|fsync|window) ;;
        *) echo "$NAME: unknown mode '$m' (memory, fsync, window)" >&2; exit 2 ;;
    esac
done
BEANSTALKD=${BEANSTALKD:-$(command -v beanstalkd || true)}
[ -n "$BEANSTALKD" ] && [ -x "$BEANSTALKD" ] \
    || { echo "$NAME: no beanstalkd (set BEANSTALKD=/path/to/beanstalkd)" >&2; exit 1; }

BENCH=$BUILD_DIR/bench/bench_beanstalkd
[ "$DO_BUILD" = 1 ] && bench_build bench_beanstalkd
bench_need "$BENCH"
bench_init

echo "beanstalkd ($("$BEANSTALKD" -v 2>&1 | head -1)) with the core workload: $JOBS jobs of 100 B" \
     "($FSYNC_JOBS with fsync);" \
     "$(nproc) cores; $REPEAT run(s) per mode"
declare -A RATES
for mode in $MODES; do
    RATES[$mode]=""
    for r in $(seq "$REPEAT"); do
        args=()
        case "$mode" in
            fsync) args=(-b "$(mktemp -d "$LOGS/binlog.XXXXXX")" -f 0) ;;
            window) args=(-b "$(mktemp -d "$LOGS/binlog.XXXXXX")") ;;
        esac
        started=
        for _ in $(seq 20); do
            pick_ports || break
            p=$PORT
            "$BEANSTALKD" -l 127.0.0.1 -p "$p" "${args[@]}" >>"$LOGS/beanstalkd.log" 2>&1 &
            BS_PID=$!
            PIDS+=("$BS_PID")
            for _ in $(seq 50); do
                port_free "$p" || { started=1; break; }
                kill -0 "$BS_PID" 2>/dev/null || break
                sleep 0.1
            done
            [ -n "$started" ] && break
            stop_pids "$BS_PID"
            forget_pid "$BS_PID"
        done
        [ -n "$started" ] || die "could not start beanstalkd (see $LOGS/beanstalkd.log)"
        echo
        echo "== $mode, run $r of $REPEAT (load average $(loadavg))"
        n=$JOBS
        [ "$mode" = fsync ] && n=$FSYNC_JOBS
        run_bench "$mode-$r" "$BENCH" --port "$p" --jobs "$n"
        stop_all
        RATES[$mode]+=" $(field e2e_rate "$LAST_RESULT")"
    done
done

echo
echo "summary (best / median of $REPEAT; load average now $(loadavg))"
for mode in $MODES; do
    # shellcheck disable=SC2086
    printf '  beanstalkd %-7s %6.0f / %6.0f jobs/s\n' "$mode" "$(best_max ${RATES[$mode]})" \
           "$(median ${RATES[$mode]})"
done

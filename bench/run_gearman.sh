#!/usr/bin/env bash
# bench/run_gearman.sh - the core workload on Gearman, for comparison.
#
# Runs bench_gearman (one producer sending background jobs of 100 bytes
# in batches of 1,000 through gearman_client_run_tasks, 3 worker threads
# with a no-op function) against a gearmand on a free loopback port in
# these modes:
#   memory   gearmand's default in-memory queue
#   sqlite   the persistent libsqlite3 queue (-q libsqlite3) on a fresh
#            database: every job stored before JOB_CREATED and deleted when
#            done, a SQLite transaction each; SQLITE_JOBS jobs only
#            (default 1000), as it is slow
# Installs gearman-job-server and libgearman-dev with apt-get if gearmand
# or libgearman is missing. gearmand comes from $GEARMAND, or `gearmand` on
# PATH or in /usr/sbin; GEARMAND_ARGS adds options (e.g. "-t 2").
#
# Usage: bench/run_gearman.sh [-n JOBS] [--sqlite-jobs N] [--repeat R]
#                             [--modes "M..."] [--no-build] [--no-install]
# Environment: GEARMAND, GEARMAND_ARGS, BUILD_DIR (default
# <repo>/build-bench), KEEP_LOGS=1.
# Exit status: 0 all runs completed, 1 a run failed, 2 usage.
set -euo pipefail

NAME=run_gearman.sh
# shellcheck source-path=SCRIPTDIR source=bench_lib.sh disable=SC1091  # -x follows it
. "$(dirname "${BASH_SOURCE[0]}")/bench_lib.sh"

JOBS=200000
SQLITE_JOBS=1000
REPEAT=1
MODES="memory sqlite"
DO_BUILD=1
DO_INSTALL=1

usage () {
    sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'
}

while [ $# -gt 0 ]; do
    case "$1" in
        -n|--jobs) JOBS=${2:-}; shift 2 ;;
        --sqlite-jobs) SQLITE_JOBS=${2:-}; shift 2 ;;
        --repeat) REPEAT=${2:-}; shift 2 ;;
        --modes) MODES=${2:-}; shift 2 ;;
        --no-build) DO_BUILD=0; shift ;;
        --no-install) DO_INSTALL=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "$NAME: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
for v in JOBS SQLITE_JOBS REPEAT; do need_number "$v" "${!v}"; done
if [ "$JOBS" -lt 1 ] || [ "$SQLITE_JOBS" -lt 1 ]; then
    echo "$NAME: job counts must be >= 1" >&2
    exit 2
fi
[ "$REPEAT" -ge 1 ] || { echo "$NAME: --repeat must be >= 1" >&2; exit 2; }
for m in $MODES; do
    case "$m" in
        memory|sqlite) ;;
        *) echo "$NAME: unknown mode '$m' (memory, sqlite)" >&2; exit 2 ;;
    esac
done
read -r -a EXTRA_ARGS <<<"${GEARMAND_ARGS:-}"

find_gearmand () {
    if [ -n "${GEARMAND:-}" ]; then
        echo "$GEARMAND"
    else
        command -v gearmand || { [ -x /usr/sbin/gearmand ] && echo /usr/sbin/gearmand; } || true
    fi
}

have_libgearman () {
    pkg-config --exists gearmand 2>/dev/null || [ -f /usr/include/libgearman-1.0/gearman.h ]
}

GEARMAND=$(find_gearmand)
if [ "$DO_INSTALL" = 1 ] && { [ -z "$GEARMAND" ] || { [ "$DO_BUILD" = 1 ] && ! have_libgearman; }; }
then
    echo "$NAME: installing gearman-job-server and libgearman-dev (Debian packages)..."
    pkgs=(gearman-job-server libgearman-dev)
    if [ "$(id -u)" = 0 ]; then
        apt-get install -y --no-install-recommends "${pkgs[@]}" >/dev/null \
            || { apt-get update >/dev/null \
                 && apt-get install -y --no-install-recommends "${pkgs[@]}" >/dev/null; }
    else
        sudo apt-get install -y --no-install-recommends "${pkgs[@]}" >/dev/null
    fi
    GEARMAND=$(find_gearmand)
fi
if [ -z "$GEARMAND" ] || [ ! -x "$GEARMAND" ]; then
    die "no gearmand (install gearman-job-server, or set GEARMAND=/path/to/gearmand)"
fi

BENCH=$BUILD_DIR/bench/bench_gearman
if [ "$DO_BUILD" = 1 ]; then
    have_libgearman || die "no libgearman (install libgearman-dev)"
    # Configure again when the build dir exists: it may predate libgearman,
    # and bench_gearman is defined only when libgearman is found.
    if [ -f "$BUILD_DIR/CMakeCache.txt" ]; then
        cmake -S "$ROOT" -B "$BUILD_DIR" >/dev/null
    fi
    bench_build bench_gearman
fi
bench_need "$BENCH"
bench_init

# gearmand is stopped on its own, after the bench: gearmand 1.1.20 can
# crash (double free) and hang when stopped while clients are connected.
GM_PID=
stop_gearmand () {
    if [ -n "$GM_PID" ]; then
        stop_pids "$GM_PID"
        GM_PID=
    fi
}
gearman_cleanup () {
    local rc=$?
    stop_all
    stop_gearmand
    set +e              # bench_cleanup takes the exit status from $?
    (exit "$rc")
    bench_cleanup
}
trap gearman_cleanup EXIT

echo "gearmand ($("$GEARMAND" --version 2>&1 | grep -m1 -o 'gearmand [^ ]*' || true)${EXTRA_ARGS[*]:+, ${EXTRA_ARGS[*]}})" \
     "with the core workload: $JOBS jobs of 100 B ($SQLITE_JOBS with sqlite);" \
     "$(nproc) cores; $REPEAT run(s) per mode"
declare -A RATES ACCEPTS
for mode in $MODES; do
    RATES[$mode]=""
    ACCEPTS[$mode]=""
    for r in $(seq "$REPEAT"); do
        args=()
        if [ "$mode" = sqlite ]; then
            db=$(mktemp -d "$LOGS/sqlite.XXXXXX")/queue.db
            args=(-q libsqlite3 --libsqlite3-db "$db")
        fi
        started=
        for _ in $(seq 20); do
            pick_ports || break
            p=$PORT
            "$GEARMAND" -L 127.0.0.1 -p "$p" -l "$LOGS/gearmand-$mode-$r.log" \
                        -P "$LOGS/gearmand.pid" "${args[@]}" "${EXTRA_ARGS[@]}" \
                        >>"$LOGS/gearmand.out" 2>&1 &
            GM_PID=$!
            for _ in $(seq 50); do
                port_free "$p" || { started=1; break; }
                kill -0 "$GM_PID" 2>/dev/null || break
                sleep 0.1
            done
            [ -n "$started" ] && break
            stop_gearmand
        done
        [ -n "$started" ] \
            || die "could not start gearmand (see $LOGS/gearmand.out and $LOGS/gearmand-*.log)"
        echo
        echo "== $mode, run $r of $REPEAT (load average $(loadavg))"
        n=$JOBS
        [ "$mode" = sqlite ] && n=$SQLITE_JOBS
        run_bench "$mode-$r" "$BENCH" --port "$p" --jobs "$n" \
                  --timeout "$((RUN_TIMEOUT > 10 ? RUN_TIMEOUT - 5 : RUN_TIMEOUT))"
        stop_all
        stop_gearmand
        RATES[$mode]+=" $(field e2e_rate "$LAST_RESULT")"
        ACCEPTS[$mode]+=" $(field accept_rate "$LAST_RESULT")"
    done
done

echo
echo "summary (best / median of $REPEAT; load average now $(loadavg))"
for mode in $MODES; do
    # shellcheck disable=SC2086
    printf '  gearmand %-7s %6.0f / %6.0f jobs/s end to end, accepted %6.0f / %6.0f jobs/s\n' \
           "$mode" "$(best_max ${RATES[$mode]})" "$(median ${RATES[$mode]})" \
           "$(best_max ${ACCEPTS[$mode]})" "$(median ${ACCEPTS[$mode]})"
done

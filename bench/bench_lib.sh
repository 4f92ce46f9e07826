# shellcheck shell=bash
# bench/bench_lib.sh - shared by the bench/run_*.sh scripts. Sourced, not
# run. The caller sets NAME (for messages) and may set
# BUILD_DIR; it then calls bench_init, which installs the cleanup trap.
#
# Provides: building (Release, in BUILD_DIR), a log dir, starting brokers on
# free loopback ports and workers, running a bench bounded in time and
# keeping its RESULT line, stopping everything that was started (also on
# Ctrl-C or an error), and small helpers (field, median, loadavg).

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build-bench}
BROKER=$BUILD_DIR/broker/dagq-broker
WORKER=$BUILD_DIR/worker/dagq-worker
KEEP_LOGS=${KEEP_LOGS:-0}      # 1: keep the logs even on success
RUN_TIMEOUT=${RUN_TIMEOUT:-600}  # seconds, per bench run
STOP_GRACE=${STOP_GRACE:-100}  # tenths of a second between TERM and KILL
PIDS=()
LOGS=
BROKER_PID=
FE='' BE='' EV=''
PORT=''
MODE_ARGS=()
LAST_RESULT=

die () {
    echo "$NAME: $*" >&2
    exit 1
}

# Build the given targets in BUILD_DIR (Release), configuring it if needed.
bench_build () {
    if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
        cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release \
              -DDAGQ_BUILD_TESTS=OFF -DDAGQ_BUILD_GATEWAY=OFF >/dev/null
    fi
    cmake --build "$BUILD_DIR" -j"$(nproc)" --target "$@" >/dev/null
}

# Every file given must be an executable.
bench_need () {
    local b
    for b in "$@"; do
        [ -x "$b" ] || die "$b is missing (build it, or drop --no-build)"
    done
}

# Stop what we started: TERM, a grace period, then KILL.
stop_pids () {
    local pid
    for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
    for _ in $(seq "$STOP_GRACE"); do
        local alive=0
        for pid in "$@"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && break
        sleep 0.1
    done
    for pid in "$@"; do
        if kill -0 "$pid" 2>/dev/null; then
            echo "$NAME: pid $pid did not stop on SIGTERM; killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
}

forget_pid () {
    local keep=() pid
    for pid in "${PIDS[@]}"; do [ "$pid" = "$1" ] || keep+=("$pid"); done
    PIDS=("${keep[@]}")
}

# Stop every process started so far.
stop_all () {
    if [ ${#PIDS[@]} -gt 0 ]; then stop_pids "${PIDS[@]}"; fi
    PIDS=()
    BROKER_PID=
}

bench_cleanup () {
    local rc=$?
    trap - EXIT INT TERM
    stop_all
    if [ -n "$LOGS" ]; then
        if [ "$KEEP_LOGS" = 1 ] || [ $rc != 0 ]; then
            echo "logs kept in $LOGS" >&2
        else
            rm -rf "$LOGS"
        fi
    fi
    exit $rc
}

bench_init () {
    LOGS=$(mktemp -d "${TMPDIR:-/tmp}/dagq-bench.XXXXXX")
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
}

port_free () {
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# pick_ports: three consecutive free loopback ports below the kernel's
# ephemeral range (where an outgoing connection of another program could
# take one between our check and the bind); sets PORT, FE, BE, EV.
pick_ports () {
    local lo=20000 hi p
    hi=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
    [ "$hi" -gt $((lo + 100)) ] || { lo=40000; hi=60000; }
    for _ in $(seq 50); do
        p=$(( lo + (RANDOM * 32768 + RANDOM) % (hi - lo - 3) ))
        if port_free $p && port_free $((p + 1)) && port_free $((p + 2)); then
            PORT=$p
            FE=tcp://127.0.0.1:$p
            BE=tcp://127.0.0.1:$((p + 1))
            EV=tcp://127.0.0.1:$((p + 2))
            return 0
        fi
    done
    echo "$NAME: no free loopback ports" >&2
    return 1
}

# start_broker LOGNAME BROKER-ARGS...: a broker on three free loopback
# ports; sets BROKER_PID, FE, BE, EV. Returns once it listens (or fails).
start_broker () {
    local name=$1 p
    shift
    for _ in $(seq 20); do
        pick_ports || return 1
        p=$PORT
        "$BROKER" --frontend "$FE" --backend "$BE" --events "$EV" \
                  --log-level warn "$@" >>"$LOGS/$name.log" 2>&1 &
        BROKER_PID=$!
        PIDS+=("$BROKER_PID")
        # Listening, or gone (exit status 4, a port taken meanwhile: try
        # others). A store with many jobs takes a while to load: wait up
        # to 120 s.
        local rc=
        for _ in $(seq 1200); do
            if ! kill -0 "$BROKER_PID" 2>/dev/null; then
                rc=0
                wait "$BROKER_PID" || rc=$?
                break
            fi
            port_free $p || return 0
            sleep 0.1
        done
        [ -n "$rc" ] || stop_pids "$BROKER_PID"
        forget_pid "$BROKER_PID"
        BROKER_PID=
        [ "$rc" = 4 ] || break
    done
    echo "$NAME: could not start a broker (see $LOGS/$name.log):" >&2
    tail -5 "$LOGS/$name.log" >&2
    return 1
}

# mode_args MODE: sets MODE_ARGS to the broker arguments of a store mode:
# memory, or full|normal|off with a fresh data dir under LOGS.
mode_args () {
    case "$1" in
        memory) MODE_ARGS=(--memory) ;;
        full|normal|off)
            local dir
            dir=$(mktemp -d "$LOGS/data-$1.XXXXXX") || return 1
            # shellcheck disable=SC2034  # read by the caller
            MODE_ARGS=(--data-dir "$dir" --sync "$1") ;;
        *) echo "$NAME: unknown store mode '$1'" >&2; return 1 ;;
    esac
}

# stop_broker: SIGTERM the broker and wait for it to exit (it finishes its
# batch and closes the store); returns its exit status.
stop_broker () {
    local pid=$BROKER_PID rc=0
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1200); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "$NAME: broker $pid still running 120 s after SIGTERM; killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || rc=$?
    forget_pid "$pid"
    BROKER_PID=
    return $rc
}

# start_workers N LOGPREFIX: N `dagq-worker --builtins --concurrency 64`.
start_workers () {
    local i
    for i in $(seq "$1"); do
        "$WORKER" --broker "$BE" --builtins --concurrency "${CONCURRENCY:-64}" \
                  --name "bench-w$i" --log-level warn >>"$LOGS/$2-$i.log" 2>&1 &
        PIDS+=($!)
    done
}

# run_bench LOGNAME CMD...: run a bench bounded by RUN_TIMEOUT, show its
# output (indented), keep its RESULT line in LAST_RESULT.
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
        sed 's/^/    /' "$out"
        echo "$NAME: bench failed (status $rc): $*" >&2
        return 1
    fi
    sed 's/^/    /' "$out" | grep -v '^    RESULT'
    # shellcheck disable=SC2034  # read by the caller
    LAST_RESULT=$(grep '^RESULT' "$out" | tail -1)
}

field () {          # field NAME "RESULT a=1 b=2"
    echo "$2" | tr ' ' '\n' | sed -n "s/^$1=//p"
}

# median VALUES...: the median (the lower middle one for an even count).
median () {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }'
}

# best_max / best_min VALUES...
best_max () { printf '%s\n' "$@" | sort -g | tail -1; }
best_min () { printf '%s\n' "$@" | sort -g | head -1; }

loadavg () {
    cut -d' ' -f1-3 /proc/loadavg
}

# A positive integer, or exit 2 naming the option.
need_number () {
    case "$2" in
        ''|*[!0-9]*) echo "$NAME: $1 must be a number, not '$2'" >&2; exit 2 ;;
    esac
}

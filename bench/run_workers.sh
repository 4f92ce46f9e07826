#!/usr/bin/env bash
# bench/run_workers.sh - the scale of one broker: 1,000 connected workers.
#
# Starts a broker (fresh data dir, --sync full) on free loopback ports and
# PROCS bench_workers processes of PER workers each (DEALER sockets speaking
# the worker protocol: capacity 1, type echo, heartbeats), then:
#   1. waits until all PROCS x PER workers are registered (dagq stats);
#   2. measures the broker's CPU (utime + stime from /proc) over IDLE
#      seconds with nothing but heartbeats: the cost of connected, idle
#      workers; then holds until HOLD seconds, checking every 5 s that
#      none was dropped (and the broker logged no missed heartbeats);
#   3. submits JOBS echo jobs (one DAG document) and waits for them: every
#      job must succeed, and the number of distinct workers that ran one is
#      counted (from `dagq dag --json`, and by the bench processes);
#   4. stops the workers (BYE) and reads their RESULT lines: no worker may
#      have seen the broker silent past its liveness.
# Prints the figures and a RESULT line; exit 0 when every check held.
#
# Usage: bench/run_workers.sh [-p PROCS] [-n PER] [--hold S] [--idle S]
#                             [--jobs N] [--heartbeat-ms MS] [--no-build]
# Defaults: 4 x 250 workers, hold 30 s, idle 20 s, 3000 jobs, the broker's
# default heartbeat (1000 ms).
# Environment: BUILD_DIR (default <repo>/build-bench), KEEP_LOGS=1.
# Exit status: 0 all checks held, 1 a check failed or a run failed, 2 usage.
set -euo pipefail

NAME=run_workers.sh
. "$(dirname "${BASH_SOURCE[0]}")/bench_lib.sh"

PROCS=4
PER=250
HOLD=30
IDLE=20
JOBS=3000
HB_MS=
DO_BUILD=1

usage () {
    sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'
}

while [ $# -gt 0 ]; do
    case "$1" in
        -p|--procs) need_number "$1" "${2:-}"; PROCS=$2; shift 2 ;;
        -n|--per) need_number "$1" "${2:-}"; PER=$2; shift 2 ;;
        --hold) need_number "$1" "${2:-}"; HOLD=$2; shift 2 ;;
        --idle) need_number "$1" "${2:-}"; IDLE=$2; shift 2 ;;
        --jobs) need_number "$1" "${2:-}"; JOBS=$2; shift 2 ;;
        --heartbeat-ms) need_number "$1" "${2:-}"; HB_MS=$2; shift 2 ;;
        --no-build) DO_BUILD=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
done
[ "$PROCS" -ge 1 ] && [ "$PER" -ge 1 ] && [ "$PER" -le 4096 ] || { echo "$NAME: bad -p/-n" >&2; exit 2; }
[ "$IDLE" -le "$HOLD" ] || { echo "$NAME: --idle must not exceed --hold" >&2; exit 2; }
TOTAL=$((PROCS * PER))
CLI=$BUILD_DIR/client/dagq
BENCH=$BUILD_DIR/bench/bench_workers

if [ $DO_BUILD = 1 ]; then
    bench_build dagq-broker dagq-cli bench_workers
fi
bench_need "$BROKER" "$CLI" "$BENCH"
command -v python3 >/dev/null || die "python3 is needed to read dagq's JSON"

# One fd per worker connection in the broker, two per socket in a bench
# process, plus slack: raise the soft limit (the hard one bounds us).
need_fds=$((TOTAL + 1024))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$need_fds" ]; then
    hard=$(ulimit -Hn)
    if [ "$hard" = unlimited ] || [ "$hard" -ge "$need_fds" ]; then
        ulimit -n "$need_fds"
    else
        ulimit -n "$hard"
        [ "$hard" -ge $((TOTAL + 64)) ] ||
            die "ulimit -n is $hard (hard): too low for $TOTAL workers; raise it (e.g. LimitNOFILE)"
    fi
fi

bench_init
CLK_TCK=$(getconf CLK_TCK)

# utime + stime of a process, in clock ticks.
cpu_ticks () {
    awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
}

rss_kb () {
    awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"
}

# Registered workers whose name starts with "bw" (ours).
registered () {
    "$CLI" --broker "$FE" --timeout 30 stats --json |
        python3 -c 'import json,sys; print(sum(1 for w in json.load(sys.stdin).get("workers", []) if str(w.get("name","")).startswith("bw")))'
}

echo "== $TOTAL workers ($PROCS processes x $PER) on one broker (loadavg $(loadavg), ulimit -n $(ulimit -n))"
broker_args=(--data-dir "$LOGS/data" --log-level info)
[ -n "$HB_MS" ] && broker_args+=(--heartbeat-ms "$HB_MS")
start_broker broker "${broker_args[@]}"
bpid=$BROKER_PID
rss0=$(rss_kb "$bpid")

t0=$(date +%s.%N)
BENCH_PIDS=()
for i in $(seq "$PROCS"); do
    "$BENCH" --broker "$BE" --count "$PER" --name "bw$i" \
             --status-file "$LOGS/bench-$i.status" >"$LOGS/bench-$i.out" 2>"$LOGS/bench-$i.err" &
    BENCH_PIDS+=($!)
    PIDS+=($!)
done

# 1. Registration.
n=0
for _ in $(seq 600); do
    n=$(registered) || n=0
    [ "$n" -ge "$TOTAL" ] && break
    for p in "${BENCH_PIDS[@]}"; do
        kill -0 "$p" 2>/dev/null || die "a bench_workers process exited: $(cat "$LOGS"/bench-*.err)"
    done
    sleep 0.2
done
[ "$n" -ge "$TOTAL" ] || die "only $n of $TOTAL workers registered within 120 s"
t_reg=$(echo "$(date +%s.%N) - $t0" | bc)
printf '   registered: %d workers in %.1f s\n' "$n" "$t_reg"

# 2. Hold: idle CPU over the first IDLE seconds (nothing but heartbeats:
# no stats requests meanwhile), then a check every 5 s until HOLD.
c0=$(cpu_ticks "$bpid")
s0=$(date +%s.%N)
sleep "$IDLE"
c1=$(cpu_ticks "$bpid")
s1=$(date +%s.%N)
idle_pct=$(echo "scale=2; 100 * ($c1 - $c0) / $CLK_TCK / ($s1 - $s0)" | bc)
held=1
waited=$IDLE
while :; do
    n=$(registered) || n=0
    if [ "$n" -ne "$TOTAL" ]; then
        echo "   at ${waited} s: $n of $TOTAL workers registered" >&2
        held=0
    fi
    [ "$waited" -ge "$HOLD" ] && break
    step=5
    [ $((waited + step)) -gt "$HOLD" ] && step=$((HOLD - waited))
    sleep "$step"
    waited=$((waited + step))
done
dropped=$(grep -c "missed heartbeats" "$LOGS/broker.log" || true)
[ "$dropped" = 0 ] || held=0
rss1=$(rss_kb "$bpid")
printf '   held %d s: %s (broker dropped %d); broker idle CPU %s %% of a core over %d s; RSS %d kB (%d kB before the workers)\n' \
       "$HOLD" "$([ $held = 1 ] && echo 'all registered throughout' || echo 'WORKERS DROPPED')" \
       "$dropped" "$idle_pct" "$IDLE" "$rss1" "$rss0"

# 3. Jobs spread over all of them.
python3 - "$JOBS" >"$LOGS/dag.json" <<'EOF'
import json, sys
n = int(sys.argv[1])
print(json.dumps({"name": "spread", "jobs": [
    {"id": "j%d" % i, "type": "echo", "payload_text": "job %d" % i} for i in range(n)]}))
EOF
j0=$(date +%s.%N)
dag=$("$CLI" --broker "$FE" --timeout 60 submit-dag "$LOGS/dag.json" --json |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["dag_id"])')
wrc=0
"$CLI" --broker "$FE" --timeout 60 wait "$dag" --timeout 600 >/dev/null 2>&1 || wrc=$?
j_s=$(echo "$(date +%s.%N) - $j0" | bc)
read -r ok distinct < <("$CLI" --broker "$FE" --timeout 60 dag "$dag" --json | python3 -c '
import json, sys
d = json.load(sys.stdin)
jobs = d.get("jobs", [])
ok = sum(1 for j in jobs if j.get("state") in ("succeeded", 3))
print(ok, len({j.get("worker") for j in jobs if j.get("worker")}))')
printf '   %d jobs: %d succeeded in %.1f s (wait exit %d), run by %d distinct workers\n' \
       "$JOBS" "$ok" "$j_s" "$wrc" "$distinct"

# 4. Stop the workers; their own view.
for p in "${BENCH_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
for p in "${BENCH_PIDS[@]}"; do wait "$p" 2>/dev/null || true; forget_pid "$p"; done
silences=0; rereg=0; with_jobs=0; errors=0; max_gap=0
for i in $(seq "$PROCS"); do
    line=$(grep '^RESULT' "$LOGS/bench-$i.out" | tail -1)
    [ -n "$line" ] || die "bench_workers $i printed no RESULT: $(cat "$LOGS/bench-$i.err")"
    silences=$((silences + $(field silences "$line")))
    rereg=$((rereg + $(field reregisters "$line")))
    with_jobs=$((with_jobs + $(field with_jobs "$line")))
    errors=$((errors + $(field errors "$line")))
    g=$(field max_gap_ms "$line")
    [ "$g" -gt "$max_gap" ] && max_gap=$g
done
printf '   workers saw: %d silences past liveness, %d re-registrations, %d errors, longest broker silence %d ms; %d ran jobs\n' \
       "$silences" "$rereg" "$errors" "$max_gap" "$with_jobs"
stop_broker || true

pass=1
[ $held = 1 ] || pass=0
[ "$ok" = "$JOBS" ] || pass=0
[ "$distinct" = "$TOTAL" ] || pass=0
[ "$silences" = 0 ] && [ "$rereg" = 0 ] || pass=0
echo "RESULT workers=$TOTAL registered_s=$t_reg idle_cpu_pct=$idle_pct idle_s=$IDLE rss_kb=$rss1 held=$held jobs=$JOBS succeeded=$ok distinct_workers=$distinct jobs_s=$j_s silences=$silences pass=$pass"
[ $pass = 1 ]

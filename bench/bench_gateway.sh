#!/bin/bash
# bench_gateway.sh - HTTP ingest benchmark of dagq-gateway (issue 5).
#
# Builds Release, starts a broker (--sync full, temp data dir), one worker
# (--builtins), the gateway and a bare libmicrohttpd server that answers
# 202 and does nothing (bench_bare_http, the ceiling), then drives
# POST /v1/jobs/echo with ~1 KB bodies over keep-alive connections with wrk
# against each, and prints accepted requests per minute, p50/p99 latency
# and the ratio to the ceiling. Stops everything it started, also on error.
#
# The machine is shared and noisy, so the two servers are measured in
# alternation (bare, gateway, bare, gateway, ...) BENCH_RUNS times; the
# median and the best of each are reported and the ratio is median over
# median. Each run also shows the CPU time every process spent per accepted
# request, and each gateway run the jobs per coalesced SUBMIT (one broker
# commit each, roughly): together they tell where the limit is.
#
# Targets: >= 1,000,000 accepted requests per minute, >= 50% of the bare
# server's rate, p99 < 20 ms.
#
# Environment:
#   BENCH_SECONDS      measured seconds per run (default 10)
#   BENCH_RUNS         runs per server, in alternation (default 3)
#   BENCH_WARMUP       warm-up seconds before each server's first run (default 2)
#   BENCH_CONNECTIONS  keep-alive connections (default 64)
#   BENCH_WRK_THREADS  wrk threads (default 2)
#   BENCH_BODY_BYTES   request body size (default 1024)
#   BENCH_BUILD_DIR    build tree (default <repo>/build-bench-gateway)
#   BENCH_SKIP_BUILD=1 use the binaries already in BENCH_BUILD_DIR
#   BENCH_WORKER_CONCURRENCY  the worker's --concurrency (default 64, enough
#                      for it to run every accepted job as it comes; with
#                      the default of one per core it runs a few percent and
#                      the rest queue up, which is ingest only)
#   BENCH_EVENT_LOOP   the gateway's --event-loop (default poll: 64 keep-alive
#                      connections are the case it is for; epoll for the
#                      gateway's default)
#   BENCH_GATEWAY_ARGS extra dagq-gateway options (e.g. "--threads 1")
#   BENCH_BROKER_ARGS  extra dagq-broker options (e.g. "--result-ttl 5")
#   BENCH_SYNC         the broker's --sync (default full, which the targets
#                      are about; normal or off show what the fsync costs)
#   BENCH_KEEP=1       keep the temp dir (logs) and print its path
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BENCH_BUILD_DIR:-$REPO/build-bench-gateway}
SECONDS_RUN=${BENCH_SECONDS:-10}
RUNS=${BENCH_RUNS:-3}
WARMUP=${BENCH_WARMUP:-2}
CONNS=${BENCH_CONNECTIONS:-64}
WRK_THREADS=${BENCH_WRK_THREADS:-2}
export WRK_BODY_BYTES=${BENCH_BODY_BYTES:-1024}
WORKER_CONCURRENCY=${BENCH_WORKER_CONCURRENCY:-64}
LUA=$REPO/bench/wrk_post.lua
PYTHON=/usr/bin/python3
[ -x "$PYTHON" ] || PYTHON=python3

PIDS=()
TMP=$(mktemp -d /tmp/dagq-bench-gw.XXXXXX)

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ "${BENCH_KEEP:-0}" = 1 ]; then
        echo "logs kept in $TMP"
    else
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '%s\n' "$*"; }
die() { printf 'bench_gateway: %s\n' "$*" >&2; exit 1; }

# --- tools and build ----------------------------------------------------------
if ! command -v wrk >/dev/null 2>&1; then
    say "installing wrk (Debian package)..."
    if [ "$(id -u)" = 0 ]; then
        apt-get install -y wrk >/dev/null || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
    else
        sudo apt-get install -y wrk >/dev/null
    fi
fi
command -v wrk >/dev/null 2>&1 || die "wrk is not available"

if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
    say "building Release in $BUILD..."
    cmake -S "$REPO" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DDAGQ_BUILD_TESTS=OFF \
          -DDAGQ_BUILD_GATEWAY=ON >/dev/null
    cmake --build "$BUILD" -j"$(nproc)" --target dagq-broker dagq-worker dagq-gateway \
          bench_bare_http >/dev/null
fi
for bin in broker/dagq-broker worker/dagq-worker gateway/dagq-gateway bench/bench_bare_http; do
    [ -x "$BUILD/$bin" ] || die "$BUILD/$bin is not built"
done

# Free loopback ports (bind to 0, read the port, close).
read -r FE BE EV GW BARE < <("$PYTHON" -c '
import socket
socks = []
for _ in range(5):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))')

wait_http() {   # URL: until it answers (20 s)
    for _ in $(seq 1 200); do
        curl -s -o /dev/null "$1" && return 0
        sleep 0.1
    done
    die "no answer from $1 (logs in $TMP)"
}

# --- start everything ------------------------------------------------------------
# NAMES[i] labels PIDS[i] in the CPU accounting.
"$BUILD/broker/dagq-broker" --data-dir "$TMP/data" --sync "${BENCH_SYNC:-full}" \
    --frontend "tcp://127.0.0.1:$FE" --backend "tcp://127.0.0.1:$BE" \
    --events "tcp://127.0.0.1:$EV" --log-level warn ${BENCH_BROKER_ARGS:-} \
    >"$TMP/broker.log" 2>&1 &
PIDS+=($!)
NAMES=(broker)
"$BUILD/worker/dagq-worker" --broker "tcp://127.0.0.1:$BE" --builtins \
    --concurrency "$WORKER_CONCURRENCY" --log-level warn >"$TMP/worker.log" 2>&1 &
PIDS+=($!)
NAMES+=(worker)
# shellcheck disable=SC2086
"$BUILD/gateway/dagq-gateway" --listen "127.0.0.1:$GW" --broker "tcp://127.0.0.1:$FE" \
    --event-loop "${BENCH_EVENT_LOOP:-poll}" --log-level warn ${BENCH_GATEWAY_ARGS:-} \
    >"$TMP/gateway.log" 2>&1 &
PIDS+=($!)
NAMES+=(gateway)
"$BUILD/bench/bench_bare_http" --listen "$BARE" >"$TMP/bare.log" 2>&1 &
PIDS+=($!)
NAMES+=(bare)
wait_http "http://127.0.0.1:$GW/healthz"
wait_http "http://127.0.0.1:$BARE/"
for _ in $(seq 1 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$GW/readyz")" = 200 ] && break
    sleep 0.1
done

cpu_ticks() {   # PID: its user + system clock ticks so far
    awk '{print $14 + $15}' "/proc/$1/stat"
}

# run NAME URL WARM: warm up first if WARM is 1, then measure. Leaves wrk's
# RESULT line in $TMP/NAME and the CPU ticks each process used during the
# measurement ("name=ticks" lines) in $TMP/NAME.cpu.
run() {
    local name=$1 url=$2 warm=$3 before=() after=() wpid wrk0 wrk1 pid i
    local observed=$(( SECONDS_RUN > 1 ? SECONDS_RUN - 1 : 1 ))
    if [ "$warm" = 1 ] && [ "$WARMUP" != 0 ]; then
        wrk -t"$WRK_THREADS" -c"$CONNS" -d"${WARMUP}s" -s "$LUA" "$url" >/dev/null 2>&1 || true
    fi
    for pid in "${PIDS[@]}"; do before+=("$(cpu_ticks "$pid")"); done
    wrk -t"$WRK_THREADS" -c"$CONNS" -d"${SECONDS_RUN}s" --latency -s "$LUA" "$url" \
        >"$TMP/$name.wrk" 2>&1 &
    wpid=$!
    # wrk's own CPU over all but its last second (an ended process has no
    # stat), scaled to the whole run
    wrk0=$(cpu_ticks "$wpid" 2>/dev/null || echo 0)
    sleep "$observed"
    wrk1=$(cpu_ticks "$wpid" 2>/dev/null || echo "$wrk0")
    wait "$wpid" || die "wrk failed against $name: $(tail -3 "$TMP/$name.wrk")"
    for pid in "${PIDS[@]}"; do after+=("$(cpu_ticks "$pid")"); done
    grep '^RESULT' "$TMP/$name.wrk" >"$TMP/$name" || die "no wrk result for $name"
    {
        for i in "${!NAMES[@]}"; do
            echo "${NAMES[$i]}=$(( after[i] - before[i] ))"
        done
        echo "wrk=$(( (wrk1 - wrk0) * SECONDS_RUN / observed ))"
    } >"$TMP/$name.cpu"
}

stats() {   # the gateway's /v1/stats, or {}
    curl -s "http://127.0.0.1:$GW/v1/stats" || echo '{}'
}

say "bare libmicrohttpd server and dagq-gateway (--event-loop ${BENCH_EVENT_LOOP:-poll};" \
    "broker --sync ${BENCH_SYNC:-full}, 1 worker --concurrency $WORKER_CONCURRENCY):"
say "  $RUNS runs of ${SECONDS_RUN} s each, alternating, $CONNS connections, ${WRK_BODY_BYTES}-byte bodies"
for r in $(seq 1 "$RUNS"); do
    warm=0
    [ "$r" = 1 ] && warm=1
    run "bare.$r" "http://127.0.0.1:$BARE/v1/jobs/echo" "$warm"
    stats >"$TMP/stats0.$r"
    run "gateway.$r" "http://127.0.0.1:$GW/v1/jobs/echo" "$warm"
    stats >"$TMP/stats1.$r"
    say "  run $r of $RUNS done (load average $(cut -d' ' -f1-3 /proc/loadavg))"
done

"$PYTHON" - "$TMP" "$RUNS" "$(getconf CLK_TCK)" <<'EOF'
import json, statistics, sys

tmp, runs, hz = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])

def parse(name):
    line = open("%s/%s" % (tmp, name)).read().strip()
    d = dict(kv.split("=", 1) for kv in line.split()[1:])
    secs = float(d["seconds"])
    accepted = int(d.get("status_202", 0))
    other = {k: int(v) for k, v in d.items() if k.startswith("status_") and k != "status_202"}
    # wrk's socket errors by kind (errors_status repeats "other statuses")
    errors = {k[7:]: int(v) for k, v in d.items()
              if k.startswith("errors_") and k != "errors_status" and int(v)}
    cpu = {}
    for line in open("%s/%s.cpu" % (tmp, name)).read().split():
        k, v = line.split("=")
        cpu[k] = int(v) / hz
    return {"rate": accepted / secs, "p50": float(d["p50_ms"]), "p99": float(d["p99_ms"]),
            "accepted": accepted, "other": other, "errors": errors, "secs": secs, "cpu": cpu}

def coalescing(r):
    """Per gateway run: SUBMITs, jobs in them, jobs that ran (succeeded)
    meanwhile, and jobs queued or running at its end."""
    try:
        s0 = json.load(open("%s/stats0.%d" % (tmp, r)))
        s1 = json.load(open("%s/stats1.%d" % (tmp, r)))
        g0, g1 = s0["gateway"], s1["gateway"]
        e0, e1 = ([t for t in s["types"] if t["type"] == "echo"][0] for s in (s0, s1))
        return (g1["batches"] - g0["batches"], g1["batched_jobs"] - g0["batched_jobs"],
                e1["succeeded"] - e0["succeeded"], e1["queued"] + e1["running"])
    except (ValueError, KeyError, TypeError, OSError):
        return 0, 0, 0, 0

def fmt(n):
    return "{:,.0f}".format(n)

bare = [parse("bare.%d" % r) for r in range(1, runs + 1)]
gw = [parse("gateway.%d" % r) for r in range(1, runs + 1)]
print()
print("%-6s %-18s %13s %11s %8s %8s   %s" % ("run", "server", "accepted/min", "accepted/s",
                                            "p50 ms", "p99 ms", "CPU us per request"))
for i in range(runs):
    for name, r, procs in (("bare libmicrohttpd", bare[i], ("bare", "wrk")),
                           ("dagq-gateway", gw[i], ("gateway", "broker", "worker", "wrk"))):
        per = ", ".join("%s %.0f" % (p, r["cpu"].get(p, 0) * 1e6 / r["accepted"])
                        for p in procs) if r["accepted"] else "-"
        print("%-6s %-18s %13s %11s %8.2f %8.2f   %s" % (
            "%d/%d" % (i + 1, runs), name, fmt(r["rate"] * 60), fmt(r["rate"]),
            r["p50"], r["p99"], per))
        if r["other"] or r["errors"]:
            print("       (other statuses %s, socket errors %s)" % (r["other"], r["errors"] or "none"))
    batches, jobs, ran, left = coalescing(i + 1)
    if batches:
        print("       coalescing: %d jobs in %d SUBMITs, %.1f per SUBMIT, %.0f SUBMITs/s"
              % (jobs, batches, jobs / batches, batches / gw[i]["secs"]))
        print("       the worker ran %d jobs meanwhile (%.0f%% of those accepted); %d queued "
              "or running at the end" % (ran, 100.0 * ran / jobs, left))

def med(rs, k):
    return statistics.median(r[k] for r in rs)

b_rate, g_rate = med(bare, "rate"), med(gw, "rate")
g_best = max(gw, key=lambda r: r["rate"])
ratio = g_rate / b_rate if b_rate else 0.0
print()
print("median: bare %s/min, gateway %s/min, p50 %.2f ms, p99 %.2f ms; ratio %.1f %%"
      % (fmt(b_rate * 60), fmt(g_rate * 60), med(gw, "p50"), med(gw, "p99"), ratio * 100))
print("best:   bare %s/min, gateway %s/min (p99 %.2f ms in that run)"
      % (fmt(max(r["rate"] for r in bare) * 60), fmt(g_best["rate"] * 60), g_best["p99"]))
ok = [("accepted/min >= 1,000,000", g_rate * 60 >= 1e6),
      ("ratio >= 50 %", ratio >= 0.5), ("p99 < 20 ms", med(gw, "p99") < 20.0)]
print("targets (medians): " + ", ".join("%s %s" % (n, "met" if v else "NOT met") for n, v in ok))
print("markdown: | %s | %s | %.2f | %.2f | %.1f %% |" % (
    fmt(g_rate * 60), fmt(b_rate * 60), med(gw, "p50"), med(gw, "p99"), ratio * 100))
EOF

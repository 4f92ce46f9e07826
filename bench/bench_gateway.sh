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
# Targets: >= 1,000,000 accepted requests per minute, >= 50% of the bare
# server's rate, p99 < 20 ms.
#
# Environment:
#   BENCH_SECONDS      measured seconds per server (default 20)
#   BENCH_WARMUP       warm-up seconds per server (default 2)
#   BENCH_CONNECTIONS  keep-alive connections (default 64)
#   BENCH_WRK_THREADS  wrk threads (default 2)
#   BENCH_BODY_BYTES   request body size (default 1024)
#   BENCH_BUILD_DIR    build tree (default <repo>/build-bench-gateway)
#   BENCH_SKIP_BUILD=1 use the binaries already in BENCH_BUILD_DIR
#   BENCH_GATEWAY_ARGS extra dagq-gateway options (e.g. "--threads 1")
#   BENCH_KEEP=1       keep the temp dir (logs) and print its path
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BENCH_BUILD_DIR:-$REPO/build-bench-gateway}
SECONDS_RUN=${BENCH_SECONDS:-20}
WARMUP=${BENCH_WARMUP:-2}
CONNS=${BENCH_CONNECTIONS:-64}
WRK_THREADS=${BENCH_WRK_THREADS:-2}
export WRK_BODY_BYTES=${BENCH_BODY_BYTES:-1024}
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
"$BUILD/broker/dagq-broker" --data-dir "$TMP/data" --sync full \
    --frontend "tcp://127.0.0.1:$FE" --backend "tcp://127.0.0.1:$BE" \
    --events "tcp://127.0.0.1:$EV" --log-level warn >"$TMP/broker.log" 2>&1 &
PIDS+=($!)
"$BUILD/worker/dagq-worker" --broker "tcp://127.0.0.1:$BE" --builtins \
    --log-level warn >"$TMP/worker.log" 2>&1 &
PIDS+=($!)
# shellcheck disable=SC2086
"$BUILD/gateway/dagq-gateway" --listen "127.0.0.1:$GW" --broker "tcp://127.0.0.1:$FE" \
    --log-level warn ${BENCH_GATEWAY_ARGS:-} >"$TMP/gateway.log" 2>&1 &
PIDS+=($!)
"$BUILD/bench/bench_bare_http" --listen "$BARE" >"$TMP/bare.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$GW/healthz"
wait_http "http://127.0.0.1:$BARE/"
for _ in $(seq 1 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$GW/readyz")" = 200 ] && break
    sleep 0.1
done

# run NAME URL: warm up, measure, leave "requests seconds p50 p99 accepted" in $TMP/NAME
run() {
    local name=$1 url=$2
    if [ "$WARMUP" != 0 ]; then
        wrk -t"$WRK_THREADS" -c"$CONNS" -d"${WARMUP}s" -s "$LUA" "$url" >/dev/null 2>&1 || true
    fi
    wrk -t"$WRK_THREADS" -c"$CONNS" -d"${SECONDS_RUN}s" --latency -s "$LUA" "$url" \
        >"$TMP/$name.wrk" 2>&1 || die "wrk failed against $name: $(tail -3 "$TMP/$name.wrk")"
    grep '^RESULT' "$TMP/$name.wrk" >"$TMP/$name" || die "no wrk result for $name"
}

say "bare libmicrohttpd server: ${SECONDS_RUN} s, $CONNS connections, ${WRK_BODY_BYTES}-byte bodies..."
run bare "http://127.0.0.1:$BARE/v1/jobs/echo"
say "dagq-gateway (broker --sync full, 1 worker): ${SECONDS_RUN} s..."
run gateway "http://127.0.0.1:$GW/v1/jobs/echo"
STATS=$(curl -s "http://127.0.0.1:$GW/v1/stats" || true)

"$PYTHON" - "$TMP/bare" "$TMP/gateway" "$STATS" <<'EOF'
import json, re, sys

def parse(path):
    line = open(path).read().strip()
    d = dict(kv.split("=", 1) for kv in line.split()[1:])
    secs = float(d["seconds"])
    accepted = int(d.get("status_202", 0))
    other = {k: int(v) for k, v in d.items() if k.startswith("status_") and k != "status_202"}
    errors = sum(int(v) for k, v in d.items() if k.startswith("errors_"))
    return {"rate": accepted / secs, "p50": float(d["p50_ms"]), "p99": float(d["p99_ms"]),
            "accepted": accepted, "other": other, "errors": errors, "secs": secs}

bare, gw = parse(sys.argv[1]), parse(sys.argv[2])
ratio = gw["rate"] / bare["rate"] if bare["rate"] else 0.0
print()
print("%-22s %14s %12s %9s %9s" % ("server", "accepted/min", "accepted/s", "p50 ms", "p99 ms"))
for name, r in (("bare libmicrohttpd", bare), ("dagq-gateway", gw)):
    print("%-22s %14s %12s %9.2f %9.2f" % (name, "{:,.0f}".format(r["rate"] * 60),
                                            "{:,.0f}".format(r["rate"]), r["p50"], r["p99"]))
    if r["other"] or r["errors"]:
        print("  (other statuses %s, socket errors %d)" % (r["other"], r["errors"]))
print("ratio to the bare server: %.1f %%" % (ratio * 100))
try:
    g = json.loads(sys.argv[3])["gateway"]
    if g["batches"]:
        print("coalescing: %d jobs in %d SUBMITs (%.1f per SUBMIT)"
              % (g["batched_jobs"], g["batches"], g["batched_jobs"] / g["batches"]))
except (ValueError, KeyError, TypeError):
    pass
ok = [("accepted/min >= 1,000,000", gw["rate"] * 60 >= 1e6),
      ("ratio >= 50 %", ratio >= 0.5), ("p99 < 20 ms", gw["p99"] < 20.0)]
print("targets: " + ", ".join("%s %s" % (n, "met" if v else "NOT met") for n, v in ok))
print("markdown: | %s | %s | %.2f | %.2f | %.1f %% |" % (
    "{:,.0f}".format(gw["rate"] * 60), "{:,.0f}".format(bare["rate"] * 60),
    gw["p50"], gw["p99"], ratio * 100))
EOF

#!/usr/bin/env bash
# bench/run_dag_memory.sh - what finished DAGs cost the broker's memory.
#
# Starts a --sync full broker on free loopback ports and one
# `dagq-worker --builtins --concurrency 4`, then submits DAGS DAGs one after
# another with the CLI (`dagq submit-dag`, then `dagq wait`), each of PAIRS
# `echo` jobs with an OUTPUT-byte payload (so an output of that size) and a
# `sha256` child each, and prints the broker's RSS (/proc/PID/status) before
# and after every DAG. The DAGs stay queryable for --result-ttl (a day), so
# what is still held after they finish is what a day of such DAGs keeps.
#
# Usage: bench/run_dag_memory.sh [--dags N] [--pairs N] [--output BYTES]
#                                [--no-build]
# (defaults: 8 DAGs of 40 pairs, 1,000,000-byte outputs)
# Environment: BUILD_DIR (default <repo>/build-bench), KEEP_LOGS=1.
# Exit status: 0 done, 1 a step failed, 2 usage.
set -euo pipefail
NAME=run_dag_memory.sh
. "$(dirname "${BASH_SOURCE[0]}")/bench_lib.sh"
DAGS=8
PAIRS=40
OUTPUT=1000000
DO_BUILD=1
usage () {
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
}
while [ $# -gt 0 ]; do
    case "$1" in
        --dags) need_number "$1" "${2:-}"; DAGS=$2; shift 2 ;;
        --pairs) need_number "$1" "${2:-}"; PAIRS=$2; shift 2 ;;
        --output) need_number "$1" "${2:-}"; OUTPUT=$2; shift 2 ;;
        --no-build) DO_BUILD=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
done
CLI=$BUILD_DIR/client/dagq
if [ $DO_BUILD = 1 ]; then
    bench_build dagq-broker dagq-worker dagq-cli
fi
bench_need "$BROKER" "$WORKER" "$CLI"
bench_init

rss_kb () {
    awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"
}

# The DAG document: PAIRS parents with a payload of OUTPUT bytes, a child each.
DOC=$LOGS/dag.json
python3 - "$PAIRS" "$OUTPUT" >"$DOC" <<'EOF'
import json, sys
pairs, size = int(sys.argv[1]), int(sys.argv[2])
jobs = []
for i in range(pairs):
    jobs.append({"id": "p%d" % i, "type": "echo", "payload_text": "x" * size})
    jobs.append({"id": "c%d" % i, "type": "sha256", "depends_on": ["p%d" % i]})
json.dump({"name": "memory", "jobs": jobs}, sys.stdout)
EOF

mode_args full
start_broker broker "${MODE_ARGS[@]}"
CONCURRENCY=4 start_workers 1 worker
base=$(rss_kb "$BROKER_PID")
echo "broker RSS at start: $((base / 1024)) MiB; $DAGS DAGs of $PAIRS x $OUTPUT-byte outputs" \
     "(load average $(loadavg))"
for i in $(seq "$DAGS"); do
    dag=$("$CLI" --broker "$FE" submit-dag "$DOC" --json \
          | python3 -c 'import json, sys; print(json.load(sys.stdin)["dag_id"])')
    "$CLI" --broker "$FE" wait "$dag" --timeout 300 >/dev/null
    now=$(rss_kb "$BROKER_PID")
    printf '  after DAG %2d: RSS %5d MiB (+%d MiB)\n' "$i" $((now / 1024)) $(((now - base) / 1024))
done
stop_all

#!/usr/bin/env bash
# dagq quickstart: install what is missing, build, start a broker, three
# workers and a gateway on loopback, run a real workload through the CLI and
# over HTTP, print what happened, and stop everything it started.
#
# Workload:
#   1. 5,000 independent sha256 jobs (built-in handler), checked against
#      sha256sum;
#   2. a word-count DAG over the text files in /usr/share/common-licenses:
#      every file is split into chunks, an external command (wc -w) counts
#      each chunk in parallel, one merge job per file sums its chunks (it
#      reads its parents' outputs from $DAGQ_PARENTS_DIR), a final job sums
#      the files; the result is checked against `cat | wc -w`;
#   3. jobs and a DAG over HTTP with curl, through dagq-gateway.
#
# Environment: DAGQ_QS_JOBS (default 5000), DAGQ_QS_KEEP=1 keeps the temp dir.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
NJOBS=${DAGQ_QS_JOBS:-5000}

deploy/install-deps.sh
echo "== building (build-release/)"
cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DDAGQ_BUILD_TESTS=OFF >/dev/null
cmake --build build-release -j"$(nproc)" >/dev/null
BIN=$ROOT/build-release
DAGQ=$BIN/client/dagq

WORK=$(mktemp -d /tmp/dagq-quickstart.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  if [ "${DAGQ_QS_KEEP:-0}" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT INT TERM

# Free loopback ports: the first base port whose four ports are all free.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
BASE=15555
while ! (port_free $BASE && port_free $((BASE+1)) && port_free $((BASE+2)) && port_free $((BASE+3))); do
  BASE=$((BASE + 10))
done
FE=tcp://127.0.0.1:$BASE; BE=tcp://127.0.0.1:$((BASE+1)); EV=tcp://127.0.0.1:$((BASE+2))
HTTP=127.0.0.1:$((BASE+3))
export DAGQ_BROKER=$FE

echo "== starting a broker, three workers and a gateway (logs in $WORK)"
"$BIN/broker/dagq-broker" --frontend "$FE" --backend "$BE" --events "$EV" \
    --data-dir "$WORK/data" 2>"$WORK/broker.log" &
PIDS+=($!)
MERGE='cat "$DAGQ_PARENTS_DIR"/* | awk "{s+=\$1} END {print s+0}"'
for i in 1 2 3; do
  "$BIN/worker/dagq-worker" --broker "$BE" --concurrency 8 --name "worker-$i" --builtins \
      --handler "wc=wc -w" --handler "merge=$MERGE" 2>"$WORK/worker-$i.log" &
  PIDS+=($!)
done
if [ -x "$BIN/gateway/dagq-gateway" ]; then
  "$BIN/gateway/dagq-gateway" --listen "$HTTP" --broker "$FE" 2>"$WORK/gateway.log" &
  PIDS+=($!)
fi
for _ in $(seq 100); do
  n=$("$DAGQ" stats --json 2>/dev/null | jq '.workers | length' 2>/dev/null || echo 0)
  [ "${n:-0}" -ge 3 ] && break
  sleep 0.1
done
echo "   $("$DAGQ" stats --json | jq '.workers | length') workers registered"

echo "== 1. $NJOBS sha256 jobs, one bulk submission through the CLI"
python3 - "$NJOBS" > "$WORK/sha.json" <<'PY'
import json, sys
n = int(sys.argv[1])
print(json.dumps({"name": "sha256-batch", "jobs": [
    {"id": "j%d" % i, "type": "sha256", "payload_text": "quickstart payload %d" % i}
    for i in range(n)]}))
PY
t0=$(date +%s.%N)
"$DAGQ" submit-dag "$WORK/sha.json" --json > "$WORK/sha.ids"
DAG1=$(jq -r .dag_id "$WORK/sha.ids")
"$DAGQ" wait "$DAG1" --timeout 300
t1=$(date +%s.%N)
python3 -c "print('   %d jobs in %.2f s: %.0f jobs/s end to end (submit, run, wait)' % ($NJOBS, $t1 - $t0, $NJOBS / ($t1 - $t0)))"
bad=0
for i in 0 17 $((NJOBS - 1)); do
  id=$(jq -r ".jobs.j$i" "$WORK/sha.ids")
  got=$("$DAGQ" result "$id")
  want=$(printf 'quickstart payload %d' "$i" | sha256sum | cut -d' ' -f1)
  [ "$got" = "$want" ] || bad=1
  echo "   sample: sha256('quickstart payload $i') = $got"
done
[ $bad = 0 ] && echo "   samples match sha256sum" || { echo "   MISMATCH"; exit 1; }

echo "== 2. word count DAG: split, count chunks in parallel (wc -w), merge"
FILES=$(ls /usr/share/common-licenses/* | head -6)
python3 - $FILES > "$WORK/wc.json" <<'PY'
import json, os, sys
jobs, merges = [], []
for f in sys.argv[1:]:
    words = open(f, encoding="utf-8", errors="replace").read().split()
    base = os.path.basename(f).replace(".", "_")
    chunks = []
    for k in range(0, max(len(words), 1), 500):
        name = "%s-c%d" % (base, k // 500)
        jobs.append({"id": name, "type": "wc", "payload_text": " ".join(words[k:k + 500])})
        chunks.append(name)
    jobs.append({"id": "sum-" + base, "type": "merge", "depends_on": chunks})
    merges.append("sum-" + base)
jobs.append({"id": "total", "type": "merge", "depends_on": merges})
print(json.dumps({"name": "wordcount", "jobs": jobs}))
PY
"$DAGQ" submit-dag "$WORK/wc.json" --json > "$WORK/wc.ids"
DAG2=$(jq -r .dag_id "$WORK/wc.ids")
echo "   DAG $DAG2 with $(jq '.jobs | length' "$WORK/wc.ids") jobs"
"$DAGQ" wait "$DAG2" --timeout 300
total=$("$DAGQ" result "$(jq -r .jobs.total "$WORK/wc.ids")" | tr -d '[:space:]')
want=$(cat $FILES | wc -w)
echo "   words counted by the DAG: $total, by wc -w: $want"
[ "$total" = "$want" ] || { echo "   MISMATCH"; exit 1; }
"$DAGQ" dag "$DAG2" | head -2

if [ -x "$BIN/gateway/dagq-gateway" ]; then
  echo "== 3. over HTTP, through dagq-gateway at http://$HTTP"
  for _ in $(seq 100); do curl -sf "http://$HTTP/readyz" >/dev/null && break; sleep 0.1; done
  printf 'hello over http' > "$WORK/body.bin"
  echo "   POST /v1/jobs/sha256?wait=10 -> $(curl -s -X POST --data-binary @"$WORK/body.bin" "http://$HTTP/v1/jobs/sha256?wait=10")"
  echo "   (sha256sum says              $(sha256sum < "$WORK/body.bin" | cut -d' ' -f1))"
  resp=$(curl -s -X POST --data-binary @"$WORK/wc.json" "http://$HTTP/v1/dags")
  dag3=$(echo "$resp" | jq -r .dag_id)
  echo "   POST /v1/dags -> DAG $dag3"
  "$DAGQ" wait "$dag3" --timeout 300
  echo "   GET /v1/dags/$dag3 -> state $(curl -s "http://$HTTP/v1/dags/$dag3" | jq -r .dag.state)"
fi

echo "== what happened"
"$DAGQ" stats
echo "quickstart finished: every result checked."

#!/usr/bin/python3
"""Durability fault tests (issue 4): kill -9 of the broker in a loop, a
worker killed mid-job, a worker stopped past its lease and resumed.

The kill -9 loop: a client submits 20,000 jobs (some in DAGs) with
idempotency keys, re-sending each submission until it is acknowledged,
while three workers run them; the broker is SIGKILLed (every third time
SIGTERMed) at random moments at least 5 times and restarted on the same
data dir. Afterwards, reading the final state through the CLI: every
acknowledged job is terminal and
succeeded, one job per key, no job exists that was never submitted, DAG
children started after their parents finished; and through the event
stream, no job recorded a terminal outcome twice.
"""

import os
import random
import signal
import sys
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
import dq_harness as h  # noqa: E402

SEED = int(os.environ.get("DAGQ_FAULT_SEED") or random.randrange(1 << 30))


class Submitter(threading.Thread):
    """Submits a plan of submissions, each re-sent (same rid, same key) until
    acknowledged; a few go through the CLI (its library retries with the
    key by itself)."""

    def __init__(self, cluster, plan, deadline_s):
        super().__init__(daemon=True)
        self.c = cluster
        self.plan = plan
        self.deadline = time.monotonic() + deadline_s
        self.acked = {}          # submission index -> ids
        self.dag_ids = {}        # submission index -> dag id
        self.resends = 0
        self.errors = []
        self.duplicate_replies = []
        self.stop = False

    def run(self):
        try:
            self._run()
        except Exception as e:        # reported by the test
            self.errors.append("submitter crashed: %r" % e)

    def _run(self):
        cli = h.DqClient(self.c.frontend)
        sent_rids = {}
        try:
            for idx, sub in enumerate(self.plan):
                if self.stop:
                    return
                if sub.get("cli"):
                    self._cli_submit(idx, sub)
                    continue
                body = {"jobs": sub["jobs"], "key": sub["key"]}
                if sub.get("dag_name") is not None:
                    body["dag_name"] = sub["dag_name"]
                rid = cli.next_rid()
                sent_rids[rid] = idx
                while True:
                    if time.monotonic() > self.deadline:
                        self.errors.append("submission %d never acknowledged" % idx)
                        return
                    cli.send("SUBMIT", body, rid=rid)
                    msg = cli.wait_reply(rid, 1.0)
                    if msg is None:
                        self.resends += 1
                        continue
                    cmd, rbody = msg
                    if cmd == "ERROR":
                        code = rbody.get("code")
                        if code in (h.ERR["busy"], h.ERR["store_full"], h.ERR["unavailable"]):
                            time.sleep(max(0.01, rbody.get("retry_ms", 100) / 1000.0))
                            continue
                        self.errors.append("submission %d refused: %r" % (idx, rbody))
                        return
                    self.acked[idx] = list(rbody.get("ids", []))
                    if rbody.get("dag_id"):
                        self.dag_ids[idx] = rbody["dag_id"]
                    break
            # Late replies to re-sent requests must repeat the same ids.
            late = list(cli.replies.items())
            while True:
                msg = cli.recv(0.5)
                if msg is None:
                    break
                late.append((msg[1].get("rid"), msg))
            for rid, (cmd, rbody) in late:
                idx = sent_rids.get(rid)
                if idx is not None and cmd == "SUBMITTED" and rbody.get("ids") != self.acked.get(idx):
                    self.duplicate_replies.append((idx, rbody.get("ids"), self.acked.get(idx)))
        finally:
            cli.close()

    def _cli_submit(self, idx, sub):
        job = sub["jobs"][0]
        while time.monotonic() < self.deadline:
            r = self.c.cli("--timeout", "30", "submit", job["type"], "--key", sub["key"],
                           "--data", job["payload"].decode(), timeout=120)
            if r.rc == 0:
                self.acked[idx] = [r.stdout.strip()]
                return
            if r.rc == 3:           # no answer in 30 s: try again, same key
                self.resends += 1
                continue
            self.errors.append("CLI submission %d failed: %r" % (idx, r))
            return
        self.errors.append("CLI submission %d never acknowledged" % idx)


def make_plan(rng, total, dag_fraction=0.3, batch=100, dag_size=50, cli_every=25):
    """Submissions totalling `total` jobs. Each job's payload is unique; a
    DAG's jobs are echo or concat (concat only over echo parents)."""
    plan = []
    made = 0
    n = 0
    while made < total:
        n += 1
        left = total - made
        if n % cli_every == 0:
            payload = ("cli-%d" % n).encode()
            plan.append({"key": "cli-key-%d" % n, "cli": True,
                         "jobs": [{"type": "echo", "payload": payload}], "want": [payload]})
            made += 1
        elif rng.random() < dag_fraction:
            size = min(left, dag_size)
            jobs, want, types = [], [], []
            for i in range(size):
                k = min(i, rng.choice([0, 1, 1, 2]))
                ps = sorted(rng.sample(range(i), k)) if k else []
                if ps and all(types[p] == "echo" for p in ps) and rng.random() < 0.3:
                    types.append("concat")
                    jobs.append({"type": "concat", "name": "j%d" % i,
                                 "deps": [{"idx": p} for p in ps]})
                    want.append(b"".join(want[p] for p in ps))
                else:
                    types.append("echo")
                    payload = ("d%d.%d" % (n, i)).encode()
                    j = {"type": "echo", "name": "j%d" % i, "payload": payload}
                    if ps:
                        j["deps"] = [{"idx": p} for p in ps]
                    jobs.append(j)
                    want.append(payload)
            plan.append({"key": "dag-key-%d" % n, "dag_name": "dag-%d" % n, "jobs": jobs,
                         "want": want})
            made += size
        else:
            size = min(left, batch)
            jobs = [{"type": "echo", "payload": ("p%d.%d" % (n, i)).encode(),
                     "key": "job-key-%d-%d" % (n, i)} for i in range(size)]
            plan.append({"key": "sub-key-%d" % n, "jobs": jobs, "want": [j["payload"] for j in jobs]})
            made += size
    return plan


class DurabilityTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        h.log("fault seed %d (set DAGQ_FAULT_SEED to repeat)" % SEED)

    # ------------------------------------------------------------------
    def test_kill9_loop(self):
        rng = random.Random(SEED)
        total = h.scaled(20000, 500)
        min_kills = 5 if not h.SOAK else 30
        plan = make_plan(rng, total)
        with h.Cluster(name="kill9loop", heartbeat_ms=250, liveness=4) as c:
            for i in range(3):
                c.start_worker(name="kw%d" % i, concurrency=3)
            c.wait_workers(names=["kw0", "kw1", "kw2"])
            events = h.EventCollector(c.events, b"job ")
            sub = Submitter(c, plan, h.deadline(600))
            sub.start()
            kills = 0
            kills_after_submit = 0
            t0 = time.monotonic()
            while True:
                # Chaos: kill at a random moment after the broker is serving.
                time.sleep(rng.uniform(0.2, 1.5))
                submitting = sub.is_alive()
                if not submitting and kills >= min_kills:
                    # Keep killing while acknowledged jobs are still running.
                    st = h.stats_types(c.client().stats())
                    unfinished = sum(t["waiting"] + t["queued"] + t["running"] for t in st.values())
                    if unfinished == 0 or kills_after_submit >= 2:
                        break
                if kills >= 40:
                    break
                # Every third stop is a SIGTERM: a clean stop under load
                # must commit and sync what it acknowledges on the way out.
                if kills % 3 == 2:
                    self.assertEqual(c.kill_broker(signal.SIGTERM), 0)
                else:
                    c.kill_broker(signal.SIGKILL)
                kills += 1
                if not submitting:
                    kills_after_submit += 1
                c.restart_broker()
            sub.join(h.deadline(600))
            h.log("kill9 loop: %d kills (%d after submitting), %d re-sends, %.1f s"
                  % (kills, kills_after_submit, sub.resends, time.monotonic() - t0))
            self.assertFalse(sub.is_alive(), "submitter still running")
            self.assertFalse(sub.errors, sub.errors)
            self.assertEqual(len(sub.acked), len(plan), "not every submission was acknowledged")
            self.assertFalse(sub.duplicate_replies,
                             "a re-sent submission got different ids: %s" % sub.duplicate_replies[:3])
            self.assertGreaterEqual(kills, min_kills)

            all_ids = []
            want = {}
            for idx, s in enumerate(plan):
                ids = sub.acked[idx]
                self.assertEqual(len(ids), len(s["jobs"]), "submission %d: %s" % (idx, ids))
                all_ids.extend(ids)
                want.update(zip(ids, s["want"]))
            self.assertEqual(len(set(all_ids)), total, "the same id was given to two jobs")

            # --- The checker reads the final state through the CLI.
            r = c.cli("--timeout", "60", "wait", *all_ids, "--timeout", str(h.deadline(600)),
                      timeout=h.deadline(700))
            self.assertEqual(r.rc, 0, "not every acknowledged job succeeded: %r" % r)
            infos = c.status(*all_ids)
            self.assertEqual([j["id"] for j in infos], all_ids)
            bad = [j for j in infos if j["state"] != "succeeded"]
            self.assertFalse(bad, "%d jobs not succeeded, e.g. %s" % (len(bad), bad[:3]))
            st = c.stats_json()
            types = h.stats_types(st)
            exist = sum(sum(t[k] for k in ("waiting", "queued", "running", "succeeded", "failed",
                                           "cancelled", "skipped")) for t in types.values())
            self.assertEqual(exist, total, "jobs in the broker %d != acknowledged %d (types %s)"
                             % (exist, total, types))
            self.assertEqual(st.get("jobs_total"), total, st)
            # Outputs (RESULT over the protocol: 20,000 CLI processes would be slow;
            # a sample through the CLI too).
            res = c.client().results_many(all_ids)
            wrong = [jid for jid in all_ids if res[jid].get("output", b"") != want[jid]]
            self.assertFalse(wrong, "%d wrong outputs, e.g. %s" % (
                len(wrong), [(j, res[j].get("output"), want[j]) for j in wrong[:3]]))
            for jid in rng.sample(all_ids, min(30, len(all_ids))):
                self.assertEqual(c.cli_ok("result", jid).stdout_bytes, want[jid])
            # One job per key: re-submitting any key gives the same ids, creates nothing.
            cli = c.client()
            for idx in rng.sample(range(len(plan)), min(40, len(plan))):
                s = plan[idx]
                if s.get("cli"):
                    jid = c.submit(s["jobs"][0]["type"], "--key", s["key"],
                                   data=s["jobs"][0]["payload"].decode())
                    self.assertEqual([jid], sub.acked[idx], "key %s" % s["key"])
                    continue
                body = {"jobs": s["jobs"], "key": s["key"]}
                if s.get("dag_name") is not None:
                    body["dag_name"] = s["dag_name"]
                _, rb = cli.request("SUBMIT", body)
                self.assertEqual(rb["ids"], sub.acked[idx], "key %s" % s["key"])
            # Per-job keys under a new submission key: existing ids, nothing created.
            plain = [i for i, s in enumerate(plan) if not s.get("cli") and s.get("dag_name") is None]
            idx = plain[0]
            rb = cli.submit(plan[idx]["jobs"][:10], key="fresh-key-%d" % SEED)
            self.assertEqual(rb["ids"], sub.acked[idx][:10])
            self.assertEqual(c.client().stats().get("jobs_total"), total, "a key created a job twice")
            # DAG children started after their parents' recorded success.
            violations = []
            for idx, dag_id in sub.dag_ids.items():
                dag, jobs = h.dag_from_json(c.cli_json("dag", dag_id))
                self.assertEqual(dag.get("state"), "succeeded", dag)
                self.assertEqual(len(jobs), len(plan[idx]["jobs"]))
                by_id = {j["id"]: j for j in jobs}
                for j in jobs:
                    for pid in j.get("parent_ids") or []:
                        p = by_id[pid]
                        if p["state"] != "succeeded" or j["started_ms"] < p["finished_ms"]:
                            violations.append((j["id"], j["started_ms"], pid, p["finished_ms"]))
                # Parents as submitted.
                for i, spec in enumerate(plan[idx]["jobs"]):
                    got = by_id[sub.acked[idx][i]].get("parent_ids")
                    self.assertEqual(got, [sub.acked[idx][d["idx"]] for d in spec.get("deps", [])])
            self.assertFalse(violations, "children started before a parent finished: %s" % violations[:5])
            # Exactly one outcome recorded per job: never two terminal events.
            events.close()
            seen = {}
            for topic, body in events.snapshot():
                parts = topic.split()
                if len(parts) == 3 and parts[0] == "job":
                    seen.setdefault(parts[1], []).append(parts[2])
            twice = {k: v for k, v in seen.items() if len(v) > 1}
            self.assertFalse(twice, "jobs with two terminal events: %s" % list(twice.items())[:5])
            unknown = set(seen) - set(all_ids)
            self.assertFalse(unknown, "events for jobs never submitted: %s" % list(unknown)[:5])
            h.log("kill9 loop: %d terminal events seen for %d jobs" % (len(seen), total))

    # ------------------------------------------------------------------
    def test_worker_killed_mid_job(self):
        with h.Cluster(name="wkill", heartbeat_ms=250, liveness=4) as c:
            runs = c.path("runs.log")
            child_log = c.path("child.log")
            handlers = {
                # Attempt 1 never finishes by itself: the victim dies holding it.
                "slow": 'echo "$DAGQ_ATTEMPT $$" >> "%s"; if [ "$DAGQ_ATTEMPT" -eq 1 ]; then '
                        'sleep 600; fi; printf "slow-done-%%s" "$DAGQ_ATTEMPT"' % runs,
                "child": 'echo "$DAGQ_JOB_ID $DAGQ_ATTEMPT" >> "%s"; cat "$DAGQ_PARENTS_DIR/slow"' % child_log,
            }
            victim = c.start_worker(name="victim", concurrency=1, builtins=False, handlers=handlers)
            c.wait_workers(names=["victim"])
            with h.EventCollector(c.events, b"job ") as events:
                dag = c.client().submit([
                    {"type": "slow", "name": "slow", "attempts": 3},
                    {"type": "child", "name": "child", "deps": [{"idx": 0}]},
                    {"type": "child", "name": "child2", "deps": [{"idx": 0}]},
                ], dag_name="wk")
                slow, child, child2 = dag["ids"]
                h.wait_until(lambda: os.path.exists(runs), 60, what="slow job started on the victim")
                c.start_worker(name="heir", concurrency=2, builtins=False, handlers=handlers)
                c.wait_workers(names=["heir"])
                # A host crash: the worker and its command die together.
                victim.kill(signal.SIGKILL)
                victim.kill_session()
                r = c.cli("wait", dag["dag_id"], "--timeout", str(h.deadline(120)))
                self.assertEqual(r.rc, 0, r)
                s, ch, ch2 = c.status(slow, child, child2)
                self.assertEqual(s["state"], "succeeded")
                self.assertGreaterEqual(s["attempts"], 2, s)
                self.assertEqual(c.cli_ok("result", slow).stdout, "slow-done-%d" % s["attempts"])
                for j in (ch, ch2):
                    self.assertEqual((j["state"], j["attempts"]), ("succeeded", 1), j)
                    self.assertGreaterEqual(j["started_ms"], s["finished_ms"])
                    self.assertEqual(c.cli_ok("result", j["id"]).stdout, "slow-done-%d" % s["attempts"])
                with open(child_log) as f:
                    lines = f.read().split("\n")
                self.assertEqual(sorted(l.split()[0] for l in lines if l), sorted([child, child2]),
                                 "dependents ran more (or less) than once")
                got = [t for t, _ in events.snapshot() if t.split()[1] == slow]
                self.assertLessEqual(len(got), 1, got)

    # ------------------------------------------------------------------
    def _stopped_worker(self, stale_wins):
        """A worker SIGSTOPped past its lease while running `slow` (attempt 1),
        then resumed and re-registered (its READY lists the job as still
        running), and only then is attempt 1 allowed to finish:
        stale_wins=False: the rerun elsewhere has already succeeded, so the
        late result is ignored; True: the rerun is still running, so the late
        result is recorded and the rerun's worker is told to abandon it.
        Either way one outcome, dependents released once."""
        with h.Cluster(name="wstop", heartbeat_ms=250, liveness=4) as c:
            runs = c.path("runs.log")
            child_log = c.path("child.log")
            gate1 = c.path("gate1")
            handlers = {
                # attempt 1 waits for gate1; later attempts are quick, or
                # (stale_wins) wait for a gate that never opens.
                "slow": 'echo "$DAGQ_ATTEMPT $$" >> "%s"; '
                        'if [ "$DAGQ_ATTEMPT" -eq 1 ]; then g="%s"; else g="%s"; fi; '
                        'while [ ! -e "$g" ]; do sleep 0.02; done; printf "attempt-%%s" "$DAGQ_ATTEMPT"'
                        % (runs, gate1, c.path("never") if stale_wins else c.path("open")),
                "child": 'echo "$DAGQ_JOB_ID $DAGQ_ATTEMPT" >> "%s"; cat "$DAGQ_PARENTS_DIR/slow"' % child_log,
            }
            if not stale_wins:
                h.write_file(c.path("open"), "")
            a = c.start_worker(name="sleepy", concurrency=2, builtins=True, handlers=handlers)
            c.wait_workers(names=["sleepy"])
            with h.EventCollector(c.events, b"job ") as events:
                rep = c.client().submit([
                    {"type": "slow", "name": "slow", "attempts": 5},
                    {"type": "child", "name": "child", "deps": [{"idx": 0}]},
                ], dag_name="stop")
                slow, child = rep["ids"]

                def attempts_started():
                    if not os.path.exists(runs):
                        return []
                    with open(runs) as f:
                        return [l.split() for l in f.read().splitlines()]
                h.wait_until(lambda: len(attempts_started()) >= 1, 60, what="attempt 1 started")
                a.stop()
                h.wait_until(lambda: "sleepy" not in c.worker_ids(), 60,
                             what="the stopped worker dropped after its lease")
                b = c.start_worker(name="other", concurrency=2, builtins=False, handlers=handlers)
                h.wait_until(lambda: any(x[0] == "2" for x in attempts_started()), 60,
                             what="attempt 2 started on the other worker")
                rerun_shell = int([x for x in attempts_started() if x[0] == "2"][0][1])
                if stale_wins:
                    self.assertEqual(h.state_name(c.client().status([slow])[0]["state"]), "running")
                else:
                    c.wait_state(slow, "succeeded", 60)
                    c.wait_state(child, "succeeded", 60)
                    before = c.client().status([slow, child])
                a.cont()
                h.wait_until(lambda: "sleepy" in c.worker_ids(), 60, what="the resumed worker re-registered")
                # Attempt 1 may finish only now, after the re-registration.
                h.write_file(gate1, "")
                if stale_wins:
                    c.wait_state(slow, "succeeded", 60)
                else:
                    # Only the resumed worker runs builtins: once this echo is
                    # done, its late result (sent before, on the same
                    # connection) has been handled.
                    h.wait_until(lambda: not h.pid_exists(int(attempts_started()[0][1])), 60,
                                 what="attempt 1's command finished")
                    r = c.cli("submit", "echo", "--data", "marker", "--wait")
                    self.assertEqual((r.rc, r.stdout), (0, "marker"), r)
                r = c.cli("wait", rep["dag_id"], "--timeout", str(h.deadline(120)))
                self.assertEqual(r.rc, 0, r)
                s, ch = c.client().status([slow, child])
                self.assertEqual(h.state_name(s["state"]), "succeeded")
                out = c.client().result(slow)["output"]
                if stale_wins:
                    self.assertEqual(out, b"attempt-1", "the first result should win")
                    # The rerun was abandoned: its command is gone.
                    h.wait_until(lambda: not h.pid_exists(rerun_shell), 30,
                                 what="the rerun's command killed (ABANDON sent to the worker "
                                      "that held the later lease)")
                else:
                    self.assertEqual(out, b"attempt-2", "the stale result replaced the recorded one")
                    self.assertEqual((s["finished_ms"], ch["finished_ms"]),
                                     (before[0]["finished_ms"], before[1]["finished_ms"]),
                                     "the stale result changed the recorded outcome")
                self.assertEqual(h.state_name(ch["state"]), "succeeded")
                self.assertEqual(ch["attempts"], 1, ch)
                self.assertEqual(c.client().result(child)["output"], out)
                with open(child_log) as f:
                    lines = [l for l in f.read().splitlines() if l]
                self.assertEqual(len(lines), 1, "the dependent ran %d times: %s" % (len(lines), lines))
                got = [t for t, _ in events.snapshot() if t.split()[1] == slow]
                self.assertLessEqual(len(got), 1, "two outcomes published for one job: %s" % got)
                self.assertTrue(b.alive() and a.alive())

    def test_running_job_after_broker_kill(self):
        """Dispatches are not stored: a job running when the broker is
        SIGKILLed is queued again after the restart, and an attempt cut short
        that way is not counted. Here its only attempt (attempts 1) dies with
        its worker; it runs again as attempt 1 and succeeds, instead of
        failing out of attempts."""
        with h.Cluster(name="runkill", heartbeat_ms=250, liveness=4) as c:
            runs = c.path("runs.log")
            gate = c.path("gate")
            handlers = {
                "slow": 'echo "$DAGQ_ATTEMPT $$" >> "%s"; while [ ! -e "%s" ]; do sleep 0.05; done; '
                        'printf "done-%%s" "$DAGQ_ATTEMPT"' % (runs, gate),
            }
            victim = c.start_worker(name="victim", concurrency=1, builtins=False, handlers=handlers)
            c.wait_workers(names=["victim"])
            jid = c.client().submit([{"type": "slow", "attempts": 1}])["ids"][0]
            c.wait_state(jid, "running")
            h.wait_until(lambda: os.path.exists(runs), 60, what="slow job started on the victim")
            c.kill_broker(signal.SIGKILL)
            victim.kill(signal.SIGKILL)
            victim.kill_session()
            c.restart_broker()
            j = c.client().status([jid])[0]
            self.assertEqual((h.state_name(j["state"]), j["attempts"]), ("queued", 0), j)
            with open(gate, "w"):
                pass
            c.start_worker(name="heir", concurrency=1, builtins=False, handlers=handlers)
            info = c.wait_terminal([jid])[0]
            self.assertEqual((h.state_name(info["state"]), info["attempts"]), ("succeeded", 1), info)
            self.assertEqual(c.cli_ok("result", jid).stdout, "done-1")
            with open(runs) as f:
                self.assertEqual([l.split()[0] for l in f.read().split("\n") if l], ["1", "1"])
            # The outcome is stored: it survives another kill.
            c.kill_broker(signal.SIGKILL)
            c.restart_broker()
            j = c.client().status([jid])[0]
            self.assertEqual((h.state_name(j["state"]), j["attempts"]), ("succeeded", 1), j)
            self.assertGreaterEqual(j["started_ms"], j["created_ms"])
            self.assertGreaterEqual(j["finished_ms"], j["started_ms"])

    def test_stopped_worker_stale_result_ignored(self):
        self._stopped_worker(stale_wins=False)

    def test_stopped_worker_first_result_wins(self):
        self._stopped_worker(stale_wins=True)


if __name__ == "__main__":
    h.run_tests()

#!/usr/bin/python3
"""Core integration tests (issue 2): broker, workers and CLI end to end.

Real dagq-broker, dagq-worker and dagq processes on free loopback ports.
Job counts scale with DAGQ_TEST_SCALE (the issue's numbers at 1.0).
"""

import os
import random
import signal
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dq_harness as h  # noqa: E402


class CoreTest(unittest.TestCase):
    """Each test builds its own Cluster in a `with` block: logs are printed
    and every process is killed when it fails."""

    # ------------------------------------------------------------------
    def test_sha256_jobs_over_three_workers(self):
        n = h.scaled(20000, 300)
        with h.Cluster(name="sha") as c:
            for i in range(3):
                c.start_worker(name="sha%d" % i, concurrency=2, builtins=True)
            c.wait_workers(names=["sha0", "sha1", "sha2"])
            rng = random.Random(1)
            payloads = [b""] + [rng.randbytes(rng.randrange(0, 300)) for _ in range(n - 1)]
            batches = [[{"type": "sha256", "payload": p} for p in payloads[i:i + 500]]
                       for i in range(0, n, 500)]
            ids = [jid for b in c.client().submit_many(batches) for jid in b]
            self.assertEqual(len(ids), n)
            self.assertEqual(len(set(ids)), n, "duplicate job ids")

            def done():
                t = h.stats_types(c.stats()).get("sha256", {})
                return t.get("succeeded", 0) + t.get("failed", 0) >= n and t
            t = h.wait_until(done, timeout=300, what="%d sha256 jobs finished" % n)
            self.assertEqual(t["succeeded"], n, t)
            infos = c.client().status_many(ids)
            bad = [i for i in infos if h.state_name(i["state"]) != "succeeded"]
            self.assertFalse(bad, "jobs not succeeded: %s" % h._short(bad))
            results = c.client().results_many(ids)
            wrong = [(jid, p, results[jid]) for jid, p in zip(ids, payloads)
                     if not isinstance(results[jid], dict)
                     or results[jid].get("output") != h.sha256_hex(p).encode()]
            self.assertFalse(wrong, "%d wrong digests, e.g. %s" % (len(wrong), h._short(wrong[:3])))
            # Every worker got a share: by the per-job worker field (ids of
            # workers that re-registered under load map to the same name)...
            per_worker = {}
            for name in c.names_of([i.get("worker") for i in infos]):
                per_worker[name] = per_worker.get(name, 0) + 1
            self.assertTrue({"sha0", "sha1", "sha2"} <= set(per_worker),
                            "jobs per worker: %s" % per_worker)
            # ...and by `dagq stats --json`.
            st = c.stats_json()
            workers = {w["name"]: w for w in st["workers"]}
            self.assertEqual(set(workers), {"sha0", "sha1", "sha2"}, st["workers"])
            for name, w in workers.items():
                self.assertTrue(w["done"] > 0 or per_worker.get(name),
                                "worker %s did no job: %s" % (name, w))
            # (A worker dropped and re-registered under load restarts its
            # count, so the sum is only logged.)
            h.log("jobs done per worker: %s" % {k: w["done"] for k, w in workers.items()})
            self.assertEqual(h.stats_types(st)["sha256"]["succeeded"], n)
            # The CLI reads the same outputs.
            for k in rng.sample(range(n), 5):
                r = c.cli_ok("result", ids[k])
                self.assertEqual(r.stdout_bytes, h.sha256_hex(payloads[k]).encode())
            r = c.cli_ok("submit", "sha256", "--data", "hello", "--wait")
            self.assertEqual(r.stdout_bytes.strip(), h.sha256_hex(b"hello").encode())

    # ------------------------------------------------------------------
    def test_kill9_worker_holding_sleep_jobs(self):
        with h.Cluster(name="kill9w", heartbeat_ms=250, liveness=4) as c:
            victim = c.start_worker(name="victim", concurrency=4)
            c.wait_workers(names=["victim"])
            victim_id = c.worker_ids()["victim"]
            # Submitted over the protocol so all four are running at once
            # soon; the victim dies right after, well within the 5 s sleeps.
            ids = c.client().submit([{"type": "sleep", "payload": b"5000", "attempts": 3}
                                     for _ in range(4)])["ids"]

            def all_on_victim():
                infos = c.client().status(ids)
                return all(h.state_name(i["state"]) == "running" and i.get("worker") == victim_id
                           for i in infos) and infos
            h.wait_until(all_on_victim, 60, what="4 sleep jobs running on the victim")
            victim.kill(signal.SIGKILL)
            self.assertEqual(victim.reap(), -signal.SIGKILL)
            c.start_worker(name="heir1", concurrency=2)
            c.start_worker(name="heir2", concurrency=2)
            c.wait_workers(names=["heir1", "heir2"])
            r = c.cli("wait", *ids, "--timeout", str(h.deadline(120)))
            self.assertEqual(r.rc, 0, r)
            for j in c.status(*ids):
                self.assertEqual(j["state"], "succeeded", j)
                self.assertGreaterEqual(j["attempts"], 2, "attempts do not show the rerun: %s" % j)
                self.assertNotEqual(j.get("worker"), victim_id, "job finished on the victim: %s" % j)
                self.assertIn(c.names_of([j.get("worker")])[0], ("heir1", "heir2"), j)
            # The victim is gone from the registry.
            h.wait_until(lambda: "victim" not in c.worker_ids(), 30, what="victim dropped")

    # ------------------------------------------------------------------
    def test_timeout_retry_then_failure(self):
        with h.Cluster(name="timeout") as c:
            c.start_worker(name="t1", concurrency=1, handlers={
                "flaky": 'if [ "$DAGQ_ATTEMPT" -ge 2 ]; then printf ok; '
                         'else echo "first attempt fails" >&2; exit 1; fi'})
            c.wait_workers(names=["t1"])
            jid = c.submit("sleep", "--timeout", "0.3", "--attempts", "3", data="30000")
            r = c.cli("wait", jid, "--timeout", str(h.deadline(120)))
            self.assertEqual(r.rc, 1, r)
            j = c.status1(jid)
            self.assertEqual(j["state"], "failed", j)
            self.assertEqual(j["attempts"], 3, j)
            self.assertEqual(j["max_attempts"], 3, j)
            self.assertRegex(j.get("error") or "", r"(?i)time", "error does not say timeout: %s" % j)
            r = c.cli("result", jid)
            self.assertEqual(r.rc, 1, r)
            self.assertRegex(r.stderr, r"(?i)time", r)
            # Retry then success.
            fid = c.submit("flaky", "--attempts", "3", data="x")
            r = c.cli("wait", fid, "--timeout", str(h.deadline(60)))
            self.assertEqual(r.rc, 0, r)
            j = c.status1(fid)
            self.assertEqual((j["state"], j["attempts"]), ("succeeded", 2), j)
            self.assertEqual(c.cli_ok("result", fid).stdout_bytes, b"ok")
            # The abandoned sleeps freed the worker's only slot.
            r = c.cli("submit", "echo", "--data", "still alive", "--wait",
                      timeout=h.deadline(90))
            self.assertEqual((r.rc, r.stdout_bytes), (0, b"still alive"), r)
            # attempts=1: the first timeout is final.
            jid = c.submit("sleep", "--timeout", "0.2", "--attempts", "1", data="30000")
            j = c.wait_state(jid, "failed", timeout=60)
            self.assertEqual(j["attempts"], 1, j)

    # ------------------------------------------------------------------
    def test_external_command_handler(self):
        with h.Cluster(name="exec") as c:
            piddir = c.path("pids")
            os.makedirs(piddir)
            hang = h.write_file(c.path("hang.sh"), """#!/bin/sh
f="%s/$DAGQ_JOB_ID.$DAGQ_ATTEMPT"
sleep 120 & c1=$!
(sleep 121; true) & c2=$!
sh -c 'trap "" TERM; sleep 122' & c3=$!
pg=$(cut -d' ' -f5 /proc/$$/stat)
echo "$$ $pg $c1 $c2 $c3" > "$f.tmp"
mv "$f.tmp" "$f"
wait
""" % piddir, 0o755)
            c.start_worker(name="ex", concurrency=3, builtins=False, handlers={
                "ext.ok": 'tr a-z A-Z; printf " %s %s %s" "$DAGQ_JOB_TYPE" "$DAGQ_ATTEMPT" "$DAGQ_JOB_ID"',
                "ext.fail": 'cat >/dev/null; i=0; while [ $i -lt 300 ]; do echo "noise line $i" >&2; '
                            'i=$((i+1)); done; echo "bad thing happened" >&2; exit 3',
                "ext.cat": "cat",
                "ext.noread": "printf ignored",
                "ext.hang": hang,
            })
            c.wait_workers(names=["ex"])
            # Success: stdin is the payload, env carries the job.
            jid = c.submit("ext.ok", data="hello")
            c.cli_ok("wait", jid, "--timeout", str(h.deadline(60)))
            self.assertEqual(c.cli_ok("result", jid).stdout, "HELLO ext.ok 1 " + jid)
            # Binary payload and output, byte for byte (1 MiB).
            blob = bytes(range(256)) * 4096
            h.write_file(c.path("blob"), blob)
            bid = c.submit("ext.cat", "--file", c.path("blob"))
            nid = c.submit("ext.noread", "--file", c.path("blob"))
            c.cli_ok("wait", bid, nid, "--timeout", str(h.deadline(60)))
            self.assertEqual(c.cli_ok("result", bid).stdout_bytes, blob)
            self.assertEqual(c.cli_ok("result", nid).stdout_bytes, b"ignored")
            # Failure: exit status and the tail of stderr.
            fid = c.submit("ext.fail", "--attempts", "1", data="x")
            r = c.cli("wait", fid, "--timeout", str(h.deadline(60)))
            self.assertEqual(r.rc, 1, r)
            j = c.status1(fid)
            self.assertEqual(j["state"], "failed", j)
            self.assertIn("bad thing happened", j.get("error") or "", j)
            self.assertNotIn("noise line 0\n", j.get("error") or "", "error is not the tail: %s" % j)
            # Timeout: the whole process group is killed, nothing left behind.
            tid = c.submit("ext.hang", "--timeout", "3", "--attempts", "1", data="")
            pidfile = os.path.join(piddir, "%s.1" % tid)
            h.wait_until(lambda: os.path.exists(pidfile), 60, what="hang.sh wrote its pids")
            shell, pgid, *children = h.read_pids(pidfile)
            self.assertEqual(len(children), 3)
            self.assertNotEqual(pgid, os.getpgid(c.workers[0].pid),
                                "the command runs in the worker's own process group")
            j = c.wait_state(tid, "failed", timeout=60)
            self.assertRegex(j.get("error") or "", r"(?i)time", j)
            h.wait_until(lambda: not any(h.pid_exists(p) for p in [shell] + children)
                         and not h.pids_in_group(pgid), 30,
                         what="process group %d of the timed-out command gone" % pgid)
            # Cancel of a running command: same.
            cid = c.submit("ext.hang", "--attempts", "1", data="")
            pidfile = os.path.join(piddir, "%s.1" % cid)
            h.wait_until(lambda: os.path.exists(pidfile), 60, what="hang.sh wrote its pids")
            shell, pgid, *children = h.read_pids(pidfile)
            c.cli_ok("cancel", cid)
            j = c.wait_state(cid, "cancelled", timeout=30)
            h.wait_until(lambda: not any(h.pid_exists(p) for p in [shell] + children)
                         and not h.pids_in_group(pgid), 30,
                         what="process group %d of the cancelled command gone" % pgid)
            # No zombies under the worker.
            wpid = c.workers[0].pid
            zombies = [p for p in h.all_pids() if (h.proc_stat(p) or ("", 0))[0] == "Z"
                       and (h.proc_stat(p) or ("", 0))[1] == wpid]
            self.assertFalse(zombies, "zombie children of the worker: %s" % zombies)
            # The worker still works.
            r = c.cli("submit", "ext.ok", "--data", "again", "--wait")
            self.assertEqual(r.rc, 0, r)
            self.assertTrue(r.stdout.startswith("AGAIN ext.ok 1 "), r)

    # ------------------------------------------------------------------
    def test_priorities_under_contention(self):
        with h.Cluster(name="prio") as c:
            gate = c.path("gate")
            c.start_worker(name="p1", concurrency=1, handlers={
                "gate": 'while [ ! -e "%s" ]; do sleep 0.02; done' % gate})
            c.wait_workers(names=["p1"])
            blocker = c.submit("gate", data="")
            c.wait_state(blocker, "running", 60)
            order = []
            for round_ in range(4):
                for prio in (-5, 0, 10, 3):
                    jid = c.submit("sleep", "--priority", str(prio), data="20")
                    order.append((prio, round_, jid))
            # Low first, high later: all are queued behind the blocker.
            h.write_file(gate, "")
            ids = [jid for _, _, jid in order]
            r = c.cli("wait", *ids, "--timeout", str(h.deadline(120)))
            self.assertEqual(r.rc, 0, r)
            infos = {j["id"]: j for j in c.status(*ids)}
            started = sorted(ids, key=lambda jid: (infos[jid]["started_ms"], infos[jid]["finished_ms"]))
            expected = [jid for _, _, jid in sorted(order, key=lambda o: (-o[0], o[1]))]
            self.assertEqual(started, expected,
                             "start order (priority, round): got %s" % [
                                 [(p, r) for p, r, j in order if j == jid][0] for jid in started])
            blocker_info = c.status1(blocker)
            for jid in ids:
                self.assertGreaterEqual(infos[jid]["started_ms"], blocker_info["finished_ms"])

    # ------------------------------------------------------------------
    def test_broker_restart_workers_reregister(self):
        with h.Cluster(name="restart", heartbeat_ms=250, liveness=4) as c:
            c.start_worker(name="r1", concurrency=2)
            c.start_worker(name="r2", concurrency=2)
            c.wait_workers(names=["r1", "r2"])
            before = [c.submit("echo", data="before-%d" % i) for i in range(5)]
            c.cli_ok("wait", *before, "--timeout", str(h.deadline(60)))
            # Clean stop: exit 0.
            rc = c.kill_broker(signal.SIGTERM)
            self.assertEqual(rc, 0, "broker exit status at SIGTERM:\n" + c.broker.tail())
            c.restart_broker()
            infos = c.wait_workers(names=["r1", "r2"], timeout=90)
            self.assertEqual(len(infos), 2, infos)
            # Finished jobs survived; new jobs run on both workers.
            for i, jid in enumerate(before):
                self.assertEqual(c.cli_ok("result", jid).stdout, "before-%d" % i)
            ids = c.client().submit([{"type": "sleep", "payload": b"150"} for _ in range(12)])["ids"]
            infos = c.wait_terminal(ids, 120)
            self.assertTrue(all(h.state_name(i["state"]) == "succeeded" for i in infos), infos)
            used = set(c.names_of([i.get("worker") for i in infos]))
            self.assertEqual(used, {"r1", "r2"}, "workers used after restart: %s" % used)
            # kill -9 while jobs run: they finish after the restart.
            running = c.client().submit([{"type": "sleep", "payload": b"1500"} for _ in range(4)])["ids"]
            h.wait_until(lambda: all(h.state_name(i["state"]) == "running"
                                     for i in c.client().status(running)), 60, what="4 jobs running")
            c.kill_broker(signal.SIGKILL)
            c.restart_broker()
            c.wait_workers(names=["r1", "r2"], timeout=90)
            r = c.cli("wait", *running, "--timeout", str(h.deadline(120)))
            self.assertEqual(r.rc, 0, r)
            for j in c.status(*running):
                self.assertEqual(j["state"], "succeeded", j)

    # ------------------------------------------------------------------
    def test_oversize_payload_refused(self):
        with h.Cluster(name="toobig", broker_args=["--max-payload", "64K"]) as c:
            before = c.client().stats().get("jobs_total", 0)
            h.write_file(c.path("big"), b"z" * (64 * 1024 + 1))
            h.write_file(c.path("ok"), b"z" * (64 * 1024))
            r = c.cli("submit", "echo", "--file", c.path("big"))
            self.assertEqual(r.rc, 1, r)
            self.assertRegex(r.stderr, r"(?i)too.?big|limit|max-payload", r)
            try:
                c.client().submit([{"type": "echo", "payload": b"z" * (64 * 1024 + 1)}])
                self.fail("oversize payload accepted")
            except h.DqError as e:
                self.assertEqual(e.name, "too_big", e)
                self.assertIn("max-payload", e.message)
            # One oversize job refuses its whole submission.
            try:
                c.client().submit([{"type": "echo", "payload": b"a"},
                                   {"type": "echo", "payload": b"z" * (100 * 1024)}])
                self.fail("oversize payload accepted")
            except h.DqError as e:
                self.assertEqual(e.name, "too_big", e)
            self.assertEqual(c.client().stats().get("jobs_total", 0), before, "something was queued")
            c.submit("echo", "--file", c.path("ok"))
            self.assertEqual(c.client().stats().get("jobs_total", 0), before + 1)

    # ------------------------------------------------------------------
    def test_unknown_ids_not_found(self):
        with h.Cluster(name="notfound", memory=True) as c:
            bid = c.client().stats()["broker_id"]
            for jid in ("%s-999999" % bid, "zzzzz-1", "not-an-id", "%s-d424242" % bid):
                for cmd in (["status", jid], ["result", jid], ["cancel", jid],
                            ["wait", jid, "--timeout", "5"]):
                    r = c.cli(*cmd)
                    self.assertEqual(r.rc, 1, r)
                    self.assertRegex(r.stderr, r"(?i)not.?found|unknown|not issued|not a dagq", r)
            for did in ("%s-d424242" % bid, "zzzzz-d1", "not-an-id", "%s-5" % bid):
                r = c.cli("dag", did)
                self.assertIn(r.rc, (1, 2), r)
                self.assertRegex(r.stderr, r"(?i)not.?found|unknown|not issued|not a", r)
            for did in ("zzzzz-d1", "garbage", "%s-d0" % bid, "%s-7" % bid):
                with self.assertRaises(h.DqError) as cm:
                    c.client().dag(did)
                self.assertEqual(cm.exception.name, "not_found", cm.exception)
                self.assertTrue(c.broker.alive(), c.broker.tail())
            for req in (("STATUS", {"ids": ["%s-999999" % bid]}), ("RESULT", {"id": "%s-5" % bid}),
                        ("CANCEL", {"id": "%s-5" % bid}), ("DAG", {"id": "%s-d5" % bid})):
                with self.assertRaises(h.DqError) as cm:
                    c.client().request(*req)
                self.assertEqual(cm.exception.name, "not_found", cm.exception)
            # A STATUS with one unknown id among known ones names that id.
            jid = c.submit("nobody", data="")
            with self.assertRaises(h.DqError) as cm:
                c.client().status([jid, "%s-777777" % bid])
            self.assertIn("%s-777777" % bid, cm.exception.message)

    # ------------------------------------------------------------------
    def test_unknown_type_stays_queued(self):
        with h.Cluster(name="notype") as c:
            c.start_worker(name="n1", concurrency=2)
            c.wait_workers(names=["n1"])
            lonely = c.submit("nobody.runs-this", data="x")
            r = c.cli("submit", "echo", "--data", "later", "--wait")
            self.assertEqual((r.rc, r.stdout), (0, "later"), r)
            self.assertEqual(c.status1(lonely)["state"], "queued")
            st = h.stats_types(c.stats_json())
            self.assertIn("nobody.runs-this", st)
            self.assertEqual(st["nobody.runs-this"]["queued"], 1, st)
            self.assertEqual(st["nobody.runs-this"]["workers"], 0, st)
            text = c.cli_ok("stats").stdout
            self.assertIn("nobody.runs-this", text)
            r = c.cli("wait", lonely, "--timeout", "0.5")
            self.assertEqual(r.rc, 2, r)
            # A worker for it arrives: it runs.
            c.start_worker(name="n2", concurrency=1, builtins=False,
                           handlers={"nobody.runs-this": "cat"})
            r = c.cli("wait", lonely, "--timeout", str(h.deadline(60)))
            self.assertEqual(r.rc, 0, r)
            self.assertEqual(c.cli_ok("result", lonely).stdout, "x")

    # ------------------------------------------------------------------
    def test_embedded_worker_example(self):
        """examples/embedded_worker.c: a C program that is its own worker
        (libdagq's worker API) runs jobs of its type end to end."""
        binary = os.path.join(h.BUILD_DIR, "examples", "embedded_worker")
        h.require(binary)
        with h.Cluster(name="example") as c:
            p = h.Proc("embedded", [binary, c.backend], c.logdir)
            p.worker_name = "embedded-upper"
            c.workers.append(p)          # stopped (and checked) at teardown
            c.wait_workers(names=["embedded-upper"])
            r = c.cli("submit", "upper", "--data", "hello, dagq", "--wait")
            self.assertEqual((r.rc, r.stdout), (0, "HELLO, DAGQ"), r)

    def test_cli_submit_wait_result_cancel(self):
        with h.Cluster(name="cli") as c:
            c.start_worker(name="c1", concurrency=2)
            c.wait_workers(names=["c1"])
            # stdin payload, --wait prints the output.
            r = c.cli("submit", "echo", "--wait", input=b"from stdin")
            self.assertEqual((r.rc, r.stdout), (0, "from stdin"), r)
            r = c.cli("submit", "fail", "--data", "boom-reason", "--attempts", "1", "--wait")
            self.assertEqual(r.rc, 1, r)
            self.assertIn("boom-reason", r.stderr)
            r = c.cli("submit", "echo", "--data", "j", "--json")
            self.assertEqual(r.rc, 0, r)
            jid = r.json()["id"]
            c.cli_ok("wait", jid, "--timeout", str(h.deadline(60)))
            j = c.status1(jid)
            for field in ("id", "type", "state", "attempts", "worker", "created_ms",
                          "started_ms", "finished_ms"):
                self.assertIn(field, j)
            self.assertEqual((j["id"], j["type"], j["state"], j["attempts"]),
                             (jid, "echo", "succeeded", 1))
            self.assertLessEqual(j["created_ms"], j["started_ms"])
            self.assertLessEqual(j["started_ms"], j["finished_ms"])
            text = c.cli_ok("status", jid).stdout
            self.assertIn("succeeded", text)
            # result of a job that is not finished: refused, exit 1.
            q = c.submit("nobody", data="")
            r = c.cli("result", q)
            self.assertEqual(r.rc, 1, r)
            self.assertRegex(r.stderr, r"(?i)not finished|not terminal|queued", r)
            # Cancel a queued job and a running one.
            r = c.cli("cancel", q, "--json")
            self.assertEqual(r.rc, 0, r)
            self.assertEqual(r.json(), {"cancelled": 1})
            self.assertEqual(c.status1(q)["state"], "cancelled")
            r = c.cli("cancel", q, "--json")
            self.assertEqual((r.rc, r.json()), (0, {"cancelled": 0}), r)
            s = c.submit("sleep", data="600000")
            c.wait_state(s, "running", 60)
            c.cli_ok("cancel", s)
            c.wait_state(s, "cancelled", 30)
            r = c.cli("wait", s, "--timeout", "10")
            self.assertEqual(r.rc, 1, r)
            # Both slots work again: the cancelled 10-minute sleep was abandoned.
            ids = c.client().submit([{"type": "sleep", "payload": b"300"} for _ in range(2)])["ids"]
            try:
                infos = c.wait_terminal(ids, 120)
            except h.WaitTimeout:
                raise AssertionError("jobs did not finish: was the cancelled sleep abandoned "
                                     "by the worker? %s" % c.client().status(ids))
            self.assertTrue(all(h.state_name(i["state"]) == "succeeded" for i in infos), infos)
            # Idempotency key.
            a = c.submit("echo", "--key", "same-key", data="k1")
            b = c.submit("echo", "--key", "same-key", data="k1")
            self.assertEqual(a, b)
            # Delay.
            t0 = time.monotonic()
            d = c.submit("echo", "--delay", "2", data="later")
            if time.monotonic() - t0 < 1.5:
                self.assertEqual(c.status1(d)["state"], "waiting")
            c.cli_ok("wait", d, "--timeout", str(h.deadline(60)))
            j = c.status1(d)
            self.assertGreaterEqual(j["started_ms"], j["created_ms"] + 2000, j)
            # --depends-on.
            p = c.submit("sleep", data="200")
            ch = c.submit("echo", "--depends-on", p, data="child")
            c.cli_ok("wait", ch, "--timeout", str(h.deadline(60)))
            pj, cj = c.status(p, ch)
            self.assertGreaterEqual(cj["started_ms"], pj["finished_ms"])
            self.assertEqual(cj.get("parent_ids"), [p], cj)

    # ------------------------------------------------------------------
    def test_cli_argument_errors(self):
        with h.Cluster(name="args", memory=True) as c:
            bad = [
                [],
                ["frobnicate"],
                ["submit"],
                ["submit", "echo", "--priority", "abc"],
                ["submit", "echo", "--priority", "99999999999"],
                ["submit", "echo", "--attempts", "0"],
                ["submit", "echo", "--attempts", "-1"],
                ["submit", "echo", "--timeout", "soon"],
                ["submit", "echo", "--delay", "-3"],
                ["submit", "echo", "--bogus"],
                ["submit", "echo", "--data"],
                ["submit", "echo", "--data", "x", "--file", "/etc/hostname"],
                ["submit", "echo", "extra-arg"],
                ["status"],
                ["status", "--frob", "x-1"],
                ["wait"],
                ["wait", "x-1", "--timeout", "never"],
                ["result"],
                ["result", "a-1", "b-2"],
                ["cancel"],
                ["dag"],
                ["dag", "x-d1", "--json", "--dot"],
                ["stats", "extra"],
                ["submit-dag"],
            ]
            for args in bad:
                r = c.cli(*args)
                self.assertEqual(r.rc, 2, "expected usage error (exit 2): %r" % r)
                if args:
                    self.assertTrue(r.stderr.strip(), "no message on stderr: %r" % r)
                else:
                    # No command at all: the usage text (stdout or stderr).
                    self.assertIn("Usage", r.stderr + r.stdout, r)
            for args in (["--timeout", "x", "stats"], ["--broker"], ["--nope", "stats"]):
                r = c.cli(*args, broker=False)
                self.assertEqual(r.rc, 2, "expected usage error (exit 2): %r" % r)
                self.assertTrue(r.stderr.strip(), r)
            r = c.cli("--help", broker=False)
            self.assertEqual(r.rc, 0, r)
            self.assertIn("submit", r.stdout)
            for cmd in ("submit", "submit-dag", "status", "wait", "result", "cancel", "stats", "dag"):
                r = c.cli(cmd, "--help")
                self.assertEqual(r.rc, 0, r)
                self.assertIn("Usage", r.stdout + r.stderr)
            # Missing file: an error, not a usage error.
            r = c.cli("submit", "echo", "--file", c.path("missing"))
            self.assertNotEqual(r.rc, 0, r)
            self.assertIn("missing", r.stderr)
            # Unreachable broker: exit 3, quickly bounded by --timeout.
            port = h.free_port()
            r = c.cli("--broker", "tcp://127.0.0.1:%d" % port, "--timeout", "1", "stats", broker=False)
            self.assertEqual(r.rc, 3, r)
            # Bad endpoint.
            r = c.cli("--broker", "nonsense://x", "stats", broker=False)
            self.assertNotEqual(r.rc, 0, r)
            self.assertTrue(r.stderr.strip(), r)


if __name__ == "__main__":
    h.run_tests()

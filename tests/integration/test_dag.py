#!/usr/bin/python3
"""DAG integration tests (issue 3): real broker, workers and CLI.

A diamond whose fan-in reads its parents' outputs through an external
command (DAGQ_PARENTS_DIR); a 10,000-job random DAG on 3 workers finishing in
a valid order; a failure in one branch skipping its descendants while the
other branch completes; cancel of a running DAG; cyclic and otherwise
invalid documents rejected with nothing queued.
"""

import base64
import json
import os
import random
import re
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dq_harness as h  # noqa: E402


def submit_dag(c, doc, name="dag.json"):
    """`dagq submit-dag FILE --json` -> (dag_id, {local id: job id})."""
    path = h.write_file(c.path(name), json.dumps(doc))
    out = c.cli_ok("submit-dag", path, "--json").json()
    if not isinstance(out, dict) or "dag_id" not in out or "jobs" not in out:
        raise AssertionError("submit-dag --json printed %r" % out)
    return out["dag_id"], out["jobs"]


def dag_info(c, dag_id):
    """`dagq dag ID --json` -> (dag dict, {local name: job dict})."""
    dag, jobs = h.dag_from_json(c.cli_json("dag", dag_id))
    return dag, {j.get("name") or j["id"]: j for j in jobs}


HANG_SH = """#!/bin/sh
f="%s/$DAGQ_JOB_ID.$DAGQ_ATTEMPT"
sleep 120 & c1=$!
sh -c 'trap "" TERM; sleep 121' & c2=$!
pg=$(cut -d' ' -f5 /proc/$$/stat)
echo "$$ $pg $c1 $c2" > "$f.tmp"
mv "$f.tmp" "$f"
wait
"""


class DagTest(unittest.TestCase):

    # ------------------------------------------------------------------
    def test_diamond_fan_in_reads_parents(self):
        with h.Cluster(name="diamond") as c:
            seen = c.path("parents-dirs")
            c.start_worker(name="d1", concurrency=2, handlers={
                "left": 'cat "$DAGQ_PARENTS_DIR/root"; printf %s -L',
                "right": 'cat "$DAGQ_PARENTS_DIR/root"; printf %s -R',
                "join": 'echo "$DAGQ_PARENTS_DIR" >> "%s"; ls "$DAGQ_PARENTS_DIR" | tr "\\n" " "; '
                        'printf "|"; cat "$DAGQ_PARENTS_DIR/left" "$DAGQ_PARENTS_DIR/right"' % seen,
            })
            c.start_worker(name="d2", concurrency=2)
            c.wait_workers(names=["d1", "d2"])
            doc = {"name": "diamond-1", "jobs": [
                {"id": "join", "type": "join", "depends_on": ["left", "right"]},
                {"id": "root", "type": "echo", "payload_text": "seed"},
                {"id": "left", "type": "left", "depends_on": ["root"]},
                {"id": "right", "type": "right", "depends_on": [{"id": "root", "on_failure": "skip"}]},
                {"id": "cat", "type": "concat", "depends_on": ["right", "left"]},
                {"id": "json", "type": "echo", "payload": {"a": [1, 2], "b": "x"}},
                {"id": "b64", "type": "echo", "payload_base64": base64.b64encode(b"\x00\xffbin").decode()},
            ]}
            dag_id, ids = submit_dag(c, doc)
            self.assertEqual(set(ids), {j["id"] for j in doc["jobs"]})
            r = c.cli("wait", dag_id, "--timeout", str(h.deadline(120)))
            self.assertEqual(r.rc, 0, r)
            self.assertEqual(c.cli_ok("result", ids["join"]).stdout, "left right |seed-Lseed-R")
            self.assertEqual(c.cli_ok("result", ids["cat"]).stdout, "seed-Rseed-L")
            self.assertEqual(json.loads(c.cli_ok("result", ids["json"]).stdout), {"a": [1, 2], "b": "x"})
            self.assertEqual(c.cli_ok("result", ids["b64"]).stdout_bytes, b"\x00\xffbin")
            # A finished DAG's outputs leave memory (the store has them): its
            # parents' outputs are still read, by RESULT and by a late child.
            self.assertEqual(c.cli_ok("result", ids["root"]).stdout, "seed")
            late_dag, late = submit_dag(c, {"jobs": [
                {"id": "late", "type": "concat", "depends_on": [ids["root"], ids["left"]]}]},
                name="late.json")
            c.cli_ok("wait", late_dag, "--timeout", str(h.deadline(60)))
            self.assertEqual(c.cli_ok("result", late["late"]).stdout, "seedseed-L")
            dag, jobs = dag_info(c, dag_id)
            self.assertEqual(dag["state"], "succeeded", dag)
            self.assertEqual(dag.get("total"), 7, dag)
            self.assertEqual(dag.get("name"), "diamond-1", dag)
            for name in ("left", "right"):
                self.assertGreaterEqual(jobs[name]["started_ms"], jobs["root"]["finished_ms"])
            for name in ("left", "right"):
                self.assertGreaterEqual(jobs["join"]["started_ms"], jobs[name]["finished_ms"])
            st = h.jobs_from_json(c.cli_json("status", ids["join"]))[0]
            self.assertEqual(st.get("dag_id"), dag_id, st)
            self.assertEqual(st.get("parent_ids"), [ids["left"], ids["right"]], st)
            self.assertEqual(st.get("parent_states"), ["succeeded", "succeeded"], st)
            dot = c.cli_ok("dag", dag_id, "--dot").stdout
            self.assertIn("digraph", dot)
            for name in ids:
                self.assertIn(name, dot)
            # The parents directory is removed after the job.
            with open(seen) as f:
                for d in f.read().split():
                    self.assertFalse(os.path.exists(d), "DAGQ_PARENTS_DIR %s left behind" % d)

    # ------------------------------------------------------------------
    def test_late_children_read_stored_outputs(self):
        """Outputs live in the store: a child added after its parent finished,
        before and after a broker restart, still receives the parent's output."""
        with h.Cluster(name="lateout") as c:
            c.start_worker(name="l1", concurrency=2)
            c.wait_workers(names=["l1"])
            blob = bytes(range(256)) * 64
            p1 = c.submit("echo", data="first-output")
            h.write_file(c.path("blob"), blob)
            p2 = c.submit("echo", "--file", c.path("blob"))
            c.cli_ok("wait", p1, p2, "--timeout", str(h.deadline(60)))
            dag_id, ids = submit_dag(c, {"jobs": [
                {"id": "cat", "type": "concat", "depends_on": [p1, p2]}]})
            c.cli_ok("wait", dag_id, "--timeout", str(h.deadline(60)))
            self.assertEqual(c.cli_ok("result", ids["cat"]).stdout_bytes,
                             b"first-output" + blob)
            c.restart_broker()
            c.wait_workers(names=["l1"])
            self.assertEqual(c.cli_ok("result", p2).stdout_bytes, blob)
            dag_id, ids = submit_dag(c, {"jobs": [
                {"id": "again", "type": "concat", "depends_on": [p2, p1]}]}, name="again.json")
            c.cli_ok("wait", dag_id, "--timeout", str(h.deadline(60)))
            self.assertEqual(c.cli_ok("result", ids["again"]).stdout_bytes,
                             blob + b"first-output")

    # ------------------------------------------------------------------
    def test_random_dag_valid_order(self):
        n = h.scaled(10000, 200)
        rng = random.Random(3)
        with h.Cluster(name="bigdag") as c:
            for i in range(3):
                c.start_worker(name="g%d" % i, concurrency=2)
            c.wait_workers(names=["g0", "g1", "g2"])
            parents = []
            types = []
            for i in range(n):
                k = min(i, rng.choice([0, 0, 1, 1, 2, 3]))
                ps = rng.sample(range(max(0, i - 300), i), min(k, i - max(0, i - 300)))
                parents.append(ps)
                # concat only over echo parents: output is checkable and small.
                if ps and rng.random() < 0.08 and all(types[p] == "echo" for p in ps):
                    types.append("concat")
                else:
                    types.append("echo")
            jobs = []
            for i in range(n):
                j = {"id": "n%d" % i, "type": types[i]}
                if types[i] == "echo":
                    j["payload_text"] = "<%d>" % i
                if parents[i]:
                    j["depends_on"] = ["n%d" % p for p in parents[i]]
                jobs.append(j)
            rng.shuffle(jobs)          # local ids may be used before they appear
            dag_id, ids = submit_dag(c, {"name": "random", "jobs": jobs})
            self.assertEqual(len(ids), n)
            r = c.cli("wait", dag_id, "--timeout", str(h.deadline(600)), timeout=h.deadline(700))
            self.assertEqual(r.rc, 0, r)
            dag, info = dag_info(c, dag_id)
            self.assertEqual((dag["state"], dag.get("total"), dag.get("succeeded")),
                             ("succeeded", n, n), dag)
            self.assertEqual(len(info), n)
            violations = []
            for i in range(n):
                child = info["n%d" % i]
                self.assertEqual(child["state"], "succeeded", child)
                if child.get("parent_ids") is not None:
                    self.assertEqual(child["parent_ids"], [ids["n%d" % p] for p in parents[i]], child)
                for p in parents[i]:
                    par = info["n%d" % p]
                    if not (par["finished_ms"] and child["started_ms"] >= par["finished_ms"]):
                        violations.append((child["id"], child["started_ms"], par["id"], par["finished_ms"]))
            self.assertFalse(violations, "%d children started before a parent finished, e.g. %s"
                             % (len(violations), violations[:5]))
            workers = set(c.names_of([j.get("worker") for j in info.values()]))
            self.assertTrue({"g0", "g1", "g2"} <= workers, "workers used: %s" % workers)
            concat = [i for i in range(n) if types[i] == "concat"]
            res = c.client().results_many([ids["n%d" % i] for i in concat])
            for i in concat:
                want = "".join("<%d>" % p for p in parents[i]).encode()
                self.assertEqual(res[ids["n%d" % i]]["output"], want, "concat n%d" % i)

    # ------------------------------------------------------------------
    def test_failure_skips_descendants_other_branch_completes(self):
        with h.Cluster(name="dagfail") as c:
            c.start_worker(name="f1", concurrency=2)
            c.wait_workers(names=["f1"])
            doc = {"name": "branches", "jobs": [
                {"id": "root", "type": "echo", "payload_text": "r"},
                {"id": "a1", "type": "fail", "payload_text": "a1 broke", "attempts": 1, "depends_on": ["root"]},
                {"id": "a2", "type": "echo", "depends_on": ["a1"]},
                {"id": "a3", "type": "echo", "depends_on": ["a2"]},
                {"id": "b1", "type": "sleep", "payload_text": "300", "depends_on": ["root"]},
                {"id": "b2", "type": "echo", "payload_text": "b2", "depends_on": ["b1"]},
                {"id": "join", "type": "concat", "depends_on": ["a3", "b2"]},
                {"id": "cleanup", "type": "echo", "payload_text": "c",
                 "depends_on": [{"id": "a1", "on_failure": "run"}]},
                {"id": "notify", "type": "echo", "payload_text": "n",
                 "depends_on": [{"id": "a3", "on_failure": "run"}, "b2"]},
            ]}
            dag_id, ids = submit_dag(c, doc)
            r = c.cli("wait", dag_id, "--timeout", str(h.deadline(120)))
            self.assertEqual(r.rc, 1, r)
            self.assertIn("a1", r.stderr + r.stdout, "the failed job is not named: %r" % r)
            dag, jobs = dag_info(c, dag_id)
            want = {"root": "succeeded", "a1": "failed", "a2": "skipped", "a3": "skipped",
                    "b1": "succeeded", "b2": "succeeded", "join": "skipped",
                    "cleanup": "succeeded", "notify": "succeeded"}
            self.assertEqual({k: jobs[k]["state"] for k in want}, want)
            self.assertEqual(dag["state"], "failed", dag)
            self.assertIn("a1 broke", jobs["a1"].get("error") or "", jobs["a1"])
            for k in ("a2", "a3", "join"):
                self.assertEqual(jobs[k].get("skipped_by"), ids["a1"], jobs[k])
                self.assertEqual(jobs[k]["attempts"], 0, jobs[k])
            # The healthy branch ran after the failure was known.
            self.assertGreaterEqual(jobs["b2"]["finished_ms"], jobs["a1"]["finished_ms"])
            # Growing: a new job on a failed parent is skipped at once, on a
            # succeeded one it runs.
            s = c.submit("echo", "--depends-on", ids["a1"], data="x")
            j = c.status1(s)
            self.assertEqual(j["state"], "skipped", j)
            self.assertEqual(j.get("skipped_by"), ids["a1"], j)
            g = c.submit("echo", "--depends-on", ids["b2"], "--depends-on", ids["root"], data="grown")
            c.cli_ok("wait", g, "--timeout", str(h.deadline(60)))
            self.assertEqual(c.cli_ok("result", g).stdout, "grown")

    # ------------------------------------------------------------------
    def test_cancel_running_dag(self):
        with h.Cluster(name="dagcancel") as c:
            piddir = c.path("pids")
            os.makedirs(piddir)
            hang = h.write_file(c.path("hang.sh"), HANG_SH % piddir, 0o755)
            c.start_worker(name="k1", concurrency=2, handlers={"hang": hang})
            c.wait_workers(names=["k1"])
            doc = {"name": "to-cancel", "jobs": [
                {"id": "quick", "type": "echo", "payload_text": "q"},
                {"id": "s1", "type": "hang", "depends_on": ["quick"]},
                {"id": "s2", "type": "hang", "depends_on": ["quick"]},
                {"id": "c1", "type": "echo", "depends_on": ["s1"]},
                {"id": "c2", "type": "echo", "depends_on": ["s1", "s2"]},
                {"id": "queued", "type": "nobody.runs"},
                {"id": "delayed", "type": "echo", "delay": 600},
            ]}
            dag_id, ids = submit_dag(c, doc)
            files = [os.path.join(piddir, "%s.1" % ids[k]) for k in ("s1", "s2")]
            h.wait_until(lambda: all(os.path.exists(f) for f in files), 60,
                         what="both hang jobs running")
            pids = [h.read_pids(f) for f in files]
            r = c.cli("cancel", dag_id, "--json")
            self.assertEqual(r.rc, 0, r)
            count = r.json().get("cancelled")
            self.assertGreaterEqual(count, 4, r)
            dag, jobs = dag_info(c, dag_id)
            h.wait_until(lambda: all(j["state"] in h.TERMINAL for j in dag_info(c, dag_id)[1].values()),
                         60, what="every job of the cancelled DAG terminal")
            dag, jobs = dag_info(c, dag_id)
            self.assertEqual(jobs["quick"]["state"], "succeeded")
            for k in ("s1", "s2", "queued", "delayed"):
                self.assertEqual(jobs[k]["state"], "cancelled", jobs[k])
            for k in ("c1", "c2"):
                self.assertIn(jobs[k]["state"], ("cancelled", "skipped"), jobs[k])
                self.assertEqual(jobs[k]["attempts"], 0, jobs[k])
            self.assertNotEqual(dag["state"], "running", dag)
            r = c.cli("wait", dag_id, "--timeout", "30")
            self.assertEqual(r.rc, 1, r)
            for shell, pgid, *children in pids:
                h.wait_until(lambda: not any(h.pid_exists(p) for p in [shell] + children)
                             and not h.pids_in_group(pgid), 30,
                             what="process group %d of a cancelled job gone" % pgid)
            # Cancelling again changes nothing.
            r = c.cli("cancel", dag_id, "--json")
            self.assertEqual((r.rc, r.json().get("cancelled")), (0, 0), r)
            # Both slots of the worker are free again.
            ids2 = c.client().submit([{"type": "echo", "payload": b"a"}, {"type": "echo", "payload": b"b"}])["ids"]
            infos = c.wait_terminal(ids2, 60)
            self.assertTrue(all(h.state_name(i["state"]) == "succeeded" for i in infos), infos)

    # ------------------------------------------------------------------
    def test_large_dag_listed_in_pages(self):
        # The broker lists a DAG's jobs 10,000 at a time (one DAG_INFO
        # page); the CLI gathers every page. Nobody runs 'nobody.runs', so
        # the jobs stay put while they are listed.
        n = 25000
        with h.Cluster(name="dagpages") as c:
            jobs = [{"id": "p%d" % i, "type": "nobody.runs"} for i in range(n)]
            for i in range(1, n, 5):
                jobs[i]["depends_on"] = ["p%d" % (i - 1)]
            dag_id, ids = submit_dag(c, {"name": "paged", "jobs": jobs})
            order = [ids["p%d" % i] for i in range(n)]
            cl = c.client()
            first = cl.dag(dag_id)
            self.assertEqual(first["dag"]["total"], n)
            self.assertEqual([j["id"] for j in first["infos"]], order[:10000])
            self.assertEqual(first.get("next_offset"), 10000)
            last = cl.dag(dag_id, offset=20000)
            self.assertEqual([j["id"] for j in last["infos"]], order[20000:])
            self.assertNotIn("next_offset", last)
            mid = cl.dag(dag_id, offset=9990, limit=20)
            self.assertEqual([j["id"] for j in mid["infos"]], order[9990:10010])
            self.assertEqual(mid.get("next_offset"), 10010)
            self.assertEqual(cl.dag(dag_id, offset=n + 5, limit=3).get("infos", []), [])
            self.assertNotIn("infos", cl.dag(dag_id, summary=True))
            with self.assertRaises(h.DqError) as e:
                cl.dag(dag_id, limit=10001)
            self.assertEqual(e.exception.name, "too_big", e.exception)
            self.assertIn("offset", e.exception.message)
            # The CLI: every job once, in submission order, with its parents.
            out = c.cli_json("dag", dag_id)
            listed = out["jobs"]
            self.assertEqual([j["id"] for j in listed], order)
            self.assertEqual([p["id"] for p in listed[6]["parents"]], [order[5]], listed[6])
            self.assertEqual(out["dag"]["total"], n)
            r = c.cli("dag", dag_id, "--dot")
            self.assertEqual(r.rc, 0, r)
            self.assertEqual(r.stdout.count("->"), len(range(1, n, 5)))
            # One page from the CLI, and its bad values.
            page = c.cli_json("dag", dag_id, "--offset", "9990", "--limit", "20")
            self.assertEqual([j["id"] for j in page["jobs"]], order[9990:10010])
            self.assertEqual(page["next_offset"], 10010)
            self.assertIsNone(out["next_offset"])
            for bad in (["--limit", "0"], ["--limit", "10001"], ["--offset", "-1"]):
                r = c.cli("dag", dag_id, *bad)
                self.assertEqual(r.rc, 2, r)
                self.assertIn(bad[0], r.stderr)
            # Cancelling the DAG reaches every page: the jobs with a parent
            # are skipped by their parent's cancel, the rest cancelled.
            children = len(range(1, n, 5))
            r = c.cli("cancel", dag_id, "--json")
            self.assertEqual((r.rc, r.json().get("cancelled")), (0, n - children), r)
            d = cl.dag(dag_id, summary=True)["dag"]
            self.assertEqual((d["cancelled"], d["skipped"]), (n - children, children), d)

    # ------------------------------------------------------------------
    def test_invalid_documents_rejected(self):
        with h.Cluster(name="dagbad", memory=True) as c:
            c.start_worker(name="v1", concurrency=1)
            c.wait_workers(names=["v1"])
            first = c.submit("echo", data="existing")
            c.cli_ok("wait", first, "--timeout", str(h.deadline(60)))
            before = c.client().stats()
            bid = before["broker_id"]

            def rejected(doc, *patterns):
                path = h.write_file(c.path("bad.json"), json.dumps(doc) if not isinstance(doc, str) else doc)
                r = c.cli("submit-dag", path, "--json")
                self.assertEqual(r.rc, 1, "document accepted or wrong status: %r" % r)
                for p in patterns:
                    self.assertRegex(r.stderr, p, r)
                return r

            # A cycle: named, in order (any rotation).
            r = rejected({"name": "cyc", "jobs": [
                {"id": "d", "type": "echo"},
                {"id": "alpha", "type": "echo", "depends_on": ["gamma", "d"]},
                {"id": "beta", "type": "echo", "depends_on": ["alpha"]},
                {"id": "gamma", "type": "echo", "depends_on": ["beta"]},
                {"id": "e", "type": "echo", "depends_on": ["d"]},
            ]}, r"(?i)cycle", "alpha", "beta", "gamma")
            names = re.findall(r"alpha|beta|gamma", r.stderr)
            cyc = names[:3]
            rotations = [["alpha", "beta", "gamma"], ["beta", "gamma", "alpha"], ["gamma", "alpha", "beta"]]
            rev = [list(reversed(x)) for x in rotations]
            self.assertIn(cyc, rotations + rev, "cycle not named in order: %r" % r.stderr)
            # A long cycle in a larger document.
            m = 1000
            jobs = [{"id": "x%d" % i, "type": "echo", "depends_on": ["x%d" % ((i + 1) % m)]}
                    for i in range(m)] + [{"id": "y%d" % i, "type": "echo"} for i in range(m)]
            rejected({"jobs": jobs}, r"(?i)cycle")
            rejected({"jobs": [{"id": "me", "type": "echo", "depends_on": ["me"]}]}, r"me")
            rejected({"jobs": [{"id": "a", "type": "echo", "depends_on": ["nope"]}]}, r"nope")
            rejected({"jobs": [{"id": "a", "type": "echo"}, {"id": "a", "type": "echo"}]}, r"a")
            rejected({"jobs": [{"id": "a", "type": "echo", "depends_on": ["%s-987654" % bid]}]},
                     r"%s-987654" % bid)
            rejected({"jobs": [{"id": "a", "type": "echo", "depends_on": ["zzzzz-1"]}]}, r"zzzzz-1")
            r = c.cli("submit", "echo", "--depends-on", "zzzzz-1", "--data", "x")
            self.assertEqual(r.rc, 1, r)
            self.assertIn("zzzzz-1", r.stderr, r)
            for dep in ("zzzzz-1", "garbage", "%s-d1" % bid, "%s-0" % bid):
                with self.assertRaises(h.DqError) as cm:
                    c.client().submit([{"type": "echo", "deps": [{"id": dep}]}])
                self.assertIn(cm.exception.name, ("not_found", "invalid"), cm.exception)
                self.assertTrue(c.broker.alive(), c.broker.tail())
            rejected({"jobs": [{"id": "a", "type": "echo", "colour": "red"}]}, r"colour")
            rejected({"jobs": [{"id": "a", "type": "bad type!"}]}, r"type")
            rejected({"jobs": [{"id": "a", "type": "echo", "attempts": 0}]}, r"attempts")
            rejected({"jobs": []})
            rejected('{"jobs": [', r"(?i)json|parse|invalid|end")
            after = c.client().stats()
            self.assertEqual(after.get("jobs_total", 0), before.get("jobs_total", 0),
                             "a rejected document queued jobs")
            self.assertEqual(h.stats_types(after), h.stats_types(before), "type counts changed")
            # A cycle over the protocol: code cycle, nothing queued.
            with self.assertRaises(h.DqError) as cm:
                c.client().submit([{"type": "echo", "name": "p", "deps": [{"idx": 1}]},
                                   {"type": "echo", "name": "q", "deps": [{"idx": 0}]}], dag_name="x")
            self.assertEqual(cm.exception.name, "cycle", cm.exception)
            self.assertRegex(cm.exception.message, r"p|q|0|1")
            self.assertEqual(c.client().stats().get("jobs_total", 0), before.get("jobs_total", 0))
            # A valid document that depends on an existing finished job runs.
            dag_id, ids = submit_dag(c, {"jobs": [{"id": "after", "type": "concat", "depends_on": [first]}]})
            c.cli_ok("wait", dag_id, "--timeout", str(h.deadline(60)))
            self.assertEqual(c.cli_ok("result", ids["after"]).stdout, "existing")


if __name__ == "__main__":
    h.run_tests()

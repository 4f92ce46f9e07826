#!/usr/bin/python3
"""Finished jobs leave the broker's memory and stay answerable from its store.

With a store, a finished job that is not in a DAG and has no children is
dropped from memory at the end of the broker's turn ("cold"): STATUS,
RESULT, CANCEL, depends_on and idempotent replays then read it from
SQLite. STATS tells the two apart (jobs_total counts every job the broker
answers for, jobs_in_memory the ones it holds). These checks use the
broker as a client would and compare every field with what it said while
the jobs were fresh, before and after a kill -9 and restart.
"""

import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import dq_harness as h  # noqa: E402

# Fields STATUS must report the same for a job in memory and a cold one.
SAME = ("id", "type", "state", "attempts", "max_attempts", "priority", "worker",
        "created_ms", "started_ms", "finished_ms", "error", "output_size",
        "parent_ids", "parent_states")


class ColdJobsTest(unittest.TestCase):

    def wait_memory(self, cl, held, what):
        h.wait_until(lambda: cl.stats().get("jobs_in_memory", 0) == held, 60,
                     what="%s (jobs_in_memory %d)" % (what, held))

    def check_same(self, before, after):
        for b, a in zip(before, after):
            for f in SAME:
                self.assertEqual(b.get(f), a.get(f), "%s of %s" % (f, b["id"]))

    def test_cold_jobs_answer_from_the_store(self):
        with h.Cluster(name="cold") as c:
            c.start_worker(name="cw", concurrency=4)
            c.wait_workers(names=["cw"])
            cl = c.client()
            n = h.scaled(2000, 200)
            plain = cl.submit([{"type": "echo", "payload": b"p-%d" % i,
                                "content_type": "text/x-dagq", "priority": i % 3}
                               for i in range(n)])["ids"]
            failed = cl.submit([{"type": "fail", "payload": b"why", "attempts": 2}])["ids"]
            keyed = cl.submit([{"type": "echo", "payload": b"k"}], key="cold-key")["ids"]
            # A parent with a child stays in memory until its children end.
            fam = cl.submit([{"type": "echo", "payload": b"mum"},
                             {"type": "concat", "deps": [{"idx": 0}]}])["ids"]
            # Never runs: it stays in memory, and cancelling it makes it cold.
            later = cl.submit([{"type": "echo", "payload": b"x", "delay_ms": 3600000}])["ids"]
            done = plain + failed + keyed + fam
            fresh = c.wait_terminal(done)
            st = cl.stats()
            self.assertEqual(st["jobs_total"], len(done) + 1, st)
            # Only the delayed job and the parent (it has a child) stay.
            self.wait_memory(cl, 2, "finished jobs left memory")
            self.assertEqual(cl.stats()["jobs_total"], len(done) + 1)

            cold = cl.status_many(done)
            self.check_same(fresh, cold)
            for info in cold[:n]:
                self.assertEqual(h.state_name(info["state"]), "succeeded", info)
                self.assertTrue(info["worker"], info)
            self.assertEqual(h.state_name(cold[n]["state"]), "failed")
            self.assertEqual(cold[n]["attempts"], 2)
            self.assertIn("why", cold[n]["error"])
            # The child is cold; its parent is held and shown succeeded.
            self.assertEqual(cold[-1]["parent_ids"], [fam[0]])
            self.assertEqual([h.state_name(s) for s in cold[-1]["parent_states"]], ["succeeded"])

            res = cl.results_many(plain)
            for i, jid in enumerate(plain):
                self.assertEqual(res[jid]["output"], b"p-%d" % i)
                self.assertEqual(res[jid].get("content_type"), "text/x-dagq")
            r = cl.result(failed[0])
            self.assertEqual(h.state_name(r["state"]), "failed")
            self.assertIn("why", r.get("error", ""))
            self.assertEqual(cl.result(fam[1])["output"], b"mum")
            self.assertEqual(cl.cancel(plain[0]).get("count", 0), 0)
            self.assertEqual(h.state_name(cl.status([plain[0]])[0]["state"]), "succeeded")

            # Cancelling the delayed job ends it: it goes cold too.
            self.assertEqual(cl.cancel(later[0])["count"], 1)
            self.wait_memory(cl, 1, "the cancelled job left memory")
            self.assertEqual(h.state_name(cl.status(later)[0]["state"]), "cancelled")

            # A replayed key answers with the cold job's id, creating nothing
            # and leaving it on disk.
            self.assertEqual(cl.submit([{"type": "echo", "payload": b"k"}],
                                       key="cold-key")["ids"], keyed)
            st = cl.stats()
            self.assertEqual(st["jobs_total"], len(done) + 1, st)
            self.assertEqual(st["jobs_in_memory"], 1, st)

            # depends_on a cold job: the child runs with its output.
            kids = cl.submit([{"type": "concat", "deps": [{"id": plain[7]}, {"id": plain[9]}]},
                              {"type": "echo", "payload": b"after-fail",
                               "deps": [{"id": failed[0]}]}])["ids"]
            infos = c.wait_terminal(kids)
            self.assertEqual(cl.result(kids[0])["output"], b"p-7p-9")
            self.assertEqual(infos[0]["parent_ids"], [plain[7], plain[9]])
            self.assertEqual(h.state_name(infos[1]["state"]), "skipped")
            self.assertEqual(infos[1].get("skipped_by"), failed[0])
            # The parents it brought back answer as before.
            self.check_same([fresh[7], fresh[n]], cl.status([plain[7], failed[0]]))
            total = len(done) + 1 + len(kids)
            self.assertEqual(cl.stats()["jobs_total"], total)

            # After a kill -9 the store brings back only what must be held.
            c.kill_broker()
            c.restart_broker()
            cl = c.client()
            st = cl.stats()
            self.assertEqual(st["jobs_total"], total, st)
            self.assertLess(st["jobs_in_memory"], 10, st)
            self.check_same(fresh, cl.status_many(done))
            res = cl.results_many(plain)
            for i, jid in enumerate(plain):
                self.assertEqual(res[jid]["output"], b"p-%d" % i)
            self.assertEqual(cl.submit([{"type": "echo", "payload": b"k"}],
                                       key="cold-key")["ids"], keyed)
            c.wait_workers(names=["cw"])
            more = cl.submit([{"type": "concat", "deps": [{"id": plain[1]}]}])["ids"]
            c.wait_terminal(more)
            self.assertEqual(cl.result(more[0])["output"], b"p-1")

    def test_finished_dags_leave_memory(self):
        """A finished DAG keeps only its own record in memory: its jobs
        answer STATUS, RESULT and DAG from the store as they did from memory,
        a job added later may depend on one, and a restart leaves them
        there."""
        with h.Cluster(name="cold-dag") as c:
            c.start_worker(name="dw", concurrency=4)
            c.wait_workers(names=["dw"])
            cl = c.client()
            n = h.scaled(1500, 150)
            jobs = [{"type": "echo", "name": "n%d" % i, "payload": b"d-%d" % i}
                    for i in range(n)]
            for i in range(1, n, 3):
                jobs[i]["deps"] = [{"idx": i - 1}]
            # Nobody runs the last job: the DAG stays unfinished until it is
            # cancelled, so its jobs can be seen in memory first.
            jobs.append({"type": "nobody.runs", "name": "blocker"})
            sub = cl.submit(jobs, dag_name="chilly")
            ids, did = sub["ids"], sub["dag_id"]
            c.wait_terminal(ids[:n])
            fresh = cl.status_many(ids)
            self.assertEqual(cl.stats()["jobs_in_memory"], n + 1)
            held = cl.dag(did)
            self.assertEqual(cl.cancel(ids[-1])["count"], 1)
            self.wait_memory(cl, 0, "the finished DAG's jobs left memory")
            st = cl.stats()
            self.assertEqual(st["jobs_total"], n + 1, st)

            cold = cl.status_many(ids)
            self.check_same(fresh[:n], cold[:n])
            for info in cold:
                self.assertEqual(info.get("dag_id"), did, info)
            self.assertEqual(h.state_name(cold[-1]["state"]), "cancelled")
            self.assertEqual(cold[4]["parent_ids"], [ids[3]])
            listed = cl.dag(did)
            self.assertEqual(listed["dag"]["total"], n + 1)
            self.assertEqual(h.state_name(listed["dag"]["state"]), "failed")
            self.assertTrue(listed["dag"].get("finished_ms"), listed["dag"])
            self.check_same(cold, [h.info_defaults(i) for i in listed["infos"]])
            self.check_same([h.info_defaults(i) for i in held["infos"][:n]],
                            [h.info_defaults(i) for i in listed["infos"][:n]])
            res = cl.results_many(ids[:n])
            for i in range(n):
                self.assertEqual(res[ids[i]]["output"], b"d-%d" % i)
            # A cold DAG has nothing left to cancel.
            self.assertEqual(cl.cancel(did).get("count", 0), 0)

            # A job added later depends on two of its jobs, read from the
            # store; the DAG still lists them as they were.
            kid = cl.submit([{"type": "concat", "deps": [{"id": ids[4]}, {"id": ids[5]}]}])["ids"]
            c.wait_terminal(kid)
            self.assertEqual(cl.result(kid[0])["output"], b"d-4d-5")
            self.check_same(cold, [h.info_defaults(i) for i in cl.dag(did)["infos"]])

            # A restart (kill -9) leaves the finished DAG cold, with the same
            # finish time.
            c.kill_broker()
            c.restart_broker()
            cl = c.client()
            st = cl.stats()
            self.assertEqual(st["jobs_total"], n + 2, st)
            self.assertLess(st.get("jobs_in_memory", 0), 5, st)
            again = cl.dag(did)
            self.assertEqual(again["dag"], listed["dag"])
            self.check_same(cold, [h.info_defaults(i) for i in again["infos"]])
            self.assertEqual(cl.result(ids[7])["output"], b"d-7")

    def test_parent_output_from_the_store(self):
        """A parent outside DAGs does not hold its output in memory after the
        turn it finished in: a child waiting for it when it ends, one added
        later, and RESULT all get the output."""
        with h.Cluster(name="cold-kids") as c:
            c.start_worker(name="kw", concurrency=2)
            c.wait_workers(names=["kw"])
            cl = c.client()
            parent = cl.submit([{"type": "echo", "payload": b"parent-out",
                                 "delay_ms": 300}])["ids"][0]
            first = cl.submit([{"type": "concat", "deps": [{"id": parent}]}])["ids"]
            c.wait_terminal(first)
            self.assertEqual(cl.result(first[0])["output"], b"parent-out")
            later = cl.submit([{"type": "concat", "deps": [{"id": parent}, {"id": first[0]}]}])["ids"]
            c.wait_terminal(later)
            self.assertEqual(cl.result(later[0])["output"], b"parent-outparent-out")
            self.assertEqual(cl.result(parent)["output"], b"parent-out")

    def test_memory_broker_keeps_finished_jobs(self):
        with h.Cluster(name="cold-mem", memory=True) as c:
            c.start_worker(name="mw", concurrency=2)
            c.wait_workers(names=["mw"])
            cl = c.client()
            ids = cl.submit([{"type": "echo", "payload": b"m-%d" % i} for i in range(50)])["ids"]
            c.wait_terminal(ids)
            st = cl.stats()
            self.assertEqual(st["jobs_total"], 50, st)
            self.assertEqual(st["jobs_in_memory"], 50, st)
            self.assertEqual(cl.result(ids[3])["output"], b"m-3")


if __name__ == "__main__":
    h.run_tests()

#!/usr/bin/python3
"""Retention: finished jobs, DAGs and idempotency keys expire after
--result-ttl (issue 4), in memory and in the store.

A broker with --result-ttl 2 runs a few thousand jobs (several pages of
its job table), a DAG and a keyed submission. While they are fresh they
are queryable; a little over the TTL later STATUS, RESULT and DAG say
"not found", STATS counts no jobs, the key makes new jobs, and a restart
does not bring anything back (the store rows are gone too). Jobs
submitted after that work as before, and a job still waiting does not
expire.
"""

import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import dq_harness as h  # noqa: E402

TTL_S = 2


class RetentionTest(unittest.TestCase):

    def gone(self, c, jid):
        try:
            c.client().result(jid)
            return False
        except h.DqError as e:
            self.assertEqual(e.name, "not_found", e)
            return True

    def test_finished_jobs_expire_after_result_ttl(self):
        with h.Cluster(name="retention", broker_args=["--result-ttl", str(TTL_S)]) as c:
            c.start_worker(name="rt", concurrency=4)
            c.wait_workers(names=["rt"])
            cl = c.client()
            n = h.scaled(3000, 300)
            plain = cl.submit([{"type": "echo", "payload": b"p-%d" % i} for i in range(n)])["ids"]
            keyed = cl.submit([{"type": "echo", "payload": b"keyed"}], key="ret-key")["ids"]
            dag = cl.submit([{"type": "echo", "name": "a", "payload": b"a"},
                             {"type": "echo", "name": "b", "payload": b"b",
                              "deps": [{"idx": 0}]}], dag_name="ret")
            # No worker runs this type: it waits, and must not expire.
            waiting = cl.submit([{"type": "nobody", "payload": b"w"}])["ids"][0]
            c.wait_terminal(plain + keyed + dag["ids"])
            self.assertEqual(cl.result(plain[-1])["output"], b"p-%d" % (n - 1))
            self.assertEqual(cl.submit([{"type": "echo", "payload": b"keyed"}],
                                       key="ret-key")["ids"], keyed)

            # Expiry: poll with a generous deadline, never a fixed sleep.
            h.wait_until(lambda: all(self.gone(c, j) for j in (plain[0], plain[-1], keyed[0],
                                                                 dag["ids"][1])),
                         60, what="finished jobs expired after --result-ttl %d" % TTL_S)
            with self.assertRaises(h.DqError) as cm:
                cl.status(plain[:5])
            self.assertEqual(cm.exception.name, "not_found", cm.exception)
            self.assertRegex(cm.exception.message, r"result-ttl")

            def dag_gone():
                try:
                    cl.dag(dag["dag_id"])
                    return False
                except h.DqError as e:
                    return e.name == "not_found"
            h.wait_until(dag_gone, 60, what="the DAG expired with its jobs")
            h.wait_until(lambda: cl.stats().get("jobs_total", 0) == 1, 60,
                         what="STATS counting only the waiting job")
            self.assertEqual(h.state_name(cl.status([waiting])[0]["state"]), "queued")
            # The key expired with its jobs: the same submission makes a new job.
            again = cl.submit([{"type": "echo", "payload": b"keyed"}], key="ret-key")["ids"]
            self.assertNotEqual(again, keyed)
            c.wait_terminal(again)

            # A restart brings nothing back: the store rows went too.
            c.kill_broker()
            c.restart_broker()
            cl = c.client()
            for jid in (plain[0], plain[n // 2], plain[-1], keyed[0], dag["ids"][0]):
                self.assertTrue(self.gone(c, jid), jid)
            self.assertTrue(dag_gone(), "the expired DAG came back from the store")
            self.assertEqual(h.state_name(cl.status([waiting])[0]["state"]), "queued")
            # New jobs after all that run and can be read.
            c.wait_workers(names=["rt"])
            fresh = cl.submit([{"type": "echo", "payload": b"f-%d" % i} for i in range(50)])["ids"]
            c.wait_terminal(fresh)
            res = cl.results_many(fresh)
            for i, jid in enumerate(fresh):
                self.assertEqual(res[jid]["output"], b"f-%d" % i)


if __name__ == "__main__":
    h.run_tests()

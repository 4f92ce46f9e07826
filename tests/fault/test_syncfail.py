#!/usr/bin/python3
"""A slow and a failing fsync (issue 4, accepted means durable).

The broker runs with dq_failsync.so preloaded. While one trigger file
exists every fsync and fdatasync in it takes 1.5 s: a submission is
acknowledged only after that, and the broker logs that the disk is slow.
Once another exists they fail with EIO, as on a disk that reports write
errors. Before that, jobs are accepted and run. After it, a submission
is never acknowledged (its commit reached SQLite but could not be made
durable): the broker logs the failed fdatasync and exits with status 1
(fail-stop) instead of replying. Restarted on a healthy disk, it still has
every job it acknowledged, with its result.
"""

import os
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
import dq_harness as h  # noqa: E402

SHIM = os.path.join(h.BUILD_DIR, "tests", "fault", "dq_failsync.so")


class SyncFailTest(unittest.TestCase):

    def test_fdatasync_failure_stops_without_acknowledging(self):
        h.require(SHIM)
        with h.Cluster(name="syncfail", start=False) as c:
            trigger = c.path("fail-sync")
            slow = c.path("slow-sync")
            env = {
                "LD_PRELOAD": SHIM,
                "DQ_FAIL_SYNC_FILE": trigger,
                "DQ_SLOW_SYNC_FILE": slow,
                # The shim is not instrumented; ASan need not come first.
                "ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "abort_on_error=0:detect_leaks=1")
                                + ":verify_asan_link_order=0",
            }
            c.start_broker(env=env)
            c.start_worker(name="sf", concurrency=4)
            c.wait_workers(names=["sf"])
            acked = c.client().submit([{"type": "echo", "payload": b"acked-%d" % i}
                                       for i in range(100)])["ids"]
            c.wait_terminal(acked)

            # A stalled disk: the reply waits for the sync, and the log says why.
            open(slow, "w").close()
            t0 = time.monotonic()
            acked += c.client().submit([{"type": "echo", "payload": b"acked-slow"}])["ids"]
            self.assertGreaterEqual(time.monotonic() - t0, 1.4,
                                    "acknowledged before its fsync could have returned")
            os.unlink(slow)

            def warned():
                with open(c.broker.err_path, errors="replace") as f:
                    return "replies wait for the disk" in f.read()
            h.wait_until(warned, 30, what="a slow-fsync warning in the broker's log")
            c.wait_terminal(acked)

            open(trigger, "w").close()
            refused = False
            try:
                c.client().submit([{"type": "echo", "payload": b"never acked"}], timeout=10)
            except (h.NoReply, h.DqError):
                refused = True
            self.assertTrue(refused, "a submission was acknowledged after fdatasync failed")
            rc = c.broker.reap(60)
            self.assertEqual(rc, 1, c.broker.tail())
            with open(c.broker.err_path, errors="replace") as f:
                log = f.read()
            self.assertRegex(log, r"fdatasync failed: Input/output error")
            self.assertRegex(log, r"stopping without acknowledging")

            os.unlink(trigger)
            c.restart_broker()
            infos = c.client().status_many(acked)
            self.assertTrue(all(h.state_name(i["state"]) == "succeeded" for i in infos),
                            [i for i in infos if h.state_name(i["state"]) != "succeeded"][:3])
            res = c.client().results_many(acked)
            for i, jid in enumerate(acked[:-1]):
                self.assertEqual(res[jid]["output"], b"acked-%d" % i)
            self.assertEqual(res[acked[-1]]["output"], b"acked-slow")


if __name__ == "__main__":
    h.run_tests()

#!/usr/bin/python3
"""Disk full and store limits (issue 4, Store).

The data dir on a 16 MiB tmpfs that the test mounts and unmounts (skipped
with a clear message when not root or when mounting is not allowed): once
the disk is (nearly) full, submissions get an explicit store_full error and
are never acknowledged, completions of accepted jobs are still recorded,
nothing acknowledged is lost (also across a kill -9), and service resumes
by itself when space is freed. --max-store-bytes is checked the same way
without root.
"""

import os
import signal
import subprocess
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
import dq_harness as h  # noqa: E402


def free_bytes(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(path, leave):
    """Grow the filler file at path until `leave` bytes are free."""
    with open(path, "ab") as f:
        while True:
            free = free_bytes(os.path.dirname(path))
            if free <= leave:
                return
            try:
                f.write(b"\0" * min(free - leave, 1 << 20))
                f.flush()
                os.fsync(f.fileno())
            except OSError:
                return


class DiskFullTest(unittest.TestCase):

    def expect_store_full(self, c):
        """Submissions are refused with store_full (CLI: exit 1, a message)."""
        def refused():
            try:
                c.client().submit([{"type": "nobody", "payload": b"refused?"}])
                return False
            except h.DqError as e:
                self.assertEqual(e.name, "store_full", e)
                return e
        e = h.wait_until(refused, 60, what="store_full after the disk filled")
        r = c.cli("--timeout", "5", "submit", "echo", "--data", "x")
        self.assertNotEqual(r.rc, 0, "submission acknowledged on a full disk: %r" % r)
        self.assertRegex(r.stderr, r"(?i)full|space|store", r)
        return e

    def test_tmpfs_full(self):
        if os.geteuid() != 0:
            self.skipTest("needs root to mount a tmpfs (run as root to test a full disk)")
        base = h.make_tmpdir("dagq-diskfull-")
        mnt = os.path.join(base, "mnt")
        os.makedirs(mnt)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", mnt],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if r.returncode != 0:
            self.skipTest("cannot mount a tmpfs here: %s" % r.stdout.decode().strip())
        h.register_mount(mnt)
        try:
            self._tmpfs_full(mnt)
        finally:
            subprocess.run(["umount", mnt])
            h.unregister_mount(mnt)

    def _tmpfs_full(self, mnt):
        data = os.path.join(mnt, "data")
        filler = os.path.join(mnt, "filler")
        with h.Cluster(name="diskfull", data_dir=data,
                       broker_args=["--min-free-bytes", "2M"]) as c:
            c.start_worker(name="df", concurrency=2)
            c.wait_workers(names=["df"])
            # Accepted before the disk fills: done ones and queued ones.
            done = c.client().submit([{"type": "echo", "payload": b"done-%d" % i} for i in range(200)])["ids"]
            c.wait_terminal(done)
            pending = c.client().submit([{"type": "later", "payload": b"later-%d" % i}
                                         for i in range(100)])["ids"]
            fill(filler, 1 << 20)          # 1 MiB left: under --min-free-bytes
            e = self.expect_store_full(c)
            self.assertRegex(e.message, r"(?i)full|free|space", e)
            self.assertGreater(e.retry_ms, 0, "store_full without a retry hint")
            self.assertTrue(c.broker.alive(), c.broker.tail())
            # Completions of accepted jobs are still recorded.
            c.start_worker(name="later", concurrency=2, builtins=False, handlers={"later": "cat"})
            infos = c.wait_terminal(pending, 120)
            self.assertTrue(all(h.state_name(i["state"]) == "succeeded" for i in infos), infos)
            # Completely full: still refusing, still alive.
            fill(filler, 0)
            self.expect_store_full(c)
            self.assertTrue(c.broker.alive(), c.broker.tail())
            # Room returns: service resumes by itself.
            os.unlink(filler)

            def accepted():
                try:
                    return c.client().submit([{"type": "echo", "payload": b"resumed"}])["ids"][0]
                except h.DqError as e:
                    self.assertEqual(e.name, "store_full", e)
                    return None
            jid = h.wait_until(accepted, 60, what="submissions accepted after space was freed")
            self.assertEqual(c.cli_ok("submit", "echo", "--data", "cli-resumed", "--wait").stdout,
                             "cli-resumed")
            c.wait_terminal([jid])
            # Nothing acknowledged is lost, across a crash too.
            c.kill_broker(signal.SIGKILL)
            c.restart_broker()
            infos = c.client().status_many(done + pending + [jid])
            self.assertTrue(all(h.state_name(i["state"]) == "succeeded" for i in infos),
                            [i for i in infos if h.state_name(i["state"]) != "succeeded"][:3])
            res = c.client().results_many(done + pending)
            for i, jid in enumerate(done):
                self.assertEqual(res[jid]["output"], b"done-%d" % i)
            for i, jid in enumerate(pending):
                self.assertEqual(res[jid]["output"], b"later-%d" % i)

    def test_max_store_bytes(self):
        with h.Cluster(name="maxstore", broker_args=["--max-store-bytes", "2M"]) as c:
            acked = []
            err = None
            for i in range(400):
                try:
                    acked += c.client().submit([{"type": "later", "payload": os.urandom(8192)}
                                                for _ in range(8)])["ids"]
                except h.DqError as e:
                    err = e
                    break
            self.assertIsNotNone(err, "2 MiB store accepted 25 MiB of payloads")
            self.assertEqual(err.name, "store_full", err)
            self.assertIn("max-store-bytes", err.message)
            self.assertTrue(acked)
            # Completions are still recorded.
            c.start_worker(name="ms", concurrency=2, builtins=False, handlers={"later": "wc -c"})
            infos = c.wait_terminal(acked, 180)
            self.assertTrue(all(h.state_name(i["state"]) == "succeeded" for i in infos))
            # Nothing acknowledged lost across a crash; a bigger limit resumes.
            c.kill_broker(signal.SIGKILL)
            c.broker_args = ["--max-store-bytes", "256M"]
            c.restart_broker()
            self.assertEqual(len(c.client().status_many(acked)), len(acked))
            c.cli_ok("submit", "echo", "--data", "x")


if __name__ == "__main__":
    h.run_tests()

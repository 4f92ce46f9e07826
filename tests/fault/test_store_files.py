#!/usr/bin/python3
"""Damaged and foreign store files (issue 4, Recovery).

A truncated WAL and a WAL with garbage appended: the broker starts when the
data is recoverable (everything checkpointed before is there, ids are not
reused for other jobs). A foreign file, another program's SQLite database,
an unknown format version, a corrupt database, a locked data dir: the
broker refuses with a clear message and exit code 5, and leaves the files
as they were.
"""

import hashlib
import os
import shutil
import signal
import sqlite3
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
import dq_harness as h  # noqa: E402

EXIT_STORE = 5


def file_digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def dir_listing(path):
    return sorted(os.listdir(path))


class StoreFilesTest(unittest.TestCase):

    def populated_store(self, c, n_clean=40, n_wal=40):
        """Jobs A checkpointed into dagq.db (clean stop), then jobs B only in
        the WAL (kill -9). Returns (ids A, ids B, broker id)."""
        cl = c.client()
        a = cl.submit([{"type": "nobody", "payload": b"a%d" % i} for i in range(n_clean)])["ids"]
        bid = cl.stats()["broker_id"]
        self.assertEqual(c.kill_broker(signal.SIGTERM), 0, c.broker.tail())
        wal = os.path.join(c.data_dir, "dagq.db-wal")
        self.assertFalse(os.path.exists(wal) and os.path.getsize(wal) > 0,
                         "a clean stop left a non-empty WAL")
        c.restart_broker()
        b = []
        for i in range(n_wal):     # one commit each: many WAL frames
            b += c.client().submit([{"type": "nobody", "payload": b"b%d" % i}])["ids"]
        c.kill_broker(signal.SIGKILL)
        self.assertTrue(os.path.exists(wal) and os.path.getsize(wal) > 0, "no WAL after kill -9")
        return a, b, bid

    def check_recovered(self, c, a, b, bid, expect_all_b):
        c.restart_broker()
        cl = c.client()
        self.assertEqual(cl.stats()["broker_id"], bid)
        infos = cl.status(a)
        self.assertEqual([i["id"] for i in infos], a)
        self.assertTrue(all(h.state_name(i["state"]) == "queued" for i in infos), infos)
        present = []
        for jid in b:
            try:
                info = cl.status([jid])[0]
                present.append(jid)
                self.assertEqual(h.state_name(info["state"]), "queued", info)
            except h.DqError as e:
                self.assertEqual(e.name, "not_found", e)
        if expect_all_b:
            self.assertEqual(present, b, "committed jobs lost")
        else:
            # What survived is a prefix of the commit order.
            self.assertEqual(present, b[:len(present)], "recovered jobs are not a prefix")
        h.log("recovered %d of %d WAL-only jobs" % (len(present), len(b)))
        new = cl.submit([{"type": "nobody", "payload": b"new"}])["ids"][0]
        self.assertNotIn(new, a + present, "a new job reused the id of a stored one")
        if new in b:
            h.log("note: new job %s reuses the id of a job lost with the WAL" % new)
        return present

    # ------------------------------------------------------------------
    def test_truncated_wal(self):
        with h.Cluster(name="walcut") as c:
            a, b, bid = self.populated_store(c)
            wal = os.path.join(c.data_dir, "dagq.db-wal")
            size = os.path.getsize(wal)
            # Cut inside the last frames: a torn write.
            with open(wal, "r+b") as f:
                f.truncate(size - 3000)
            present = self.check_recovered(c, a, b, bid, expect_all_b=False)
            self.assertGreater(len(present), 0, "every WAL frame was dropped for a cut at the end")
            c.kill_broker(signal.SIGKILL)
            # A WAL cut inside its 32-byte header: only the checkpointed jobs.
            with open(wal, "r+b") as f:
                f.truncate(16)
            self.check_recovered(c, a, b, bid, expect_all_b=False)

    def test_garbage_appended_wal(self):
        with h.Cluster(name="waljunk") as c:
            a, b, bid = self.populated_store(c)
            wal = os.path.join(c.data_dir, "dagq.db-wal")
            with open(wal, "ab") as f:
                f.write(os.urandom(64 * 1024 + 123))
            self.check_recovered(c, a, b, bid, expect_all_b=True)
            # And the store still works durably afterwards.
            jid = c.client().submit([{"type": "nobody", "payload": b"after"}])["ids"][0]
            c.kill_broker(signal.SIGKILL)
            c.restart_broker()
            self.assertEqual(h.state_name(c.client().status([jid])[0]["state"]), "queued")

    # ------------------------------------------------------------------
    def refused(self, c, pattern, what):
        """Start the broker on c.data_dir: it must exit 5 with a message."""
        before = {n: file_digest(os.path.join(c.data_dir, n)) for n in dir_listing(c.data_dir)
                  if os.path.isfile(os.path.join(c.data_dir, n)) and n != "LOCK"}
        p = c.start_broker(wait=False)
        rc = p.wait(60)
        self.assertIsNotNone(rc, "broker started on %s:\n%s" % (what, p.tail()))
        p.reap()
        self.assertEqual(rc, EXIT_STORE, "exit status for %s:\n%s" % (what, p.tail()))
        err = p.stderr_text()
        self.assertIn("dagq.db", err, "message does not name the file: %s" % err)
        self.assertRegex(err, pattern, "unclear message for %s: %s" % (what, err))
        after = {n: file_digest(os.path.join(c.data_dir, n)) for n in dir_listing(c.data_dir)
                 if os.path.isfile(os.path.join(c.data_dir, n)) and n != "LOCK"}
        self.assertEqual(after, before, "the refused store was modified (%s)" % what)
        c.brokers.remove(p)
        return err

    def test_foreign_files_refused(self):
        with h.Cluster(name="foreign", start=False) as c:
            os.makedirs(c.data_dir)
            c.ports = h.free_ports(3)
            db = os.path.join(c.data_dir, "dagq.db")
            # Not SQLite at all.
            h.write_file(db, b"this is my thesis, not a database\n" * 500)
            self.refused(c, r"(?i)not a|sqlite|database|refus", "a text file")
            os.unlink(db)
            # Another program's SQLite database.
            con = sqlite3.connect(db)
            con.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
            con.execute("INSERT INTO users (name) VALUES ('alice')")
            con.commit()
            con.close()
            self.refused(c, r"(?i)another program|not a dagq|refus", "another program's database")
            os.unlink(db)
            # A SQLite file with a meta table of another app.
            con = sqlite3.connect(db)
            con.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
            con.execute("INSERT INTO meta VALUES ('app', 'something-else'), ('format_version', '1')")
            con.commit()
            con.close()
            self.refused(c, r"(?i)another program|not a dagq|app|refus", "meta of another app")
            os.unlink(db)
            # Random bytes with a SQLite header.
            h.write_file(db, b"SQLite format 3\x00" + os.urandom(40000))
            self.refused(c, r"(?i)corrupt|malformed|not a database|refus", "garbage with a SQLite header")

    def test_version_and_corruption_refused(self):
        with h.Cluster(name="corrupt") as c:
            ids = c.client().submit([{"type": "nobody", "payload": os.urandom(2000)}
                                     for _ in range(300)])["ids"]
            self.assertEqual(c.kill_broker(signal.SIGTERM), 0, c.broker.tail())
            db = os.path.join(c.data_dir, "dagq.db")
            pristine = c.path("pristine.db")
            shutil.copy(db, pristine)
            # An unknown (newer) format version.
            con = sqlite3.connect(db)
            con.execute("UPDATE meta SET value = '999' WHERE key = 'format_version'")
            con.commit()
            con.execute("PRAGMA journal_mode = DELETE")
            con.close()
            for extra in ("-wal", "-shm"):
                if os.path.exists(db + extra):
                    os.unlink(db + extra)
            self.refused(c, r"(?i)version", "format version 999")
            # Corrupt pages: every page after the first overwritten.
            shutil.copy(pristine, db)
            with open(db, "r+b") as f:
                data = bytearray(f.read())
                page = int.from_bytes(data[16:18], "big") or 65536
                for off in range(page, len(data), page):
                    data[off:off + page] = os.urandom(min(page, len(data) - off))
                f.seek(0)
                f.write(data)
            self.refused(c, r"(?i)corrupt|malformed", "corrupt pages")
            # The pristine copy still opens, with every job.
            shutil.copy(pristine, db)
            c.restart_broker()
            infos = c.client().status_many(ids)
            self.assertEqual(len(infos), len(ids))

    def test_locked_data_dir(self):
        with h.Cluster(name="lock") as c:
            jid = c.client().submit([{"type": "nobody", "payload": b"x"}])["ids"][0]
            other = h.Cluster(name="lock2", data_dir=c.data_dir, start=False)
            try:
                other.ports = h.free_ports(3)
                p = other.start_broker(wait=False)
                rc = p.wait(60)
                self.assertEqual(rc, EXIT_STORE, "second broker on a locked dir:\n" + p.tail())
                self.assertRegex(p.stderr_text(), r"(?i)lock|in use|another broker|pid", p.tail())
                self.assertIn(str(c.broker.pid), p.stderr_text(), "the holder's pid is not named")
                other.brokers.remove(p)
            finally:
                other.close()
            self.assertTrue(c.broker.alive())
            self.assertEqual(h.state_name(c.client().status([jid])[0]["state"]), "queued")


if __name__ == "__main__":
    h.run_tests()

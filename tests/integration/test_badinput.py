#!/usr/bin/python3
"""Bad input on both broker ports (issue 2, "Bad input"; DESIGN promise 5).

Garbage from raw ZeroMQ peers (wrong frame counts, signatures, commands,
malformed msgpack, wrong field types, huge declared lengths, deep nesting,
oversize messages), raw TCP junk, a seeded fuzzer, and a misbehaving fake
worker. After each barrage the broker must still serve: a real worker stays
registered and normal jobs succeed; replies that do come must be well-formed
ERROR messages, carrying the request id when the broker could read one.
"""

import os
import random
import socket
import struct
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dq_harness as h  # noqa: E402

import msgpack  # noqa: E402
import zmq  # noqa: E402

SEED = int(os.environ.get("DAGQ_FUZZ_SEED") or random.randrange(1 << 30))


def pack(obj):
    return msgpack.packb(obj, use_bin_type=True)


class Peer:
    """A raw DEALER that collects whatever the broker sends back."""

    def __init__(self, endpoint, identity=None):
        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if identity:
            self.sock.setsockopt(zmq.ROUTING_ID, identity)
        self.sock.connect(endpoint)
        self.received = []

    def send(self, frames):
        self.sock.send_multipart([f if isinstance(f, bytes) else f.encode() for f in frames])

    def drain(self, timeout=0.0):
        end = time.monotonic() + timeout
        while True:
            left = max(0.0, end - time.monotonic())
            if not self.sock.poll(int(left * 1000)):
                return self.received
            self.received.append(self.sock.recv_multipart())

    def wait_for(self, pred, timeout=30, what="a reply"):
        def check():
            self.drain(0.05)
            for m in self.received:
                if pred(m):
                    return m
            return None
        return h.wait_until(check, timeout, what=what)

    def close(self):
        self.sock.close(0)


def parsed(frames, strict_utf8=True):
    """(cmd, body) of a reply, asserting it is a well-formed dagq message.
    strict_utf8=False tolerates non-UTF-8 bytes (decoded with replacement)
    in text fields; test_text_fields_are_utf8 checks that on its own."""
    assert len(frames) == 3, "reply with %d frames: %r" % (len(frames), frames)
    assert frames[0] == h.SIGNATURE, "reply with bad signature %r" % frames[0]
    raw = msgpack.unpackb(frames[2], raw=True, strict_map_key=False)
    assert isinstance(raw, dict), "reply body not a map: %r" % (raw,)
    try:
        body = msgpack.unpackb(frames[2], raw=False, strict_map_key=False)
    except UnicodeDecodeError:
        if not strict_utf8:
            body = msgpack.unpackb(frames[2], raw=False, strict_map_key=False,
                                   unicode_errors="replace")
            return frames[1].decode(), body
        raise AssertionError("reply %s has a text field that is not UTF-8 (protocol: text "
                             "is UTF-8): %r" % (frames[1], raw))
    return frames[1].decode(), body


def is_error_with_rid(rid, codes=(1, 9)):
    def pred(frames):
        try:
            cmd, body = parsed(frames)
        except Exception:
            return False
        return cmd == "ERROR" and body.get("rid") == rid and body.get("code") in codes
    return pred


class BadInputTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        h.log("fuzz seed %d (set DAGQ_FUZZ_SEED to repeat)" % SEED)

    def setUp(self):
        self.c = h.Cluster(broker_args=["--max-message", "1M", "--max-payload", "256K"],
                           name="badinput")
        self.addCleanup(self._close)
        self._failed = True

    def _close(self):
        self.c.close(failed=self._failed)
        if not self._failed and self.c.problems:
            raise AssertionError("unclean shutdown: " + "; ".join(self.c.problems))

    def finish(self):
        self._failed = False

    def still_serving(self, n=20):
        """Broker alive, real worker registered, n echo jobs succeed with their output."""
        c = self.c
        self.assertTrue(c.broker.alive(), "broker died:\n" + c.broker.tail())
        c.wait_workers(names=["real"])
        payloads = [("after-garbage-%d-%d" % (i, random.randrange(1 << 30))).encode()
                    for i in range(n)]
        ids = c.client().submit([{"type": "echo", "payload": p} for p in payloads])["ids"]
        infos = c.wait_terminal(ids)
        for info in infos:
            self.assertEqual(h.state_name(info["state"]), "succeeded", info)
        res = c.client().results_many(ids)
        for jid, p in zip(ids, payloads):
            self.assertEqual(res[jid]["output"], p)

    def check_replies_wellformed(self, peer, wait=0.0):
        for frames in peer.drain(wait):
            cmd, body = parsed(frames, strict_utf8=False)
            self.assertIn(cmd, ("ERROR", "REREGISTER", "WELCOME", "HEARTBEAT", "SUBMITTED",
                                "JOBS", "OUTPUT", "CANCELLED", "STATS_REPLY", "DAG_INFO",
                                "JOB", "ACK", "ABANDON"),
                          "unexpected reply %s %r" % (cmd, body))
            if cmd == "ERROR":
                self.assertIn("code", body)
                self.assertTrue(body.get("message"), "ERROR without a message: %r" % body)

    # ------------------------------------------------------------------
    def garbage_messages(self, port_kind):
        """Deterministic garbage: list of (label, frames)."""
        sig = h.SIGNATURE
        good_cmd = b"STATUS" if port_kind == "frontend" else b"HEARTBEAT"
        huge_str = b"\x81\xa3rid\x01" + b"\x81\xdb\xff\xff\xff\xfe" + b"abc"
        out = [
            ("one empty frame", [b""]),
            ("one random frame", [os.urandom(40)]),
            ("two frames", [sig, good_cmd]),
            ("four frames", [sig, good_cmd, pack({"rid": 1}), b"extra"]),
            ("ten frames", [sig] * 10),
            ("wrong signature", [b"XX\x01", good_cmd, pack({"rid": 2})]),
            ("wrong version", [b"DQ\x02", good_cmd, pack({"rid": 3})]),
            ("long signature", [b"DQ\x01\x00", good_cmd, pack({"rid": 4})]),
            ("empty signature", [b"", good_cmd, pack({"rid": 5})]),
            ("empty command", [sig, b"", pack({"rid": 6})]),
            ("lowercase command", [sig, good_cmd.lower(), pack({"rid": 7})]),
            ("binary command", [sig, b"\x00\xff\x80SUBMIT", pack({"rid": 8})]),
            ("huge command", [sig, b"A" * 100000, pack({"rid": 9})]),
            ("empty body", [sig, good_cmd, b""]),
            ("body not msgpack", [sig, good_cmd, b"\xc1\xc1\xc1"]),
            ("body an array", [sig, good_cmd, pack([1, 2, 3])]),
            ("body an int", [sig, good_cmd, pack(42)]),
            ("body truncated map", [sig, good_cmd, pack({"rid": 10, "ids": ["a", "b"]})[:-3]]),
            ("body trailing bytes", [sig, good_cmd, pack({"rid": 11}) + b"\x00\x01"]),
            ("map32 declaring 4G entries", [sig, good_cmd, b"\xdf\xff\xff\xff\xff\xa3rid\x01"]),
            ("array32 declaring 2G ids", [sig, good_cmd,
                                          b"\x82\xa3rid\x0c\xa3ids\xdd\x7f\xff\xff\xff\xa1a"]),
            ("str32 declaring 4G bytes", [sig, good_cmd, huge_str]),
            ("bin32 declaring 4G bytes", [sig, good_cmd, b"\x82\xa3rid\x0d\xa2id\xc6\xff\xff\xff\xff"]),
            ("ext type", [sig, good_cmd, b"\x82\xa3rid\x0e\xa2id\xd4\x01\x02"]),
            ("deep nesting 100k", [sig, good_cmd, b"\x81\xa3ids" + b"\x91" * 100000 + b"\x01"]),
            ("deep map nesting", [sig, good_cmd, b"\x81\xa1x" * 50000 + b"\xc0"]),
            ("non-string keys", [sig, good_cmd, pack({1: 2, b"rid": 3})]),
            ("nil rid", [sig, good_cmd, pack({"rid": None})]),
            ("negative rid", [sig, good_cmd, pack({"rid": -5})]),
            ("float rid", [sig, good_cmd, pack({"rid": 1.5})]),
            ("NUL in string", [sig, good_cmd, pack({"rid": 15, "ids": ["a\x00b"]})]),
            ("invalid utf-8", [sig, good_cmd, b"\x82\xa3rid\x10\xa3ids\x91\xa2\xff\xfe"]),
            ("invalid utf-8 command", [sig, b"\xff\xfeX", pack({"rid": 17})]),
        ]
        return out

    def test_garbage_on_both_ports(self):
        c = self.c
        c.start_worker(name="real", concurrency=2)
        c.wait_workers(names=["real"])
        before = c.client().stats().get("jobs_total", 0)
        peers = []
        for port_kind, endpoint in (("frontend", c.frontend), ("backend", c.backend)):
            for label, frames in self.garbage_messages(port_kind):
                p = Peer(endpoint)
                peers.append((label, port_kind, p))
                p.send(frames)
            # Same garbage again on one shared connection, back to back.
            shared = Peer(endpoint)
            for label, frames in self.garbage_messages(port_kind):
                shared.send(frames)
            peers.append(("shared", port_kind, shared))
        self.assertTrue(c.broker.alive(), c.broker.tail())
        # Let the broker answer what it answers, then check the answers.
        self.still_serving()
        for label, port_kind, p in peers:
            try:
                self.check_replies_wellformed(p)
            except AssertionError as e:
                raise AssertionError("%s on %s: %s" % (label, port_kind, e))
            p.close()
        self.assertEqual(c.client().stats().get("jobs_total", 0), before + 20,
                         "garbage created or removed jobs")
        self.finish()

    def test_errors_carry_readable_rid(self):
        """Well-framed requests the broker can read a rid from get ERROR with that rid."""
        c = self.c
        p = Peer(c.frontend)
        sig = h.SIGNATURE
        cases = [
            ("unknown command", [sig, b"FROBNICATE", pack({"rid": 101})], (9,)),
            ("worker command on frontend", [sig, b"READY", pack({"rid": 102, "capacity": 1})], (9,)),
            ("reply command on frontend", [sig, b"SUBMITTED", pack({"rid": 103})], (9,)),
            ("jobs not an array", [sig, b"SUBMIT", pack({"rid": 104, "jobs": "x"})], (1, 9)),
            ("no jobs", [sig, b"SUBMIT", pack({"rid": 105})], (1,)),
            ("empty jobs", [sig, b"SUBMIT", pack({"rid": 106, "jobs": []})], (1,)),
            ("job without type", [sig, b"SUBMIT", pack({"rid": 107, "jobs": [{"payload": b"x"}]})], (1,)),
            ("bad type chars", [sig, b"SUBMIT", pack({"rid": 108, "jobs": [{"type": "a b/c"}]})], (1,)),
            ("type too long", [sig, b"SUBMIT", pack({"rid": 109, "jobs": [{"type": "t" * 129}]})], (1, 5)),
            ("priority a string", [sig, b"SUBMIT", pack({"rid": 110, "jobs": [{"type": "echo", "priority": "hi"}]})], (1,)),
            ("priority over 32 bits", [sig, b"SUBMIT", pack({"rid": 111, "jobs": [{"type": "echo", "priority": 1 << 40}]})], (1,)),
            ("dep idx out of range", [sig, b"SUBMIT", pack({"rid": 112, "dag_name": "", "jobs": [{"type": "echo", "deps": [{"idx": 5}]}]})], (1,)),
            ("self dependency", [sig, b"SUBMIT", pack({"rid": 113, "dag_name": "", "jobs": [{"type": "echo", "deps": [{"idx": 0}]}]})], (1, 4)),
            ("ids not an array", [sig, b"STATUS", pack({"rid": 114, "ids": 7})], (1,)),
            ("id too long", [sig, b"RESULT", pack({"rid": 115, "id": "x" * 5000})], (1, 5)),
            ("cancel without id", [sig, b"CANCEL", pack({"rid": 116})], (1,)),
            ("string too long", [sig, b"SUBMIT", pack({"rid": 117, "key": "k" * 5000, "jobs": [{"type": "echo"}]})], (1, 5)),
        ]
        before = c.client().stats().get("jobs_total", 0)
        for label, frames, codes in cases:
            p.send(frames)
        failures = []
        # Every request gets exactly one reply: wait for all of them.
        h.wait_until(lambda: len(p.drain(0.05)) >= len(cases), 30,
                     what="%d ERROR replies" % len(cases))
        got = [parsed(f)[1] for f in p.received]
        for label, frames, codes in cases:
            rid = msgpack.unpackb(frames[2], raw=False)["rid"]
            m = [g for g in got if g.get("rid") == rid]
            if not m:
                failures.append("%s (rid %d): the ERROR came without the rid" % (label, rid))
            elif m[0].get("code") not in codes:
                failures.append("%s: code %s (%s), expected one of %s: %s" % (
                    label, m[0].get("code"), h.ERR_NAMES.get(m[0].get("code")), codes,
                    m[0].get("message")))
        if failures:
            failures.append("all replies (rid, code, message): %s"
                            % [(g.get("rid"), g.get("code"), g.get("message")) for g in got])
        self.assertEqual(c.client().stats().get("jobs_total", 0), before, "bad requests created jobs")
        p.close()
        self.assertFalse(failures, "\n".join(failures))
        self.finish()

    def test_text_fields_are_utf8(self):
        """Text in replies is UTF-8 even when the request carried invalid UTF-8
        (the broker must reject such text as invalid, or not echo it raw)."""
        c = self.c
        p = Peer(c.frontend)
        sig = h.SIGNATURE
        bad_str = b"\xa4\xff\xfe\x80a"          # str of 4 bytes, not UTF-8
        p.send([sig, b"STATUS", b"\x82\xa3rid\x01\xa3ids\x91" + bad_str])
        p.send([sig, b"RESULT", b"\x82\xa3rid\x02\xa2id" + bad_str])
        p.send([sig, b"CANCEL", b"\x82\xa3rid\x03\xa2id" + bad_str])
        p.send([sig, b"\xff\xfeCMD", pack({"rid": 4})])
        p.send([sig, b"SUBMIT", b"\x82\xa3rid\x05\xa4jobs\x91\x82\xa4type\xa4echo\xa4name"
                + bad_str])
        h.wait_until(lambda: len(p.drain(0.05)) >= 5, 30, what="5 replies")
        problems = []
        for frames in p.received:
            try:
                parsed(frames)
            except AssertionError as e:
                problems.append(str(e))
        p.close()
        self.assertFalse(problems, "\n".join(problems))
        # The job whose name is not UTF-8 is refused, naming the field.
        replies = [parsed(f) for f in p.received]
        refused = [b for cmd, b in replies if b.get("rid") == 5]
        self.assertEqual(len(refused), 1, replies)
        self.assertEqual(refused[0].get("code"), h.ERR["invalid"], refused)
        self.assertIn("jobs[0]: name is not valid UTF-8", refused[0]["message"])
        # A worker's name and host are shown in STATS: cleaned to UTF-8.
        w = Peer(c.backend, identity=b"utf8-worker")
        w.send([sig, b"READY", b"\x86\xa3rid\x01\xa4name" + bad_str + b"\xa4host" + bad_str
                + b"\xa3pid\x07\xa8capacity\x01\xa5types\x91\xa5utf.t"])
        w.wait_for(lambda f: parsed(f)[0] == "WELCOME", timeout=30, what="WELCOME")
        workers = c.client().stats()["workers"]
        mine = [x for x in workers if x.get("pid") == 7]
        self.assertEqual(len(mine), 1, workers)
        self.assertEqual((mine[0]["name"], mine[0]["host"]), ("???a", "???a"), mine)
        w.close()
        self.finish()

    def test_unknown_worker_gets_reregister(self):
        """DONE/HEARTBEAT from a peer the broker does not know: REREGISTER, not silence."""
        c = self.c
        for cmd, body in (("HEARTBEAT", {}), ("DONE", {"rid": 1, "id": "nosuch-1", "attempt": 1, "ok": True})):
            p = Peer(c.backend)
            p.send([h.SIGNATURE, cmd, pack(body)])
            p.wait_for(lambda f: parsed(f)[0] == "REREGISTER", timeout=10,
                       what="REREGISTER after %s from an unknown worker" % cmd)
            p.close()
        self.finish()

    def test_misbehaving_worker(self):
        """A fake worker sends bad DONEs and vanishes; its job still succeeds once elsewhere."""
        c = self.c
        fake = Peer(c.backend, identity=b"fake-worker-1")
        fake.send([h.SIGNATURE, "READY", pack({"rid": 1, "name": "fake", "host": "test", "pid": 1,
                                               "capacity": 1, "types": ["fake.t"]})])
        fake.wait_for(lambda f: parsed(f)[0] == "WELCOME", timeout=30, what="WELCOME")
        jid = c.client().submit([{"type": "fake.t", "payload": b"p1", "attempts": 3}])["ids"][0]
        job = fake.wait_for(lambda f: parsed(f)[0] == "JOB", timeout=30, what="JOB for the fake worker")
        _, jbody = parsed(job)
        self.assertEqual(jbody["id"], jid)
        self.assertEqual(jbody["payload"], b"p1")
        attempt = jbody["attempt"]
        # Bad results: wrong types, wrong ids, an oversize output, unknown attempt.
        bad = [
            {"rid": 2, "id": jid, "attempt": attempt, "ok": "yes"},
            {"rid": 3, "id": 12345, "attempt": attempt, "ok": True},
            {"rid": 4, "id": "nosuch-77", "attempt": 1, "ok": True, "output": b"x"},
            {"rid": 5, "id": jid + "0", "attempt": attempt, "ok": True},
            {"rid": 6, "id": jid, "attempt": attempt, "ok": True, "output": b"o" * (300 * 1024)},
        ]
        for b in bad:
            fake.send([h.SIGNATURE, "DONE", pack(b)])
        fake.send([h.SIGNATURE, "DONE", b"\xc1"])
        self.assertTrue(c.broker.alive(), c.broker.tail())
        # The fake worker now goes silent: the broker drops it and requeues.
        fake.close()
        c.start_worker(name="real", concurrency=1, handlers={"fake.t": "cat; printf %s -real"},
                       builtins=True)
        info = c.wait_terminal([jid], timeout=120)[0]
        if h.state_name(info["state"]) == "succeeded":
            out = c.client().result(jid)["output"]
            # Either the oversize DONE was refused (and the real worker ran it)
            # or ... nothing else is acceptable: every other DONE was invalid.
            self.assertEqual(out, b"p1-real", "recorded output %r" % out[:64])
            self.assertGreaterEqual(info.get("attempts", 0), 2)
        else:
            self.fail("job ended %s: %r" % (h.state_name(info["state"]), info))
        self.still_serving()
        self.finish()

    def test_oversize_message_disconnects_only_that_peer(self):
        c = self.c
        c.start_worker(name="real", concurrency=2)
        big = Peer(c.frontend)
        big.send([h.SIGNATURE, "SUBMIT", pack({"rid": 1, "jobs": [{"type": "echo", "payload": b"x" * (2 << 20)}]})])
        big2 = Peer(c.backend)
        big2.send([h.SIGNATURE, "READY", b"\x81\xa4name\xc6" + struct.pack(">I", 3 << 20) + b"n" * (3 << 20)])
        # A payload over --max-payload but under --max-message: refused with too_big.
        p = Peer(c.frontend)
        p.send([h.SIGNATURE, "SUBMIT", pack({"rid": 9, "jobs": [{"type": "echo", "payload": b"y" * (300 * 1024)}]})])
        p.wait_for(is_error_with_rid(9, (5,)), timeout=30, what="too_big for a 300 KiB payload")
        # A STATUS of more ids than one request may ask for: too_big, and
        # the largest allowed one is answered in full.
        p.send([h.SIGNATURE, "STATUS", pack({"rid": 10, "ids": ["x-1"] * 10001})])
        p.wait_for(is_error_with_rid(10, (5,)), timeout=30, what="too_big for 10,001 ids")
        p.send([h.SIGNATURE, "SUBMIT", pack({"rid": 11, "jobs": [{"type": "echo"}]})])
        got = p.wait_for(lambda f: parsed(f)[0] == "SUBMITTED" and parsed(f)[1].get("rid") == 11,
                         timeout=30, what="SUBMITTED")
        jid = parsed(got)[1]["ids"][0]
        p.send([h.SIGNATURE, "STATUS", pack({"rid": 12, "ids": [jid] * 10000})])
        p.wait_for(lambda f: parsed(f)[0] == "JOBS" and parsed(f)[1].get("rid") == 12
                   and len(parsed(f)[1].get("infos", [])) == 10000,
                   timeout=30, what="JOBS for 10,000 ids")
        self.still_serving()
        big.drain(0.1)
        for f in big.received:
            self.assertNotEqual(parsed(f)[0], "SUBMITTED", "oversize message was accepted")
        for q in (big, big2, p):
            q.close()
        self.finish()

    def test_raw_tcp_junk(self):
        c = self.c
        c.start_worker(name="real", concurrency=2)
        c.wait_workers(names=["real"])
        rng = random.Random(SEED)
        zmtp_greeting = (b"\xff" + b"\x00" * 8 + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\x00")
                         + b"\x00" + b"\x00" * 31)
        junk = [
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"\x00" * 64,
            b"\xff" * 64,
            zmtp_greeting[:11],
            zmtp_greeting + b"\x04\x19\x05READY\x0bSocket-Type\x00\x00\x00\x06DEALER",
            # a valid greeting, a READY, then a frame declaring 2^63 bytes
            zmtp_greeting + b"\x04\x19\x05READY\x0bSocket-Type\x00\x00\x00\x06DEALER"
            + b"\x02\x7f\xff\xff\xff\xff\xff\xff\xff" + b"abc",
            # greeting with a bogus mechanism
            b"\xff" + b"\x00" * 8 + b"\x7f\x03\x00" + b"EVIL".ljust(20, b"\x00") + b"\x00" * 32,
            # ZMTP 2 style
            b"\xff\x00\x00\x00\x00\x00\x00\x00\x01\x7f\x01\x05",
        ]
        for _ in range(30):
            junk.append(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 600))))
        port_fe, port_be = c.ports[0], c.ports[1]
        for port in (port_fe, port_be):
            for data in junk:
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                try:
                    s.sendall(data)
                except OSError:
                    pass
                s.close()
            # Connections that connect and say nothing, closed at once.
            for _ in range(50):
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                s.close()
        # A few slow ones left open while we check service.
        idle = [socket.create_connection(("127.0.0.1", port_fe), timeout=5) for _ in range(5)]
        for s in idle:
            s.sendall(b"\xff\x00\x00")
        self.still_serving()
        for s in idle:
            s.close()
        self.finish()

    def test_fuzzed_messages(self):
        c = self.c
        c.start_worker(name="real", concurrency=2)
        c.wait_workers(names=["real"])
        rng = random.Random(SEED)
        templates_fe = [
            ("SUBMIT", {"rid": 1, "jobs": [{"type": "fuzz.none", "payload": b"abc", "priority": 3,
                                            "attempts": 2, "deps": []}]}),
            ("SUBMIT", {"rid": 1, "dag_name": "d", "jobs": [{"type": "fuzz.none", "name": "a"},
                                                           {"type": "fuzz.none", "name": "b",
                                                            "deps": [{"idx": 0, "run_on_failure": True}]}]}),
            ("STATUS", {"rid": 1, "ids": ["abc-1", "abc-2"]}),
            ("RESULT", {"rid": 1, "id": "abc-1"}),
            ("CANCEL", {"rid": 1, "id": "abc-d2"}),
            ("STATS", {"rid": 1}),
            ("DAG", {"rid": 1, "id": "abc-d1"}),
        ]
        templates_be = [
            ("READY", {"rid": 1, "name": "fz", "host": "h", "pid": 1, "capacity": 1, "types": ["fuzz.none"],
                       "running": ["abc-1"]}),
            ("DONE", {"rid": 1, "id": "abc-1", "attempt": 1, "ok": True, "output": b"o"}),
            ("HEARTBEAT", {}),
            ("BYE", {"rid": 1}),
        ]
        cmds = [b"SUBMIT", b"STATUS", b"RESULT", b"CANCEL", b"STATS", b"DAG", b"READY", b"DONE",
                b"HEARTBEAT", b"BYE", b"JOB", b"ACK", b"WELCOME", b"ERROR", b"XYZ"]

        def mutate(body):
            b = bytearray(body)
            for _ in range(rng.randrange(1, 6)):
                op = rng.randrange(5)
                if op == 0 and b:
                    b[rng.randrange(len(b))] = rng.randrange(256)
                elif op == 1 and b:
                    del b[rng.randrange(len(b)):]
                elif op == 2:
                    pos = rng.randrange(len(b) + 1)
                    b[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 12)))
                elif op == 3:
                    pos = rng.randrange(len(b) + 1)
                    b[pos:pos] = rng.choice([b"\xdd\xff\xff\xff\xff", b"\xdf\x7f\xff\xff\xff",
                                             b"\xc6\xff\xff\xff\xf0", b"\xdb\xff\xff\xff\xff",
                                             b"\x91" * 200, b"\xc1", b"\xd4\x00\x00"])
                elif op == 4 and len(b) > 2:
                    i, j = rng.randrange(len(b)), rng.randrange(len(b))
                    b[i], b[j] = b[j], b[i]
            return bytes(b)

        n = h.scaled(3000, 200)
        fe = [Peer(c.frontend) for _ in range(4)]
        be = [Peer(c.backend, identity=b"fuzz-%d" % i) for i in range(4)]
        for i in range(n):
            to_fe = rng.random() < 0.6
            cmd, body = rng.choice(templates_fe if to_fe else templates_be)
            frames = [h.SIGNATURE, cmd.encode(), mutate(pack(body))]
            r = rng.random()
            if r < 0.05:
                frames[1] = rng.choice(cmds)
            elif r < 0.08:
                frames[0] = mutate(frames[0])
            elif r < 0.10:
                frames = frames[:rng.randrange(1, 3)]
            elif r < 0.12:
                frames = frames + [b"x"] * rng.randrange(1, 4)
            (rng.choice(fe) if to_fe else rng.choice(be)).send(frames)
            if i % 500 == 0:
                self.assertTrue(c.broker.alive(), "broker died during fuzzing (seed %d):\n%s"
                                % (SEED, c.broker.tail()))
                for p in fe + be:
                    p.drain(0)
        self.assertTrue(c.broker.alive(), "broker died during fuzzing (seed %d):\n%s"
                        % (SEED, c.broker.tail()))
        self.still_serving()
        for p in fe + be:
            self.check_replies_wellformed(p)
            p.close()
        self.finish()


if __name__ == "__main__":
    h.run_tests()

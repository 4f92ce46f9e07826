#!/usr/bin/python3
"""dagq-gateway over real HTTP (issue 5, "Tests").

Real dagq-broker, dagq-worker (--builtins) and dagq-gateway processes on
free loopback ports (dq_harness.Cluster for the broker and workers), spoken
to with http.client and raw sockets: every route and every error status,
binary bodies byte for byte (a real PNG and random bytes), ?wait, bulk and
DAG submissions, auth on and off, --allow-types, 429 and 503 with
Retry-After and recovery after, slow clients and oversize bodies, /metrics
parsed line by line as Prometheus text with counters moving, TLS, and two
gateways in front of one broker while a worker is killed.

Nothing waits with a fixed sleep: conditions are polled with generous
deadlines (dq_harness.wait_until, scaled by DAGQ_TEST_TIMEOUT_FACTOR).
"""

import base64
import contextlib
import http.client
import json
import math
import os
import random
import re
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import unittest
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dq_harness as h  # noqa: E402

GATEWAY_BIN = os.path.join(h.BUILD_DIR, "gateway", "dagq-gateway")
JOB_ID = re.compile(r"^[A-Za-z0-9_.:-]+-[0-9]+$")
DAG_ID = re.compile(r"^[A-Za-z0-9_.:-]+-d[0-9]+$")


# ---------------------------------------------------------------------------
# Test data

def make_png(width=96, height=64):
    """A real PNG image (RGB gradient), built with zlib."""
    def chunk(kind, data):
        c = struct.pack(">I", len(data)) + kind + data
        return c + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    rows = b"".join(b"\x00" + b"".join(bytes((x * 255 // width, y * 255 // height,
                                              (x ^ y) & 0xFF)) for x in range(width))
                    for y in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b""))


# ---------------------------------------------------------------------------
# HTTP

class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = {k.lower(): v for k, v in headers}
        self.body = body

    def json(self):
        try:
            return json.loads(self.body.decode("utf-8"))
        except ValueError as e:
            raise AssertionError("not JSON (%s): %r" % (e, self.body[:300]))

    def error_code(self):
        return self.json()["error"]["code"]

    def __repr__(self):
        return "<HTTP %d %s %r>" % (self.status, self.headers.get("content-type"),
                                    self.body[:300])


class Gateway:
    """A dagq-gateway process on a free port, in front of `broker`."""

    def __init__(self, logdir, broker, args=(), env=None, tls=False):
        h.require(GATEWAY_BIN)
        self.tls = tls
        self.token = None
        for attempt in range(8):
            self.port = h.free_port()
            argv = [GATEWAY_BIN, "--listen", "127.0.0.1:%d" % self.port, "--broker", broker]
            self.proc = h.Proc("gateway", argv + list(args), logdir, env=env)
            try:
                h.wait_until(self._up, timeout=30, what="gateway answering /healthz")
                return
            except h.WaitTimeout:
                if self.proc.returncode == 4:
                    continue     # port taken between probe and bind
                raise AssertionError("gateway did not start:\n" + self.proc.tail())
        raise AssertionError("gateway could not bind:\n" + self.proc.tail())

    def _up(self):
        if not self.proc.alive():
            if self.proc.returncode == 4:
                raise h.WaitTimeout("bind failed")
            raise AssertionError("gateway exited rc %s:\n%s" % (self.proc.returncode,
                                                                self.proc.tail()))
        try:
            return self.request("GET", "/healthz", timeout=2).status == 200
        except OSError:
            return False

    def connection(self, timeout=30):
        t = h.deadline(timeout)
        if self.tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=t, context=ctx)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=t)

    def request(self, method, path, body=None, headers=None, timeout=30, conn=None):
        """One request (on conn if given, else a new connection)."""
        hdrs = dict(headers or {})
        if self.token and "Authorization" not in hdrs:
            hdrs["Authorization"] = "Bearer " + self.token
        own = conn is None
        c = conn or self.connection(timeout)
        try:
            c.request(method, path, body=body, headers=hdrs)
            r = c.getresponse()
            return Response(r.status, r.getheaders(), r.read())
        finally:
            if own:
                c.close()

    def post(self, path, body=b"", headers=None, **kw):
        return self.request("POST", path, body, headers, **kw)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def submit(self, type_, payload=b"", query="", headers=None, **kw):
        """POST /v1/jobs/TYPE; asserts 202 and returns the id."""
        r = self.post("/v1/jobs/%s%s" % (type_, query), payload, headers, **kw)
        if r.status != 202:
            raise AssertionError("expected 202: %r" % r)
        return r.json()["id"]

    def job(self, jid):
        r = self.get("/v1/jobs/" + jid)
        if r.status != 200:
            raise AssertionError("GET job %s: %r" % (jid, r))
        return r.json()

    def wait_job(self, jid, states=h.TERMINAL, timeout=90):
        states = {states} if isinstance(states, str) else set(states)

        def check():
            j = self.job(jid)
            return j if j["state"] in states else None
        return h.wait_until(check, timeout, what="job %s in %s" % (jid, sorted(states)))

    def metrics(self):
        r = self.get("/metrics")
        if r.status != 200:
            raise AssertionError("GET /metrics: %r" % r)
        return r

    def stop(self, testcase):
        """SIGTERM; the gateway must exit 0 and its log be free of sanitizer reports."""
        rc, clean = self.proc.terminate(timeout=30)
        self.proc.reap()
        text = self.proc.stderr_text()
        for marker in h.SANITIZER_MARKERS:
            testcase.assertNotIn(marker, text, "sanitizer report in %s" % self.proc.err_path)
        testcase.assertTrue(clean, "gateway had to be SIGKILLed:\n" + self.proc.tail())
        testcase.assertEqual(rc, 0, "gateway exit code at SIGTERM:\n" + self.proc.tail())


def raw_post(port, path, body, timeout=30):
    """POST over a plain socket that keeps reading when the server answers
    before taking the whole body (http.client stops at the broken pipe).
    Returns (status, body bytes)."""
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(h.deadline(timeout))
    head = ("POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
            % (path, len(body))).encode()
    try:
        s.sendall(head + body)
    except OSError:
        pass                    # answered early and closed: read what came
    data = b""
    try:
        while True:
            part = s.recv(65536)
            if not part:
                break
            data += part
    except OSError:
        pass
    s.close()
    m = re.match(rb"HTTP/1\.1 (\d+)", data)
    if not m:
        raise AssertionError("no HTTP answer: %r" % data[:200])
    return int(m.group(1)), data.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in data else b""


# ---------------------------------------------------------------------------
# Prometheus text format 0.0.4, checked line by line

METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}


def _parse_labels(text, lineno):
    """'a="x",b="y\\"z"' -> dict; raises AssertionError on bad syntax."""
    labels = {}
    i = 0
    n = len(text)
    while i < n:
        m = re.match(r"\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*\"", text[i:])
        if not m:
            raise AssertionError("line %d: bad label syntax at %r" % (lineno, text[i:]))
        name = m.group(1)
        i += m.end()
        value = []
        while True:
            if i >= n:
                raise AssertionError("line %d: unterminated label value" % lineno)
            ch = text[i]
            if ch == "\\":
                if i + 1 >= n or text[i + 1] not in "\\\"n":
                    raise AssertionError("line %d: bad escape in label value" % lineno)
                value.append({"\\": "\\", "\"": "\"", "n": "\n"}[text[i + 1]])
                i += 2
            elif ch == "\"":
                i += 1
                break
            elif ch == "\n":
                raise AssertionError("line %d: newline in label value" % lineno)
            else:
                value.append(ch)
                i += 1
        if name in labels:
            raise AssertionError("line %d: label %s twice" % (lineno, name))
        labels[name] = "".join(value)
        rest = text[i:].lstrip()
        if rest.startswith(","):
            i = n - len(rest) + 1
        elif rest == "":
            break
        else:
            raise AssertionError("line %d: expected , between labels at %r" % (lineno, rest))
    return labels


def _parse_value(s, lineno):
    if s in ("+Inf", "Inf"):
        return math.inf
    if s == "-Inf":
        return -math.inf
    if s == "NaN":
        return math.nan
    try:
        return float(s)
    except ValueError:
        raise AssertionError("line %d: bad sample value %r" % (lineno, s))


def parse_prometheus(text):
    """Validate exposition text; returns {family: {"type", "help", "samples":
    [(name, labels, value)]}}. Raises AssertionError on any violation."""
    if not text.endswith("\n"):
        raise AssertionError("exposition does not end with a newline")
    families = {}
    order = []
    current = None

    def family_of(name):
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and name[:-len(suffix)] in families \
               and families[name[:-len(suffix)]]["type"] in ("histogram", "summary"):
                return name[:-len(suffix)]
        return name

    for lineno, line in enumerate(text.split("\n")[:-1], 1):
        if line == "":
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 2 and parts[1] in ("HELP", "TYPE"):
                if len(parts) < 3 or not METRIC_NAME.match(parts[2]):
                    raise AssertionError("line %d: bad %s line %r" % (lineno, parts[1], line))
                name = parts[2]
                fam = families.setdefault(name, {"type": None, "help": None, "samples": []})
                if name not in order:
                    order.append(name)
                if fam["samples"]:
                    raise AssertionError("line %d: %s after samples of %s" % (lineno, parts[1], name))
                if parts[1] == "TYPE":
                    if fam["type"] is not None:
                        raise AssertionError("line %d: second TYPE for %s" % (lineno, name))
                    if len(parts) != 4 or parts[3] not in TYPES:
                        raise AssertionError("line %d: bad TYPE %r" % (lineno, line))
                    fam["type"] = parts[3]
                else:
                    if fam["help"] is not None:
                        raise AssertionError("line %d: second HELP for %s" % (lineno, name))
                    fam["help"] = parts[3] if len(parts) > 3 else ""
                current = name
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+(-?\d+))?$", line)
        if not m:
            raise AssertionError("line %d: not a sample: %r" % (lineno, line))
        name = m.group(1)
        labels = _parse_labels(m.group(3), lineno) if m.group(2) else {}
        for k in labels:
            if not LABEL_NAME.match(k):
                raise AssertionError("line %d: bad label name %r" % (lineno, k))
        value = _parse_value(m.group(4), lineno)
        fname = family_of(name)
        fam = families.get(fname)
        if fam is None:
            fam = families.setdefault(fname, {"type": "untyped", "help": None, "samples": []})
            order.append(fname)
        if current != fname and fam["samples"]:
            raise AssertionError("line %d: samples of %s are not grouped together" % (lineno, fname))
        current = fname
        fam["samples"].append((name, labels, value))
    for fname, fam in families.items():
        t = fam["type"]
        for name, labels, value in fam["samples"]:
            if t == "counter" and not (value >= 0):
                raise AssertionError("counter %s%r is %r" % (name, labels, value))
            if t == "histogram" and name not in (fname + "_bucket", fname + "_sum", fname + "_count"):
                raise AssertionError("histogram %s has sample %s" % (fname, name))
            if t not in ("histogram", "summary") and name != fname:
                raise AssertionError("%s %s has sample %s" % (t, fname, name))
        if t == "histogram":
            _check_histogram(fname, fam["samples"])
    return families


def _check_histogram(fname, samples):
    series = {}
    for name, labels, value in samples:
        key = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
        s = series.setdefault(key, {"buckets": [], "count": None, "sum": None})
        if name.endswith("_bucket"):
            if "le" not in labels:
                raise AssertionError("%s bucket without le: %r" % (fname, labels))
            s["buckets"].append((_parse_value(labels["le"], 0), value))
        elif name.endswith("_count"):
            s["count"] = value
        else:
            s["sum"] = value
    for key, s in series.items():
        les = [le for le, _ in s["buckets"]]
        if not les or les[-1] != math.inf:
            raise AssertionError("%s%r: no le=\"+Inf\" bucket last" % (fname, key))
        if les != sorted(les) or len(set(les)) != len(les):
            raise AssertionError("%s%r: buckets not in increasing le order" % (fname, key))
        counts = [c for _, c in s["buckets"]]
        if any(b < a for a, b in zip(counts, counts[1:])):
            raise AssertionError("%s%r: buckets not cumulative: %r" % (fname, key, counts))
        if s["count"] is None or s["count"] != counts[-1]:
            raise AssertionError("%s%r: _count %r != +Inf bucket %r" % (fname, key, s["count"],
                                                                       counts[-1]))


def sample(families, family, name=None, **labels):
    """Value of one sample (0 if absent)."""
    fam = families.get(family)
    if not fam:
        return 0
    for n, l, v in fam["samples"]:
        if n == (name or family) and all(l.get(k) == v2 for k, v2 in labels.items()):
            return v
    return 0


# ---------------------------------------------------------------------------

class GatewayTestBase(unittest.TestCase):
    """Gateways started with self.start are stopped (SIGTERM, exit code 0
    and no sanitizer report required) before their cluster."""

    @classmethod
    def setUpClass(cls):
        if not os.access(GATEWAY_BIN, os.X_OK):
            raise unittest.SkipTest("%s is not built (DAGQ_BUILD_GATEWAY=OFF?)" % GATEWAY_BIN)

    def setUp(self):
        self._gateways = []

    def start(self, cluster, args=(), env=None, events=False, tls=False):
        extra = list(args)
        if events:
            extra += ["--events", cluster.events]
        g = Gateway(cluster.logdir, cluster.frontend, extra, env=env, tls=tls)
        self._gateways.append(g)
        return g

    @contextlib.contextmanager
    def cluster(self, **kw):
        with h.Cluster(**kw) as c:
            ok = False
            try:
                yield c
                ok = True
            finally:
                self._stop_gateways(check=ok)

    def _stop_gateways(self, check):
        gateways, self._gateways = self._gateways, []
        for g in gateways:
            if h.VERBOSE or not check:
                sys.stderr.write(g.proc.tail(60) + "\n")
            if check:
                g.stop(self)
            else:
                g.proc.terminate(timeout=10)
                g.proc.reap()

    def tearDown(self):
        self._stop_gateways(check=False)


class GatewayTest(GatewayTestBase):

    # ------------------------------------------------------------------
    def test_binary_bodies_round_trip(self):
        """A PNG and random bytes (every byte value) through an echo worker,
        byte for byte, with their content types; ?wait returns the output."""
        png = make_png()
        rnd = bytes(range(256)) + random.Random(5).randbytes(300000) + b"\x00"
        with self.cluster(name="gw-binary") as c:
            c.start_worker(concurrency=2)
            g = self.start(c)
            # This file runs once per event loop (tests/integration/CMakeLists.txt).
            loop = os.environ.get("DAGQ_EVENT_LOOP", "epoll")
            self.assertIn("event-loop=%s " % loop, g.proc.stderr_text())
            r = g.post("/v1/jobs/echo", png, {"Content-Type": "image/png"})
            self.assertEqual(r.status, 202, r)
            body = r.json()
            jid = body["id"]
            self.assertRegex(jid, JOB_ID)
            self.assertEqual(body["status_url"], "/v1/jobs/" + jid)
            self.assertEqual(r.headers["location"], "/v1/jobs/" + jid)
            self.assertEqual(r.headers["content-type"], "application/json")
            j = g.wait_job(jid)
            self.assertEqual(j["state"], "succeeded", j)
            self.assertEqual(j["output_size"], len(png))
            self.assertEqual(j["type"], "echo")
            self.assertTrue(j["created_at"].endswith("Z"), j)
            res = g.get("/v1/jobs/%s/result" % jid)
            self.assertEqual(res.status, 200)
            self.assertEqual(res.headers["content-type"], "image/png")
            self.assertEqual(res.body, png, "PNG changed on the way")
            # Random bytes without a content type: octet-stream.
            jid2 = g.submit("echo", rnd)
            g.wait_job(jid2, "succeeded")
            res = g.get("/v1/jobs/%s/result" % jid2)
            self.assertEqual(res.headers["content-type"], "application/octet-stream")
            self.assertEqual(res.body, rnd)
            # HEAD of the result: headers only.
            head = g.request("HEAD", "/v1/jobs/%s/result" % jid2)
            self.assertEqual(head.status, 200)
            self.assertEqual(head.body, b"")
            # ?wait: the output comes back as the body.
            r = g.post("/v1/jobs/echo?wait=60", png, {"Content-Type": "image/png"})
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.body, png)
            self.assertEqual(r.headers["content-type"], "image/png")
            self.assertRegex(r.headers["x-dagq-job-id"], JOB_ID)
            # An empty body is an empty payload.
            r = g.post("/v1/jobs/echo?wait=60", b"")
            self.assertEqual((r.status, r.body), (200, b""), r)
            # A chunked upload (no Content-Length) works too.
            conn = g.connection()
            conn.putrequest("POST", "/v1/jobs/echo?wait=60")
            conn.putheader("Transfer-Encoding", "chunked")
            conn.putheader("Content-Type", "application/x-test")
            conn.endheaders()
            for i in range(0, len(png), 1000):
                part = png[i:i + 1000]
                conn.send(b"%x\r\n%s\r\n" % (len(part), part))
            conn.send(b"0\r\n\r\n")
            resp = conn.getresponse()
            self.assertEqual(resp.status, 200)
            self.assertEqual(resp.read(), png)
            self.assertEqual(resp.getheader("Content-Type"), "application/x-test")
            conn.close()

    # ------------------------------------------------------------------
    def test_wait_outcomes(self):
        """?wait: output on success; the job's error when it fails; 202
        with the id when the wait ends first; with and without events."""
        with self.cluster(name="gw-wait") as c:
            c.start_worker(concurrency=4)
            for events in (False, True):
                g = self.start(c, events=events)
                r = g.post("/v1/jobs/echo?wait=60", b"ping %d" % events)
                self.assertEqual((r.status, r.body), (200, b"ping %d" % events), r)
                r = g.post("/v1/jobs/fail?wait=60&attempts=1", b"broken on purpose")
                self.assertEqual(r.status, 422, r)
                err = r.json()["error"]
                self.assertEqual(err["code"], "job_failed")
                self.assertIn("broken on purpose", err["message"])
                self.assertEqual(err["state"], "failed")
                # The wait ends before the job: 202 as without wait.
                t0 = time.monotonic()
                r = g.post("/v1/jobs/sleep?wait=0.3", b"3000")
                self.assertEqual(r.status, 202, r)
                self.assertLess(time.monotonic() - t0, h.deadline(20))
                jid = r.json()["id"]
                self.assertEqual(r.headers["location"], "/v1/jobs/" + jid)
                g.wait_job(jid, "succeeded")
                # Several waits on one job (same Idempotency-Key) all answer.
                out = []

                def waiter():
                    out.append(g.post("/v1/jobs/sleep?wait=60", b"300",
                                      {"Idempotency-Key": "same-wait-%d" % events}))
                ts = [threading.Thread(target=waiter) for _ in range(4)]
                for t in ts:
                    t.start()
                for t in ts:
                    t.join()
                self.assertEqual([r.status for r in out], [200] * 4, out)
                self.assertEqual(len({r.headers["x-dagq-job-id"] for r in out}), 1, out)
            # A bad wait value.
            r = g.post("/v1/jobs/echo?wait=-1", b"x")
            self.assertEqual(r.status, 400)
            self.assertIn("wait", r.json()["error"]["message"])

    # ------------------------------------------------------------------
    def test_bulk_submission(self):
        with self.cluster(name="gw-bulk") as c:
            c.start_worker(concurrency=2)
            g = self.start(c, ["--max-bulk", "50"])
            doc = {"jobs": [
                {"type": "echo", "payload": {"a": [1, 2, 3], "b": "x"}},
                {"type": "echo", "payload_text": "hello text", "priority": 5,
                 "content_type": "text/plain"},
                {"type": "echo", "payload_base64": base64.b64encode(b"\x00\x01\xfe\xff").decode()},
                {"type": "concat", "depends_on": [1, {"index": 2}]},
                {"type": "echo"},
            ]}
            r = g.post("/v1/jobs", json.dumps(doc).encode(), {"Content-Type": "application/json"})
            self.assertEqual(r.status, 202, r)
            body = r.json()
            ids = body["ids"]
            self.assertEqual(body["count"], 5)
            self.assertEqual(len(set(ids)), 5)
            for jid in ids:
                self.assertRegex(jid, JOB_ID)
            for jid in ids:
                g.wait_job(jid, "succeeded")
            outs = [g.get("/v1/jobs/%s/result" % jid) for jid in ids]
            self.assertEqual(json.loads(outs[0].body), {"a": [1, 2, 3], "b": "x"})
            self.assertEqual(outs[1].body, b"hello text")
            self.assertEqual(outs[1].headers["content-type"], "text/plain")
            self.assertEqual(outs[2].body, b"\x00\x01\xfe\xff")
            self.assertEqual(outs[3].body, b"hello text\x00\x01\xfe\xff")
            self.assertEqual(outs[4].body, b"")
            parents = [p["id"] for p in g.job(ids[3])["parents"]]
            self.assertEqual(parents, [ids[1], ids[2]])
            # Idempotency-Key on a bulk request: the same ids again.
            hdr = {"Idempotency-Key": "bulk-key-1"}
            a = g.post("/v1/jobs", json.dumps({"jobs": [{"type": "echo"}] * 3}).encode(), hdr)
            b = g.post("/v1/jobs", json.dumps({"jobs": [{"type": "echo"}] * 3}).encode(), hdr)
            self.assertEqual((a.status, b.status), (202, 202))
            self.assertEqual(a.json()["ids"], b.json()["ids"])
            # Errors: each a 400 that says what is wrong, or 413 over --max-bulk.
            cases = [
                (b'{"jobs": [{"type": "echo"}', 400, "malformed JSON"),
                (b"[1, 2]", 400, "must be a JSON object"),
                (b'{"jobs": []}', 400, "non-empty"),
                (b'{"jobs": [{"type": "echo"}], "extra": 1}', 400, "'extra'"),
                (b'{"jobs": [{"type": "echo", "colour": "red"}]}', 400, "'colour'"),
                (b'{"jobs": [{"payload": 1}]}', 400, "type is missing"),
                (b'{"jobs": [{"type": "bad type!"}]}', 400, "type"),
                (b'{"jobs": [{"type": "echo", "payload": 1, "payload_text": "x"}]}', 400, "only one"),
                (b'{"jobs": [{"type": "echo", "payload_base64": "@@@"}]}', 400, "base64"),
                (b'{"jobs": [{"type": "echo", "attempts": 0}]}', 400, "attempts"),
                (b'{"jobs": [{"type": "echo", "priority": 1e40}]}', 400, "priority"),
                (b'{"jobs": [{"type": "echo", "depends_on": [7]}]}', 400, "index 7"),
                (b'{"jobs": [{"type": "echo", "depends_on": ["nope"]}]}', 400, "not a job id"),
                (b'{"jobs": [{"type": "echo", "depends_on": ["zz9-424242"]}]}', 400, "zz9-424242"),
                (b'{"jobs": [{"type": "echo", "timeout": -1}]}', 400, "timeout"),
                (b'{"a": 1, "a": 2}', 400, "malformed JSON"),
                (json.dumps({"jobs": [{"type": "echo"}] * 51}).encode(), 413, "--max-bulk"),
            ]
            for doc, status, words in cases:
                r = g.post("/v1/jobs", doc)
                self.assertEqual(r.status, status, (doc[:80], r))
                self.assertIn(words, r.json()["error"]["message"], (doc[:80], r))

    # ------------------------------------------------------------------
    def test_dag_submission(self):
        with self.cluster(name="gw-dag") as c:
            c.start_worker(concurrency=3)
            g = self.start(c)
            doc = {"name": "diamond", "jobs": [
                {"id": "top", "type": "echo", "payload_text": "T"},
                {"id": "left", "type": "echo", "payload_text": "L", "depends_on": ["top"]},
                {"id": "right", "type": "echo", "payload_text": "R", "depends_on": ["top"]},
                {"id": "join", "type": "concat", "depends_on": ["left", "right"]},
            ]}
            r = g.post("/v1/dags", json.dumps(doc).encode(), {"Content-Type": "application/json"})
            self.assertEqual(r.status, 202, r)
            body = r.json()
            did = body["dag_id"]
            self.assertRegex(did, DAG_ID)
            self.assertEqual(r.headers["location"], "/v1/dags/" + did)
            self.assertEqual(set(body["jobs"]), {"top", "left", "right", "join"})

            def done():
                d = g.get("/v1/dags/" + did).json()
                return d if d["dag"]["terminal"] else None
            d = h.wait_until(done, what="DAG terminal")
            self.assertEqual(d["dag"]["state"], "succeeded", d)
            self.assertEqual(d["dag"]["total"], 4)
            self.assertEqual(d["dag"]["name"], "diamond")
            self.assertEqual(len(d["jobs"]), 4)
            # ?jobs=false: the same counts, no job list; a bad value is a 400.
            s = g.get("/v1/dags/" + did + "?jobs=false").json()
            self.assertNotIn("jobs", s)
            self.assertEqual(s["dag"], d["dag"])
            self.assertEqual(len(g.get("/v1/dags/" + did + "?jobs=true").json()["jobs"]), 4)
            r = g.get("/v1/dags/" + did + "?jobs=maybe")
            self.assertEqual(r.status, 400, r)
            self.assertIn("jobs", r.json()["error"]["message"])
            res = g.get("/v1/jobs/%s/result" % body["jobs"]["join"])
            self.assertEqual(res.body, b"LR")
            self.assertEqual(g.job(body["jobs"]["join"])["dag_id"], did)
            # A cycle: 400 naming the jobs on it, nothing queued.
            before = g.get("/v1/stats").json()["jobs_total"]
            cyc = {"jobs": [{"id": "a", "type": "echo", "depends_on": ["c"]},
                            {"id": "b", "type": "echo", "depends_on": ["a"]},
                            {"id": "c", "type": "echo", "depends_on": ["b"]}]}
            r = g.post("/v1/dags", json.dumps(cyc).encode())
            self.assertEqual(r.status, 400, r)
            self.assertEqual(r.error_code(), "cycle")
            for name in ("a", "b", "c"):
                self.assertIn(name, r.json()["error"]["message"])
            # A bad reference: 400 naming it.
            bad = {"jobs": [{"id": "upload", "type": "echo"},
                            {"id": "ocr", "type": "echo", "depends_on": ["uplod"]}]}
            r = g.post("/v1/dags", json.dumps(bad).encode())
            self.assertEqual(r.status, 400, r)
            self.assertIn("uplod", r.json()["error"]["message"])
            # A reference to a well-formed job id that does not exist.
            bad = {"jobs": [{"id": "x", "type": "echo", "depends_on": [did.replace("-d", "-") + "9"]}]}
            r = g.post("/v1/dags", json.dumps(bad).encode())
            self.assertEqual(r.status, 400, r)
            r = g.post("/v1/dags", b"not json")
            self.assertEqual(r.status, 400, r)
            self.assertEqual(g.get("/v1/stats").json()["jobs_total"], before)
            # Cancel a running DAG.
            slow = {"name": "slow", "jobs": [
                {"id": "s1", "type": "sleep", "payload_text": "20000"},
                {"id": "s2", "type": "sleep", "payload_text": "20000", "depends_on": ["s1"]}]}
            r = g.post("/v1/dags", json.dumps(slow).encode())
            self.assertEqual(r.status, 202, r)
            sdid = r.json()["dag_id"]
            r = g.request("DELETE", "/v1/dags/" + sdid)
            self.assertEqual(r.status, 200, r)
            self.assertGreaterEqual(r.json()["cancelled"], 1)
            d = h.wait_until(lambda: (lambda d: d if d["dag"]["terminal"] else None)(
                g.get("/v1/dags/" + sdid).json()), what="cancelled DAG terminal")
            self.assertEqual(d["dag"]["state"], "failed", d)
            self.assertEqual({j["state"] for j in d["jobs"]} - {"cancelled", "skipped"}, set(), d)
            self.assertEqual(g.get("/v1/dags/zz-d1").status, 404)
            self.assertEqual(g.get("/v1/dags/" + body["jobs"]["top"]).status, 404)
            # A DAG over one broker page (10,000 jobs): the whole list by
            # default, one page with offset and limit. Nobody runs its jobs.
            n = 25000
            big = {"name": "big", "jobs": [{"id": "b%d" % i, "type": "nobody.runs"}
                                           for i in range(n)]}
            r = g.post("/v1/dags", json.dumps(big).encode())
            self.assertEqual(r.status, 202, r)
            bdid, bids = r.json()["dag_id"], r.json()["jobs"]
            order = [bids["b%d" % i] for i in range(n)]
            d = g.get("/v1/dags/" + bdid).json()
            self.assertEqual([j["id"] for j in d["jobs"]], order)
            self.assertIsNone(d["next_offset"])
            d = g.get("/v1/dags/%s?offset=9995&limit=10" % bdid).json()
            self.assertEqual([j["id"] for j in d["jobs"]], order[9995:10005])
            self.assertEqual((d["next_offset"], d["dag"]["total"]), (10005, n))
            d = g.get("/v1/dags/%s?offset=20000" % bdid).json()
            self.assertEqual([j["id"] for j in d["jobs"]], order[20000:])
            self.assertIsNone(d["next_offset"])
            self.assertEqual(g.get("/v1/dags/%s?offset=%d" % (bdid, n)).json()["jobs"], [])
            for q, word in (("limit=0", "limit"), ("limit=10001", "limit"),
                            ("offset=-1", "offset"), ("offset=x", "offset"),
                            ("offset=1&offset=2", "more than once"), ("limit=", "value")):
                r = g.get("/v1/dags/%s?%s" % (bdid, q))
                self.assertEqual(r.status, 400, (q, r))
                self.assertIn(word, r.json()["error"]["message"], q)
            # A gateway that lists at most 20,000 jobs at once: the whole
            # list is a 413 that says how to page; pages and counts work.
            small = self.start(c, ["--max-dag-list", "20000"])
            r = small.get("/v1/dags/" + bdid)
            self.assertEqual((r.status, r.error_code()), (413, "too_big"), r)
            for word in ("25000 jobs", "--max-dag-list", "offset=0&limit=10000", "jobs=false"):
                self.assertIn(word, r.json()["error"]["message"])
            d = small.get("/v1/dags/%s?offset=20000" % bdid).json()
            self.assertEqual([j["id"] for j in d["jobs"]], order[20000:])
            self.assertEqual(small.get("/v1/dags/%s?jobs=false" % bdid).json()["dag"]["total"], n)
            r = g.request("DELETE", "/v1/dags/" + bdid)
            self.assertEqual((r.status, r.json()["cancelled"]), (200, n), r)

    # ------------------------------------------------------------------
    def test_routes_and_errors(self):
        with self.cluster(name="gw-routes") as c:
            c.start_worker(concurrency=2)
            g = self.start(c)
            self.assertEqual(g.get("/healthz").json(), {"status": "ok"})
            h.wait_until(lambda: g.get("/readyz").status == 200, timeout=30, what="readyz")
            # The worker's types are known once it has registered.
            c.wait_workers(count=1)
            st = g.get("/v1/stats")
            self.assertEqual(st.status, 200)
            self.assertIn("echo", {t["type"] for t in st.json()["types"]})
            self.assertGreaterEqual(st.json()["workers_total"], 1)
            # Unknown routes and methods.
            for path in ("/", "/v2/jobs", "/v1/jobs/a/b/c", "/v1/nothing", "/metricsx"):
                r = g.get(path)
                self.assertEqual(r.status, 404, (path, r))
                self.assertEqual(r.error_code(), "not_found")
            for method, path, allow in (("PUT", "/v1/jobs/x", "POST"), ("GET", "/v1/jobs", "POST"),
                                        ("POST", "/healthz", "GET"), ("PATCH", "/v1/dags/x", "GET"),
                                        ("DELETE", "/v1/stats", "GET"),
                                        ("POST", "/v1/jobs/x/result", "GET")):
                r = g.request(method, path)
                self.assertEqual(r.status, 405, (method, path, r))
                self.assertIn(allow, r.headers.get("allow", ""), r)
                self.assertEqual(r.error_code(), "method_not_allowed")
            # Unknown and malformed ids.
            self.assertEqual(g.get("/v1/jobs/nosuchbroker-12345").status, 404)
            jid = g.submit("echo", b"x")
            other = jid.rsplit("-", 1)[0] + "-999999999"
            r = g.get("/v1/jobs/" + other)
            self.assertEqual(r.status, 404, r)
            self.assertEqual(r.error_code(), "not_found")
            self.assertEqual(g.get("/v1/jobs/%s/result" % other).status, 404)
            self.assertEqual(g.request("DELETE", "/v1/jobs/" + other).status, 404)
            self.assertEqual(g.get("/v1/jobs/not%20an%20id").status, 404)
            # Options: each bad one is a 400 naming it.
            for query, words in (("?priority=abc", "priority"), ("?attempts=0", "attempts"),
                                 ("?attempts=5000", "attempts"), ("?timeout=x", "timeout"),
                                 ("?delay=-3", "delay"), ("?colour=red", "colour"),
                                 ("?depends_on=not-an-id", "depends_on"), ("?wait", "wait"),
                                 ("?priority=99999999999", "priority")):
                r = g.post("/v1/jobs/echo" + query, b"x")
                self.assertEqual(r.status, 400, (query, r))
                self.assertEqual(r.error_code(), "invalid")
                self.assertIn(words, r.json()["error"]["message"], (query, r))
            r = g.post("/v1/jobs/bad%20type", b"x")
            self.assertEqual(r.status, 400, r)
            r = g.post("/v1/jobs/" + "t" * 129, b"x")
            self.assertIn(r.status, (400, 404), r)
            r = g.post("/v1/jobs/echo", b"x", {"Idempotency-Key": "k" * 300})
            self.assertEqual(r.status, 400, r)
            # A dependency on a well-formed id the broker does not know: 400.
            r = g.post("/v1/jobs/echo?depends_on=" + other, b"x")
            self.assertEqual(r.status, 400, r)
            self.assertIn(other, r.json()["error"]["message"])
            # Options that work: priority, attempts, timeout, depends_on.
            a = g.submit("echo", b"A", "?priority=7&attempts=2&timeout=30")
            ja = g.job(a)
            self.assertEqual((ja["priority"], ja["max_attempts"]), (7, 2))
            b = g.submit("concat", b"", "?depends_on=%s&depends_on=%s" % (a, jid))
            self.assertEqual(g.wait_job(b)["state"], "succeeded")
            self.assertEqual([p["id"] for p in g.job(b)["parents"]], [a, jid])
            self.assertEqual(g.get("/v1/jobs/%s/result" % b).body, b"Ax")
            # A delayed job: result 409 until done; cancel it; then 410.
            d = g.submit("echo", b"later", "?delay=120")
            r = g.get("/v1/jobs/%s/result" % d)
            self.assertEqual(r.status, 409, r)
            self.assertEqual(r.error_code(), "not_finished")
            self.assertEqual(g.job(d)["state"], "waiting")
            r = g.request("DELETE", "/v1/jobs/" + d)
            self.assertEqual((r.status, r.json()["cancelled"]), (200, 1), r)
            r = g.request("DELETE", "/v1/jobs/" + d)
            self.assertEqual((r.status, r.json()["cancelled"]), (200, 0), r)
            r = g.get("/v1/jobs/%s/result" % d)
            self.assertEqual(r.status, 410, r)
            self.assertEqual(r.error_code(), "job_cancelled")
            # A failed job's result: 422 with its error.
            f = g.submit("fail", b"no good", "?attempts=1")
            g.wait_job(f, "failed")
            r = g.get("/v1/jobs/%s/result" % f)
            self.assertEqual(r.status, 422, r)
            self.assertIn("no good", r.json()["error"]["message"])
            # Skipped child of the failed job: 424 naming the cause.
            s = g.submit("echo", b"", "?depends_on=" + f)
            g.wait_job(s, "skipped")
            r = g.get("/v1/jobs/%s/result" % s)
            self.assertEqual(r.status, 424, r)
            self.assertEqual(r.error_code(), "job_skipped")
            # Idempotency-Key: same key, same job.
            k1 = g.submit("echo", b"once", headers={"Idempotency-Key": "the-key"})
            k2 = g.submit("echo", b"once", headers={"Idempotency-Key": "the-key"})
            k3 = g.submit("echo", b"once", headers={"Idempotency-Key": "other-key"})
            self.assertEqual(k1, k2)
            self.assertNotEqual(k1, k3)

    # ------------------------------------------------------------------
    def test_concurrent_submissions_coalesced_and_split(self):
        """Many concurrent keep-alive clients: every request gets its own
        answer, including bad ones mixed into the same coalesced batches."""
        with self.cluster(name="gw-concurrent") as c:
            c.start_worker(concurrency=4)
            g = self.start(c)
            known = g.submit("echo", b"parent")
            missing = known.rsplit("-", 1)[0] + "-987654321"
            n_threads, per = 16, h.scaled(60, 10)
            results = [[] for _ in range(n_threads)]
            errors = []

            def client(t):
                conn = g.connection()
                try:
                    for i in range(per):
                        if i % 10 == 7:
                            r = g.post("/v1/jobs/echo?depends_on=" + missing, b"bad", conn=conn)
                            results[t].append(("bad", r.status))
                        else:
                            payload = b"t%d-%d" % (t, i)
                            r = g.post("/v1/jobs/echo", payload, conn=conn)
                            results[t].append((payload, r.status,
                                               r.json().get("id") if r.status == 202 else r.body))
                except Exception as e:  # noqa: BLE001 - reported below
                    errors.append(e)
                finally:
                    conn.close()
            ts = [threading.Thread(target=client, args=(t,)) for t in range(n_threads)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            self.assertEqual(errors, [])
            good = [x for r in results for x in r if x[0] != "bad"]
            bad = [x for r in results for x in r if x[0] == "bad"]
            self.assertEqual({x[1] for x in good}, {202}, [x for x in good if x[1] != 202][:5])
            self.assertEqual({x[1] for x in bad}, {400}, bad[:5])
            ids = [x[2] for x in good]
            self.assertEqual(len(set(ids)), len(ids), "duplicate ids")
            infos = c.wait_terminal(ids, timeout=180)
            self.assertEqual({h.state_name(i["state"]) for i in infos}, {"succeeded"})
            outs = c.client().results_many(ids)
            for payload, _, jid in good:
                self.assertEqual(outs[jid]["output"], payload)

    # ------------------------------------------------------------------
    def test_auth_and_allowed_types(self):
        tmp = h.make_tmpdir("dagq-gw-auth-")
        tokens = h.write_file(os.path.join(tmp, "tokens"),
                              "# gateway tokens\nalpha-token-1\n\n  beta-token-2  \r\n")
        with self.cluster(name="gw-auth") as c:
            c.start_worker(concurrency=2)
            g = self.start(c, ["--token-file", tokens, "--allow-types", "echo,sleep"])
            self.assertEqual(g.get("/healthz").status, 200)      # no token needed
            for path in ("/readyz", "/metrics", "/v1/stats", "/v1/jobs/x-1", "/nothing"):
                r = g.get(path)
                self.assertEqual(r.status, 401, (path, r))
                self.assertEqual(r.error_code(), "unauthorized")
                self.assertIn("Bearer", r.headers.get("www-authenticate", ""))
            for bad in ("Bearer wrong", "Bearer alpha-token", "Bearer alpha-token-11",
                        "Basic YWxwaGE6eA==", "alpha-token-1", "Bearer "):
                r = g.post("/v1/jobs/echo", b"x", {"Authorization": bad})
                self.assertEqual(r.status, 401, (bad, r))
            # The body of an unauthorised request is not read.
            r = g.post("/v1/jobs/echo", b"x" * 100000)
            self.assertEqual(r.status, 401)
            for tok in ("alpha-token-1", "beta-token-2"):
                r = g.post("/v1/jobs/echo?wait=60", b"hi", {"Authorization": "Bearer " + tok})
                self.assertEqual((r.status, r.body), (200, b"hi"), r)
            g.token = "beta-token-2"
            h.wait_until(lambda: g.get("/readyz").status == 200, timeout=30, what="readyz")
            self.assertEqual(g.get("/v1/stats").status, 200)
            parse_prometheus(g.metrics().body.decode())
            r = g.post("/v1/jobs/fail", b"x")
            self.assertEqual(r.status, 403, r)
            self.assertEqual(r.error_code(), "type_not_allowed")
            r = g.post("/v1/jobs", json.dumps({"jobs": [{"type": "echo"}, {"type": "sha256"}]}).encode())
            self.assertEqual(r.status, 403, r)
            r = g.post("/v1/dags", json.dumps({"jobs": [{"id": "a", "type": "concat"}]}).encode())
            self.assertEqual(r.status, 403, r)
            self.assertEqual(g.post("/v1/jobs", json.dumps({"jobs": [{"type": "echo"}]}).encode()).status, 202)
            # Auth off (no --token-file): no token needed anywhere.
            g2 = self.start(c)
            h.wait_until(lambda: g2.get("/readyz").status == 200, timeout=30, what="readyz")
            self.assertEqual(g2.post("/v1/jobs/sha256", b"x").status, 202)

    # ------------------------------------------------------------------
    def test_busy_then_down_then_recovery(self):
        """429 with Retry-After while the broker is full; 503 with
        Retry-After while it is down; normal service after each."""
        with self.cluster(name="gw-busy", broker_args=["--max-jobs", "5"]) as c:
            g = self.start(c, ["--request-timeout", "2"])
            ids = [g.submit("echo", b"%d" % i) for i in range(5)]   # no worker: they stay
            r = g.post("/v1/jobs/echo", b"one too many")
            self.assertEqual(r.status, 429, r)
            self.assertEqual(r.error_code(), "busy")
            self.assertGreaterEqual(int(r.headers["retry-after"]), 1)
            r = g.post("/v1/jobs", json.dumps({"jobs": [{"type": "echo"}] * 2}).encode())
            self.assertEqual(r.status, 429, r)
            # Concurrent requests while full: each its own 429, none lost.
            sts = []
            ts = [threading.Thread(target=lambda: sts.append(g.post("/v1/jobs/echo", b"x").status))
                  for _ in range(12)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            self.assertEqual(sts, [429] * 12)
            # Room again: a worker drains the queue.
            c.start_worker(concurrency=2)
            c.wait_terminal(ids)
            self.assertEqual(g.post("/v1/jobs/echo?wait=60", b"back").body, b"back")
            # Broker down: 503 with Retry-After, /readyz 503, /healthz still 200.
            c.kill_broker()
            t0 = time.monotonic()
            r = g.post("/v1/jobs/echo", b"x")
            self.assertEqual(r.status, 503, r)
            self.assertEqual(r.error_code(), "unavailable")
            self.assertGreaterEqual(int(r.headers["retry-after"]), 1)
            self.assertLess(time.monotonic() - t0, h.deadline(30))
            h.wait_until(lambda: g.get("/readyz").status == 503, timeout=30, what="readyz 503")
            self.assertEqual(g.get("/healthz").status, 200)
            # Once down for a while, requests fail fast.
            r = g.get("/v1/jobs/" + ids[0])
            self.assertEqual(r.status, 503, r)
            m = parse_prometheus(g.metrics().body.decode())
            self.assertEqual(sample(m, "dagq_broker_up"), 0)
            # Back up: ready again, and jobs flow.
            c.restart_broker()
            h.wait_until(lambda: g.get("/readyz").status == 200, timeout=60, what="readyz 200")
            r = g.post("/v1/jobs/echo?wait=60", b"after restart")
            self.assertEqual((r.status, r.body), (200, b"after restart"), r)
            self.assertEqual(g.job(ids[0])["state"], "succeeded")

    # ------------------------------------------------------------------
    def test_store_full_and_broker_limits(self):
        """507 with Retry-After when the broker's store is full; 413 for a
        payload over the broker's --max-payload, each request answered on
        its own even when coalesced with good ones."""
        with self.cluster(name="gw-full", broker_args=["--max-store-bytes", "1"]) as c:
            g = self.start(c)
            r = g.post("/v1/jobs/echo", b"x")
            self.assertEqual(r.status, 507, r)
            self.assertEqual(r.error_code(), "store_full")
            self.assertGreaterEqual(int(r.headers["retry-after"]), 1)
            r = g.post("/v1/jobs", json.dumps({"jobs": [{"type": "echo"}]}).encode())
            self.assertEqual(r.status, 507, r)
        with self.cluster(name="gw-payload", broker_args=["--max-payload", "1K"]) as c:
            c.start_worker(concurrency=2)
            g = self.start(c)
            out = []

            def post(body):
                out.append((body, g.post("/v1/jobs/echo", body)))
            bodies = [b"s" * 100 if i % 3 else b"L" * 5000 for i in range(30)]
            ts = [threading.Thread(target=post, args=(b,)) for b in bodies]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            for body, r in out:
                if len(body) > 1024:
                    self.assertEqual(r.status, 413, r)
                    self.assertEqual(r.error_code(), "too_big")
                    self.assertIn("--max-payload", r.json()["error"]["message"])
                else:
                    self.assertEqual(r.status, 202, r)

    # ------------------------------------------------------------------
    def test_broker_killed_with_requests_in_flight(self):
        """kill -9 of the broker while clients submit, then a restart: every
        202 is a durable job with the right payload, and re-sent requests
        create no duplicates (at most one job per request)."""
        with self.cluster(name="gw-restart") as c:
            c.start_worker(concurrency=4)
            g = self.start(c, ["--request-timeout", "30"])
            stop = threading.Event()
            sent = []
            lock = threading.Lock()
            errors = []

            def client(t):
                conn = g.connection(timeout=60)
                i = 0
                try:
                    while not stop.is_set():
                        payload = b"r%d-%d" % (t, i)
                        i += 1
                        try:
                            r = g.post("/v1/jobs/echo", payload, conn=conn)
                        except (OSError, http.client.HTTPException):
                            conn.close()
                            conn = g.connection(timeout=60)
                            with lock:
                                sent.append((payload, None, None))
                            continue
                        with lock:
                            sent.append((payload, r.status,
                                         r.json()["id"] if r.status == 202 else None))
                except Exception as e:  # noqa: BLE001
                    errors.append(e)
                finally:
                    conn.close()
            ts = [threading.Thread(target=client, args=(t,)) for t in range(4)]
            for t in ts:
                t.start()
            h.wait_until(lambda: len(sent) >= 50, timeout=60, what="first requests")
            c.kill_broker()
            c.restart_broker()
            n_at_restart = len(sent)
            h.wait_until(lambda: sum(1 for s in sent[n_at_restart:] if s[1] == 202) >= 50,
                         timeout=120, what="requests accepted after the restart")
            stop.set()
            for t in ts:
                t.join()
            self.assertEqual(errors, [])
            accepted = [(p, jid) for p, st, jid in sent if st == 202]
            statuses = {st for _, st, _ in sent}
            self.assertLessEqual(statuses, {202, 503, None}, statuses)
            ids = [jid for _, jid in accepted]
            self.assertEqual(len(set(ids)), len(ids), "one id for two requests")
            c.wait_terminal(ids, timeout=180)
            outs = c.client().results_many(ids)
            wrong = [(p, jid) for p, jid in accepted
                     if not isinstance(outs[jid], dict) or outs[jid].get("output") != p]
            self.assertEqual(wrong, [], "accepted jobs lost or changed")
            total = sum(t["waiting"] + t["queued"] + t["running"] + t["succeeded"] + t["failed"]
                        + t["cancelled"] + t["skipped"]
                        for t in h.stats_types(c.client().stats()).values())
            self.assertGreaterEqual(total, len(ids))
            self.assertLessEqual(total, len(sent), "more jobs than requests: duplicates")

    # ------------------------------------------------------------------
    def test_slow_clients_and_oversize_bodies(self):
        with self.cluster(name="gw-slow") as c:
            c.start_worker(concurrency=2)
            g = self.start(c, ["--idle-timeout", "2", "--max-body", "1M",
                               "--max-header", "8K"])
            # A client sending its request head one byte at a time is cut
            # after the idle timeout, even though it is never idle.
            slow = socket.create_connection(("127.0.0.1", g.port))
            slow.settimeout(h.deadline(30))
            head = b"POST /v1/jobs/echo HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 400
            cut = threading.Event()
            started = time.monotonic()

            def trickle():
                try:
                    for i in range(len(head)):
                        slow.send(head[i:i + 1])
                        if cut.wait(0.1):
                            return
                except OSError:
                    pass
            t = threading.Thread(target=trickle)
            t.start()
            # Meanwhile other clients are served normally.
            conn = g.connection()
            served = 0
            while not cut.is_set():
                r = g.post("/v1/jobs/echo", b"fast", conn=conn)
                self.assertEqual(r.status, 202, r)
                served += 1
                slow.settimeout(0.05)
                try:
                    data = slow.recv(4096)
                    if data == b"":
                        cut.set()
                except socket.timeout:
                    pass
                except OSError:
                    cut.set()
                if time.monotonic() - started > h.deadline(40):
                    break
            t.join()
            took = time.monotonic() - started
            self.assertTrue(cut.is_set(), "slow client never cut")
            self.assertGreaterEqual(took, 1.5)
            self.assertGreater(served, 0)
            conn.close()
            slow.close()
            # An idle connection is closed after the idle timeout too.
            idle = socket.create_connection(("127.0.0.1", g.port))
            idle.settimeout(h.deadline(30))
            self.assertEqual(idle.recv(10), b"")
            idle.close()
            # A body trickled a byte at a time is never idle either: cut once
            # the idle timeout has passed and it averages under 1 KiB/s.
            s = socket.create_connection(("127.0.0.1", g.port))
            s.settimeout(0.2)
            s.sendall(b"POST /v1/jobs/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
            started, sent, closed = time.monotonic(), 0, False
            while sent < 1000 and time.monotonic() - started < h.deadline(30):
                try:
                    s.send(b"b")
                    sent += 1
                    closed = s.recv(4096) == b""
                except socket.timeout:
                    continue
                except OSError:
                    closed = True
                if closed:
                    break
            self.assertTrue(closed, "a trickled body was never cut (%d bytes sent)" % sent)
            self.assertLess(sent, 1000)
            self.assertGreaterEqual(time.monotonic() - started, 1.5)
            s.close()
            # A slow body that keeps a fair rate (4 KiB each half second, far
            # over 1 KiB/s) is read to its end however long it takes.
            s = socket.create_connection(("127.0.0.1", g.port))
            s.settimeout(h.deadline(30))
            body = b"s" * (4096 * 10)
            s.sendall(b"POST /v1/jobs/echo?wait=60 HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Length: %d\r\n\r\n" % len(body))
            for i in range(0, len(body), 4096):
                s.sendall(body[i:i + 4096])
                time.sleep(0.5)
            reply = b""
            while not reply.endswith(body):
                data = s.recv(65536)
                if not data:
                    break
                reply += data
            self.assertTrue(reply.startswith(b"HTTP/1.1 200"), reply[:200])
            self.assertTrue(reply.endswith(body), len(reply))
            s.close()
            # Content-Length over --max-body: 413 at once, body never read.
            s = socket.create_connection(("127.0.0.1", g.port))
            s.settimeout(h.deadline(30))
            s.sendall(b"POST /v1/jobs/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n\r\n")
            reply = b""
            while b"\r\n\r\n" not in reply:
                data = s.recv(4096)
                if not data:
                    break
                reply += data
            self.assertTrue(reply.startswith(b"HTTP/1.1 413"), reply[:200])
            s.close()
            status, body = raw_post(g.port, "/v1/jobs/echo", b"z" * (1024 * 1024 + 1))
            self.assertEqual(status, 413, body)
            self.assertEqual(json.loads(body)["error"]["code"], "too_big")
            self.assertIn("--max-body", json.loads(body)["error"]["message"])
            self.assertEqual(g.post("/v1/jobs/echo", b"z" * (1024 * 1024)).status, 202)
            # Expect: 100-continue with an oversize body: refused before the body.
            s = socket.create_connection(("127.0.0.1", g.port))
            s.settimeout(h.deadline(30))
            s.sendall(b"POST /v1/jobs/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n"
                      b"Expect: 100-continue\r\n\r\n")
            self.assertTrue(s.recv(4096).startswith(b"HTTP/1.1 413"))
            s.close()
            # A chunked body over the limit: the connection is cut, no 2xx.
            s = socket.create_connection(("127.0.0.1", g.port))
            s.settimeout(h.deadline(30))
            s.sendall(b"POST /v1/jobs/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            chunk = b"%x\r\n%s\r\n" % (65536, b"c" * 65536)
            got = b""
            try:
                for _ in range(40):
                    s.sendall(chunk)
                s.sendall(b"0\r\n\r\n")
                while True:
                    data = s.recv(4096)
                    if not data:
                        break
                    got += data
            except OSError:
                pass
            self.assertFalse(re.search(rb"HTTP/1.1 2\d\d", got), got[:200])
            s.close()
            # Headers over --max-header: refused, not served.
            big = g.request("GET", "/healthz", headers={"X-Big": "h" * 20000})
            self.assertIn(big.status, (400, 413, 431), big)
            # Garbage instead of HTTP.
            for junk in (b"\x00\x01\x02garbage\r\n\r\n", b"GET\r\n\r\n",
                         b"POST /v1/jobs/echo HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
                         b"POST /v1/jobs/echo HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
                         bytes(random.Random(9).randbytes(3000))):
                s = socket.create_connection(("127.0.0.1", g.port))
                s.settimeout(h.deadline(30))
                try:
                    s.sendall(junk)
                    data = s.recv(4096)
                    self.assertNotRegex(data[:12], rb"HTTP/1.1 [25]\d\d")
                except OSError:
                    pass
                s.close()
            self.assertEqual(g.get("/healthz").status, 200)
            self.assertEqual(g.post("/v1/jobs/echo?wait=60", b"still fine").body, b"still fine")
            m = parse_prometheus(g.metrics().body.decode())
            self.assertGreaterEqual(sample(m, "dagq_gateway_slow_clients_cut_total"), 1)

    # ------------------------------------------------------------------
    def test_bad_input_never_500(self):
        """Malformed JSON, invalid UTF-8, deep nesting, NUL bytes, odd
        headers: always a 4xx JSON error, and the gateway keeps serving."""
        with self.cluster(name="gw-garbage") as c:
            c.start_worker(concurrency=2)
            g = self.start(c)
            rng = random.Random(h.SCALE * 1000 + 11)
            docs = [b"", b"{", b"null", b"\xff\xfe\xfd", b'{"jobs": [' * 5000,
                    b'{"jobs": [{"type": "echo", "payload_text": "\xff\xff"}]}',
                    b'{"jobs": [{"type": "echo", "payload": ' + b"[" * 3000 + b"]" * 3000 + b"}]}",
                    b'{"jobs": [{"type": "e\\u0000cho"}]}',
                    b'{"jobs": [{"type": "echo", "depends_on": [{"index": 0, "on_failure": "x"}]}]}',
                    b'{"jobs": [{"type": "echo", "depends_on": [{"id": 5}]}]}',
                    b'{"name": 5, "jobs": [{"id": "a", "type": "echo"}]}']
            docs += [rng.randbytes(rng.randrange(1, 400)) for _ in range(40)]
            for doc in docs:
                for path in ("/v1/jobs", "/v1/dags"):
                    r = g.post(path, doc)
                    self.assertIn(r.status, (400, 403, 413), (path, doc[:60], r))
                    self.assertIn(r.error_code(), ("invalid", "cycle", "too_big", "not_found"))
            for hdrs in ({"Content-Type": "\x7f"}, {"Idempotency-Key": "has space"},
                         {"Idempotency-Key": ""}):
                r = g.post("/v1/jobs/echo", b"x", hdrs)
                self.assertIn(r.status, (202, 400), (hdrs, r))
            for path in ("/v1/jobs/%00", "/v1/jobs/%ff%fe", "/v1/dags/%0a", "/v1/jobs/..%2f..",
                         "/v1/jobs/" + "9" * 200):
                r = g.get(path)
                self.assertIn(r.status, (400, 404, 405), (path, r))
            # %00 must not cut a type or value short ("ec" or priority 1),
            # and an over-long type is a 400 that says so; none submits a job.
            before = g.get("/v1/stats").json()["jobs_total"]
            for path, says in (("/v1/jobs/ec%00ho", "'ec%00ho'"),
                               ("/v1/jobs/echo?priority=1%00x", "'1%00x'"),
                               ("/v1/jobs/echo?depends_on=%00", "'%00'"),
                               ("/v1/jobs/echo?priority=1&priority=2", "more than once"),
                               ("/v1/jobs/echo?delay=0x10", "'0x10'"),
                               ("/v1/jobs/echo?timeout=1e3", "'1e3'"),
                               ("/v1/jobs/" + "a" * 300, "300 characters, at most 128")):
                r = g.post(path, b"x")
                self.assertEqual((r.status, r.error_code()), (400, "invalid"), (path, r))
                self.assertIn(says, r.json()["error"]["message"], path)
            self.assertEqual(g.get("/v1/stats").json()["jobs_total"], before)
            self.assertEqual(g.post("/v1/jobs/ec%68o?wait=60", b"decoded").body, b"decoded")
            self.assertEqual(g.post("/v1/jobs/echo?wait=60", b"alive").body, b"alive")
            m = parse_prometheus(g.metrics().body.decode())
            bad = [(l, v) for n, l, v in m["dagq_http_requests_total"]["samples"]
                   if l["status"].startswith("5")]
            self.assertEqual(bad, [], "5xx answers to bad input")

    # ------------------------------------------------------------------
    def test_metrics_exposition(self):
        with self.cluster(name="gw-metrics") as c:
            c.start_worker(concurrency=4)
            g = self.start(c)
            g.wait_job(g.submit("echo", b"warm-up"), "succeeded")
            m1 = parse_prometheus(g.metrics().body.decode())
            for fam, t in (("dagq_http_requests_total", "counter"),
                           ("dagq_http_request_duration_seconds", "histogram"),
                           ("dagq_jobs_submitted_total", "counter"),
                           ("dagq_jobs_succeeded_total", "counter"),
                           ("dagq_jobs_failed_total", "counter"),
                           ("dagq_queue_depth", "gauge"), ("dagq_jobs_running", "gauge"),
                           ("dagq_workers_connected", "gauge"),
                           ("dagq_dispatch_latency_seconds", "histogram"),
                           ("dagq_store_sync_seconds", "histogram"),
                           ("dagq_broker_up", "gauge")):
                self.assertIn(fam, m1)
                self.assertEqual(m1[fam]["type"], t, fam)
                self.assertTrue(m1[fam]["help"], fam)
            self.assertEqual(sample(m1, "dagq_broker_up"), 1)
            self.assertGreaterEqual(sample(m1, "dagq_workers_connected"), 1)
            n = h.scaled(40, 10)
            ids = [g.submit("echo", b"m%d" % i) for i in range(n)]
            nf = 3
            fails = [g.submit("fail", b"boom", "?attempts=1") for _ in range(nf)]
            c.wait_terminal(ids + fails)
            m2 = parse_prometheus(g.metrics().body.decode())
            lbl = {"method": "POST", "route": "/v1/jobs/{type}", "status": "202"}
            self.assertGreaterEqual(sample(m2, "dagq_http_requests_total", **lbl)
                                    - sample(m1, "dagq_http_requests_total", **lbl), n + nf)
            self.assertEqual(sample(m2, "dagq_jobs_succeeded_total", type="echo")
                             - sample(m1, "dagq_jobs_succeeded_total", type="echo"), n)
            self.assertEqual(sample(m2, "dagq_jobs_failed_total", type="fail")
                             - sample(m1, "dagq_jobs_failed_total", type="fail"), nf)
            self.assertGreaterEqual(sample(m2, "dagq_jobs_submitted_total", type="echo")
                                    - sample(m1, "dagq_jobs_submitted_total", type="echo"), n)
            self.assertGreaterEqual(
                sample(m2, "dagq_dispatch_latency_seconds", "dagq_dispatch_latency_seconds_count")
                - sample(m1, "dagq_dispatch_latency_seconds", "dagq_dispatch_latency_seconds_count"),
                n + nf)
            # Accepting and finishing jobs took fdatasyncs (--sync full).
            self.assertGreater(
                sample(m2, "dagq_store_sync_seconds", "dagq_store_sync_seconds_count"),
                sample(m1, "dagq_store_sync_seconds", "dagq_store_sync_seconds_count"))
            hist = dict(method="POST", route="/v1/jobs/{type}")
            self.assertGreater(
                sample(m2, "dagq_http_request_duration_seconds",
                       "dagq_http_request_duration_seconds_count", **hist),
                sample(m1, "dagq_http_request_duration_seconds",
                       "dagq_http_request_duration_seconds_count", **hist))
            self.assertGreater(sample(m2, "dagq_http_request_duration_seconds",
                                      "dagq_http_request_duration_seconds_sum", **hist), 0)
            self.assertEqual(sample(m2, "dagq_queue_depth", type="echo"), 0)
            # A 404 shows up with its status.
            g.get("/nope")
            m3 = parse_prometheus(g.metrics().body.decode())
            self.assertGreaterEqual(sample(m3, "dagq_http_requests_total", route="other",
                                           status="404"), 1)
            self.assertTrue(g.metrics().headers["content-type"].startswith("text/plain"))

    # ------------------------------------------------------------------
    def test_tls(self):
        tmp = h.make_tmpdir("dagq-gw-tls-")
        cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                            "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if r.returncode != 0:
            self.skipTest("openssl cannot make a certificate: %s" % r.stderr[-200:])
        with self.cluster(name="gw-tls") as c:
            c.start_worker(concurrency=2)
            g = self.start(c, ["--tls-cert", cert, "--tls-key", key], tls=True)
            r = g.post("/v1/jobs/echo?wait=60", b"over tls", {"Content-Type": "text/x-tls"})
            self.assertEqual((r.status, r.body), (200, b"over tls"), r)
            self.assertEqual(r.headers["content-type"], "text/x-tls")
            # Plain HTTP to the TLS port gets no HTTP answer.
            s = socket.create_connection(("127.0.0.1", g.port))
            s.settimeout(h.deadline(30))
            try:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                data = s.recv(100)
            except OSError:
                data = b""
            s.close()
            self.assertFalse(data.startswith(b"HTTP/1.1 200"), data)
            self.assertEqual(g.get("/healthz").status, 200)
        # A key that does not match: configuration error, exit 3.
        other = os.path.join(tmp, "other.pem")
        subprocess.run(["openssl", "genrsa", "-out", other, "2048"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        p = subprocess.run([GATEWAY_BIN, "--listen", "127.0.0.1:0", "--tls-cert", cert,
                            "--tls-key", other], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=h.deadline(30))
        self.assertEqual(p.returncode, 3, p.stderr)

    # ------------------------------------------------------------------
    def test_command_line(self):
        def run(args, env=None):
            full = dict(os.environ)
            for k in list(full):
                if k.startswith("DAGQ_") and k not in ("DAGQ_BUILD_DIR",):
                    del full[k]
            full.update(env or {})
            return subprocess.run([GATEWAY_BIN] + args, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, env=full, timeout=h.deadline(30))
        r = run(["--help"])
        self.assertEqual(r.returncode, 0)
        for word in (b"--listen", b"--broker", b"--token-file", b"--max-body", b"Exit codes"):
            self.assertIn(word, r.stdout)
        self.assertEqual(run(["--no-such-option"]).returncode, 2)
        self.assertEqual(run(["--max-body", "lots"]).returncode, 2)
        self.assertEqual(run(["extra-arg"]).returncode, 2)
        self.assertEqual(run(["--print-config"], {"DAGQ_MAX_BODY": "abc"}).returncode, 3)
        r = run(["--print-config"], {"DAGQ_LISTEN": "0.0.0.0:9999", "DAGQ_MAX_BULK": "7"})
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(b"listen = 0.0.0.0:9999", r.stdout)
        self.assertIn(b"max-bulk = 7", r.stdout)
        r = run(["--print-config", "--max-bulk", "9"], {"DAGQ_MAX_BULK": "7"})
        self.assertIn(b"max-bulk = 9", r.stdout)
        r = run(["--print-config"], {"DAGQ_EVENT_LOOP": "poll"})
        self.assertIn(b"event-loop = poll", r.stdout)
        r = run(["--event-loop", "kqueue"])
        self.assertEqual(r.returncode, 2)
        self.assertIn(b"--event-loop must be epoll or poll", r.stderr)
        self.assertEqual(run(["--listen", "127.0.0.1:0", "--token-file", "/nonexistent/t"]).returncode, 3)
        self.assertEqual(run(["--listen", "nonsense"]).returncode, 3)
        # A port in use: exit 4.
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        try:
            r = run(["--listen", "127.0.0.1:%d" % s.getsockname()[1]])
            self.assertEqual(r.returncode, 4, r.stderr)
        finally:
            s.close()

    # ------------------------------------------------------------------
    def test_two_gateways_worker_killed(self):
        """Two gateways in front of one broker, clients on both, a worker
        killed mid-way: every job answered 202 completes."""
        with self.cluster(name="gw-two") as c:
            w1 = c.start_worker(name="victim", concurrency=4)
            c.start_worker(name="survivor", concurrency=4)
            c.wait_workers(names=["victim", "survivor"])
            g1 = self.start(c)
            g2 = self.start(c, events=True)
            per, n_threads = h.scaled(40, 10), 6
            accepted = []
            lock = threading.Lock()
            errors = []
            half = threading.Event()

            def client(t):
                g = (g1, g2)[t % 2]
                conn = g.connection()
                try:
                    for i in range(per):
                        r = g.post("/v1/jobs/sleep?attempts=10", b"30", conn=conn)
                        if r.status == 202:
                            with lock:
                                accepted.append(r.json()["id"])
                                if len(accepted) >= per * n_threads // 2:
                                    half.set()
                        else:
                            errors.append(r)
                except Exception as e:  # noqa: BLE001
                    errors.append(e)
                finally:
                    conn.close()
            ts = [threading.Thread(target=client, args=(t,)) for t in range(n_threads)]
            for t in ts:
                t.start()
            self.assertTrue(half.wait(h.deadline(120)), "half the jobs never accepted")
            w1.kill(signal.SIGKILL)
            for t in ts:
                t.join()
            self.assertEqual(errors, [])
            self.assertEqual(len(accepted), per * n_threads)
            self.assertEqual(len(set(accepted)), len(accepted))

            def all_done():
                done = 0
                for i, jid in enumerate(accepted):
                    g = (g1, g2)[i % 2]
                    if g.job(jid)["state"] == "succeeded":
                        done += 1
                return done == len(accepted) or None
            h.wait_until(all_done, timeout=240, what="every accepted job succeeded",
                         max_interval=1.0)


if __name__ == "__main__":
    h.run_tests()

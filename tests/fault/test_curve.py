#!/usr/bin/python3
"""CURVE encryption and authentication (issue 6).

The broker runs with --curve-secret and --curve-clients (a directory of
allowed public keys), some tests also with --curve-workers. Keys come from
`dagq keygen`. On loopback:

- an authorised worker, client (CLI options and environment variables) and
  gateway work end to end;
- a worker or client with an unknown key, or with no CURVE at all, is
  refused and gets nothing: the workers never register and run no job, the
  CLI exits 3 with a clear message after its timeout, never hangs, and
  creates nothing;
- plain TCP junk connections (garbage, half handshakes, idle sockets) on the
  CURVE ports do not stop authorised peers;
- with --curve-workers a client key cannot register as a worker: its
  process never runs a job;
- keys rotate without a broker restart: a key added to the directory is let
  in, a removed one is refused.

On a namespace cluster (root only, skipped otherwise): a distinctive payload
crosses the broker host's link in clear text without CURVE (positive
control) and never with it, captured with tcpdump when installed, else with
an AF_PACKET socket on the veth.
"""

import concurrent.futures
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import dq_netns as n  # noqa: E402

h = n.h
import zmq  # noqa: E402

GATEWAY_BIN = os.path.join(h.BUILD_DIR, "gateway", "dagq-gateway")


def load_cert(path):
    """(public, secret or None) Z85 keys of a czmq certificate file."""
    pub = sec = None
    with open(path) as f:
        for line in f:
            k, _, v = line.strip().partition("=")
            k = k.strip()
            v = v.strip().strip('"')
            if k == "public-key":
                pub = v.encode()
            elif k == "secret-key":
                sec = v.encode()
    return pub, sec


class Keys:
    """Certificates written by `dagq keygen` in a temp dir:
    keys/NAME and keys/NAME_secret, and the broker's allow-lists."""

    def __init__(self, base, names=("broker", "cli", "wk", "gw", "rogue")):
        self.dir = os.path.join(base, "keys")
        self.clients = os.path.join(base, "clients")
        self.workers = os.path.join(base, "workers")
        for d in (self.dir, self.clients, self.workers):
            os.makedirs(d)
        for name in names:
            self.gen(name)

    def gen(self, name):
        r = subprocess.run([h.CLI_BIN, "keygen", os.path.join(self.dir, name)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        if r.returncode != 0:
            raise AssertionError("dagq keygen %s failed: %r" % (name, r))
        for f in (name, name + "_secret"):
            if not os.path.isfile(os.path.join(self.dir, f)):
                raise AssertionError("dagq keygen did not write %s" % f)

    def public(self, name):
        return os.path.join(self.dir, name)

    def secret(self, name):
        return os.path.join(self.dir, name + "_secret")

    def allow(self, name, workers=False):
        """Put NAME's public half in the clients dir (and the workers dir)."""
        shutil.copy(self.public(name), os.path.join(self.clients, name))
        if workers:
            shutil.copy(self.public(name), os.path.join(self.workers, name))

    def revoke(self, name):
        os.unlink(os.path.join(self.clients, name))

    def broker_args(self, workers=False):
        a = ["--curve-secret", self.secret("broker"), "--curve-clients", self.clients]
        return a + (["--curve-workers", self.workers] if workers else [])

    def peer_args(self, name):
        """Worker and gateway options."""
        return ["--curve-secret", self.secret(name), "--curve-broker-public", self.public("broker")]

    def zmq_keys(self, name):
        pub, sec = load_cert(self.secret(name))
        server, _ = load_cert(self.public("broker"))
        return pub, sec, server


class CurveClient(h.DqClient):
    """DqClient speaking CURVE with keys (public, secret, server)."""

    def __init__(self, endpoint, keys, ctx=None):
        self.keys = keys
        super().__init__(endpoint, ctx)

    def connect(self):
        if self.sock is not None:
            self.sock.close(0)
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        # A refused handshake removes the connection's pipe: a blocking
        # send would then wait for ever.
        self.sock.setsockopt(zmq.SNDTIMEO, 2000)
        if self.keys:
            self.sock.curve_publickey, self.sock.curve_secretkey, self.sock.curve_serverkey = self.keys
        self.sock.connect(self.endpoint)

    def send(self, cmd, body=None, rid=None):
        try:
            return super().send(cmd, body, rid)
        except zmq.Again:
            raise h.NoReply("cannot send %s to %s: no connection (refused?)" % (cmd, self.endpoint))


class CurveMixin:
    """Cluster whose own protocol clients use CURVE keys `client_keys`."""

    client_keys = None

    def client(self):
        if self._client is None:
            self._client = CurveClient(self.frontend, self.client_keys, self.ctx)
        return self._client

    def new_client(self):
        return CurveClient(self.frontend, self.client_keys, self.ctx)

    def wait_broker_ready(self, timeout=60):
        p = self.broker
        with CurveClient(self.frontend, self.client_keys, self.ctx) as c:
            end = time.monotonic() + h.deadline(timeout)
            while True:
                if not p.alive():
                    raise h.BrokerExited("broker exited with rc %s while starting:\n%s"
                                         % (p.returncode, p.tail()))
                try:
                    c.request("STATS", {}, timeout=0.5 / h.TIMEOUT_FACTOR)
                    return
                except h.NoReply:
                    pass
                if time.monotonic() > end:
                    raise AssertionError("broker not ready after %.0f s:\n%s"
                                         % (h.deadline(timeout), p.tail()))


class CurveCluster(CurveMixin, h.Cluster):
    def __init__(self, keys, client="cli", workers=False, **kw):
        self.client_keys = keys.zmq_keys(client) if client else None
        kw.setdefault("broker_args", keys.broker_args(workers))
        kw.setdefault("heartbeat_ms", 250)
        kw.setdefault("liveness", 4)
        super().__init__(**kw)


class NetCurveCluster(CurveMixin, n.NetCluster):
    def __init__(self, net, keys, client="cli", curve=True, **kw):
        self.client_keys = keys.zmq_keys(client) if curve else None
        if curve:
            kw.setdefault("broker_args", keys.broker_args())
        super().__init__(net, **kw)


def log_count(proc, text):
    return proc.stderr_text().count(text)


class CurveTest(unittest.TestCase):

    def setUp(self):
        for b in (h.BROKER_BIN, h.WORKER_BIN, h.CLI_BIN):
            h.require(b)
        if not zmq.has("curve"):
            self.skipTest("pyzmq's libzmq has no CURVE")
        self.tmp = h.make_tmpdir("dagq-curve-keys-")
        self.keys = Keys(self.tmp)
        for name in ("cli", "gw"):
            self.keys.allow(name)
        self.keys.allow("wk", workers=True)

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def curve_cli(self, c, name, *args, **kw):
        return c.cli("--curve-secret", self.keys.secret(name),
                     "--curve-broker-public", self.keys.public("broker"), *args, **kw)

    def assert_refused_cli(self, r, what):
        self.assertEqual(r.rc, 3, "%s: expected exit 3 (no answer): %r" % (what, r))
        # "no reply from broker at X within N s", or, when the handshake
        # never completed, "could not send to broker at X within N s".
        self.assertRegex(r.stderr, r"(no reply from|could not send to) broker at \S+ within",
                         "%s: unclear error: %r" % (what, r))
        self.assertEqual(r.stdout, "", what)

    # ------------------------------------------------------------------

    def test_authorised_peers_work(self):
        with CurveCluster(self.keys, name="curveok", memory=True) as c:
            w = c.start_worker(name="wk", extra=self.keys.peer_args("wk"))
            c.wait_workers(names=["wk"])
            r = self.curve_cli(c, "cli", "submit", "echo", "--data", "over curve", "--wait")
            self.assertEqual((r.rc, r.stdout), (0, "over curve"), r)
            # The environment variables do the same.
            env = {"DAGQ_CURVE_SECRET": self.keys.secret("cli"),
                   "DAGQ_CURVE_BROKER_PUBLIC": self.keys.public("broker")}
            r = c.cli("submit", "sha256", "--data", "abc", "--wait", env=env)
            self.assertEqual((r.rc, r.stdout.strip()), (0, h.sha256_hex(b"abc")), r)
            # A worker configured by environment only.
            env_w = {"DAGQ_CURVE_SECRET": self.keys.secret("wk"),
                     "DAGQ_CURVE_BROKER_PUBLIC": self.keys.public("broker")}
            c.start_worker(name="wk-env", env=env_w)
            c.wait_workers(names=["wk", "wk-env"])
            w.terminate()
            c.wait_workers(names=["wk-env"])
            h.wait_until(lambda: "wk" not in c.worker_ids(), 60, what="first worker gone")
            r = self.curve_cli(c, "cli", "submit", "echo", "--data", "env worker", "--wait")
            self.assertEqual((r.rc, r.stdout), (0, "env worker"), r)
            if os.access(GATEWAY_BIN, os.X_OK):
                self._gateway(c)

    def _gateway(self, c):
        for attempt in range(5):
            port = h.free_port()
            gw = h.Proc("gateway", [GATEWAY_BIN, "--listen", "127.0.0.1:%d" % port,
                                    "--broker", c.frontend, "--events", c.events, "--threads", "1"]
                        + self.keys.peer_args("gw"), c.logdir)
            try:
                def ready():
                    if not gw.alive():
                        return "exited"
                    try:
                        with urllib.request.urlopen("http://127.0.0.1:%d/readyz" % port, timeout=5) as r:
                            return r.status == 200
                    except OSError:
                        return False
                state = h.wait_until(ready, 60, what="gateway ready over CURVE")
                if state == "exited":
                    if gw.returncode == 4:
                        continue        # port taken meanwhile
                    self.fail("gateway exited: " + gw.tail())
                req = urllib.request.Request("http://127.0.0.1:%d/v1/jobs/echo?wait=30" % port,
                                             data=b"via gateway", method="POST")
                with urllib.request.urlopen(req, timeout=h.deadline(60)) as r:
                    self.assertEqual((r.status, r.read()), (200, b"via gateway"))
                h.log("gateway over CURVE: job done through it")
                return
            finally:
                gw.terminate()
                gw.reap()
        self.fail("gateway could not bind a port")

    # ------------------------------------------------------------------

    def test_unknown_and_plain_peers_refused(self):
        with CurveCluster(self.keys, name="curveno", memory=True) as c:
            rogue = c.start_worker(name="rogue", extra=self.keys.peer_args("rogue"))
            plain = c.start_worker(name="plain")
            ids = c.client().submit([{"type": "echo", "payload": b"secret-%d" % i} for i in range(5)])["ids"]
            before = c.client().stats()["jobs_total"]
            # Refused clients (unknown key, no CURVE, unknown key from the
            # environment), all at once: each must give up with exit 3.
            runs = []
            for name, args, env in (
                    ("unknown key", ["--curve-secret", self.keys.secret("rogue"),
                                     "--curve-broker-public", self.keys.public("broker")], None),
                    ("no CURVE", [], None),
                    ("unknown key (env)", [], {"DAGQ_CURVE_SECRET": self.keys.secret("rogue"),
                                               "DAGQ_CURVE_BROKER_PUBLIC": self.keys.public("broker")})):
                for cmd in (["stats"], ["submit", "echo", "--data", "x"], ["status", ids[0]]):
                    runs.append(("%s: %s" % (name, " ".join(cmd)),
                                 ["--timeout", "2"] + args + cmd, env))
            with concurrent.futures.ThreadPoolExecutor(len(runs)) as pool:
                futs = [(what, pool.submit(c.cli, *argv, env=env, timeout=60))
                        for what, argv, env in runs]
                for what, f in futs:
                    self.assert_refused_cli(f.result(), what)
            # A public certificate (no _secret file next to it) given as the
            # secret: a clear error at once.
            lonely = os.path.join(self.tmp, "lonely")
            os.makedirs(lonely)
            shutil.copy(self.keys.public("rogue"), lonely)
            r = c.cli("--timeout", "2", "--curve-secret", os.path.join(lonely, "rogue"),
                      "--curve-broker-public", self.keys.public("broker"), "stats", timeout=60)
            self.assertNotEqual(r.rc, 0, r)
            self.assertIn("secret", r.stderr, r)
            self.assertEqual(c.client().stats()["jobs_total"], before, "a refused client created jobs")
            # The workers keep trying (a silent broker: no WELCOME, reconnect)
            # and never get in.
            for p in (rogue, plain):
                h.wait_until(lambda: log_count(p, "no WELCOME") >= 2, 60,
                             what="%s refused twice" % p.name)
            self.assertEqual(c.workers_info(), [])
            # Nothing ran: the jobs wait for an allowed worker, then run on it.
            self.assertTrue(all(h.state_name(i["state"]) == "queued" and i["attempts"] == 0
                                for i in c.client().status(ids)))
            c.start_worker(name="wk", extra=self.keys.peer_args("wk"))
            c.wait_workers(names=["wk"])
            infos = c.wait_terminal(ids)
            wk = c.worker_ids()["wk"]
            self.assertEqual({(h.state_name(i["state"]), i["worker"]) for i in infos},
                             {("succeeded", wk)})
            self.assertEqual({w.get("name") for w in c.workers_info()}, {"wk"})
            for p in (rogue, plain):
                self.assertNotIn("registered", p.stderr_text(), p.name)
            # A refused protocol client gets nothing either.
            with CurveClient(c.frontend, self.keys.zmq_keys("rogue")) as bad, \
                    CurveClient(c.frontend, None) as none:
                for cl in (bad, none):
                    with self.assertRaises(h.NoReply):
                        cl.request("STATS", {}, timeout=1.5)

    # ------------------------------------------------------------------

    def test_junk_connections(self):
        with CurveCluster(self.keys, name="curvejunk", memory=True) as c:
            c.start_worker(name="wk", extra=self.keys.peer_args("wk"))
            c.wait_workers(names=["wk"])
            rng = random.Random(7)
            junk = []
            greeting = (b"\xff" + b"\0" * 8 + b"\x7f" + b"\x03\x00" + b"CURVE".ljust(20, b"\0")
                        + b"\0" + b"\0" * 31)
            try:
                for i in range(120):
                    port = c.ports[i % 2]
                    s = socket.create_connection(("127.0.0.1", port), timeout=10)
                    kind = i % 4
                    try:
                        if kind == 0:
                            s.sendall(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 600))))
                        elif kind == 1:
                            s.sendall(greeting + bytes(rng.randrange(256) for _ in range(200)))
                        elif kind == 2:
                            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                        # kind 3: connect and say nothing
                    except OSError:
                        pass            # the broker may have closed it already
                    junk.append(s)
                # Authorised peers work meanwhile, over new connections too.
                c.start_worker(name="wk2", extra=self.keys.peer_args("wk"))
                c.wait_workers(names=["wk", "wk2"])
                ids = c.client().submit([{"type": "echo", "payload": b"j%d" % i} for i in range(40)])["ids"]
                infos = c.wait_terminal(ids)
                self.assertTrue(all(h.state_name(i["state"]) == "succeeded" for i in infos))
                r = self.curve_cli(c, "cli", "submit", "echo", "--data", "still here", "--wait")
                self.assertEqual((r.rc, r.stdout), (0, "still here"), r)
            finally:
                for s in junk:
                    s.close()
            self.assertTrue(c.broker.alive())

    # ------------------------------------------------------------------

    def test_client_key_cannot_be_worker(self):
        with CurveCluster(self.keys, name="curvewk", memory=True, workers=True) as c:
            imposter = c.start_worker(name="imposter", extra=self.keys.peer_args("cli"))
            rogue = c.start_worker(name="rogue", extra=self.keys.peer_args("rogue"))
            h.wait_until(lambda: log_count(imposter, "may not act as a worker") >= 2, 60,
                         what="the broker refusing the client key on the worker port")
            h.wait_until(lambda: log_count(rogue, "no WELCOME") >= 1, 60,
                         what="the unknown key refused")
            # The same key is a fine client.
            ids = c.client().submit([{"type": "echo", "payload": b"w%d" % i} for i in range(6)])["ids"]
            r = self.curve_cli(c, "cli", "stats", "--json")
            self.assertEqual(r.rc, 0, r)
            self.assertEqual(r.json().get("workers"), [], "a client key registered as a worker")
            self.assertTrue(all(h.state_name(i["state"]) == "queued" for i in c.client().status(ids)))
            c.start_worker(name="wk", extra=self.keys.peer_args("wk"))
            c.wait_workers(names=["wk"])
            infos = c.wait_terminal(ids)
            wk = c.worker_ids()["wk"]
            self.assertEqual({(h.state_name(i["state"]), i["worker"]) for i in infos},
                             {("succeeded", wk)})
            self.assertEqual({w.get("name") for w in c.workers_info()}, {"wk"})
            self.assertNotIn("registered", imposter.stderr_text())

    # ------------------------------------------------------------------

    def test_key_rotation_without_restart(self):
        with CurveCluster(self.keys, name="curverot", memory=True) as c:
            self.keys.gen("cli2")
            r = self.curve_cli(c, "cli2", "--timeout", "2", "stats", timeout=60)
            self.assert_refused_cli(r, "key not yet allowed")
            self.keys.allow("cli2")
            h.wait_until(lambda: self.curve_cli(c, "cli2", "--timeout", "2", "stats",
                                                timeout=60).rc == 0,
                         60, what="a key added to --curve-clients let in")
            self.keys.revoke("cli")
            c._drop_client()
            c.client_keys = self.keys.zmq_keys("cli2")
            h.wait_until(lambda: self.curve_cli(c, "cli", "--timeout", "2", "stats",
                                                timeout=60).rc == 3,
                         60, what="a key removed from --curve-clients refused")
            self.assertEqual(self.curve_cli(c, "cli2", "stats").rc, 0)

    # ------------------------------------------------------------------

    def test_no_cleartext_on_the_wire(self):
        n.skip_unless_available(self)
        with n.NetnsCluster() as net:
            seen_plain = self._capture_run(net, curve=False)
            self.assertTrue(seen_plain, "positive control: the payload was not seen in clear "
                            "text without CURVE, so the capture does not work")
            seen_curve = self._capture_run(net, curve=True)
            self.assertFalse(seen_curve, "the payload crossed the wire in clear text with CURVE")

    def _capture_run(self, net, curve):
        """Run a job whose payload and output hold a marker through a broker
        host; True if the marker showed up in packets on its link."""
        marker = ("DAGQ-CANARY-%016x" % random.randrange(1 << 64)).encode()
        with NetCurveCluster(net, self.keys, curve=curve, memory=True,
                             name="wire" + ("c" if curve else "p")) as c:
            extra = self.keys.peer_args("wk") if curve else []
            c.start_worker(name="wk", host="w1", extra=extra)
            c.wait_workers(names=["wk"])
            with Capture(net.veth("broker"), c.path("cap.pcap")) as cap:
                args = (["--curve-secret", self.keys.secret("cli"),
                         "--curve-broker-public", self.keys.public("broker")] if curve else [])
                r = c.cli(*(args + ["submit", "echo", "--data", marker.decode(), "--wait"]))
                self.assertEqual((r.rc, r.stdout), (0, marker.decode()), r)
                # The CLI printed the output, so every packet holding the
                # marker has crossed the link: make sure the capture has it.
                cap.sync(net.addr("broker"))
            h.log("capture (%s, %s): %d bytes" % ("CURVE" if curve else "plain", cap.method,
                                                   len(cap.data)))
            return marker in cap.data


class Capture:
    """Packets on one interface: tcpdump writing a file when installed, else
    an AF_PACKET socket read in a thread. `sync(addr)` sends a UDP datagram
    with a fresh sentinel to addr (routed over the interface) and waits
    until the capture holds it: everything sent before is captured too."""

    def __init__(self, ifname, path):
        self.ifname = ifname
        self.path = path
        self.data = b""
        self.method = None
        self._chunks = []
        self._halt = threading.Event()
        self._proc = None
        self._thread = None
        self._sock = None

    def __enter__(self):
        tcpdump = shutil.which("tcpdump")
        if tcpdump:
            self.method = "tcpdump"
            self._proc = subprocess.Popen([tcpdump, "-i", self.ifname, "-U", "-s", "0",
                                           "-w", self.path], stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE)
            h.wait_until(lambda: os.path.exists(self.path) or self._proc.poll() is not None,
                         30, what="tcpdump started")
            if self._proc.poll() is not None:
                raise AssertionError("tcpdump failed: %s" % self._proc.stderr.read())
        else:
            self.method = "AF_PACKET"
            self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
            self._sock.bind((self.ifname, 0))
            self._sock.settimeout(0.1)
            self._thread = threading.Thread(target=self._read, daemon=True)
            self._thread.start()
        return self

    def _read(self):
        while not self._halt.is_set():
            try:
                pkt = self._sock.recv(65535)
            except socket.timeout:
                continue
            except OSError:
                return
            self._chunks.append(pkt)

    def current(self):
        if self._proc:
            try:
                with open(self.path, "rb") as f:
                    return f.read()
            except OSError:
                return b""
        return b"".join(list(self._chunks))

    def sync(self, addr):
        sentinel = ("DAGQ-SYNC-%016x" % random.randrange(1 << 64)).encode()
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            def seen():
                u.sendto(sentinel, (addr, 9))
                return sentinel in self.current()
            h.wait_until(seen, 30, what="the capture catching up", interval=0.1)
        finally:
            u.close()

    def __exit__(self, *exc):
        self._halt.set()
        if self._proc:
            self._proc.send_signal(signal.SIGINT)
            try:
                self._proc.wait(timeout=h.deadline(30))
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._thread:
            self._thread.join(5)
        if self._sock:
            self._sock.close()
        self.data = self.current()
        return False


if __name__ == "__main__":
    h.run_tests()

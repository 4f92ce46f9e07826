#!/usr/bin/python3
"""dq_netns - a multi-host dagq cluster on one machine, for fault tests.

NetnsCluster wraps deploy/cluster/netns-cluster.sh: network namespaces for a
broker host, three worker hosts (w1, w2, w3) and a client host, on one Linux
bridge, each with its own address in a private /24 the script picks. As a
context manager it always tears everything down (processes, namespaces,
links), also when the block raises; an atexit hook covers a test process
that dies in between.

NetCluster is dq_harness.Cluster with its broker in the broker host's
namespace (listening on that host's address), workers on any host, and the
CLI run from the client host. The test process itself talks to the broker
from the root namespace through the bridge address (the operator's seat).

Tests call skip_unless_available(self) first: it skips with a clear message
when not root, or when `ip netns`, veth or bridges do not work here.
"""

import atexit
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
import dq_harness as h  # noqa: E402

SCRIPT = os.path.join(h.REPO, "deploy", "cluster", "netns-cluster.sh")
HOSTS = ("broker", "w1", "w2", "w3", "client")
WORKER_HOSTS = ("w1", "w2", "w3")

_probe_lock = threading.Lock()
_probe_result = []          # [reason or None], computed once
_live = set()               # names of clusters up, for the atexit hook


def unavailable_reason():
    """None when namespace clusters can run here, else why not (cached)."""
    with _probe_lock:
        if _probe_result:
            return _probe_result[0]
        reason = _probe()
        _probe_result.append(reason)
        return reason


def _probe():
    if os.geteuid() != 0:
        return "needs root (network namespaces, veth pairs, a bridge)"
    for tool in ("ip", "bridge", "setsid", "flock"):
        if not shutil.which(tool):
            return "%s not installed (iproute2 / util-linux)" % tool
    if not os.access(SCRIPT, os.X_OK):
        return "%s is missing or not executable" % SCRIPT
    r = subprocess.run(["ip", "netns", "list"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE)
    if r.returncode != 0:
        return "'ip netns' does not work here: %s" % r.stderr.decode(errors="replace").strip()
    # Creating one is the only real test (containers may lack CAP_SYS_ADMIN).
    ns = "dq-probe-%d" % os.getpid()
    r = subprocess.run(["ip", "netns", "add", ns], stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE)
    if r.returncode != 0:
        return "cannot create a network namespace: %s" % r.stderr.decode(errors="replace").strip()
    r2 = subprocess.run(["ip", "-n", ns, "link", "add", "va", "type", "veth", "peer", "name", "vb"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    subprocess.run(["ip", "netns", "del", ns], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if r2.returncode != 0:
        return "cannot create veth pairs: %s" % r2.stderr.decode(errors="replace").strip()
    return None


def skip_unless_available(testcase):
    """skipTest with a clear message when a namespace cluster cannot run."""
    reason = unavailable_reason()
    if reason:
        testcase.skipTest("multi-host namespace cluster unavailable: " + reason)


def have_tc():
    return shutil.which("tc") is not None


def _script(*args, check=True, timeout=120):
    env = dict(os.environ)
    env["DAGQ_NETNS_QUIET"] = "1"
    # Our clusters die with us: a later `up` removes them if we are killed.
    env["DAGQ_NETNS_OWNER"] = str(os.getpid())
    r = subprocess.run([SCRIPT] + [str(a) for a in args], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout, env=env)
    if check and r.returncode != 0:
        raise AssertionError("netns-cluster.sh %s failed (rc %d): %s%s" % (
            " ".join(str(a) for a in args), r.returncode,
            r.stderr.decode(errors="replace"), r.stdout.decode(errors="replace")))
    return r


def _down(name):
    try:
        _script("down", name, check=False, timeout=120)
    finally:
        _live.discard(name)


@atexit.register
def _down_all():
    for name in list(_live):
        _down(name)


_prev_handlers = {}         # signal -> the handler we replaced


def _on_signal(signum, frame):
    # The harness's handler kills its processes and then us, skipping atexit:
    # take the namespaces down first, then let it run.
    _down_all()
    prev = _prev_handlers.get(signum)
    if callable(prev):
        prev(signum, frame)
    else:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


if threading.current_thread() is threading.main_thread():
    for _sig in (signal.SIGTERM, signal.SIGHUP):
        _prev_handlers[_sig] = signal.getsignal(_sig)
        signal.signal(_sig, _on_signal)


def _start_time(pid):
    """Field 22 of /proc/PID/stat, as the script records it."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rfind(")") + 2:].split()[19]


class NetnsCluster:
    """Namespaces, veths and a bridge for hosts broker, w1-w3, client."""

    def __init__(self, name=None):
        self.name = name or "t%07x" % random.randrange(1 << 28)
        self.info = {}
        self.is_up = False

    # --- lifecycle
    def up(self):
        _live.add(self.name)
        try:
            _script("up", self.name)
            out = _script("info", self.name).stdout.decode()
        except BaseException:
            _down(self.name)
            raise
        for line in out.splitlines():
            k, _, v = line.partition("=")
            self.info[k] = v
        self.is_up = True
        h.log("netns cluster %s up on %s" % (self.name, self.info.get("subnet")))
        return self

    def down(self):
        if self.name in _live:
            _down(self.name)
        self.is_up = False

    def __enter__(self):
        return self.up()

    def __exit__(self, *exc):
        self.down()
        return False

    # --- names
    def addr(self, host):
        return self.info["%s.addr" % host]

    def ns(self, host):
        return self.info["%s.ns" % host]

    def veth(self, host):
        """The host-side (root namespace) end of HOST's link."""
        return self.info["%s.veth" % host]

    @property
    def operator(self):
        """The bridge address in the root namespace (where tests run)."""
        return self.info["operator"]

    @property
    def state_dir(self):
        return self.info["state"]

    def wrap(self, host, argv):
        """argv run inside HOST's namespace (ip netns exec execs, no fork)."""
        return ["ip", "netns", "exec", self.ns(host)] + list(argv)

    def run(self, host, argv, **kw):
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        kw.setdefault("timeout", h.deadline(60))
        return subprocess.run(self.wrap(host, argv), **kw)

    def record(self, label, pid):
        """Note a process we started so `down` kills it even if we crash."""
        st = _start_time(pid)
        if st is None:
            return
        path = os.path.join(self.state_dir, "pids", "%s.pid" % label)
        with open(path, "w") as f:
            f.write("%d %s\n" % (pid, st))

    # --- faults
    def cut(self, host, mode="link"):
        """link: HOST's veth down; drop: packets silently dropped, link up."""
        _script("cut", self.name, host, mode)

    def heal(self, host):
        _script("heal", self.name, host)

    def slow(self, host, rate=None):
        _script("slow", self.name, host, *([rate] if rate else []))

    def fast(self, host):
        _script("fast", self.name, host)

    def heal_all(self):
        for host in HOSTS:
            _script("heal", self.name, host, check=False)
            _script("fast", self.name, host, check=False)


class NetCluster(h.Cluster):
    """A dagq cluster spread over a NetnsCluster's hosts.

    The broker runs in the broker host and binds that host's address; the
    test process reaches it through the bridge. start_worker takes the host
    to run on; cli runs dagq from the client host unless host= says
    otherwise.
    """

    def __init__(self, net, **kw):
        self.net = net
        super().__init__(**kw)

    @property
    def frontend(self):
        return "tcp://%s:%d" % (self.net.addr("broker"), self.ports[0])

    @property
    def backend(self):
        return "tcp://%s:%d" % (self.net.addr("broker"), self.ports[1])

    @property
    def events(self):
        return "tcp://%s:%d" % (self.net.addr("broker"), self.ports[2])

    def broker_argv(self, extra=()):
        return self.net.wrap("broker", super().broker_argv(extra))

    def start_broker(self, extra=(), wait=True, new_ports=None):
        p = super().start_broker(extra, wait, new_ports)
        self.net.record("broker-%d" % p.pid, p.pid)
        return p

    def broker_pid(self):
        return self.broker.pid

    def start_worker(self, name=None, concurrency=2, builtins=True, handlers=None,
                     extra=(), env=None, broker=None, host="w1"):
        h.require(h.WORKER_BIN)
        self._worker_seq += 1
        name = name or "%s-%d" % (host, self._worker_seq)
        argv = [h.WORKER_BIN, "--broker", broker or self.backend, "--concurrency",
                str(concurrency), "--name", name, "--grace", "5"]
        if builtins:
            argv.append("--builtins")
        for t, cmd in (handlers or {}).items():
            argv += ["--handler", "%s=%s" % (t, cmd)]
        p = h.Proc("worker-" + name, self.net.wrap(host, argv + list(extra)), self.logdir,
                   env=self.worker_env(env))
        p.worker_name = name
        p.host = host
        self.workers.append(p)
        self.net.record("worker-%s-%d" % (name, p.pid), p.pid)
        return p

    def cli(self, *args, input=None, timeout=120, broker=True, env=None, host="client"):
        """dagq run in HOST's namespace (default the client host)."""
        h.require(h.CLI_BIN)
        argv = [h.CLI_BIN]
        if broker:
            argv += ["--broker", self.frontend]
        argv += [str(a) for a in args]
        full_env = dict(os.environ)
        full_env.pop("DAGQ_BROKER", None)
        if env:
            full_env.update(env)
        cmd = self.net.wrap(host, argv) if host else argv
        if h._SETPRIV:
            cmd = [h._SETPRIV, "--pdeathsig", "KILL", "--"] + cmd
        t0 = time.monotonic()
        try:
            r = subprocess.run(cmd, input=input if input is not None else b"",
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               timeout=h.deadline(timeout), env=full_env)
        except subprocess.TimeoutExpired as e:
            raise AssertionError("dagq %s did not finish within %.0f s (stdout %r, stderr %r)"
                                 % (" ".join(argv[1:]), h.deadline(timeout), e.stdout, e.stderr))
        return h.CliResult(argv, r.returncode, r.stdout, r.stderr, time.monotonic() - t0)


def rss_kb(pid):
    """VmRSS of a process in kB, or None."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


if __name__ == "__main__":
    # A smoke run: bring a cluster up, show it, take it down.
    reason = unavailable_reason()
    if reason:
        print("skipped: " + reason)
        sys.exit(77)
    with NetnsCluster() as net:
        for k, v in sorted(net.info.items()):
            print("%s=%s" % (k, v))

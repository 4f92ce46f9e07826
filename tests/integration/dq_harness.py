#!/usr/bin/python3
"""dq_harness - run real dagq processes for integration and fault tests.

A Cluster starts a dagq-broker on free loopback ports (a fresh data dir in a
temp dir, or --memory), any number of dagq-worker processes, and runs the
dagq CLI against it. It also speaks the wire protocol directly (DqClient,
pyzmq + msgpack) for tests that must send garbage or pipeline thousands of
requests.

Rules the harness enforces:
- every process it starts gets its own session (setsid), so cleanup can find
  and kill it and everything it started (external commands run in their own
  process groups but stay in the worker's session), even after an exception
  or KeyboardInterrupt (context managers plus an atexit hook); processes
  started from the main thread also die with the Python process
  (setpriv --pdeathsig) if it is killed by a test runner's timeout;
- stdout and stderr of each process go to files in the cluster's temp dir
  and are printed when a test fails (or always with DAGQ_TEST_VERBOSE=1);
- nothing waits with a fixed sleep: wait_until polls a condition with a
  generous deadline (scaled by DAGQ_TEST_TIMEOUT_FACTOR).

Environment:
  DAGQ_BUILD_DIR            build tree with broker/, worker/, client/
                            (default <repo>/build)
  DAGQ_TEST_SCALE           multiplies job counts (default 1.0)
  DAGQ_TEST_TIMEOUT_FACTOR  multiplies deadlines (default 1.0; the harness
                            uses 3.0 by itself when the binaries use ASan)
  DAGQ_SOAK=1               enables long soak variants
  DAGQ_KEEP_TMP=1           keep temp dirs (their paths are printed)
  DAGQ_TEST_VERBOSE=1       print process logs even when a test passes
"""

import atexit
import faulthandler
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import msgpack
import zmq

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD_DIR = os.path.abspath(os.environ.get("DAGQ_BUILD_DIR") or os.path.join(REPO, "build"))
BROKER_BIN = os.path.join(BUILD_DIR, "broker", "dagq-broker")
WORKER_BIN = os.path.join(BUILD_DIR, "worker", "dagq-worker")
CLI_BIN = os.path.join(BUILD_DIR, "client", "dagq")

SCALE = float(os.environ.get("DAGQ_TEST_SCALE") or 1.0)
SOAK = os.environ.get("DAGQ_SOAK") == "1"
KEEP_TMP = os.environ.get("DAGQ_KEEP_TMP") == "1"
VERBOSE = os.environ.get("DAGQ_TEST_VERBOSE") == "1"

SIGNATURE = b"DQ\x01"

STATES = ["waiting", "queued", "running", "succeeded", "failed", "cancelled", "skipped"]
TERMINAL = {"succeeded", "failed", "cancelled", "skipped"}

ERR = {"invalid": 1, "not_found": 2, "busy": 3, "cycle": 4, "too_big": 5,
       "internal": 6, "unavailable": 7, "not_finished": 8, "protocol": 9,
       "unknown_worker": 10, "store_full": 11}
ERR_NAMES = {v: k for k, v in ERR.items()}


def _is_asan_build():
    """True when the broker binary links AddressSanitizer (slower: longer deadlines)."""
    try:
        with open(BROKER_BIN, "rb") as f:
            return b"__asan_init" in f.read()
    except OSError:
        return False


_factor = os.environ.get("DAGQ_TEST_TIMEOUT_FACTOR")
TIMEOUT_FACTOR = float(_factor) if _factor else (3.0 if _is_asan_build() else 1.0)


def scaled(n, minimum=1):
    """A job count scaled by DAGQ_TEST_SCALE (the issue's number at 1.0)."""
    return max(minimum, int(round(n * SCALE)))


def deadline(seconds):
    """A timeout scaled by DAGQ_TEST_TIMEOUT_FACTOR."""
    return seconds * TIMEOUT_FACTOR


def log(msg):
    sys.stderr.write("[harness %s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


# ---------------------------------------------------------------------------
# Waiting

class WaitTimeout(AssertionError):
    pass


def wait_until(predicate, timeout=90, interval=0.02, what=None, max_interval=0.25):
    """Poll predicate() until it returns a truthy value, which is returned.

    timeout is scaled by DAGQ_TEST_TIMEOUT_FACTOR. The poll interval starts
    small and grows to max_interval. Exceptions from predicate propagate.
    On timeout raises WaitTimeout naming `what` and the last value seen.
    """
    end = time.monotonic() + deadline(timeout)
    last = None
    delay = interval
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() >= end:
            raise WaitTimeout("timed out after %.0f s waiting for %s (last value: %r)"
                              % (deadline(timeout), what or getattr(predicate, "__name__", "condition"),
                                 _short(last)))
        time.sleep(delay)
        delay = min(max_interval, delay * 1.5)


def _short(v, limit=400):
    s = repr(v)
    return s if len(s) <= limit else s[:limit] + "..."


# ---------------------------------------------------------------------------
# Ports

def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago (bind 0, close)."""
    for _ in range(50):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
        except OSError:
            continue
        finally:
            s.close()
    raise RuntimeError("no free port")


def free_ports(n):
    ports = set()
    while len(ports) < n:
        ports.add(free_port())
    return sorted(ports)


# ---------------------------------------------------------------------------
# Process bookkeeping: every session we created, for cleanup

_registry_lock = threading.Lock()
_sessions = set()      # session ids (= pid of the process we started)
_procs = []            # Proc objects not yet reaped
_tmpdirs = []          # temp dirs to remove
_mounts = []           # tmpfs mount points to unmount
_SETPRIV = shutil.which("setpriv")


def proc_stat(pid):
    """(state, ppid, pgrp, session) of a live process, or None."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read().decode("ascii", "replace")
    except OSError:
        return None
    rest = data[data.rfind(")") + 2:].split()
    try:
        return rest[0], int(rest[1]), int(rest[2]), int(rest[3])
    except (IndexError, ValueError):
        return None


def all_pids():
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            out.append(int(name))
    return out


def pids_in_session(sid):
    out = []
    for pid in all_pids():
        st = proc_stat(pid)
        if st and st[3] == sid and pid != os.getpid():
            out.append(pid)
    return out


def pids_in_group(pgid):
    """Processes (including zombies) whose process group is pgid."""
    out = []
    for pid in all_pids():
        st = proc_stat(pid)
        if st and st[2] == pgid:
            out.append(pid)
    return out


def pid_exists(pid):
    """True while pid exists, zombie included (a zombie is not reaped yet)."""
    return proc_stat(pid) is not None


def _kill_session(sid):
    for _ in range(20):
        pids = pids_in_session(sid)
        live = [p for p in pids if (proc_stat(p) or ("Z",))[0] != "Z"]
        if not live:
            return
        for p in live:
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.02)


def cleanup_all():
    """Kill everything any cluster started and remove temp dirs and mounts."""
    with _registry_lock:
        procs = list(_procs)
        sessions = list(_sessions)
        tmpdirs = list(_tmpdirs)
        mounts = list(_mounts)
        _procs.clear()
        _sessions.clear()
        _tmpdirs.clear()
        _mounts.clear()
    for p in procs:
        p.kill(signal.SIGKILL)
    for p in procs:
        p.reap(timeout=5)
    for sid in sessions:
        _kill_session(sid)
    for m in mounts:
        subprocess.run(["umount", "-l", m], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    for d in tmpdirs:
        if KEEP_TMP:
            log("kept temp dir %s" % d)
        else:
            shutil.rmtree(d, ignore_errors=True)


atexit.register(cleanup_all)


def _on_sigterm(signum, frame):
    # ctest and CI runners stop us with SIGTERM: clean up, then die.
    cleanup_all()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


if threading.current_thread() is threading.main_thread():
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGHUP, _on_sigterm)


def make_tmpdir(prefix="dagq-it-"):
    d = tempfile.mkdtemp(prefix=prefix)
    with _registry_lock:
        _tmpdirs.append(d)
    return d


def register_mount(path):
    with _registry_lock:
        _mounts.append(path)


def unregister_mount(path):
    with _registry_lock:
        if path in _mounts:
            _mounts.remove(path)


class Proc:
    """A process we started, in its own session, logging to files."""

    def __init__(self, name, argv, logdir, env=None, cwd=None):
        self.name = name
        self.argv = list(argv)
        n = 0
        while True:
            base = os.path.join(logdir, "%s.%d" % (name, n))
            if not os.path.exists(base + ".err"):
                break
            n += 1
        self.out_path = base + ".out"
        self.err_path = base + ".err"
        full_env = dict(os.environ)
        full_env.setdefault("ASAN_OPTIONS", "abort_on_error=0:detect_leaks=1")
        if env:
            full_env.update(env)
        cmd = list(argv)
        if _SETPRIV and threading.current_thread() is threading.main_thread():
            # Die with us even if we are SIGKILLed (a runner's timeout).
            # Only from the main thread: the death signal follows the thread.
            cmd = [_SETPRIV, "--pdeathsig", "KILL", "--"] + cmd
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            with _registry_lock:
                self.popen = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                              stderr=err, start_new_session=True,
                                              env=full_env, cwd=cwd, close_fds=True)
                self.pid = self.popen.pid
                _sessions.add(self.pid)
                _procs.append(self)
        self.started = time.monotonic()
        self.stopped = False

    def alive(self):
        return self.popen.poll() is None

    @property
    def returncode(self):
        return self.popen.poll()

    def send_signal(self, sig):
        if self.popen.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self, sig=signal.SIGKILL):
        self.send_signal(sig)

    def stop(self):
        self.send_signal(signal.SIGSTOP)
        self.stopped = True

    def cont(self):
        self.send_signal(signal.SIGCONT)
        self.stopped = False

    def wait(self, timeout=30):
        """Wait for exit (scaled timeout); returns the exit code or None."""
        try:
            return self.popen.wait(timeout=deadline(timeout))
        except subprocess.TimeoutExpired:
            return None

    def reap(self, timeout=10):
        rc = self.wait(timeout)
        if rc is None:
            self.send_signal(signal.SIGCONT)
            self.send_signal(signal.SIGKILL)
            rc = self.wait(timeout)
        with _registry_lock:
            if self in _procs:
                _procs.remove(self)
        return rc

    def terminate(self, timeout=30, signalled=False):
        """SIGTERM (and SIGCONT if stopped), wait; SIGKILL if it does not exit.
        signalled: SIGTERM was sent already (a second one may mean "force
        quit" to the process). Returns (exit code, whether it exited by itself)."""
        if self.popen.poll() is not None:
            return self.popen.poll(), True
        if not signalled:
            self.send_signal(signal.SIGTERM)
        if self.stopped:
            self.cont()
        rc = self.wait(timeout)
        if rc is not None:
            return rc, True
        self.send_signal(signal.SIGKILL)
        return self.wait(10), False

    def kill_session(self):
        _kill_session(self.pid)

    def stderr_text(self):
        try:
            with open(self.err_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stdout_text(self):
        try:
            with open(self.out_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def tail(self, lines=60):
        out = []
        for label, text in (("stderr", self.stderr_text()), ("stdout", self.stdout_text())):
            if text.strip():
                tl = text.splitlines()[-lines:]
                out.append("---- %s %s (pid %d, rc %s) last %d lines of %s:\n%s" % (
                    self.name, label, self.pid, self.returncode, len(tl),
                    self.err_path if label == "stderr" else self.out_path, "\n".join(tl)))
        if not out:
            out.append("---- %s (pid %d, rc %s): no output" % (self.name, self.pid, self.returncode))
        return "\n".join(out)


SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                     "runtime error:", "ERROR: ThreadSanitizer",
                     "WARNING: ThreadSanitizer")


# ---------------------------------------------------------------------------
# Wire protocol

class DqError(Exception):
    """An ERROR reply from the broker."""

    def __init__(self, code, message, retry_ms=0, cmd="ERROR"):
        self.code = code
        self.name = ERR_NAMES.get(code, str(code))
        self.message = message
        self.retry_ms = retry_ms
        super().__init__("%s (%d): %s" % (self.name, code, message))


class NoReply(Exception):
    pass


def encode(cmd, body):
    if isinstance(cmd, str):
        cmd = cmd.encode()
    return [SIGNATURE, cmd, msgpack.packb(body, use_bin_type=True)]


def decode(frames):
    """(command, body) of a message from the broker; raises ValueError if malformed."""
    if len(frames) != 3 or frames[0] != SIGNATURE:
        raise ValueError("malformed message from broker: %r" % (frames,))
    body = msgpack.unpackb(frames[2], raw=False, strict_map_key=False)
    if not isinstance(body, dict):
        raise ValueError("body is not a map: %r" % (body,))
    return frames[1].decode("ascii"), body


class DqClient:
    """A DEALER to the broker's frontend that matches replies by rid.

    Not thread-safe: one per thread.
    """

    _rid_seed = random.Random()

    def __init__(self, endpoint, ctx=None):
        self.ctx = ctx or zmq.Context.instance()
        self.endpoint = endpoint
        self.sock = None
        self.rid = self._rid_seed.randrange(1, 1 << 40)
        self.replies = {}
        self.connect()

    def connect(self):
        if self.sock is not None:
            self.sock.close(0)
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(self.endpoint)

    def close(self):
        if self.sock is not None:
            self.sock.close(0)
            self.sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def next_rid(self):
        self.rid += 1
        return self.rid

    def send(self, cmd, body=None, rid=None):
        body = dict(body or {})
        if rid is None:
            rid = self.next_rid()
        body["rid"] = rid
        self.sock.send_multipart(encode(cmd, body))
        return rid

    def send_raw(self, frames):
        self.sock.send_multipart(frames)

    def recv(self, timeout):
        """Next message (cmd, body) within timeout seconds, or None."""
        if self.sock.poll(int(timeout * 1000)):
            return decode(self.sock.recv_multipart())
        return None

    def wait_reply(self, rid, timeout):
        if rid in self.replies:
            return self.replies.pop(rid)
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return None
            msg = self.recv(left)
            if msg is None:
                return None
            r = msg[1].get("rid")
            if r == rid:
                return msg
            if isinstance(r, int) and r > 0:
                self.replies[r] = msg

    def request(self, cmd, body=None, timeout=30, resend_every=None):
        """Send cmd and wait for its reply. Raises DqError on ERROR, NoReply
        after timeout (scaled). resend_every: re-send with the same rid that
        often (a broker restart may lose the first)."""
        rid = self.send(cmd, body)
        total = deadline(timeout)
        end = time.monotonic() + total
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise NoReply("no reply to %s (rid %d) from %s within %.0f s"
                              % (cmd, rid, self.endpoint, total))
            step = min(left, resend_every) if resend_every else left
            msg = self.wait_reply(rid, step)
            if msg is not None:
                break
            if resend_every:
                self.send(cmd, body, rid=rid)
        rcmd, rbody = msg
        if rcmd == "ERROR":
            raise DqError(rbody.get("code", 0), rbody.get("message", ""), rbody.get("retry_ms", 0))
        return rcmd, rbody

    # Convenience wrappers (protocol field names).
    def submit(self, jobs, key=None, dag_name=None, timeout=30, resend_every=None):
        body = {"jobs": jobs}
        if key is not None:
            body["key"] = key
        if dag_name is not None:
            body["dag_name"] = dag_name
        return self.request("SUBMIT", body, timeout, resend_every)[1]

    def status(self, ids, timeout=30):
        infos = self.request("STATUS", {"ids": list(ids)}, timeout)[1].get("infos", [])
        return [info_defaults(i) for i in infos]

    def result(self, jid, timeout=30):
        return self.request("RESULT", {"id": jid}, timeout)[1]

    def cancel(self, jid, timeout=30):
        return self.request("CANCEL", {"id": jid}, timeout)[1]

    def stats(self, timeout=30):
        return self.request("STATS", {}, timeout)[1]

    def dag(self, did, timeout=30, **page):
        """DAG_INFO of one page (offset=, limit=, summary= as on the wire)."""
        return self.request("DAG", dict(page, id=did), timeout)[1]

    def status_many(self, ids, chunk=2000, timeout=60):
        """STATUS of any number of ids, pipelined in chunks; infos in order."""
        ids = list(ids)
        rids = []
        for i in range(0, len(ids), chunk):
            rids.append(self.send("STATUS", {"ids": ids[i:i + chunk]}))
        out = []
        for rid in rids:
            msg = self.wait_reply(rid, deadline(timeout))
            if msg is None:
                raise NoReply("no reply to STATUS (rid %d)" % rid)
            if msg[0] == "ERROR":
                raise DqError(msg[1].get("code", 0), msg[1].get("message", ""))
            out.extend(info_defaults(i) for i in msg[1].get("infos", []))
        return out

    def results_many(self, ids, window=500, timeout=60):
        """RESULT of many ids, pipelined; dict id -> OUTPUT body (or DqError)."""
        ids = list(ids)
        out = {}
        pending = {}
        it = iter(ids)
        done = False
        end = time.monotonic() + deadline(timeout)
        while True:
            while not done and len(pending) < window:
                try:
                    jid = next(it)
                except StopIteration:
                    done = True
                    break
                pending[self.send("RESULT", {"id": jid})] = jid
            if not pending:
                return out
            left = end - time.monotonic()
            if left <= 0:
                raise NoReply("no reply to %d RESULT requests" % len(pending))
            msg = self.recv(left)
            if msg is None:
                continue
            rid = msg[1].get("rid")
            jid = pending.pop(rid, None)
            if jid is None:
                continue
            if msg[0] == "ERROR":
                out[jid] = DqError(msg[1].get("code", 0), msg[1].get("message", ""))
            else:
                out[jid] = msg[1]

    def submit_many(self, batches, window=8, timeout=120):
        """Pipeline SUBMITs: batches is a list of job lists (plain jobs).
        Returns the list of id lists, in order. Retries BUSY after retry_ms."""
        results = [None] * len(batches)
        pending = {}
        nxt = 0
        end = time.monotonic() + deadline(timeout)
        retry_at = {}
        while nxt < len(batches) or pending or retry_at:
            now = time.monotonic()
            for i, t in list(retry_at.items()):
                if t <= now and len(pending) < window:
                    del retry_at[i]
                    pending[self.send("SUBMIT", {"jobs": batches[i]})] = i
            while nxt < len(batches) and len(pending) < window:
                pending[self.send("SUBMIT", {"jobs": batches[nxt]})] = nxt
                nxt += 1
            if now > end:
                raise NoReply("submit_many: %d submissions unanswered" % len(pending))
            msg = self.recv(0.1)
            if msg is None:
                continue
            i = pending.pop(msg[1].get("rid"), None)
            if i is None:
                continue
            if msg[0] == "ERROR":
                err = DqError(msg[1].get("code", 0), msg[1].get("message", ""),
                              msg[1].get("retry_ms", 0))
                if err.code == ERR["busy"]:
                    retry_at[i] = time.monotonic() + max(0.01, err.retry_ms / 1000.0)
                    continue
                raise err
            results[i] = msg[1].get("ids", [])
        return results


INFO_DEFAULTS = {"state": 0, "attempts": 0, "max_attempts": 0, "priority": 0, "created_ms": 0,
                 "started_ms": 0, "finished_ms": 0, "output_size": 0, "parent_ids": [],
                 "parent_states": []}


def info_defaults(info):
    """A JOBS info with absent fields filled in (absent means zero/empty)."""
    out = dict(INFO_DEFAULTS)
    out["parent_ids"] = []
    out["parent_states"] = []
    out.update(info)
    return out


def state_name(s):
    if isinstance(s, int):
        return STATES[s] if 0 <= s < len(STATES) else str(s)
    return s


# ---------------------------------------------------------------------------
# CLI output normalisation. The CLI's --json shapes are decided by its
# author; these helpers accept the plausible shapes and normalise each job
# to a dict with protocol field names and `state` as a name.

def _norm_job(j):
    j = dict(j)
    if "state" in j:
        j["state"] = state_name(j["state"])
    if "job_id" in j and "id" not in j:
        j["id"] = j["job_id"]
    if "parents" in j and "parent_ids" not in j:
        j["parent_ids"] = [p.get("id") for p in j["parents"]]
        j["parent_states"] = [state_name(p.get("state")) for p in j["parents"]]
    for k in ("attempts", "started_ms", "finished_ms", "created_ms"):
        if j.get(k) is None:
            j[k] = 0
    return j


def stats_types(obj):
    """type -> counts dict, from `dagq stats --json` or a STATS_REPLY."""
    lst = obj.get("types")
    if not isinstance(lst, list):
        lst = obj.get("typestats", [])
    out = {}
    for t in lst:
        d = {k: 0 for k in ("waiting", "queued", "running", "succeeded", "failed",
                            "cancelled", "skipped", "workers")}
        d.update(t)
        out[t["type"]] = d
    return out


def jobs_from_json(obj):
    """Job dicts from `dagq status --json` or `dagq dag --json` output."""
    if isinstance(obj, list):
        return [_norm_job(j) for j in obj]
    if isinstance(obj, dict):
        for k in ("jobs", "infos", "statuses"):
            if k in obj and isinstance(obj[k], list):
                return [_norm_job(j) for j in obj[k]]
        if "id" in obj and "state" in obj:
            return [_norm_job(obj)]
    raise AssertionError("cannot find jobs in CLI JSON: %s" % _short(obj))


def dag_from_json(obj):
    """(dag dict, job dicts) from `dagq dag ID --json`."""
    if not isinstance(obj, dict):
        raise AssertionError("dag --json is not an object: %s" % _short(obj))
    dag = obj.get("dag")
    if dag is None:
        dag = {k: v for k, v in obj.items() if not isinstance(v, list)}
    dag = dict(dag)
    if "state" in dag:
        dag["state"] = state_name(dag["state"])
    return dag, jobs_from_json(obj)


def parse_json_lines(text):
    """One JSON document, or one per line (NDJSON)."""
    text = text.strip()
    try:
        return json.loads(text)
    except ValueError:
        return [json.loads(line) for line in text.splitlines() if line.strip()]


class CliResult:
    def __init__(self, argv, rc, stdout, stderr, elapsed):
        self.argv = argv
        self.rc = rc
        self.stdout_bytes = stdout
        self.stdout = stdout.decode("utf-8", "replace")
        self.stderr = stderr.decode("utf-8", "replace")
        self.elapsed = elapsed

    def json(self):
        try:
            return parse_json_lines(self.stdout)
        except ValueError as e:
            raise AssertionError("%s: output is not JSON (%s): %s" % (self, e, _short(self.stdout)))

    def __repr__(self):
        args = self.argv[1:]
        shown = " ".join(args) if len(args) <= 12 else "%s ... %s (%d arguments)" % (
            " ".join(args[:8]), " ".join(args[-2:]), len(args))
        return "<dagq %s: rc=%s stdout=%s stderr=%s>" % (
            shown, self.rc, _short(self.stdout, 300), _short(self.stderr, 300))


# ---------------------------------------------------------------------------
# Cluster

class Cluster:
    """A broker (plus workers) on free loopback ports in a fresh temp dir.

    Use as a context manager: on exit every process is stopped (SIGTERM,
    then SIGKILL), leftover processes of their sessions killed, the temp dir
    removed; logs are printed if the block raised. Processes that exit
    non-zero at the final SIGTERM, and sanitizer reports in any log, are
    reported as failures (check_clean_exit=False turns that off).
    """

    def __init__(self, memory=False, broker_args=(), heartbeat_ms=500, liveness=10,
                 retry_base_ms=100, data_dir=None, check_clean_exit=True, name="cluster",
                 start=True):
        self.tmp = make_tmpdir("dagq-%s-" % name)
        self.logdir = os.path.join(self.tmp, "logs")
        os.makedirs(self.logdir)
        self.memory = memory
        self.data_dir = data_dir or os.path.join(self.tmp, "data")
        self.broker_args = list(broker_args)
        self.heartbeat_ms = heartbeat_ms
        self.liveness = liveness
        self.retry_base_ms = retry_base_ms
        self.check_clean_exit = check_clean_exit
        self.broker = None
        self.brokers = []       # every broker Proc, in start order
        self.workers = []       # every worker Proc
        self.ports = None
        self.ctx = zmq.Context.instance()
        self._client = None
        self._closed = False
        self.problems = []      # found at stop: unclean exits, sanitizer reports
        self.worker_names = {}  # broker worker id -> name, from every STATS seen
        self._worker_seq = 0
        if start:
            self.start_broker()

    # --- endpoints
    @property
    def frontend(self):
        return "tcp://127.0.0.1:%d" % self.ports[0]

    @property
    def backend(self):
        return "tcp://127.0.0.1:%d" % self.ports[1]

    @property
    def events(self):
        return "tcp://127.0.0.1:%d" % self.ports[2]

    def path(self, *parts):
        return os.path.join(self.tmp, *parts)

    # --- broker
    def broker_argv(self, extra=()):
        argv = [BROKER_BIN, "--frontend", self.frontend, "--backend", self.backend,
                "--events", self.events, "--heartbeat-ms", str(self.heartbeat_ms),
                "--liveness", str(self.liveness), "--retry-base-ms", str(self.retry_base_ms)]
        if self.memory:
            argv.append("--memory")
        else:
            argv += ["--data-dir", self.data_dir]
        return argv + self.broker_args + list(extra)

    def start_broker(self, extra=(), wait=True, new_ports=None, env=None):
        """Start the broker. The first start picks free ports (retrying on a
        bind failure, exit code 4); later starts reuse them (a restart)."""
        require(BROKER_BIN)
        first = self.ports is None if new_ports is None else new_ports
        for attempt in range(8):
            if first:
                self.ports = free_ports(3)
            p = Proc("broker", self.broker_argv(extra), self.logdir, env=env)
            self.broker = p
            self.brokers.append(p)
            if not wait:
                return p
            try:
                self.wait_broker_ready()
                return p
            except BrokerExited:
                if p.returncode == 4:
                    # The port was taken between our probe and its bind.
                    log("broker could not bind (attempt %d): retrying" % (attempt + 1))
                    if not first:
                        time.sleep(0.2)   # a restart: the old socket may linger
                    continue
                raise
        raise AssertionError("broker could not bind after 8 attempts:\n" + self.broker.tail())

    def wait_broker_ready(self, timeout=60):
        """Until the broker answers STATS; raises BrokerExited if it exits."""
        p = self.broker
        with DqClient(self.frontend, self.ctx) as c:
            end = time.monotonic() + deadline(timeout)
            while True:
                if not p.alive():
                    raise BrokerExited("broker exited with rc %s while starting:\n%s"
                                       % (p.returncode, p.tail()))
                try:
                    c.request("STATS", {}, timeout=0.5 / TIMEOUT_FACTOR)
                    return
                except NoReply:
                    pass
                if time.monotonic() > end:
                    raise AssertionError("broker not ready after %.0f s:\n%s"
                                         % (deadline(timeout), p.tail()))

    def kill_broker(self, sig=signal.SIGKILL, timeout=30):
        """Signal the broker and wait for it to exit; returns its exit code."""
        p = self.broker
        p.send_signal(sig)
        if sig == signal.SIGKILL:
            rc = p.reap(timeout)
        else:
            rc = p.wait(timeout)
            if rc is None:
                raise AssertionError("broker did not exit within %.0f s of signal %d:\n%s"
                                     % (deadline(timeout), sig, p.tail()))
            p.reap()
        self._drop_client()
        return rc

    def restart_broker(self, extra=()):
        return self.start_broker(extra, new_ports=False)

    # --- workers
    def start_worker(self, name=None, concurrency=2, builtins=True, handlers=None,
                     extra=(), env=None, broker=None, grace=10):
        """dagq-worker --broker BACKEND --concurrency N --name NAME
        [--builtins] [--handler TYPE=CMD]... --grace S (bounds a test's
        teardown when a job hangs)."""
        require(WORKER_BIN)
        self._worker_seq += 1
        name = name or "w%d" % self._worker_seq
        argv = [WORKER_BIN, "--broker", broker or self.backend, "--concurrency", str(concurrency),
                "--name", name]
        if grace is not None:
            argv += ["--grace", str(grace)]
        if builtins:
            argv.append("--builtins")
        for t, cmd in (handlers or {}).items():
            argv += ["--handler", "%s=%s" % (t, cmd)]
        p = Proc("worker-" + name, argv + list(extra), self.logdir, env=self.worker_env(env))
        p.worker_name = name
        self.workers.append(p)
        return p

    def worker_env(self, env=None):
        """A worker's environment: TMPDIR in our temp dir, so the parents
        dirs of jobs a killed worker never finished are removed with it."""
        full = {"TMPDIR": self.tmp}
        full.update(env or {})
        return full

    def stats(self):
        """STATS over the protocol; remembers every worker id -> name seen."""
        st = self.client().stats()
        for w in st.get("workers", []):
            self.worker_names[w.get("id")] = w.get("name")
        return st

    def workers_info(self):
        return self.stats().get("workers", [])

    def names_of(self, worker_ids):
        """Worker names for broker-assigned worker ids (a worker that is
        dropped and re-registers gets a new id); None for ids never seen."""
        self.stats()
        return [self.worker_names.get(w) for w in worker_ids]

    def worker_ids(self):
        """name -> broker-assigned worker id, for registered workers."""
        return {w.get("name"): w.get("id") for w in self.workers_info()}

    def wait_workers(self, names=None, count=None, timeout=60):
        """Until the named workers (or `count` workers) are registered."""
        def ready():
            info = self.workers_info()
            have = {w.get("name") for w in info}
            if names is not None and not set(names) <= have:
                return None
            if count is not None and len(info) < count:
                return None
            return info
        return wait_until(ready, timeout, what="workers %s registered" % (names or count))

    # --- clients
    def client(self):
        """A DqClient for the calling (main) thread, reconnected after restarts."""
        if self._client is None:
            self._client = DqClient(self.frontend, self.ctx)
        return self._client

    def new_client(self):
        return DqClient(self.frontend, self.ctx)

    def _drop_client(self):
        if self._client is not None:
            self._client.close()
            self._client = None

    def cli(self, *args, input=None, timeout=120, broker=True, env=None):
        """Run dagq with --broker first; returns a CliResult (never raises on rc)."""
        require(CLI_BIN)
        argv = [CLI_BIN]
        if broker:
            argv += ["--broker", self.frontend]
        argv += [str(a) for a in args]
        full_env = dict(os.environ)
        full_env.pop("DAGQ_BROKER", None)
        if env:
            full_env.update(env)
        t0 = time.monotonic()
        # The CLI runs while this thread waits for it, so a death signal
        # bound to this thread is safe from any thread.
        cmd = [_SETPRIV, "--pdeathsig", "KILL", "--"] + argv if _SETPRIV else argv
        try:
            r = subprocess.run(cmd, input=input if input is not None else b"",
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               timeout=deadline(timeout), env=full_env)
        except subprocess.TimeoutExpired as e:
            raise AssertionError("dagq %s did not finish within %.0f s (stdout %s, stderr %s)"
                                 % (" ".join(argv[1:]), deadline(timeout),
                                    _short(e.stdout), _short(e.stderr)))
        return CliResult(argv, r.returncode, r.stdout, r.stderr, time.monotonic() - t0)

    def cli_ok(self, *args, **kw):
        r = self.cli(*args, **kw)
        if r.rc != 0:
            raise AssertionError("expected exit 0: %r" % r)
        return r

    def cli_json(self, *args, **kw):
        return self.cli_ok(*(list(args) + ["--json"]), **kw).json()

    def submit(self, type_, *opts, data=None):
        """`dagq submit TYPE [--data DATA] OPTS...` -> the new job id."""
        args = ["submit", type_]
        if data is not None:
            args += ["--data", data]
        r = self.cli_ok(*(args + list(opts)))
        jid = r.stdout.strip()
        if not jid or "\n" in jid:
            raise AssertionError("submit printed no single id: %r" % r)
        return jid

    def status(self, *ids):
        """`dagq status IDS --json`, normalised: list of job dicts in order."""
        out = []
        ids = list(ids)
        for i in range(0, len(ids), 500):
            out.extend(jobs_from_json(self.cli_json("status", *ids[i:i + 500])))
        return out

    def status1(self, jid):
        return self.status(jid)[0]

    def wait_state(self, jid, states, timeout=90):
        states = {states} if isinstance(states, str) else set(states)

        def check():
            j = self.client().status([jid])[0]
            return j if state_name(j["state"]) in states else None
        return wait_until(check, timeout, what="job %s in %s" % (jid, sorted(states)))

    def wait_terminal(self, ids, timeout=120):
        """Poll STATUS (protocol) until every id is terminal; returns infos."""
        ids = list(ids)

        def check():
            infos = self.client().status_many(ids)
            return infos if all(state_name(i["state"]) in TERMINAL for i in infos) else None
        return wait_until(check, timeout, what="%d jobs terminal" % len(ids), max_interval=0.5)

    def stats_json(self):
        return self.cli_json("stats")

    # --- shutdown
    def stop(self):
        """Stop workers, then the broker, with SIGTERM; note unclean exits."""
        if self._closed:
            return
        self._closed = True
        self._drop_client()
        signalled = set()
        for w in self.workers:
            if w.alive():
                w.send_signal(signal.SIGTERM)
                signalled.add(w)
                if w.stopped:
                    w.cont()
        for w in self.workers:
            if w.returncode is None or w in signalled:
                rc, clean = w.terminate(timeout=40, signalled=w in signalled)
                if self.check_clean_exit and (not clean or rc != 0):
                    self.problems.append("%s exited with rc %s at SIGTERM%s" % (
                        w.name, rc, "" if clean else " (had to be SIGKILLed)"))
            w.reap()
            w.kill_session()
        for b in self.brokers:
            if b.returncode is None:
                rc, clean = b.terminate(timeout=40)
                if self.check_clean_exit and (not clean or rc != 0):
                    self.problems.append("broker exited with rc %s at SIGTERM%s" % (
                        rc, "" if clean else " (had to be SIGKILLed)"))
            b.reap()
            b.kill_session()
        for p in self.brokers + self.workers:
            text = p.stderr_text()
            for marker in SANITIZER_MARKERS:
                if marker in text:
                    self.problems.append("%s: sanitizer report (%s) in %s"
                                         % (p.name, marker, p.err_path))
                    break

    def dump_logs(self, lines=80):
        parts = ["==== process logs (temp dir %s) ====" % self.tmp]
        for p in self.brokers + self.workers:
            parts.append(p.tail(lines))
        sys.stderr.write("\n".join(parts) + "\n")
        sys.stderr.flush()

    def close(self, failed=False):
        try:
            self.stop()
        finally:
            if failed or self.problems or VERBOSE:
                self.dump_logs()
            if KEEP_TMP:
                log("kept temp dir %s" % self.tmp)
            else:
                shutil.rmtree(self.tmp, ignore_errors=True)
            with _registry_lock:
                if self.tmp in _tmpdirs:
                    _tmpdirs.remove(self.tmp)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close(failed=exc_type is not None)
        if exc_type is None and self.problems:
            raise AssertionError("unclean shutdown: " + "; ".join(self.problems))
        return False


class BrokerExited(AssertionError):
    pass


def require(path):
    if not os.access(path, os.X_OK):
        raise AssertionError("%s is not built (DAGQ_BUILD_DIR=%s)" % (path, BUILD_DIR))


# ---------------------------------------------------------------------------
# Events

class EventCollector:
    """A SUB on the broker's events endpoint, collecting in a thread.

    SUB reconnects by itself after a broker restart. Events are lossy by
    design; tests use them only to detect things that must NOT happen
    (e.g. a second terminal event for one job).
    """

    def __init__(self, endpoint, prefix=b""):
        self.ctx = zmq.Context.instance()
        self.endpoint = endpoint
        self.prefix = prefix
        self.events = []
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self._ready.wait(10)

    def _run(self):
        sub = self.ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.RCVHWM, 0)
        sub.setsockopt(zmq.SUBSCRIBE, self.prefix)
        sub.connect(self.endpoint)
        self._ready.set()
        try:
            while not self._stop.is_set():
                if sub.poll(100):
                    frames = sub.recv_multipart()
                    try:
                        body = msgpack.unpackb(frames[1], raw=False) if len(frames) > 1 else None
                    except Exception:
                        body = None
                    with self.lock:
                        self.events.append((frames[0].decode("utf-8", "replace"), body))
        finally:
            sub.close(0)

    def snapshot(self):
        with self.lock:
            return list(self.events)

    def close(self):
        self._stop.set()
        self.thread.join(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------------------
# Helpers for tests

def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


def write_file(path, data, mode=0o644):
    with open(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)
    os.chmod(path, mode)
    return path


def read_pids(path):
    """Integers (pids, pgids) written one or more per line to path."""
    try:
        with open(path) as f:
            return [int(x) for x in f.read().split() if x.strip().lstrip("-").isdigit()]
    except OSError:
        return []


def _watchdog(seconds):
    """If the test file is still running after `seconds` (it hangs), print
    every thread's stack, kill what it started and exit 1 - before ctest's
    TIMEOUT (900 s) kills it without a word."""
    def fire():
        sys.stderr.write("\n[harness] still running after %d s: a hang? Stacks:\n" % seconds)
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        sys.stderr.flush()
        cleanup_all()
        os._exit(1)
    t = threading.Timer(seconds, fire)
    t.daemon = True
    t.start()
    return t


def run_tests(module_name="__main__"):
    """unittest main that exits 77 when every test was skipped (ctest SKIP),
    with a watchdog (DAGQ_TEST_WATCHDOG seconds, default 870; 0 = none)."""
    limit = int(os.environ.get("DAGQ_TEST_WATCHDOG") or 870)
    if limit > 0:
        _watchdog(limit)
    prog = unittest.main(module=module_name, exit=False, verbosity=2)
    result = prog.result
    cleanup_all()
    if result.testsRun and len(result.skipped) == result.testsRun and result.wasSuccessful():
        sys.exit(77)
    sys.exit(0 if result.wasSuccessful() else 1)

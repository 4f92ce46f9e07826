#!/usr/bin/python3
"""The deploy files (issue 6): systemd units, container files, Kubernetes.

- `systemd-analyze verify` accepts deploy/systemd/*.service (copied to a
  temp dir with ExecStart pointing at this build's binaries, templates
  verified through an instance) and every unit has a restart policy,
  resource limits and sandboxing; skipped without systemd-analyze.
- The Dockerfile is multi-stage, ends on Debian slim as a non-root user,
  and installs a runtime package for every shared library the built
  binaries link (found with readelf and dpkg; skipped without them).
- compose.yaml runs broker, workers and gateway from a locally built image
  (never pulls one named like ours), with the broker's store on a volume.
- The Kubernetes manifests: the broker a StatefulSet with a volume claim,
  workers and gateway Deployments, Services, /healthz and /readyz probes on
  the gateway, non-root pods with the image's uid. (YAML checks need
  python3-yaml; skipped without it.)
"""

import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
import dq_harness as h  # noqa: E402

try:
    import yaml
except ImportError:         # python3-yaml is optional
    yaml = None

DEPLOY = os.path.join(h.REPO, "deploy")
BINARIES = {"dagq-broker": "broker", "dagq-worker": "worker", "dagq-gateway": "gateway",
            "dagq": "client"}


def built(name):
    return os.path.join(h.BUILD_DIR, BINARIES[name], name)


def unit_settings(path):
    """{section: {key: [values]}} of a unit file."""
    out = {}
    section = None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("[") and line.endswith("]"):
                section = out.setdefault(line[1:-1], {})
                continue
            k, _, v = line.partition("=")
            section.setdefault(k.strip(), []).append(v.strip())
    return out


class SystemdTest(unittest.TestCase):

    def units(self):
        units = sorted(glob.glob(os.path.join(DEPLOY, "systemd", "*.service")))
        self.assertTrue(units, "no units in deploy/systemd")
        return units

    def test_units_have_policies(self):
        for path in self.units():
            s = unit_settings(path)["Service"]
            name = os.path.basename(path)
            self.assertIn("Restart", s, name)
            self.assertTrue(any(k in s for k in ("LimitNOFILE", "MemoryMax", "MemoryHigh",
                                                 "TasksMax", "CPUQuota")),
                            "%s: no resource limit" % name)
            self.assertEqual(s.get("NoNewPrivileges"), ["yes"], name)
            self.assertIn("ProtectSystem", s, name)
            self.assertTrue(s.get("User"), "%s runs as root" % name)
            exe = s["ExecStart"][0].split()[0].lstrip("-@:+!")
            self.assertIn(os.path.basename(exe), BINARIES, "%s: ExecStart %s" % (name, exe))

    def test_systemd_analyze_verify(self):
        tool = shutil.which("systemd-analyze")
        if not tool:
            self.skipTest("systemd-analyze not installed")
        for b in BINARIES:
            if b != "dagq" and not os.access(built(b), os.X_OK):
                self.skipTest("%s is not built in %s" % (b, h.BUILD_DIR))
        tmp = tempfile.mkdtemp(prefix="dagq-units-")
        self.addCleanup(shutil.rmtree, tmp, True)
        targets = []
        for path in self.units():
            name = os.path.basename(path)
            with open(path) as f:
                text = f.read()
            # ExecStart=/usr/local/bin/NAME -> this build's NAME.
            text = re.sub(r"(/usr/local/bin/|/usr/bin/)(dagq(?:-[a-z]+)?)\b",
                          lambda m: built(m.group(2)), text)
            with open(os.path.join(tmp, name), "w") as f:
                f.write(text)
            if name.endswith("@.service"):
                inst = name.replace("@.service", "@1.service")
                os.symlink(name, os.path.join(tmp, inst))
                targets.append(os.path.join(tmp, inst))
            else:
                targets.append(os.path.join(tmp, name))
        env = dict(os.environ, SYSTEMD_PAGER="cat", SYSTEMD_LOG_COLOR="0")
        argv = [tool, "verify", "--man=no", "--generators=no"] + targets
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                           timeout=h.deadline(120))
        out = r.stdout.decode(errors="replace")
        if r.returncode != 0 and "unrecognized option" in out:
            # An older systemd-analyze: without the newer flags.
            r = subprocess.run([tool, "verify"] + targets, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, env=env, timeout=h.deadline(120))
            out = r.stdout.decode(errors="replace")
        # Lines about our units (the host's own units may be noisy).
        ours = [l for l in out.splitlines() if tmp in l or "dagq" in l]
        self.assertEqual(r.returncode, 0, "systemd-analyze verify failed:\n" + out)
        self.assertEqual(ours, [], "systemd-analyze verify complains:\n" + out)


class ContainerTest(unittest.TestCase):

    def read(self, *parts):
        with open(os.path.join(DEPLOY, *parts)) as f:
            return f.read()

    def stages(self):
        text = self.read("container", "Dockerfile")
        stages = []
        for line in text.splitlines():
            line = line.strip()
            if line.upper().startswith("FROM "):
                stages.append({"from": line.split()[1], "lines": []})
            elif stages and line and not line.startswith("#"):
                stages[-1]["lines"].append(line)
        # Join continuation lines.
        for st in stages:
            joined, cur = [], ""
            for line in st["lines"]:
                cur += " " + line.rstrip("\\").strip()
                if not line.endswith("\\"):
                    joined.append(cur.strip())
                    cur = ""
            st["lines"] = joined
        return stages

    def test_dockerfile_shape(self):
        stages = self.stages()
        self.assertGreaterEqual(len(stages), 2, "not multi-stage")
        final = stages[-1]
        self.assertRegex(final["from"], r"^debian:[0-9a-z.]+-slim$")
        users = [l.split(None, 1)[1] for l in final["lines"] if l.upper().startswith("USER ")]
        self.assertTrue(users, "the final stage runs as root")
        self.assertNotIn(users[-1].split(":")[0], ("root", "0"))
        self.assertTrue(any(l.upper().startswith("COPY --FROM=") for l in final["lines"]))

    def runtime_packages(self):
        final = self.stages()[-1]
        pkgs = set()
        for l in final["lines"]:
            if l.upper().startswith("RUN ") and "apt-get install" in l:
                part = l.split("apt-get install", 1)[1].split("&&")[0]
                pkgs |= {w for w in part.split() if not w.startswith("-")}
        return pkgs

    def test_dockerfile_runtime_libraries(self):
        readelf, dpkg = shutil.which("readelf"), shutil.which("dpkg")
        if not (readelf and dpkg):
            self.skipTest("readelf or dpkg not installed")
        pkgs = self.runtime_packages()
        sonames = set()
        checked = 0
        for b in BINARIES:
            path = built(b)
            if not os.access(path, os.X_OK):
                continue
            checked += 1
            out = subprocess.run([readelf, "-d", path], stdout=subprocess.PIPE,
                                 timeout=60).stdout.decode(errors="replace")
            for soname in re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out):
                if re.match(r"(libc|libm|libpthread|libdl|librt|ld-linux.*)\.so", soname):
                    continue        # libc6: in every Debian image
                if re.match(r"lib(asan|ubsan|tsan)\.so", soname):
                    continue        # a sanitizer build's runtime
                sonames.add(soname)
        if not checked:
            self.skipTest("no binaries built in %s" % h.BUILD_DIR)
        # One dpkg call: "pkg:arch: /path/libx.so.N" per match.
        r = subprocess.run([dpkg, "-S"] + ["*/" + s for s in sorted(sonames)],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=120)
        owners = {}
        for line in r.stdout.decode(errors="replace").splitlines():
            pkg, _, path = line.partition(": ")
            for soname in sonames:
                if path.endswith("/" + soname):
                    owners.setdefault(soname, set()).add(pkg.split(":")[0])
        missing = {s: sorted(o) for s, o in owners.items() if not o & pkgs}
        self.assertEqual(missing, {}, "libraries the runtime image lacks (soname: packages)")

    def load_yaml(self, *parts, many=False):
        if yaml is None:
            self.skipTest("python3-yaml not installed")
        text = self.read(*parts)
        return list(yaml.safe_load_all(text)) if many else yaml.safe_load(text)

    def test_compose(self):
        c = self.load_yaml("container", "compose.yaml")
        svcs = c["services"]
        self.assertLessEqual({"broker", "worker", "gateway"}, set(svcs))
        for name, s in svcs.items():
            image = s.get("image", "")
            # A service naming our image must build it, never pull one.
            if "dagq" in image:
                self.assertIn("build", s, "%s would pull an image named %s" % (name, image))
                ctx = os.path.normpath(os.path.join(DEPLOY, "container", s["build"]["context"]))
                self.assertTrue(os.path.isfile(os.path.join(ctx, s["build"]["dockerfile"])),
                                "%s: no Dockerfile at %s" % (name, s["build"]))
        cmds = {name: s.get("command", []) for name, s in svcs.items()}
        self.assertEqual(cmds["broker"][0], "dagq-broker")
        self.assertEqual(cmds["worker"][0], "dagq-worker")
        self.assertEqual(cmds["gateway"][0], "dagq-gateway")
        self.assertTrue(any(v.endswith(":/var/lib/dagq") for v in svcs["broker"].get("volumes", [])))
        self.assertIn("tcp://broker:5556", cmds["worker"])
        self.assertIn("tcp://broker:5555", cmds["gateway"])

    def test_kubernetes(self):
        docs = [d for d in self.load_yaml("kubernetes", "dagq.yaml", many=True) if d]
        by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
        sts = by[("StatefulSet", "dagq-broker")]
        self.assertTrue(sts["spec"].get("volumeClaimTemplates"))
        claim = sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"]
        bc = sts["spec"]["template"]["spec"]["containers"][0]
        self.assertIn(claim, [m["name"] for m in bc["volumeMounts"]])
        self.assertIn(("Service", "dagq-broker"), by)
        self.assertIn(("Service", "dagq-gateway"), by)
        gw = by[("Deployment", "dagq-gateway")]["spec"]["template"]["spec"]
        g = gw["containers"][0]
        self.assertEqual(g["livenessProbe"]["httpGet"]["path"], "/healthz")
        self.assertEqual(g["readinessProbe"]["httpGet"]["path"], "/readyz")
        uid = None
        for l in self.stages()[-1]["lines"]:
            if l.upper().startswith("USER "):
                uid = l.split()[1].split(":")[0]
        for key in (("StatefulSet", "dagq-broker"), ("Deployment", "dagq-worker"),
                    ("Deployment", "dagq-gateway")):
            spec = by[key]["spec"]["template"]["spec"]
            sc = spec.get("securityContext", {})
            self.assertTrue(sc.get("runAsNonRoot"), key)
            if uid and uid.isdigit() and "runAsUser" in sc:
                self.assertEqual(str(sc["runAsUser"]), uid, "%s runs as another uid than the image's" % (key,))
            args = spec["containers"][0].get("args") or spec["containers"][0].get("command")
            self.assertTrue(args[0].startswith("dagq"), key)


if __name__ == "__main__":
    h.run_tests()

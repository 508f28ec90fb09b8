"""Faults (issue 24): the daemon runs on, loses nothing it recorded, and
status says what is wrong."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from memguard.actions.freeze import FROZEN_FILE, Frozen, FrozenList, boottime, freeze, read_frozen
from memguard.probes.procevents import start_time
from memguard.roots import Roots
from tests.e2e.daemon import Daemon, ctl
from tests.integration.test_incidents_real import find
from tests.kernel import MIB, capabilities, require, wait_until

pytestmark = pytest.mark.root


@pytest.fixture
def small_disk(tmp_path):
    """The incident directory on a 64 KiB tmpfs, filled to the last byte."""
    require("root")
    incidents = tmp_path / "state" / "incidents"
    incidents.mkdir(parents=True, mode=0o700)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "mgtest-incidents", str(incidents)],
                   check=True, timeout=30)
    filler = incidents / "filler"
    try:
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while os.write(fd, b"\0" * 1024):
                pass
        except OSError:         # ENOSPC: full
            pass
        finally:
            os.close(fd)
        yield incidents, filler
    finally:
        subprocess.run(["umount", "-l", str(incidents)], timeout=30)


def test_a_full_incident_disk_keeps_the_incident_until_there_is_room(tmp_path, small_disk, v1_cgroup, hog):
    incidents, filler = small_disk
    d = Daemon(str(tmp_path), config="incidents:\n  settle: 500ms\n")
    try:
        group = v1_cgroup(32 * MIB)
        hog(group, "anon", "64")                        # a real OOM kill
        status = d.wait_for_tick(lambda s: not s["healthy"], timeout=30)
        (why,) = [x for x in status["degraded"] if x.startswith("incidents:")]
        assert "not written yet" in why and "No space left on device" in why, why
        assert d.proc.poll() is None, "the daemon runs on"
        filler.unlink()                                 # room again
        status = d.wait_for_tick(lambda s: s["healthy"], timeout=30)
        def ours():
            r = ctl(d.socket, "--json", "incidents")
            return [i for i in json.loads(r.stdout)["incidents"] if i["fields"]["domain"] == f"cgroup:{group.path}"]
        listing = wait_until(ours, timeout=10, what="the incident, written once there was room")
        assert listing[0]["fields"]["kind"] == "oom_kill"
        assert "incident stored after all" in d.log()
    finally:
        assert d.stop() == 0, d.log()


def test_a_storm_of_reloads_leaves_the_rules_and_the_daemon(tmp_path):
    (tmp_path / "rules.yaml").write_text("rules:\n  - name: r\n    when: usage_ratio > 0.9\n    severity: warning\n")
    os.chmod(tmp_path / "rules.yaml", 0o644)
    d = Daemon(str(tmp_path), "--no-probes", config="rules:\n  files: [rules.yaml]\n")
    try:
        for _ in range(200):
            os.kill(d.proc.pid, signal.SIGHUP)
            time.sleep(0.002)
        status = d.wait_for_tick(lambda s: s["rules"]["count"] == 1 and s["rules"]["error"] is None, timeout=20)
        assert d.proc.poll() is None and status["healthy"], d.log()[-2000:]
    finally:
        assert d.stop() == 0, d.log()


def test_bcc_failing_to_compile_leaves_the_other_probes_and_says_why(tmp_path, v1_cgroup, hog):
    """A real compile failure: BCC pointed at a kernel source folder with no
    headers (BCC_KERNEL_SOURCE), as on a host whose headers are missing.
    The eBPF probe is failed, with BCC's reason, and tried again later; the
    daemon runs on, degraded, and a real OOM kill is still recorded by the
    kmsg and tracefs probes."""
    require("root")
    require("v1_memory")
    if not capabilities().bcc:
        pytest.skip("BCC cannot load here (capabilities().bcc): the eBPF probe never compiles to fail")
    d = Daemon(str(tmp_path), config="incidents:\n  settle: 500ms\n",
               env=dict(os.environ, BCC_KERNEL_SOURCE="/var/empty"))
    try:
        def failed_and_others_active(s):
            probes = {p["name"]: p for p in s["probes"]}
            return (probes.get("bpf", {}).get("state") == "failed"
                    and all(probes.get(n, {}).get("state") == "active" for n in ("kmsg", "tracefs")))
        status = d.wait_for_tick(failed_and_others_active, timeout=90)
        (bpf,) = [p for p in status["probes"] if p["name"] == "bpf"]
        assert "BCC could not compile" in bpf["reason"] and "reopening in" in bpf["reason"], bpf
        assert not status["healthy"] and any("bpf" in why for why in status["degraded"]), status["degraded"]
        group = v1_cgroup(32 * MIB)
        h = hog(group, "anon", "64")
        assert h.wait_exit(30) == -9
        doc = find(d, h.pid, timeout=30, sealed=True)
        seen_by = {p["name"] for p in doc["probes"]}
        assert doc["domain"] == f"cgroup:{group.path}" and "bpf" not in seen_by and "kmsg" in seen_by, seen_by
        assert d.proc.poll() is None
    finally:
        assert d.stop() == 0, d.log()


# The frozen list's write points: the temporary file's open, its write, its
# fsync, the rename over the list, and the SIGSTOP that follows the write.
FROZEN_WRITE_POINTS = {"open": "openat", "write": "write", "fsync": "fsync", "rename": "rename,renameat,renameat2",
                       "stop": "pidfd_send_signal,kill"}

FREEZE_ONE_MORE = textwrap.dedent("""\
    import sys
    from memguard.actions.freeze import Frozen, FrozenList, boottime, freeze
    from memguard.roots import Roots
    path, pid, start = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    listed = FrozenList(path)
    listed.add(Frozen(pid, start, "build-1", "cgroup:/b", "r", boottime(), boottime() + 600))   # listed, then stopped
    freeze(Roots(), pid, start)
""")


def stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "T"


@pytest.mark.parametrize("point", FROZEN_WRITE_POINTS)
def test_a_sigkill_at_each_write_point_of_the_frozen_list_leaves_nothing_frozen(tmp_path, point):
    """The daemon freezing a second process is SIGKILLed (strace delivers
    the signal as the syscall of that write point begins): the list on disk
    is whole, the old one or the new one; the process being frozen was not
    stopped unlisted; and the next daemon thaws everything listed."""
    require("root")
    if shutil.which("strace") is None:
        pytest.fail("strace is installed by `make test` (APT_TEST): run that")
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o700)
    path = str(state_dir / FROZEN_FILE)
    sleepers = [subprocess.Popen(["sleep", "300"]) for _ in range(2)]
    try:
        (a, a_start), (b, b_start) = [(p.pid, start_time(Roots(), p.pid)) for p in sleepers]
        FrozenList(path).add(Frozen(a, a_start, "build-1", "cgroup:/b", "r", boottime(), boottime() + 600))
        assert freeze(Roots(), a, a_start) == "sent"
        wait_until(lambda: stopped(a), timeout=5, what="the first process stopped")
        syscalls = FROZEN_WRITE_POINTS[point]
        paths = [] if point == "stop" else ["-P", path + ".tmp", "-P", path]
        child = subprocess.run(["strace", "-f", "-qq", "-o", "/dev/null", *paths, "-e", f"trace={syscalls}",
                                "-e", f"inject={syscalls}:signal=KILL:when=1",
                                sys.executable, "-c", FREEZE_ONE_MORE, path, str(b), str(b_start)],
                               timeout=60, capture_output=True, text=True)
        assert child.returncode == -signal.SIGKILL or child.returncode == 128 + signal.SIGKILL, child
        listed = [f.pid for f in read_frozen(path)]
        with open(path) as f:
            json.load(f)                                    # whole: it parses
        assert listed == ([a, b] if point == "stop" else [a]), (point, listed)
        assert stopped(a) and not stopped(b), "killed before it stopped the second: nothing stopped unlisted"
        d = Daemon(str(tmp_path), "--no-probes")            # the next daemon, on the same state directory
        try:
            wait_until(lambda: not stopped(a), timeout=20, what="the listed process thawed by the next daemon")
            assert read_frozen(path) == [] and "left frozen by a previous run" in d.log()
        finally:
            assert d.stop() == 0, d.log()
    finally:
        for p in sleepers:
            p.kill()
            p.wait()

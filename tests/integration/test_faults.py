"""Faults (issue 24): the daemon runs on, loses nothing it recorded, and
status says what is wrong."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from tests.e2e.daemon import Daemon, ctl
from tests.kernel import MIB, require, wait_until

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

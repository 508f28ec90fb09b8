"""Jobs register through the real proc connector (issue 18): by
`memguardctl run`, by MEMGUARD_JOB set in a shell, with forked workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.e2e.daemon import Daemon, ctl
from tests.kernel import require, wait_until

pytestmark = pytest.mark.root

CONFIG = """\
sampling:
  interval: 250ms
  processes_interval: 500ms
"""
# A leader that forks one worker (which never execs), then both sleep.
FORKER = "import os, sys, time; os.fork(); sys.stdout.write('up\\n'); sys.stdout.flush(); time.sleep(60)"


@pytest.fixture
def daemon(tmp_path):
    require("root")
    require("proc_connector")
    d = Daemon(str(tmp_path), config=CONFIG, probes="  kmsg: false\n  bpf: false\n  tracefs: false\n")
    try:
        d.wait_for_tick(lambda s: any(p["name"] == "procevents" and p["state"] == "active" for p in s["probes"]),
                        timeout=30)
    except BaseException:
        d.stop()
        raise
    yield d
    assert d.stop() == 0, d.log()


@pytest.fixture
def started():
    """Start process groups; end each by its pid's group at teardown."""
    procs = []

    def start(argv, env=None):
        p = subprocess.Popen(argv, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, text=True,
                             start_new_session=True)
        procs.append(p)
        return p
    yield start
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait(10)


def jobs(d: Daemon) -> list[dict]:
    r = ctl(d.socket, "jobs", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["jobs"]


def test_memguardctl_run_registers_the_command_and_its_forked_worker(daemon, started):
    p = started([sys.executable, "-m", "memguard.cli.main", "run", "--name", "train", "--on-warning", "USR1",
                 "--", sys.executable, "-c", FORKER])
    assert p.stdout.readline() == "up\n"
    (job,) = wait_until(lambda: [j for j in jobs(daemon) if len(j["pids"]) == 2], timeout=10,
                        what="the job and its worker")
    assert job["id"] == f"train-{p.pid}" and job["leader"] == p.pid and p.pid in job["pids"]
    assert job["registration"] == {"name": "train", "warning": "SIGUSR1", "critical": None, "target": "leader",
                                   "hook": None}
    assert job["uid"] == 0 and job["domain"] == "host"
    table = ctl(daemon.socket, "jobs").stdout
    assert f"train-{p.pid}" in table and "warning=SIGUSR1" in table
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(10)
    wait_until(lambda: not jobs(daemon), timeout=10, what="the job to end with its processes")


def test_a_variable_set_in_a_shell_registers_the_shell_and_its_grandchildren(daemon, started):
    p = started(["sh", "-c", f"{sys.executable} -c \"{FORKER}\""], env={"MEMGUARD_JOB": "build"})
    assert p.stdout.readline() == "up\n"
    (job,) = wait_until(lambda: [j for j in jobs(daemon) if len(j["pids"]) == 3], timeout=10,
                        what="the shell, its python and the forked worker")
    assert job["id"] == f"build-{p.pid}" and job["leader"] == p.pid


def test_a_malformed_registration_is_refused_and_shown(daemon, started):
    p = started(["sh", "-c", "echo up; sleep 60"], env={"MEMGUARD_JOB": "train,warning=USR9"})
    assert p.stdout.readline() == "up\n"
    status = wait_until(lambda: (s := daemon.status())["jobs_rejected"] and s, timeout=10,
                        what="the refusal in status")
    assert {"pid": p.pid, "error": "MEMGUARD_JOB: warning: 'USR9' is not a signal (USR1, SIGTERM, 10, ...)"} \
        in status["jobs_rejected"]
    assert status["jobs"] == []
    assert "job registration refused" in daemon.log()

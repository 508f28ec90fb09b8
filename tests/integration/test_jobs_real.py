"""Jobs register through the real proc connector (issue 18): by
`memguardctl run`, by MEMGUARD_JOB set in a shell, with forked workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

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
    d.wait_for_probes({"procevents"})
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


def test_register_and_unregister_a_running_process_of_ones_own(daemon, started):
    p = started(["sh", "-c", "echo up; sleep 60"])
    assert p.stdout.readline() == "up\n"
    r = ctl(daemon.socket, "register", "--pid", str(p.pid), "--name", "late", "--on-warning", "USR2")
    assert r.returncode == 0 and r.stdout == f"registered pid {p.pid} as job late-{p.pid}\n", r.stderr
    (job,) = wait_until(lambda: jobs(daemon), timeout=5, what="the job in the next snapshot")
    assert (job["id"], job["registration"]["warning"]) == (f"late-{p.pid}", "SIGUSR2")
    assert ctl(daemon.socket, "unregister", f"late-{p.pid}").returncode == 0
    wait_until(lambda: not jobs(daemon), timeout=5, what="the job gone from the next snapshot")
    r = ctl(daemon.socket, "unregister", "nosuch-1")
    assert r.returncode == 5 and "no job 'nosuch-1'" in r.stderr


def test_an_unprivileged_user_cannot_register_or_unregister_anothers_process(started, public_dir):
    from tests.kernel import unprivileged_python
    require("root")
    require("proc_connector")
    python = unprivileged_python()
    if python is None:
        pytest.skip("no interpreter the unprivileged user can run")
    # a daemon whose socket the unprivileged user can reach
    daemon = Daemon(str(public_dir), config=CONFIG, probes="  kmsg: false\n  bpf: false\n  tracefs: false\n")
    try:
        _refuses_another_users_process(daemon, started, public_dir, python)
    finally:
        assert daemon.stop() == 0, daemon.log()


def _refuses_another_users_process(daemon, started, public_dir, python):
    from tests.kernel import NOBODY, as_nobody, public_copy
    package = public_copy(Path(__file__).resolve().parent.parent.parent / "daemon" / "memguard", public_dir)
    rootish = started(["sh", "-c", "echo up; sleep 60"])
    assert rootish.stdout.readline() == "up\n"
    ours = started(as_nobody(["sh", "-c", "echo up; sleep 60"]))
    assert ours.stdout.readline() == "up\n"
    env = {**os.environ, "PYTHONPATH": str(package.parent)}

    def ctl_as_nobody(*args):
        return subprocess.run(as_nobody([python, "-m", "memguard.cli.main", "--socket", daemon.socket, *args]),
                              capture_output=True, text=True, timeout=30, env=env)
    r = ctl_as_nobody("register", "--pid", str(rootish.pid), "--name", "steal")
    assert r.returncode == 5 and f"process {rootish.pid} is not yours" in r.stderr, r.stderr
    # its own process: yes (found by uid, whatever the pid of the caller)
    own = ctl_as_nobody("register", "--pid", str(ours.pid), "--name", "mine")
    assert own.returncode == 0, own.stderr
    (job,) = wait_until(lambda: jobs(daemon), timeout=5, what="the job in the next snapshot")
    assert job["uid"] == NOBODY
    # root's job cannot be dropped by nobody
    assert ctl(daemon.socket, "register", "--pid", str(rootish.pid), "--name", "roots").returncode == 0
    wait_until(lambda: len(jobs(daemon)) == 2, timeout=5, what="root's job in the next snapshot")
    r = ctl_as_nobody("unregister", f"roots-{rootish.pid}")
    assert r.returncode == 5 and "is not yours" in r.stderr

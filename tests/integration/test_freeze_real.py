"""Freezing compilers so the others finish, and never leaving one frozen
(issue 19): a real memory cgroup, a real job, real SIGSTOP/SIGCONT, a
daemon SIGKILLed while a process is frozen."""

from __future__ import annotations

import json
import os
import signal
import sys
import uuid
from pathlib import Path

import pytest

from tests.e2e.daemon import Daemon
from tests.kernel import MIB, Hog, require, wait_until

pytestmark = pytest.mark.root

# Each holder takes 80 MiB and sleeps: two of them fill a 256 MiB cgroup past
# half, where the rule below freezes the newest (the shell is the job's leader).
HOLD = "b = bytearray(80 << 20)\nfor i in range(0, len(b), 4096): b[i] = 1\nimport time; time.sleep(120)"
RULES = """\
rules:
  - name: build-full
    match: {job: 'build*'}
    levels:
      - severity: warning
        when: usage_ratio > 0.5
        actions:
          - freeze: newest
"""


def config(tmp_path, when: str = "usage_ratio > 0.5") -> str:
    rules = tmp_path / "freeze.yaml"
    rules.write_text(RULES.replace("usage_ratio > 0.5", when))
    return (f"sampling:\n  interval: 250ms\n  processes_interval: 500ms\n  discovery_interval: 250ms\n"
            f"rules:\n  files: ['{rules}']\nactions:\n  freeze_every: 1s\n  thaw_every: 1s\n")


def state(pid: int) -> str:
    """The process's state letter (T: stopped), or "" once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


def holders(job: Hog) -> list[int]:
    with open(f"/proc/{job.pid}/task/{job.pid}/children") as f:
        return [int(p) for p in f.read().split()]


def frozen_one(job: Hog) -> int:
    def find():
        stopped = [p for p in holders(job) if state(p) == "T"]
        return stopped[0] if stopped else None
    return wait_until(find, timeout=30, what="a holder to be frozen")


def guard_pid(state_dir: str) -> int | None:
    wanted = os.path.join(state_dir, "frozen.json").encode()
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    cmdline = f.read()
                if wanted in cmdline and b"memguard.actions.freeze" in cmdline:
                    return int(name)
            except OSError:
                pass
    return None


def started(tmp_path, when: str = "usage_ratio > 0.5") -> Daemon:
    """A daemon with the freezing rule (on *when*), its proc connector up."""
    d = Daemon(str(tmp_path), config=config(tmp_path, when), probes="  bpf: false\n")
    try:
        d.wait_for_probes({"procevents"})
    except BaseException:
        d.stop()
        raise
    return d


@pytest.fixture
def build(v1_cgroup):
    require("root")
    require("v1_memory")
    require("proc_connector")
    group = v1_cgroup(256 * MIB)
    script = f"{sys.executable} -c '{HOLD}' & {sys.executable} -c '{HOLD}' & wait"
    started = []

    def start():
        job = Hog(Path("/usr/bin/env"), ["MEMGUARD_JOB=build", "sh", "-c", script], group)
        started.append(job)
        return job
    yield start
    for job in started:
        for pid in holders(job) if job.returncode is None else []:
            os.kill(pid, signal.SIGCONT)
        job.close()


def test_a_process_frozen_when_the_daemon_is_sigkilled_is_thawed_by_the_guard(tmp_path, build):
    d = started(tmp_path)
    try:
        job = build()
        pid = frozen_one(job)
        assert max(holders(job)) == pid, "the newest holder"
        assert [p for p in holders(job) if state(p) == "T"] == [pid], "the other one runs on"
    finally:
        d.stop(signal.SIGKILL)
    wait_until(lambda: state(pid) not in ("T", ""), timeout=10, what="the guard to thaw it")


def test_a_restarted_daemon_thaws_what_its_predecessor_froze(tmp_path, build):
    d = started(tmp_path)
    try:
        job = build()
        pid = frozen_one(job)
        guard = wait_until(lambda: guard_pid(d.state_dir), timeout=5, what="the guard")
        os.kill(guard, signal.SIGKILL)           # no guard, then no daemon: nothing thaws it...
    finally:
        d.stop(signal.SIGKILL)
    assert state(pid) == "T"
    again = started(tmp_path, when="usage_ratio > 2")
    try:
        wait_until(lambda: state(pid) not in ("T", ""), timeout=10, what="the new daemon to thaw it")
        assert "left frozen by a previous run" in again.log()
    finally:
        assert again.stop() == 0, again.log()


def test_a_clean_stop_thaws_everything(tmp_path, build):
    d = started(tmp_path)
    try:
        job = build()
        pid = frozen_one(job)
    finally:
        assert d.stop() == 0, d.log()
    assert state(pid) not in ("T", "")
    assert guard_pid(d.state_dir) is None, "the guard ended with the daemon"


@pytest.fixture
def own_freezer_cgroup():
    """A v1 freezer cgroup of the test's own (mgtest-*), removed afterwards,
    its processes thawed first."""
    top = Path("/sys/fs/cgroup/freezer")
    if not (top / "freezer.state").exists() and not top.is_dir():
        pytest.skip("no v1 freezer hierarchy mounted at /sys/fs/cgroup/freezer on this host")
    where = top / f"mgtest-{uuid.uuid4().hex}"
    where.mkdir()
    yield where
    (where / "freezer.state").write_text("THAWED")
    wait_until(lambda: not (where / "cgroup.procs").read_text().split(), timeout=10,
               what="the test's processes to leave the freezer cgroup")
    where.rmdir()


def test_a_process_with_a_cgroup_of_its_own_is_frozen_by_its_freezer(tmp_path, v1_cgroup, own_freezer_cgroup):
    """The newest holder moves into a freezer cgroup of its own before it
    execs: memguard freezes that cgroup (FROZEN), not by SIGSTOP; the guard
    thaws it the same way when the daemon is SIGKILLed."""
    require("proc_connector")
    group = v1_cgroup(256 * MIB)
    own = tmp_path / "own.sh"
    own.write_text(f"echo $$ > {own_freezer_cgroup}/cgroup.procs\nexec {sys.executable} -c '{HOLD}'\n")
    script = f"{sys.executable} -c '{HOLD}' & sleep 1; sh {own} & wait"
    d = started(tmp_path)
    job = None
    try:
        job = Hog(Path("/usr/bin/env"), ["MEMGUARD_JOB=build", "sh", "-c", script], group)
        state_file = own_freezer_cgroup / "freezer.state"
        try:
            wait_until(lambda: state_file.read_text().strip() == "FROZEN", timeout=30,
                       what="the holder's own cgroup to be frozen")
        except AssertionError as e:
            raise AssertionError(f"{e}\n{d.log()}") from None
        (pid,) = [int(p) for p in (own_freezer_cgroup / "cgroup.procs").read_text().split()]
        assert state(pid) != "T", "frozen by its cgroup, not stopped by a signal"
        frozen = json.loads((Path(d.state_dir) / "frozen.json").read_text())
        assert [(f["pid"], f["how"]) for f in frozen] == [(pid, str(state_file))]
    finally:
        d.stop(signal.SIGKILL)
    try:
        wait_until(lambda: state_file.read_text().strip() == "THAWED", timeout=10, what="the guard to thaw the cgroup")
    finally:
        if job is not None:
            for child in holders(job) if job.returncode is None else []:
                os.kill(child, signal.SIGKILL)
            job.close()

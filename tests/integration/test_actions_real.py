"""Registered jobs are signalled before the kill (issue 18): real memory
cgroups, real rules, real signals through pidfds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.daemon import Daemon, ctl
from tests.kernel import MIB, Hog, require, wait_until

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parent.parent.parent
COOPERATIVE = REPO / "tests" / "helpers" / "cooperative.py"


def config(tmp_path, dry_run: bool = False) -> str:
    return (f"sampling:\n  interval: 250ms\n  processes_interval: 500ms\n  discovery_interval: 250ms\n"
            f"incidents:\n  settle: 1s\n"
            f"rules:\n  files: ['{REPO / 'rules' / 'default.yaml'}']\n"
            f"actions:\n  dry_run: {'true' if dry_run else 'false'}\n")


@pytest.fixture
def daemon(tmp_path):
    require("root")
    require("v1_memory")
    require("proc_connector")
    d = Daemon(str(tmp_path), config=config(tmp_path), probes="  bpf: false\n")
    d.wait_for_probes({"procevents"})
    yield d
    assert d.stop() == 0, d.log()


def run_job(cgroup, *job_args: str) -> Hog:
    """`memguardctl run --on-warning USR1 -- cooperative.py ...` inside *cgroup*."""
    return Hog(Path(sys.executable), ["-m", "memguard.cli.main", "run", "--name", "grow", "--on-warning", "USR1",
                                      "--", sys.executable, str(COOPERATIVE), *job_args], cgroup)


def test_a_cooperative_job_is_warned_in_time_and_survives(daemon, v1_cgroup):
    # ~20 MB/s towards 512 MiB: it would reach the limit ~26 s after it starts.
    group = v1_cgroup(512 * MIB)
    daemon.wait_for_tick(lambda s: any(d["name"] == f"cgroup:{group.path}" for d in s["domains"]))
    job = run_job(group, "5", "0.25")
    try:
        line = job.wait_line("warned", timeout=60)
        assert job.wait_exit(10) == 0
    finally:
        job.close()
    held = int(line.split()[1])
    rate = 20 * MIB                      # bytes a second it grew
    lead = (512 * MIB - held) / rate     # seconds it still had
    assert lead >= 10, f"warned with {held / MIB:.0f} MiB held: {lead:.1f} s before the limit"
    status = daemon.wait_for_tick(lambda s: s["counters"]["actions"])   # published at the next tick
    (done,) = [a for a in status["counters"]["actions"] if a["kind"] == "signal"]
    assert (done["rule"], done["result"], done["count"]) == ("memory-running-out", "sent", 1)
    audit = [json.loads(x) for x in (Path(daemon.state_dir) / "actions.log").read_text().splitlines()]
    (entry,) = audit
    assert (entry["job"], entry["signal"], entry["result"]) == \
        (f"grow-{job.pid}", 10, "sent")
    assert entry["targets"] == [{"pid": job.pid, "result": "sent"}] and entry["tto_seconds"] > 0
    assert 'memguard_actions_total{kind="signal",result="sent",rule="memory-running-out"} 1.0' in daemon.metrics()
    # it freed its memory: once the rule clears, the daemon records a near miss with the lead it had

    def near_miss():
        listing = json.loads(ctl(daemon.socket, "--json", "incidents").stdout)["incidents"]
        return next((i for i in listing if i["fields"].get("kind") == "near_miss"), None)
    found = wait_until(near_miss, timeout=90, what="the near miss, after the rule's keep_firing_for")
    doc = json.loads(ctl(daemon.socket, "--json", "incident", "show", found["id"]).stdout)
    assert doc["domain"] == f"cgroup:{group.path}" and doc["jobs"] == [f"grow-{job.pid}"]
    assert doc["lead_seconds"] >= 10, doc


def test_an_uncooperative_job_is_killed_and_its_incident_says_how_it_was_warned(daemon, v1_cgroup):
    group = v1_cgroup(384 * MIB)
    daemon.wait_for_tick(lambda s: any(d["name"] == f"cgroup:{group.path}" for d in s["domains"]))
    job = run_job(group, "5", "0.25", "--ignore")
    try:
        assert job.wait_exit(60) == -9
    finally:
        job.close()

    def sealed():
        r = ctl(daemon.socket, "--json", "incidents")
        for i in json.loads(r.stdout)["incidents"]:
            if f"({job.pid})" in (i["fields"].get("victim") or "") and i["fields"].get("state") == "sealed":
                return json.loads(ctl(daemon.socket, "--json", "incident", "show", i["id"]).stdout)
        return None
    doc = wait_until(sealed, timeout=15, what="the sealed incident")
    (action,) = doc["actions"]
    assert (action["kind"], action["job"], action["signal"], action["result"]) == \
        ("signal", f"grow-{job.pid}", 10, "sent")
    assert action["t"] < -5, "signalled seconds before the kill"
    text = ctl(daemon.socket, "incident", "show", doc["id"]).stdout
    assert "1 action(s)" in text


def test_a_dry_run_decides_and_counts_but_sends_nothing(tmp_path, v1_cgroup):
    require("root")
    require("v1_memory")
    d = Daemon(str(tmp_path), config=config(tmp_path, dry_run=True), probes="  bpf: false\n")
    try:
        group = v1_cgroup(384 * MIB)
        d.wait_for_tick(lambda s: any(x["name"] == f"cgroup:{group.path}" for x in s["domains"]), timeout=30)
        job = run_job(group, "5", "0.25", )
        try:
            assert job.wait_exit(60) == -9, "not told: it grew into the kill"
        finally:
            job.close()
        status = d.wait_for_tick(lambda s: s["counters"]["actions"], timeout=10)
        assert [(a["result"], a["count"]) for a in status["counters"]["actions"]] == [("dry_run", 1)]
    finally:
        assert d.stop() == 0, d.log()


def test_a_hook_named_by_an_unprivileged_users_job_runs_as_that_user(daemon, v1_cgroup, public_dir):
    from tests.kernel import NOBODY, as_nobody, public_copy, unprivileged_python
    python = unprivileged_python()
    if python is None:
        pytest.skip("no interpreter the unprivileged user can run")
    script = public_copy(COOPERATIVE, public_dir)
    out = public_dir / "out"
    out.mkdir()
    out.chmod(0o777)
    group = v1_cgroup(384 * MIB)
    daemon.wait_for_tick(lambda s: any(d["name"] == f"cgroup:{group.path}" for d in s["domains"]))
    argv = as_nobody(["env", f"MEMGUARD_JOB=hooked,hook=id -u > {out}/uid; id -g >> {out}/uid",
                      python, str(script), "5", "0.25", "--ignore"])
    job = Hog(Path(argv[0]), argv[1:], group)
    try:
        seen = wait_until(lambda: (out / "uid").exists() and len((out / "uid").read_text().split()) == 2 and
                          (out / "uid").read_text().split(), timeout=60, what="the hook to run (both lines)")
        assert seen == [str(NOBODY), str(NOBODY)], "the hook ran as the job's user and group"
        assert job.wait_exit(60) == -9, "it ignored the warning"
    finally:
        job.close()
    audit = [json.loads(x) for x in (Path(daemon.state_dir) / "actions.log").read_text().splitlines()]
    (entry,) = [a for a in audit if a["kind"] == "hook"]
    assert (entry["result"], entry["uid"], entry["targets"][0]["uid"], entry["targets"][0]["exit_status"]) == \
        ("ok", NOBODY, NOBODY, 0)


def test_a_training_script_with_the_client_halves_its_batch_and_survives(daemon, v1_cgroup, monkeypatch):
    # It grows 4 MiB more each 0.25 s step (16 MiB/s, accelerating share):
    # 120 steps would need ~29 GiB; it gets 320 MiB.
    group = v1_cgroup(320 * MIB)
    daemon.wait_for_tick(lambda s: any(d["name"] == f"cgroup:{group.path}" for d in s["domains"]))
    helper = REPO / "tests" / "helpers" / "halving_trainer.py"
    monkeypatch.setenv("MEMGUARD_SOCKET", daemon.socket)   # the test daemon's, not the system's
    trainer = Hog(Path(sys.executable), [str(helper), "120", "4"], group)
    try:
        job = trainer.wait_line("registered", timeout=30).split()[1]
        assert job == f"trainer-{trainer.pid}"
        trainer.wait_line("halved", timeout=60)
        assert trainer.wait_exit(90) == 0, "it finished its steps"
    finally:
        trainer.close()
    status = daemon.wait_for_tick(lambda s: s["counters"]["actions"])
    notified = [a for a in status["counters"]["actions"] if a["kind"] == "notify"]
    assert notified and all(a["result"] == "sent" for a in notified), status["counters"]["actions"]


def test_a_job_registered_by_a_shell_warns_the_grandchild_that_grows(daemon, v1_cgroup):
    # MEMGUARD_JOB set for a shell, which starts a shell, which starts the
    # process that grows; target=largest sends the signal to the one growing.
    group = v1_cgroup(512 * MIB)
    daemon.wait_for_tick(lambda s: any(d["name"] == f"cgroup:{group.path}" for d in s["domains"]))
    inner = f"{sys.executable} {COOPERATIVE} 5 0.25; true"
    argv = ["env", "MEMGUARD_JOB=shelled,warning=USR1,target=largest", "sh", "-c", f"sh -c '{inner}'; true"]
    job = Hog(Path("/usr/bin/env"), argv[1:], group)
    try:
        line = job.wait_line("warned", timeout=60)
        assert job.wait_exit(10) == 0, "the shells finish once the grandchild has"
    finally:
        job.close()
    lead = (512 * MIB - int(line.split()[1])) / (20 * MIB)
    assert lead >= 10, f"{lead:.1f} s before the limit"
    audit = [json.loads(x) for x in (Path(daemon.state_dir) / "actions.log").read_text().splitlines()]
    (entry,) = audit
    assert entry["job"] == f"shelled-{job.pid}" and entry["targets"][0]["pid"] != job.pid, "the grandchild"


def jobs(d: Daemon) -> list[dict]:
    return json.loads(ctl(d.socket, "jobs", "--json").stdout)["jobs"]


class _Newcomer:
    """A process the kernel gave *pid* again, freed a moment ago
    (ns_last_pid set to the pid before it, then a fork; another fork on the
    host can take it first: then again).  A bare fork of this test, with no
    exec, so no exec event tells the daemon it is another process: only the
    start time does.  SIGUSR1 would end it."""

    def __init__(self, pid: int, attempts: int = 50) -> None:
        for _ in range(attempts):
            with open("/proc/sys/kernel/ns_last_pid", "w") as f:
                f.write(str(pid - 1))
            child = os.fork()
            if child == 0:
                signal.signal(signal.SIGUSR1, signal.SIG_DFL)
                signal.alarm(120)
                while True:
                    signal.pause()
            if child == pid:
                self.pid = pid
                return
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
        pytest.fail(f"the kernel did not hand out pid {pid} again in {attempts} forks")

    ended: int | None = None

    def status(self) -> int | None:
        """None while it runs, else the signal that ended it."""
        if self.ended is None:
            done, status = os.waitpid(self.pid, os.WNOHANG)
            self.ended = os.WTERMSIG(status) if done else None
        return self.ended

    def close(self) -> None:
        if self.status() is None:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)


def test_a_registered_process_whose_pid_is_reused_is_not_signalled(daemon, v1_cgroup):
    # One job of two members: the shell that registered it, which becomes
    # the process that grows, and a `sleep` it forked first.  The sleep ends
    # and the kernel gives its pid to a new, unregistered process; when the
    # warning goes to every member (target=all), the new one must not get
    # it, while the grower still does.
    group = v1_cgroup(384 * MIB)
    daemon.wait_for_tick(lambda s: any(d["name"] == f"cgroup:{group.path}" for d in s["domains"]))
    script = f"sleep 300 & echo member $!; wait $!; exec {sys.executable} {COOPERATIVE} 5 0.25"
    job = Hog(Path("/usr/bin/env"), ["MEMGUARD_JOB=reuse,warning=USR1,target=all", "sh", "-c", script], group)
    newcomer = None
    try:
        member = int(job.wait_line("member", timeout=10).split()[1])
        wait_until(lambda: any(member in j["pids"] for j in jobs(daemon)), timeout=10,
                   what="the forked sleep to join the job")
        os.kill(member, signal.SIGKILL)          # our grandchild; the shell reaps it and execs the grower
        wait_until(lambda: not os.path.exists(f"/proc/{member}"), timeout=10, what="the sleep to be reaped")
        newcomer = _Newcomer(member)
        line = job.wait_line("warned", timeout=60)
        assert job.wait_exit(10) == 0, "the grower was told and stopped"
        assert newcomer.status() is None, f"the process that took pid {member} was signalled"
    finally:
        job.close()
        if newcomer is not None:
            newcomer.close()
    assert int(line.split()[1]) > 0
    audit = [json.loads(x) for x in (Path(daemon.state_dir) / "actions.log").read_text().splitlines()]
    (entry,) = audit
    sent = {t["pid"] for t in entry["targets"] if t["result"] == "sent"}
    assert member not in sent and job.pid in sent, entry["targets"]

"""Job registration (issue 18): the MEMGUARD_JOB value, and the table of
which process belongs to which job, on a fake clock."""

import signal

import pytest

from memguard.clock import FakeClock
from memguard.config import Config
from memguard.engine.engine import Engine, SourceRun
from memguard.engine.messages import ProbeRun, ProcessesSeen
from memguard.jobs.spec import JobSpec, JobSpecError, format_job, parse_job
from memguard.model import ProcessInfo
from memguard.probes.base import ProbeReading
from memguard.sources.base import Reading


@pytest.mark.parametrize("value, spec", [
    ("train", JobSpec("train")),
    ("train,warning=USR1,critical=SIGTERM", JobSpec("train", signal.SIGUSR1, signal.SIGTERM)),
    ("build,warning=10,target=all", JobSpec("build", 10, None, "all")),
    ("train,hook=/usr/bin/ckpt --fast, --dir=/a,b", JobSpec("train", hook="/usr/bin/ckpt --fast, --dir=/a,b")),
])
def test_a_registration_is_read(value, spec):
    assert parse_job(value) == spec
    assert parse_job(format_job(spec)) == spec


@pytest.mark.parametrize("value, field", [
    ("", "name"), ("two words", "name"), ("x" * 65, "name"),
    ("train,warning=USR9", "warning"), ("train,critical=", "critical"), ("train,colour=red", "colour"),
    ("train,target=everyone", "target"), ("train,warning", "warning"), ("train,hook=", "hook"),
    ("train,warning=USR1,warning=USR2", "warning"),
])
def test_a_bad_registration_names_its_field(value, field):
    with pytest.raises(JobSpecError) as e:
        parse_job(value)
    assert e.value.field == field and str(e.value).startswith(f"MEMGUARD_JOB: {field}: ")


def proc(pid, ppid, env=None, start=100.0, comm="python3", cgroup="/a", uid=1000):
    return ProcessInfo(pid, comm, 1 << 20, cgroup, None, start_time=start, uid=uid, ppid=ppid, job_env=env)


def engine():
    clock = FakeClock()
    return Engine(Config(), clock.now(), "t"), clock


def execs(e, clock, *processes):
    return e.step([], clock.now(), events=[ProbeRun("procevents", "active", None,
                                                    ProbeReading(processes=list(processes)))])


def test_a_compiler_exec_d_by_a_worker_forked_in_the_same_batch_joins_the_job():
    """A build tool (10) forks a worker (11) that never execs, and the worker
    runs cc1plus (12), all between two reads of the proc connector: the
    batch lists execs and forks apart, and the compiler must join the job,
    not lead one of its own (a leader is never frozen)."""
    e, clock = engine()
    execs(e, clock, proc(10, 1, "build", comm="bazel"))
    batch = ProbeReading(processes=[proc(12, 11, "build", comm="cc1plus")],
                         forks=[(10, 11, 100.0), (11, 12, 100.0)])
    e.step([], clock.now(), events=[ProbeRun("procevents", "active", None, batch)])
    (job,) = e.snapshot(clock.now()).jobs
    assert (job["id"], job["leader"], job["pids"]) == ("build-10", 10, [10, 11, 12])


def test_a_job_and_its_descendants_register_through_exec_and_fork():
    e, clock = engine()
    fx = execs(e, clock, proc(10, 1, "train,warning=USR1"), proc(11, 10, "train,warning=USR1"),
               proc(20, 1))
    assert ("job registered", {"job": "train-10", "pid": 10, "comm": "python3", "uid": 1000}) in fx.log
    # a data loader's worker forks and never execs
    e.step([], clock.now(), events=[ProbeRun("procevents", "active", None, ProbeReading(forks=[(11, 12, 101.0), (20, 21, 101.0)]))])
    (job,) = e.snapshot(clock.now()).jobs
    assert (job["id"], job["leader"], job["pids"], job["registration"]["warning"]) == \
        ("train-10", 10, [10, 11, 12], "SIGUSR1")
    assert e.process_table[11].job == "train-10" and e.process_table[20].job is None
    # a second run of the same name, started apart, is another job
    execs(e, clock, proc(30, 1, "train"))
    assert [j["id"] for j in e.snapshot(clock.now()).jobs] == ["train-10", "train-30"]


def test_a_reused_pid_is_not_a_member_and_a_job_ends_with_its_last_process():
    e, clock = engine()
    execs(e, clock, proc(10, 1, "train", start=100.0), proc(11, 10, "train", start=101.0))
    e.step([], clock.now(), events=[ProbeRun("procevents", "active", None, ProbeReading(exits=[10]))])
    (job,) = e.snapshot(clock.now()).jobs
    assert (job["leader"], job["pids"]) == (11, [11])
    execs(e, clock, proc(11, 1, None, start=999.0, comm="sshd"))   # pid 11 again, another process
    assert e.snapshot(clock.now()).jobs == ()
    assert e.process_table[11].job is None


def test_a_malformed_value_is_refused_and_shown():
    e, clock = engine()
    fx = execs(e, clock, proc(10, 1, "train,warning=USR9"))
    assert fx.log[-1][0] == "job registration refused" and fx.log[-1][1]["level"] == "warning"
    snap = e.snapshot(clock.now()).to_json()
    assert snap["jobs"] == [] and snap["jobs_rejected"] == [
        {"pid": 10, "error": "MEMGUARD_JOB: warning: 'USR9' is not a signal (USR1, SIGTERM, 10, ...)"}]


def test_members_a_scan_no_longer_sees_are_gone_unless_they_joined_after_it():
    e, clock = engine()
    execs(e, clock, proc(10, 1, "train"), proc(11, 10, "train"))
    scan_started = clock.now().mono
    clock.advance(1)
    e.step([], clock.now(), events=[ProbeRun("procevents", "active", None, ProbeReading(forks=[(10, 12, 101.0)]))])
    clock.advance(1)
    e.step([SourceRun("processes", reading=Reading(processes=[], pids={10}, pids_at=scan_started + 0.5))],
           clock.now())
    (job,) = e.snapshot(clock.now()).jobs
    assert job["pids"] == [10, 12], "11 exited unseen; 12 forked after the scan began"


def test_jobs_registered_before_the_daemon_started_are_found_by_the_first_scan():
    e, clock = engine()
    known = [proc(10, 1, "train"), proc(11, 10, "train"), proc(20, 1)]
    e.step([SourceRun("processes", reading=Reading(processes=[], known=known, pids={10, 11, 20}))], clock.now())
    (job,) = e.snapshot(clock.now()).jobs
    assert (job["id"], job["pids"]) == ("train-10", [10, 11])
    e.step([], clock.now(), events=[ProcessesSeen((proc(40, 11, "train"),))])
    assert e.snapshot(clock.now()).jobs[0]["pids"] == [10, 11, 40]


def test_a_jobs_memory_and_growth_come_from_the_scans_of_proc():
    e, clock = engine()
    execs(e, clock, proc(10, 1, "train"), proc(11, 10, "train"), proc(20, 1))
    for i in range(7):   # every 5 s: the job grows 1 MiB/s, the stranger does not count
        clock.advance(5)
        e.step([SourceRun("processes", reading=Reading(
            processes=[], pids={10, 11, 20}, pids_at=clock.now().mono,
            rss={10: (100 + 5 * i) << 20, 11: 50 << 20, 20: 999 << 20}))], clock.now())
    (job,) = e.snapshot(clock.now()).jobs
    assert job["rss_bytes"] == (130 + 50) << 20
    assert job["growth_bytes_per_second"] == pytest.approx(1 << 20, rel=0.01)
    from memguard.cli.render import render_jobs
    assert "+60.0MiB/min" in render_jobs({"jobs": [job]})

"""GPU domains from NVML (issue 20): the real pynvml on the fake
libnvidia-ml.so.1 (tests/helpers/fake_nvml.c), scripted through the file it
rereads on every call; and, where there is a real driver, the figures of
the real GPUs held against what NVML itself says (the ``nvml`` fixture)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from memguard.clock import FakeClock
from memguard.sources.base import Unavailable
from memguard.sources.gpu import GpuSource

pynvml = pytest.importorskip("pynvml", reason="nvidia-ml-py is installed by `make test`; run that")

GiB = 2**30
A100 = "device 0 42949672960 943718400 {used} 12 5 {state} GPU-11111111-2222-3333-4444-555555555555 NVIDIA A100-SXM4-40GB"
L4 = "device 1 25769803776 0 0 0 0 v1 GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee NVIDIA L4"
# Two MIG instances of the A100 (which the first puts in MIG mode), in slots 0 and 2.
MIG0 = ("mig 0 0 10200547328 0 {used} {state} MIG-aaaaaaaa-1111-2222-3333-444444444444 "
        "NVIDIA A100-SXM4-40GB MIG 2g.10gb")
MIG2 = ("mig 0 2 5100273664 0 {used} {state} MIG-bbbbbbbb-1111-2222-3333-444444444444 "
        "NVIDIA A100-SXM4-40GB MIG 1g.5gb")


@pytest.fixture
def scripted(fake_nvml, tmp_path, monkeypatch):
    """``scripted(*lines)`` scripts the fake driver in this process; pynvml
    is shut down after."""
    state = tmp_path / "nvml-state"
    monkeypatch.setenv("FAKE_NVML_STATE", str(state))

    def script(*lines: str) -> None:
        state.write_text("".join(line + "\n" for line in lines))
    yield script
    try:
        pynvml.nvmlShutdown()
    except pynvml.NVMLError:
        pass


def test_each_gpu_is_a_domain_limited_to_what_allocations_can_reach(scripted):
    scripted(A100.format(used=GiB, state="ok"), L4, "process 0 1234 1073741824", "process 0 99 -1")
    reading = GpuSource().collect(FakeClock().now())
    a100, l4 = reading.samples
    assert (a100.domain, a100.kind, a100.used, a100.working_set, a100.limit) == \
        ("gpu:0", "gpu", GiB, GiB, 42949672960 - 943718400), "v2: the reserved memory is never allocatable"
    assert (l4.domain, l4.used, l4.limit) == ("gpu:1", 0, 25769803776), "v1 (older driver): used includes reserved"
    devices = reading.facts["devices"]
    assert devices["gpu:0"]["uuid"] == "GPU-11111111-2222-3333-4444-555555555555"
    assert devices["gpu:0"]["name"] == "NVIDIA A100-SXM4-40GB" and devices["gpu:0"]["memory_info"] == "v2"
    assert devices["gpu:1"]["memory_info"] == "v1"
    assert devices["gpu:0"]["processes"] == [{"pid": 1234, "used_bytes": GiB}, {"pid": 99, "used_bytes": None}]
    assert (devices["gpu:0"]["utilization_gpu"], devices["gpu:0"]["utilization_memory"]) == (12, 5)
    assert reading.facts["driver"] == "fake-nvml-1" and reading.tracked == {"gpu:0", "gpu:1"}


def test_a_gpu_lost_at_run_time_is_skipped_counted_and_still_tracked(scripted):
    source = GpuSource()
    scripted(A100.format(used=GiB, state="ok"), L4)
    source.collect(FakeClock().now())
    scripted(A100.format(used=GiB, state="lost"), L4)
    reading = source.collect(FakeClock().now())
    assert [s.domain for s in reading.samples] == ["gpu:1"], "the other GPU goes on"
    assert reading.skipped["nvml_error"] == 1 and reading.tracked == {"gpu:0", "gpu:1"}
    lost = reading.facts["devices"]["gpu:0"]
    assert lost["error"] == "GPU is lost" and lost["uuid"] == "GPU-11111111-2222-3333-4444-555555555555"
    scripted(A100.format(used=2 * GiB, state="ok"), L4)
    assert [s.used for s in source.collect(FakeClock().now()).samples] == [2 * GiB, 0], "and comes back"


def test_no_driver_is_unavailable_said_why(scripted):
    scripted("init 9")       # NVML_ERROR_DRIVER_NOT_LOADED
    with pytest.raises(Unavailable, match="Driver Not Loaded"):
        GpuSource().collect(FakeClock().now())


def test_a_failed_init_is_tried_again_a_minute_later_then_twice_as_long(scripted):
    source, clock = GpuSource(), FakeClock()
    scripted("init 9")
    with pytest.raises(Unavailable, match="Driver Not Loaded"):
        source.collect(clock.now())
    assert source.idle_until == clock.mono + 60.0, "the daemon does not run it before then"
    clock.mono += 60.0
    with pytest.raises(Unavailable, match="Driver Not Loaded"):   # tried again: still no driver
        source.collect(clock.now())
    assert source.idle_until == clock.mono + 120.0
    scripted(A100.format(used=GiB, state="ok"))       # the driver is loaded now
    clock.mono += 119.0
    with pytest.raises(Unavailable, match="Driver Not Loaded"):   # not asked again yet
        source.collect(clock.now())
    clock.mono += 1.0
    assert [s.domain for s in source.collect(clock.now()).samples] == ["gpu:0"]
    assert source.idle_until == 0.0


def test_the_wait_between_tries_stops_doubling_at_an_hour(scripted):
    source, clock = GpuSource(), FakeClock()
    scripted("init 9")
    waits = []
    for _ in range(9):
        with pytest.raises(Unavailable):
            source.collect(clock.now())
        waits.append(source.idle_until - clock.mono)
        clock.mono = source.idle_until
    assert waits == [60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 3600.0, 3600.0, 3600.0]


def test_each_mig_instance_is_a_domain_with_its_own_limit_and_processes(scripted):
    scripted(A100.format(used=5 * GiB, state="ok"), MIG0.format(used=4 * GiB, state="ok"),
             MIG2.format(used=GiB, state="v1"), L4, "mig-process 0 0 4242 4294967296",
             "process 0 4242 4294967296")     # what the GPU itself lists in MIG mode: every instance's
    reading = GpuSource().collect(FakeClock().now())
    assert [(s.domain, s.used, s.limit) for s in reading.samples] == [
        ("gpu:0", 5 * GiB, 42949672960 - 943718400), ("gpu:0/mig:0", 4 * GiB, 10200547328),
        ("gpu:0/mig:2", GiB, 5100273664), ("gpu:1", 0, 25769803776)], "slot 1 is empty"
    devices = reading.facts["devices"]
    mig0 = devices["gpu:0/mig:0"]
    assert (mig0["parent"], mig0["index"], mig0["mig_index"], mig0["uuid"], mig0["name"]) == \
        ("gpu:0", 0, 0, "MIG-aaaaaaaa-1111-2222-3333-444444444444", "NVIDIA A100-SXM4-40GB MIG 2g.10gb")
    assert mig0["processes"] == [{"pid": 4242, "used_bytes": 4 * GiB}] and mig0["memory_info"] == "v2"
    assert (mig0["utilization_gpu"], mig0["utilization_memory"]) == (None, None), "NVML has none per instance"
    assert devices["gpu:0/mig:2"]["memory_info"] == "v1" and devices["gpu:0/mig:2"]["processes"] == []
    gpu0 = devices["gpu:0"]
    assert gpu0["mig_devices"] == ["gpu:0/mig:0", "gpu:0/mig:2"] and gpu0["utilization_gpu"] is None
    assert gpu0["processes"] == [], "a process is listed on its instance, not also on the GPU"
    assert (devices["gpu:1"]["mig_devices"], devices["gpu:1"]["utilization_gpu"]) == ([], 0), "no MIG: as before"
    assert reading.tracked == {"gpu:0", "gpu:0/mig:0", "gpu:0/mig:2", "gpu:1"} and not reading.skipped


def test_a_mig_instance_that_errors_is_skipped_alone(scripted):
    source = GpuSource()
    both = (MIG0.format(used=GiB, state="ok"), MIG2.format(used=GiB, state="ok"))
    scripted(A100.format(used=GiB, state="ok"), *both, L4)
    source.collect(FakeClock().now())
    scripted(A100.format(used=GiB, state="ok"), both[0], MIG2.format(used=GiB, state="lost"), L4)
    reading = source.collect(FakeClock().now())
    assert [s.domain for s in reading.samples] == ["gpu:0", "gpu:0/mig:0", "gpu:1"], "the GPU and the others go on"
    assert reading.skipped["nvml_error"] == 1 and "gpu:0/mig:2" in reading.tracked
    lost = reading.facts["devices"]["gpu:0/mig:2"]
    assert (lost["error"], lost["parent"], lost["uuid"]) == \
        ("GPU is lost", "gpu:0", "MIG-bbbbbbbb-1111-2222-3333-444444444444")

    scripted(A100.format(used=GiB, state="lost"), *both, L4)
    reading = source.collect(FakeClock().now())
    assert [s.domain for s in reading.samples] == ["gpu:1"] and reading.skipped["nvml_error"] == 3
    assert {d for d, f in reading.facts["devices"].items() if f.get("error")} == \
        {"gpu:0", "gpu:0/mig:0", "gpu:0/mig:2"}, "a lost GPU's instances are lost with it, and stay domains"

    scripted(A100.format(used=GiB, state="ok"), both[0], L4)
    reading = source.collect(FakeClock().now())
    assert reading.tracked == {"gpu:0", "gpu:0/mig:0", "gpu:1"} and not reading.skipped, "a destroyed instance goes"


def test_gpu_domains_reach_status_rules_and_metrics(scripted):
    """Through the engine: the GPU is a domain with a prediction, a rule
    matching its name fires, and /metrics has its figures and its
    processes' memory."""
    from memguard.config import Config
    from memguard.engine.engine import Engine, SourceRun
    from memguard.engine.messages import RulesLoaded
    from memguard.export.metrics import Metrics
    from memguard.rules.load import parse_rules
    clock = FakeClock()
    e = Engine(Config(), clock.now(), "t")
    e.step([], clock.now(), events=[RulesLoaded(tuple(parse_rules(
        "rules:\n  - name: gpu-full\n    match: {gpu: '*A100*'}\n    when: usage_ratio > 0.9\n")), (), 0.0)])
    source = GpuSource()
    fired = []
    for used in (10, 20, 30, 39):
        scripted(A100.format(used=used * GiB, state="ok"), L4, f"process 0 4242 {used * GiB}")
        clock.advance(1)
        fx = e.step([SourceRun("gpu", reading=source.collect(clock.now()))], clock.now())
        fired += [(t.rule, t.domain) for t in fx.transitions if t.kind == "fire"]
    assert fired == [("gpu-full", "gpu:0")], "the A100 at 39 of 39.1 GiB; the L4 matches no rule"
    status = e.snapshot(clock.now()).to_json()
    (gpu0,) = [d for d in status["domains"] if d["name"] == "gpu:0"]
    assert gpu0["kind"] == "gpu" and gpu0["limit_bytes"] == 42949672960 - 943718400
    text = Metrics().render(e.snapshot(clock.now())).decode()
    for line in ('memguard_gpu_info{domain="gpu:0",name="NVIDIA A100-SXM4-40GB",'
                 'uuid="GPU-11111111-2222-3333-4444-555555555555"} 1.0',
                 'memguard_gpu_memory_reserved_bytes{domain="gpu:0"} 9.437184e+08',
                 'memguard_gpu_process_memory_bytes{domain="gpu:0",job="",pid="4242"} 4.1875931136e+10',
                 'memguard_gpu_up{domain="gpu:1"} 1.0'):
        assert line in text, line


def test_the_job_whose_process_holds_the_gpu_memory_gets_its_signal(scripted):
    """A training job registered on the host holds memory on gpu:0: a rule
    about the GPU warns it, and the job shows in that domain."""
    import signal

    from memguard.config import Config
    from memguard.engine.engine import Engine, SourceRun
    from memguard.engine.messages import ProbeRun, RulesLoaded
    from memguard.model import ProcessInfo
    from memguard.probes.base import ProbeReading
    from memguard.rules.load import parse_rules
    clock = FakeClock()
    e = Engine(Config(), clock.now(), "t")
    e.step([], clock.now(), events=[RulesLoaded(tuple(parse_rules(
        "rules:\n  - name: gpu-full\n    match: {kind: gpu}\n    when: usage_ratio > 0.9\n")), (), 0.0)])
    trainer = ProcessInfo(4242, "python3", 2 * GiB, "/", None, start_time=100.0, uid=1000, ppid=1,
                          job_env="train,warning=USR1")
    bystander = ProcessInfo(4343, "python3", 2 * GiB, "/", None, start_time=100.0, uid=1000, ppid=1,
                            job_env="other,warning=USR1")
    e.step([], clock.now(), events=[ProbeRun("procevents", "active", None,
                                             ProbeReading(processes=[trainer, bystander]))])
    source = GpuSource()
    actions = []
    for used in (10, 30, 39):
        scripted(A100.format(used=used * GiB, state="ok"), L4, f"process 0 4242 {used * GiB}", "process 1 4343 1024")
        clock.advance(1)
        actions += e.step([SourceRun("gpu", reading=source.collect(clock.now()))], clock.now()).actions
    assert [(a.kind, a.domain, a.job, a.signal, a.targets) for a in actions] == \
        [("signal", "gpu:0", "train-4242", signal.SIGUSR1, ((4242, 100.0),))], "not the job on the other GPU"
    (train,) = [j for j in e.snapshot(clock.now()).jobs if j["id"] == "train-4242"]
    assert train["domain"] == "host" and train["gpu_bytes"] == {"gpu:0": 39 * GiB}


def test_a_job_on_a_mig_instance_is_warned_when_its_instance_fills(scripted):
    """The instance fills long before the GPU: its rule fires, its job is
    told, and the history (memguardctl profile) and /metrics name it."""
    import signal

    from memguard.config import Config
    from memguard.engine.engine import Engine, SourceRun
    from memguard.engine.messages import ProbeRun, RulesLoaded
    from memguard.export.metrics import Metrics
    from memguard.model import ProcessInfo
    from memguard.probes.base import ProbeReading
    from memguard.rules.load import parse_rules
    clock = FakeClock()
    e = Engine(Config(), clock.now(), "t")
    e.step([], clock.now(), events=[RulesLoaded(tuple(parse_rules(
        "rules:\n  - name: mig-full\n    match: {domain: 'gpu:*/mig:*'}\n    when: usage_ratio > 0.9\n")), (), 0.0)])
    trainer = ProcessInfo(4242, "python3", 2 * GiB, "/", None, start_time=100.0, uid=1000, ppid=1,
                          job_env="train,warning=USR1")
    e.step([], clock.now(), events=[ProbeRun("procevents", "active", None, ProbeReading(processes=[trainer]))])
    source = GpuSource()
    actions = []
    for used in (2, 6, 9):       # of the instance's 9.5 GiB
        scripted(A100.format(used=(used + 1) * GiB, state="ok"), MIG0.format(used=used * GiB, state="ok"),
                 MIG2.format(used=GiB, state="ok"), L4, f"mig-process 0 0 4242 {used * GiB}")
        clock.advance(1)
        actions += e.step([SourceRun("gpu", reading=source.collect(clock.now()))], clock.now()).actions
    assert [(a.kind, a.domain, a.job, a.signal) for a in actions] == \
        [("signal", "gpu:0/mig:0", "train-4242", signal.SIGUSR1)], "the GPU itself is far from full"
    (train,) = e.snapshot(clock.now()).jobs
    assert train["gpu_bytes"] == {"gpu:0/mig:0": 9 * GiB}
    history = e.history(["gpu:0/mig:0"], 10, clock.now().mono)
    assert list(history) == ["gpu:0/mig:0"] and history["gpu:0/mig:0"]["used_bytes"][-1] == 9 * GiB
    text = Metrics().render(e.snapshot(clock.now())).decode()
    for line in ('memguard_gpu_info{domain="gpu:0/mig:0",name="NVIDIA A100-SXM4-40GB MIG 2g.10gb",'
                 'uuid="MIG-aaaaaaaa-1111-2222-3333-444444444444"} 1.0',
                 'memguard_gpu_memory_total_bytes{domain="gpu:0/mig:0"} 1.0200547328e+10',
                 'memguard_gpu_process_memory_bytes{domain="gpu:0/mig:0",job="train-4242",pid="4242"} 9.663676416e+09',
                 'memguard_gpu_up{domain="gpu:0/mig:2"} 1.0'):
        assert line in text, line
    assert 'memguard_gpu_utilization_ratio{domain="gpu:0/mig:0"}' not in text, "None: no utilization per instance"


def test_a_rule_reads_a_jobs_allocator_fragmentation():
    from memguard.config import Config
    from memguard.engine.engine import Engine
    from memguard.engine.messages import AllocatorReported, RulesLoaded
    from memguard.rules.load import parse_rules

    from .test_actions import register, tick
    clock = FakeClock()
    e = Engine(Config(), clock.now(), "t")
    e.step([], clock.now(), events=[RulesLoaded(tuple(parse_rules(
        "rules:\n  - name: fragmented\n    when: job.gpu_fragmentation > 0.3\n    severity: info\n")), (), 0.0)])
    tick(e, clock, 10 * 2**20)
    register(e, clock, 10, "train")
    for reserved, fires in ((8, []), (12, [("fragmented", "cgroup:/a", "train-10")])):
        e.step([], clock.now(), events=[AllocatorReported(10, 0, {"allocated_bytes": 6 * GiB,
                                                                   "reserved_bytes": reserved * GiB})])
        fx = tick(e, clock, 10 * 2**20)
        assert [(t.rule, t.domain, t.job) for t in fx.transitions if t.kind == "fire"] == fires
    e.step([], clock.now(), events=[AllocatorReported(99, 0, {"allocated_bytes": 1})])
    assert list(e.allocators) == ["train-10"], "a process of no job: nothing kept"


# Run in a process of its own on the NVML the test chose (this one holds the
# fake): what GpuSource reads.
READ_SOURCE = """
import json
from memguard.clock import FakeClock
from memguard.sources.gpu import GpuSource
reading = GpuSource().collect(FakeClock().now())
print(json.dumps({"samples": {s.domain: [s.used, s.limit] for s in reading.samples},
                  "devices": reading.facts["devices"]}))
"""
# How far NVML's used memory may move between its reads and GpuSource's on a
# real GPU at rest (a process starting between them, with its ~500 MiB CUDA
# context, shows in NVML's reads before and after).
TOLERANCE = 64 * 2**20


def test_every_device_nvml_lists_is_a_domain_with_nvmls_own_figures(nvml):
    before = nvml.devices()
    done = subprocess.run([sys.executable, "-c", READ_SOURCE], env={**os.environ, **nvml.env},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    reading = json.loads(done.stdout)
    after = nvml.devices()
    assert set(reading["samples"]) == set(before) == set(after), "each GPU and MIG device NVML lists, no other"
    for domain, (used, limit) in reading["samples"].items():
        was, now = before[domain], after[domain]
        assert limit == was["total"] - (was["reserved"] or 0), domain
        assert min(was["used"], now["used"]) - TOLERANCE <= used <= max(was["used"], now["used"]) + TOLERANCE, domain
        device = reading["devices"][domain]
        assert (device["name"], device["uuid"]) == (was["name"], was["uuid"])
        assert set(was["pids"]) & set(now["pids"]) <= {p["pid"] for p in device["processes"]}, \
            f"{domain}: the processes NVML listed before and after"

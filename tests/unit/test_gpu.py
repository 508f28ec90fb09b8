"""GPU domains from NVML (issue 20): the real pynvml on the fake
libnvidia-ml.so.1 (tests/helpers/fake_nvml.c), scripted through the file it
rereads on every call."""

from __future__ import annotations

import pytest

from memguard.clock import FakeClock
from memguard.sources.base import Unavailable
from memguard.sources.gpu import GpuSource

pynvml = pytest.importorskip("pynvml", reason="nvidia-ml-py is installed by `make test`; run that")

GiB = 2**30
A100 = "device 0 42949672960 943718400 {used} 12 5 {state} GPU-11111111-2222-3333-4444-555555555555 NVIDIA A100-SXM4-40GB"
L4 = "device 1 25769803776 0 0 0 0 v1 GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee NVIDIA L4"


@pytest.fixture
def nvml(fake_nvml, tmp_path, monkeypatch):
    """``nvml(*lines)`` scripts the fake driver; pynvml is shut down after."""
    state = tmp_path / "nvml-state"
    monkeypatch.setenv("FAKE_NVML_STATE", str(state))

    def script(*lines: str) -> None:
        state.write_text("".join(line + "\n" for line in lines))
    yield script
    try:
        pynvml.nvmlShutdown()
    except pynvml.NVMLError:
        pass


def test_each_gpu_is_a_domain_limited_to_what_allocations_can_reach(nvml):
    nvml(A100.format(used=GiB, state="ok"), L4, "process 0 1234 1073741824", "process 0 99 -1")
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


def test_a_gpu_lost_at_run_time_is_skipped_counted_and_still_tracked(nvml):
    source = GpuSource()
    nvml(A100.format(used=GiB, state="ok"), L4)
    source.collect(FakeClock().now())
    nvml(A100.format(used=GiB, state="lost"), L4)
    reading = source.collect(FakeClock().now())
    assert [s.domain for s in reading.samples] == ["gpu:1"], "the other GPU goes on"
    assert reading.skipped["nvml_error"] == 1 and reading.tracked == {"gpu:0", "gpu:1"}
    lost = reading.facts["devices"]["gpu:0"]
    assert lost["error"] == "GPU is lost" and lost["uuid"] == "GPU-11111111-2222-3333-4444-555555555555"
    nvml(A100.format(used=2 * GiB, state="ok"), L4)
    assert [s.used for s in source.collect(FakeClock().now()).samples] == [2 * GiB, 0], "and comes back"


def test_no_driver_is_unavailable_said_why(nvml):
    nvml("init 9")       # NVML_ERROR_DRIVER_NOT_LOADED
    with pytest.raises(Unavailable, match="Driver Not Loaded"):
        GpuSource().collect(FakeClock().now())


def test_gpu_domains_reach_status_rules_and_metrics(nvml):
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
        nvml(A100.format(used=used * GiB, state="ok"), L4, f"process 0 4242 {used * GiB}")
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


def test_the_job_whose_process_holds_the_gpu_memory_gets_its_signal(nvml):
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
        nvml(A100.format(used=used * GiB, state="ok"), L4, f"process 0 4242 {used * GiB}", "process 1 4343 1024")
        clock.advance(1)
        actions += e.step([SourceRun("gpu", reading=source.collect(clock.now()))], clock.now()).actions
    assert [(a.kind, a.domain, a.job, a.signal, a.targets) for a in actions] == \
        [("signal", "gpu:0", "train-4242", signal.SIGUSR1, ((4242, 100.0),))], "not the job on the other GPU"
    (train,) = [j for j in e.snapshot(clock.now()).jobs if j["id"] == "train-4242"]
    assert train["domain"] == "host" and train["gpu_bytes"] == {"gpu:0": 39 * GiB}


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

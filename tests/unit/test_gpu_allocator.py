"""A GPU domain judged with its jobs' CUDA caching allocators (issue 20):
what they reserve but do not hold is room to them, not growth."""

from __future__ import annotations

from memguard.clock import FakeClock
from memguard.config import Config
from memguard.engine.engine import ALLOCATOR_FRESH, Engine, SourceRun
from memguard.engine.messages import AllocatorReported, GpuOomReported
from memguard.model import Sample
from memguard.sources.base import Reading

from .test_actions import register, tick

GiB = 2**30
LIMIT = 40 * GiB


def gpu_tick(e, clock, used):
    clock.advance(1)
    e.step([SourceRun("gpu", reading=Reading(samples=[Sample("gpu:0", "gpu", used, used, LIMIT)]))], clock.now())
    return e.domains["gpu:0"]


def test_the_allocators_cache_is_reclaimable_and_its_steps_are_not_growth():
    # A training job whose allocator reserves a 4 GiB segment every 20 s (the
    # batches' shapes vary) while what it holds stays at 16 GiB: NVML's used
    # climbs to 36 GiB of 40, 90 %.
    clock = FakeClock()
    e = Engine(Config(), clock.now(), "t")
    tick(e, clock, 10 * 2**20)
    register(e, clock, 10, "train")
    for second in range(120):
        reserved = 16 * GiB + 4 * GiB * (second // 20)
        e.step([], clock.now(), events=[AllocatorReported(10, 0, {"allocated_bytes": 16 * GiB,
                                                                   "reserved_bytes": reserved})])
        state = gpu_tick(e, clock, reserved)
    s = state.sample
    assert s.used == 36 * GiB and s.reclaimable == 20 * GiB and s.working_set == 16 * GiB
    assert s.usage_ratio == 0.4
    assert state.prediction.tto is None, state.prediction

    # The job stops reporting: a minute later its cache is no longer known,
    # and NVML's figure is all there is.
    clock.advance(ALLOCATOR_FRESH)
    s = gpu_tick(e, clock, 36 * GiB).sample
    assert s.working_set == 36 * GiB and s.reclaimable is None


def test_a_report_of_another_gpu_or_without_allocated_leaves_the_domain_alone():
    clock = FakeClock()
    e = Engine(Config(), clock.now(), "t")
    tick(e, clock, 10 * 2**20)
    register(e, clock, 10, "train")
    register(e, clock, 11, "eval")
    e.step([], clock.now(), events=[AllocatorReported(10, 1, {"allocated_bytes": GiB, "reserved_bytes": 8 * GiB}),
                                    AllocatorReported(11, 0, {"reserved_bytes": 8 * GiB})])
    s = gpu_tick(e, clock, 20 * GiB).sample
    assert s.working_set == 20 * GiB and s.reclaimable is None


def test_a_cuda_report_goes_to_the_gpu_domain_whose_processes_hold_the_pid():
    # CUDA calls a MIG instance device 0; NVML says pid 10 holds memory on gpu:0/mig:2.
    clock = FakeClock()
    e = Engine(Config(), clock.now(), "t")
    tick(e, clock, 10 * 2**20)
    register(e, clock, 10, "train")
    devices = {"gpu:0": {"index": 0, "processes": []},
               "gpu:0/mig:2": {"index": 0, "parent": "gpu:0", "processes": [{"pid": 10, "used_bytes": 4 * GiB}]}}
    clock.advance(1)
    e.step([SourceRun("gpu", reading=Reading(samples=[Sample("gpu:0/mig:2", "gpu", 6 * GiB, 6 * GiB, 10 * GiB)],
                                             facts={"devices": devices}))], clock.now())
    e.step([], clock.now(), events=[AllocatorReported(10, 0, {"allocated_bytes": GiB, "reserved_bytes": 4 * GiB})])
    assert list(e.allocators["train-10"]) == ["gpu:0/mig:2"]
    fx = e.step([], clock.now(), events=[GpuOomReported(10, 0, 0, "CUDA out of memory", {})])
    assert fx.incidents[-1].document["domain"] == "gpu:0/mig:2"
    # A pid NVML does not list: the CUDA index is all there is.
    fx = e.step([], clock.now(), events=[GpuOomReported(77, 0, 3, "CUDA out of memory", {})])
    assert fx.incidents[-1].document["domain"] == "gpu:3"

"""The tick's own sources on a worker the loop waits for a bounded time
(runner.TickSources): a source hung in a read costs one tick the wait, then
is skipped, failed, until the read returns; the others go on (issue 24)."""

import threading
import time

from memguard.clock import FakeClock
from memguard.runner import TickSources
from memguard.sources.base import Reading


class Quick:
    def __init__(self, name):
        self.name = name
        self.runs = 0

    def collect(self, now):
        self.runs += 1
        return Reading()


class Blocking:
    """Blocks in collect() until released, as a read stuck in the kernel."""
    name = "cgroups"

    def __init__(self):
        self.release = threading.Event()
        self.calls = 0

    def collect(self, now):
        self.calls += 1
        self.release.wait(30)
        return Reading()


def test_a_hung_source_costs_one_tick_the_wait_then_is_skipped_until_it_returns():
    meminfo, stuck, psi = Quick("meminfo"), Blocking(), Quick("psi")
    ticking = TickSources([meminfo, stuck, psi], timeout=0.3)
    clock = FakeClock()
    try:
        t0 = time.monotonic()
        runs = {r.name: r for r in ticking.run(clock.now())}
        assert 0.3 <= time.monotonic() - t0 < 2.0
        assert runs["meminfo"].reading is not None and "hung" in runs["cgroups"].error
        assert "psi" not in runs, "what came after the hung read waits for the next tick"
        for _ in range(3):                 # the next ticks: no wait, the hung one skipped and said
            clock.advance(1)
            t0 = time.monotonic()
            runs = {r.name: r for r in ticking.run(clock.now())}
            assert time.monotonic() - t0 < 0.2
            assert runs["psi"].reading is not None and runs["meminfo"].reading is not None
            assert "hung" in runs["cgroups"].error and "blocked in the kernel" in runs["cgroups"].error
        assert stuck.calls == 1, "never read from two threads at once"
        stuck.release.set()                # the read returns
        deadline = time.monotonic() + 5
        while ticking.hung and time.monotonic() < deadline:
            time.sleep(0.01)
        runs = {r.name: r for r in ticking.run(clock.now())}
        assert runs["cgroups"].reading is not None and stuck.calls == 2
        assert meminfo.runs == psi.runs + 1 == 5
    finally:
        stuck.release.set()
        ticking.shutdown()


def test_a_slow_source_idle_until_later_is_not_handed_to_a_thread_before_then():
    """SlowSources: a source that says it has nothing to do before its
    ``idle_until`` (NVML without a driver) is not run until then."""
    from memguard.runner import SlowSources

    gpu, processes = Quick("gpu"), Quick("processes")
    gpu.every_tick, gpu.idle_until = True, 0.0
    slow = SlowSources([gpu, processes], interval=5.0, timeout=2.0)
    clock = FakeClock()

    def tick():
        slow.poll(clock.now())
        for future, _ in list(slow.in_flight.values()):
            future.result(timeout=5)           # the runs handed over have ended
    try:
        tick()
        assert (gpu.runs, processes.runs) == (1, 1)
        gpu.idle_until = clock.mono + 60.0
        for _ in range(59):
            clock.advance(1)
            tick()
        assert gpu.runs == 1, "not run while idle"
        assert processes.runs > 1, "the others at their cadence"
        clock.advance(1)
        tick()
        assert gpu.runs == 2
    finally:
        slow.shutdown()

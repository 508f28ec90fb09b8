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
        for future, _, _ in list(slow.in_flight.values()):
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


class CatchUp:
    """A processes source whose first run, the catch-up, blocks until released."""
    name = "processes"

    def __init__(self):
        self.release = threading.Event()
        self.caught_up = False

    @property
    def allowance(self):
        return 1.0 if self.caught_up else 10.0

    def collect(self, now):
        self.release.wait(30)
        first, self.caught_up = not self.caught_up, True
        return Reading(processes=[], known=["pid 1"] if first else None)


def test_the_catch_up_scan_gets_its_allowance_and_a_late_one_still_tells_who_was_there():
    """SlowSources: the processes source's first scan (every process's
    details) may take ten timeouts; past them it is said failed, and when it
    ends its top list is dropped as stale but not the processes it found
    there before the daemon began."""
    from memguard.runner import SlowSources

    source = CatchUp()
    slow = SlowSources([source], interval=5.0, timeout=2.0)
    clock = FakeClock()
    try:
        assert slow.poll(clock.now()) == []
        clock.advance(19)
        assert slow.poll(clock.now()) == [], "within its allowance: 20 s"
        clock.advance(2)
        (run,) = slow.poll(clock.now())
        assert run.error == "timed out after 20s (still running)"
        source.release.set()
        slow.in_flight["processes"][0].result(timeout=5)
        (run,) = slow.poll(clock.now())
        assert run.error is None and run.reading.known == ["pid 1"]
        assert run.reading.processes is None, "the stale top list is dropped"
        clock.advance(5)
        assert slow.poll(clock.now()) == []    # the next scan starts
        slow.in_flight["processes"][0].result(timeout=5)
        clock.advance(1)
        (run,) = slow.poll(clock.now())
        assert run.reading.processes == [] and not run.reading.known
    finally:
        source.release.set()
        slow.shutdown()

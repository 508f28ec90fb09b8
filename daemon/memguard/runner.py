"""Running sources and probes for the daemon's event loop.

``TickSources`` runs the tick's own sources on a worker the loop waits for,
a bounded time; ``SlowSources`` runs the sources whose reads can block in
worker threads at their own cadence; ``ProbeHost`` registers each probe's
file descriptor with the loop and hands what it reads to a callback at once
(a kill must not wait for the next tick); ``IncidentWriter`` writes incidents in order on one
thread, so an fsync never stalls the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from dataclasses import replace
from typing import Callable

from .clock import Clock, Instant
from .engine.engine import SourceRun
from .incidents.build import Remove, Write
from .probes.base import Probe, ProbeReading, Unavailable
from .sources import Source
from .sources.base import Reading, Unavailable as SourceUnavailable

# A probe that failed is opened again after this long, doubling up to the cap.
REOPEN_BACKOFF = (1.0, 60.0)
# A tick's sources that have not answered in this long are hung in the kernel.
TICK_SOURCES_TIMEOUT = 2.0


def run_source(source: Source, now: Instant) -> SourceRun:
    """Run one source once, timing it; never raises."""
    t0 = time.perf_counter()
    try:
        reading = source.collect(now)
    except SourceUnavailable as e:
        return SourceRun(source.name, unavailable=str(e), duration=time.perf_counter() - t0)
    except (OSError, ValueError) as e:
        return SourceRun(source.name, error=f"{type(e).__name__}: {e}", duration=time.perf_counter() - t0)
    return SourceRun(source.name, reading=reading, duration=time.perf_counter() - t0)


class TickSources:
    """The tick's own sources (meminfo, PSI, cgroupfs: in-kernel reads of a
    millisecond), run one after another on a worker thread that the loop
    waits for at most *timeout*.  A read that blocks in the kernel (a
    cgroupfs file behind a stuck cgroup_mutex, a hung mount under a fixture
    root) costs that one tick the wait: the tick goes on with what the
    others read, the hung source is reported failed, and it is skipped until
    its read returns; the run it blocked is abandoned, so no source is ever
    read from two threads at once.  A thread handoff per tick (tens of
    microseconds) is the price."""

    def __init__(self, sources: list[Source], timeout: float = TICK_SOURCES_TIMEOUT) -> None:
        self.sources = sources
        self.timeout = timeout
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=len(sources) + 1,
                                                          thread_name_prefix="memguard-tick")
        self.hung: dict[str, float] = {}          # source name -> since when (monotonic)

    def run(self, now: Instant) -> list[SourceRun]:
        ready = [s for s in self.sources if s.name not in self.hung]
        runs: list[SourceRun] = []
        state = {"current": None, "abandoned": False}
        future = self.pool.submit(self._run_all, ready, now, runs, state)
        try:
            future.result(self.timeout)
        except concurrent.futures.TimeoutError:
            state["abandoned"] = True
            runs = list(runs)                     # what was read before; nothing the run adds later
            name = state["current"]
            self.hung[name] = now.mono
            future.add_done_callback(lambda _: self.hung.pop(name, None))
        done = {r.name for r in runs}
        return runs + [SourceRun(name, error=f"hung: a read has not returned for {now.mono - since + self.timeout:.0f} s "
                                 "(blocked in the kernel); skipped until it does")
                       for name, since in list(self.hung.items()) if name not in done]

    @staticmethod
    def _run_all(sources: list[Source], now: Instant, runs: list, state: dict) -> None:
        for source in sources:
            if state["abandoned"]:
                return
            state["current"] = source.name
            run = run_source(source, now)
            if not state["abandoned"]:
                runs.append(run)

    def shutdown(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


RESTING_SCAN = 900.0  # seconds between two scans of /proc while the daemon rests (the proc connector keeps the table)


class SlowSources:
    """Sources run off the loop at their own cadence, each at most once at a
    time; a run still in flight when the next is due counts as dropped.  A
    run may take *timeout* times the source's ``allowance`` (1 unless it
    says more: the processes source's first scan reads every process)."""

    def __init__(self, sources: list[Source], interval: float, timeout: float) -> None:
        self.sources = sources
        self.interval = interval
        self.timeout = timeout
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=len(sources) or 1,
                                                          thread_name_prefix="memguard-slow")
        self.in_flight: dict[str, tuple[concurrent.futures.Future, float]] = {}
        self.due: dict[str, float] = {}
        self.dropped: dict[str, int] = {}   # since the last take_dropped()
        self.timed_out: set[str] = set()

    def take_dropped(self) -> dict[str, int]:
        """Runs dropped since the last call (for the engine's Dropped input)."""
        dropped, self.dropped = self.dropped, {}
        return dropped

    def poll(self, now: Instant, resting: bool = False) -> list[SourceRun]:
        """Results that finished (or timed out) since the last call; start
        the runs that are due: while the daemon rests, the slow ones
        (processes) only every RESTING_SCAN seconds (the proc connector keeps
        the process table meanwhile, and nothing is near a limit).  A
        source that says it has nothing to do before its ``idle_until``
        (monotonic; NVML without a driver) is not run before then: each run
        wakes a worker thread, a few milliseconds of CPU on a cold cache."""
        runs = []
        for name, (future, started, limit) in list(self.in_flight.items()):
            if future.done():
                del self.in_flight[name]
                if name in self.timed_out:  # its reading is stale by now: drop it, but for
                    self.timed_out.discard(name)   # the processes that were there before us
                    run = future.result()
                    if run.reading is not None and run.reading.known:
                        runs.append(replace(run, reading=Reading(known=run.reading.known)))
                    continue
                runs.append(future.result())
            elif now.mono - started > limit and name not in self.timed_out:
                self.timed_out.add(name)   # said once; the next run waits for it to end
                runs.append(SourceRun(name, error=f"timed out after {limit:g}s (still running)"))
        for source in self.sources:
            if now.mono < self.due.get(source.name, 0.0) or now.mono < getattr(source, "idle_until", 0.0):
                continue
            if source.name in self.in_flight:
                key = f"slow_source:{source.name}"
                self.dropped[key] = self.dropped.get(key, 0) + 1
            else:
                self.in_flight[source.name] = (self.pool.submit(run_source, source, now), now.mono,
                                               self.timeout * getattr(source, "allowance", 1.0))
            # a source that samples domains (GPUs) runs at every tick, the others at their slower cadence
            every_tick = getattr(source, "every_tick", False)
            self.due[source.name] = now.mono + (0.0 if every_tick else
                                                max(self.interval, RESTING_SCAN) if resting else self.interval)
        return runs

    async def settle(self, timeout: float) -> None:
        """Wait (bounded) for the runs in flight, so the first snapshot is whole."""
        futures = [asyncio.wrap_future(f) for f, _, _ in self.in_flight.values()]
        if futures:
            await asyncio.wait(futures, timeout=timeout)

    def shutdown(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    def stuck(self) -> list[str]:
        """The sources whose run has not ended (blocked in a driver or on a
        hung mount): the interpreter would wait for them at exit."""
        return sorted(name for name, (future, _, _) in self.in_flight.items() if not future.done())


Handler = Callable[[str, ProbeReading | None, str, str | None, Instant], None]


class ProbeHost:
    """Opens probes, watches their descriptors, reopens a failed one later.

    ``handler(name, reading, state, reason, now)`` gets every reading at once,
    and every change of state ("active", "unavailable", "failed")."""

    def __init__(self, probes: list[Probe], clock: Clock, handler: Handler) -> None:
        self.probes = probes
        self.clock = clock
        self.handler = handler
        self.loop: asyncio.AbstractEventLoop | None = None
        self.fds: dict[str, int] = {}
        self.backoff: dict[str, float] = {}
        self.reopen: dict[str, asyncio.TimerHandle] = {}

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        for probe in self.probes:
            self._open(probe)

    def _open(self, probe: Probe) -> None:
        self.reopen.pop(probe.name, None)
        now = self.clock.now()
        try:
            fd = probe.open(now)
        except Unavailable as e:
            self.handler(probe.name, None, "unavailable", str(e), now)
            return
        except OSError as e:
            self._failed(probe, f"open: {e}", now)
            return
        self.fds[probe.name] = fd
        self.loop.add_reader(fd, self._readable, probe)
        self.handler(probe.name, ProbeReading(), "active", None, now)
        # Whatever was already waiting (kmsg's backlog) is read at once.
        self._readable(probe)

    def _readable(self, probe: Probe) -> None:
        now = self.clock.now()
        try:
            reading = probe.read(now)
        except Exception as e:  # noqa: BLE001 - a probe's failure, whatever it is, must not stop the loop
            self._failed(probe, f"{type(e).__name__}: {e}", now)
            return
        self.backoff.pop(probe.name, None)
        self.handler(probe.name, reading, "active", None, now)

    def _failed(self, probe: Probe, reason: str, now: Instant) -> None:
        self._close(probe)
        delay = self.backoff.get(probe.name, REOPEN_BACKOFF[0])
        self.backoff[probe.name] = min(delay * 2, REOPEN_BACKOFF[1])
        self.handler(probe.name, None, "failed", f"{reason} (reopening in {delay:g}s)", now)
        self.reopen[probe.name] = self.loop.call_later(delay, self._open, probe)

    def _close(self, probe: Probe) -> None:
        fd = self.fds.pop(probe.name, None)
        if fd is not None:
            self.loop.remove_reader(fd)
        try:
            probe.close()
        except OSError as e:  # it is going away either way; say why it did not go cleanly
            self.handler(probe.name, None, "failed", f"close: {e}", self.clock.now())

    def stop(self) -> None:
        for handle in self.reopen.values():
            handle.cancel()
        for probe in self.probes:
            self._close(probe)


MAX_UNWRITTEN = 1000      # incidents kept for another try; beyond, a failure is only counted


class IncidentWriter:
    """Writes and removes incident files in order, on one thread.  A write
    that fails (a full or read-only disk) is kept, the newest version of
    each incident, and tried again at the next submit: an incident is not
    lost because the disk was full for a while.  ``last_error`` says what
    is wrong while any is unwritten."""

    def __init__(self, store, log) -> None:
        self.store = store
        self.log = log
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="memguard-store")
        self.failures = 0
        self.unwritten: dict[str, object] = {}       # id -> the newest effect that failed
        self.last_error: str | None = None

    def submit(self, effects: list) -> None:
        for effect in effects:
            self.pool.submit(self._apply, effect)
        if self.unwritten:
            self.pool.submit(self._retry)

    def _retry(self) -> None:
        for effect in list(self.unwritten.values()):
            self._apply(effect)

    def _apply(self, effect) -> None:
        t0 = time.perf_counter()
        try:
            if isinstance(effect, Write):
                self.store.write(effect.id, effect.document)
                self.log.log("debug", "incident stored", id=effect.id, state=effect.document.get("state"),
                             seconds=round(time.perf_counter() - t0, 4),
                             at=round(time.clock_gettime(time.CLOCK_MONOTONIC), 4))
            elif isinstance(effect, Remove):
                self.store.remove(effect.id)
        except (OSError, ValueError, TypeError) as e:  # disk trouble, or a document JSON refuses
            self.failures += 1
            if isinstance(e, OSError) and len(self.unwritten) < MAX_UNWRITTEN:
                if effect.id not in self.unwritten:
                    self.log.error("incident not stored; will try again", id=effect.id, error=str(e))
                self.unwritten[effect.id] = effect
                self.last_error = str(e)
            else:
                self.log.error("incident not stored", id=effect.id, error=str(e))
            return
        # Effects of one incident come in order: this one is its newest.
        if self.unwritten.pop(effect.id, None) is not None:
            self.log.info("incident stored after all", id=effect.id)
        if not self.unwritten:
            self.last_error = None

    def shutdown(self) -> None:
        """Finish what was queued (a clean stop loses no incident)."""
        self.pool.shutdown(wait=True)

"""Time, injected.

The engine, the recorder and (later) the predictor and rules never read the
clock: they are handed ``now``.  The daemon's shell reads a :class:`Clock`;
tests drive a :class:`FakeClock` and advance it by 30 s to test a 30 s rule.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Instant:
    """One reading of the clocks.

    ``mono`` (CLOCK_MONOTONIC) is for arithmetic; ``wall`` for people (RFC 3339
    in reports); ``boot`` (CLOCK_BOOTTIME) also counts time suspended, so a
    growing ``boot - mono`` means the host slept between two readings.
    """

    mono: float
    wall: float
    boot: float


class Clock(Protocol):
    def now(self) -> Instant: ...


class SystemClock:
    def now(self) -> Instant:
        return Instant(time.monotonic(), time.time(), time.clock_gettime(time.CLOCK_BOOTTIME))


class FakeClock:
    def __init__(self, mono: float = 1000.0, wall: float = 1_800_000_000.0) -> None:
        self.mono = mono
        self.wall = wall
        self.boot = mono

    def now(self) -> Instant:
        return Instant(self.mono, self.wall, self.boot)

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds
        self.boot += seconds

    def suspend(self, seconds: float) -> None:
        """The host slept: boot and wall time move, monotonic time does not."""
        self.wall += seconds
        self.boot += seconds

    def jump_wall(self, seconds: float) -> None:
        """A wall-clock step without monotonic progress (NTP, manual set)."""
        self.wall += seconds

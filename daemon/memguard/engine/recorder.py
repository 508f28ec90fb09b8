"""The flight recorder: a bounded ring of recent samples per domain.

Two rings of fixed-size numeric arrays (``array('d')``, 8 bytes a value, no
Python object per sample): a fine one holding every sample for
``fine_window / fine_step`` slots, and a coarse one holding one point per
``coarse_step`` (the maximum of used and working set, the minimum limit and
the maximum pressure in that step) for ``coarse_window``.  Sampled faster than
``fine_step`` (the fast interval near a limit), the fine ring covers
proportionally less time; the coarse ring still covers the hour.

Memory is fixed when a domain is first seen:
``8 * FIELDS * (fine_slots + coarse_slots)`` bytes, 62 KiB with the defaults.
"""

from __future__ import annotations

import math
from array import array
from collections import deque
from dataclasses import dataclass

from ..model import Sample

FIELDS = ("t", "used", "working_set", "limit", "psi_some_avg10")
ENVELOPE_SLOTS = 15  # envelope points per prediction horizon (predict.predictor.BUCKETS)
NAN = math.nan


@dataclass(frozen=True, slots=True)
class Point:
    t: float                 # monotonic seconds
    used: float
    working_set: float
    limit: float             # NaN: no limit
    psi_some_avg10: float    # NaN: no PSI


class Ring:
    """A fixed-capacity ring of FIELDS-wide rows."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self.columns = [array("d", bytes(8 * self.capacity)) for _ in FIELDS]
        self.count = 0       # rows written so far, ever
        self.head = 0        # next slot to write

    def append(self, row: tuple[float, ...]) -> None:
        for column, value in zip(self.columns, row):
            column[self.head] = value
        self.head = (self.head + 1) % self.capacity
        self.count += 1

    def replace_last(self, row: tuple[float, ...]) -> None:
        last = (self.head - 1) % self.capacity
        for column, value in zip(self.columns, row):
            column[last] = value

    def last(self) -> tuple[float, ...] | None:
        if not self.count:
            return None
        last = (self.head - 1) % self.capacity
        return tuple(c[last] for c in self.columns)

    def recent(self, since: float) -> list[Point]:
        """Rows with t >= since, oldest first, reading back from the newest
        only as far as needed (a few rows, where rows() scans the ring)."""
        out = []
        t = self.columns[0]
        for k in range(min(self.count, self.capacity)):
            j = (self.head - 1 - k) % self.capacity
            if t[j] < since:
                break
            out.append(Point(*(c[j] for c in self.columns)))
        out.reverse()
        return out

    def first_since(self, since: float) -> Point | None:
        """The oldest row with t >= since (a binary search: rows are in time
        order), or None."""
        n = min(self.count, self.capacity)
        start = (self.head - n) % self.capacity
        t = self.columns[0]
        lo, hi = 0, n
        while lo < hi:
            mid = (lo + hi) // 2
            if t[(start + mid) % self.capacity] < since:
                lo = mid + 1
            else:
                hi = mid
        if lo == n:
            return None
        j = (start + lo) % self.capacity
        return Point(*(c[j] for c in self.columns))

    def rows(self, since: float = -math.inf) -> list[Point]:
        """Rows with t >= since, oldest first."""
        n = min(self.count, self.capacity)
        start = (self.head - n) % self.capacity
        out = []
        t = self.columns[0]
        for i in range(n):
            j = (start + i) % self.capacity
            if t[j] >= since:
                out.append(Point(*(c[j] for c in self.columns)))
        return out

    @property
    def nbytes(self) -> int:
        return sum(c.itemsize * len(c) for c in self.columns)


def _row(t: float, s: Sample) -> tuple[float, ...]:
    psi = s.psi.some.avg10 if s.psi is not None else NAN
    return (t, float(s.used), float(s.working_set),
            NAN if s.limit is None else float(s.limit), psi)


def _fmax(a: float, b: float) -> float:
    return b if math.isnan(a) else a if math.isnan(b) else max(a, b)


def _fmin(a: float, b: float) -> float:
    return b if math.isnan(a) else a if math.isnan(b) else min(a, b)


class Envelope:
    """The upper envelope of the working set at one bucket width: the
    maximum of each ``width``-second bucket (aligned to the clock), with
    the bucket's minimum beside it (a release shows there), the newest
    ``slots`` of them, kept as samples arrive: the predictor reads 15 points
    instead of scanning a ring."""

    __slots__ = ("width", "buckets")

    def __init__(self, width: float, slots: int) -> None:
        self.width = width
        self.buckets: deque[tuple[int, float, float, float]] = deque(maxlen=slots)  # (bucket, t, max, min)

    def add(self, t: float, value: float) -> None:
        b = int(t // self.width)
        if self.buckets and self.buckets[-1][0] == b:
            _, bt, high, low = self.buckets[-1]
            if value >= high:
                self.buckets[-1] = (b, t, value, low)
            elif value < low:
                self.buckets[-1] = (b, bt, high, value)
        else:
            self.buckets.append((b, t, value, value))

    def points(self, since: float) -> list[tuple[float, float]]:
        return [(t, v) for b, t, v, _ in self.buckets if t >= since]

    def lows(self, since: float) -> list[float]:
        """The minimum of each bucket that points(since) returns."""
        return [low for b, t, _, low in self.buckets if t >= since]

    def clear(self) -> None:
        self.buckets.clear()


class FlightRecorder:
    """One domain's recent history.  ``window_start`` is where the current
    prediction window begins: it moves to now when the limit changes or the
    host slept, since samples from before say nothing about the new regime."""

    def __init__(self, fine_slots: int, coarse_slots: int, coarse_step: float,
                 envelope_widths: tuple[float, ...] = ()) -> None:
        self.fine = Ring(fine_slots)
        self.coarse = Ring(coarse_slots)
        self.coarse_step = coarse_step
        self.window_start = -math.inf
        # one envelope per prediction horizon; +1 slot for the partial bucket
        self.envelopes = {w: Envelope(w, ENVELOPE_SLOTS + 1) for w in envelope_widths}

    def record(self, t: float, sample: Sample) -> None:
        row = _row(t, sample)
        self.fine.append(row)
        for env in self.envelopes.values():
            env.add(t, row[2])
        bucket = math.floor(t / self.coarse_step) * self.coarse_step
        last = self.coarse.last()
        if last is not None and last[0] == bucket:
            self.coarse.replace_last((bucket, max(last[1], row[1]), max(last[2], row[2]),
                                      _fmin(last[3], row[3]), _fmax(last[4], row[4])))
        else:
            self.coarse.append((bucket,) + row[1:])

    def restart_window(self, t: float) -> None:
        self.window_start = t
        for env in self.envelopes.values():
            env.clear()

    def window(self, seconds: float, now: float) -> list[Point]:
        """Fine samples of the last *seconds* within the current window."""
        return self.fine.rows(since=max(now - seconds, self.window_start))

    @property
    def nbytes(self) -> int:
        return self.fine.nbytes + self.coarse.nbytes

"""The one small interface every event probe implements.

A probe watches a file descriptor the kernel makes readable when something
happens (/dev/kmsg, a trace_pipe, the BPF child's pipe, an eventfd).  The
daemon's loop calls ``open()`` once, registers the descriptor it returns,
and calls ``read(now)`` whenever it is readable; ``read`` never blocks.  A
probe that cannot work on this host raises :class:`Unavailable` from
``open`` with the reason and the fix, and the daemon runs on with the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from ..clock import Instant
from ..model import OomKill, ProcessInfo
from ..sources.base import Unavailable

__all__ = ["Probe", "ProbeReading", "Unavailable"]


@dataclass
class ProbeReading:
    kills: list[OomKill] = field(default_factory=list)
    # Sample the domains now: a cgroup reported an OOM event (its counters
    # and a fresh sample beat waiting for the next tick).
    wake: bool = False
    # A cgroup's usage crossed the threshold registered for a resting daemon
    # (memcg probe): sample now if resting, else it changes nothing.
    moved: bool = False
    # A cgroup was made or removed (memcg probe): walk the hierarchy now.
    created: bool = False
    # Processes as they were at exec (the proc connector): the table that
    # names a victim after its /proc entry is gone.
    processes: list[ProcessInfo] = field(default_factory=list)
    # Processes forked (parent, child) and exited (pid), for the jobs: a
    # data loader's workers fork and never exec.
    forks: list[tuple[int, int, float]] = field(default_factory=list)   # (parent, child, child's start)
    exits: list[int] = field(default_factory=list)
    # Processes moved into a memory cgroup (pid, its path), as they moved.
    moves: list[tuple[int, str]] = field(default_factory=list)
    # Reclaim stalls per cgroup2 path: (count, seconds), cumulative since the
    # probe started (the BPF probe's leading indicator); None: no news.
    reclaim: dict[str, tuple[int, float]] | None = None
    lost: int = 0                     # records the kernel overwrote before we read them
    malformed: int = 0                # records we could not parse (skipped)
    facts: dict[str, object] = field(default_factory=dict)


class Probe(Protocol):
    name: str

    def open(self, now: Instant) -> int:
        """Start watching; return the fd to wait on.  Raises Unavailable."""

    def read(self, now: Instant) -> ProbeReading:
        """Everything readable now; never blocks."""

    def close(self) -> None:
        """Stop and undo what open() set up (tracefs instance, child process)."""

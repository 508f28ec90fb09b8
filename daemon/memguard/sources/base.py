"""The one small interface every polled source implements.

A source is an object with a ``name`` and ``collect(now) -> Reading``.  It
raises :class:`Unavailable` when it cannot work on this host at all (no PSI,
no memory controller): that is an outcome, not an error, shown once in
status (node_exporter's ErrNoData).  A single unreadable or malformed file is
skipped and counted in ``Reading.skipped`` by reason, never a crash and never
silently read as zero.
"""

from __future__ import annotations

import errno
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Protocol

from ..clock import Instant
from ..model import PSI, ProcessInfo, Sample


class Unavailable(Exception):
    """This source cannot work on this host; the message says why and how to fix it."""


@dataclass
class Reading:
    samples: list[Sample] = field(default_factory=list)
    pressure: dict[str, PSI] = field(default_factory=dict)   # domain -> PSI to merge in
    processes: list[ProcessInfo] | None = None     # the top consumers
    known: list[ProcessInfo] | None = None         # more processes, for the table that names victims
    facts: dict[str, object] = field(default_factory=dict)    # shown in status
    skipped: Counter[str] = field(default_factory=Counter)    # reason -> files skipped
    # Domains this source tracks, also those it could not read this time (so a
    # passing read error does not make a domain vanish); None: those sampled.
    tracked: set[str] | None = None
    # Which domain binds a process in a given cgroup path (the cgroups source).
    domain_of: Callable[[str], str] | None = None
    # Every pid a full scan of /proc saw (the processes source): jobs' members
    # missing from it are gone, their exit event lost.
    pids: set[int] | None = None
    pids_at: float = 0.0            # monotonic time the scan began
    rss: dict[int, int] | None = None   # every process's RSS (bytes) the scan read: jobs' memory


class Source(Protocol):
    name: str

    def collect(self, now: Instant) -> Reading: ...


def skip_reason(err: Exception) -> str:
    """A short, stable label for why a file was skipped (used as a metric label)."""
    if isinstance(err, FileNotFoundError) or getattr(err, "errno", None) == errno.ENODEV:
        return "vanished"  # ENODEV: read through a descriptor of a removed cgroup
    if isinstance(err, PermissionError):
        return "permission"
    if isinstance(err, OSError):
        return "io_error"
    return "malformed"

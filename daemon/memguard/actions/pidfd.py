"""One process, pinned: a pidfd opened first, then its start time checked.

Once the pidfd is open it refers to one process whatever happens to its
pid; the start time read after that must be the one recorded, or the pid
now belongs to another process, which is left alone.  Linux 5.3+.
"""

from __future__ import annotations

import os

from ..roots import Roots, read_text
from ..sources.processes import parse_stat


def pin(roots: Roots, pid: int, start: float | None) -> int | str:
    """The pidfd of *pid* if it is still the process that started at
    *start* (None: any), for the caller to close; else why not: ``gone``,
    ``reused`` or ``failed: REASON``."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return "gone"
    except OSError as e:
        return f"failed: {e.strerror}"
    try:
        now_start = parse_stat(read_text(roots.proc_path(str(pid), "stat")))[2]
    except (OSError, ValueError, IndexError):
        os.close(fd)
        return "gone"
    if start is not None and abs(now_start - start) > 0.02:   # stat's start time is in clock ticks
        os.close(fd)
        return "reused"
    return fd

"""Carrying actions out: signals through pidfds.

A process is signalled only if it is still the one that registered: the
pidfd is opened first (it then refers to one process, whatever happens to
its pid), and the process's start time read after it must be the one the
job recorded; a pid reused by another process is left alone.  Linux 5.3+
(pidfd_open); runs in a worker thread, never on the loop.
"""

from __future__ import annotations

import os
import signal

from ..roots import Roots, read_text
from ..sources.processes import parse_stat
from .plan import ActionDone, ActionWanted


def signal_process(roots: Roots, pid: int, start: float | None, sig: int) -> str:
    """``sent``, ``gone`` (it exited), ``reused`` (another process has the
    pid now) or ``failed: REASON``."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return "gone"
    except OSError as e:
        return f"failed: {e.strerror}"
    try:
        try:
            now_start = parse_stat(read_text(roots.proc_path(str(pid), "stat")))[2]
        except (OSError, ValueError, IndexError):
            return "gone"
        if start is not None and abs(now_start - start) > 0.02:   # stat's start time is in clock ticks
            return "reused"
        try:
            signal.pidfd_send_signal(fd, sig)
        except ProcessLookupError:
            return "gone"
        except OSError as e:
            return f"failed: {e.strerror}"
        return "sent"
    finally:
        os.close(fd)


def carry_out(roots: Roots, action: ActionWanted, now: float) -> ActionDone:
    """Do *action* (or, dry, only say what would be done)."""
    if action.dry_run:
        return ActionDone(action.id, "dry_run", tuple({"pid": p, "result": "dry_run"} for p, _ in action.targets),
                          now)
    details = tuple({"pid": pid, "result": signal_process(roots, pid, start, action.signal)}
                    for pid, start in action.targets)
    results = {d["result"] for d in details}
    if results == {"sent"}:
        result = "sent"
    elif "sent" in results:
        result = "partial"
    elif results <= {"gone", "reused"}:
        result = "gone"
    else:
        result = "failed"
    return ActionDone(action.id, result, details, now)

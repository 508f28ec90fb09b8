"""Freezing a job's processes so the others finish, and never leaving one
frozen (issue 19).

A frozen process frees nothing: it stops growing, so the processes beside
it can finish and release what they hold, and it goes on where it stopped
once there is room.  It can still be OOM-killed while frozen (the kernel
picks by memory, frozen or not).  memguard freezes with SIGSTOP through a
pidfd after checking the process's start time (a reused pid is never
stopped) and thaws with SIGCONT the same way; but a process with a cgroup
of its own (alone in it, no child cgroups: ``systemd-run --scope``, a
container, a build tool that sandboxes each action) is frozen with that
cgroup's freezer (v2 ``cgroup.freeze``, else v1 ``freezer.state``), which
also holds what it forks meanwhile and cannot be undone by a stray
SIGCONT.  (A cgroup that several processes share is never frozen: a
build's compilers share one, and the point is to stop some of them.)

Every frozen process is written to ``<state_dir>/frozen.json`` *before* it
is stopped (atomically: a crash leaves the old list or the new one), so a
daemon that restarts thaws what its predecessor froze.  A daemon that never
comes back is covered by the guard: a small process in a session of its
own, started at the first freeze, that thaws everything in the list when
the daemon's end of a pipe closes (the daemon stopped or died, however), on
SIGTERM (systemd stopping the unit's processes) and, for each process, once
its deadline has passed.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

from .. import state
from ..roots import Roots, read_text
from ..sources.cgroups import parse_mounts
from ..sources.processes import PAGE_SIZE, parse_stat, parse_status_hwm
from .pidfd import pin
from .act import signal_process

FROZEN_FILE = "frozen.json"
GUARD_SLACK = 2.0      # seconds past a deadline before the guard thaws a process the daemon has not


def boottime() -> float:
    """Seconds since boot, counting suspend: one clock for the daemon, its
    successor and the guard."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


@dataclass(frozen=True)
class Frozen:
    pid: int
    start: float | None      # the process's start time (seconds since boot), as /proc/PID/stat says
    job: str | None
    domain: str
    rule: str
    since: float             # boottime()
    deadline: float          # boottime() by which it is thawed, whatever happens
    how: str = "signal"      # "signal" (SIGSTOP), or the cgroup freezer file written


class FrozenList:
    """The processes memguard has frozen, as persisted in *path*."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.items: dict[int, Frozen] = {p.pid: p for p in read_frozen(path)}

    def add(self, p: Frozen) -> None:
        self.items[p.pid] = p
        self._save()

    def remove(self, pid: int) -> None:
        if self.items.pop(pid, None) is not None:
            self._save()

    def clear(self) -> None:
        if self.items:
            self.items.clear()
            self._save()

    def _save(self) -> None:
        state.save(self.path, [asdict(p) for p in self.items.values()], durable=True)


def read_frozen(path: str) -> list[Frozen]:
    """The list in *path*; empty when there is none (or it is unreadable:
    resuming is always safe, so nothing is lost by starting empty)."""
    try:
        return [Frozen(**item) for item in state.read_json(path)]
    except (OSError, ValueError, TypeError):
        return []


def choose_to_freeze(roots: Roots, targets, choice: dict) -> tuple[tuple[int, float] | None, str, list]:
    """Which of *targets* ((pid, start time), the engine's likeliest first)
    to stop, by what they hold now: of those still there holding
    ``min_rss`` or more (a make, a shell or a compiler driver holds less:
    stopping it frees no room for the others), the newest or the largest
    (``pick``), provided another one stays running.  ((pid, start) or
    None, why, for a person, and [pid, RSS, peak RSS] of each still there:
    fresher than the engine's last scan, for its estimate of how large a
    process of the job grows)."""
    holding, seen = [], []
    for pid, start in targets:
        try:
            _, rss_pages, now_start = parse_stat(read_text(roots.proc_path(str(pid), "stat")))
            hwm = parse_status_hwm(read_text(roots.proc_path(str(pid), "status")))
        except (OSError, ValueError, IndexError):
            continue                  # gone
        if start is not None and abs(now_start - start) > 0.02:
            continue                  # another process has the pid now
        seen.append([pid, rss_pages * PAGE_SIZE, hwm])
        if rss_pages * PAGE_SIZE >= choice["min_rss"]:
            holding.append((pid, now_start, rss_pages * PAGE_SIZE))
    mib = choice["min_rss"] >> 20
    if len(holding) < 2:
        return None, f"{len(holding)} process(es) of the job hold {mib} MiB or more: the last one runs on", seen
    if choice["pick"] == "largest":
        pid, start, _ = max(holding, key=lambda h: h[2])
    else:
        pid, start, _ = max(holding, key=lambda h: (h[1], h[0]))
    return (pid, start), f"the {choice['pick']} of {len(holding)} holding {mib} MiB or more", seen


def own_freezer(roots: Roots, pid: int) -> str | None:
    """The freezer file of the cgroup *pid* has to itself (it alone in
    it, and no cgroup below it), v2 ``cgroup.freeze`` before v1
    ``freezer.state``; None when it shares its cgroups."""
    try:
        mounts = parse_mounts(read_text(roots.proc_path("self", "mounts")), roots)
        lines = read_text(roots.proc_path(str(pid), "cgroup")).splitlines()
    except OSError:
        return None
    paths = {}
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            paths["v2"] = path
        elif "freezer" in controllers.split(","):
            paths["v1"] = path
    for version, top, name in (("v2", mounts.unified, "cgroup.freeze"), ("v1", mounts.v1_freezer, "freezer.state")):
        path = paths.get(version)
        if top is None or path in (None, "/", ""):
            continue
        where = os.path.join(top, path.lstrip("/"))
        try:
            alone = read_text(os.path.join(where, "cgroup.procs")).split() == [str(pid)]
            leaf = not any(e.is_dir(follow_symlinks=False) for e in os.scandir(where))
        except OSError:
            continue
        if alone and leaf and os.path.exists(os.path.join(where, name)):
            return os.path.join(where, name)
    return None


def _write_freezer(path: str, frozen: bool) -> str:
    value = ("1" if frozen else "0") if path.endswith("cgroup.freeze") else ("FROZEN" if frozen else "THAWED")
    try:
        with open(path, "w") as f:
            f.write(value)
    except FileNotFoundError:
        return "gone"            # the cgroup went with its process
    except OSError as e:
        return f"failed: {e.strerror}"
    return "sent"


def freeze(roots: Roots, pid: int, start: float | None, how: str = "signal") -> str:
    """SIGSTOP, or its cgroup's freezer (*how*: the file, see own_freezer):
    ``sent``, ``gone``, ``reused`` or ``failed: REASON``."""
    if how == "signal":
        return signal_process(roots, pid, start, signal.SIGSTOP)
    fd = pin(roots, pid, start)        # still the process that has that cgroup
    if isinstance(fd, str):
        return fd
    try:
        return _write_freezer(how, True)
    finally:
        os.close(fd)


def thaw(roots: Roots, pid: int, start: float | None, how: str = "signal") -> str:
    """SIGCONT, or its cgroup's freezer: ``sent``, ``gone``, ``reused`` or
    ``failed: REASON``."""
    if how == "signal":
        return signal_process(roots, pid, start, signal.SIGCONT)
    return _write_freezer(how, False)


def thaw_all(roots: Roots, frozen: list[Frozen]) -> list[tuple[Frozen, str]]:
    """Thaw each of *frozen*: (it, the result)."""
    return [(p, thaw(roots, p.pid, p.start, p.how)) for p in frozen]


class Guard:
    """The guard process, started at the first freeze (see the module's
    docstring); the daemon holds the write end of its pipe."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.proc: subprocess.Popen | None = None
        self._write_end: int | None = None

    def ensure(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", "memguard.actions.freeze", self.path,
                                          str(read_end)], pass_fds=(read_end,), start_new_session=True,
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, close_fds=True)
        except BaseException:
            os.close(write_end)
            raise
        finally:
            os.close(read_end)
        if self._write_end is not None:
            os.close(self._write_end)
        self._write_end = write_end

    def close(self) -> None:
        """The daemon is stopping and has thawed everything: the guard
        finds the list empty and exits."""
        if self._write_end is not None:
            os.close(self._write_end)
            self._write_end = None
        if self.proc is not None:
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def guard(path: str, fd: int, roots: Roots | None = None) -> None:
    """The guard's loop: thaw everything in *path* when *fd* reaches its
    end (the daemon is gone) or on SIGTERM; thaw a process whose deadline
    passed GUARD_SLACK ago.  The daemon alone rewrites the list."""
    roots = roots or Roots()

    def stop(*_):
        raise _Stop

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _watch(path, fd, roots)
    except _Stop:
        pass
    thaw_all(roots, read_frozen(path))


class _Stop(Exception):
    pass


def _watch(path: str, fd: int, roots: Roots) -> None:
    while True:
        frozen = read_frozen(path)
        now = boottime()
        late = [p for p in frozen if now >= p.deadline + GUARD_SLACK]
        thaw_all(roots, late)
        wake = min((p.deadline + GUARD_SLACK - now for p in frozen if p not in late), default=60.0)
        ready, _, _ = select.select([fd], [], [], max(0.1, min(wake, 60.0)))
        if ready and not os.read(fd, 4096):
            return                    # the daemon's end closed: it stopped or died


if __name__ == "__main__":
    guard(sys.argv[1], int(sys.argv[2]))

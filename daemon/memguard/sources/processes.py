"""The top memory consumers: /proc/PID/stat for everyone, details for the few.

Kernel docs: Documentation/filesystems/proc.rst, "/proc/PID/stat"::

    4711 (cc1plus) R 4700 4700 ... <rss in pages is field 24> ...

One read per process finds the heaviest by RSS; only those get their cgroup,
command line and owner read.  Run at a slower cadence than domains and off
the event loop: reading another process's cmdline takes its mmap lock, which
can wait a long time on a host under memory pressure.
"""

from __future__ import annotations

import heapq
import os

from ..clock import Instant
from ..model import ProcessInfo
from ..roots import Roots, read_text
from .base import Reading, skip_reason

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
JOB_ENV = "MEMGUARD_JOB"   # jobs.spec.ENV (that module imports nothing from here)
# /proc/PID/environ read for MEMGUARD_JOB: the variable is near the end of a
# long environment as often as not; beyond this much it is not looked for.
ENVIRON_READ = 256 * 1024
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# The first scan reads every process's details (the catch-up): ~0.25 ms a
# process here, 2.5 s for 10,000.  Its run may take this many timeouts.
CATCH_UP_ALLOWANCE = 10.0


def parse_stat(text: str) -> tuple[str, int, float]:
    """(comm, rss pages, start time in seconds since boot) from /proc/PID/stat.

    comm may hold spaces and parentheses, so split at the last ')'.
    Raises ValueError on a truncated line.
    """
    open_paren, close_paren = text.index("("), text.rindex(")")
    fields = text[close_paren + 2:].split()
    return text[open_paren + 1:close_paren], int(fields[21]), int(fields[19]) / CLOCK_TICKS


def parse_ppid(text: str) -> int:
    """The parent pid from /proc/PID/stat (the field after the state)."""
    return int(text[text.rindex(")") + 2:].split()[1])


def parse_environ_var(raw: bytes, name: str) -> str | None:
    """The value of *name* in /proc/PID/environ (NUL-separated NAME=value);
    None when it is not set."""
    key = name.encode() + b"="
    for item in raw.split(b"\0"):
        if item.startswith(key):
            return item[len(key):].decode("utf-8", "replace")
    return None


def parse_proc_cgroup(text: str) -> str | None:
    """The memory cgroup path from /proc/PID/cgroup: the v1 ``memory`` line
    (``4:memory:/a``) where there is one, else the unified ``0::/a`` line;
    None when neither is listed.  Raises ValueError on a malformed line."""
    unified = None
    for line in text.splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return path
        if controllers == "":
            unified = path
    return unified


def parse_status_uid(text: str) -> int:
    """The real uid from /proc/PID/status (``Uid:\t1000\t1000\t1000\t1000``)."""
    for line in text.splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise ValueError("status lacks the Uid line")


def parse_status_hwm(text: str) -> int | None:
    """The largest RSS the process has had, in bytes, from /proc/PID/status
    (``VmHWM:\t  409600 kB``); None where it has none (a kernel thread, a
    zombie)."""
    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return None


def parse_cmdline(raw: bytes) -> str:
    return raw.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace")


class ProcessSource:
    name = "processes"
    blocking = True

    def __init__(self, roots: Roots, top: int = 10) -> None:
        self.roots = roots
        self.top = top
        self.caught_up = False

    @property
    def allowance(self) -> float:
        """How many timeouts the next run may take (runner.SlowSources)."""
        return 1.0 if self.caught_up else CATCH_UP_ALLOWANCE

    def collect(self, now: Instant) -> Reading:
        reading = Reading(pids=set(), pids_at=now.mono, rss={})
        heaviest: list[tuple[int, int, str, float]] = []
        everyone: list[tuple[int, int, str, float, int]] = []
        for name in os.listdir(self.roots.proc):
            if not name.isdigit():
                continue
            reading.pids.add(int(name))
            try:
                stat = read_text(self.roots.proc_path(name, "stat"))
                comm, rss_pages, start = parse_stat(stat)
                ppid = None if self.caught_up else parse_ppid(stat)
            except (OSError, ValueError, IndexError) as e:
                reading.skipped[skip_reason(e)] += 1
                continue
            if rss_pages == 0:  # kernel threads
                continue
            reading.rss[int(name)] = rss_pages * PAGE_SIZE
            item = (rss_pages, int(name), comm, start)
            if not self.caught_up:
                everyone.append((*item, ppid))
            if len(heaviest) < self.top:
                heapq.heappush(heaviest, item)
            elif item > heaviest[0]:
                heapq.heapreplace(heaviest, item)
        reading.processes = []
        for rss_pages, pid, comm, start in sorted(heaviest, reverse=True):
            info = self._details(pid, comm, rss_pages * PAGE_SIZE, start, reading)
            if info is not None:
                reading.processes.append(info)
        if not self.caught_up:
            # Once, at start: every process that was there before the proc
            # connector's exec events began, for the table that names victims
            # and to find the jobs registered before (their MEMGUARD_JOB).
            reading.known = [info for rss_pages, pid, comm, start, ppid in everyone
                             if (info := self._details(pid, comm, rss_pages * PAGE_SIZE, start, reading,
                                                       ppid=ppid))]
            self.caught_up = True
        return reading

    def _details(self, pid: int, comm: str, rss: int, start: float,
                 reading: Reading, ppid: int | None = None) -> ProcessInfo | None:
        """The process's owner, cgroup and command line; given its parent
        (*ppid*, at the catch-up), its MEMGUARD_JOB too."""
        base = self.roots.proc_path(str(pid))
        job_env = None
        try:
            status = read_text(os.path.join(base, "status"))
            uid, hwm = parse_status_uid(status), parse_status_hwm(status)
            cgroup = parse_proc_cgroup(read_text(os.path.join(base, "cgroup")))
            with open(os.path.join(base, "cmdline"), "rb") as f:
                cmdline = parse_cmdline(f.read(4096)) or f"[{comm}]"
        except (OSError, ValueError) as e:
            reading.skipped[skip_reason(e)] += 1
            return None
        if ppid is not None:
            try:
                with open(os.path.join(base, "environ"), "rb") as f:
                    job_env = parse_environ_var(f.read(ENVIRON_READ), JOB_ENV)
            except OSError:
                job_env = None   # not root: jobs are found by root only
        return ProcessInfo(pid=pid, comm=comm, rss=rss, cgroup=cgroup, domain=None,
                           cmdline=cmdline, start_time=start, uid=uid, ppid=ppid, job_env=job_env, hwm=hwm)

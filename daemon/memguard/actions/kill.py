"""The last resort: memguard, not the kernel, chooses whom to kill.

A ``kill`` action names no process: it is carried out in a worker thread
that reads the domain's processes afresh (all of /proc for the host or a
WSL VM; those whose memory cgroup lies under the domain's for a cgroup),
and chooses, as earlyoom's ``--prefer``/``--avoid`` and nohang's badness
regexes do, but by globs a rule file states (rules/load.py VictimFilter):

- never an *avoided* process, pid 1, memguardd or a process it started,
  nor one whose ``oom_score_adj`` is -1000 (what the kernel spares too);
- a *preferred* process before any other;
- among equals, the largest by RSS (``pick: largest``) or the newest
  (``pick: newest``).

The victim gets SIGTERM through a pidfd opened before its start time is
checked (a pid reused meanwhile is left alone), then SIGKILL if it has not
exited after the grace period.  The result says who was chosen and why,
and what else was considered: the incident tells it.
"""

from __future__ import annotations

import fnmatch
import os
import select
import signal
import time
from dataclasses import dataclass

from ..roots import Roots, read_bytes, read_text
from ..sources.processes import (ENVIRON_READ, PAGE_SIZE, parse_cmdline, parse_ppid, parse_proc_cgroup,
                                 parse_stat, parse_status_uid)
from .pidfd import pin

# Candidates listed in the result (the rest are counted): the largest.
LISTED = 8


@dataclass
class Candidate:
    pid: int
    comm: str
    start: float
    rss: int
    cgroup: str | None
    cmdline: str
    uid: int | None
    oom_score_adj: int | None
    _environ: bytes | None = None

    def environ(self, roots: Roots) -> bytes:
        """Read only when a rule tests the environment (another process's
        environ takes its mmap lock)."""
        if self._environ is None:
            try:
                with open(roots.proc_path(str(self.pid), "environ"), "rb") as f:
                    self._environ = f.read(ENVIRON_READ)
            except OSError:
                self._environ = b""
        return self._environ


def _under(path: str | None, top: str | None) -> bool:
    if top is None:
        return True
    if path is None:
        return False
    return top in ("/", "") or path == top or path.startswith(top.rstrip("/") + "/")


def candidates(roots: Roots, cgroup: str | None, own_pid: int) -> tuple[list[Candidate], int]:
    """The processes of the domain (*cgroup* None: every process) that may
    be chosen at all (not pid 1, memguardd or its children, nor a kernel
    thread), and how many could not be read (gone meanwhile, or
    unreadable: skipped)."""
    out, skipped = [], 0
    for name in os.listdir(roots.proc):
        if not name.isdigit() or int(name) in (1, own_pid):
            continue
        base = roots.proc_path(name)
        try:
            stat = read_text(os.path.join(base, "stat"))
            comm, rss_pages, start = parse_stat(stat)
            if rss_pages == 0:       # a kernel thread, or a process already gone
                continue
            if parse_ppid(stat) == own_pid:     # the guard, the BPF helper, a hook
                continue
            path = parse_proc_cgroup(read_text(os.path.join(base, "cgroup")))
            if not _under(path, cgroup):
                continue
            adj = int(read_text(os.path.join(base, "oom_score_adj")))
            uid = parse_status_uid(read_text(os.path.join(base, "status")))
            cmdline = parse_cmdline(read_bytes(os.path.join(base, "cmdline"))[:4096])
        except (OSError, ValueError, IndexError):
            skipped += 1
            continue
        out.append(Candidate(int(name), comm, start, rss_pages * PAGE_SIZE, path, cmdline, uid, adj))
    return out, skipped


def _matches(roots: Roots, c: Candidate, globs: dict) -> str | None:
    """Which of *globs* (a VictimFilter's to_json()) *c* matches, said for a
    person (``name cc1plus``), or None."""
    for pattern in globs.get("name", ()):
        if fnmatch.fnmatchcase(c.comm, pattern):
            return f"name {pattern}"
    for pattern in globs.get("cmdline", ()):
        if fnmatch.fnmatchcase(c.cmdline, pattern):
            return f"command line {pattern}"
    for pattern in globs.get("cgroup", ()):
        if c.cgroup is not None and fnmatch.fnmatchcase(c.cgroup, pattern):
            return f"cgroup {pattern}"
    if globs.get("env"):
        environ = c.environ(roots).split(b"\0")
        for pattern in globs["env"]:
            key, eq, value = pattern.partition("=")
            prefix = key.encode() + b"="
            for item in environ:
                if item.startswith(prefix) and (not eq or fnmatch.fnmatchcase(
                        item[len(prefix):].decode("utf-8", "replace"), value)):
                    return f"environment {pattern}"
    return None


def choose(roots: Roots, found: list[Candidate], choice: dict) -> tuple[Candidate | None, str, list[dict]]:
    """(victim, why, the candidates as the result lists them)."""
    prefer, avoid = choice.get("prefer") or {}, choice.get("avoid") or {}
    rank = (lambda c: c.rss) if choice.get("pick", "largest") == "largest" else (lambda c: (c.start, c.pid))
    verdicts = []
    for c in found:
        if c.oom_score_adj == -1000:
            verdicts.append((c, "spared", "oom_score_adj -1000"))
        elif (why := _matches(roots, c, avoid)) is not None:
            verdicts.append((c, "avoided", why))
        elif (why := _matches(roots, c, prefer)) is not None:
            verdicts.append((c, "preferred", why))
        else:
            verdicts.append((c, "other", None))
    victim, why = None, "no process of the domain may be chosen"
    for group in ("preferred", "other"):
        pool = [(c, w) for c, v, w in verdicts if v == group]
        if pool:
            victim, matched = max(pool, key=lambda cw: rank(cw[0]))
            order = "largest" if choice.get("pick", "largest") == "largest" else "newest"
            if group == "preferred":
                why = f"preferred ({matched}), the {order} of {len(pool)} preferred"
            else:
                why = (f"the {order} of {len(pool)} not avoided"
                       + ("; none preferred" if prefer else ""))
            break
    verdicts.sort(key=lambda cv: (cv[0] is not victim, -cv[0].rss))
    listed = [{"pid": c.pid, "comm": c.comm, "rss_bytes": c.rss, "uid": c.uid, "verdict": v,
               **({"matched": w} if w else {})} for c, v, w in verdicts[:LISTED]]
    return victim, why, listed


def _wait_exit(fd: int, seconds: float) -> bool:
    """Whether the process behind pidfd *fd* exits within *seconds* (a
    pidfd becomes readable when it does)."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            return True
    return False


def terminate(roots: Roots, pid: int, start: float, grace: float) -> tuple[str, float]:
    """SIGTERM, then SIGKILL after *grace*: (``terminated`` (it exited on
    SIGTERM), ``killed``, ``gone``, ``reused`` or ``failed: REASON``, the
    seconds it took to exit)."""
    fd = pin(roots, pid, start)
    if isinstance(fd, str):
        return fd, 0.0
    began = time.monotonic()
    try:
        signal.pidfd_send_signal(fd, signal.SIGTERM)
        if _wait_exit(fd, grace):
            return "terminated", time.monotonic() - began
        signal.pidfd_send_signal(fd, signal.SIGKILL)
    except ProcessLookupError:
        return "terminated", time.monotonic() - began
    except OSError as e:
        return f"failed: {e.strerror}", 0.0
    else:
        _wait_exit(fd, 5.0)    # SIGKILL is not refused, but its memory takes a moment to go
        return "killed", time.monotonic() - began
    finally:
        os.close(fd)


def kill_one(roots: Roots, choice: dict, own_pid: int, dry_run: bool = False) -> tuple[str, tuple[dict, ...]]:
    """Choose the victim of the domain *choice* describes and end it (*dry_run*:
    only choose): (result, details); the first detail is the victim's, with
    ``why`` and the ``candidates``."""
    found, skipped = candidates(roots, choice.get("cgroup"), own_pid)
    victim, why, listed = choose(roots, found, choice)
    if victim is None:
        return "no_victim", ({"why": why, "candidates": listed, "unreadable": skipped},)
    if dry_run:
        result, took = "dry_run", 0.0
    else:
        result, took = terminate(roots, victim.pid, victim.start, choice.get("grace", 5.0))
    detail = {"pid": victim.pid, "comm": victim.comm, "cmdline": victim.cmdline[:512], "uid": victim.uid,
              "rss_bytes": victim.rss, "cgroup": victim.cgroup, "result": result, "why": why,
              "exit_seconds": round(took, 3), "candidates": listed, "unreadable": skipped}
    return result, (detail,)

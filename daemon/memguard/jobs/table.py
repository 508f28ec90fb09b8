"""The registered jobs: which processes belong to which job.  Pure.

A process whose environment carries MEMGUARD_JOB (read at its exec) joins
the job of its parent when the parent is a member of a job of that name;
otherwise it starts a job of its own and is its leader.  A process forked
by a member (a data loader's worker, which never execs) is a member too.
Members are known by pid *and* start time: a pid the kernel reuses for
another process is never taken for a member (nothing is ever signalled by
pid alone).  A job ends when its last member exits.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from ..model import ProcessInfo
from .spec import JobSpec, JobSpecError, parse_job

MAX_JOBS = 1024
MAX_MEMBERS = 65536          # over all jobs; beyond, new members are counted, not kept
RSS_KEPT = 64                # a job's RSS at the last scans (every processes_interval, 5 s by default)
GROWTH_SPAN = 60.0           # a job's growth is its RSS's slope over this long


@dataclass
class Job:
    id: str                          # "NAME-LEADERPID"
    spec: JobSpec
    leader: int
    uid: int | None
    registered: float                # monotonic seconds
    members: dict[int, float | None] = field(default_factory=dict)   # pid -> start time (seconds since boot)
    invalid: str | None = None
    how: str = "environment"         # or "socket": registered over the control socket
    channel: int | None = None       # the connection its notifications go to (memguard.client)
    # (monotonic time, the members' RSS summed) at each full /proc scan
    rss_history: deque = field(default_factory=lambda: deque(maxlen=RSS_KEPT))

    @property
    def rss(self) -> int | None:
        return self.rss_history[-1][1] if self.rss_history else None

    def growth(self, now: float, span: float = GROWTH_SPAN) -> float | None:
        """Bytes per second the job's RSS grew over the last *span* seconds
        (least squares over its scans); None with fewer than 3 of them."""
        pts = [(t, v) for t, v in self.rss_history if t >= now - span]
        if len(pts) < 3:
            return None
        mt = sum(t for t, _ in pts) / len(pts)
        mv = sum(v for _, v in pts) / len(pts)
        var = sum((t - mt) ** 2 for t, _ in pts)
        return None if var == 0 else sum((t - mt) * (v - mv) for t, v in pts) / var

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass
class JobTable:
    jobs: dict[str, Job] = field(default_factory=dict)
    member_of: dict[int, str] = field(default_factory=dict)      # pid -> job id
    joined: dict[int, float] = field(default_factory=dict)       # pid -> when it joined (monotonic)
    rejected: dict[int, str] = field(default_factory=dict)       # pid -> why its MEMGUARD_JOB was refused (bounded)
    dropped: int = 0

    def seen(self, p: ProcessInfo, ppid: int | None, value: str | None, now: float) -> list[tuple[str, dict]]:
        """A process seen at its exec (or by a scan) with its MEMGUARD_JOB
        *value* (None: not set); returns log lines."""
        job_id = self.member_of.get(p.pid)
        if job_id is not None:
            job = self.jobs[job_id]
            if job.members.get(p.pid) not in (None, p.start_time):
                self._leave(p.pid)          # a reused pid: another process now
            else:
                job.members[p.pid] = p.start_time
                if value is None:
                    return []
                if value is not None and _name(value) == job.name:
                    return []
                self._leave(p.pid)          # it exec'd with another registration
        if value is None:
            return []
        try:
            spec = parse_job(value)
        except JobSpecError as e:
            if len(self.rejected) >= 256:
                self.rejected.pop(next(iter(self.rejected)))
            self.rejected[p.pid] = str(e)
            return [("job registration refused", {"pid": p.pid, "comm": p.comm, "error": str(e),
                                                  "level": "warning"})]
        parent_job = self.jobs.get(self.member_of.get(ppid, "")) if ppid is not None else None
        if parent_job is not None and parent_job.name == spec.name:
            return self._add(parent_job, p.pid, p.start_time, now)
        if len(self.jobs) >= MAX_JOBS:
            self.dropped += 1
            return []
        job = Job(f"{spec.name}-{p.pid}", spec, p.pid, p.uid, now)
        self.jobs[job.id] = job
        self._add(job, p.pid, p.start_time, now)
        return [("job registered", {"job": job.id, "pid": p.pid, "comm": p.comm, "uid": p.uid})]

    def register(self, pid: int, start: float | None, uid: int | None, spec: JobSpec, channel: int | None,
                 now: float) -> tuple[str | None, list]:
        """A process registered over the control socket (itself, or one of
        its owner's): it joins the job it is already a member of (which
        then also hears on *channel*), or leads a new one.  (job id, log)."""
        job_id = self.member_of.get(pid)
        if job_id is not None and self.jobs[job_id].members.get(pid) in (None, start):
            job = self.jobs[job_id]
            if channel is not None:
                job.channel = channel
            return job.id, []
        if job_id is not None:
            self._leave(pid)      # a reused pid
        if len(self.jobs) >= MAX_JOBS:
            self.dropped += 1
            return None, []
        job = Job(f"{spec.name}-{pid}", spec, pid, uid, now, how="socket", channel=channel)
        self.jobs[job.id] = job
        self._add(job, pid, start, now)
        return job.id, [("job registered", {"job": job.id, "pid": pid, "uid": uid, "how": "socket"})]

    def unregister(self, job_id: str) -> list:
        job = self.jobs.pop(job_id, None)
        if job is None:
            return []
        for pid in job.members:
            self.member_of.pop(pid, None)
            self.joined.pop(pid, None)
        return [("job unregistered", {"job": job_id})]

    def channel_closed(self, channel: int) -> None:
        for job in self.jobs.values():
            if job.channel == channel:
                job.channel = None

    def forked(self, parent: int, child: int, start: float, now: float) -> None:
        job_id = self.member_of.get(parent)
        if job_id is not None and child not in self.member_of:
            self._add(self.jobs[job_id], child, start, now)

    def exited(self, pid: int) -> list[tuple[str, dict]]:
        job_id = self.member_of.get(pid)
        if job_id is None:
            return []
        self._leave(pid)
        if job_id not in self.jobs:
            return [("job ended", {"job": job_id})]
        return []

    def alive(self, pids: set[int], scanned: float) -> list[tuple[str, dict]]:
        """A full scan of /proc that began at *scanned*: members that joined
        before it and are not among *pids* are gone (their exit event was
        lost).  Those that joined since may have been started after the
        scan read the directory."""
        out = []
        for pid in [p for p in self.member_of if p not in pids and self.joined.get(p, 0.0) < scanned]:
            out += self.exited(pid)
        return out

    def _add(self, job: Job, pid: int, start: float | None, now: float) -> list:
        if len(self.member_of) >= MAX_MEMBERS:
            self.dropped += 1
            return []
        job.members[pid] = start
        self.member_of[pid] = job.id
        self.joined[pid] = now
        return []

    def _leave(self, pid: int) -> None:
        self.joined.pop(pid, None)
        job_id = self.member_of.pop(pid, None)
        job = self.jobs.get(job_id or "")
        if job is None:
            return
        job.members.pop(pid, None)
        if not job.members:
            del self.jobs[job.id]
        elif job.leader == pid:   # the eldest remaining member leads
            job.leader = min(job.members, key=lambda m: (job.members[m] is None, job.members[m] or 0, m))

    def scanned(self, rss: dict[int, int], now: float) -> None:
        """A full /proc scan's RSS of every process: each job's sum."""
        for job in self.jobs.values():
            job.rss_history.append((now, sum(rss.get(pid, 0) for pid in job.members)))

    def job_of(self, pid: int) -> str | None:
        return self.member_of.get(pid)


def _name(value: str) -> str:
    return value.partition(",")[0].strip()

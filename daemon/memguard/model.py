"""The words of DESIGN.md as plain, immutable data.

A field the kernel did not give us is ``None``, never 0: "no swap limit" and
"a swap limit of zero" are different facts.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Pressure:
    """One line of a PSI file: ``some avg10=0.12 avg60=0.05 avg300=0.01 total=4711``.

    avg* are percentages of wall time (0..100); total is microseconds stalled.
    """

    avg10: float
    avg60: float
    avg300: float
    total_us: int


@dataclass(frozen=True, slots=True)
class PSI:
    some: Pressure
    full: Pressure | None  # the host-wide cpu file had no "full" before 5.13


@dataclass(frozen=True, slots=True)
class Sample:
    """One reading of one domain at one instant.

    ``used`` is what the kernel charges (cgroup usage, or MemTotal-MemFree on
    the host); ``reclaimable`` is the part the kernel can drop without an OOM
    (inactive file cache, the ZFS ARC above its floor); ``working_set`` is
    ``used - reclaimable``, the figure that runs into the limit.
    """

    domain: str
    kind: str
    used: int
    working_set: int
    limit: int | None
    reclaimable: int | None = None
    swap_used: int | None = None
    swap_limit: int | None = None
    high: int | None = None
    oom_kills: int | None = None
    psi: PSI | None = None
    identity: int | None = None  # a cgroup's inode: a new one is a new domain

    @property
    def usage_ratio(self) -> float | None:
        """working_set / limit, or None without a limit."""
        if not self.limit:
            return None
        return self.working_set / self.limit


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    pid: int
    comm: str
    rss: int
    cgroup: str | None          # memory cgroup path, "/" for the root
    domain: str | None          # the domain whose limit binds this process
    cmdline: str | None = None
    start_time: float | None = None  # seconds since boot
    uid: int | None = None
    job: str | None = None      # registered job (filled by the jobs stage)
    ppid: int | None = None
    job_env: str | None = None  # its MEMGUARD_JOB value, read at exec (None: not set)
    hwm: int | None = None      # the largest RSS it has had (VmHWM), where read


@dataclass(frozen=True, slots=True)
class SourceStatus:
    """What one source said at its last run.

    ``state`` is "active"; "unavailable" (it cannot work on this host, e.g.
    no PSI in the kernel: the daemon is not degraded by it); or "failed" (it
    should work but its last run failed: the daemon is degraded).
    """

    name: str
    state: str
    reason: str | None = None
    last_duration: float | None = None
    errors: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.state == "active"


@dataclass(frozen=True, slots=True)
class OomKill:
    """A kernel event: the OOM killer chose a victim, as one probe saw it.

    Sizes are bytes; ``kernel_time`` is the kill's own timestamp converted to
    CLOCK_MONOTONIC seconds (kmsg's stamp is calibrated, eBPF's ktime and a
    ``mono`` trace clock are monotonic already); ``seen`` is when memguard
    read it.  Any field the probe did not carry is None.
    """

    probe: str                       # "kmsg", "tracefs", "bpf"
    pid: int | None
    seen: float
    kernel_time: float | None = None
    comm: str | None = None
    uid: int | None = None
    total_vm: int | None = None
    anon_rss: int | None = None
    file_rss: int | None = None
    shmem_rss: int | None = None
    pgtables: int | None = None
    oom_score_adj: int | None = None
    constraint: str | None = None    # CONSTRAINT_NONE, _MEMCG, _CPUSET, _MEMORY_POLICY
    oom_memcg: str | None = None     # the cgroup that ran out
    task_memcg: str | None = None    # the victim's own cgroup
    report: object | None = None     # kmsg's whole OomReport, when this came from kmsg
    backlog: bool = False            # it happened while memguardd was not running


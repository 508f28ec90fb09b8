"""What goes into the engine and what comes out: the one door.

The shell hands :meth:`Engine.step` a list of inputs; it returns the
effects, which the shell carries out and whose results come back as inputs.
Nothing else changes the engine's state, and replay and tests read the
effects, never the logs.

Inputs (besides the source runs of a tick, and the kernel's own events:
``model.OomKill``, a ``model.ProcessInfo`` a lookup found, a
``sources.cgroups.Binding`` read at a kill):
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..model import ProcessInfo


@dataclass(frozen=True)
class ProbeRun:
    """A probe read something, or changed state (``reading`` None)."""

    name: str
    state: str                        # active, unavailable, failed
    reason: str | None = None
    reading: object | None = None     # probes.base.ProbeReading


@dataclass(frozen=True)
class GpuOomReported:
    """A process told memguardd that its CUDA allocation failed
    (memguard.client.report_gpu_oom): the allocator's figures it sent."""

    pid: int
    uid: int | None
    device: int | None               # the CUDA device index, as the process numbers it
    message: str                     # the exception's text
    stats: dict                      # allocated, reserved, active, inactive_split, num_alloc_retries, num_ooms
    summary: str | None = None       # torch.cuda.memory_summary()
    snapshot: dict | None = None     # memguard.client.snapshot_summary of torch.cuda.memory._snapshot()


@dataclass(frozen=True)
class AllocatorReported:
    """A process sent its CUDA caching allocator's figures
    (memguard.client.report_allocator)."""

    pid: int
    device: int | None
    stats: dict


@dataclass(frozen=True)
class ProcessesSeen:
    """Processes to name victims by: at exec (the proc connector), or by a
    /proc scan (``at_exec`` False; it never overwrites what an exec told)."""

    processes: tuple[ProcessInfo, ...]
    at_exec: bool = True


@dataclass(frozen=True)
class RulesLoaded:
    """Rule files loaded and checked by the shell: they replace the rules in force."""

    rules: tuple
    files: tuple[str, ...]
    loaded: float                     # wall clock, for status


@dataclass(frozen=True)
class RulesRejected:
    """A reload failed: the rules in force stay, and status shows why."""

    error: str


@dataclass(frozen=True)
class JobRegistered:
    """A process registered over the control socket (memguardctl register,
    memguard.client); *channel*: the connection that wants its notifications."""

    pid: int
    start_time: float | None
    uid: int | None
    spec: object                      # jobs.spec.JobSpec
    channel: int | None = None


@dataclass(frozen=True)
class JobUnregistered:
    job: str


@dataclass(frozen=True)
class ChannelClosed:
    """A connection that wanted notifications went away."""

    channel: int


@dataclass(frozen=True)
class Dropped:
    """Inputs the shell could not hand in (a queue over its bound, a tick
    that raised): counted per cause."""

    counts: dict[str, int] = field(default_factory=dict)


# Effects (besides incidents.build.Write / Remove and rules.evaluate.Transition):


@dataclass(frozen=True)
class LookupWanted:
    """Read what the engine cannot know of a victim without touching the
    host: its /proc entry (``describe``: the exec events missed it) and the
    limits along its cgroup's path (``cgroup``: a cgroup the last walk did
    not see).  The results come back as ProcessInfo and Binding inputs."""

    pid: int
    describe: bool
    cgroup: str | None

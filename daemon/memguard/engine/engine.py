"""The engine: the one owner of all state.

The shell (daemon.py) hands :meth:`Engine.step` everything that happened —
source runs at a tick, probe readings, processes seen, rules loaded, the
results of lookups it was asked for (engine/messages.py) — with the current
instant.  ``step`` is the only way in and out: it does no I/O and reads no
clock, so tests drive it with fake readings and a fake clock, and it
returns :class:`Effects`: the immutable :class:`Snapshot` that everything
else (metrics, the control socket) reads, the interval until the next tick,
rule transitions, lookups wanted, incidents to write, and log lines.
"""

from __future__ import annotations

import fnmatch
import math
import os
from collections import OrderedDict
from dataclasses import dataclass, field, replace

from ..clock import Instant
from ..config import Config
from ..model import OomKill, ProcessInfo, Sample, SourceStatus
from ..sources.base import Reading
from ..predict.predictor import ACTIVATION_WINDOW, BURST_WINDOW, HORIZONS, Prediction, activated, predict, width
from ..rules.evaluate import RuleEngine, domain_env
from ..rules.load import SEVERITIES, STANDING_ACTIONS
from ..sources.cgroups import Binding
from .messages import (AllocatorReported, ChannelClosed, Dropped, GpuOomReported, JobRegistered, JobUnregistered, LookupWanted,
                       ProbeRun, ProcessesSeen, RulesLoaded, RulesRejected)
from ..actions.plan import SEVERITY_SIGNAL, ActionDone, ActionWanted, wanted_hook, wanted_signals
from ..incidents.build import (Context, IncidentBuilder, Write, gpu_oom_document, kill_document,
                               near_miss_document, with_fragmentation)
from ..jobs.table import JobTable
from .recorder import FlightRecorder
from .snapshot import DomainView, Snapshot

# The host slept when CLOCK_BOOTTIME ran ahead of CLOCK_MONOTONIC by more
# than this between two ticks (the two agree to microseconds while awake).
SUSPEND_THRESHOLD = 1.0
# Processes remembered for naming a victim after its /proc entry is gone.
PROCESS_TABLE_SIZE = 4096
# Cgroups' limits read at kills, remembered for the incidents still open.
BINDINGS_KEPT = 1024
# Rule transitions remembered per domain, for the incident of a kill.
TRANSITIONS_KEPT = 600.0
# A process holding less is not worth freezing (a make, a shell, a linker
# wrapper): freezing it frees no room for the others.
FREEZE_MIN_RSS = 16 << 20
# A frozen process is thawed only when it and its job's running processes,
# each grown to the largest a process of the same program in the job has
# reached, fit under this share of the limit (Engine._room_to_thaw).
THAW_ROOM = 0.9
# A job's CUDA allocator figures older than this no longer say what its
# cache holds (Engine._allocator_cache).
ALLOCATOR_FRESH = 60.0
# After a domain moved by a rest step, no rest for this long: the shortest horizon, whose envelope says it.
RESTLESS = HORIZONS[0]
LOOKED = ("host", "wsl")    # the domains of /proc/meminfo: looked at between ticks at rest (_rest)
# Tick intervals vary by up to this fraction either way (Engine._spread).
JITTER = 0.1
GOLDEN = (math.sqrt(5) - 1) / 2


def _gpu_env(device: dict | None) -> dict | None:
    """What a condition sees of a GPU domain as ``gpu``."""
    if device is None:
        return None
    return {"name": device.get("name"), "uuid": device.get("uuid"), "index": device.get("index"),
            "utilization": device.get("utilization_gpu")}


@dataclass(frozen=True)
class SourceRun:
    """What the shell got from running one source once."""

    name: str
    reading: Reading | None = None
    unavailable: str | None = None   # cannot work on this host: why
    error: str | None = None         # failed this time: what happened
    duration: float = 0.0


@dataclass
class DomainState:
    kind: str
    source: str
    identity: int | None
    recorder: FlightRecorder
    first_seen: float
    sample: Sample | None = None
    prediction: Prediction | None = None


@dataclass
class Counters:
    ticks: int = 0
    tick_overruns: int = 0
    suspends: int = 0
    domains_replaced: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # queue -> inputs dropped
    incidents: dict[tuple[str, str, str], int] = field(default_factory=dict)  # (kind, domain, constraint) -> sealed
    actions: dict[tuple[str, str, str], int] = field(default_factory=dict)    # (rule, kind, result) -> done
    near_misses: int = 0


@dataclass
class Effects:
    """What a step asks of the shell.  A log line's fields may carry
    ``level`` ("warning"); it is info otherwise."""

    snapshot: Snapshot | None        # None: nothing new to publish
    interval: float
    log: list[tuple[str, dict]] = field(default_factory=list)
    incidents: list = field(default_factory=list)   # incidents.build.Write / Remove, in order
    transitions: list = field(default_factory=list)  # rules.evaluate.Transition, in order
    lookups: list[LookupWanted] = field(default_factory=list)
    actions: list[ActionWanted] = field(default_factory=list)
    registered: list[str | None] = field(default_factory=list)   # the job ids of JobRegistered inputs, in order


def wake_threshold(used: int, limit: int, sampling) -> int:
    """The usage at which the kernel is asked to wake a resting daemon for a
    v1 cgroup (a ``memory.usage_in_bytes`` threshold): the next multiple of
    ``rest_step`` of the limit above *used*, and no higher than
    ``fast_above`` of it.  On a grid, so it moves only when the usage has
    moved a whole step and need not be registered again at every tick."""
    step = max(1, int(sampling.rest_step * limit))
    return min(int(sampling.fast_above * limit), (used // step + 1) * step)


class Engine:
    def __init__(self, config: Config, started: Instant, version: str, redact=lambda text: text) -> None:
        self.config = config
        self.started = started
        self.version = version
        self.domains: dict[str, DomainState] = {}
        self.sources: dict[str, SourceStatus] = {}
        self.facts: dict[str, dict] = {}
        self.processes: tuple[ProcessInfo, ...] = ()
        self.process_table: dict[int, ProcessInfo] = {}
        self._exec_seen: set[int] = set()     # pids whose entry came from their exec
        self.domain_of = None
        self.bindings: OrderedDict[str, Binding] = OrderedDict()  # cgroup path -> limits read at a kill
        self.probes: dict[str, SourceStatus] = {}
        self.probe_counts: dict[str, dict[str, int]] = {}   # probe -> events/lost/malformed/errors
        self.reclaim: dict[str, tuple[int, float]] = {}    # cgroup2 path -> (stalls, seconds)
        self.redact = redact
        self.incidents = IncidentBuilder(settle=config.incidents.settle)
        self.jobs = JobTable()
        self._now = started.mono
        self._acted: set[tuple[str, str, str, str]] = set()   # (job, rule, domain, warning|critical) signalled
        self._pending_actions: dict[int, ActionWanted] = {}
        self._action_seq = 0
        self._episodes: dict[tuple, dict] = {}   # (rule, domain, job) firing: since when, peak usage
        self._near_misses: list = []
        # Processes memguard froze (pid -> rule, domain, job, start, at,
        # state "frozen" | "thawing"), and when each (rule,
        # domain) last froze or thawed one: see _freeze_and_thaw.
        self.frozen: dict[int, dict] = {}
        # Domains whose leaving rest the kernel tells the daemon of (memcg
        # usage thresholds it registered): set by the daemon.
        self.armed: frozenset[str] = frozenset()
        self.at_rest = False                     # every domain at rest at the last tick (_rest)
        self._held: dict[str, int] = {}          # what each domain held at the last tick (_rest)
        # At rest, the host domains (host, wsl) by name -> (working set held,
        # limit): the daemon looks at /proc/meminfo alone between ticks (_rest).
        self.looks: dict[str, tuple[int, int]] = {}
        self._restless_until = -math.inf
        self._restless_why = ""
        self.awake_because: str | None = None    # why the last tick could not rest (_rest); None at rest
        self._now = -math.inf
        self._froze_at: dict[tuple[str, str], float] = {}
        self._thawed_at: dict[tuple[str, str], float] = {}
        self._froze_too_long: set[int] = set()     # thawed at max_freeze: not frozen again
        self._sampled_sources: set[str] = set()    # sources that have delivered samples before
        # pid -> the memory cgroup it last moved into (the tracefs probe's
        # cgroup_attach_task), for a process /proc could tell only as it
        # exited, when the kernel had put it back in the root cgroup.
        self._moved_to: dict[int, str] = {}
        # job id -> program (comm) -> the largest RSS one of its processes
        # reached; and the programs of which one has run to its end (its
        # peak is known, not only a lower bound): see _room_to_thaw.
        self._program_peak: dict[str, dict[str, int]] = {}
        self._programs_ended: dict[str, set[str]] = {}
        # job id -> GPU domain -> its CUDA allocator's last figures (memguard.client.report_allocator)
        self.allocators: dict[str, dict[str, dict]] = {}
        # Kills under way and when each (rule, domain) last killed: see _kill_if_due.
        self._killing: dict[tuple[str, str], int] = {}
        self._killed_at: dict[tuple[str, str], float] = {}
        # Actions of the last minutes, per domain: what an incident tells of them.
        self.actions_done: dict[str, list[dict]] = {}
        self.rules = RuleEngine([])
        self.rules_info: dict = {"files": [], "count": 0, "error": None}
        # Rule transitions of the last minutes, per domain: what an incident
        # tells of the warnings before a kill.
        self.transitions: dict[str, list] = {}
        self.counters = Counters()
        self._boot_offset: float | None = None
        rec = config.recorder
        self._fine_slots = math.ceil(rec.fine_window / rec.fine_step)
        self._coarse_slots = math.ceil(rec.coarse_window / rec.coarse_step)
        self.interval = config.sampling.interval

    def step(self, runs: list[SourceRun], now: Instant, tick_duration: float | None = None,
             events: list = ()) -> Effects:
        """Fold one batch of inputs into the state.  A tick brings source
        *runs* (and how long they took); a probe, a lookup or a reload
        brings *events* (engine/messages.py, model.OomKill, model.ProcessInfo,
        sources.cgroups.Binding).  A tick publishes a snapshot."""
        fx = Effects(None, 0.0)
        self._now = now.mono
        ticked = bool(runs) or tick_duration is not None
        if ticked:
            self._tick(runs, now, tick_duration, fx)
        ctx = self._context()
        learned = False
        for event in events:
            if isinstance(event, OomKill):
                fx.incidents += self.incidents.add_kill(event, now, ctx)
                fx.lookups += self._lookups_for(event)
            elif isinstance(event, ProbeRun):
                learned |= self._probe_run(event, now, ctx, fx)
            elif isinstance(event, ProcessesSeen):
                self._remember_all(list(event.processes), event.at_exec)
                learned = True
            elif isinstance(event, ProcessInfo):
                self._remember(event)
                learned = True
            elif isinstance(event, Binding):
                self.bindings[event.path] = event
                self.bindings.move_to_end(event.path)
                while len(self.bindings) > BINDINGS_KEPT:
                    self.bindings.popitem(last=False)
                learned = True
            elif isinstance(event, RulesLoaded):
                self.rules.replace_rules(list(event.rules))
                self.rules_info = {"files": list(event.files), "count": len(event.rules), "error": None,
                                   "loaded": event.loaded}
            elif isinstance(event, RulesRejected):
                self.rules_info = {**self.rules_info, "error": event.error}
            elif isinstance(event, JobRegistered):
                job_id, lines = self.jobs.register(event.pid, event.start_time, event.uid, event.spec,
                                                   event.channel, now.mono)
                fx.log += lines
                fx.registered.append(job_id)
            elif isinstance(event, JobUnregistered):
                fx.log += self.jobs.unregister(event.job)
            elif isinstance(event, ChannelClosed):
                self.jobs.channel_closed(event.channel)
            elif isinstance(event, ActionDone):
                fx.log += self._action_done(event, now, fx)
            elif isinstance(event, AllocatorReported):
                job_id = self.jobs.job_of(event.pid)
                if job_id is not None:
                    device = self._gpu_domain(event.pid, event.device)
                    self.allocators.setdefault(job_id, {})[device] = {**with_fragmentation(event.stats),
                                                                      "at": now.mono}
            elif isinstance(event, GpuOomReported):
                domain = self._gpu_domain(event.pid, event.device) if event.device is not None else None
                device = self.facts.get("gpu", {}).get("devices", {}).get(domain)
                doc = gpu_oom_document(event, now.mono, now.wall - now.mono, self.jobs.job_of(event.pid),
                                       domain, device, self.redact)
                fx.incidents.append(Write(doc["id"], doc))
                key = ("gpu_oom", doc["domain"] or "", "")
                self.counters.incidents[key] = self.counters.incidents.get(key, 0) + 1
            elif isinstance(event, Dropped):
                for cause, n in event.counts.items():
                    self.counters.dropped[cause] = self.counters.dropped.get(cause, 0) + n
            else:
                raise TypeError(f"not an engine input: {event!r}")
        if learned:
            fx.incidents += self.incidents.refresh_open(now, ctx)
        fx.incidents += self.incidents.check_counts(now, ctx)
        fx.incidents += self.incidents.seal_due(now, ctx)
        for inc in self.incidents.incidents.values():
            if inc.sealed and not inc.counted:  # once, though a late probe may reopen it
                inc.counted = True
                key = (inc.kind, inc.domain or "", inc.constraint or "")
                self.counters.incidents[key] = self.counters.incidents.get(key, 0) + inc.count
        # A step without a tick publishes no new snapshot: a kill's incident
        # must not wait for one (200 domains take milliseconds to snapshot
        # and render); the next tick publishes the new counters.
        fx.snapshot = self.snapshot(now) if ticked else None
        fx.interval = self._spread(self.interval)
        return fx

    def _probe_run(self, run: ProbeRun, now: Instant, ctx: Context, fx: Effects) -> bool:
        """A probe's reading (or its change of state); whether it told of processes."""
        reading = run.reading
        counts = {}
        if reading is not None:
            counts = {"events": len(reading.kills) + len(reading.processes) + len(reading.forks)
                      + len(reading.exits), "lost": reading.lost, "malformed": reading.malformed}
        elif run.state == "failed":
            counts = {"errors": 1}
        fx.log += self._probe_state(run.name, run.state, run.reason, **counts)
        if reading is None:
            return False
        if reading.facts:  # e.g. the BPF child's load time and memory, shown in status
            self.facts.setdefault(f"probe:{run.name}", {}).update(reading.facts)
        if reading.reclaim is not None:
            self.reclaim = reading.reclaim
        # A batch holds forks and execs apart: forks first, so that a
        # compiler exec'd in the batch finds its parent (forked in it too)
        # in the job already, and does not lead a job of its own; and again
        # after, for the children of a job registered by an exec in it.
        for parent, child, start in reading.forks:
            self.jobs.forked(parent, child, start, now.mono)
        if reading.processes:
            self._remember_all(reading.processes, log=fx.log)
            for parent, child, start in reading.forks:
                self.jobs.forked(parent, child, start, now.mono)
        for pid, path in reading.moves:
            self._moved(pid, path)
        for pid in reading.exits:
            self._ran_to_end(pid, self.jobs.member_of.get(pid))
            fx.log += self.jobs.exited(pid)
            self.frozen.pop(pid, None)
            self._froze_too_long.discard(pid)
        for kill in reading.kills:
            fx.log.append(("oom kill seen", {"probe": run.name, "pid": kill.pid, "comm": kill.comm,
                                             "kernel_time": kill.kernel_time, "seen": round(now.mono, 4)}))
            fx.incidents += self.incidents.add_kill(kill, now, ctx)
            fx.lookups += self._lookups_for(kill)
        return bool(reading.processes)

    def _lookups_for(self, kill: OomKill) -> list[LookupWanted]:
        """What the shell must read of a victim the engine cannot name or
        place: one the exec events missed, or in a cgroup the last walk did
        not see (its limits, read now: it may be gone in a second)."""
        if kill.pid is None:
            return []
        known = self.process_table.get(kill.pid)
        cgroup = kill.task_memcg or (known.cgroup if known else None)
        unknown_cgroup = (cgroup is not None and self.domain_of is not None
                          and self.domain_of(cgroup) is None and cgroup not in self.bindings)
        if known is not None and not unknown_cgroup:
            return []
        return [LookupWanted(kill.pid, describe=known is None, cgroup=cgroup if unknown_cgroup else None)]

    def _probe_state(self, name: str, state: str, reason: str | None = None, **counts: int) -> list:
        """Record a probe's state and add to its counters; returns log lines
        (once per change of state, not per event)."""
        old = self.probes.get(name)
        totals = self.probe_counts.setdefault(name, {"events": 0, "lost": 0, "malformed": 0, "errors": 0})
        for key, n in counts.items():
            totals[key] = totals.get(key, 0) + n
        self.probes[name] = SourceStatus(name, state=state, reason=reason, errors=totals["errors"],
                                         skipped={k: v for k, v in totals.items() if k != "errors"})
        if old is None or old.state != state or old.reason != reason:
            fields = {"probe": name, "reason": reason}
            if state == "failed":
                fields["level"] = "warning"
            return [(f"probe {state}", fields)]
        return []

    def _context(self) -> Context:
        host = self.host_domain()
        self.incidents.host_domain = host
        domain_of = self.domain_of or (lambda path: host)
        return Context({n: s.recorder for n, s in self.domains.items()},
                       {n: s.sample.limit if s.sample else None for n, s in self.domains.items()},
                       self.process_table, domain_of, self.redact, self.transitions,
                       {n: s.prediction for n, s in self.domains.items()}, self.bindings, host,
                       self.actions_done, {n: s.first_seen for n, s in self.domains.items()})

    def _remember_all(self, processes: list[ProcessInfo], at_exec: bool = True, log: list | None = None) -> None:
        """Processes to name victims by: seen at exec (the proc connector),
        or by a /proc scan (*at_exec* False).  A scan's view is older than it
        looks (it ran in a thread before this tick) and may show a process
        between fork and exec, still in its parent's cgroup: it never
        overwrites what the exec told of the same process."""
        for p in processes:
            old = self.process_table.get(p.pid)
            if not at_exec and old is not None and p.pid in self._exec_seen \
                    and old.start_time == p.start_time:
                p = replace(old, rss=p.rss)
            elif at_exec:
                self._exec_seen.add(p.pid)
            else:
                self._exec_seen.discard(p.pid)   # a new process under a reused pid
            if at_exec or p.ppid is not None:    # at its exec, or the scan at start that reads MEMGUARD_JOB
                lines = self.jobs.seen(p, p.ppid, p.job_env, self._now)
                if log is not None:
                    log += lines
            self._remember(p)

    def _moved(self, pid: int, path: str) -> None:
        """*pid* moved into memory cgroup *path* (as it happened)."""
        self._moved_to.pop(pid, None)
        self._moved_to[pid] = path
        while len(self._moved_to) > PROCESS_TABLE_SIZE:
            del self._moved_to[next(iter(self._moved_to))]
        if (p := self.process_table.get(pid)) is not None and p.cgroup != path:
            self._remember(replace(p, cgroup=path, domain=None))

    def _remember(self, p: ProcessInfo) -> None:
        if p.cgroup is None and p.pid in self._moved_to:     # read as it exited: where it last moved to
            p = replace(p, cgroup=self._moved_to[p.pid], domain=None)
        if p.domain is None:
            p = self._attribute(p)
        self.process_table.pop(p.pid, None)
        self.process_table[p.pid] = p
        while len(self.process_table) > PROCESS_TABLE_SIZE:
            self._exec_seen.discard(next(iter(self.process_table)))
            del self.process_table[next(iter(self.process_table))]

    def _tick(self, runs: list[SourceRun], now: Instant, tick_duration: float | None, fx: Effects) -> None:
        log = fx.log
        self.counters.ticks += 1
        if tick_duration is not None and tick_duration > self.interval:
            self.counters.tick_overruns += 1
        self._check_suspend(now, log)
        # Pressure may come from another source than the sample it belongs to
        # (host PSI from the psi source, host memory from meminfo): merge first.
        pressure = {}
        for run in runs:
            if run.reading is not None:
                pressure.update(run.reading.pressure)
        domains_before = set(self.domains)
        for run in runs:
            self._source_status(run, log)
            if run.reading is not None:
                self._fold(run.name, run.reading, pressure, now, log)
        if set(self.domains) - domains_before:
            # A process seen (at exec) before the walk found its cgroup was
            # put in the nearest domain known then: now its own binds it.
            for pid, p in list(self.process_table.items()):
                if p.cgroup is not None:
                    self.process_table[pid] = self._attribute(p)
        for state in self.domains.values():
            state.prediction = self._predict(state, now.mono)
        for job_id in [j for j in self.allocators if j not in self.jobs.jobs]:
            del self.allocators[job_id]      # the job ended
        self._evaluate_rules(now, fx)
        self._now = now.mono
        self.interval = self._next_interval()

    def _check_suspend(self, now: Instant, log: list) -> None:
        offset = now.boot - now.mono
        if self._boot_offset is not None and offset - self._boot_offset > SUSPEND_THRESHOLD:
            slept = offset - self._boot_offset
            self.counters.suspends += 1
            log.append(("host resumed from suspend; prediction windows restart",
                        {"slept_seconds": round(slept, 3)}))
            for state in self.domains.values():
                state.recorder.restart_window(now.mono)
        self._boot_offset = offset

    def _source_status(self, run: SourceRun, log: list) -> None:
        old = self.sources.get(run.name)
        errors = (old.errors if old else 0) + (1 if run.error else 0)
        reason = run.unavailable or run.error
        skipped = dict(old.skipped) if old else {}
        if run.reading is not None:
            for why, n in run.reading.skipped.items():
                skipped[why] = skipped.get(why, 0) + n
        state = "active" if run.reading is not None else "unavailable" if run.unavailable else "failed"
        status = SourceStatus(run.name, state=state, reason=reason,
                              last_duration=run.duration, errors=errors, skipped=skipped)
        if old is None or old.state != status.state or old.reason != status.reason:
            log.append((f"source {state}", {"source": run.name, "reason": reason,
                                            **({"level": "warning"} if state == "failed" else {})}))
        self.sources[run.name] = status

    def _fold(self, source: str, reading: Reading, pressure: dict, now: Instant, log: list) -> None:
        if reading.facts:
            self.facts[source] = dict(reading.facts)
        if reading.domain_of is not None:
            self.domain_of = reading.domain_of
        if reading.known:
            self._remember_all(reading.known, at_exec=False, log=log)
        if reading.pids is not None:
            before = dict(self.jobs.member_of)
            log += self.jobs.alive(reading.pids, reading.pids_at)
            for pid in [p for p in before if p not in self.jobs.member_of]:
                self._ran_to_end(pid, before[pid])
        if reading.rss is not None:
            self.jobs.scanned(reading.rss, reading.pids_at)
            for pid, job_id in self.jobs.member_of.items():   # what freezing picks by: their RSS now
                if (p := self.process_table.get(pid)) is not None and (rss := reading.rss.get(pid)) is not None:
                    self.process_table[pid] = replace(p, rss=rss)
                    self._note_peak(pid, rss)
            for job_id in [j for j in self._program_peak if j not in self.jobs.jobs]:
                del self._program_peak[job_id]
                self._programs_ended.pop(job_id, None)
        if reading.processes is not None:
            self.processes = tuple(self._attribute(p) for p in reading.processes)
            self._remember_all(list(self.processes), at_exec=False)
            for p in self.processes:
                if p.hwm is not None:
                    self._note_peak(p.pid, p.hwm)
        seen = set()
        for sample in reading.samples:
            seen.add(sample.domain)
            if sample.domain in pressure:
                sample = replace(sample, psi=pressure[sample.domain])
            if sample.kind == "gpu" and (cached := self._allocator_cache(sample.domain, now)):
                cached = min(cached, sample.used)
                sample = replace(sample, reclaimable=cached, working_set=sample.used - cached)
            self._record(source, sample, now, log)
        if reading.samples:
            self._sampled_sources.add(source)
        tracked = reading.tracked if reading.tracked is not None else seen
        for name in [n for n, s in self.domains.items() if s.source == source and n not in tracked]:
            del self.domains[name]
            log.append(("domain gone", {"domain": name}))

    def _gpu_domain(self, pid: int, device: int | None) -> str:
        """The GPU domain of a CUDA report: the one domain whose NVML
        processes hold *pid*, else ``gpu:<device>``.  CUDA numbers devices
        its own way: a MIG instance is CUDA device 0, and
        CUDA_VISIBLE_DEVICES renumbers the GPUs."""
        holding = [name for name, d in self.facts.get("gpu", {}).get("devices", {}).items()
                   if any(p["pid"] == pid for p in d.get("processes", ()))]
        return holding[0] if len(holding) == 1 else f"gpu:{device if device is not None else 0}"

    def _allocator_cache(self, domain: str, now: Instant) -> int:
        """What the CUDA caching allocators of the jobs on GPU *domain* hold
        reserved but not allocated, by their last reports.  NVML counts it
        used, yet PyTorch hands it back to the driver and retries before it
        raises out-of-memory: to the job that caches it, it is room, as
        inactive page cache is to a cgroup.  Its steps (a segment reserved
        once, reused for the rest of the run) are not growth."""
        return sum(max(0, a.get("reserved_bytes", 0) - a.get("allocated_bytes", 0))
                   for by_device in self.allocators.values()
                   if (a := by_device.get(domain)) is not None and now.mono - a["at"] <= ALLOCATOR_FRESH
                   and a.get("allocated_bytes") is not None)

    def _record(self, source: str, sample: Sample, now: Instant, log: list) -> None:
        state = self.domains.get(sample.domain)
        if state is not None and state.identity != sample.identity:
            # Removed and made again under the same path: a new domain.
            self.counters.domains_replaced += 1
            log.append(("domain replaced", {"domain": sample.domain}))
            state = None
        if state is None:
            rec = self.config.recorder
            state = DomainState(sample.kind, source, sample.identity,
                                FlightRecorder(self._fine_slots, self._coarse_slots, rec.coarse_step,
                                               tuple(width(h) for h in HORIZONS)),
                                first_seen=now.mono)
            self.domains[sample.domain] = state
            log.append(("domain found", {"domain": sample.domain, "limit": sample.limit}))
        elif state.sample is not None and state.sample.limit != sample.limit:
            log.append(("limit changed; prediction window restarts",
                        {"domain": sample.domain, "old": state.sample.limit, "new": sample.limit}))
            state.recorder.restart_window(now.mono)
        old = state.sample
        if old is not None and old.oom_kills is not None and sample.oom_kills is not None \
                and sample.oom_kills > old.oom_kills:
            self.incidents.counted(sample.domain, sample.oom_kills - old.oom_kills, now)
        elif old is None and sample.kind == "cgroup" and sample.oom_kills and source in self._sampled_sources:
            # a cgroup made since the last walk, killed already: what places
            # a kill nothing else placed (those found by the first walk may
            # count kills from long before)
            self.incidents.counted(sample.domain, sample.oom_kills, now, first_sight=True)
        state.sample = sample
        state.recorder.record(now.mono, sample)

    def _attribute(self, p: ProcessInfo) -> ProcessInfo:
        """*p* with the domain that binds it; in a cgroup the last walk did
        not see, its nearest ancestor's for now (the cgroup may have a limit
        of its own: the walk that notice() brings forward tells)."""
        host = self.host_domain()
        if p.cgroup is None or self.domain_of is None:
            return replace(p, domain=host, job=self.jobs.job_of(p.pid))
        path = p.cgroup
        while (domain := self.domain_of(path)) is None and path not in ("/", ""):
            path = os.path.dirname(path)
        return replace(p, domain=domain or host, job=self.jobs.job_of(p.pid))

    def host_domain(self) -> str:
        for name, state in self.domains.items():
            if state.kind in ("host", "wsl"):
                return name
        return "host"

    def _evaluate_rules(self, now: Instant, fx: Effects) -> None:
        if not self.rules.rules and not self.frozen:
            return
        by_domain = self._jobs_by_domain() if self.jobs.jobs else {}
        gpus = self.facts.get("gpu", {}).get("devices", {})
        envs = {name: domain_env(name, s.kind, s.sample, s.prediction,
                                 self._job_env(by_domain[name], now, name) if name in by_domain else None,
                                 _gpu_env(gpus.get(name)) if s.kind == "gpu" else None)
                for name, s in sorted(self.domains.items()) if s.sample is not None}
        job_envs = {}
        if by_domain and self.rules.per_job:
            for domain, jobs in by_domain.items():
                if domain in envs:
                    for job in jobs:
                        job_envs[f"{domain}\0{job.id}"] = {**envs[domain], "job": self._job_env(jobs, now, domain, job)}
        transitions = self.rules.evaluate(envs, now.mono, job_envs)
        for key in [k for k in self._episodes if k[1] not in self.domains]:
            del self._episodes[key]          # its domain is gone: no clear will come
        for (rule, domain, _), episode in self._episodes.items():
            ratio = envs.get(domain, {}).get("usage_ratio")
            if ratio is not None and (episode["peak"] is None or ratio > episode["peak"]):
                episode["peak"] = ratio
        for tr in transitions:
            if tr.kind == "fire":
                self._episodes[(tr.rule, tr.domain, tr.job)] = {
                    "fired": now.mono, "peak": envs.get(tr.domain, {}).get("usage_ratio")}
            fx.transitions.append(tr)
            fx.log.append((f"rule {tr.kind}", {"rule": tr.rule, "domain": tr.domain, "severity": tr.severity,
                                            "previous": tr.previous,
                                            **({"job": tr.job} if tr.job is not None else {})}))
            kept = self.transitions.setdefault(tr.domain, [])
            kept.append(tr)
            while kept and now.mono - kept[0].at > TRANSITIONS_KEPT:
                kept.pop(0)
        for name in [n for n in self.transitions if n not in self.domains]:
            del self.transitions[name]
        if transitions:
            fx.actions += self._plan_actions(transitions, now)
            fx.incidents += self._near_misses
            self._near_misses = []
        if self.frozen or self._killing or self.rules.standing:
            fx.actions += self._standing_actions(now, envs, job_envs)

    def _standing_actions(self, now: Instant, envs: dict, job_envs: dict) -> list[ActionWanted]:
        """The actions done while a rule stands at a level that names them
        (up to the level reached), not once per firing: ``freeze``
        (_freeze_and_thaw) and ``kill`` (_kill_if_due).  A freezing episode
        whose processes are still frozen goes on while a freezing level's
        condition holds now, even when the rule has cleared and waits out
        its cooldown: a thawed compiler growing again must not find the
        rule asleep."""
        rules = {r.name: r for r in self.rules.rules}
        freezing: dict[tuple[str, str], tuple] = {}
        killing: dict[tuple[str, str], tuple] = {}
        for name, domain, severity, _, job_id in self.rules.firing():
            rule = rules[name]
            reached = next(i for i, lv in enumerate(rule.levels) if lv.severity == severity)
            for kind, standing in (("freeze", freezing), ("kill", killing)):
                specs = [a for lv in rule.levels[:reached + 1] for a in lv.actions if a.kind == kind]
                if specs:
                    standing[(name, domain)] = (rule, specs[-1], severity, job_id)
        for f in self.frozen.values():
            key = (f["rule"], f["domain"])
            if key in freezing or (rule := rules.get(f["rule"])) is None:
                continue
            env = job_envs.get(f"{f['domain']}\0{f['job']}") if rule.per_job else envs.get(f["domain"])
            first = next((i for i, lv in enumerate(rule.levels) if any(a.kind == "freeze" for a in lv.actions)),
                         None)
            if env is None or first is None:
                continue
            held = [lv for lv in rule.levels[first:] if lv.when(env)]
            if held:
                spec = [a for lv in rule.levels[:first + 1] for a in lv.actions if a.kind == "freeze"][-1]
                freezing[key] = (rule, spec, held[-1].severity, f["job"] if rule.per_job else None)
        return self._freeze_and_thaw(freezing, now) + self._kill_if_due(killing, now)

    def _context_of(self, domain: str) -> dict:
        """The prediction an action was taken on, as its record keeps it."""
        state = self.domains.get(domain)
        p = state.prediction if state else None
        return {"tto_seconds": p.tto if p else None, "confidence": p.confidence if p else None,
                "rate_bytes_per_second": p.rate if p else None,
                "usage_ratio": state.sample.usage_ratio if state and state.sample else None}

    def _kill_if_due(self, killing: dict, now: Instant) -> list[ActionWanted]:
        """A kill, memguard choosing the victim (actions/kill.py), when a
        rule reaches a level with one; again every ``kill_every`` after the
        last one ended while the level still stands, never two at once."""
        for key in [k for k in self._killed_at if k not in killing]:
            del self._killed_at[key]
        wanted = []
        for (name, domain), (rule, spec, severity, _) in killing.items():
            last = self._killed_at.get((name, domain))
            if (name, domain) in self._killing or (
                    last is not None and now.mono - last < self.config.actions.kill_every):
                continue
            state = self.domains.get(domain)
            cgroup = domain.removeprefix("cgroup:") if state is not None and state.kind == "cgroup" else None
            action = self._new_action(
                kind="kill", rule=name, severity=severity, domain=domain, job=None, uid=0, targets=(),
                signal=spec.signal, dry_run=self.config.actions.dry_run or rule.dry_run, at=now.mono,
                context=self._context_of(domain),
                choice={"cgroup": cgroup, "pick": spec.pick, "prefer": spec.prefer.to_json(),
                        "avoid": spec.avoid.to_json(), "grace": spec.grace})
            self._killing[(name, domain)] = action.id
            self._killed_at[(name, domain)] = now.mono
            wanted.append(action)
        return wanted

    def _freeze_and_thaw(self, freezing: dict, now: Instant) -> list[ActionWanted]:
        """While a rule stands at a level with a ``freeze`` action in a
        domain, freeze one more process of its target jobs every
        ``freeze_every`` (never the last one still running, never a job's
        leader); once it no longer does, thaw them one at a time, every
        ``thaw_every``, first frozen first; thaw any frozen for
        ``max_freeze``, whatever the rules say, and never freeze it again
        (the ladder's next level must act instead)."""
        cfg = self.config.actions
        wanted: list[ActionWanted] = []
        for key in [k for k in self._froze_at if k not in freezing]:
            del self._froze_at[key]
        for (name, domain), (rule, spec, severity, job_id) in freezing.items():
            # one freeze every freeze_every, and none that soon after a thaw (no stop-start churn)
            last = max(self._froze_at.get((name, domain), -math.inf), self._thawed_at.get((name, domain), -math.inf))
            if now.mono - last < cfg.freeze_every:
                continue
            candidates = self._freeze_candidates(rule, spec, domain, job_id)
            if candidates is None:
                continue
            self._froze_at[(name, domain)] = now.mono
            wanted.append(self._new_action(
                kind="freeze", rule=name, severity=severity, domain=domain, job=candidates[0][0].id,
                uid=candidates[0][0].uid, targets=tuple((pid, job.members.get(pid)) for job, pid in candidates),
                dry_run=self.config.actions.dry_run or rule.dry_run, at=now.mono, context=self._context_of(domain),
                choice={"pick": spec.pick, "min_rss": FREEZE_MIN_RSS,
                        "jobs": {pid: job.id for job, pid in candidates}}))
        thawing = {(f["rule"], f["domain"]) for f in self.frozen.values() if f["state"] == "frozen"}
        for key in thawing - freezing.keys():
            last = self._thawed_at.get(key)
            if last is not None and now.mono - last < cfg.thaw_every:
                continue
            pid = min((p for p, f in self.frozen.items() if (f["rule"], f["domain"]) == key
                       and f["state"] == "frozen"), key=lambda p: self.frozen[p]["at"])
            if not self._room_to_thaw(pid):
                continue
            self._thawed_at[key] = now.mono
            wanted.append(self._thaw(pid, now, "room again"))
        for pid, f in list(self.frozen.items()):
            if f["state"] == "frozen" and now.mono - f["at"] >= cfg.max_freeze:
                wanted.append(self._thaw(pid, now, "max_freeze"))
                if len(self._froze_too_long) < PROCESS_TABLE_SIZE:
                    self._froze_too_long.add(pid)
        return wanted

    def _note_peak(self, pid: int, rss: int) -> None:
        """*rss* was read of member *pid* (now, or as its peak): the largest
        its program reached in its job."""
        job_id = self.jobs.member_of.get(pid)
        if job_id is not None and (p := self.process_table.get(pid)) is not None:
            peaks = self._program_peak.setdefault(job_id, {})
            if rss > peaks.get(p.comm, 0):
                peaks[p.comm] = rss

    def _ran_to_end(self, pid: int, job_id: str | None) -> None:
        """Member *pid* of *job_id* ended: how large its program grows in
        the job is known."""
        if job_id is not None and (p := self.process_table.get(pid)) is not None:
            self._programs_ended.setdefault(job_id, set()).add(p.comm)

    def _room_to_thaw(self, pid: int) -> bool:
        """Whether the domain has room for frozen *pid* to grow again: if it
        and each running process of its job grew to the largest its program
        reached in the job (_growth_to_peak), the working set would stay
        under THAW_ROOM of the limit.  While no process of a program holding
        FREEZE_MIN_RSS or more has run to its end, that largest is only a
        lower bound, and the scans (every processes_interval) lag a compiler
        taking hundreds of MiB a second: a frozen process waits while any
        such runs."""
        f = self.frozen[pid]
        job = self.jobs.jobs.get(f["job"])
        state = self.domains.get(f["domain"])
        if job is None or state is None or state.sample is None:
            return True
        need, known = self._growth_to_peak(job, f["domain"], pid)
        return known and state.sample.working_set + need <= THAW_ROOM * state.sample.limit

    def _growth_to_peak(self, job, domain: str, thawing: int | None = None) -> tuple[int, bool]:
        """How much more *domain* would hold if each running process of
        *job* there (not its leader; and frozen *thawing*, as if it ran)
        grew to the largest RSS a process of its program reached in the job;
        and whether that largest is known for each of them other than
        *thawing* (a process of its program ran to its end).

        A process of a build grows, as a rule, as large as the others of
        the same program did (each cc1plus to a few hundred MiB; make, the
        shells and the compiler drivers stay small, under FREEZE_MIN_RSS,
        and count as they are).  A compiler just started counts as one at
        that peak, not as the few MiB it holds yet (a real make -j2 thawed
        otherwise, its two compilers climbed again together and ended in a
        kill, in 4 of 6 full runs of the suite)."""
        peaks = dict(self._program_peak.get(job.id, {}))
        members = [(m, p) for m in job.members if (p := self.process_table.get(m)) is not None]
        for _, p in members:                      # what they hold now, if no scan has seen it yet
            peaks[p.comm] = max(peaks.get(p.comm, 0), p.rss)
        ended = self._programs_ended.get(job.id, set())
        need, known = 0, True
        for member, p in members:
            if p.domain != domain or member == job.leader or member != thawing and member in self.frozen:
                continue
            peak = peaks[p.comm]
            if peak < FREEZE_MIN_RSS:
                continue
            if member != thawing and p.comm not in ended:
                known = False
            need += max(0, peak - p.rss)
        return need, known

    def _freeze_candidates(self, rule, spec, domain: str, job_id: str | None) -> list | None:
        """(job, pid) of the processes of the target jobs in *domain* one of
        which a freeze may stop, the likeliest first (newest, or largest as
        last seen); None when fewer than two (the last one running is never
        frozen).  A job's leader is never one.  The freezer thread chooses
        among them by their RSS then (actions/freeze.py choose_to_freeze):
        a compiler can take hundreds of MiB between two scans."""
        running = [(job, pid, self.process_table.get(pid))
                   for job in self._target_jobs(rule, spec, domain, job_id) for pid in job.members
                   if pid != job.leader and pid not in self.frozen and pid not in self._froze_too_long
                   and (p := self.process_table.get(pid)) is not None and p.domain == domain]
        if len(running) < 2:
            return None
        if spec.pick == "largest":
            running.sort(key=lambda r: r[2].rss, reverse=True)
        else:
            running.sort(key=lambda r: (r[2].start_time or 0.0, r[1]), reverse=True)
        return [(job, pid) for job, pid, _ in running]

    def _thaw(self, pid: int, now: Instant, why: str) -> ActionWanted:
        f = self.frozen[pid]
        f["state"] = "thawing"
        job = self.jobs.jobs.get(f["job"])
        return self._new_action(kind="thaw", rule=f["rule"], severity=None, domain=f["domain"], job=f["job"],
                                uid=job.uid if job else None, targets=((pid, f["start"]),), dry_run=False,
                                at=now.mono, context={"why": why, "frozen_seconds": round(now.mono - f["at"], 3)})

    def _jobs_by_domain(self) -> dict[str, list]:
        """The registered jobs with processes in each domain."""
        by_domain: dict[str, list] = {}
        for job in self.jobs.jobs.values():
            for d in self.domains_of(job):
                by_domain.setdefault(d, []).append(job)
        return by_domain

    def domains_of(self, job) -> set[str]:
        """The domains a job is in: the one that binds each member's memory,
        and each GPU on which a member holds memory (NVML's host pids)."""
        domains = {p.domain for pid in job.members if (p := self.process_table.get(pid)) is not None}
        for domain, device in self.facts.get("gpu", {}).get("devices", {}).items():
            if any(proc["pid"] in job.members for proc in device.get("processes", ())):
                domains.add(domain)
        return domains

    def _job_env(self, jobs: list, now: Instant, domain: str, job=None) -> dict:
        """The ``job`` a condition sees in *domain*, which holds *jobs*:
        *job* (a per-job rule's pair), else the largest of them (``name``,
        ``id``, ``rss``, ``growth``, ``registered_for`` seconds,
        ``peak_ratio``: the domain's usage ratio once its running processes
        grew to their programs' peaks, _growth_to_peak); ``count`` of the
        domain's jobs and the ``names`` ``match.job`` tests (the pair's job
        only, for a per-job rule)."""
        one = job if job is not None else max(jobs, key=self._job_rss)
        allocators = self.allocators.get(one.id, {}).values()
        sample = self.domains[domain].sample
        peak_ratio = None
        if self.rules.peak_ratio and sample is not None and sample.limit:
            peak_ratio = (sample.working_set + self._growth_to_peak(one, domain)[0]) / sample.limit
        return {"gpu_fragmentation": max((a["fragmentation"] for a in allocators if "fragmentation" in a), default=None),
                "gpu_reserved": sum(a.get("reserved_bytes", 0) for a in allocators) if allocators else None,
                "peak_ratio": peak_ratio,
                "name": one.name, "id": one.id, "rss": self._job_rss(one), "growth": one.growth(now.mono),
                "registered_for": now.mono - one.registered, "count": len(jobs),
                "names": (one.name,) if job is not None else tuple(sorted({j.name for j in jobs}))}

    def _jobs_in(self, domain: str, only: str | None = None) -> list:
        """The jobs with a process in *domain* (just the job *only*, when a
        per-job rule's transition names it)."""
        return [job for job in self.jobs.jobs.values()
                if (only is None or job.id == only) and domain in self.domains_of(job)]

    def _plan_actions(self, transitions, now: Instant) -> list[ActionWanted]:
        """The signals the jobs in a domain asked for at the severity a rule
        reached there: once per job, rule and severity until the rule clears."""
        wanted = []
        for tr in transitions:
            if tr.kind == "clear":
                self._acted = {a for a in self._acted if (a[1], a[2]) != (tr.rule, tr.domain)
                               or (tr.job is not None and a[0] != tr.job)}
                self._near_miss(tr, now)
                continue
            if tr.kind not in ("fire", "escalate"):
                continue
            context = self._context_of(tr.domain)
            for job in self._jobs_in(tr.domain, tr.job):
                base = dict(rule=tr.rule, severity=tr.severity, domain=tr.domain, job=job.id, uid=job.uid,
                            dry_run=self.config.actions.dry_run, at=now.mono, context=context)
                for which, sig in wanted_signals(job.spec, tr.severity or ""):
                    self._emit(wanted, (job.id, tr.rule, tr.domain, which), kind="signal", signal=sig,
                               targets=self._pids(job, job.spec.target), **base)
                if (hook := wanted_hook(job.spec, tr.severity or "")) is not None:
                    self._emit(wanted, (job.id, tr.rule, tr.domain, "hook"), kind="hook", command=hook,
                               targets=((job.leader, None),), **base)
                if job.channel is not None:
                    for which in SEVERITY_SIGNAL.get(tr.severity or "", ()):
                        self._emit(wanted, (job.id, tr.rule, tr.domain, f"notify-{which}"), kind="notify",
                                   event=which, channel=job.channel, targets=((job.leader, None),), **base)
            wanted += self._rule_actions(tr, now, context)
        return wanted

    def _emit(self, wanted: list, key: tuple, **fields) -> None:
        """An action, once per *key* (job, rule, domain, what) until the rule clears."""
        if key in self._acted:
            return
        self._acted.add(key)
        wanted.append(self._new_action(**fields))

    def _new_action(self, **fields) -> ActionWanted:
        """An ActionWanted with the next id, awaited until its ActionDone."""
        self._action_seq += 1
        fields.setdefault("signal", None)
        action = ActionWanted(self._action_seq, timeout=self.config.actions.hook_timeout, **fields)
        self._pending_actions[action.id] = action
        return action

    def _rule_actions(self, tr, now: Instant, context: dict) -> list[ActionWanted]:
        """The actions a rule's levels name, up to the level reached (a climb
        straight to critical runs the warning level's too), each once per
        job until the rule clears."""
        rule = next((r for r in self.rules.rules if r.name == tr.rule), None)
        if rule is None:
            return []
        reached = next((i for i, lv in enumerate(rule.levels) if lv.severity == tr.severity), -1)
        wanted = []
        for li in range(reached + 1):
            event = "critical" if SEVERITIES.index(rule.levels[li].severity) >= SEVERITIES.index("critical") \
                else "warning"
            for ai, spec in enumerate(rule.levels[li].actions):
                if spec.kind in STANDING_ACTIONS:
                    continue                    # not once per firing: _standing_actions, every tick
                if spec.target == "domain":     # a hook for the domain itself, as root (a trusted file's)
                    self._emit(wanted, (None, tr.rule, tr.domain, f"rule-{li}-{ai}"), kind="hook", rule=tr.rule,
                               severity=tr.severity, domain=tr.domain, job=None, uid=0, targets=(),
                               dry_run=self.config.actions.dry_run or rule.dry_run, at=now.mono,
                               context=context, command=spec.command)
                    continue
                for job in self._target_jobs(rule, spec, tr.domain, tr.job):
                    if spec.kind == "notify" and job.channel is None:
                        continue
                    to = "all" if spec.kind == "oom_score_adj" else spec.to
                    self._emit(wanted, (job.id, tr.rule, tr.domain, f"rule-{li}-{ai}"), kind=spec.kind,
                               rule=tr.rule, severity=tr.severity, domain=tr.domain, job=job.id,
                               uid=0 if spec.kind == "hook" and spec.as_root else job.uid,
                               targets=self._pids(job, to) if spec.kind in ("signal", "oom_score_adj")
                               else ((job.leader, None),),
                               choice={"value": spec.score} if spec.kind == "oom_score_adj" else None,
                               signal=spec.signal, dry_run=self.config.actions.dry_run or rule.dry_run,
                               at=now.mono, context=context, command=spec.command, channel=job.channel,
                               event=event if spec.kind == "notify" else None)
        return wanted

    def _target_jobs(self, rule, spec, domain: str, job_id: str | None) -> list:
        """The jobs in *domain* an action of *rule* names: ``all_jobs``, the
        ``largest_job`` of those ``match.job`` selects, or (``job``) each of
        those, just the pair's *job_id* for a rule about jobs."""
        in_domain = self._jobs_in(domain)
        if spec.target == "all_jobs":
            return in_domain
        selected = [j for j in in_domain if rule.job_glob is None or fnmatch.fnmatchcase(j.name, rule.job_glob)]
        if spec.target == "largest_job":
            return [max(selected, key=self._job_rss)] if selected else []
        return [j for j in selected if job_id is None or j.id == job_id]

    def _pids(self, job, target: str) -> tuple[tuple[int, float | None], ...]:
        """(pid, start time) of the members a signal goes to."""
        return tuple((pid, job.members.get(pid)) for pid in self._targets(job, target))

    def _targets(self, job, target: str) -> list[int]:
        """The members a job's signal goes to: its leader, all, or the largest by RSS."""
        if target == "all":
            return sorted(job.members)
        if target == "largest":
            known = [pid for pid in job.members if pid in self.process_table]
            return [max(known, key=lambda pid: self.process_table[pid].rss)] if known else [job.leader]
        return [job.leader]

    def _job_rss(self, job) -> int:
        """The job's RSS at the last full scan, else as its members were last seen."""
        if job.rss is not None:
            return job.rss
        return sum(p.rss for pid in job.members if (p := self.process_table.get(pid)) is not None)

    def _near_miss(self, tr, now: Instant) -> None:
        """A rule that cleared after its actions reached a job, with no kill
        in the domain since it fired: a near miss, written as an incident."""
        episode = self._episodes.pop((tr.rule, tr.domain, tr.job), None)
        if episode is None:
            return
        told = [a for a in self.actions_done.get(tr.domain, ())
                if a["rule"] == tr.rule and a["at"] >= episode["fired"] and a["result"] in ("sent", "ok", "partial")
                and (tr.job is None or a["job"] == tr.job)]
        if not told:
            return
        killed = any(inc.kind == "oom_kill" and inc.domain == tr.domain
                     and (inc.kernel_time if inc.kernel_time is not None else inc.first_seen) >= episode["fired"]
                     for inc in self.incidents.incidents.values())
        if killed:
            return
        doc = near_miss_document(tr.rule, tr.domain, episode["fired"], now.mono, now.wall - now.mono, told,
                                 told[0].get("tto_seconds"), episode["peak"])
        self._near_misses.append(Write(doc["id"], doc))
        self.counters.near_misses += 1

    def _action_done(self, done: ActionDone, now: Instant, fx: Effects) -> list:
        action = self._pending_actions.pop(done.id, None)
        if action is None:
            return []
        if action.kind == "kill":
            self._killing.pop((action.rule, action.domain), None)
            if (action.rule, action.domain) in self._killed_at:
                self._killed_at[(action.rule, action.domain)] = done.at    # kill_every counts from its end
            if done.result in ("terminated", "killed") or action.dry_run:
                doc = kill_document(action, done, now.wall - now.mono, self.redact)
                fx.incidents.append(Write(doc["id"], doc))
        if action.kind == "freeze":
            for pid, rss, hwm in (done.details[0].get("seen", ()) if done.details else ()):
                self._note_peak(pid, max(rss, hwm or 0))
        if action.kind == "freeze" and done.result == "sent":
            pid, start = done.details[0]["pid"], done.details[0].get("start")
            job = self.jobs.member_of.get(pid) or action.choice["jobs"].get(pid, action.job)
            action = replace(action, job=job, targets=((pid, start),))
            self.frozen[pid] = {"rule": action.rule, "domain": action.domain, "job": job, "start": start,
                                "at": action.at, "state": "frozen"}
        elif action.kind == "freeze" and done.result == "no_victim":
            self._froze_at.pop((action.rule, action.domain), None)   # none held enough yet: try at the next tick
        elif action.kind == "thaw":
            self.frozen.pop(action.targets[0][0], None)
        key = (action.rule, action.kind, done.result)
        self.counters.actions[key] = self.counters.actions.get(key, 0) + 1
        record = {"at": action.at, "kind": action.kind, "rule": action.rule, "severity": action.severity,
                  "job": action.job, "signal": action.signal, "command": action.command, "result": done.result,
                  "targets": list(done.details), "dry_run": action.dry_run, **action.context}
        kept = self.actions_done.setdefault(action.domain, [])
        kept.append(record)
        while kept and done.at - kept[0]["at"] > TRANSITIONS_KEPT:
            kept.pop(0)
        return [("action", {"kind": action.kind, "rule": action.rule, "severity": action.severity,
                            "domain": action.domain, "job": action.job, "signal": action.signal,
                            "result": done.result, "dry_run": action.dry_run,
                            **({"level": "warning"} if done.result in ("failed", "timed_out") else {})})]

    @staticmethod
    def _predict(state: DomainState, now: float) -> Prediction | None:
        if state.sample is None:
            return None
        rec = state.recorder
        since = max(rec.window_start, now - BURST_WINDOW)
        recent = [(p.t, p.working_set) for p in rec.fine.recent(since)]
        envs, lows = {}, {}
        for h in HORIZONS:
            env, since = rec.envelopes[width(h)], max(rec.window_start, now - h)
            envs[h], lows[h] = env.points(since), env.lows(since)
        p = predict(envs, recent, state.sample.limit, now, lows)
        if p.tto is None:
            return p
        then = rec.fine.first_since(max(rec.window_start, now - ACTIVATION_WINDOW))
        return activated(p, None if then is None else (then.used, then.working_set),
                         (state.sample.used, state.sample.working_set), state.sample.limit)

    def _next_interval(self) -> float:
        """Fast when any domain is close to its limit or predicted to reach
        it soon; longer, up to the rest interval, when every domain is at
        rest (_rest)."""
        sampling = self.config.sampling
        for state in self.domains.values():
            ratio = state.sample.usage_ratio if state.sample else None
            if ratio is not None and ratio >= sampling.fast_above:
                return sampling.fast_interval
            p = state.prediction
            if p is not None and p.tto is not None and p.tto <= sampling.fast_below_tto:
                return sampling.fast_interval
        return max(sampling.interval, self._rest())

    def stir(self, now: float) -> None:
        """Something changed that ticks must follow (a cgroup made or
        removed): no rest for RESTLESS seconds."""
        self._restless_until = max(self._restless_until, now + RESTLESS)
        self._restless_why = "a cgroup was made or removed"

    def _rest(self) -> float:
        """How long the daemon may sleep: 0 unless every domain is far from
        its limit (under rest_below of it, by working set and, for a cgroup,
        by usage) and not growing towards it, and nothing is in flight that
        ticks carry on (a rule firing, a process frozen, an incident open).
        A domain the kernel wakes the daemon for (``armed``: memcg usage
        thresholds, the root cgroup's for the host) allows the whole rest
        interval, and so does a host that is not, which the daemon looks at
        between ticks (``looks``: one read of /proc/meminfo); any other only
        as long as growing at ``rest_growth`` would take it to
        ``fast_above``."""
        sampling = self.config.sampling
        rest = sampling.rest_interval
        self.at_rest = False
        self.looks, looks = {}, {}
        if rest <= 0:
            self.awake_because = "sampling.rest_interval is 0"
            return 0.0
        seen, self._held = self._held, {}
        swinging = None       # a domain whose last RESTLESS seconds span a step or more (a sawtooth)
        for name, state in self.domains.items():
            s = state.sample
            if s is not None and s.limit:
                # the shortest horizon's envelope: its buckets' peaks and lows
                envelope = state.recorder.envelopes[width(HORIZONS[0])]
                since = self._now - RESTLESS
                peak = max((v for _, v in envelope.points(since)), default=s.working_set)
                low = min(envelope.lows(since), default=s.working_set)
                # a sawtooth rests by its peaks, not its troughs
                self._held[name] = held = max(peak, s.used) if s.kind == "cgroup" else peak
                step = sampling.rest_step * s.limit
                if held - seen.get(name, held) >= step:
                    # It moved (the kernel's threshold woke us, or it grew
                    # between two rests): watch it at the interval for a
                    # while; samples taken only as it rises past a threshold
                    # would show a climb that is not there.
                    self._restless_until = self._now + RESTLESS
                    self._restless_why = f"{name} grew by rest_step"
                if peak - low >= step:
                    swinging = name
        self.awake_because = (f"{swinging} moved by rest_step within 30 s" if swinging
                              else self._restless_why if self._now < self._restless_until
                              else "a rule is firing" if self.rules.firing()
                              else "a process is frozen" if self.frozen
                              else "an incident is open" if self.incidents.incidents else None)
        if self.awake_because:
            return 0.0
        for name, state in self.domains.items():
            s, held = state.sample, self._held.get(name)
            if held is None:
                continue
            p = state.prediction
            self.awake_because = (
                f"{name} is over rest_below of its limit" if held >= sampling.rest_below * s.limit
                else f"{name} is predicted to reach its limit" if p is not None and p.tto is not None
                else f"{name} is leaking" if p is not None and p.leak_rate is not None
                else f"{name} is watched 30 s first" if self._now - state.first_seen < RESTLESS else None)
            if self.awake_because:
                return 0.0
            if name in self.armed:
                continue
            if s.kind in LOOKED:
                looks[name] = (held, s.limit)
            else:
                rest = min(rest, (sampling.fast_above * s.limit - held) / sampling.rest_growth)
        self.at_rest, self.looks = True, looks
        return rest

    def _spread(self, interval: float) -> float:
        """*interval* varied by up to JITTER either way, so that a workload
        with a period of a multiple of it (a training step of 2 s sampled
        every second) is not always seen at the same phase: its peaks would
        never reach the envelope.  The golden-ratio sequence covers the
        phases evenly and replays the same every time."""
        phase = (self.counters.ticks * GOLDEN) % 1.0
        return interval * (1.0 + JITTER * (2 * phase - 1))

    def _views(self, now: Instant) -> tuple[DomainView, ...]:
        return tuple(
            DomainView(name, s.kind, s.identity, s.sample, now.mono - s.first_seen,
                       max(0.0, now.mono - s.recorder.window_start)
                       if s.recorder.window_start > -math.inf else now.mono - s.first_seen,
                       s.recorder.nbytes, s.prediction)
            for name, s in sorted(self.domains.items()) if s.sample is not None
        )

    def snapshot(self, now: Instant) -> Snapshot:
        domains = self._views(now)
        return Snapshot(
            version=self.version, now=now, started=self.started, interval=self.interval,
            sources=tuple(sorted(self.sources.values(), key=lambda s: s.name)),
            probes=tuple(sorted(self.probes.values(), key=lambda s: s.name)),
            domains=domains, processes=self.processes, reclaim=dict(self.reclaim),
            firing=tuple(self.rules.firing()), rules_info=dict(self.rules_info),
            unattributed_kills=self.incidents.unattributed,
            facts={k: dict(v) for k, v in self.facts.items()},
            counters=replace(self.counters, dropped=dict(self.counters.dropped),
                             incidents=dict(self.counters.incidents), actions=dict(self.counters.actions)),
            jobs=self._job_views(now), jobs_rejected=tuple(self.jobs.rejected.items()),
            at_rest=self.at_rest, awake_because=self.awake_because,
            armed=tuple(sorted(self.armed)) if self.at_rest else (), looked_at=tuple(sorted(self.looks)),
        )

    def history(self, names: list[str] | None, seconds: float, now: float) -> dict:
        """Every sample of the last *seconds* of each domain (of *names*, or
        all), from the flight recorder, times relative to *now*; and the
        predictor's leak rate (memguardctl profile)."""
        out = {}
        for name, state in sorted(self.domains.items()):
            if names and name not in names:
                continue
            points = state.recorder.fine.rows(since=now - seconds)
            out[name] = {"kind": state.kind, "t": [round(p.t - now, 3) for p in points],
                         "used_bytes": [int(p.used) for p in points],
                         "working_set_bytes": [int(p.working_set) for p in points],
                         "limit_bytes": [None if math.isnan(p.limit) else int(p.limit) for p in points],
                         "leak_rate": state.prediction.leak_rate if state.prediction else None}
        return out

    def _job_views(self, now: Instant) -> tuple[dict, ...]:
        """Each job as status shows it: its processes, domain and memory
        (RSS as last seen: at exec, or by the scan of top consumers)."""
        views = []
        for job in sorted(self.jobs.jobs.values(), key=lambda j: j.registered):
            known = [self.process_table[p] for p in job.members if p in self.process_table]
            leader = self.process_table.get(job.leader)
            domain = self.domains.get(leader.domain) if leader else None
            p = domain.prediction if domain else None
            last = max((a for acts in self.actions_done.values() for a in acts if a["job"] == job.id),
                       key=lambda a: a["at"], default=None)
            views.append({
                "prediction": None if p is None else {"tto_seconds": p.tto, "confidence": p.confidence,
                                                      "rate_bytes_per_second": p.rate},
                "last_action": None if last is None else {
                    "kind": last["kind"], "rule": last["rule"], "severity": last["severity"],
                    "signal": last["signal"], "result": last["result"],
                    "seconds_ago": round(now.mono - last["at"], 3)},
                "gpu_bytes": {domain: sum(p["used_bytes"] or 0 for p in device.get("processes", ())
                                          if p["pid"] in job.members)
                              for domain, device in sorted(self.facts.get("gpu", {}).get("devices", {}).items())
                              if any(p["pid"] in job.members for p in device.get("processes", ()))},
                "allocator": {d: {k: v for k, v in a.items() if k != "at"} | {"seconds_ago": round(now.mono - a["at"], 3)}
                              for d, a in sorted(self.allocators.get(job.id, {}).items())},
                "frozen": [{"pid": pid, "rule": f["rule"], "seconds": round(now.mono - f["at"], 3)}
                           for pid, f in sorted(self.frozen.items()) if f["job"] == job.id],
                "id": job.id, "name": job.name, "registration": job.spec.to_json(), "leader": job.leader,
                "pids": sorted(job.members), "uid": job.uid,
                "domain": leader.domain if leader else None, "cgroup": leader.cgroup if leader else None,
                "rss_bytes": job.rss if job.rss is not None else (sum(p.rss for p in known) if known else None),
                "growth_bytes_per_second": None if (g := job.growth(now.mono)) is None else round(g, 1),
                "registered_seconds": round(now.mono - job.registered, 3)})
        return tuple(views)

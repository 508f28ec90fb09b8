"""Building incidents from kernel events: one incident per OOM kill.

Several probes report the same kill (eBPF first, then tracefs, then the
kmsg report with its whole story); the builder folds them into one incident
keyed by the victim's pid and the kill's time, and lists which probes saw
it and how late.  A ``memory.oom.group`` kill of several processes is one
incident listing every victim (the kmsg report names them all); two victims
of one cgroup seconds apart are two incidents.

An incident is written at its first sighting, rewritten as more probes
report it, and sealed once nothing new has come for ``settle`` seconds: the
fastest probe sets the latency, the others add detail.

The domain of a kill is what the kernel said (``oom_memcg``), else the
cgroup whose limit binds the victim's cgroup — never the host because the
cgroup was too young to be tracked.  Such a cgroup's limit comes from the
kernel's report or from cgroupfs read at the kill (a ``Binding`` the shell
looks up), and the incident says the domain was not tracked yet.

The builder is pure: it is handed events, the domains' flight recorders and
``now``, and returns documents to write; it reads no file and no clock.
"""

from __future__ import annotations

import datetime
import math
import re
from dataclasses import dataclass, field

from ..clock import Instant
from ..model import OomKill, ProcessInfo
from ..probes.oom_report import infer_constraint
from ..sources.cgroups import Binding
from ..units import format_bytes
from ..engine.recorder import FlightRecorder

INCIDENT_SCHEMA_VERSION = 1
# Events of one kill arrive within milliseconds; kmsg can lag by a second or
# two when the task table is long.  Same pid within this window: same kill.
MATCH_WINDOW = 10.0
# How long an incident stays open for more probes before it is sealed.
SETTLE = 2.0
# History kept in an incident: the last 5 minutes of the domain's samples.
HISTORY = 300.0
# Sealed incidents are remembered this long, so a very late report still merges.
REMEMBER = 60.0
# A kill the kernel counted gets this long for a probe's sighting to match it
# before it becomes an unattributed incident (kmsg of a big task table lags).
COUNT_GRACE = 3.0


def rfc3339(wall: float) -> str:
    return datetime.datetime.fromtimestamp(wall, datetime.timezone.utc).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


def near_miss_document(rule: str, domain: str, fired: float, cleared: float, wall_offset: float,
                       actions: list[dict], tto: float | None, peak: float | None) -> dict:
    """A warning that was acted on and then cleared with no kill in its
    domain: the job was told in time.  *tto*: the time to OOM predicted when
    it was first acted on, the lead it had; *peak*: the highest usage ratio
    seen while the rule fired."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", domain.removeprefix("cgroup:")).strip("_")[:60] or "root"
    jobs = sorted({a["job"] for a in actions if a["job"]})
    who = f"{', '.join(jobs)} told" if jobs else "its hook ran"
    lead = None if tto is None else round(tto, 3)
    return {
        "schema_version": INCIDENT_SCHEMA_VERSION, "id": incident_id(fired + wall_offset, None, f"near-miss-{slug}"),
        "kind": "near_miss", "state": "sealed", "time": rfc3339(fired + wall_offset),
        "cleared": rfc3339(cleared + wall_offset), "domain": domain, "rule": rule,
        "lead_seconds": lead, "peak_usage_ratio": None if peak is None else round(peak, 4),
        "jobs": jobs, "actions": [{**{k: v for k, v in a.items() if k != "at"}, "t": round(a["at"] - fired, 3)}
                                  for a in actions],
        "victim": None, "headline": (f"Near miss in {domain}: {who} "
                                     + (f"{lead:.0f} s before the predicted OOM" if lead is not None else "in time")
                                     + f" ({rule}); no kill followed."),
    }


def kill_document(action, done, wall_offset: float, redact) -> dict:
    """memguard's own last-resort kill (actions/kill.py), or the one a dry
    run would have made: whom it chose, why, whom else it weighed, and the
    prediction it acted on."""
    victim = dict(done.details[0])
    if victim.get("cmdline"):
        victim["cmdline"] = redact(victim["cmdline"])
    verb = "would have killed" if action.dry_run else (
        "killed" if done.result == "killed" else "terminated")
    ended = {"terminated": f"it exited {victim.get('exit_seconds')} s after SIGTERM",
             "killed": f"SIGKILL after the {action.choice.get('grace')} s grace period",
             "dry_run": "dry run: no signal sent"}.get(done.result, done.result)
    tto = action.context.get("tto_seconds")
    ratio = action.context.get("usage_ratio")
    return {
        "schema_version": INCIDENT_SCHEMA_VERSION,
        "id": incident_id(action.at + wall_offset, victim.get("pid"), "memguard-kill"),
        "kind": "memguard_kill", "state": "sealed", "time": rfc3339(action.at + wall_offset),
        "domain": action.domain, "rule": action.rule, "severity": action.severity, "dry_run": action.dry_run,
        "result": done.result, "prediction": dict(action.context), "choice": dict(action.choice),
        "victim": f"{victim.get('comm')} ({victim.get('pid')})",
        "victims": [{k: victim.get(k) for k in ("pid", "comm", "cmdline", "uid", "rss_bytes", "cgroup",
                                                "exit_seconds")}],
        "why": victim.get("why"), "candidates": victim.get("candidates", []),
        "headline": (f"memguard {verb} {victim.get('comm')} (pid {victim.get('pid')}) in {action.domain} "
                     f"({action.rule}, {action.severity}"
                     + (f", {100 * ratio:.0f}% of the limit" if ratio is not None else "")
                     + (f", {tto:.0f} s to OOM" if tto is not None else "")
                     + f"): {victim.get('why')}; {ended}."),
    }


def with_fragmentation(stats: dict) -> dict:
    """A CUDA allocator's figures with ``fragmentation``, (reserved -
    allocated) / reserved, where both are there."""
    stats = dict(stats)
    reserved, allocated = stats.get("reserved_bytes"), stats.get("allocated_bytes")
    if reserved and allocated is not None:
        stats["fragmentation"] = round((reserved - allocated) / reserved, 4)
    return stats


def gpu_oom_document(report, at: float, wall_offset: float, job: str | None, domain: str | None,
                     device: dict | None, redact) -> dict:
    """A CUDA out-of-memory error a job reported (memguard.client) on GPU
    *domain*: what its allocator held and what the GPU held, as NVML saw it."""
    stats = with_fragmentation(report.stats)
    frag = stats.get("fragmentation")
    return {
        "schema_version": INCIDENT_SCHEMA_VERSION, "id": incident_id(at + wall_offset, report.pid, "gpu-oom"),
        "kind": "gpu_oom", "state": "sealed", "time": rfc3339(at + wall_offset), "domain": domain,
        "victim": f"pid {report.pid}" + (f" ({job})" if job else ""),
        "victims": [{"pid": report.pid, "uid": report.uid, "job": job}],
        "message": redact(report.message)[:4096], "allocator": stats,
        "summary": None if report.summary is None else report.summary[:65536],
        "snapshot": report.snapshot,
        "gpu": device,
        "headline": (f"CUDA out of memory in pid {report.pid}" + (f" ({job})" if job else "")
                     + (f" on {domain}" + (f" ({device['name']})" if device and device.get("name") else "")
                        if domain else "")
                     + _gpu_oom_cause(frag, report.snapshot) + "."),
    }


def _gpu_oom_cause(fragmentation: float | None, snapshot: dict | None) -> str:
    """Why, where the figures say: the allocation that failed was larger than
    any free block though the cache held more than it free (fragmentation),
    or the allocator held much of its reserve unused."""
    if snapshot and snapshot.get("failed_bytes") and snapshot["failed_bytes"] > snapshot.get("largest_free_bytes", 0) \
            and snapshot.get("free_bytes", 0) >= snapshot["failed_bytes"]:
        return (f": {format_bytes(snapshot['failed_bytes'])} failed while the cache held "
                f"{format_bytes(snapshot['free_bytes'])} free, none of it in one block "
                f"(largest {format_bytes(snapshot.get('largest_free_bytes', 0))}): fragmentation")
    if fragmentation is not None:
        return f": the allocator held {100 * fragmentation:.0f}% of its reserved memory unused (fragmentation)"
    return ""



def incident_id(wall: float, pid: int | None, kind: str) -> str:
    stamp = datetime.datetime.fromtimestamp(wall, datetime.timezone.utc).strftime("%Y%m%dT%H%M%S.%f")[:-3]
    return f"{stamp}Z-{pid if pid is not None else 'x'}-{kind}"


@dataclass
class Victim:
    pid: int | None
    fields: dict = field(default_factory=dict)   # comm, uid, rss figures, ...
    process: ProcessInfo | None = None           # what we knew before it died


@dataclass
class OpenIncident:
    id: str
    kind: str                        # "oom_kill", "unattributed_oom_kill"
    kernel_time: float | None        # monotonic seconds of the kill
    first_seen: float
    last_update: float
    wall_offset: float               # wall - mono at first sighting
    victims: dict[int, Victim] = field(default_factory=dict)
    probes: dict[str, dict] = field(default_factory=dict)
    domain: str | None = None
    constraint: str | None = None
    constraint_source: str | None = None  # "kernel", or the line it was inferred from
    oom_memcg: str | None = None
    task_memcg: str | None = None
    report: object | None = None
    found_late: bool = False
    sealed: bool = False
    count: int = 1                   # kills it stands for (an unattributed one can be several)
    counted: bool = False            # in the engine's sealed-incident counters already
    explains: set[str] = field(default_factory=set)  # domains whose counter it accounted for
    notes: list[str] = field(default_factory=list)
    context: dict = field(default_factory=dict)  # frozen at first sighting: samples, consumers
    context_domain: str | None = None


@dataclass
class Counted:
    """A domain's kernel OOM-kill counter went up by ``count`` at ``seen``;
    *first_sight*: the counter as the domain was first sampled (a cgroup
    made a moment ago, killed before any walk saw it, or kills from long
    before): it places kills nothing else placed, never stands for one."""

    domain: str
    count: int
    seen: float
    wall_offset: float
    first_sight: bool = False


@dataclass
class Write:
    id: str
    document: dict


@dataclass
class Remove:
    id: str


class IncidentBuilder:
    def __init__(self, host_domain: str = "host", settle: float = SETTLE, live: bool = True) -> None:
        self.host_domain = host_domain
        self.settle = settle
        self.live = live  # reports read from /dev/kmsg as they came (not pasted text)
        self.incidents: dict[str, OpenIncident] = {}
        self.pending: list[Counted] = []
        self.unattributed = 0

    # -- matching ------------------------------------------------------------

    def _time(self, kill: OomKill) -> float:
        return kill.kernel_time if kill.kernel_time is not None else kill.seen

    def _find(self, kill: OomKill, pids: set[int]) -> list[OpenIncident]:
        t = self._time(kill)
        found = []
        for inc in self.incidents.values():
            if inc.kind != "oom_kill" or not pids & set(inc.victims):
                continue
            ref = inc.kernel_time if inc.kernel_time is not None else inc.first_seen
            if abs(ref - t) <= MATCH_WINDOW:
                found.append(inc)
        return found

    # -- folding events --------------------------------------------------------

    def add_kill(self, kill: OomKill, now: Instant, ctx: "Context") -> list:
        """Fold one probe's sighting in; return the Write/Remove effects."""
        pids = {kill.pid} if kill.pid is not None else set()
        report_pids = {v.pid for v in getattr(kill.report, "victims", ()) if v.pid is not None}
        matches = self._find(kill, pids | report_pids)
        effects: list = []
        if matches:
            inc = min(matches, key=lambda i: i.first_seen)
            for other in matches:
                if other is not inc:  # two probes' early sightings of one group kill
                    self._absorb(inc, other)
                    del self.incidents[other.id]
                    effects.append(Remove(other.id))
        else:
            inc = self._open(kill, now, ctx)
        self._merge(inc, kill, now, ctx)
        effects.append(Write(inc.id, self.document(inc, ctx)))
        return effects

    def _open(self, kill: OomKill, now: Instant, ctx: "Context") -> OpenIncident:
        offset = now.wall - now.mono
        t = self._time(kill)
        inc = OpenIncident(id=incident_id(t + offset, kill.pid, "oom"), kind="oom_kill",
                           kernel_time=kill.kernel_time, first_seen=now.mono, last_update=now.mono,
                           wall_offset=offset, found_late=kill.backlog)
        self.incidents[inc.id] = inc
        return inc

    def _absorb(self, into: OpenIncident, other: OpenIncident) -> None:
        for pid, v in other.victims.items():
            into.victims.setdefault(pid, v)
        for probe, seen in other.probes.items():
            into.probes.setdefault(probe, seen)

    def _merge(self, inc: OpenIncident, kill: OomKill, now: Instant, ctx: "Context") -> None:
        inc.last_update = now.mono
        inc.sealed = False
        if kill.kernel_time is not None and (inc.kernel_time is None or kill.kernel_time < inc.kernel_time):
            inc.kernel_time = kill.kernel_time  # mark_victim (eBPF, tracefs) precedes kmsg's kill line
        delay = None if kill.kernel_time is None else max(0.0, kill.seen - kill.kernel_time)
        inc.probes.setdefault(kill.probe, {"seen": kill.seen, "delay_seconds": delay})
        report = kill.report
        if report is not None:
            inc.report = report
            for v in getattr(report, "victims", ()):
                self._victim(inc, v.pid, ctx).fields.update(_known(v, _VICTIM_FIELDS))
        if kill.pid is not None:
            self._victim(inc, kill.pid, ctx).fields.update(_known(kill, _VICTIM_FIELDS))
        for name in ("constraint", "oom_memcg", "task_memcg"):
            value = getattr(kill, name)
            if value is not None:
                setattr(inc, name, value)
        if inc.report is not None:
            # the kernel's word, unless the report contradicts it or it is not there
            inc.constraint, inc.constraint_source = infer_constraint(inc.report)
        elif kill.constraint is not None:
            inc.constraint_source = "kernel"
        self._refresh(inc, ctx)
        self._freeze(inc, ctx, now)

    def _freeze(self, inc: OpenIncident, ctx: "Context", now: Instant) -> None:
        if not inc.context or inc.context_domain != inc.domain:
            # frozen at first sighting; again if the domain turned out another
            t = inc.kernel_time if inc.kernel_time is not None else inc.first_seen
            inc.context = ctx.freeze(inc.domain, t, now)
            inc.context_domain = inc.domain

    def refresh_open(self, now: Instant, ctx: "Context") -> list:
        """Rewrite open incidents whose domain a new fact changed (a victim's
        exec record, a cgroup's limits read at the kill)."""
        effects = []
        for inc in self.incidents.values():
            if inc.kind != "oom_kill" or inc.sealed:
                continue
            before = inc.domain
            self._refresh(inc, ctx)
            if inc.domain != before:
                self._freeze(inc, ctx, now)
                effects.append(Write(inc.id, self.document(inc, ctx)))
        return effects

    def _victim(self, inc: OpenIncident, pid: int, ctx: "Context") -> Victim:
        v = inc.victims.get(pid)
        if v is None:
            v = inc.victims[pid] = Victim(pid)
        return v

    def _refresh(self, inc: OpenIncident, ctx: "Context") -> None:
        """Name victims from the process table: its exec record can reach us
        after the fastest probe's sighting of the kill."""
        for v in inc.victims.values():
            if v.process is None and v.pid is not None:
                v.process = ctx.process(v.pid)
        inc.domain = self._domain(inc, ctx)

    def _domain(self, inc: OpenIncident, ctx: "Context") -> str | None:
        """The domain that ran out: the kill's oom_memcg (not the victim's own
        cgroup), tracked or not; a global OOM is the host's; before kmsg
        tells (or when it printed only the kill line), the domain that binds
        the victim's cgroup.  None for a memcg OOM whose cgroup nothing
        names."""
        if inc.oom_memcg:   # printed only for a memcg OOM, whatever the constraint says
            return ctx.memcg_domain(inc.oom_memcg)
        if inc.constraint == "CONSTRAINT_NONE":
            return self.host_domain
        for v in inc.victims.values():
            cgroup = inc.task_memcg or (v.process.cgroup if v.process else None)
            if cgroup:
                domain = ctx.binding_domain(cgroup)
                if domain is not None:
                    return domain
        if inc.constraint == "CONSTRAINT_MEMCG":
            return inc.domain if inc.domain != self.host_domain else None
        return inc.domain or self.host_domain

    def seal_due(self, now: Instant, ctx: "Context") -> list:
        """Seal incidents that had nothing new for SETTLE seconds; forget old ones."""
        effects = []
        for inc in list(self.incidents.values()):
            if not inc.sealed and now.mono - inc.last_update >= self.settle:
                inc.sealed = True
                if inc.kind == "oom_kill":
                    self._refresh(inc, ctx)
                effects.append(Write(inc.id, self.document(inc, ctx)))
            elif inc.sealed and now.mono - inc.last_update >= REMEMBER:
                del self.incidents[inc.id]
        return effects

    # -- the kernel's own counters ------------------------------------------------

    def counted(self, domain: str, count: int, now: Instant, first_sight: bool = False) -> None:
        """The kernel counted *count* kills in *domain* (cgroup oom_kill or
        /proc/vmstat); each must be matched by an incident within COUNT_GRACE
        (see Counted for *first_sight*)."""
        self.pending.append(Counted(domain, count, now.mono, now.wall - now.mono, first_sight))

    def check_counts(self, now: Instant, ctx: "Context") -> list:
        """Match counted kills whose grace is over against incidents; what no
        incident explains becomes an unattributed incident.  Deepest domains
        first: a kill counted in a cgroup is counted in its ancestors too, and
        one incident explains them all."""
        due = [c for c in self.pending if now.mono - c.seen >= COUNT_GRACE]
        if not due:
            return []
        self.pending = [c for c in self.pending if now.mono - c.seen < COUNT_GRACE]
        effects = []
        for c in sorted(due, key=lambda c: -_depth(c.domain)):
            missing = c.count
            candidates = [inc for inc in self.incidents.values()
                          if c.domain not in inc.explains and self._within(inc, c)]
            unplaced = [inc for inc in candidates if inc.kind == "oom_kill" and inc.domain is None]
            # kills with a known place first; one with none is placed by this
            # count only when it is the only one in the window (in a storm,
            # two such kills and two such counts cannot be told apart)
            for inc in sorted(candidates, key=lambda i: (i.domain is None, i.first_seen)):
                if missing <= 0:
                    break
                if self._explains(inc, c.domain):
                    inc.explains.add(c.domain)
                    missing -= inc.count
                    if unplaced == [inc] and c.domain.startswith("cgroup:"):
                        self._placed(inc, c)
                        effects.append(Write(inc.id, self.document(inc, ctx)))
            if missing > 0 and not c.first_sight:
                inc = self._unattributed(c, missing, ctx)
                effects.append(Write(inc.id, self.document(inc, ctx)))
        return effects

    def _within(self, inc: OpenIncident, c: Counted) -> bool:
        t = inc.kernel_time if inc.kernel_time is not None else inc.first_seen
        return c.seen - MATCH_WINDOW - COUNT_GRACE <= t <= c.seen + COUNT_GRACE

    def _explains(self, inc: OpenIncident, domain: str) -> bool:
        """Whether a kill in *inc* is counted by *domain*'s counter: the host's
        counts every kill; a cgroup's, kills of tasks in its subtree."""
        if domain == self.host_domain or inc.domain == domain:
            return True
        path = domain.removeprefix("cgroup:")
        cgroups = [inc.task_memcg] + [v.process.cgroup for v in inc.victims.values() if v.process]
        cgroups = [g for g in cgroups if g]
        if not cgroups:
            return True  # we do not know where it was: let it account for this one
        return any(g == path or g.startswith(path.rstrip("/") + "/") for g in cgroups)

    @staticmethod
    def _placed(inc: OpenIncident, c: Counted) -> None:
        """A kill no probe placed (its report rate-limited, its victim read
        only as it exited, when the kernel had already moved it to the root
        cgroup) is the one *c*'s cgroup counted: the deepest counter that
        went up in its window."""
        inc.domain = c.domain
        inc.task_memcg = c.domain.removeprefix("cgroup:")
        inc.notes.append(f"Placed in {inc.task_memcg} by the kernel's own count of OOM kills there "
                         "(memory.oom_control or memory.events): neither the report nor the victim's "
                         "/proc entry said which cgroup it was in.")

    def _unattributed(self, c: Counted, count: int, ctx: "Context") -> OpenIncident:
        self.unattributed += count
        slug = re.sub(r"[^A-Za-z0-9_-]+", "_", c.domain.removeprefix("cgroup:")).strip("_")[:60] or "root"
        inc = OpenIncident(id=incident_id(c.seen + c.wall_offset, None, f"unattributed-{slug}"),
                           kind="unattributed_oom_kill", kernel_time=None, first_seen=c.seen,
                           last_update=c.seen, wall_offset=c.wall_offset, domain=c.domain,
                           sealed=True, count=count, explains={c.domain})
        if c.domain.startswith("cgroup:"):
            inc.task_memcg = c.domain.removeprefix("cgroup:")
        inc.notes.append(
            f"The kernel counted {count} OOM kill(s) in {c.domain} that no probe reported: "
            "the kmsg report may have been lost to ring overflow, or every probe was down. "
            "What is known is the domain and its samples before the kill.")
        inc.context = ctx.freeze(c.domain, c.seen, None)
        self.incidents[inc.id] = inc
        return inc

    # -- the document ------------------------------------------------------------

    def document(self, inc: OpenIncident, ctx: "Context") -> dict:
        t = inc.kernel_time if inc.kernel_time is not None else inc.first_seen
        report = inc.report
        doc = {
            "schema_version": INCIDENT_SCHEMA_VERSION,
            "id": inc.id,
            "kind": inc.kind,
            "state": "sealed" if inc.sealed else "open",
            "time": rfc3339(t + inc.wall_offset),
            "time_monotonic": round(t, 6),
            "detected": rfc3339(inc.first_seen + inc.wall_offset),
            "found_late": inc.found_late,
            "count": inc.count,
            "domain": inc.domain,
            "domain_tracked": inc.domain is not None and ctx.tracked(inc.domain, t),
            "constraint": inc.constraint,
            "constraint_source": inc.constraint_source,
            "oom_memcg": inc.oom_memcg,
            "task_memcg": inc.task_memcg,
            "victims": [self._victim_json(inc, v, ctx) for v in inc.victims.values()],
            "probes": [{"name": name, "seen": rfc3339(p["seen"] + inc.wall_offset),
                        "delay_seconds": None if p["delay_seconds"] is None else round(p["delay_seconds"], 6)}
                       for name, p in sorted(inc.probes.items(), key=lambda kv: kv[1]["seen"])],
            "invoker": _invoker(report),
            "memcg": _memcg(report),
            "kernel_tasks": [_task(t) for t in getattr(report, "tasks", ())],
            "missing": list(getattr(report, "missing", ())) if report is not None else ["kmsg_report"],
            "missing_reason": self._missing_reason(inc),
            "raw_report": list(getattr(report, "raw", ())),
            "notes": list(inc.notes),
            **inc.context,
        }
        sampled = doc["limit_bytes"]
        doc["limit_source"] = "samples" if sampled is not None else None
        if inc.kind == "oom_kill" and (sampled is None or not doc["domain_tracked"]):
            limit, source = self._limit(inc, ctx)
            if limit is not None:
                doc["limit_bytes"], doc["limit_source"] = limit, source
        doc["notes"] += self._notes(inc, doc)
        doc["victim"] = ", ".join(f"{v['comm'] or '?'} ({v['pid']})" for v in doc["victims"]) or None
        doc["headline"] = _headline(doc)
        return doc

    def _limit(self, inc: OpenIncident, ctx: "Context") -> tuple[int | None, str | None]:
        """The limit of a domain memguard had no samples of: the kernel's
        report when it names that cgroup, else cgroupfs read at the kill."""
        report, domain = inc.report, inc.domain or ""
        if report is not None and report.memcg_limit is not None and inc.oom_memcg \
                and domain == ctx.memcg_domain(inc.oom_memcg):
            return report.memcg_limit, "kernel report"
        for b in ctx.bindings_of(domain):
            if b.limit is not None:
                return b.limit, "cgroupfs at the kill"
        return None, None

    def _missing_reason(self, inc: OpenIncident) -> str | None:
        report = inc.report
        if report is None:
            return None
        if report.only_kill_lines and report.lost_records is None:
            return "rate_limited" if self.live else "only_kill_lines"
        if report.lost_records is not None:
            return "records_lost"
        return None

    def _notes(self, inc: OpenIncident, doc: dict) -> list[str]:
        notes = []
        if doc["missing_reason"] == "rate_limited":
            notes.append("The kernel printed only the kill line for this kill: it prints the whole "
                         "report (header, memory figures, task table, summary) for at most 10 kills "
                         "in 5 s (oom_rs in mm/oom_kill.c), and this kill came in a burst. "
                         "The victim and its cgroup tell the rest.")
        elif doc["missing_reason"] == "only_kill_lines":
            notes.append("The text holds only the kill line of this kill: the kernel prints no more "
                         "for kills beyond 10 in 5 s (its report rate limit), or the rest was left "
                         "out of the text.")
        elif doc["missing_reason"] == "records_lost":
            notes.append("Part of the kernel's report was lost before memguard read it (the kernel "
                         "log ring overflowed).")
        if inc.constraint == "CONSTRAINT_NONE" and inc.oom_memcg:
            notes.append(f"The kernel printed CONSTRAINT_NONE but names the memory cgroup that ran out "
                         f"({inc.oom_memcg}): 5.0-era kernels printed so for memcg OOMs; it is that "
                         "cgroup's OOM.")
        if inc.constraint_source not in (None, "kernel"):
            notes.append(f"{inc.constraint} is inferred from {inc.constraint_source}: the kernel did not "
                         "print the constraint, or printed one its report contradicts.")
        if inc.kind == "oom_kill" and doc["domain"] is not None and not doc["domain_tracked"] \
                and doc["domain"] != self.host_domain and self.live:
            where = {"kernel report": "from the kernel's report",
                     "cgroupfs at the kill": "from cgroupfs, read at the kill"}.get(doc["limit_source"], "unknown")
            notes.append(f"memguard was not tracking {doc['domain']} yet: it was made after memguard "
                         f"last walked the cgroup tree, so there are no samples of it from before the "
                         f"kill. Its limit is {where}.")
        if inc.kind == "oom_kill" and doc["domain"] is None and self.live:
            notes.append("A memory cgroup ran out, but neither the kernel's text nor the process "
                         "table names which one.")
        return notes

    def _victim_json(self, inc: OpenIncident, v: Victim, ctx: "Context") -> dict:
        p = v.process
        out = {"pid": v.pid, **v.fields}
        out.setdefault("comm", p.comm if p else None)
        out.update({
            "cmdline": ctx.redact(p.cmdline) if p and p.cmdline else None,
            "start_time_seconds": p.start_time if p else None,
            # the kernel's word at the kill first; the process table's is from its exec
            "cgroup": inc.task_memcg if inc.task_memcg and len(inc.victims) == 1 else (p.cgroup if p else None),
            "rss_bytes_last_seen": p.rss if p else None,
            "job": p.job if p else None,
        })
        if out.get("uid") is None and p is not None:
            out["uid"] = p.uid
        return out


_VICTIM_FIELDS = ("comm", "uid", "total_vm", "anon_rss", "file_rss", "shmem_rss", "pgtables", "oom_score_adj")


def _headline(doc: dict) -> str:
    limit = doc.get("limit_bytes")
    where = doc["domain"] or "an unknown domain"
    ran_out = f"{where} ran out of memory" + (f" (limit {format_bytes(limit)})" if limit else "")
    if doc["kind"] == "unattributed_oom_kill":
        return f"The kernel counted {doc['count']} OOM kill(s) in {where} that no probe reported."
    if doc["constraint"] == "CONSTRAINT_NONE":
        ran_out = "the whole host ran out of memory (a global OOM)"
    return f"{doc['victim'] or 'a process'} was killed by the kernel's OOM killer: {ran_out}."


def _depth(domain: str) -> int:
    return domain.count("/") if domain.startswith("cgroup:") else -1


def _known(obj, names) -> dict:
    out = {}
    for name in names:
        value = getattr(obj, name, None)
        if value is not None:
            out[name if name in ("comm", "uid", "oom_score_adj") else f"{name}_bytes"] = value
    return out


def _invoker(report) -> dict | None:
    if report is None:
        return None
    return {"comm": getattr(report, "invoker_comm", None), "pid": getattr(report, "invoker_pid", None),
            "gfp_mask": getattr(report, "gfp_mask", None), "order": getattr(report, "order", None),
            "oom_score_adj": getattr(report, "invoker_oom_score_adj", None)}


def _memcg(report) -> dict | None:
    if report is None or getattr(report, "memcg_limit", None) is None:
        return None
    return {"usage_bytes": report.memcg_usage, "limit_bytes": report.memcg_limit,
            "failcnt": report.memcg_failcnt, "stats": dict(report.memcg_stats)}


def _task(row) -> dict:
    return {name: getattr(row, name) for name in row.__slots__}


class Context:
    """What the builder may know of the world, handed in by the engine.

    *domain_of* maps a cgroup path the last walk saw to its domain (None for
    one it did not see); *bindings* are cgroups' limits read at a kill."""

    def __init__(self, recorders: dict[str, FlightRecorder], limits: dict[str, int | None],
                 processes: dict[int, ProcessInfo], domain_of, redact,
                 transitions: dict | None = None, predictions: dict | None = None,
                 bindings: dict[str, Binding] | None = None, host_domain: str = "host",
                 actions: dict[str, list[dict]] | None = None, first_seen: dict[str, float] | None = None) -> None:
        self.transitions = transitions or {}
        self.predictions = predictions or {}
        self.recorders = recorders
        self.limits = limits
        self.processes = processes
        self._domain_of = domain_of
        self.redact = redact
        self.bindings = bindings if bindings is not None else {}
        self.actions = actions if actions is not None else {}
        self.first_seen = first_seen if first_seen is not None else {}
        self.host_domain = host_domain

    def tracked(self, domain: str, t: float) -> bool:
        """Whether memguard sampled *domain* at or before *t* (the kill)."""
        first = self.first_seen.get(domain)
        return first is not None and first <= t

    def memcg_domain(self, path: str) -> str:
        """The domain of a cgroup the kernel said ran out of memory: the
        tracked domain that owns it, else that cgroup itself."""
        domain = self._domain_of(path)
        return domain if domain is not None and domain != self.host_domain else f"cgroup:{path}"

    def binding_domain(self, cgroup: str) -> str | None:
        """The domain whose limit binds a process in *cgroup*: from its
        limits read at the kill, else from the last walk; None when neither
        knows the cgroup."""
        b = self.bindings.get(cgroup)
        if b is not None:
            return self.host_domain if b.binding is None else self.memcg_domain(b.binding)
        return self._domain_of(cgroup)

    def bindings_of(self, domain: str) -> list[Binding]:
        path = domain.removeprefix("cgroup:")
        return [b for b in self.bindings.values() if b.binding == path]

    def process(self, pid: int) -> ProcessInfo | None:
        return self.processes.get(pid)

    def _in(self, p: ProcessInfo, domain: str) -> bool:
        """Whether *p* counts against *domain*: its attribution, or for a
        domain not tracked yet, its cgroup under the domain's."""
        if p.domain == domain:
            return True
        if domain in self.recorders or not domain.startswith("cgroup:") or p.cgroup is None:
            return False
        path = domain.removeprefix("cgroup:")
        return p.cgroup == path or p.cgroup.startswith(path.rstrip("/") + "/")

    def freeze(self, domain: str | None, t: float, now: Instant | None) -> dict:
        """The domain's last HISTORY seconds and its top consumers, as they
        were when the kill was first seen."""
        rec = self.recorders.get(domain or "")
        samples = {"t": [], "used_bytes": [], "working_set_bytes": [], "limit_bytes": [], "psi_some_avg10": []}
        if rec is not None:
            for p in rec.fine.rows(since=t - HISTORY):
                samples["t"].append(round(p.t - t, 3))
                samples["used_bytes"].append(int(p.used))
                samples["working_set_bytes"].append(int(p.working_set))
                samples["limit_bytes"].append(None if math.isnan(p.limit) else int(p.limit))
                samples["psi_some_avg10"].append(None if math.isnan(p.psi_some_avg10) else p.psi_some_avg10)
        consumers = [{"pid": p.pid, "comm": p.comm, "rss_bytes": p.rss, "cgroup": p.cgroup,
                      "cmdline": self.redact(p.cmdline) if p.cmdline else None}
                     for p in sorted(self.processes.values(), key=lambda p: -p.rss)
                     if domain is None or self._in(p, domain)][:10]
        warnings = [{"t": round(tr.at - t, 3), "rule": tr.rule, "kind": tr.kind, "severity": tr.severity}
                    for tr in self.transitions.get(domain or "", ()) if tr.at <= t + 1.0]
        fired = [w["t"] for w in warnings if w["kind"] == "fire"]
        p = self.predictions.get(domain or "")
        prediction = None if p is None else {
            "tto_seconds": p.tto, "rate_bytes_per_second": p.rate, "confidence": p.confidence,
            "method": p.method, "leak_bytes_per_minute": p.leak_rate}
        return {"samples": samples, "growth": growth(samples), "top_consumers": consumers,
                "limit_bytes": self.limits.get(domain or ""),
                "predictions": [prediction] if prediction else [], "warnings": warnings,
                "actions": [{**{k: v for k, v in a.items() if k != "at"}, "t": round(a["at"] - t, 3)}
                            for a in self.actions.get(domain or "", ()) if a["at"] <= t + 1.0],
                # seconds from the first rule firing to the kill (None: no warning)
                "warning_seconds": round(-min(fired), 3) if fired else None}


def growth(samples: dict) -> dict:
    """How fast the working set grew over the last 60 s and 5 min before the
    kill (bytes per second, least squares; None with fewer than 2 samples),
    and over how many seconds of samples each was really measured: a domain
    watched for 2 s has 2 s of history, whatever the window's name."""
    out, measured = {}, {}
    for label, span in (("last_60s", 60.0), ("last_300s", 300.0)):
        pts = [(t, w) for t, w in zip(samples["t"], samples["working_set_bytes"]) if t >= -span]
        measured[label] = round(pts[-1][0] - pts[0][0], 3) if pts else 0.0
        if len(pts) < 2:
            out[label] = None
            continue
        n = len(pts)
        mt = sum(t for t, _ in pts) / n
        mw = sum(w for _, w in pts) / n
        var = sum((t - mt) ** 2 for t, _ in pts)
        out[label] = None if var == 0 else round(sum((t - mt) * (w - mw) for t, w in pts) / var, 1)
    return {"working_set_bytes_per_second": out, "seconds_measured": measured}

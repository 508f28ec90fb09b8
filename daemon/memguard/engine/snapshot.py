"""The immutable picture the engine publishes after each tick, and its JSON form.

The JSON document is an API (``memguardctl status --json``,
``memguardd --once --json``): its fields are documented in docs/status.md
and versioned by ``schema_version``; a field is only ever added within a
version.  Absent values are ``null``, never 0.
"""

from __future__ import annotations

import datetime
from dataclasses import asdict, dataclass, field

from ..clock import Instant
from ..model import PSI, ProcessInfo, Sample, SourceStatus

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class DomainView:
    name: str
    kind: str
    identity: int | None
    sample: Sample
    age: float               # seconds since first seen
    window: float            # seconds of the current prediction window
    recorder_bytes: int
    prediction: object = None  # predict.predictor.Prediction


@dataclass(frozen=True)
class Snapshot:
    version: str
    now: Instant
    started: Instant
    interval: float
    sources: tuple[SourceStatus, ...]
    probes: tuple[SourceStatus, ...]
    domains: tuple[DomainView, ...]
    processes: tuple[ProcessInfo, ...]
    facts: dict
    counters: object
    reclaim: dict = field(default_factory=dict)      # cgroup2 path -> (stalls, seconds)
    unattributed_kills: int = 0
    firing: tuple = ()            # (rule, domain, severity, since, job) of firing rules
    rules_info: dict = field(default_factory=dict)
    jobs: tuple = ()              # the registered jobs, as their JSON (engine.Engine._job_views)
    jobs_rejected: tuple = ()     # (pid, why) of MEMGUARD_JOB values refused
    at_rest: bool = False         # every domain at rest (engine.Engine._rest)
    awake_because: str | None = None   # else the first reason found why not
    armed: tuple = ()             # at rest: the domains the kernel wakes the daemon for
    looked_at: tuple = ()         # at rest: the domains read between ticks (the host, when not armed)

    @property
    def degraded(self) -> list[str]:
        """Why the daemon is degraded: sources and probes that failed (not
        those that do not apply to this host, such as wsl elsewhere); empty
        when healthy."""
        return [f"{s.name}: {s.reason}" for s in self.sources + self.probes if s.state == "failed"]

    def to_json(self) -> dict:
        return {
            "schema_version": SCHEMA_VERSION,
            "version": self.version,
            "time": rfc3339(self.now.wall),
            "started": rfc3339(self.started.wall),
            "uptime_seconds": round(self.now.mono - self.started.mono, 3),
            "interval_seconds": self.interval,
            "rest": {"at_rest": self.at_rest, "awake_because": self.awake_because,
                     "armed": list(self.armed), "looked_at": list(self.looked_at)},
            "healthy": not self.degraded,
            "degraded": self.degraded,
            "sources": [_source_json(s) for s in self.sources],
            "probes": [_probe_json(p) for p in self.probes],
            "domains": [_domain_json(d) for d in self.domains],
            "processes": [_process_json(p) for p in self.processes],
            "facts": self.facts,
            "counters": _counters_json(self.counters),
            "unattributed_kills": self.unattributed_kills,
            "rules": {**self.rules_info,
                      "firing": [{"rule": r, "domain": d, "severity": sev,
                                  "since_seconds": round(self.now.mono - since, 3),
                                  **({"job": job} if job is not None else {})}
                                 for r, d, sev, since, job in self.firing]},
            "reclaim": [{"cgroup": path, "stalls": n, "stall_seconds": round(sec, 6)}
                        for path, (n, sec) in sorted(self.reclaim.items())],
            "jobs": list(self.jobs),
            "jobs_rejected": [{"pid": pid, "error": why} for pid, why in self.jobs_rejected],
        }


def rfc3339(wall: float) -> str:
    return datetime.datetime.fromtimestamp(wall, datetime.timezone.utc).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


def _source_json(s: SourceStatus) -> dict:
    return {"name": s.name, "state": s.state, "reason": s.reason,
            "last_duration_seconds": s.last_duration, "errors": s.errors,
            "skipped": s.skipped}


def _probe_json(p: SourceStatus) -> dict:
    return {"name": p.name, "state": p.state, "reason": p.reason, "errors": p.errors, **p.skipped}


def _counters_json(c) -> dict:
    out = asdict(c)
    out["incidents"] = [{"kind": k, "domain": d, "constraint": con or None, "count": n}
                        for (k, d, con), n in sorted(c.incidents.items())]
    out["actions"] = [{"rule": r, "kind": k, "result": res, "count": n}
                      for (r, k, res), n in sorted(c.actions.items())]
    return out


def _psi_json(psi: PSI | None) -> dict | None:
    if psi is None:
        return None
    out = {}
    for kind in ("some", "full"):
        p = getattr(psi, kind)
        out[kind] = None if p is None else {
            "avg10": p.avg10, "avg60": p.avg60, "avg300": p.avg300,
            "total_seconds": p.total_us / 1e6}
    return out


def _domain_json(d: DomainView) -> dict:
    s = d.sample
    ratio = s.usage_ratio
    return {
        "name": d.name, "kind": d.kind, "identity": d.identity,
        "used_bytes": s.used, "working_set_bytes": s.working_set,
        "reclaimable_bytes": s.reclaimable, "limit_bytes": s.limit,
        "usage_ratio": None if ratio is None else round(ratio, 4),
        "high_bytes": s.high, "swap_used_bytes": s.swap_used, "swap_limit_bytes": s.swap_limit,
        "oom_kills": s.oom_kills, "psi": _psi_json(s.psi),
        "tracked_seconds": round(d.age, 3), "window_seconds": round(d.window, 3),
        "recorder_bytes": d.recorder_bytes,
        "prediction": _prediction_json(d.prediction),
        "risk": risk(d.prediction),
    }


def risk(p) -> str:
    """A one-word summary of a prediction (rules decide what to do about it):
    ``critical`` under a minute to OOM, ``warning`` under five, ``leak``
    sustained growth, ``ok`` otherwise; ``unknown`` without a prediction."""
    if p is None:
        return "unknown"
    if p.tto is not None and p.confidence >= 0.5:
        if p.tto < 60:
            return "critical"
        if p.tto < 300:
            return "warning"
    if p.method == "burst":
        return "critical"
    return "leak" if p.leak_rate is not None else "ok"


def _prediction_json(p) -> dict | None:
    if p is None:
        return None
    return {"tto_seconds": None if p.tto is None else round(p.tto, 1),
            "rate_bytes_per_second": round(p.rate, 1), "confidence": p.confidence, "method": p.method,
            "horizon_seconds": p.horizon,
            "leak_bytes_per_minute": None if p.leak_rate is None else round(p.leak_rate)}


def _process_json(p: ProcessInfo) -> dict:
    return {"pid": p.pid, "comm": p.comm, "rss_bytes": p.rss, "cgroup": p.cgroup,
            "domain": p.domain, "cmdline": p.cmdline, "uid": p.uid,
            "start_time_seconds": p.start_time, "job": p.job}

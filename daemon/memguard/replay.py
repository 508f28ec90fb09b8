"""Replaying a recorded trace through the real engine, predictor and rules
on a simulated clock: ``bench/predict.py`` and ``memguardctl rules test``.

A trace is what ``bench/record.py`` writes: ``NAME.json`` (the workload, its
limit, whether and when the kernel killed it) beside ``NAME.csv[.gz]``
(samples every 50 ms: ``t_ms``, ``usage_kib``, ``working_set_kib``,
``psi_some_avg10``, ``psi_full_avg10``, ``limit_kib`` among others).  The
replay samples it as the daemon would: every ``sampling.interval``,
``fast_interval`` once a domain is close or a prediction is short, and at
rest every ``rest_interval`` or as soon as the usage crosses the threshold
the daemon would have registered with the kernel (a v1 cgroup's).
"""

from __future__ import annotations

import bisect
import csv
import gzip
import hashlib
import io
import json
import os
import statistics
from dataclasses import dataclass, field

from .clock import FakeClock
from .config import Config
from .engine.engine import Engine, SourceRun, wake_threshold
from .engine.messages import RulesLoaded
from .model import PSI, Pressure, Sample
from .rules.load import SEVERITIES, Rule
from .sources.base import Reading

DOMAIN = "cgroup:/trace"
WAKE_LATENCY = 0.05   # seconds from the kernel's wake-up to the tick (the daemon's MIN_TICK_SPACING)


@dataclass(frozen=True)
class Trace:
    name: str
    limit: int
    t: list[float]                  # seconds since the start
    used: list[int]
    working_set: list[int]
    psi_some: list[float]
    psi_full: list[float]
    kills: list[float]              # seconds since the start
    description: str = ""
    ramp_start: float | None = None  # the final climb's start, read off the curve (README)
    family: str | None = None        # the workload family; None: the seed corpus
    round: int = 1                   # the recording round (README): "round2" to "round7", 8 and later "fresh"

    @property
    def killed(self) -> bool:
        return bool(self.kills)

    @property
    def set(self) -> str:
        return trace_set(self.family, self.round)


def trace_set(family: str | None, round: int = 1) -> str:
    """"tuning", "heldout", "round2" ... "round7" or "fresh", by the rules
    bench/traces/README.md fixed before the traces were recorded: the seed
    corpus (no family) was tuned on; round 1's families split by a hash of
    the name; rounds 2 to 7 were held out until each was reported once
    (they may be tuned on since); every trace of round 8 and later is held
    out and is not replayed while a change is chosen."""
    if round >= 8:
        return "fresh"
    if round >= 2:
        return f"round{round}"
    if family is None:
        return "tuning"
    return "heldout" if int(hashlib.sha256(family.encode()).hexdigest()[:8], 16) % 2 == 1 else "tuning"


def load_trace(path: str) -> Trace:
    """A trace from its JSON sidecar (or the CSV beside it).  Raises OSError
    or ValueError naming the file."""
    if not path.endswith(".json"):
        path = path.split(".csv")[0] + ".json"
    with open(path, encoding="utf-8") as f:
        meta = json.load(f)
    samples = os.path.join(os.path.dirname(path), meta["samples_file"])
    opener = gzip.open if samples.endswith(".gz") else open
    with opener(samples, "rt", encoding="utf-8") as f:
        rows = list(csv.DictReader(io.StringIO(f.read())))
    if not rows:
        raise ValueError(f"{samples}: no samples")
    kib = 1024
    return Trace(
        name=meta["name"], limit=int(meta["limit_bytes"]),
        t=[int(r["t_ms"]) / 1000 for r in rows],
        used=[int(r["usage_kib"]) * kib for r in rows],
        working_set=[int(r["working_set_kib"]) * kib for r in rows],
        psi_some=[float(r["psi_some_avg10"] or 0) for r in rows],
        psi_full=[float(r["psi_full_avg10"] or 0) for r in rows],
        kills=[k["t"] for k in meta.get("kills", [])],
        description=meta.get("description", ""), ramp_start=meta.get("ramp_start"), family=meta.get("family"),
        round=int(meta.get("round", 1)))


@dataclass
class Replay:
    trace: Trace
    ticks: list[tuple[float, object]] = field(default_factory=list)       # (t, prediction)
    transitions: list[tuple[float, str, str, str | None]] = field(default_factory=list)  # (t, rule, kind, severity)


def replay(trace: Trace, rules: list[Rule], config: Config | None = None, kind: str = "cgroup") -> Replay:
    """Run the trace through Engine.step as the daemon's ticks would, as a
    domain of *kind* (``wsl`` replays it as the WSL VM's memory)."""
    config = config or Config()
    clock = FakeClock(mono=0.0)
    engine = Engine(config, clock.now(), "replay")
    if kind == "cgroup":
        engine.armed = frozenset({DOMAIN})   # a v1 cgroup: its usage thresholds wake the daemon
    engine.step([], clock.now(), events=[RulesLoaded(tuple(rules), (), 0.0)])
    out = Replay(trace)
    end = trace.kills[0] if trace.kills else trace.t[-1]
    t = trace.t[0]
    while t <= end:
        i = max(0, bisect.bisect_right(trace.t, t) - 1)
        psi = PSI(Pressure(trace.psi_some[i], 0.0, 0.0, 0), Pressure(trace.psi_full[i], 0.0, 0.0, 0))
        sample = Sample(DOMAIN, kind, used=trace.used[i], working_set=trace.working_set[i],
                        limit=trace.limit, reclaimable=trace.used[i] - trace.working_set[i], psi=psi,
                        identity=1)
        clock.mono = clock.boot = t
        fx = engine.step([SourceRun("cgroups", reading=Reading(samples=[sample]))], clock.now())
        out.ticks.append((t, engine.domains[DOMAIN].prediction))
        out.transitions += [(t, tr.rule, tr.kind, tr.severity) for tr in fx.transitions]
        resting = kind == "cgroup" and engine.interval > config.sampling.interval
        t = _next_tick(trace, i, t + fx.interval,
                       wake_threshold(trace.used[i], trace.limit, config.sampling) if resting else None)
    return out


def _next_tick(trace: Trace, i: int, due: float, threshold: int | None) -> float:
    """When the daemon ticks next after sample *i*: at *due*, or sooner at
    the first sample whose usage crossed *threshold* (the kernel's wake-up;
    the daemon ticks a moment after it)."""
    if threshold is None:
        return due
    below = trace.used[i] < threshold
    for j in range(i + 1, len(trace.t)):
        if trace.t[j] >= due:
            break
        if (trace.used[j] < threshold) != below:
            return trace.t[j] + WAKE_LATENCY
    return due


def ramp_start(trace: Trace, floor: float = 0.2, from_curve: bool = False) -> float:
    """When the run to the kill began: the trace's ``ramp_start`` where its
    final climb does not start from near zero (memory released between two
    climbs, a leak rising out of a flat sawtooth), else (or *from_curve*)
    the last time before the kill the working set was under *floor* of the
    limit (the start if never)."""
    if trace.ramp_start is not None and not from_curve:
        return trace.ramp_start
    end = trace.kills[0] if trace.kills else trace.t[-1]
    start = trace.t[0]
    for t, ws in zip(trace.t, trace.working_set):
        if t > end:
            break
        if ws < floor * trace.limit:
            start = t
    return start


@dataclass(frozen=True)
class Score:
    name: str
    killed: bool
    ramp: float | None               # seconds from the ramp's start to the kill
    lead: float | None               # seconds from the first warning to the kill
    ideal: float | None              # min(warning horizon, ramp)
    tto_error: float | None          # median relative error over the last 60 s
    tto_coverage: float | None       # share of those ticks with a prediction
    false_warnings: int              # warnings on a trace that was not killed
    climb: float | None = None       # seconds from the last time under half the limit to the kill
    peak_ratio: float = 0.0          # the largest working set before the kill (or the end) / limit
    criticals: int = 0               # critical or last_resort firings

    @property
    def needed_lead(self) -> float | None:
        """Issue 17's target: 0.8 x min(60 s, the climb from 50 % of the limit)."""
        return None if self.climb is None else 0.8 * min(60.0, self.climb)


def score(r: Replay, horizon: float, min_severity: str = "warning") -> Score:
    """How well the replay warned: see bench/predict.py for the targets."""
    trace = r.trace
    rank = SEVERITIES.index(min_severity)
    warnings = [t for t, _, kind, sev in r.transitions
                if kind in ("fire", "escalate") and sev is not None and SEVERITIES.index(sev) >= rank]
    critical = SEVERITIES.index("critical")
    criticals = sum(1 for _, _, kind, sev in r.transitions
                    if kind in ("fire", "escalate") and sev is not None and SEVERITIES.index(sev) >= critical)
    end = trace.kills[0] if trace.kills else trace.t[-1]
    peak = max((ws for t, ws in zip(trace.t, trace.working_set) if t <= end), default=0) / trace.limit
    if not trace.killed:
        return Score(trace.name, False, None, None, None, None, None, len(warnings), None, peak, criticals)
    kill = trace.kills[0]
    ramp = kill - ramp_start(trace)
    lead = kill - warnings[0] if warnings else 0.0
    errors, covered, total = [], 0, 0
    for t, p in r.ticks:
        left = kill - t
        if 0 < left <= 60:
            total += 1
            if p is not None and p.tto is not None:
                covered += 1
                errors.append(abs(p.tto - left) / left)
    return Score(trace.name, True, ramp, lead, min(horizon, ramp),
                 statistics.median(errors) if errors else None,
                 covered / total if total else None, 0, kill - ramp_start(trace, floor=0.5, from_curve=True),
                 peak, criticals)

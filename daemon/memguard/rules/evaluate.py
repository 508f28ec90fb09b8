"""Evaluating rules against domains, with ``for`` durations, escalation and
cooldowns, on time handed in: a pure state machine, tested on a fake clock.

For each (rule, domain) pair the rule matches (each (rule, domain, job)
for a rule about jobs, Rule.per_job), every level's condition is
checked each tick; a level is *reached* once its condition has held for its
``for``, and stays reached until the condition has failed for its
``keep_firing_for`` (Prometheus's word: one tick of a flickering prediction
does not clear a warning that has stood for a minute).  The pair fires at
the highest level reached, escalates and de-escalates as levels are
reached and lost, and clears when none is.  A
new firing within ``cooldown`` of the last clear is suppressed (counted),
so a condition flapping around its threshold does not fire every minute;
escalation from a firing level is never suppressed.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from ..engine.snapshot import risk
from ..model import Sample
from ..predict.predictor import Prediction
from .load import SEVERITIES, STANDING_ACTIONS, Rule


@dataclass(frozen=True)
class Transition:
    rule: str
    domain: str
    kind: str                  # fire, escalate, deescalate, clear
    severity: str | None       # the level now (None after a clear)
    previous: str | None
    at: float
    job: str | None = None     # the job of a per-job rule's pair (Rule.per_job)


@dataclass(slots=True)
class PairState:
    level: int = -1                                   # index into rule.levels; -1: not firing
    since: float | None = None                        # when it began firing
    pending: dict[int, float] = field(default_factory=dict)   # level -> condition true since
    kept: dict[int, float] = field(default_factory=dict)      # level -> last tick it held, reached
                                                              # (levels with a keep_firing_for)
    cleared_at: float | None = None
    domain: str = ""                                  # the pair's domain...
    job: str | None = None                            # ...and job, for a per-job rule


def matches(rule: Rule, domain: str, kind: str) -> bool:
    return kind in rule.kinds and (rule.domain_glob == "*" or fnmatch.fnmatchcase(domain, rule.domain_glob))


def domain_env(name: str, kind: str, s: Sample, p: Prediction | None, job: dict | None = None,
               gpu: dict | None = None) -> dict:
    """The variables a condition sees for one domain, from its sample and
    prediction (and *job*, the registered jobs with processes in it: see
    Engine._job_env, and *gpu*, a GPU's ``name``, ``uuid``, ``index`` and
    ``utilization``); PSI's fields also under their dotted paths: every PSI
    rule reads them in one lookup instead of a walk (see rules/expr.py).
    Built for every domain every tick, so written for speed: one dict display."""
    some = full = None
    if s.psi is not None:
        some, full = s.psi.some, s.psi.full
    return {
        "domain": name, "kind": kind, "used": s.used, "working_set": s.working_set,
        "limit": s.limit, "usage_ratio": s.usage_ratio, "reclaimable": s.reclaimable,
        "swap": s.swap_used, "swap_limit": s.swap_limit, "high": s.high, "oom_kills": s.oom_kills,
        "tto": p.tto if p else None, "rate": p.rate if p else None,
        "confidence": p.confidence if p else None, "method": p.method if p else None,
        "leak_rate": p.leak_rate if p else None, "risk": risk(p),
        "job": job or {}, "gpu": gpu or {},
        "psi": None if s.psi is None else {"some": _pressure(some), "full": _pressure(full)},
        "psi.some.avg10": some and some.avg10, "psi.some.avg60": some and some.avg60,
        "psi.some.avg300": some and some.avg300, "psi.full.avg10": full and full.avg10,
        "psi.full.avg60": full and full.avg60, "psi.full.avg300": full and full.avg300,
    }


def _pressure(p) -> dict | None:
    return None if p is None else {"avg10": p.avg10, "avg60": p.avg60, "avg300": p.avg300}


class RuleEngine:
    """The rules in force and the state of every (rule, domain) pair that
    needs one.  Each tick, each level's condition scans the domains its rule
    matches in one compiled loop.  A pair is stepped only when something can
    change for it: a pair whose condition never held has no state; a pair
    that has settled (every level that holds reached, nothing pending, no
    timer running) sleeps in a group by which levels hold, and is woken when
    a scan shows a level change.  So a tick costs the scans and the pairs
    that move, not the pairs that fire steadily; a woken pair's
    keep_firing_for counts from the last tick it slept through, as if it had
    been stepped every tick (tests/unit/test_rules.py checks that against a
    plain reading of the rules)."""

    def __init__(self, rules: list[Rule]) -> None:
        self.rules = list(rules)
        self._note_kinds()
        self.state: dict[str, dict[str, PairState]] = {}     # rule -> domain -> state
        self.suppressed = 0
        self.evaluations = 0
        self._asleep: dict[str, dict[tuple[bool, ...], set[str]]] = {}   # rule -> levels held -> domains
        self._previous: float | None = None                  # the last tick's time
        self._domains: tuple | None = None                    # (domain, kind) pairs last seen
        self._targets: dict[str, list[str] | None] = {}       # rule -> its domains (None: every one)

    def replace_rules(self, rules: list[Rule]) -> None:
        """New rules (a reload): a rule that remains unchanged keeps its
        pairs' state; a changed one (its ladder may be shorter) starts afresh."""
        same = {r.name for r in rules if r in self.rules}
        self.state = {k: v for k, v in self.state.items() if k in same}
        self._asleep = {k: v for k, v in self._asleep.items() if k in same}
        self.rules = list(rules)
        self._note_kinds()
        self._domains = None

    def _note_kinds(self) -> None:
        """What the rules in force need of the engine each tick, known once per load."""
        self.per_job = any(r.per_job for r in self.rules)          # (domain, job) variables
        # job.peak_ratio walks a job's processes: reckoned only when a rule reads it
        self.peak_ratio = any("job.peak_ratio" in lv.when.names for r in self.rules for lv in r.levels)
        # actions done every tick while a level stands, not once per firing
        self.standing = any(a.kind in STANDING_ACTIONS for r in self.rules for lv in r.levels for a in lv.actions)

    def _retarget(self, envs: dict[str, dict]) -> None:
        domains = tuple((d, e.get("kind", "")) for d, e in envs.items())
        if domains == self._domains:
            return
        self._domains = domains
        self._targets = {}
        for rule in self.rules:
            wanted = [d for d, k in domains if matches(rule, d, k)]
            self._targets[rule.name] = None if len(wanted) == len(domains) else wanted
            if rule.per_job:
                continue             # its pairs come and go with the jobs (evaluate)
            states, keep = self.state.get(rule.name, {}), set(wanted)
            for d in [d for d in states if d not in keep]:
                del states[d]          # the domain is gone, or the rule no longer matches it
            for group in self._asleep.get(rule.name, {}).values():
                group &= keep

    def evaluate(self, envs: dict[str, dict], now: float,
                 job_envs: dict[str, dict] | None = None) -> list[Transition]:
        """One tick: *envs* maps each domain to its variables; *job_envs*
        each (domain, job) pair, by a key of its own, to the variables with
        that job as ``job`` (what per-job rules see)."""
        out: list[Transition] = []
        self._retarget(envs)
        job_envs = job_envs or {}
        for rule in self.rules:
            states = self.state.setdefault(rule.name, {})
            asleep = self._asleep.setdefault(rule.name, {})
            if rule.per_job:
                items = [(k, e) for k, e in job_envs.items() if matches(rule, e["domain"], e["kind"])]
                for gone in [k for k in states if k not in job_envs]:
                    del states[gone]     # the job left the domain or ended: nothing more to say of it
                    for group in asleep.values():
                        group.discard(gone)
                pairs = job_envs
            else:
                targets = self._targets[rule.name]
                items = envs.items() if targets is None else [(d, envs[d]) for d in targets]
                pairs = envs
            held = [set(level.when.scan(items)) for level in rule.levels]
            self.evaluations += len(held) * len(items)
            sleeping = self._wake(rule, held, asleep, states)
            for key in sorted((states.keys() | set().union(*held)) - sleeping):
                st = states.get(key)
                if st is None:
                    env = pairs[key]
                    st = states[key] = PairState(domain=env.get("domain", key),
                                                 job=env["job"].get("id") if rule.per_job else None)
                pattern = self._step(rule, key, held, st, now, out)
                if pattern is not None:
                    asleep.setdefault(pattern, set()).add(key)
                elif st.level < 0 and not st.pending and not st.kept and (
                        st.cleared_at is None or now - st.cleared_at >= rule.cooldown):
                    del states[key]                      # nothing left to remember
        self._previous = now
        return out

    def _wake(self, rule: Rule, held: list[set[str]], asleep: dict[tuple[bool, ...], set[str]],
              states: dict[str, PairState]) -> set[str]:
        """Wake the sleeping pairs whose levels' conditions changed; the
        domains left asleep."""
        sleeping: set[str] = set()
        for pattern in list(asleep):
            group = asleep[pattern]
            woken: set[str] = set()
            for i, hits in enumerate(held):
                woken |= (group - hits) if pattern[i] else (group & hits)
            group -= woken
            for domain in woken:     # reached at every tick it slept through: kept from the last
                kept = states[domain].kept
                for i, level in enumerate(rule.levels):
                    if pattern[i] and level.keep:
                        kept[i] = self._previous
            if group:
                sleeping |= group
            else:
                del asleep[pattern]
        return sleeping

    def _step(self, rule: Rule, domain: str, held: list[set[str]], st: PairState, now: float,
              out: list[Transition]) -> tuple[bool, ...] | None:
        """Move one pair on a tick.  Returns which levels hold when the pair
        has settled: it fires, every level that holds is reached, and no
        timer runs (no level waits out its ``for``, none that fails is
        kept), so until one of its levels' conditions changes, stepping it
        again would change nothing but refresh ``kept``, which _wake does."""
        reached, settled = -1, True
        pending, kept = st.pending, st.kept
        for i, level in enumerate(rule.levels):
            if domain in held[i]:
                since = pending.setdefault(i, now)
                if now - since >= level.hold or i in kept:    # (back while kept: still firing)
                    reached = i
                    if level.keep:
                        kept[i] = now
                    continue
                settled = False                               # held, not yet for long enough
            elif pending:
                pending.pop(i, None)
            if kept and i in kept:
                settled = False                               # kept: runs out in time
                if now - kept[i] < level.keep:
                    reached = i
                else:
                    del kept[i]
        if reached != st.level:
            self._move(rule, domain, st, reached, now, out)
        if not settled or reached < 0 or st.level != reached:           # (a suppressed firing)
            return None
        return tuple(domain in hits for hits in held)

    def _move(self, rule: Rule, domain: str, st: PairState, reached: int, now: float,
              out: list[Transition]) -> None:
        old = rule.levels[st.level].severity if st.level >= 0 else None
        if reached > st.level:
            if st.level < 0 and rule.cooldown and st.cleared_at is not None \
                    and now - st.cleared_at < rule.cooldown:
                self.suppressed += 1
                return
            kind = "fire" if st.level < 0 else "escalate"
            if st.level < 0:
                st.since = now
        elif reached >= 0:
            kind = "deescalate"
        else:
            kind = "clear"
            st.cleared_at, st.since = now, None
        st.level = reached
        new = rule.levels[reached].severity if reached >= 0 else None
        out.append(Transition(rule.name, st.domain, kind, new, old, now, st.job))

    def firing(self) -> list[tuple[str, str, str, float, str | None]]:
        """(rule, domain, severity, since, job) of every firing pair, most
        severe first (job: None but for per-job rules)."""
        rules = {r.name: r for r in self.rules}
        out = [(name, st.domain, rules[name].levels[st.level].severity, st.since, st.job)
               for name, states in self.state.items() for st in states.values() if st.level >= 0]
        return sorted(out, key=lambda f: (-SEVERITIES.index(f[2]), f[0], f[1], f[4] or ""))

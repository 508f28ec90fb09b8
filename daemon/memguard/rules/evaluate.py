"""Evaluating rules against domains, with ``for`` durations, escalation and
cooldowns, on time handed in: a pure state machine, tested on a fake clock.

For each (rule, domain) pair the rule matches, every level's condition is
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

from .load import SEVERITIES, Rule


@dataclass(frozen=True)
class Transition:
    rule: str
    domain: str
    kind: str                  # fire, escalate, deescalate, clear
    severity: str | None       # the level now (None after a clear)
    previous: str | None
    at: float


@dataclass
class PairState:
    level: int = -1                                   # index into rule.levels; -1: not firing
    since: float | None = None                        # when it began firing
    pending: dict[int, float] = field(default_factory=dict)   # level -> condition true since
    kept: dict[int, float] = field(default_factory=dict)      # level -> last reached (keep_firing_for)
    cleared_at: float | None = None


def matches(rule: Rule, domain: str, kind: str) -> bool:
    return kind in rule.kinds and (rule.domain_glob == "*" or fnmatch.fnmatchcase(domain, rule.domain_glob))


def domain_env(view) -> dict:
    """The variables a condition sees for one domain (an engine DomainView)."""
    s, p = view.sample, view.prediction
    psi = None
    if s.psi is not None:
        psi = {k: None if getattr(s.psi, k) is None else
               {"avg10": getattr(s.psi, k).avg10, "avg60": getattr(s.psi, k).avg60,
                "avg300": getattr(s.psi, k).avg300} for k in ("some", "full")}
    return {
        "domain": view.name, "kind": view.kind, "used": s.used, "working_set": s.working_set,
        "limit": s.limit, "usage_ratio": s.usage_ratio, "reclaimable": s.reclaimable,
        "swap": s.swap_used, "swap_limit": s.swap_limit, "high": s.high, "oom_kills": s.oom_kills,
        "psi": psi,
        "tto": p.tto if p else None, "rate": p.rate if p else None,
        "confidence": p.confidence if p else None, "method": p.method if p else None,
        "leak_rate": p.leak_rate if p else None,
        "job": {}, "gpu": {},
    }


class RuleEngine:
    """The rules in force and the state of every (rule, domain) pair that
    has one: a pair whose condition never held keeps none, so the common
    case, a rule that does not apply to a quiet domain, costs one
    evaluation and a dictionary miss."""

    def __init__(self, rules: list[Rule]) -> None:
        self.rules = list(rules)
        self.state: dict[str, dict[str, PairState]] = {}     # rule -> domain -> state
        self.suppressed = 0
        self.evaluations = 0
        self._domains: tuple | None = None                    # (domain, kind) pairs last seen
        self._targets: dict[str, list[str]] = {}              # rule -> the domains it matches

    def replace_rules(self, rules: list[Rule]) -> None:
        """New rules (a reload): a rule that remains unchanged keeps its
        pairs' state; a changed one (its ladder may be shorter) starts afresh."""
        same = {r.name for r in rules if r in self.rules}
        self.state = {k: v for k, v in self.state.items() if k in same}
        self.rules = list(rules)
        self._domains = None

    def _retarget(self, envs: dict[str, dict]) -> None:
        domains = tuple((d, e.get("kind", "")) for d, e in envs.items())
        if domains == self._domains:
            return
        self._domains = domains
        self._targets = {r.name: [d for d, k in domains if matches(r, d, k)] for r in self.rules}
        for rule in self.rules:
            wanted = set(self._targets[rule.name])
            states = self.state.get(rule.name, {})
            for d in [d for d in states if d not in wanted]:
                del states[d]          # the domain is gone, or the rule no longer matches it

    def evaluate(self, envs: dict[str, dict], now: float) -> list[Transition]:
        """One tick: *envs* maps each domain to its variables."""
        out: list[Transition] = []
        self._retarget(envs)
        for rule in self.rules:
            states = self.state.setdefault(rule.name, {})
            levels = rule.levels
            first = levels[0].when.evaluate
            for domain in self._targets[rule.name]:
                env = envs[domain]
                st = states.get(domain)
                if st is None:
                    if len(levels) == 1 and first(env) is not True:
                        continue       # never held: no state needed
                    st = states[domain] = PairState()
                self._step(rule, domain, env, st, now, out)
            self.evaluations += len(levels) * len(self._targets[rule.name])
        return out

    def _step(self, rule: Rule, domain: str, env: dict, st: PairState, now: float,
              out: list[Transition]) -> None:
        reached = -1
        pending, kept = st.pending, st.kept
        for i, level in enumerate(rule.levels):
            if level.when.evaluate(env) is True:
                since = pending.setdefault(i, now)
                if now - since >= level.hold or i in kept:    # (back while kept: still firing)
                    reached = i
                    if level.keep:
                        kept[i] = now
                    continue
            elif pending:
                pending.pop(i, None)
            if kept and i in kept:
                if now - kept[i] < level.keep:
                    reached = i
                else:
                    del kept[i]
        if reached == st.level:
            return
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
        out.append(Transition(rule.name, domain, kind, new, old, now))

    def firing(self) -> list[tuple[str, str, str, float]]:
        """(rule, domain, severity, since) of every firing pair, most severe first."""
        rules = {r.name: r for r in self.rules}
        out = [(name, domain, rules[name].levels[st.level].severity, st.since)
               for name, states in self.state.items() for domain, st in states.items() if st.level >= 0]
        return sorted(out, key=lambda f: (-SEVERITIES.index(f[2]), f[0], f[1]))

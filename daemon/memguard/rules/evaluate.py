"""Evaluating rules against domains, with ``for`` durations, escalation and
cooldowns, on time handed in: a pure state machine, tested on a fake clock.

For each (rule, domain) pair the rule matches, every level's condition is
checked each tick; a level is *reached* once its condition has held for its
``for``.  The pair fires at the highest level reached, escalates and
de-escalates as levels are reached and lost, and clears when none is.  A
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
    cleared_at: float | None = None


def matches(rule: Rule, domain: str, kind: str) -> bool:
    return kind in rule.kinds and fnmatch.fnmatchcase(domain, rule.domain_glob)


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
    def __init__(self, rules: list[Rule]) -> None:
        self.rules = list(rules)
        self.state: dict[tuple[str, str], PairState] = {}
        self.suppressed = 0
        self.evaluations = 0

    def replace_rules(self, rules: list[Rule]) -> None:
        """New rules (a reload): pairs of rules that remain keep their state."""
        names = {r.name for r in rules}
        self.state = {k: v for k, v in self.state.items() if k[0] in names}
        self.rules = list(rules)

    def evaluate(self, envs: dict[str, dict], now: float) -> list[Transition]:
        """One tick: *envs* maps each domain to its variables."""
        out: list[Transition] = []
        live = set()
        for rule in self.rules:
            for domain, env in envs.items():
                if not matches(rule, domain, env.get("kind", "")):
                    continue
                key = (rule.name, domain)
                live.add(key)
                st = self.state.get(key)
                if st is None:
                    st = self.state[key] = PairState()
                self._step(rule, domain, env, st, now, out)
        for key in [k for k in self.state if k not in live]:
            del self.state[key]       # the domain is gone, or the rule no longer matches
        return out

    def _step(self, rule: Rule, domain: str, env: dict, st: PairState, now: float,
              out: list[Transition]) -> None:
        reached = -1
        for i, level in enumerate(rule.levels):
            self.evaluations += 1
            if level.when(env):
                since = st.pending.setdefault(i, now)
                if now - since >= level.hold:
                    reached = i
            else:
                st.pending.pop(i, None)
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
               for (name, domain), st in self.state.items() if st.level >= 0]
        return sorted(out, key=lambda f: (-SEVERITIES.index(f[2]), f[0], f[1]))

"""Rule files: YAML loaded once into typed, validated rules.

A rule file::

    rules:
      - name: memory-running-out
        description: the working set will reach the limit soon
        match:
          kind: [cgroup, host, wsl]        # domain kinds (default: all)
          domain: "cgroup:/build*"         # glob on the domain name (default: *)
        levels:                            # the escalation ladder, lowest first
          - severity: warning
            when: tto < 5m && confidence >= 0.5
            for: 10s                       # how long the condition must hold
            keep_firing_for: 5s            # how long it stays reached once the condition fails
          - severity: critical
            when: tto < 60s
            for: 2s
          - severity: last_resort
            when: tto < 10s
        cooldown: 2m                       # no new firing this soon after one cleared

``when``/``for``/``severity`` at the rule's top level are a one-level
ladder.  Every error names the file, the line and the field, and says what
was expected; the same loader serves the daemon and ``memguardctl rules
check``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass

import yaml

from ..jobs.spec import JobSpecError, parse_signal
from ..units import parse_duration
from .expr import Condition, ExprError, compile_condition

SEVERITIES = ("info", "warning", "critical", "last_resort")
KINDS = ("host", "wsl", "cgroup", "gpu")
# What a condition may read (docs/rules.md explains each), and its type: the
# engine's variables (rules/evaluate.py, domain_env) hold a value of that
# type or null, so a comparison with a literal of another type is an error
# when the rule is loaded, and the compiled comparison skips the type test.
VARIABLES: dict[str, str | None] = {
    **dict.fromkeys(("tto", "rate", "confidence", "leak_rate", "used", "working_set", "limit", "usage_ratio",
                     "reclaimable", "swap", "swap_limit", "high", "oom_kills"), "number"),
    **dict.fromkeys(("domain", "kind", "method", "risk"), "string"),
    **dict.fromkeys(("psi", "psi.some", "psi.full", "job", "gpu"), "map"),
    **{f"psi.{line}.{avg}": "number" for line in ("some", "full") for avg in ("avg10", "avg60", "avg300")},
}


class RuleError(ValueError):
    def __init__(self, source: str, line: int | None, field: str, message: str) -> None:
        self.source, self.line, self.field, self.message = source, line, field, message
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {field}: {message}")


ACTION_KINDS = ("signal", "hook", "notify", "freeze", "kill", "oom_score_adj")
# Done every tick while their level stands (Engine._standing_actions), not once per firing.
STANDING_ACTIONS = ("freeze", "kill")
FREEZE_PICKS = ("newest", "largest")
ACTION_TARGETS = ("job", "largest_job", "all_jobs", "domain")
# What a kill's prefer/avoid may test of a process: each a list of globs.
VICTIM_FIELDS = ("name", "cmdline", "cgroup", "env")


@dataclass(frozen=True)
class VictimFilter:
    """Globs on a process: its ``name`` (comm), ``cmdline``, memory
    ``cgroup`` path, or ``env`` (``NAME=glob`` on its environment, or
    ``NAME`` for set at all).  A process matches when any glob does."""

    name: tuple[str, ...] = ()
    cmdline: tuple[str, ...] = ()
    cgroup: tuple[str, ...] = ()
    env: tuple[str, ...] = ()

    def to_json(self) -> dict:
        return {f: list(getattr(self, f)) for f in VICTIM_FIELDS if getattr(self, f)}


@dataclass(frozen=True)
class ActionSpec:
    """One action of a level: ``signal`` (to the target jobs' leaders, or
    ``to: all`` their every process), ``hook`` (a command), ``notify``
    (the jobs that listen through memguard.client), or ``freeze`` (the
    newest or largest of their processes, one at a time: see
    Engine._freeze_and_thaw).  ``target``: ``job``
    (each job in the domain that ``match.job`` selects), ``largest_job`` (the
    largest of those by RSS), ``all_jobs`` (every job in the domain) or
    ``domain`` (a hook for the domain itself, jobs or none: once per firing,
    as root, so only from a trusted file).
    ``as_root``: a hook from a root-owned file no one else may write runs as
    root; any other runs as the target job's user.  ``kill`` ends one
    process of the domain, memguard choosing (``pick``, ``prefer``,
    ``avoid``: see actions/kill.py) with SIGTERM, then SIGKILL after
    ``grace``; ``oom_score_adj`` sets that value on every process of the
    target jobs, so the kernel takes them first."""

    kind: str
    target: str = "job"
    signal: int | None = None
    to: str = "leader"
    command: str | None = None
    as_root: bool = False
    pick: str | None = None      # freeze, kill: which process, "newest" or "largest"
    prefer: VictimFilter = VictimFilter()   # kill: taken before any other
    avoid: VictimFilter = VictimFilter()    # kill: never taken
    grace: float = 5.0                      # kill: seconds from SIGTERM to SIGKILL
    score: int | None = None                # oom_score_adj: the value


@dataclass(frozen=True)
class Level:
    severity: str
    when: Condition
    hold: float          # seconds the condition must hold ("for")
    keep: float = 0.0    # seconds it stays reached after the condition fails ("keep_firing_for")
    actions: tuple[ActionSpec, ...] = ()


@dataclass(frozen=True)
class Rule:
    """Two rules are equal when they decide the same: a reload keeps the
    state of a rule that was only moved or described anew."""
    name: str
    description: str = dataclasses.field(compare=False)
    kinds: tuple[str, ...]
    domain_glob: str
    levels: tuple[Level, ...]
    cooldown: float
    source: str = dataclasses.field(compare=False)
    line: int = dataclasses.field(compare=False)
    job_glob: str | None = None      # match.job: the jobs its job-targeted actions act on
    dry_run: bool = False            # decide, log and count its actions, carry out none

    @functools.cached_property
    def per_job(self) -> bool:
        """Whether the rule is about jobs (``match.job``, or a condition
        reading ``job.*``): it is then evaluated, and fires, for each
        (domain, job) pair, so one job's state does not stand for another's."""
        return self.job_glob is not None or any(
            n == "job" or n.startswith("job.") for level in self.levels for n in level.when.names)


def _line(node) -> int:
    return node.start_mark.line + 1


def _mapping(node, source, field) -> dict:
    if not isinstance(node, yaml.MappingNode):
        raise RuleError(source, _line(node), field, "expected a mapping")
    out = {}
    for k, v in node.value:
        if k.value in out:
            raise RuleError(source, _line(k), f"{field}.{k.value}" if field else k.value, "given twice")
        out[k.value] = (k, v)
    return out


def _scalar(node, source, field, what: str) -> str:
    if not isinstance(node, yaml.ScalarNode) or node.value == "":
        raise RuleError(source, _line(node), field, f"expected {what}")
    return node.value


def _check_keys(found: dict, allowed: set, source: str, field: str) -> None:
    for key, (knode, _) in found.items():
        if key not in allowed:
            raise RuleError(source, _line(knode), f"{field}.{key}" if field else key,
                            f"unknown key (known here: {', '.join(sorted(allowed))})")


def _duration(node, source, field) -> float:
    try:
        return parse_duration(_scalar(node, source, field, "a duration (10s, 5m)"))
    except ValueError as e:
        raise RuleError(source, _line(node), field, str(e)) from None


def _actions(node, source: str, field: str, trusted: bool) -> tuple[ActionSpec, ...]:
    """A level's ``actions:`` list, each item checked where it stands."""
    if not isinstance(node, yaml.SequenceNode):
        raise RuleError(source, _line(node), field, "expected a list of actions (- signal: USR1, - hook: CMD, "
                                                    "- notify: true, - freeze: newest, - kill: largest, "
                                                    "- oom_score_adj: 500)")
    out = []
    for k, item in enumerate(node.value):
        af = f"{field}[{k}]"
        found = _mapping(item, source, af)
        kinds = [key for key in ACTION_KINDS if key in found]
        if len(kinds) != 1:
            raise RuleError(source, _line(item), af, f"an action is one of {', '.join(ACTION_KINDS)}: "
                            f"give exactly one (got {', '.join(kinds) or 'none'})")
        kind = kinds[0]
        extra = {"signal": {"to"}, "kill": {"prefer", "avoid", "grace"}}.get(kind, set())
        _check_keys(found, {kind} | extra | (set() if kind == "kill" else {"target"}), source, af)
        target = "domain" if kind == "kill" else "job"     # memguard chooses among the domain's processes
        if "target" in found:
            target = _scalar(found["target"][1], source, f"{af}.target", "a target")
            allowed = ACTION_TARGETS if kind == "hook" else ACTION_TARGETS[:-1]    # only a hook needs no job
            if target not in allowed:
                raise RuleError(source, _line(found["target"][1]), f"{af}.target",
                                f"expected one of {', '.join(allowed)}, got {target!r}")
        vnode = found[kind][1]
        if kind == "signal":
            try:
                number = parse_signal(_scalar(vnode, source, f"{af}.signal", "a signal"), "signal")
            except JobSpecError as e:
                raise RuleError(source, _line(vnode), f"{af}.signal", e.message) from None
            to = _scalar(found["to"][1], source, f"{af}.to", "leader or all") if "to" in found else "leader"
            if to not in ("leader", "all"):
                raise RuleError(source, _line(found["to"][1]), f"{af}.to", f"expected leader or all, got {to!r}")
            out.append(ActionSpec("signal", target, signal=number, to=to))
        elif kind == "hook":
            if target == "domain" and not trusted:
                raise RuleError(source, _line(found["target"][1]), f"{af}.target",
                                "a hook for the domain itself runs as root: its rule file must be owned by "
                                "root and writable by no one else")
            out.append(ActionSpec("hook", target, command=_scalar(vnode, source, f"{af}.hook", "a command"),
                                  as_root=trusted))
        elif kind in ("freeze", "kill"):
            pick = _scalar(vnode, source, f"{af}.{kind}", "newest or largest")
            if pick not in FREEZE_PICKS:
                raise RuleError(source, _line(vnode), f"{af}.{kind}", f"expected newest or largest, got {pick!r}")
            if kind == "freeze":
                out.append(ActionSpec("freeze", target, pick=pick))
                continue
            prefer, avoid = (_victim_filter(found[key][1], source, f"{af}.{key}") if key in found
                             else VictimFilter() for key in ("prefer", "avoid"))
            grace = _duration(found["grace"][1], source, f"{af}.grace") if "grace" in found else 5.0
            if grace > 60:
                raise RuleError(source, _line(found["grace"][1]), f"{af}.grace",
                                "at most 60s: a last resort that waits longer is not one")
            out.append(ActionSpec("kill", target, signal=15, pick=pick, prefer=prefer, avoid=avoid, grace=grace))
        elif kind == "oom_score_adj":
            text = _scalar(vnode, source, f"{af}.oom_score_adj", "a number from -1000 to 1000")
            try:
                score = int(text)
            except ValueError:
                score = None
            if score is None or not -1000 <= score <= 1000:
                raise RuleError(source, _line(vnode), f"{af}.oom_score_adj",
                                f"expected a number from -1000 to 1000, got {text!r}")
            out.append(ActionSpec("oom_score_adj", target, score=score))
        else:
            if _scalar(vnode, source, f"{af}.notify", "true") not in ("true", "yes", "on"):
                raise RuleError(source, _line(vnode), f"{af}.notify", "expected true")
            out.append(ActionSpec("notify", target))
    return tuple(out)


def _victim_filter(node, source: str, field: str) -> VictimFilter:
    """``prefer:`` or ``avoid:``: a mapping of VICTIM_FIELDS to a glob or a list of globs."""
    found = _mapping(node, source, field)
    _check_keys(found, set(VICTIM_FIELDS), source, field)
    globs = {}
    for key, (_, vnode) in found.items():
        items = vnode.value if isinstance(vnode, yaml.SequenceNode) else [vnode]
        globs[key] = tuple(_scalar(item, source, f"{field}.{key}", "a glob such as 'cc1*'") for item in items)
    return VictimFilter(**globs)


def _level(found: dict, source: str, field: str, default_severity: str | None, guards: dict[str, str],
           trusted: bool = False) -> Level:
    if "when" not in found:
        raise RuleError(source, None, field, "a level needs 'when' (its condition)")
    wnode = found["when"][1]
    text = _scalar(wnode, source, f"{field}.when", "a condition such as 'tto < 60s'")
    try:
        cond = compile_condition(text, known=VARIABLES, guards=guards)
    except ExprError as e:
        raise RuleError(source, _line(wnode), f"{field}.when", f"{e.message} (column {e.column} of {text!r})") from None
    severity = default_severity
    if "severity" in found:
        snode = found["severity"][1]
        severity = _scalar(snode, source, f"{field}.severity", "a severity")
        if severity not in SEVERITIES:
            raise RuleError(source, _line(snode), f"{field}.severity",
                            f"expected one of {', '.join(SEVERITIES)}, got {severity!r}")
    if severity is None:
        raise RuleError(source, None, field, "needs a severity")
    hold = _duration(found["for"][1], source, f"{field}.for") if "for" in found else 0.0
    keep = (_duration(found["keep_firing_for"][1], source, f"{field}.keep_firing_for")
            if "keep_firing_for" in found else 0.0)
    actions = _actions(found["actions"][1], source, f"{field}.actions", trusted) if "actions" in found else ()
    return Level(severity, cond, hold, keep, actions)


def parse_rules(text: str, source: str = "<rules>", trusted: bool = False) -> list[Rule]:
    """Typed rules from a rule file's text (*trusted*: a root-owned file
    only root may write, whose hooks run as root).  Raises RuleError."""
    try:
        doc = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise RuleError(source, mark.line + 1 if mark else None, "document", f"not valid YAML: {e}") from None
    if doc is None:
        return []
    top = _mapping(doc, source, "")
    _check_keys(top, {"rules"}, source, "")
    if "rules" not in top:
        return []
    rules_node = top["rules"][1]
    if not isinstance(rules_node, yaml.SequenceNode):
        raise RuleError(source, _line(rules_node), "rules", "expected a list of rules")
    rules, names = [], set()
    for i, node in enumerate(rules_node.value):
        rule = _rule(node, source, f"rules[{i}]", trusted)
        if rule.name in names:
            raise RuleError(source, _line(node), f"rules[{i}].name", f"{rule.name!r} is defined twice")
        names.add(rule.name)
        rules.append(rule)
    return rules


def _rule(node, source: str, field: str, trusted: bool = False) -> Rule:
    found = _mapping(node, source, field)
    _check_keys(found, {"name", "description", "match", "levels", "when", "for", "keep_firing_for", "severity",
                        "cooldown", "actions", "dry_run"}, source, field)
    if "actions" in found and "levels" in found:
        raise RuleError(source, _line(found["actions"][0]), f"{field}.actions",
                        "with 'levels', give each level its own 'actions'")
    if "name" not in found:
        raise RuleError(source, _line(node), field, "a rule needs a name")
    name = _scalar(found["name"][1], source, f"{field}.name", "a name")
    description = found["description"][1].value if "description" in found else ""
    kinds, glob, guards = KINDS, "*", {}
    if "match" in found:
        m = _mapping(found["match"][1], source, f"{field}.match")
        _check_keys(m, {"kind", "domain", "job", "gpu"}, source, f"{field}.match")
        if "kind" in m:
            knode = m["kind"][1]
            items = knode.value if isinstance(knode, yaml.SequenceNode) else [knode]
            kinds = tuple(_scalar(k, source, f"{field}.match.kind", "a domain kind") for k in items)
            for k, item in zip(kinds, items):
                if k not in KINDS:
                    raise RuleError(source, _line(item), f"{field}.match.kind",
                                    f"expected one of {', '.join(KINDS)}, got {k!r}")
        if "domain" in m:
            glob = _scalar(m["domain"][1], source, f"{field}.match.domain", "a glob such as 'cgroup:/build*'")
        for key, example in (("job", "'train-*'"), ("gpu", "'NVIDIA A100*'")):
            if key in m:
                # a domain matches when any of its jobs' names does
                guards["job.names" if key == "job" else "gpu.name"] = _scalar(
                    m[key][1], source, f"{field}.match.{key}", f"a glob such as {example}")
    if "levels" in found and "when" in found:
        raise RuleError(source, _line(found["when"][0]), f"{field}.when", "give either 'levels' or 'when', not both")
    if "levels" in found:
        lnode = found["levels"][1]
        if not isinstance(lnode, yaml.SequenceNode) or not lnode.value:
            raise RuleError(source, _line(lnode), f"{field}.levels", "expected a non-empty list of levels")
        levels = []
        for j, item in enumerate(lnode.value):
            lf = f"{field}.levels[{j}]"
            sub = _mapping(item, source, lf)
            _check_keys(sub, {"severity", "when", "for", "keep_firing_for", "actions"}, source, lf)
            levels.append(_level(sub, source, lf, None, guards, trusted))
        ranks = [SEVERITIES.index(lv.severity) for lv in levels]
        if ranks != sorted(set(ranks)):
            raise RuleError(source, _line(lnode), f"{field}.levels",
                            "levels must go up in severity, each once (info < warning < critical < last_resort)")
    elif "when" in found:
        levels = [_level(found, source, field, "warning", guards, trusted)]
    else:
        raise RuleError(source, _line(node), field, "a rule needs 'when' or 'levels'")
    cooldown = _duration(found["cooldown"][1], source, f"{field}.cooldown") if "cooldown" in found else 0.0
    dry_run = False
    if "dry_run" in found:
        value = _scalar(found["dry_run"][1], source, f"{field}.dry_run", "true or false")
        if value not in ("true", "false"):
            raise RuleError(source, _line(found["dry_run"][1]), f"{field}.dry_run", f"expected true or false, got {value!r}")
        dry_run = value == "true"
    rule = Rule(name, description, kinds, glob, tuple(levels), cooldown, source, _line(node),
                guards.get("job.names"), dry_run)
    if rule.per_job and any(a.target == "domain" for level in levels for a in level.actions):
        raise RuleError(source, _line(node), f"{field}.levels",
                        "a rule about jobs fires per job: a kill, or a hook with target: domain, belongs in a "
                        "rule about the domain (without match.job or job.* conditions)")
    return rule


def load_rules(paths: list[str]) -> list[Rule]:
    """Every rule of every file; raises RuleError (a name defined in two
    files is an error too) or OSError."""
    rules, seen = [], {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            st = os.fstat(f.fileno())
            trusted = st.st_uid == 0 and not st.st_mode & 0o022   # root's, and only root may write it
            for rule in parse_rules(f.read(), path, trusted):
                if rule.name in seen:
                    raise RuleError(path, rule.line, "name",
                                    f"{rule.name!r} is already defined in {seen[rule.name]}")
                seen[rule.name] = f"{rule.source}:{rule.line}"
                rules.append(rule)
    return rules

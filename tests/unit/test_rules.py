"""Rule files (errors at file:line:field) and their evaluation on a fake clock."""

import glob
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memguard.model import PSI, Pressure, Sample
from memguard.predict.predictor import Prediction
from memguard.rules.evaluate import RuleEngine, domain_env
from memguard.rules.expr import compile_condition
from memguard.rules.load import VARIABLES, RuleError, load_rules, parse_rules

LADDER = """\
rules:
  - name: running-out
    match:
      kind: [cgroup]
      domain: "cgroup:/build*"
    levels:
      - severity: warning
        when: tto < 5m
        for: 10s
      - severity: critical
        when: tto < 60s
        for: 2s
      - severity: last_resort
        when: tto < 10s
    cooldown: 2m
"""


def env(tto, domain="cgroup:/build", kind="cgroup"):
    return {domain: {"domain": domain, "kind": kind, "tto": tto}}


def run(engine, series, start=0.0, step=1.0, domain="cgroup:/build"):
    """Feed tto values one second apart; the transitions, as (t, kind, severity)."""
    out = []
    for i, tto in enumerate(series):
        for tr in engine.evaluate(env(tto, domain), start + i * step):
            out.append((tr.at, tr.kind, tr.severity))
    return out


def test_for_duration_then_escalation_then_clear():
    engine = RuleEngine(parse_rules(LADDER))
    series = [400] * 3 + [200] * 12 + [50] * 3 + [5] + [None] * 2
    assert run(engine, series) == [
        (13.0, "fire", "warning"),        # tto < 5m from t=3, held 10 s
        (17.0, "escalate", "critical"),   # tto < 60s from t=15, held 2 s
        (18.0, "escalate", "last_resort"),
        (19.0, "clear", None),
    ]


def test_a_flapping_condition_is_not_refired_within_the_cooldown():
    engine = RuleEngine(parse_rules(LADDER.replace("for: 10s", "for: 0s")))
    assert run(engine, [200, None, 200, None]) == [(0.0, "fire", "warning"), (1.0, "clear", None)]
    assert engine.suppressed == 1
    assert run(engine, [200], start=200.0) == [(200.0, "fire", "warning")]   # after the cooldown


def test_match_by_kind_and_glob():
    engine = RuleEngine(parse_rules(LADDER.replace("for: 10s", "for: 0s")))
    assert run(engine, [200], domain="cgroup:/other") == []
    assert engine.evaluate(env(200, "host", "host"), 0.0) == []
    assert engine.firing() == []
    engine.evaluate(env(200), 0.0)
    assert engine.firing() == [("running-out", "cgroup:/build", "warning", 0.0, None)]


def test_match_by_job_and_gpu_name():
    engine = RuleEngine(parse_rules(
        "rules:\n  - name: r\n    match: {job: 'train-*', gpu: '*A100*'}\n    when: tto < 60s\n"))

    assert engine.rules[0].per_job

    def tick(jobs, gpu, t):  # the domain's variables, and each (domain, job) pair's
        domain = {"domain": "gpu:0", "kind": "gpu", "tto": 30, "job": {}, "gpu": {"name": gpu}}
        pairs = {f"gpu:0\0{j}-1": {**domain, "job": {"name": j, "id": f"{j}-1", "names": (j,)}} for j in jobs}
        return [(tr.kind, tr.domain, tr.job) for tr in engine.evaluate({"gpu:0": domain}, t, pairs)]
    assert tick(["build-1"], "NVIDIA A100-SXM4-80GB", 0.0) == []
    assert tick([], "NVIDIA A100-SXM4-80GB", 1.0) == []       # no job registered
    assert tick(["train-7"], "NVIDIA H100", 2.0) == []
    assert tick(["train-7", "build-1", "train-8"], "NVIDIA A100-SXM4-80GB", 3.0) == [
        ("fire", "gpu:0", "train-7-1"), ("fire", "gpu:0", "train-8-1")], "each job its own pair"
    assert tick(["train-7", "build-1"], "NVIDIA A100-SXM4-80GB", 4.0) == []
    assert [f[4] for f in engine.firing()] == ["train-7-1"], "a job that left drops its pair"


def test_a_vanished_domain_drops_its_state():
    engine = RuleEngine(parse_rules(LADDER.replace("for: 10s", "for: 0s")))
    engine.evaluate(env(200), 0.0)
    engine.evaluate({}, 1.0)
    assert engine.firing() == [] and engine.state == {"running-out": {}}


def test_a_quiet_pair_keeps_no_state_once_its_cooldown_is_over():
    engine = RuleEngine(parse_rules(LADDER.replace("for: 10s", "for: 0s")))
    run(engine, [200, None])
    assert list(engine.state["running-out"]) == ["cgroup:/build"]        # cooling down: remembered
    assert run(engine, [None, 200], start=60.0) == [] and engine.suppressed == 1
    run(engine, [None], start=200.0)
    assert engine.state == {"running-out": {}}                           # nothing left to remember
    assert run(engine, [200], start=201.0) == [(201.0, "fire", "warning")]


def test_a_reload_of_the_same_rules_keeps_a_firing_pair_firing():
    engine = RuleEngine(parse_rules(LADDER.replace("for: 10s", "for: 0s"), "a.yaml"))
    run(engine, [200])
    # the same rule, parsed again from another file and line: state is kept
    engine.replace_rules(parse_rules("# moved\n" + LADDER.replace("for: 10s", "for: 0s"), "b.yaml"))
    assert run(engine, [200], start=1.0) == []
    assert engine.firing() == [("running-out", "cgroup:/build", "warning", 0.0, None)]
    engine.replace_rules(parse_rules(LADDER.replace("for: 10s", "for: 0s").replace("5m", "4m")))
    assert run(engine, [200], start=2.0) == [(2.0, "fire", "warning")]  # changed: starts afresh


def test_transitions_come_in_the_order_of_the_domains_names():
    engine = RuleEngine(parse_rules("rules:\n  - name: r\n    when: tto < 60s\n"))
    envs = {f"cgroup:/{c}": {"domain": f"cgroup:/{c}", "kind": "cgroup", "tto": 30} for c in "dcba"}
    assert [tr.domain for tr in engine.evaluate(envs, 0.0)] == sorted(envs)


class Reference:
    """The rules read plainly: every pair of one rule stepped every tick,
    as the module's docstring says.  The engine, which steps only the pairs
    that can move, must give the same transitions."""

    def __init__(self, rule):
        self.rule, self.pairs, self.suppressed = rule, {}, 0

    def tick(self, envs, now):
        out, levels = [], self.rule.levels
        self.pairs = {d: p for d, p in self.pairs.items() if d in envs}
        for d in sorted(envs):
            p = self.pairs.setdefault(d, {"level": -1, "pending": {}, "kept": {}, "cleared": None})
            reached = -1
            for i, level in enumerate(levels):
                if level.when(envs[d]):
                    p["pending"].setdefault(i, now)
                    if now - p["pending"][i] >= level.hold or i in p["kept"]:
                        reached = i
                        if level.keep:
                            p["kept"][i] = now
                        continue
                else:
                    p["pending"].pop(i, None)
                if i in p["kept"]:
                    if now - p["kept"][i] < level.keep:
                        reached = i
                    else:
                        del p["kept"][i]
            if reached == p["level"]:
                continue
            if reached > p["level"] >= 0:
                kind = "escalate"
            elif reached > p["level"]:
                if self.rule.cooldown and p["cleared"] is not None and now - p["cleared"] < self.rule.cooldown:
                    self.suppressed += 1
                    continue
                kind = "fire"
            elif reached >= 0:
                kind = "deescalate"
            else:
                kind, p["cleared"] = "clear", now
            p["level"] = reached
            out.append((d, kind, levels[reached].severity if reached >= 0 else None))
        return out


# a level: its condition (not only thresholds that nest), for, keep_firing_for
LEVEL = st.tuples(st.sampled_from(["tto < 10s", "tto < 60s", "tto < 300s", "tto > 50", "tto == 30 || tto == 400"]),
                  st.sampled_from([0, 1, 2.5]), st.sampled_from([0, 2, 3]))
TTO = st.sampled_from([None, 5, 30, 100, 400, "gone"])


@settings(deadline=None, derandomize=True, max_examples=400)
@given(st.lists(LEVEL, min_size=1, max_size=3), st.sampled_from([0, 4]),
       st.lists(st.tuples(st.sampled_from([0.5, 1.0, 1.5]), st.tuples(TTO, TTO, TTO)), min_size=1, max_size=40))
def test_the_engine_steps_pairs_as_a_plain_reading_of_the_rules(levels, cooldown, ticks):
    text = "rules:\n  - name: r\n    levels:\n" + "".join(
        f"      - severity: {sev}\n        when: {when}\n        for: {hold}s\n        keep_firing_for: {keep}s\n"
        for sev, (when, hold, keep) in zip(["warning", "critical", "last_resort"], levels))
    text += f"    cooldown: {cooldown}s\n"
    (rule,) = parse_rules(text)
    engine, reference, now = RuleEngine([rule]), Reference(rule), 0.0
    for step, ttos in ticks:
        now += step
        envs = {f"cgroup:/{i}": {"domain": f"cgroup:/{i}", "kind": "cgroup", "tto": tto}
                for i, tto in enumerate(ttos) if tto != "gone"}
        got = [(tr.domain, tr.kind, tr.severity) for tr in engine.evaluate(envs, now)]
        assert got == reference.tick(envs, now), now
        assert engine.suppressed == reference.suppressed
        assert {(d, sev) for _, d, sev, _, _ in engine.firing()} == {
            (d, rule.levels[p["level"]].severity) for d, p in reference.pairs.items() if p["level"] >= 0}


@pytest.mark.parametrize("psi", [None, PSI(Pressure(3.0, 2.0, 1.0, 10), None),
                                 PSI(Pressure(3.0, 2.0, 1.0, 10), Pressure(0.5, 0.25, 0.125, 5))])
def test_every_variable_is_given_and_dotted_paths_agree_with_the_fields(psi):
    sample = Sample("cgroup:/a", "cgroup", 300, 200, 400, reclaimable=100, oom_kills=0, psi=psi)
    env = domain_env("cgroup:/a", "cgroup", sample, Prediction(45.0, 2.0, 0.9, "linear", 60.0))
    assert {name.split(".")[0] for name in VARIABLES} <= set(env)
    kinds = {"number": (int, float), "string": (str,), "map": (dict,)}
    for name, kind in VARIABLES.items():
        root, *fields = name.split(".")
        value = env[root]
        for f in fields:
            value = value.get(f) if isinstance(value, dict) else None
        # the promise the compiled comparisons rely on (rules/load.py)
        assert value is None or (type(value) in kinds[kind] and type(value) is not bool), name
    assert (env["usage_ratio"], env["risk"], env["tto"]) == (0.5, "critical", 45.0)
    for path in [k for k in env if "." in k]:
        root, *fields = path.split(".")
        walk = env[root]
        for f in fields:
            walk = walk.get(f) if isinstance(walk, dict) else None
        assert env[path] == walk, path
    # the compiled condition reads the dotted key: a wrong one would show
    wrong = {**env, "psi.some.avg10": 99.0}
    assert compile_condition("psi.some.avg10 > 50")(wrong) is True


def test_one_level_shorthand():
    (rule,) = parse_rules("rules:\n  - name: r\n    when: usage_ratio > 0.9\n    for: 30s\n")
    assert [(lv.severity, lv.hold) for lv in rule.levels] == [("warning", 30.0)]


@pytest.mark.parametrize("text,line,field,what", [
    ("rules:\n  - name: r\n    when: tto < 60x\n", 3, "rules[0].when", "unknown unit"),
    ("rules:\n  - name: r\n    when: ttoo < 60s\n", 3, "rules[0].when", "unknown variable 'ttoo'"),
    ("rules:\n  - name: r\n    when: tto < 60s\n    for: soon\n", 4, "rules[0].for", "expected a duration"),
    ("rules:\n  - name: r\n    when: tto < 60s\n    severity: urgent\n", 4, "rules[0].severity", "expected one of"),
    ("rules:\n  - name: r\n    whne: tto < 60s\n", 3, "rules[0].whne", "unknown key"),
    ("rules:\n  - name: r\n    match:\n      kind: [pod]\n    when: tto < 1s\n", 4, "rules[0].match.kind", "got 'pod'"),
    ("rules:\n  - name: r\n    match:\n      job: [a, b]\n    when: tto < 1s\n", 4, "rules[0].match.job",
     "expected a glob such as 'train-*'"),
    ("rules:\n  - name: r\n    when: tto < 1s\n  - name: r\n    when: tto < 2s\n", 4, "rules[1].name", "defined twice"),
    ("rules:\n  - name: r\n    levels:\n      - {severity: critical, when: tto < 1s}\n      - {severity: warning, when: tto < 9s}\n",
     4, "rules[0].levels", "go up in severity"),
    ("rules:\n  - name: r\n", 2, "rules[0]", "needs 'when' or 'levels'"),
    ("rules: [\n", 2, "document", "not valid YAML"),
])
def test_errors_name_file_line_and_field(text, line, field, what):
    with pytest.raises(RuleError) as e:
        parse_rules(text, "my.rules.yaml")
    assert (e.value.source, e.value.line, e.value.field) == ("my.rules.yaml", line, field)
    assert what in e.value.message


def test_a_name_in_two_files_is_an_error(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("rules:\n  - name: r\n    when: tto < 1s\n")
    b.write_text("rules:\n  - name: r\n    when: tto < 2s\n")
    with pytest.raises(RuleError, match="already defined in"):
        load_rules([str(a), str(b)])


SHIPPED = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "..", "rules", "*.yaml")))


ALL_KINDS = ("host", "wsl", "cgroup", "gpu")   # a rule without match: applies to every kind
# What each shipped file says, units resolved: per rule (name, kinds, domain
# glob, cooldown seconds, levels as (severity, when, for seconds,
# keep_firing_for seconds)). A rule or level lost, a unit misread or a
# default changed shows here.
SHIPPED_RULES = {
    "compile.yaml": [
        ("build-climbing-fast", ("cgroup", "host", "wsl"), "*", 0.0, [
            ("info", "usage_ratio > 0.35 && tto < 30s || job.peak_ratio > 0.9", 0.0, 10.0)]),
        ("build-oom-soon", ("cgroup", "host", "wsl"), "*", 60.0, [
            ("warning", "tto < 90s && confidence >= 0.5 || usage_ratio > 0.9", 3.0, 15.0),
            ("critical", "tto < 20s && confidence >= 0.5 || usage_ratio > 0.97", 0.0, 5.0),
            ("last_resort", "usage_ratio > 0.98", 1.0, 0.0)]),
    ],
    "default.yaml": [
        ("memory-running-out", ALL_KINDS, "*", 120.0, [
            ("warning", "tto < 5m && confidence >= 0.6", 0.5, 30.0),
            ("critical", "tto < 30s && confidence >= 0.9 && usage_ratio > 0.9 || usage_ratio > 0.97", 2.0, 10.0),
            ("last_resort", "tto < 10s && confidence >= 0.9 && usage_ratio > 0.93 || usage_ratio > 0.98", 2.0, 2.0)]),
        ("memory-pressure-stalls", ALL_KINDS, "*", 300.0, [
            ("warning", "psi.full.avg10 > 20 || psi.some.avg10 > 40", 30.0, 0.0)]),
        ("memory-leak", ALL_KINDS, "*", 1800.0, [
            ("info", "leak_rate > 50MiB && usage_ratio > 0.3", 120.0, 0.0)]),
    ],
    "training.yaml": [
        ("training-oom-soon", ALL_KINDS, "*", 600.0, [
            ("warning", "tto < 10m && confidence >= 0.6", 5.0, 60.0),
            ("critical", "tto < 2m && confidence >= 0.6", 2.0, 20.0)]),
        ("training-leak", ALL_KINDS, "*", 3600.0, [
            ("warning", "leak_rate > 20MiB && usage_ratio > 0.2", 300.0, 0.0)]),
    ],
    "wsl.yaml": [
        ("wsl-vm-running-out", ("wsl",), "*", 300.0, [
            ("warning", "tto < 10m && confidence >= 0.5 || usage_ratio > 0.85", 10.0, 0.0),
            ("critical", "tto < 2m && confidence >= 0.5 || usage_ratio > 0.95", 2.0, 0.0)]),
        ("wsl-vm-stalling", ("wsl",), "*", 600.0, [
            ("warning", "psi.some.avg10 > 30", 20.0, 0.0)]),
    ],
}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.rsplit("/", 1)[-1])
def test_shipped_rule_sets_load(path):
    rules = load_rules([path])
    assert [(r.name, r.kinds, r.domain_glob, r.cooldown,
             [(lv.severity, lv.when.text, lv.hold, lv.keep) for lv in r.levels]) for r in rules] \
        == SHIPPED_RULES[path.rsplit("/", 1)[-1]]
    assert all(r.description.strip() and r.source == path for r in rules)


def test_the_shipped_sets_are_all_there():
    assert {p.rsplit("/", 1)[-1] for p in SHIPPED} == set(SHIPPED_RULES)


def test_default_rules_escalate_on_a_shortening_prediction():
    engine = RuleEngine(load_rules([p for p in SHIPPED if p.endswith("default.yaml")]))
    seen = []
    for t, tto in enumerate([600, 240, 240, 240, 240, 240, 240, 240, 25, 25, 25, 5, 5, 5]):
        e = {"cgroup:/a": {"domain": "cgroup:/a", "kind": "cgroup", "tto": tto, "confidence": 0.9,
                           "usage_ratio": 0.5 if tto > 60 else 0.91 if tto > 10 else 0.94}}   # and 90 %, 93 % too
        seen += [(tr.kind, tr.severity) for tr in engine.evaluate(e, float(t))]
    assert seen == [("fire", "warning"), ("escalate", "critical"), ("escalate", "last_resort")]


def test_a_reload_that_shortens_a_firing_ladder_does_not_break():
    # Found in review: the firing pair's level pointed past the new ladder.
    engine = RuleEngine(parse_rules(LADDER.replace("for: 10s", "for: 0s").replace("for: 2s", "for: 0s")))
    engine.evaluate(env(5), 0.0)
    assert engine.firing()[0][2] == "last_resort"
    engine.replace_rules(parse_rules("rules:\n  - name: running-out\n    when: tto < 60s\n"))
    engine.evaluate(env(5, "cgroup:/x"), 1.0)
    assert engine.firing() == [("running-out", "cgroup:/x", "warning", 1.0, None)]


def test_a_reached_level_is_kept_for_keep_firing_for_after_its_condition_fails():
    engine = RuleEngine(parse_rules(
        "rules:\n  - name: r\n    when: tto < 60s\n    for: 2s\n    keep_firing_for: 5s\n"))
    seen = []
    for t, tto in enumerate([30, 30, 30, None, 30, None, None, None, None, None, None]):
        seen += [(t, tr.kind) for tr in engine.evaluate(env(tto), float(t))]
    # fires at 2 s; the one-tick gap at 3 s does not clear it; cleared 5 s
    # after the condition last held (4 s)
    assert seen == [(2, "fire"), (9, "clear")]


def test_without_keep_firing_for_one_failed_tick_clears():
    engine = RuleEngine(parse_rules("rules:\n  - name: r\n    when: tto < 60s\n    for: 2s\n"))
    seen = []
    for t, tto in enumerate([30, 30, 30, None, 30]):
        seen += [(t, tr.kind) for tr in engine.evaluate(env(tto), float(t))]
    assert seen == [(2, "fire"), (3, "clear")]


def test_keep_firing_for_must_be_a_duration():
    with pytest.raises(RuleError, match=r"rules\[0\]\.keep_firing_for: expected a duration"):
        parse_rules("rules:\n  - name: r\n    when: tto < 60s\n    keep_firing_for: long\n", "r.yaml")


ACTING = """\
rules:
  - name: build-oom
    match: {job: 'build*'}
    dry_run: true
    levels:
      - severity: warning
        when: tto < 60s
        actions:
          - signal: USR1
          - hook: /usr/local/bin/pause-build
            target: largest_job
      - severity: critical
        when: tto < 10s
        actions:
          - signal: TERM
            to: all
            target: all_jobs
          - notify: true
"""


def test_actions_are_typed_at_load():
    import signal as sig
    from memguard.rules.load import ActionSpec
    (rule,) = parse_rules(ACTING, "acting.yaml")
    assert (rule.job_glob, rule.dry_run) == ("build*", True)
    assert rule.levels[0].actions == (ActionSpec("signal", "job", signal=sig.SIGUSR1),
                                      ActionSpec("hook", "largest_job", command="/usr/local/bin/pause-build"))
    assert rule.levels[1].actions == (ActionSpec("signal", "all_jobs", signal=sig.SIGTERM, to="all"),
                                      ActionSpec("notify", "job"))
    (trusted,) = parse_rules(ACTING, "acting.yaml", trusted=True)
    assert trusted.levels[0].actions[1].as_root


@pytest.mark.parametrize("action, line, field, message", [
    ("- destroy: now", 5, "rules[0].actions[0]",
     "an action is one of signal, hook, notify, freeze, kill, oom_score_adj: give exactly one (got none)"),
    ("- kill: now", 5, "rules[0].actions[0].kill", "expected newest or largest, got 'now'"),
    ("- {kill: largest, target: job}", 5, "rules[0].actions[0].target", "unknown key"),
    ("- {kill: largest, prefer: {comm: cc1}}", 5, "rules[0].actions[0].prefer.comm", "unknown key"),
    ("- {kill: largest, grace: 5m}", 5, "rules[0].actions[0].grace", "at most 60s"),
    ("- oom_score_adj: 2000", 5, "rules[0].actions[0].oom_score_adj", "expected a number from -1000 to 1000"),
    ("- {signal: USR1, hook: x}", 5, "rules[0].actions[0]", "give exactly one (got signal, hook)"),
    ("- signal: USR9", 5, "rules[0].actions[0].signal", "'USR9' is not a signal"),
    ("- {signal: USR1, target: everyone}", 5, "rules[0].actions[0].target", "expected one of job, largest_job"),
    ("- {signal: USR1, to: some}", 5, "rules[0].actions[0].to", "expected leader or all"),
    ("- {hook: x, to: all}", 5, "rules[0].actions[0].to", "unknown key"),
    ("- notify: maybe", 5, "rules[0].actions[0].notify", "expected true"),
])
def test_a_bad_action_is_refused_where_it_stands(action, line, field, message):
    text = f"rules:\n  - name: r\n    when: tto < 60s\n    actions:\n      {action}\n"
    with pytest.raises(RuleError) as e:
        parse_rules(text, "r.yaml")
    assert (e.value.line, e.value.field) == (line, field), str(e.value)
    assert message in e.value.message


def test_rules_check_names_the_line_of_a_bad_action(tmp_path):
    import json
    import subprocess
    import sys
    path = tmp_path / "acting.yaml"
    path.write_text("rules:\n  - name: stop-it\n    when: tto < 60s\n    actions: [{explode: yes}]\n")
    r = subprocess.run([sys.executable, "-m", "memguard.cli.main", "rules", "check", str(path), "--json"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    (f,) = json.loads(r.stdout)["files"]
    assert (f["ok"], f["error"]["line"], f["error"]["field"]) == (False, 4, "rules[0].actions[0]")

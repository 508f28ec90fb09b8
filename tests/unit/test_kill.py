"""The last resort and oom_score_adj (issue 19): when the engine asks for a
kill, on a fake clock; whom actions/kill.py chooses; and its signals and
oom_score_adj writes on real processes."""

import signal
import subprocess
import sys

import pytest

from memguard.actions.act import set_oom_score_adj
from memguard.actions.kill import Candidate, choose, terminate
from memguard.actions.plan import ActionDone
from memguard.cli.incident import render_incident
from memguard.clock import FakeClock
from memguard.config import ActionsConfig, Config
from memguard.engine.engine import Engine
from memguard.engine.messages import RulesLoaded
from memguard.incidents.build import Write
from memguard.probes.procevents import start_time
from memguard.roots import Roots
from memguard.rules.load import RuleError, parse_rules

from .test_actions import MiB, register, tick

LAST_RESORT = """\
rules:
  - name: build-oom
    levels:
      - severity: warning
        when: usage_ratio > 0.8
        actions:
          - oom_score_adj: 500
      - severity: last_resort
        when: usage_ratio > 0.95
        actions:
          - kill: largest
            prefer: {name: [cc1plus, 'ld*']}
            avoid: {name: [make, bash], cmdline: ['*vim *']}
            grace: 2s
"""


def engine(dry_run=False):
    clock = FakeClock()
    e = Engine(Config(actions=ActionsConfig(kill_every=10.0, dry_run=dry_run)), clock.now(), "t")
    e.step([], clock.now(), events=[RulesLoaded(tuple(parse_rules(LAST_RESORT)), (), 0.0)])
    tick(e, clock, 10 * MiB)
    return e, clock


def victim_detail(pid=13, comm="cc1plus"):
    return {"pid": pid, "comm": comm, "cmdline": f"{comm} -O2 big.cc", "uid": 1000, "rss_bytes": 60 * MiB,
            "cgroup": "/a", "result": "killed", "why": f"preferred (name {comm}), the largest of 2 preferred",
            "exit_seconds": 2.01,
            "candidates": [{"pid": pid, "comm": comm, "rss_bytes": 60 * MiB, "uid": 1000, "verdict": "preferred",
                            "matched": "name cc1plus"},
                           {"pid": 9, "comm": "bash", "rss_bytes": 90 * MiB, "uid": 1000, "verdict": "avoided",
                            "matched": "name bash"}]}


def test_a_kill_level_kills_once_then_again_after_kill_every_while_it_stands():
    e, clock = engine()
    assert [a.kind for a in tick(e, clock, 90 * MiB).actions] == [], "no job: nothing to raise"
    (kill,) = tick(e, clock, 97 * MiB).actions
    assert (kill.kind, kill.severity, kill.domain, kill.targets) == ("kill", "last_resort", "cgroup:/a", ())
    assert kill.choice == {"cgroup": "/a", "pick": "largest", "prefer": {"name": ["cc1plus", "ld*"]},
                           "avoid": {"name": ["make", "bash"], "cmdline": ["*vim *"]}, "grace": 2.0}
    assert [tick(e, clock, 97 * MiB).actions for _ in range(12)] == [[]] * 12, "never two kills at once"
    e.step([], clock.now(), events=[ActionDone(kill.id, "killed", (victim_detail(),), clock.now().mono)])
    assert [tick(e, clock, 97 * MiB).actions for _ in range(9)] == [[]] * 9, "kill_every counts from its end"
    (again,) = tick(e, clock, 97 * MiB).actions
    assert again.kind == "kill"
    e.step([], clock.now(), events=[ActionDone(again.id, "no_victim", ({"why": "none"},), clock.now().mono)])
    for _ in range(3):
        tick(e, clock, 20 * MiB)          # the rule clears
    (fresh,) = tick(e, clock, 97 * MiB).actions
    assert fresh.kind == "kill", "a new firing kills at once"


def test_memguards_kill_is_an_incident_that_says_whom_it_chose_and_why():
    e, clock = engine()
    (kill,) = tick(e, clock, 97 * MiB).actions
    fx = e.step([], clock.now(), events=[ActionDone(kill.id, "killed", (victim_detail(),), clock.now().mono)])
    (write,) = [w for w in fx.incidents if isinstance(w, Write)]
    doc = write.document
    assert (doc["kind"], doc["domain"], doc["rule"], doc["victim"]) == \
        ("memguard_kill", "cgroup:/a", "build-oom", "cc1plus (13)")
    assert doc["prediction"]["usage_ratio"] == pytest.approx(0.97)
    text = render_incident(doc)
    assert "memguard killed cc1plus (pid 13) in cgroup:/a (build-oom, last_resort, 97% of the limit, " in text
    assert "preferred (name cc1plus), the largest of 2 preferred" in text
    assert "SIGKILL after the 2.0 s grace period" in text
    assert "Avoid: name make, bash; cmdline *vim *" in text
    assert "avoided (name bash)" in text, "the larger process it would not take is listed, with why"
    (record,) = [a for a in e.actions_done["cgroup:/a"] if a["kind"] == "kill"]
    assert record["result"] == "killed" and record["targets"][0]["pid"] == 13


def test_a_dry_run_kill_still_chooses_and_says_whom_it_would_have_killed():
    e, clock = engine(dry_run=True)
    (kill,) = tick(e, clock, 97 * MiB).actions
    assert kill.dry_run
    fx = e.step([], clock.now(), events=[ActionDone(kill.id, "dry_run", ({**victim_detail(), "result": "dry_run"},),
                                                     clock.now().mono)])
    (write,) = fx.incidents
    assert write.document["headline"].startswith("memguard would have killed cc1plus (pid 13)")


def test_oom_score_adj_goes_to_every_process_of_the_jobs_once_per_firing():
    e, clock = engine()
    register(e, clock, 10, "build")
    register(e, clock, 11, "build", ppid=10, start=111.0)
    (adj,) = tick(e, clock, 90 * MiB).actions
    assert (adj.kind, adj.job, adj.choice, sorted(adj.targets)) == \
        ("oom_score_adj", "build-10", {"value": 500}, [(10, 100.0), (11, 111.0)])
    assert tick(e, clock, 90 * MiB).actions == []


def candidate(pid, comm, rss, adj=0, cmdline=None, cgroup="/a", start=None, environ=b""):
    return Candidate(pid, comm, start if start is not None else float(pid), rss * MiB, cgroup,
                     cmdline or comm, 1000, adj, environ)


CHOICE = {"pick": "largest", "prefer": {"name": ["cc1plus"], "env": ["MEMGUARD_JOB=build*"]},
          "avoid": {"name": ["bash", "code"], "cmdline": ["*--keep*"], "cgroup": ["/a/editor*"]}}


def test_the_victim_is_a_preferred_process_before_a_larger_one_never_an_avoided_one():
    found = [candidate(2, "code", 900), candidate(3, "python3", 500), candidate(4, "cc1plus", 200),
             candidate(5, "cc1plus", 300), candidate(6, "node", 800, cgroup="/a/editor-1"),
             candidate(7, "ld", 400, cmdline="ld --keep-memory"), candidate(8, "java", 950, adj=-1000)]
    victim, why, listed = choose(Roots(), found, CHOICE)
    assert victim.pid == 5 and why == "preferred (name cc1plus), the largest of 2 preferred"
    verdicts = {c["pid"]: (c["verdict"], c.get("matched")) for c in listed}
    assert verdicts == {5: ("preferred", "name cc1plus"), 8: ("spared", "oom_score_adj -1000"),
                        2: ("avoided", "name code"), 6: ("avoided", "cgroup /a/editor*"),
                        3: ("other", None), 7: ("avoided", "command line *--keep*"),
                        4: ("preferred", "name cc1plus")}
    assert listed[0]["pid"] == 5, "the victim first, then the rest largest first"
    # no preferred one left: the largest not avoided
    victim, why, _ = choose(Roots(), [c for c in found if c.comm != "cc1plus"], CHOICE)
    assert (victim.pid, why) == (3, "the largest of 1 not avoided; none preferred")
    # only avoided and spared ones: nobody
    victim, why, _ = choose(Roots(), [found[0], found[6]], CHOICE)
    assert victim is None and why == "no process of the domain may be chosen"


def test_the_environment_and_newest_pick_choose_too():
    found = [candidate(3, "python3", 500, environ=b"HOME=/root\0MEMGUARD_JOB=build,warning=USR1\0"),
             candidate(4, "python3", 100, start=1.0, environ=b"MEMGUARD_JOB=build\0"),
             candidate(5, "python3", 900, environ=b"MEMGUARD_JOB=train\0")]
    victim, why, _ = choose(Roots(), found, {**CHOICE, "pick": "newest"})
    assert (victim.pid, why) == (3, "preferred (environment MEMGUARD_JOB=build*), the newest of 2 preferred")


def test_a_kill_in_a_rule_about_jobs_is_refused_where_it_stands():
    text = "rules:\n  - name: r\n    match: {job: 'b*'}\n    when: usage_ratio > 0.9\n    actions: [{kill: largest}]\n"
    with pytest.raises(RuleError) as e:
        parse_rules(text, "r.yaml")
    assert (e.value.line, e.value.field) == (2, "rules[0].levels") and "a kill" in e.value.message


def spawn(code):
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout.readline() == b"ready\n"
    return proc


def test_sigterm_ends_a_willing_process_and_sigkill_one_that_ignores_it():
    willing = spawn("import time; print('ready', flush=True); time.sleep(60)")
    stubborn = spawn("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                     "print('ready', flush=True); time.sleep(60)")
    try:
        result, took = terminate(Roots(), willing.pid, start_time(Roots(), willing.pid), grace=5.0)
        assert result == "terminated" and took < 5.0 and willing.wait(5) == -signal.SIGTERM
        result, took = terminate(Roots(), stubborn.pid, start_time(Roots(), stubborn.pid), grace=0.5)
        assert result == "killed" and took >= 0.5 and stubborn.wait(5) == -signal.SIGKILL
    finally:
        for p in (willing, stubborn):
            if p.poll() is None:
                p.kill()
                p.wait()


def test_a_reused_pid_is_not_killed():
    proc = spawn("import time; print('ready', flush=True); time.sleep(60)")
    try:
        assert terminate(Roots(), proc.pid, start_time(Roots(), proc.pid) - 5.0, grace=0.5) == ("reused", 0.0)
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()


def _has_cap_sys_resource() -> bool:
    with open("/proc/self/status") as f:
        eff = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))
    return bool(eff & (1 << 24))


def test_oom_score_adj_is_raised_and_a_refused_lowering_is_reported():
    proc = spawn("import time; print('ready', flush=True); time.sleep(60)")
    path = f"/proc/{proc.pid}/oom_score_adj"
    try:
        start = start_time(Roots(), proc.pid)
        assert set_oom_score_adj(Roots(), proc.pid, start, 500) == "set"
        assert open(path).read().strip() == "500"
        assert set_oom_score_adj(Roots(), proc.pid, start - 5.0, 900) == "reused"
        lowered = set_oom_score_adj(Roots(), proc.pid, start, -500)
        if _has_cap_sys_resource():
            assert lowered == "set" and open(path).read().strip() == "-500"
        else:
            # this host's root lacks CAP_SYS_RESOURCE: the kernel refuses, and memguard says so
            assert lowered == "refused" and open(path).read().strip() == "500"
    finally:
        proc.kill()
        proc.wait()
    assert set_oom_score_adj(Roots(), proc.pid, start, 500) == "gone"

"""Actions for registered jobs (issue 18): which signals a rule's firing asks
for, on a fake clock; and the actuator's pidfd signals on real processes."""

import signal
import subprocess
import sys

from memguard.actions.act import carry_out, signal_process
from memguard.actions.plan import ActionDone, ActionWanted
from memguard.clock import FakeClock
from memguard.config import ActionsConfig, Config
from memguard.engine.engine import Engine, SourceRun
from memguard.cli.render import render_jobs
from memguard.engine.messages import ProbeRun, RulesLoaded
from memguard.export.metrics import Metrics
from memguard.model import ProcessInfo, Sample
from memguard.probes.base import ProbeReading
from memguard.probes.procevents import start_time
from memguard.roots import Roots
from memguard.rules.load import parse_rules
from memguard.sources.base import Reading

MiB = 2**20
LADDER = """\
rules:
  - name: full
    levels:
      - {severity: warning, when: usage_ratio > 0.5}
      - {severity: critical, when: usage_ratio > 0.8}
"""


def engine(dry_run=False):
    clock = FakeClock()
    e = Engine(Config(actions=ActionsConfig(dry_run=dry_run)), clock.now(), "t")
    e.step([], clock.now(), events=[RulesLoaded(tuple(parse_rules(LADDER)), (), 0.0)])
    return e, clock


def tick(e, clock, a_used, b_used=0):
    clock.advance(1)
    owners = {"/": "host", "/a": "cgroup:/a", "/b": "cgroup:/b"}
    return e.step([SourceRun("cgroups", reading=Reading(samples=[
        Sample("cgroup:/a", "cgroup", a_used, a_used, 100 * MiB, identity=1),
        Sample("cgroup:/b", "cgroup", b_used, b_used, 100 * MiB, identity=2)], domain_of=owners.get))], clock.now())


def register(e, clock, pid, value, cgroup="/a", ppid=1, start=100.0, rss=MiB, comm="python3"):
    p = ProcessInfo(pid, comm, rss, cgroup, None, start_time=start, uid=1000, ppid=ppid, job_env=value)
    e.step([], clock.now(), events=[ProbeRun("procevents", "active", None, ProbeReading(processes=[p]))])


def warned_and_told(e, clock):
    """Job train-10 in cgroup:/a, warned as the domain passes half its limit; the signal was sent."""
    tick(e, clock, 10 * MiB)
    register(e, clock, 10, "train,warning=USR1")
    (action,) = tick(e, clock, 60 * MiB).actions
    e.step([], clock.now(), events=[ActionDone(action.id, "sent", ({"pid": 10, "result": "sent"},),
                                                clock.now().mono)])


def signals(fx):
    return [(a.job, a.severity, signal.Signals(a.signal).name, a.targets) for a in fx.actions]


def test_a_job_gets_its_warning_then_its_critical_signal_once_each():
    e, clock = engine()
    tick(e, clock, 10 * MiB)
    register(e, clock, 10, "train,warning=USR1,critical=TERM")
    register(e, clock, 20, "other,warning=USR1", cgroup="/b")
    fx = tick(e, clock, 60 * MiB)
    assert signals(fx) == [("train-10", "warning", "SIGUSR1", ((10, 100.0),))]
    assert signals(tick(e, clock, 60 * MiB)) == [], "once while it keeps firing"
    assert signals(tick(e, clock, 90 * MiB)) == [("train-10", "critical", "SIGTERM", ((10, 100.0),))]
    tick(e, clock, 10 * MiB)            # cleared: the next firing tells it again
    fx = tick(e, clock, 95 * MiB)       # straight to critical: warned too
    assert [(s[1], s[2]) for s in signals(fx)] == [("critical", "SIGUSR1"), ("critical", "SIGTERM")]


def test_target_all_reaches_every_member_and_dry_run_only_decides():
    e, clock = engine(dry_run=True)
    tick(e, clock, 10 * MiB)
    register(e, clock, 10, "build,warning=USR1,target=all")
    register(e, clock, 11, "build,warning=USR1,target=all", ppid=10, start=101.0)
    (action,) = tick(e, clock, 60 * MiB).actions
    assert action.targets == ((10, 100.0), (11, 101.0)) and action.dry_run
    done = carry_out(Roots(), action, clock.now().mono)
    assert done.result == "dry_run"
    fx = e.step([], clock.now(), events=[done])
    assert fx.log[-1][1]["result"] == "dry_run"
    snap = e.snapshot(clock.now())
    assert snap.counters.actions == {("full", "signal", "dry_run"): 1}
    assert e.actions_done["cgroup:/a"][0]["job"] == "build-10"


def test_an_incident_lists_the_actions_before_the_kill():
    from memguard.model import OomKill
    e, clock = engine()
    warned_and_told(e, clock)
    clock.advance(5)
    fx = e.step([], clock.now(), events=[OomKill("kmsg", 10, clock.now().mono, kernel_time=clock.now().mono,
                                                 comm="python3", constraint="CONSTRAINT_MEMCG", oom_memcg="/a")])
    (a,) = fx.incidents[-1].document["actions"]
    assert (a["kind"], a["job"], a["signal"], a["result"], a["t"]) == ("signal", "train-10", 10, "sent", -5.0)


def test_the_actuator_signals_the_process_itself_never_a_reused_pid():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        start = start_time(Roots(), child.pid)
        assert signal_process(Roots(), child.pid, start + 5.0, signal.SIGTERM) == "reused"
        assert child.poll() is None, "another start time: not signalled"
        assert signal_process(Roots(), child.pid, start, signal.SIGTERM) == "sent"
        assert child.wait(10) == -signal.SIGTERM
        assert signal_process(Roots(), child.pid, start, signal.SIGTERM) == "gone"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    action = ActionWanted(1, "signal", "r", "warning", "d", "j-1", 0, ((child.pid, start),), signal.SIGUSR1,
                          False, 0.0)
    assert carry_out(Roots(), action, 0.0).result == "gone"


def hook(command, uid=None, timeout=5.0):
    return ActionWanted(7, "hook", "full", "warning", "cgroup:/a", "train-10", uid, ((10, None),), None, False,
                        0.0, {"tto_seconds": 42.0, "confidence": 0.9}, command, timeout)


def test_a_hook_gets_the_prediction_and_runs_as_the_jobs_user(public_dir):
    import json as _json
    import os
    (public_dir / "w").mkdir()
    os.chmod(public_dir / "w", 0o777)     # for nobody, the hook's user here
    out = public_dir / "w" / "seen"
    done = carry_out(Roots(), hook(f"id -u > {out}; cat >> {out}; echo MEMGUARD_TTO_SECONDS=$MEMGUARD_TTO_SECONDS",
                                   uid=65534), 1.0)
    assert done.result == "ok", done
    (detail,) = done.details
    assert (detail["uid"], detail["exit_status"], detail["output"]) == (65534, 0, "MEMGUARD_TTO_SECONDS=42.0\n")
    uid_line, stdin = out.read_text().split("\n", 1)
    assert uid_line == "65534"
    assert _json.loads(stdin) == {"job": "train-10", "rule": "full", "severity": "warning",
                                  "domain": "cgroup:/a", "tto_seconds": 42.0, "confidence": 0.9}


def test_a_hook_that_hangs_floods_or_forks_is_bounded_and_reaped():
    import time as _time
    started = _time.monotonic()
    done = carry_out(Roots(), hook("(sleep 30 &); yes | head -c 1000000; sleep 30", uid=0, timeout=1.0), 0.0)
    assert done.result == "timed_out" and _time.monotonic() - started < 5
    assert len(done.details[0]["output"]) == 16 * 1024
    assert carry_out(Roots(), hook("exit 3", uid=0), 0.0).result == "failed"


ACTING = """\
rules:
  - name: build-full
    match: {job: 'build*'}
    levels:
      - severity: warning
        when: usage_ratio > 0.5
        actions:
          - signal: USR2
            target: largest_job
      - severity: critical
        when: usage_ratio > 0.8
        actions:
          - {signal: TERM, to: all, target: all_jobs}
"""


def test_a_rules_actions_reach_the_jobs_it_targets():
    e, clock = engine()
    e.step([], clock.now(), events=[RulesLoaded(tuple(parse_rules(ACTING)), (), 0.0)])
    tick(e, clock, 10 * MiB)
    register(e, clock, 10, "build-small")
    register(e, clock, 20, "build-big")
    register(e, clock, 21, "build-big", ppid=20, start=101.0)
    register(e, clock, 30, "editor")
    fx = tick(e, clock, 60 * MiB)
    assert signals(fx) == [("build-big-20", "warning", "SIGUSR2", ((20, 100.0),))], "the largest build only"
    fx = tick(e, clock, 90 * MiB)
    assert sorted((s[0], s[2], s[3]) for s in signals(fx)) == [
        ("build-big-20", "SIGTERM", ((20, 100.0), (21, 101.0))), ("build-small-10", "SIGTERM", ((10, 100.0),)),
        ("editor-30", "SIGTERM", ((30, 100.0),))], "all_jobs: every job in the domain, every process"
    assert signals(tick(e, clock, 90 * MiB)) == []


PER_JOB = """\
rules:
  - name: job-too-big
    when: job.rss > 30MiB && usage_ratio > 0.5
    actions:
      - signal: USR1
"""


def test_a_rule_about_jobs_fires_for_each_job_on_its_own_variables():
    e, clock = engine()
    e.step([], clock.now(), events=[RulesLoaded(tuple(parse_rules(PER_JOB)), (), 0.0)])
    tick(e, clock, 10 * MiB)
    register(e, clock, 10, "small", rss=5 * MiB)
    register(e, clock, 20, "big", rss=40 * MiB)
    register(e, clock, 30, "huge", rss=50 * MiB)
    fx = tick(e, clock, 60 * MiB)
    assert [(tr.rule, tr.domain, tr.job) for tr in fx.transitions] == [
        ("job-too-big", "cgroup:/a", "big-20"), ("job-too-big", "cgroup:/a", "huge-30")], \
        "one pair per job: the small job's variables do not make it fire"
    assert sorted(s[0] for s in signals(fx)) == ["big-20", "huge-30"]
    firing = e.snapshot(clock.now()).to_json()["rules"]["firing"]
    assert sorted(f["job"] for f in firing) == ["big-20", "huge-30"]
    register(e, clock, 20, "big", rss=5 * MiB)      # big freed its memory: its pair clears alone
    fx = tick(e, clock, 60 * MiB)
    assert [(tr.kind, tr.job) for tr in fx.transitions] == [("clear", "big-20")]
    assert signals(tick(e, clock, 60 * MiB)) == [], "huge stays told once while its pair fires"


def test_a_warning_acted_on_that_clears_without_a_kill_is_a_near_miss():
    e, clock = engine()
    warned_and_told(e, clock)
    tick(e, clock, 70 * MiB)
    fx = tick(e, clock, 20 * MiB)        # it freed its memory: the rule clears
    (w,) = [x for x in fx.incidents if x.document["kind"] == "near_miss"]
    doc = w.document
    assert (doc["domain"], doc["rule"], doc["jobs"], doc["peak_usage_ratio"]) == \
        ("cgroup:/a", "full", ["train-10"], 0.7)
    assert [(a["kind"], a["result"]) for a in doc["actions"]] == [("signal", "sent")]
    assert doc["headline"].startswith("Near miss in cgroup:/a: train-10 told")
    assert e.snapshot(clock.now()).counters.near_misses == 1
    from memguard.cli.incident import render_incident
    assert "cleared at" in render_incident(doc)
    assert "signal SIGUSR1 to job train-10 (full, warning): sent" in render_incident(doc)


DOMAIN_HOOK = """\
rules:
  - name: host-full
    levels:
      - severity: warning
        when: usage_ratio > 0.5
        actions:
          - {hook: /usr/local/sbin/drop-caches, target: domain}
"""


def test_a_trusted_rule_runs_a_hook_for_a_domain_without_jobs_once_per_firing():
    e, clock = engine()
    e.step([], clock.now(), events=[RulesLoaded(tuple(parse_rules(DOMAIN_HOOK, trusted=True)), (), 0.0)])
    tick(e, clock, 10 * MiB)
    (action,) = tick(e, clock, 60 * MiB).actions
    assert (action.kind, action.domain, action.job, action.uid, action.command, action.targets) == \
        ("hook", "cgroup:/a", None, 0, "/usr/local/sbin/drop-caches", ())
    assert tick(e, clock, 60 * MiB).actions == [], "once while it fires"
    e.step([], clock.now(), events=[ActionDone(action.id, "ok", ({"uid": 0, "exit_status": 0},), clock.now().mono)])
    fx = tick(e, clock, 10 * MiB)
    (w,) = [x for x in fx.incidents if x.document["kind"] == "near_miss"]
    assert w.document["jobs"] == [] and "its hook ran" in w.document["headline"]
    from memguard.cli.incident import render_incident
    assert "hook for the domain (host-full, warning): ok" in render_incident(w.document)


def test_a_domain_hook_needs_a_trusted_file_and_a_rule_about_the_domain():
    import pytest as _pytest
    from memguard.rules.load import RuleError
    with _pytest.raises(RuleError, match=r"<rules>:7: .*target: a hook for the domain itself runs as root"):
        parse_rules(DOMAIN_HOOK)
    with _pytest.raises(RuleError, match=r"target: expected one of job, largest_job, all_jobs, got 'domain'"):
        parse_rules(DOMAIN_HOOK.replace("hook: /usr/local/sbin/drop-caches", "signal: USR1"), trusted=True)
    with _pytest.raises(RuleError, match="a rule about jobs fires per job"):
        parse_rules(DOMAIN_HOOK.replace("usage_ratio > 0.5", "job.rss > 1GiB"), trusted=True)


def test_no_near_miss_when_the_kill_came_anyway_or_nobody_was_told():
    from memguard.model import OomKill
    e, clock = engine()
    tick(e, clock, 10 * MiB)
    register(e, clock, 10, "train,warning=USR1")
    (action,) = tick(e, clock, 60 * MiB).actions
    e.step([], clock.now(), events=[ActionDone(action.id, "sent", (), clock.now().mono)])
    e.step([], clock.now(), events=[OomKill("kmsg", 10, clock.now().mono, kernel_time=clock.now().mono,
                                            constraint="CONSTRAINT_MEMCG", oom_memcg="/a")])
    assert not [x for x in tick(e, clock, 20 * MiB).incidents if x.document["kind"] == "near_miss"]
    e2, clock2 = engine()
    tick(e2, clock2, 10 * MiB)
    tick(e2, clock2, 60 * MiB)           # no job: nobody told
    assert not [x for x in tick(e2, clock2, 20 * MiB).incidents if x.document["kind"] == "near_miss"]


def test_jobs_show_their_domains_prediction_and_their_last_action():
    e, clock = engine()
    tick(e, clock, 10 * MiB)
    register(e, clock, 10, "train,warning=USR1")
    (action,) = tick(e, clock, 60 * MiB).actions
    e.step([], clock.now(), events=[ActionDone(action.id, "sent", (), clock.now().mono)])
    clock.advance(3)
    (job,) = e.snapshot(clock.now()).jobs
    assert job["last_action"] == {"kind": "signal", "rule": "full", "severity": "warning", "signal": 10,
                                  "result": "sent", "seconds_ago": 3.0}
    assert set(job["prediction"]) == {"tto_seconds", "confidence", "rate_bytes_per_second"}
    from memguard.cli.render import render_jobs
    assert "signal sent 0m03s ago" in render_jobs({"jobs": [job]})


def test_a_job_asks_for_its_hook_and_its_connection_hears_each_level():
    e, clock = engine()
    tick(e, clock, 10 * MiB)
    register(e, clock, 10, "train,warning=USR1,hook=/usr/bin/ckpt --now")
    next(iter(e.jobs.jobs.values())).channel = 5      # as memguard.client's registration sets it
    fx = tick(e, clock, 60 * MiB)
    assert [(a.kind, a.signal, a.command, a.event, a.channel) for a in fx.actions] == [
        ("signal", 10, None, None, None), ("hook", None, "/usr/bin/ckpt --now", None, None),
        ("notify", None, None, "warning", 5)]
    assert [(a.kind, a.event) for a in tick(e, clock, 90 * MiB).actions] == [("notify", "critical")]


FREEZING = """\
rules:
  - name: build-full
    match: {job: 'build*'}
    levels:
      - severity: warning
        when: usage_ratio > 0.8
        actions:
          - freeze: newest
"""


def build(max_freeze=600.0):
    """make (pid 10) and three compilers of 50 MiB (11, 12, 13, newest last) in cgroup:/a."""
    clock = FakeClock()
    e = Engine(Config(actions=ActionsConfig(freeze_every=5.0, thaw_every=5.0, max_freeze=max_freeze)),
               clock.now(), "t")
    e.step([], clock.now(), events=[RulesLoaded(tuple(parse_rules(FREEZING)), (), 0.0)])
    tick(e, clock, 10 * MiB)
    register(e, clock, 10, "build", comm="make")
    for pid in (11, 12, 13):
        register(e, clock, pid, "build", ppid=10, start=100.0 + pid, rss=50 * MiB, comm="cc1plus")
    return e, clock


def done(e, clock, fx, result="sent"):
    for a in fx.actions:
        e.step([], clock.now(), events=[ActionDone(a.id, result, ({"pid": a.targets[0][0], "result": result},),
                                                    clock.now().mono)])
    return [(a.kind, a.targets[0][0]) for a in fx.actions]


def scanned(e, clock, rss):
    """A full /proc scan that saw the job's processes at *rss* (MiB)."""
    clock.advance(1)
    e.step([SourceRun("processes", reading=Reading(pids={10, *rss}, pids_at=clock.now().mono,
                                                   rss={pid: r * MiB for pid, r in rss.items()}))], clock.now())


def test_a_freeze_level_stops_the_newest_compilers_one_at_a_time_never_the_last():
    e, clock = build()
    assert done(e, clock, tick(e, clock, 90 * MiB)) == [("freeze", 13)]
    assert sorted(e.frozen) == [13] and e.frozen[13]["state"] == "frozen"
    (job,) = e.snapshot(clock.now()).jobs
    assert [f["pid"] for f in job["frozen"]] == [13] and "4 (1 frozen)" in render_jobs({"jobs": [job]})
    assert 'memguard_frozen_processes{domain="cgroup:/a",job="build-10"} 1.0' in \
        Metrics().render(e.snapshot(clock.now())).decode()
    assert [done(e, clock, tick(e, clock, 90 * MiB)) for _ in range(4)] == [[]] * 4, "one every freeze_every"
    assert done(e, clock, tick(e, clock, 90 * MiB)) == [("freeze", 12)]
    assert [done(e, clock, tick(e, clock, 90 * MiB)) for _ in range(10)] == [[]] * 10, \
        "11 is the last compiler running (10 is make): it goes on"
    # room again (11 ended): thawed one at a time, first frozen first
    e.step([], clock.now(), events=[ProbeRun("procevents", "active", None, ProbeReading(exits=[11]))])
    scanned(e, clock, {12: 50, 13: 50})
    assert done(e, clock, tick(e, clock, 20 * MiB)) == [("thaw", 13)]
    assert [done(e, clock, tick(e, clock, 20 * MiB)) for _ in range(4)] == [[]] * 4
    assert done(e, clock, tick(e, clock, 20 * MiB)) == [("thaw", 12)]
    assert e.frozen == {}


def test_a_process_that_could_not_be_frozen_or_exited_is_not_thawed():
    e, clock = build()
    assert done(e, clock, tick(e, clock, 90 * MiB), result="gone") == [("freeze", 13)]
    assert e.frozen == {}
    for _ in range(4):
        tick(e, clock, 90 * MiB)
    assert done(e, clock, tick(e, clock, 90 * MiB)) == [("freeze", 13)], "tried again: it was not frozen"
    e.step([], clock.now(), events=[ProbeRun("procevents", "active", None, ProbeReading(exits=[13]))])
    assert e.frozen == {} and done(e, clock, tick(e, clock, 20 * MiB)) == []


def test_no_process_stays_frozen_past_max_freeze_whatever_the_rules_say():
    e, clock = build(max_freeze=3.0)
    assert done(e, clock, tick(e, clock, 90 * MiB)) == [("freeze", 13)]
    assert [done(e, clock, tick(e, clock, 90 * MiB)) for _ in range(3)] == [[], [], [("thaw", 13)]]
    (thaw,) = [a for a in e.actions_done["cgroup:/a"] if a["kind"] == "thaw"]
    assert (thaw["why"], thaw["result"]) == ("max_freeze", "sent")
    later = [done(e, clock, tick(e, clock, 90 * MiB)) for _ in range(2)]
    assert later == [[], [("freeze", 12)]], "13 is not frozen again; at freeze_every, the next newest is"


def test_a_freezing_episode_outlives_the_rules_cooldown_and_thaws_only_with_room():
    """The rule cleared and waits out its cooldown; a thawed compiler grows
    again: the episode goes on freezing while the level's condition holds,
    and thaws only when it does not."""
    clock = FakeClock()
    e = Engine(Config(actions=ActionsConfig(freeze_every=5.0, thaw_every=5.0)), clock.now(), "t")
    e.step([], clock.now(), events=[RulesLoaded(tuple(parse_rules(
        FREEZING.replace("          - freeze: newest\n", "          - freeze: newest\n    cooldown: 10m\n"))), (), 0.0)])
    tick(e, clock, 10 * MiB)
    register(e, clock, 10, "build", comm="make")
    for pid in (11, 12, 13, 14):
        register(e, clock, pid, "build", ppid=10, start=100.0 + pid, rss=50 * MiB, comm="cc1plus")
    scanned(e, clock, {11: 5, 12: 50, 13: 50})    # 14 ended at 50 MiB: a compiler's peak here
    assert done(e, clock, tick(e, clock, 90 * MiB)) == [("freeze", 13)]
    for _ in range(4):
        tick(e, clock, 90 * MiB)
    assert done(e, clock, tick(e, clock, 90 * MiB)) == [("freeze", 12)]
    assert done(e, clock, tick(e, clock, 20 * MiB)) == [("thaw", 13)], "20 + 45 more for 11: room, 13 goes on"
    assert e.rules.firing() == [], "the rule cleared; its cooldown keeps it from firing again"
    assert [done(e, clock, tick(e, clock, 85 * MiB)) for _ in range(4)] == [[]] * 4, \
        "tight again: 12 stays frozen"
    assert done(e, clock, tick(e, clock, 85 * MiB)) == [("freeze", 13)], \
        "and the episode freezes again, cooldown or not"
    assert done(e, clock, tick(e, clock, 20 * MiB)) == [("thaw", 12)]
    assert [done(e, clock, tick(e, clock, 20 * MiB)) for _ in range(5)] == [[]] * 4 + [[("thaw", 13)]]
    assert e.frozen == {}


def test_before_any_peak_is_known_a_frozen_compiler_waits_for_the_others():
    """No scan has seen how large a compiler of this build grows: the rule
    clearing is no reason to thaw while another compiler holds memory (a
    real make -j2 thawed so ended in a last-resort kill), even at 45 % of
    the limit; once the others have ended, it goes on."""
    e, clock = build()
    assert done(e, clock, tick(e, clock, 90 * MiB)) == [("freeze", 13)]
    assert [done(e, clock, tick(e, clock, 60 * MiB)) for _ in range(5)] == [[]] * 5, "11 and 12 run, 50 MiB each"
    assert [done(e, clock, tick(e, clock, 45 * MiB)) for _ in range(3)] == [[]] * 3
    clock.advance(1)
    fx = e.step([SourceRun("processes", reading=Reading(pids={10, 13}, pids_at=clock.now().mono,
                                                        rss={13: 12 * MiB}))], clock.now())
    assert done(e, clock, fx) + done(e, clock, tick(e, clock, 15 * MiB)) == [("thaw", 13)]


def test_a_frozen_compiler_is_thawed_only_when_it_would_fit_at_the_jobs_peak():
    """make and three compilers; one reached 80 MiB (the job's peak) and
    ended.  Of the two frozen at 30 MiB, the first is thawed only when it and
    the running one, grown to 80 MiB, fit under 90 % of the limit."""
    e, clock = build()
    assert done(e, clock, tick(e, clock, 90 * MiB)) == [("freeze", 13)]
    for _ in range(4):
        tick(e, clock, 90 * MiB)
    assert done(e, clock, tick(e, clock, 90 * MiB)) == [("freeze", 12)]

    def scan(rss, used):
        clock.advance(1)
        owners = {"/": "host", "/a": "cgroup:/a"}
        return e.step([SourceRun("cgroups", reading=Reading(samples=[
            Sample("cgroup:/a", "cgroup", used * MiB, used * MiB, 100 * MiB, identity=1)], domain_of=owners.get)),
            SourceRun("processes", reading=Reading(pids={10, *rss}, pids_at=clock.now().mono,
                                                   rss={pid: r * MiB for pid, r in rss.items()}))], clock.now())
    # 11 peaks at 80 MiB and goes on; the two frozen hold 30 MiB each
    assert done(e, clock, scan({11: 80, 12: 30, 13: 30}, 75)) == []
    # the rule clears; 11 is still running at 50 MiB: 40 + 30 + 50 + 50 = 170 % of the limit: no room
    assert [done(e, clock, scan({11: 50, 12: 30, 13: 30}, 40)) for _ in range(8)] == [[]] * 8
    # 11 ended: 13 would take 30 + 50 more: 45 + 50 = 95 % > 90 %: not yet
    e.step([], clock.now(), events=[ProbeRun("procevents", "active", None, ProbeReading(exits=[11]))])
    assert done(e, clock, scan({12: 30, 13: 30}, 45)) == []
    assert done(e, clock, scan({12: 30, 13: 30}, 38)) == [("thaw", 13)], "38 + 50 = 88 %: room"


def test_a_compiler_just_started_counts_at_the_peak_its_program_reached():
    """make -j2: 11 and 12 climb, 12 is frozen; the freezer read 11 at its
    peak of 70 MiB (fresher than any scan), 11 ends and make starts 14. While
    14 holds 2 MiB it still counts as a compiler that grows to 70: 12 (30
    MiB) waits until 14 has ended too, though the working set is at 35 %."""
    e, clock = build()
    (first,) = tick(e, clock, 90 * MiB).actions
    assert first.kind == "freeze"
    e.step([], clock.now(), events=[ActionDone(first.id, "sent", (
        {"pid": 12, "start": 112.0, "result": "sent", "seen": [[13, 20 * MiB, 20 * MiB], [12, 30 * MiB, 30 * MiB],
                                                               [11, 60 * MiB, 70 * MiB]]},), clock.now().mono)])
    assert sorted(e.frozen) == [12]
    e.step([], clock.now(), events=[ProbeRun("procevents", "active", None, ProbeReading(exits=[11, 13]))])
    register(e, clock, 14, "build", ppid=10, start=120.0, rss=2 * MiB, comm="cc1plus")
    assert [done(e, clock, tick(e, clock, 35 * MiB)) for _ in range(8)] == [[]] * 8, \
        "35 + 40 for 12 + 68 for 14: no room"
    e.step([], clock.now(), events=[ProbeRun("procevents", "active", None, ProbeReading(exits=[14]))])
    assert done(e, clock, tick(e, clock, 35 * MiB)) == [("thaw", 12)], "35 + 40 = 75 %: room"


def test_a_compiler_started_beside_one_that_cannot_both_reach_the_peak_is_frozen_at_once():
    """job.peak_ratio: compiler 11 grew to 80 MiB and ended; 12 runs at 30
    MiB (30 + 50 more: 80 %, it fits alone).  make starts 13, holding 20
    MiB: the two grown to 80 MiB would need 160 % of the limit, so 13 is
    frozen now, while it holds little, not once the usage climbs."""
    clock = FakeClock()
    e = Engine(Config(actions=ActionsConfig(freeze_every=1.0, thaw_every=1.0)), clock.now(), "t")
    e.step([], clock.now(), events=[RulesLoaded(tuple(parse_rules(
        FREEZING.replace("usage_ratio > 0.8", "job.peak_ratio > 0.9"))), (), 0.0)])
    tick(e, clock, 10 * MiB)
    register(e, clock, 10, "build", comm="make")
    for pid in (11, 12):
        register(e, clock, pid, "build", ppid=10, start=100.0 + pid, rss=20 * MiB, comm="cc1plus")
    scanned(e, clock, {11: 80, 12: 30})
    e.step([], clock.now(), events=[ProbeRun("procevents", "active", None, ProbeReading(exits=[11]))])
    assert [done(e, clock, tick(e, clock, 30 * MiB)) for _ in range(3)] == [[]] * 3, "12 alone fits at 80 MiB"
    register(e, clock, 13, "build", ppid=10, start=120.0, rss=20 * MiB, comm="cc1plus")
    assert done(e, clock, tick(e, clock, 50 * MiB)) == [("freeze", 13)]
    assert [done(e, clock, tick(e, clock, 60 * MiB)) for _ in range(5)] == [[]] * 5, \
        "12 runs on, the last one; 13 waits: the two would not fit at 80 MiB"
    e.step([], clock.now(), events=[ProbeRun("procevents", "active", None, ProbeReading(exits=[12]))])
    assert done(e, clock, tick(e, clock, 20 * MiB)) == [("thaw", 13)], "12 ended: 20 + 60 for 13 fits"


def test_a_freeze_that_found_no_process_holding_enough_is_tried_again_at_the_next_tick():
    e, clock = build()
    (first,) = tick(e, clock, 90 * MiB).actions
    e.step([], clock.now(), events=[ActionDone(first.id, "no_victim", ({"why": "1 process(es) ..."},),
                                                clock.now().mono)])
    assert [a.kind for a in tick(e, clock, 90 * MiB).actions] == ["freeze"], "not freeze_every later"

import math

import pytest

from memguard.clock import FakeClock
from memguard.config import Config, SamplingConfig, parse_config
from memguard.engine.engine import JITTER, Engine, SourceRun
from memguard.engine.recorder import FlightRecorder, Ring
from memguard.model import PSI, Pressure, ProcessInfo, Sample
from memguard.sources.base import Reading

MiB = 2**20


def sample(domain="cgroup:/a", used=100 * MiB, limit=256 * MiB, identity=1, ws=None, kind="cgroup"):
    return Sample(domain=domain, kind=kind, used=used, working_set=used if ws is None else ws,
                  limit=limit, identity=identity)


def run(*samples, name="cgroups", **kw):
    return SourceRun(name, reading=Reading(samples=list(samples), **kw))


def make(config=None):
    clock = FakeClock()
    return Engine(config or Config(), clock.now(), "test"), clock


def test_domains_appear_with_their_samples():
    engine, clock = make()
    fx = engine.step([run(sample())], clock.now())
    (d,) = fx.snapshot.domains
    assert d.name == "cgroup:/a" and d.sample.used == 100 * MiB
    assert ("domain found", {"domain": "cgroup:/a", "limit": 256 * MiB}) in fx.log


def test_a_new_identity_is_a_new_domain_with_a_fresh_recorder():
    engine, clock = make()
    for _ in range(5):
        engine.step([run(sample(identity=1))], clock.now())
        clock.advance(1)
    assert engine.domains["cgroup:/a"].recorder.fine.count == 5
    fx = engine.step([run(sample(identity=2))], clock.now())
    assert engine.domains["cgroup:/a"].recorder.fine.count == 1
    assert engine.counters.domains_replaced == 1
    assert any(msg == "domain replaced" for msg, _ in fx.log)


def test_a_domain_its_source_no_longer_tracks_is_gone():
    engine, clock = make()
    engine.step([run(sample("cgroup:/a"), sample("cgroup:/b", identity=2))], clock.now())
    fx = engine.step([run(sample("cgroup:/a"))], clock.now())
    assert [d.name for d in fx.snapshot.domains] == ["cgroup:/a"]


def test_a_domain_tracked_but_unreadable_this_tick_stays():
    engine, clock = make()
    engine.step([run(sample("cgroup:/a"), sample("cgroup:/b", identity=2))], clock.now())
    fx = engine.step([run(sample("cgroup:/a"), tracked={"cgroup:/a", "cgroup:/b"})], clock.now())
    assert [d.name for d in fx.snapshot.domains] == ["cgroup:/a", "cgroup:/b"]


def test_limit_change_restarts_the_prediction_window():
    engine, clock = make()
    for _ in range(10):
        engine.step([run(sample(limit=256 * MiB))], clock.now())
        clock.advance(1)
    rec = engine.domains["cgroup:/a"].recorder
    assert len(rec.window(60, clock.now().mono)) == 10
    engine.step([run(sample(limit=512 * MiB))], clock.now())
    assert len(rec.window(60, clock.now().mono)) == 1
    (d,) = engine.snapshot(clock.now()).domains
    assert d.window == 0.0 and d.age == 10.0


def test_suspend_restarts_every_window():
    engine, clock = make()
    for _ in range(5):
        engine.step([run(sample())], clock.now())
        clock.advance(1)
    clock.suspend(3600)
    fx = engine.step([run(sample())], clock.now())
    assert engine.counters.suspends == 1
    assert len(engine.domains["cgroup:/a"].recorder.window(600, clock.now().mono)) == 1
    assert any("suspend" in msg for msg, _ in fx.log)


def test_wall_clock_step_is_not_a_suspend():
    engine, clock = make()
    engine.step([run(sample())], clock.now())
    clock.jump_wall(-7200)
    clock.advance(1)
    engine.step([run(sample())], clock.now())
    assert engine.counters.suspends == 0


def test_interval_goes_fast_near_a_limit_and_back():
    config = Config(sampling=SamplingConfig(interval=2.0, fast_interval=0.1, fast_above=0.8))
    engine, clock = make(config)
    near = pytest.approx
    assert engine.step([run(sample(used=100 * MiB))], clock.now()).interval == near(2.0, rel=JITTER)
    assert engine.step([run(sample(used=210 * MiB))], clock.now()).interval == near(0.1, rel=JITTER)
    # page cache at the limit is not close to an OOM: the working set decides
    assert engine.step([run(sample(used=250 * MiB, ws=20 * MiB))], clock.now()).interval == near(2.0, rel=JITTER)


def watch(engine, clock, *samples, seconds=31):
    """A tick a second for *seconds*; the last interval."""
    for _ in range(seconds):
        fx = engine.step([run(*samples)], clock.now())
        clock.mono += 1.0
    return fx.interval


def test_a_quiet_cgroup_rests_once_watched_and_armed_and_wakes_when_it_moves():
    engine, clock = make()
    near = pytest.approx
    quiet = sample(used=20 * MiB)
    # watched at the interval for its first 30 s, then at rest but not
    # armed: no longer than growing at 1 GiB/s would take to bring it close
    assert watch(engine, clock, quiet, seconds=10) == near(1.0, rel=JITTER)
    assert watch(engine, clock, quiet, seconds=25) == near(1.0, rel=JITTER)
    assert engine.at_rest
    engine.armed = frozenset({"cgroup:/a"})   # the daemon registered its usage threshold
    assert watch(engine, clock, quiet, seconds=1) == near(300.0, rel=JITTER)
    # it moved a step (5 % of 256 MiB): watched at the interval again for 30 s
    assert watch(engine, clock, sample(used=34 * MiB), seconds=1) == near(1.0, rel=JITTER)
    assert watch(engine, clock, sample(used=34 * MiB), seconds=29) == near(1.0, rel=JITTER)
    assert watch(engine, clock, sample(used=34 * MiB), seconds=2) == near(300.0, rel=JITTER)


def test_a_host_rests_the_whole_interval_and_is_looked_at_between_ticks():
    engine, clock = make()
    host = sample("host", kind="host", used=12 * 2**30, ws=2 * 2**30, limit=16 * 2**30, identity=None)
    # the daemon reads /proc/meminfo alone between ticks (Daemon._look):
    # the host does not shorten the rest; page cache counts for nothing
    assert watch(engine, clock, host) == pytest.approx(300.0, rel=JITTER)
    assert engine.looks == {"host": (2 * 2**30, 16 * 2**30)}
    assert engine.snapshot(clock.now()).to_json()["rest"] == {"at_rest": True, "awake_because": None,
                                                              "armed": [], "looked_at": ["host"]}
    # once the daemon armed the root cgroup's usage threshold, it is not looked at
    engine.armed = frozenset({"host"})
    assert watch(engine, clock, host, seconds=1) == pytest.approx(300.0, rel=JITTER)
    assert engine.looks == {}


def test_a_domain_nothing_wakes_the_daemon_for_rests_as_long_as_growth_would_take_to_bring_it_close():
    engine, clock = make()
    # a v2 cgroup (no usage thresholds): 0.85 x 16 GiB - 2 GiB at 1 GiB/s
    v2 = sample(used=2 * 2**30, limit=16 * 2**30)
    assert watch(engine, clock, v2) == pytest.approx(11.6, rel=JITTER)
    assert engine.looks == {}


@pytest.mark.parametrize("case", ["over rest_below", "usage over rest_below", "a sawtooth", "growing"])
def test_what_keeps_a_domain_from_resting(case):
    engine, clock = make()
    engine.armed = frozenset({"cgroup:/a"})
    if case == "over rest_below":
        last = watch(engine, clock, sample(used=130 * MiB))
    elif case == "usage over rest_below":   # a v1 threshold is on usage: page cache over it hides growth
        last = watch(engine, clock, sample(used=200 * MiB, ws=20 * MiB))
    elif case == "a sawtooth":
        for i in range(31):
            last = engine.step([run(sample(used=(20 + 30 * (i % 2)) * MiB))], clock.now()).interval
            clock.mono += 1.0
    else:
        for i in range(31):
            last = engine.step([run(sample(used=(20 + i) * MiB))], clock.now()).interval
            clock.mono += 1.0
    assert last == pytest.approx(1.0, rel=JITTER) and not engine.at_rest
    why = engine.snapshot(clock.now()).to_json()["rest"]
    assert not why["at_rest"] and why["awake_because"] == {
        "over rest_below": "cgroup:/a is over rest_below of its limit",
        "usage over rest_below": "cgroup:/a is over rest_below of its limit",
        "a sawtooth": "cgroup:/a moved by rest_step within 30 s",
        "growing": "cgroup:/a moved by rest_step within 30 s"}[case]


def test_intervals_are_spread_over_every_phase_of_a_periodic_workload():
    # Sampling a 2 s training step every 1 s would see it at one phase only.
    engine, clock = make(Config(sampling=SamplingConfig(interval=1.0)))
    t, intervals, phases = 0.0, [], []
    for _ in range(40):
        interval = engine.step([run(sample())], clock.now()).interval
        intervals.append(interval)
        t += interval
        phases.append(t % 2.0)
    assert all(1 - JITTER <= i <= 1 + JITTER for i in intervals)
    quarters = [sum(1 for p in phases if lo <= p < lo + 0.5) for lo in (0.0, 0.5, 1.0, 1.5)]
    assert min(quarters) >= 5, quarters


def test_pressure_from_another_source_is_merged_into_its_domain():
    engine, clock = make()
    psi = PSI(Pressure(5.0, 1.0, 0.5, 10), None)
    host = sample("host", kind="host", limit=8 * 2**30, identity=None)
    fx = engine.step([run(host, name="meminfo"), SourceRun("psi", reading=Reading(pressure={"host": psi}))],
                     clock.now())
    (d,) = fx.snapshot.domains
    assert d.sample.psi == psi
    assert engine.domains["host"].recorder.fine.last()[4] == 5.0


def test_source_states_and_health():
    engine, clock = make()
    fx = engine.step([run(sample()), SourceRun("psi", unavailable="no PSI"),
                      SourceRun("meminfo", error="OSError: EIO")], clock.now())
    states = {s.name: s.state for s in fx.snapshot.sources}
    assert states == {"cgroups": "active", "psi": "unavailable", "meminfo": "failed"}
    assert fx.snapshot.degraded == ["meminfo: OSError: EIO"]
    doc = fx.snapshot.to_json()
    assert doc["healthy"] is False and doc["schema_version"] == 1
    # logged once, not every tick
    fx = engine.step([SourceRun("meminfo", error="OSError: EIO")], clock.now())
    assert not any("meminfo" == f.get("source") for _, f in fx.log)
    fx = engine.step([run(sample(), name="meminfo")], clock.now())
    assert fx.snapshot.degraded == []


def test_overrun_counted():
    engine, clock = make(Config(sampling=SamplingConfig(rest_interval=0.0)))   # 1 s ticks, no rest
    engine.step([], clock.now(), tick_duration=0.5)
    engine.step([], clock.now(), tick_duration=1.5)
    assert engine.counters.tick_overruns == 1


def test_processes_are_attributed_to_the_binding_domain():
    engine, clock = make()
    procs = [ProcessInfo(1, "a", 10, "/jobs/child", None), ProcessInfo(2, "b", 5, "/", None),
             ProcessInfo(3, "c", 5, None, None)]
    owners = {"/jobs/child": "cgroup:/jobs"}
    fx = engine.step([run(sample("host", kind="host", identity=None), name="meminfo"),
                      run(domain_of=lambda p: owners.get(p, "host")),
                      SourceRun("processes", reading=Reading(processes=procs))], clock.now())
    assert [p.domain for p in fx.snapshot.processes] == ["cgroup:/jobs", "host", "host"]


def test_json_document_fields():
    engine, clock = make()
    doc = engine.step([run(sample())], clock.now()).snapshot.to_json()
    (d,) = doc["domains"]
    assert d["usage_ratio"] == round(100 / 256, 4)
    assert d["psi"] is None and d["swap_used_bytes"] is None  # absent, not zero
    assert doc["time"].endswith("Z") and "T" in doc["time"]


def test_ring_wraps_and_keeps_the_newest():
    ring = Ring(3)
    for i in range(5):
        ring.append((float(i), i, i, i, i))
    assert [p.t for p in ring.rows()] == [2.0, 3.0, 4.0]
    assert [p.t for p in ring.rows(since=3.5)] == [4.0]
    # the oldest row at or after a time, across the wrap
    for n in range(1, 9):
        ring = Ring(5)
        for i in range(n):
            ring.append((float(i), i, i, i, i))
        rows = ring.rows()
        for since in [-1.0, 0.5, 2.0, 4.5, 7.0, 9.0]:
            want = next((p for p in rows if p.t >= since), None)
            assert ring.first_since(since) == want, (n, since)
    assert Ring(4).first_since(0.0) is None


def test_coarse_ring_keeps_the_maximum_per_step():
    rec = FlightRecorder(fine_slots=4, coarse_slots=10, coarse_step=10.0)
    for t, used in [(0, 5), (3, 9), (7, 4), (12, 1)]:
        rec.record(float(t), sample(used=used, ws=used, limit=None))
    rows = rec.coarse.rows()
    assert [(p.t, p.used) for p in rows] == [(0.0, 9.0), (10.0, 1.0)]
    assert math.isnan(rows[0].limit)


def test_recorder_size_is_fixed_by_config():
    config = parse_config("recorder:\n  fine_window: 10m\n  fine_step: 500ms\n  coarse_window: 1h\n  coarse_step: 10s\n")
    engine, clock = make(config)
    engine.step([run(sample())], clock.now())
    rec = engine.domains["cgroup:/a"].recorder
    assert rec.nbytes == 8 * 5 * (1200 + 360)
    for _ in range(5000):
        clock.advance(0.25)
        engine.step([run(sample())], clock.now())
    assert rec.nbytes == 8 * 5 * (1200 + 360)


# -- the one door (issue 18): every input through step, every decision out of it


def test_a_probe_run_is_folded_in_and_asks_for_the_lookups_it_needs():
    from memguard.engine.messages import LookupWanted, ProbeRun
    from memguard.model import OomKill
    from memguard.probes.base import ProbeReading
    engine, clock = make()
    engine.step([run(sample("cgroup:/a"), domain_of={"/": "host", "/a": "cgroup:/a"}.get)], clock.now())
    known = ProcessInfo(10, "cc1plus", 50 * MiB, "/a", None)
    fresh = ProcessInfo(11, "cc1plus", 50 * MiB, "/new", None)   # a cgroup the walk did not see
    reading = ProbeReading(processes=[known, fresh], lost=2, facts={"load_seconds": 0.5},
                           kills=[OomKill("bpf", 10, 1.0), OomKill("bpf", 11, 1.0), OomKill("bpf", 12, 1.0)])
    fx = engine.step([], clock.now(), events=[ProbeRun("bpf", "active", None, reading)])
    assert fx.lookups == [LookupWanted(11, describe=False, cgroup="/new"),
                          LookupWanted(12, describe=True, cgroup=None)]
    assert [m for m, _ in fx.log].count("oom kill seen") == 3 and ("probe active", {"probe": "bpf", "reason": None}) in fx.log
    assert engine.probes["bpf"].skipped == {"events": 5, "lost": 2, "malformed": 0}
    assert engine.facts["probe:bpf"] == {"load_seconds": 0.5} and engine.process_table[11] == \
        ProcessInfo(11, "cc1plus", 50 * MiB, "/new", "host")
    fx = engine.step([], clock.now(), events=[ProbeRun("bpf", "failed", "the child died")])
    assert fx.log == [("probe failed", {"probe": "bpf", "reason": "the child died", "level": "warning"})]
    assert engine.probes["bpf"].errors == 1


def test_rules_come_in_through_step_and_a_rejected_reload_keeps_them():
    from memguard.engine.messages import RulesLoaded, RulesRejected
    from memguard.rules.load import parse_rules
    engine, clock = make()
    rules = parse_rules("rules:\n  - name: nearly-full\n    when: usage_ratio > 0.5\n")
    engine.step([], clock.now(), events=[RulesLoaded(tuple(rules), ("r.yaml",), 123.0)])
    fx = engine.step([run(sample(used=200 * MiB))], clock.now())
    assert [(t.rule, t.kind, t.severity) for t in fx.transitions] == [("nearly-full", "fire", "warning")]
    engine.step([], clock.now(), events=[RulesRejected("r.yaml:3: bad")])
    snap = engine.step([run(sample(used=200 * MiB))], clock.now()).snapshot
    assert snap.rules_info == {"files": ["r.yaml"], "count": 1, "error": "r.yaml:3: bad", "loaded": 123.0}
    assert [f[0] for f in snap.firing] == ["nearly-full"]


def test_dropped_inputs_are_counted_and_anything_else_is_refused():
    from memguard.engine.messages import Dropped
    engine, clock = make()
    engine.step([], clock.now(), events=[Dropped({"tick_error": 1}), Dropped({"tick_error": 1, "slow_source:wsl": 2})])
    assert engine.counters.dropped == {"tick_error": 2, "slow_source:wsl": 2}
    with pytest.raises(TypeError, match="not an engine input"):
        engine.step([], clock.now(), events=["a string"])


def test_a_process_seen_before_its_cgroup_was_found_moves_to_it():
    # Found in the examples: a job started in a cgroup made a moment before
    # the walk found it stayed in host for good, and was never warned.
    from memguard.engine.messages import ProbeRun
    from memguard.probes.base import ProbeReading
    MiB = 2**20
    clock = FakeClock()
    e = Engine(Config(), clock.now(), "t")

    def tick(owners, samples):
        clock.advance(1)
        e.step([SourceRun("cgroups", reading=Reading(samples=samples, domain_of=owners.get))], clock.now())
    host = Sample("host", "host", 100 * MiB, 100 * MiB, 1000 * MiB)
    tick({"/": "host"}, [host])
    p = ProcessInfo(10, "python3", MiB, "/new", None, start_time=100.0, uid=1000, ppid=1, job_env="train")
    e.step([], clock.now(), events=[ProbeRun("procevents", "active", None, ProbeReading(processes=[p]))])
    assert e.process_table[10].domain == "host"
    tick({"/": "host", "/new": "cgroup:/new"}, [host, Sample("cgroup:/new", "cgroup", 10 * MiB, 10 * MiB, 64 * MiB,
                                                                identity=7)])
    assert e.process_table[10].domain == "cgroup:/new"
    (job,) = e._job_views(clock.now())
    assert job["domain"] == "cgroup:/new"

"""Issue 16: the domain of a kill comes from what the kernel said, or from
the victim's cgroup walked up to its limit — never from which domains
happened to be tracked.  Real kmsg captures through the probe's parser into
the engine, on a fake clock."""

import dataclasses
from pathlib import Path

import pytest

from memguard.clock import FakeClock
from memguard.config import Config
from memguard.engine.engine import Engine, SourceRun
from memguard.engine.messages import ProcessesSeen
from memguard.incidents.build import Write
from memguard.model import OomKill, ProcessInfo, Sample
from memguard.probes.kmsg import kills_of
from memguard.probes.oom_report import (OomReportAssembler, infer_constraint, parse_dmesg_text, parse_record,
                                        split_kmsg_dump)
from memguard.sources.base import Reading
from memguard.sources.cgroups import Binding

MiB = 2**20
KMSG = Path(__file__).parent.parent / "fixtures" / "kmsg"
CGROUP = "/mgkmsg-cea3ac74"      # the cgroup of v6.18-memcg-v1-single.kmsg
VICTIM = 30331


def engine_tracking(*cgroups: str) -> tuple[Engine, FakeClock]:
    """An engine whose last cgroup walk saw *cgroups* (unlimited) and the host."""
    clock = FakeClock()
    e = Engine(Config(), clock.now(), "t")
    known = {"/": "host", **{c: "host" for c in cgroups}}
    for _ in range(3):
        e.step([SourceRun("meminfo", reading=Reading(samples=[Sample("host", "host", 4 << 30, 3 << 30, 16 << 30)])),
                SourceRun("cgroups", reading=Reading(domain_of=known.get))], clock.now())
        clock.advance(1)
    return e, clock


def reports(name: str, only_seq: int | None = None) -> list:
    assembler = OomReportAssembler()
    out = []
    for raw in split_kmsg_dump((KMSG / name).read_bytes()):
        rec = parse_record(raw)
        if only_seq is None or rec.seq == only_seq:
            out += assembler.feed(rec)
    return out + assembler.expire(1 << 62)


def last_document(effects) -> dict:
    return [x for x in effects.incidents if isinstance(x, Write)][-1].document


def test_a_kill_in_a_cgroup_never_tracked_is_that_cgroups():
    # The cgroup was made after the last walk: the kernel's oom_memcg names it.
    e, clock = engine_tracking()
    (report,) = reports("v6.18-memcg-v1-single.kmsg")
    fx = e.step([], clock.now(), events=kills_of(report, clock.now().mono, None))
    doc = last_document(fx)
    assert doc["domain"] == f"cgroup:{CGROUP}" and doc["domain_tracked"] is False
    assert doc["limit_bytes"] == 65536 * 1024 and doc["limit_source"] == "kernel report"
    assert doc["headline"] == (f"python3 ({VICTIM}) was killed by the kernel's OOM killer: "
                               f"cgroup:{CGROUP} ran out of memory (limit 64.0MiB).")
    assert any(f"not tracking cgroup:{CGROUP} yet" in n for n in doc["notes"])
    assert doc["constraint_source"] == "kernel"


def test_an_early_sighting_waits_for_the_cgroups_limits_read_at_the_kill():
    # eBPF reports the pid first; the exec record put it in a cgroup the
    # walk never saw: the shell reads that cgroup's limits, and the incident
    # is rewritten with them before kmsg's report arrives.
    e, clock = engine_tracking()
    e.step([], clock.now(), events=[ProcessesSeen((
        ProcessInfo(VICTIM, "python3", 60 * MiB, CGROUP, None, cmdline="python3 hog.py"),))])
    fx = e.step([], clock.now(), events=[OomKill("bpf", VICTIM, clock.now().mono, comm="python3")])
    assert last_document(fx)["domain"] == "host", "nothing says otherwise yet"
    fx = e.step([], clock.now(), events=[Binding(CGROUP, CGROUP, 64 * MiB, 64 * MiB)])
    doc = last_document(fx)
    assert doc["domain"] == f"cgroup:{CGROUP}"
    assert (doc["limit_bytes"], doc["limit_source"]) == (64 * MiB, "cgroupfs at the kill")
    assert doc["top_consumers"][0]["pid"] == VICTIM, "the cgroup's own processes, not the host's"


def test_a_rate_limited_kill_line_is_attributed_through_the_victims_cgroup():
    # Beyond 10 kills in 5 s the kernel prints only the kill line: here the
    # real kill line of a capture, alone.
    e, clock = engine_tracking()
    (report,) = reports("v6.18-memcg-v1-single.kmsg", only_seq=3765)
    assert report.only_kill_lines and report.constraint is None
    e.step([], clock.now(), events=[ProcessesSeen((
        ProcessInfo(VICTIM, "python3", 60 * MiB, CGROUP + "/job", None),))])
    e.step([], clock.now(), events=[Binding(CGROUP + "/job", CGROUP, 64 * MiB, 60 * MiB)])
    doc = last_document(e.step([], clock.now(), events=kills_of(report, clock.now().mono, None)))
    assert doc["domain"] == f"cgroup:{CGROUP}" and doc["limit_bytes"] == 64 * MiB
    assert doc["constraint"] == "CONSTRAINT_MEMCG"
    assert doc["constraint_source"] == "the kill line's 'Memory cgroup out of memory'"
    assert doc["missing_reason"] == "rate_limited"
    assert set(doc["missing"]) == {"header", "memory_info", "task_table", "constraint"}
    assert any("at most 10 kills in 5 s" in n for n in doc["notes"])
    assert any("inferred from the kill line's" in n for n in doc["notes"])


def test_a_memcg_kill_nothing_places_is_not_blamed_on_the_host():
    e, clock = engine_tracking()
    (report,) = reports("v6.18-memcg-v1-single.kmsg", only_seq=3765)
    doc = last_document(e.step([], clock.now(), events=kills_of(report, clock.now().mono, None)))
    assert doc["domain"] is None and "an unknown domain ran out" in doc["headline"]
    assert any("neither the kernel's text nor the process table" in n for n in doc["notes"])


def test_a_known_unlimited_cgroup_is_its_ancestors_domain_without_a_lookup():
    e, clock = engine_tracking("/free")
    e.step([], clock.now(), events=[ProcessesSeen((ProcessInfo(VICTIM, "python3", 60 * MiB, "/free", None),))])
    (report,) = reports("v6.18-memcg-v1-single.kmsg", only_seq=3765)
    # the same line as a global OOM prints it
    report = dataclasses.replace(report, victims=tuple(
        dataclasses.replace(v, reason="Out of memory") for v in report.victims))
    doc = last_document(e.step([], clock.now(), events=kills_of(report, clock.now().mono, None)))
    assert doc["domain"] == "host" and doc["constraint"] == "CONSTRAINT_NONE"
    assert "cpuset or memory-policy" in doc["constraint_source"]


@pytest.mark.parametrize("name, constraint, how", [
    ("v6.18-memcg-v1-single.kmsg", "CONSTRAINT_MEMCG", "kernel"),
    ("v5.10-rc3-next-global-nomemcg.dmesg", "CONSTRAINT_NONE", "kernel"),
    ("v3.10-rhel7-memcg-v1-ltp.syslog", "CONSTRAINT_MEMCG", "'Task in ... killed as a result of limit of ...' (before 5.0)"),
    ("v4.19.4-elrepo-memcg-v1-head.syslog", None, None),   # cut inside the call trace: nothing says
])
def test_the_constraint_is_inferred_from_what_each_kernel_printed(name, constraint, how):
    if name.endswith(".kmsg"):
        found = reports(name)
    else:
        assembler = OomReportAssembler()
        found = [r for rec in parse_dmesg_text((KMSG / name).read_text()) for r in assembler.feed(rec)]
        found += assembler.expire(1 << 62)
    assert (constraint, how) == infer_constraint(found[0])

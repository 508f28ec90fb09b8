"""A real kernel report, end to end: kmsg records through the probe's parser
into the incident builder and the incident store, then read back.

test_incidents.py drives the builder with hand-made reports; this one takes
the capture tests/fixtures/kmsg/v6.18-memcg-v1-single.kmsg (one hog killed in
a 64M v1 memory cgroup on the build host, see the README there), so a parser
field the builder drops, or a builder field the store loses, shows here. The
expected values are the fixture's own lines, quoted where they are used.
"""

from pathlib import Path

from memguard.clock import FakeClock
from memguard.config import Config
from memguard.engine.engine import Engine, SourceRun
from memguard.incidents.build import SETTLE, Remove, Write
from memguard.incidents.store import IncidentStore
from memguard.model import Sample
from memguard.probes.kmsg import kills_of
from memguard.probes.oom_report import OomReportAssembler, parse_record, split_kmsg_dump
from memguard.sources.base import Reading

FIXTURE = Path(__file__).parents[1] / "fixtures" / "kmsg" / "v6.18-memcg-v1-single.kmsg"
CGROUP = "/mgkmsg-cea3ac74"
DOMAIN = f"cgroup:{CGROUP}"
KiB = 1024
MiB = 1 << 20
# The kill line's stamp: "3,3765,1189349481,-;Memory cgroup out of memory: Killed process 30331 ..."
KILL_USEC = 1189349481


def fixture_messages() -> list[str]:
    """Each record's message, as the fixture holds it (``prio,seq,usec,flags;message``)."""
    return [line.split(";", 1)[1] for line in FIXTURE.read_text().splitlines()]


def fixture_stats() -> dict[str, int]:
    """The ``key value`` lines between ``Memory cgroup stats for /...:`` and ``Tasks state``."""
    messages = fixture_messages()
    first = messages.index(f"Memory cgroup stats for {CGROUP}:") + 1
    last = messages.index("Tasks state (memory values in pages):")
    return {key: int(value) for key, value in (m.split() for m in messages[first:last])}


def parsed_reports() -> list:
    """What the kmsg probe's assembler makes of the fixture: the last version
    of each report (a report is emitted again as lines add to it)."""
    assembler = OomReportAssembler()
    reports = {}
    for raw in split_kmsg_dump(FIXTURE.read_bytes()):
        for report in assembler.feed(parse_record(raw)):
            reports[report.seq] = report
    for report in assembler.expire(KILL_USEC + 60_000_000):
        reports[report.seq] = report
    return list(reports.values())


def store_effects(store: IncidentStore, effects: list) -> None:
    """What the daemon's IncidentWriter does with the builder's effects, in order."""
    for effect in effects:
        if isinstance(effect, Write):
            store.write(effect.id, effect.document)
        elif isinstance(effect, Remove):
            store.remove(effect.id)


def test_a_captured_memcg_kill_is_stored_as_the_kernel_reported_it(tmp_path):
    clock = FakeClock()
    engine = Engine(Config(), clock.now(), "t")
    tracked = Sample(DOMAIN, "cgroup", used=60 * MiB, working_set=60 * MiB, limit=64 * MiB,
                     identity=1, oom_kills=0)
    engine.step([SourceRun("cgroups", reading=Reading(
        samples=[tracked], domain_of=lambda path: DOMAIN if path.startswith(CGROUP) else "host"))],
        clock.now())
    store = IncidentStore(str(tmp_path / "incidents"))

    (report,) = parsed_reports()
    clock.advance(1)
    now = clock.now()
    # The calibration the probe would have: the kill happened 50 ms ago.
    offset = (now.mono - 0.05) - KILL_USEC / 1e6
    kills = kills_of(report, now.mono, offset)
    assert [k.pid for k in kills] == [30331]
    store_effects(store, engine.step([], now, events=kills).incidents)
    clock.advance(SETTLE)
    store_effects(store, engine.step([], clock.now()).incidents)

    (incident_id,) = store.ids()
    doc = store.load(incident_id)
    assert (doc["kind"], doc["state"], doc["count"]) == ("oom_kill", "sealed", 1)
    assert doc["time_monotonic"] == round(now.mono - 0.05, 6)
    assert [(p["name"], p["delay_seconds"]) for p in doc["probes"]] == [("kmsg", 0.05)]

    # "Memory cgroup out of memory: Killed process 30331 (python3) total-vm:75164kB,
    #  anon-rss:65152kB, file-rss:6620kB, shmem-rss:0kB, UID:0 pgtables:184kB oom_score_adj:0"
    (victim,) = doc["victims"]
    assert {k: victim[k] for k in ("pid", "comm", "uid", "total_vm_bytes", "anon_rss_bytes",
                                   "file_rss_bytes", "shmem_rss_bytes", "pgtables_bytes",
                                   "oom_score_adj")} == {
        "pid": 30331, "comm": "python3", "uid": 0, "total_vm_bytes": 75164 * KiB,
        "anon_rss_bytes": 65152 * KiB, "file_rss_bytes": 6620 * KiB, "shmem_rss_bytes": 0,
        "pgtables_bytes": 184 * KiB, "oom_score_adj": 0}
    assert victim["cgroup"] == CGROUP
    assert doc["victim"] == "python3 (30331)"

    # "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,
    #  oom_memcg=/mgkmsg-cea3ac74,task_memcg=/mgkmsg-cea3ac74,task=python3,pid=30331,uid=0"
    assert (doc["constraint"], doc["oom_memcg"], doc["task_memcg"]) == (
        "CONSTRAINT_MEMCG", CGROUP, CGROUP)
    assert doc["domain"] == DOMAIN

    # "python3 invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0"
    # "CPU: 1 UID: 0 PID: 30331 Comm: python3 Not tainted 6.18.44-fc-v782 #1 PREEMPT(none)"
    assert doc["invoker"] == {"comm": "python3", "pid": 30331, "gfp_mask": "0xcc0(GFP_KERNEL)",
                              "order": 0, "oom_score_adj": 0}

    # "memory: usage 65536kB, limit 65536kB, failcnt 118", then one stat per record
    assert doc["memcg"] == {"usage_bytes": 65536 * KiB, "limit_bytes": 65536 * KiB,
                            "failcnt": 118, "stats": fixture_stats()}
    assert doc["memcg"]["stats"]["total_rss"] == 66879488  # a spot check of the helper

    # "[  pid  ]   uid  tgid total_vm      rss rss_anon rss_file rss_shmem pgtables_bytes swapents oom_score_adj name"
    # "[  30331]     0 30331    18791    17943    16288     1655         0   188416        0             0 python3"
    assert doc["kernel_tasks"] == [{
        "pid": 30331, "uid": 0, "tgid": 30331, "total_vm_pages": 18791, "rss_pages": 17943,
        "rss_anon_pages": 16288, "rss_file_pages": 1655, "rss_shmem_pages": 0,
        "pgtables_bytes": 188416, "swapents": 0, "oom_score_adj": 0, "name": "python3"}]

    assert doc["missing"] == []
    assert doc["raw_report"] == fixture_messages()
    assert len(doc["raw_report"]) == 79

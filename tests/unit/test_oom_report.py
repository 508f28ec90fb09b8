"""The kmsg OOM report parser (memguard.probes.oom_report) on real captures.

Fixtures and where each came from: tests/fixtures/kmsg/README.md.  Sizes in
the kernel's lines are kB; the parser reports bytes, so expected values here
are written ``NNN * KIB`` with NNN copied from the fixture line.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memguard.probes.oom_report import (MAX_TASK_ROWS, KmsgRecord, OomReport, OomReportAssembler,
                                        format_record, parse_dmesg_line, parse_dmesg_text, parse_record,
                                        split_kmsg_dump)

# Property tests: no deadline (a slow CI machine is not a failure), and under
# CI the same examples every run, so a failure reproduces.
PROPERTIES = settings(deadline=None, derandomize=bool(os.environ.get("CI")),
                      max_examples=int(os.environ.get("MEMGUARD_FUZZ_EXAMPLES", "150")),
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

KIB = 1024
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "kmsg"
FULL_REPORTS = ["v6.18-memcg-v1-single.kmsg", "v6.18-memcg-v1-two-hogs.kmsg", "v6.18-memcg-v1-nested.kmsg",
                "v6.18-memcg-v1-reaper.kmsg", "v5.0-rc4-next-memcg-v2-oom-group.dmesg",
                "v5.10-rc3-next-global-nomemcg.dmesg", "v6.16-bpf-memcg-v2.dmesg"]
ALL_FIXTURES = FULL_REPORTS + ["v5.4.0-77-ubuntu-memcg-tail-and-head.dmesg", "v4.19.4-elrepo-memcg-v1-head.syslog",
                               "v3.10-rhel7-memcg-v1-ltp.syslog", "wsl2-5.15.79.1-memcg-v2-fragment.dmesg",
                               "v6.8plus-global-fragment.dmesg"]
FAR_FUTURE = 10**18


def load(name: str) -> list[KmsgRecord]:
    data = (FIXTURES / name).read_bytes()
    if name.endswith(".kmsg"):
        return [parse_record(raw) for raw in split_kmsg_dump(data)]
    return parse_dmesg_text(data.decode())


def feed_all(records: list[KmsgRecord], assembler: OomReportAssembler | None = None,
             flush: bool = True) -> list[tuple[int, OomReport]]:
    """Every emission, with the index of the record that caused it (len(records) for the flush)."""
    asm = assembler or OomReportAssembler()
    out = [(i, report) for i, rec in enumerate(records) for report in asm.feed(rec)]
    if flush:
        out += [(len(records), report) for report in asm.expire(FAR_FUTURE)]
    return out


def final(records: list[KmsgRecord], assembler: OomReportAssembler | None = None) -> list[OomReport]:
    """The last emission of each report (the caller merges by seq), in seq order."""
    latest: dict[int, OomReport] = {}
    for _, report in feed_all(records, assembler):
        latest[report.seq] = report
    return [latest[seq] for seq in sorted(latest)]


def only(records: list[KmsgRecord]) -> OomReport:
    reports = final(records)
    assert len(reports) == 1, [r.seq for r in reports]
    return reports[0]


def without_seq(report: OomReport) -> dict:
    """The report as a dict without sequence numbers (they change when records are inserted)."""
    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != "seq"}
        if isinstance(value, (list, tuple)):
            return [strip(v) for v in value]
        return value
    return strip(dataclasses.asdict(report))


def renumber(records: list[KmsgRecord], first: int = 1000) -> list[KmsgRecord]:
    return [dataclasses.replace(rec, seq=first + i) for i, rec in enumerate(records)]


# ---------------------------------------------------------------- parse_record


def test_record_fields():
    rec = parse_record(b"6,3953,1192124482,-;memory: usage 65536kB, limit 65536kB, failcnt 175\n")
    assert (rec.priority, rec.facility, rec.seq, rec.usec) == (6, 0, 3953, 1192124482)
    assert rec.continuation is False and rec.caller is None and rec.dict_fields == {}
    assert rec.message == "memory: usage 65536kB, limit 65536kB, failcnt 175"


def test_record_priority_facility_continuation_and_caller():
    rec = parse_record(b"30,5,6,c,caller=T123;,task_memcg=/a\n")
    assert (rec.priority, rec.facility, rec.continuation, rec.caller) == (6, 3, True, "T123")


def test_record_unescapes_message_and_reads_dict_fields():
    raw = b"6,1,2,-;anon 1\\x0afile 2\\x5cx \\xc3\\xa9\n SUBSYSTEM=pci\n DEVICE=+pci:0000:00:01.0\n"
    rec = parse_record(raw)
    assert rec.message == "anon 1\nfile 2\\x \u00e9"
    assert rec.dict_fields == {"SUBSYSTEM": "pci", "DEVICE": "+pci:0000:00:01.0"}
    assert parse_record(format_record(rec)) == rec


@pytest.mark.parametrize("raw, reason", [
    (b"", "no ';'"),
    (b"6,1,2;msg\n", "fewer than 4"),
    (b"6,x,2,-;msg\n", "sequence number"),
    (b"-6,1,2,-;msg\n", "priority"),
    (b"6,1,,-;msg\n", "timestamp"),
    (b"6,1,2,-;msg\nDEVICE=x\n", "KEY=value"),
    (b"6,1,2,-;msg\n NOEQUALS\n", "KEY=value"),
])
def test_malformed_record_names_the_problem(raw, reason):
    with pytest.raises(ValueError, match=reason):
        parse_record(raw)


def test_non_bytes_is_a_value_error():
    with pytest.raises(ValueError, match="bytes"):
        parse_record("6,1,2,-;msg")  # type: ignore[arg-type]


def test_split_kmsg_dump_keeps_continuation_lines_with_their_record():
    assert split_kmsg_dump(b"6,1,2,-;a\n SUBSYSTEM=x\n6,2,3,-;b\n") == [b"6,1,2,-;a\n SUBSYSTEM=x\n", b"6,2,3,-;b\n"]
    assert len(split_kmsg_dump((FIXTURES / "v6.18-memcg-v1-single.kmsg").read_bytes())) == 79


# ---------------------------------------------------------------- dmesg text


@pytest.mark.parametrize("line, usec, message, caller, priority", [
    ("[ 7063.247407] oom_reaper: x", 7063247407, "oom_reaper: x", None, None),
    ("[   37.132833][   T54] oom_reaper: x", 37132833, "oom_reaper: x", "T54", None),
    ("<6>[    1.5] hello", 1500000, "hello", None, 6),
    ("[ 8341.856856] aks-node kernel: Tasks state", 8341856856, "Tasks state", None, None),
    ("Jun 24 18:49:43 aks kernel: [ 8341.856870] Memory cgroup", 8341856870, "Memory cgroup", None, None),
    ("[   33.932147]  dump_stack+0x57/0x6a", 33932147, " dump_stack+0x57/0x6a", None, None),
])
def test_dmesg_line_shapes(line, usec, message, caller, priority):
    rec = parse_dmesg_line(line, seq=7)
    assert rec is not None
    assert (rec.seq, rec.usec, rec.message, rec.caller, rec.priority) == (7, usec, message, caller, priority)


def test_dmesg_lines_without_a_monotonic_stamp_are_ordered_by_wall_clock():
    a = parse_dmesg_line("[Mon Dec  8 17:51:31 2025] 0 pages hwpoisoned")
    b = parse_dmesg_line("Dec 11 10:49:37 host kernel: thrash invoked oom-killer: gfp_mask=0xd0")
    c = parse_dmesg_line("Dec 11 10:49:38 host kernel: Call Trace:")
    assert a is not None and a.message == "0 pages hwpoisoned"
    assert b is not None and c is not None and b.usec + 1_000_000 == c.usec
    assert b.message == "thrash invoked oom-killer: gfp_mask=0xd0"


@pytest.mark.parametrize("line", ["", "...", "no stamp here", "[abc] x", "[Vendredi] x"])
def test_dmesg_line_of_no_known_shape_is_none(line):
    assert parse_dmesg_line(line) is None


def test_dmesg_text_joins_indented_lines_to_their_record():
    recs = load("v5.10-rc3-next-global-nomemcg.dmesg")
    meminfo = next(r for r in recs if r.message.startswith("active_anon:"))
    assert meminfo.message.splitlines() == [
        "active_anon:7174 inactive_anon:484737 isolated_anon:0",
        " active_file:0 inactive_file:84 isolated_file:0",
        " unevictable:6 dirty:0 writeback:0",
        " slab_reclaimable:2894 slab_unreclaimable:2892",
        " mapped:8 shmem:304 pagetables:4146 bounce:0",
        " free:3275 free_pcp:356 free_cma:0"]
    assert [r.seq for r in recs] == list(range(len(recs)))


# ---------------------------------------------------------------- captures from this machine


def test_v6_18_memcg_v1_single():
    r = only(load("v6.18-memcg-v1-single.kmsg"))
    assert (r.seq, r.usec) == (3687, 1189349113)
    assert (r.invoker_comm, r.invoker_pid, r.gfp_mask, r.order, r.invoker_oom_score_adj) == \
        ("python3", 30331, "0xcc0(GFP_KERNEL)", 0, 0)
    assert r.kernel_release == "6.18.44-fc-v782"
    assert (r.constraint, r.nodemask, r.cpuset, r.mems_allowed) == ("CONSTRAINT_MEMCG", "(null)", "/", "0")
    assert (r.oom_memcg, r.task_memcg, r.global_oom, r.oom_group) == ("/mgkmsg-cea3ac74", "/mgkmsg-cea3ac74", False, None)
    assert (r.memcg_usage, r.memcg_limit, r.memcg_failcnt) == (65536 * KIB, 65536 * KIB, 118)
    assert r.memcg_counters == {"memory": (65536 * KIB, 65536 * KIB, 118),
                                "memory+swap": (65536 * KIB, 9007199254740988 * KIB, 0),
                                "kmem": (224 * KIB, 9007199254740988 * KIB, 0)}
    assert r.memcg_stats_for == "/mgkmsg-cea3ac74"
    assert len(r.memcg_stats) == 42
    assert r.memcg_stats["rss"] == 66879488 and r.memcg_stats["hierarchical_memory_limit"] == 67108864
    assert r.memcg_stats["total_rss"] == 66879488 and r.memcg_stats["total_pgfault"] > 0
    assert r.mem_info == ()
    (row,) = r.tasks
    assert dataclasses.astuple(row) == (30331, 0, 30331, 18791, 17943, 16288, 1655, 0, 188416, 0, 0, "python3")
    (v,) = r.victims
    assert (v.pid, v.comm, v.uid, v.reason) == (30331, "python3", 0, "Memory cgroup out of memory")
    assert (v.total_vm, v.anon_rss, v.file_rss, v.shmem_rss) == (75164 * KIB, 65152 * KIB, 6620 * KIB, 0)
    assert (v.pgtables, v.oom_score_adj, v.seq, v.usec) == (184 * KIB, 0, 3765, 1189349481)
    assert r.reaped == () and r.no_kill_reason is None
    assert r.missing == () and r.lost_records is None and r.truncated == {}
    assert len(r.raw) == 79 and r.raw[0].startswith("python3 invoked oom-killer")


def test_v6_18_report_is_emitted_at_its_kill_line():
    records = load("v6.18-memcg-v1-single.kmsg")
    emissions = feed_all(records)
    assert len(emissions) == 1
    index, report = emissions[0]
    assert records[index].message.startswith("Memory cgroup out of memory: Killed process 30331")
    assert report.victims[0].pid == 30331


def test_v6_18_two_reports_back_to_back():
    first, second = final(load("v6.18-memcg-v1-two-hogs.kmsg"))
    assert (first.seq, second.seq) == (3766, 3846)
    assert [dataclasses.astuple(t) for t in first.tasks] == [
        (30475, 0, 30475, 10824, 9837, 8160, 1677, 0, 131072, 0, 0, "python3"),
        (30476, 0, 30476, 10567, 9791, 8128, 1663, 0, 122880, 0, 300, "python3")]
    (v1,) = first.victims
    assert (v1.pid, v1.oom_score_adj, v1.total_vm, v1.anon_rss, v1.file_rss, v1.pgtables) == \
        (30476, 300, 42268 * KIB, 32512 * KIB, 6652 * KIB, 120 * KIB)
    assert (first.memcg_failcnt, second.memcg_failcnt) == (46, 78)
    assert [t.pid for t in second.tasks] == [30475]
    (v2,) = second.victims
    assert (v2.pid, v2.oom_score_adj, v2.anon_rss, v2.file_rss, v2.pgtables) == \
        (30475, 0, 65280 * KIB, 6708 * KIB, 192 * KIB)
    assert first.missing == second.missing == ()


def test_v6_18_nested_cgroups_name_both():
    r = only(load("v6.18-memcg-v1-nested.kmsg"))
    assert (r.oom_memcg, r.task_memcg) == ("/mgkmsg-d99b8485", "/mgkmsg-d99b8485/job")
    assert r.memcg_stats_for == "/mgkmsg-d99b8485"
    assert r.memcg_stats["rss"] == 0 and r.memcg_stats["total_rss"] == 66871296
    assert (r.memcg_usage, r.memcg_limit, r.memcg_failcnt) == (65536 * KIB, 65536 * KIB, 175)
    assert r.victims[0].pid == 30489 and r.victims[0].file_rss == 6712 * KIB
    assert [t.pid for t in r.tasks] == [30489]


def test_v6_18_reaper_line_two_seconds_later_reemits_the_report():
    records = load("v6.18-memcg-v1-reaper.kmsg")
    emissions = feed_all(records)
    assert [(records[i].seq, rep.seq) for i, rep in emissions] == [(4162, 4084), (4163, 4084)]
    before, after = emissions[0][1], emissions[1][1]
    assert before.reaped == ()
    (reaped,) = after.reaped
    assert (reaped.pid, reaped.comm, reaped.anon_rss, reaped.file_rss, reaped.shmem_rss, reaped.ok) == \
        (614, "python3", 0, 20 * KIB, 0, True)
    assert reaped.usec - after.victims[0].usec == 2045746          # OOM_REAPER_DELAY, 2 s
    assert after.victims == before.victims and after.tasks[0].total_vm_pages == 37228


# ---------------------------------------------------------------- public captures


def test_v5_0_oom_group_emits_every_victim():
    records = load("v5.0-rc4-next-memcg-v2-oom-group.dmesg")
    emissions = feed_all(records)
    first = emissions[0][1]
    assert records[emissions[0][0]].message.startswith("Memory cgroup out of memory: Killed process 9188")
    assert [v.pid for v in first.victims] == [9188]
    r = emissions[-1][1]
    assert {rep.seq for _, rep in emissions} == {0}
    assert [v.pid for v in r.victims] == [9188, 1, 9182, 9183, 9184, 9185, 9186, 9187, 9189, 9190, 9191, 9192]
    assert [p.pid for p in r.reaped] == [9188, 1, 9183, 9186, 9189, 9185, 9190, 9192]
    assert r.oom_group == "/test1"
    assert (r.invoker_comm, r.invoker_pid, r.kernel_release) == ("a.out", 9185, "5.0.0-rc4-next-20190131")
    assert (r.constraint, r.oom_memcg, r.task_memcg) == ("CONSTRAINT_NONE", "/test1", "/test1")
    assert (r.memcg_usage, r.memcg_limit, r.memcg_failcnt) == (51200 * KIB, 51200 * KIB, 125)
    assert r.memcg_stats_for == "/test1"
    assert r.memcg_stats["rss"] == 49484 * KIB and r.memcg_stats["active_anon"] == 49700 * KIB
    chosen, init = r.victims[0], r.victims[1]
    assert (chosen.uid, chosen.anon_rss, chosen.file_rss, chosen.pgtables, chosen.oom_score_adj) == \
        (0, 10324 * KIB, 504 * KIB, None, None)        # uid from the oom-kill: line; 5.0 prints no more
    assert (init.comm, init.uid, init.total_vm, init.file_rss) == ("systemd", None, 43400 * KIB, 3992 * KIB)
    assert r.missing == ("task_table",)
    assert "abrt-hook-ccpp (9193) used greatest stack depth: 10480 bytes left" not in r.raw


def test_v5_10_global_oom_without_memcg():
    r = only(load("v5.10-rc3-next-global-nomemcg.dmesg"))
    assert (r.invoker_comm, r.invoker_pid, r.invoker_oom_score_adj) == ("stress-ng-brk", 212, 1000)
    assert r.gfp_mask == "0x100dca(GFP_HIGHUSER_MOVABLE|__GFP_ZERO)"
    assert (r.constraint, r.cpuset, r.mems_allowed, r.oom_memcg, r.task_memcg) == \
        ("CONSTRAINT_NONE", "/", "0", None, None)
    assert r.global_oom is True and r.memcg_usage is None and r.memcg_counters == {}
    assert len(r.mem_info) == 24
    assert r.mem_info[0] == "active_anon:7174 inactive_anon:484737 isolated_anon:0"
    assert r.mem_info[-1] == "0 pages cma reserved" and "Free swap  = 0kB" in r.mem_info
    assert len(r.tasks) == 23
    top = {t.pid: t for t in r.tasks}[211]
    assert dataclasses.astuple(top) == (211, 1000, 211, 1322987, 189734, None, None, None, 10596352, 139070, 1000,
                                        "stress-ng-stack")
    assert {t.pid: t for t in r.tasks}[109].oom_score_adj == -1000
    (v,) = r.victims
    assert (v.pid, v.comm, v.uid, v.reason) == (211, "stress-ng-stack", 1000, "Out of memory")
    assert (v.total_vm, v.anon_rss, v.file_rss, v.shmem_rss) == (5291948 * KIB, 758932 * KIB, 0, 4 * KIB)
    assert (v.pgtables, v.oom_score_adj) == (None, None)   # the published line is cut after "pgtables:103480"
    (reaped,) = r.reaped
    assert (reaped.pid, reaped.shmem_rss) == (211, 4 * KIB)
    assert r.missing == ()


def test_v6_16_memcg_v2_with_unknown_constraint():
    r = only(load("v6.16-bpf-memcg-v2.dmesg"))
    assert (r.invoker_comm, r.invoker_pid, r.gfp_mask, r.kernel_release) == \
        ("kworker/u17:0", 74, "0x0()", "6.16.0-00015-gf09eb0d6badc")
    assert r.constraint == "CONSTRAINT_BPF_PSI_MEM"
    assert r.oom_memcg == r.task_memcg == "/cgroup-test-work-dir673/oom_test/cg2"
    assert (r.memcg_usage, r.memcg_limit, r.memcg_failcnt) == (42240 * KIB, 9007199254740988 * KIB, 0)
    assert r.memcg_counters["swap"] == (0, 0, 0) and "memory+swap" not in r.memcg_counters
    assert r.memcg_stats == {"anon": 42897408, "file": 0, "kernel": 98304}
    (row,) = r.tasks
    assert (row.rss_pages, row.rss_anon_pages, row.rss_file_pages, row.rss_shmem_pages) == (10969, 10712, 257, 0)
    (v,) = r.victims
    assert (v.pid, v.comm, v.uid, v.anon_rss, v.file_rss, v.pgtables, v.oom_score_adj) == \
        (675, "test_progs", 0, 42848 * KIB, 1028 * KIB, 152 * KIB, 0)
    assert r.missing == ()


def test_v5_4_tail_of_one_report_and_head_of_the_next():
    tail, head = final(load("v5.4.0-77-ubuntu-memcg-tail-and-head.dmesg"))
    (v,) = tail.victims
    assert (v.pid, v.comm, v.uid, v.total_vm, v.anon_rss, v.file_rss, v.shmem_rss, v.pgtables, v.oom_score_adj) == \
        (63214, "uwsgi", 0, 3149468 * KIB, 164992 * KIB, 52176 * KIB, 92 * KIB, 1372 * KIB, 986)
    assert tail.reaped[0].shmem_rss == 92 * KIB
    assert tail.missing == ("header", "memory_info", "task_table", "constraint")
    assert (head.invoker_comm, head.invoker_pid, head.invoker_oom_score_adj, head.kernel_release) == \
        ("uwsgi", 63635, 986, "5.4.0-77-generic")
    assert head.victims == () and head.missing == ("memory_info", "task_table", "constraint", "killed")


def test_v4_19_head_only():
    r = only(load("v4.19.4-elrepo-memcg-v1-head.syslog"))
    assert (r.invoker_comm, r.invoker_pid, r.gfp_mask, r.nodemask) == \
        ("thrash", 32276, "0x6000c0(GFP_KERNEL)", "(null)")
    assert r.cpuset == "cc6b369add7d52448ae406800daa01f4836195e51190d9ee922fd685446f8368"
    assert (r.mems_allowed, r.kernel_release, r.constraint) == ("0-1", "4.19.4-1.el7.elrepo.x86_64", None)
    # 4.19 prints no oom-kill: line, so its absence is not "missing"
    assert r.missing == ("memory_info", "task_table", "killed")


def test_v3_10_rhel7_legacy_shapes():
    first, second = final(load("v3.10-rhel7-memcg-v1-ltp.syslog"))
    assert (first.task_memcg, first.oom_memcg, first.global_oom) == ("/0", "/0", False)
    assert (first.memcg_usage, first.memcg_limit, first.memcg_failcnt) == (0, 0, 448)
    assert first.memcg_stats == {k: 0 for k in ("cache", "rss", "rss_huge", "mapped_file", "swap", "inactive_anon",
                                                "active_anon", "inactive_file", "active_file", "unevictable")}
    assert [dataclasses.astuple(t) for t in first.tasks] == [
        (42421, 0, 42421, 1824, 24, None, None, None, None, 0, 0, "memcg_test_1"),
        (42423, 0, 42423, 1824, 24, None, None, None, None, 0, 0, "memcg_test_1")]
    (v,) = first.victims
    assert (v.pid, v.uid, v.total_vm, v.anon_rss, v.file_rss, v.shmem_rss, v.reason) == \
        (42421, 0, 7296 * KIB, 96 * KIB, 0, 0, None)
    assert first.missing == ("header",)
    assert (second.invoker_comm, second.gfp_mask) == ("memcg_test_1", "0xd0")
    assert second.missing == ("memory_info", "task_table", "constraint", "killed")


def test_wsl2_fragment_without_header():
    r = only(load("wsl2-5.15.79.1-memcg-v2-fragment.dmesg"))
    assert [(t.pid, t.name, t.rss_pages, t.swapents) for t in r.tasks] == [(144, "init", 258, 5), (153, "bsdtar", 504, 1383)]
    assert r.memcg_stats == {}       # stat lines without their "Memory cgroup stats for" line belong to nothing
    assert r.missing == ("header", "memory_info", "constraint", "killed")


def test_dmesg_T_fragment_with_6_8_columns():
    r = only(load("v6.8plus-global-fragment.dmesg"))
    assert len(r.tasks) == 8
    docker = {t.name: t for t in r.tasks}["docker-swarm"]
    assert dataclasses.astuple(docker) == (737, 112, 737, 543627, 4691, 2751, 1940, 0, 376832, 1240, 0, "docker-swarm")
    assert r.missing == ("header", "memory_info", "constraint", "killed")


@pytest.mark.parametrize("name", ALL_FIXTURES)
def test_every_fixture_has_a_README_entry(name):
    assert f"`{name}`" in (FIXTURES / "README.md").read_text()


# ---------------------------------------------------------------- behaviour


FOREIGN = ["usb 1-1: new high-speed USB device number 3 using xhci_hcd",
           "EXT4-fs (sda1): mounted filesystem with ordered data mode",
           "IPv6: ADDRCONF(NETDEV_CHANGE): eth0: link becomes ready",
           'audit: type=1400 audit(1700000000.123:42): apparmor="STATUS"',
           "e1000e 0000:00:1f.6 eno1: NIC Link is Up 1000 Mbps Full Duplex"]


def kernel_record(message: str, seq: int = 0, usec: int = 0, continuation: bool = False,
                  facility: int = 0) -> KmsgRecord:
    return KmsgRecord(6, facility, seq, usec, continuation, message)


def test_foreign_lines_interleaved_change_nothing():
    records = load("v6.18-memcg-v1-single.kmsg")
    mixed = []
    for i, rec in enumerate(records):
        mixed.append(rec)
        mixed.append(kernel_record(FOREIGN[i % len(FOREIGN)], usec=rec.usec))
    assert without_seq(only(renumber(mixed))) == without_seq(only(renumber(records)))


def test_a_report_written_from_user_space_is_not_read():
    fake = [dataclasses.replace(rec, facility=1) for rec in load("v6.18-memcg-v1-single.kmsg")]
    assert feed_all(fake) == []


def test_report_cut_short_names_what_never_came():
    records = load("v6.18-memcg-v1-single.kmsg")
    cut = next(i for i, r in enumerate(records) if r.message.startswith("oom-kill:"))
    asm = OomReportAssembler()
    assert feed_all(records[:cut], asm, flush=False) == []
    assert asm.expire(records[cut - 1].usec + 1_000_000) == []       # not idle long enough yet
    (r,) = asm.expire(records[cut - 1].usec + 6_000_000)
    assert r.missing == ("constraint", "killed") and r.victims == () and len(r.tasks) == 1


def test_a_lost_record_gap_is_counted():
    records = load("v6.18-memcg-v1-single.kmsg")
    table = next(i for i, r in enumerate(records) if r.message.startswith("Tasks state"))
    r = only(records[:table] + records[table + 3:])   # seq gap of 3: the table is gone
    assert r.missing == ("task_table", "records") and r.lost_records == 3
    assert r.victims[0].pid == 30331


def test_epipe_then_gap_counts_the_gap_once():
    records = load("v6.18-memcg-v1-single.kmsg")
    asm = OomReportAssembler()
    feed_all(records[:40], asm, flush=False)
    asm.lost(None)
    (r,) = [rep for _, rep in feed_all(records[45:], asm)]
    assert r.lost_records == 5 and "records" in r.missing


def test_lost_with_a_count_and_no_gap():
    records = renumber(load("v6.18-memcg-v1-single.kmsg"))
    asm = OomReportAssembler()
    feed_all(records[:40], asm, flush=False)
    asm.lost(7)
    (r,) = [rep for _, rep in feed_all(records[40:], asm)]
    assert r.lost_records == 7


def test_loss_before_a_report_marks_the_headerless_report_that_follows():
    records = load("v6.18-memcg-v1-single.kmsg")
    start = next(i for i, r in enumerate(records) if r.message.startswith("memory: usage"))
    asm = OomReportAssembler()
    asm.feed(kernel_record("eth0: link up", seq=1))
    asm.lost(None)
    (r,) = [rep for _, rep in feed_all(records[start:], asm)]
    assert r.missing == ("header", "records") and r.seq == records[start].seq


def test_new_header_closes_a_report_that_never_killed():
    first = load("v6.18-memcg-v1-single.kmsg")
    second = load("v6.18-memcg-v1-nested.kmsg")
    table = next(i for i, r in enumerate(first) if r.message.startswith("Tasks state"))
    records = renumber(first[:table] + second)
    reports = final(records)
    assert [r.missing for r in reports] == [("task_table", "constraint", "killed"), ()]
    assert reports[1].victims[0].pid == 30489


def test_a_long_silence_closes_the_report_before_the_next_line():
    records = load("v6.18-memcg-v1-single.kmsg")
    cut = next(i for i, r in enumerate(records) if r.message.startswith("oom-kill:"))
    late = [dataclasses.replace(r, usec=r.usec + 600_000_000) for r in records[cut:]]
    first, second = final(records[:cut] + late)
    assert first.missing == ("constraint", "killed")
    assert second.missing == ("header", "memory_info", "task_table") and second.victims[0].pid == 30331


def test_a_section_out_of_order_starts_another_report():
    """After the kill line, a memcg counter line can only be another report whose header was lost."""
    single = load("v6.18-memcg-v1-single.kmsg")
    nested = load("v6.18-memcg-v1-nested.kmsg")
    start = next(i for i, r in enumerate(nested) if r.message.startswith("memory: usage"))
    first, second = final(renumber(single + nested[start:]))
    assert first.victims[0].pid == 30331 and second.victims[0].pid == 30489
    assert second.missing == ("header",)


def test_continuation_records_complete_the_line_before_a_foreign_one():
    head = "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null)"
    records = [
        kernel_record("cat invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0", 1),
        kernel_record("Memory cgroup stats for ", 2),
        kernel_record("/job:", 3, continuation=True),
        kernel_record("anon 4096\nfile 0", 4),          # a v2 block before 6.4: one record
        kernel_record(head, 5),
        kernel_record("eth0: link up", 6),
        kernel_record(",cpuset=/,mems_allowed=0-1,3", 7, continuation=True),
        kernel_record(",oom_memcg=/job,task_memcg=/job/a", 8, continuation=True),
        kernel_record(",task=cat,pid=42,uid=1000", 9, continuation=True),
        kernel_record("Memory cgroup out of memory: Killed process 42 (cat) total-vm:8kB, anon-rss:4kB, "
                      "file-rss:0kB, shmem-rss:0kB", 10),
    ]
    r = only(records)
    assert (r.memcg_stats_for, r.memcg_stats) == ("/job", {"anon": 4096, "file": 0})
    assert (r.constraint, r.cpuset, r.mems_allowed, r.oom_memcg, r.task_memcg) == \
        ("CONSTRAINT_MEMCG", "/", "0-1,3", "/job", "/job/a")
    assert r.victims[0].uid == 1000       # from the oom-kill: line; the kill line has no UID
    assert head + ",cpuset=/,mems_allowed=0-1,3,oom_memcg=/job,task_memcg=/job/a,task=cat,pid=42,uid=1000" in r.raw


def test_reaper_line_after_the_next_report_began():
    single = load("v6.18-memcg-v1-single.kmsg")
    nested = load("v6.18-memcg-v1-nested.kmsg")
    reaped = kernel_record("oom_reaper: reaped process 30331 (python3), now anon-rss:0kB, file-rss:0kB, "
                           "shmem-rss:0kB", usec=nested[3].usec)
    records = renumber(single + nested[:3] + [reaped] + nested[3:])
    emissions = feed_all(records)
    reemitted = [rep for i, rep in emissions if i == len(single) + 3]
    assert len(reemitted) == 1 and reemitted[0].seq == records[0].seq
    assert [p.pid for p in reemitted[0].reaped] == [30331]


def test_reaper_line_for_nobody_is_ignored():
    asm = OomReportAssembler()
    assert asm.feed(kernel_record("oom_reaper: reaped process 5 (x), now anon-rss:0kB, file-rss:0kB, "
                                  "shmem-rss:0kB")) == []
    assert asm.expire(FAR_FUTURE) == []


def test_no_killable_process_is_emitted_without_a_victim():
    records = load("v6.18-memcg-v1-single.kmsg")
    cut = next(i for i, r in enumerate(records) if r.message.startswith("oom-kill:"))
    records = records[:cut] + [kernel_record("Out of memory and no killable processes...", 99999, records[cut].usec)]
    emissions = feed_all(records)
    assert len(emissions) == 1 and emissions[0][0] == cut
    r = emissions[0][1]
    assert r.no_kill_reason == "no killable processes" and r.victims == ()
    assert "killed" not in r.missing


def test_an_unrecognised_oom_line_is_still_reported():
    asm = OomReportAssembler()
    assert asm.feed(kernel_record("Out of memory: frobnicated process 12 (x)", 5, 100)) == []
    (r,) = asm.expire(100 + 6_000_000)
    assert r.raw == ("Out of memory: frobnicated process 12 (x)",)
    assert r.missing == ("header", "memory_info", "task_table", "constraint", "killed")


def test_mem_info_alone_is_not_an_oom():
    """A page allocation failure prints Mem-Info too; without an OOM line it is not reported."""
    records = [kernel_record(m, i) for i, m in enumerate(
        ["Mem-Info:", "active_anon:1 inactive_anon:2 isolated_anon:0", "Node 0 DMA free:15360kB"])]
    assert feed_all(records) == []


def test_task_table_is_bounded_and_keeps_the_largest():
    header = "[  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name"
    rows = [f"[{pid:7d}]     0 {pid:5d}     1000 {pid % 997:8d}    40960        0             0 p{pid}"
            for pid in range(1, 2001)]
    messages = ["x invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0",
                "Tasks state (memory values in pages):", header, *rows,
                "Out of memory: Killed process 996 (p996) total-vm:4000kB, anon-rss:0kB, file-rss:0kB, "
                "shmem-rss:0kB"]
    r = only([kernel_record(m, i) for i, m in enumerate(messages)])
    assert len(r.tasks) == MAX_TASK_ROWS and r.truncated["tasks"] == 2000 - MAX_TASK_ROWS
    assert min(t.rss_pages for t in r.tasks) >= sorted(pid % 997 for pid in range(1, 2001))[-MAX_TASK_ROWS]
    assert [t.pid for t in r.tasks] == sorted(t.pid for t in r.tasks)       # still in table order
    assert len(r.raw) < 100 and r.truncated["raw"] > 0


def test_recent_reports_are_forgotten_after_a_while():
    asm = OomReportAssembler()
    records = load("v6.18-memcg-v1-single.kmsg")
    feed_all(records, asm)
    late = records[-1].usec + 60_000_000
    asm.expire(late)
    assert asm.feed(kernel_record("oom_reaper: reaped process 30331 (python3), now anon-rss:0kB, "
                                  "file-rss:0kB, shmem-rss:0kB", records[-1].seq + 1, late)) == []


# ---------------------------------------------------------------- properties


FIXTURE_LINES = sorted({line for name in ALL_FIXTURES for rec in load(name) for line in rec.message.split("\n")})


@PROPERTIES
@given(st.binary(max_size=300))
def test_parse_record_raises_only_value_error(raw):
    try:
        rec = parse_record(raw)
    except ValueError:
        return
    assert isinstance(rec, KmsgRecord)


@PROPERTIES
@given(st.lists(st.one_of(st.integers(-5, 2**70).map(str), st.text(max_size=6)), min_size=0, max_size=6),
       st.text(max_size=60), st.lists(st.text(max_size=12), max_size=3))
def test_parse_record_on_record_shaped_garbage(head, message, extra):
    raw = (",".join(head) + ";" + message + "".join("\n" + e for e in extra)).encode("utf-8", "surrogatepass")
    try:
        parse_record(raw)
    except ValueError:
        pass


@PROPERTIES
@given(st.text(max_size=200))
def test_parse_dmesg_line_never_raises(line):
    rec = parse_dmesg_line(line)
    assert rec is None or isinstance(rec, KmsgRecord)


def _mutated(line: str, data) -> str:
    how = data.draw(st.sampled_from(["as is", "cut", "digits", "splice"]))
    if how == "cut":
        return line[:data.draw(st.integers(0, len(line)))]
    if how == "digits":
        return "".join(data.draw(st.sampled_from("0123456789-x ")) if c.isdigit() else c for c in line)
    if how == "splice":
        return line[:len(line) // 2] + data.draw(st.sampled_from(FIXTURE_LINES))
    return line


@PROPERTIES
@given(st.data())
def test_assembler_never_raises(data):
    asm = OomReportAssembler(idle_usec=data.draw(st.integers(0, 10_000_000)))
    for _ in range(data.draw(st.integers(1, 60))):
        action = data.draw(st.sampled_from(["feed"] * 8 + ["lost", "expire"]))
        if action == "lost":
            asm.lost(data.draw(st.one_of(st.none(), st.integers(0, 10**6))))
            continue
        if action == "expire":
            for report in asm.expire(data.draw(st.integers(-10**6, 10**12))):
                assert isinstance(report, OomReport)
            continue
        message = data.draw(st.one_of(
            st.text(max_size=120),
            st.sampled_from(FIXTURE_LINES).map(lambda line: _mutated(line, data)),
            st.lists(st.sampled_from(FIXTURE_LINES), min_size=1, max_size=5).map("\n".join)))
        rec = KmsgRecord(data.draw(st.one_of(st.none(), st.integers(0, 7))),
                         data.draw(st.one_of(st.none(), st.integers(0, 3))),
                         data.draw(st.integers(0, 2**64)), data.draw(st.integers(0, 2**63)),
                         data.draw(st.booleans()), message)
        for report in asm.feed(rec):
            assert isinstance(report, OomReport)


_NOISE_TEMPLATES = ["usb 1-{n}: new high-speed USB device number {n} using xhci_hcd {w}",
                    "EXT4-fs (sda{n}): mounted filesystem {w}",
                    "IPv6: ADDRCONF(NETDEV_CHANGE): eth{n}: link becomes ready",
                    'audit: type=1400 audit({n}.123:{n}): apparmor="STATUS" {w}',
                    "e1000e 0000:00:1f.6 eno1: NIC Link is Up {n} Mbps Full Duplex",
                    "nf_conntrack: default automatic helper assignment has been turned off {w}"]
_kernel_noise = st.builds(lambda t, n, w: t.format(n=n, w=w), st.sampled_from(_NOISE_TEMPLATES),
                          st.integers(0, 99999), st.text(alphabet="abcdefghij ", max_size=20))
# Written from user space: facility 1 however it looks, even a whole fake report line.
_user_noise = st.one_of(st.text(max_size=80), st.sampled_from(FIXTURE_LINES))


def _noise_record(user: bool, message: str, usec: int) -> KmsgRecord:
    return KmsgRecord(6, 1 if user else 0, 0, usec, False, message)


@PROPERTIES
@given(st.sampled_from(FULL_REPORTS), st.data())
def test_report_in_noise_is_recovered_exactly(name, data):
    """Other kernel messages between the report's records, and anything at all
    written from user space, leave the report exactly as it was."""
    clean = load(name)
    inserts = data.draw(st.lists(st.tuples(st.integers(0, len(clean)), st.booleans()), max_size=60))
    messages = [data.draw(_user_noise if user else _kernel_noise) for _, user in inserts]
    before: dict[int, list[KmsgRecord]] = {}
    for (at, user), message in zip(inserts, messages):
        usec = clean[min(at, len(clean) - 1)].usec if at < len(clean) else clean[-1].usec
        before.setdefault(at, []).append(_noise_record(user, message, usec))
    noisy = [rec for i, clean_rec in enumerate(clean) for rec in (*before.get(i, ()), clean_rec)]
    noisy += before.get(len(clean), [])
    expected = [without_seq(r) for r in final(renumber(clean))]
    assert [without_seq(r) for r in final(renumber(noisy))] == expected


def _has(report: OomReport, part: str) -> bool:
    return {"header": report.invoker_comm is not None,
            "memory_info": bool(report.memcg_counters or report.mem_info or report.memcg_stats_for),
            "task_table": bool(report.tasks),
            "constraint": report.constraint is not None,
            "killed": bool(report.victims)}[part]


@PROPERTIES
@given(st.sampled_from(FULL_REPORTS), st.data())
def test_truncated_report_names_what_was_cut(name, data):
    records = load(name)
    clean = final(records)
    start = data.draw(st.integers(0, len(records)))
    end = data.draw(st.one_of(st.just(len(records)), st.integers(start, len(records))))   # tail, or a middle
    cut = records[:start] + records[end:]
    for report in final(cut):
        owner = max((c for c in clean if c.seq <= report.seq), key=lambda c: c.seq, default=clean[0])
        for part in ("header", "memory_info", "task_table", "constraint", "killed"):
            if _has(owner, part) and not _has(report, part):
                assert part in report.missing or "records" in report.missing, (part, report.missing)
        if "records" not in report.missing:
            # the victims are the clean report's; a victim's UID may come from
            # the oom-kill: line, which may have been cut
            theirs = {v.pid: v for v in owner.victims}
            for v in report.victims:
                assert v.pid in theirs and v.uid in (None, theirs[v.pid].uid)
                assert dataclasses.replace(v, uid=None) == dataclasses.replace(theirs[v.pid], uid=None)


def test_rate_limited_burst_of_bare_kill_lines_is_one_report_per_kill():
    # Seen here with 20 kills in 20 cgroups within a second: after 10 reports
    # in 5 s the kernel prints only the kill lines (oom_rs ratelimit).
    records = renumber(load("v6.18-memcg-v1-single.kmsg"))
    seq, usec = records[-1].seq, records[-1].usec
    for i, pid in enumerate((5001, 5002, 5003)):
        records.append(kernel_record(
            f"Memory cgroup out of memory: Killed process {pid} (hog) total-vm:68012kB, anon-rss:65280kB, "
            "file-rss:1344kB, shmem-rss:0kB, UID:0 pgtables:168kB oom_score_adj:0",
            seq=seq + 1 + i, usec=usec + 1000 * (i + 1)))
    reports = final(records)
    assert [[v.pid for v in r.victims] for r in reports][1:] == [[5001], [5002], [5003]]
    assert all("header" in r.missing for r in reports[1:])
    assert len(reports[0].victims) == 1

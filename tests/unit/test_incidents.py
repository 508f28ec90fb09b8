"""The incident builder on a fake clock: one incident per kill, whoever saw it."""

from memguard.clock import FakeClock
from memguard.config import Config
from memguard.engine.engine import Engine, SourceRun
from memguard.engine.messages import ProcessesSeen
from memguard.incidents.build import COUNT_GRACE, Remove, Write
from memguard.incidents.unclean import unclean_stop_incident
from memguard.model import OomKill, ProcessInfo, Sample
from memguard.probes.oom_report import OomReportAssembler, parse_dmesg_text
from memguard.sources.base import Reading

MiB = 2**20


def engine_with(domains=("cgroup:/a",), kills=None):
    clock = FakeClock()
    e = Engine(Config(), clock.now(), "t")
    samples = [Sample(d, "cgroup", used=10 * MiB, working_set=10 * MiB, limit=64 * MiB, identity=1,
                      oom_kills=0) for d in domains]
    owners = {d.removeprefix("cgroup:"): d for d in domains}

    def domain_of(path):
        while path not in owners and path not in ("/", ""):
            path = path.rsplit("/", 1)[0] or "/"
        return owners.get(path, "host")
    e.step([SourceRun("cgroups", reading=Reading(samples=samples, domain_of=domain_of))], clock.now())
    return e, clock


def kill(probe, pid, t, **kw):
    return OomKill(probe=probe, pid=pid, seen=t + 0.001, kernel_time=t, **kw)


def writes(effects):
    return [e for e in effects if isinstance(e, Write)]


def test_three_probes_one_incident_with_each_delay():
    e, clock = engine_with()
    t = clock.now().mono
    fx = e.step([], clock.now(), events=[kill("bpf", 42, t, comm="hog")])
    (w,) = writes(fx.incidents)
    assert w.document["state"] == "open" and w.document["victims"][0]["comm"] == "hog"
    clock.advance(0.01)
    e.step([], clock.now(), events=[kill("tracefs", 42, t)])
    clock.advance(0.05)
    fx = e.step([], clock.now(), events=[kill("kmsg", 42, t, constraint="CONSTRAINT_MEMCG",
                                              oom_memcg="/a", task_memcg="/a")])
    (w,) = writes(fx.incidents)
    assert [p["name"] for p in w.document["probes"]] == ["bpf", "tracefs", "kmsg"]
    assert all(abs(p["delay_seconds"] - 0.001) < 1e-6 for p in w.document["probes"])
    assert w.document["domain"] == "cgroup:/a"
    assert len(e.incidents.incidents) == 1
    clock.advance(2.0)
    (sealed,) = writes(e.step([], clock.now()).incidents)
    assert sealed.document["state"] == "sealed"


def test_oom_group_sightings_merge_into_one_incident():
    e, clock = engine_with()
    t = clock.now().mono
    fx1 = e.step([], clock.now(), events=[kill("bpf", 1, t)])
    fx2 = e.step([], clock.now(), events=[kill("bpf", 2, t + 0.001)])
    assert len(e.incidents.incidents) == 2
    assembler = OomReportAssembler()
    report = [r for r in (assembler.feed(rec) for rec in parse_dmesg_text(
        "[ 10.000000] Memory cgroup out of memory: Killed process 1 (a) total-vm:4kB, anon-rss:4kB, "
        "file-rss:0kB, shmem-rss:0kB\n"
        "[ 10.000001] Tasks in /a are going to be killed due to memory.oom.group set\n"
        "[ 10.000002] Memory cgroup out of memory: Killed process 2 (b) total-vm:4kB, anon-rss:4kB, "
        "file-rss:0kB, shmem-rss:0kB\n")) for r in r][-1]
    assert [v.pid for v in report.victims] == [1, 2]
    fx = e.step([], clock.now(), events=[kill("kmsg", 1, t, report=report, oom_memcg="/a")])
    assert len(e.incidents.incidents) == 1
    removed = [x.id for x in fx.incidents if isinstance(x, Remove)]
    (w,) = writes(fx.incidents)
    assert removed == [writes(fx2.incidents)[0].id] and w.id == writes(fx1.incidents)[0].id
    assert sorted(v["pid"] for v in w.document["victims"]) == [1, 2]


def test_same_pid_long_apart_is_two_incidents():
    e, clock = engine_with()
    t = clock.now().mono
    e.step([], clock.now(), events=[kill("bpf", 7, t)])
    clock.advance(60)
    e.step([], clock.now(), events=[kill("bpf", 7, clock.now().mono)])
    assert len(e.incidents.incidents) == 2


def test_victim_named_from_the_process_table_after_its_death():
    e, clock = engine_with()
    seen(e, clock, ProcessInfo(99, "python3", 50 * MiB, "/a", None, cmdline="python3 train.py --token=abc",
                               start_time=12.5, uid=1000))
    fx = e.step([], clock.now(), events=[kill("bpf", 99, clock.now().mono)])
    (v,) = writes(fx.incidents)[0].document["victims"]
    assert (v["comm"], v["cgroup"], v["uid"], v["start_time_seconds"]) == ("python3", "/a", 1000, 12.5)
    assert v["cmdline"] == "python3 train.py --token=abc"  # redaction is the daemon's (engine given none)


def test_counter_without_a_sighting_becomes_unattributed_after_the_grace():
    e, clock = engine_with(("cgroup:/a", "cgroup:/a/b"))

    def counters(a, b):
        return [SourceRun("cgroups", reading=Reading(samples=[
            Sample("cgroup:/a", "cgroup", 1, 1, 64 * MiB, identity=1, oom_kills=a),
            Sample("cgroup:/a/b", "cgroup", 1, 1, 32 * MiB, identity=1, oom_kills=b)]))]
    e.step(counters(0, 0), clock.now())
    clock.advance(1)
    e.step(counters(1, 1), clock.now())   # one kill in /a/b, counted in /a too
    clock.advance(COUNT_GRACE)
    fx = e.step(counters(1, 1), clock.now())
    (w,) = writes(fx.incidents)
    assert w.document["kind"] == "unattributed_oom_kill" and w.document["domain"] == "cgroup:/a/b"
    assert e.incidents.unattributed == 1   # the parent's count is explained by the child's


def seen(e, clock, process: ProcessInfo, at_exec: bool = True) -> None:
    """The engine learns of *process*, at its exec or by a /proc scan."""
    e.step([], clock.now(), events=[ProcessesSeen((process,), at_exec)])


def one_kill_seen_in_a(e, clock):
    """cgroup:/a with its oom_kill counter at 0, and kmsg's sighting of a kill
    there: (a run of /a's counter at n, the incident opened)."""
    def counter(n):
        return [SourceRun("cgroups", reading=Reading(samples=[
            Sample("cgroup:/a", "cgroup", 1, 1, 64 * MiB, identity=1, oom_kills=n)]))]
    e.step(counter(0), clock.now())
    fx = e.step([], clock.now(), events=[kill("kmsg", 5, clock.now().mono, task_memcg="/a", oom_memcg="/a")])
    (opened,) = writes(fx.incidents)
    return counter, opened


def test_counter_with_a_sighting_is_explained():
    e, clock = engine_with()
    counter, opened = one_kill_seen_in_a(e, clock)
    clock.advance(0.5)
    effects = e.step(counter(1), clock.now()).incidents
    clock.advance(COUNT_GRACE + 3)
    last = e.step(counter(1), clock.now())
    effects += last.incidents
    # The only document after the count is the kmsg incident's seal: the
    # counted kill was matched to it, nothing unattributed was written.
    assert [(w.id, w.document["kind"], w.document["state"]) for w in writes(effects)] == [
        (opened.id, "oom_kill", "sealed")]
    assert list(e.incidents.incidents) == [opened.id]
    assert e.incidents.incidents[opened.id].explains == {"cgroup:/a"}
    assert e.incidents.pending == [] and e.incidents.unattributed == 0
    published = last.snapshot.to_json()
    assert published["unattributed_kills"] == 0
    assert published["counters"]["incidents"] == [
        {"kind": "oom_kill", "domain": "cgroup:/a", "constraint": None, "count": 1}]


def test_only_the_kills_no_probe_saw_are_unattributed():
    e, clock = engine_with()
    counter, opened = one_kill_seen_in_a(e, clock)
    clock.advance(0.5)
    e.step(counter(2), clock.now())      # two kills counted, one seen
    clock.advance(COUNT_GRACE)
    last = e.step(counter(2), clock.now())
    (w,) = [w for w in writes(last.incidents) if w.id != opened.id]
    assert w.id.endswith("-x-unattributed-a") and w.id in e.incidents.incidents
    assert (w.document["kind"], w.document["domain"], w.document["count"]) == (
        "unattributed_oom_kill", "cgroup:/a", 1)
    assert w.document["headline"] == "The kernel counted 1 OOM kill(s) in cgroup:/a that no probe reported."
    assert e.incidents.unattributed == 1 and last.snapshot.to_json()["unattributed_kills"] == 1


def test_unclean_stop_only_after_a_reboot_near_a_limit():
    now = FakeClock().now()
    near = [{"domain": "wsl", "usage_ratio": 0.97, "limit_bytes": 8 << 30, "working_set_bytes": 7 << 30}]
    beat = {"boot_id": "old", "wall": now.wall - 30, "clean": False, "near_limit": near}
    doc = unclean_stop_incident(beat, "new", now)
    assert doc["kind"] == "unclean_stop" and doc["domain"] == "wsl" and doc["found_late"]
    assert unclean_stop_incident({**beat, "clean": True}, "new", now) is None
    assert unclean_stop_incident(beat, "old", now) is None            # the daemon died, not the host
    assert unclean_stop_incident({**beat, "near_limit": []}, "new", now) is None
    assert unclean_stop_incident(None, "new", now) is None


def test_two_unattributed_incidents_in_one_tick_have_their_own_ids():
    e, clock = engine_with(("cgroup:/a", "cgroup:/b"))

    def counters(n):
        return [SourceRun("cgroups", reading=Reading(samples=[
            Sample("cgroup:/a", "cgroup", 1, 1, 64 * MiB, identity=1, oom_kills=n),
            Sample("cgroup:/b", "cgroup", 1, 1, 64 * MiB, identity=1, oom_kills=n)]))]
    e.step(counters(0), clock.now())
    e.step(counters(1), clock.now())
    clock.advance(COUNT_GRACE)
    fx = e.step(counters(1), clock.now())
    ids = [w.id for w in writes(fx.incidents)]
    assert len(ids) == 2 and len(set(ids)) == 2 and e.incidents.unattributed == 2
    assert sum(i["count"] for i in fx.snapshot.to_json()["counters"]["incidents"]) == 2


def test_an_incident_reopened_by_a_late_probe_is_counted_once():
    e, clock = engine_with()
    t = clock.now().mono
    e.step([], clock.now(), events=[kill("bpf", 42, t)])
    clock.advance(3)
    e.step([], clock.now())                       # sealed
    e.step([], clock.now(), events=[kill("kmsg", 42, t, oom_memcg="/a")])   # reopened
    clock.advance(3)
    e.step([], clock.now())                       # sealed again
    assert sum(e.counters.incidents.values()) == 1


def test_a_stale_scan_does_not_overwrite_what_the_exec_told():
    # Found in CI: a /proc scan caught the hog between fork and exec, still in
    # its parent's cgroup, and its result arrived after the exec event.
    e, clock = engine_with()
    seen(e, clock, ProcessInfo(7, "hog", 1, "/a", None, cmdline="hog grow", start_time=5.0))
    seen(e, clock, ProcessInfo(7, "python", 50 * MiB, "/process_api", None, cmdline="pytest", start_time=5.0),
         at_exec=False)
    assert (e.process_table[7].cgroup, e.process_table[7].comm, e.process_table[7].rss) == ("/a", "hog", 50 * MiB)
    # a new process under the same pid (another start time) is taken from the scan
    seen(e, clock, ProcessInfo(7, "sh", 1, "/b", None, start_time=99.0), at_exec=False)
    assert e.process_table[7].cgroup == "/b"


def test_a_kill_nothing_placed_is_placed_by_the_counter_of_a_cgroup_made_during_it():
    """A storm: the kernel printed only the kill line (no cgroup), and the
    victim was read at its exec only as it exited (the kernel had already
    moved it to the root cgroup: its cgroup is unknown). The next walk
    finds a cgroup it never saw, its oom_kill counter at 1 already: the
    kill is placed there, and nothing is unattributed. The counters the
    first walk found (/old: kills of long ago) place nothing."""
    clock = FakeClock()
    e = Engine(Config(), clock.now(), "t")
    owners = {"/old": "cgroup:/old", "/new": "cgroup:/new"}

    def walk(*samples):
        return [SourceRun("cgroups", reading=Reading(samples=list(samples),
                                                     domain_of=lambda path: owners.get(path, "host")))]
    old = Sample("cgroup:/old", "cgroup", 1, 1, 32 * MiB, identity=1, oom_kills=3)
    e.step(walk(old), clock.now())
    seen(e, clock, ProcessInfo(77, "hog", 0, None, None, cmdline="[hog]", start_time=1.0, uid=0))
    fx = e.step([], clock.now(), events=[kill("kmsg", 77, clock.now().mono, comm="hog",
                                              constraint="CONSTRAINT_MEMCG")])
    (opened,) = writes(fx.incidents)
    assert opened.document["domain"] is None
    clock.advance(0.5)
    e.step(walk(old, Sample("cgroup:/new", "cgroup", 1, 1, 32 * MiB, identity=1, oom_kills=1)), clock.now())
    clock.advance(COUNT_GRACE + 3)
    written = writes(e.step([], clock.now()).incidents)
    assert {w.id for w in written} == {opened.id}
    placed = written[-1]
    assert placed.document["domain"] == "cgroup:/new"
    assert any("Placed in /new by the kernel's own count" in n for n in placed.document["notes"])
    assert e.incidents.unattributed == 0 and e.incidents.pending == []


def test_a_victim_read_only_as_it_exited_is_placed_where_it_last_moved():
    """The tracefs probe saw the process move into /new (cgroup_attach_task)
    before its exec was read, as it exited (no cgroup): the process table
    takes the move, and the kill is in /new's domain."""
    from memguard.engine.messages import ProbeRun
    from memguard.probes.base import ProbeReading
    e, clock = engine_with(("cgroup:/a", "cgroup:/new"))
    e.step([], clock.now(), events=[ProbeRun("tracefs", "active", None, ProbeReading(moves=[(78, "/new")]))])
    seen(e, clock, ProcessInfo(78, "hog", 0, None, None, cmdline="[hog]", start_time=1.0, uid=0))
    assert (e.process_table[78].cgroup, e.process_table[78].domain) == ("/new", "cgroup:/new")
    fx = e.step([], clock.now(), events=[kill("kmsg", 78, clock.now().mono, comm="hog",
                                              constraint="CONSTRAINT_MEMCG")])
    (w,) = writes(fx.incidents)
    assert w.document["domain"] == "cgroup:/new"
    # and a process moved after it was read is followed too
    seen(e, clock, ProcessInfo(79, "sh", MiB, "/a", None, cmdline="sh", start_time=2.0, uid=0))
    e.step([], clock.now(), events=[ProbeRun("tracefs", "active", None, ProbeReading(moves=[(79, "/new")]))])
    assert e.process_table[79].domain == "cgroup:/new"


def test_two_unplaced_kills_and_two_fresh_counters_are_not_guessed_at():
    """Two kills with no place and two cgroups made since the walk, each
    counting one: which is which cannot be told, so neither is placed (a
    storm placed one in its neighbour's cgroup before this rule)."""
    clock = FakeClock()
    e = Engine(Config(), clock.now(), "t")
    owners = {"/p": "cgroup:/p", "/q": "cgroup:/q", "/r": "cgroup:/r"}
    r = Sample("cgroup:/r", "cgroup", 1, 1, 32 * MiB, identity=1, oom_kills=0)

    def walk(*samples):
        return [SourceRun("cgroups", reading=Reading(samples=[r, *samples],
                                                     domain_of=lambda path: owners.get(path, "host")))]
    e.step(walk(), clock.now())
    e.step([], clock.now(), events=[kill("kmsg", pid, clock.now().mono, comm="hog", constraint="CONSTRAINT_MEMCG")
                                    for pid in (81, 82)])
    clock.advance(0.5)
    e.step(walk(*(Sample(f"cgroup:/{n}", "cgroup", 1, 1, 32 * MiB, identity=1, oom_kills=1) for n in "pq")),
           clock.now())
    clock.advance(COUNT_GRACE + 3)
    e.step([], clock.now())
    assert [inc.domain for inc in e.incidents.incidents.values()] == [None, None]
    assert e.incidents.unattributed == 0

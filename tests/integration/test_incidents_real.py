"""OOM kills on the real kernel become incidents: every one, at once, with
the right victim and domain, from every probe this host has."""

from __future__ import annotations

import json
import time

import pytest

from memguard.incidents.build import COUNT_GRACE
from tests.e2e.daemon import Daemon, ctl
from tests.kernel import MIB, capabilities, require, wait_until

pytestmark = pytest.mark.root

CONFIG = """\
sampling:
  interval: 250ms
  processes_interval: 500ms
  discovery_interval: 250ms
incidents:
  settle: 1s
"""


def _start(tmp_path, config: str = CONFIG) -> Daemon:
    require("root")
    require("v1_memory")
    d = Daemon(str(tmp_path), config=config)
    # the probes that can run here are up before the test causes a kill
    wanted = {"kmsg", "tracefs"} | ({"bpf"} if capabilities().bcc else set())
    try:
        d.wait_for_tick(lambda s: wanted <= {p["name"] for p in s["probes"] if p["state"] == "active"},
                        timeout=30)
    except BaseException:
        d.stop()  # no test holds it yet: it would outlive the run
        raise
    return d


@pytest.fixture
def daemon(tmp_path):
    d = _start(tmp_path)
    yield d
    assert d.stop() == 0, d.log()


def incidents(d: Daemon) -> list[dict]:
    r = ctl(d.socket, "--json", "incidents")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["incidents"]


def incident(d: Daemon, ident: str) -> dict:
    r = ctl(d.socket, "--json", "incident", "show", ident)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def find(d: Daemon, pid: int, timeout: float, sealed: bool = False) -> dict:
    def look():
        for i in incidents(d):
            if f"({pid})" in (i["fields"].get("victim") or ""):
                doc = incident(d, i["id"])
                if not sealed or doc["state"] == "sealed":
                    return doc
        return None
    return wait_until(look, timeout=timeout, interval=0.02, what=f"an incident for pid {pid}")


def _wait_tracked(d: Daemon, group) -> None:
    d.wait_for_tick(lambda s: any(x["name"] == f"cgroup:{group.path}" for x in s["domains"]))


def test_a_memcg_kill_is_an_incident_within_a_second(daemon, v1_cgroup, hog):
    group = v1_cgroup(128 * MIB)
    _wait_tracked(daemon, group)
    h = hog(group, "grow", "8", "20")
    assert h.wait_exit(30) == -9
    killed = time.monotonic()
    doc = find(daemon, h.pid, timeout=1.0)
    stored = time.monotonic() - killed
    assert stored < 1.0
    (v,) = doc["victims"]
    assert (v["pid"], v["comm"]) == (h.pid, "hog")
    assert doc["domain"] == f"cgroup:{group.path}"
    doc = find(daemon, h.pid, timeout=10, sealed=True)
    assert doc["constraint"] == "CONSTRAINT_MEMCG"
    assert doc["oom_memcg"] == group.path and doc["task_memcg"] == group.path
    (v,) = doc["victims"]
    assert v["anon_rss_bytes"] > 64 * MIB and v["cgroup"] == group.path
    assert v["cmdline"] and "grow" in v["cmdline"], "the command line was known before the death"
    probes = {p["name"] for p in doc["probes"]}
    expected = {"kmsg", "tracefs"} | ({"bpf"} if capabilities().bcc else set())
    assert expected <= probes, f"seen by {probes}"
    assert all(p["delay_seconds"] is not None and p["delay_seconds"] < 1.0 for p in doc["probes"]), doc["probes"]
    assert doc["samples"]["used_bytes"], "the domain's history before the kill"
    assert doc["memcg"]["limit_bytes"] == 128 * MIB and doc["kernel_tasks"]
    text = ctl(daemon.socket, "incident", "show", doc["id"]).stdout
    assert f"pid {h.pid} hog" in text and "ran out of memory" in text and "Seen by:" in text
    status = daemon.status()
    assert any(i["domain"] == f"cgroup:{group.path}" and i["count"] == 1
               for i in status["counters"]["incidents"])
    assert status["unattributed_kills"] == 0


def test_a_burst_of_20_kills_gives_20_incidents(daemon, v1_cgroup, hog):
    groups = [v1_cgroup(64 * MIB) for _ in range(20)]
    for g in groups:
        _wait_tracked(daemon, g)
    hogs = [hog(g, "grow", "8", "10") for g in groups]
    for h in hogs:
        assert h.wait_exit(60) == -9
    docs = [find(daemon, h.pid, timeout=10, sealed=True) for h in hogs]
    assert len({d["id"] for d in docs}) == 20, "none merged"
    for h, g, d in zip(hogs, groups, docs):
        assert [v["pid"] for v in d["victims"]] == [h.pid]
        assert d["domain"] == f"cgroup:{g.path}"
    # No kill may also be reported as unattributed. That is a finding only
    # once the daemon has checked every group's counter against the
    # incidents: a tick at least COUNT_GRACE after one that showed them all.
    names = {f"cgroup:{g.path}" for g in groups}
    counted = daemon.wait_for_tick(
        lambda s: names <= {x["name"] for x in s["domains"] if x["oom_kills"] == 1})
    after = daemon.wait_for_tick(
        lambda s: s["uptime_seconds"] >= counted["uptime_seconds"] + COUNT_GRACE + 0.01,
        timeout=COUNT_GRACE + 10)
    assert after["unattributed_kills"] == 0
    assert [(i["kind"], i["count"]) for i in after["counters"]["incidents"]] == [("oom_kill", 1)] * 20


def test_kill_at_a_limited_parent_names_the_parent_domain(daemon, v1_cgroup, hog):
    parent = v1_cgroup(128 * MIB)
    child = parent.child("work")
    _wait_tracked(daemon, parent)
    h = hog(child, "grow", "8", "20")
    assert h.wait_exit(30) == -9
    doc = find(daemon, h.pid, timeout=10, sealed=True)
    assert doc["domain"] == f"cgroup:{parent.path}"
    assert doc["oom_memcg"] == parent.path and doc["task_memcg"] == child.path
    assert len([i for i in incidents(daemon) if f"({h.pid})" in (i["fields"].get("victim") or "")]) == 1


def test_two_victims_in_one_group_seconds_apart_are_two_incidents(daemon, v1_cgroup, hog):
    group = v1_cgroup(128 * MIB)
    _wait_tracked(daemon, group)
    first = hog(group, "grow", "8", "20")
    assert first.wait_exit(30) == -9
    time.sleep(1.5)
    second = hog(group, "grow", "8", "20")
    assert second.wait_exit(30) == -9
    a = find(daemon, first.pid, timeout=10, sealed=True)
    b = find(daemon, second.pid, timeout=10, sealed=True)
    assert a["id"] != b["id"]
    assert [v["pid"] for v in a["victims"]] == [first.pid]
    assert [v["pid"] for v in b["victims"]] == [second.pid]


def test_a_kill_while_the_daemon_was_down_is_found_late(tmp_path, v1_cgroup, hog):
    d = _start(tmp_path)
    try:
        group = v1_cgroup(128 * MIB)
        _wait_tracked(d, group)
    finally:
        assert d.stop() == 0, d.log()
    h = hog(group, "grow", "8", "20")
    assert h.wait_exit(30) == -9
    d = _start(tmp_path)
    try:
        doc = find(d, h.pid, timeout=10)
        assert doc["found_late"] is True
        assert doc["victims"][0]["comm"] == "hog" and doc["domain"] == f"cgroup:{group.path}"
        assert "kmsg" in {p["name"] for p in doc["probes"]}
    finally:
        assert d.stop() == 0, d.log()


def test_a_kill_no_probe_reports_is_an_unattributed_incident(tmp_path, v1_cgroup, hog):
    # The kill probes are off (as if kmsg's lines never arrived and eBPF and
    # tracefs were down): only the kernel's oom_kill counter tells.
    require("root")
    d = Daemon(str(tmp_path), config=CONFIG, probes="  kmsg: false\n  bpf: false\n  tracefs: false\n")
    try:
        group = v1_cgroup(128 * MIB)
        _wait_tracked(d, group)
        h = hog(group, "grow", "8", "20")
        assert h.wait_exit(30) == -9
        status = d.wait_for_tick(lambda s: s["unattributed_kills"] >= 1, timeout=15)
        assert status["unattributed_kills"] == 1
        (i,) = [i for i in incidents(d) if i["fields"].get("domain") == f"cgroup:{group.path}"]
        doc = incident(d, i["id"])
        assert doc["kind"] == "unattributed_oom_kill" and doc["count"] == 1
        assert "no probe reported" in doc["headline"]
        assert 'memguard_unattributed_oom_kills_total 1.0' in d.metrics()
    finally:
        assert d.stop() == 0, d.log()


def test_sigkill_while_writing_leaves_no_partial_incident(tmp_path, v1_cgroup, hog):
    import signal
    d = _start(tmp_path)
    incidents_dir = tmp_path / "state" / "incidents"
    try:
        group = v1_cgroup(128 * MIB)
        _wait_tracked(d, group)
        h = hog(group, "grow", "8", "20")
        assert h.wait_exit(30) == -9
        # SIGKILL the moment the first version lands, while the other probes'
        # sightings are being written over it
        wait_until(lambda: list(incidents_dir.glob("*.json")), timeout=5, interval=0.001,
                   what="the first incident file")
    except BaseException:
        d.stop()  # a failure here must not leave the daemon running
        raise
    assert d.stop(signal.SIGKILL) == -signal.SIGKILL
    for path in incidents_dir.glob("*.json"):
        json.loads(path.read_text())  # whole, whichever version it is
    d = _start(tmp_path)
    try:
        assert not list(incidents_dir.glob(".tmp-*")), "start-up removes partial writes"
        listing = json.loads(ctl(d.socket, "--json", "incidents").stdout)
        assert listing["corrupt"] == []
        assert any(f"({h.pid})" in (i["fields"].get("victim") or "") for i in listing["incidents"])
    finally:
        assert d.stop() == 0, d.log()

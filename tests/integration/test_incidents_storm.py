"""Issue 16: kills in cgroups younger than the cgroup walk, and kill storms
whose reports the kernel rate-limits, are explained right on the real kernel."""

from __future__ import annotations

import json
import time

import pytest

from tests.e2e.daemon import Daemon
from tests.integration.test_incidents_real import find, incidents
from tests.kernel import MIB, capabilities, require

pytestmark = pytest.mark.root

# The default walk of the cgroup tree is every 10 s; 60 s here makes sure no
# walk can find a test cgroup on its schedule: only the kernel's word, the
# limits read at the kill and a walk brought forward by an exec may.
CONFIG = """\
sampling:
  interval: 250ms
  processes_interval: 500ms
  discovery_interval: 60s
incidents:
  settle: 1s
"""


@pytest.fixture
def daemon(tmp_path):
    require("root")
    require("v1_memory")
    require("proc_connector")
    d = Daemon(str(tmp_path), config=CONFIG)
    d.wait_for_probes({"kmsg", "tracefs", "procevents"} | ({"bpf"} if capabilities().bcc else set()))
    yield d
    assert d.stop() == 0, d.log()


def test_a_storm_of_kills_in_fresh_cgroups_names_each_cgroup(daemon, v1_cgroup, hog):
    # 20 cgroups of 48 MiB, each made, filled and killed within a second, as
    # a CI job or `systemd-run --scope` does: all 20 were blamed on the host.
    groups = [v1_cgroup(48 * MIB) for _ in range(20)]
    made = time.monotonic()
    hogs = [hog(g, "grow", "16", "5") for g in groups]
    for h in hogs:
        assert h.wait_exit(30) == -9
    assert time.monotonic() - made < 5.0, "the storm fits in the kernel's report rate limit window"
    docs = [find(daemon, h.pid, timeout=15, sealed=True) for h in hogs]
    assert len({d["id"] for d in docs}) == 20
    for g, d in zip(groups, docs):
        assert d["domain"] == f"cgroup:{g.path}", (d["headline"], d["notes"])
        assert d["limit_bytes"] == 48 * MIB, d
        assert d["constraint"] == "CONSTRAINT_MEMCG"
        assert "host ran out" not in d["headline"] and g.path in d["headline"]
        if not d["domain_tracked"]:
            assert any("was not tracking" in n for n in d["notes"]), d["notes"]
            assert d["limit_source"] in ("kernel report", "cgroupfs at the kill")
    # The kernel prints at most 10 whole reports in 5 s: the rest are bare
    # kill lines, whose constraint is inferred and whose domain comes from
    # the victim's cgroup.
    bare = [d for d in docs if d["missing_reason"] == "rate_limited"]
    assert bare, [d["missing"] for d in docs]
    for d in bare:
        assert d["constraint_source"] != "kernel" and "Memory cgroup out of memory" in d["constraint_source"]
        assert any("rate" in n or "at most 10 kills" in n for n in d["notes"])
        assert d["limit_source"] in ("samples", "cgroupfs at the kill")
    whole = [d for d in docs if d["missing_reason"] is None]
    assert whole and all(d["constraint_source"] == "kernel" for d in whole)
    status = daemon.status()
    assert status["unattributed_kills"] == 0
    assert not [i for i in incidents(daemon) if i["fields"].get("domain") == "host"]


def test_a_process_in_a_new_cgroup_brings_the_walk_forward(daemon, v1_cgroup, hog):
    # The walk is 60 s apart here; an exec into a cgroup it never saw
    # brings it forward.
    group = v1_cgroup(256 * MIB)
    h = hog(group, "anon", "8")
    h.wait_ready(10)
    started = time.monotonic()
    daemon.wait_for_tick(lambda s: any(d["name"] == f"cgroup:{group.path}" for d in s["domains"]), timeout=5)
    assert time.monotonic() - started < 5.0


def test_a_hundred_kills_in_ten_seconds_half_in_cgroups_made_during_it(daemon, v1_cgroup, hog):
    # Issue 24's load: 100 OOM kills across 100 cgroups within 10 s, the
    # second 50 made while the first 50 are being killed: every kill
    # recorded once, with its own domain.
    first = [v1_cgroup(32 * MIB) for _ in range(50)]
    began = time.monotonic()
    hogs = [hog(g, "grow", "16", "5") for g in first]
    second = [v1_cgroup(32 * MIB) for _ in range(50)]         # made during the storm
    hogs += [hog(g, "grow", "16", "5") for g in second]
    for h in hogs:
        assert h.wait_exit(30) == -9
    took = time.monotonic() - began
    print(f"100 OOM kills in {took:.1f} s")
    assert took < 10.0, "the storm fits in 10 s"
    docs = [find(daemon, h.pid, timeout=30, sealed=True) for h in hogs]
    assert len({d["id"] for d in docs}) == 100, "one incident per kill"
    wrong = [(g.path, {k: d.get(k) for k in ("domain", "constraint", "constraint_source", "limit_source",
                                              "missing_reason", "probes", "notes", "victims")})
             for g, d in zip(first + second, docs) if d["domain"] != f"cgroup:{g.path}"]
    assert not wrong, json.dumps(wrong[:3], indent=1)
    assert daemon.status()["unattributed_kills"] == 0

"""Every source, through the engine, on the fixture trees of tests/fixtures
(their README says where each came from)."""

import os

import pytest

from memguard.clock import FakeClock
from memguard.config import Config
from memguard.runner import run_source
from memguard.engine.engine import Engine
from memguard.roots import Roots
from memguard.sources import build_sources

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures")
MiB = 2**20


def snapshot(name: str) -> dict:
    roots = Roots.under(os.path.join(FIXTURES, name))
    tick, slow = build_sources(Config(), roots)
    clock = FakeClock()
    runs = [run_source(s, clock.now()) for s in tick + slow]
    return Engine(Config(), clock.now(), "t").step(runs, clock.now()).snapshot.to_json()


def domains(doc):
    return {d["name"]: d for d in doc["domains"]}


def procs(doc):
    return {p["pid"]: p for p in doc["processes"]}


def states(doc):
    return {s["name"]: s["state"] for s in doc["sources"]}


@pytest.mark.parametrize("name", ["hybrid-v1", "v2-systemd", "wsl2", "wsl2-mismatch", "container"])
def test_every_tree_reads_without_a_skip_or_failure(name):
    doc = snapshot(name)
    assert doc["healthy"], doc["degraded"]
    assert all(not s["skipped"] for s in doc["sources"]), doc["sources"]


def test_hybrid_v1_captured_here():
    doc = snapshot("hybrid-v1")
    d = domains(doc)
    assert set(d) == {"host", "cgroup:/mgfix-parent", "cgroup:/mgfix-solo", "cgroup:/mgfix-oomed"}
    # the child without a limit of its own is its parent's; its processes too
    assert procs(doc)[2829]["cgroup"] == "/mgfix-parent/child"
    assert procs(doc)[2829]["domain"] == "cgroup:/mgfix-parent"
    assert d["cgroup:/mgfix-parent"]["limit_bytes"] == 512 * MiB
    # mgfix-solo sits at 99% of its limit, mostly page cache: not near an OOM
    solo = d["cgroup:/mgfix-solo"]
    assert solo["used_bytes"] > 0.99 * solo["limit_bytes"] and solo["usage_ratio"] < 0.5
    assert solo["psi"]["some"]["total_seconds"] > 0
    assert d["cgroup:/mgfix-oomed"]["oom_kills"] == 1 and d["host"]["oom_kills"] == 1
    assert procs(doc)[1]["domain"] == "host"


def test_v2_systemd_host():
    doc = snapshot("v2-systemd")
    d = domains(doc)
    base = "cgroup:/user.slice/user-1000.slice/user@1000.service/app.slice"
    assert set(d) == {"host", "cgroup:/system.slice/memguard.service",
                      "cgroup:/system.slice/system-postgresql.slice/postgresql@15-main.service",
                      f"{base}/build.slice", f"{base}/train-job.scope"}
    train = d[f"{base}/train-job.scope"]
    assert train["high_bytes"] < train["limit_bytes"] == 3 * 2**30
    assert train["swap_used_bytes"] == 700 * MiB and train["swap_limit_bytes"] == 2 * 2**30
    # the unlimited child's processes count against build.slice's 4G
    assert procs(doc)[52340]["domain"] == f"{base}/build.slice"
    assert d[f"{base}/build.slice"]["oom_kills"] == 2
    # uid comes from /proc/PID/status, not from the fixture files' owner
    assert procs(doc)[1187]["uid"] == 106 and procs(doc)[3398]["comm"] == "tmux: server"
    # ZFS: the ARC above c_min is reclaimable, so the working set is far below used
    assert doc["facts"]["meminfo"]["zfs_arc_reclaimable_bytes"] > 29 * 2**30
    host = d["host"]
    assert host["working_set_bytes"] < host["used_bytes"] - 29 * 2**30


def test_wsl2_is_one_domain_without_psi():
    doc = snapshot("wsl2")
    assert set(domains(doc)) == {"wsl"}
    assert states(doc)["psi"] == "unavailable" and states(doc)["wsl"] == "active"
    wsl = doc["facts"]["wsl"]
    assert wsl["wslconfig_memory"] == 8 * 2**30 and wsl["wslconfig_matches"] is True
    assert wsl["wslconfig_auto_memory_reclaim"] == "gradual"
    assert all(p["domain"] == "wsl" for p in doc["processes"])


def test_wsl2_config_not_applied():
    wsl = snapshot("wsl2-mismatch")["facts"]["wsl"]
    assert wsl["wslconfig_memory"] == 16 * 2**30 and wsl["wslconfig_matches"] is False


def test_container_namespace_root_is_the_containers_limit():
    doc = snapshot("container")
    d = domains(doc)
    assert d["cgroup:/"]["limit_bytes"] == 512 * MiB
    assert d["host"]["limit_bytes"] > 100 * 2**30   # the node's RAM, seen through /proc/meminfo
    assert {p["domain"] for p in doc["processes"]} == {"cgroup:/"}

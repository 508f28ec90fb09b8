"""The test harness itself (tests/kernel.py, tests/conftest.py), on the real kernel.

Figures measured on the build host (Linux 6.18, cgroup v1 memory, no swap):
100 MiB anonymous in a 256 MiB cgroup -> usage 100.5 MiB; 300 MiB written
through the page cache in a 128 MiB cgroup -> usage pinned at 128.0 MiB, not
killed, ~123 MiB of it file pages; a hog growing 8 MiB every 20 ms in a 64 MiB
cgroup -> OOM-killed after 7 steps, ~0.35 s after its start.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.kernel import (CAPABILITY_NAMES, CI_REQUIRED, MIB, Capabilities, Capability, Hog, V1MemoryCgroup,
                          _TestCgroup, ensure_tracefs, filesystem_type,
                          leftover_test_cgroups, read_int, read_keyed,
                          require, wait_until)

pytestmark = pytest.mark.root

# Memory-backed file systems: a file there is shmem, not reclaimable page cache.
from tests.conftest import MEMORY_FILESYSTEMS


def memory_cgroup_of(pid: int) -> str:
    """The v1 memory cgroup path in /proc/PID/cgroup."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _id, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return path
    raise AssertionError(f"pid {pid} has no memory cgroup line")


def test_anon_hog_is_charged_to_its_cgroup(v1_cgroup, hog):
    cg = v1_cgroup(256 * MIB)
    h = hog(cg, "anon", 100)

    assert h.wait_ready(timeout=30) == 100 * MIB
    assert memory_cgroup_of(h.pid) == cg.path
    assert cg.procs() == [h.pid]
    usage = cg.usage()
    assert 100 * MIB <= usage <= 115 * MIB, f"usage {usage / MIB:.1f} MiB"
    assert cg.stat()["total_rss"] >= 100 * MIB

    assert h.stop() == 0  # SIGTERM ends it cleanly
    assert not h.killed_by_sigkill


def test_file_hog_fills_page_cache_without_oom(v1_cgroup, hog, page_cache_dir):
    assert filesystem_type(page_cache_dir) not in MEMORY_FILESYSTEMS
    limit = 128 * MIB
    cg = v1_cgroup(limit)
    target = page_cache_dir / "hog-file"
    h = hog(cg, "file", target, 300)
    try:
        assert h.wait_ready(timeout=120) == 300 * MIB
        assert target.stat().st_size == 300 * MIB
        assert h.returncode is None, "the file hog must not be killed"
        assert cg.oom_control()["oom_kill"] == 0
        usage = cg.usage()
        assert limit - 16 * MIB <= usage <= limit, f"usage {usage / MIB:.1f} MiB"
        stat = cg.stat()
        file_pages = stat["total_inactive_file"] + stat["total_active_file"]
        assert file_pages >= limit // 2, f"file pages {file_pages / MIB:.1f} MiB"
        assert stat["total_rss"] < 8 * MIB
    finally:
        h.stop()
        target.unlink(missing_ok=True)


def test_growing_hog_is_oom_killed(v1_cgroup, hog):
    cg = v1_cgroup(64 * MIB)
    kills_before = cg.oom_control()["oom_kill"]
    host_kills_before = read_keyed("/proc/vmstat")["oom_kill"]
    started = time.monotonic()
    h = hog(cg, "grow", 8, 20)

    assert h.wait_exit(timeout=30) == -signal.SIGKILL
    elapsed = time.monotonic() - started
    assert h.killed_by_sigkill and not h.sigkilled_by_harness
    assert elapsed < 10, f"OOM kill took {elapsed:.2f} s"
    grew = [int(x.split()[1]) for x in h.lines() if x.startswith("grew ")]
    assert grew and max(grew) <= 64 * MIB
    wait_until(lambda: cg.oom_control()["oom_kill"] > kills_before, 5,
               what="memory.oom_control oom_kill to increment")
    assert read_keyed("/proc/vmstat")["oom_kill"] > host_kills_before


def test_grow_stops_at_max_and_reports_ready(v1_cgroup, hog):
    cg = v1_cgroup(64 * MIB)
    h = hog(cg, "grow", 4, 1, 12)
    assert h.wait_ready(timeout=30) == 12 * MIB
    assert h.lines()[:3] == [f"grew {n * MIB}" for n in (4, 8, 12)]


def test_nested_cgroups_and_unified_mirror(v1_cgroup, hog):
    parent = v1_cgroup(256 * MIB, unified=True)
    limited = parent.child("limited", 32 * MIB)
    open_ended = parent.child("open")

    assert limited.path == f"{parent.path}/limited"
    assert limited.fs_path == parent.fs_path / "limited"
    assert read_int(limited.fs_path / "memory.limit_in_bytes") == 32 * MIB
    assert read_int(open_ended.fs_path / "memory.limit_in_bytes") > 256 * MIB
    assert parent.unified_fs_path == Path("/sys/fs/cgroup/unified") / parent.path.lstrip("/")
    assert "some avg10=" in limited.pressure_path.read_text()

    h = hog(limited, "anon", 8)
    h.wait_ready(timeout=30)
    assert memory_cgroup_of(h.pid) == limited.path
    assert f"0::{limited.path}" in Path(f"/proc/{h.pid}/cgroup").read_text().splitlines()
    assert parent.usage() >= 8 * MIB  # hierarchical: the parent sees the child's charge


def test_memsw_limit_when_present(v1_cgroup):
    cg = v1_cgroup(64 * MIB, memsw_limit=64 * MIB)
    memsw = cg.fs_path / "memory.memsw.limit_in_bytes"
    assert cg.memsw_applied == memsw.exists()
    if cg.memsw_applied:
        assert read_int(memsw) == 64 * MIB


def test_close_kills_what_is_left_and_removes_the_tree(caps, hog_binary):
    require("root")
    require("v1_memory")
    cg = V1MemoryCgroup(64 * MIB, unified=True)
    child = cg.child("leaf")
    h = Hog(hog_binary, ["anon", 4], child)
    try:
        h.wait_ready(timeout=30)
        cg.close()  # the hog is still running in it
        assert h.wait_exit(timeout=10) == -signal.SIGKILL
        assert not any(p.exists() for p in cg.fs_paths + child.fs_paths)
    finally:
        h.close()
        cg.close()
    assert cg.path not in {f"/{p.name}" for p in leftover_test_cgroups(caps)}


def test_hog_that_fails_reports_why(v1_cgroup, hog):
    h = hog(v1_cgroup(64 * MIB), "anon", "zero")
    with pytest.raises(AssertionError, match="exited before 'ready'.*usage: hog"):
        h.wait_ready(timeout=10)
    assert h.returncode == 2


def test_cgroup_names_are_checked(v1_cgroup):
    with pytest.raises(ValueError, match="under mgtest-"):
        _TestCgroup("/process_api", dirs=[])  # no directory given: nothing to touch
    cg = v1_cgroup(64 * MIB)
    for bad in ("", "..", "a/b", "cgroup.procs"):
        with pytest.raises(ValueError, match="bad cgroup name"):
            cg.child(bad)


def test_v2_cgroup_when_the_host_has_one(v2_cgroup, hog):
    cg = v2_cgroup(256 * MIB)
    h = hog(cg, "anon", 100)
    assert h.wait_ready(timeout=30) == 100 * MIB
    assert 100 * MIB <= cg.usage() <= 115 * MIB


# ------------------------------------------------- capabilities and require()


def test_capabilities_of_this_host(caps):
    for name in ("root", "v1_memory", "psi", "proc_connector", "cc"):
        if not caps.get(name):
            require(name)  # a skip (or, under CI, a failure) that says which
    if not caps.v2_memory:
        assert "memory" in caps.v2_memory.reason
    assert "v2_memory" not in CI_REQUIRED


def _caps_without(name: str) -> Capabilities:
    fields = {n: Capability(True) for n in CAPABILITY_NAMES}
    fields[name] = Capability(False, "because the test says so")
    return Capabilities(**fields, v1_memory_mount=None, cgroup2_mount=None, compiler=None)


@pytest.mark.parametrize("name", sorted(CI_REQUIRED))
def test_require_fails_under_ci_and_skips_elsewhere(monkeypatch, name):
    caps = _caps_without(name)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=f"CI must have {name}: because"):
        require(name, caps)
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="because the test says so"):
        require(name, caps)


def test_require_v2_memory_skips_even_under_ci(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.skip.Exception):
        require("v2_memory", _caps_without("v2_memory"))


def test_require_returns_a_present_capability():
    caps = _caps_without("bcc")
    assert require("psi", caps) == Capability(True)
    with pytest.raises(ValueError, match="unknown capability"):
        require("gpu", caps)


def test_wait_until_says_what_it_waited_for():
    assert wait_until(lambda: 7, timeout=1) == 7
    with pytest.raises(AssertionError, match="waiting for the moon .*last value: 0"):
        wait_until(lambda: 0, timeout=0.05, interval=0.01, what="the moon")


def test_ensure_tracefs_mounts_it():
    require("root")
    require("tracefs")
    mount_point = ensure_tracefs()
    assert filesystem_type(mount_point) == "tracefs"
    assert (mount_point / "events" / "oom" / "mark_victim" / "format").exists()


def test_no_test_cgroup_outlives_its_test():
    # Runs after the tests above; each fixture asserts this too, at teardown.
    if "PYTEST_XDIST_WORKER" in os.environ:
        pytest.skip("other workers' cgroups may exist")
    require("v1_memory")
    assert leftover_test_cgroups() == []


import os
import shutil

import pytest

from memguard.clock import FakeClock
from memguard.sources.base import Unavailable, skip_reason
from memguard.sources.cgroups import Binding, CgroupSource, discover, parse_mounts, resolve

MiB = 2**20
HOST = 8_000_000 * 1024


def names(h):
    return [d.name for d in h.domains]


def test_mounts_of_a_hybrid_host(v1_host):
    m = parse_mounts(open(v1_host.top + "/proc/self/mounts").read(), v1_host.roots)
    assert m.v1_memory == v1_host.top + "/sys/fs/cgroup/memory"
    assert m.unified == v1_host.top + "/sys/fs/cgroup/unified"
    assert not m.v2_memory


def test_mounts_of_a_v2_host(v2_host):
    m = parse_mounts(open(v2_host.top + "/proc/self/mounts").read(), v2_host.roots)
    assert m.v1_memory is None and m.v2_memory


def test_escaped_mountpoint(tree):
    tree.write("proc/self/mounts", "cgroup /sys/fs/cgroup/my\\040memory cgroup rw,memory 0 0\n")
    m = parse_mounts(open(tree.top + "/proc/self/mounts").read(), tree.roots)
    assert m.v1_memory == tree.top + "/sys/fs/cgroup/my memory"


def _discover(host):
    m = parse_mounts(open(host.top + "/proc/self/mounts").read(), host.roots)
    return discover(m, HOST, "host")


def test_unlimited_child_belongs_to_its_limited_parent(v1_host):
    # Issue 11: a cgroup without a limit of its own under a limited parent is the parent's.
    v1_host.v1_cgroup("/jobs", limit=512 * MiB)
    v1_host.v1_cgroup("/jobs/child", limit=None, effective=512 * MiB)
    v1_host.v1_cgroup("/jobs/loose", limit=1024 * MiB, effective=512 * MiB)  # above the parent's
    v1_host.v1_cgroup("/jobs/tight", limit=128 * MiB)
    v1_host.v1_cgroup("/free", limit=None)
    h = _discover(v1_host)
    assert names(h) == ["cgroup:/jobs", "cgroup:/jobs/tight"]
    assert h.domain_of("/jobs/child", "host") == "cgroup:/jobs"
    assert h.domain_of("/jobs/loose", "host") == "cgroup:/jobs"
    assert h.domain_of("/jobs/tight", "host") == "cgroup:/jobs/tight"
    assert h.domain_of("/free", "host") == "host"
    # Issue 16: a cgroup made since the walk may have a limit of its own; its
    # parent's domain is not assumed (resolve() reads its limits instead).
    assert h.domain_of("/jobs/child/not-walked-yet", "host") is None


def test_resolve_reads_the_binding_limit_along_a_path_the_walk_never_saw(v1_host):
    # Issue 16: cgroups made after the walk, read at the moment of a kill.
    h_mounts = parse_mounts(open(v1_host.top + "/proc/self/mounts").read(), v1_host.roots)
    v1_host.v1_cgroup("/jobs", limit=512 * MiB)
    v1_host.v1_cgroup("/jobs/new", limit=48 * MiB, usage=30 * MiB)
    v1_host.v1_cgroup("/jobs/new/leaf", limit=None, effective=48 * MiB)
    v1_host.v1_cgroup("/jobs/wide", limit=1024 * MiB, effective=512 * MiB)
    v1_host.v1_cgroup("/free", limit=None)
    got = resolve(h_mounts, "/jobs/new/leaf", HOST)
    assert (got.binding, got.limit) == ("/jobs/new", 48 * MiB)
    assert got.usage == 30 * MiB
    assert (resolve(h_mounts, "/jobs/wide", HOST).binding, resolve(h_mounts, "/jobs/wide", HOST).limit) \
        == ("/jobs", 512 * MiB)
    assert resolve(h_mounts, "/free", HOST) == Binding("/free", None, None, None)
    assert resolve(h_mounts, "/gone", HOST) is None
    assert resolve(h_mounts, "/jobs/../etc", HOST) is None


def test_limit_at_or_above_host_ram_is_no_domain(v1_host):
    v1_host.v1_cgroup("/huge", limit=HOST)
    assert names(_discover(v1_host)) == []


def test_v2_effective_limit_walks_up(v2_host):
    v2_host.v2_cgroup("/", limit=None, root=True)
    v2_host.v2_cgroup("/app.slice", limit=1024 * MiB)
    v2_host.v2_cgroup("/app.slice/web.service", limit=None, current=300 * MiB)
    v2_host.v2_cgroup("/app.slice/db.service", limit=2048 * MiB, current=100 * MiB)
    v2_host.v2_cgroup("/app.slice/small.service", limit=256 * MiB, current=100 * MiB, inactive_file=60 * MiB)
    src = CgroupSource(v2_host.roots)
    reading = src.collect(FakeClock().now())
    by = {s.domain: s for s in reading.samples}
    assert set(by) == {"cgroup:/app.slice", "cgroup:/app.slice/small.service"}
    assert by["cgroup:/app.slice/small.service"].limit == 256 * MiB
    assert by["cgroup:/app.slice/small.service"].working_set == 40 * MiB
    assert reading.domain_of("/app.slice/db.service") == "cgroup:/app.slice"


def test_v2_child_limit_above_parent_reports_the_parents(v2_host):
    v2_host.v2_cgroup("/", limit=None, root=True)
    v2_host.v2_cgroup("/a", limit=1024 * MiB)
    v2_host.v2_cgroup("/a/b", limit=512 * MiB)
    # The parent's limit is lowered after discovery: b's effective limit
    # follows its own file, and a's on rediscovery.
    (a, b) = sorted(CgroupSource(v2_host.roots).collect(FakeClock().now()).samples, key=lambda s: s.domain)
    assert (a.limit, b.limit) == (1024 * MiB, 512 * MiB)


def test_container_namespace_root_with_a_limit_is_a_domain(v2_host):
    # Inside a container with a private cgroup namespace, / is the container's cgroup.
    v2_host.v2_cgroup("/", limit=512 * MiB, current=100 * MiB, root=True)
    (s,) = CgroupSource(v2_host.roots).collect(FakeClock().now()).samples
    assert s.domain == "cgroup:/" and s.limit == 512 * MiB


def test_include_exclude_and_cap(v1_host):
    for i in range(5):
        v1_host.v1_cgroup(f"/job{i}", limit=64 * MiB)
    v1_host.v1_cgroup("/system", limit=None)
    v1_host.v1_cgroup("/system/svc", limit=64 * MiB)
    m = parse_mounts(open(v1_host.top + "/proc/self/mounts").read(), v1_host.roots)
    h = discover(m, HOST, "host", exclude=("/system/*",), max_tracked=3)
    assert names(h) == ["cgroup:/job0", "cgroup:/job1", "cgroup:/job2"]  # path order
    assert h.untracked == 2 and h.excluded == 1
    assert h.domain_of("/system/svc", "host") == "host"


def test_v1_sample_fields(v1_host):
    v1_host.v1_cgroup("/g", limit=256 * MiB, usage=200 * MiB, inactive_file=150 * MiB, oom_kill=2)
    (s,) = CgroupSource(v1_host.roots).collect(FakeClock().now()).samples
    assert (s.used, s.working_set, s.reclaimable, s.limit) == (200 * MiB, 50 * MiB, 150 * MiB, 256 * MiB)
    assert s.oom_kills == 2 and s.swap_used == 0 and s.swap_limit is None
    assert s.psi is None  # no unified counterpart in this tree
    v1_host.write("sys/fs/cgroup/unified/g/memory.pressure", "some avg10=2.00 avg60=0 avg300=0 total=9\n")
    (s,) = CgroupSource(v1_host.roots).collect(FakeClock().now()).samples
    assert s.psi.some.avg10 == 2.0


@pytest.mark.parametrize("damage,reason", [
    (lambda base: open(base + "/memory.stat", "w").write("garbage\n"), "malformed"),
    (lambda base: open(base + "/memory.usage_in_bytes", "w").write(""), "malformed"),
    (lambda base: os.unlink(base + "/memory.oom_control"), "vanished"),
    (lambda base: (os.unlink(base + "/memory.stat"), os.mkdir(base + "/memory.stat")), "io_error"),
])
def test_a_bad_file_is_skipped_and_counted(v1_host, damage, reason):
    v1_host.v1_cgroup("/bad", limit=64 * MiB)
    v1_host.v1_cgroup("/good", limit=64 * MiB)
    src = CgroupSource(v1_host.roots)
    src.collect(FakeClock().now())
    damage(v1_host.top + "/sys/fs/cgroup/memory/bad")
    reading = src.collect(FakeClock().now())
    assert [s.domain for s in reading.samples] == ["cgroup:/good"]
    assert reading.skipped[reason] == 1
    assert "cgroup:/bad" in reading.tracked or reason == "vanished"


def test_cgroup_removed_between_discovery_and_read(v1_host):
    v1_host.v1_cgroup("/gone", limit=64 * MiB)
    src = CgroupSource(v1_host.roots)
    clock = FakeClock()
    assert len(src.collect(clock.now()).samples) == 1
    shutil.rmtree(v1_host.top + "/sys/fs/cgroup/memory/gone")
    reading = src.collect(clock.now())
    assert reading.samples == [] and reading.skipped["vanished"] == 1
    clock.advance(1)
    reading = src.collect(clock.now())   # rediscovered at once, not after discovery_interval
    assert reading.tracked == set() and not reading.skipped


def test_recreated_cgroup_has_a_new_identity(v1_host):
    v1_host.v1_cgroup("/again", limit=64 * MiB)
    src = CgroupSource(v1_host.roots, discovery_interval=0)
    (first,) = src.collect(FakeClock().now()).samples
    shutil.rmtree(v1_host.top + "/sys/fs/cgroup/memory/again")
    v1_host.mkdir("sys/fs/cgroup/memory/placeholder")  # keep the inode from being reused at once
    v1_host.v1_cgroup("/again", limit=64 * MiB)
    (second,) = src.collect(FakeClock().now()).samples
    assert first.identity != second.identity


def test_no_memory_controller_is_unavailable_with_a_fix(tree):
    tree.write("proc/meminfo", "MemTotal: 1000 kB\n")
    tree.write("proc/self/mounts", "cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n")
    tree.write("sys/fs/cgroup/cgroup.controllers", "cpu io\n")
    with pytest.raises(Unavailable, match="cgroup_enable=memory"):
        CgroupSource(tree.roots).collect(FakeClock().now())


def test_skip_reasons_are_stable_labels():
    assert skip_reason(PermissionError(13, "denied")) == "permission"
    assert skip_reason(FileNotFoundError(2, "gone")) == "vanished"
    assert skip_reason(OSError(5, "EIO")) == "io_error"
    assert skip_reason(ValueError("x")) == "malformed"

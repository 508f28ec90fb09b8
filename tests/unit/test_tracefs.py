"""The tracefs probe's lines (probes/tracefs.py)."""

from memguard.probes.tracefs import memory_hierarchy, parse_attach

# Captured on the build host (Linux 6.18, hybrid cgroups) on 2026-12-06:
# `echo $BASHPID > "/sys/fs/cgroup/memory/mgtest-x y/cgroup.procs"` with
# cgroup_attach_task enabled in a trace instance, filtered to dst_root 4.
ATTACH = ("           sleep-11455   [000] d..1. 26015.928165: cgroup_attach_task: dst_root=4 dst_id=234071 "
          "dst_level=1 dst_path=/mgtest-x y pid=11455 comm=bash")

# /proc/cgroups of the same host: memory is a v1 controller on hierarchy 4.
PROC_CGROUPS = """\
#subsys_name	hierarchy	num_cgroups	enabled
cpuset	3	1	1
cpu	1	1	1
cpuacct	2	1	1
blkio	7	1	1
memory	4	67	1
devices	5	1	1
freezer	6	1	1
net_cls	0	1	1
"""


def test_a_move_into_a_memory_cgroup_names_the_process_and_the_path_with_its_space():
    assert parse_attach(ATTACH) == (11455, "/mgtest-x y")
    assert parse_attach(ATTACH.replace("cgroup_attach_task", "mark_victim")) is None
    assert parse_attach("") is None


def test_the_memory_controllers_hierarchy():
    assert memory_hierarchy(PROC_CGROUPS) == 4
    assert memory_hierarchy(PROC_CGROUPS.replace("memory\t4\t67\t1", "memory\t0\t67\t1")) == 0   # cgroup2's
    assert memory_hierarchy(PROC_CGROUPS.replace("memory\t4\t67\t1", "memory\t4\t67\t0")) is None  # disabled

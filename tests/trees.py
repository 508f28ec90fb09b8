"""Small kernel file trees built in a temporary directory, for unit and
end-to-end tests (as oomd's Fixture::makeDir does)."""

from __future__ import annotations

import os

from memguard.roots import Roots

MEMINFO = """\
MemTotal:        8000000 kB
MemFree:         1000000 kB
MemAvailable:    5000000 kB
Buffers:           10000 kB
Cached:          3500000 kB
SwapTotal:       2000000 kB
SwapFree:        1500000 kB
Committed_AS:    6000000 kB
CommitLimit:     6000000 kB
"""

MOUNTS_V1 = """\
sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0
proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
"""

MOUNTS_V2 = """\
cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime,nsdelegate 0 0
"""

PSI = "some avg10=1.50 avg60=0.50 avg300=0.10 total=123456\nfull avg10=0.75 avg60=0.25 avg300=0.05 total=65432\n"

UNLIMITED_V1 = "9223372036854771712\n"


def v1_stat(limit: int | None, inactive_file: int = 0, swap: int | None = 0) -> str:
    lines = ["cache 0", "rss 0", f"hierarchical_memory_limit {limit or 9223372036854771712}",
             "hierarchical_memsw_limit 9223372036854771712", f"total_inactive_file {inactive_file}"]
    if swap is not None:
        lines.append(f"total_swap {swap}")
    return "\n".join(lines) + "\n"


class Tree:
    """A directory of kernel files: ``tree.write("proc/meminfo", text)``."""

    def __init__(self, top: str) -> None:
        self.top = top
        self.roots = Roots.under(top)

    def write(self, rel: str, text: str) -> str:
        path = os.path.join(self.top, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        return path

    def mkdir(self, rel: str) -> str:
        path = os.path.join(self.top, rel)
        os.makedirs(path, exist_ok=True)
        return path

    def v1_cgroup(self, path: str, *, limit: int | None, usage: int = 0,
                  inactive_file: int = 0, effective: int | None = None, oom_kill: int = 0) -> None:
        """A v1 memory cgroup; *effective* is the kernel's hierarchical limit."""
        base = "sys/fs/cgroup/memory" + path.rstrip("/")
        self.write(f"{base}/memory.limit_in_bytes", f"{limit}\n" if limit else UNLIMITED_V1)
        self.write(f"{base}/memory.usage_in_bytes", f"{usage}\n")
        eff = effective if effective is not None else limit
        self.write(f"{base}/memory.stat", v1_stat(eff, inactive_file))
        self.write(f"{base}/memory.oom_control", f"oom_kill_disable 0\nunder_oom 0\noom_kill {oom_kill}\n")

    def v2_cgroup(self, path: str, *, limit: int | None, current: int = 0,
                  inactive_file: int = 0, oom_kill: int = 0, root: bool = False) -> None:
        base = "sys/fs/cgroup" + path.rstrip("/")
        if not root or limit is not None:
            self.write(f"{base}/memory.max", f"{limit}\n" if limit else "max\n")
        self.write(f"{base}/memory.current", f"{current}\n")
        self.write(f"{base}/memory.stat", f"anon {current - inactive_file}\nfile {inactive_file}\n"
                                          f"inactive_file {inactive_file}\n")
        self.write(f"{base}/memory.events", f"low 0\nhigh 0\nmax 0\noom 0\noom_kill {oom_kill}\n")
        self.write(f"{base}/memory.high", "max\n")
        self.write(f"{base}/memory.swap.current", "0\n")
        self.write(f"{base}/memory.swap.max", "max\n")
        self.write(f"{base}/memory.pressure", PSI)




def hybrid_host(tree: Tree) -> Tree:
    """A hybrid host like ours: memory on v1, PSI on the unified tree."""
    tree.write("proc/meminfo", MEMINFO)
    tree.write("proc/self/mounts", MOUNTS_V1)
    tree.write("proc/pressure/memory", PSI)
    tree.write("proc/vmstat", "nr_free_pages 1\noom_kill 7\n")
    tree.write("proc/sys/kernel/random/boot_id", "5d0a9e4c-0b1e-4c39-9a51-7d1b2f3c4e5f\n")
    tree.v1_cgroup("/", limit=None, usage=4_000_000_000)
    tree.write("sys/fs/cgroup/unified/cgroup.controllers", "cpu io pids\n")
    return tree


def v2_host(tree: Tree) -> Tree:
    """A pure cgroup v2 host."""
    tree.write("proc/meminfo", MEMINFO)
    tree.write("proc/self/mounts", MOUNTS_V2)
    tree.write("proc/pressure/memory", PSI)
    tree.write("proc/vmstat", "oom_kill 0\n")
    tree.write("sys/fs/cgroup/cgroup.controllers", "cpuset cpu io memory pids\n")
    return tree

"""Helpers the Python workloads share: memory that is really used, and the
limit of the memory cgroup the workload runs in.

Memory here is private anonymous ``mmap`` with every page written, so it is
charged to the cgroup at once (as ``rss``) and, when closed, goes back to
the kernel at once (glibc's malloc may keep freed memory, which would hide a
sawtooth).  Python's ``mmap.mmap(-1, n)`` alone is MAP_SHARED: shmem, which
v1 counts as ``cache``/``shmem``/``mapped_file``, not ``rss``.
"""

import mmap
import os
import sys
import time

PAGE = mmap.PAGESIZE
MIB = 1 << 20


def touched(nbytes: int) -> mmap.mmap:
    """An anonymous mapping of ``nbytes`` with every page written."""
    m = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE)
    touch(m)
    return m


def touch(m: mmap.mmap) -> None:
    """Write one byte in every page of ``m``."""
    m[::PAGE] = b"\x01" * len(range(0, len(m), PAGE))


def own_memory_cgroup() -> str:
    """The v1 memory cgroup directory this process is in."""
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if "memory" in controllers.split(","):
                return "/sys/fs/cgroup/memory" + path
    raise SystemExit("not in a v1 memory cgroup (run me under bench/record.py)")


def read_int(path: str) -> int:
    with open(path) as f:
        return int(f.read())


def sleep_until(when: float) -> None:
    """Sleep until CLOCK_MONOTONIC reaches ``when`` (no drift over many ticks)."""
    left = when - time.monotonic()
    if left > 0:
        time.sleep(left)


def log(msg: str) -> None:
    """One line on stdout, named after the script (record.py keeps the tail)."""
    print(f"[{os.path.basename(sys.argv[0])}] {msg}", flush=True)

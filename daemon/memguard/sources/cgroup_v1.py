"""Memory cgroups on the v1 hierarchy (``memory`` controller mounted alone).

Kernel docs: Documentation/admin-guide/cgroup-v1/memory.rst.  Per cgroup::

    memory.limit_in_bytes   9223372036854771712    (PAGE_COUNTER_MAX: no limit)
    memory.usage_in_bytes   104857600
    memory.stat             cache 0 / rss 104857600 / ... / hierarchical_memory_limit N /
                            total_inactive_file N / total_swap N (with swap accounting)
    memory.oom_control      oom_kill_disable 0 / under_oom 0 / oom_kill 3 (oom_kill: 4.13+)

``hierarchical_memory_limit`` is already the smallest limit among the cgroup
and its ancestors: the effective limit, maintained by the kernel.
"""

from __future__ import annotations

import os

from ..model import PSI, Sample
from ..roots import PseudoFiles, read_text

# A limit at or above this is "no limit": the kernel shows PAGE_COUNTER_MAX
# rounded to pages (9223372036854771712 on x86-64 with 4 KiB pages).
UNLIMITED = 1 << 62


def parse_limit(text: str) -> int | None:
    """Bytes, or None for no limit.  Raises ValueError on garbage."""
    value = int(text.strip())
    return None if value >= UNLIMITED else value


def pick(data: bytes, keys: tuple[bytes, ...]) -> dict[bytes, int]:
    """The integer values of *keys* in a ``key value`` file, without parsing
    the lines we do not need (memory.stat has ~45).  A key not in the file is
    left out; a key whose value is not an integer raises ValueError."""
    out = {}
    for key in keys:
        if data.startswith(key + b" "):
            start = len(key) + 1
        else:
            i = data.find(b"\n" + key + b" ")
            if i < 0:
                continue
            start = i + len(key) + 2
        end = data.find(b"\n", start)
        out[key] = int(data[start:] if end < 0 else data[start:end])
    return out


_STAT_KEYS = (b"hierarchical_memory_limit", b"hierarchical_memsw_limit", b"total_inactive_file", b"total_swap")


def read_limit(fs_path: str) -> int | None:
    return parse_limit(read_text(os.path.join(fs_path, "memory.limit_in_bytes")))


def read_sample(name: str, fs_path: str, psi: PSI | None, files: PseudoFiles,
                identity: int | None = None) -> Sample:
    """One v1 cgroup's sample.  Raises OSError (FileNotFoundError or ENODEV
    when it was removed) or ValueError (a malformed file, naming what is
    missing); the caller counts the skip."""
    used = int(files.read(os.path.join(fs_path, "memory.usage_in_bytes")))
    stat = pick(files.read(os.path.join(fs_path, "memory.stat")), _STAT_KEYS)
    if b"hierarchical_memory_limit" not in stat:
        raise ValueError(f"{fs_path}/memory.stat lacks hierarchical_memory_limit")
    oom = pick(files.read(os.path.join(fs_path, "memory.oom_control")), (b"oom_kill",))
    limit = stat[b"hierarchical_memory_limit"]
    limit = None if limit >= UNLIMITED else limit
    inactive_file = stat.get(b"total_inactive_file")
    swap_used = stat.get(b"total_swap")  # present only with swap accounting
    memsw = stat.get(b"hierarchical_memsw_limit")
    swap_limit = None
    if swap_used is not None and memsw is not None and memsw < UNLIMITED and limit is not None:
        swap_limit = max(0, memsw - limit)  # v1's memsw limit counts memory plus swap
    reclaimable = min(inactive_file, used) if inactive_file is not None else None
    return Sample(
        domain=name, kind="cgroup", used=used,
        working_set=used - (reclaimable or 0), limit=limit, reclaimable=reclaimable,
        swap_used=swap_used, swap_limit=swap_limit,
        oom_kills=oom.get(b"oom_kill"), psi=psi,  # oom_kill: since 4.13
        identity=identity,
    )

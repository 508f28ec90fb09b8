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
from ..roots import read_text

# A limit at or above this is "no limit": the kernel shows PAGE_COUNTER_MAX
# rounded to pages (9223372036854771712 on x86-64 with 4 KiB pages).
UNLIMITED = 1 << 62


def parse_limit(text: str) -> int | None:
    """Bytes, or None for no limit.  Raises ValueError on garbage."""
    value = int(text.strip())
    return None if value >= UNLIMITED else value


def parse_flat_keyed(text: str) -> dict[str, int]:
    """``key value`` lines (memory.stat, memory.oom_control, memory.events).

    Raises ValueError on a line that is not two fields with an integer value:
    a truncated or foreign file must not be read as zeros.
    """
    out: dict[str, int] = {}
    for line in text.splitlines():
        if not line:
            continue
        key, _, value = line.partition(" ")
        out[key] = int(value)
    if not out:
        raise ValueError("empty file")
    return out


def read_limit(fs_path: str) -> int | None:
    return parse_limit(read_text(os.path.join(fs_path, "memory.limit_in_bytes")))


def read_sample(name: str, fs_path: str, psi: PSI | None) -> Sample:
    """One v1 cgroup's sample.  Raises OSError (FileNotFoundError when it was
    removed) or ValueError (malformed file); the caller counts the skip."""
    used = int(read_text(os.path.join(fs_path, "memory.usage_in_bytes")))
    stat = parse_flat_keyed(read_text(os.path.join(fs_path, "memory.stat")))
    oom = parse_flat_keyed(read_text(os.path.join(fs_path, "memory.oom_control")))
    limit = stat.get("hierarchical_memory_limit")
    limit = None if limit is None or limit >= UNLIMITED else limit
    inactive_file = stat.get("total_inactive_file")
    swap_used = stat.get("total_swap")  # present only with swap accounting
    memsw = stat.get("hierarchical_memsw_limit")
    swap_limit = None
    if swap_used is not None and memsw is not None and memsw < UNLIMITED and limit is not None:
        swap_limit = max(0, memsw - limit)  # v1's memsw limit counts memory plus swap
    reclaimable = min(inactive_file, used) if inactive_file is not None else None
    return Sample(
        domain=name, kind="cgroup", used=used,
        working_set=used - (reclaimable or 0), limit=limit, reclaimable=reclaimable,
        swap_used=swap_used, swap_limit=swap_limit,
        oom_kills=oom.get("oom_kill"), psi=psi,
    )

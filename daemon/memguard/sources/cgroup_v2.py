"""Memory cgroups on the unified (v2) hierarchy.

Kernel docs: Documentation/admin-guide/cgroup-v2.rst, "Memory Interface Files".
Per cgroup::

    memory.current      104857600
    memory.max          max | 268435456
    memory.high         max | 234881024
    memory.stat         anon 104857600 / file 0 / ... / inactive_file 0 / ...
    memory.events       low 0 / high 0 / max 12 / oom 1 / oom_kill 1 / oom_group_kill 0
    memory.swap.current 0          (CONFIG_SWAP)
    memory.swap.max     max

v2 has no ``hierarchical_memory_limit``: the effective limit is the smallest
``memory.max`` on the way up, which discovery computes for the ancestors.
"""

from __future__ import annotations

import os

from ..model import PSI, Sample
from ..roots import PseudoFiles, read_optional
from .cgroup_v1 import pick


def parse_max(text: str | bytes) -> int | None:
    """``max`` is None (no limit); otherwise bytes.  Raises ValueError."""
    text = text.strip()
    return None if text in ("max", b"max") else int(text)


def read_limit(fs_path: str) -> int | None:
    """The cgroup's own memory.max; None when unlimited or absent (the real root)."""
    text = read_optional(os.path.join(fs_path, "memory.max"))
    return None if text is None else parse_max(text)


def _min_limit(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def read_sample(name: str, fs_path: str, ancestors_limit: int | None, psi: PSI | None,
                files: PseudoFiles, identity: int | None = None) -> Sample:
    """One v2 cgroup's sample.  Raises OSError or ValueError like cgroup_v1."""
    used = int(files.read(os.path.join(fs_path, "memory.current")))
    stat = pick(files.read(os.path.join(fs_path, "memory.stat")), (b"inactive_file",))
    if b"inactive_file" not in stat:
        raise ValueError(f"{fs_path}/memory.stat lacks inactive_file")
    events = pick(files.read(os.path.join(fs_path, "memory.events")), (b"oom_kill",))
    own = files.read_optional(os.path.join(fs_path, "memory.max"))
    limit = _min_limit(None if own is None else parse_max(own), ancestors_limit)
    high = files.read_optional(os.path.join(fs_path, "memory.high"))
    swap = files.read_optional(os.path.join(fs_path, "memory.swap.current"))  # CONFIG_SWAP
    swap_max = files.read_optional(os.path.join(fs_path, "memory.swap.max"))
    reclaimable = min(stat[b"inactive_file"], used)
    return Sample(
        domain=name, kind="cgroup", used=used,
        working_set=used - reclaimable, limit=limit, reclaimable=reclaimable,
        swap_used=None if swap is None else int(swap),
        swap_limit=None if swap_max is None else parse_max(swap_max),
        high=None if high is None else parse_max(high),
        oom_kills=events.get(b"oom_kill"), psi=psi, identity=identity,
    )

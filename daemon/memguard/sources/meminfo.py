"""Host memory: /proc/meminfo, the ZFS ARC, and the kernel's global OOM-kill count.

Kernel docs: Documentation/filesystems/proc.rst ("meminfo").  Lines look like::

    MemTotal:       24634964 kB
    MemAvailable:   23960240 kB

The host domain's working set is ``MemTotal - MemAvailable - ARC above its
floor``: MemAvailable already counts page cache the kernel can drop, but not
the ZFS ARC, which shrinks under pressure too (the long-standing complaint
against earlyoom, rfjakob/earlyoom#170); only ``size - c_min`` can go, the
ARC never shrinks below ``c_min``.
"""

from __future__ import annotations

from ..clock import Instant
from ..model import Sample
from ..roots import Roots, read_optional, read_text
from .base import Reading

MEMINFO_FIELDS = ("MemTotal", "MemFree", "MemAvailable", "SwapTotal", "SwapFree",
                  "Committed_AS", "CommitLimit")


def parse_meminfo(text: str) -> dict[str, int]:
    """Every ``Key: value [kB]`` line, in bytes.  Malformed lines are left out;
    callers ask for what they need with :func:`require`."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        parts = rest.split()
        if not sep or not parts or not parts[0].isdigit():
            continue
        value = int(parts[0])
        out[key] = value * 1024 if parts[1:2] == ["kB"] else value
    return out


def require(fields: dict[str, int], name: str, source: str) -> int:
    try:
        return fields[name]
    except KeyError:
        raise ValueError(f"{source} lacks {name}") from None


def parse_arcstats(text: str) -> dict[str, int]:
    """ZFS's /proc/spl/kstat/zfs/arcstats: two header lines, then ``name type data``."""
    out: dict[str, int] = {}
    for line in text.splitlines()[2:]:
        parts = line.split()
        if len(parts) == 3 and parts[2].isdigit():
            out[parts[0]] = int(parts[2])
    return out


def arc_reclaimable(arc: dict[str, int]) -> int:
    """What the ARC gives back under pressure: ``size - c_min``, never below 0."""
    return max(0, arc.get("size", 0) - arc.get("c_min", 0))


def parse_vmstat_oom_kill(text: str) -> int | None:
    """The cumulative ``oom_kill`` counter of /proc/vmstat (since 4.13), or None."""
    for line in text.splitlines():
        if line.startswith("oom_kill "):
            return int(line.split()[1])
    return None


class HostSource:
    """The whole machine as one domain: ``host``, or ``wsl`` inside a WSL2 VM
    (there the VM's MemTotal is the limit Windows gave it, and host and VM
    are one pool of memory: one domain, never two alerts for the same bytes)."""

    name = "meminfo"

    def __init__(self, roots: Roots, domain: str = "host") -> None:
        self.domain = domain
        self.kind = domain.split(":", 1)[0]
        self.meminfo_path = roots.proc_path("meminfo")
        self.vmstat_path = roots.proc_path("vmstat")
        self.arc_path = roots.proc_path("spl", "kstat", "zfs", "arcstats")
        self.has_arc = read_optional(self.arc_path) is not None

    def collect(self, now: Instant) -> Reading:
        reading = Reading()
        mem = parse_meminfo(read_text(self.meminfo_path))
        total, free, reclaimable = self._memory(mem, reading)
        used = total - free
        swap_total = mem.get("SwapTotal")
        swap_used = None if swap_total is None else swap_total - mem.get("SwapFree", 0)
        oom_kills = None
        try:
            oom_kills = parse_vmstat_oom_kill(read_text(self.vmstat_path))
        except OSError as e:
            reading.skipped[f"vmstat: {e.strerror}"] += 1
        reading.samples.append(Sample(
            domain=self.domain, kind=self.kind, used=used,
            working_set=max(0, used - reclaimable), limit=total, reclaimable=reclaimable,
            swap_used=swap_used, swap_limit=swap_total, oom_kills=oom_kills,
        ))
        reading.facts["committed_bytes"] = mem.get("Committed_AS")
        reading.facts["commit_limit_bytes"] = mem.get("CommitLimit")
        return reading

    def look(self) -> int:
        """The working set alone, as ``collect`` finds it (/proc/meminfo and
        the ARC, not vmstat): what a resting daemon reads between ticks,
        on its event loop (in-kernel reads, a few tens of microseconds)."""
        reading = Reading()
        mem = parse_meminfo(read_text(self.meminfo_path))
        total, free, reclaimable = self._memory(mem, reading)
        return max(0, total - free - reclaimable)

    def _memory(self, mem: dict[str, int], reading: Reading) -> tuple[int, int, int]:
        """(MemTotal, MemFree, what the kernel can reclaim: MemAvailable's
        part above MemFree and the ARC above its floor)."""
        src = self.meminfo_path
        total = require(mem, "MemTotal", src)
        free = require(mem, "MemFree", src)
        available = require(mem, "MemAvailable", src)  # since 3.14
        reclaimable = max(0, available - free)
        if self.has_arc:
            try:
                arc = parse_arcstats(read_text(self.arc_path))
                reclaimable += arc_reclaimable(arc)
                reading.facts["zfs_arc_reclaimable_bytes"] = arc_reclaimable(arc)
            except OSError as e:
                reading.skipped[f"arcstats: {e.strerror}"] += 1
        return total, free, reclaimable

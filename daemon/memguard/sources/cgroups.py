"""Finding memory domains among cgroups, and sampling them each tick.

Discovery walks the memory hierarchy (v1 ``memory`` mount, or cgroup2 with
the memory controller) every ``discovery_interval`` and keeps as a domain
every cgroup whose own limit is below both host RAM and its parent's
effective limit.  A cgroup without a binding limit of its own belongs to the
nearest ancestor domain (or the host): its processes count against that
limit, and a kill there is that domain's.  On hybrid hosts (memory on v1,
PSI on the unified tree) a v1 cgroup's pressure is read from the unified
cgroup of the same path when one exists.

A cgroup is identified by its inode as well as its path: one removed and
made again is a new domain, with a fresh series.

A cgroup made since the last walk is unknown until the next one: the
daemon does not guess its domain from its ancestors (a fresh cgroup may
carry a limit of its own) but asks :meth:`CgroupSource.resolve`, which reads
the limits along its path there and then, and :meth:`CgroupSource.notice`
brings the next walk forward when a process starts in an unknown cgroup.
"""

from __future__ import annotations

import fnmatch
import os
from collections import Counter
from dataclasses import dataclass, field

from ..clock import Instant
from ..roots import PseudoFiles, Roots, read_optional, read_text
from . import cgroup_v1, cgroup_v2
from .base import Reading, Unavailable, skip_reason
from .meminfo import parse_meminfo, require
from .psi import parse_psi


# A walk brought forward by a process in an unknown cgroup runs at most this
# often: a build starting thousands of compilers in a new cgroup costs one walk
# (the walk of 200 cgroups takes ~10 ms here, bench/tick.py).
NOTICE_SPACING = 0.2


@dataclass(frozen=True)
class Mounts:
    v1_memory: str | None = None     # filesystem path of the v1 memory hierarchy
    unified: str | None = None       # filesystem path of the cgroup2 mount
    v2_memory: bool = False          # the cgroup2 root offers the memory controller
    v1_freezer: str | None = None    # filesystem path of the v1 freezer hierarchy


def _unescape(path: str) -> str:
    # /proc/self/mounts escapes space, tab, newline and backslash as octal.
    return path.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def parse_mounts(text: str, roots: Roots) -> Mounts:
    """The cgroup mounts in a /proc/self/mounts text, mapped under roots.sys."""
    v1 = unified = freezer = None
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 4:
            continue
        mountpoint, fstype, options = _unescape(parts[1]), parts[2], parts[3].split(",")
        if mountpoint == "/sys" or mountpoint.startswith("/sys/"):
            mountpoint = os.path.join(roots.sys, mountpoint[len("/sys/"):])
        if fstype == "cgroup" and "memory" in options and v1 is None:
            v1 = mountpoint
        elif fstype == "cgroup" and "freezer" in options and freezer is None:
            freezer = mountpoint
        elif fstype == "cgroup2" and unified is None:
            unified = mountpoint
    v2_memory = False
    if unified is not None:
        controllers = read_optional(os.path.join(unified, "cgroup.controllers"))
        v2_memory = controllers is not None and "memory" in controllers.split()
    return Mounts(v1, unified, v2_memory, freezer)


@dataclass(frozen=True)
class CgroupDomain:
    name: str                  # "cgroup:/system.slice/db.service"
    path: str                  # "/system.slice/db.service"
    version: int               # 1 or 2
    fs_path: str
    inode: int
    limit: int                 # effective limit when discovered
    ancestors_limit: int | None  # smallest limit above it (v2 computes the effective one)
    psi_path: str | None


@dataclass(frozen=True)
class Hierarchy:
    domains: tuple[CgroupDomain, ...] = ()
    owner: dict[str, str] = field(default_factory=dict)  # cgroup path -> binding domain
    untracked: int = 0         # limited cgroups beyond max_tracked
    excluded: int = 0          # limited cgroups left out by include/exclude
    skipped: Counter[str] = field(default_factory=Counter)
    dirs: tuple[str, ...] = ()  # the directory of every cgroup walked (the memcg probe watches them)

    def domain_of(self, cgroup_path: str, host_domain: str) -> str | None:
        """The domain whose limit binds a process in *cgroup_path*; None for a
        cgroup the last walk did not see (made since: it may have a limit of
        its own, which no ancestor tells)."""
        if cgroup_path in self.owner:
            return self.owner[cgroup_path]
        return host_domain if cgroup_path in ("/", "") else None


@dataclass(frozen=True)
class Binding:
    """Which cgroup's limit binds *path*, read from cgroupfs at one moment."""

    path: str
    binding: str | None        # the cgroup whose own limit is the effective one; None: no limit below the host's
    limit: int | None          # the effective limit (bytes), None without one
    usage: int | None          # the binding cgroup's usage then (bytes)


def resolve(mounts: Mounts, path: str, host_total: int) -> Binding | None:
    """Read the limits along *path* from the hierarchy's root down: the
    deepest cgroup whose own limit is below everything above it binds (the
    rule :func:`discover` uses).  None when the path is not there (removed)
    or cannot be read."""
    if mounts.v1_memory:
        top, read_limit, usage_file = mounts.v1_memory, cgroup_v1.read_limit, "memory.usage_in_bytes"
    elif mounts.v2_memory and mounts.unified:
        top, read_limit, usage_file = mounts.unified, cgroup_v2.read_limit, "memory.current"
    else:
        return None
    parts = [p for p in path.split("/") if p]
    if any(p in (".", "..") for p in parts):
        return None
    effective, binding, fs_path = host_total, None, top
    try:
        for depth in range(len(parts) + 1):
            fs_path = os.path.join(top, *parts[:depth])
            own = read_limit(fs_path) if depth else None
            if own is not None and own < effective:
                effective, binding = own, "/" + "/".join(parts[:depth])
        usage = None
        if binding is not None:
            usage = int(read_text(os.path.join(top, binding.lstrip("/"), usage_file)))
    except (OSError, ValueError):
        return None
    return Binding(path, binding, effective if binding else None, usage)


def _matches(path: str, include: tuple[str, ...], exclude: tuple[str, ...]) -> bool:
    return (any(fnmatch.fnmatchcase(path, g) for g in include)
            and not any(fnmatch.fnmatchcase(path, g) for g in exclude))


def discover(mounts: Mounts, host_total: int, host_domain: str, *,
             include: tuple[str, ...] = ("*",), exclude: tuple[str, ...] = (),
             max_tracked: int = 256) -> Hierarchy:
    """Walk the memory hierarchy breadth-first; see the module docstring.

    A cgroup that vanishes mid-walk or cannot be read is skipped and counted.
    """
    if mounts.v1_memory:
        top, version, read_limit = mounts.v1_memory, 1, cgroup_v1.read_limit
    elif mounts.v2_memory and mounts.unified:
        top, version, read_limit = mounts.unified, 2, cgroup_v2.read_limit
    else:
        return Hierarchy()
    domains: list[CgroupDomain] = []
    owner: dict[str, str] = {}
    skipped: Counter[str] = Counter()
    untracked = excluded = 0
    dirs: list[str] = []
    # (cgroup path, fs path, inode, effective limit above, owning domain)
    queue = [("/", top, os.stat(top).st_ino, None, host_domain)]
    while queue:
        next_queue = []
        for path, fs_path, inode, above, parent_owner in queue:
            try:
                own = read_limit(fs_path)
            except (OSError, ValueError) as e:
                skipped[skip_reason(e)] += 1
                continue
            effective_above = host_total if above is None else above
            binding = own is not None and own < effective_above
            this_owner, this_limit = parent_owner, above
            if binding:
                name = f"cgroup:{path}"
                if not _matches(path, include, exclude):
                    excluded += 1
                elif len(domains) >= max_tracked:
                    untracked += 1
                else:
                    psi = None
                    if mounts.unified:
                        psi = os.path.join(mounts.unified, path.lstrip("/"), "memory.pressure")
                    domains.append(CgroupDomain(name, path, version, fs_path, inode, own,
                                                above, psi))
                    this_owner = name
                this_limit = own
            owner[path] = this_owner
            dirs.append(fs_path)
            try:
                with os.scandir(fs_path) as it:
                    entries = sorted(it, key=lambda e: e.name)  # path order: a stable cap
                    for entry in entries:
                        if entry.is_dir(follow_symlinks=False):
                            child = path.rstrip("/") + "/" + entry.name
                            next_queue.append((child, entry.path, entry.inode(), this_limit,
                                               this_owner))
            except OSError as e:
                skipped[skip_reason(e)] += 1
        queue = next_queue
    return Hierarchy(tuple(domains), owner, untracked, excluded, skipped, tuple(dirs))


class CgroupSource:
    """Every memory-limited cgroup, v1 or v2, as a domain."""

    name = "cgroups"

    def __init__(self, roots: Roots, *, host_domain: str = "host",
                 include: tuple[str, ...] = ("*",), exclude: tuple[str, ...] = (),
                 max_tracked: int = 256, discovery_interval: float = 10.0) -> None:
        self.roots = roots
        self.host_domain = host_domain
        self.include, self.exclude, self.max_tracked = include, exclude, max_tracked
        self.discovery_interval = discovery_interval
        self.hierarchy = Hierarchy()
        self.mounts: Mounts | None = None
        self._discovered_at: float | None = None
        self._stale = True
        self._noticed = False     # a process started in a cgroup the last walk did not see
        self.host_total: int | None = None
        # Keep descriptors open on the kernel's cgroupfs, not on a fixture tree.
        self.files = PseudoFiles(keep_open=roots.sys == "/sys")

    def _discover(self, now: Instant) -> None:
        mounts = parse_mounts(read_text(self.roots.proc_path("self", "mounts")), self.roots)
        if not mounts.v1_memory and not mounts.v2_memory:
            raise Unavailable(
                "no memory cgroup controller is mounted (neither a v1 'memory' hierarchy nor "
                "cgroup2 offering 'memory'): cgroup limits cannot be watched; the host domain "
                "still is. Enable the memory controller (cgroup_enable=memory) to watch them."
            )
        meminfo = self.roots.proc_path("meminfo")
        host_total = require(parse_meminfo(read_text(meminfo)), "MemTotal", meminfo)
        self.mounts, self.host_total = mounts, host_total
        self.hierarchy = discover(mounts, host_total, self.host_domain, include=self.include,
                                  exclude=self.exclude, max_tracked=self.max_tracked)
        self._discovered_at = now.mono
        self._stale = self._noticed = False
        keep = {d.fs_path for d in self.hierarchy.domains}
        keep |= {os.path.dirname(d.psi_path) for d in self.hierarchy.domains if d.psi_path}
        self.files.retain(keep)

    def changed(self) -> None:
        """A cgroup was made or removed (the memcg probe saw it): walk the
        hierarchy again at the next tick, at most every NOTICE_SPACING
        seconds (a thousand mkdirs in a second are one walk, not a thousand)."""
        self._noticed = True

    def notice(self, cgroup_paths) -> bool:
        """Processes started in these cgroups: True (and the next tick walks
        the hierarchy again, at most every NOTICE_SPACING seconds) when one
        is a cgroup the last walk did not see."""
        owner = self.hierarchy.owner
        if self.mounts is None or all(p is None or p in owner or p in ("/", "") for p in cgroup_paths):
            return False
        self._noticed = True
        return True

    def resolve(self, path: str) -> Binding | None:
        """:func:`resolve` on this host's hierarchy; None before the first walk."""
        if self.mounts is None or self.host_total is None:
            return None
        return resolve(self.mounts, path, self.host_total)

    def collect(self, now: Instant) -> Reading:
        since = None if self._discovered_at is None else now.mono - self._discovered_at
        if (self._stale or since is None or since >= self.discovery_interval
                or (self._noticed and since >= NOTICE_SPACING)):
            self._discover(now)
        hierarchy = self.hierarchy
        reading = Reading(skipped=Counter(hierarchy.skipped),
                          tracked={d.name for d in hierarchy.domains},
                          domain_of=lambda path: hierarchy.domain_of(path, self.host_domain))
        reading.facts.update(cgroup_version=1 if self.mounts.v1_memory else 2,
                             cgroups_untracked=hierarchy.untracked,
                             cgroups_excluded=hierarchy.excluded)
        for d in hierarchy.domains:
            try:
                psi = self._psi(d)
                if d.version == 1:
                    sample = cgroup_v1.read_sample(d.name, d.fs_path, psi, self.files, d.inode)
                else:
                    sample = cgroup_v2.read_sample(d.name, d.fs_path, d.ancestors_limit, psi, self.files,
                                                   d.inode)
            except (OSError, ValueError) as e:
                reason = skip_reason(e)
                reading.skipped[reason] += 1
                if reason == "vanished":
                    self._stale = True  # rediscover on the next tick
                continue
            reading.samples.append(sample)
        return reading

    def _psi(self, d: CgroupDomain):
        if d.psi_path is None:
            return None
        data = self.files.read_optional(d.psi_path)
        return None if data is None else parse_psi(data.decode())

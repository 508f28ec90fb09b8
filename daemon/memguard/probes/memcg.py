"""The memcg probe: the kernel tells us a cgroup hit an OOM.

- cgroup v1 (Documentation/admin-guide/cgroup-v1/memory.rst, "OOM Control"):
  an eventfd registered through ``cgroup.event_control`` with the cgroup's
  ``memory.oom_control`` is signalled when the cgroup goes OOM (and when the
  cgroup is removed).  Registering logs "oom_control is deprecated" once on
  recent kernels; turn it off with ``probes.memcg_events: false``.
- cgroup v2 (Documentation/admin-guide/cgroup-v2.rst, "memory.events"):
  ``memory.events`` is modified, which inotify reports, when any of its
  counters (``oom``, ``oom_kill``) changes.

Either way the probe only wakes the daemon: it samples the domains at once,
and the kernel's ``oom_kill`` counters it reads then are cross-checked
against the incidents the other probes produced.

And it wakes the daemon as a v1 cgroup's usage crosses thresholds on
``memory.usage_in_bytes`` (the same file, "Memory thresholds"; the kernel
signals an eventfd when the usage crosses one either way):

- ``sampling.fast_above`` of the limit, always: a cgroup climbing fast is
  sampled at ``fast_interval`` from the moment it is close, not from the
  next tick;
- while every domain is at rest (docs/configuration.md, ``sampling.rest_*``),
  the next step of the limit above the usage (engine.wake_threshold):
  ``arm`` moves it when the usage has moved a step; the cgroups whose
  threshold stands are ``armed``, and the daemon may sleep long on them.

The host too, on a v1 host: a threshold on the root cgroup's usage (all
the memory the host's processes and page cache hold), while free memory
is wide enough that growing by a step must raise it (the daemon decides,
Daemon._host_threshold).

v2 has no usage thresholds: there the daemon rests only as long as the
growth it assumes would take to bring a domain close (the host: it looks
at /proc/meminfo meanwhile).

Last, it watches every cgroup directory of the memory hierarchy with
inotify (``watch_dirs``): a cgroup made or removed (a mkdir by systemd, a
container runtime, a test) is reported as ``created``, and the daemon walks
the hierarchy at once instead of at its next discovery, however long it
rests.

A usage threshold's registration (and its removal) waits for an RCU grace
period in the kernel: 10-25 ms each here, 16 s for the fast thresholds of
1,000 cgroups.  ``track`` and ``arm`` make them, so the daemon calls them
from a thread of their own, one call at a time; ``read``, ``watch_dirs``
and ``close`` are the event loop's.  ``lock`` keeps the two apart for the
moment a registration is entered in the tables, never across the wait.
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import struct
import threading

from ..clock import Instant
from .base import ProbeReading, Unavailable

IN_MODIFY = 0x2
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_ONLYDIR = 0x01000000
IN_ISDIR = 0x40000000
_EVENT = struct.Struct("iIII")   # struct inotify_event: wd, mask, cookie, len (then len bytes of name)
HOST = "root"   # the key's second half for the host's threshold, on the root cgroup (a cgroup's is its inode)
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC


class MemcgProbe:
    name = "memcg"

    def __init__(self, fast_above: float | None = None) -> None:
        self.fast_above = fast_above
        self.fast: dict[tuple, tuple[int, int]] = {}        # v1: (domain, inode) -> (eventfd, usage threshold)
        self.epoll: select.epoll | None = None
        self.eventfds: dict[tuple, int] = {}    # v1: (domain, inode) -> eventfd
        self.inotify: int | None = None
        self.watches: dict[tuple, int] = {}     # v2: (domain, inode) -> watch descriptor
        self.thresholds: dict[tuple, tuple[int, int]] = {}  # v1: (domain, inode) -> (eventfd, usage threshold)
        self.paths: dict[tuple, str] = {}       # v1: (domain, inode) -> its directory
        self.dirs: dict[str, int] = {}          # every cgroup directory -> its watch descriptor
        self._dir_wds: set[int] = set()
        self._moved: frozenset[int] = frozenset()   # the eventfds of self.thresholds
        self._libc = ctypes.CDLL(None, use_errno=True)
        self.lock = threading.Lock()
        self.opened = 0     # counts open()s: registrations made before the last one are gone

    def open(self, now: Instant) -> int:
        fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            raise Unavailable(f"inotify_init1: {os.strerror(ctypes.get_errno())}")
        with self.lock:
            self.epoll = select.epoll()
            self.inotify = fd
            self.epoll.register(fd, select.EPOLLIN)
            self.opened += 1
        return self.epoll.fileno()

    def track(self, domains) -> list[str]:
        """Watch exactly these cgroup domains (sources.cgroups.CgroupDomain);
        returns the errors met, one line each (a cgroup that vanished is not
        one).  Off the loop: a fast threshold's registration waits."""
        if self.epoll is None:
            return []
        errors = []
        # keyed by name and inode: a cgroup made again under the same path
        # is a new one, whose files need a new registration
        wanted = {(d.name, d.inode): d for d in domains}
        for key in [k for k in self.eventfds if k not in wanted]:
            self._drop(self.eventfds, key)  # the kernel drops the registration with the eventfd
        with self.lock:
            for key in [k for k in self.watches if k not in wanted]:
                self._libc.inotify_rm_watch(self.inotify, self.watches.pop(key))
        for key in [k for k in self.thresholds if k not in wanted and k[1] != HOST]:
            self._drop(self.thresholds, key)
        for key in [k for k in self.fast if k not in wanted]:
            self._drop(self.fast, key)
        self.paths = {key: d.fs_path for key, d in wanted.items() if d.version == 1}
        for key, d in wanted.items():
            try:
                if d.version == 1 and self.fast_above and d.limit and \
                        self.fast.get(key, (0, None))[1] != (close := int(self.fast_above * d.limit)):
                    self._drop(self.fast, key)
                    efd = self._register_v1(d.fs_path, "memory.usage_in_bytes", close)
                    if not self._enter(self.fast, key, (efd, close)):
                        break
                if key in self.eventfds or key in self.watches:
                    continue
                if d.version == 1:
                    efd = self._register_v1(d.fs_path)
                    if not self._enter(self.eventfds, key, efd):
                        break
                elif not self._watch_v2(key, d.fs_path):
                    break
            except FileNotFoundError:
                continue
            except OSError as e:
                errors.append(f"{d.name}: {e}")
        return errors

    def arm(self, thresholds: dict[str, int],
            host: tuple[str, str, int] | None = None) -> tuple[frozenset[str], list[str]]:
        """Move each v1 cgroup's usage threshold to *thresholds*' for it (by
        domain name) where it is not there yet, and the host's, *host* =
        ``(domain, the v1 hierarchy's root directory, threshold)``, on the
        root cgroup's usage (all of the host's memory but the kernel's own;
        None: drop it); returns the domains whose threshold now stands, and
        the errors met (one line each).  Off the loop, as ``track``."""
        armed, errors = set(), []
        if self.epoll is None:
            return frozenset(), errors
        wanted = [(key, fs_path, thresholds[key[0]]) for key, fs_path in self.paths.items() if key[0] in thresholds]
        for key in [k for k in self.thresholds if k[1] == HOST and (host is None or k[0] != host[0])]:
            self._drop(self.thresholds, key)
        if host is not None:
            wanted.append(((host[0], HOST), host[1], host[2]))
        for key, fs_path, threshold in wanted:
            name = key[0]
            if key in self.thresholds and self.thresholds[key][1] == threshold:
                armed.add(name)
                continue
            self._drop(self.thresholds, key)
            try:
                efd = self._register_v1(fs_path, "memory.usage_in_bytes", threshold)
                if not self._enter(self.thresholds, key, (efd, threshold)):
                    break
                with open(os.path.join(fs_path, "memory.usage_in_bytes"), "rb") as f:
                    if int(f.read()) < threshold:   # else it passed it before the registration
                        armed.add(name)
            except FileNotFoundError:
                continue
            except (OSError, ValueError) as e:
                errors.append(f"{name}: usage threshold: {e}")
        return frozenset(armed), errors

    def _enter(self, table: dict, key: tuple, entry) -> bool:
        """Enter a registration just made (an eventfd, or an eventfd and its
        threshold) in *table* and the epoll set; False, and its eventfd
        closed, if the probe was closed meanwhile."""
        efd = entry if isinstance(entry, int) else entry[0]
        with self.lock:
            if self.epoll is None:
                os.close(efd)
                return False
            self.epoll.register(efd, select.EPOLLIN)
            table[key] = entry
            if table is self.thresholds:
                self._moved = frozenset(e for e, _ in self.thresholds.values())
            return True

    def _drop(self, table: dict, key: tuple) -> None:
        with self.lock:
            entry = table.pop(key, None)
            if entry is None:
                return
            efd = entry if isinstance(entry, int) else entry[0]
            self.epoll.unregister(efd)
            os.close(efd)
            if table is self.thresholds:
                self._moved = frozenset(e for e, _ in self.thresholds.values())

    def _register_v1(self, fs_path: str, control: str = "memory.oom_control", threshold: int | None = None) -> int:
        """A new eventfd registered on *fs_path*'s *control*, not entered yet."""
        efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        try:
            cfd = os.open(os.path.join(fs_path, control), os.O_RDONLY | os.O_CLOEXEC)
            try:
                with open(os.path.join(fs_path, "cgroup.event_control"), "w") as f:
                    f.write(f"{efd} {cfd}" + ("" if threshold is None else f" {threshold}"))
            finally:
                os.close(cfd)  # the registration holds what it needs
        except OSError:
            os.close(efd)
            raise
        return efd

    def watch_dirs(self, dirs) -> list[str]:
        """Watch exactly these cgroup directories for subdirectories made or
        removed; returns the errors met (a directory that vanished is not one)."""
        if self.inotify is None:
            return []
        wanted, errors = set(dirs), []
        for path in [p for p in self.dirs if p not in wanted]:
            wd = self.dirs.pop(path)
            self._dir_wds.discard(wd)
            self._libc.inotify_rm_watch(self.inotify, wd)   # gone with the directory: harmless EINVAL
        for path in wanted - set(self.dirs):
            wd = self._libc.inotify_add_watch(self.inotify, path.encode(), IN_CREATE | IN_DELETE | IN_ONLYDIR)
            if wd < 0:
                err = ctypes.get_errno()
                if err != errno.ENOENT:
                    errors.append(f"{path}: {os.strerror(err)}")
                continue
            self.dirs[path] = wd
            self._dir_wds.add(wd)
        return errors

    def _watch_v2(self, key: tuple, fs_path: str) -> bool:
        """Watch a v2 cgroup's memory.events; False if the probe was closed."""
        path = os.path.join(fs_path, "memory.events").encode()
        with self.lock:
            if self.inotify is None:
                return False
            wd = self._libc.inotify_add_watch(self.inotify, path, IN_MODIFY)
            if wd < 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err), path.decode())
            self.watches[key] = wd
            return True

    def read(self, now: Instant) -> ProbeReading:
        reading = ProbeReading()
        with self.lock:     # no eventfd closed under us by track or arm
            for fd, _ in self.epoll.poll(0):
                # Which cgroup does not matter: the wake-up samples them all.
                # Drain inotify's events, or the eventfd's counter (reading resets it).
                while True:
                    try:
                        data = os.read(fd, 65536 if fd == self.inotify else 8)
                    except BlockingIOError:
                        break
                    if fd == self.inotify:
                        self._inotify_events(data, reading)
                    elif fd in self._moved:
                        reading.moved = True
                    else:
                        reading.wake = True
        return reading

    def _inotify_events(self, data: bytes, reading: ProbeReading) -> None:
        """A cgroup directory's subdirectory made or removed: ``created``;
        a v2 memory.events modified: ``wake``."""
        at = 0
        while at + _EVENT.size <= len(data):
            wd, mask, _cookie, length = _EVENT.unpack_from(data, at)
            at += _EVENT.size + length
            if wd in self._dir_wds:
                reading.created |= bool(mask & IN_ISDIR and mask & (IN_CREATE | IN_DELETE))
            else:
                reading.wake = True

    def close(self) -> None:
        with self.lock:
            for efd in [*self.eventfds.values(), *(efd for efd, _ in [*self.thresholds.values(), *self.fast.values()])]:
                os.close(efd)
            self.eventfds.clear()
            self.thresholds.clear()
            self._moved = frozenset()
            self.dirs.clear()
            self._dir_wds.clear()
            self.fast.clear()
            self.watches.clear()
            if self.inotify is not None:
                os.close(self.inotify)
                self.inotify = None
            if self.epoll is not None:
                self.epoll.close()
                self.epoll = None

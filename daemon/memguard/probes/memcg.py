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
"""

from __future__ import annotations

import ctypes
import os
import select

from ..clock import Instant
from .base import ProbeReading, Unavailable

IN_MODIFY = 0x2
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC


class MemcgProbe:
    name = "memcg"

    def __init__(self) -> None:
        self.epoll: select.epoll | None = None
        self.eventfds: dict[tuple, int] = {}    # v1: (domain, inode) -> eventfd
        self.inotify: int | None = None
        self.watches: dict[tuple, int] = {}     # v2: (domain, inode) -> watch descriptor
        self._libc = ctypes.CDLL(None, use_errno=True)

    def open(self, now: Instant) -> int:
        fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            raise Unavailable(f"inotify_init1: {os.strerror(ctypes.get_errno())}")
        self.epoll = select.epoll()
        self.inotify = fd
        self.epoll.register(fd, select.EPOLLIN)
        return self.epoll.fileno()

    def track(self, domains) -> list[str]:
        """Watch exactly these cgroup domains (sources.cgroups.CgroupDomain);
        returns the errors met, one line each (a cgroup that vanished is not one)."""
        if self.epoll is None:
            return []
        errors = []
        # keyed by name and inode: a cgroup made again under the same path
        # is a new one, whose files need a new registration
        wanted = {(d.name, d.inode): d for d in domains}
        for name in [n for n in self.eventfds if n not in wanted]:
            efd = self.eventfds.pop(name)
            self.epoll.unregister(efd)
            os.close(efd)  # the kernel drops the registration with it
        for name in [n for n in self.watches if n not in wanted]:
            self._libc.inotify_rm_watch(self.inotify, self.watches.pop(name))
        for key, d in wanted.items():
            if key in self.eventfds or key in self.watches:
                continue
            try:
                if d.version == 1:
                    self.eventfds[key] = self._register_v1(d.fs_path)
                else:
                    self._watch_v2(key, d.fs_path)
            except FileNotFoundError:
                continue
            except OSError as e:
                errors.append(f"{d.name}: {e}")
        return errors

    def _register_v1(self, fs_path: str) -> int:
        efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        try:
            cfd = os.open(os.path.join(fs_path, "memory.oom_control"), os.O_RDONLY | os.O_CLOEXEC)
            try:
                with open(os.path.join(fs_path, "cgroup.event_control"), "w") as f:
                    f.write(f"{efd} {cfd}")
            finally:
                os.close(cfd)  # the registration holds what it needs
        except OSError:
            os.close(efd)
            raise
        self.epoll.register(efd, select.EPOLLIN)
        return efd

    def _watch_v2(self, key: tuple, fs_path: str) -> None:
        path = os.path.join(fs_path, "memory.events").encode()
        wd = self._libc.inotify_add_watch(self.inotify, path, IN_MODIFY)
        if wd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), path.decode())
        self.watches[key] = wd

    def read(self, now: Instant) -> ProbeReading:
        reading = ProbeReading()
        for fd, _ in self.epoll.poll(0):
            # Which cgroup does not matter: the wake-up samples them all.
            # Drain inotify's events, or the eventfd's counter (reading resets it).
            size = 4096 if fd == self.inotify else 8
            while True:
                try:
                    reading.wake |= bool(os.read(fd, size))
                except BlockingIOError:
                    break
        return reading

    def close(self) -> None:
        for efd in self.eventfds.values():
            os.close(efd)
        self.eventfds.clear()
        self.watches.clear()
        if self.inotify is not None:
            os.close(self.inotify)
            self.inotify = None
        if self.epoll is not None:
            self.epoll.close()
            self.epoll = None

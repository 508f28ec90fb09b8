"""Where the daemon reads the kernel from.

Every reader takes a :class:`Roots` instead of touching ``/proc`` or ``/sys``
directly, so the whole program runs unchanged on a fixture tree
(``memguardd --proc-root tests/fixtures/wsl2/proc``), as node_exporter's
``--path.procfs`` allows.  Nothing here is global.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Roots:
    proc: str = "/proc"
    sys: str = "/sys"
    dev: str = "/dev"
    run: str = "/run"
    rootfs: str = "/"  # anything else, e.g. the Windows drive of a WSL2 VM (/mnt/c)

    def proc_path(self, *parts: str) -> str:
        return os.path.join(self.proc, *parts)

    def sys_path(self, *parts: str) -> str:
        return os.path.join(self.sys, *parts)

    def rootfs_path(self, path: str) -> str:
        return os.path.join(self.rootfs, path.lstrip("/"))

    @classmethod
    def under(cls, top: str) -> "Roots":
        """Roots of a fixture tree holding proc/, sys/, dev/, run/ (and mnt/ ...)."""
        return cls(*(os.path.join(top, d) for d in ("proc", "sys", "dev", "run")), rootfs=top)


# A pseudo-file's contents are never larger than this in the files we read
# (memory.stat of v1 is ~1.3 KiB; /proc/meminfo ~1.5 KiB; arcstats ~7 KiB).
_CHUNK = 64 * 1024


def read_bytes(path: str) -> bytes:
    """Read a whole pseudo-file with raw syscalls (no Python file object).

    Raises OSError as the kernel gave it; callers decide what a missing file
    means.  At a few hundred files a tick, skipping ``open()``'s buffered text
    layer halves the cost.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = os.read(fd, _CHUNK)
        if len(data) < _CHUNK:
            return data
        parts = [data]
        while chunk := os.read(fd, _CHUNK):
            parts.append(chunk)
        return b"".join(parts)
    finally:
        os.close(fd)


def read_text(path: str) -> str:
    return read_bytes(path).decode("utf-8", "replace")


def read_optional(path: str) -> str | None:
    """Contents of *path*, or None when it does not exist (ENOENT/ENOTDIR).

    Every other error (EACCES, EIO, ...) is raised: a file we could not read
    must not look like a file that is not there.
    """
    try:
        return read_text(path)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            return None
        raise


class PseudoFiles:
    """Pseudo-files kept open and read again with pread(2) at offset 0.

    Reading a cgroup's memory.usage_in_bytes this way costs 1.5 us instead
    of 12 us for open+read+close (measured here); at a few hundred files a
    tick that is most of the tick.  A file whose cgroup was removed fails
    with ENODEV (or ENOENT when opened): the caller treats both as vanished.
    ``read_optional`` remembers a file that does not exist, so an absent
    optional file (no swap accounting) costs nothing after the first tick.

    Descriptors are kept only for the kernel's own files (``keep_open``): a
    regular file of a fixture tree that is deleted stays readable through an
    open descriptor, where a removed cgroup's does not, so fixture trees are
    opened afresh at every read.
    """

    def __init__(self, keep_open: bool = True) -> None:
        self.keep_open = keep_open
        self.fds: dict[str, int | None] = {}

    def read(self, path: str) -> bytes:
        """Contents.  Raises OSError (FileNotFoundError when it is gone)."""
        return self._read(path, remember_absent=False)

    def read_optional(self, path: str) -> bytes | None:
        """Contents, or None when the file does not exist (remembered until
        :meth:`retain` drops it).  Raises other OSErrors."""
        try:
            return self._read(path, remember_absent=True)
        except FileNotFoundError:
            return None

    def _read(self, path: str, remember_absent: bool) -> bytes:
        fd = self.fds.get(path, -1)
        if fd is None:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory (remembered)", path)
        if fd == -1:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as e:
                if remember_absent and e.errno in (errno.ENOENT, errno.ENOTDIR):
                    self.fds[path] = None
                    raise FileNotFoundError(e.errno, e.strerror, path) from None
                raise
            if not self.keep_open:
                try:
                    return os.pread(fd, _CHUNK, 0)
                finally:
                    os.close(fd)
            self.fds[path] = fd
        try:
            return os.pread(fd, _CHUNK, 0)
        except OSError:
            self.close(path)
            raise

    def close(self, path: str) -> None:
        fd = self.fds.pop(path, None)
        if fd is not None:
            os.close(fd)

    def retain(self, directories: set[str]) -> None:
        """Close every file not directly in one of *directories*."""
        for path in [p for p in self.fds if os.path.dirname(p) not in directories]:
            self.close(path)

    def close_all(self) -> None:
        for path in list(self.fds):
            self.close(path)

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

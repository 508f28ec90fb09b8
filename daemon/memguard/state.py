"""Small state files that survive a restart: the kmsg cursor, the heartbeat.

Each is one JSON object replaced atomically (temporary file, rename), so a
crash leaves the old or the new version, never a torn one.  A missing or
unreadable file reads as None: state is a help, never a reason not to start.
"""

from __future__ import annotations

import json
import os

from .roots import Roots, read_optional


def boot_id(roots: Roots) -> str | None:
    """This boot's random id (/proc/sys/kernel/random/boot_id), or None."""
    text = read_optional(roots.proc_path("sys", "kernel", "random", "boot_id"))
    return text.strip() if text else None


def read_json(path: str) -> object:
    """The JSON in *path*, never through a symlink (a state file is ours,
    in our 0700 directory: a link there is not).  Raises OSError or ValueError."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    with os.fdopen(fd, encoding="utf-8") as f:
        return json.load(f)


def load(path: str) -> dict | None:
    """The object in *path*; None when absent or not a JSON object."""
    try:
        obj = read_json(path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None  # torn by an older version, edited by hand, a link: start afresh
    return obj if isinstance(obj, dict) else None


def save(path: str, obj: object, durable: bool = False) -> None:
    """Replace *path* atomically (mode 0600, never writing through a
    symlink); *durable*: on disk before the rename.  Raises OSError."""
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(obj, f)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)

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


def load(path: str) -> dict | None:
    """The object in *path*; None when absent or not a JSON object."""
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except FileNotFoundError:
        return None
    except ValueError:
        return None  # torn by an older version, or edited by hand: start afresh
    return obj if isinstance(obj, dict) else None


def save(path: str, obj: dict) -> None:
    """Replace *path* atomically (mode 0600).  Raises OSError."""
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(obj, f)
    os.replace(tmp, path)

"""Logging to stderr in logfmt (``level=info msg="domain found" domain=host``).

journald keeps each line; when stderr is the journal (systemd sets
JOURNAL_STREAM) a ``<N>`` syslog priority prefix gives each line its level
(SyslogLevelPrefix=yes is journald's default).  No colour codes.
"""

from __future__ import annotations

import os
import sys

_PRIORITY = {"error": 3, "warning": 4, "info": 6, "debug": 7}


def _value(v: object) -> str:
    s = str(v)
    if not s or any(c in s for c in ' "=\n\t'):
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return s


class Logger:
    def __init__(self, stream=None, level: str = "info") -> None:
        self.stream = stream or sys.stderr
        self.threshold = _PRIORITY[level]
        self.journal = bool(os.environ.get("JOURNAL_STREAM"))

    def log(self, level: str, msg: str, **fields: object) -> None:
        priority = _PRIORITY[level]
        if priority > self.threshold:
            return
        parts = [f"level={level}", f"msg={_value(msg)}"]
        parts += [f"{k}={_value(v)}" for k, v in fields.items() if v is not None]
        line = " ".join(parts)
        if self.journal:
            line = f"<{priority}>{line}"
        self.stream.write(line + "\n")
        self.stream.flush()

    def info(self, msg: str, **fields: object) -> None:
        self.log("info", msg, **fields)

    def warning(self, msg: str, **fields: object) -> None:
        self.log("warning", msg, **fields)

    def error(self, msg: str, **fields: object) -> None:
        self.log("error", msg, **fields)

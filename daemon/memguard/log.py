"""Logging: one event per line in logfmt (``level=info msg="domain found"
domain=host``), and under systemd to the journal with its fields.

On stderr each line is logfmt.  When stderr is the journal (systemd sets
JOURNAL_STREAM to its device and inode) and journald's native socket is
there, each event is sent as a native journal entry instead: MESSAGE the
logfmt line, PRIORITY its level, and every field as a journal field of its
upper-cased name, so ``journalctl -u memguard DOMAIN=cgroup:/build``
filters by domain.  An entry the socket refuses goes to stderr, with a
``<N>`` syslog priority prefix journald reads (SyslogLevelPrefix=yes).
No colour codes.
"""

from __future__ import annotations

import os
import re
import socket
import struct
import sys

_PRIORITY = {"error": 3, "warning": 4, "info": 6, "debug": 7}
JOURNAL_SOCKET = "/run/systemd/journal/socket"
IDENTIFIER = "memguardd"
_FIELD = re.compile(r"[^A-Z0-9_]")


def _value(v: object) -> str:
    """A logfmt value: quoted when it holds a space, quote or =; a control
    character (a newline, an escape sequence in a process's name) written
    as its escape, so a line stays one line and cannot drive a terminal."""
    s = str(v)
    if not s or any(c in s for c in ' "=') or not s.isprintable():
        body = "".join("\\\\" if c == "\\" else '\\"' if c == '"' else "\\n" if c == "\n" else "\\t" if c == "\t"
                       else c if c.isprintable() else f"\\x{ord(c):02x}" for c in s)
        return f'"{body}"'
    return s


def journal_field(name: str) -> str:
    """A field name journald accepts: upper case, digits and _, not
    starting with _ or a digit (those are journald's own), at most 64."""
    field = _FIELD.sub("_", name.upper()).lstrip("_0123456789")[:64]
    return field or "FIELD"


def journal_entry(fields: list[tuple[str, str]]) -> bytes:
    """The native protocol (systemd.journal-fields(7), sd_journal_sendv):
    ``NAME=value\\n``, or for a value with a newline ``NAME\\n``, its length
    as 64-bit little endian, the value, ``\\n``."""
    out = bytearray()
    for name, value in fields:
        data = value.encode("utf-8", "replace")
        if b"\n" in data:
            out += name.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += name.encode() + b"=" + data + b"\n"
    return bytes(out)


def _stderr_is_journal(stream, environ) -> bool:
    stream_id = environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return stream_id == f"{st.st_dev}:{st.st_ino}"


class Logger:
    def __init__(self, stream=None, level: str = "info", journal_socket: str = JOURNAL_SOCKET,
                 environ: dict | None = None) -> None:
        self.stream = stream or sys.stderr
        self.threshold = _PRIORITY[level]
        env = os.environ if environ is None else environ
        self.journal = bool(env.get("JOURNAL_STREAM"))
        self.native = None
        if self.journal and _stderr_is_journal(self.stream, env) and os.path.exists(journal_socket):
            self.native = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self.native_address = journal_socket

    def log(self, level: str, msg: str, **fields: object) -> None:
        priority = _PRIORITY[level]
        if priority > self.threshold:
            return
        present = {k: v for k, v in fields.items() if v is not None}
        parts = [f"level={level}", f"msg={_value(msg)}"] + [f"{k}={_value(v)}" for k, v in present.items()]
        line = " ".join(parts)
        if self.native is not None:
            entry = journal_entry([("MESSAGE", line), ("PRIORITY", str(priority)),
                                   ("SYSLOG_IDENTIFIER", IDENTIFIER), ("MEMGUARD_EVENT", msg)]
                                  + [(journal_field(k), str(v)) for k, v in present.items()])
            try:
                self.native.sendto(entry, self.native_address)
                return
            except OSError:        # journald gone or the entry too large: stderr still has it
                pass
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

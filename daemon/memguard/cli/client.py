"""Talking to memguardd over its control socket."""

from __future__ import annotations

import json
import os
import socket
from typing import Iterator

from ..api import protocol
from ..config import SYSTEM_SOCKET, Config

SOCKET_ENV = "MEMGUARD_SOCKET"    # the control socket, for memguardctl and memguard.client


class Unreachable(Exception):
    """The daemon's socket is missing or nobody answers on it.  *absent*:
    no daemon listens there at all (no socket file, or a stale one)."""

    def __init__(self, message: str, absent: bool = False) -> None:
        super().__init__(message)
        self.absent = absent


class RemoteError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _connect(path: str, timeout: float) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
    except (FileNotFoundError, ConnectionRefusedError) as e:
        s.close()
        raise Unreachable(f"memguardd is not running (no answer on {path}: {e.strerror})", absent=True) from None
    except PermissionError:
        s.close()
        raise Unreachable(f"not allowed to connect to {path}") from None
    return s


def _result(answer: dict) -> object:
    if not answer.get("ok"):
        err = answer.get("error", {})
        raise RemoteError(err.get("code", "unknown"), err.get("message", ""))
    return answer["result"]


def call(path: str, method: str, params: dict | None = None, timeout: float = 5.0) -> object:
    """The result of *method*; raises Unreachable or RemoteError."""
    with _connect(path, timeout) as s:
        s.sendall(protocol.request(method, params))
        buf = b""
        try:
            while not buf.endswith(b"\n"):
                chunk = s.recv(1 << 16)
                if not chunk:
                    break
                buf += chunk
        except socket.timeout:
            raise Unreachable(f"memguardd did not answer on {path} within {timeout:g}s") from None
    if not buf:
        raise Unreachable(f"memguardd closed the connection on {path} without an answer")
    return _result(json.loads(buf))


def stream(path: str, method: str, params: dict | None = None, timeout: float = 5.0) -> Iterator[object]:
    """The result of *method*, then each line the daemon pushes on the same
    connection (``watch``), as they come, until it closes it.  Raises
    Unreachable or RemoteError."""
    with _connect(path, timeout) as s:
        s.sendall(protocol.request(method, params))
        lines = s.makefile("rb")
        try:
            first = lines.readline()
        except socket.timeout:
            raise Unreachable(f"memguardd did not answer on {path} within {timeout:g}s") from None
        if not first:
            raise Unreachable(f"memguardd closed the connection on {path} without an answer")
        yield _result(json.loads(first))
        s.settimeout(None)
        for line in lines:
            yield json.loads(line)


def default_sockets() -> list[str]:
    """$MEMGUARD_SOCKET when set; else this user's daemon's socket, then (for
    a user who is not root) the system daemon's, as systemctl and journalctl
    users expect."""
    if os.environ.get(SOCKET_ENV):
        return [os.environ[SOCKET_ENV]]
    own = Config().resolved_paths()[0]
    return [own] if own == SYSTEM_SOCKET else [own, SYSTEM_SOCKET]

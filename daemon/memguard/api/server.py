"""The control socket: a Unix stream socket that memguardctl talks to.

Who may do what is decided from the peer's credentials (SO_PEERCRED): reading
(status, version) is open to every local user, as /proc is; methods that
change the daemon are for root and the daemon's own user.  The socket is
made mode 0666 for that reason; the check is per request, not per file mode.

Since any local user may connect, no user may hold the daemon's file
descriptors: a connection that has not sent a whole first request within
FIRST_REQUEST_TIMEOUT is closed, and a user other than root and the
daemon's own holds at most MAX_CONNECTIONS_PER_USER at once (a job's
registration and a watch stay open by design: the cap bounds them).
"""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import struct
from typing import Awaitable, Callable

from . import protocol

Handler = Callable[[dict, "Peer"], Awaitable[object] | object]


SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)     # Linux >= 4.13
MAX_GROUPS = 1024


class Peer:
    def __init__(self, pid: int, uid: int, gid: int, groups: frozenset[int] = frozenset()) -> None:
        self.pid, self.uid, self.gid = pid, uid, gid
        self.groups = groups | {gid}          # primary and supplementary, at connect
        # A handler that keeps the connection to push to it later (a job's
        # notifications) takes the writer and adds what to do when it closes.
        self.writer: asyncio.StreamWriter | None = None
        self.on_close: list[Callable[[], None]] = []

    @property
    def privileged(self) -> bool:
        return self.uid in (0, os.geteuid())


def peer_of(writer: asyncio.StreamWriter) -> Peer:
    sock = writer.get_extra_info("socket")
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 4 * MAX_GROUPS)
        groups = frozenset(struct.unpack(f"{len(raw) // 4}I", raw))
    except OSError:         # an older kernel, or more groups than we ask for: the primary group only
        groups = frozenset()
    return Peer(*struct.unpack("3i", creds), groups)


BACKLOG = 4096
FIRST_REQUEST_TIMEOUT = 10.0
MAX_CONNECTIONS_PER_USER = 128


class ControlServer:
    def __init__(self, path: str, log, mode: int = 0o666) -> None:
        self.path = path
        self.log = log
        self.mode = mode
        self.methods: dict[str, tuple[Handler, bool]] = {}
        self.server: asyncio.AbstractServer | None = None
        self.connections: dict[int, int] = {}       # uid -> connections open now

    def route(self, method: str, handler: Handler, privileged: bool = False) -> None:
        self.methods[method] = (handler, privileged)

    async def start(self) -> None:
        directory = os.path.dirname(self.path)
        os.makedirs(directory, mode=0o755, exist_ok=True)
        self._remove_stale()
        # A backlog for a crowd (asyncio's default, 100, resets the
        # connections of a thousand clients arriving at once: tests/e2e/test_load.py).
        self.server = await asyncio.start_unix_server(self._serve, path=self.path,
                                                      limit=protocol.MAX_REQUEST, backlog=BACKLOG)
        os.chmod(self.path, self.mode)

    def _remove_stale(self) -> None:
        """Remove a socket left by a daemon that died; refuse if one still answers."""
        try:
            mode = os.lstat(self.path).st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise RuntimeError(f"{self.path} exists and is not a socket; remove it or set 'socket:'")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(self.path)
        except (ConnectionRefusedError, FileNotFoundError):
            os.unlink(self.path)
            return
        finally:
            probe.close()
        raise RuntimeError(f"another memguardd answers on {self.path}")

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = peer_of(writer)
        peer.writer = writer
        held = self.connections.get(peer.uid, 0)
        if not peer.privileged and held >= MAX_CONNECTIONS_PER_USER:
            writer.write(protocol.error(protocol.NOT_PERMITTED,
                                        f"uid {peer.uid} holds {held} connections already, "
                                        f"the most one user may ({MAX_CONNECTIONS_PER_USER})"))
            writer.close()
            return
        self.connections[peer.uid] = held + 1
        try:
            line = await asyncio.wait_for(reader.readline(), FIRST_REQUEST_TIMEOUT)
            while line:
                writer.write(await self._answer(line, peer))
                await writer.drain()
                line = await reader.readline()
        except TimeoutError:          # connected, said nothing whole: a half-open client holds no fd of ours
            pass
        except (ConnectionResetError, BrokenPipeError):
            pass
        except ValueError:  # a line over MAX_REQUEST
            writer.write(protocol.error(protocol.BAD_REQUEST, "request too long"))
        finally:
            self.connections[peer.uid] -= 1
            if not self.connections[peer.uid]:
                del self.connections[peer.uid]
            for callback in peer.on_close:
                callback()
            writer.close()

    async def _answer(self, line: bytes, peer: Peer) -> bytes:
        try:
            method, params = protocol.parse_request(line)
            if method not in self.methods:
                raise protocol.ProtocolError(protocol.UNKNOWN_METHOD,
                                             f"unknown method {method!r}; known: {', '.join(sorted(self.methods))}")
            handler, privileged = self.methods[method]
            if privileged and not peer.privileged:
                raise protocol.ProtocolError(protocol.NOT_PERMITTED,
                                             f"{method} needs root or uid {os.geteuid()}; you are uid {peer.uid}")
            result = handler(params, peer)
            if asyncio.iscoroutine(result):
                result = await result
            return protocol.ok(result)
        except protocol.ProtocolError as e:
            return protocol.error(e.code, e.message)
        except Exception as e:  # a bug must not take the daemon down with it
            self.log.error("control request failed", error=repr(e))
            return protocol.error(protocol.INTERNAL, f"internal error: {e!r}")

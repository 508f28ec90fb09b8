"""A minimal HTTP endpoint serving the last metrics rendering.

It runs on the daemon's event loop and only ever copies bytes already
rendered, so a scrape costs no sampling work.  Loopback by default; TLS and
basic auth from a web config file (export/web.py).  Enough
HTTP/1.1 for Prometheus and curl: one request per connection, bounded header
size and read time.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import ssl
from typing import Callable

from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .web import WebConfig

MAX_HEADER = 16 * 1024
READ_TIMEOUT = 5.0


def parse_listen(listen: str) -> tuple[str, int]:
    """("127.0.0.1", 9717) from "127.0.0.1:9717" or "[::1]:9717".  Raises ValueError."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"metrics.listen: expected host:port, got {listen!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


class MetricsServer:
    """Serves on *listen*, or on *sock*, a listening socket systemd passed
    (memguard.socket)."""

    def __init__(self, listen: str, body: Callable[[], bytes], sock: socket.socket | None = None,
                 web: WebConfig | None = None) -> None:
        self.host, self.port = sock.getsockname()[:2] if sock is not None else parse_listen(listen)
        self.sock = sock
        self.body = body
        self.web = web or WebConfig()
        # bcrypt is slow by design: one thread checks passwords, off the loop.
        self._auth = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="metrics-auth")
        self.server: asyncio.AbstractServer | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.web.tls is not None else "http"

    async def start(self) -> None:
        where = {"sock": self.sock} if self.sock is not None else {"host": self.host, "port": self.port}
        self.server = await asyncio.start_server(self._serve, **where, limit=MAX_HEADER, ssl=self.web.tls,
                                                 ssl_handshake_timeout=READ_TIMEOUT if self.web.tls else None)

    @property
    def bound_port(self) -> int:
        return self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        self._auth.shutdown(wait=False, cancel_futures=True)

    async def _allowed(self, head: bytes) -> bool:
        if not self.web.users:
            return True
        header = next((line.split(b":", 1)[1].strip().decode("latin-1") for line in head.split(b"\r\n")[1:]
                       if line.lower().startswith(b"authorization:")), None)
        pair = self.web.credentials(header)
        if pair is None:
            return False
        return await asyncio.get_running_loop().run_in_executor(self._auth, self.web.check, *pair)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
            method, target, *_ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            path = target.split("?", 1)[0]
            extra = ""
            if not await self._allowed(head):
                status, ctype, body = "401 Unauthorized", "text/plain", b"unauthorized\n"
                extra = 'WWW-Authenticate: Basic realm="memguard"\r\n'
            elif method not in ("GET", "HEAD"):
                status, ctype, body = "405 Method Not Allowed", "text/plain", b"GET only\n"
            elif path == "/metrics":
                status, ctype, body = "200 OK", CONTENT_TYPE_LATEST, self.body()
            elif path == "/":
                status, ctype, body = "200 OK", "text/plain", b"memguard: metrics at /metrics\n"
            else:
                status, ctype, body = "404 Not Found", "text/plain", b"not found\n"
            header = (f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n{extra}"
                      f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
            writer.write(header if method == "HEAD" else header + body)
            await writer.drain()
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ConnectionError, ValueError, ssl.SSLError):
            pass
        finally:
            writer.close()

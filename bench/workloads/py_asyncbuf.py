"""An asyncio message server (loopback only) keeping per-session replay buffers, with or without the leak.

    python3 py_asyncbuf.py [--seconds 240] [--clients 120] [--msg-rate 30]
        [--msg-size 1500] [--ack-every 40] [--slow-ackers 0.1]
        [--life 4:20] [--grace 5] [--leak] [--seed 0]

A pub/sub-style server on 127.0.0.1 (an ephemeral port) in asyncio, and a
load generator in a child process (also asyncio, also Debian's
/usr/bin/python3) with ``--clients`` concurrent connections.  Each client
opens a session (a new session id), sends length-prefixed messages of
random size around ``--msg-size`` bytes at about ``--msg-rate`` a second,
and after a life drawn from ``--life`` (seconds, uniform) closes the
connection and opens a new session (connection churn).

The server acknowledges nothing itself; it keeps, per session, a replay
buffer (a deque of the messages, each held as a ``bytes`` plus a small
header dict) so that a client that reconnects could ask for a resend.
A client acks every ``--ack-every`` messages and the server trims the
buffer up to the ack; ``--slow-ackers`` of the clients ack only every
10 x ``--ack-every`` (their buffers get ten times longer).  The server
also folds every message into a per-session running digest and counts.

When a connection closes its session is kept for ``--grace`` seconds
(resumption), then dropped by a sweeper task once a second.  With
``--leak`` the sweeper compares the wrong clock (the session's start, not
its close, against a deadline that it keeps pushing back), so no closed
session is ever dropped: every session's last unacked buffer stays, a
slow leak of churn x (buffer size), killed by the OOM killer in the end.
Without it the buffered bytes stay level (sessions come and go), but the
working set is not a steady band: in the one such run recorded (300
clients, 12 messages/s each) it crept ~0.25 MiB/s for two minutes, glibc's
heap growing under the mixed message sizes.  With the leak, a straight
line (~0.9 MiB/s at the defaults); glibc reuses the freed buffers, so no
sawtooth.

Logs sessions open/closed-but-kept, buffered bytes and the cgroup's usage
every second.  Seeded (``random.Random(seed)`` in the generator).
"""

import argparse
import asyncio
import collections
import hashlib
import os
import random
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _mem import MIB, log, own_memory_cgroup, read_int  # noqa: E402

HDR = struct.Struct("!BIQ")      # kind (1 msg, 2 ack, 3 hello), length, seq / session id


class Session:
    __slots__ = ("sid", "buf", "acked", "digest", "count", "started", "closed_at", "nbytes")

    def __init__(self, sid: int) -> None:
        self.sid = sid
        self.buf: collections.deque = collections.deque()
        self.acked = 0
        self.digest = hashlib.blake2b(digest_size=16)
        self.count = 0
        self.nbytes = 0
        self.started = time.monotonic()
        self.closed_at = None


class Server:
    def __init__(self, args) -> None:
        self.args = args
        self.sessions: dict[int, Session] = {}
        self.messages = 0
        self.dropped = 0
        self.deadline = 0.0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        s = None
        try:
            while True:
                kind, length, num = HDR.unpack(await reader.readexactly(HDR.size))
                if kind == 3:
                    s = self.sessions.setdefault(num, Session(num))
                elif kind == 1:
                    body = await reader.readexactly(length)
                    s.count += 1
                    s.digest.update(body)
                    s.buf.append(({"seq": num, "t": time.time(), "len": length}, body))
                    s.nbytes += length
                    self.messages += 1
                elif kind == 2:
                    while s.buf and s.buf[0][0]["seq"] <= num:
                        s.nbytes -= s.buf.popleft()[0]["len"]
                    s.acked = num
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            if s is not None:
                s.closed_at = time.monotonic()
            writer.close()

    async def sweeper(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            if self.args.leak:
                # the bug: a deadline measured from the session's start and pushed back each sweep
                self.deadline = max(self.deadline, now) + self.args.grace
                gone = [sid for sid, s in self.sessions.items()
                        if s.closed_at is not None and s.started > self.deadline]
            else:
                gone = [sid for sid, s in self.sessions.items()
                        if s.closed_at is not None and now - s.closed_at > self.args.grace]
            for sid in gone:
                del self.sessions[sid]
                self.dropped += 1


async def serve(args) -> None:
    cg = os.path.join(own_memory_cgroup(), "memory.usage_in_bytes")
    srv = Server(args)
    server = await asyncio.start_server(srv.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sweeper = asyncio.create_task(srv.sweeper())
    cmd = [sys.executable, os.path.abspath(__file__), "--generate", "--port", str(port)]
    for k in ("seconds", "clients", "msg_rate", "msg_size", "ack_every", "slow_ackers", "life", "seed"):
        cmd += ["--" + k.replace("_", "-"), str(getattr(args, k))]
    gen = await asyncio.create_subprocess_exec(*cmd)
    start = time.monotonic()
    while gen.returncode is None:
        try:
            await asyncio.wait_for(gen.wait(), timeout=1.0)
        except asyncio.TimeoutError:
            pass
        open_ = sum(1 for s in srv.sessions.values() if s.closed_at is None)
        kept = len(srv.sessions) - open_
        buffered = sum(s.nbytes for s in srv.sessions.values())
        log(f"t={time.monotonic() - start:.0f}s msgs {srv.messages} open {open_} kept {kept} "
            f"dropped {srv.dropped} buffered {buffered / MIB:.0f}MiB usage {read_int(cg) / MIB:.0f}MiB")
    sweeper.cancel()
    server.close()
    log(f"done: msgs {srv.messages} sessions {len(srv.sessions)} dropped {srv.dropped}")


async def client(args, rnd: random.Random, port: int, ids, end: float, slow: bool) -> None:
    ack_every = args.ack_every * (10 if slow else 1)
    lo, hi = (float(x) for x in args.life.split(":"))
    while time.monotonic() < end:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        sid = next(ids)
        writer.write(HDR.pack(3, 0, sid))
        close_at = min(end, time.monotonic() + rnd.uniform(lo, hi))
        seq = 0
        while time.monotonic() < close_at:
            seq += 1
            n = max(64, int(rnd.gauss(args.msg_size, args.msg_size / 3)))
            writer.write(HDR.pack(1, n, seq) + rnd.randbytes(n))
            if seq % ack_every == 0:
                writer.write(HDR.pack(2, 0, seq - ack_every // 4))   # the last quarter still in flight
            await writer.drain()
            await asyncio.sleep(rnd.expovariate(args.msg_rate))
        writer.close()
        await writer.wait_closed()


async def generate(args) -> None:
    rnd = random.Random(args.seed)
    end = time.monotonic() + args.seconds
    ids = iter(range(1, 1 << 62))
    tasks = []
    for i in range(args.clients):
        crnd = random.Random(rnd.getrandbits(64))
        tasks.append(asyncio.create_task(client(args, crnd, args.port, ids, end,
                                                rnd.random() < args.slow_ackers)))
        await asyncio.sleep(0.01)
    await asyncio.gather(*tasks)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=240.0)
    p.add_argument("--clients", type=int, default=120)
    p.add_argument("--msg-rate", type=float, default=30.0, help="messages a second per client, on average")
    p.add_argument("--msg-size", type=int, default=1500, help="bytes, mean (gaussian, sd a third)")
    p.add_argument("--ack-every", type=int, default=40)
    p.add_argument("--slow-ackers", type=float, default=0.1, help="fraction acking 10x less often")
    p.add_argument("--life", default="4:20", help="connection life, seconds, uniform LO:HI")
    p.add_argument("--grace", type=float, default=5.0, help="seconds a closed session is kept")
    p.add_argument("--leak", action="store_true", help="closed sessions are never dropped")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--generate", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    asyncio.run(generate(args) if args.generate else serve(args))


if __name__ == "__main__":
    main()

"""Load (issue 24): many clients at once and fast scrapes while the daemon
ticks fast; every answer right, the daemon unharmed.  The figures (how
long) are printed, not asserted: benchmarks are the place for timings."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import urllib.request

import pytest

from memguard.api import protocol
from memguard.api.server import FIRST_REQUEST_TIMEOUT
from tests.e2e.daemon import Daemon

CLIENTS = 1000


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(str(tmp_path), "--no-probes", config="sampling:\n  interval: 100ms\n  fast_interval: 100ms\n")
    yield d
    assert d.stop() == 0, d.log()


def test_a_thousand_clients_at_once_all_get_their_answer(daemon):
    async def one(i):
        reader, writer = await asyncio.open_unix_connection(daemon.socket)
        writer.write(protocol.request("version"))
        await writer.drain()
        answer = json.loads(await asyncio.wait_for(reader.readline(), 60))
        writer.close()
        return answer

    async def all_at_once():
        return await asyncio.gather(*(one(i) for i in range(CLIENTS)), return_exceptions=True)
    t0 = time.monotonic()
    answers = asyncio.run(all_at_once())
    print(f"{CLIENTS} concurrent clients answered in {time.monotonic() - t0:.2f} s")
    failed = [a for a in answers if isinstance(a, BaseException) or not a.get("ok")]
    assert not failed, f"{len(failed)} of {CLIENTS} failed, e.g. {failed[:3]}"
    assert daemon.status()["healthy"]


def test_two_hundred_scrapes_a_second_while_ticking_every_100ms(daemon):
    stop = time.monotonic() + 5
    errors, scrapes = [], [0]

    def scrape():
        while time.monotonic() < stop:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{daemon.port}/metrics", timeout=10) as r:
                    assert b"memguard_build_info" in r.read()
                scrapes[0] += 1
            except Exception as e:  # noqa: BLE001 - collected and reported
                errors.append(e)
    before = daemon.status()["counters"]["ticks"]
    threads = [threading.Thread(target=scrape) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ticks = daemon.status()["counters"]["ticks"] - before
    print(f"{scrapes[0]} scrapes in 5 s while the daemon ticked {ticks} times")
    assert not errors, errors[:3]
    assert scrapes[0] >= 1000, f"fewer than 200 scrapes a second: {scrapes[0]} in 5 s"
    assert ticks >= 25, f"scrapes held the ticks back: {ticks} in 5 s at 100 ms"


def test_a_client_that_never_finishes_its_request_is_let_go(daemon):
    """Half-open clients (connected, silent; a line begun and never ended)
    are closed after FIRST_REQUEST_TIMEOUT; a registered job's connection,
    idle after its request, is not."""
    silent, partial, answered = (socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(3))
    for s in (silent, partial, answered):
        s.connect(daemon.socket)
        s.settimeout(FIRST_REQUEST_TIMEOUT + 10)
    partial.sendall(b'{"v": 1, "method": "vers')
    answered.sendall(protocol.request("version"))
    assert json.loads(answered.recv(65536))["ok"]
    t0 = time.monotonic()
    assert silent.recv(1) == b"" and partial.recv(1) == b"", "closed by the daemon"
    assert FIRST_REQUEST_TIMEOUT - 1 <= time.monotonic() - t0 <= FIRST_REQUEST_TIMEOUT + 5
    answered.setblocking(False)
    with pytest.raises(BlockingIOError):
        answered.recv(1)                  # still open: it asked something
    answered.sendall(protocol.request("version"))
    answered.setblocking(True)
    assert json.loads(answered.recv(65536))["ok"]
    for s in (silent, partial, answered):
        s.close()

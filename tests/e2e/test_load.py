"""Load (issue 24): many clients at once and fast scrapes while the daemon
ticks fast; every answer right, the daemon unharmed.  The figures (how
long) are printed, not asserted: benchmarks are the place for timings."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.request

import pytest

from memguard.api import protocol
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

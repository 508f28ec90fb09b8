"""memguardd at rest on a host it cannot be woken for (issue 23): between
two ticks, up to ``rest_interval`` apart, it reads /proc/meminfo alone
(Daemon._look), and a host that grew by ``rest_step`` is ticked at once.

On a fixture tree, so that the host's memory is the test's to move: 8 GB,
3 GB of working set (tests/trees.py's MEMINFO); growing at 1 GiB/s would
take it to ``fast_above`` (85 %) in ~3.5 s, the time between two looks.
"""

from __future__ import annotations

import os
import time

import pytest

from tests.e2e.daemon import Daemon
from tests.trees import MEMINFO, Tree, hybrid_host

CONFIG = "sampling:\n  rest_interval: 60s\n"


@pytest.fixture
def host(tmp_path) -> Tree:
    return hybrid_host(Tree(str(tmp_path / "host")))


@pytest.fixture
def daemon(tmp_path, host):
    d = Daemon(str(tmp_path), "--proc-root", host.roots.proc, "--sys-root", host.roots.sys,
               "--rootfs", host.top, "--no-probes", config=CONFIG)
    yield d
    assert d.stop() == 0, d.log()


def set_available(host: Tree, kb: int) -> None:
    """MemAvailable, written whole (a look never reads half a file)."""
    text = MEMINFO.replace("MemAvailable:    5000000 kB", f"MemAvailable:    {kb} kB")
    tmp = host.write("proc/meminfo.new", text)
    os.replace(tmp, os.path.join(host.top, "proc/meminfo"))


def test_a_resting_host_is_looked_at_not_ticked_and_ticked_once_it_grows(daemon, host):
    rested = daemon.wait_for_tick(lambda s: s["rest"]["at_rest"], timeout=60)
    assert rested["rest"]["awake_because"] is None
    assert rested["interval_seconds"] >= 50          # the host no longer shortens the rest
    ticks = rested["counters"]["ticks"]
    time.sleep(8)                                    # two looks or more, no tick
    assert daemon.status()["counters"]["ticks"] == ticks, daemon.log()[-2000:]
    set_available(host, 4_400_000)                   # the working set grew by 600 MB, a step is 400 MB
    start = time.monotonic()
    grown = daemon.wait_for_tick(lambda s: s["counters"]["ticks"] > ticks, timeout=10)
    took = time.monotonic() - start
    assert took < 6, f"ticked {took:.1f} s after the host grew (looks ~3.5 s apart)"
    (h,) = [d for d in grown["domains"] if d["name"] == "host"]
    assert h["working_set_bytes"] == (8_000_000 - 1_000_000 - (4_400_000 - 1_000_000)) * 1024
    # it moved a step: awake for 30 s
    assert not grown["rest"]["at_rest"]
    assert grown["rest"]["awake_because"] in ("host grew by rest_step", "host moved by rest_step within 30 s")

"""memguardd at rest on the real kernel (issue 23): it sleeps long while
every domain is far from its limit, and the kernel's memcg usage thresholds
wake it the moment a v1 cgroup moves, so that a cgroup climbing at 200 MB/s
from rest is sampled at the fast interval before it reaches 90 % of its
limit; and the root cgroup's wakes it when the host grows by a step."""

from __future__ import annotations

import time

import pytest

from memguard.cli.client import call
from tests.e2e.daemon import Daemon
from tests.kernel import MIB, require, wait_until

GIB = 1024 * MIB

pytestmark = pytest.mark.root

CONFIG = """\
sampling:
  rest_interval: 30s
recorder:
  fine_step: 50ms
cgroups:
  include: ["/mgtest-*"]
"""
LIMIT = 1024 * MIB


@pytest.fixture
def daemon(tmp_path):
    require("root")
    require("v1_memory")
    d = Daemon(str(tmp_path), config=CONFIG)
    yield d
    assert d.stop() == 0, d.log()


def test_a_cgroup_climbing_at_200_mb_s_from_rest_is_sampled_fast_before_90_percent(daemon, v1_cgroup, hog):
    group = v1_cgroup(LIMIT)
    name = f"cgroup:{group.path}"
    hog(group, "anon", "20").wait_ready()
    # watched at the interval for its first 30 s, then at rest: the tick
    # interval stretches to the rest interval (the host is looked at between
    # ticks, Daemon._look)
    rested = daemon.wait_for_tick(lambda s: s["interval_seconds"] >= 5 and any(d["name"] == name
                                                                              for d in s["domains"]),
                                  timeout=90)
    ticks = rested["counters"]["ticks"]
    time.sleep(8)
    extra = daemon.status()["counters"]["ticks"] - ticks
    assert extra <= 2, f"at rest, a tick in 8 s at most: {extra}\n{daemon.log()[-3000:]}"
    start = time.monotonic()
    grower = hog(group, "grow", "10", "50", "970")       # 200 MiB/s to 95 % of the limit
    grower.wait_ready(timeout=30)
    climb = time.monotonic() - start
    history = call(daemon.socket, "history", {"seconds": 30, "domains": [name]})["domains"][name]
    points = [(t, ws / LIMIT) for t, ws in zip(history["t"], history["working_set_bytes"])]
    climbing = [(t, r) for t, r in points if t >= -climb - 2 and r > 0.1]
    first_90 = next(t for t, r in climbing if r >= 0.9)
    before = [(t, r) for t, r in climbing if t < first_90]
    assert before and before[-1][1] >= 0.85, \
        f"sampled between 85 and 90 % of the limit (the fast_above threshold woke it): {climbing}"
    gaps = [b[0] - a[0] for a, b in zip(before, before[1:])]
    assert len(before) >= 2, f"the climb ({climb:.1f} s) was sampled on its way: {climbing}"
    assert all(g < 1.5 for g in gaps), f"no rest once it moved: {climbing}"
    # and fast from then on
    after = [t for t, r in points if t >= first_90]
    assert all(b - a <= 0.4 for a, b in zip(after, after[1:])), f"fast once close: {after}"
    wait_until(lambda: daemon.status()["interval_seconds"] <= 0.3, timeout=5, what="the fast interval")


def test_a_cgroup_made_while_the_daemon_rests_is_found_at_once(daemon, v1_cgroup):
    daemon.wait_for_tick(lambda s: s["interval_seconds"] >= 5, timeout=90)
    start = time.monotonic()
    group = v1_cgroup(256 * MIB)        # mkdir, then the limit: inotify wakes the daemon at the mkdir
    found = daemon.wait_for_tick(lambda s: any(d["name"] == f"cgroup:{group.path}" for d in s["domains"]),
                                 timeout=10)
    took = time.monotonic() - start
    assert took < 3, f"found {took:.1f} s after it was made (the daemon rested {found['interval_seconds']:.0f} s)"


def test_the_host_growing_a_step_wakes_the_resting_daemon(tmp_path, v1_cgroup, hog):
    """No cgroup domain here: only the root cgroup's usage threshold can wake
    the daemon (growing at the 100 MiB/s assumed here, a 24 GiB host would
    be looked at every ~200 s; the rest is 120 s)."""
    require("root")
    require("v1_memory")
    d = Daemon(str(tmp_path), config="sampling:\n  rest_interval: 120s\n  rest_growth: 100MiB\ncgroups:\n  include: [\"/mgtest-none\"]\n")
    try:
        rested = d.wait_for_tick(lambda s: s["rest"]["at_rest"] and s["rest"]["armed"] + s["rest"]["looked_at"],
                                 timeout=120)
        if "host" not in rested["rest"]["armed"]:
            (host,) = [x for x in rested["domains"] if x["name"] == "host"]
            pytest.skip(f"the host is not armed: too little free memory for a threshold "
                        f"({(host['limit_bytes'] - host['used_bytes']) / GIB:.1f} GiB free)")
        (host,) = [x for x in rested["domains"] if x["name"] == "host"]
        step = 0.05 * host["limit_bytes"]
        ticks = rested["counters"]["ticks"]
        # a step and a half of anonymous memory, in a cgroup of our own that
        # holds it (the daemon does not watch it)
        group = v1_cgroup(int(1.5 * step) + 512 * MIB)
        start = time.monotonic()
        h = hog(group, "anon", str(int(1.5 * step) // MIB))
        h.wait_ready(timeout=60)
        woke = d.wait_for_tick(lambda s: s["counters"]["ticks"] > ticks, timeout=30)
        took = time.monotonic() - start
        assert took < 10, f"the daemon ticked {took:.1f} s after the host grew a step and a half"
        assert not woke["rest"]["at_rest"], woke["rest"]
    finally:
        assert d.stop() == 0, d.log()

"""A Python in-memory LRU cache of computed objects, bounded or not.

    python3 py_lru.py [--seconds 120] [--rate 1000] [--payload 16384]
        [--max-items 0] [--hot 0.6] [--report-every 5]

A "service" answers ``--rate`` requests a second (in 10 batches a second,
paced on CLOCK_MONOTONIC).  A request asks for a key: with probability
``--hot`` a recently used one (a hit), else a never-seen one (a miss, as
with session ids or user ids arriving).  A miss "computes" the value and
caches it in an ``OrderedDict``: a dict with a ``bytes`` payload of
``--payload`` bytes (seeded random data), a list of 32 floats and a few
small fields, so one entry costs roughly payload + ~2 KiB of Python
objects (glibc heap, not mmap: freed entries leave holes that the next
ones reuse).  With ``--max-items N`` the least recently used entry is
evicted once the cache holds N (an LRU cache that fills and then stays
flat); with 0 the cache grows forever (the cache that was meant to be
bounded: killed by the OOM killer when it reaches the limit).

Every ``--report-every`` seconds the service builds a "report" over the
cache (a list of tuples of every entry's small fields, sorted, then
dropped): a short spike over the base, of about 150 bytes per entry.

Pure Python (Debian's /usr/bin/python3), seeded (random.seed(0)); logs
the cache size and the cgroup's usage once a second.
"""

import argparse
import collections
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _mem import MIB, log, own_memory_cgroup, read_int, sleep_until  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=120.0)
    p.add_argument("--rate", type=int, default=1000, help="requests a second")
    p.add_argument("--payload", type=int, default=16384, help="bytes of payload an entry")
    p.add_argument("--max-items", type=int, default=0, help="0: unbounded")
    p.add_argument("--hot", type=float, default=0.6, help="fraction of requests that hit")
    p.add_argument("--report-every", type=float, default=5.0)
    args = p.parse_args()
    random.seed(0)
    cg = os.path.join(own_memory_cgroup(), "memory.usage_in_bytes")
    cache: "collections.OrderedDict[int, dict]" = collections.OrderedDict()
    next_key = 0
    hits = misses = evictions = 0
    per_tick = max(1, args.rate // 10)
    start = time.monotonic()
    tick = start
    next_log = start + 1.0
    next_report = start + args.report_every
    while time.monotonic() - start < args.seconds:
        for _ in range(per_tick):
            if cache and random.random() < args.hot:
                # a recent key: one of the last ~2000 inserted or touched
                k = next_key - 1 - int(random.expovariate(1 / 500.0))
                if k in cache:
                    cache.move_to_end(k)
                    hits += 1
                    continue
            k = next_key
            next_key += 1
            misses += 1
            cache[k] = {
                "id": k,
                "user": f"user-{k:09d}",
                "ts": time.time(),
                "score": random.random(),
                "features": [random.random() for _ in range(32)],
                "blob": random.randbytes(args.payload),
            }
            if args.max_items and len(cache) > args.max_items:
                cache.popitem(last=False)
                evictions += 1
        now = time.monotonic()
        if now >= next_report:
            report = sorted((v["score"], v["user"], k) for k, v in cache.items())
            del report
            next_report += args.report_every
        if now >= next_log:
            log(f"t={now - start:.0f}s items {len(cache)} hits {hits} misses {misses} "
                f"evicted {evictions} usage {read_int(cg) / MIB:.0f}MiB")
            next_log += 1.0
        tick += 0.1
        sleep_until(tick)
    log(f"done: items {len(cache)} hits {hits} misses {misses} evicted {evictions}")


if __name__ == "__main__":
    main()

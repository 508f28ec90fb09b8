"""Threaded web-crawler page cache whose TTL trim falls behind rising traffic.

    /usr/bin/python3 py_crawlcache.py [--seconds 75] [--mibps 3] [--ramp 30]
        [--ttl 15] [--trim-every 5] [--threads 4]

Pure Python (Debian's python3, no packages).  ``--threads`` fetcher threads
"download" pages, paced on CLOCK_MONOTONIC in 0.1 s ticks: the total rate
starts at ``--mibps`` MiB/s and grows linearly, ``--mibps`` more every
``--ramp`` seconds (traffic picking up).  Each page is a ``bytes`` body of
8-64 KiB (``random.Random(6 + thread).randbytes``) plus a parsed list of
20-60 short link strings; it is stored in a shared dict url -> (fetched at,
body, links) under a lock.  A trimmer thread, every ``--trim-every``
seconds, deletes the entries older than ``--ttl`` seconds.  So memory is
about rate x TTL: a sawtooth (growth between trims, a drop at each trim,
partly hidden by malloc keeping freed memory) on a floor that rises with
the traffic.  Nothing is written to disk.
"""

import argparse
import random
import sys
import threading
import time

sys.path.insert(0, __import__("os").path.dirname(__file__))
from _mem import log  # noqa: E402

KIB = 1024


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=75.0)
    p.add_argument("--mibps", type=float, default=3.0)
    p.add_argument("--ramp", type=float, default=30.0)
    p.add_argument("--ttl", type=float, default=15.0)
    p.add_argument("--trim-every", type=float, default=5.0)
    p.add_argument("--threads", type=int, default=4)
    a = p.parse_args()
    cache = {}
    lock = threading.Lock()
    t0 = time.monotonic()
    stop = threading.Event()
    stored = [0] * a.threads

    def fetcher(k: int) -> None:
        rng = random.Random(6 + k)
        tick = 0
        owed = 0.0
        n = 0
        while not stop.is_set():
            due = t0 + tick * 0.1
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            t = due - t0
            if t >= a.seconds:
                return
            rate = a.mibps * (1.0 + t / a.ramp) * (1 << 20) / a.threads
            owed += rate * 0.1
            while owed > 0:
                size = rng.randint(8 * KIB, 64 * KIB)
                body = rng.randbytes(size)
                links = [f"https://site{rng.randint(0, 9999)}.example/p/{rng.getrandbits(40):x}"
                         for _ in range(rng.randint(20, 60))]
                url = f"https://host{k}.example/{n}"
                n += 1
                with lock:
                    cache[url] = (time.monotonic(), body, links)
                owed -= size
                stored[k] += size
            tick += 1

    def trimmer() -> None:
        nxt = t0 + a.trim_every
        while not stop.is_set():
            left = nxt - time.monotonic()
            if left > 0:
                time.sleep(left)
            if time.monotonic() - t0 >= a.seconds:
                return
            cut = time.monotonic() - a.ttl
            with lock:
                old = [u for u, v in cache.items() if v[0] < cut]
                for u in old:
                    del cache[u]
                n = len(cache)
            log(f"{time.monotonic() - t0:6.1f}s trim: dropped {len(old)}, kept {n}, "
                f"fetched {sum(stored) / (1 << 20):.0f} MiB")
            nxt += a.trim_every

    ths = [threading.Thread(target=fetcher, args=(k,)) for k in range(a.threads)]
    ths.append(threading.Thread(target=trimmer))
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    log(f"done at {time.monotonic() - t0:.1f}s, {len(cache)} pages cached")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A fork-based worker pool that grows, over a big Python dataset: copy-on-write.

The classic data-loader surprise: the parent builds a dataset of ``--records``
small Python objects (a tuple of an int, a float and a short str each, in a
list; ~100 bytes a record), then forks a worker every ``--spawn-every``
seconds until there are ``--workers``.  A forked worker shares the parent's
pages, but merely *reading* a Python object writes its reference count, so
each page it visits is copied into the worker: a worker walks the whole
dataset once, paced to take ``--walk`` seconds (a ramp of ~the dataset's size
per worker), then serves random "batches" (reads of random records, more
copies of pages it has already copied: nothing new) until ``--seconds`` from
the parent's start, and exits.  The parent only waits.  The curve: the build,
then one ramp per worker, a plateau between them.

    python3 py_cowfork.py --records 2000000 --workers 4 --spawn-every 12 --walk 6 --seconds 90
"""

import argparse
import os
import random
import sys
import time


def worker(data, walk: float, deadline: float, wid: int) -> None:
    rng = random.Random(wid)
    n = len(data)
    chunk = 20000
    steps = max(1, n // chunk)
    t0 = time.monotonic()
    total = 0.0
    for s in range(steps + 1):
        due = t0 + walk * s / steps
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        for rec in data[s * chunk:(s + 1) * chunk]:
            total += rec[1]
    print(f"worker {wid} walked {n} records in {time.monotonic() - t0:.1f}s", flush=True)
    while time.monotonic() < deadline:
        for _ in range(2000):
            total += data[rng.randrange(n)][1]
        time.sleep(0.05)
    os._exit(0)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--records", type=int, default=2_000_000)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--spawn-every", type=float, default=12.0)
    p.add_argument("--walk", type=float, default=6.0)
    p.add_argument("--seconds", type=float, default=90.0)
    a = p.parse_args()
    t0 = time.monotonic()
    rng = random.Random(0)
    data = [(i, rng.random(), f"user{rng.randrange(10**6):06d}") for i in range(a.records)]
    print(f"{time.monotonic() - t0:.1f}s built {len(data)} records", flush=True)
    deadline = t0 + a.seconds
    kids = []
    for w in range(a.workers):
        due = time.monotonic() + (a.spawn_every if w else 1.0)
        while time.monotonic() < due:
            time.sleep(0.1)
        pid = os.fork()
        if pid == 0:
            worker(data, a.walk, deadline, w)
        kids.append(pid)
        print(f"{time.monotonic() - t0:.1f}s forked worker {w} (pid {pid})", flush=True)
    status = 0
    for pid in kids:
        _, st = os.waitpid(pid, 0)
        if st:
            print(f"worker {pid} ended with status {st:#x}", flush=True)
            status = 1
    print("done", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())

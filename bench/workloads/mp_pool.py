"""A multiprocessing.Pool that parses, sorts and aggregates shards of
records, the shards growing in size, with worker churn.

    python3 mp_pool.py [--workers 3] [--tasks 40] [--min-records 100000]
        [--max-records 600000] [--maxtasksperchild 2] [--lookup-mib 64]

The parent builds a lookup table (a dict of ``--lookup-mib`` MiB of small
objects: city id -> name/region tuple), then hands ``--tasks`` shards to
a ``multiprocessing.Pool`` of ``--workers`` forked workers
(``maxtasksperchild``: each worker exits after that many shards and a new
one is forked, as one does to contain leaks and fragmentation).  Shard i
has a number of records growing linearly from ``--min-records`` to
``--max-records`` (an ingestion queue sorted by file size, small first).
A worker "parses" its shard into a list of records (tuple of int, float,
str and a dict, about 500 bytes of Python objects each, seeded random
data), joins them with the lookup table (reading the parent's table:
refcount writes copy its pages into the worker, copy-on-write), sorts
them, aggregates per region and returns a small summary; the list dies
when the task ends.  The parent keeps the summaries.

Memory: the parent's base, then each worker's shard rises and falls (a
spike per task, a few seconds each), and the workers' spikes overlap at
random; as the shards grow, the spikes grow: a tall sawtooth whose
envelope climbs until the last shards.  Under a limit that holds
``--workers`` of the largest shards at once it fits; with larger shards
a worker (or, as the Pool forks replacements, several) is OOM-killed near
the end (the Pool then hangs waiting for the lost
results: the run is ended by a timeout on ``AsyncResult.get``; exit 3).
Debian's /usr/bin/python3, ``random.seed`` per shard; logs every task's
size, the time and the cgroup's usage.
"""

import argparse
import multiprocessing
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _mem import MIB, log, own_memory_cgroup, read_int  # noqa: E402

LOOKUP: dict = {}
REGIONS = ("north", "south", "east", "west", "centre", "coast", "hills", "islands")


def build_lookup(mib: int) -> dict:
    random.seed(1)
    n = mib * MIB // 260
    return {i: (f"city-{i:08d}", REGIONS[i % len(REGIONS)], random.random()) for i in range(n)}


def shard(args_tuple):
    index, n_records = args_tuple
    rnd = random.Random(index)
    n_cities = len(LOOKUP)
    t0 = time.monotonic()
    records = []
    for i in range(n_records):
        city = rnd.randrange(n_cities)
        records.append((index * 10_000_000 + i, rnd.random() * 100.0, f"item-{rnd.getrandbits(40):x}",
                        {"city": city, "qty": rnd.randrange(1, 20), "tag": LOOKUP[city][1]}))
    records.sort(key=lambda r: (r[3]["tag"], r[1]))
    totals: dict = {}
    for r in records:
        name, region, w = LOOKUP[r[3]["city"]]
        totals[region] = totals.get(region, 0.0) + r[1] * r[3]["qty"] * w
    del records
    return index, n_records, os.getpid(), time.monotonic() - t0, totals


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--tasks", type=int, default=40)
    p.add_argument("--min-records", type=int, default=100_000)
    p.add_argument("--max-records", type=int, default=600_000)
    p.add_argument("--maxtasksperchild", type=int, default=2)
    p.add_argument("--lookup-mib", type=int, default=64)
    p.add_argument("--task-timeout", type=float, default=60.0)
    args = p.parse_args()
    global LOOKUP
    cg = os.path.join(own_memory_cgroup(), "memory.usage_in_bytes")
    start = time.monotonic()
    LOOKUP = build_lookup(args.lookup_mib)
    log(f"lookup {len(LOOKUP)} entries, usage {read_int(cg) / MIB:.0f}MiB")
    step = (args.max_records - args.min_records) / max(1, args.tasks - 1)
    jobs = [(i, int(args.min_records + i * step)) for i in range(args.tasks)]
    ctx = multiprocessing.get_context("fork")
    summaries = []
    with ctx.Pool(args.workers, maxtasksperchild=args.maxtasksperchild) as pool:
        pending = [pool.apply_async(shard, (j,)) for j in jobs]
        for res in pending:
            try:
                index, n, pid, took, totals = res.get(timeout=args.task_timeout)
            except multiprocessing.TimeoutError:
                log(f"t={time.monotonic() - start:.1f}s a shard did not come back in "
                    f"{args.task_timeout:.0f}s (a worker died?): giving up")
                pool.terminate()
                sys.exit(3)
            summaries.append(totals)
            log(f"t={time.monotonic() - start:.1f}s shard {index} ({n} records) by {pid} "
                f"in {took:.1f}s, usage {read_int(cg) / MIB:.0f}MiB")
    log(f"done: {len(summaries)} shards in {time.monotonic() - start:.1f}s")


if __name__ == "__main__":
    main()

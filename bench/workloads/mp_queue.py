"""A multiprocessing producer/consumer whose queue backs up when the consumer slows.

    python3 mp_queue.py [--seconds 130] [--rate 200] [--frame-kib 48]
        [--fast 400] [--slow 80] [--slow-start 20] [--slow-seconds 60]

The parent is a producer: paced on CLOCK_MONOTONIC in 100 ms ticks it
"receives" ``--rate`` frames a second (a tuple of a sequence number, a
timestamp, a sensor id and a ``--frame-kib`` KiB ``bytes`` payload, a fresh
copy sliced out of a seeded random blob) and ``put``s each on an unbounded
``multiprocessing.Queue`` (fork context).  A child process consumes them:
``get``, unpickle, CRC32 and SHA-1 of the payload, a running per-sensor
aggregate, and paces itself to a capacity of ``--fast`` frames a second,
except from ``--slow-start`` for ``--slow-seconds`` seconds, when its
downstream "database" slows it to ``--slow`` frames a second.

``multiprocessing.Queue.put`` never blocks: the frame is appended to the
queue's in-process buffer (a deque) and a feeder thread pickles it into a
pipe that holds only ~64 KiB.  While the consumer keeps up, the buffer stays
empty; while it is slow, the frames pile up in the *producer's* memory at
(rate - slow) frames a second; when it recovers it drains the backlog at
(fast - rate) frames a second.  After ``--seconds`` the producer stops,
sends a sentinel and waits for the consumer to finish.

The curve: a flat base, a straight climb for the slow phase, then a drain
(how much of the freed memory glibc gives back, and when, is its business).
A slow phase long enough that the backlog passes the limit is an OOM.
"""

import argparse
import hashlib
import multiprocessing as mp
import random
import sys
import time
import zlib


def consumer(q, fast: float, slow: float, slow_from: float, slow_to: float) -> None:
    agg = {}
    n = 0
    nbytes = 0
    last = time.monotonic()
    while True:
        item = q.get()
        if item is None:
            break
        seq, ts, sensor, payload = item
        crc = zlib.crc32(payload)
        h = hashlib.sha1(payload).digest()
        a = agg.setdefault(sensor, [0, 0, b""])
        a[0] += 1
        a[1] ^= crc
        a[2] = h
        n += 1
        nbytes += len(payload)
        now = time.monotonic()
        cap = slow if slow_from <= now < slow_to else fast
        due = last + 1.0 / cap
        if due > now:
            time.sleep(due - now)
            last = due
        else:
            last = now
        if n % 2000 == 0:
            lag = time.monotonic() - ts
            print(f"consumer: {n} frames, {nbytes >> 20} MiB, lag {lag:.1f}s", flush=True)
    print(f"consumer: done, {n} frames, {len(agg)} sensors", flush=True)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=130.0)
    p.add_argument("--rate", type=float, default=200.0, help="frames a second")
    p.add_argument("--frame-kib", type=int, default=48)
    p.add_argument("--fast", type=float, default=400.0, help="consumer capacity, frames/s")
    p.add_argument("--slow", type=float, default=80.0, help="capacity while slow")
    p.add_argument("--slow-start", type=float, default=20.0)
    p.add_argument("--slow-seconds", type=float, default=60.0)
    a = p.parse_args()
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    t0 = time.monotonic()
    c = ctx.Process(target=consumer,
                    args=(q, a.fast, a.slow, t0 + a.slow_start, t0 + a.slow_start + a.slow_seconds))
    c.start()
    rng = random.Random(0)
    size = a.frame_kib * 1024
    blob = rng.randbytes(4 << 20)
    seq = 0
    tick = 0
    owed = 0.0
    while True:
        due = t0 + tick * 0.1
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        if due - t0 >= a.seconds:
            break
        owed += a.rate * 0.1
        while owed >= 1.0:
            off = rng.randrange(len(blob) - size)
            q.put((seq, time.monotonic(), rng.randrange(64), blob[off:off + size]))
            seq += 1
            owed -= 1.0
        tick += 1
        if tick % 50 == 0:
            print(f"{due - t0:.0f}s produced {seq} frames", flush=True)
    q.put(None)
    print(f"{time.monotonic() - t0:.1f}s producer done ({seq} frames), waiting", flush=True)
    q.close()
    q.join_thread()
    c.join()
    print(f"{time.monotonic() - t0:.1f}s consumer exited {c.exitcode}", flush=True)
    return 0 if c.exitcode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

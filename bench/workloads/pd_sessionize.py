"""pandas clickstream sessionizer: event chunks pile up, re-sessionized in stages.

    python pd_sessionize.py SECONDS EVENTS_PER_S EVERY
    e.g. /tmp/r5venv/bin/python bench/workloads/pd_sessionize.py 60 40000 10

Paced on the monotonic clock in 0.5 s ticks, the job receives
EVENTS_PER_S click events a second (user id skewed to active users,
timestamp, page category, a URL string, dwell time; numpy
default_rng(37): the same events every run) as small DataFrame chunks that
are kept in a list.  Every EVERY seconds it rebuilds the whole day so far:
concatenates every chunk, sorts by (user, time), marks a new session where
a user's gap exceeds 30 s (groupby/shift/cumsum), aggregates per session
(count, first/last time, dwell sum, distinct pages) and keeps the session
table, replacing the previous one.  Memory: a slow climb of the chunks
between rebuilds, and at each rebuild a tooth of temporaries (the
concatenated and sorted copies, the group keys) that grows with the day,
settling one step higher (the larger session table).  Nothing is written
to disk.
"""
import sys
import time

import numpy as np
import pandas as pd


def main():
    seconds, rate, every = float(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    rng = np.random.default_rng(37)
    pages = np.array([f"/shop/cat{i:03d}/item" for i in range(400)], dtype=object)
    chunks = []
    sessions = None
    t0 = time.monotonic()
    tick = 0
    next_rebuild = every
    made = 0
    while True:
        due = t0 + tick * 0.5
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        t = due - t0
        if t >= seconds:
            break
        n = int(rate * 0.5)
        users = (rng.pareto(1.2, n) * 2000).astype(np.int64) % 2_000_000
        ts = t + np.sort(rng.random(n)) * 0.5 + rng.integers(0, 3, n) * 20.0
        cat = rng.integers(0, 400, n)
        chunks.append(pd.DataFrame({
            "user": users,
            "ts": ts,
            "cat": cat.astype(np.int16),
            "url": pages[cat] + "/" + pd.Series(rng.integers(0, 100000, n)).astype(str).to_numpy(),
            "dwell": rng.exponential(8.0, n).astype(np.float32),
        }))
        made += n
        if t >= next_rebuild:
            day = pd.concat(chunks, ignore_index=True)
            day = day.sort_values(["user", "ts"], kind="mergesort", ignore_index=True)
            gap = day.groupby("user")["ts"].diff()
            day["sid"] = (gap.isna() | (gap > 30.0)).cumsum()
            sessions = day.groupby("sid").agg(
                user=("user", "first"), start=("ts", "min"), end=("ts", "max"),
                events=("ts", "size"), dwell=("dwell", "sum"), pages=("url", "nunique"))
            print(f"t={t:.1f} events={made} sessions={len(sessions)}", flush=True)
            del day, gap
            next_rebuild += every
        tick += 1
    print(f"done events={made}", flush=True)


if __name__ == "__main__":
    main()

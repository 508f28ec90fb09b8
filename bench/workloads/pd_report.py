"""pandas incremental report: event chunks appended, concatenated, joined and grouped.

    /tmp/r5venv/bin/python pd_report.py [--seconds 120] [--rows 60000]
        [--report-every 15] [--users 200000]

Run with the pandas of a venv (``python3 -m venv /tmp/r5venv &&
/tmp/r5venv/bin/pip install numpy pandas``: pandas 3.x, numpy 2.x).  A
dashboard backend: paced on CLOCK_MONOTONIC it "receives" ``--rows`` events
a second, in one DataFrame chunk every 0.5 s (seeded ``default_rng(3)``:
int64 timestamp, user id, quantity, float amount, a country and a product
drawn from small sets of labels, and a unique session string per event),
appended to a list of chunks.  Every ``--report-every`` seconds it builds
the report over everything so far: ``pd.concat`` of the chunks (a copy of
all the columns), which then replaces the chunk list (consolidation: the
old chunks are freed), a ``merge`` with a ``--users`` row user table
(segment, signup year: another frame as long as the events), a
``groupby(["country", "segment"])`` aggregation and a ``pivot_table`` of
amount by product and signup year; the merged frame and the results are
dropped after.  The curve: a steady climb (the events, ~100 bytes each),
and every report a tooth (the concat copy and the merged frame) that grows
with the data; the last reports are the tallest.  A longer run is killed in
a report.
"""

import argparse
import sys
import time

import numpy as np
import pandas as pd

COUNTRIES = ["DE", "FR", "US", "GB", "NL", "ES", "IT", "PL", "SE", "BR", "IN", "JP", "CA", "AU", "MX"]


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=120.0)
    p.add_argument("--rows", type=int, default=60000, help="events a second")
    p.add_argument("--report-every", type=float, default=15.0)
    p.add_argument("--users", type=int, default=200000)
    a = p.parse_args()
    rng = np.random.default_rng(3)
    products = np.array([f"prod-{i:04d}" for i in range(2000)], dtype=object)
    countries = np.array(COUNTRIES, dtype=object)
    users = pd.DataFrame({
        "user": np.arange(a.users, dtype=np.int64),
        "segment": rng.choice(np.array(["free", "pro", "team", "enterprise"], dtype=object), a.users),
        "signup": rng.integers(2015, 2027, a.users),
    })
    chunks = []
    t0 = time.monotonic()
    next_report = t0 + a.report_every
    tick = 0
    total = 0
    per = int(a.rows * 0.5)
    while True:
        due = t0 + tick * 0.5
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        if due - t0 >= a.seconds:
            break
        base = total
        ids = np.arange(base, base + per)
        chunks.append(pd.DataFrame({
            "ts": 1765000000000 + ids * 3,
            "user": rng.integers(0, a.users, per),
            "qty": rng.integers(1, 10, per),
            "amount": np.round(rng.gamma(2.0, 30.0, per), 2),
            "country": countries[rng.zipf(1.6, per) % len(countries)],
            "product": products[rng.zipf(1.3, per) % len(products)],
            "session": [f"s{x:012x}" for x in (ids * 2654435761) % (1 << 48)],
        }))
        total += per
        tick += 1
        if time.monotonic() >= next_report:
            ts = time.monotonic()
            events = pd.concat(chunks, ignore_index=True)
            chunks = [events]
            merged = events.merge(users, on="user", how="left")
            by = merged.groupby(["country", "segment"]).agg(
                n=("qty", "size"), qty=("qty", "sum"), amount=("amount", "sum"),
                sessions=("session", "nunique"))
            pv = merged.pivot_table(index="product", columns="signup", values="amount", aggfunc="sum")
            top = by.sort_values("amount", ascending=False).index[0]
            print(f"{ts - t0:.1f}s report over {len(events)} events in {time.monotonic() - ts:.1f}s: "
                  f"{len(by)} groups, pivot {pv.shape}, top {top}", flush=True)
            del merged, by, pv
            next_report += a.report_every
    print(f"done: {total} events", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

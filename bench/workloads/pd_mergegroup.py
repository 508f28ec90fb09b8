"""pandas merge and groupby of two growing frames, the joined table kept.

    /tmp/r5venv/bin/python pd_mergegroup.py [--seconds 75] [--rows 30000]
        [--signups 2000] [--rebuild-every 10]

Run with the pandas of a venv (``python3 -m venv /tmp/r5venv &&
/tmp/r5venv/bin/pip install pandas``).  An order-analytics job, paced on
CLOCK_MONOTONIC in 0.5 s ticks (seeded ``default_rng(17)``): ``--rows``
orders a second arrive as a DataFrame chunk (order id, customer id,
amount, quantity, timestamp, a status label, a product code string), and
``--signups`` new customers a second join the customer table (id, region,
segment, a name string, signup time).  Every ``--rebuild-every`` seconds
the order chunks are concatenated into the order frame (the chunks are
dropped), the order frame is left-merged with the customer frame into a
new "wide" table that replaces the previous one (both alive until the new
one is built), and a ``groupby`` over region/segment/status with sums,
means and ``nunique`` is taken from it.  Both inputs and the wide table
grow, so the floor rises and every rebuild is a taller tooth.  Nothing is
written to disk.
"""

import argparse
import sys
import time

import numpy as np
import pandas as pd


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=75.0)
    p.add_argument("--rows", type=int, default=30000)
    p.add_argument("--signups", type=int, default=2000)
    p.add_argument("--rebuild-every", type=float, default=10.0)
    a = p.parse_args()
    rng = np.random.default_rng(17)
    regions = np.array(["eu", "us", "apac", "latam", "mea"], dtype=object)
    segments = np.array(["retail", "smb", "corp", "gov"], dtype=object)
    statuses = np.array(["new", "paid", "shipped", "returned"], dtype=object)
    ncust = 50000
    customers = pd.DataFrame({
        "cust": np.arange(ncust, dtype=np.int64),
        "region": regions[rng.integers(0, 5, ncust)],
        "segment": segments[rng.integers(0, 4, ncust)],
        "name": [f"customer-{i:08d}" for i in range(ncust)],
        "since": np.zeros(ncust),
    })
    cust_chunks = []
    orders = None
    chunks = []
    wide = None
    next_id = 0
    t0 = time.monotonic()
    tick = 0
    nxt = a.rebuild_every
    while True:
        due = t0 + tick * 0.5
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        t = due - t0
        if t >= a.seconds:
            break
        n = a.rows // 2
        s = a.signups // 2
        cust_chunks.append(pd.DataFrame({
            "cust": np.arange(ncust, ncust + s, dtype=np.int64),
            "region": regions[rng.integers(0, 5, s)],
            "segment": segments[rng.integers(0, 4, s)],
            "name": [f"customer-{i:08d}" for i in range(ncust, ncust + s)],
            "since": np.full(s, t),
        }))
        ncust += s
        chunks.append(pd.DataFrame({
            "order": np.arange(next_id, next_id + n, dtype=np.int64),
            "cust": rng.integers(0, ncust, n),
            "amount": rng.gamma(2.0, 30.0, n),
            "qty": rng.integers(1, 9, n),
            "ts": np.full(n, t) + rng.random(n) * 0.5,
            "status": statuses[rng.integers(0, 4, n)],
            "sku": [f"SKU-{x:07d}" for x in rng.integers(0, 2000000, n)],
        }))
        next_id += n
        tick += 1
        if t + 0.5 >= nxt:
            t1 = time.monotonic()
            customers = pd.concat([customers] + cust_chunks, ignore_index=True)
            cust_chunks = []
            orders = pd.concat(([orders] if orders is not None else []) + chunks, ignore_index=True)
            chunks = []
            new_wide = orders.merge(customers, on="cust", how="left")
            wide = None
            wide = new_wide
            del new_wide
            g = wide.groupby(["region", "segment", "status"]).agg(
                revenue=("amount", "sum"), mean_qty=("qty", "mean"),
                buyers=("cust", "nunique"), skus=("sku", "nunique"))
            print(f"[pd_mergegroup.py] {t1 - t0:6.1f}s rebuild: {len(orders)} orders x "
                  f"{len(customers)} customers -> {len(wide)} rows, {len(g)} groups, "
                  f"{time.monotonic() - t1:.2f}s", flush=True)
            del g
            nxt += a.rebuild_every
    print("[pd_mergegroup.py] done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

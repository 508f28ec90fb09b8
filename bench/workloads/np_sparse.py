"""scipy sparse co-occurrence matrix built from a stream of baskets.

    /tmp/r5venv/bin/python np_sparse.py [--seconds 120] [--baskets 4000]
        [--items 400000] [--merge-every 10]

Run with the numpy and scipy of a venv (``python3 -m venv /tmp/r5venv &&
/tmp/r5venv/bin/pip install numpy scipy``).  A recommender's item-item
co-occurrence count: paced on CLOCK_MONOTONIC, every 0.25 s it "receives"
``--baskets``/4 shopping baskets (seeded ``default_rng(11)``: 2 to 24 items
each, item ids Zipf-distributed over ``--items`` items, the catalogue
opening up over the run: the largest id drawn grows with time), expands each
basket into all its ordered item pairs with numpy (int32 row, int32 column,
float32 weight arrays) and appends them to a pending list.  Every
``--merge-every`` seconds the pending triplets are concatenated, turned into
a ``coo_array`` and summed into the running CSR total (``total + new``:
the COO, its CSR conversion, the old total and the new one are alive at
once), and the pending list is dropped.  The total's non-zeros keep
growing (new pairs keep appearing), so each merge is larger than the last.
The curve: a climb of pending pairs between merges, a tooth at every merge,
and a floor (the total) rising merge after merge.
"""

import argparse
import sys
import time

import numpy as np
from scipy import sparse


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=120.0)
    p.add_argument("--baskets", type=int, default=4000, help="baskets a second")
    p.add_argument("--items", type=int, default=400000)
    p.add_argument("--merge-every", type=float, default=10.0)
    a = p.parse_args()
    rng = np.random.default_rng(11)
    n = a.items
    total = sparse.csr_array((n, n), dtype=np.float32)
    pending = []
    t0 = time.monotonic()
    next_merge = t0 + a.merge_every
    tick = 0
    per = max(1, a.baskets // 4)
    pairs = 0
    while True:
        due = t0 + tick * 0.25
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        if due - t0 >= a.seconds:
            break
        open_items = int(n * min(1.0, 0.15 + 0.85 * (due - t0) / a.seconds))
        sizes = rng.integers(2, 25, per)
        flat = (rng.zipf(1.15, int(sizes.sum())) - 1) % open_items
        starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
        rows, cols = [], []
        for k in np.unique(sizes):
            sel = starts[sizes == k]
            b = flat[sel[:, None] + np.arange(k)]  # baskets of k items
            i, j = np.nonzero(~np.eye(k, dtype=bool))
            rows.append(b[:, i].ravel())
            cols.append(b[:, j].ravel())
        r = np.concatenate(rows).astype(np.int32)
        c = np.concatenate(cols).astype(np.int32)
        pending.append((r, c, np.ones(len(r), dtype=np.float32)))
        pairs += len(r)
        tick += 1
        if time.monotonic() >= next_merge:
            ts = time.monotonic()
            r = np.concatenate([x[0] for x in pending])
            c = np.concatenate([x[1] for x in pending])
            w = np.concatenate([x[2] for x in pending])
            pending = []
            new = sparse.coo_array((w, (r, c)), shape=(n, n)).tocsr()
            del r, c, w
            total = total + new
            del new
            print(f"{ts - t0:.1f}s merge in {time.monotonic() - ts:.1f}s: {pairs} pairs so far, "
                  f"total nnz {total.nnz} ({total.data.nbytes + total.indices.nbytes >> 20} MiB), "
                  f"items open {open_items}", flush=True)
            next_merge += a.merge_every
    print(f"done: {pairs} pairs, nnz {total.nnz}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

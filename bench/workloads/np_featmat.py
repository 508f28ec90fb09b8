"""numpy feature-matrix build: accumulate per-batch features, then concatenate.

A typical "load everything, then np.concatenate" pre-processing job, run with
the numpy of a venv (``/tmp/r4venv/bin/python``, numpy 2.x).  Paced on
CLOCK_MONOTONIC at ``--rate`` batches a second, each batch:

* draws a raw float64 block of ``--rows`` x ``--cols`` (seeded,
  ``numpy.random.default_rng(0)``), standardises it and builds ``--cols // 2``
  pairwise-product columns (float64 temporaries, freed at once: a small
  per-batch sawtooth);
* keeps the standardised and product columns as float32 in a Python list
  (the growth: ``rows * cols * 1.5 * 4`` bytes a batch).

After ``--batches`` batches it calls ``np.concatenate`` on the list (the
list's blocks and the joined matrix are alive together: a step of the size
of everything kept), drops the list, then for ``--hold`` seconds computes the
Gram matrix ``X.T @ X`` and a projection ``X @ w`` every second (a
projection-sized temporary each time).

    python np_featmat.py --batches 160 --rate 2 --rows 20000 --cols 64 --hold 20
"""

import argparse
import sys
import time

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batches", type=int, default=160)
    p.add_argument("--rate", type=float, default=2.0, help="batches a second")
    p.add_argument("--rows", type=int, default=20000)
    p.add_argument("--cols", type=int, default=64)
    p.add_argument("--hold", type=float, default=20.0)
    a = p.parse_args()
    rng = np.random.default_rng(0)
    kept = []
    half = a.cols // 2
    t0 = time.monotonic()
    for i in range(a.batches):
        due = t0 + i / a.rate
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        raw = rng.standard_normal((a.rows, a.cols))
        raw *= rng.uniform(0.5, 3.0, a.cols)
        z = (raw - raw.mean(axis=0)) / raw.std(axis=0)
        prod = z[:, :half] * z[:, half:]
        kept.append(np.hstack([z, prod]).astype(np.float32))
        del raw, z, prod
        if i % 20 == 0:
            print(f"{time.monotonic() - t0:7.1f}s batch {i} kept "
                  f"{sum(k.nbytes for k in kept) >> 20} MiB", flush=True)
    print(f"{time.monotonic() - t0:7.1f}s concatenate", flush=True)
    X = np.concatenate(kept)
    kept.clear()
    print(f"{time.monotonic() - t0:7.1f}s X {X.shape} {X.nbytes >> 20} MiB", flush=True)
    end = time.monotonic() + a.hold
    w = rng.standard_normal(X.shape[1]).astype(np.float32)
    while time.monotonic() < end:
        G = X.T @ X
        proj = X @ w
        w = (G @ w) / np.linalg.norm(G @ w)
        print(f"{time.monotonic() - t0:7.1f}s proj mean {float(proj.mean()):.3f}", flush=True)
        del proj
        time.sleep(1.0)
    print("done", flush=True)


if __name__ == "__main__":
    sys.exit(main())

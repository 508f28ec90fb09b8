"""NumPy image-stack pipeline: frames kept in RAM, a median background every few seconds.

    /tmp/r5venv/bin/python np_imgstack.py [--seconds 75] [--fps 8]
        [--size 1024] [--every 10] [--window 48]

Run with the numpy of a venv (``python3 -m venv /tmp/r5venv &&
/tmp/r5venv/bin/pip install numpy``).  A microscope/camera acquisition:
paced on CLOCK_MONOTONIC, ``--fps`` frames a second of ``--size`` x
``--size`` uint16 (2 MiB at 1024; seeded ``default_rng(13)``: a smooth
background, noise and a moving spot) are appended to an in-RAM stack (a
list of arrays; nothing is dropped: the whole acquisition is kept for a
later save).  Every ``--every`` seconds the last ``--window`` frames are
stacked into one float32 array (``np.stack``, 4 MiB a frame), a per-pixel
median background is taken (``np.median``, which copies again) and
subtracted from the newest frame; the temporaries are dropped after.  The
curve: a straight climb of fps x 2 MiB/s with a tall short spike (about
window x 8 MiB) at every background.  Nothing is written to disk.
"""

import argparse
import sys
import time

import numpy as np


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=75.0)
    p.add_argument("--fps", type=float, default=8.0)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--every", type=float, default=10.0)
    p.add_argument("--window", type=int, default=48)
    a = p.parse_args()
    rng = np.random.default_rng(13)
    n = a.size
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    base = (1000 + 300 * np.sin(xx / 97.0) * np.cos(yy / 131.0)).astype(np.float32)
    stack = []
    t0 = time.monotonic()
    k = 0
    nxt = t0 + a.every
    while True:
        due = t0 + k / a.fps
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        if due - t0 >= a.seconds:
            break
        f = base + rng.normal(0, 20, (n, n)).astype(np.float32)
        cy, cx = int(n / 2 + n / 3 * np.sin(k / 50)), int(n / 2 + n / 3 * np.cos(k / 50))
        f[max(0, cy - 20):cy + 20, max(0, cx - 20):cx + 20] += 2000
        stack.append(f.astype(np.uint16))
        del f
        k += 1
        if time.monotonic() >= nxt and len(stack) >= 2:
            t1 = time.monotonic()
            cube = np.stack(stack[-a.window:]).astype(np.float32)
            bg = np.median(cube, axis=0)
            diff = stack[-1].astype(np.float32) - bg
            hot = int((diff > 500).sum())
            del cube, bg, diff
            print(f"[np_imgstack.py] {t1 - t0:6.1f}s background over {min(len(stack), a.window)} "
                  f"frames in {time.monotonic() - t1:.2f}s, {len(stack)} frames kept "
                  f"({len(stack) * n * n * 2 / 2**20:.0f} MiB), {hot} hot pixels", flush=True)
            nxt += a.every
    print(f"[np_imgstack.py] done: {len(stack)} frames", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

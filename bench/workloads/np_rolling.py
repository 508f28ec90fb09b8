"""numpy rolling-window monitor: a fixed ring buffer and temporaries, no growth.

A signal-monitoring loop with the numpy of a venv (``/tmp/r4venv/bin/python``):
a float32 ring buffer of ``--window-mib`` MiB (``--channels`` channels) is
allocated and filled at the start; then, paced on CLOCK_MONOTONIC, every
``--tick`` seconds a new block of samples is written into it (overwriting
the oldest) and a spectrum of the first eighth of the window is computed
(``np.fft.rfft``, complex128 temporaries, freed at once: a fast sawtooth of
small teeth).  Every ``--report-every`` seconds a "report" takes a random
fraction of the whole window (fractions drawn uniformly from 0.25-1.0 by
their own ``default_rng(49)``, so the sequence of tooth heights is fixed;
the samples come from ``default_rng(2)``), copies it to float64 and computes per-channel
percentiles (``np.percentile`` sorts a copy), then frees it all: a tall tooth
whose height varies report to report.  Nothing is kept between ticks: the
curve is a flat base (the ring buffer) with teeth, for ``--seconds``.

    python np_rolling.py --window-mib 256 --seconds 150 --report-every 12
"""

import argparse
import sys
import time

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--window-mib", type=int, default=256)
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--seconds", type=float, default=150.0)
    p.add_argument("--tick", type=float, default=0.25)
    p.add_argument("--report-every", type=float, default=12.0)
    a = p.parse_args()
    rng = np.random.default_rng(2)
    rep_rng = np.random.default_rng(49)
    n = a.window_mib * (1 << 20) // (4 * a.channels)
    ring = rng.standard_normal((n, a.channels), dtype=np.float32)
    block = max(1, n // 200)
    pos = 0
    t0 = time.monotonic()
    next_report = t0 + a.report_every
    k = 0
    while True:
        due = t0 + k * a.tick
        now = time.monotonic()
        if now - t0 >= a.seconds:
            break
        if due > now:
            time.sleep(due - now)
        k += 1
        new = rng.standard_normal((block, a.channels), dtype=np.float32)
        end = pos + block
        if end <= n:
            ring[pos:end] = new
        else:
            ring[pos:] = new[: n - pos]
            ring[: end - n] = new[n - pos:]
        pos = end % n
        spec = np.abs(np.fft.rfft(ring[: n // 8], axis=0))
        peak = float(spec.max())
        del spec, new
        if time.monotonic() >= next_report:
            next_report += a.report_every
            frac = float(rep_rng.uniform(0.25, 1.0))
            m = int(n * frac)
            sub = ring[:m].astype(np.float64)
            q = np.percentile(sub, [1, 50, 99], axis=0)
            print(f"{time.monotonic() - t0:7.1f}s report frac {frac:.2f} "
                  f"({sub.nbytes >> 20} MiB) p99 {float(q[2].mean()):.3f} peak {peak:.1f}",
                  flush=True)
            del sub, q
    print("done", flush=True)


if __name__ == "__main__":
    sys.exit(main())

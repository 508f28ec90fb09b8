"""A Python leak whose growth rate itself grows, until the OOM killer ends it.

    python3 leak_accelerating.py [--shape quadratic|exponential]
        [--rate0 0.5] [--accel 0.25] [--doubling 10]

Every 100 ms it keeps a ``bytes`` object as large as the current rate says:

- quadratic: rate = rate0 + accel * t MiB/s (memory ~ t^2; a cache keyed
  by something that itself grows, an O(n^2) history);
- exponential: rate = rate0 * 2^(t / doubling) MiB/s (a buffer that doubles,
  a retry loop that re-queues everything it failed).

Defaults under a 512 MiB limit: quadratic is killed after ~60 s (rate
~15 MiB/s by then), exponential after ~60 s (rate ~32 MiB/s).
"""

import argparse
import time

from _mem import MIB, log, sleep_until

TICK = 0.1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", choices=("quadratic", "exponential"), default="quadratic")
    p.add_argument("--rate0", type=float, default=0.5, help="MiB/s at the start")
    p.add_argument("--accel", type=float, default=0.25, help="quadratic: MiB/s gained per second")
    p.add_argument("--doubling", type=float, default=10.0, help="exponential: seconds to double the rate")
    args = p.parse_args()
    kept, owed = [], 0.0
    start = time.monotonic()
    for tick in range(1, 1 << 30):
        t = tick * TICK
        if args.shape == "quadratic":
            rate = args.rate0 + args.accel * t
        else:
            rate = args.rate0 * 2 ** (t / args.doubling)
        owed += rate * TICK * MIB
        if owed >= 4096:
            kept.append(b"\x01" * int(owed))
            owed -= int(owed)
        if tick % 50 == 0:
            log(f"t={t:.0f}s rate {rate:.1f} MiB/s kept {sum(map(len, kept)) / MIB:.0f} MiB")
        sleep_until(start + t)


if __name__ == "__main__":
    main()

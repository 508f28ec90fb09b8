"""A Python leak that grows linearly: every 100 ms it builds a 2 MiB
``bytes`` object and keeps it in a list (a cache that is never evicted),
until the OOM killer ends it.

    python3 leak_linear.py [--step-mib 2] [--every 0.1]

20 MiB/s: under a 1 GiB limit the kill comes after ~50 s.
"""

import argparse
import time

from _mem import MIB, log, sleep_until


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--step-mib", type=float, default=2.0)
    p.add_argument("--every", type=float, default=0.1, help="seconds between allocations")
    args = p.parse_args()
    cache = []
    start = time.monotonic()
    for tick in range(1, 1 << 30):
        cache.append(b"\x01" * int(args.step_mib * MIB))
        if tick % 50 == 0:
            log(f"t={time.monotonic() - start:.1f}s kept {len(cache) * args.step_mib:.0f} MiB")
        sleep_until(start + tick * args.every)


if __name__ == "__main__":
    main()

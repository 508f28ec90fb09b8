"""Idle, then a sudden burst far past the limit.

    python3 burst.py [--idle 20] [--mib 1024]

Sleeps ``--idle`` seconds holding almost nothing, then builds one ``bytes``
object of ``--mib`` MiB in a single call (one memset: well under a second
for 1 GiB here: ~1.2 GiB/s of page faults).  Under a 512 MiB limit the OOM
killer ends it ~0.4 s after the burst starts (8 samples at 50 ms, from
idle to the limit): a predictor gets almost no warning,
which is the point of this trace (a request that loads a huge file, a
tensor of the wrong shape).
"""

import argparse
import time

from _mem import MIB, log


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--idle", type=float, default=20.0)
    p.add_argument("--mib", type=int, default=1024)
    args = p.parse_args()
    time.sleep(args.idle)
    log(f"allocating {args.mib} MiB at once")
    blob = b"\x01" * (args.mib * MIB)
    log(f"survived with {len(blob) // MIB} MiB")


if __name__ == "__main__":
    main()

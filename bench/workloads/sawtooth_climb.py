"""A sawtooth whose peaks climb until the OOM killer ends it.

    python3 sawtooth_climb.py [--period 2] [--temp-mib 128] [--keep-mib 10]

Each period it builds a temporary working set of ``--temp-mib`` MiB over
the first half of the period (8 MiB at a time), drops it all at once, and
keeps ``--keep-mib`` MiB for good (a batch job whose per-batch buffers are
freed but whose results accumulate).  The troughs and the peaks both climb
by keep-mib per period; under a 512 MiB limit a peak crosses the limit after
~77 s.  The temporary memory is mmap'd, so it really goes back to the
kernel when dropped.
"""

import argparse
import time

from _mem import MIB, log, sleep_until, touched

PIECE = 8 * MIB


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--period", type=float, default=2.0)
    p.add_argument("--temp-mib", type=int, default=128)
    p.add_argument("--keep-mib", type=int, default=10)
    args = p.parse_args()
    kept = []
    pieces = args.temp_mib * MIB // PIECE
    start = time.monotonic()
    for cycle in range(1 << 30):
        begin = start + cycle * args.period
        temp = []
        for i in range(pieces):
            sleep_until(begin + (i + 1) * args.period / 2 / pieces)
            temp.append(touched(PIECE))
        for m in temp:
            m.close()
        kept.append(touched(args.keep_mib * MIB))
        log(f"cycle {cycle}: kept {len(kept) * args.keep_mib} MiB")
        sleep_until(begin + args.period)


if __name__ == "__main__":
    main()

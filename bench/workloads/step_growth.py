"""Memory that grows in big steps and is never given back, until killed.

    python3 step_growth.py [--chunk-mib 48] [--every 3]

Every ``--every`` seconds it maps and writes another ``--chunk-mib`` MiB
and keeps it: between steps usage is flat.  This is how a caching allocator
(PyTorch's CUDA allocator reserving segments, a JVM growing its heap, an
arena allocator) looks from the host.  Under a 512 MiB limit the 11th step
is killed, ~33 s in.
"""

import argparse
import time

from _mem import MIB, log, sleep_until, touched


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--chunk-mib", type=int, default=48)
    p.add_argument("--every", type=float, default=3.0, help="seconds between steps")
    args = p.parse_args()
    segments = []
    start = time.monotonic()
    for step in range(1, 1 << 30):
        sleep_until(start + step * args.every)
        segments.append(touched(args.chunk_mib * MIB))
        log(f"step {step}: reserved {len(segments) * args.chunk_mib} MiB")


if __name__ == "__main__":
    main()

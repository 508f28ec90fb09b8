"""Fill the memory cgroup to 90 % of its limit, then hold there.

    python3 plateau.py [--fraction 0.9] [--hold 60] [--rate 100]

Allocates at ``--rate`` MiB/s (16 MiB at a time) until the cgroup's own
``memory.usage_in_bytes`` reaches ``--fraction`` of its
``memory.limit_in_bytes``, then for ``--hold`` seconds writes every page it
holds once a second (a working set in use, not idle memory), and exits 0.
A service at a stable high-water mark: close to the limit, never killed.
"""

import argparse
import os
import time

from _mem import MIB, log, own_memory_cgroup, read_int, sleep_until, touch, touched

CHUNK = 16 * MIB


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fraction", type=float, default=0.9)
    p.add_argument("--hold", type=float, default=60.0, help="seconds at the plateau")
    p.add_argument("--rate", type=float, default=100.0, help="MiB/s while filling")
    args = p.parse_args()
    cg = own_memory_cgroup()
    target = args.fraction * read_int(os.path.join(cg, "memory.limit_in_bytes"))
    held = []
    start = time.monotonic()
    while True:
        left = target - read_int(os.path.join(cg, "memory.usage_in_bytes"))
        if left <= 0:
            break
        held.append(touched(min(CHUNK, max(int(left) // 4096 * 4096, 4096))))
        sleep_until(start + len(held) * CHUNK / MIB / args.rate)
    log(f"plateau at {read_int(os.path.join(cg, 'memory.usage_in_bytes')) / MIB:.0f} MiB "
        f"after {time.monotonic() - start:.1f}s; holding {args.hold:.0f}s")
    until = time.monotonic() + args.hold
    while time.monotonic() < until:
        for m in held:
            touch(m)
        time.sleep(1.0)
    log("done")


if __name__ == "__main__":
    main()

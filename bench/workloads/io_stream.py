"""Big-file I/O as fast as the disk goes: page cache that looks like memory.

    python3 io_stream.py --mode write|mmap [--mib 1536] [--seconds 40] [--dir /var/tmp]

- ``write``: writes a ``--mib`` MiB file with buffered 1 MiB writes, unpaced
  (dirty page cache piles up faster than writeback drains it: v1 reclaim
  then waits on writeback), fsyncs, reads it back twice, truncates it, and
  repeats until ``--seconds`` have passed.
- ``mmap``: writes the file once (as above), then maps it read-only and
  touches one byte of every page, front to back, over and over until
  ``--seconds`` have passed.  With a file a little larger than the limit
  (576 MiB under 512 MiB) the cgroup sits at its limit with clean, mapped
  page cache that reclaim keeps dropping and the scan keeps rereading (a
  cyclic scan is LRU's worst case): memory PSI stalls add up to seconds,
  and the working set (usage minus inactive file) jumps between a few
  percent and ~95 % of the limit as the kernel moves the mapped, referenced
  pages between the active and inactive lists; nothing is killed.  With a
  file much larger than the limit (768 MiB) every page is evicted before
  its next use and the working set stays at a few percent.

The file (ext4 here, not tmpfs) is removed at the end, also on SIGTERM.
"""

import argparse
import mmap
import os
import signal
import sys
import tempfile
import time

from _mem import MIB, PAGE, log


def write_file(path: str, mib: int) -> None:
    block = bytes(range(1, 256)) * (MIB // 255) + b"\x01" * (MIB % 255)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for _ in range(mib):
            os.write(fd, block)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_file(path: str) -> None:
    with open(path, "rb", buffering=0) as f:
        while f.read(MIB):
            pass


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=("write", "mmap"), required=True)
    p.add_argument("--mib", type=int, default=1536)
    p.add_argument("--seconds", type=float, default=40.0)
    p.add_argument("--dir", default="/var/tmp")
    args = p.parse_args()
    fd, path = tempfile.mkstemp(prefix="mgbuild-stream.", dir=args.dir)
    os.close(fd)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    start = time.monotonic()
    try:
        if args.mode == "write":
            n = 0
            while time.monotonic() - start < args.seconds:
                t0 = time.monotonic()
                write_file(path, args.mib)
                t1 = time.monotonic()
                read_file(path)
                read_file(path)
                os.truncate(path, 0)
                n += 1
                log(f"round {n}: wrote {args.mib} MiB in {t1 - t0:.1f} s, read twice in {time.monotonic() - t1:.1f} s")
        else:
            write_file(path, args.mib)
            log(f"wrote {args.mib} MiB in {time.monotonic() - start:.1f} s")
            with open(path, "rb") as f:
                m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
            n = 0
            while time.monotonic() - start < args.seconds:
                t0 = time.monotonic()
                s = 0
                for off in range(0, len(m), PAGE):
                    s += m[off]
                n += 1
                log(f"pass {n}: {time.monotonic() - t0:.1f} s")
            m.close()
    finally:
        os.unlink(path)
    log("done")


if __name__ == "__main__":
    main()

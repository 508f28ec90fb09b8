"""File I/O much bigger than the memory limit: page cache, not a leak.

    python3 pagecache_io.py [--mib 768] [--seconds 45] [--rate 200] [--dir /var/tmp]

Writes a ``--mib`` MiB file of non-zero data on a disk file system (ext4
here; not tmpfs, whose pages are shmem and cannot be dropped), then for
``--seconds`` repeats: read it all, read it all again, rewrite it all in
place (buffered 1 MiB writes, one fsync at the end), all at ``--rate``
MiB/s (a disk's pace; this VM's disk would do ~1 GiB/s and wear for
nothing).  The file is removed at the end, also on Ctrl-C or SIGTERM.  The
cgroup's usage sits at its limit most of the time, made of page cache the
kernel reclaims as it goes: a predictor that looks at usage alone sees a
cgroup "at 100 %" that is never killed; the working set (usage minus
inactive file) tells the truth.
"""

import argparse
import os
import signal
import sys
import tempfile
import time

from _mem import MIB, log, sleep_until


class Pace:
    """Sleeps so that MiB go by at ``rate`` MiB/s at most."""

    def __init__(self, rate: float) -> None:
        self.rate, self.start, self.done = rate, time.monotonic(), 0

    def mib(self) -> None:
        self.done += 1
        sleep_until(self.start + self.done / self.rate)


def write_all(fd: int, mib: int, block: bytes, pace: Pace) -> None:
    for i in range(mib):
        os.pwrite(fd, block, i * MIB)
        pace.mib()
    os.fsync(fd)


def read_all(fd: int, mib: int, pace: Pace) -> None:
    for i in range(mib):
        os.pread(fd, MIB, i * MIB)
        pace.mib()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mib", type=int, default=768)
    p.add_argument("--seconds", type=float, default=45.0)
    p.add_argument("--rate", type=float, default=200.0, help="MiB/s of reads and writes")
    p.add_argument("--dir", default="/var/tmp")
    args = p.parse_args()
    # SIGTERM (record.py's cleanup, --max-seconds) would skip `finally`.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    fd, path = tempfile.mkstemp(prefix="mgtrace-io.", dir=args.dir)
    try:
        block = bytes(range(1, 256)) * (MIB // 255) + b"\x01" * (MIB % 255)
        pace = Pace(args.rate)
        write_all(fd, args.mib, block, pace)
        log(f"wrote {args.mib} MiB")
        passes = 0
        while time.monotonic() - pace.start < args.seconds:
            read_all(fd, args.mib, pace)
            read_all(fd, args.mib, pace)
            write_all(fd, args.mib, block, pace)
            passes += 1
            log(f"pass {passes}: read {args.mib} MiB twice, rewrote it "
                f"(t={time.monotonic() - pace.start:.1f}s)")
    finally:
        os.close(fd)
        os.unlink(path)


if __name__ == "__main__":
    main()

"""Files in /dev/shm: tmpfs pages (shmem), charged to the cgroup, not reclaimable.

    python3 io_shm.py --mode cycle|keep|grow [--mib N | --fraction F] [--rate 100]
                      [--hold 20] [--cycles 4] [--file-mib 64]

Writes files of ``--file-mib`` MiB of non-zero data into a private folder
under /dev/shm at ``--rate`` MiB/s (buffered 1 MiB writes).  tmpfs pages are
shmem: v1 counts them in ``cache`` and ``shmem`` (not ``rss``), they sit on
the anon LRU (so they are in the working set, unlike ordinary page cache),
and with no swap the kernel cannot reclaim them.  Nobody maps them, so no
process's RSS shows them.

- ``cycle``: fill to the target, hold ``--hold`` s, delete everything,
  pause 2 s; ``--cycles`` times (a scratch area used and emptied).
- ``keep``: fill to the target in steps (one file, then 3 s of quiet), keep
  it all for ``--hold`` s, then delete and exit (a cache that stops growing).
- ``grow``: a child writes files until the cgroup's limit stops it; it raises
  its own ``oom_score_adj`` to 1000 so the OOM killer picks it and not this
  parent.  The kill frees nothing: the files stay, and so does the charge,
  until the parent, seeing the child die, waits 3 s and deletes them.  The
  parent then exits 137 as if killed itself.

The target is ``--mib`` MiB, or ``--fraction`` of the cgroup's limit.  The
folder is removed at the end, also on SIGTERM/SIGINT.
"""

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time

from _mem import MIB, log, own_memory_cgroup, read_int, sleep_until


def write_file(path: str, mib: int, pace) -> None:
    block = bytes(range(1, 256)) * (MIB // 255) + b"\x01" * (MIB % 255)
    with open(path, "wb", buffering=0) as f:
        for _ in range(mib):
            f.write(block)
            pace()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=("cycle", "keep", "grow"), required=True)
    p.add_argument("--mib", type=int)
    p.add_argument("--fraction", type=float, default=0.85)
    p.add_argument("--rate", type=float, default=100.0, help="MiB/s")
    p.add_argument("--hold", type=float, default=20.0)
    p.add_argument("--cycles", type=int, default=4)
    p.add_argument("--file-mib", type=int, default=64)
    args = p.parse_args()
    limit = read_int(os.path.join(own_memory_cgroup(), "memory.limit_in_bytes"))
    target = args.mib if args.mib else int(args.fraction * limit / MIB)
    d = tempfile.mkdtemp(prefix="mgbuild-shm.", dir="/dev/shm")
    child = 0

    def cleanup(*_):
        shutil.rmtree(d, ignore_errors=True)
        if signal_received[0]:
            sys.exit(143)

    signal_received = [False]

    def on_signal(signum, _frame):
        signal_received[0] = True
        if child:
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass
        cleanup()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    start = time.monotonic()
    done = [0]

    def pace():
        done[0] += 1
        sleep_until(start + done[0] / args.rate)

    def fill(mib: int, gap: float = 0.0) -> None:
        n = 0
        while n < mib:
            size = min(args.file_mib, mib - n)
            write_file(os.path.join(d, f"f{n // args.file_mib:05d}"), size, pace)
            n += size
            if gap:
                time.sleep(gap)
                done[0] = int((time.monotonic() - start) * args.rate)

    try:
        if args.mode == "cycle":
            for c in range(args.cycles):
                log(f"cycle {c}: filling {target} MiB")
                fill(target)
                log(f"cycle {c}: holding {args.hold} s")
                time.sleep(args.hold)
                for name in os.listdir(d):
                    os.unlink(os.path.join(d, name))
                log(f"cycle {c}: deleted")
                time.sleep(2)
                done[0] = int((time.monotonic() - start) * args.rate)
        elif args.mode == "keep":
            log(f"filling {target} MiB in {args.file_mib} MiB steps")
            fill(target, gap=3.0)
            log(f"holding {args.hold} s")
            time.sleep(args.hold)
        else:
            child = os.fork()
            if child == 0:
                try:
                    with open("/proc/self/oom_score_adj", "w") as f:
                        f.write("1000")
                    n = 0
                    while True:
                        write_file(os.path.join(d, f"g{n:05d}"), args.file_mib, pace)
                        n += 1
                        log(f"{n * args.file_mib} MiB written")
                except BaseException as e:  # e.g. ENOMEM instead of a kill
                    log(f"writer failed: {e!r}")
                    os._exit(1)
            _, status = os.waitpid(child, 0)
            child = 0
            log(f"writer ended: {status:#x}; the files are still there, deleting in 3 s")
            time.sleep(3)
            shutil.rmtree(d, ignore_errors=True)
            time.sleep(1)
            sys.exit(137 if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))
    finally:
        shutil.rmtree(d, ignore_errors=True)  # the parent only: the child never returns here
    log("done")


if __name__ == "__main__":
    main()

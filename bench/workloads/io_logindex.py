"""Log indexer: page-cache churn from a file bigger than the limit, anonymous growth beside it.

At the start it writes ``--file-mib`` MiB of generated log lines (~120 bytes
each, numbered) to a file under ``/var/tmp`` and unlinks it at once, keeping
the descriptor (so the file goes when the process does, killed or not).
Then, paced on CLOCK_MONOTONIC, it reads the file round and round in 4 MiB
``pread`` chunks at ``--read-mibps`` MiB/s (with a file larger than the limit
every page has left the cache before it is read again: the page cache fills
the cgroup to its limit and stays there, all of it inactive) and, from each
chunk, keeps lines in an in-memory index (a dict from the line's first 24
bytes to the line, both new ``bytes`` objects) at ``--index-mibps`` MiB/s of
line text, until the index holds ``--index-cap-mib`` MiB of text; after that
it only reads.  Runs for ``--seconds``.  Usage sits at the limit almost from
the start; the working set is the index's climb and, when it is capped, a
plateau.

    python3 io_logindex.py --file-mib 768 --read-mibps 80 --index-mibps 3 --index-cap-mib 300 --seconds 150
"""

import argparse
import os
import sys
import time

CHUNK = 4 << 20


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--file-mib", type=int, default=768)
    p.add_argument("--read-mibps", type=float, default=80.0)
    p.add_argument("--index-mibps", type=float, default=3.0)
    p.add_argument("--index-cap-mib", type=float, default=300.0)
    p.add_argument("--seconds", type=float, default=150.0)
    a = p.parse_args()
    t0 = time.monotonic()
    path = f"/var/tmp/mg-r4-logindex-{os.getpid()}.log"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    os.unlink(path)
    size = a.file_mib << 20
    n = 0
    written = 0
    while written < size:
        lines = []
        for _ in range(8000):
            lines.append(b"%012d 2026-12-07T08:%02d:%02d host%03d svc=api path=/v1/items/%08d "
                         b"status=%d bytes=%06d ua=client/%d.%d\n"
                         % (n, n // 60 % 60, n % 60, n % 997, n * 7919 % 10**8,
                            200 + n % 7 * 50, n * 31 % 10**6, n % 9, n % 13))
            n += 1
        block = b"".join(lines)
        os.write(fd, block)
        written += len(block)
    size = written
    os.fsync(fd)
    print(f"{time.monotonic() - t0:.1f}s wrote {size >> 20} MiB ({n} lines)", flush=True)
    index = {}
    kept = 0
    cap = a.index_cap_mib * (1 << 20)
    t1 = time.monotonic()
    off = 0
    done = 0
    last = t1
    while time.monotonic() - t0 < a.seconds:
        due = t1 + done / (a.read_mibps * (1 << 20))
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        chunk = os.pread(fd, CHUNK, off)
        off = off + len(chunk)
        if off >= size:
            off = 0
        done += len(chunk)
        want = min(cap, (time.monotonic() - t1) * a.index_mibps * (1 << 20))
        if kept < want:
            for line in chunk.split(b"\n"):
                if kept >= want:
                    break
                if len(line) > 24:
                    index[line[:24] + b"%d" % len(index)] = line
                    kept += len(line)
        del chunk
        if time.monotonic() - last >= 10:
            last = time.monotonic()
            print(f"{last - t0:.1f}s read {done >> 20} MiB, index {len(index)} lines "
                  f"{kept >> 20} MiB of text", flush=True)
    os.close(fd)
    print("done", flush=True)


if __name__ == "__main__":
    sys.exit(main())

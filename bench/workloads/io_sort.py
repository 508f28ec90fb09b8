"""GNU sort of generated text, with its own idea of how much memory it has.

    python3 io_sort.py [--mib 600] [--buffer SIZE] [--pipe-rate MIBS] [--dir /var/tmp]

Sorts ``--mib`` MiB of random base64 lines (77 bytes each) with
``LC_ALL=C sort [-S SIZE] -T SCRATCH -o OUT``, in a scratch folder under
``--dir`` (ext4 here), then removes the folder.

- Without ``--pipe-rate`` the lines are first written to a file and sort
  reads the file (at page-cache speed: sort's own climb takes ~1 s).
- With ``--pipe-rate`` they are generated at that many MiB/s and fed to
  sort's stdin, as from a slow producer: sort's buffer fills at that rate.

sort sizes its buffer from the machine, not from the cgroup: by default
from the host's physical memory and the input's size, and ``-S 50%`` means
half of the host's 24 GiB.  Such a sort keeps the whole input (plus its
line table) in anonymous memory, and a limit below that is OOM-killed.
With ``-S 256M`` it sorts runs of that size into temporary files and merges
them.  The page cache of the input, the runs and the output is charged too
(reclaimable).  Exits with sort's status (137 when sort was killed).  The
folder is removed at the end, also on SIGTERM.
"""

import argparse
import base64
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from _mem import MIB, log, sleep_until


def lines(nbytes: int) -> bytes:
    """About ``nbytes`` of random base64 lines of 76 characters."""
    return base64.encodebytes(os.urandom(nbytes * 57 // 77))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mib", type=int, default=600)
    p.add_argument("--buffer", help="sort -S SIZE, e.g. 256M or 50%%")
    p.add_argument("--pipe-rate", type=float, help="feed sort's stdin at this many MiB/s")
    p.add_argument("--dir", default="/var/tmp")
    args = p.parse_args()
    d = tempfile.mkdtemp(prefix="mgbuild-sort.", dir=args.dir)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        src, out = os.path.join(d, "in.txt"), os.path.join(d, "out.txt")
        cmd = ["sort", "-T", d, "-o", out]
        if args.buffer:
            cmd[1:1] = ["-S", args.buffer]
        env = dict(os.environ, LC_ALL="C")
        if args.pipe_rate:
            t0 = time.monotonic()
            sort = subprocess.Popen(cmd, stdin=subprocess.PIPE, env=env)
            try:
                for i in range(args.mib):
                    sort.stdin.write(lines(MIB))
                    sleep_until(t0 + (i + 1) / args.pipe_rate)
                    if (i + 1) % 100 == 0:
                        log(f"{i + 1} MiB fed")
                sort.stdin.close()
            except BrokenPipeError:
                log("sort went away")
            rc = sort.wait()
        else:
            t0 = time.monotonic()
            subprocess.run(
                f"base64 -w 76 /dev/urandom | head -c {args.mib}M > {src}",
                shell=True, check=True)
            log(f"wrote {args.mib} MiB of lines in {time.monotonic() - t0:.1f} s")
            t0 = time.monotonic()
            rc = subprocess.run(cmd + [src], env=env).returncode
        log(f"{' '.join(cmd)}: status {rc} after {time.monotonic() - t0:.1f} s")
        code = 128 - rc if rc < 0 else rc
    finally:
        shutil.rmtree(d, ignore_errors=True)
    sys.exit(code)


if __name__ == "__main__":
    main()

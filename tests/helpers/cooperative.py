"""A job that grows until memguard warns it, then frees what it holds.

    cooperative.py MIB_PER_STEP STEP_SECONDS [--ignore]

Every STEP_SECONDS it allocates and touches MIB_PER_STEP more MiB and prints
``held BYTES``.  On SIGUSR1 it prints ``warned BYTES`` (what it held then),
frees everything and exits 0, as a training script that checkpoints and
stops would; with --ignore it goes on growing until the kernel kills it.
SIGTERM ends it with status 0 at any point.
"""

import signal
import sys
import time

step_mib, step_s = int(sys.argv[1]), float(sys.argv[2])
ignore = "--ignore" in sys.argv
held = []
warned = False


def on_usr1(signum, frame):
    global warned
    warned = True


signal.signal(signal.SIGUSR1, signal.SIG_IGN if ignore else on_usr1)
signal.signal(signal.SIGTERM, lambda s, f: sys.exit(0))
while True:
    if warned:
        total = sum(len(b) for b in held)
        held.clear()
        print(f"warned {total}", flush=True)
        sys.exit(0)
    chunk = bytearray(step_mib << 20)
    for i in range(0, len(chunk), 4096):
        chunk[i] = 1
    held.append(chunk)
    print(f"held {sum(len(b) for b in held)}", flush=True)
    time.sleep(step_s)

"""Delay from the kernel's OOM kill to memguard's stored incident (issue 3).

    .venv/bin/python bench/oom_latency.py [--kills 50] [--write]

Runs the real memguardd (all probes this host has), then, one after
another, makes a 64 MiB v1 memory cgroup, grows a hog in it until the kernel
kills it, and watches the daemon's incident directory with inotify.  The
delay of one kill is the CLOCK_MONOTONIC time at which the incident file
first appeared (its rename, seen by inotify) minus the kill's own kernel
timestamp as the incident records it (``time_monotonic``: the eBPF probe's
ktime, or kmsg's calibrated stamp).  Target: p99 <= 100 ms.

Safety: as in the tests (tests/kernel.py): cgroups are mgtest-*, the hog
starts inside its cgroup, and everything is removed at the end.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._cgroups import exit_on_signals, section_head, table, write_section  # noqa: E402
from tests.e2e.daemon import Daemon  # noqa: E402
from tests.kernel import MIB, Hog, V1MemoryCgroup, build_hog  # noqa: E402

IN_MOVED_TO = 0x80
CONFIG = "sampling:\n  interval: 1s\n  discovery_interval: 1s\nincidents:\n  settle: 1s\n"


class Watch:
    """inotify on a directory, read by a thread of its own the moment an
    event arrives: the names renamed into it, with the time each was seen
    (the main thread is busy waiting for the hog meanwhile)."""

    def __init__(self, directory: str) -> None:
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_CLOEXEC)
        if self.libc.inotify_add_watch(self.fd, directory.encode(), IN_MOVED_TO) < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {directory}")
        self.seen: dict[str, float] = {}
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            data = os.read(self.fd, 65536)  # blocks until renames arrive
            now = time.clock_gettime(time.CLOCK_MONOTONIC)
            offset = 0
            while offset + 16 <= len(data):
                _, _, _, length = struct.unpack_from("iIII", data, offset)
                name = data[offset + 16:offset + 16 + length].rstrip(b"\0").decode()
                offset += 16 + length
                self.seen.setdefault(name, now)


def one_kill(hog_binary, watch: Watch, incidents: str, timeout: float = 30.0) -> tuple[float, dict]:
    with V1MemoryCgroup(64 * MIB) as group:
        time.sleep(1.2)  # discovered as a domain first, as in real life
        hog = Hog(hog_binary, ("grow", "8", "20"), group)
        try:
            if hog.wait_exit(timeout) != -9:
                raise RuntimeError("the hog was not OOM-killed")
            deadline = time.monotonic() + timeout
            suffix = f"-{hog.pid}-oom.json"
            while time.monotonic() < deadline:
                names = [n for n in watch.seen if n.endswith(suffix)]
                if names:
                    with open(os.path.join(incidents, names[0])) as f:
                        doc = json.load(f)
                    return watch.seen[names[0]] - doc["time_monotonic"], doc
                time.sleep(0.005)
            raise RuntimeError(f"no incident for pid {hog.pid} within {timeout:g}s")
        finally:
            hog.close()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=50)
    p.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = p.parse_args()
    exit_on_signals()
    tmp = tempfile.mkdtemp(prefix="mgbench-latency-")
    hog_binary = build_hog(Path(tmp))
    daemon = Daemon(tmp, config=CONFIG)
    incidents = os.path.join(tmp, "state", "incidents")
    os.makedirs(incidents, exist_ok=True)
    watch = Watch(incidents)
    delays, first_probe = [], {}
    try:
        for i in range(args.kills):
            delay, doc = one_kill(hog_binary, watch, incidents)
            delays.append(delay * 1000)
            first = doc["probes"][0]["name"] if doc["probes"] else "?"
            first_probe[first] = first_probe.get(first, 0) + 1
            print(f"kill {i + 1:>3}: {delay * 1000:7.2f} ms (first: {first})", flush=True)
    finally:
        daemon.stop()
    rows = [[f"{len(delays)}", f"{statistics.median(delays):.2f}", f"{percentile(delays, 90):.2f}",
             f"{percentile(delays, 99):.2f}", f"{max(delays):.2f}"]]
    result = table(["kills", "median ms", "p90 ms", "p99 ms", "max ms"], rows)
    verdict = "meets" if percentile(delays, 99) <= 100 else "MISSES"
    summary = (f"p99 {percentile(delays, 99):.2f} ms {verdict} the 100 ms target of issue 3; "
               f"first probe to report: " + ", ".join(f"{k} {v}" for k, v in sorted(first_probe.items())))
    print(result + "\n" + summary)
    if args.write:
        write_section("oom-latency", "\n".join([
            *section_head("Kill to stored incident (`bench/oom_latency.py`)",
                          f".venv/bin/python bench/oom_latency.py --kills {args.kills} --write"),
            "- delay = CLOCK_MONOTONIC when inotify saw the incident file renamed into place, minus the "
            "kill's kernel timestamp recorded in the incident (eBPF ktime, or kmsg's calibrated stamp); "
            "one 64 MiB cgroup and one growing hog per kill, one kill at a time, all probes on.", "",
            result, "", summary]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

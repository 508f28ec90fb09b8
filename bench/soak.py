#!/usr/bin/env python3
"""memguardd's memory over a long run at 100 ms while processes and cgroups
churn around it (issue 23, item 4: flat).

    .venv/bin/python bench/soak.py [--duration 1800] [--cgroups 20] [--spawn 20] [--write]

The real memguardd with packaging/memguard.yaml (every probe on, the eBPF
child included), at ``sampling.interval: 100ms`` and ``rest_interval: 0s``
(it never rests), as bench/rivals.py's ``fast`` scenario starts it. Around
it, for ``--duration`` seconds:

- every second a new limited cgroup ``mgbench-<run>-<n>`` (64 MiB) is made
  with two ``sleep`` processes in it, and the oldest is emptied and removed
  once ``--cgroups`` exist: domains come and go all the time (each one a
  new recorder, memcg registrations, inotify watches, incidents none);
- ``--spawn`` short processes a second (``true``) fork, exec and exit: the
  proc connector's events, the process table's entries.

Every ``--every`` seconds: VmRSS of the daemon and of its tree (the eBPF
child), and its CPU (utime+stime). Printed: RSS at the start of the
measured window, the median of its first and last fifth, the largest, and
the growth from the first fifth to the last (flat: under 2 MiB). Run as
root (cgroups, probes).
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _cgroups  # noqa: E402
import rivals  # noqa: E402

LIMIT = 64 * _cgroups.MIB
FLAT_MIB = 2.0


class Churn:
    """Cgroups made and removed in rotation, short processes spawned."""

    def __init__(self, keep: int) -> None:
        self.keep, self.run_id, self.n = keep, uuid.uuid4().hex[:8], 0
        self.live: collections.deque = collections.deque()   # (paths, children)
        self.made = self.removed = self.spawned = 0

    def add_cgroup(self) -> None:
        name = f"{_cgroups.PREFIX}{self.run_id}-{self.n:05d}"
        self.n += 1
        v1 = os.path.join(_cgroups.V1_MEMORY, name)
        os.mkdir(v1)
        paths = [v1]
        _cgroups.write_file(os.path.join(v1, "memory.limit_in_bytes"), str(LIMIT))
        children = [subprocess.Popen(["sleep", "3600"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True,
                                     preexec_fn=_cgroups._enter((os.path.join(v1, "cgroup.procs"),)))
                    for _ in range(2)]
        self.live.append((paths, children))
        self.made += 1
        while len(self.live) > self.keep:
            self._remove(*self.live.popleft())

    def _remove(self, paths: list[str], children: list[subprocess.Popen]) -> list[str]:
        problems = []
        for child in children:
            if child.poll() is None:
                os.kill(child.pid, signal.SIGKILL)      # ours, not yet reaped
            child.wait(timeout=_cgroups.CLEANUP_TIMEOUT_S)
        deadline = time.monotonic() + _cgroups.CLEANUP_TIMEOUT_S
        for path in reversed(paths):
            problems += _cgroups._kill_members(path)
            why = _cgroups._rmdir(path, deadline)
            if why:
                problems.append(why)
        self.removed += 1
        return problems

    def spawn(self, count: int) -> None:
        for _ in range(count):
            subprocess.run(["true"], check=False)
        self.spawned += count

    def close(self) -> list[str]:
        problems = []
        while self.live:
            problems += self._remove(*self.live.popleft())
        return problems


def mib(kib: float) -> str:
    return f"{kib / 1024:.1f} MiB"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=1800.0, help="seconds measured (1800)")
    p.add_argument("--warmup", type=float, default=60.0, help="seconds of churn before measuring (60)")
    p.add_argument("--cgroups", type=int, default=20, help="cgroups alive at once, one made a second (20)")
    p.add_argument("--spawn", type=int, default=20, help="short processes a second (20)")
    p.add_argument("--every", type=float, default=10.0, help="seconds between two memory samples (10)")
    p.add_argument("--write", action="store_true", help="rewrite this section of docs/benchmarks.md")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        p.error("run as root: memguardd's probes and the cgroups need it")
    _cgroups.exit_on_signals()
    churn = Churn(args.cgroups)
    samples: list[tuple[float, int, int]] = []      # (seconds into the window, RSS kB, tree RSS kB)
    with tempfile.TemporaryDirectory(prefix="mgbench-soak-") as tmp:
        daemon = rivals.memguardd(Path(tmp), "fast", None)
        try:
            daemon.start()
            daemon.wait_ready()
            start = time.monotonic()
            measured_from = start + args.warmup
            cpu_before = None
            next_sample = measured_from
            while (now := time.monotonic()) < measured_from + args.duration:
                if daemon.proc.poll() is not None:
                    raise RuntimeError(f"memguardd exited {daemon.proc.returncode}:\n{daemon.tail()}")
                churn.add_cgroup()
                churn.spawn(args.spawn)
                if now >= measured_from and cpu_before is None:
                    cpu_before = rivals.ticks(rivals.tree(daemon.proc.pid))
                if now >= next_sample:
                    pids = rivals.tree(daemon.proc.pid)
                    samples.append((now - measured_from, rivals.rss_kib(daemon.proc.pid),
                                    sum(rivals.rss_kib(pid) for pid in pids)))
                    next_sample += args.every
                time.sleep(max(0.0, 1.0 - (time.monotonic() - now)))
            cpu = 100 * (rivals.ticks(rivals.tree(daemon.proc.pid)) - cpu_before) / args.duration
        except _cgroups.Interrupted:
            print("interrupted", file=sys.stderr)
            return 130
        finally:
            daemon.stop()
            problems = churn.close()
            if problems:
                print("cleanup:", *problems, sep="\n  ", file=sys.stderr)
    fifth = max(1, len(samples) // 5)
    first = statistics.median(r for _, r, _ in samples[:fifth])
    last = statistics.median(r for _, r, _ in samples[-fifth:])
    first_tree = statistics.median(t for _, _, t in samples[:fifth])
    last_tree = statistics.median(t for _, _, t in samples[-fifth:])
    growth = (last - first) / 1024
    verdict = f"flat (under {FLAT_MIB:g} MiB)" if growth < FLAT_MIB else f"GROWING by {growth:.1f} MiB"
    headers = ["", "at the start", "median, first fifth", "median, last fifth", "largest", "growth"]
    body = _cgroups.table(headers, [
        ["daemon RSS", mib(samples[0][1]), mib(first), mib(last), mib(max(r for _, r, _ in samples)),
         f"{growth:+.1f} MiB"],
        ["tree RSS (with the eBPF child)", mib(samples[0][2]), mib(first_tree), mib(last_tree),
         mib(max(t for _, _, t in samples)), f"{(last_tree - first_tree) / 1024:+.1f} MiB"]])
    summary = [f"{args.duration / 60:g} minutes at 100 ms, {churn.made} cgroups made and {churn.removed} "
               f"removed, {churn.spawned} short processes; {len(samples)} samples",
               f"daemon CPU (utime+stime): {cpu:.2f} % of a core",
               f"memory: {verdict}"]
    print(body, *summary, sep="\n")
    if args.write:
        command = (f".venv/bin/python bench/soak.py --duration {args.duration:g} --cgroups {args.cgroups} "
                   f"--spawn {args.spawn} --write")
        lines = [*_cgroups.section_head("Memory over a long run with churn (`bench/soak.py`)", command),
                 f"- code: {_cgroups.code_version()}; memguardd with packaging/memguard.yaml at a 100 ms "
                 "interval, never resting; a cgroup made and the oldest removed every second, short "
                 "processes spawned (the script's docstring says how)",
                 "", body, "", *(f"- {line}" for line in summary)]
        _cgroups.write_section("soak", "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

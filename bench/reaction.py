#!/usr/bin/env python3
"""How memguardd, earlyoom and nohang react to the same threat (issue 23).

    .venv/bin/python bench/reaction.py [--rates 10,50,200] [--write]

Each daemon, alone, protects the same floor of the host's available memory
(MemAvailable) while a job grows towards it at 10, 50 and 200 MiB/s:

- the floor is about 40 % of MemTotal (nohang takes a minimum-memory
  threshold of at most half of it); earlyoom gets it as ``-M FLOOR_KIB`` (SIGTERM there,
  SIGKILL at half), nohang as ``soft_threshold_min_mem`` (SIGTERM) with
  ``hard_threshold_min_mem`` at half (SIGKILL) in its packaged config,
  memguardd as a rule on the host, ``working_set > MemTotal - floor``, whose
  action is a kill (memguard choosing: the largest, the job's hogs
  preferred, nothing outside the job's cgroup, SIGKILL 1 s after SIGTERM),
  beside rules/default.yaml;
- the job is two of the tests' hogs (tests/helpers/hog.c) in one v1 memory
  cgroup: the first fills it at once until MemAvailable is about 40 % of
  MemTotal plus 512 MiB, and the floor is then set 512 MiB under what is
  available (before any daemon starts); the second grows by the rate. Both
  have oom_score_adj 1000, so a daemon that kills by badness picks them.
  The cgroup's limit is 256 MiB past the floor: if no daemon acts, the
  kernel kills in the cgroup, and the host keeps all but that much (never
  at risk);
- MemAvailable is read every 10 ms: the floor crossing is the first reading
  under it, and times are from there. For memguardd the first firing of a
  rule of rules/default.yaml on the host or the job's cgroup (its status,
  every 0.2 s: either predicted to run out) is its first warning; earlyoom and nohang
  (warnings off in its packaged config) have none.

Per daemon and rate: when it first warned and when it acted, relative to the
floor crossing, and what became of the job: killed by the daemon (a hog died
of a signal with the cgroup's ``oom_kill`` counter still 0) or by the kernel.
The hogs do not react to warnings, so none survives.

Then (``--jobs hog,cooperative``, the default) the same with a job that
does: the growing part is tests/helpers/cooperative.py, which frees what it
holds and ends when sent SIGUSR1, started under memguardd as
``memguardctl run --on-warning USR1`` (registered, no change to its code).
"warned and survived" when it received the warning and ended by
itself, with nothing killed; it never crosses the floor then, and its
warning is given as how long before the floor it came at the job's rate:
the ABOVE it had left to grow when signalled (what it says it held then,
``warned BYTES``), over the rate.  Not from MemAvailable then: memory
the last run's job gave back can still be coming back to the host after
the floor is set (one run read 120 MiB more above the floor than the job
could have left, a warning 63 s ahead at 10 MiB/s).  Only under memguardd: earlyoom and nohang have nothing to warn
a job with, so a cooperative job is a hog to them (the runs showed the
same outcome and times as the hog's), and leaving those six runs out keeps
``make bench`` within its 20 minutes.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import _cgroups  # noqa: E402
from rivals import CACHE, Daemon, fetch_rivals, memguardd_daemon  # noqa: E402
from tests.kernel import MIB, Hog, V1MemoryCgroup, build_hog  # noqa: E402

FLOOR_SHARE = 0.40
ABOVE = 512 * MIB       # the first hog fills to this far above the floor
PAST = 256 * MIB        # the cgroup's limit lies this far past the floor
SAMPLE_S = 0.01
STATUS_EVERY_S = 0.2
RUN_TIMEOUT_S = 120.0


def meminfo() -> dict[str, int]:
    out = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("MemTotal", "MemAvailable"):
                out[key] = int(rest.split()[0]) * 1024
    return out


def settled() -> int:
    """MemAvailable once it holds still (memory of the last run's job is
    freed for a while after it exits): two readings 0.5 s apart within 8 MiB."""
    last, deadline = meminfo()["MemAvailable"], time.monotonic() + 30
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = meminfo()["MemAvailable"]
        if abs(now - last) < 8 * MIB:
            return now
        last = now
    return last


def step_for(rate: int) -> tuple[str, str]:
    """hog grow's STEP_MIB and INTERVAL_MS for *rate* MiB/s."""
    for interval in (50, 100, 200):
        step = rate * interval / 1000
        if step == int(step) and step >= 1:
            return str(int(step)), str(interval)
    raise ValueError(f"no whole MiB step gives {rate} MiB/s")


def earlyoom(root: Path, floor: int) -> Daemon:
    kib = floor // 1024
    return Daemon("earlyoom", [str(root / "usr/bin/earlyoom"), "-M", f"{kib},{kib // 2}", "-r", "0"])


def nohang(root: Path, floor: int, tmp: Path) -> Daemon:
    config = (root / "etc/nohang/nohang.conf").read_text()
    lines = []
    for line in config.splitlines():
        key = line.split("=")[0].strip()
        if key == "soft_threshold_min_mem":
            line = f"soft_threshold_min_mem = {floor // MIB} M"
        elif key == "hard_threshold_min_mem":
            line = f"hard_threshold_min_mem = {floor // 2 // MIB} M"
        lines.append(line)
    path = tmp / "nohang.conf"
    path.write_text("\n".join(lines) + "\n")
    return Daemon("nohang", ["/usr/bin/python3", str(root / "usr/sbin/nohang"), "--monitor", "--config", str(path)])


def memguardd(floor: int, total: int, tmp: Path) -> tuple[Daemon, Path]:
    rules = tmp / "floor.yaml"
    rules.write_text(f"""rules:
  - name: host-floor
    description: MemAvailable under the floor the other daemons protect
    match:
      kind: [host]
    levels:
      - severity: last_resort
        when: working_set > {total - floor}
        actions:
          - kill: largest
            prefer: {{name: [hog]}}
            # nothing outside the job's mgtest-* cgroup, whatever else runs on this host
            avoid: {{cgroup: ['/', '/[!m]*', '/m[!g]*', '/mg[!t]*', '/mgt[!e]*']}}
            grace: 1s
""")
    config = (REPO / "packaging" / "memguard.yaml").read_text().replace(
        'files: ["../rules/default.yaml"]', f'files: ["{REPO / "rules" / "default.yaml"}", "{rules}"]')
    (tmp / "memguard.yaml").write_text(config)
    return memguardd_daemon(tmp / "memguard.yaml", tmp), tmp / "memguard.sock"


def host_warned(sock: Path, cgroup: str) -> bool:
    """Whether a rule other than the floor's fires on the host or the job's
    cgroup (the default ladder predicting either running out)."""
    from memguard.cli.client import call
    try:
        status = call(str(sock), "status", timeout=1.0)
    except Exception:  # noqa: BLE001 - a busy daemon: ask again at the next poll
        return False
    return any(f["domain"] in ("host", f"cgroup:{cgroup}") and f["rule"] != "host-floor"
               for f in status["rules"]["firing"])


COOPERATIVE = REPO / "tests" / "helpers" / "cooperative.py"
STEP_S = 0.1


def grower(job: str, rate: int, hog_binary: Path, group, sock: Path | None) -> Hog:
    """The growing part of the job: a hog, or the cooperative job (registered
    with memguardd, the only daemon it runs under, warned by SIGUSR1)."""
    if job == "hog":
        return Hog(hog_binary, ("grow", *step_for(rate)), group)
    return Hog(Path(sys.executable), ["-m", "memguard.cli.main", "--socket", str(sock), "run", "--name", "grow",
                                      "--on-warning", "USR1", "--", sys.executable, str(COOPERATIVE),
                                      f"{rate * STEP_S:g}", str(STEP_S)], group)


def one_run(name: str, rate: int, root: Path, hog_binary: Path, job: str = "hog") -> dict:
    with tempfile.TemporaryDirectory(prefix="mgbench-react-") as tmp_name:
        tmp = Path(tmp_name)
        total, available = meminfo()["MemTotal"], settled()
        fill = available - int(FLOOR_SHARE * total) - ABOVE
        if fill < 256 * MIB:
            raise RuntimeError(f"MemAvailable {available // MIB} MiB is too close to "
                               f"{FLOOR_SHARE:.0%} of MemTotal: run this on a quiet host")
        hogs, daemon = [], None
        try:
            with V1MemoryCgroup(fill + ABOVE + PAST) as group:
                first = Hog(hog_binary, ("anon", str(fill // MIB)), group)
                hogs.append(first)
                adjust(first.pid)
                first.wait_ready(timeout=60)
                # The floor from what is available now, with the job's first part
                # in: the next ABOVE the job takes crosses it, PAST more its limit.
                floor = settled() - ABOVE
                used = int((group.fs_path / "memory.usage_in_bytes").read_text())
                (group.fs_path / "memory.limit_in_bytes").write_text(str(used + ABOVE + PAST))
                sock = None
                if name == "memguardd":
                    daemon, sock = memguardd(floor, total, tmp)
                elif name == "earlyoom":
                    daemon = earlyoom(root, floor)
                else:
                    daemon = nohang(root, floor, tmp)
                daemon.start()
                daemon.wait_ready()
                time.sleep(3.0)     # memguardd's first walk finds the cgroup; the others settle
                if daemon.proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {daemon.proc.returncode}:\n{daemon.tail()}")
                growing = grower(job, rate, hog_binary, group, sock)
                hogs.append(growing)
                adjust(growing.pid)
                start = time.monotonic()
                crossed = warned = acted = held = None
                how = None
                next_status = start
                while time.monotonic() - start < RUN_TIMEOUT_S:
                    now = time.monotonic()
                    if job == "cooperative" and held is None:
                        told = [line for line in growing.lines() if line.startswith("warned ")]
                        if told:           # what it held when signalled, before it freed it
                            warned, held = now, int(told[0].split()[1])
                    if crossed is None and meminfo()["MemAvailable"] < floor:
                        crossed = now
                    if sock is not None and warned is None and now >= next_status:
                        next_status = now + STATUS_EVERY_S
                        if host_warned(sock, group.path):
                            warned = time.monotonic()
                    dead = [h for h in hogs if h.returncode is not None]
                    if dead:
                        acted = now
                        how = dead[0].returncode
                        break
                    time.sleep(SAMPLE_S)
                time.sleep(0.5)
                kernel_kills = group.oom_control()["oom_kill"]
                heeded = how == 0 and any(line.startswith("warned") for line in growing.lines())
                for h in hogs:
                    h.close()
        finally:
            for h in hogs:
                h.close()
            if daemon is not None:
                daemon.stop()
        # the hog ends with status 0 on SIGTERM (tests/helpers/hog.c)
        signal_name = {0: "SIGTERM", -9: "SIGKILL"}.get(how, f"status {how}")
        outcome = ("none: still growing" if acted is None else
                   "killed by the kernel" if kernel_kills else
                   "warned and survived (freed its memory, ended by itself)" if heeded else
                   f"ended by {name} ({signal_name})")

        def rel(t):
            return None if t is None or crossed is None else t - crossed
        if heeded and crossed is None:
            # It never crossed the floor: how long before it would have, at
            # its rate, from what it had left to grow when warned.
            return {"daemon": name, "rate": rate, "crossed": None, "warned": -(ABOVE - held) / (rate * MIB),
                    "acted": None, "outcome": outcome}
        return {"daemon": name, "rate": rate, "crossed": None if crossed is None else crossed - start,
                "warned": rel(warned), "acted": rel(acted), "outcome": outcome}


def adjust(pid: int) -> None:
    """The job first in line for a daemon that kills by badness."""
    with open(f"/proc/{pid}/oom_score_adj", "w") as f:
        f.write("1000")


def fmt(x) -> str:
    return "-" if x is None else f"{x:+.2f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rates", default="10,50,200", help="MiB/s, comma-separated (10,50,200)")
    p.add_argument("--jobs", default="hog,cooperative",
                   help="which jobs, comma-separated: hog (ignores warnings), cooperative (hog,cooperative)")
    p.add_argument("--cache", type=Path, default=CACHE, help=f"where the Debian packages are unpacked ({CACHE})")
    p.add_argument("--write", action="store_true", help="rewrite this section of docs/benchmarks.md")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        p.error("run as root: the cgroups, oom_score_adj and memguardd's probes need it")
    _cgroups.exit_on_signals()
    root = fetch_rivals(args.cache)
    hog_dir = Path(tempfile.mkdtemp(prefix="mgbench-hog-"))
    hog_binary = build_hog(hog_dir)
    rows = []
    try:
        for job in args.jobs.split(","):
            for rate in (int(r) for r in args.rates.split(",")):
                for name in ("memguardd",) if job == "cooperative" else ("memguardd", "earlyoom", "nohang"):
                    r = one_run(name, rate, root, hog_binary, job)
                    print(f"{job} {rate:>4} MiB/s {name:<9} floor crossed {fmt(r['crossed'])} s after the growth "
                          f"began; warned {fmt(r['warned'])} s, acted {fmt(r['acted'])} s from the crossing: "
                          f"{r['outcome']}", flush=True)
                    rows.append([job, f"{rate} MiB/s", name, fmt(r["warned"]), fmt(r["acted"]), r["outcome"]])
    except _cgroups.Interrupted:
        print("interrupted", file=sys.stderr)
        return 130
    body = _cgroups.table(["job", "growth", "daemon", "first warning, s from the floor",
                           "acted, s from the floor", "the job"], rows)
    print(body)
    if args.write:
        lines = [*_cgroups.section_head("Reaction to the same threat (`bench/reaction.py`)",
                                        f".venv/bin/python bench/reaction.py --rates {args.rates} "
                                        f"--jobs {args.jobs} --write"),
                 f"- code: {_cgroups.code_version()}; floor about {FLOOR_SHARE:.0%} of MemTotal; the job fills its "
                 "cgroup to 512 MiB above the floor, then grows at the rate; the cgroup's limit is 256 MiB past "
                 "the floor; each daemon alone, as bench/reaction.py's docstring says; negative times are before "
                 "the floor was crossed; \"-\": never (a job the kernel killed never brought MemAvailable under "
                 "the floor); a cooperative job that freed its memory at memguard's warning never crossed the "
                 "floor: its warning is how long before the floor it came at the job's rate (what it had left of the "
                 "512 MiB when signalled, over the rate); the cooperative job "
                 "runs under memguardd only (earlyoom and nohang cannot warn it: to them it is the hog)",
                 "", body]
        _cgroups.write_section("reaction", "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

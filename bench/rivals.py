#!/usr/bin/env python3
"""memguardd, earlyoom and nohang side by side at rest (issue 23).

    .venv/bin/python bench/rivals.py [--duration 300] [--others 120] [--scenario rest|fast|cgroups|gpus ...] [--write]

The three run at once on this host, for the same window, each with the
settings its Debian package ships: earlyoom 1.7 (``-r 3600``, its
/etc/default), nohang 0.2.0 (``--monitor`` with its /etc/nohang/nohang.conf),
memguardd with packaging/memguard.yaml (every probe on, the eBPF child
included; its socket, state and /metrics port in a temporary directory,
/metrics not scraped: the others have none).  earlyoom and nohang are the
Debian packages' own files, fetched with ``apt-get download`` and unpacked
with ``dpkg-deb -x`` into a cache folder (``--cache``), never installed:
installing them would start them as services.

Each daemon is started, left alone ``--warmup`` seconds (memguardd watches
a new domain 30 s before it may rest; in ``fast``, where it never rests,
FAST_WARMUP_S: its probes are up by then, and a 40 s warm-up measured the
same, 1.23 % against 1.26 %), then measured for the window
(``--duration`` for ``rest``, ``--others`` for the other scenarios):

- CPU: the run time of every thread of the daemon and of its children (the
  eBPF child) from /proc/PID/task/TID/schedstat (nanoseconds, every thread
  alive at the end; a thread that ended in the window is lost), as a share
  of one core; utime+stime from /proc/PID/stat beside it (10 ms ticks, but
  ended threads counted);
- memory: VmRSS of the daemon, and of the tree (daemon and children),
  every 5 s: the largest seen.

Scenarios (``--scenario``, any of them; default all): ``rest`` (the host as
it is, the issue's target: memguardd's CPU no more than nohang's, RSS
<= 40 MiB, the tree <= 80 MiB), ``fast`` (memguardd at a 100 ms interval,
``rest_interval: 0s``), ``cgroups`` (200 limited cgroups holding 2,000
sleeping processes, all far from their limits: <= 0.5 % of a core),
``gpus`` (eight GPUs of the fake libnvidia-ml.so.1 the tests build, which
rereads its script at every call).  The host's activity in the window (forks,
OOM kills) is printed: another workload running wakes memguardd's process
and kill probes, and not the others.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import _cgroups  # noqa: E402

PACKAGES = {"earlyoom": "1.7-1+b1", "nohang": "0.2.0-1.1"}
CACHE = Path("/var/tmp/memguard-bench")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
SAMPLE_EVERY_S = 5.0
FAST_WARMUP_S = 10.0
GPUS = 8
TARGETS = {"cpu_ratio": 1.0, "rss_mib": 40.0, "tree_mib": 80.0, "cgroups_cpu": 0.5}


# ------------------------------------------------------------ the rivals


def fetch_rivals(cache: Path) -> Path:
    """The unpacked root of the Debian packages of earlyoom and nohang in
    *cache* (downloaded and unpacked once)."""
    root = cache / "root"
    if all((root / p).exists() for p in ("usr/bin/earlyoom", "usr/sbin/nohang")):
        return root
    cache.mkdir(parents=True, exist_ok=True)
    wanted = [f"{name}={version}" for name, version in PACKAGES.items()]
    done = subprocess.run(["apt-get", "download", "-o", "APT::Sandbox::User=root", *wanted], cwd=cache,
                          capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"apt-get download {' '.join(wanted)} failed (run apt-get update?):\n{done.stderr}")
    for deb in sorted(cache.glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True, timeout=60)
    return root


def fake_nvml(folder: Path) -> Path:
    """The tests' fake libnvidia-ml.so.1, compiled into *folder*, scripted
    with GPUS idle devices; returns the folder."""
    from tests.kernel import build_fake_nvml
    folder.mkdir(exist_ok=True)
    build_fake_nvml(folder)
    lines = [f"device {i} 85899345920 536870912 {1 << 30} 0 0 ok GPU-{i:08d}-0000-0000-0000-000000000000 "
             f"NVIDIA H100 80GB HBM3" for i in range(GPUS)]
    (folder / "state").write_text("\n".join(lines) + "\n")
    return folder


# ------------------------------------------------------------ measuring


def children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    text = f.read()
            except OSError:
                continue
            if int(text[text.rindex(")") + 2:].split()[1]) == pid:
                out.append(int(entry))
    return out


def tree(pid: int) -> list[int]:
    return [pid, *(c for child in children(pid) for c in tree(child))]


def run_ns(pids: list[int]) -> dict[tuple[int, int], int]:
    """schedstat's run time of every thread of *pids*, by (pid, tid)."""
    out = {}
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    out[(pid, int(tid))] = int(f.read().split()[0])
            except OSError:
                pass
    return out


def ticks(pids: list[int]) -> float:
    """utime + stime of *pids* (all their threads, ended ones too), seconds."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                text = f.read()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def host_counters() -> dict[str, int]:
    with open("/proc/stat") as f:
        forks = next(int(line.split()[1]) for line in f if line.startswith("processes "))
    with open("/proc/vmstat") as f:
        kills = next((int(line.split()[1]) for line in f if line.startswith("oom_kill ")), 0)
    return {"forks": forks, "oom_kills": kills}


# ------------------------------------------------------------ the daemons


class Daemon:
    def __init__(self, name: str, argv: list[str], env: dict | None = None, ready=None) -> None:
        self.name, self.argv, self.env, self.ready = name, argv, env, ready
        self.proc: subprocess.Popen | None = None
        self.log = tempfile.TemporaryFile()

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
                                     start_new_session=True, env=self.env)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not (self.ready is None or self.ready()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start:\n{self.tail()}")
            time.sleep(0.2)

    def tail(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)       # our child, not yet reaped: its pid is ours
        try:
            self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT_S)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def memguardd_daemon(config: Path, tmp: Path, env: dict | None = None) -> Daemon:
    """The venv's memguardd on *config*, its socket and state in *tmp* and
    /metrics on a free loopback port; ready once /metrics accepts."""
    port = free_port()

    def ready() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return False
    return Daemon("memguardd", [str(Path(sys.executable).parent / "memguardd"), "--config", str(config),
                                "--socket", str(tmp / "memguard.sock"), "--state-dir", str(tmp / "state"),
                                "--metrics-listen", f"127.0.0.1:{port}"], env, ready)


def memguardd(tmp: Path, scenario: str, nvml: Path | None) -> Daemon:
    config = (REPO / "packaging" / "memguard.yaml").read_text()
    config = config.replace('files: ["../rules/default.yaml"]', f'files: ["{REPO / "rules" / "default.yaml"}"]')
    if scenario == "fast":
        config = config.replace("  interval: 1s ", "  interval: 100ms ") + "\n"
        config = config.replace("sampling:\n", "sampling:\n  rest_interval: 0s\n", 1)
    path = tmp / "memguard.yaml"
    path.write_text(config)
    env = dict(os.environ)
    if nvml is not None:
        env.update(LD_LIBRARY_PATH=str(nvml), FAKE_NVML_STATE=str(nvml / "state"))
    return memguardd_daemon(path, tmp, env)


def rivals(root: Path) -> list[Daemon]:
    return [Daemon("earlyoom", [str(root / "usr/bin/earlyoom"), "-r", "3600"]),
            Daemon("nohang", ["/usr/bin/python3", str(root / "usr/sbin/nohang"), "--monitor",
                              "--config", str(root / "etc/nohang/nohang.conf")])]


def measure(daemons: list[Daemon], duration: float) -> dict[str, dict]:
    """The window's CPU and RSS of each daemon (its tree), and the host's activity."""
    trees = {d.name: tree(d.proc.pid) for d in daemons}
    before = {name: (run_ns(pids), ticks(pids)) for name, pids in trees.items()}
    host_before, start = host_counters(), time.monotonic()
    rss = {d.name: [] for d in daemons}
    while (left := duration - (time.monotonic() - start)) > 0:
        for d in daemons:
            if d.proc.poll() is not None:
                raise RuntimeError(f"{d.name} exited with {d.proc.returncode} during the run:\n{d.tail()}")
            pids = tree(d.proc.pid)
            rss[d.name].append((rss_kib(d.proc.pid), sum(rss_kib(p) for p in pids)))
        time.sleep(min(SAMPLE_EVERY_S, left))
    wall = time.monotonic() - start
    out = {}
    for d in daemons:
        pids = tree(d.proc.pid)
        ns_before, ticks_before = before[d.name]
        ns_after = run_ns(pids)
        ns = sum(v - ns_before.get(k, 0) for k, v in ns_after.items())
        out[d.name] = {"cpu": 100 * ns / 1e9 / wall, "cpu_ticks": 100 * (ticks(pids) - ticks_before) / wall,
                       "rss_kib": max(r for r, _ in rss[d.name]), "tree_kib": max(t for _, t in rss[d.name]),
                       "processes": len(pids), "threads": len(ns_after)}
    host = host_counters()
    out["host"] = {k: host[k] - host_before[k] for k in host} | {"wall": wall}
    return out


def scenario_run(name: str, root: Path, duration: float, warmup: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="mgbench-rivals-") as tmp_name:
        tmp = Path(tmp_name)
        nvml = fake_nvml(tmp / "nvml") if name == "gpus" else None
        cgroups = _cgroups.BenchCgroups(200, 10) if name == "cgroups" else None
        daemons = [memguardd(tmp, name, nvml), *rivals(root)]
        try:
            if cgroups is not None:
                cgroups.open()
            for d in daemons:
                d.start()
            for d in daemons:
                d.wait_ready()
            time.sleep(warmup)
            return measure(daemons, duration)
        finally:
            for d in daemons:
                d.stop()
            if cgroups is not None:
                problems = cgroups.close()
                if problems:
                    print("cleanup:", *problems, sep="\n  ", file=sys.stderr)


# ------------------------------------------------------------ reporting


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


def rows(results: dict[str, list[dict]]) -> list[list[str]]:
    out = []
    for scenario, runs in results.items():
        for name in ("memguardd", "earlyoom", "nohang"):
            cpus = [r[name]["cpu"] for r in runs]
            nohang = [r["nohang"]["cpu"] for r in runs]
            ratio = statistics.median(c / n for c, n in zip(cpus, nohang)) if all(nohang) else None
            out.append([scenario, name, f"{statistics.median(cpus):.3f} %",
                        f"{statistics.median(r[name]['cpu_ticks'] for r in runs):.3f} %",
                        "-" if name == "nohang" or ratio is None else f"{ratio:.1f}",
                        mib(max(r[name]["rss_kib"] for r in runs)), mib(max(r[name]["tree_kib"] for r in runs)),
                        str(runs[0][name]["threads"])])
        host = runs[0]["host"]
        out.append([scenario, "(host)", "", "", "", "", "",
                    f"{host['forks']} forks, {host['oom_kills']} OOM kills in {host['wall']:.0f} s"])
    return out


def verdicts(results: dict[str, list[dict]]) -> list[str]:
    lines = []
    if "rest" in results:
        r = results["rest"][0]
        ratio = r["memguardd"]["cpu"] / r["nohang"]["cpu"] if r["nohang"]["cpu"] else float("inf")
        lines += [f"at rest, CPU memguardd / nohang: {ratio:.1f} (target <= {TARGETS['cpu_ratio']:g}): "
                  + ("met" if ratio <= TARGETS["cpu_ratio"] else "MISSED"),
                  f"at rest, memguardd's RSS {mib(r['memguardd']['rss_kib'])} (target <= {TARGETS['rss_mib']:g} MiB): "
                  + ("met" if r["memguardd"]["rss_kib"] <= TARGETS["rss_mib"] * 1024 else "MISSED"),
                  f"at rest, memguardd's tree with the eBPF child {mib(r['memguardd']['tree_kib'])} "
                  f"(target <= {TARGETS['tree_mib']:g} MiB): "
                  + ("met" if r["memguardd"]["tree_kib"] <= TARGETS["tree_mib"] * 1024 else "MISSED")]
    if "cgroups" in results:
        cpu = results["cgroups"][0]["memguardd"]["cpu"]
        lines.append(f"200 cgroups and 2,000 processes: memguardd {cpu:.3f} % of a core "
                     f"(target <= {TARGETS['cgroups_cpu']:g} %): " + ("met" if cpu <= TARGETS["cgroups_cpu"] else "MISSED"))
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=300.0, help="seconds measured at rest (300)")
    p.add_argument("--others", type=float, default=120.0, help="seconds measured in the other scenarios (120)")
    p.add_argument("--warmup", type=float, default=40.0, help="seconds before measuring (40)")
    p.add_argument("--scenario", action="append", choices=("rest", "fast", "cgroups", "gpus"),
                   help="repeatable; default: all four")
    p.add_argument("--cache", type=Path, default=CACHE, help=f"where the Debian packages are unpacked ({CACHE})")
    p.add_argument("--write", action="store_true", help="rewrite this section of docs/benchmarks.md")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        p.error("run as root: memguardd's probes and the cgroups need it")
    _cgroups.exit_on_signals()
    root = fetch_rivals(args.cache)
    scenarios = args.scenario or ["rest", "fast", "cgroups", "gpus"]
    results = {}
    try:
        for name in scenarios:
            duration = args.duration if name == "rest" else args.others
            warmup = min(args.warmup, FAST_WARMUP_S) if name == "fast" else args.warmup
            print(f"{name}: {warmup:g} s of warm-up, {duration:g} s measured", flush=True)
            results[name] = [scenario_run(name, root, duration, warmup)]
    except _cgroups.Interrupted:
        print("interrupted", file=sys.stderr)
        return 130
    headers = ["scenario", "daemon", "CPU (schedstat)", "CPU (utime+stime)", "vs nohang", "RSS (largest)",
               "tree RSS (largest)", "threads"]
    body = _cgroups.table(headers, rows(results))
    summary = verdicts(results)
    print(body, *summary, sep="\n")
    if args.write:
        command = f".venv/bin/python bench/rivals.py --duration {args.duration:g} --others {args.others:g}" + \
            "".join(f" --scenario {s}" for s in args.scenario or ()) + " --write"
        lines = [*_cgroups.section_head("Side by side with earlyoom and nohang (`bench/rivals.py`)", command),
                 f"- code: {_cgroups.code_version()}; earlyoom {PACKAGES['earlyoom']} and nohang "
                 f"{PACKAGES['nohang']} from Debian, with their packaged settings; memguardd with "
                 "packaging/memguard.yaml (fast: 100 ms, no rest; gpus: the fake NVML's eight GPUs)",
                 f"- {args.warmup:g} s after start ({min(args.warmup, FAST_WARMUP_S):g} s in fast), "
                 f"{args.duration:g} s measured at rest and {args.others:g} s in "
                 "the other scenarios, the three at once; CPU as a "
                 "share of one core, every thread and child (bench/rivals.py's docstring says how)",
                 "", body, "", *(f"- {line}" for line in summary)]
        _cgroups.write_section("rivals", "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

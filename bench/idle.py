#!/usr/bin/env python3
"""What an idle memguardd costs (issue 2: at a 1 s interval, <= 0.5% of one
core and <= 40 MiB RSS).

Starts the real ``memguardd`` (the one next to this Python, .venv/bin) with
its socket, state directory and config in a temporary directory and /metrics
on a free loopback port; once /metrics answers, measures for ``--duration``
seconds:

- CPU: utime + stime of the whole process (every thread) from
  /proc/PID/stat, as a share of one core over the measured wall time; the
  start-up before the first /metrics answer is reported apart;
- memory: VmRSS from /proc/PID/status every ``--sample-every`` seconds (the
  last and the largest seen), and VmHWM, the peak since exec (start-up
  included);

while scraping /metrics every ``--scrape-every`` seconds, as Prometheus
would.  The daemon is stopped by its pid at the end (SIGTERM, SIGKILL after
a bounded wait), also on Ctrl-C.  ``--cgroups N`` first makes N limited
cgroups with sleeping processes in them (as bench/tick.py does), to see the
cost of a busier host.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _cgroups  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
TARGET_CPU_PERCENT = 0.5
TARGET_RSS_MIB = 40.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS   # stat fields 14 and 15


def status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon, RssFile (KiB) and Threads from /proc/PID/status."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem", "Threads"):
                out[key] = int(value.split()[0])
    return out


def host_oom_kills() -> int | None:
    """The kernel's cumulative oom_kill counter (/proc/vmstat, since 4.13)."""
    with open("/proc/vmstat") as f:
        for line in f:
            if line.startswith("oom_kill "):
                return int(line.split()[1])
    return None


def scrape(url: str) -> tuple[bytes, float]:
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=5) as r:
        body = r.read()
    return body, time.perf_counter() - t0


def metric_value(body: bytes, name: str) -> float | None:
    """The sum of every series of *name* in a scrape; None when absent."""
    values = [float(line.rsplit(" ", 1)[1]) for line in body.decode("utf-8", "replace").splitlines()
              if line.startswith(name + " ") or line.startswith(name + "{")]
    return sum(values) if values else None


class Daemon:
    """The memguardd child; :meth:`stop` ends it by pid, boundedly."""

    def __init__(self, exe: str, tmp: str, port: int, interval: float) -> None:
        self.config = os.path.join(tmp, "memguard.yaml")
        with open(self.config, "w") as f:
            f.write(f"sampling:\n  interval: {interval:g}s\n")
        self.log_path = os.path.join(tmp, "memguardd.log")
        self.argv = [exe, "--config", self.config, "--socket", os.path.join(tmp, "memguard.sock"),
                     "--state-dir", os.path.join(tmp, "state"),
                     "--metrics-listen", f"127.0.0.1:{port}"]
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         start_new_session=True)

    def wait_ready(self) -> float:
        """Seconds until /metrics first answers with a body.  Raises RuntimeError."""
        t0 = time.monotonic()
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"memguardd exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                body, _ = scrape(self.url)
                if body:
                    return time.monotonic() - t0
            except OSError:
                pass
            if time.monotonic() - t0 > READY_TIMEOUT_S:
                raise RuntimeError(f"memguardd did not serve /metrics in {READY_TIMEOUT_S:g} s:\n"
                                   f"{self.log_tail()}")
            time.sleep(0.05)

    def stop(self) -> str:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT_S; how it ended."""
        if self.proc is None or self.proc.poll() is not None:
            return "already exited" if self.proc else "never started"
        self.proc.send_signal(signal.SIGTERM)   # Popen signals only its own, unreaped child
        try:
            rc = self.proc.wait(timeout=STOP_TIMEOUT_S)
            return f"exited {rc} after SIGTERM"
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait(timeout=STOP_TIMEOUT_S)
            return f"killed (SIGKILL) after {STOP_TIMEOUT_S:g} s, rc {rc}"

    def log_lines(self) -> int:
        try:
            with open(self.log_path, "rb") as f:
                return sum(1 for _ in f)
        except OSError:
            return 0

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError as e:
            return f"(no log: {e})"


def measure(d: Daemon, duration: float, scrape_every: float, sample_every: float) -> dict:
    """Run the measurement loop; see the module docstring.  Windows: one per
    scrape interval, each holding one scrape, with the daemon's CPU and the
    host's OOM kills in it."""
    pid = d.proc.pid
    r: dict = {"pid": pid, "scrape_every": scrape_every}
    t_start = time.monotonic()
    cpu_start = cpu_seconds(pid)
    kills_start = host_oom_kills()
    r["startup_cpu_s"] = cpu_start     # all it used before /metrics first answered
    rss: list[int] = []
    marks: list[tuple[float, float, int | None]] = []   # (wall, cpu, host oom kills) at each scrape
    scrapes: list[float] = []
    body = b""
    next_scrape = t_start          # scrape at once, then every scrape_every
    next_sample = t_start
    end = t_start + duration
    while True:
        now = time.monotonic()
        if d.proc.poll() is not None:
            raise RuntimeError(f"memguardd exited with {d.proc.returncode} during the run:\n"
                               f"{d.log_tail()}")
        if now >= next_scrape and now < end:
            marks.append((now, cpu_seconds(pid), host_oom_kills()))
            body, took = scrape(d.url)
            scrapes.append(took)
            next_scrape += scrape_every
        if now >= next_sample:
            rss.append(status(pid)["VmRSS"])
            next_sample += sample_every
        if now >= end:
            break
        time.sleep(max(0.0, min(next_scrape, next_sample, end) - time.monotonic()))
    wall = time.monotonic() - t_start
    cpu = cpu_seconds(pid) - cpu_start
    kills_end = host_oom_kills()
    marks.append((time.monotonic(), cpu_start + cpu, kills_end))
    st = status(pid)
    rss.append(st["VmRSS"])
    windows = []   # (cpu seconds, wall seconds, host OOM kills in it or the one before)
    for i in range(1, len(marks)):
        (t0, c0, k0), (t1, c1, k1) = marks[i - 1], marks[i]
        before = marks[i - 2][2] if i >= 2 else k0
        kills = None if k1 is None or before is None else k1 - before
        windows.append((c1 - c0, t1 - t0, kills))
    quiet = [(c, t) for c, t, k in windows if k == 0]
    r.update(wall_s=wall, cpu_s=cpu, cpu_percent=100 * cpu / wall, windows=windows,
             quiet_cpu_percent=(100 * sum(c for c, _ in quiet) / sum(t for _, t in quiet)
                                if quiet else None),
             quiet_windows=len(quiet),
             host_oom_kills=None if kills_start is None else kills_end - kills_start,
             log_lines=d.log_lines(),
             rss_first_kib=rss[0], rss_last_kib=st["VmRSS"], rss_max_kib=max(rss), hwm_kib=st["VmHWM"],
             rss_anon_kib=st.get("RssAnon"), rss_file_kib=st.get("RssFile"),
             threads=st.get("Threads"), scrapes=len(scrapes),
             scrape_ms_median=1000 * sorted(scrapes)[len(scrapes) // 2] if scrapes else None,
             body_bytes=len(body),
             ticks=metric_value(body, "memguard_tick_duration_seconds_count"),
             tick_sum=metric_value(body, "memguard_tick_duration_seconds_sum"),
             overruns=metric_value(body, "memguard_tick_overruns_total"),
             domains=metric_value(body, "memguard_domains"))
    return r


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f}"


def rows(r: dict, targets: bool = True) -> list[list[str]]:
    """The table; *targets* False leaves the target column empty (the
    targets are for an idle host, not one with benchmark cgroups)."""
    def verdict(ok: bool) -> str:
        return "yes" if ok else "NO"
    cpu_ok = verdict(r["cpu_percent"] <= TARGET_CPU_PERCENT)
    rss_ok = verdict(r["rss_max_kib"] / 1024 <= TARGET_RSS_MIB)
    out = [
        ["CPU, share of one core", f"{r['cpu_percent']:.3f} %",
         f"{r['cpu_s']:.2f} s CPU in {r['wall_s']:.0f} s", f"<= {TARGET_CPU_PERCENT} %: {cpu_ok}"],
    ]
    if r["quiet_cpu_percent"] is not None:
        q_ok = verdict(r["quiet_cpu_percent"] <= TARGET_CPU_PERCENT)
        out.append(["  in windows without OOM kills", f"{r['quiet_cpu_percent']:.3f} %",
                    f"{r['quiet_windows']} of {len(r['windows'])} windows with no host OOM kill "
                    "in them or the one before", f"<= {TARGET_CPU_PERCENT} %: {q_ok}"])
    full = [100 * c / t for c, t, _ in r["windows"] if t >= 0.9 * r["scrape_every"]]
    if full:
        percents = sorted(full)
        out.append(["  per window", f"{percents[0]:.2f} .. {percents[-1]:.2f} %",
                    f"min .. max of {len(percents)} full {r['scrape_every']:g} s windows "
                    f"(one scrape each), median {percents[len(percents) // 2]:.2f} %", ""])
    out += [
        ["RSS (VmRSS), first", f"{mib(r['rss_first_kib'])} MiB", "when /metrics first answered", ""],
        ["RSS (VmRSS), last", f"{mib(r['rss_last_kib'])} MiB",
         f"anon {mib(r['rss_anon_kib'])} MiB, file {mib(r['rss_file_kib'])} MiB", ""],
        ["RSS (VmRSS), largest seen", f"{mib(r['rss_max_kib'])} MiB", "", f"<= {TARGET_RSS_MIB:g} MiB: {rss_ok}"],
        ["peak RSS (VmHWM)", f"{mib(r['hwm_kib'])} MiB", "since exec, start-up included", ""],
        ["start-up", f"{r['ready_s']:.2f} s", f"{r['startup_cpu_s']:.2f} s CPU until /metrics answered", ""],
        ["threads", str(r["threads"]), "", ""],
        ["/metrics scrapes", str(r["scrapes"]),
         f"median {r['scrape_ms_median']:.1f} ms, body {r['body_bytes']:,} bytes", ""],
    ]
    out.append(["host activity during the run", f"{r['host_oom_kills']} OOM kills",
                "kernel oom_kill counter (/proc/vmstat), anyone's; "
                f"the daemon logged {r['log_lines']} lines", ""])
    if r["ticks"]:
        out.append(["ticks (daemon's own count)", f"{r['ticks']:.0f}",
                    f"mean {1000 * r['tick_sum'] / r['ticks']:.2f} ms, "
                    f"{r['overruns']:.0f} overruns, domains {r['domains']:.0f}", ""])
    if not targets:
        out = [row[:3] + [""] for row in out]
    return out


HEADERS = ["figure", "value", "detail", "target"]


def section_key(args: argparse.Namespace) -> str:
    return "idle" if not args.cgroups else f"idle-{args.cgroups}-cgroups"


def render_doc(r: dict, args: argparse.Namespace, command: str, setting: str, code: str) -> str:
    return "\n".join([
        *_cgroups.section_head(
            f"Idle daemon (`bench/idle.py`){'' if not args.cgroups else f', {args.cgroups} limited cgroups'}", command),
        f"- code: {code}",
        f"- {setting}; measured from the first /metrics answer for {r['wall_s']:.0f} s, /metrics "
        f"scraped every {args.scrape_every:g} s; CPU from utime+stime in /proc/PID/stat (10 ms "
        "ticks), memory from /proc/PID/status. The daemon watches the whole host: OOM kills by "
        "anyone (other test runs on a shared machine) wake its kmsg probe and cost CPU, so the "
        "CPU of windows without any is shown apart. Load average "
        f"{r['loadavg'][0]} before, {r['loadavg'][1]} after.",
        "",
        _cgroups.table(HEADERS, rows(r, targets=not args.cgroups)),
        "",
    ])


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Run the real memguardd idle for a while and measure its CPU and RSS.")
    p.add_argument("--duration", type=float, default=300.0,
                   help="seconds measured after start-up (default 300)")
    p.add_argument("--interval", type=float, default=1.0,
                   help="the daemon's sampling.interval in seconds (default 1)")
    p.add_argument("--scrape-every", type=float, default=15.0,
                   help="seconds between /metrics scrapes (default 15, Prometheus' usual)")
    p.add_argument("--sample-every", type=float, default=5.0,
                   help="seconds between RSS samples (default 5)")
    p.add_argument("--daemon", default=os.path.join(os.path.dirname(sys.executable), "memguardd"),
                   help="the memguardd to run (default: the one next to this Python)")
    p.add_argument("--cgroups", type=int, default=0,
                   help="first make this many limited cgroups with sleeping processes (default 0)")
    p.add_argument("--procs-per-cgroup", type=int, default=10,
                   help="with --cgroups: sleep processes in each (default 10)")
    p.add_argument("--write", action="store_true",
                   help="update this run's section of docs/benchmarks.md (idle, or "
                        "idle-N-cgroups with --cgroups N)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _cgroups.exit_on_signals()
    if not os.access(args.daemon, os.X_OK):
        print(f"idle.py: {args.daemon} is not executable; run `make venv` or pass --daemon",
              file=sys.stderr)
        return 2
    if args.cgroups and _cgroups.leftovers():
        print("idle.py: mgbench-* cgroups are left from an earlier run; remove them with "
              "bench/tick.py --sweep", file=sys.stderr)
        return 2
    code = _cgroups.code_version()
    bench = _cgroups.BenchCgroups(args.cgroups, args.procs_per_cgroup) if args.cgroups else None
    tmp = tempfile.TemporaryDirectory(prefix="mgbench-idle-")
    daemon = Daemon(args.daemon, tmp.name, free_port(), args.interval)
    how = "not started"
    try:
        if bench:
            bench.open()
        load_before = loadavg()
        daemon.start()
        ready = daemon.wait_ready()
        print(f"memguardd pid {daemon.proc.pid} serving {daemon.url} after {ready:.2f} s; "
              f"measuring for {args.duration:g} s", file=sys.stderr)
        r = measure(daemon, args.duration, args.scrape_every, args.sample_every)
        r["ready_s"] = ready
        r["loadavg"] = (load_before, loadavg())
    finally:
        how = daemon.stop()
        if bench:
            for p in bench.close():
                print(f"idle.py: cleanup: {p}", file=sys.stderr)
        tmp.cleanup()
    command = shlex.join([".venv/bin/python", "bench/idle.py",
                          *(argv if argv is not None else sys.argv[1:])])
    setting = (f"`memguardd {shlex.join(daemon.argv[1:])}`".replace(tmp.name, "$TMP")
               + f" (config: sampling.interval {args.interval:g}s)")
    if args.cgroups:
        setting += f", with {args.cgroups} limited cgroups holding {args.cgroups * args.procs_per_cgroup} processes"
    print(f"{code}; {_cgroups.machine_line()}")
    print(f"{setting}; daemon {how}")
    print(_cgroups.table(HEADERS, rows(r, targets=not args.cgroups)))
    if args.write:
        _cgroups.write_section(section_key(args), render_doc(r, args, command, setting, code))
        print(f"\nwrote the {section_key(args)} section of {os.path.relpath(_cgroups.DOC)}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except _cgroups.Interrupted as e:
        print(f"idle.py: stopped by {e}; daemon stopped, cgroups removed", file=sys.stderr)
        sys.exit(130)

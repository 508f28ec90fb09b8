#!/usr/bin/env python3
"""How long one tick of memguardd takes, on this machine as it is and with
many limited cgroups (issue 2: a domain tick <= 20 ms median with 200
limited cgroups and 2,000 processes).

A *domain tick* is what Daemon.tick does on the event loop before it
renders: the tick sources of ``build_sources(config, roots)[0]`` (meminfo,
PSI, cgroups), each through the daemon's ``run_source``, then ``Engine.step`` on
their results.  The clock handed to the sources and the engine is a fake one
advanced by the sampling interval (1 s) per tick, so the cgroup source
rediscovers the hierarchy every 10th tick, as it does in the daemon; the
ticks themselves run back to back on the real kernel.  Measured apart:

- ``Metrics.render`` of each tick's snapshot (the daemon renders after every
  tick when /metrics is on, also on the loop);
- the processes source (``build_sources(...)[1]``), which the daemon runs
  every 5 s in a worker thread, off the loop.

Run as root (it makes cgroups); see bench/README.md.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import os
import pstats
import shlex
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _cgroups  # noqa: E402
from memguard import __version__  # noqa: E402
from memguard.clock import FakeClock, SystemClock  # noqa: E402
from memguard.config import CgroupsConfig, Config  # noqa: E402
try:
    from memguard.runner import run_source  # noqa: E402
except ImportError:   # before the shell's pieces moved out of daemon.py
    from memguard.daemon import run_source  # noqa: E402
from memguard.engine.engine import Engine  # noqa: E402
from memguard.export.metrics import Metrics  # noqa: E402
from memguard.roots import Roots  # noqa: E402
from memguard.sources import build_sources  # noqa: E402

TARGET_DOMAIN_MEDIAN_MS = 20.0


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))   # ceil
    return ordered[int(rank) - 1]


def loadavg() -> str:
    """The 1-minute load average: other work on the machine skews the figures."""
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "min": min(values), "median": statistics.median(values), "p90": percentile(values, 90),
            "p99": percentile(values, 99), "max": max(values), "mean": statistics.fmean(values)}


class Scenario:
    """One set of measurements: a fresh engine, sources and registry."""

    def __init__(self, label: str, config: Config, roots: Roots) -> None:
        self.label = label
        self.config, self.roots = config, roots
        self.series: dict[str, list[float]] = {}
        self.discovery_ticks: list[bool] = []
        self.rounds: list[tuple[float, float, str]] = []   # domain tick median, p99, load average
        self.snapshot = None
        self.fresh()

    def fresh(self) -> None:
        """A new daemon state: sources, engine and registry as Daemon.__init__ makes them."""
        self.close()
        self.clock = FakeClock(mono=time.monotonic(), wall=time.time())
        self.tick_sources, self.slow_sources = build_sources(self.config, self.roots)
        self.engine = Engine(self.config, self.clock.now(), __version__)
        self.metrics = Metrics()

    def close(self) -> None:
        """Close the descriptors the sources keep open (the cgroup source keeps
        its cgroupfs files open): a round must not inherit the last one's, and
        prometheus_client's process collector lists /proc/self/fd at every
        rendering, so leaked descriptors would slow Metrics.render."""
        for source in getattr(self, "tick_sources", []) + getattr(self, "slow_sources", []):
            files = getattr(source, "files", None)
            if files is not None and hasattr(files, "close_all"):
                files.close_all()

    def _add(self, key: str, value: float) -> None:
        self.series.setdefault(key, []).append(value)

    def tick(self, record: bool, profilers: tuple[cProfile.Profile, cProfile.Profile] | None = None) -> None:
        """One tick as Daemon.tick runs it, each part timed; with *profilers*,
        the domain tick runs under the first and the rendering under the second."""
        cgroups = next((s for s in self.tick_sources if s.name == "cgroups"), None)
        before = getattr(cgroups, "_discovered_at", None)
        now = self.clock.now()
        if profilers:
            profilers[0].enable()
        c0 = time.thread_time()
        t0 = time.perf_counter()
        runs = [run_source(s, now) for s in self.tick_sources]
        t1 = time.perf_counter()
        effects = self.engine.step(runs, now, tick_duration=t1 - t0)
        t2 = time.perf_counter()
        c2 = time.thread_time()
        if profilers:
            profilers[0].disable()
            profilers[1].enable()
        self.metrics.tick_duration.observe(t1 - t0)
        self.metrics.render(effects.snapshot)
        t3 = time.perf_counter()
        if profilers:
            profilers[1].disable()
        self.snapshot = effects.snapshot
        self.clock.advance(self.config.sampling.interval)
        if not record:
            return
        for run in runs:
            self._add(f"source {run.name}", run.duration)
        self._add("sources", t1 - t0)
        self._add("Engine.step", t2 - t1)
        self._add("domain tick", t2 - t0)
        self._add("domain tick, CPU time", c2 - c0)
        self._add("Metrics.render", t3 - t2)
        self._add("on-loop tick (domain + render)", t3 - t0)
        self.discovery_ticks.append(getattr(cgroups, "_discovered_at", None) != before)

    def fold_processes_once(self) -> None:
        """Give the engine one processes reading, so snapshots carry the top
        consumers as they do in the daemon (it keeps the last one)."""
        now = self.clock.now()
        runs = [run_source(s, now) for s in self.tick_sources]
        runs += [run_source(s, now) for s in self.slow_sources if s.name == "processes"]
        self.engine.step(runs, now)
        self.clock.advance(self.config.sampling.interval)

    def time_processes(self, runs: int) -> None:
        source = next(s for s in self.slow_sources if s.name == "processes")
        clock = SystemClock()
        for _ in range(runs):
            run = run_source(source, clock.now())
            if run.reading is None:
                raise RuntimeError(f"processes source failed: {run.error or run.unavailable}")
            self._add("processes source (off the loop)", run.duration)
        self.process_count = sum(1 for n in os.listdir(self.roots.proc) if n.isdigit())

    def run(self, ticks: int, warmup: int, process_runs: int, profile: str | None,
            rounds: int = 1) -> None:
        """*rounds* times: a fresh state, *warmup* ticks, then *ticks* recorded."""
        before = loadavg()
        for i in range(rounds):
            if i:
                self.fresh()
            self.fold_processes_once()
            for _ in range(warmup):
                self.tick(record=False)
            for _ in range(ticks):
                self.tick(record=True)
            domain = self.series["domain tick"][-ticks:]
            self.rounds.append((statistics.median(domain), percentile(domain, 99), loadavg()))
        self.time_processes(process_runs)
        self.loadavg = (before, loadavg())
        if profile:
            # A separate pass: cProfile slows the ticks it watches about 1.7x.
            profilers = (cProfile.Profile(), cProfile.Profile())
            for _ in range(ticks):
                self.tick(record=False, profilers=profilers)
            self.profile_text = (
                f"cProfile of the domain tick ({ticks} more ticks; saved to {profile}.domain):\n"
                + profile_report(profilers[0], profile + ".domain")
                + f"\ncProfile of Metrics.render ({ticks} more ticks; saved to {profile}.render):\n"
                + profile_report(profilers[1], profile + ".render"))
        self.close()

    def domains_by_kind(self) -> dict[str, int]:
        kinds: dict[str, int] = {}
        for d in self.snapshot.domains:
            kinds[d.kind] = kinds.get(d.kind, 0) + 1
        return kinds

    def problems(self) -> list[str]:
        """Sources that did not work, and files they skipped."""
        out = []
        for s in self.snapshot.sources:
            if s.name in ("meminfo", "psi", "cgroups") and s.state != "active":
                out.append(f"source {s.name} is {s.state}: {s.reason}")
            if s.skipped:
                out.append(f"source {s.name} skipped files: {dict(s.skipped)}")
        return out

    def rows(self) -> list[list[str]]:
        def row(label: str, values: list[float]) -> list[str]:
            s = summary(values)
            return [label, str(s["n"]), ms(s["min"]), ms(s["median"]), ms(s["p90"]), ms(s["p99"]),
                    ms(s["max"]), ms(s["mean"])]

        domain = self.series["domain tick"]
        rows = [row("domain tick", domain), row("  its CPU time (thread)", self.series["domain tick, CPU time"])]
        for flag, label in ((False, "  ticks without discovery"), (True, "  ticks with discovery")):
            values = [v for v, d in zip(domain, self.discovery_ticks) if d == flag]
            if values:
                rows.append(row(label, values))
        for key, label in (("source meminfo", "  source meminfo"), ("source psi", "  source psi"),
                           ("source cgroups", "  source cgroups"), ("Engine.step", "  Engine.step"),
                           ("Metrics.render", "Metrics.render"),
                           ("on-loop tick (domain + render)", "on-loop tick (domain + render)"),
                           ("processes source (off the loop)", "processes source (off the loop)")):
            if self.series.get(key):
                rows.append(row(label, self.series[key]))
        return rows

    def rounds_line(self) -> str:
        return "domain tick per round (median / p99 ms, load average after): " + "; ".join(
            f"{ms(m)} / {ms(p)} ({load})" for m, p, load in self.rounds)

    def describe(self) -> str:
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(self.domains_by_kind().items()))
        n = len(self.snapshot.domains)
        return (f"{n} domain{'' if n == 1 else 's'} ({kinds}), "
                f"{self.process_count} processes on the host, "
                f"/metrics body {len(self.metrics.rendered):,} bytes; "
                f"load average {self.loadavg[0]} before, {self.loadavg[1]} after")


HEADERS = ["ms", "n", "min", "median", "p90", "p99", "max", "mean"]


def profile_report(profiler: cProfile.Profile, path: str) -> str:
    profiler.dump_stats(path)
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    out.write("by own time:\n")
    stats.sort_stats("tottime").print_stats(15)
    out.write("by cumulative time:\n")
    stats.sort_stats("cumulative").print_stats(20)
    return out.getvalue()


def sustained(scenario: Scenario) -> str:
    """How many ticks a second one core sustains: 1 / the median on-loop
    tick (domain tick and /metrics rendering, as the daemon runs them)."""
    loop = scenario.series.get("on-loop tick (domain + render)") or scenario.series["domain tick"]
    domain = statistics.median(scenario.series["domain tick"])
    return (f"One core sustains {1 / statistics.median(loop):.1f} ticks a second with {scenario.label} "
            f"({1 / domain:.1f} without rendering /metrics at every tick).")


def verdict(loaded: Scenario | None) -> str:
    if loaded is None:
        return ""
    median = statistics.median(loaded.series["domain tick"]) * 1000
    if loaded.label.startswith("1000 "):
        return sustained(loaded)
    if not loaded.label.startswith("200 "):
        return (f"Domain tick median with {loaded.label}: {median:.2f} ms (issue 2's target, "
                f"{TARGET_DOMAIN_MEDIAN_MS:g} ms, is for 200 cgroups).")
    ok = "meets" if median <= TARGET_DOMAIN_MEDIAN_MS else "MISSES"
    return (f"Domain tick median with {loaded.label}: {median:.2f} ms, which {ok} the "
            f"{TARGET_DOMAIN_MEDIAN_MS:g} ms target of issue 2. {sustained(loaded)}")


def render_doc(scenarios: list[Scenario], args: argparse.Namespace, command: str, code: str) -> str:
    parts = [
        *_cgroups.section_head("Tick duration (`bench/tick.py`)" if args.cgroups == 200
                               else f"Tick duration with {args.cgroups} cgroups (`bench/tick.py`)", command),
        f"- code: {code}",
        f"- {args.rounds} rounds per scenario, each from a fresh daemon state: {args.warmup} "
        f"warm-up ticks, then {args.ticks} recorded (the table pools the rounds); the clock "
        "given to sources and engine advances 1 s a tick, so every 10th tick rediscovers the "
        "cgroup hierarchy, as in the daemon; the processes source timed "
        f"{args.process_runs} times apart. Times in milliseconds.",
        "- wall-clock times (`time.perf_counter`); the domain tick's own CPU time "
        "(`time.thread_time`) is shown too, as it depends less on what else runs on the machine.",
        "- domain tick = the tick sources (meminfo, psi, cgroups) + `Engine.step`; "
        "`Metrics.render` also runs on the loop after each tick; the processes source runs "
        "in a worker thread every 5 s.",
        "",
    ]
    for s in scenarios:
        parts += [f"### {s.label}", "", s.describe() + ".", "", s.rounds_line() + ".", "",
                  _cgroups.table(HEADERS, s.rows()), ""]
        for p in s.problems():
            parts.append(f"- problem: {p}")
    v = verdict(next((s for s in scenarios if s.label != "this machine as it is"), None))
    if v:
        parts += [v, ""]
    return "\n".join(parts)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Time memguardd's tick: on this machine as it is, then with N limited "
                    "cgroups holding M sleeping processes each (made and removed by the "
                    "benchmark; needs root and a v1 memory hierarchy).")
    p.add_argument("--cgroups", type=int, default=200, help="limited cgroups to make (default 200; "
                   "0: only the machine as it is)")
    p.add_argument("--procs-per-cgroup", type=int, default=10,
                   help="sleep processes in each cgroup (default 10)")
    p.add_argument("--limit-mib", type=int, default=64, help="memory limit of each cgroup (default 64)")
    p.add_argument("--ticks", type=int, default=500, help="ticks recorded per round (default 500)")
    p.add_argument("--rounds", type=int, default=3,
                   help="rounds per scenario, each from a fresh daemon state; the table pools "
                        "them (default 3)")
    p.add_argument("--warmup", type=int, default=20, help="ticks run first and not recorded (default 20)")
    p.add_argument("--process-runs", type=int, default=40,
                   help="runs of the processes source timed per scenario (default 40)")
    p.add_argument("--no-bare", action="store_true",
                   help="skip the scenario of the machine as it is")
    p.add_argument("--profile", metavar="FILE",
                   help="after timing, run as many ticks again of the cgroup scenario under "
                        "cProfile (the domain tick and the rendering apart), save the stats to "
                        "FILE.domain and FILE.render, print the top functions")
    p.add_argument("--no-gc", action="store_true", help="disable the garbage collector while timing")
    p.add_argument("--write", action="store_true",
                   help="update the tick section of docs/benchmarks.md")
    p.add_argument("--sweep", action="store_true",
                   help="only remove mgbench-* cgroups left by an interrupted run, and exit")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _cgroups.exit_on_signals()
    if args.sweep:
        problems = _cgroups.sweep()
        for p in problems:
            print(f"tick.py: {p}", file=sys.stderr)
        return 1 if problems else 0
    if args.cgroups and os.geteuid() != 0:
        print("tick.py: making cgroups needs root; run as root or with --cgroups 0", file=sys.stderr)
        return 2
    stale = _cgroups.leftovers()
    if stale:
        print(f"tick.py: {len(stale)} mgbench-* cgroups are left from an earlier run "
              f"({stale[0]} ...); remove them with: {sys.argv[0]} --sweep", file=sys.stderr)
        return 2
    code = _cgroups.code_version()
    if args.no_gc:
        gc.disable()
    # every cgroup made is a domain, beyond the default cap of 256 (issue 24's 1,000)
    config, roots = Config(cgroups=CgroupsConfig(max_tracked=max(256, args.cgroups + 100))), Roots()
    scenarios: list[Scenario] = []
    if not args.no_bare:
        s = Scenario("this machine as it is", config, roots)
        s.run(args.ticks, args.warmup, args.process_runs, None, args.rounds)
        scenarios.append(s)
    if args.cgroups:
        label = (f"{args.cgroups} limited cgroups ({args.limit_mib} MiB), "
                 f"{args.cgroups * args.procs_per_cgroup} processes in them")
        t0 = time.monotonic()
        bench = _cgroups.BenchCgroups(args.cgroups, args.procs_per_cgroup, args.limit_mib * _cgroups.MIB)
        try:
            bench.open()
            print(f"made {args.cgroups} cgroups and {len(bench.children)} processes "
                  f"in {time.monotonic() - t0:.1f} s", file=sys.stderr)
            s = Scenario(label, config, roots)
            s.run(args.ticks, args.warmup, args.process_runs, args.profile, args.rounds)
            scenarios.append(s)
            tracked = {d.name for d in s.snapshot.domains}
            missing = [n for n in bench.names if f"cgroup:{n}" not in tracked]
            if missing:
                print(f"tick.py: warning: {len(missing)} of our cgroups are not domains "
                      f"(e.g. {missing[0]}); raise cgroups.max_tracked?", file=sys.stderr)
        finally:
            problems = bench.close()
            for p in problems:
                print(f"tick.py: cleanup: {p}", file=sys.stderr)
            left = _cgroups.leftovers()
            if left:
                print(f"tick.py: cleanup left {len(left)} cgroups: {left[:3]}", file=sys.stderr)
    command = shlex.join([".venv/bin/python", "bench/tick.py",
                          *(argv if argv is not None else sys.argv[1:])])
    print(f"memguard {__version__}, {code}; {_cgroups.machine_line()}")
    for s in scenarios:
        print()
        print(f"{s.label}: {s.describe()}")
        print(s.rounds_line())
        print(_cgroups.table(HEADERS, s.rows()))
        for p in s.problems():
            print(f"problem: {p}")
        if getattr(s, "profile_text", None):
            print()
            print(s.profile_text)
    v = verdict(next((s for s in scenarios if s.label != "this machine as it is"), None))
    if v:
        print()
        print(v)
    if args.write:
        # the 200-cgroup run (issue 2's target) and any other size each keep their section
        _cgroups.write_section("tick" if args.cgroups == 200 else f"tick-{args.cgroups}",
                               render_doc(scenarios, args, command, code))
        print(f"\nwrote the tick section of {os.path.relpath(_cgroups.DOC)}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except _cgroups.Interrupted as e:
        print(f"tick.py: stopped by {e}; cgroups removed", file=sys.stderr)
        sys.exit(130)

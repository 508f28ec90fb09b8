"""memguardd: the shell around the engine.

It owns the I/O the engine must not do: it runs the sources on one asyncio
loop (those that can block in a worker thread, with a timeout), hands their
results to ``Engine.step`` with the current instant, and publishes what the
step returns to the control socket and the metrics endpoint.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import dataclasses
import json
import os
import signal
import sys
import time

from . import __version__
from .api.server import ControlServer
from .clock import Clock, Instant, SystemClock
from .config import Config, ConfigError, load_config
from .engine.engine import Engine, SourceRun
from .engine.snapshot import Snapshot
from .export.http import MetricsServer
from .export.metrics import Metrics
from .log import Logger
from .roots import Roots
from .sources import Source, Unavailable, build_sources
from .systemd import Notifier

# Exit codes of memguardd (docs/configuration.md).
EXIT_CONFIG = 2     # the config file or a flag is wrong
EXIT_STARTUP = 3    # a socket or port could not be opened


def run_source(source: Source, now: Instant) -> SourceRun:
    """Run one source once, timing it; never raises."""
    t0 = time.perf_counter()
    try:
        reading = source.collect(now)
    except Unavailable as e:
        return SourceRun(source.name, unavailable=str(e), duration=time.perf_counter() - t0)
    except (OSError, ValueError) as e:
        return SourceRun(source.name, error=f"{type(e).__name__}: {e}", duration=time.perf_counter() - t0)
    return SourceRun(source.name, reading=reading, duration=time.perf_counter() - t0)


class SlowSources:
    """Sources run off the loop at their own cadence, each at most once at a
    time; a run still in flight when the next is due counts as dropped."""

    def __init__(self, sources: list[Source], interval: float, timeout: float) -> None:
        self.sources = sources
        self.interval = interval
        self.timeout = timeout
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=len(sources) or 1,
                                                          thread_name_prefix="memguard-slow")
        self.in_flight: dict[str, tuple[concurrent.futures.Future, float]] = {}
        self.due: dict[str, float] = {}
        self.dropped: dict[str, int] = {}

    def poll(self, now: Instant) -> list[SourceRun]:
        """Results that finished (or timed out) since the last call; start
        the runs that are due."""
        runs = []
        for name, (future, started) in list(self.in_flight.items()):
            if future.done():
                runs.append(future.result())
                del self.in_flight[name]
            elif now.mono - started > self.timeout:
                runs.append(SourceRun(name, error=f"timed out after {self.timeout:g}s (still running)"))
                self.due[name] = now.mono + self.interval
        for source in self.sources:
            if now.mono < self.due.get(source.name, 0.0):
                continue
            if source.name in self.in_flight:
                self.dropped[f"slow_source:{source.name}"] = self.dropped.get(f"slow_source:{source.name}", 0) + 1
            else:
                self.in_flight[source.name] = (self.pool.submit(run_source, source, now), now.mono)
            self.due[source.name] = now.mono + self.interval
        return runs

    async def settle(self, timeout: float) -> None:
        """Wait (bounded) for the runs in flight, so the first snapshot is whole."""
        futures = [asyncio.wrap_future(f) for f, _ in self.in_flight.values()]
        if futures:
            await asyncio.wait(futures, timeout=timeout)

    def shutdown(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


class Daemon:
    def __init__(self, config: Config, roots: Roots, *, clock: Clock | None = None,
                 log: Logger | None = None) -> None:
        self.config = config
        self.roots = roots
        self.clock = clock or SystemClock()
        self.log = log or Logger()
        self.socket_path, self.state_dir = config.resolved_paths()
        self.tick_sources, slow = build_sources(config, roots)
        self.slow = SlowSources(slow, config.sampling.processes_interval, config.wsl.read_timeout)
        self.engine = Engine(config, self.clock.now(), __version__)
        self.metrics = Metrics()
        self.snapshot: Snapshot | None = None
        self.notifier = Notifier()
        self.stopping = asyncio.Event()

    def tick(self) -> float:
        """Run one tick; return the interval until the next."""
        now = self.clock.now()
        t0 = time.perf_counter()
        runs = [run_source(s, now) for s in self.tick_sources]
        runs += self.slow.poll(now)
        duration = time.perf_counter() - t0
        self.engine.counters.dropped.update(self.slow.dropped)
        effects = self.engine.step(runs, now, tick_duration=duration)
        self.snapshot = effects.snapshot
        self.metrics.tick_duration.observe(duration)
        if self.config.metrics.listen:
            self.metrics.render(self.snapshot)
        for msg, fields in effects.log:
            self.log.info(msg, **fields)
        return effects.interval

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        control = ControlServer(self.socket_path, self.log)
        control.route("version", lambda params, peer: {"version": __version__, "protocol": 1})
        control.route("status", self._status)
        await control.start()
        metrics_server, metrics_at = None, "off"
        if self.config.metrics.listen:
            metrics_server = MetricsServer(self.config.metrics.listen, lambda: self.metrics.rendered)
            await metrics_server.start()
            metrics_at = f"{metrics_server.host}:{metrics_server.bound_port}"
        self.log.info("memguardd started", version=__version__, socket=self.socket_path,
                      metrics=metrics_at, proc=self.roots.proc, sys=self.roots.sys)
        self.slow.poll(self.clock.now())
        await self.slow.settle(self.config.wsl.read_timeout)
        interval = self.tick()
        self.notifier.notify(f"READY=1\nSTATUS=watching {len(self.snapshot.domains)} domains")
        try:
            while not self.stopping.is_set():
                try:
                    await asyncio.wait_for(self.stopping.wait(), timeout=interval)
                except asyncio.TimeoutError:
                    pass
                if not self.stopping.is_set():
                    interval = self.tick()
                    self.notifier.notify("WATCHDOG=1")
        finally:
            self.notifier.notify("STOPPING=1")
            await control.stop()
            if metrics_server is not None:
                await metrics_server.stop()
            self.slow.shutdown()
            self.log.info("memguardd stopped")

    def _status(self, params: dict, peer) -> dict:
        if self.snapshot is None:
            from .api.protocol import NOT_READY, ProtocolError
            raise ProtocolError(NOT_READY, "the first tick has not finished yet")
        return self.snapshot.to_json()


def once(config: Config, roots: Roots) -> Snapshot:
    """One full snapshot: every source once, the slow ones too (each bounded
    by the WSL read timeout)."""
    clock = SystemClock()
    now = clock.now()
    tick_sources, slow = build_sources(config, roots)
    runs = [run_source(s, now) for s in tick_sources]
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(slow)) as pool:
        futures = [(s.name, pool.submit(run_source, s, now)) for s in slow]
        for name, future in futures:
            try:
                runs.append(future.result(timeout=config.wsl.read_timeout))
            except concurrent.futures.TimeoutError:
                runs.append(SourceRun(name, error=f"timed out after {config.wsl.read_timeout:g}s"))
    engine = Engine(config, now, __version__)
    return engine.step(runs, clock.now()).snapshot


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="memguardd", description="Predicts and explains out-of-memory kills.")
    p.add_argument("--config", "-c", help="YAML config file (default: built-in defaults)")
    p.add_argument("--proc-root", help="where procfs is (default /proc; a fixture tree for tests)")
    p.add_argument("--sys-root", help="where sysfs is (default /sys)")
    p.add_argument("--rootfs", help="root of other paths such as WSL's /mnt/c (default /)")
    p.add_argument("--socket", help="control socket path")
    p.add_argument("--state-dir", help="state directory")
    p.add_argument("--metrics-listen", help='host:port for /metrics ("" turns it off)')
    p.add_argument("--once", action="store_true", help="take one snapshot, print it, exit")
    p.add_argument("--json", action="store_true", help="with --once: print JSON (the default)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--version", action="version", version=f"memguardd {__version__}")
    return p.parse_args(argv)


def configure(args: argparse.Namespace) -> tuple[Config, Roots]:
    """The config file with the flags laid over it.  Raises ConfigError."""
    config = load_config(args.config) if args.config else Config()
    roots_cfg = dataclasses.replace(config.roots, proc=args.proc_root or config.roots.proc,
                                    sys=args.sys_root or config.roots.sys)
    config = dataclasses.replace(
        config, roots=roots_cfg,
        socket=args.socket or config.socket, state_dir=args.state_dir or config.state_dir,
        metrics=dataclasses.replace(config.metrics, listen=config.metrics.listen
                                    if args.metrics_listen is None else args.metrics_listen))
    roots = Roots(proc=roots_cfg.proc, sys=roots_cfg.sys, rootfs=args.rootfs or "/")
    return config, roots


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log = Logger(level=args.log_level)
    try:
        config, roots = configure(args)
    except ConfigError as e:
        print(f"memguardd: {e}", file=sys.stderr)
        return EXIT_CONFIG
    except OSError as e:
        print(f"memguardd: cannot read config: {e}", file=sys.stderr)
        return EXIT_CONFIG
    if args.once:
        json.dump(once(config, roots).to_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    try:
        asyncio.run(Daemon(config, roots, log=log).run())
    except (RuntimeError, OSError) as e:
        log.error("cannot start", error=str(e))
        return EXIT_STARTUP
    return 0


if __name__ == "__main__":
    sys.exit(main())

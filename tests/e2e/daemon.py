"""Running the real memguardd as a subprocess, and memguardctl against it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

from tests.kernel import wait_until


def ctl(socket: str, *args: str, timeout: float = 10.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "memguard.cli.main", "--socket", socket, *args],
                          capture_output=True, text=True, timeout=timeout)


class Daemon:
    """memguardd on a temporary socket and an ephemeral loopback port."""

    def __init__(self, tmp: str, *extra: str, config: str = "", probes: str = "") -> None:
        self.socket = os.path.join(tmp, "run", "memguard.sock")
        self.stderr_path = os.path.join(tmp, "memguardd.log")
        self.stderr = open(self.stderr_path, "w+")
        # *config* (YAML without a probes section), *probes* (lines of that
        # section), and our own trace instance, so a daemon running beside the
        # tests is not disturbed.
        self.config = os.path.join(tmp, "memguard.yaml")
        with open(self.config, "w") as f:
            f.write(config + "probes:\n" + probes
                    + f"  tracefs_instance: mgtest-{os.getpid()}-{id(self):x}\n")
        extra = ("--config", self.config, *extra)
        argv = [sys.executable, "-m", "memguard.daemon", "--socket", self.socket,
                "--state-dir", os.path.join(tmp, "state"), "--metrics-listen", "127.0.0.1:0", *extra]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=self.stderr)
        self.port = wait_until(self._port, timeout=20, what="memguardd to start")
        wait_until(lambda: ctl(self.socket, "status").returncode in (0, 4), timeout=20,
                   what="the control socket to answer with a first status")

    def log(self) -> str:
        with open(self.stderr_path) as f:
            return f.read()

    def _port(self) -> int | None:
        if self.proc.poll() is not None:
            raise AssertionError(f"memguardd exited {self.proc.returncode}:\n{self.log()}")
        m = re.search(r'msg="memguardd started".* metrics=127\.0\.0\.1:(\d+)', self.log())
        return int(m.group(1)) if m else None

    def status(self) -> dict:
        r = ctl(self.socket, "--json", "status")
        assert r.returncode in (0, 4), r.stderr
        return json.loads(r.stdout)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as r:
            return r.read().decode()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.stderr.close()
        return self.proc.returncode

    def wait_for_tick(self, predicate, timeout: float = 20.0):
        """The first status for which predicate(status) holds."""
        return wait_until(lambda: (lambda s: s if predicate(s) else None)(self.status()),
                          timeout=timeout, what="a status that satisfies the test")


def elapsed(since: float) -> float:
    return time.monotonic() - since

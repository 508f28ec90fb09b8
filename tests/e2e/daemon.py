"""Running the real memguardd as a subprocess, and memguardctl against it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request

from tests.kernel import wait_until


def ctl(socket: str, *args: str, timeout: float = 10.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "memguard.cli.main", "--socket", socket, *args],
                          capture_output=True, text=True, timeout=timeout)


class Daemon:
    """memguardd on a temporary socket and an ephemeral loopback port."""

    def __init__(self, tmp: str, *extra: str, config: str = "", probes: str = "", wrap: tuple = (),
                 env: dict | None = None, pass_fds: tuple = ()) -> None:
        self.socket = os.path.join(tmp, "run", "memguard.sock")
        self.stderr_path = os.path.join(tmp, "memguardd.log")
        self.stderr = open(self.stderr_path, "w+")
        # *config* (YAML without a probes section), *probes* (lines of that
        # section), and our own trace instance, so a daemon running beside the
        # tests is not disturbed.
        self.config = os.path.join(tmp, "memguard.yaml")
        self.state_dir = os.path.join(tmp, "state")
        self.instance = f"mgtest-{os.getpid()}-{id(self):x}"
        if "cgroups:" not in config and "roots:" not in config and "--sys-root" not in extra:
            # Only the tests' own cgroups: on the real kernel a daemon whose
            # rules act (freeze, kill) would act on anyone's cgroup it sees,
            # another workload's on this machine included.
            config += 'cgroups:\n  include: ["/mgtest-*"]\n'
        with open(self.config, "w") as f:
            f.write(config + "probes:\n" + probes + f"  tracefs_instance: {self.instance}\n")
        extra = ("--config", self.config, *extra)
        argv = [sys.executable, "-m", "memguard.daemon", "--socket", self.socket,
                "--state-dir", self.state_dir, "--metrics-listen", "127.0.0.1:0", *extra]
        # *wrap*: a command that execs the daemon (setpriv, a shell that sets
        # what systemd would); *env*, *pass_fds*: what it is started with.
        self.proc = subprocess.Popen([*wrap, *argv], stdout=subprocess.DEVNULL, stderr=self.stderr,
                                     env=env, pass_fds=pass_fds)
        try:
            self.port = wait_until(self._port, timeout=20, what="memguardd to start")
            wait_until(lambda: ctl(self.socket, "status").returncode in (0, 4), timeout=20,
                       what="the control socket to answer with a first status")
        except BaseException:
            self.stop()  # a daemon that never came up is still ours to end
            raise

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

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """End the daemon (SIGTERM: a clean stop); remove our trace instance
        if a daemon that died uncleanly left it."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.stderr.close()
        instance = os.path.join(TRACING_INSTANCES, self.instance)
        if os.path.isdir(instance):
            wait_until(lambda: _rmdir(instance), timeout=10, what=f"{instance} to be removed")
        return self.proc.returncode

    def wait_for_probes(self, wanted: set[str], timeout: float = 30.0) -> "Daemon":
        """Wait until every probe in *wanted* is active; on failure stop the
        daemon (no test holds it yet) and raise."""
        try:
            self.wait_for_tick(lambda s: wanted <= {p["name"] for p in s["probes"] if p["state"] == "active"},
                               timeout=timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_for_tick(self, predicate, timeout: float = 20.0):
        """The first status for which predicate(status) holds.  On a timeout
        the error says why the daemon was awake, if it was (its rest)."""
        last = {}

        def satisfied():
            last["status"] = status = self.status()
            return status if predicate(status) else None
        try:
            return wait_until(satisfied, timeout=timeout, what="a status that satisfies the test")
        except AssertionError as e:
            status = last.get("status", {})
            raise AssertionError(f"{e}; the last status: interval {status.get('interval_seconds')} s, "
                                 f"rest {status.get('rest')}") from None


TRACING_INSTANCES = "/sys/kernel/tracing/instances"


def _rmdir(path: str) -> bool:
    """rmdir; False while busy (the BPF child or a reader is still closing)."""
    try:
        os.rmdir(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True

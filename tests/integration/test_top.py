"""`memguardctl top` (issue 22), driven as a person would: in a real
terminal (tmux, 80x24), against the real daemon watching a real cgroup
that grows.  The growing domain appears, its time to OOM counts down, `s`
sorts by the next column, `/` filters, `q` quits; `--once` prints the same
frame without a terminal."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time

import pytest

from tests.e2e.daemon import Daemon
from tests.kernel import MIB, require, wait_until

pytestmark = pytest.mark.root


class Tmux:
    """One tmux server of our own (its own socket), one 80x24 window."""

    def __init__(self, name: str, command: str) -> None:
        if shutil.which("tmux") is None:
            pytest.fail("tmux is missing: `make test` installs Debian's tmux package")
        self.base = ["tmux", "-L", name, "-f", "/dev/null"]
        subprocess.run([*self.base, "new-session", "-d", "-x", "80", "-y", "24", command], check=True, timeout=10)

    def screen(self) -> str:
        r = subprocess.run([*self.base, "capture-pane", "-p"], capture_output=True, text=True, timeout=10)
        return r.stdout

    def keys(self, *keys: str) -> None:
        subprocess.run([*self.base, "send-keys", *keys], check=True, timeout=10)

    def alive(self) -> bool:
        return subprocess.run([*self.base, "has-session"], capture_output=True, timeout=10).returncode == 0

    def kill(self) -> None:
        subprocess.run([*self.base, "kill-server"], capture_output=True, timeout=10)


def _tto(screen: str, name: str) -> int | None:
    """The seconds of the TTO column on the row of the domain whose name
    (cut to the column's width in 80 columns) starts *name* (0m42s)."""
    for line in screen.splitlines():
        if line.startswith(name):
            m = re.search(r"\]\s+\d+\s+\S+\s+(\d+)m(\d+)s", line)
            return int(m.group(1)) * 60 + int(m.group(2)) if m else None
    return None


def test_top_in_a_terminal_follows_a_growing_cgroup(tmp_path, v1_cgroup, hog):
    require("root")
    d = Daemon(str(tmp_path), "--no-probes", config="sampling:\n  interval: 250ms\n  discovery_interval: 500ms\n")
    group = v1_cgroup(512 * MIB)
    name = f"cgroup:{group.path}"[:20]       # what an 80-column DOMAIN column shows of it
    tmux = Tmux(f"mgtest-top-{id(d):x}",
                f"{sys.executable} -m memguard.cli.main --socket {d.socket} top --interval 0.5")
    try:
        hog(group, "grow", "8", "250", "450")      # 32 MiB/s up to 450 MiB: about 14 s
        first = wait_until(lambda: _tto(tmux.screen(), name), timeout=20,
                           what="the growing cgroup with a time to OOM on the screen")
        later = wait_until(lambda: (t := _tto(tmux.screen(), name)) is not None and t < first and t, timeout=15,
                           what="its time to OOM to count down")
        assert later < first
        screen = tmux.screen()
        assert all(len(line) <= 80 for line in screen.splitlines())
        assert "sort: tto" in screen
        tmux.keys("s")
        wait_until(lambda: "sort: use" in tmux.screen(), timeout=5, what="s to sort by use")
        rows = [line for line in tmux.screen().splitlines() if line.startswith(("cgroup:", "host"))]
        assert rows[0].startswith(name), f"the fullest domain first: {rows}"
        tmux.keys("/", *"no-such", "Enter")
        wait_until(lambda: name not in tmux.screen() and "filter: no-such" in tmux.screen(), timeout=5,
                   what="the filter to hide the domain")
        tmux.keys("q")
        wait_until(lambda: not tmux.alive(), timeout=5, what="q to quit")
    finally:
        tmux.kill()
        assert d.stop() == 0, d.log()


def test_top_once_prints_one_frame(tmp_path):
    d = Daemon(str(tmp_path), "--no-probes")
    try:
        r = subprocess.run([sys.executable, "-m", "memguard.cli.main", "--socket", d.socket, "top", "--once"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert lines[0].startswith("memguardd ") and any(line.startswith("host ") for line in lines)
        assert all(len(line) <= 80 for line in lines)
        r = subprocess.run([sys.executable, "-m", "memguard.cli.main", "--socket", d.socket, "top"],
                           capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        assert r.returncode == 2 and "not a terminal" in r.stderr
    finally:
        assert d.stop() == 0, d.log()

"""`memguardctl watch` (issue 22): memguardd pushes warnings and incidents
as they happen, each to the users it concerns.  Two real memory cgroups,
each filled by a process of a different unprivileged user; root and both
users watch; a real OOM kill in one of them.  Each user hears of their own
cgroup only; root hears of everything."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.daemon import Daemon
from tests.kernel import MIB, public_copy, require, start_as, unprivileged_python, wait_until

pytestmark = pytest.mark.root

USERS = (65534, 65533)          # nobody, and a uid of no one's
RULES = """\
rules:
  - name: quarter-full
    when: usage_ratio > 0.25
    severity: warning
    match: {domain: "cgroup:*"}
"""
FILL = "import sys, time; b = bytearray({mib} << 20); b[::4096] = b'x' * len(b[::4096]); print('up', flush=True); time.sleep(120)"


def as_user(uid: int, argv: list[str]) -> list[str]:
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *argv]


class Watcher:
    """`memguardctl watch --json` in the background, its lines collected."""

    def __init__(self, argv: list[str], env: dict) -> None:
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                     start_new_session=True)
        self.events: list[dict] = []
        self.pending = b""

    def read(self) -> list[dict]:
        """Every line that has come, without blocking (raw reads: a buffered
        readline would hold back lines that came in the same chunk)."""
        fd = self.proc.stdout.fileno()
        while select.select([fd], [], [], 0)[0]:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            self.pending += chunk
        *lines, self.pending = self.pending.split(b"\n")
        self.events += [json.loads(line) for line in lines]
        return self.events

    def stop(self) -> str:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(10)
        return self.proc.stderr.read().decode()


def test_each_user_hears_of_their_own_cgroup_and_root_of_all(public_dir, v1_cgroup, hog_binary):
    require("root")
    python = unprivileged_python()
    if python is None:
        pytest.skip(f"no interpreter other users can run ({sys.executable} lies under a private directory)")
    package = public_copy(Path(__file__).resolve().parents[2] / "daemon" / "memguard", public_dir)
    env = {**os.environ, "PYTHONPATH": str(package.parent)}
    (public_dir / "rules.yaml").write_text(RULES)
    (public_dir / "rules.yaml").chmod(0o644)
    # Its socket where other users can reach it (tmp_path is root's alone).
    d = Daemon(str(public_dir),
               config=f"sampling:\n  interval: 250ms\nrules:\n  files: [{public_dir / 'rules.yaml'}]\n")
    os.chmod(os.path.dirname(d.socket), 0o755)
    groups = [v1_cgroup(128 * MIB), v1_cgroup(128 * MIB)]
    watch = [python, "-m", "memguard.cli.main", "--socket", d.socket, "watch", "--json"]
    root = Watcher(watch, env)
    users = {uid: Watcher(as_user(uid, watch), env) for uid in USERS}
    fills = []
    try:
        time.sleep(1)           # the watchers are connected
        for uid, group in zip(USERS, groups):
            fills.append(start_as(uid, group, [python, "-c", FILL.format(mib=64)]))
        names = [f"cgroup:{g.path}" for g in groups]

        def fired(w):
            return {e["domain"] for e in w.read() if e["type"] == "rule" and e["event"] == "warning"}
        wait_until(lambda: fired(root) >= set(names), timeout=30, what="root to hear both warnings")
        for (uid, w), name, other in zip(users.items(), names, reversed(names)):
            wait_until(lambda: name in fired(w), timeout=10, what=f"uid {uid} to hear of its cgroup")
            assert other not in fired(w), f"uid {uid} heard of another user's cgroup"
        (event,) = [e for e in root.events if e["type"] == "rule" and e["domain"] == names[0]]
        assert event["rule"] == "quarter-full" and event["usage_ratio"] > 0.25

        # A real OOM kill of the first user's, in a cgroup of its own (beside a
        # Python already holding half its limit, the kernel would reclaim its
        # text pages for long before it killed): that user and root hear of it.
        small = v1_cgroup(64 * MIB)
        fills.append(start_as(USERS[0], small, [str(public_copy(hog_binary, public_dir)), "anon", "200"]))

        # (a fresh daemon also reports the kills still in the kernel's log:
        # those are not this one)
        def incidents(w):
            return [e for e in w.read() if e["type"] == "incident" and e["domain"] == f"cgroup:{small.path}"]
        (seen_by_root,) = wait_until(lambda: incidents(root), timeout=30, what="root to hear of the kill")
        assert seen_by_root["kind"] == "oom_kill" and "hog" in seen_by_root["headline"]
        wait_until(lambda: incidents(users[USERS[0]]), timeout=30, what="the victim's user to hear of the kill")
        time.sleep(1)
        assert not incidents(users[USERS[1]]), "the other user heard of someone else's kill"
    finally:
        for f in fills:
            if f.poll() is None:
                os.killpg(f.pid, signal.SIGKILL)
            f.wait(10)
        seen = {uid: w.stop() for uid, w in users.items()}
        root.stop()
        d.stop()
    for uid, err in seen.items():
        assert f"what concerns uid {uid}" in err, err

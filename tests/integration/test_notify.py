"""Desktop notifications (issue 22): `memguardctl notify-agent` run as an
unprivileged user in a session of their own, with a real session bus
(dbus-daemon --session) and a notification server owning
org.freedesktop.Notifications (tests/helpers/notification_listener.py, on
jeepney), both that user's.  The user's process fills a real cgroup; a rule
warns; the notification reaches that user's bus from that user's agent:
nothing crosses from root into the session.  Another user's cgroup, also
warned, tells this user nothing.  With WSL's variables and a
powershell.exe double on PATH (it records its arguments), the same warning
goes out as a Windows toast."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest

import jeepney
from tests.e2e.daemon import Daemon
from tests.kernel import MIB, public_copy, require, start_as, unprivileged_python, wait_until

pytestmark = pytest.mark.root

USER, OTHER = 65534, 65533
RULES = "rules:\n  - name: quarter-full\n    when: usage_ratio > 0.25\n    severity: warning\n"
FILL = ("import time; b = bytearray(64 << 20); b[::4096] = b'x' * len(b[::4096]); "
        "print('up', flush=True); time.sleep(120)")
POWERSHELL = """#!/bin/sh
# powershell.exe as WSL interop would run it: records its arguments.
printf '%s\\n' "$@" >> "$(dirname "$0")/powershell.log"
"""


def lines(proc: subprocess.Popen, pending: list) -> list[str]:
    fd = proc.stdout.fileno()
    while select.select([fd], [], [], 0)[0]:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        pending.append(chunk)
    return b"".join(pending).decode().splitlines()


def test_a_warning_reaches_the_users_own_desktop_and_windows(public_dir, v1_cgroup):
    require("root")
    python = unprivileged_python()
    if python is None:
        pytest.skip("no interpreter other users can run")
    if not Path("/usr/bin/dbus-daemon").exists():
        pytest.fail("dbus-daemon is missing: `make test` installs Debian's dbus-daemon package")
    root = Path(__file__).resolve().parents[2]
    package = public_copy(root / "daemon" / "memguard", public_dir)
    public_copy(Path(jeepney.__file__).parent, public_dir)
    listener = public_copy(root / "tests" / "helpers" / "notification_listener.py", public_dir)
    home = public_dir / "home"          # the user's own: their bus socket, the toast double's log
    home.mkdir()
    (home / "powershell.exe").write_text(POWERSHELL)
    (home / "powershell.exe").chmod(0o755)
    os.chown(home, USER, USER)
    (public_dir / "rules.yaml").write_text(RULES)
    (public_dir / "rules.yaml").chmod(0o644)
    d = Daemon(str(public_dir), config=f"sampling:\n  interval: 250ms\nrules:\n  files: [{public_dir / 'rules.yaml'}]\n",
               probes="")
    os.chmod(os.path.dirname(d.socket), 0o755)
    bus = f"unix:path={home}/bus"
    env = {"PATH": f"{home}:/usr/bin:/bin", "PYTHONPATH": str(package.parent), "HOME": str(home),
           "DBUS_SESSION_BUS_ADDRESS": bus, "WSL_DISTRO_NAME": "Debian", "LANG": "C.UTF-8"}
    procs = []
    try:
        procs.append(start_as(USER, None, ["dbus-daemon", "--session", "--nofork", f"--address={bus}"], env=env))
        wait_until(lambda: (home / "bus").exists(), timeout=10, what="the user's session bus")
        server = start_as(USER, None, [python, str(listener)], env=env, stdout=subprocess.PIPE)
        procs.append(server)
        seen: list = []
        wait_until(lambda: "ready" in lines(server, seen), timeout=10, what="the notification server")
        agent = start_as(USER, None, [python, "-m", "memguard.cli.main", "--socket", d.socket, "notify-agent"],
                         env=env, stdout=subprocess.PIPE)
        procs.append(agent)
        time.sleep(1.5)         # following the daemon
        mine, theirs = v1_cgroup(128 * MIB), v1_cgroup(128 * MIB)
        procs.append(start_as(OTHER, theirs, [python, "-c", FILL]))
        procs.append(start_as(USER, mine, [python, "-c", FILL]))

        def notified():
            return [json.loads(x) for x in lines(server, seen) if x.startswith("{")]
        (note,) = wait_until(notified, timeout=30, what="a notification on the user's bus")
        assert note["app"] == "memguard" and note["uid"] == USER, note
        assert note["summary"].startswith(f"cgroup:{mine.path} ") and "quarter-full" in note["body"], note
        assert note["urgency"] == 1
        printed: list = []
        said = wait_until(lambda: [x for x in lines(agent, printed) if "quarter-full" in x], timeout=10,
                          what="the agent to say what it showed")
        assert said[0].endswith("[desktop, windows]"), said
        toast = wait_until(lambda: (home / "powershell.log").exists() and (home / "powershell.log").read_text(),
                           timeout=15, what="the Windows toast through the powershell.exe double")
        assert "-NoProfile" in toast and f"cgroup:{mine.path}" in toast and "ToastNotificationManager" in toast
        time.sleep(2)
        assert len(notified()) == 1, f"another user's cgroup told this user: {notified()}"
    finally:
        for p in reversed(procs):
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            p.wait(10)
        assert d.stop() == 0, d.log()

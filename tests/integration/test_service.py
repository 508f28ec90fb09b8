"""memguardd as systemd runs it (packaging/systemd/memguard.service): the
real daemon started with what systemd hands a Type=notify service: a
notification socket and a watchdog, the /metrics socket that memguard.socket
opened (socket activation), the group socket mode and the memory lock the
unit asks for."""

from __future__ import annotations

import os
import socket
import stat
import sys
import urllib.request

import pytest

from tests.e2e.daemon import Daemon
from tests.kernel import require

pytestmark = pytest.mark.root


def test_the_daemon_as_systemd_starts_it(tmp_path):
    require("root")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(10)
    metrics = socket.socket()
    metrics.bind(("127.0.0.1", 0))
    metrics.listen()
    port = metrics.getsockname()[1]
    # What systemd does before exec: the passed socket as fd 3, LISTEN_PID
    # the daemon's own pid (the wrapper's, which exec keeps).
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "2000000"}
    wrap = (sys.executable, "-c", "import os, sys; os.dup2(int(sys.argv[1]), 3); "
            "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1', LISTEN_FDNAMES='metrics'); "
            "os.execv(sys.argv[2], sys.argv[2:])", str(metrics.fileno()))
    d = Daemon(str(tmp_path), "--no-probes", "--socket-mode", "0660", "--lock-memory",
               config="sampling:\n  interval: 250ms\n", wrap=wrap, env=env, pass_fds=(metrics.fileno(),))
    try:
        metrics.close()         # the daemon holds its own copy
        messages = []

        def heard(what):
            while not any(what in m for m in messages):
                messages.append(notify.recv(4096).decode())
            return True
        assert heard("READY=1")
        assert heard("STATUS=watching ")
        assert heard("WATCHDOG=1")
        assert d.port == port, "/metrics is served on the socket systemd passed"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            assert b"memguard_build_info" in r.read()
        assert stat.S_IMODE(os.stat(d.socket).st_mode) == 0o660
        with open(f"/proc/{d.proc.pid}/status") as f:
            locked = next(int(line.split()[1]) for line in f if line.startswith("VmLck:"))
        assert locked > 0, "--lock-memory: the daemon's pages are locked"
        protection = d.status()["protection"]
        with open(f"/proc/{d.proc.pid}/oom_score_adj") as f:
            assert protection == {"oom_score_adj": int(f.read()), "memory_locked": True}
        # -1000 needs CAP_SYS_RESOURCE (this host's root lacks it): otherwise it says so
        assert protection["oom_score_adj"] == -1000 or "not protected from the OOM killer" in d.log()
    finally:
        assert d.stop() == 0, d.log()
    assert heard("STOPPING=1")

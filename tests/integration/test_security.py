"""What memguardd, as root, refuses to trust (issue 24): a config or rule
file another user could change would let that user choose the hooks root
runs and the processes it kills."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from memguard.api.server import MAX_CONNECTIONS_PER_USER
from tests.e2e.daemon import Daemon
from tests.kernel import NOBODY, require

pytestmark = pytest.mark.root

RULES = "rules:\n  - name: half\n    when: usage_ratio > 0.5\n    severity: warning\n"


def once(config) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "memguard.daemon", "--once", "--no-probes", "--config", str(config)],
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def files(tmp_path):
    require("root")
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "memguard.yaml").write_text("rules:\n  files: [rules.yaml]\n")
    for f in ("rules.yaml", "memguard.yaml"):
        os.chmod(tmp_path / f, 0o644)
    assert once(tmp_path / "memguard.yaml").returncode == 0
    return tmp_path


@pytest.mark.parametrize("name", ["memguard.yaml", "rules.yaml"])
def test_a_file_another_user_owns_is_refused(files, name):
    os.chown(files / name, NOBODY, NOBODY)
    r = once(files / "memguard.yaml")
    assert r.returncode == 2, r.stdout
    assert f"{files / name} is owned by uid {NOBODY}, not root" in r.stderr, r.stderr


@pytest.mark.parametrize("name, mode", [("memguard.yaml", 0o664), ("rules.yaml", 0o646)])
def test_a_file_others_may_write_is_refused(files, name, mode):
    os.chmod(files / name, mode)
    r = once(files / "memguard.yaml")
    assert r.returncode == 2 and f"{files / name} is writable by its group or others (mode {mode:04o})" in r.stderr


def test_a_directory_others_may_write_is_refused_unless_sticky(files):
    os.chmod(files, 0o777)
    r = once(files / "memguard.yaml")
    assert r.returncode == 2 and "writable by its group or others (mode 0777)" in r.stderr, r.stderr
    os.chmod(files, 0o1777)             # as /tmp: others cannot replace a file that is root's
    assert once(files / "memguard.yaml").returncode == 0
    os.chmod(files, 0o700)


def test_where_incidents_are_private_a_user_reads_only_their_own(tmp_path, public_dir, v1_cgroup, hog, hog_binary):
    """Root's kill and nobody's kill, both real: nobody lists and reads only
    their own; root reads both (incidents.private: yes; "auto" does the same
    where /proc is mounted with hidepid)."""
    import json

    from tests.e2e.daemon import Daemon
    from tests.kernel import MIB, public_copy, start_as, unprivileged_python, wait_until
    python = unprivileged_python()
    if python is None:
        pytest.skip("no interpreter other users can run")
    package = public_copy(Path(__file__).resolve().parents[2] / "daemon" / "memguard", public_dir)
    d = Daemon(str(public_dir), config="incidents:\n  private: yes\n  settle: 500ms\n")
    os.chmod(os.path.dirname(d.socket), 0o755)
    try:
        roots_group, nobodys_group = v1_cgroup(32 * MIB), v1_cgroup(32 * MIB)
        hog(roots_group, "anon", "64")
        theirs = start_as(NOBODY, nobodys_group, [str(public_copy(hog_binary, public_dir)), "anon", "64"])
        theirs.wait(30)

        def listing(*user):
            r = subprocess.run([*user, python, "-m", "memguard.cli.main", "--socket", d.socket, "--json",
                                "incidents"], capture_output=True, text=True, timeout=30,
                               env={**os.environ, "PYTHONPATH": str(package.parent)})
            assert r.returncode == 0, r.stderr
            return json.loads(r.stdout)
        as_nobody = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
        ours = {f"cgroup:{roots_group.path}", f"cgroup:{nobodys_group.path}"}
        everything = wait_until(lambda: (x := listing()) and ours <= {i["fields"]["domain"] for i in x["incidents"]}
                                and x, timeout=30, what="both kills in root's listing")
        mine = listing(*as_nobody)
        assert {i["fields"]["domain"] for i in mine["incidents"]} == {f"cgroup:{nobodys_group.path}"}
        assert mine["hidden"] == len(everything["incidents"]) - 1
        (roots,) = [i["id"] for i in everything["incidents"] if i["fields"]["domain"] == f"cgroup:{roots_group.path}"]
        r = subprocess.run([*as_nobody, python, "-m", "memguard.cli.main", "--socket", d.socket, "incident", "show",
                            roots], capture_output=True, text=True, timeout=30,
                           env={**os.environ, "PYTHONPATH": str(package.parent)})
        assert r.returncode == 5 and "about another user's processes" in r.stderr, r.stderr
    finally:
        assert d.stop() == 0, d.log()


HOARD = """\
import json, socket, sys, time
conns = []
for _ in range(int(sys.argv[2])):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sys.argv[1])
    conns.append(s)
time.sleep(1.0)
refused = held = 0
for s in conns:
    s.setblocking(False)
    try:
        data = s.recv(4096)
    except BlockingIOError:
        held += 1                 # open, waiting for our request
        continue
    refused += b"holds" in data
print(json.dumps({"refused": refused, "held": held}))
"""


def test_one_user_cannot_hold_the_daemons_connections(public_dir):
    """Any local user may connect; none may take every file descriptor the
    daemon has (its sources would fail to open /proc): past
    MAX_CONNECTIONS_PER_USER, a user's connections are refused at once,
    while root is still answered."""
    require("root")
    d = Daemon(str(public_dir), "--no-probes")
    os.chmod(os.path.dirname(d.socket), 0o755)
    try:
        hoarder = subprocess.Popen(["/usr/bin/python3", "-c", HOARD, d.socket, str(MAX_CONNECTIONS_PER_USER + 50)],
                                   user=NOBODY, group=NOBODY, extra_groups=[], stdout=subprocess.PIPE, text=True)
        try:
            time.sleep(0.5)
            assert d.status()["healthy"], "root is answered while nobody holds its share"
            out, _ = hoarder.communicate(timeout=30)
        finally:
            if hoarder.poll() is None:
                hoarder.kill()
                hoarder.wait()
        assert json.loads(out) == {"refused": 50, "held": MAX_CONNECTIONS_PER_USER}
        assert d.status()["healthy"]
    finally:
        assert d.stop() == 0, d.log()

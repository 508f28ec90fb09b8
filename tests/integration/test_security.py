"""What memguardd, as root, refuses to trust (issue 24): a config or rule
file another user could change would let that user choose the hooks root
runs and the processes it kills."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

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

"""The service as it is installed: `make install` into a staging DESTDIR,
the units checked by systemd's own systemd-analyze (verify, and the
security exposure the issue bounds at 3.5), and the daemon run with exactly
the capabilities the unit leaves it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.daemon import Daemon
from tests.kernel import require

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "packaging/systemd/memguard.service"
PREFIX = "/usr/local"


def _analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.fail("systemd-analyze is missing: `make test` installs Debian's systemd package")
    return tool


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    """`make install DESTDIR=...`, as a packager runs it."""
    require("root")
    dest = tmp_path_factory.mktemp("destdir")
    r = subprocess.run(["make", "-C", str(REPO), "install", f"DESTDIR={dest}", f"PREFIX={PREFIX}"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    return dest


def test_make_install_stages_a_tree_that_runs_where_it_will_live(staged, tmp_path):
    venv = staged / "usr/local/lib/memguard/venv"
    for path in ("usr/local/bin/memguardd", "usr/local/bin/memguardctl", "usr/local/lib/memguard/probe-setup",
                 "usr/local/share/memguard/rules/default.yaml", "usr/local/share/memguard/rules/compile.yaml",
                 "usr/local/share/doc/memguard/README.md", "etc/memguard/memguard.yaml", "etc/memguard/rules.d",
                 "lib/systemd/system/memguard.service", "lib/systemd/system/memguard.socket",
                 "usr/lib/sysusers.d/memguard.conf", "etc/xdg/autostart/memguard-notify-agent.desktop",
                 "usr/local/share/bash-completion/completions/memguardctl",
                 "usr/local/share/zsh/site-functions/_memguardctl", "usr/local/share/man/man1/memguardctl.1",
                 "usr/local/share/man/man8/memguardd.8"):
        assert os.path.lexists(staged / path), path
    assert os.readlink(staged / "usr/local/bin/memguardd") == f"{PREFIX}/lib/memguard/venv/bin/memguardd"
    staged_name = str(staged).encode()
    assert not [p.name for p in (venv / "bin").iterdir() if p.is_file() and staged_name in p.read_bytes()], \
        "no script names the staging directory"
    # The installed package, not the checkout: the eBPF program is in it.
    probe = subprocess.run([str(venv / "bin/python3"), "-I", "-c",
                            "from memguard.probes.bpf import PROBES_DIR; print(PROBES_DIR)"],
                           capture_output=True, text=True, timeout=60, cwd="/")
    assert probe.returncode == 0, probe.stderr
    ebpf = Path(probe.stdout.strip())
    assert str(ebpf).startswith(str(venv)) and (ebpf / "oomkill.bpf.c").is_file() and (ebpf / "oomkill.h").is_file()
    # The installed config loads the installed rules (paths moved to the stage).
    config = (staged / "etc/memguard/memguard.yaml").read_text().replace(PREFIX, f"{staged}{PREFIX}")
    (tmp_path / "memguard.yaml").write_text(config)
    (tmp_path / "rules.d").mkdir()
    once = subprocess.run([str(venv / "bin/python3"), "-I", "-m", "memguard.daemon", "--once", "--no-probes",
                           "--config", str(tmp_path / "memguard.yaml")],
                          capture_output=True, text=True, timeout=60, cwd="/")
    assert once.returncode == 0, once.stderr
    rules = json.loads(once.stdout)["rules"]
    assert rules["error"] is None and rules["files"] == [f"{staged}{PREFIX}/share/memguard/rules/default.yaml"]
    assert rules["count"] > 0


def test_the_man_pages_and_completion_cover_every_command(staged):
    man = subprocess.run(["man", "-l", str(staged / "usr/local/share/man/man1/memguardctl.1")], capture_output=True,
                         text=True, timeout=60, env={**os.environ, "MANWIDTH": "100", "MAN_KEEP_FORMATTING": "0"})
    assert man.returncode == 0, man.stderr
    from memguard.cli.main import parser
    commands = parser()._subparsers._group_actions[0].choices
    for command in commands:
        assert command in man.stdout, f"memguardctl(1) lacks {command}"
    daemon_man = subprocess.run(["man", "-l", str(staged / "usr/local/share/man/man8/memguardd.8")],
                                capture_output=True, text=True, timeout=60)
    assert "--lock-memory" in daemon_man.stdout.replace("\u2010", "-")
    # bash completes a command name and an option, from the completion installed
    script = staged / "usr/local/share/bash-completion/completions/memguardctl"
    words = subprocess.run(["bash", "-c", f"source {script}; COMP_WORDS=(memguardctl to); COMP_CWORD=1; "
                            "_shtab_memguardctl; printf '%s\\n' \"${COMPREPLY[@]}\""],
                           capture_output=True, text=True, timeout=30)
    assert words.stdout.split() == ["top"], words.stdout + words.stderr


def test_make_uninstall_leaves_only_the_operators_config(staged, tmp_path):
    dest = tmp_path / "dest"
    shutil.copytree(staged, dest, symlinks=True)
    r = subprocess.run(["make", "-C", str(REPO), "uninstall", f"DESTDIR={dest}", f"PREFIX={PREFIX}"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    left = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if not p.is_dir())
    assert left == ["etc/memguard/memguard.yaml"], left


def test_systemd_analyze_verifies_the_installed_units(staged, tmp_path):
    # verify checks that each command exists: point them at the stage (the
    # link in bin/ names where the venv will live, not the stage).
    for name in ("memguard.service", "memguard.socket"):
        text = (staged / "lib/systemd/system" / name).read_text()
        text = text.replace(f"{PREFIX}/bin/memguardd", f"{PREFIX}/lib/memguard/venv/bin/memguardd")
        (tmp_path / name).write_text(text.replace(f"{PREFIX}/", f"{staged}{PREFIX}/"))
    r = subprocess.run([_analyze(), "verify", str(tmp_path / "memguard.service"), str(tmp_path / "memguard.socket")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr


def test_the_units_exposure_is_at_most_3_5(tmp_path):
    shutil.copy(UNIT, tmp_path / "memguard.service")
    r = subprocess.run([_analyze(), "security", "--offline=yes", str(tmp_path / "memguard.service")],
                       capture_output=True, text=True, timeout=120)
    m = re.search(r"Overall exposure level for memguard\.service: ([0-9.]+)", r.stdout)
    assert m, r.stdout + r.stderr
    print(f"systemd-analyze security --offline=yes: exposure {m.group(1)}")
    assert float(m.group(1)) <= 3.5, r.stdout


def unit_capabilities() -> list[str]:
    (line,) = [x for x in UNIT.read_text().splitlines() if x.startswith("CapabilityBoundingSet=")]
    return [c.removeprefix("CAP_").lower() for c in line.split("=", 1)[1].split()]


def test_the_capabilities_the_unit_leaves_are_enough(tmp_path):
    """The daemon under exactly the unit's bounding set and no new
    privileges: every probe runs (eBPF included, without CAP_SYS_ADMIN), and
    it reads processes of other users."""
    require("root")
    require("bcc")
    caps = unit_capabilities()
    assert "sys_admin" not in caps and caps
    wrap = ("setpriv", "--bounding-set", "-all," + ",".join(f"+{c}" for c in caps), "--inh-caps", "-all",
            "--no-new-privs")
    d = Daemon(str(tmp_path), config="sampling:\n  interval: 250ms\n", wrap=wrap)
    try:
        d.wait_for_probes({"bpf", "kmsg", "procevents", "tracefs", "memcg"}, timeout=60)
        with open(f"/proc/{d.proc.pid}/status") as f:
            bounding = next(int(x.split()[1], 16) for x in f if x.startswith("CapBnd:"))
        assert not bounding & (1 << 21), "CAP_SYS_ADMIN (21) is not in the daemon's bounding set"
    finally:
        assert d.stop() == 0, d.log()

"""packaging/probe-setup on the real host, inside private mount namespaces.

Each test runs the script in ``unshare -m --propagation private`` after
hiding this machine's own set-up there: tracefs unmounted, an empty tmpfs
over /lib/modules (when /lib/modules does not exist yet, an overlay over its
parent first makes it, so nothing is created on the real disk). A host that
is already set up therefore cannot hide a step the script forgot, and the
host outside must look the same before and after.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.kernel import as_nobody, ci_enforced, public_copy, require

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "packaging" / "probe-setup"
TRACEFS = "/sys/kernel/tracing"

# Run first in every namespace: hide the host's tracefs and /lib/modules.
HIDE_HOST_SETUP = r"""
set -eu
mount -t tmpfs mg-scratch "$SCRATCH"
while awk -v p=/sys/kernel/tracing '$2 == p { f = 1 } END { exit !f }' /proc/self/mounts; do
    umount /sys/kernel/tracing
done
if [ ! -d /lib/modules ]; then
    lib=$(realpath /lib)  # /usr/lib on a merged-/usr Debian
    mkdir "$SCRATCH/upper" "$SCRATCH/work"
    mount -t overlay mg-lib -o "lowerdir=$lib,upperdir=$SCRATCH/upper,workdir=$SCRATCH/work" "$lib"
    mkdir /lib/modules
fi
mount -t tmpfs -o mode=755 mg-modules /lib/modules
"""

# state: one "key=value" per line, all a second run must leave as it was.
STATE = r"""
state() {
    K=$(uname -r)
    echo "tracefs_mounts=$(awk -v p=/sys/kernel/tracing '$2 == p && $3 == "tracefs"' /proc/self/mounts | wc -l)"
    echo "tracefs_mountinfo=$(awk -v p=/sys/kernel/tracing '$5 == p { print $1 }' /proc/self/mountinfo | tr '\n' ' ')"
    for e in build source; do
        echo "$e=$(readlink "/lib/modules/$K/$e" || echo MISSING)"
        echo "${e}_inode=$(stat -c %i "/lib/modules/$K/$e" 2>/dev/null || echo MISSING)"
    done
    echo "build_makefile=$(test -f "/lib/modules/$K/build/Makefile" && echo yes || echo no)"
    echo "source_kconfig=$(test -f "/lib/modules/$K/source/include/linux/kconfig.h" && echo yes || echo no)"
    echo "modules_listing=$(ls -A "/lib/modules/$K" 2>/dev/null | tr '\n' ' ')"
}
section() { echo "== $1"; }
run_script() {
    section "$1"
    set +e
    "$SCRIPT" 2>&1
    echo "rc=$?"
    set -e
}
"""


def need(ok: bool, reason: str) -> None:
    """Skip without ``ok`` (fail under CI, where `make test` installs everything)."""
    if ok:
        return
    if ci_enforced():
        pytest.fail(f"CI must have this: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def namespace(tmp_path):
    """``namespace(body)`` -> {section: lines}: runs the shell ``body`` in a
    private mount namespace after HIDE_HOST_SETUP, with STATE's functions;
    asserts that the host's mounts and /lib/modules are unchanged afterwards."""
    require("root")
    need(shutil.which("unshare") is not None, "unshare (util-linux) is not installed")
    need(SCRIPT.is_file() and os.access(SCRIPT, os.X_OK), f"{SCRIPT} is missing or not executable")
    scratch = tmp_path / "scratch"
    scratch.mkdir()

    def run(body: str) -> dict[str, list[str]]:
        before = host_view()
        done = subprocess.run(
            ["unshare", "-m", "--propagation", "private", "sh", "-c",
             HIDE_HOST_SETUP + STATE + body],
            env={**os.environ, "SCRIPT": str(SCRIPT), "SCRATCH": str(scratch)},
            capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"namespace shell failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        assert host_view() == before, "something leaked out of the mount namespace"
        return sections(done.stdout)

    return run


def host_view() -> tuple[list[str], dict[str, str]]:
    """What the namespace must not change: the host's mounts under the paths
    the tests touch, and /lib/modules' entries with their link targets."""
    watched = (TRACEFS, "/lib/modules", "/usr/src", "/usr/lib", "/tmp")
    mounts = [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
              if any(line.split()[4].startswith(w) for w in watched)]
    modules: dict[str, str] = {}
    if Path("/lib/modules").is_dir():
        for entry in sorted(Path("/lib/modules").rglob("*")):
            modules[str(entry)] = os.readlink(entry) if entry.is_symlink() else "dir/file"
    return mounts, modules


def sections(stdout: str) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    current = None
    for line in stdout.splitlines():
        if line.startswith("== "):
            current = line[3:]
            result[current] = []
        elif current is not None:
            result[current].append(line)
    return result


def state(lines: list[str]) -> dict[str, str]:
    return dict(line.split("=", 1) for line in lines if "=" in line)


def script_run(lines: list[str]) -> tuple[int, str]:
    """(exit status, output) of one run_script section."""
    assert lines and lines[-1].startswith("rc="), lines
    return int(lines[-1][3:]), "\n".join(lines[:-1])


def debian_headers_installed() -> bool:
    return any(Path("/usr/src").glob("linux-headers-*-common"))


def test_sets_up_a_bare_host_then_changes_nothing(namespace):
    need(debian_headers_installed(),
         "no /usr/src/linux-headers-*-common: apt-get install linux-headers-amd64")
    out = namespace("""
        section before; state
        run_script run1
        section after1; state
        run_script run2
        section after2; state
    """)
    before = state(out["before"])
    assert before["tracefs_mounts"] == "0" and before["build"] == "MISSING", \
        f"the namespace did not hide the host's set-up: {before}"

    rc, text = script_run(out["run1"])
    assert rc == 0, text
    assert f"changed: mounted tracefs at {TRACEFS}" in text
    assert "changed: linked" in text and "/build -> /usr/src/linux-headers-" in text, text
    after = state(out["after1"])
    assert after["tracefs_mounts"] == "1"
    assert after["build"].startswith("/usr/src/linux-headers-") and not after["build"].endswith("-common")
    assert after["source"] == after["build"].rsplit("-", 1)[0] + "-common", after
    assert after["build_makefile"] == "yes" and after["source_kconfig"] == "yes", after

    rc, text = script_run(out["run2"])
    assert rc == 0, text
    assert "changed:" not in text, text
    assert "ok: tracefs is mounted" in text
    assert state(out["after2"]) == after


def test_keeps_an_existing_build_entry(namespace):
    """An operator's own build link stays; only the missing source is added."""
    need(debian_headers_installed(),
         "no /usr/src/linux-headers-*-common: apt-get install linux-headers-amd64")
    out = namespace("""
        K=$(uname -r)
        mkdir -p "/lib/modules/$K" "$SCRATCH/my-headers"
        ln -s "$SCRATCH/my-headers" "/lib/modules/$K/build"
        section before; state
        run_script run
        section after; state
    """)
    before, after = state(out["before"]), state(out["after"])
    rc, text = script_run(out["run"])
    assert rc == 0, text
    assert after["build"] == before["build"] and after["build_inode"] == before["build_inode"]
    assert after["build"].endswith("/my-headers")
    assert after["source"].startswith("/usr/src/linux-headers-") and after["source"].endswith("-common")
    assert after["source_kconfig"] == "yes"


def test_refuses_a_dangling_entry(namespace):
    out = namespace("""
        K=$(uname -r)
        mkdir -p "/lib/modules/$K"
        ln -s /nonexistent/headers "/lib/modules/$K/build"
        run_script run
        section after; state
    """)
    rc, text = script_run(out["run"])
    assert rc == 1, text
    assert "does not exist; not replacing it" in text
    assert state(out["after"])["build"] == "/nonexistent/headers"


def test_refuses_without_headers(namespace):
    out = namespace("""
        mount -t tmpfs mg-src /usr/src
        run_script run
        section after; state
    """)
    rc, text = script_run(out["run"])
    assert rc == 1, text
    assert "probe-setup: error: no kernel headers" in text
    assert "apt-get install linux-headers-" in text
    after = state(out["after"])
    assert after["build"] == "MISSING" and after["source"] == "MISSING", after


def test_refuses_without_root(public_dir):
    need(shutil.which("setpriv") is not None, "setpriv (util-linux) is not installed")
    require("root")
    # A copy: uid 65534 may not reach the checkout (a clone under /root, 0700).
    script = public_copy(SCRIPT, public_dir)
    done = subprocess.run(as_nobody([str(script)]), capture_output=True, text=True, timeout=30,
                          cwd=public_dir)
    assert done.returncode == 2, done
    assert "probe-setup: error: run as root" in done.stderr, done

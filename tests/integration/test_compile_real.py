"""Parallel builds are paused, not killed (issue 19, test 1): a real
`make -j4` in a real memory cgroup whose peak exceeds the limit, once
without memguard (the kernel kills a compiler and the build fails) and
once with memguardd running rules/compile.yaml (every compiler finishes,
some paused and resumed).  The test prints how long the build took both
ways."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from tests.e2e.daemon import Daemon
from tests.kernel import MIB, Hog, require

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parent.parent.parent
COMPILE_RULES = REPO / "rules" / "compile.yaml"

# Four compiler-like processes (the hog, named cc1plus) from one make -j4,
# each growing 2 MiB every 400 ms to 176 MiB (36 s), holding it 1 s: 704 MiB
# at once, 512 MiB allowed.
UNITS = ("u1", "u2", "u3", "u4")
MAKEFILE = ("all: " + " ".join(UNITS) + "\n.PHONY: all " + " ".join(UNITS) + "\n"
            + " ".join(UNITS) + ":\n\t./cc1plus compile 2 400 176 1000 > $@.log\n")


def config() -> str:
    return (f"sampling:\n  processes_interval: 1s\n"
            f"incidents:\n  settle: 1s\n"
            f"rules:\n  files: ['{COMPILE_RULES}']\n")


def build(group, where: Path, timeout: float) -> tuple[int, float, str]:
    """`MEMGUARD_JOB=build make -j4` in *where*, inside *group*: (exit
    status, seconds, make's stderr)."""
    began = time.monotonic()
    make = Hog(Path("/usr/bin/env"), ["MEMGUARD_JOB=build", "make", "-C", str(where), "-j4"], group)
    try:
        status = make.wait_exit(timeout)
        return status, time.monotonic() - began, make.stderr()
    finally:
        make.close()


@pytest.fixture
def tree(tmp_path, hog_binary):
    require("root")
    require("v1_memory")
    require("proc_connector")
    if shutil.which("make") is None:
        pytest.skip("no make on PATH")
    where = tmp_path / "build"
    where.mkdir()
    shutil.copy(hog_binary, where / "cc1plus")
    (where / "Makefile").write_text(MAKEFILE)
    return where


def audit(daemon) -> list[dict]:
    path = Path(daemon.state_dir) / "actions.log"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def test_a_make_j4_that_the_kernel_breaks_finishes_with_its_compilers_paused(tree, v1_cgroup, capsys):
    alone = v1_cgroup(512 * MIB)
    status_alone, took_alone, stderr = build(alone, tree, timeout=120)
    assert status_alone != 0 and "Error 137" in stderr, (status_alone, stderr)
    assert alone.oom_control()["oom_kill"] >= 1, "the kernel killed a compiler"
    for unit in UNITS:
        (tree / f"{unit}.log").unlink()

    daemon = Daemon(str(tree.parent), config=config(), probes="  bpf: false\n")
    try:
        daemon.wait_for_probes({"procevents"})
        guarded = v1_cgroup(512 * MIB)
        daemon.wait_for_tick(lambda s: any(d["name"] == f"cgroup:{guarded.path}" for d in s["domains"]))
        status, took_guarded, stderr = build(guarded, tree, timeout=400)
        actions = audit(daemon)
    finally:
        assert daemon.stop() == 0, daemon.log()
    with capsys.disabled():
        print(f"\nmake -j4, four compilers of 176 MiB in 512 MiB: without memguard failed (exit {status_alone}) "
              f"after {took_alone:.1f} s; with rules/compile.yaml finished after {took_guarded:.1f} s, "
              f"{sum(a['kind'] == 'freeze' for a in actions)} freeze(s), "
              f"{sum(a['kind'] == 'thaw' for a in actions)} thaw(s)")
    assert status == 0, f"{stderr}\n{daemon.log()}"
    assert all((tree / f"{u}.log").read_text().split("\n")[-2].startswith("done ") for u in UNITS)
    frozen = [a for a in actions if a["kind"] == "freeze" and a["result"] == "sent"]
    thawed = [a for a in actions if a["kind"] == "thaw" and a["result"] == "sent"]
    assert frozen and {a["targets"][0]["pid"] for a in thawed} == {a["targets"][0]["pid"] for a in frozen}
    assert guarded.oom_control()["oom_kill"] == 0, "the kernel killed nothing"
    assert not any(a["kind"] == "kill" for a in actions), "nor did memguard"


"""Parallel builds are paused, not killed (issue 19, tests 1 and 2): a
`make -j` in a real memory cgroup whose peak exceeds the limit, once
without memguard (the kernel kills a compiler and the build fails) and
once with memguardd running rules/compile.yaml (every compiler finishes,
some paused and resumed); first four compiler-like processes, then g++ on
real C++.  Each test prints how long the build took both ways."""

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
    # freezing every second: compilers here take 100+ MiB a second, and the
    # default 5 s between two freezes (and after a thaw) lets a compiler that
    # make starts as another is thawed climb too far before it is paused
    return (f"sampling:\n  processes_interval: 1s\n"
            f"incidents:\n  settle: 1s\n"
            f"actions:\n  freeze_every: 1s\n  thaw_every: 1s\n"
            f"rules:\n  files: ['{COMPILE_RULES}']\n")


def run_build(group, argv: list[str], timeout: float, stuck: float | None = None) -> tuple[int | None, float, str]:
    """`MEMGUARD_JOB=build ARGV...` inside *group*: (exit status, seconds,
    its stderr).  With *stuck*: a build still running then is ended (by the
    harness, pid by pid) and its status is None."""
    began = time.monotonic()
    job = Hog(Path("/usr/bin/env"), ["MEMGUARD_JOB=build", *argv], group)
    try:
        try:
            status = job.wait_exit(stuck if stuck is not None else timeout)
        except AssertionError:
            if stuck is None:
                raise
            status = None
        return status, time.monotonic() - began, job.stderr()
    finally:
        job.close()


def guarded_build(tmp_path, v1_cgroup, limit: int, argv: list[str]) -> tuple[int, float, str, list[dict]]:
    """The build again in a fresh cgroup of *limit*, memguardd running
    rules/compile.yaml: (exit status, seconds, stderr, the actions audited)."""
    daemon = Daemon(str(tmp_path), config=config(), probes="  bpf: false\n")
    try:
        daemon.wait_for_probes({"procevents"})
        group = v1_cgroup(limit)
        daemon.wait_for_tick(lambda s: any(d["name"] == f"cgroup:{group.path}" for d in s["domains"]))
        status, took, stderr = run_build(group, argv, timeout=600)
        actions = audit(daemon)
        killed = group.oom_control()["oom_kill"]
    finally:
        assert daemon.stop() == 0, daemon.log()
    assert status == 0, f"{stderr}\n{daemon.log()}"
    assert killed == 0, "the kernel killed nothing"
    assert not any(a["kind"] == "kill" for a in actions), "nor did memguard"
    frozen = {a["targets"][0]["pid"] for a in actions if a["kind"] == "freeze" and a["result"] == "sent"}
    thawed = {a["targets"][0]["pid"] for a in actions if a["kind"] == "thaw" and a["result"] == "sent"}
    assert frozen and thawed == frozen, "some were paused, and each was resumed"
    return status, took, stderr, actions


def summary(actions: list[dict]) -> str:
    done = [a for a in actions if a["result"] == "sent"]
    return (f"{sum(a['kind'] == 'freeze' for a in done)} process(es) frozen, "
            f"{sum(a['kind'] == 'thaw' for a in done)} thawed")


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
    argv = ["make", "-C", str(tree), "-j4"]
    alone = v1_cgroup(512 * MIB)
    status_alone, took_alone, stderr = run_build(alone, argv, timeout=120)
    assert status_alone != 0 and "Error 137" in stderr, (status_alone, stderr)
    assert alone.oom_control()["oom_kill"] >= 1, "the kernel killed a compiler"
    for unit in UNITS:
        (tree / f"{unit}.log").unlink()
    _, took, _, actions = guarded_build(tree.parent, v1_cgroup, 512 * MIB, argv)
    with capsys.disabled():
        print(f"\nmake -j4, four compilers of 176 MiB in 512 MiB: without memguard failed (exit {status_alone}) "
              f"after {took_alone:.1f} s; with rules/compile.yaml finished after {took:.1f} s, {summary(actions)}")
    assert all((tree / f"{u}.log").read_text().split("\n")[-2].startswith("done ") for u in UNITS)


def test_a_real_make_j2_that_the_kernel_breaks_succeeds_with_memguard(tmp_path, v1_cgroup, capsys):
    """bench/workloads/compile.sh: g++ -O2 on four generated template-heavy
    C++ units (~410 MiB of cc1plus each), make -j2, in 704 MiB: without
    memguard the build fails."""
    LIMIT = 704 * MIB
    require("root")
    require("v1_memory")
    require("proc_connector")
    if shutil.which("g++") is None:
        pytest.fail("g++ is installed by `make test` (APT_TEST): run that")
    argv = ["sh", str(REPO / "bench" / "workloads" / "compile.sh"), "2", "16"]
    alone = v1_cgroup(LIMIT)
    # At the limit the kernel either kills a cc1plus (~12 s in) or, as often,
    # reclaims the compilers' own code pages over and over (they fault them
    # back at once) and the build makes no progress: either way it fails.
    status_alone, took_alone, stderr = run_build(alone, argv, timeout=300, stuck=120)
    if status_alone is None:
        how = f"thrashed at the limit, no progress after {took_alone:.0f} s"
        stat = dict(line.split() for line in alone.fs_path.joinpath("memory.stat").read_text().splitlines())
        assert alone.usage() > 0.95 * LIMIT, f"stuck below its limit: {stat}"
    else:
        how = f"failed (exit {status_alone}) after {took_alone:.1f} s"
        assert status_alone != 0 and "Killed signal terminated program cc1plus" in stderr, (status_alone, stderr)
        assert alone.oom_control()["oom_kill"] >= 1
    alone.close()     # what make left running (a compiler the harness did not start itself) ends with it
    _, took, _, actions = guarded_build(tmp_path, v1_cgroup, LIMIT, argv)
    with capsys.disabled():
        print(f"\ncompile.sh 2 16 (g++ -O2, make -j2, four units) in {LIMIT >> 20} MiB: without memguard {how}; "
              f"with rules/compile.yaml finished after {took:.1f} s, {summary(actions)}")

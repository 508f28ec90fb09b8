"""Every command the README and docs/ show works as written (issue 16).

The commands are collected from the Markdown itself: lines of ``sh`` and
``console`` blocks, and inline code that starts with one of our programs.
The daemon they talk to is started by ``make run``, exactly as the README
says, as root (system socket, port 9717); one real OOM kill in a test cgroup
gives the incident commands an incident.  A command that is not run here is
listed in NOT_RUN with the reason, and a command found in the docs that is
in neither list fails the test that guards the lists, so a new example
cannot go untested.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.kernel import MIB, Hog, V1MemoryCgroup, require, wait_until

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parent.parent.parent
PROGRAMS = ("memguardctl", "memguardd", "curl", "make", ".venv/bin/", "promtool")
EXAMPLE_ID = "20261125T104445.317Z-16418-oom"   # docs/incidents.md's example incident
KILL_FIXTURE = REPO / "tests" / "fixtures" / "kmsg" / "v5.10-rc3-next-global-nomemcg.dmesg"

# Commands shown but not run here, and why.
NOT_RUN = {
    "make test": "this run is it: .ci/run calls make test",
    "make run": "run by this module's fixture, exactly as written, for the others",
    "memguardd --config FILE": "a synopsis: make run runs it with FILE=packaging/memguard.yaml",
    "make -j": "a build of the user's, not ours",
    "make bench": "every benchmark, ~20 minutes: run by hand; its figures are in docs/benchmarks.md",
    "memguardctl top": "full-screen until q: tests/integration/test_top.py drives it in a real terminal (tmux)",
    "memguardctl watch": "follows events until stopped: tests/integration/test_watch.py runs it as root and two users",
    "memguardctl notify-agent": ("runs in a desktop session until stopped: tests/integration/test_notify.py runs it as a "
                                 "user with a real session bus and a Windows toast double"),
    "promtool check metrics": ("named in prose; it reads /metrics on standard input: tests/e2e/test_status.py "
                               "and tests/unit/test_metrics.py pipe the daemon's into it"),
    ".venv/bin/memguardctl --socket .state/memguard.sock status": (
        "the non-root form (make run as a user keeps its socket in .state); the tests run as root, "
        "where the README's root form `memguardctl status` is run"),
}
NOT_RUN_PATTERNS = {
    r"^MEMGUARD_FUZZ_EXAMPLES=": ("a fuzz run of minutes, run by hand; make test runs the same properties with "
                                  "150 examples each"),
    r"^kubectl ": ("needs a Kubernetes cluster, which neither this machine nor CI has; "
                   "tests/unit/test_kubernetes.py validates offline what it applies"),
    r"^(sudo )?(make (un)?install|systemd-sysusers|systemctl |usermod )": (
        "installs into this machine's system: tests/integration/test_packaging.py runs make install and "
        "uninstall into a staging DESTDIR, verifies the units and runs the daemon with their capabilities"),
    r"^\.venv/bin/python bench/": "a benchmark: minutes each, run by hand; its figures are in docs/benchmarks.md",
    r"^memguardd --config \$TMP/": "the command line a benchmark ran, as it recorded it",
    r"(python train\.py|make -j8)$": ("an example registering the user's own program; registration is run "
                                      "for real in tests/integration/test_jobs_real.py"),
}
# What a command that needs input gets, and the exit code each must give.
STDIN = {"memguardctl explain": KILL_FIXTURE}
EXIT = {"memguardctl rules check broken.yaml": 1}
# docs/rules.md shows a broken file's error: this file gives exactly it.
BROKEN_RULES = "rules:\n  - name: too-soon\n    when: tto < 60s\n    for: soon\n"


def collect() -> list[tuple[str, int, str]]:
    """(file, line, command) for every command shown, first place kept."""
    found: dict[str, tuple[str, int, str]] = {}
    for path in [REPO / "README.md"] + sorted(Path(p) for p in glob.glob(str(REPO / "docs" / "*.md"))):
        fence = None
        for n, line in enumerate(path.read_text().splitlines(), 1):
            m = re.match(r"^```(\w*)", line)
            if m:
                fence = None if fence is not None else (m.group(1) or "plain")
                continue
            commands = []
            if fence == "console" and re.match(r"^[$#] ", line):
                commands = [line[2:]]
            elif fence == "sh" and line.strip():
                commands = [line]
            elif fence is None:
                commands = [c for c in re.findall(r"`([^`]+)`", line) if c.startswith(PROGRAMS) and " " in c]
            for cmd in commands:
                cmd = re.sub(r"\s+#\s.*$", "", cmd).strip()
                found.setdefault(cmd, (str(path.relative_to(REPO)), n, cmd))
    return list(found.values())


def not_run(cmd: str) -> str | None:
    if cmd in NOT_RUN:
        return NOT_RUN[cmd]
    return next((why for pattern, why in NOT_RUN_PATTERNS.items() if re.search(pattern, cmd)), None)


COMMANDS = collect()


def shown_output(path: str, line: int) -> list[str]:
    """The lines a console block shows after the command at *line*, up to the next command."""
    lines = (REPO / path).read_text().splitlines()[line:]
    out = []
    for text in lines:
        if text.startswith(("$ ", "# ", "```")):
            break
        out.append(text)
    return out


@pytest.fixture(scope="module")
def docs_daemon(tmp_path_factory, hog_binary):
    """`make run` as root, an incident of a real kill, and a working directory
    with the files the examples name."""
    require("root")
    require("v1_memory")
    env = {**os.environ, "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}"}
    if subprocess.run(["memguardctl", "status"], env=env, capture_output=True).returncode != 3:
        pytest.skip("a memguardd already answers on the system socket: make run cannot start another")
    cwd = tmp_path_factory.mktemp("docs")
    for name in ("rules", "bench", "packaging"):
        (cwd / name).symlink_to(REPO / name)
    shutil.copy(KILL_FIXTURE, cwd / "kern.log")
    shutil.copy(KILL_FIXTURE, cwd / "dmesg.txt")
    (cwd / "broken.yaml").write_text(BROKEN_RULES)
    log = open(cwd / "make-run.log", "w+")
    make = subprocess.Popen(["make", "run"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    group = hog = None
    try:
        wait_until(lambda: subprocess.run(["memguardctl", "status"], env=env, capture_output=True).returncode
                   in (0, 4), timeout=180, interval=0.5, what="make run's daemon to answer")
        group = V1MemoryCgroup(64 * MIB)
        hog = Hog(hog_binary, ["grow", "8", "10"], group)
        assert hog.wait_exit(30) == -9
        ident = wait_until(lambda: _incident_of(env, hog.pid), timeout=15, what="the kill's incident")
        yield {"env": env, "cwd": cwd, "id": ident}
        Path("/var/lib/memguard/incidents", f"{ident}.json").unlink(missing_ok=True)  # ours, not the host's
    finally:
        if hog is not None:
            hog.close()
        if group is not None:
            group.close()
        os.killpg(make.pid, signal.SIGINT)
        try:
            make.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(make.pid, signal.SIGKILL)
            make.wait(10)
        log.seek(0)
        print(log.read()[-4000:])
        log.close()


def _incident_of(env, pid: int) -> str | None:
    import json
    r = subprocess.run(["memguardctl", "--json", "incidents"], env=env, capture_output=True, text=True)
    for i in json.loads(r.stdout)["incidents"] if r.returncode == 0 else ():
        if f"({pid})" in (i["fields"].get("victim") or ""):
            return i["id"]
    return None


def test_every_command_shown_is_run_or_says_why_not():
    assert COMMANDS, "no command found in the docs: the collector is broken"
    for _, _, cmd in COMMANDS:
        assert cmd.startswith(PROGRAMS + ("MEMGUARD_JOB=", "MEMGUARD_FUZZ_EXAMPLES=", "sudo ", "kubectl ")) or "memguardctl" in cmd, cmd


@pytest.mark.parametrize("where, line, cmd", COMMANDS, ids=[c for _, _, c in COMMANDS])
def test_the_command_works_as_written(where, line, cmd, request):
    why = not_run(cmd)
    if why is not None:
        pytest.skip(f"{where}:{line}: not run here: {why}")
    env = request.getfixturevalue("docs_daemon")
    run = cmd.replace(EXAMPLE_ID, env["id"]).replace(" ID", " " + env["id"])
    stdin = STDIN.get(cmd)
    r = subprocess.run(["bash", "-c", run], cwd=env["cwd"], env=env["env"], capture_output=True, text=True,
                       timeout=120, input=stdin.read_text() if stdin else None)
    assert r.returncode == EXIT.get(cmd, 0), f"{where}:{line}: {run}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    assert r.stdout or r.stderr or "--plot" in cmd, f"{where}:{line}: {run} printed nothing"
    shown = [x for x in shown_output(where, line) if x.strip()] if where.endswith(".md") else []
    if cmd.startswith("memguardctl rules check"):
        printed = (r.stdout + r.stderr).splitlines()
        assert shown and all(x in printed for x in shown), f"{where}:{line}: shows {shown}, printed {printed}"
    if "--plot" in cmd:
        drawn = cmd.split("--plot", 1)[1].split()[0]      # the file the command names
        assert (env["cwd"] / drawn).read_bytes()[:4] == b"\x89PNG"

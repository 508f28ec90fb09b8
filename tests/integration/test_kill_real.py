"""The last resort, memguard choosing (issue 19, test 4): a real memory
cgroup holding an "editor", a compiler and another process; a rule's
``kill`` takes the preferred compiler, never the larger avoided editor, and
when no preferred one is left the largest not avoided; the incident says
why.  Only processes of the test's own cgroup can be chosen."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.e2e.daemon import Daemon, ctl
from tests.kernel import MIB, Hog, require, wait_until

pytestmark = pytest.mark.root

# A process named NAME (its comm, as the kernel and `ps` show it) holding
# MiB of touched memory; with "stubborn" it ignores SIGTERM.
HOLDER = """\
import ctypes, signal, sys, time
name, mib = sys.argv[1], int(sys.argv[2])
ctypes.CDLL(None).prctl(15, name.encode(), 0, 0, 0)          # PR_SET_NAME
if "stubborn" in sys.argv[3:]:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
b = bytearray(mib << 20)
for i in range(0, len(b), 4096):
    b[i] = 1
print("held", flush=True)
time.sleep(300)
"""
RULES = """\
rules:
  - name: last-resort
    levels:
      - severity: last_resort
        when: usage_ratio > 0.7
        actions:
          - kill: largest
            prefer: {name: [cc1plus, 'cc1*']}
            avoid: {name: [vim, 'memguard*'], cmdline: ['*--keep*']}
            grace: 1s
"""


@pytest.fixture
def daemon(tmp_path):
    require("root")
    require("v1_memory")
    rules = tmp_path / "kill.yaml"
    rules.write_text(RULES)
    d = Daemon(str(tmp_path), config=(
        f"sampling:\n  interval: 250ms\n  discovery_interval: 250ms\n"
        f"rules:\n  files: ['{rules}']\nactions:\n  kill_every: 2s\n"), probes="  bpf: false\n")
    yield d
    assert d.stop() == 0, d.log()


def hold(group, script: Path, name: str, mib: int, *extra: str) -> Hog:
    h = Hog(Path(sys.executable), [str(script), name, str(mib), *extra], group)
    h.wait_line("held", timeout=30)
    return h


def alive(h: Hog) -> bool:
    return h.returncode is None


def kills(daemon) -> list[dict]:
    listing = json.loads(ctl(daemon.socket, "--json", "incidents").stdout)["incidents"]
    return [json.loads(ctl(daemon.socket, "--json", "incident", "show", i["id"]).stdout)
            for i in listing if i["fields"].get("kind") == "memguard_kill"]


def test_the_last_resort_takes_the_preferred_victim_never_an_avoided_one(daemon, v1_cgroup, tmp_path):
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    group = v1_cgroup(256 * MIB)
    domain = f"cgroup:{group.path}"
    daemon.wait_for_tick(lambda s: any(d["name"] == domain for d in s["domains"]))
    started = []
    try:
        # 70 + 30 + 40 MiB and three interpreters stay under the rule's 70 % of 256 MiB (with 84 + 36 +
        # 46 they were at it, and the rule fired before the compiler came, in a loaded full run);
        # the compiler's 40 MiB takes the cgroup past it
        editor = hold(group, script, "vim", 70)
        keeper = hold(group, script, "python3", 30, "--keep")
        other = hold(group, script, "python3", 40)
        started += [editor, keeper, other]
        assert not kills(daemon), f"the rule fired before the compiler came: {group.usage() >> 20} MiB used"
        compiler = hold(group, script, "cc1plus", 40, "stubborn")
        started.append(compiler)
        wait_until(lambda: not alive(compiler), timeout=30, what="the preferred compiler to be killed")
        assert alive(editor) and alive(keeper) and alive(other), "only the preferred one went"
        (doc,) = wait_until(lambda: kills(daemon) or None, timeout=10, what="memguard's kill incident")
        assert (doc["domain"], doc["result"], doc["victims"][0]["pid"]) == (domain, "killed", compiler.pid)
        assert doc["why"] == "preferred (name cc1plus), the largest of 1 preferred"
        verdicts = {c["pid"]: c["verdict"] for c in doc["candidates"]}
        assert verdicts[editor.pid] == "avoided" and verdicts[keeper.pid] == "avoided"
        assert verdicts[other.pid] == "other"
        text = ctl(daemon.socket, "incident", "show", doc["id"]).stdout
        assert "SIGKILL after the 1.0 s grace period" in text, "it ignored SIGTERM"
        # no compiler left, and still past 70 % after a new one: the largest not avoided
        filler = hold(group, script, "python3", 36)     # 75 %: past it again
        started.append(filler)
        wait_until(lambda: not alive(other), timeout=30, what="the largest process not avoided to be killed")
        assert alive(editor) and alive(keeper) and alive(filler)
        second = wait_until(lambda: [d for d in kills(daemon) if d["victims"][0]["pid"] == other.pid] or None,
                            timeout=10, what="the second kill's incident")
        assert second[0]["result"] == "terminated"
        assert second[0]["why"] == "the largest of 2 not avoided; none preferred"
    finally:
        for h in started:
            h.close()

"""Replaying a trace (bench/record.py's format) through the engine and rules."""

import json
import subprocess
import sys

from memguard.replay import load_trace, ramp_start, replay, score
from memguard.rules.load import parse_rules

MiB = 2**20
COLUMNS = ["t_ms", "usage_kib", "working_set_kib", "psi_some_avg10", "psi_full_avg10", "limit_kib"]


def write_trace(tmp_path, name, ws_at, seconds, limit=512 * MiB, kill=None):
    rows = [",".join(COLUMNS)]
    for i in range(int(seconds / 0.05)):
        t = i * 0.05
        ws = int(ws_at(t)) // 1024
        rows.append(f"{int(t * 1000)},{ws},{ws},0.00,0.00,{limit // 1024}")
    (tmp_path / f"{name}.csv").write_text("\n".join(rows) + "\n")
    meta = {"name": name, "limit_bytes": limit, "samples_file": f"{name}.csv",
            "kills": [{"t": kill, "pid": 1, "comm": "x"}] if kill else []}
    (tmp_path / f"{name}.json").write_text(json.dumps(meta))
    return str(tmp_path / f"{name}.json")


RULES = parse_rules("rules:\n  - name: soon\n    when: tto < 5m && confidence >= 0.6\n    for: 2s\n")


def test_a_linear_leak_is_warned_early_and_predicted_well(tmp_path):
    # 50 MiB, then 10 MiB/s: the 512 MiB limit is reached at t = 46.2 s
    path = write_trace(tmp_path, "leak", lambda t: 50 * MiB + 10 * MiB * t, 46.0, kill=46.2)
    trace = load_trace(path)
    assert trace.killed and trace.limit == 512 * MiB and ramp_start(trace) < 6
    s = score(replay(trace, RULES), horizon=300)
    # issue 17: 0.8 x min(60 s, the climb from half the limit)
    assert s.lead >= s.needed_lead and s.tto_error <= 0.25 and s.tto_coverage > 0.8


def test_a_flat_trace_is_never_warned(tmp_path):
    path = write_trace(tmp_path, "flat", lambda t: 200 * MiB, 120.0)
    s = score(replay(load_trace(path), RULES), horizon=300)
    assert not s.killed and s.false_warnings == 0


def test_memguardctl_rules_test_prints_the_transitions(tmp_path):
    path = write_trace(tmp_path, "leak", lambda t: 50 * MiB + 10 * MiB * t, 46.0, kill=46.2)
    rules = tmp_path / "r.yaml"
    rules.write_text("rules:\n  - name: soon\n    when: tto < 5m && confidence >= 0.6\n    for: 2s\n")
    r = subprocess.run([sys.executable, "-m", "memguard.cli.main", "--json", "rules", "test", str(rules),
                        "--trace", path], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["schema_version"] == 1 and doc["killed_at"] == 46.2
    assert doc["transitions"][0]["rule"] == "soon" and doc["transitions"][0]["kind"] == "fire"
    # issue 17's lead: 0.8 x the 25.6 s climb from half the limit, before the kill at 46.2 s
    assert doc["transitions"][0]["t"] < 46.2 - 0.8 * 25.6

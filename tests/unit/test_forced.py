"""bench/predict.py's forced(): which runs that finished a predictor must
warn if it warns the killed runs in time (issue 17's conflicting targets)."""

from bench.predict import forced
from memguard.replay import Trace

LIMIT = 1000


def trace(name, curve, seconds, kill=None):
    t = [i * 0.05 for i in range(int(seconds / 0.05) + 1)]
    ws = [int(curve(s)) for s in t]
    return Trace(name, LIMIT, t, ws, ws, [0.0] * len(t), [0.0] * len(t), [kill] if kill else [])


def test_a_run_that_rises_as_high_and_as_fast_as_a_killed_one_when_due_is_forced():
    # killed: 5 % of the limit a second from zero, killed at 20 s; its climb
    # from half the limit is 10 s, so the warning is due 8 s before the kill,
    # at 60 %, after 12 s of that rise
    killed = trace("killed", lambda s: 50 * s, 20.0, kill=20.0)
    same = trace("same_to_85", lambda s: min(850, 50 * s), 40.0)
    low = trace("same_to_70", lambda s: min(700, 50 * s), 40.0)
    slower = trace("half_as_fast_to_85", lambda s: min(850, 25 * s), 60.0)
    steady = trace("flat_at_90", lambda s: 900 if s > 30 else 30 * s, 60.0)
    rows, summary = forced([killed, same, low, slower, steady])
    assert "same_to_85" in rows and "same_to_70" in rows
    assert "half_as_fast_to_85" not in rows, "at 60 % it had risen half as much over every window"
    assert "flat_at_90" not in rows, "as high, but never risen as fast"
    assert summary == "runs that finished forced to be warned: 2/4 (same_to_70 under 80 % of the limit)"


def test_a_late_killed_run_is_named_with_the_runs_under_80_percent_it_would_force():
    """Warned in time, a killed run forces what rose as it did: where that
    is a run under 80 % of its limit, its late warning is a conflict of the
    targets; where it is not, a miss the predictor could mend."""
    killed = trace("killed", lambda s: 50 * s, 20.0, kill=20.0)
    # from 80 % to its kill at 24 s, 1 % of the limit a second: due at 85 %,
    # where the run that finished never was
    steep = trace("steep", lambda s: 800 + 10 * s, 24.0, kill=24.0)
    low = trace("same_to_70", lambda s: min(700, 50 * s), 40.0)
    _, summary = forced([killed, steep, low], late={"killed", "steep"})
    assert summary.endswith("killed runs warned late: 2; warned in time, they would force a run under 80 % of "
                            "its limit: 1 (killed: same_to_70); would not: steep")


def test_a_killed_run_with_a_climb_under_10_s_forces_nothing():
    killed = trace("burst", lambda s: 0 if s < 10 else 200 * (s - 10), 15.0, kill=15.0)
    same = trace("same", lambda s: 0 if s < 10 else min(850, 200 * (s - 10)), 30.0)
    rows, summary = forced([killed, same])
    assert "same" not in rows and summary == "runs that finished forced to be warned: 0/1"


def write_trace(folder, name, curve, seconds, round, kill=None):
    """*curve* (KiB by second) as bench/record.py writes it, in *round*."""
    import json
    rows = ["t_ms,usage_kib,working_set_kib,psi_some_avg10,psi_full_avg10"]
    rows += [f"{i * 50},{int(curve(i * 0.05))},{int(curve(i * 0.05))},0,0" for i in range(int(seconds / 0.05) + 1)]
    (folder / f"{name}.csv").write_text("\n".join(rows) + "\n")
    (folder / f"{name}.json").write_text(json.dumps({
        "name": name, "limit_bytes": 100 * 1024 * 1024, "samples_file": f"{name}.csv", "family": name,
        "round": round, "kills": [{"t": kill}] if kill else []}))


def test_all_sets_pooled_a_killed_run_forces_the_runs_of_the_other_sets(tmp_path, monkeypatch, capsys):
    """--set all: one predictor serves every set, so the runs that finished
    in one set are also held to the killed runs of the others."""
    import sys

    from bench.predict import main
    write_trace(tmp_path, "killed", lambda s: 5120 * s, 20.0, round=2, kill=20.0)
    write_trace(tmp_path, "same_to_85", lambda s: min(87040, 5120 * s), 40.0, round=3)
    write_trace(tmp_path, "flat_at_60", lambda s: min(61440, 20480 * s), 40.0, round=4)
    monkeypatch.setattr(sys, "argv", ["predict.py", "--set", "all", "--traces", str(tmp_path)])
    assert main() == 0
    out = capsys.readouterr().out
    assert "== round3 set: 1 traces" in out and "runs that finished forced to be warned: 0/1" in out
    pooled = out.split("== the sets pooled\n")[1]
    assert pooled.startswith("runs that finished forced to be warned: 1/2")
    assert "; by set: round3 1/1, round4 0/1" in pooled

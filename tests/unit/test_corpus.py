"""The shipped rule sets replayed on the recorded corpus (bench/traces).

The default rules are held to issue 17's targets on eight sets of the
corpus: the tuning set (the seed traces and the families the split put
there; the predictor and rules were tuned on it), the held-out set (never
tuned on), and rounds 2 to 7 (each held out until reported once). The
fresh set (round 8 on) is not replayed here: bench/traces/README.md. A
trace that misses is a strict xfail naming why, so the summary lists
every miss and a fix makes the test fail until it is taken off the list. The other rule sets are checked for what each is for."""

import glob
import os
import statistics

import pytest

from memguard.replay import load_trace, replay, score
from memguard.rules.load import load_rules

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
TRACES = os.path.join(ROOT, "bench", "traces")
HORIZON = 300.0  # score()'s issue-4 ideal only; issue 17's targets do not use it

# Misses of the default rules on each set (bench/predict.py --set all, the
# closing notes of issue 17 discuss each). compile_oom and torch_leak force
# a conflict of targets: their needed lead falls where a run that was not
# killed has the same curve.
MISSES = {
    # tuning set
    "compile_oom": "no warning: the needed lead falls in the first compiler's climb, which reached 96 % and "
                   "did not kill; compile_fits is the same curve without the kill",
    "torch_leak": "warned 39.2 s before the kill, 48.0 s needed: the climb from half the limit includes the "
                  "steady sawtooth before the leak; torch_steady is the same curve until the leak",
    "loader-cow_oom": "warned 40.2 s before the kill, 48.0 s needed",
    "loader-cache_persistent": "warned though it peaked at 75 % of its limit (a straight 1 %/s climb that stops)",
    # held-out set, never tuned on
    "compile-json_j1_fits": "warned though it peaked at 77 % of its limit",
    "jvm-heap_fits": "warned though it peaked at 67 % of its limit",
    "node-heap_fits": "warned though it peaked at 67 % of its limit",
    "torch-transformer_leak": "warned 40.6 s before the kill, 48.0 s needed (in time at 3 of 10 sampling phases)",
    # round 2: reported once (2026-12-06), tuned on since
    "xz-compress_9e_T2_oom": "warned 36.0 s before the kill, 38.7 s needed",
    "torch-autoencoder_gallery": "warned 5.8 s before the kill, 48.0 s needed: the sawtooth's peaks climb "
                                 "~5 MiB/s under its own scatter, read as levelling off",
    "torch-infer_fits": "warned though it peaked at 79.6 % of its limit",
    # round 3: reported once (2026-12-06), tuned on since
    "compile-rangev3_j2_oom": "warned 11.4 s before the kill, 14.6 s needed: 76 % of the limit, rising 7.6 %/s "
                              "when the warning was due",
    "tool-perl-ngram_oom": "warned 8.2 s before the kill, 8.9 s needed",
    "node-index_fits": "warned though it peaked at 77 % of its limit (a climb that levels off)",
    "tool-perl-ngram_fits": "warned though it peaked at 64 % of its limit: at 59 % it rose as tool-perl-ngram_oom "
                            "did when that one's warning was due (3.2 vs 2.7 %/s)",
    # round 4: reported once (2026-12-07), tuned on since
    "compile-cli11_j2_oom": "warned 6.1 s before the kill, 11.5 s needed",
    "node-batches_640M": "warned though it peaked at 65 % of its limit",
    "py-cowfork_oom": "warned 32.6 s before the kill, 35.8 s needed (in time at 4 of 10 sampling phases)",
    # round 5: reported once (2026-12-07), after the change it checks was fixed
    "np-sparse_oom": "warned 2.5 s before the kill, 24.6 s needed (in time at 2 of 10 sampling phases)",
    "mp-queue_tight": "critical at 93 % of its limit: the same straight 5.7 MiB/s climb as mp-queue_oom under a "
                      "tighter limit, faster as a share of it at 90 % than mp-queue_oom 7.5 s before its kill",
    # round 6: reported once (2026-12-07) on the predictor and rules of round 5's report
    "np-imgstack_oom": "no warning: an 11 s climb (in time at 5 of 10 sampling phases)",
    "pd-mergegroup_oom": "warned 15.5 s before the kill, 16.8 s needed (in time at no sampling phase)",
    # round 7: reported once (2026-12-07) on the same predictor and rules
    "compile-cereal_j2_oom": "warned 5.7 s before the kill, 13.7 s needed",
    "compile-cereal_j2_fits": "warned though it peaked at 74 % of its limit",
    "jvm-segmerge_x1g_fits": "warned though it peaked at 78 % of its limit",
}
# Set-wide targets missed (target: <= 20 % of the runs not killed warned,
# median TTO error <= 25 %).
SET_MISSES = {"tuning": "3 of 14 runs not killed warned; median TTO error 33 %",
              "heldout": "8 of 14 runs not killed warned",
              "round2": "8 of 10 runs not killed warned; median TTO error 49 %",
              "round3": "9 of 9 runs not killed warned; median TTO error 44 %",
              "round4": "9 of 12 runs not killed warned; median TTO error 44 %",
              "round5": "8 of 14 runs not killed warned; median TTO error 70 %",
              "round6": "7 of 11 runs not killed warned; median TTO error 49 %",
              "round7": "10 of 11 runs not killed warned; median TTO error 31 %"}


def traces(which: str) -> list:
    out = []
    for path in sorted(glob.glob(os.path.join(TRACES, "*.json"))):
        trace = load_trace(path)
        if trace.set == which:
            marks = pytest.mark.xfail(strict=True, reason=MISSES[trace.name]) if trace.name in MISSES else ()
            out.append(pytest.param(trace.name, id=trace.name, marks=marks))
    return out


def rules(name):
    return load_rules([os.path.join(ROOT, "rules", f"{name}.yaml")])


def scored(name, rule_set="default", horizon=HORIZON, kind="cgroup"):
    trace = load_trace(os.path.join(TRACES, f"{name}.json"))
    return score(replay(trace, rules(rule_set), kind=kind), horizon)


def check(name):
    """Issue 17's targets for one trace: a killed one with a climb of 10 s or
    more is warned 0.8 x min(60 s, the climb from half its limit) before the
    kill; one not killed gets no critical, and no warning unless its working
    set passed 80 % of its limit."""
    s = scored(name)
    if s.killed:
        if s.climb >= 10:
            assert s.lead >= s.needed_lead, f"lead {s.lead:.1f} s, needed {s.needed_lead:.1f} s"
    else:
        assert s.criticals == 0, "a critical on a run that was not killed"
        assert s.false_warnings == 0 or s.peak_ratio >= 0.8, f"warned at a peak of {s.peak_ratio:.0%}"


# Every set that may be replayed in a test: the fresh one never is (README).
SETS = ("tuning", "heldout", "round2", "round3", "round4", "round5", "round6", "round7")


@pytest.mark.parametrize("name", [pytest.param(*p.values, id=f"{which}:{p.id}", marks=p.marks)
                                  for which in SETS for p in traces(which)])
def test_each_trace(name):
    check(name)


@pytest.mark.parametrize("which", [pytest.param(w, marks=pytest.mark.xfail(strict=True, reason=SET_MISSES[w]))
                                   for w in SETS])
def test_the_sets_together(which):
    """<= 20 % of the runs not killed warned; median TTO error <= 25 %."""
    names = [p.values[0] for p in traces(which)]
    scores = [scored(n) for n in names]
    quiet = [s for s in scores if not s.killed]
    assert sum(1 for s in quiet if s.false_warnings) <= 0.2 * len(quiet)
    errors = [s.tto_error for s in scores if s.killed and s.tto_error is not None]
    assert errors and statistics.median(errors) <= 0.25, sorted(errors)   # as bench/predict.py reports it


def test_a_burst_is_not_claimed_to_be_predictable():
    s = scored("burst")
    assert s.killed and s.ramp < 1 and s.tto_coverage == 0


@pytest.mark.parametrize("name", [pytest.param("torch_leak", marks=pytest.mark.xfail(strict=True, reason=MISSES[
    "torch_leak"])), "leak_linear", "sawtooth_climb"])
def test_training_rules_warn_a_leaking_run_with_time_to_checkpoint(name):
    s = scored(name, "training", horizon=600.0)
    assert s.lead >= s.needed_lead, f"lead {s.lead:.1f} s, needed {s.needed_lead:.1f} s"


def test_training_rules_leave_a_steady_run_alone():
    assert scored("torch_steady", "training", horizon=600.0).false_warnings == 0


def test_compile_rules_warn_before_the_compiler_is_killed_and_hold_across_the_gap():
    trace = load_trace(os.path.join(TRACES, "compile_oom.json"))
    r = replay(trace, rules("compile"))
    s = score(r, 90.0)
    assert s.lead >= s.ramp, f"lead {s.lead:.1f} s on a {s.ramp:.1f} s climb"
    # the first compiler's end is no all-clear: the next one is coming; and
    # the last resort (memguard's own kill) comes before the kernel's
    assert [(kind, sev) for t, rule, kind, sev in r.transitions
            if t < trace.kills[0] and rule == "build-oom-soon"] == \
        [("fire", "warning"), ("escalate", "critical"), ("escalate", "last_resort")]


def test_compile_rules_leave_a_build_that_fits_alone():
    assert scored("compile_fits", "compile", horizon=90.0).false_warnings == 0


@pytest.mark.parametrize("name", ["leak_linear", "leak_quadratic", "step_growth"])
def test_wsl_rules_warn_on_the_vm_running_out(name):
    s = scored(name, "wsl", horizon=600.0, kind="wsl")
    assert s.lead >= s.needed_lead, f"lead {s.lead:.1f} s, needed {s.needed_lead:.1f} s"


@pytest.mark.parametrize("name", ["pagecache_io", "torch_steady"])
def test_wsl_rules_leave_a_vm_with_room_alone(name):
    assert scored(name, "wsl", horizon=600.0, kind="wsl").false_warnings == 0


def test_wsl_rules_do_not_apply_to_a_cgroup():
    s = scored("leak_linear", "wsl", horizon=600.0)
    assert s.lead == 0.0

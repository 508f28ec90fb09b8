"""Replay the recorded corpus through the real predictor and rules (issue 4).

    .venv/bin/python bench/predict.py [--rules rules/default.yaml] [--horizon 5m] [--write]

For every trace in bench/traces (recorded by bench/record.py from real
workloads in a memory cgroup) this prints the lead of the first warning
before the kill, the ideal lead (the smaller of the warning horizon and the
ramp's duration), the median relative error of the time to OOM over the
last 60 s, and warnings on traces that were not killed.  Targets: lead >=
0.8 x ideal on every killed trace whose ramp is longer than 10 s; no
warnings on traces that were not killed; median TTO error <= 25 %.
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._cgroups import section_head, table, write_section  # noqa: E402
from memguard.replay import load_trace, replay, score  # noqa: E402
from memguard.rules.load import load_rules  # noqa: E402
from memguard.units import parse_duration  # noqa: E402

TRACES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "traces")


def fmt(x, digits=1, pct=False):
    if x is None:
        return "-"
    return f"{100 * x:.0f}%" if pct else f"{x:.{digits}f}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rules", default="rules/default.yaml")
    p.add_argument("--horizon", default="5m", help="the warning horizon of the rules (default rule: tto < 5m)")
    p.add_argument("--traces", default=TRACES)
    p.add_argument("--write", action="store_true")
    args = p.parse_args()
    horizon = parse_duration(args.horizon)
    rules = load_rules([args.rules])
    rows, misses, errors = [], [], []
    for path in sorted(glob.glob(os.path.join(args.traces, "*.json"))):
        s = score(replay(load_trace(path), rules), horizon)
        verdict = "ok"
        if s.killed:
            if s.tto_error is not None:
                errors.append(s.tto_error)
            if s.ramp > 10 and s.lead < 0.8 * s.ideal:
                verdict = "LATE"
        elif s.false_warnings:
            verdict = "FALSE WARNING"
        if verdict != "ok":
            misses.append(f"{s.name}: {verdict}")
        rows.append([s.name, "yes" if s.killed else "no", fmt(s.ramp), fmt(s.lead), fmt(s.ideal),
                     fmt(s.lead / s.ideal if s.killed and s.ideal else None, pct=True),
                     fmt(s.tto_error, pct=True), fmt(s.tto_coverage, pct=True), str(s.false_warnings), verdict])
    result = table(["trace", "killed", "ramp s", "lead s", "ideal s", "lead/ideal", "TTO error (60 s)",
                    "TTO coverage", "false warnings", "verdict"], rows)
    median_error = statistics.median(errors) if errors else None
    summary = (f"median TTO error over killed traces: {fmt(median_error, pct=True)} (target <= 25 %); "
               + ("all targets met" if not misses and (median_error or 0) <= 0.25
                  else "MISSES: " + "; ".join(misses + ([] if (median_error or 0) <= 0.25 else ["TTO error"]))))
    print(result + "\n" + summary)
    if args.write:
        write_section("predict", "\n".join([
            *section_head("Prediction and rules on the recorded corpus (`bench/predict.py`)",
                          f".venv/bin/python bench/predict.py --rules {args.rules} --horizon {args.horizon} --write"),
            "- each trace (bench/traces/README.md) replayed through Engine.step with the default sampling "
            "(1 s, 250 ms when close or predicted short); lead = kill - first warning (warning or above); "
            "ideal = min(horizon, ramp), ramp = kill - the start of the climb that ended in the kill: the last time "
            "the working set was under 20 % of the limit, or the trace's `ramp_start` (bench/traces/README.md).",
            "", result, "", summary]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Rule evaluation for 50 rules over 200 domains, one tick (issue 4: <= 5 ms).

    .venv/bin/python bench/rules.py [--rules 50] [--domains 200] [--ticks 200] [--write]

The rules are the shipped sets' conditions repeated with other thresholds,
every one matching every domain; the domains are 200 cgroups, a tenth of
them growing (a prediction with a time to OOM), the rest flat, which is
what a host with many limited cgroups looks like.  Pure CPU, no root.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._cgroups import machine_line, table, today, write_section  # noqa: E402
from memguard.rules.evaluate import RuleEngine  # noqa: E402
from memguard.rules.load import parse_rules  # noqa: E402

CONDITIONS = [
    "tto < {n}s && confidence >= 0.6",
    "tto < {n}s && confidence >= 0.5 || usage_ratio > 0.98",
    "psi.full.avg10 > {n} || psi.some.avg10 > 40",
    "leak_rate > {n}MiB && usage_ratio > 0.3",
    "usage_ratio > 0.{n} && working_set > 100MiB",
]


def rules_text(count: int) -> str:
    lines = ["rules:"]
    for i in range(count):
        cond = CONDITIONS[i % len(CONDITIONS)].format(n=10 + i)
        lines += [f"  - name: r{i}", f"    when: {cond}", "    for: 10s"]
    return "\n".join(lines) + "\n"


def envs(domains: int) -> dict[str, dict]:
    out = {}
    for i in range(domains):
        growing = i % 10 == 0
        out[f"cgroup:/job{i}"] = {
            "domain": f"cgroup:/job{i}", "kind": "cgroup", "used": 300 << 20, "working_set": 200 << 20,
            "limit": 512 << 20, "usage_ratio": 0.39, "psi": {"some": {"avg10": 1.0}, "full": {"avg10": 0.5}},
            "tto": 45.0 if growing else None, "confidence": 0.9 if growing else 0.0,
            "rate": 2e6 if growing else 0.0, "leak_rate": None, "job": {}, "gpu": {},
        }
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rules", type=int, default=50)
    p.add_argument("--domains", type=int, default=200)
    p.add_argument("--ticks", type=int, default=200)
    p.add_argument("--write", action="store_true")
    args = p.parse_args()
    engine = RuleEngine(parse_rules(rules_text(args.rules)))
    e = envs(args.domains)
    times = []
    for tick in range(args.ticks):
        t0 = time.perf_counter()
        engine.evaluate(e, float(tick))
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    p99 = times[min(len(times) - 1, int(0.99 * len(times)))]
    result = table(["rules x domains", "evaluations/tick", "median ms", "p99 ms"],
                   [[f"{args.rules} x {args.domains}", f"{args.rules * args.domains}",
                     f"{statistics.median(times):.2f}", f"{p99:.2f}"]])
    verdict = "meets" if statistics.median(times) <= 5 else "MISSES"
    summary = f"median {statistics.median(times):.2f} ms {verdict} the 5 ms target of issue 4"
    print(result + "\n" + summary)
    if args.write:
        write_section("rules", "\n".join([
            "## Rule evaluation (`bench/rules.py`)", "", f"- date: {today()}", f"- machine: {machine_line()}",
            f"- command: `.venv/bin/python bench/rules.py --write`",
            "- every rule matches every domain; a tenth of the domains growing (a time to OOM), the rest flat; "
            "the time is RuleEngine.evaluate for one tick, for-duration state included.", "", result, "", summary]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

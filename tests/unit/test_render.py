"""memguardctl's human status table, from a status document."""

import re

from memguard.cli.render import render_status

MiB = 2**20


def status(**rules):
    domain = {"name": "cgroup:/train", "kind": "cgroup", "used_bytes": 900 * MiB, "working_set_bytes": 800 * MiB,
              "limit_bytes": 1024 * MiB, "usage_ratio": 0.78125, "swap_used_bytes": None, "psi": None,
              "prediction": {"tto_seconds": 112.0, "rate_bytes_per_second": 2 * MiB, "confidence": 0.9,
                             "method": "linear", "horizon_seconds": 60.0, "leak_bytes_per_minute": 30 * MiB},
              "risk": "warning"}
    return {"healthy": True, "degraded": [], "version": "0.1", "uptime_seconds": 75, "interval_seconds": 1.0,
            "sources": [], "domains": [domain], "processes": [], "facts": {},
            "rules": {"files": ["rules/default.yaml"], "count": 3, "error": None, "firing": [], **rules}}


def test_a_domain_row_shows_its_prediction_growth_and_leak():
    out = render_status(status())
    assert re.search(r"^cgroup:/train\s+cgroup\s+900\.0MiB\s+800\.0MiB\s+1\.0GiB\s+78\.1%\s+-\s+-\s+"
                     r"1m52s \(90%\)\s+\+120\.0MiB/min\s+\+30\.0MiB/min\s+warning$", out, re.M), out


def test_firing_rules_and_a_failed_reload_are_shown():
    out = render_status(status())
    assert "3 rule(s) in force from rules/default.yaml\nno rule firing" in out
    out = render_status(status(error="r.yaml:3: rules[0].when: expected a value (column 14 of 'usage_ratio >')",
                               firing=[{"rule": "memory-running-out", "domain": "cgroup:/train",
                                        "severity": "critical", "since_seconds": 83.2}]))
    assert "the last reload FAILED and changed nothing: r.yaml:3: rules[0].when" in out
    assert re.search(r"^RULE\s+DOMAIN\s+SEVERITY\s+FIRING FOR\nmemory-running-out\s+cgroup:/train\s+critical\s+1m23s$",
                     out, re.M), out


def test_a_command_line_with_newlines_stays_on_its_row():
    doc = status()
    doc["processes"] = [{"pid": 7, "comm": "python", "rss_bytes": MiB, "domain": "host",
                         "cmdline": "python -c \nimport sys\n\tprint(1)"}]
    assert re.search(r"^\s*7\s+python\s+1\.0MiB\s+host\s+python -c import sys print\(1\)$", render_status(doc), re.M)

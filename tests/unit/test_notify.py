"""What notify-agent tells a person, and how often (cli/notify.py)."""

from __future__ import annotations

from memguard.cli.notify import CRITICAL_REPEAT, Limiter, message

WARN = {"type": "rule", "event": "warning", "rule": "oom-soon", "domain": "cgroup:/build", "job": None,
        "tto_seconds": 95.4, "usage_ratio": 0.83}


def test_what_each_event_says():
    urgency, summary, body = message(WARN)
    assert (urgency, summary) == ("normal", "cgroup:/build runs out of memory in 1m35s")
    assert body.startswith("Warning from rule oom-soon; 83% of its limit in use.")
    assert message({**WARN, "event": "critical", "tto_seconds": None})[:2] == (
        "critical", "cgroup:/build is running out of memory")
    assert message({**WARN, "event": "cleared"}) is None, "an all-clear is no interruption"
    kill = message({"type": "action", "kind": "kill", "result": "sent", "domain": "cgroup:/build",
                    "rule": "last-resort", "targets": [{"pid": 42, "result": "sent"}]})
    assert kill[0] == "critical" and "pid 42, by rule last-resort" in kill[2]
    assert message({"type": "action", "kind": "signal", "result": "sent"}) is None
    inc = message({"type": "incident", "id": "X", "kind": "unclean_stop", "headline": "The VM stopped."})
    assert inc == ("critical", "The machine stopped without warning",
                   "The VM stopped. Details: memguardctl incident show X")


def test_the_same_warning_is_not_repeated_within_the_interval():
    now = [0.0]
    limit = Limiter(60, clock=lambda: now[0])
    assert limit.allow(WARN, "normal")
    now[0] = 30
    assert not limit.allow(WARN, "normal")
    assert limit.allow({**WARN, "domain": "cgroup:/other"}, "normal"), "another domain is news"
    now[0] = 61
    assert limit.allow(WARN, "normal")
    assert limit.allow(WARN, "critical")
    now[0] += CRITICAL_REPEAT - 1
    assert not limit.allow(WARN, "critical")
    incident = {"type": "incident", "id": "X", "kind": "oom_kill"}
    assert limit.allow(incident, "critical") and not limit.allow({**incident, "state": "sealed"}, "critical")

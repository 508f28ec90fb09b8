"""memguardctl top's frame: a pure function of the status and incidents
documents (cli/top.py), read as text."""

from __future__ import annotations

from memguard.cli.top import View, frame

MiB = 2**20


def domain(name, ratio, tto=None, rate=0.0, limit=512 * MiB):
    return {"name": name, "kind": "cgroup", "usage_ratio": ratio, "limit_bytes": limit, "risk": "ok",
            "prediction": {"tto_seconds": tto, "rate_bytes_per_second": rate, "confidence": 0.9}}


STATUS = {
    "version": "0.1.0", "uptime_seconds": 75, "interval_seconds": 0.25, "healthy": True,
    "domains": [domain("host", 0.10, limit=16 << 30), domain("cgroup:/build", 0.62, tto=42, rate=8 * MiB),
                domain("cgroup:/train", 0.91, tto=300, rate=MiB),
                domain("cgroup:/evil\x1b[2Jname\nx", 0.2)],
    "rules": {"firing": [{"rule": "build-oom-soon", "domain": "cgroup:/build", "severity": "warning",
                          "since_seconds": 12}]},
    "jobs": [{"id": "make-4242", "domain": "cgroup:/build", "rss_bytes": 300 * MiB, "frozen": [{"pid": 1}],
              "last_action": {"kind": "freeze", "result": "sent", "rule": "build-oom-soon", "seconds_ago": 3}}],
}
INCIDENTS = [{"id": "a", "fields": {"time": "2026-12-06T10:00:00.000Z", "kind": "oom_kill",
                                    "domain": "cgroup:/train", "victim": "python (77)"}},
             {"id": "b", "fields": {"time": "2026-12-06T09:00:00.000Z", "kind": "memguard_kill",
                                    "domain": "cgroup:/build", "victim": "cc1plus (12)"}}]


def rows(lines):
    return [line.split()[0] for line in lines if line.startswith(("cgroup:", "host"))]


def test_domains_sorted_by_time_to_oom_then_by_use_growth_and_name():
    assert rows(frame(STATUS, INCIDENTS, View("tto")))[:2] == ["cgroup:/build", "cgroup:/train"]
    assert rows(frame(STATUS, INCIDENTS, View("use")))[0] == "cgroup:/train"
    assert rows(frame(STATUS, INCIDENTS, View("growth")))[0] == "cgroup:/build"
    assert rows(frame(STATUS, INCIDENTS, View("name")))[-1] == "host"


def test_a_frame_fits_80x24_and_shows_bars_jobs_rules_and_incidents():
    lines = frame(STATUS, INCIDENTS, View(), 80, 24)
    assert len(lines) <= 24 and all(len(line) <= 80 for line in lines)
    text = "\n".join(lines)
    (build,) = [line for line in lines if line.startswith("cgroup:/build")]
    assert "! [######....]" in build, "a rule fires on it"
    assert " 62 " in build and "0m42s" in build and "8.0MiB/s" in build and build.endswith(" ok")
    assert "make-4242" in text and "1 frozen, freeze sent 0m03s ago" in text
    assert "warning  build-oom-soon on cgroup:/build" in text
    assert "> 2026-12-06T10:00:00 oom_kill" in text, "the first incident is selected"
    assert "\x1b" not in text and "evil" in text, "a name cannot drive the terminal"


def test_a_filter_and_a_short_terminal():
    lines = frame(STATUS, INCIDENTS, View(filter="TRAIN"), 80, 24)
    assert rows(lines) == ["cgroup:/train"]
    short = frame(STATUS, INCIDENTS, View(), 80, 8)
    assert len(short) == 8 and short[-1].startswith("... ")

"""memguardctl's incident report and plot, from a document the builder made."""

import pytest

from memguard.cli.incident import plot, render_incident, render_list
from memguard.clock import FakeClock
from memguard.config import Config
from memguard.engine.engine import Engine, SourceRun
from memguard.engine.messages import ProcessesSeen
from memguard.model import OomKill, ProcessInfo, Sample
from memguard.sources.base import Reading

MiB = 2**20


def incident_document(seconds: int = 120, cmdline: str = "cc1plus -O2 big.cc"):
    clock = FakeClock()
    e = Engine(Config(), clock.now(), "t")
    for i in range(seconds):  # a leak of 1 MiB/s for two minutes, up to the limit
        used = (8 + i) * MiB
        e.step([SourceRun("cgroups", reading=Reading(
            samples=[Sample("cgroup:/build", "cgroup", used, used, 128 * MiB, identity=1)],
            domain_of=lambda p: "cgroup:/build"))], clock.now())
        clock.advance(1)
    e.step([], clock.now(), events=[ProcessesSeen((
        ProcessInfo(4711, "cc1plus", 120 * MiB, "/build", None, cmdline=cmdline, uid=1000),))])
    fx = e.step([], clock.now(), events=[OomKill(
        "kmsg", 4711, clock.now().mono, kernel_time=clock.now().mono - 0.01, comm="cc1plus", uid=1000,
        anon_rss=120 * MiB, constraint="CONSTRAINT_MEMCG", oom_memcg="/build", task_memcg="/build")])
    return fx.incidents[-1].document


def test_report_says_what_why_how_fast_and_who():
    doc = incident_document()
    text = render_incident(doc)
    assert "cc1plus (4711) was killed by the kernel's OOM killer: cgroup:/build ran out of memory (limit 128.0MiB)" in text
    assert "pid 4711 cc1plus (uid 1000), RSS at kill 120.0MiB" in text
    assert "cc1plus -O2 big.cc" in text
    assert "1.0MiB/min" not in text and "60.0MiB/min over the last minute" in text
    assert "over the 119 s memguard had measured" in text, "two minutes of samples are not five"


def test_report_says_how_long_it_really_measured():
    # Issue 16: "grew 27.6GiB/min over the last minute, 27.6GiB/min over five
    # minutes" was printed when the daemon had been up 2 s.
    doc = incident_document(seconds=3)
    assert doc["growth"]["seconds_measured"] == {"last_60s": 2.0, "last_300s": 2.0}
    text = render_incident(doc)
    assert "over the 2 s before the kill, all memguard had measured" in text
    assert "last minute" not in text and "five minutes" not in text


def test_a_command_line_with_newlines_keeps_its_rows():
    # Issue 16: status was fixed; the incident report was not.
    doc = incident_document(cmdline="python -c 'import x\nx.run()\n'")
    text = render_incident(doc)
    assert "python -c 'import x x.run() '" in text
    lines = text.splitlines()
    table = lines[lines.index("Who else used memory in the domain:") + 1:]
    assert table[1].split()[:2] == ["4711", "cc1plus"] and table[2] == ""
    assert "no warning had fired" in text and "kmsg (+10 ms)" in text


def test_list_shows_victim_and_domain():
    doc = incident_document()
    text = render_list({"incidents": [{"id": doc["id"], "fields": {k: v for k, v in doc.items()
                                                                     if not isinstance(v, (list, dict))}}],
                        "corrupt": []})
    assert doc["id"] in text and "cgroup:/build" in text and "cc1plus (4711)" in text


def test_plot_draws_a_png(tmp_path):
    pytest.importorskip("matplotlib", reason="the optional 'plot' extra is not installed")
    path = tmp_path / "incident.png"
    plot(incident_document(), str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000

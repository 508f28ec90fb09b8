"""memguardctl profile (issue 20): each domain over a window, from the
daemon's flight recorder, as a table, a JSON file and a plot."""

from __future__ import annotations

import json

import pytest

from tests.e2e.daemon import Daemon, ctl


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(str(tmp_path), "--no-probes", config="sampling:\n  interval: 250ms\n")
    d.wait_for_tick(lambda s: s["uptime_seconds"] > 2)
    yield d
    assert d.stop() == 0, d.log()


def test_a_profile_of_the_window_that_just_ended(daemon, tmp_path):
    out, png = tmp_path / "profile.json", tmp_path / "profile.png"
    r = ctl(daemon.socket, "profile", "--duration", "2", "--past", "--domain", "host",
            "--output", str(out), "--plot", str(png))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("profile of the last 2 s") and "\nhost " in r.stdout
    doc = json.loads(out.read_text())
    host = doc["domains"]["host"]
    assert list(doc["domains"]) == ["host"] and host["samples_count"] >= 4, "a sample every 0.25 s"
    samples = host["samples"]
    assert host["peak_bytes"] == max(samples["working_set_bytes"]) and host["current_bytes"] == \
        samples["working_set_bytes"][-1]
    assert min(samples["t"]) >= -2.0 and max(samples["t"]) <= 0
    assert host["limit_bytes"] > 0 and 0 < host["peak_ratio"] < 1
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_profile_waits_out_its_window_and_names_a_domain_it_does_not_know(daemon):
    r = ctl(daemon.socket, "--json", "profile", "--duration", "1")
    assert r.returncode == 0, r.stderr
    assert "host" in json.loads(r.stdout)["domains"] and "profiling for 1 s" in r.stderr
    r = ctl(daemon.socket, "profile", "--duration", "1", "--past", "--domain", "gpu:7")
    assert r.returncode != 0 and "no domain gpu:7" in r.stderr

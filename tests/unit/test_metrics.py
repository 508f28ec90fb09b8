import subprocess

from prometheus_client.parser import text_string_to_metric_families

from memguard.clock import FakeClock
from memguard.config import Config
from memguard.engine.engine import Engine, SourceRun
from memguard.export.metrics import Metrics
from memguard.model import PSI, Pressure, Sample
from memguard.sources.base import Reading
from tests.kernel import require

MiB = 2**20


def _snapshot(samples, extra_runs=()):
    clock = FakeClock()
    engine = Engine(Config(), clock.now(), "9.9.9")
    runs = [SourceRun("cgroups", reading=Reading(samples=samples), duration=0.002), *extra_runs]
    return engine.step(runs, clock.now()).snapshot


def _psi():
    return PSI(Pressure(12.5, 3.0, 1.0, 2_500_000), Pressure(4.0, 1.0, 0.5, 1_000_000))


def _metrics(samples, extra_runs=()):
    m = Metrics()
    m.render(_snapshot(samples, extra_runs))
    return m


def test_domain_series_through_a_fresh_registry():
    s = Sample("cgroup:/a", "cgroup", used=200 * MiB, working_set=120 * MiB, limit=256 * MiB,
               reclaimable=80 * MiB, oom_kills=3, psi=_psi(), identity=1)
    reg = _metrics([s]).registry
    labels = {"domain": "cgroup:/a", "kind": "cgroup"}
    assert reg.get_sample_value("memguard_domain_used_bytes", labels) == 200 * MiB
    assert reg.get_sample_value("memguard_domain_working_set_bytes", labels) == 120 * MiB
    assert reg.get_sample_value("memguard_domain_limit_bytes", labels) == 256 * MiB
    assert reg.get_sample_value("memguard_domain_oom_kills_total", labels) == 3
    assert reg.get_sample_value("memguard_domain_pressure_avg10_ratio", {**labels, "pressure": "some"}) == 0.125
    assert reg.get_sample_value("memguard_domain_pressure_stalled_seconds_total",
                                {**labels, "pressure": "full"}) == 1.0
    assert reg.get_sample_value("memguard_source_up", {"source": "cgroups"}) == 1
    assert reg.get_sample_value("memguard_build_info", {"version": "9.9.9"}) == 1


def test_absent_values_have_no_series():
    s = Sample("cgroup:/a", "cgroup", used=1, working_set=1, limit=None)
    reg = _metrics([s]).registry
    labels = {"domain": "cgroup:/a", "kind": "cgroup"}
    assert reg.get_sample_value("memguard_domain_limit_bytes", labels) is None
    assert reg.get_sample_value("memguard_domain_swap_used_bytes", labels) is None


def test_a_removed_domain_leaves_metrics():
    m = Metrics()
    a = Sample("cgroup:/a", "cgroup", used=1, working_set=1, limit=2, identity=1)
    clock = FakeClock()
    engine = Engine(Config(), clock.now(), "x")
    m.render(engine.step([SourceRun("cgroups", reading=Reading(samples=[a]))], clock.now()).snapshot)
    assert b'domain="cgroup:/a"' in m.rendered
    m.render(engine.step([SourceRun("cgroups", reading=Reading(samples=[]))], clock.now()).snapshot)
    assert b'domain="cgroup:/a"' not in m.rendered


def test_failed_source_is_down_and_counts_errors():
    reg = _metrics([], [SourceRun("psi", error="boom")]).registry
    assert reg.get_sample_value("memguard_source_up", {"source": "psi"}) == 0
    assert reg.get_sample_value("memguard_source_errors_total", {"source": "psi"}) == 1


def test_rendering_parses_and_passes_promtool_lint():
    require("promtool")
    s = Sample("cgroup:/a b\"c", "cgroup", used=1, working_set=1, limit=2, psi=_psi(), oom_kills=0,
               swap_used=0, reclaimable=0)
    m = _metrics([s])
    m.tick_duration.observe(0.003)
    text = m.render(_snapshot([s])).decode()
    names = {f.name for f in text_string_to_metric_families(text)}
    assert {"memguard_domain_used_bytes", "memguard_tick_duration_seconds",
            "process_resident_memory_bytes"} <= names
    lint = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert lint.returncode == 0 and lint.stdout.strip() == "" and lint.stderr.strip() == "", lint

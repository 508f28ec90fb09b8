"""The Prometheus alert rules and the Grafana dashboard in packaging/, checked
with the real tools (issue 21).

promtool checks the rules, runs their unit tests and checks the example
scrape config. Then Debian's real Prometheus, configured from that example,
loads the rules and scrapes a real memguardd watching live memory cgroups —
one growing towards its limit, one whose hog is OOM-killed — and two GPUs of
the fake libnvidia-ml.so.1, one with a registered job's process, its
allocator figures and a CUDA out-of-memory report. Every query of the
dashboard (each panel's, each annotation's, each template variable's, with
the variables substituted as Grafana would) then runs through Prometheus's
HTTP API and must return data; the alerts the kill, the GPU OOM and the
growth must raise do, and every rule evaluates without error.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.e2e.daemon import Daemon
from tests.e2e.test_prometheus import prometheus_server
from tests.kernel import MIB, require, wait_until

REPO = Path(__file__).resolve().parent.parent.parent
PROMETHEUS_DIR = REPO / "packaging" / "prometheus"
ALERTS = PROMETHEUS_DIR / "memguard-alerts.yml"
ALERT_TESTS = PROMETHEUS_DIR / "memguard-alerts.test.yml"
SCRAPE = PROMETHEUS_DIR / "scrape.yml"
DASHBOARD = REPO / "packaging" / "grafana" / "memguard.json"
ALERTS_DOC = REPO / "docs" / "alerts.md"
METRICS_DOC = REPO / "docs" / "metrics.md"

# Grafana's own variables as the test substitutes them: a 1 s scrape makes
# $__rate_interval (4 scrapes at least) 1m comfortable; $__range is the span
# every range query covers.
RANGE_S = 600
BUILTINS = {"__rate_interval": "1m", "__interval": "5s", "__range": f"{RANGE_S}s"}

# The fake NVML's two GPUs (tests/helpers/fake_nvml.c): an A100 with 3 GiB
# used, an L4 with 1 GiB; processes are added once their pids are known.
GPUS = ("device 0 42949672960 943718400 3221225472 12 5 ok GPU-11111111-2222-3333-4444-555555555555 "
        "NVIDIA A100-SXM4-40GB\n"
        "device 1 25769803776 0 1073741824 30 10 ok GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee NVIDIA L4\n")

CONFIG = """\
sampling:
  interval: 250ms
  discovery_interval: 500ms
rules:
  files: ['{rules}']
"""
# A rule on the growing cgroup alone (never on another's), whose action is a
# hook that does nothing (true): memguard_rule_firing and
# memguard_actions_total get series of their own.
RULES = """\
rules:
  - name: dashboard-test
    description: the test's growing cgroup, and nothing else
    match: {{domain: "{domain}"}}
    when: usage_ratio > 0.02
    severity: warning
    actions:
      - hook: {true}
        target: domain
"""


def alert_rules() -> list[dict]:
    return [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels(board: dict) -> list[dict]:
    """Every panel, those inside rows included."""
    out = []
    for p in board["panels"]:
        out.append(p)
        out += p.get("panels", [])
    return out


def promtool(*args: str) -> subprocess.CompletedProcess:
    require("promtool")
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60, cwd=REPO)


# ------------------------------------------------------------ without a daemon


def test_promtool_checks_the_alert_rules():
    r = promtool("check", "rules", str(ALERTS.relative_to(REPO)))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in r.stdout, r.stdout


def test_the_alert_rules_unit_tests_pass():
    r = promtool("test", "rules", str(ALERT_TESTS.relative_to(REPO)))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout, r.stdout


def test_the_example_scrape_config_is_valid_with_the_rules():
    r = promtool("check", "config", str(SCRAPE.relative_to(REPO)))
    assert r.returncode == 0, r.stdout + r.stderr
    config = yaml.safe_load(SCRAPE.read_text())
    assert [j["job_name"] for j in config["scrape_configs"]] == ["memguard"]
    default = yaml.safe_load((REPO / "packaging" / "memguard.yaml").read_text())["metrics"]["listen"]
    assert config["scrape_configs"][0]["static_configs"][0]["targets"] == [f"localhost:{default.split(':')[1]}"]


def test_each_alert_is_unit_tested_firing_and_not_and_documented():
    tested: dict[str, set[bool]] = {}
    for case in yaml.safe_load(ALERT_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            tested.setdefault(check["alertname"], set()).add(bool(check.get("exp_alerts")))
    headings = set(re.findall(r"^### (\w+)$", ALERTS_DOC.read_text(), re.M))
    for rule in alert_rules():
        name = rule["alert"]
        assert tested.get(name) == {True, False}, f"{name}: needs a test where it fires and one where it does not"
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert {"summary", "description", "runbook_url"} <= set(rule["annotations"]), name
        assert rule["annotations"]["runbook_url"] == f"docs/alerts.md#{name.lower()}", name
        assert name in headings, f"{name} has no section (### {name}) in docs/alerts.md"


def test_the_dashboard_and_the_rules_use_only_documented_metrics():
    documented = set(re.findall(r"`(memguard_\w+)`", METRICS_DOC.read_text()))
    text = DASHBOARD.read_text() + ALERTS.read_text()
    used = {re.sub(r"_(bucket|sum|count)$", "", m) for m in re.findall(r"\b(memguard_\w+)", text)}
    assert used - documented == set(), "not in docs/metrics.md"


def test_the_dashboard_queries_prometheus_through_its_datasource_variable():
    board = dashboard()
    assert 36 <= board["schemaVersion"] <= 41 and board["uid"] == "memguard"
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource" and variables["DS_PROMETHEUS"]["query"] == "prometheus"
    assert variables["domain"]["multi"] and variables["domain"]["includeAll"]
    everything = panels(board) + board["annotations"]["list"][1:] + list(variables.values())[1:]
    for item in everything:
        where = item.get("title") or item.get("name")
        if item.get("type") != "row":
            assert item["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, where
        for t in item.get("targets", []):
            assert t["datasource"] == item["datasource"], where
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


def test_the_dashboard_panels_fit_the_grid_without_overlapping():
    taken: dict[tuple[int, int], str] = {}
    for p in panels(dashboard()):
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        for cell in ((x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])):
            assert cell not in taken, f"{p['title']!r} overlaps {taken[cell]!r}"
            taken[cell] = p["title"]


# --------------------------------------------------------- Prometheus, for real


def api(base: str, path: str, **params) -> dict:
    """Prometheus's JSON answer; an error answer (a bad query: HTTP 400) too."""
    url = f"{base}{path}?" + urllib.parse.urlencode(params, doseq=True)
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        return json.load(e)


@contextlib.contextmanager
def prometheus(tmp: Path, port: int):
    """Prometheus with packaging/prometheus/scrape.yml, its target the daemon
    on *port*, scraping and evaluating every second; yields its base URL."""
    config = yaml.safe_load(SCRAPE.read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(PROMETHEUS_DIR / f) for f in config["rule_files"]]
    config["scrape_configs"][0]["static_configs"] = [{"targets": [f"127.0.0.1:{port}"]}]
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    with prometheus_server(tmp / "prometheus.yml", tmp) as (base, proc):
        wait_until(lambda: _ready(base, proc, tmp), timeout=30, what="Prometheus to be ready")
        yield base


def _ready(base: str, proc: subprocess.Popen, tmp: Path) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"prometheus exited {proc.returncode}:\n{(tmp / 'prometheus.log').read_text()}")
    try:
        with urllib.request.urlopen(f"{base}/-/ready", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def alerts(base: str) -> list[dict]:
    return api(base, "/api/v1/alerts").get("data", {}).get("alerts", [])


def alert(base: str, name: str, states: tuple[str, ...] = ("firing",), **labels) -> dict | None:
    return next((a for a in alerts(base) if a["labels"]["alertname"] == name and a["state"] in states
                 and all(a["labels"].get(k) == v for k, v in labels.items())), None)


def regex_value(values: list[str]) -> str:
    """A multi-value variable as Grafana writes it into a PromQL regex:
    (a|b), metacharacters escaped for the regex inside a PromQL string."""
    return "(" + "|".join(re.sub(r"([\\^$*+?.()|{}\[\]])", r"\\\\\1", v) for v in values) + ")"


def substitute(expr: str, variables: dict[str, str]) -> str:
    def one(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        assert name in variables, f"unknown variable ${name} in {expr}"
        return variables[name]
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", one, expr)


def queries(board: dict) -> list[tuple[str, str, str, str]]:
    """(where, expr, instant|range, step) for each panel target and annotation."""
    out = []
    for p in panels(board):
        for t in p.get("targets", []):
            instant = t.get("instant") and not t.get("range")
            out.append((f"panel {p['title']!r} {t['refId']}", t["expr"], "instant" if instant else "range",
                        "$__interval"))
    for a in board["annotations"]["list"]:
        if "expr" in a:
            out.append((f"annotation {a['name']!r}", a["expr"], "range", a.get("step") or "60s"))
    return out


def run_query(base: str, expr: str, kind: str, step: str, now: float) -> dict:
    if kind == "instant":
        return api(base, "/api/v1/query", query=expr, time=now)
    return api(base, "/api/v1/query_range", query=expr, start=now - RANGE_S, end=now, step=step)


def label_values(base: str, query: str, variables: dict[str, str], now: float) -> list[str]:
    """What a template variable's label_values([selector,] label) offers,
    asked of Prometheus as Grafana asks it."""
    m = re.fullmatch(r"label_values\((?:(.+),\s*)?(\w+)\)", query)
    assert m, f"not a label_values() query: {query}"
    selector, label = m.groups()
    params = {"start": now - RANGE_S, "end": now}
    if selector:
        params["match[]"] = substitute(selector, variables)
    answer = api(base, f"/api/v1/label/{label}/values", **params)
    assert answer["status"] == "success", (query, answer)
    return answer["data"]


@pytest.mark.root     # cgroups, a real OOM kill; the checks above need only promtool
def test_prometheus_runs_every_dashboard_query_and_evaluates_every_rule(tmp_path, v1_cgroup, hog, fake_nvml,
                                                                       monkeypatch):
    for what in ("root", "v1_memory", "prometheus"):
        require(what)
    pytest.importorskip("pynvml", reason="nvidia-ml-py is installed by `make test`; run that")
    growing = v1_cgroup(768 * MIB, unified=True)      # its PSI, through its cgroup2 twin
    killed = v1_cgroup(64 * MIB)
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.format(domain=f"cgroup:{growing.path}", true=shutil.which("true")))
    state = tmp_path / "nvml-state"
    state.write_text(GPUS)
    monkeypatch.setenv("LD_LIBRARY_PATH", str(fake_nvml))
    monkeypatch.setenv("FAKE_NVML_STATE", str(state))
    daemon = Daemon(str(tmp_path), config=CONFIG.format(rules=rules), probes="  bpf: false\n")
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(lambda: _stopped(daemon))
        # 8 MiB/s towards 768 MiB, stopping at 700: predicted, never killed
        grower = hog(growing, "grow", "2", "250", "700")
        prom = cleanup.enter_context(prometheus(tmp_path, daemon.port))
        cleanup.enter_context(_gpu_job(daemon, state, grower.pid))
        _kill_once(prom, hog, killed)
        _alerts_fire(prom, growing, killed)
        domains = ["host", f"cgroup:{growing.path}", f"cgroup:{killed.path}", "gpu:0", "gpu:1"]
        variables = _template_variables(prom, f"127.0.0.1:{daemon.port}", domains)
        _every_query_returns_data(prom, variables)
        _every_rule_evaluates(prom)
        assert grower.returncode is None, "the growing cgroup was never to be killed"


def _stopped(daemon: Daemon) -> None:
    assert daemon.stop() == 0, daemon.log()


@contextlib.contextmanager
def _gpu_job(daemon: Daemon, state: Path, other_pid: int):
    """This process registered as job "trainer", holding 2 GiB of gpu:0, its
    allocator's figures reported, and a CUDA OOM reported on gpu:0; the
    process *other_pid*, of no job, holds 1 GiB of gpu:1."""
    from memguard import client
    with client.register("trainer", socket_path=daemon.socket):
        state.write_text(GPUS + f"process 0 {os.getpid()} {2 * 2**30}\nprocess 1 {other_pid} {2**30}\n")
        assert client.report_allocator(device=0, stats={"allocated_bytes": 3 * 2**30, "reserved_bytes": 4 * 2**30},
                                       socket_path=daemon.socket)
        assert client.report_gpu_oom("CUDA out of memory. Tried to allocate 2.00 GiB.", device=0,
                                     socket_path=daemon.socket)
        yield


def _kill_once(prom: str, hog, group) -> None:
    """A hog OOM-killed in *group*, once Prometheus holds the group's kill
    counter at 0: increase() cannot see a kill in a series that starts at 1."""
    wait_until(lambda: api(prom, "/api/v1/query", query=f'memguard_domain_oom_kills_total'
                           f'{{domain="cgroup:{group.path}"}} == 0')["data"]["result"],
               timeout=30, what="Prometheus to scrape the cgroup's kill counter")
    victim = hog(group, "grow", "8", "50")
    assert victim.wait_exit(30) == -signal.SIGKILL, "the hog past its 64 MiB was OOM-killed"


def _alerts_fire(prom: str, growing, killed) -> None:
    """The alerts the kill, the CUDA OOM and the growth must raise (the
    growth's has a `for` of minutes: pending is enough)."""
    wait_until(lambda: alert(prom, "MemguardOOMKill", domain=f"cgroup:{killed.path}"), timeout=30,
               what="MemguardOOMKill for the killed cgroup")
    wait_until(lambda: alert(prom, "MemguardGPUOOM", domain="gpu:0"), timeout=30, what="MemguardGPUOOM for gpu:0")
    wait_until(lambda: alert(prom, "MemguardDomainOOMSoon", ("pending", "firing"), domain=f"cgroup:{growing.path}"),
               timeout=45, what="MemguardDomainOOMSoon pending for the growing cgroup")


def _template_variables(prom: str, instance: str, domains: list[str]) -> dict[str, str]:
    """The dashboard's variables with the test's target and domains chosen;
    what each query variable offers must hold them."""
    variables = {"DS_PROMETHEUS": "prometheus", "job": "memguard", "instance": regex_value([instance]),
                 "domain": regex_value(domains), **BUILTINS}
    now = time.time()
    offered = {v["name"]: label_values(prom, v["query"], variables, now)
               for v in dashboard()["templating"]["list"] if v["type"] == "query"}
    assert "memguard" in offered["job"] and instance in offered["instance"], offered
    assert set(domains) <= set(offered["domain"]), offered["domain"]
    return variables


def _every_query_returns_data(prom: str, variables: dict[str, str]) -> None:
    """Each panel's and annotation's query succeeds with data, within 30 s;
    all that do not are listed."""
    def failures() -> list[str]:
        now, bad = time.time(), []
        for where, expr, kind, step in queries(dashboard()):
            promql = substitute(expr, variables)
            answer = run_query(prom, promql, kind, substitute(step, variables), now)
            if answer.get("status") != "success":
                bad.append(f"{where}: {answer.get('error')}: {promql}")
            elif not answer["data"]["result"]:
                bad.append(f"{where}: no data: {promql}")
        return bad
    deadline = time.monotonic() + 30
    while (bad := failures()) and time.monotonic() < deadline:
        time.sleep(1)
    assert not bad, "\n".join(bad)


def _every_rule_evaluates(prom: str) -> None:
    groups = api(prom, "/api/v1/rules")["data"]["groups"]
    evaluated = [r for g in groups for r in g["rules"]]
    assert sorted(r["name"] for r in evaluated) == sorted(r["alert"] for r in alert_rules())
    for r in evaluated:
        assert r["health"] == "ok" and not r.get("lastError"), r

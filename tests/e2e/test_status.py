"""The real memguardd and memguardctl, on fixture trees: the socket, the
JSON document, exit codes and /metrics."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import pytest

from tests.e2e.daemon import Daemon, ctl
from tests.kernel import require
from tests.trees import Tree, hybrid_host

MiB = 2**20
GOLDEN = os.path.join(os.path.dirname(__file__), "golden")
# MEMGUARD_UPDATE_GOLDEN=1 rewrites the golden files from this run.
UPDATE_GOLDEN = os.environ.get("MEMGUARD_UPDATE_GOLDEN") == "1"


@pytest.fixture
def host(tmp_path) -> Tree:
    tree = hybrid_host(Tree(str(tmp_path / "host")))
    tree.v1_cgroup("/jobs", limit=512 * MiB, usage=300 * MiB, inactive_file=100 * MiB, oom_kill=1)
    tree.v1_cgroup("/jobs/child", limit=None, effective=512 * MiB, usage=200 * MiB)
    tree.v1_cgroup("/build", limit=256 * MiB, usage=250 * MiB, inactive_file=240 * MiB)
    tree.write("sys/fs/cgroup/unified/jobs/memory.pressure",
               "some avg10=3.00 avg60=1.00 avg300=0.20 total=5000000\nfull avg10=1.00 avg60=0.50 avg300=0.10 total=2000000\n")
    return tree


@pytest.fixture
def daemon(tmp_path, host):
    d = Daemon(str(tmp_path), "--proc-root", host.roots.proc, "--sys-root", host.roots.sys,
               "--rootfs", host.top, "--no-probes")
    yield d
    assert d.stop() == 0, d.log()


def test_status_json_shows_every_domain(daemon):
    doc = daemon.status()
    assert doc["schema_version"] == 1 and doc["healthy"] is True
    by = {d["name"]: d for d in doc["domains"]}
    assert set(by) == {"host", "cgroup:/jobs", "cgroup:/build"}
    jobs = by["cgroup:/jobs"]
    assert (jobs["used_bytes"], jobs["working_set_bytes"], jobs["limit_bytes"]) == (300 * MiB, 200 * MiB, 512 * MiB)
    assert jobs["psi"]["some"]["avg10"] == 3.0 and jobs["oom_kills"] == 1
    # page cache filling /build to its limit is not an OOM coming
    assert by["cgroup:/build"]["usage_ratio"] < 0.1
    states = {s["name"]: s["state"] for s in doc["sources"]}
    assert states == {"meminfo": "active", "psi": "active", "cgroups": "active",
                      "processes": "active", "wsl": "unavailable"}


def test_status_table_exit_zero_when_healthy(daemon):
    r = ctl(daemon.socket, "status")
    assert r.returncode == 0, r.stderr
    assert re.search(r"^cgroup:/jobs\s+cgroup\s+300\.0MiB\s+200\.0MiB\s+512\.0MiB\s+39\.1%", r.stdout, re.M), r.stdout
    assert "wsl" in r.stdout and "not a WSL2 virtual machine" in r.stdout
    assert re.search(r"TIME TO OOM\s+GROWTH\s+LEAK\s+RISK$", r.stdout, re.M), r.stdout
    assert "0 rule(s) in force from no rule files" in r.stdout and "no rule firing" in r.stdout, r.stdout


def test_degraded_when_a_source_fails(daemon, host):
    os.unlink(host.top + "/proc/meminfo")
    host.mkdir("proc/meminfo")   # now unreadable: EISDIR
    doc = daemon.wait_for_tick(lambda s: not s["healthy"])
    assert any(d.startswith("meminfo: ") for d in doc["degraded"])
    r = ctl(daemon.socket, "status")
    assert r.returncode == 4 and "DEGRADED" in r.stdout


def test_unreachable_daemon_exit_code(tmp_path):
    r = ctl(str(tmp_path / "nobody.sock"), "status")
    assert r.returncode == 3 and "not running" in r.stderr


def test_unknown_protocol_version_is_refused(daemon):
    import socket as s
    with s.socket(s.AF_UNIX) as c:
        c.connect(daemon.socket)
        c.sendall(b'{"v": 99, "method": "status"}\n')
        answer = c.recv(4096)
    assert b'"unsupported_version"' in answer


def test_once_json_prints_a_snapshot_without_a_socket(host):
    r = subprocess.run([sys.executable, "-m", "memguard.daemon", "--once", "--json",
                        "--proc-root", host.roots.proc, "--sys-root", host.roots.sys],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert {d["name"] for d in doc["domains"]} == {"host", "cgroup:/jobs", "cgroup:/build"}


def test_once_evaluates_the_rules_and_stops_on_a_broken_file(tmp_path, host):
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - name: jobs-filling\n    match: {domain: 'cgroup:/jobs'}\n"
                     "    when: usage_ratio > 0.3\n")
    config = tmp_path / "c.yaml"
    config.write_text(f"rules:\n  files: ['{rules}']\n")
    args = [sys.executable, "-m", "memguard.daemon", "--config", str(config), "--once",
            "--proc-root", host.roots.proc, "--sys-root", host.roots.sys]
    r = subprocess.run(args, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)["rules"]
    assert (doc["files"], doc["count"]) == ([str(rules)], 1)
    assert [(f["rule"], f["domain"]) for f in doc["firing"]] == [("jobs-filling", "cgroup:/jobs")]
    rules.write_text("rules:\n  - name: r\n    when: tto <\n")
    r = subprocess.run(args, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and f"{rules}:3: rules[0].when" in r.stderr, r.stderr


def test_config_error_exit_code_names_the_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sampling:\n  interval: 1s\n  fast: yes\n")
    r = subprocess.run([sys.executable, "-m", "memguard.daemon", "--config", str(bad), "--once"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert f"{bad}:3: sampling.fast: unknown key" in r.stderr


# Lines that change from run to run: the daemon's own process, timings.
VOLATILE = re.compile(r"^(process_|memguard_tick_duration_seconds|memguard_source_duration_seconds"
                      r"|memguard_domain_pressure_stalled|memguard_sampling_interval)")


def _stable(text: str) -> str:
    return "".join(line + "\n" for line in text.splitlines()
                   if not VOLATILE.match(line.split(" ", 2)[-1] if line.startswith("#") else line))


def test_metrics_match_the_golden_file_and_pass_promtool(daemon):
    require("promtool")
    text = daemon.metrics()
    stable = re.sub(r'memguard_build_info\{version="[^"]+"\}', 'memguard_build_info{version="X"}', _stable(text))
    golden = os.path.join(GOLDEN, "metrics-hybrid.txt")
    if UPDATE_GOLDEN:
        os.makedirs(GOLDEN, exist_ok=True)
        with open(golden, "w") as f:
            f.write(stable)
    with open(golden) as f:
        assert stable == f.read()
    for checked in (text, stable):
        lint = subprocess.run(["promtool", "check", "metrics"], input=checked, capture_output=True, text=True)
        assert lint.returncode == 0 and not lint.stdout.strip() and not lint.stderr.strip(), lint


def test_a_host_that_died_near_a_limit_leaves_an_incident(tmp_path, host):
    state = tmp_path / "state"
    state.mkdir()
    (state / "heartbeat.json").write_text(json.dumps({
        "boot_id": "an-earlier-boot", "wall": 1_790_000_000.0, "pid": 1, "clean": False,
        "near_limit": [{"domain": "cgroup:/jobs", "usage_ratio": 0.97, "limit_bytes": 512 * MiB,
                        "working_set_bytes": 497 * MiB}]}))
    d = Daemon(str(tmp_path), "--proc-root", host.roots.proc, "--sys-root", host.roots.sys,
               "--rootfs", host.top, "--no-probes")
    try:
        listing = json.loads(ctl(d.socket, "--json", "incidents").stdout)
        (inc,) = listing["incidents"]
        assert inc["fields"]["kind"] == "unclean_stop" and inc["fields"]["domain"] == "cgroup:/jobs"
        text = ctl(d.socket, "incident", "show", inc["id"]).stdout
        assert "stopped without memguardd shutting down cleanly" in text and "cgroup:/jobs: 97%" in text
        missing = ctl(d.socket, "incident", "show", "20990101T000000.000Z-1-oom")
        assert missing.returncode == 5 and "not_found" in missing.stderr
    finally:
        assert d.stop() == 0
    # a clean stop leaves a clean heartbeat: the next start writes no incident
    assert json.loads((state / "heartbeat.json").read_text())["clean"] is True


def test_rules_fire_reload_and_a_bad_file_keeps_the_last_good(tmp_path, host):
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - name: jobs-filling\n    match:\n      domain: 'cgroup:/jobs'\n"
                     "    when: usage_ratio > 0.3\n    severity: critical\n")
    d = Daemon(str(tmp_path), "--proc-root", host.roots.proc, "--sys-root", host.roots.sys,
               "--rootfs", host.top, "--no-probes", config=f"rules:\n  files: ['{rules}']\n")
    try:
        status = d.wait_for_tick(lambda s: s["rules"]["firing"])
        assert status["rules"]["count"] == 1 and status["rules"]["error"] is None
        assert [(f["rule"], f["domain"], f["severity"]) for f in status["rules"]["firing"]] == [
            ("jobs-filling", "cgroup:/jobs", "critical")]
        assert 'memguard_rule_firing{domain="cgroup:/jobs",job="",rule="jobs-filling",severity="critical"} 1.0' in d.metrics()
        table = ctl(d.socket, "status").stdout
        assert f"1 rule(s) in force from {rules}" in table
        assert re.search(r"^jobs-filling\s+cgroup:/jobs\s+critical\s+\d+m\d\ds$", table, re.M), table
        rules.write_text("rules:\n  - name: broken\n    when: usage_ratio >\n")
        r = ctl(d.socket, "reload")
        assert r.returncode == 1 and "NOT reloaded" in r.stdout
        status = d.wait_for_tick(lambda s: s["rules"]["error"])   # shown from the next tick
        assert status["rules"]["count"] == 1 and "rules.yaml:3: rules[0].when" in status["rules"]["error"]
        assert status["rules"]["firing"], "the last good rules stay in force"
        table = ctl(d.socket, "status").stdout
        assert "the last reload FAILED and changed nothing: " in table and "jobs-filling" in table, table
        rules.write_text("rules:\n  - name: calm\n    when: usage_ratio > 0.99\n")
        os.kill(d.proc.pid, signal.SIGHUP)
        status = d.wait_for_tick(lambda s: s["rules"]["count"] == 1 and not s["rules"]["firing"]
                                 and s["rules"]["error"] is None)
    finally:
        assert d.stop() == 0, d.log()


def test_broken_rules_at_start_stop_the_daemon_with_the_place(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - name: r\n    when: tto <\n")
    config = tmp_path / "c.yaml"
    config.write_text(f"rules:\n  files: ['{rules}']\n")
    r = subprocess.run([sys.executable, "-m", "memguard.daemon", "--config", str(config), "--no-probes",
                        "--socket", str(tmp_path / "s.sock"), "--state-dir", str(tmp_path / "st")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and f"{rules}:3: rules[0].when" in r.stderr


def test_options_work_after_the_command_as_the_readme_writes_them(daemon):
    # Issue 16: `memguardctl status --json`, the README's own example, exited 2.
    r = subprocess.run([sys.executable, "-m", "memguard.cli.main", "status", "--json", "--socket", daemon.socket,
                        "--timeout", "5"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["schema_version"] == 1
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/metrics", doc["metrics"]["url"]), doc["metrics"]
    r = subprocess.run([sys.executable, "-m", "memguard.cli.main", "--json", "incidents", "--socket", daemon.socket],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and json.loads(r.stdout)["incidents"] == [], r.stderr
    table = ctl(daemon.socket, "status").stdout
    assert f"socket {daemon.socket}; metrics {doc['metrics']['url']}" in table.splitlines()[1], table


def test_a_user_without_a_daemon_of_their_own_reaches_the_system_one(daemon, monkeypatch, tmp_path, capsys):
    # Issue 16: a non-root user's memguardctl looked only for its own
    # ~/.local/state socket and said "not running" while the system daemon ran.
    from memguard.cli import client, main as cli
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "user-runtime"))
    monkeypatch.setattr(client, "SYSTEM_SOCKET", daemon.socket)
    own = str(tmp_path / "user-runtime" / "memguard" / "memguard.sock")
    assert cli.sockets(None) == [own, daemon.socket]
    assert cli.main(["status"]) == 0
    assert f"socket {daemon.socket};" in capsys.readouterr().out
    monkeypatch.setattr(client, "SYSTEM_SOCKET", str(tmp_path / "nothing.sock"))
    assert cli.main(["status"]) == 3
    err = capsys.readouterr().err
    assert f"no answer on {own} nor on {tmp_path / 'nothing.sock'}" in err


def test_a_read_that_hangs_costs_one_tick_and_the_rest_goes_on(tmp_path, host):
    """/build's memory.usage_in_bytes is a FIFO no one writes: opening it
    blocks in the kernel, as a cgroupfs read behind a stuck lock does. The
    daemon goes on ticking and answering, the cgroups source is failed
    (hung), status is degraded; once the read returns, all is well again."""
    usage = os.path.join(host.top, "sys/fs/cgroup/memory/build/memory.usage_in_bytes")
    os.unlink(usage)
    os.mkfifo(usage)
    d = Daemon(str(tmp_path), "--proc-root", host.roots.proc, "--sys-root", host.roots.sys,
               "--rootfs", host.top, "--no-probes")
    try:
        hung = d.wait_for_tick(lambda s: any("hung" in (x["reason"] or "") for x in s["sources"]), timeout=20)
        ticks = hung["counters"]["ticks"]
        later = d.wait_for_tick(lambda s: s["counters"]["ticks"] >= ticks + 3, timeout=20)
        states = {x["name"]: x["state"] for x in later["sources"]}
        assert states["cgroups"] == "failed" and states["meminfo"] == "active" and states["psi"] == "active"
        assert not later["healthy"] and any("cgroups" in why for why in later["degraded"]), later["degraded"]
        fifo = os.open(usage, os.O_WRONLY | os.O_NONBLOCK)   # the blocked open returns; a file replaces the FIFO
        with open(usage + ".new", "w") as f:
            f.write(f"{250 * MiB}\n")
        os.replace(usage + ".new", usage)
        try:
            os.write(fifo, f"{250 * MiB}\n".encode())
        except BrokenPipeError:
            pass          # no reader of the FIFO at that moment (5 of 8 runs here): what counts is that it recovers
        os.close(fifo)
        well = d.wait_for_tick(lambda s: s["healthy"], timeout=20)
        assert {x["name"]: x["state"] for x in well["sources"]}["cgroups"] == "active"
    finally:
        assert d.stop() == 0, d.log()

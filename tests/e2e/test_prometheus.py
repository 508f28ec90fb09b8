"""A real Prometheus server (Debian's) scrapes the daemon over loopback."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.daemon import Daemon
from tests.kernel import require, wait_until
from tests.trees import Tree, hybrid_host

MiB = 2**20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def daemon(tmp_path):
    host = hybrid_host(Tree(str(tmp_path / "host")))
    host.v1_cgroup("/jobs", limit=512 * MiB, usage=300 * MiB, inactive_file=100 * MiB)
    d = Daemon(str(tmp_path), "--proc-root", host.roots.proc, "--sys-root", host.roots.sys,
               "--rootfs", host.top, "--no-probes")
    yield d
    assert d.stop() == 0, d.log()


@contextlib.contextmanager
def prometheus_server(config: Path, tmp: Path):
    """Debian's Prometheus with *config* on a free loopback port, its data
    and log under *tmp*; yields (base URL, process), ended afterwards."""
    require("prometheus")
    base = f"http://127.0.0.1:{free_port()}"
    with open(tmp / "prometheus.log", "w") as log:
        proc = subprocess.Popen(["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
                                 f"--web.listen-address={base[7:]}", "--log.level=warn"], stdout=log, stderr=log)
        try:
            yield base, proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)


@pytest.fixture
def prometheus(tmp_path, daemon):
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: memguard\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{daemon.port}']\n")
    with prometheus_server(config, tmp_path) as (base, _):
        yield base


def query(base: str, promql: str) -> list:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.load(r)["data"]["result"]
    except OSError:
        return []  # not up yet


def test_prometheus_scrapes_the_daemon(prometheus):
    up = wait_until(lambda: query(prometheus, 'up{job="memguard"} == 1'), timeout=60,
                    what="Prometheus to scrape memguard successfully")
    assert up[0]["metric"]["job"] == "memguard"
    ratio = wait_until(lambda: query(prometheus, 'memguard_domain_working_set_bytes{domain="cgroup:/jobs"}'
                                     ' / memguard_domain_limit_bytes{domain="cgroup:/jobs"}'),
                       timeout=30, what="the working set ratio of cgroup:/jobs")
    assert float(ratio[0]["value"][1]) == pytest.approx(200 / 512)
    targets = json.load(urllib.request.urlopen(f"{prometheus}/api/v1/targets", timeout=5))
    (target,) = targets["data"]["activeTargets"]
    assert target["health"] == "up" and target["lastError"] == ""

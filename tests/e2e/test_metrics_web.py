"""/metrics behind TLS and basic auth, from an exporter-toolkit web config
(issue 21): checked with a real certificate (openssl), real bcrypt hashes
and the real Prometheus (Debian's) scraping over TLS with a password."""

from __future__ import annotations

import base64
import ssl
import sys
import subprocess
import urllib.error
import urllib.request

import pytest

from tests.e2e.daemon import Daemon
from tests.e2e.test_prometheus import prometheus_server, query
from tests.kernel import wait_until

bcrypt = pytest.importorskip("bcrypt", reason="bcrypt is a dependency: `make test` installs it")

PASSWORD = "s3cret scrape"


@pytest.fixture
def web(tmp_path):
    """A self-signed certificate for 127.0.0.1, and web.yml naming it and a user."""
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=memguard test", "-addext", "subjectAltName=IP:127.0.0.1",
                        "-keyout", str(tmp_path / "memguard.key"), "-out", str(tmp_path / "memguard.crt")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()
    (tmp_path / "web.yml").write_text(
        "tls_server_config:\n  cert_file: memguard.crt\n  key_file: memguard.key\n"
        f"basic_auth_users:\n  prometheus: '{hashed}'\n")
    return tmp_path


def get(url: str, ca: str, user: str | None = None, password: str | None = None) -> int:
    request = urllib.request.Request(url)
    if user is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10, context=ssl.create_default_context(cafile=ca)) as r:
            assert b"memguard_build_info" in r.read()
            return r.status
    except urllib.error.HTTPError as e:
        assert e.headers.get("WWW-Authenticate") == 'Basic realm="memguard"'
        return e.code


def test_metrics_over_tls_with_basic_auth_scraped_by_prometheus(web, tmp_path):
    d = Daemon(str(tmp_path), "--no-probes", config="metrics:\n  web_config: web.yml\n")
    try:
        url, ca = f"https://127.0.0.1:{d.port}/metrics", str(web / "memguard.crt")
        assert get(url, ca) == 401
        assert get(url, ca, "prometheus", "wrong") == 401
        assert get(url, ca, "nobody", PASSWORD) == 401
        assert get(url, ca, "prometheus", PASSWORD) == 200
        assert get(url, ca, "prometheus", PASSWORD) == 200, "the second time from the cache of passed pairs"
        with pytest.raises(OSError):       # plain HTTP gets no answer from a TLS endpoint
            urllib.request.urlopen(f"http://127.0.0.1:{d.port}/metrics", timeout=10)
        assert d.status()["metrics"]["url"] == url

        (tmp_path / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: memguard\n    scheme: https\n"
            f"    tls_config:\n      ca_file: {ca}\n"
            f"    basic_auth:\n      username: prometheus\n      password: '{PASSWORD}'\n"
            f"    static_configs:\n      - targets: ['127.0.0.1:{d.port}']\n")
        with prometheus_server(tmp_path / "prometheus.yml", tmp_path) as (base, _):
            wait_until(lambda: query(base, 'up{job="memguard"} == 1'), timeout=60,
                       what="Prometheus to scrape memguard over TLS with basic auth")
    finally:
        assert d.stop() == 0, d.log()


@pytest.mark.parametrize("text, named", [
    ("http_server_config:\n  http2: false\n", "http_server_config: not supported by memguard"),
    ("tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n", "tls_server_config.cert_file: /"),
    ("tls_server_config:\n  cert_file: web.yml\n  key_file: web.yml\n", "tls_server_config: cannot load the certificates"),
    ("basic_auth_users:\n  alice: plaintext\n", "basic_auth_users.alice: expected a bcrypt hash"),
])
def test_a_bad_web_config_stops_the_daemon_naming_the_file_and_key(tmp_path, text, named):
    (tmp_path / "web.yml").write_text(text)
    (tmp_path / "memguard.yaml").write_text("metrics:\n  web_config: web.yml\n")
    r = subprocess.run([sys.executable, "-m", "memguard.daemon", "--config", str(tmp_path / "memguard.yaml"),
                        "--no-probes", "--socket", str(tmp_path / "s.sock"), "--state-dir", str(tmp_path / "st")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and f"{tmp_path / 'web.yml'}: {named}" in r.stderr, r.stderr

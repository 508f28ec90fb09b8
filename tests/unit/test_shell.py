"""The small pieces of the daemon's shell: sd_notify, the HTTP endpoint, the
control socket's error answers, logfmt."""

import asyncio
import io
import json
import socket

import pytest

from memguard.api import protocol
from memguard.api.server import ControlServer
from memguard.export.http import MetricsServer, parse_listen
from memguard.log import Logger
from memguard.systemd import Notifier


def test_notify_sends_a_datagram(tmp_path):
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(path)
        n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000"})
        assert n.notify("READY=1")
        assert s.recv(100) == b"READY=1"
        assert n.watchdog_interval == 2.0


def test_notify_without_systemd_does_nothing():
    assert Notifier({}).notify("READY=1") is False


def test_logfmt_quotes_and_journal_priority(monkeypatch):
    monkeypatch.setenv("JOURNAL_STREAM", "8:123")
    out = io.StringIO()
    Logger(out).warning("limit changed", domain="cgroup:/a b", old=None, new=5)
    assert out.getvalue() == '<4>level=warning msg="limit changed" domain="cgroup:/a b" new=5\n'


@pytest.mark.parametrize("listen,parsed", [("127.0.0.1:9717", ("127.0.0.1", 9717)),
                                           ("[::1]:80", ("::1", 80)), (":9", ("127.0.0.1", 9))])
def test_parse_listen(listen, parsed):
    assert parse_listen(listen) == parsed


def test_parse_listen_rejects_a_missing_port():
    with pytest.raises(ValueError, match="host:port"):
        parse_listen("localhost")


async def _http(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    data = await reader.read()
    writer.close()
    return data


def test_metrics_endpoint_serves_the_last_rendering():
    async def main():
        server = MetricsServer("127.0.0.1:0", lambda: b"memguard_x 1\n")
        await server.start()
        try:
            ok = await _http(server.bound_port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            missing = await _http(server.bound_port, b"GET /nope HTTP/1.1\r\n\r\n")
            post = await _http(server.bound_port, b"POST /metrics HTTP/1.1\r\n\r\n")
        finally:
            await server.stop()
        return ok, missing, post
    ok, missing, post = asyncio.run(main())
    assert ok.startswith(b"HTTP/1.1 200 OK") and ok.endswith(b"\r\n\r\nmemguard_x 1\n")
    assert b"Content-Length: 13" in ok
    assert missing.startswith(b"HTTP/1.1 404") and post.startswith(b"HTTP/1.1 405")


def test_control_socket_answers_errors_with_stable_codes(tmp_path):
    path = str(tmp_path / "run" / "s.sock")

    async def main():
        server = ControlServer(path, Logger(io.StringIO()))
        server.route("version", lambda params, peer: {"version": "x"})
        server.route("boom", lambda params, peer: 1 / 0)
        await server.start()
        answers = []
        try:
            reader, writer = await asyncio.open_unix_connection(path)
            for line in (b"not json\n", b'{"v":1,"method":"nope"}\n', protocol.request("version"),
                         protocol.request("boom"), b'{"v":1,"method":"version","params":[]}\n'):
                writer.write(line)
                answers.append(json.loads(await reader.readline()))
            writer.close()
        finally:
            await server.stop()
        return answers
    bad, unknown, version, boom, params = asyncio.run(main())
    assert bad["error"]["code"] == protocol.BAD_REQUEST
    assert unknown["error"]["code"] == protocol.UNKNOWN_METHOD and "version" in unknown["error"]["message"]
    assert version == {"v": 1, "ok": True, "result": {"version": "x"}}
    assert boom["error"]["code"] == protocol.INTERNAL
    assert params["error"]["code"] == protocol.BAD_REQUEST


def test_a_second_daemon_does_not_steal_a_live_socket(tmp_path):
    path = str(tmp_path / "s.sock")

    async def main():
        first = ControlServer(path, Logger(io.StringIO()))
        await first.start()
        try:
            with pytest.raises(RuntimeError, match="another memguardd"):
                await ControlServer(path, Logger(io.StringIO())).start()
        finally:
            await first.stop()
        # a socket file left by a dead daemon is replaced
        with socket.socket(socket.AF_UNIX) as stale:
            stale.bind(path)
        second = ControlServer(path, Logger(io.StringIO()))
        await second.start()
        await second.stop()
    asyncio.run(main())

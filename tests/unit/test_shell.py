"""The small pieces of the daemon's shell: sd_notify, the HTTP endpoint, the
control socket's error answers, logfmt."""

import asyncio
import dataclasses
import io
import json
import os
import socket
import struct

import pytest
from prometheus_client.parser import text_string_to_metric_families

from memguard.api import protocol
from memguard.api.server import ControlServer
from memguard.clock import FakeClock
from memguard.config import Config
from memguard.daemon import Daemon
from memguard.export.http import MetricsServer, parse_listen
from memguard.log import Logger, journal_field
from memguard.systemd import Notifier
from tests.trees import Tree, hybrid_host

MiB = 2**20


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


def _journal_fields(data: bytes) -> dict[str, str]:
    """The native protocol read back as journald reads it."""
    fields, i = {}, 0
    while i < len(data):
        end = data.index(b"\n", i)
        line = data[i:end]
        if b"=" in line:
            name, value = line.split(b"=", 1)
            i = end + 1
        else:
            (n,) = struct.unpack("<Q", data[end + 1:end + 9])
            name, value = line, data[end + 9:end + 9 + n]
            assert data[end + 9 + n:end + 10 + n] == b"\n"
            i = end + 10 + n
        fields[name.decode()] = value.decode()
    return fields


def test_under_systemd_each_event_is_a_journal_entry_with_its_fields(tmp_path):
    journal = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    journal.bind(str(tmp_path / "journal.socket"))
    journal.settimeout(5)
    with open(tmp_path / "stderr", "w+") as err:
        st = os.fstat(err.fileno())
        log = Logger(err, journal_socket=str(tmp_path / "journal.socket"),
                     environ={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        log.warning("rule firing", domain="cgroup:/build", rule="oom-soon", reason="two\nlines", skip=None)
        fields = _journal_fields(journal.recv(65536))
        assert fields == {"MESSAGE": 'level=warning msg="rule firing" domain=cgroup:/build rule=oom-soon '
                                     'reason="two\\nlines"',
                          "PRIORITY": "4", "SYSLOG_IDENTIFIER": "memguardd", "MEMGUARD_EVENT": "rule firing",
                          "DOMAIN": "cgroup:/build", "RULE": "oom-soon", "REASON": "two\nlines"}
        assert err.read() == "", "nothing on stderr while the journal takes the entries"
        # journald gone: the line goes to stderr, with its priority for the journal's stream.
        journal.close()
        os.unlink(tmp_path / "journal.socket")
        log.info("domain found", domain="host")
        err.seek(0)
        assert err.read() == "<6>level=info msg=\"domain found\" domain=host\n"


def test_a_journal_stream_that_is_not_our_stderr_keeps_lines(tmp_path):
    (tmp_path / "journal.socket").touch()
    out = io.StringIO()
    Logger(out, journal_socket=str(tmp_path / "journal.socket"), environ={"JOURNAL_STREAM": "8:123"}).info("x")
    assert out.getvalue() == "<6>level=info msg=x\n"


def test_journal_field_names_are_ones_journald_takes():
    assert [journal_field(n) for n in ("domain", "tto-seconds", "_pid", "9x", "")] == \
        ["DOMAIN", "TTO_SECONDS", "PID", "X", "FIELD"]


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


def test_metrics_endpoint_serves_the_last_rendering(tmp_path, monkeypatch):
    """/metrics renders a snapshot at its first scrape only: a second scrape
    before the next tick gets the same bytes without a render, a new
    snapshot is rendered once (the daemon's _metrics_body, on fixture roots)."""
    tree = hybrid_host(Tree(str(tmp_path / "host")))
    tree.v1_cgroup("/jobs", limit=512 * MiB, usage=300 * MiB)
    config = dataclasses.replace(Config(), socket=str(tmp_path / "s.sock"),
                                 state_dir=str(tmp_path / "state"))
    clock = FakeClock()
    daemon = Daemon(config, tree.roots, clock=clock, log=Logger(io.StringIO()))
    rendered = []
    render = daemon.metrics.render
    monkeypatch.setattr(daemon.metrics, "render", lambda snap: rendered.append(snap) or render(snap))

    async def main():
        server = MetricsServer("127.0.0.1:0", daemon._metrics_body)
        await server.start()

        async def scrape(path=b"/metrics", method=b"GET") -> bytes:
            return await _http(server.bound_port, method + b" " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            assert (await scrape()).endswith(b"\r\n\r\n") and rendered == []  # no snapshot yet
            daemon.tick()
            first = daemon.snapshot
            one, two = await scrape(), await scrape()
            assert rendered == [first] and one == two
            tree.v1_cgroup("/jobs", limit=512 * MiB, usage=400 * MiB)
            clock.advance(1)
            daemon.tick()
            three = await scrape()
            assert rendered == [first, daemon.snapshot] and daemon.snapshot is not first
            return one, three, await scrape(b"/nope"), await scrape(method=b"POST")
        finally:
            await server.stop()
            daemon.slow.shutdown()
            daemon.writer.shutdown()
    one, three, missing, post = asyncio.run(main())
    assert one.startswith(b"HTTP/1.1 200 OK")
    head, body = one.split(b"\r\n\r\n", 1)
    assert f"Content-Length: {len(body)}".encode() in head
    assert jobs_used(body) == 300 * MiB and jobs_used(three.split(b"\r\n\r\n", 1)[1]) == 400 * MiB
    assert missing.startswith(b"HTTP/1.1 404") and post.startswith(b"HTTP/1.1 405")


def jobs_used(body: bytes) -> float:
    """memguard_domain_used_bytes of cgroup:/jobs in an exposition."""
    (value,) = [s.value for family in text_string_to_metric_families(body.decode())
                for s in family.samples
                if s.name == "memguard_domain_used_bytes" and s.labels["domain"] == "cgroup:/jobs"]
    return value


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


def test_a_peers_groups_come_from_the_kernel_and_the_admin_group_sees_all():
    from memguard.api.server import Peer, peer_of
    from memguard.api.watch import Watchers
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours, theirs:
        class Writer:
            def get_extra_info(self, name):
                return ours
        peer = peer_of(Writer())
    assert (peer.pid, peer.uid) == (os.getpid(), os.getuid())
    assert peer.groups >= {os.getgid(), *os.getgroups()}
    watchers = Watchers(admin_gid=4242)
    assert watchers.sees_all(Peer(1, 1000, 1000, frozenset({4242})))
    assert not watchers.sees_all(Peer(1, 1000, 1000, frozenset({100})))
    assert not Watchers().sees_all(Peer(1, 1000, 4242))


def test_a_log_line_stays_one_line_and_cannot_drive_a_terminal():
    out = io.StringIO()
    Logger(out).warning("oom kill seen", comm="evil\x1b[2J\nname\t", cmdline="a \"b\" \\c")
    line = out.getvalue()
    assert line == 'level=warning msg="oom kill seen" comm="evil\\x1b[2J\\nname\\t" cmdline="a \\"b\\" \\\\c"\n'
    assert line.count("\n") == 1 and "\x1b" not in line


def test_state_files_are_never_read_or_written_through_a_link(tmp_path):
    from memguard import state
    target = tmp_path / "elsewhere"
    target.write_text('{"seq": 1}')
    (tmp_path / "cursor.json").symlink_to(target)
    assert state.load(str(tmp_path / "cursor.json")) is None
    (tmp_path / "beat.json.tmp").symlink_to(target)
    with pytest.raises(OSError):
        state.save(str(tmp_path / "beat.json"), {"wall": 1})
    assert target.read_text() == '{"seq": 1}', "the link's target is untouched"
    state.save(str(tmp_path / "ok.json"), [1, 2], durable=True)
    assert state.read_json(str(tmp_path / "ok.json")) == [1, 2]

"""The proc connector's datagrams, decoded without pyroute2 (probes/cn_proc.py)."""

import pytest

from memguard.probes.cn_proc import parse_datagram, subscribe_message

# Captured on the build host (Linux 6.18, x86_64) on 2026-12-06: the
# datagrams a subscribed socket received while /bin/true was started by
# subprocess.Popen: the subscription's ack (PROC_EVENT_NONE), two forks (a
# thread of the parent's, then the child), the child's exec and its exit.
ACK = bytes.fromhex("4c00000003000000994303000000000001000000010000009943030001000000280000000000000000000000"
                    "c6fb698168190000000000000000000000000000000000000000000000000000")
FORK_THREAD = bytes.fromhex("4c000000030000009a4303000000000001000000010000009a430300000000002800000001000000"
                            "00000000e33e6b8168190000e8750000e8750000eb750000ea7500000000000000000000")
FORK = bytes.fromhex("4c000000030000009b4303000000000001000000010000009b43030000000000280000000100000000000000"
                     "8c62848168190000ea750000ea750000ec750000ec7500000000000000000000")
EXEC = bytes.fromhex("4c000000030000009c4303000000000001000000010000009c43030000000000280000000200000000000000"
                     "50f2c48168190000ec750000ec75000000000000000000000000000000000000")
EXIT = bytes.fromhex("4c000000030000009d4303000000000001000000010000009d43030000000000280000000000008000000000"
                     "7876d18168190000ec750000ec7500000000000011000000ea750000ea750000")


def test_the_events_of_a_process_start_and_end():
    assert parse_datagram(ACK) == []
    assert parse_datagram(FORK_THREAD) == [{"event": "PROC_EVENT_FORK", "parent_pid": 30184, "parent_tgid": 30184,
                                            "child_pid": 30187, "child_tgid": 30186}]
    assert parse_datagram(FORK)[0]["child_tgid"] == 30188
    assert parse_datagram(EXEC) == [{"event": "PROC_EVENT_EXEC", "process_pid": 30188, "process_tgid": 30188}]
    assert parse_datagram(EXIT) == [{"event": "PROC_EVENT_EXIT", "process_pid": 30188, "process_tgid": 30188}]
    assert parse_datagram(EXEC + EXIT)[1]["event"] == "PROC_EVENT_EXIT", "two messages in one datagram"


def test_a_message_longer_than_its_datagram_is_refused():
    with pytest.raises(ValueError, match="netlink message of 76 bytes"):
        parse_datagram(EXEC[:60])


def test_the_subscription_asks_the_proc_connector_to_listen():
    message = subscribe_message(4242)
    assert len(message) == 40 and message[:4] == (40).to_bytes(4, "little")
    assert message[-4:] == (1).to_bytes(4, "little")          # PROC_CN_MCAST_LISTEN

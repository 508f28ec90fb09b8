"""The kernel's process events connector on a plain netlink socket.

Kernel docs and headers: include/uapi/linux/connector.h (struct cn_msg),
include/uapi/linux/cn_proc.h (struct proc_event).  Each datagram holds
netlink messages; each carries a ``cn_msg`` for the proc connector
(CN_IDX_PROC, CN_VAL_PROC) whose data is one ``proc_event``::

    nlmsghdr  u32 len, u16 type, u16 flags, u32 seq, u32 pid         16 bytes
    cn_msg    u32 idx, u32 val, u32 seq, u32 ack, u16 len, u16 flags  20 bytes
    proc_event u32 what, u32 cpu, u64 timestamp_ns                    16 bytes
              then the event's pids: fork (parent pid, tgid, child pid, tgid),
              exec (pid, tgid), exit (pid, tgid, code, signal, ...)

Listening takes CAP_NET_ADMIN: a PROC_CN_MCAST_LISTEN message to the
connector.  This replaces pyroute2's socket, which ran an asyncio loop at
every receive (a third of the idle daemon's CPU) and whose import cost
11 MiB of RSS (docs/benchmarks.md).
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct

NETLINK_CONNECTOR = 11
CN_IDX_PROC = 1
CN_VAL_PROC = 1
NLMSG_DONE = 3
PROC_CN_MCAST_LISTEN = 1

PROC_EVENT_FORK = 0x00000001
PROC_EVENT_EXEC = 0x00000002
PROC_EVENT_EXIT = 0x80000000
EVENT_NAMES = {PROC_EVENT_FORK: "PROC_EVENT_FORK", PROC_EVENT_EXEC: "PROC_EVENT_EXEC",
               PROC_EVENT_EXIT: "PROC_EVENT_EXIT"}

_NLMSGHDR = struct.Struct("=IHHII")
_CN_MSG = struct.Struct("=IIIIHH")
_EVENT = struct.Struct("=IIQ")
_PIDS = struct.Struct("=4i")
HEADERS = _NLMSGHDR.size + _CN_MSG.size            # 36: where the proc_event starts
DRAIN_MAX = 256                                    # datagrams read per batch at most


def subscribe_message(port: int) -> bytes:
    """The netlink message that asks the connector for process events."""
    op = struct.pack("=I", PROC_CN_MCAST_LISTEN)
    cn = _CN_MSG.pack(CN_IDX_PROC, CN_VAL_PROC, 0, 0, len(op), 0) + op
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(cn), NLMSG_DONE, 0, 0, port) + cn


def parse_datagram(data: bytes) -> list[dict]:
    """The fork, exec and exit events in one datagram, as dicts with the
    fields of cn_proc.h (``event`` its name; other events are skipped).
    Raises ValueError on a message shorter than it says."""
    events = []
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, _type, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size or offset + length > len(data):
            raise ValueError(f"netlink message of {length} bytes at {offset} in a datagram of {len(data)}")
        body = data[offset + _NLMSGHDR.size:offset + length]
        offset += (length + 3) & ~3                   # NLMSG_ALIGN
        if len(body) < _CN_MSG.size + _EVENT.size:
            continue                                  # not a proc_event (an ack's error code)
        idx, val, *_ = _CN_MSG.unpack_from(body)
        if (idx, val) != (CN_IDX_PROC, CN_VAL_PROC):
            continue
        what, _cpu, _timestamp = _EVENT.unpack_from(body, _CN_MSG.size)
        name = EVENT_NAMES.get(what)
        start = _CN_MSG.size + _EVENT.size
        if name is None:
            continue
        if what == PROC_EVENT_FORK:
            if len(body) < start + 16:
                raise ValueError("a fork event cut short")
            parent_pid, parent_tgid, child_pid, child_tgid = _PIDS.unpack_from(body, start)
            events.append({"event": name, "parent_pid": parent_pid, "parent_tgid": parent_tgid,
                           "child_pid": child_pid, "child_tgid": child_tgid})
        else:
            if len(body) < start + 8:
                raise ValueError(f"{name} cut short")
            pid, tgid = struct.unpack_from("=2i", body, start)
            events.append({"event": name, "process_pid": pid, "process_tgid": tgid})
    return events


class ProcEventSocket:
    """A netlink socket subscribed to the proc connector; ``get()`` blocks
    for the next datagram and returns its events.  Raises OSError (ENOBUFS
    when the kernel dropped events for want of buffer space; EBADF once
    ``close()`` was called, from any thread: a blocked ``get()`` wakes)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, NETLINK_CONNECTOR)
        self._stop_r, self._stop_w = os.pipe2(os.O_CLOEXEC)
        self._poll = select.poll()
        self._poll.register(self.sock.fileno(), select.POLLIN)
        self._poll.register(self._stop_r, select.POLLIN)

    def setsockopt(self, level: int, option: int, value: int) -> None:
        self.sock.setsockopt(level, option, value)

    def bind(self) -> None:
        self.sock.bind((os.getpid(), CN_IDX_PROC))

    def control(self, listen: bool = True) -> None:
        if listen:
            self.sock.send(subscribe_message(self.sock.getsockname()[0]))

    def get(self) -> list[dict]:
        while True:
            ready = {fd for fd, _ in self._poll.poll()}
            if self._stop_r in ready:
                raise OSError(errno.EBADF, "the proc connector socket was closed")
            if ready:
                return self._drain()

    def _drain(self) -> list[dict]:
        """Every datagram waiting, in one batch: one wake-up of the loop for
        a burst of forks, not one each."""
        events = parse_datagram(self.sock.recv(65536))
        for _ in range(DRAIN_MAX):
            try:
                data = self.sock.recv(65536, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            events += parse_datagram(data)
        return events

    def close(self) -> None:
        """Wake a thread blocked in get(); it closes the socket on its way out
        (closing it under a poll in progress would not wake it)."""
        os.write(self._stop_w, b"x")

    def release(self) -> None:
        """Close the descriptors (the thread that called get(), as it ends)."""
        self.sock.close()
        os.close(self._stop_r)
        os.close(self._stop_w)

"""The tracefs probe: oom:mark_victim in a trace instance of our own.

Kernel docs: Documentation/trace/ftrace.rst ("Instances") and
Documentation/trace/events.rst.  memguard makes ``instances/memguard`` so it
never disturbs the global trace buffer someone else may be using, sets that
instance's clock to ``mono`` (CLOCK_MONOTONIC, so timestamps compare with
ours), enables ``oom/mark_victim`` there and reads its ``trace_pipe``::

    hog-4711    [001] d..1.  1234.567890: mark_victim: pid=4711 comm=hog total-vm=104868kB
        anon-rss=65436kB file-rss:1024kB shmem-rss:0kB uid=0 pgtables=176kB oom_score_adj=0

(one line; the fields after ``pid`` came in 6.9 and are absent before).  The
instance is removed when the daemon stops; one left by a crash is replaced.

It also enables ``cgroup/cgroup_attach_task``, filtered to the hierarchy
of the memory controller: each move of a process into a memory cgroup, as
it happens::

    sleep-11455   [000] d..1. 26015.928165: cgroup_attach_task: dst_root=4 dst_id=234071 dst_level=1
        dst_path=/mgtest-x y pid=11455 comm=bash

(one line).  A process moved and killed within milliseconds (a build tool's
sandbox, a CI step, a storm of them) is often read from /proc only as it
exits, when the kernel has already put it back in the root cgroup: the move
says where it ran.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import os
import re

from ..clock import Instant
from ..model import OomKill
from .base import ProbeReading, Unavailable

TRACING = "/sys/kernel/tracing"
INSTANCE = "memguard"

_LINE = re.compile(r"^\s*.*?-\d+\s+\[\d+\]\s+(?:\S+\s+)?(?P<ts>\d+\.\d+):\s+mark_victim:\s+(?P<rest>.*)$")
_FIELD = re.compile(r"([a-z_-]+)[=:](\S+)")
_ATTACH = re.compile(r"^\s*.*?-\d+\s+\[\d+\]\s+(?:\S+\s+)?\d+\.\d+:\s+cgroup_attach_task:\s+dst_root=-?\d+ "
                     r"dst_id=\d+ dst_level=-?\d+ dst_path=(?P<path>.*) pid=(?P<pid>\d+) comm=.*$")
_KB_FIELDS = {"total-vm": "total_vm", "anon-rss": "anon_rss", "file-rss": "file_rss",
              "shmem-rss": "shmem_rss", "pgtables": "pgtables"}


def parse_mark_victim(line: str, seen: float) -> OomKill | None:
    """An OomKill from one trace_pipe line, or None when it is not a
    mark_victim line.  Raises ValueError on a mark_victim line it cannot read."""
    m = _LINE.match(line)
    if m is None:
        return None
    rest = m.group("rest")
    comm = None
    if "comm=" in rest:
        after = rest.split("comm=", 1)[1]
        comm = after.split(" total-vm=", 1)[0] if " total-vm=" in after else after.split(" ", 1)[0]
        rest = rest.replace(f"comm={comm}", "", 1)
    fields = dict(_FIELD.findall(rest))
    if "pid" not in fields:
        raise ValueError(f"mark_victim without a pid: {line!r}")
    kw: dict[str, object] = {}
    for key, name in _KB_FIELDS.items():
        if key in fields:
            kw[name] = int(fields[key].removesuffix("kB")) * 1024
    if "uid" in fields:
        kw["uid"] = int(fields["uid"])
    if "oom_score_adj" in fields:
        kw["oom_score_adj"] = int(fields["oom_score_adj"])
    return OomKill(probe="tracefs", pid=int(fields["pid"]), seen=seen,
                   kernel_time=float(m.group("ts")), comm=comm, **kw)


def parse_attach(line: str) -> tuple[int, str] | None:
    """(pid, memory cgroup path) from a cgroup_attach_task line; None when
    it is not one."""
    m = _ATTACH.match(line)
    return None if m is None else (int(m.group("pid")), m.group("path"))


def memory_hierarchy(text: str) -> int | None:
    """The memory controller's hierarchy id in /proc/cgroups (0: cgroup2's),
    None when the kernel has no memory controller."""
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[0] == "memory" and fields[3] == "1":
            return int(fields[1])
    return None


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def mount_tracefs(path: str = TRACING) -> None:
    """mount -t tracefs nodev PATH.  Raises OSError."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"nodev", path.encode(), b"tracefs", 0, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount -t tracefs nodev {path}: {os.strerror(err)}")


class TracefsProbe:
    name = "tracefs"

    def __init__(self, tracing: str = TRACING, instance: str = INSTANCE, mount: bool = True,
                 proc_cgroups: str = "/proc/cgroups") -> None:
        self.tracing = tracing
        self.proc_cgroups = proc_cgroups
        self.instance = os.path.join(tracing, "instances", instance)
        self.mount = mount
        self.fd: int | None = None
        self.buffer = b""
        self.monotonic = False

    def open(self, now: Instant) -> int:
        if not os.path.isdir(os.path.join(self.tracing, "instances")):
            if not self.mount:
                raise Unavailable(f"tracefs is not mounted at {self.tracing}: "
                                  f"mount -t tracefs nodev {self.tracing} (systemd hosts mount it at boot)")
            try:
                mount_tracefs(self.tracing)
            except OSError as e:
                raise Unavailable(f"tracefs is not mounted and mounting it failed ({e.strerror}); "
                                  "run as root, or mount it: mount -t tracefs nodev " + self.tracing) from None
        event = os.path.join(self.tracing, "events", "oom", "mark_victim")
        if not os.path.isdir(event):
            raise Unavailable("the kernel has no oom:mark_victim tracepoint (Linux >= 4.13 with CONFIG_TRACEPOINTS)")
        try:
            self._remove_instance()  # one left by a daemon that crashed
        except OSError as e:
            if e.errno == errno.EBUSY:
                raise Unavailable(f"the trace instance {self.instance} is in use (by another memguardd?); "
                                  "set probes.tracefs_instance to another name") from None
            raise
        try:
            os.mkdir(self.instance)
            with open(os.path.join(self.instance, "trace_clock")) as f:
                clocks = f.read().replace("[", "").replace("]", "").split()
            if "mono" in clocks:  # since 3.17
                _write(os.path.join(self.instance, "trace_clock"), "mono")
                self.monotonic = True
            percent = os.path.join(self.instance, "buffer_percent")
            if os.path.exists(percent):  # since 5.1; 0: wake the reader at every event, not half a buffer
                _write(percent, "0")
            _write(os.path.join(self.instance, "events", "oom", "mark_victim", "enable"), "1")
            self._follow_moves()
            self.fd = os.open(os.path.join(self.instance, "trace_pipe"), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except PermissionError:
            self._remove_instance()
            raise Unavailable(f"cannot create a trace instance under {self.tracing}: run memguardd as root") from None
        return self.fd

    def _follow_moves(self) -> None:
        """Enable cgroup_attach_task for the memory hierarchy, where the
        kernel has it (a help, not a need: without it, nothing fails)."""
        attach = os.path.join(self.instance, "events", "cgroup", "cgroup_attach_task")
        try:
            with open(self.proc_cgroups) as f:
                hierarchy = memory_hierarchy(f.read())
        except OSError:
            hierarchy = None
        if hierarchy is None or not os.path.isdir(attach):
            return
        _write(os.path.join(attach, "filter"), f"dst_root == {hierarchy}")
        _write(os.path.join(attach, "enable"), "1")

    def read(self, now: Instant) -> ProbeReading:
        reading = ProbeReading()
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            self.buffer += chunk
        *lines, self.buffer = self.buffer.split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", "replace")
            if (moved := parse_attach(line)) is not None:
                reading.moves.append(moved)
                continue
            try:
                kill = parse_mark_victim(line, now.mono)
            except ValueError:
                reading.malformed += 1
                continue
            if kill is not None:
                if not self.monotonic:  # a "local" stamp is not comparable with ours
                    kill = dataclasses.replace(kill, kernel_time=None)
                reading.kills.append(kill)
        return reading

    def close(self) -> None:
        """Close the pipe and remove our instance (raises OSError only if the
        instance cannot be removed for another reason than being gone)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
            self._remove_instance()

    def _remove_instance(self) -> None:
        # rmdir of an instance tears down its buffers and events with it.
        try:
            os.rmdir(self.instance)
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise

"""The process table's feed: exec, fork and exit events from the netlink proc connector.

Kernel: drivers/connector/cn_proc.c (CONFIG_PROC_EVENTS), needs root
(CAP_NET_ADMIN).  At every exec the process's command line, start time,
owner and memory cgroup are read at once, so an incident can name a victim
whose /proc entry is gone by the time the kill is reported.

The socket (cn_proc.py, a plain netlink socket) lives in a thread here: at
every exec the thread reads /proc (a dying process's command line waits on
its mmap lock), off the loop, and posts what it read through a pipe the
daemon's loop watches.
"""

from __future__ import annotations

import collections
import errno
import os
import socket
import threading

from ..clock import Instant
from ..model import ProcessInfo
from ..roots import Roots, read_text
from ..sources.processes import (ENVIRON_READ, JOB_ENV, PAGE_SIZE, parse_cmdline, parse_environ_var,
                                 parse_ppid, parse_proc_cgroup, parse_stat, parse_status_uid)
from .base import ProbeReading, Unavailable
from .cn_proc import ProcEventSocket

# Execs waiting for the loop; a burst beyond this drops the oldest (counted).
QUEUE_LIMIT = 4096
RCVBUF = 4 << 20
KTHREADD = 2          # the parent of every kernel thread (init pid namespace: the proc connector's pids)


def describe(roots: Roots, pid: int) -> ProcessInfo | None:
    """What /proc says of *pid* now, with its parent and its MEMGUARD_JOB
    value; None when it is already gone.  A process already exiting (no
    memory left: an empty command line) has been moved to the root cgroup
    by the kernel (cgroup_exit): where it ran is unknown, not "/"."""
    base = roots.proc_path(str(pid))
    try:
        stat = read_text(os.path.join(base, "stat"))
        comm, rss_pages, start = parse_stat(stat)
        with open(os.path.join(base, "cmdline"), "rb") as f:
            raw = f.read(4096)
        cmdline = parse_cmdline(raw) or f"[{comm}]"
        cgroup = parse_proc_cgroup(read_text(os.path.join(base, "cgroup"))) if raw else None
        uid = parse_status_uid(read_text(os.path.join(base, "status")))
        ppid = parse_ppid(stat)
    except (OSError, ValueError, IndexError):
        return None
    try:
        with open(os.path.join(base, "environ"), "rb") as f:
            job_env = parse_environ_var(f.read(ENVIRON_READ), JOB_ENV)
    except OSError:
        job_env = None    # gone since, or not root: registration needs root
    return ProcessInfo(pid=pid, comm=comm, rss=rss_pages * PAGE_SIZE, cgroup=cgroup, domain=None,
                       cmdline=cmdline, start_time=start, uid=uid, ppid=ppid, job_env=job_env)


def start_time(roots: Roots, pid: int) -> float | None:
    """*pid*'s start time (seconds since boot), None when it is gone: with
    the pid, what tells this process from a later one under the same pid."""
    try:
        return parse_stat(read_text(roots.proc_path(str(pid), "stat")))[2]
    except (OSError, ValueError, IndexError):
        return None


class ProcEventsProbe:
    name = "procevents"

    def __init__(self, roots: Roots) -> None:
        self.roots = roots
        # ProcessInfo at an exec, ("fork", parent, child, start), ("exit", pid)
        self.queue: collections.deque = collections.deque(maxlen=QUEUE_LIMIT)
        self.dropped = 0
        self.malformed = 0
        self.error: str | None = None
        self.rfd = self.wfd = None
        self.thread: threading.Thread | None = None
        self.socket = None
        self.ready = threading.Event()
        self._kthreads: set[int] = set()   # kernel threads forked since we listen: their exits are not told

    def open(self, now: Instant) -> int:
        if os.geteuid() != 0:
            raise Unavailable("the proc connector needs root (CAP_NET_ADMIN)")
        self.rfd, self.wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.error = None
        self.ready.clear()
        self.thread = threading.Thread(target=self._listen, args=(ProcEventSocket, self.wfd),
                                       name="memguard-procevents", daemon=True)
        self.thread.start()
        self.ready.wait(5.0)
        if self.error is not None:
            raise Unavailable(f"the proc connector is not available: {self.error} "
                              "(a kernel without CONFIG_PROC_EVENTS?)")
        return self.rfd

    def _listen(self, socket_class, wfd: int) -> None:
        """The thread: owns the socket and the pipe's write end and closes
        them when it ends, so no descriptor number is used after reuse."""
        sock = None
        try:
            sock = self.socket = socket_class()
            # A burst of forks (make -j) overflows the default buffer: ENOBUFS
            # loses events. 4 MiB holds ~50,000 of them.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
            sock.bind()
            sock.control(listen=True)
        except OSError as e:
            self.error = f"{type(e).__name__}: {e}"
            self.ready.set()
            os.close(wfd)
            if sock is not None:
                sock.release()
            return
        self.ready.set()
        try:
            self._serve(sock, wfd)
        finally:
            os.close(wfd)
            sock.release()

    def _serve(self, sock: ProcEventSocket, wfd: int) -> None:
        while True:
            try:
                messages = sock.get()
            except OSError as e:
                if e.errno == errno.ENOBUFS:  # events were lost; the socket goes on
                    self.dropped += 1
                    continue
                self.error = f"{type(e).__name__}: {e}"
                break
            except ValueError:            # a datagram we could not read: counted, the socket goes on
                self.malformed += 1
                continue
            queued = False
            for m in messages:
                event = m.get("event")
                item = None
                if event == "PROC_EVENT_EXEC":
                    item = describe(self.roots, m["process_tgid"])
                elif event == "PROC_EVENT_FORK" and m["child_pid"] == m["child_tgid"]:  # a process, not a thread
                    if m["parent_tgid"] == KTHREADD:   # a kernel thread (a kworker): no memory of its own
                        self._kthreads.add(m["child_tgid"])
                        continue
                    start = start_time(self.roots, m["child_tgid"])   # None: gone already
                    if start is not None:
                        item = ("fork", m["parent_tgid"], m["child_tgid"], start)
                elif event == "PROC_EVENT_EXIT" and m["process_pid"] == m["process_tgid"]:
                    if m["process_tgid"] in self._kthreads:
                        self._kthreads.discard(m["process_tgid"])
                        continue
                    item = ("exit", m["process_tgid"])
                if item is not None:
                    if len(self.queue) == self.queue.maxlen:
                        self.dropped += 1
                    self.queue.append(item)
                    queued = True
            if not queued:
                continue    # nothing for the loop (a thread's fork, a kworker): let it sleep
            try:
                os.write(wfd, b"\0")
            except BlockingIOError:
                continue  # the loop has a wake-up pending already
            except BrokenPipeError:
                break  # the read end is closed: the probe is stopping

    def read(self, now: Instant) -> ProbeReading:
        while True:
            try:
                if not os.read(self.rfd, 4096):
                    break
            except BlockingIOError:
                break
        if self.thread is not None and not self.thread.is_alive():
            raise OSError(f"the proc connector thread stopped: {self.error}")
        reading = ProbeReading()
        for _ in range(len(self.queue)):
            item = self.queue.popleft()
            if isinstance(item, ProcessInfo):
                reading.processes.append(item)
            elif item[0] == "fork":
                reading.forks.append((item[1], item[2], item[3]))
            else:
                reading.exits.append(item[1])
        reading.lost, self.dropped = self.dropped, 0
        reading.malformed, self.malformed = self.malformed, 0
        return reading

    def close(self) -> None:
        if self.socket is not None:
            self.socket.close()  # the thread's get() wakes and it ends
            self.socket = None
        if self.rfd is not None:
            os.close(self.rfd)
        self.rfd = self.wfd = None

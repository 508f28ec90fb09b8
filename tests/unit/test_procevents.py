"""The proc connector probe's listening thread (memguard.probes.procevents):
what it queues, and when it wakes the daemon's loop.  The socket is a
stand-in fed the decoded messages cn_proc.ProcEventSocket.get() returns
(tests/unit/test_cn_proc.py reads real ones); /proc is the real one."""

from __future__ import annotations

import os
import subprocess

from memguard.probes.procevents import KTHREADD, ProcEventsProbe
from memguard.roots import Roots


class Batches:
    """get() returns each batch in turn, then fails as a closed socket does."""

    def __init__(self, batches):
        self.batches = list(batches)

    def get(self):
        if not self.batches:
            raise OSError(9, "closed")
        return self.batches.pop(0)


def fork(parent: int, child: int) -> dict:
    return {"event": "PROC_EVENT_FORK", "parent_pid": parent, "parent_tgid": parent,
            "child_pid": child, "child_tgid": child}


def exit_(pid: int) -> dict:
    return {"event": "PROC_EVENT_EXIT", "process_pid": pid, "process_tgid": pid, "exit_code": 0}


def serve(*batches) -> tuple[ProcEventsProbe, int]:
    """The probe's queue after the thread's loop served *batches*, and how
    many times it woke the loop (bytes written to its pipe)."""
    probe = ProcEventsProbe(Roots())
    rfd, wfd = os.pipe2(os.O_NONBLOCK)
    try:
        probe._serve(Batches(batches), wfd)
        try:
            wakes = len(os.read(rfd, 4096))
        except BlockingIOError:
            wakes = 0
    finally:
        os.close(rfd)
        os.close(wfd)
    return probe, wakes


def test_kernel_threads_neither_queue_nor_wake_the_loop():
    # a kworker forked by kthreadd and exiting: nothing the daemon tracks
    probe, wakes = serve([fork(KTHREADD, 4242424)], [exit_(4242424)])
    assert list(probe.queue) == [] and wakes == 0


def test_a_process_forked_and_exiting_is_queued_and_wakes_the_loop():
    child = subprocess.Popen(["sleep", "30"])
    try:
        probe, wakes = serve([fork(os.getpid(), child.pid)], [exit_(child.pid)])
    finally:
        child.kill()
        child.wait()
    (forked, exited) = probe.queue
    assert forked[:3] == ("fork", os.getpid(), child.pid) and exited == ("exit", child.pid)
    assert wakes == 2

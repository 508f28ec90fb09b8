"""The kmsg probe: the kernel's own OOM report, read from /dev/kmsg.

Kernel docs: Documentation/ABI/testing/dev-kmsg.  Each read(2) returns one
record, ``prio,seq,usec,flags;message``; a reader that falls behind the ring
(128 KiB here) gets EPIPE once and continues at the oldest record left: the
records in between are lost, and we count them.  The report's lines arrive
as separate records and are assembled by :mod:`.oom_report`.

Where the daemon starts matters (issue 11, "no kill goes unseen"): in the
same boot as the cursor it saved, it resumes after the last record it read,
and kills found there are marked found late; after a reboot (or without a
cursor) it starts at the end.

The record's ``usec`` is the kernel's local clock, close to but not equal to
CLOCK_MONOTONIC (~80 ppm apart here): :func:`calibrate` writes a marker
record between two clock_gettime() calls and reads its stamp back.
"""

from __future__ import annotations

import errno
import os
import time
import uuid

from ..clock import Instant
from ..model import OomKill
from .base import ProbeReading, Unavailable
from .oom_report import KmsgRecord, OomReport, OomReportAssembler, parse_record

READ_SIZE = 8192  # a record is at most 1 KiB of text (CONSOLE_EXT_LOG_MAX 8 KiB)


def calibrate(path: str) -> tuple[float, int] | None:
    """(``CLOCK_MONOTONIC - kmsg usec`` in seconds, the marker's seq), or
    None when we may not write to /dev/kmsg (not root).  The marker is
    logged at debug level; every record before its seq was there before we
    started."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except PermissionError:
        return None
    try:
        os.lseek(fd, 0, os.SEEK_END)
        marker = f"memguard: clock calibration {uuid.uuid4().hex}"
        before = time.clock_gettime(time.CLOCK_MONOTONIC)
        os.write(fd, f"<7>{marker}\n".encode())
        after = time.clock_gettime(time.CLOCK_MONOTONIC)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            try:
                rec = parse_record(os.read(fd, READ_SIZE))
            except BlockingIOError:
                time.sleep(0.001)
                continue
            except (OSError, ValueError):
                continue  # EPIPE or a record we cannot parse: keep looking
            if marker in rec.message:
                return (before + after) / 2 - rec.usec / 1e6, rec.seq
        return None
    finally:
        os.close(fd)


def kills_of(report: OomReport, seen: float, offset: float | None, backlog: bool = False) -> list[OomKill]:
    """One OomKill per victim the report names (kernel_time None without a
    calibration); *backlog*: it happened before the daemon started."""
    out = []
    for v in report.victims:
        out.append(OomKill(
            probe="kmsg", pid=v.pid, seen=seen,
            kernel_time=None if offset is None else v.usec / 1e6 + offset,
            comm=v.comm, uid=v.uid, total_vm=v.total_vm, anon_rss=v.anon_rss, file_rss=v.file_rss,
            shmem_rss=v.shmem_rss, pgtables=v.pgtables, oom_score_adj=v.oom_score_adj,
            constraint=report.constraint, oom_memcg=report.oom_memcg, task_memcg=report.task_memcg,
            report=report, backlog=backlog))
    return out


class KmsgProbe:
    name = "kmsg"

    def __init__(self, path: str = "/dev/kmsg", resume_seq: int | None = None) -> None:
        self.path = path
        self.resume_seq = resume_seq
        self.fd: int | None = None
        self.assembler = OomReportAssembler()
        self.offset: float | None = None
        self.start_seq: int | None = None   # records before this were written before we started
        self.last_seq: int | None = None
        self.started_at_seq: int | None = None
        self.resumed = False
        self.last_usec = 0

    def open(self, now: Instant) -> int:
        if self.last_seq is not None:
            self.resume_seq = self.last_seq  # reopened after a failure: go on where we were
            self.started_at_seq = None
        try:
            self.fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            raise Unavailable(f"{self.path} does not exist (a container without /dev/kmsg?)") from None
        except PermissionError:
            raise Unavailable(f"cannot read {self.path}: run memguardd as root "
                              "(or with CAP_SYSLOG when kernel.dmesg_restrict=1)") from None
        calibration = calibrate(self.path)
        if calibration is not None:
            self.offset, self.start_seq = calibration
        if self.resume_seq is None:
            os.lseek(self.fd, 0, os.SEEK_END)
            if self.start_seq is not None:
                self.last_seq = self.start_seq  # the cursor to save: everything up to our marker
        else:
            os.lseek(self.fd, 0, os.SEEK_SET)  # the oldest record still in the ring
            self.resumed = True
        return self.fd

    def read(self, now: Instant) -> ProbeReading:
        reading = ProbeReading()
        while True:
            try:
                raw = os.read(self.fd, READ_SIZE)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno == errno.EPIPE:  # overwritten before we read it; the
                    self.assembler.lost(None)  # gap in seq numbers says how many
                    continue
                raise
            if not raw:
                break
            try:
                rec = parse_record(raw)
            except ValueError:
                reading.malformed += 1
                continue
            self._account(rec, reading)
            if self.resume_seq is not None and rec.seq <= self.resume_seq:
                continue  # read before the restart
            backlog = self.start_seq is not None and rec.seq < self.start_seq
            for report in self.assembler.feed(rec):
                reading.kills += kills_of(report, now.mono, self.offset, backlog)
        if self.last_seq is not None:
            for report in self.assembler.expire(self.last_usec):
                reading.kills += kills_of(report, now.mono, self.offset)
        return reading

    def _account(self, rec: KmsgRecord, reading: ProbeReading) -> None:
        if self.started_at_seq is None:
            self.started_at_seq = rec.seq
            if self.resume_seq is not None and rec.seq > self.resume_seq + 1:
                # the ring moved on past our cursor while we were down
                reading.lost += rec.seq - self.resume_seq - 1
        elif self.last_seq is not None and rec.seq > self.last_seq + 1:
            reading.lost += rec.seq - self.last_seq - 1
        self.last_seq = rec.seq
        self.last_usec = rec.usec

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

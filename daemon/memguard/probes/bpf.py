"""The eBPF probe, seen from the daemon: a child process and its pipe.

The child (:mod:`.bpf_child`) loads probes/oomkill.bpf.c with BCC and writes
one JSON record per line; here we start it with a Python that can import
Debian's ``bcc``, watch its stdout, and turn records into OomKill events and
per-cgroup reclaim stall totals.  When it dies the daemon's probe host opens
it again after a back-off.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from ..clock import Instant
from ..model import OomKill
from .base import ProbeReading, Unavailable

PACKAGE_PARENT = Path(__file__).resolve().parents[2]     # daemon/
PROBES_DIR = Path(__file__).resolve().parent / "ebpf"   # probes/, as package data
MAX_LINE = 1 << 20


def parse_record(line: bytes, seen: float) -> tuple[str, object]:
    """(type, payload) of one child record: an OomKill for ``oom_victim``,
    the record itself otherwise.  Raises ValueError on a line that is not one."""
    rec = json.loads(line)
    if not isinstance(rec, dict) or "type" not in rec:
        raise ValueError("not a record")
    if rec["type"] != "oom_victim":
        return rec["type"], rec

    def kb(name):
        value = rec.get(f"{name}_kb")
        return None if value is None else int(value) * 1024
    return "oom_victim", OomKill(
        probe="bpf", pid=int(rec["pid"]), seen=seen, kernel_time=int(rec["ktime_ns"]) / 1e9,
        comm=rec.get("comm") or None, uid=rec.get("uid"), total_vm=kb("total_vm"),
        anon_rss=kb("anon_rss"), file_rss=kb("file_rss"), shmem_rss=kb("shmem_rss"),
        pgtables=kb("pgtables"), oom_score_adj=rec.get("oom_score_adj"))


class BpfProbe:
    name = "bpf"

    def __init__(self, python: str = "/usr/bin/python3", probes_dir: Path = PROBES_DIR,
                 reclaim_interval: float = 1.0) -> None:
        self.python = python
        self.probes_dir = probes_dir
        self.reclaim_interval = reclaim_interval
        self.child: subprocess.Popen | None = None
        self.buffer = b""
        self.hello: dict | None = None
        self.decode_errors = 0

    def open(self, now: Instant) -> int:
        if os.geteuid() != 0:
            raise Unavailable("loading BPF programs needs root")
        if not os.access(self.python, os.X_OK):
            raise Unavailable(f"{self.python} not found: set probes.bpf_python to a Python "
                              "that can import bcc (Debian: apt-get install python3-bpfcc)")
        if not (self.probes_dir / "oomkill.bpf.c").is_file():
            raise Unavailable(f"{self.probes_dir}/oomkill.bpf.c not found")
        env = dict(os.environ, PYTHONPATH=str(PACKAGE_PARENT))
        self.child = subprocess.Popen(
            [self.python, "-m", "memguard.probes.bpf_child", "--probes-dir", str(self.probes_dir),
             "--reclaim-interval", str(self.reclaim_interval)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, env=env, close_fds=True)
        fd = self.child.stdout.fileno()
        os.set_blocking(fd, False)
        self.buffer = b""
        self.decode_errors = 0
        return fd

    def read(self, now: Instant) -> ProbeReading:
        reading = ProbeReading()
        eof = False
        while True:
            try:
                chunk = os.read(self.child.stdout.fileno(), 65536)
            except BlockingIOError:
                break
            if not chunk:
                eof = True
                break
            self.buffer += chunk
        *lines, self.buffer = self.buffer.split(b"\n")
        if len(self.buffer) > MAX_LINE:
            self.buffer = b""
            reading.malformed += 1
        for line in lines:
            try:
                kind, payload = parse_record(line, now.mono)
            except (ValueError, KeyError, TypeError):
                reading.malformed += 1
                continue
            if kind == "oom_victim":
                reading.kills.append(payload)
            elif kind == "reclaim":
                try:
                    reading.reclaim = {
                        c.get("path") or f"id:{c['cgroup_id']}": (int(c["count"]), int(c["stall_ns_total"]) / 1e9)
                        for c in payload.get("cgroups", ())}
                    total = int(payload.get("decode_errors", 0))  # a running total
                except (KeyError, TypeError, ValueError, AttributeError):
                    reading.malformed += 1
                    continue
                reading.malformed += max(0, total - self.decode_errors)
                self.decode_errors = total
            elif kind == "hello":
                self.hello = payload
                reading.facts.update(load_seconds=payload.get("load_seconds"),
                                     victim_fields=payload.get("victim_fields"),
                                     child_pid=payload.get("pid"), child_rss_kb=payload.get("rss_kb"))
            elif kind == "error":
                raise ValueError(payload.get("message", "the BPF child failed"))
        if eof:
            try:
                status = self.child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                status = "unknown (it closed its output but did not exit)"
            raise EOFError(f"the BPF child exited with status {status}")
        return reading

    def close(self) -> None:
        if self.child is None:
            return
        if self.child.poll() is None:
            self.child.terminate()
            try:
                self.child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.child.kill()
                self.child.wait(timeout=5)
        self.child.stdout.close()
        self.child = None

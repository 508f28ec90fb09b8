"""memguard for the program itself: register, and hear warnings as callbacks.

    from memguard import client

    def shrink(event):            # runs in a background thread: keep it short
        global batch_size
        batch_size //= 2

    reg = client.register("train", on_warning=shrink)
    ...
    reg.latest                    # the last event heard, or None
    reg.close()

or ``with client.register("train", on_warning=shrink): ...``.  An event is
a dict: ``event`` ("warning" or "critical"), ``rule``, ``severity``,
``domain``, ``job``, ``tto_seconds``, ``confidence``,
``rate_bytes_per_second``, ``usage_ratio``.  The process registers itself
(memguardd knows it by its pid and start time from the socket's peer
credentials); the processes it forks later belong to the job too.  Without
a running memguardd, register() warns once and returns a registration that
hears nothing: the program runs on as it would without memguard.
"""

from __future__ import annotations

import json
import os
import pickle
import socket
import threading
import warnings
from typing import Callable

from .api import protocol
from .cli.client import default_sockets
from .jobs.spec import JobSpec, format_job, parse_job

Callback = Callable[[dict], None]
_warned = False


class Registration:
    """A job's registration; ``active`` is False when no daemon answered."""

    def __init__(self, sock: socket.socket | None, job: str | None, on_warning: Callback | None,
                 on_critical: Callback | None, gpu_stats_every: float | None = None,
                 socket_path: str | None = None) -> None:
        self.job = job
        self.latest: dict | None = None
        self._sock = sock
        self._callbacks = {"warning": on_warning, "critical": on_critical}
        self._threads: list[threading.Thread] = []
        self._stopped = threading.Event()
        if sock is not None:
            self._threads.append(threading.Thread(target=self._listen, name="memguard-client", daemon=True))
            if gpu_stats_every:
                self._threads.append(threading.Thread(target=self._report, args=(gpu_stats_every, socket_path),
                                                      name="memguard-client-gpu", daemon=True))
            for thread in self._threads:
                thread.start()

    def _report(self, every: float, socket_path: str | None) -> None:
        """The allocator's figures every *every* seconds, while registered."""
        while not self._stopped.wait(every):
            report_allocator(socket_path=socket_path)

    @property
    def active(self) -> bool:
        return self._sock is not None

    def _listen(self) -> None:
        buf = b""
        while self._sock is not None:
            try:
                chunk = self._sock.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                self.latest = event
                callback = self._callbacks.get(event.get("event"))
                if callback is not None:
                    callback(event)

    def close(self) -> None:
        self._stopped.set()
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        # Wait for our threads: one still running when the interpreter
        # finalizes is ended by pthread_exit, which aborts a process that
        # loaded PyTorch ("terminate called without an active exception",
        # pytorch/pytorch#38228).  A callback calling close() cannot wait for itself.
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=5.0)

    def __enter__(self) -> "Registration":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def register(name: str, *, on_warning: Callback | None = None, on_critical: Callback | None = None,
             socket_path: str | None = None, timeout: float = 5.0,
             gpu_stats_every: float | None = None) -> Registration:
    """Register this process as job *name*; the callbacks run (in a
    background thread) when a rule warns of its domain, and at critical;
    with *gpu_stats_every*, PyTorch's CUDA allocator figures are sent that
    often (report_allocator).  Raises ValueError for a bad name."""
    global _warned
    value = format_job(JobSpec(name))
    parse_job(value)
    for path in ([socket_path] if socket_path else default_sockets()):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(path)
            sock.sendall(protocol.request("register", {"registration": value, "notify": True}))
            answer = _read_line(sock)
        except OSError:
            sock.close()
            continue
        if not answer.get("ok"):
            sock.close()
            raise ValueError(f"memguardd refused the registration: {answer.get('error', {}).get('message')}")
        sock.settimeout(None)
        return Registration(sock, answer["result"]["job"], on_warning, on_critical, gpu_stats_every, path)
    if not _warned:
        warnings.warn("memguard: no memguardd answered; running unregistered (no warnings will come)",
                      RuntimeWarning, stacklevel=2)
        _warned = True
    return Registration(None, None, on_warning, on_critical)


# torch.cuda.memory_stats() keys sent with a CUDA OOM, under shorter names.
ALLOCATOR_STATS = {"allocated_bytes.all.current": "allocated_bytes", "reserved_bytes.all.current": "reserved_bytes",
                   "active_bytes.all.current": "active_bytes",
                   "inactive_split_bytes.all.current": "inactive_split_bytes",
                   "allocated_bytes.all.peak": "allocated_peak_bytes", "reserved_bytes.all.peak": "reserved_peak_bytes",
                   "num_alloc_retries": "num_alloc_retries", "num_ooms": "num_ooms"}


def allocator_stats(device=None) -> dict:
    """The figures of PyTorch's CUDA caching allocator memguard keeps
    (``torch.cuda.memory_stats``), under ALLOCATOR_STATS's names."""
    import torch
    raw = torch.cuda.memory_stats(device)
    return {short: raw[key] for key, short in ALLOCATOR_STATS.items() if key in raw}


def report_gpu_oom(error: BaseException | str, *, device: int | None = None, stats: dict | None = None,
                   summary: str | None = None, snapshot: bool | str | dict = False,
                   socket_path: str | None = None, timeout: float = 5.0) -> str | None:
    """Tell memguardd that a CUDA allocation failed: it writes an incident of
    kind ``gpu_oom`` (``memguardctl incident show``) with the allocator's
    figures (read from PyTorch when *stats* is None) and its summary.
    Returns the incident's id, or None when no memguardd answered: a
    report must never make a failing program fail differently.

        torch.cuda.memory._record_memory_history()     # where the allocations came from
        try:
            train()
        except torch.cuda.OutOfMemoryError as e:
            client.report_gpu_oom(e, device=0, snapshot="oom.pickle")
            raise

    With *snapshot* (True, a path, or a snapshot already taken), the
    allocator's memory snapshot (``torch.cuda.memory._snapshot``) is summed
    up in the incident (snapshot_summary: which code holds the memory, the
    largest free block, the size that failed); given a path, the whole
    snapshot is written there too, for https://pytorch.org/memory_viz."""
    if stats is None:
        try:
            import torch
            stats = allocator_stats(device)
            summary = summary if summary is not None else torch.cuda.memory_summary(device)
        except Exception:       # no torch, no CUDA: the message alone still says what happened
            stats = {}
    summary = None if summary is None else summary[:32768]      # a request is one line of at most 64 KiB
    params = {"device": device, "message": str(error)[:4096], "stats": stats, "summary": summary}
    if snapshot is not False:
        params["snapshot"] = _snapshot(snapshot, device)
    result = _call("gpu_oom", params, socket_path, timeout)
    return None if result is None else result["incident"]


def _snapshot(snapshot: bool | str | dict, device: int | None) -> dict | None:
    """The summary of *snapshot* (taken now when True or a path), with the
    path the whole of it was written to; None when there is none to take."""
    path = None
    try:
        if not isinstance(snapshot, dict):
            import torch
            if isinstance(snapshot, str):
                path = os.path.abspath(snapshot)
            snapshot = torch.cuda.memory._snapshot(device)
        if path is not None:
            tmp = f"{path}.tmp-{os.getpid()}"
            with open(tmp, "wb") as f:
                pickle.dump(snapshot, f)
            os.replace(tmp, path)
        return {**snapshot_summary(snapshot), "path": path}
    except Exception:           # no torch, no CUDA, no room to write: the report still goes
        return None


# The code that holds the most is named at most this many times.
SNAPSHOT_SITES = 10


def snapshot_summary(snapshot: dict) -> dict:
    """What a CUDA memory snapshot (``torch.cuda.memory._snapshot()``; its
    format is in that function's docstring) says about an out-of-memory
    error, small enough for one request: what the segments reserve and hold,
    the largest free block (an allocation larger than it needs a new
    segment, however much is free in all), the size that failed (from the
    trace, where the job recorded its history), and the code holding the
    most: live blocks by the innermost frame outside torch."""
    segments = snapshot.get("segments", ())
    reserved = sum(seg.get("total_size", 0) for seg in segments)
    allocated = sum(seg.get("allocated_size", 0) for seg in segments)
    free = [b.get("size", 0) for seg in segments for b in seg.get("blocks", ()) if b.get("state") == "inactive"]
    sites: dict[str, list[int]] = {}
    for seg in segments:
        for block in seg.get("blocks", ()):
            if block.get("state") == "active_allocated":
                held = sites.setdefault(_site(block.get("frames") or ()), [0, 0])
                held[0] += block.get("size", 0)
                held[1] += 1
    failed = next((entry.get("size") for trace in reversed(snapshot.get("device_traces") or ())
                   for entry in reversed(trace or ()) if entry.get("action") == "oom"), None)
    top = sorted(sites.items(), key=lambda item: -item[1][0])[:SNAPSHOT_SITES]
    return {"segments": len(segments), "reserved_bytes": reserved, "allocated_bytes": allocated,
            "free_bytes": sum(free), "largest_free_bytes": max(free, default=0), "failed_bytes": failed,
            "sites": [{"site": site[:512], "bytes": b, "blocks": n} for site, (b, n) in top]}


def _site(frames) -> str:
    """Where a block was allocated: its innermost frame outside PyTorch."""
    for frame in frames:
        name = frame.get("filename", "")
        if name and name != "??" and "/torch/" not in name and not name.endswith((".cpp", ".h", ".cu")):
            return f"{name}:{frame.get('line')} {frame.get('name', '')}".rstrip()
    return "unknown (no history recorded: torch.cuda.memory._record_memory_history())"


def report_allocator(*, device: int | None = None, stats: dict | None = None, socket_path: str | None = None,
                     timeout: float = 2.0) -> bool:
    """Send the CUDA caching allocator's figures now (read from PyTorch when
    *stats* is None): memguardd keeps the last of each job and device, for
    status, /metrics (fragmentation per job) and rules (``job.gpu_*``).
    Whether a memguardd took them.  ``register(..., gpu_stats_every=10)``
    sends them periodically."""
    if stats is None:
        try:
            stats = allocator_stats(device)
        except Exception:      # no torch, no CUDA
            return False
    return _call("allocator", {"device": device, "stats": stats}, socket_path, timeout) is not None


def _call(method: str, params: dict, socket_path: str | None, timeout: float) -> dict | None:
    """One request on a connection of its own: its result, or None when no
    memguardd answered or it refused."""
    for path in ([socket_path] if socket_path else default_sockets()):
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout)
                sock.connect(path)
                sock.sendall(protocol.request(method, params))
                answer = _read_line(sock)
        except (OSError, ValueError):
            continue
        return answer["result"] if answer.get("ok") else None
    return None


def _read_line(sock: socket.socket) -> dict:
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("memguardd closed the connection")
        buf += chunk
    return json.loads(buf)

"""The BPF probe's child process: loads ``probes/oomkill.bpf.c`` with BCC and
streams what it sees to stdout as newline-delimited JSON.

    python -m memguard.probes.bpf_child --probes-dir DIR [--reclaim-interval 1]

Why a child: ``import bcc`` alone raises a Python process's RSS from 8 MB to
~73 MB and compiling takes ~150 MB more for a moment; the daemon must not
carry that, so it runs this module with a Python that can import Debian's
``python3-bpfcc`` (``/usr/bin/python3`` or a venv made from it with
``--system-site-packages``) and reads the pipe. Only the standard library
and ``bcc`` are used here.

Kernel interfaces: the tracepoints ``oom:mark_victim`` and
``vmscan:mm_vmscan_{memcg,direct}_reclaim_{begin,end}``
(Documentation/trace/events.rst). The program is built from the live format
file, e.g. on Linux 6.18::

    field:int pid;  offset:8;  size:4;  signed:1;
    field:__data_loc char[] comm;  offset:12;  size:4;  signed:0;
    field:unsigned long total_vm;  offset:16;  size:8;  signed:0;
    ...

while 4.13 up to 6.8 list only ``pid``: absent fields are ``null`` in the
records, never 0.

Records, one JSON object per line, each flushed at once (``v`` is this
format's version, 1):

- ``{"type": "hello", "fields": [...], "load_seconds": ...}`` once loaded;
  also ``victim_fields`` (the oom_victim keys that carry values),
  ``tracepoints``, ``import_seconds``, ``rss_kb``, ``rss_anon_kb``, ``pid``,
  ``kernel``, ``ktime_ns``.
- ``{"type": "oom_victim", "pid", "comm", "ktime_ns", "total_vm_kb",
  "anon_rss_kb", "file_rss_kb", "shmem_rss_kb", "pgtables_kb", "uid",
  "oom_score_adj", "comm_source", "killer_pid", "killer_tgid",
  "killer_comm", "killer_cgroup_id", "received_ns"}`` per victim, as soon as
  it arrives. ``ktime_ns`` is the kernel's CLOCK_MONOTONIC at the
  tracepoint, ``received_ns`` ours when decoded. ``comm_source`` says where
  ``comm`` came from: ``tracepoint``, ``killer`` (the victim was the task
  that invoked the OOM killer), ``proc`` (/proc/PID/comm, read at once), or
  null.
- ``{"type": "reclaim", "ktime_ns", "cgroups": [{"cgroup_id", "path",
  "count", "stall_ns_total", "max_stall_ns", "memcg_count",
  "memcg_stall_ns", "direct_count", "direct_stall_ns"}], "tasks": [{"tgid",
  ...same totals}], "events": {...}, "decode_errors"}`` every
  ``--reclaim-interval`` seconds when a reclaim tracepoint fired (or a
  record failed to decode, or the last one had a cgroup without its path)
  since the last one, and at once for the first reclaim after a quiet
  spell (the program wakes the child; a quiet child sleeps in poll()):
  cumulative totals since load. ``cgroup_id``
  is the cgroup2 id (on a hybrid host not the v1 memory cgroup: map through
  ``tasks`` and /proc/PID/cgroup); ``path`` is its path under the cgroup2
  mount, or null. A task's entry is reported one last time after it exits,
  then dropped.
- ``{"type": "error", "message": ...}`` when loading fails (the message says
  how to fix it), then exit status 1.

Exit status: 0 when stdout is closed, the parent dies (PR_SET_PDEATHSIG) or
SIGTERM/SIGINT/SIGHUP arrive; 1 after an error record; 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import select
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

FORMAT_VERSION = 1
BPF_SOURCE = "oomkill.bpf.c"
TRACING_DIRS = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))
MARK_VICTIM = ("oom", "mark_victim")
# Defines the program takes, per tracepoint pair (see oomkill.bpf.c).
RECLAIM_TRACEPOINTS = {
    "MG_HAVE_MEMCG_RECLAIM": ("mm_vmscan_memcg_reclaim_begin", "mm_vmscan_memcg_reclaim_end"),
    "MG_HAVE_DIRECT_RECLAIM": ("mm_vmscan_direct_reclaim_begin", "mm_vmscan_direct_reclaim_end"),
}
# oom:mark_victim fields after pid and comm (Linux 6.9+) -> the record's key.
VICTIM_FIELDS = {
    "total_vm": "total_vm_kb",
    "anon_rss": "anon_rss_kb",
    "file_rss": "file_rss_kb",
    "shmem_rss": "shmem_rss_kb",
    "pgtables": "pgtables_kb",
    "uid": "uid",
    "oom_score_adj": "oom_score_adj",
}
VICTIM_KEYS = ("pid", "comm", *VICTIM_FIELDS.values())
# include/uapi/linux/capability.h
CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 21, 38, 39
PR_SET_PDEATHSIG = 1  # include/uapi/linux/prctl.h
FIX_SETUP = "run packaging/probe-setup as root"


class LoadError(Exception):
    """The probe cannot start here; the message says why and how to fix it."""


class StreamClosed(Exception):
    """Nobody reads our stdout any more."""


# ------------------------------------------------------------ format files


@dataclass(frozen=True)
class Field:
    name: str
    type: str       # as the format file writes it: "int", "__data_loc char[]", "char[16]"
    size: int

    @property
    def data_loc(self) -> bool:
        return self.type.startswith("__data_loc")


_FIELD_LINE = re.compile(r"^\s*field:(?P<decl>[^;]+);\s*offset:\d+;\s*size:(?P<size>\d+);")


def parse_format(text: str) -> dict[str, Field]:
    """The non-common fields of a tracepoint format file, by name, in order.
    Lines it cannot read are skipped (an empty dict when none can)."""
    fields = {}
    for line in text.splitlines():
        m = _FIELD_LINE.match(line)
        if m is None:
            continue
        decl = m.group("decl").strip()
        # "unsigned long total_vm", "__data_loc char[] comm", "char comm[16]"
        dm = re.match(r"^(?P<type>.*?)\s*\b(?P<name>\w+)(?P<dims>(\[\d*\])*)$", decl)
        if dm is None:
            continue
        name = dm.group("name")
        if name.startswith("common_"):
            continue
        fields[name] = Field(name, (dm.group("type") + dm.group("dims")).strip(), int(m.group("size")))
    return fields


def victim_cflags(fields: dict[str, Field]) -> list[str]:
    """The -D defines for oomkill.bpf.c's victim handler, from mark_victim's fields."""
    flags = []
    comm = fields.get("comm")
    if comm is not None:
        flags.append("-DMG_VICTIM_COMM_DATA_LOC" if comm.data_loc else "-DMG_VICTIM_COMM_ARRAY")
    flags += [f"-DMG_VICTIM_HAS_{name.upper()}" for name in VICTIM_FIELDS if name in fields]
    return flags


def tracing_dir() -> Path | None:
    """The tracefs directory whose events/ BCC will read, or None when neither
    /sys/kernel/tracing nor debugfs's tracing holds an events/ directory."""
    return next((d for d in TRACING_DIRS if (d / "events").is_dir()), None)


# --------------------------------------------------------------- preflight


def _effective_caps() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def check_privileges() -> None:
    caps = _effective_caps()
    if caps & (1 << CAP_SYS_ADMIN) or (caps & (1 << CAP_BPF) and caps & (1 << CAP_PERFMON)):
        return
    raise LoadError("not privileged: loading BPF programs needs root (CAP_SYS_ADMIN, or CAP_BPF "
                    "with CAP_PERFMON); run memguardd as root or disable the bpf probe")


def check_headers(release: str) -> None:
    """BCC compiles against /lib/modules/RELEASE/build (and, with Debian's
    split header packages, source), or the kernel's own /sys/kernel/kheaders.tar.xz."""
    if Path("/sys/kernel/kheaders.tar.xz").exists():
        return
    modules = Path("/lib/modules") / release
    build, source = modules / "build", modules / "source"
    if not build.exists():
        raise LoadError(f"kernel headers missing: {build} does not exist; {FIX_SETUP} (it links "
                        "the installed Debian headers; install them first with "
                        "apt-get install linux-headers-amd64)")
    kconfig = Path("include/linux/kconfig.h")
    if not (build / kconfig).exists() and not (source / kconfig).exists():
        raise LoadError(f"kernel headers incomplete: neither {build} nor {source} has {kconfig} "
                        f"(Debian keeps it in linux-headers-*-common); {FIX_SETUP}")


def read_formats(tracing: Path | None, assume_fields: list[str] | None):
    """(mark_victim's fields, the reclaim defines whose tracepoints exist).
    Raises LoadError when tracefs or oom:mark_victim is missing."""
    if tracing is None:
        raise LoadError("tracefs is not mounted (no /sys/kernel/tracing/events): "
                        f"{FIX_SETUP}, or mount it: mount -t tracefs nodev /sys/kernel/tracing")
    victim_format = tracing / "events" / MARK_VICTIM[0] / MARK_VICTIM[1] / "format"
    try:
        fields = parse_format(victim_format.read_text())
    except FileNotFoundError:
        raise LoadError(f"no tracepoint oom:mark_victim ({victim_format} is missing): it needs "
                        "Linux 4.13 or later") from None
    except OSError as e:
        raise LoadError(f"cannot read {victim_format}: {e}; the probe must run as root") from None
    if "pid" not in fields:
        raise LoadError(f"{victim_format} has no pid field; cannot use oom:mark_victim here")
    if assume_fields is not None:
        unknown = [f for f in assume_fields if f not in fields]
        if unknown:
            raise LoadError(f"--assume-fields names fields this kernel lacks: {', '.join(unknown)}")
        fields = {n: f for n, f in fields.items() if n in assume_fields or n == "pid"}
    reclaim = [define for define, events in RECLAIM_TRACEPOINTS.items()
               if all((tracing / "events" / "vmscan" / e / "format").exists() for e in events)]
    return fields, reclaim


# ------------------------------------------------------------------ output


class Emitter:
    """Writes one JSON object per line to a file descriptor, whole."""

    def __init__(self, fd: int):
        self.fd = fd

    def emit(self, record: dict) -> None:
        data = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        try:
            while data:
                data = data[os.write(self.fd, data):]
        except (BrokenPipeError, ConnectionResetError):
            raise StreamClosed() from None


def take_stdout() -> Emitter:
    """Keep the real stdout for our records and point fd 1 at stderr, so a
    stray print (BCC prints some warnings to stdout) cannot corrupt the stream."""
    fd = os.dup(1)
    os.set_inheritable(fd, False)
    try:
        os.dup2(2, 1)
    except OSError:  # no stderr either
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.close(null)
    return Emitter(fd)


def die_with_parent() -> None:
    """SIGTERM when the parent exits (PR_SET_PDEATHSIG), and exit at once if
    it is already gone."""
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        print(f"bpf_child: prctl(PR_SET_PDEATHSIG): {os.strerror(err)}", file=sys.stderr)
    if os.getppid() != parent:
        raise SystemExit(0)


def _exit_on_signal(signum, _frame) -> None:
    # Once: a second signal must not interrupt BCC's own clean-up at exit.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    raise SystemExit(0)


def memory_kb() -> tuple[int | None, int | None]:
    """(VmRSS, RssAnon) of this process in kB; None for one not found."""
    values = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "RssAnon"):
            values[key] = int(rest.split()[0])
    return values.get("VmRSS"), values.get("RssAnon")


MADV_PAGEOUT = 21   # since 5.4: reclaim these pages now (clean file pages are dropped)


def release_compiler_memory(bpf) -> None:
    """Give back what compiling left on the heap (LLVM's caches), and the
    pages of libbcc's code the compile touched once (LLVM and clang are
    linked into it: ~80 MB of clean file pages that stay resident, counted
    in this process' RSS, until memory runs short): paged out now, they
    come back only if the code runs again."""
    bpf.free_bcc_memory()
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    try:
        libc.malloc_trim(0)
    except AttributeError:  # not glibc: nothing to trim
        pass
    libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    for start, end in _library_mappings(("libbcc", "libLLVM", "libclang")):
        libc.madvise(start, end - start, MADV_PAGEOUT)   # best effort: an old kernel says EINVAL


def _library_mappings(names: tuple[str, ...]) -> list[tuple[int, int]]:
    """(start, end) of this process' file mappings of the libraries whose
    file name starts with one of *names*."""
    out = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 6 and os.path.basename(fields[5]).startswith(names):
            start, end = (int(x, 16) for x in fields[0].split("-"))
            out.append((start, end))
    return out


# ---------------------------------------------------------------- decoding


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


class VictimDecoder:
    """Turns ring buffer records (struct mg_oom_victim) into oom_victim dicts.
    The layout is the one BCC derives from oomkill.h (RingBuf.event())."""

    def __init__(self, table, fields: dict[str, Field]):
        self.table = table
        self.present = {"pid", *(VICTIM_FIELDS[n] for n in VICTIM_FIELDS if n in fields)}
        if "comm" in fields:
            self.present.add("comm")
        # Decoding a zeroed buffer once makes BCC build its ctypes class now,
        # where a failure is a load error, not a lost record.
        zero = ctypes.create_string_buffer(4096)
        try:
            self.size = ctypes.sizeof(type(table.event(zero)))
        except SystemExit as e:  # BCC's _get_event_class exits on an unknown type
            raise LoadError(f"BCC cannot decode struct mg_oom_victim of oomkill.h (exit {e.code}); "
                            "the header must use u64/u32/s32/char[N] only") from None

    def decode(self, data, size: int, received_ns: int) -> dict:
        """The record; ValueError when its size is not struct mg_oom_victim's."""
        if size != self.size:
            raise ValueError(f"record of {size} bytes, struct mg_oom_victim has {self.size}")
        e = self.table.event(data)
        record = {"type": "oom_victim", "v": FORMAT_VERSION, "ktime_ns": e.ktime_ns,
                  "pid": e.pid, "comm": _text(bytes(e.comm))}
        for name, key in VICTIM_FIELDS.items():
            record[key] = getattr(e, key)
        for key in VICTIM_KEYS:
            if key not in self.present:
                record[key] = None
        record["comm_source"] = "tracepoint" if record["comm"] is not None else None
        record.update(killer_pid=e.killer_pid, killer_tgid=e.killer_tgid,
                      killer_comm=_text(bytes(e.killer_comm)),
                      killer_cgroup_id=e.killer_cgroup_id, received_ns=received_ns)
        if record["comm"] is None:
            fill_comm(record)
        return record


def fill_comm(record: dict) -> None:
    """For kernels whose tracepoint has no comm: the invoking task's, when it
    is the victim, or /proc/PID/comm while the victim is still there."""
    if record["pid"] in (record["killer_pid"], record["killer_tgid"]):
        record.update(comm=record["killer_comm"], comm_source="killer")
        return
    try:
        record.update(comm=Path(f"/proc/{record['pid']}/comm").read_text().rstrip("\n"),
                      comm_source="proc")
    except OSError:
        pass  # the victim is gone already: comm stays null


# ----------------------------------------------------------------- reclaim


def _mounts_of_type(fstype: str) -> list[Path]:
    return [Path(line.split()[1]) for line in Path("/proc/self/mounts").read_text().splitlines()
            if line.split()[2] == fstype]


class CgroupPaths:
    """cgroup2 id -> path under the cgroup2 mount. On 64-bit kernels a
    cgroup's id is its directory's inode number (kernfs, Linux 5.5+). Walks
    the tree again when an unknown id shows up, at most once per call."""

    def __init__(self):
        mounts = _mounts_of_type("cgroup2")
        self.mount = mounts[0] if mounts else None
        self.paths: dict[int, str] = {}
        self.walked = False  # whether the last lookup() walked the tree

    def _walk(self) -> dict[int, str]:
        found, stack = {}, [(self.mount, "/")]
        while stack:
            directory, path = stack.pop()
            try:
                found[os.stat(directory).st_ino] = path
                with os.scandir(directory) as entries:
                    for entry in entries:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append((Path(entry.path), path.rstrip("/") + "/" + entry.name))
            except OSError:
                continue  # removed while we walked
        return found

    def lookup(self, ids) -> dict[int, str | None]:
        self.walked = False
        if self.mount is not None and any(i not in self.paths for i in ids):
            self.paths = self._walk()
            self.walked = True
        return {i: self.paths.get(i) for i in ids}


def _totals(stall) -> dict:
    return {"count": stall.memcg_count + stall.direct_count,
            "stall_ns_total": stall.memcg_ns + stall.direct_ns,
            "max_stall_ns": stall.max_ns,
            "memcg_count": stall.memcg_count, "memcg_stall_ns": stall.memcg_ns,
            "direct_count": stall.direct_count, "direct_stall_ns": stall.direct_ns}


class ReclaimReporter:
    def __init__(self, bpf):
        self.by_cgroup = bpf["stall_by_cgroup"]
        self.by_tgid = bpf["stall_by_tgid"]
        self.counters = bpf["counters"]
        self.paths = CgroupPaths()
        self.last: tuple | None = None     # (events, decode errors) of the last report
        self.unresolved = False            # the last report had a cgroup without its path

    def record(self, decode_errors: int) -> dict | None:
        """The report, or None when no reclaim tracepoint fired and no record
        failed to decode since the last one (its totals would be the same:
        an idle host's child neither walks its maps nor wakes the daemon)."""
        counters = self.counters[0]
        events = {name: getattr(counters, name) for name, _ in counters._fields_}
        if (events, decode_errors) == self.last and not self.unresolved:
            return None
        self.last = (events, decode_errors)
        cgroups = {k.value: _totals(v) for k, v in self.by_cgroup.items()}
        paths = self.paths.lookup(cgroups)
        tasks = {k.value: _totals(v) for k, v in self.by_tgid.items()}
        counters = self.counters[0]    # again, after the maps: the totals never run ahead of the events
        record = {
            "type": "reclaim", "v": FORMAT_VERSION,
            "ktime_ns": time.clock_gettime_ns(time.CLOCK_MONOTONIC),
            "cgroups": [{"cgroup_id": i, "path": paths[i], **t} for i, t in sorted(cgroups.items())],
            "tasks": [{"tgid": i, **t} for i, t in sorted(tasks.items())],
            "events": {name: getattr(counters, name) for name, _ in counters._fields_},
            "decode_errors": decode_errors,
        }
        self._prune(tasks, paths)
        # a cgroup made since the last walk has no path yet: report again once it has
        self.unresolved = any(c["path"] is None for c in record["cgroups"])
        return record

    def _prune(self, tasks, paths) -> None:
        """Drop the entries of exited tasks and removed cgroups, now that their
        final totals went out, so the maps hold the living only."""
        for tgid in tasks:
            if not os.path.exists(f"/proc/{tgid}"):
                self._delete(self.by_tgid, tgid)
        if self.paths.walked:  # an id the fresh walk did not find is gone
            for cgroup_id, path in paths.items():
                if path is None:
                    self._delete(self.by_cgroup, cgroup_id)

    @staticmethod
    def _delete(table, key) -> None:
        try:
            del table[table.Key(key)]
        except KeyError:
            pass  # deleted already


# -------------------------------------------------------------------- main


def load(probes_dir: Path, fields: dict[str, Field], reclaim: list[str]):
    """The loaded bcc.BPF object. Raises LoadError with the fix."""
    try:
        import bcc
    except ImportError as e:
        raise LoadError(f"cannot import bcc ({e}) in {sys.executable}: install python3-bpfcc "
                        "(apt-get install python3-bpfcc) and run this with /usr/bin/python3 or "
                        "a venv made from it with --system-site-packages") from None
    source = probes_dir / BPF_SOURCE
    cflags = [f"-I{probes_dir}", *victim_cflags(fields), *(f"-D{d}" for d in reclaim)]
    try:
        return bcc.BPF(src_file=str(source).encode(), cflags=cflags)
    except Exception as e:  # noqa: BLE001 - bcc raises bare Exception
        raise LoadError(f"BCC could not compile or attach {source}: {e} (the compiler's messages "
                        f"are on stderr); if they name missing headers or an incomplete "
                        f"'struct tracepoint__...', {FIX_SETUP}") from None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    default_dir = Path(__file__).resolve().parents[3] / "probes"
    p = argparse.ArgumentParser(prog="python -m memguard.probes.bpf_child",
                                description="memguard's BPF probe: NDJSON records on stdout")
    p.add_argument("--probes-dir", type=Path, default=default_dir,
                   help=f"the directory holding {BPF_SOURCE} and oomkill.h (default: {default_dir})")
    p.add_argument("--reclaim-interval", type=float, default=1.0,
                   help="seconds between reclaim records (default 1)")
    p.add_argument("--assume-fields", type=lambda s: [f for f in s.split(",") if f],
                   help="build as if oom:mark_victim listed only these fields (comma-separated; "
                        "pid is always kept): tests the pre-6.9 program on a newer kernel")
    args = p.parse_args(argv)
    args.probes_dir = args.probes_dir.resolve()  # BCC's clang does not run in our cwd
    if args.reclaim_interval <= 0:
        p.error("--reclaim-interval must be positive")
    return args


def start(args, out: Emitter):
    """Load the program; emit hello. Returns (bpf, decoder, pending list)."""
    release = os.uname().release
    check_privileges()
    fields, reclaim = read_formats(tracing_dir(), args.assume_fields)
    check_headers(release)
    if not (args.probes_dir / BPF_SOURCE).is_file():
        raise LoadError(f"{args.probes_dir / BPF_SOURCE} not found: pass --probes-dir, the "
                        "directory of memguard's probes/")
    t0 = time.monotonic()
    bpf = load(args.probes_dir, fields, reclaim)
    load_seconds = time.monotonic() - t0
    decoder = VictimDecoder(bpf["victims"], fields)
    pending: list[dict] = []
    state = {"decode_errors": 0, "stop": False}

    def on_record(_ctx, data, size) -> int:
        # Runs inside ring_buffer_consume: must never raise (ctypes would print
        # and drop it); SystemExit from a signal handler stops the loop.
        try:
            pending.append(decoder.decode(data, size, time.clock_gettime_ns(time.CLOCK_MONOTONIC)))
        except SystemExit:
            state["stop"] = True
        except Exception:  # noqa: BLE001 - counted, reported in every reclaim record
            state["decode_errors"] += 1
        return 0

    bpf["victims"].open_ring_buffer(on_record)
    release_compiler_memory(bpf)
    rss, anon = memory_kb()
    out.emit({"type": "hello", "v": FORMAT_VERSION, "pid": os.getpid(), "kernel": release,
              "fields": list(fields), "victim_fields": sorted(decoder.present),
              "tracepoints": ["oom:mark_victim", *(f"vmscan:{e}" for d in reclaim
                                                   for e in RECLAIM_TRACEPOINTS[d])],
              "load_seconds": round(load_seconds, 3), "rss_kb": rss, "rss_anon_kb": anon,
              "ktime_ns": time.clock_gettime_ns(time.CLOCK_MONOTONIC)})
    return bpf, pending, state


def run(bpf, pending: list[dict], state: dict, out: Emitter, args) -> None:
    """Sleep in poll() on the two ring buffers and stdout: a victim is
    decoded and written as it comes; the reclaim maps are looked at every
    interval while reclaim goes on.  Before each look the program is told
    the child is ``quiet``, and wakes it at the next reclaim event
    (oomkill.bpf.c): an idle host's child never wakes on a timer."""
    reporter = ReclaimReporter(bpf)
    interval_ns = int(args.reclaim_interval * 1e9)
    quiet = bpf["quiet"]
    woken = []

    def on_wake(_ctx, _data, _size) -> int:
        woken.append(True)
        return 0
    bpf["wakes"].open_ring_buffer(on_wake)
    waiting = select.poll()
    for table in ("victims", "wakes"):
        waiting.register(bpf[table].map_fd, select.POLLIN)
    waiting.register(out.fd, 0)   # POLLERR/POLLHUP: the daemon closed the pipe
    due: int | None = time.monotonic_ns()   # the next look; None: asleep until the program wakes us
    told = -interval_ns    # when the last look since load that found something new was made
    while not state["stop"]:
        timeout = None if due is None else max(0, (due - time.monotonic_ns()) // 1_000_000)
        if any(fd == out.fd for fd, _ in waiting.poll(timeout)):
            return
        errors = state["decode_errors"]
        bpf.ring_buffer_consume()
        while pending:
            out.emit(pending.pop(0))
        if due is None and (woken or state["decode_errors"] != errors):
            # at once after a quiet spell; while reclaim goes on, a record per interval
            due = max(time.monotonic_ns(), told + interval_ns)
        woken.clear()
        if due is None or time.monotonic_ns() < due:
            continue
        # Quiet before the look: an event the look misses wakes us again.
        quiet[0] = ctypes.c_uint(1)
        first = reporter.last is None     # the totals at load: no news of reclaim
        report = reporter.record(state["decode_errors"])
        looked, due = time.monotonic_ns(), None
        if report is not None:
            out.emit(report)
            told = -interval_ns if first else looked
            if reporter.unresolved:       # a cgroup without its path yet: look again
                due = looked + interval_ns


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, _exit_on_signal)
    die_with_parent()
    out = take_stdout()
    try:
        bpf, pending, state = start(args, out)
        run(bpf, pending, state, out, args)
    except LoadError as e:
        try:
            out.emit({"type": "error", "v": FORMAT_VERSION, "message": str(e)})
        except StreamClosed:
            pass
        print(f"bpf_child: {e}", file=sys.stderr)
        return 1
    except StreamClosed:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())

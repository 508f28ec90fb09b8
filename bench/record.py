"""Record a memory trace of one command run inside its own limited memory cgroup.

    .venv/bin/python bench/record.py --name NAME --limit 512MiB [--interval 50ms]
        [--max-seconds 600] [--out bench/traces] [--description TEXT]
        [--family FAMILY] [--round N] -- CMD ARGS...

What it does, in order:

1. makes ``mgtrace-<random>`` under the v1 memory root
   (``/sys/fs/cgroup/memory``) and sets ``memory.limit_in_bytes`` *before*
   anything enters it; makes the same path under the cgroup2 mount
   (``/sys/fs/cgroup/unified``) so the command's tasks have a
   ``memory.pressure`` file of their own;
2. opens ``/dev/kmsg`` at its end and calibrates the kmsg clock against
   CLOCK_MONOTONIC (a marker record written between two clock reads, as
   /work/shared/HOST.md "Clocks" says; again at the end, and kill times are
   interpolated between the two);
3. starts CMD, which moves itself into both cgroups in a ``preexec_fn``
   before it execs, so nothing it runs allocates outside the limit;
4. samples the cgroup every ``--interval`` until CMD exits (or
   ``--max-seconds`` pass, when everything in the cgroup is killed), reading
   the kernel's OOM reports from kmsg as they arrive;
5. ends every process left in the cgroup (SIGTERM, then SIGKILL after 2 s;
   by pidfd, checked to be in our cgroup), removes both cgroups, also on failure, Ctrl-C, SIGTERM or SIGHUP,
   and writes ``NAME.csv`` (``NAME.csv.gz`` when larger than 64 KiB) and the
   sidecar ``NAME.json``.  The format is described in bench/traces/README.md.

Needs root, the hybrid cgroup layout of this host (v1 memory controller) and
PSI for the pressure columns (they are empty without it).  The recorder
itself runs outside the limit; it keeps only the samples in memory.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import errno
import gzip
import json
import os
import platform
import re
import select
import signal
import subprocess
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._cgroups import Interrupted, exit_on_signals, write_file  # noqa: E402
from memguard.probes.oom_report import OomReportAssembler, parse_record  # noqa: E402
from memguard.units import parse_duration, parse_size  # noqa: E402

V1_MEMORY = "/sys/fs/cgroup/memory"
UNIFIED = "/sys/fs/cgroup/unified"
PREFIX = "mgtrace-"
FORMAT_VERSION = 1
GZIP_ABOVE = 64 * 1024          # bytes of CSV text
OUTPUT_TAIL = 4000              # characters of the command's output kept in the sidecar
CLEANUP_TIMEOUT_S = 10.0        # exiting tasks leave cgroup.procs in ms; rmdir may say EBUSY a bit longer
TERM_GRACE_S = 2.0              # SIGTERM first, so a workload's own cleanup (trap, finally) can run
KILL_DRAIN_S = 2.0              # after exit, how long to wait for kmsg lines the oom_kill counter promises
KMSG_READ = 8192

COLUMNS = ("t_ms", "usage_kib", "working_set_kib", "total_rss_kib", "total_cache_kib",
           "total_inactive_file_kib", "total_active_file_kib", "total_shmem_kib",
           "total_mapped_file_kib", "oom_kill", "psi_some_avg10", "psi_full_avg10",
           "psi_some_total_us", "psi_full_total_us", "limit_kib")
STAT_FIELDS = ("total_rss", "total_cache", "total_inactive_file", "total_active_file",
               "total_shmem", "total_mapped_file")


def _argument(parse):
    """*parse* (memguard.units) as an argparse type: its ValueError says what was expected."""
    def convert(text: str):
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return convert


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def meminfo_kib(key: str) -> int:
    m = re.search(rf"^{key}:\s+(\d+) kB", _read("/proc/meminfo"), re.M)
    return int(m.group(1)) if m else 0


# ---------------------------------------------------------------- the cgroup


class TraceCgroup:
    """``mgtrace-<random>`` on the v1 memory root (with its limit) and, when
    there is a cgroup2 mount, its twin there.  :meth:`close` ends what is in it
    and removes both; it is safe to call twice."""

    def __init__(self, limit: int) -> None:
        self.name = PREFIX + uuid.uuid4().hex[:8]
        self.v1 = os.path.join(V1_MEMORY, self.name)
        self.v2 = os.path.join(UNIFIED, self.name)
        self.limit = limit
        self.made: list[str] = []

    def open(self) -> None:
        if not os.path.exists(os.path.join(V1_MEMORY, "memory.limit_in_bytes")):
            raise SystemExit(f"record.py: no v1 memory controller at {V1_MEMORY}; this recorder "
                             "needs the hybrid cgroup layout of /work/shared/HOST.md (and root)")
        os.mkdir(self.v1)
        self.made.append(self.v1)
        write_file(os.path.join(self.v1, "memory.limit_in_bytes"), str(self.limit))
        set_limit = int(_read(os.path.join(self.v1, "memory.limit_in_bytes")))
        if set_limit > self.limit:
            raise RuntimeError(f"{self.v1}: limit reads back as {set_limit}, not {self.limit}")
        self.limit = set_limit  # rounded down to a page
        if os.path.exists(os.path.join(UNIFIED, "cgroup.procs")):
            os.mkdir(self.v2)
            self.made.append(self.v2)

    def procs_files(self) -> tuple[str, ...]:
        return tuple(os.path.join(p, "cgroup.procs") for p in self.made)

    def sample(self, t_ms: int) -> list:
        """One CSV row (see COLUMNS); None for a pressure field we cannot read."""
        usage = int(_read(os.path.join(self.v1, "memory.usage_in_bytes")))
        stat = dict(line.split() for line in _read(os.path.join(self.v1, "memory.stat")).splitlines())
        oom = dict(line.split() for line in _read(os.path.join(self.v1, "memory.oom_control")).splitlines())
        values = [int(stat[k]) for k in STAT_FIELDS]
        inactive_file = values[2]
        psi = self._pressure()
        return [t_ms, usage // 1024, max(usage - inactive_file, 0) // 1024,
                *(v // 1024 for v in values), int(oom.get("oom_kill", 0)), *psi, self.limit // 1024]

    def _pressure(self) -> list:
        """some avg10, full avg10 (the kernel's text, percent), some total, full total (µs)."""
        try:
            text = _read(os.path.join(self.v2, "memory.pressure"))
        except OSError:
            return [None, None, None, None]
        fields = {}
        for line in text.splitlines():
            kind, *pairs = line.split()
            fields[kind] = dict(p.split("=") for p in pairs)
        some, full = fields.get("some", {}), fields.get("full", {})
        return [some.get("avg10"), full.get("avg10"),
                int(some["total"]) if "total" in some else None,
                int(full["total"]) if "total" in full else None]

    def oom_kill_count(self) -> int:
        oom = dict(line.split() for line in _read(os.path.join(self.v1, "memory.oom_control")).splitlines())
        return int(oom.get("oom_kill", 0))

    def members(self) -> list[int]:
        pids: set[int] = set()
        for path in self.procs_files():
            try:
                pids.update(int(x) for x in _read(path).split())
            except FileNotFoundError:
                pass
        return sorted(pids)

    def _holds(self, pid: int) -> bool:
        try:
            text = _read(f"/proc/{pid}/cgroup")
        except OSError:
            return False
        return any(line.split(":", 2)[2] == "/" + self.name for line in text.splitlines()
                   if line.count(":") >= 2)

    def kill_members(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to each process in our cgroup: its pidfd is opened
        first, then its membership checked, so a reused pid is never signalled."""
        for pid in self.members():
            try:
                fd = os.pidfd_open(pid)
            except ProcessLookupError:
                continue
            try:
                if self._holds(pid):
                    signal.pidfd_send_signal(fd, sig)
            except ProcessLookupError:
                pass
            finally:
                os.close(fd)

    def end_members(self) -> None:
        """SIGTERM what is in the cgroup, then SIGKILL what is left after
        TERM_GRACE_S."""
        if not self.made or not self.members():
            return
        self.kill_members(signal.SIGTERM)
        deadline = time.monotonic() + TERM_GRACE_S
        while self.members() and time.monotonic() < deadline:
            time.sleep(0.02)
        self.kill_members()

    def close(self) -> list[str]:
        """End every process in the cgroup and remove it; what could not be done."""
        problems = []
        self.end_members()
        deadline = time.monotonic() + CLEANUP_TIMEOUT_S
        while self.made and self.members():
            self.kill_members()
            if time.monotonic() >= deadline:
                problems.append(f"{self.name}: processes {self.members()} did not exit")
                break
            time.sleep(0.02)
        for path in reversed(self.made):
            if not os.path.basename(path).startswith(PREFIX):
                problems.append(f"{path}: refusing to remove a cgroup that is not {PREFIX}*")
                continue
            while True:
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError as e:
                    if e.errno != errno.EBUSY or time.monotonic() >= deadline:
                        problems.append(f"{path}: {e.strerror}")
                        break
                    time.sleep(0.02)
        self.made = []
        return problems


# ---------------------------------------------------------------- kmsg


def calibrate() -> tuple[float, float] | None:
    """(CLOCK_MONOTONIC - kmsg usec in seconds, the clock-read uncertainty in
    seconds), from a marker record; None when /dev/kmsg cannot be written."""
    try:
        fd = os.open("/dev/kmsg", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        os.lseek(fd, 0, os.SEEK_END)
        marker = f"mgtrace: clock calibration {uuid.uuid4().hex}"
        before = time.monotonic()
        os.write(fd, f"<7>{marker}\n".encode())
        after = time.monotonic()
        deadline = after + 1.0
        while time.monotonic() < deadline:
            try:
                rec = parse_record(os.read(fd, KMSG_READ))
            except BlockingIOError:
                time.sleep(0.001)
                continue
            except (OSError, ValueError):
                continue  # EPIPE: we fell behind; or a record we cannot read: keep looking
            if marker in rec.message:
                return (before + after) / 2 - rec.usec / 1e6, (after - before) / 2
        return None
    finally:
        os.close(fd)


class KmsgKills:
    """Reads /dev/kmsg from where it was opened, through the daemon's own
    parser (memguard.probes.oom_report), and keeps the OOM kills whose
    ``oom_memcg`` is our cgroup (or below it)."""

    def __init__(self, cgroup_name: str) -> None:
        self.memcg = "/" + cgroup_name
        self.fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        os.lseek(self.fd, 0, os.SEEK_END)
        self.lost = 0                  # times the ring overran us (EPIPE)
        self.kills: list[dict] = []    # usec-stamped, converted to t at the end
        self._reports = OomReportAssembler()
        self._seen: set[tuple[int, int]] = set()   # (victim pid, its seq): a report is emitted again as it grows

    def read(self) -> None:
        while True:
            try:
                raw = os.read(self.fd, KMSG_READ)
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno == errno.EPIPE:
                    self.lost += 1
                    self._reports.lost(None)
                    continue
                raise
            try:
                rec = parse_record(raw)
            except ValueError:
                continue
            for report in self._reports.feed(rec):
                self._keep(report)

    def _keep(self, report) -> None:
        memcg = report.oom_memcg
        if memcg is None or not (memcg == self.memcg or memcg.startswith(self.memcg + "/")):
            return
        for v in report.victims:
            if (v.pid, v.seq) in self._seen:
                continue
            self._seen.add((v.pid, v.seq))
            kib = {name: None if size is None else size // 1024 for name, size in (
                ("total_vm_kib", v.total_vm), ("anon_rss_kib", v.anon_rss), ("file_rss_kib", v.file_rss),
                ("shmem_rss_kib", v.shmem_rss))}
            # usec: the moment SIGKILL was sent; invoked_usec: the report's header
            self.kills.append({"pid": v.pid, "comm": v.comm, "usec": v.usec, "invoked_usec": report.usec,
                               "seq": v.seq, **kib})

    def close(self) -> None:
        os.close(self.fd)


# ---------------------------------------------------------------- recording


def start_command(argv: list[str], procs_files: tuple[str, ...]) -> subprocess.Popen:
    def enter() -> None:
        pid = str(os.getpid())
        for path in procs_files:
            write_file(path, pid)
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, close_fds=True, start_new_session=True,
                            preexec_fn=enter)


class Recording:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rows: list[list] = []
        self.output = collections.deque(maxlen=OUTPUT_TAIL)
        self.skipped = 0       # sampling slots skipped because a sample ran past them
        self.timed_out = False
        self.interrupted = False
        self.returncode: int | None = None
        self.t0 = 0.0
        self.started = ""
        self.end = 0.0

    def run(self, cg: TraceCgroup, kmsg: KmsgKills) -> None:
        args = self.args
        self.started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")
        self.t0 = time.monotonic()
        child = start_command(args.command, cg.procs_files())
        out_fd = child.stdout.fileno()
        os.set_blocking(out_fd, False)
        next_tick = self.t0
        try:
            while True:
                now = time.monotonic()
                self.rows.append(cg.sample(round((now - self.t0) * 1000)))
                kmsg.read()
                if child.poll() is not None:
                    break
                if now - self.t0 >= args.max_seconds:
                    self.timed_out = True
                    cg.end_members()
                    child.wait(timeout=CLEANUP_TIMEOUT_S)
                    break
                next_tick += args.interval
                if next_tick < time.monotonic():
                    skipped = int((time.monotonic() - next_tick) // args.interval) + 1
                    self.skipped += skipped
                    next_tick += skipped * args.interval
                self._wait_until(next_tick, kmsg, out_fd)
            self.returncode = child.returncode
            self.end = time.monotonic()
            # One sample after the exit: what the cgroup holds once the command is gone.
            self.rows.append(cg.sample(round((self.end - self.t0) * 1000)))
            self._drain(out_fd)
            deadline = time.monotonic() + KILL_DRAIN_S
            while len(kmsg.kills) < cg.oom_kill_count() and time.monotonic() < deadline:
                time.sleep(0.02)
                kmsg.read()
        finally:
            if child.poll() is None:
                cg.end_members()
                try:
                    child.wait(timeout=CLEANUP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    pass
            child.stdout.close()
            if self.returncode is None:
                self.returncode = child.returncode
            if not self.end:
                self.end = time.monotonic()

    def _wait_until(self, when: float, kmsg: KmsgKills, out_fd: int) -> None:
        while True:
            left = when - time.monotonic()
            if left <= 0:
                return
            ready, _, _ = select.select([fd for fd in (kmsg.fd, out_fd) if fd >= 0], [], [], left)
            if kmsg.fd in ready:
                kmsg.read()
            if out_fd in ready and not self._drain(out_fd):
                time.sleep(max(when - time.monotonic(), 0))  # EOF: children closed the pipe
                return

    def _drain(self, fd: int) -> bool:
        """Read what the command wrote; False at end of file."""
        while True:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                return True
            except OSError:
                return False
            if not data:
                return False
            text = data.decode("utf-8", "replace")
            self.output.extend(text)
            if not self.args.quiet:
                sys.stderr.write(text)


def kill_times(kills: list[dict], t0: float, cal_start, cal_end, t_end: float) -> list[dict]:
    """Kills with ``t`` (s since start, CLOCK_MONOTONIC): the kmsg stamp plus
    an offset interpolated between the two calibrations."""
    out = []
    for k in kills:
        item = {key: v for key, v in k.items() if key not in ("usec", "invoked_usec", "seq")}
        offset = None
        if cal_start and cal_end:
            frac = min(max((k["usec"] / 1e6 + cal_start[0] - t0) / max(t_end - t0, 1e-9), 0.0), 1.0)
            offset = cal_start[0] + frac * (cal_end[0] - cal_start[0])
        elif cal_start or cal_end:
            offset = (cal_start or cal_end)[0]
        item["t"] = None if offset is None else round(k["usec"] / 1e6 + offset - t0, 4)
        if k.get("invoked_usec") is not None and offset is not None:
            item["oom_invoked_t"] = round(k["invoked_usec"] / 1e6 + offset - t0, 4)
        item["source"] = "kmsg"
        out.append(dict(t=item.pop("t"), pid=item.pop("pid"), comm=item.pop("comm"), **item))
    return out


def counter_only_kills(rows: list[list], seen: int) -> list[dict]:
    """Kills the oom_kill counter shows but kmsg did not (ring overrun, or
    no /dev/kmsg): t is the first sample where the counter reached it."""
    col = COLUMNS.index("oom_kill")
    out, count = [], 0
    for row in rows:
        while row[col] > count:
            count += 1
            if count > seen:
                out.append({"t": row[0] / 1000, "pid": None, "comm": None, "source": "oom_kill counter"})
    return out


def write_outputs(rec: Recording, cg: TraceCgroup, kmsg: KmsgKills | None, cal_start, cal_end) -> str:
    args = rec.args
    os.makedirs(args.out, exist_ok=True)
    lines = [",".join(COLUMNS)]
    lines += [",".join("" if v is None else str(v) for v in row) for row in rec.rows]
    text = "\n".join(lines) + "\n"
    base = os.path.join(args.out, args.name)
    if len(text) > GZIP_ABOVE:
        samples_file = args.name + ".csv.gz"
        with open(base + ".csv.gz", "wb") as f:
            with gzip.GzipFile(filename=args.name + ".csv", mode="wb", fileobj=f, mtime=0) as gz:
                gz.write(text.encode())
        stale = base + ".csv"
    else:
        samples_file = args.name + ".csv"
        with open(base + ".csv", "w") as f:
            f.write(text)
        stale = base + ".csv.gz"
    if os.path.exists(stale):
        os.remove(stale)

    kills = kill_times(kmsg.kills if kmsg else [], rec.t0, cal_start, cal_end, rec.end)
    kills += counter_only_kills(rec.rows, len(kills))
    rc = rec.returncode
    usage_col = COLUMNS.index("usage_kib")
    sidecar = {
        "format_version": FORMAT_VERSION,
        "name": args.name,
        "description": args.description,
        "command": args.command,
        "limit_bytes": cg.limit,
        "interval": args.interval,
        "started": rec.started,
        "duration": round(rec.end - rec.t0, 3),
        "exit_status": rc if rc is not None and rc >= 0 else None,
        "exit_signal": -rc if rc is not None and rc < 0 else None,
        "exit_signal_name": signal.Signals(-rc).name if rc is not None and rc < 0 else None,
        "killed": bool(kills),
        "kills": kills,
        "timed_out": rec.timed_out,
        "interrupted": rec.interrupted,
        "samples_file": samples_file,
        "columns": list(COLUMNS),
        "samples": len(rec.rows),
        "skipped_ticks": rec.skipped,
        "max_usage_bytes": max((r[usage_col] for r in rec.rows), default=0) * 1024,
        "cgroup": "/" + cg.name,
        "clock": {
            "samples": "t_ms = CLOCK_MONOTONIC at the sample's first read minus CLOCK_MONOTONIC "
                       "just before the command was started",
            "kmsg_offset_start_s": cal_start and round(cal_start[0], 6),
            "kmsg_offset_end_s": cal_end and round(cal_end[0], 6),
            "calibration_uncertainty_s": cal_start and round(cal_start[1], 6),
        },
        "kmsg_overruns": kmsg.lost if kmsg else None,
        "host": {
            "kernel": platform.release(),
            "nproc": os.cpu_count(),
            "memory_bytes": meminfo_kib("MemTotal") * 1024,
            "swap_bytes": meminfo_kib("SwapTotal") * 1024,
        },
        "output_tail": "".join(rec.output),
    }
    if args.family:
        sidecar["family"] = args.family
    if args.round != 1:
        sidecar["round"] = args.round
    with open(base + ".json", "w") as f:
        json.dump(sidecar, f, indent=2)
        f.write("\n")
    return base


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", required=True, help="trace name: NAME.csv[.gz] and NAME.json")
    p.add_argument("--limit", required=True, type=_argument(parse_size), help="memory limit, e.g. 512MiB")
    p.add_argument("--interval", type=_argument(parse_duration), default=0.05, help="sampling interval (50ms)")
    p.add_argument("--max-seconds", type=float, default=600.0,
                   help="kill the command after this long (600)")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "traces"),
                   help="output folder (bench/traces)")
    p.add_argument("--description", default="", help="free text for the sidecar")
    p.add_argument("--family", default=None,
                   help="workload family: all its traces land in one set (bench/traces/README.md)")
    p.add_argument("--round", type=int, default=1,
                   help="recording round; 2 and later are held out as the fresh set (README)")
    p.add_argument("--quiet", action="store_true", help="do not echo the command's output")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    args = p.parse_args(argv)
    if args.command and args.command[0] == "--":
        args.command = args.command[1:]
    if not args.command:
        p.error("give the command after --")
    if not re.fullmatch(r"[A-Za-z0-9._-]+", args.name):
        p.error("--name: letters, digits, '.', '_' and '-' only")
    half = meminfo_kib("MemTotal") * 1024 // 2
    if not 4 * 1024 * 1024 <= args.limit <= half:
        p.error(f"--limit must be between 4MiB and half of this machine's memory ({half} bytes)")
    if args.interval <= 0:
        p.error("--interval must be positive")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    exit_on_signals()

    cg = TraceCgroup(args.limit)
    rec = Recording(args)
    kmsg = None
    cal_start = cal_end = None
    problems: list[str] = []
    try:
        cg.open()
        try:
            kmsg = KmsgKills(cg.name)
        except OSError as e:
            print(f"record.py: cannot read /dev/kmsg ({e}); kills will come from the oom_kill "
                  "counter only, without pid or comm", file=sys.stderr)
        cal_start = calibrate()
        try:
            rec.run(cg, kmsg or _NoKmsg())
        except Interrupted as e:
            rec.interrupted = True
            print(f"record.py: {e}; cleaning up and writing what was recorded", file=sys.stderr)
        cal_end = calibrate()
        if kmsg:
            kmsg.read()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not stop the cleanup
        problems = cg.close()
        if kmsg:
            kmsg.close()
    for why in problems:
        print(f"record.py: cleanup: {why}", file=sys.stderr)
    if not rec.rows:
        return 1
    base = write_outputs(rec, cg, kmsg, cal_start, cal_end)
    with open(base + ".json") as f:
        meta = json.load(f)
    print(f"record.py: {base}.json: {meta['duration']:.1f} s, {meta['samples']} samples, "
          f"peak {meta['max_usage_bytes'] >> 20} MiB of {cg.limit >> 20} MiB, "
          f"exit {meta['exit_status'] if meta['exit_signal'] is None else meta['exit_signal_name']}, "
          f"kills {[(k['t'], k['pid'], k['comm']) for k in meta['kills']]}", file=sys.stderr)
    return 130 if rec.interrupted else (1 if problems else 0)


class _NoKmsg:
    """Stands in for :class:`KmsgKills` when /dev/kmsg cannot be read."""
    fd = -1
    kills: list = []
    lost = 0

    def read(self) -> None:
        pass


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

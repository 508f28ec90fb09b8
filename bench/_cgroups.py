"""What the benchmarks share: throw-away limited cgroups full of tiny
processes, the facts of the machine, and writing one section of
docs/benchmarks.md.

Safety rules kept here (the same as tests/kernel.py's, with another prefix):

- every cgroup made is ``mgbench-<run id>-<n>``, a direct child of the v1
  memory root (plus the same path on the cgroup2 mount, so it has a
  ``memory.pressure`` file), with a memory limit set *before* any process
  enters it; the machine's own ``process_api`` cgroup is never touched;
- every process is started by us and moved into its cgroup by its own
  ``preexec_fn`` before ``exec``, so it allocates nothing outside a limit;
- cleanup ends only the processes we started, by pid, then removes only the
  cgroups we made; it runs from ``finally`` and on SIGINT, SIGTERM and SIGHUP
  (turned into exceptions by :func:`exit_on_signals`), and every wait in it
  has a deadline.
"""

from __future__ import annotations

import datetime
import errno
import os
import platform
import re
import signal
import subprocess
import time
import uuid

V1_MEMORY = "/sys/fs/cgroup/memory"
UNIFIED = "/sys/fs/cgroup/unified"
PREFIX = "mgbench-"
MIB = 1 << 20

# An exiting task leaves cgroup.procs within milliseconds; rmdir can answer
# EBUSY a little longer while the kernel finishes tearing it down.
CLEANUP_TIMEOUT_S = 10.0

DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs",
                   "benchmarks.md")


class Interrupted(BaseException):
    """A signal asked the benchmark to stop; raised so ``finally`` blocks run."""


def exit_on_signals() -> None:
    """Turn SIGINT, SIGTERM and SIGHUP into :class:`Interrupted`."""
    def handler(signum, frame):
        raise Interrupted(signal.Signals(signum).name)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


def write_file(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _enter(procs_files: tuple[str, ...]):
    """A preexec_fn moving the child into the cgroups before it execs."""
    def enter() -> None:
        pid = str(os.getpid())
        for path in procs_files:
            write_file(path, pid)
    return enter


def _kill_members(path: str) -> list[str]:
    """SIGKILL every process in one of our own cgroups (only we put any there)."""
    if not os.path.basename(path).startswith(PREFIX):
        return [f"{path}: refusing to touch a cgroup that is not {PREFIX}*"]
    try:
        with open(os.path.join(path, "cgroup.procs")) as f:
            pids = [int(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return []


def _rmdir(path: str, deadline: float) -> str | None:
    """Remove one cgroup directory; None when gone, else why not."""
    if not os.path.basename(path).startswith(PREFIX):
        return f"{path}: refusing to remove a cgroup that is not {PREFIX}*"
    while True:
        try:
            os.rmdir(path)
            return None
        except FileNotFoundError:
            return None
        except OSError as e:
            if e.errno != errno.EBUSY or time.monotonic() >= deadline:
                return f"{path}: {e.strerror}"
            time.sleep(0.02)


class BenchCgroups:
    """``count`` limited memory cgroups with ``procs_each`` ``sleep`` processes
    in each.  A context manager; :meth:`close` is safe to call twice."""

    def __init__(self, count: int, procs_each: int, limit: int = 64 * MIB) -> None:
        self.count, self.procs_each, self.limit = count, procs_each, limit
        self.run_id = uuid.uuid4().hex[:8]
        self.names: list[str] = []          # cgroup paths relative to the roots
        self.made: list[str] = []           # filesystem paths we created, in order
        self.children: list[subprocess.Popen] = []

    def __enter__(self) -> "BenchCgroups":
        try:
            self.open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        if not os.path.exists(os.path.join(V1_MEMORY, "memory.limit_in_bytes")):
            raise RuntimeError(f"no v1 memory hierarchy at {V1_MEMORY}: this benchmark needs "
                               "the hybrid layout described in /work/shared/HOST.md")
        unified = os.path.exists(os.path.join(UNIFIED, "cgroup.procs"))
        for i in range(self.count):
            name = f"{PREFIX}{self.run_id}-{i:04d}"
            v1 = os.path.join(V1_MEMORY, name)
            os.mkdir(v1)
            self.made.append(v1)
            write_file(os.path.join(v1, "memory.limit_in_bytes"), str(self.limit))
            procs = [os.path.join(v1, "cgroup.procs")]
            if unified:
                v2 = os.path.join(UNIFIED, name)
                os.mkdir(v2)
                self.made.append(v2)
                procs.append(os.path.join(v2, "cgroup.procs"))
            self.names.append("/" + name)
            for _ in range(self.procs_each):
                self.children.append(subprocess.Popen(
                    ["sleep", "3600"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL, close_fds=True, start_new_session=True,
                    preexec_fn=_enter(tuple(procs))))

    def close(self) -> list[str]:
        """End our processes, remove our cgroups; return what could not be undone."""
        problems = []
        for child in self.children:
            if child.poll() is None:
                try:
                    os.kill(child.pid, signal.SIGKILL)   # our child, not yet reaped: its pid is ours
                except ProcessLookupError:
                    pass
        for child in self.children:
            try:
                child.wait(timeout=CLEANUP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                problems.append(f"pid {child.pid} did not exit")
        self.children = []
        # A child forked while a signal interrupted Popen is in our cgroup
        # but not in self.children: end what is left in the cgroups we made.
        for path in self.made:
            problems += _kill_members(path)
        deadline = time.monotonic() + CLEANUP_TIMEOUT_S
        for path in reversed(self.made):
            why = _rmdir(path, deadline)
            if why:
                problems.append(why)
        self.made = []
        return problems


def leftovers() -> list[str]:
    """``mgbench-*`` cgroups on this host (from an interrupted run)."""
    found = []
    for top in (V1_MEMORY, UNIFIED):
        try:
            found += [os.path.join(top, n) for n in sorted(os.listdir(top)) if n.startswith(PREFIX)]
        except FileNotFoundError:
            pass
    return found


def sweep() -> list[str]:
    """Remove leftover ``mgbench-*`` cgroups, killing the processes in them
    (only benchmarks put processes there).  Returns what could not be removed."""
    paths = leftovers()
    problems = [p for path in paths for p in _kill_members(path)]
    deadline = time.monotonic() + CLEANUP_TIMEOUT_S
    for path in paths:
        why = _rmdir(path, deadline)
        if why:
            problems.append(why)
    return problems


# ------------------------------------------------------------------ reporting


def machine() -> dict[str, str]:
    """nproc, memory, kernel and Python of this machine."""
    with open("/proc/meminfo") as f:
        total_kib = int(re.search(r"MemTotal:\s+(\d+)", f.read()).group(1))
    with open("/proc/cpuinfo") as f:
        model = re.search(r"model name\s*:\s*(.+)", f.read())
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model.group(1).strip() if model else "unknown",
        "memory": f"{total_kib / (1 << 20):.1f} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def code_version() -> str:
    """The commit measured, and whether daemon/ had uncommitted changes."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "-C", repo, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", repo, "status", "--porcelain", "--", "daemon"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError) as e:
        return f"unknown ({e})"
    return f"commit {head}" + (" with uncommitted changes in daemon/" if dirty else "")


def machine_line() -> str:
    m = machine()
    return (f"{m['nproc']} CPUs ({m['cpu']}), {m['memory']} RAM, "
            f"kernel {m['kernel']}, Python {m['python']}")


def today() -> str:
    return datetime.date.today().isoformat()


def section_head(title: str, command: str) -> list[str]:
    """The first lines of a docs/benchmarks.md section: its title, when, on
    what machine, and the command that wrote it."""
    return [f"## {title}", "", f"- date: {today()}", f"- machine: {machine_line()}", f"- command: `{command}`"]


HEADER = """# Benchmarks

Figures from the scripts in `bench/` (see bench/README.md). Each section is
rewritten by its script's `--write`; the others are left as they are.
"""


def write_section(key: str, body: str, path: str = DOC) -> None:
    """Replace the section between ``<!-- bench:KEY -->`` markers in
    docs/benchmarks.md (appending it when absent), leaving the rest alone."""
    start, end = f"<!-- bench:{key} start -->", f"<!-- bench:{key} end -->"
    block = f"{start}\n{body.rstrip()}\n{end}\n"
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        text = HEADER
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end) + r"\n?", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + block
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A Markdown table, also readable as plain text."""
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows)]
    def line(cells):
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"
    return "\n".join([line(headers), "| " + " | ".join("-" * w for w in widths) + " |",
                      *(line(r) for r in rows)])

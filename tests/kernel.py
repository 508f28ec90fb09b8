"""Helpers for integration tests on the real kernel.

What is here:

- :class:`Capabilities`, detected once per process by :func:`capabilities`,
  and :func:`require`, which skips a test (or fails it under CI) when the host
  lacks something;
- :class:`V1MemoryCgroup` and :class:`V2MemoryCgroup`: throw-away memory
  cgroups named ``mgtest-<uuid>`` with small limits, removed on close, hogs
  killed first;
- :class:`Hog`: the C memory hog of ``tests/helpers/hog.c``, started inside a
  cgroup before it allocates anything;
- :func:`as_nobody`, :func:`public_copy` and :func:`unprivileged_python`:
  run part of the checkout as uid 65534, who may not reach the checkout
  itself (a clone under /root, mode 0700);
- :func:`build_fake_nvml`, :class:`Nvml` and :func:`real_nvml`: the fake
  libnvidia-ml.so.1, or the real driver where there is one, and what NVML
  itself says of each GPU;
- :func:`wait_until`, :func:`read_int`, :func:`read_keyed`.

Safety rules these helpers keep: a cgroup they remove or a process they kill
is always one they created (a cgroup whose top-level name starts with
``mgtest-``, a process found inside such a cgroup); every wait has a deadline.
The machine's own memory cgroup ``process_api`` is never written to.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import gzip
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, TypeVar

import pytest

MIB = 1 << 20
CGROUP_PREFIX = "mgtest-"
HOG_SOURCE = Path(__file__).with_name("helpers") / "hog.c"
FAKE_NVML_SOURCE = Path(__file__).with_name("helpers") / "fake_nvml.c"

# Our CI machine has every one of these (see /work/shared/HOST.md); there a
# missing one fails the test instead of skipping it. v2_memory is not here:
# the CI host's memory controller is on cgroup v1.
CI_REQUIRED = frozenset({"root", "v1_memory", "psi", "tracefs", "bcc", "proc_connector", "cc",
                         "promtool", "prometheus"})

# Bounds for cleanup: an exiting task leaves cgroup.procs within
# milliseconds; rmdir may report EBUSY a little longer while the kernel
# finishes tearing the task down.
CLEANUP_TIMEOUT_S = 10.0

T = TypeVar("T")


# --------------------------------------------------------------- small helpers


def wait_until(predicate: Callable[[], T], timeout: float, interval: float = 0.02,
               what: str | None = None) -> T:
    """Call ``predicate`` until it returns a truthy value; return that value.

    Raises AssertionError naming ``what`` (or the predicate) and the last value
    seen when ``timeout`` seconds pass first.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            name = what or getattr(predicate, "__name__", repr(predicate))
            raise AssertionError(f"timed out after {timeout:g} s waiting for {name} "
                                 f"(last value: {value!r})")
        time.sleep(interval)


def read_int(path: str | os.PathLike) -> int:
    """The integer a one-value pseudo-file holds; ValueError if it holds another
    word (v2's ``max``, for instance)."""
    return int(Path(path).read_text().strip())


def read_keyed(path: str | os.PathLike) -> dict[str, int]:
    """A ``key value`` per line file (memory.stat, memory.oom_control,
    memory.events) as a dict."""
    result = {}
    for line in Path(path).read_text().splitlines():
        key, value = line.split()
        result[key] = int(value)
    return result


def _mounts(proc: Path) -> list[tuple[str, Path, str, list[str]]]:
    """(device, mount point, fs type, options) for each line of /proc/self/mounts."""
    result = []
    for line in (proc / "self" / "mounts").read_text().splitlines():
        dev, point, fstype, opts = line.split()[:4]
        # Spaces and the like are written as octal escapes: "\040".
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), point)
        result.append((dev, Path(point), fstype, opts.split(",")))
    return result


def filesystem_type(path: str | os.PathLike, proc: Path = Path("/proc")) -> str:
    """The type of the file system holding ``path`` (its longest mount prefix)."""
    real = Path(os.path.realpath(path))
    best: tuple[int, str] = (-1, "")
    for _dev, point, fstype, _opts in _mounts(proc):
        if real == point or point in real.parents:
            depth = len(point.parts)
            if depth >= best[0]:  # a later mount on the same point hides earlier ones
                best = (depth, fstype)
    return best[1]


# ---------------------------------------------------------------- capabilities


@dataclass(frozen=True)
class Capability:
    """Whether the host has one thing a test needs; ``reason`` says why not
    (or a remark, such as "not mounted yet", when present)."""

    present: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.present


@dataclass(frozen=True)
class Capabilities:
    root: Capability
    v1_memory: Capability
    v2_memory: Capability
    psi: Capability
    tracefs: Capability
    bcc: Capability
    proc_connector: Capability
    cc: Capability
    promtool: Capability          # Debian's prometheus package, installed by `make test`
    prometheus: Capability
    v1_memory_mount: Path | None  # the v1 hierarchy with the memory controller
    cgroup2_mount: Path | None    # the cgroup2 mount, memory controller or not
    compiler: str | None          # the C compiler's path

    def get(self, name: str) -> Capability:
        if name not in CAPABILITY_NAMES:
            raise ValueError(f"unknown capability {name!r}; known: {', '.join(CAPABILITY_NAMES)}")
        return getattr(self, name)


CAPABILITY_NAMES = ("root", "v1_memory", "v2_memory", "psi", "tracefs", "bcc",
                    "proc_connector", "cc", "promtool", "prometheus")


def detect_capabilities(proc: Path = Path("/proc"), python: str = sys.executable) -> Capabilities:
    """Look at this host once. ``python`` is the interpreter whose ``import
    bcc`` counts (imported in a child: the module alone costs ~65 MB)."""
    mounts = _mounts(proc)
    is_root = os.geteuid() == 0
    root = Capability(True) if is_root else Capability(False, "not running as root")

    v1_mount = next((p for _d, p, t, o in mounts if t == "cgroup" and "memory" in o), None)
    if v1_mount is None:
        v1 = Capability(False, "no cgroup v1 hierarchy with the memory controller in "
                        "/proc/self/mounts (a pure cgroup2 host?)")
    else:
        v1 = Capability(True)

    v2_mount = next((p for _d, p, t, _o in mounts if t == "cgroup2"), None)
    v2 = _detect_v2_memory(v2_mount)
    return Capabilities(
        root=root, v1_memory=v1, v2_memory=v2, psi=_detect_psi(proc),
        tracefs=_detect_tracefs(proc, mounts, is_root), bcc=_detect_bcc(python),
        proc_connector=_detect_proc_connector(proc, is_root), cc=_detect_cc(),
        promtool=_detect_tool("promtool", "prometheus"), prometheus=_detect_tool("prometheus", "prometheus"),
        v1_memory_mount=v1_mount, cgroup2_mount=v2_mount, compiler=_find_cc())


def _detect_v2_memory(mount: Path | None) -> Capability:
    if mount is None:
        return Capability(False, "no cgroup2 mount in /proc/self/mounts")
    try:
        controllers = (mount / "cgroup.controllers").read_text().split()
    except OSError as e:
        return Capability(False, f"cannot read {mount}/cgroup.controllers: {e}")
    if "memory" not in controllers:
        return Capability(False, f"the cgroup2 mount {mount} has no memory controller "
                          f"(controllers: {' '.join(controllers) or 'none'}); "
                          "it is on cgroup v1 on this host")
    return Capability(True)


def _detect_psi(proc: Path) -> Capability:
    try:
        (proc / "pressure" / "memory").read_text()
    except OSError as e:
        return Capability(False, f"cannot read {proc}/pressure/memory ({e}): needs a kernel "
                          "with CONFIG_PSI, booted with psi=1 if CONFIG_PSI_DEFAULT_DISABLED")
    return Capability(True)


def _detect_tracefs(proc: Path, mounts, is_root: bool) -> Capability:
    if any(t == "tracefs" and p == Path("/sys/kernel/tracing") for _d, p, t, _o in mounts):
        return Capability(True)
    try:
        known = (proc / "filesystems").read_text().split()
    except OSError as e:
        return Capability(False, f"cannot read {proc}/filesystems: {e}")
    if "tracefs" not in known:
        return Capability(False, "the kernel has no tracefs (CONFIG_TRACING off)")
    if not is_root:
        return Capability(False, "tracefs is not mounted at /sys/kernel/tracing and only "
                          "root can mount it")
    return Capability(True, "not mounted yet; ensure_tracefs() mounts it")


def _detect_bcc(python: str) -> Capability:
    try:
        done = subprocess.run([python, "-c", "import bcc"], capture_output=True, text=True,
                              timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return Capability(False, f"could not run {python} to try 'import bcc': {e}")
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no error text"])[-1]
        return Capability(False, f"'import bcc' fails in {python} ({last}): install "
                          "python3-bpfcc and run the tests with /usr/bin/python3 or a venv "
                          "made from it with --system-site-packages")
    return Capability(True)


NETLINK_CONNECTOR = 11  # <linux/netlink.h>
CN_IDX_PROC = 1         # <linux/connector.h>


def _detect_proc_connector(proc: Path, is_root: bool) -> Capability:
    config = proc / "config.gz"
    if config.exists():
        try:
            with gzip.open(config, "rt") as f:
                enabled = any(line.strip() == "CONFIG_PROC_EVENTS=y" for line in f)
        except OSError as e:
            return Capability(False, f"cannot read {config}: {e}")
        if enabled:
            return Capability(True)
        return Capability(False, f"{config} does not have CONFIG_PROC_EVENTS=y")
    if not is_root:
        return Capability(False, f"no {config}, and only root can probe the proc connector")
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR) as s:
            s.bind((0, CN_IDX_PROC))
    except OSError as e:
        return Capability(False, f"no {config}, and binding a NETLINK_CONNECTOR socket to "
                          f"the proc group failed: {e}")
    return Capability(True)


def _find_cc() -> str | None:
    return next(filter(None, map(shutil.which, ("cc", "gcc", "clang"))), None)


def _detect_tool(name: str, package: str) -> Capability:
    if shutil.which(name):
        return Capability(True)
    return Capability(False, f"{name} is not on PATH (Debian package {package}; `make test` installs it)")


def _detect_cc() -> Capability:
    if _find_cc() is None:
        return Capability(False, "no C compiler (cc, gcc or clang) on PATH")
    return Capability(True)


@functools.cache
def capabilities() -> Capabilities:
    """This host's capabilities, detected on the first call."""
    return detect_capabilities()


def ci_enforced() -> bool:
    """Whether we run under CI (CI set to anything but "", "0" or "false")."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false")


def require(name: str, caps: Capabilities | None = None) -> Capability:
    """Return the capability when the host has it. Otherwise skip the test with
    the reason, or fail it when under CI and ``name`` is in CI_REQUIRED."""
    cap = (caps or capabilities()).get(name)
    if cap:
        return cap
    if name in CI_REQUIRED and ci_enforced():
        pytest.fail(f"CI must have {name}: {cap.reason}", pytrace=False)
    # Reported at the test, not here, so the -ra summary names which test skipped.
    raise pytest.skip.Exception(f"needs {name}: {cap.reason}", _use_item_location=True)


def ensure_tracefs(mount_point: Path = Path("/sys/kernel/tracing")) -> Path:
    """Mount tracefs at ``mount_point`` unless it is already; return the mount point.
    Leaves it mounted (the daemon mounts it the same way)."""
    if not os.path.ismount(mount_point):
        subprocess.run(["mount", "-t", "tracefs", "nodev", str(mount_point)], check=True,
                       capture_output=True, timeout=30)
    return mount_point


# ------------------------------------------------------ as another user

# The overflow uid and gid (/proc/sys/kernel/overflowuid): Debian's nobody
# and nogroup.
NOBODY = 65534


def as_nobody(command: list[str]) -> list[str]:
    """``command`` prefixed to run as uid and gid NOBODY with no
    supplementary groups (setpriv, util-linux; the caller must be root)."""
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *command]


def start_as(uid: int, group, argv: list[str], **popen) -> subprocess.Popen:
    """A process of *uid* (no supplementary groups) in *group* (None: where
    we are) from before exec, in a session of its own: end it with os.killpg."""
    fds = [os.open(f, os.O_WRONLY | os.O_CLOEXEC) for f in (group.procs_files() if group is not None else ())]

    def join() -> None:         # after the switch to uid: a process may move itself
        for fd in fds:
            os.write(fd, str(os.getpid()).encode())
    try:
        return subprocess.Popen(argv, user=uid, group=uid, extra_groups=[],
                                preexec_fn=join, start_new_session=True,
                                **{"stdout": subprocess.DEVNULL, **popen})
    finally:
        for fd in fds:
            os.close(fd)


def reachable_by_everyone(path: str | os.PathLike, execute: bool = False) -> bool:
    """Whether any user can reach ``path``: every directory above it
    searchable by others, and ``path`` readable by others (searchable too
    when it is a directory, executable too with ``execute``). Links are
    resolved first; False when it is missing."""
    real = Path(os.path.realpath(path))
    try:
        wanted = stat.S_IROTH | (stat.S_IXOTH if execute or real.is_dir() else 0)
        if os.stat(real).st_mode & wanted != wanted:
            return False
        return all(os.stat(d).st_mode & stat.S_IXOTH for d in real.parents)
    except OSError:
        return False


def public_copy(source: Path, dest_dir: Path) -> Path:
    """Copy the file or tree ``source`` into ``dest_dir`` (``__pycache__``
    left out), readable by everyone, executable by everyone where the owner
    could execute it. Returns the copy's path. ``dest_dir`` must itself be
    reachable (the ``public_dir`` fixture)."""
    dest = dest_dir / source.name
    if source.is_dir():
        shutil.copytree(source, dest, ignore=shutil.ignore_patterns("__pycache__"))
        paths = [dest, *dest.rglob("*")]
    else:
        shutil.copy2(source, dest)
        paths = [dest]
    for path in paths:
        mode = path.stat().st_mode
        extra = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
        if path.is_dir() or mode & stat.S_IXUSR:
            extra |= stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH
        path.chmod(stat.S_IMODE(mode) | extra)
    return dest


def unprivileged_python() -> str | None:
    """An interpreter uid NOBODY can run: this one with its links resolved
    (a venv's bin/python links to the Python it was made from, outside the
    checkout), or None when that is not reachable either (a pyenv under
    /root). It lacks the venv's packages: give it a PYTHONPATH of public
    copies."""
    python = os.path.realpath(sys.executable)
    return python if reachable_by_everyone(python, execute=True) else None


# ------------------------------------------------------------------- cgroups


def leftover_test_cgroups(caps: Capabilities | None = None) -> list[Path]:
    """Every ``mgtest-*`` directory at the top of the memory v1 and cgroup2 trees."""
    caps = caps or capabilities()
    found = []
    for top in (caps.v1_memory_mount, caps.cgroup2_mount):
        if top is not None and top.is_dir():
            found += sorted(p for p in top.iterdir() if p.name.startswith(CGROUP_PREFIX))
    return found


def _members(directory: Path) -> list[int]:
    try:
        return [int(x) for x in (directory / "cgroup.procs").read_text().split()]
    except FileNotFoundError:
        return []


def _kill_members(directory: Path) -> None:
    """SIGKILL every process in the cgroup at ``directory``, through a pidfd
    opened while it was listed there, and wait until none is left."""
    for pid in _members(directory):
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        try:
            # Still listed after we hold the pidfd: the pidfd is that process.
            if pid in _members(directory):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass
        finally:
            os.close(pidfd)
    wait_until(lambda: not _members(directory), CLEANUP_TIMEOUT_S,
               what=f"{directory}/cgroup.procs to empty")


def _rmdir(directory: Path) -> None:
    """rmdir with a bounded retry while the kernel says EBUSY."""
    def removed() -> bool:
        try:
            directory.rmdir()
        except FileNotFoundError:
            return True
        except OSError as e:
            if e.errno != errno.EBUSY:
                raise
            return False
        return True
    wait_until(removed, CLEANUP_TIMEOUT_S, interval=0.05, what=f"rmdir {directory}")


def _check_child_name(name: str) -> None:
    if not name or "/" in name or name in (".", "..") or name.startswith("cgroup."):
        raise ValueError(f"bad cgroup name {name!r}")


class _TestCgroup:
    """What both cgroup versions share: one directory per hierarchy the
    cgroup exists in (``_dirs``; the first holds the memory controller),
    children, joining, and removal."""

    def __init__(self, path: str, dirs: list[Path]):
        top = path.strip("/").split("/")[0]
        if not top.startswith(CGROUP_PREFIX):  # never touch a cgroup we did not make
            raise ValueError(f"test cgroups live under {CGROUP_PREFIX}*, not {path}")
        self.path = path
        self._dirs = dirs
        self.children: list[_TestCgroup] = []
        self.closed = False
        made = []
        try:
            for d in dirs:
                d.mkdir()
                made.append(d)
        except BaseException:
            for d in reversed(made):
                d.rmdir()
            raise

    @property
    def fs_path(self) -> Path:
        """The cgroup's directory in the memory controller's hierarchy."""
        return self._dirs[0]

    @property
    def fs_paths(self) -> list[Path]:
        """Its directories in every hierarchy it exists in."""
        return list(self._dirs)

    def procs_files(self) -> list[Path]:
        """The cgroup.procs files a process is written to, to join this cgroup."""
        return [d / "cgroup.procs" for d in self._dirs]

    def add(self, pid: int) -> None:
        for f in self.procs_files():
            f.write_text(str(pid))

    def procs(self) -> list[int]:
        return _members(self.fs_path)

    def stat(self) -> dict[str, int]:
        return read_keyed(self.fs_path / "memory.stat")

    def close(self) -> None:
        """Kill what is left inside, then remove the cgroup, children first.
        Tries every directory; raises the first error afterwards."""
        if self.closed:
            return
        errors = []
        for child in reversed(self.children):
            try:
                child.close()
            except Exception as e:  # noqa: BLE001 - collected and raised below
                errors.append(e)
        for d in reversed(self._dirs):
            try:
                _kill_members(d)
                _rmdir(d)
            except Exception as e:  # noqa: BLE001 - collected and raised below
                errors.append(e)
        self.closed = not errors
        if errors:
            raise errors[0]

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r})"


class V1MemoryCgroup(_TestCgroup):
    """A cgroup in the v1 memory hierarchy, ``/mgtest-<uuid>`` unless a parent
    makes it a child. Limits are bytes; None leaves the limit unset.

    ``memsw_limit`` is written to memory.memsw.limit_in_bytes when that file
    exists (``memsw_applied`` tells). ``unified=True`` also creates the same
    path in the cgroup2 tree, and processes join both: its ``memory.pressure``
    is then the cgroup's PSI (``pressure_path``).
    """

    def __init__(self, limit: int | None = None, *, memsw_limit: int | None = None,
                 unified: bool = False, caps: Capabilities | None = None,
                 _parent: V1MemoryCgroup | None = None, _name: str | None = None):
        caps = caps or capabilities()
        if caps.v1_memory_mount is None:
            raise RuntimeError(caps.v1_memory.reason)
        if unified and caps.cgroup2_mount is None:
            raise RuntimeError("unified=True needs a cgroup2 mount")
        self.caps = caps
        self.unified = unified
        parent_path = _parent.path if _parent else ""
        path = f"{parent_path}/{_name or CGROUP_PREFIX + uuid.uuid4().hex}"
        dirs = [caps.v1_memory_mount / path.lstrip("/")]
        if unified:
            dirs.append(caps.cgroup2_mount / path.lstrip("/"))
        super().__init__(path, dirs)
        self.limit = limit
        self.memsw_applied = False
        try:
            if limit is not None:
                (self.fs_path / "memory.limit_in_bytes").write_text(str(limit))
            memsw = self.fs_path / "memory.memsw.limit_in_bytes"
            if memsw_limit is not None and memsw.exists():
                memsw.write_text(str(memsw_limit))  # after the memory limit: memsw >= it
                self.memsw_applied = True
        except BaseException:
            self.close()
            raise

    @property
    def unified_fs_path(self) -> Path | None:
        return self._dirs[1] if self.unified else None

    @property
    def pressure_path(self) -> Path | None:
        return self._dirs[1] / "memory.pressure" if self.unified else None

    def child(self, name: str, limit: int | None = None, *,
              memsw_limit: int | None = None) -> V1MemoryCgroup:
        """A child cgroup ``<path>/<name>``, removed with this one."""
        _check_child_name(name)
        c = V1MemoryCgroup(limit, memsw_limit=memsw_limit, unified=self.unified,
                           caps=self.caps, _parent=self, _name=name)
        self.children.append(c)
        return c

    def usage(self) -> int:
        return read_int(self.fs_path / "memory.usage_in_bytes")

    def oom_control(self) -> dict[str, int]:
        """oom_kill_disable, under_oom and (since 4.13) oom_kill."""
        return read_keyed(self.fs_path / "memory.oom_control")


class V2MemoryCgroup(_TestCgroup):
    """A cgroup2 cgroup with the memory controller (memory.max), for hosts
    that have one. The top one needs ``memory`` in the root's
    cgroup.subtree_control already (systemd hosts have it; we do not change the
    host's root). As cgroup2 wants, put processes into leaves only: a cgroup
    with children cannot hold processes once it delegates memory to them."""

    def __init__(self, limit: int | None = None, *, swap_limit: int | None = None,
                 caps: Capabilities | None = None,
                 _parent: V2MemoryCgroup | None = None, _name: str | None = None):
        caps = caps or capabilities()
        if not caps.v2_memory:
            raise RuntimeError(caps.v2_memory.reason)
        self.caps = caps
        parent_dir = _parent.fs_path if _parent else caps.cgroup2_mount
        control = parent_dir / "cgroup.subtree_control"
        if "memory" not in control.read_text().split():
            if _parent is None:
                raise RuntimeError(f"{control} lacks memory; enable it there first")
            control.write_text("+memory")
        parent_path = _parent.path if _parent else ""
        path = f"{parent_path}/{_name or CGROUP_PREFIX + uuid.uuid4().hex}"
        super().__init__(path, [caps.cgroup2_mount / path.lstrip("/")])
        self.limit = limit
        self.swap_applied = False
        try:
            if limit is not None:
                (self.fs_path / "memory.max").write_text(str(limit))
            swap = self.fs_path / "memory.swap.max"
            if swap_limit is not None and swap.exists():
                swap.write_text(str(swap_limit))
                self.swap_applied = True
        except BaseException:
            self.close()
            raise

    @property
    def pressure_path(self) -> Path:
        return self.fs_path / "memory.pressure"

    def child(self, name: str, limit: int | None = None, *,
              swap_limit: int | None = None) -> V2MemoryCgroup:
        _check_child_name(name)
        c = V2MemoryCgroup(limit, swap_limit=swap_limit, caps=self.caps, _parent=self,
                           _name=name)
        self.children.append(c)
        return c

    def usage(self) -> int:
        return read_int(self.fs_path / "memory.current")

    def events(self) -> dict[str, int]:
        """memory.events: low, high, max, oom, oom_kill, oom_group_kill."""
        return read_keyed(self.fs_path / "memory.events")


# ----------------------------------------------------------------------- hog


def build_hog(dest_dir: Path, compiler: str | None = None) -> Path:
    """Compile hog.c into ``dest_dir``; return the binary's path. RuntimeError
    with the compiler's output when it fails."""
    compiler = compiler or _find_cc()
    if compiler is None:
        raise RuntimeError("no C compiler on PATH")
    binary = dest_dir / "hog"
    done = subprocess.run([compiler, "-O2", "-Wall", "-Werror", "-o", str(binary),
                           str(HOG_SOURCE)], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"compiling {HOG_SOURCE} failed:\n{done.stderr}")
    return binary


def build_fake_nvml(dest_dir: Path, compiler: str | None = None) -> Path:
    """Compile fake_nvml.c into ``dest_dir``/libnvidia-ml.so.1 (with that
    soname); return its path. RuntimeError with the compiler's output when
    it fails."""
    compiler = compiler or _find_cc()
    if compiler is None:
        raise RuntimeError("no C compiler on PATH")
    library = dest_dir / "libnvidia-ml.so.1"
    done = subprocess.run([compiler, "-O2", "-Wall", "-Werror", "-shared", "-fPIC", "-Wl,-soname,libnvidia-ml.so.1",
                           "-o", str(library), str(FAKE_NVML_SOURCE)], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"compiling {FAKE_NVML_SOURCE} failed:\n{done.stderr}")
    return library


# The fake's driver version (fake_nvml.c: nvmlSystemGetDriverVersion).
FAKE_DRIVER = "fake-nvml-1"

# What the fake shows a test that holds memguard against NVML's own figures:
# an A100 in MIG mode (instances in slots 0 and 2, the second on the v1
# memory call, slot 1 empty) and an L4 beside it, each with a process.
FAKE_NVML_SCENE = (
    "device 0 42949672960 943718400 6442450944 0 0 ok GPU-11111111-2222-3333-4444-555555555555 NVIDIA A100-SXM4-40GB",
    "mig 0 0 10200547328 0 4294967296 ok MIG-aaaaaaaa-1111-2222-3333-444444444444 NVIDIA A100-SXM4-40GB MIG 2g.10gb",
    "mig 0 2 5100273664 0 1073741824 v1 MIG-bbbbbbbb-1111-2222-3333-444444444444 NVIDIA A100-SXM4-40GB MIG 1g.5gb",
    "mig-process 0 0 4242 4294967296",
    "device 1 25769803776 0 1073741824 30 10 v1 GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee NVIDIA L4",
    "process 1 4343 1073741824",
)

# Run by read_nvml in a process of its own (this one may hold the fake
# already): each GPU and MIG device as NVML lists it, through pynvml's plain
# calls, with the library the process loaded; {"error": ...} where NVML
# does not start.
_NVML_WITNESS = r"""
import json, pynvml

def device(handle, processes):
    v1 = pynvml.nvmlDeviceGetMemoryInfo(handle)
    try:
        v2 = pynvml.nvmlDeviceGetMemoryInfo(handle, version=pynvml.nvmlMemory_v2)
        memory = {"total": v2.total, "reserved": v2.reserved, "used": v2.used}
    except (pynvml.NVMLError_NotSupported, pynvml.NVMLError_FunctionNotFound):
        memory = {"total": v1.total, "reserved": None, "used": v1.used}
    pids = [p.pid for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle)] if processes else []
    return {"name": pynvml.nvmlDeviceGetName(handle), "uuid": pynvml.nvmlDeviceGetUUID(handle), **memory,
            "pids": pids}

try:
    pynvml.nvmlInit()
except pynvml.NVMLError as e:
    found = not isinstance(e, pynvml.NVMLError_LibraryNotFound)
    print(json.dumps({"error": f"nvmlInit failed: {e}" if found else "libnvidia-ml.so.1 not found"}))
    raise SystemExit
with open("/proc/self/maps") as maps:
    library = next((line.split()[-1] for line in maps if "libnvidia-ml.so" in line), None)
devices = {}
for index in range(pynvml.nvmlDeviceGetCount()):
    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    try:
        mig = pynvml.nvmlDeviceGetMigMode(handle)[0] == pynvml.NVML_DEVICE_MIG_ENABLE
    except (pynvml.NVMLError_NotSupported, pynvml.NVMLError_FunctionNotFound):
        mig = False
    devices[f"gpu:{index}"] = device(handle, processes=not mig)
    for slot in range(pynvml.nvmlDeviceGetMaxMigDeviceCount(handle) if mig else 0):
        try:
            devices[f"gpu:{index}/mig:{slot}"] = device(pynvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot), True)
        except pynvml.NVMLError_NotFound:
            pass
print(json.dumps({"driver": pynvml.nvmlSystemGetDriverVersion(), "library": library, "devices": devices}))
"""


def read_nvml(env: dict[str, str]) -> dict:
    """What NVML says now, loaded with *env* added to this environment:
    ``driver``, ``library`` (its path) and ``devices`` (domain -> name,
    uuid, total, reserved (None from the v1 call), used, pids; a GPU in MIG
    mode lists its processes on its instances), or ``error``."""
    done = subprocess.run([sys.executable, "-c", _NVML_WITNESS], env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=60)
    if done.returncode != 0:
        raise AssertionError(f"reading NVML failed:\n{done.stderr}")
    return json.loads(done.stdout)


@dataclass
class Nvml:
    """An NVML to run memguard on: ``real`` (the driver here) or ``fake``
    (fake_nvml.c, scripted through *state*). *env* is what a process needs
    in its environment to load it; *description* says which it is."""
    kind: str
    env: dict[str, str]
    description: str
    state: Path | None = None

    @classmethod
    def fake(cls, folder: Path, state: Path) -> Nvml:
        """The fake built in *folder* (build_fake_nvml), scripted through *state*."""
        return cls("fake", {"LD_LIBRARY_PATH": str(folder), "FAKE_NVML_STATE": str(state)},
                   f"fake: {FAKE_NVML_SOURCE.name} built as {folder / 'libnvidia-ml.so.1'}", state)

    def script(self, *lines: str) -> None:
        assert self.state is not None, "only the fake NVML can be scripted"
        self.state.write_text("".join(line + "\n" for line in lines))

    def devices(self) -> dict[str, dict]:
        """Each GPU and MIG device as NVML lists it now (read_nvml)."""
        seen = read_nvml(self.env)
        assert "error" not in seen, f"{self.description}: {seen['error']}"
        return seen["devices"]


def real_nvml() -> Nvml | str:
    """The driver's libnvidia-ml.so.1 as a process started here loads it,
    or why there is none to test on (the reason to skip)."""
    seen = read_nvml({})
    if "error" in seen:
        return f"no NVIDIA driver here: {seen['error']}"
    if seen["driver"] == FAKE_DRIVER:
        return (f"libnvidia-ml.so.1 here is the fake ({seen['library']}, "
                f"LD_LIBRARY_PATH={os.environ.get('LD_LIBRARY_PATH')})")
    return Nvml("real", {}, f"real: driver {seen['driver']}, {seen['library']}")


def _append_only_tmpfile() -> int:
    """An unlinked file the hog appends to while we read it with pread: unlike
    a pipe it never fills up and blocks a hog whose lines nobody reads."""
    with tempfile.TemporaryFile() as f:
        fd = os.dup(f.fileno())
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_APPEND)
    return fd


class Hog:
    """One run of the hog binary, inside ``cgroup`` (anything with
    ``procs_files()``) from before exec: the child writes its own pid to the
    cgroup.procs files in a preexec_fn, through descriptors opened here, so
    everything the hog allocates is charged to the cgroup.

    (preexec_fn is unsafe when the test process has threads holding locks the
    child needs; the hook here only calls os.write.)
    """

    def __init__(self, binary: Path, args: Iterable[object], cgroup: _TestCgroup | None = None):
        self.args = [str(a) for a in args]
        self.cgroup = cgroup
        self.sigkilled_by_harness = False
        self._out = _append_only_tmpfile()
        self._err = _append_only_tmpfile()
        join_fds = []
        try:
            for f in (cgroup.procs_files() if cgroup else []):
                join_fds.append(os.open(f, os.O_WRONLY | os.O_CLOEXEC))

            def join() -> None:
                pid = str(os.getpid()).encode()
                for fd in join_fds:
                    os.write(fd, pid)

            self._proc = subprocess.Popen([str(binary), *self.args], stdin=subprocess.DEVNULL,
                                          stdout=self._out, stderr=self._err, preexec_fn=join)
        except BaseException:
            os.close(self._out)
            os.close(self._err)
            raise
        finally:
            for fd in join_fds:
                os.close(fd)

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        """None while it runs; -N when signal N ended it."""
        return self._proc.poll()

    @property
    def killed_by_sigkill(self) -> bool:
        """Ended by SIGKILL: an OOM kill, unless ``sigkilled_by_harness``."""
        return self.returncode == -signal.SIGKILL

    def _read(self, fd: int) -> str:
        size = os.fstat(fd).st_size
        return os.pread(fd, size, 0).decode(errors="replace")

    def lines(self) -> list[str]:
        """The complete lines the hog has printed so far."""
        return self._read(self._out).split("\n")[:-1]

    def stderr(self) -> str:
        return self._read(self._err)

    def _describe(self) -> str:
        return (f"hog {' '.join(self.args)} (pid {self.pid}, returncode {self.returncode}, "
                f"stdout {self.lines()[-3:]}, stderr {self.stderr().strip()!r})")

    def wait_line(self, word: str, timeout: float) -> str:
        """The first line starting with ``word``; AssertionError if the hog exits
        or ``timeout`` passes first."""
        def found() -> str | None:
            exited = self.returncode is not None  # before reading: no line lost
            line = next((x for x in self.lines() if x.split()[:1] == [word]), None)
            if line is None and exited:
                raise AssertionError(f"{self._describe()} exited before '{word}'")
            return line
        try:
            return wait_until(found, timeout, interval=0.005)
        except AssertionError as e:
            raise AssertionError(f"{e}; {self._describe()}") from None

    def wait_ready(self, timeout: float = 30.0) -> int:
        """The bytes the hog reports in its ``ready`` line, once it prints it."""
        return int(self.wait_line("ready", timeout).split()[1])

    def wait_exit(self, timeout: float) -> int:
        """Its return code once it exits; AssertionError after ``timeout``."""
        try:
            return self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self._describe()} still runs after {timeout:g} s") from None

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM, then SIGKILL if it has not exited after ``timeout``; reaped.
        Returns the return code (0 when SIGTERM ended it)."""
        if self._proc.poll() is None:
            self._proc.terminate()  # by pid; safe: the child is not reaped yet
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.sigkilled_by_harness = True
                self._proc.kill()
                self._proc.wait(timeout)
        return self._proc.returncode

    def close(self) -> None:
        try:
            self.stop()
        finally:
            for fd in (self._out, self._err):
                if fd >= 0:
                    os.close(fd)
            self._out = self._err = -1

    def __enter__(self) -> Hog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

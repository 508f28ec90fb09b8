"""The BPF probe's child process (memguard.probes.bpf_child) on the real kernel.

A real OOM kill inside a small v1 memory cgroup must come out as an
oom_victim record with the victim's pid, comm and sizes; reclaim against a
limit must show up as stall time for the hog's cgroup; the child must go
away when its pipe is closed or its parent dies.

Figures measured on the build host (Linux 6.18, BCC 0.26, Debian's 6.1
headers, 2 cores): compile and attach 0.6-0.8 s; the child's VmRSS after
load ~34 MB, of which ~23 MB anonymous (peak 142 MB while compiling; the
~80 MB of LLVM's code the compile touched is paged out after it); from the
kernel's mark_victim (ktime) to the line in the parent 0.35-0.8 ms (3.7 ms
once, cold); an idle child writes no reclaim record while no reclaim
tracepoint fires, and is not run at all: the program wakes it.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from tests.kernel import (MIB, NOBODY, as_nobody, ci_enforced, ensure_tracefs, public_copy, require,
                          unprivileged_python, wait_until)

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]
PROBES_DIR = REPO / "probes"
# The tests' interpreter: `make test` runs them with the venv's python, made
# from /usr/bin/python3 with the system site-packages, so it imports bcc
# (require("bcc") checks exactly this interpreter).
PYTHON = sys.executable
HELLO_TIMEOUT_S = 60.0   # compiling takes 0.7 s here; leave room on a loaded CI host


def now_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


class ProbeChild:
    """One run of the child with its stdout on a pipe that a thread reads;
    each record is kept with the CLOCK_MONOTONIC time it arrived here."""

    def __init__(self, *args: str, stdout=subprocess.PIPE):
        env = {**os.environ, "PYTHONPATH": str(REPO / "daemon")}
        self._err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "memguard.probes.bpf_child", "--probes-dir", str(PROBES_DIR), *args],
            stdin=subprocess.DEVNULL, stdout=stdout, stderr=self._err, env=env)
        self.records: list[tuple[int, dict]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        if stdout is subprocess.PIPE:
            self._fd = self.proc.stdout.fileno()
            self._thread = threading.Thread(target=self._read, daemon=True)
            self._thread.start()

    def _read(self) -> None:
        buffer = b""
        while not self._stop.is_set():
            ready, _, _ = select.select([self._fd], [], [], 0.05)
            if not ready:
                continue
            chunk = os.read(self._fd, 65536)
            arrived = now_ns()
            if not chunk:
                return
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            with self._lock:
                self.records += [(arrived, json.loads(line)) for line in lines if line]

    def stderr(self) -> str:
        self._err.seek(0)
        return self._err.read().decode(errors="replace")

    def wait_for(self, kind: str, match=lambda r: True, timeout: float = 10.0) -> tuple[int, dict]:
        """(arrival time, record): the first record of type ``kind`` that
        ``match``es; an error record or the child's exit fails at once."""
        def found():
            with self._lock:
                records = list(self.records)
            for arrived, record in records:
                if record["type"] == "error":
                    raise ProbeError(record["message"])
                if record["type"] == kind and match(record):
                    return arrived, record
            if self.proc.poll() is not None and not self._thread.is_alive():
                raise AssertionError(f"the child exited ({self.proc.returncode}) before a "
                                     f"{kind} record; stderr: {self.stderr()[-2000:]}")
            return None
        return wait_until(found, timeout, interval=0.01, what=f"a {kind} record")

    def hello(self) -> dict:
        try:
            return self.wait_for("hello", timeout=HELLO_TIMEOUT_S)[1]
        except ProbeError as e:
            # Missing headers or tracefs: `make test` runs packaging/probe-setup first.
            if ci_enforced():
                pytest.fail(f"the BPF probe did not load: {e}", pytrace=False)
            pytest.skip(f"the BPF probe cannot load here: {e}")

    def close_pipe(self) -> None:
        """Stop reading and close our end of its stdout."""
        self._stop.set()
        self._thread.join(5)
        self.proc.stdout.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # by pid; ours and not reaped yet
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._err.close()


class ProbeError(Exception):
    pass


@pytest.fixture
def probe():
    """``probe(*args)`` -> a started ProbeChild; every one is stopped at teardown."""
    require("root")
    require("tracefs")
    require("bcc")
    ensure_tracefs()
    children = []

    def start(*args: str) -> ProbeChild:
        child = ProbeChild(*args)
        children.append(child)
        return child

    yield start
    for child in children:
        child.stop()


def live_format_fields() -> list[str]:
    text = (ensure_tracefs() / "events" / "oom" / "mark_victim" / "format").read_text()
    names = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("field:"):
            decl = line[len("field:"):].split(";", 1)[0]
            name = decl.split()[-1].split("[", 1)[0]
            if not name.startswith("common_"):
                names.append(name)
    return names


def oom_kill_a_hog(v1_cgroup, hog, limit: int = 64 * MIB):
    """A hog growing 8 MiB every 20 ms in a cgroup of ``limit``, OOM-killed
    there. Returns (hog, monotonic ns before it started, ns after it died)."""
    cg = v1_cgroup(limit)
    started = now_ns()
    h = hog(cg, "grow", "8", "20")
    h.wait_exit(timeout=30)
    died = now_ns()
    assert h.killed_by_sigkill, f"the hog was not OOM-killed: returncode {h.returncode}"
    return h, started, died


def last_grew(h) -> int:
    return max((int(line.split()[1]) for line in h.lines() if line.startswith("grew ")), default=0)


def test_hello_lists_the_live_format_fields(probe):
    hello = probe().hello()
    assert hello["fields"] == live_format_fields()
    assert "oom:mark_victim" in hello["tracepoints"]
    assert 0 < hello["load_seconds"] < HELLO_TIMEOUT_S
    assert hello["rss_kb"] > 0 and hello["rss_anon_kb"] > 0


def test_oom_kill_gives_a_victim_record(probe, v1_cgroup, hog):
    child = probe()
    hello = child.hello()
    limit = 64 * MIB
    h, started, died = oom_kill_a_hog(v1_cgroup, hog, limit)

    arrived, victim = child.wait_for("oom_victim", lambda r: r["pid"] == h.pid, timeout=10)
    assert victim["comm"] == "hog" and victim["comm_source"] == "tracepoint"
    # The kernel's stamp lies inside the hog's life, and is CLOCK_MONOTONIC.
    assert started < victim["ktime_ns"] < died
    assert victim["ktime_ns"] <= victim["received_ns"] <= arrived
    assert arrived - victim["ktime_ns"] < 1_000_000_000, "more than 1 s from the kill to us"
    print(f"kill -> record in the parent: {(arrived - victim['ktime_ns']) / 1e6:.3f} ms "
          f"(kernel -> child decode {(victim['received_ns'] - victim['ktime_ns']) / 1e6:.3f} ms)")

    if "anon_rss_kb" in hello["victim_fields"]:  # Linux 6.9+
        # Everything the hog reported touching is anonymous memory it holds,
        # and all of it is charged to the cgroup, within its limit.
        assert last_grew(h) <= victim["anon_rss_kb"] * 1024 <= limit, (victim, last_grew(h))
        assert victim["total_vm_kb"] >= victim["anon_rss_kb"]
        assert victim["uid"] == os.getuid()
        assert victim["oom_score_adj"] == int(Path("/proc/self/oom_score_adj").read_text())
    else:
        assert victim["anon_rss_kb"] is None


def test_pid_only_build_still_names_the_victim(probe, v1_cgroup, hog):
    """The program built as for Linux 4.13 to 6.8, where mark_victim has only pid."""
    child = probe("--assume-fields", "pid")
    hello = child.hello()
    assert hello["fields"] == ["pid"] and hello["victim_fields"] == ["pid"]
    h, started, died = oom_kill_a_hog(v1_cgroup, hog)

    _arrived, victim = child.wait_for("oom_victim", lambda r: r["pid"] == h.pid, timeout=10)
    assert started < victim["ktime_ns"] < died
    assert victim["comm"] == "hog" and victim["comm_source"] in ("killer", "proc"), victim
    assert victim["anon_rss_kb"] is None and victim["uid"] is None


def test_reclaim_stall_is_counted_for_the_hogs_cgroup(probe, v1_cgroup, hog, page_cache_dir):
    child = probe("--reclaim-interval", "0.2")
    child.hello()
    # 300 MiB of page cache through a 64 MiB limit: the kernel reclaims the
    # cgroup's own pages all along and kills nothing. unified=True puts the
    # hog into the same path in the cgroup2 tree, whose id the program sees.
    cg = v1_cgroup(64 * MIB, unified=True)
    cgroup_id = os.stat(cg.unified_fs_path).st_ino
    h = hog(cg, "file", page_cache_dir / "cache", "300")
    h.wait_ready(timeout=60)

    def stalled(record) -> bool:
        return any(c["cgroup_id"] == cgroup_id and c["count"] > 0 and c["stall_ns_total"] > 0
                   for c in record["cgroups"])

    _arrived, record = child.wait_for("reclaim", stalled, timeout=10)
    entry = next(c for c in record["cgroups"] if c["cgroup_id"] == cgroup_id)
    assert entry["path"] == cg.path
    assert entry["memcg_count"] > 0 and entry["memcg_stall_ns"] > 0
    assert entry["count"] == entry["memcg_count"] + entry["direct_count"]
    assert 0 < entry["max_stall_ns"] <= entry["stall_ns_total"]
    task = next((t for t in record["tasks"] if t["tgid"] == h.pid), None)
    assert task is not None and task["memcg_count"] > 0, record["tasks"]
    assert record["events"]["memcg_begin"] >= entry["memcg_count"]
    assert record["decode_errors"] == 0
    assert not h.killed_by_sigkill


def wakeups(pid: int) -> int:
    """How many times the scheduler ran any thread of *pid* (schedstat)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
            total += int(f.read().split()[2])
    return total


def test_idle_child_sleeps_until_reclaim(probe):
    """No timer: with a look due every 0.2 s, a child that found nothing new
    is not run at all for 10 s, unless reclaim somewhere on the host woke it
    (then it wrote a record saying so)."""
    child = probe("--reclaim-interval", "0.2")
    child.hello()
    time.sleep(1)                     # the first look, at once, found nothing: quiet
    before, ran = len(child.records), wakeups(child.proc.pid)
    time.sleep(10)
    ran = wakeups(child.proc.pid) - ran
    if any(r["type"] == "reclaim" for _, r in child.records[before:]):
        pytest.skip("reclaim elsewhere on this host woke the child during the window")
    assert ran <= 2, f"an idle child ran {ran} times in 10 s"


def test_first_reclaim_wakes_a_quiet_child_at_once(probe, v1_cgroup, hog, page_cache_dir):
    """A look due only every 30 s, yet the first reclaim after the quiet
    start is told within seconds: the program woke the child."""
    child = probe("--reclaim-interval", "30")
    child.hello()
    child.wait_for("reclaim", timeout=5)      # the totals at load, at once
    time.sleep(1)
    started = now_ns()
    h = hog(v1_cgroup(64 * MIB), "file", page_cache_dir / "cache", "300")
    arrived, record = child.wait_for("reclaim", lambda r: r["events"]["memcg_begin"] > 0, timeout=10)
    assert arrived - started < 10e9
    h.wait_ready(timeout=60)


def test_child_exits_when_its_stdout_is_closed(probe):
    child = probe()
    child.hello()
    child.close_pipe()
    assert child.proc.wait(timeout=10) == 0   # poll() reports POLLERR on its stdout at once


def test_child_exits_when_its_parent_dies(tmp_path):
    """PR_SET_PDEATHSIG: a child whose stdout is a file (no pipe to break)
    still goes when the process that started it is killed."""
    require("root")
    require("tracefs")
    require("bcc")
    ensure_tracefs()
    out = tmp_path / "out.ndjson"
    parent = subprocess.Popen(
        ["sh", "-c", '"$@" >"$OUT" 2>&1 & echo $!; wait', "sh", PYTHON, "-m",
         "memguard.probes.bpf_child", "--probes-dir", str(PROBES_DIR)],
        env={**os.environ, "OUT": str(out), "PYTHONPATH": str(REPO / "daemon")},
        stdout=subprocess.PIPE, text=True)
    child_pid = int(parent.stdout.readline())
    try:
        def output() -> str:  # the shell opens the file after it prints the pid
            return out.read_text() if out.exists() else ""
        wait_until(lambda: '"type":"hello"' in output() or '"type":"error"' in output(),
                   HELLO_TIMEOUT_S, what="hello from the child")
        assert '"type":"hello"' in out.read_text(), out.read_text()
        parent.kill()  # by pid: the sh we started
        parent.wait(10)
        wait_until(lambda: not process_alive(child_pid), 5, what=f"pid {child_pid} to exit")
    finally:
        if process_alive(child_pid):
            os.kill(child_pid, signal.SIGKILL)  # still ours: it never exited
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)
        parent.stdout.close()


def process_alive(pid: int) -> bool:
    """Running, not a zombie (the reparented child may wait for its reaper)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return False
    return fields[0] not in ("Z", "X")


# Shell run in a private mount namespace before the child, to take away one
# thing it needs without touching the host.
TAKE_AWAY = {
    "tracefs": "while awk -v p=/sys/kernel/tracing '$2 == p { f = 1 } END { exit !f }' "
               "/proc/self/mounts; do umount /sys/kernel/tracing; done; "
               "! mountpoint -q /sys/kernel/debug || umount -l /sys/kernel/debug",
    "headers": "mount -t tmpfs mg-modules /lib/modules",
}


@pytest.mark.parametrize("case", ["no_program", "not_root", "tracefs", "headers"])
def test_load_failure_is_an_error_record_with_the_fix(tmp_path, public_dir, case):
    require("root")
    python, pythonpath, probes_dir, wrapper = PYTHON, REPO / "daemon", PROBES_DIR, []
    if case == "no_program":
        probes_dir = tmp_path
    elif case == "not_root":
        if shutil.which("setpriv") is None:
            pytest.skip("setpriv (util-linux) is not installed")
        # uid 65534 may not reach the checkout (a clone under /root, 0700) nor
        # the venv in it: it runs copies, with the Python the venv links to.
        python = unprivileged_python()
        if python is None:
            pytest.skip(f"{os.path.realpath(PYTHON)} is not reachable by uid {NOBODY}")
        public_copy(REPO / "daemon" / "memguard", public_dir)
        pythonpath, probes_dir = public_dir, public_copy(PROBES_DIR, public_dir)
        wrapper = as_nobody([])
    elif case in TAKE_AWAY:
        if shutil.which("unshare") is None:
            pytest.skip("unshare (util-linux) is not installed")
        if case == "headers" and not Path("/lib/modules").is_dir():
            pytest.skip("/lib/modules does not exist: the headers are missing already")
        wrapper = ["unshare", "-m", "--propagation", "private", "sh", "-c",
                   TAKE_AWAY[case] + '; exec "$@"', "sh"]
    command = [*wrapper, python, "-m", "memguard.probes.bpf_child", "--probes-dir", str(probes_dir)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=public_dir,
                          env={**os.environ, "PYTHONPATH": str(pythonpath),
                               "PYTHONDONTWRITEBYTECODE": "1"})
    assert done.returncode == 1, done
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["type"] for r in records] == ["error"], done.stdout
    message = records[0]["message"]
    expected = {
        "no_program": ["oomkill.bpf.c not found", "--probes-dir"],
        "not_root": ["needs root"],
        "tracefs": ["tracefs is not mounted", "packaging/probe-setup",
                    "mount -t tracefs nodev /sys/kernel/tracing"],
        "headers": ["kernel headers missing", "packaging/probe-setup",
                    "apt-get install linux-headers-"],
    }[case]
    for words in expected:
        assert words in message, message

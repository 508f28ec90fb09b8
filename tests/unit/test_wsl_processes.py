import os

import pytest

from memguard.clock import FakeClock
from memguard.sources.base import Unavailable
from memguard.sources.processes import ProcessSource, parse_proc_cgroup, parse_stat
from memguard.sources.wsl import WslSource, detect, parse_wsl_size, parse_wslconfig

from tests.trees import MEMINFO

STAT = ("4711 (cc1plus (x) y) R 4700 4700 4700 0 -1 4194304 100 0 0 0 50 10 0 0 20 0 1 0 "
        "123456 1000000000 25600 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0")


def test_parse_stat_with_parentheses_in_comm():
    comm, rss_pages, start = parse_stat(STAT)
    assert comm == "cc1plus (x) y" and rss_pages == 25600
    assert start == pytest.approx(123456 / 100, rel=0.5)


def test_parse_stat_truncated():
    with pytest.raises((ValueError, IndexError)):
        parse_stat("4711 (cc1plus) R 1 2")


@pytest.mark.parametrize("text,path", [
    ("12:memory:/jobs/a\n0::/user.slice\n", "/jobs/a"),
    ("0::/system.slice/x.service\n", "/system.slice/x.service"),
    ("4:cpu,memory:/b\n", "/b"),
    ("3:cpu:/c\n", None),
])
def test_proc_cgroup(text, path):
    assert parse_proc_cgroup(text) == path


def test_top_consumers_from_a_proc_tree(tree):
    for pid, rss in [(10, 100), (11, 5000), (12, 0), (13, 300)]:
        tree.write(f"proc/{pid}/stat", STAT.replace("4711 (cc1plus (x) y)", f"{pid} (p{pid})").replace(" 25600 ", f" {rss} "))
        tree.write(f"proc/{pid}/cgroup", f"4:memory:/g{pid}\n")
        tree.write(f"proc/{pid}/cmdline", f"prog\0--n\0{pid}\0")
        tree.write(f"proc/{pid}/status", f"Name:\tp{pid}\nUid:\t{pid}\t{pid}\t{pid}\t{pid}\n"
                   + (f"VmHWM:\t{rss * 8} kB\nVmRSS:\t{rss * 4} kB\n" if rss else ""))
    tree.write("proc/14/stat", "14 (half")   # exited mid-read: truncated
    reading = ProcessSource(tree.roots, top=2).collect(FakeClock().now())
    assert [(p.pid, p.comm, p.cgroup, p.cmdline, p.uid, p.hwm) for p in reading.processes] == [
        (11, "p11", "/g11", "prog --n 11", 11, 5000 * 8192), (13, "p13", "/g13", "prog --n 13", 13, 300 * 8192)]
    assert reading.skipped["malformed"] == 1


def test_the_first_scan_catches_up_on_every_process_once_with_a_longer_allowance(tree):
    """The catch-up: every process's parent (from the stat already read)
    and MEMGUARD_JOB, for the jobs registered before the daemon began; it
    may take ten timeouts (runner.SlowSources), the scans after it one."""
    for pid, env in [(20, b"HOME=/root\0MEMGUARD_JOB=train,warning=USR1\0"), (21, b"HOME=/root\0")]:
        tree.write(f"proc/{pid}/stat", STAT.replace("4711 (cc1plus (x) y)", f"{pid} (p{pid})"))
        tree.write(f"proc/{pid}/cgroup", "4:memory:/g\n")
        tree.write(f"proc/{pid}/cmdline", "prog\0")
        tree.write(f"proc/{pid}/status", f"Name:\tp{pid}\nUid:\t0\t0\t0\t0\n")
        with open(os.path.join(tree.top, f"proc/{pid}/environ"), "wb") as f:
            f.write(env)
    source = ProcessSource(tree.roots)
    assert source.allowance == 10.0
    reading = source.collect(FakeClock().now())
    assert sorted((p.pid, p.ppid, p.job_env) for p in reading.known) == [
        (20, 4700, "train,warning=USR1"), (21, 4700, None)]
    assert source.allowance == 1.0
    again = source.collect(FakeClock().now())
    assert again.known is None and {p.pid for p in again.processes} == {20, 21}


def test_not_wsl_on_a_plain_host(v1_host):
    v1_host.write("proc/sys/kernel/osrelease", "6.18.44\n")
    assert detect(v1_host.roots) is None
    with pytest.raises(Unavailable, match="not a WSL2"):
        WslSource(v1_host.roots).collect(FakeClock().now())


def test_wsl_detected_by_release(tree):
    tree.write("proc/sys/kernel/osrelease", "5.15.153.1-microsoft-standard-WSL2\n")
    assert detect(tree.roots) == "5.15.153.1-microsoft-standard-WSL2"


def test_wsl_sizes_are_binary():
    assert parse_wsl_size("8GB") == 8 * 2**30
    assert parse_wsl_size("512MB") == 512 * 2**20
    assert parse_wsl_size("4G") == 4 * 2**30
    with pytest.raises(ValueError, match="8GB"):
        parse_wsl_size("lots")


def test_wslconfig_settings():
    s = parse_wslconfig("[wsl2]\nMemory=8GB\nswap = 2GB\n[experimental]\nautoMemoryReclaim=gradual\n")
    assert s == {"memory": 8 * 2**30, "swap": 2 * 2**30, "auto_memory_reclaim": "gradual"}
    assert parse_wslconfig("[wsl2]\n") == {"memory": None, "swap": None, "auto_memory_reclaim": None}
    with pytest.raises(ValueError, match=r"\[wsl2\] memory"):
        parse_wslconfig("[wsl2]\nmemory=lots\n")


def _wsl_tree(tree, memory):
    tree.write("proc/sys/kernel/osrelease", "5.15.153.1-microsoft-standard-WSL2\n")
    tree.write("proc/meminfo", "MemTotal: 8000000 kB\nMemFree: 1 kB\nMemAvailable: 1 kB\nSwapTotal: 2097152 kB\n")
    tree.write("mnt/c/Users/alice/.wslconfig", f"[wsl2]\nmemory={memory}\nswap=2GB\n")


def test_wslconfig_that_matches(tree):
    _wsl_tree(tree, "8GB")
    facts = WslSource(tree.roots).collect(FakeClock().now()).facts
    assert facts["wslconfig"].endswith("mnt/c/Users/alice/.wslconfig")
    assert facts["wslconfig_matches"] is True


def test_wslconfig_not_applied_yet(tree):
    # .wslconfig edited, but WSL not restarted: the VM still has the old size.
    _wsl_tree(tree, "16GB")
    assert WslSource(tree.roots).collect(FakeClock().now()).facts["wslconfig_matches"] is False


def test_wslconfig_missing_and_off(tree):
    tree.write("proc/sys/kernel/osrelease", "5.15.153.1-microsoft-standard-WSL2\n")
    tree.write("proc/meminfo", MEMINFO)
    assert "defaults" in WslSource(tree.roots).collect(FakeClock().now()).facts["wslconfig"]
    assert "off" in WslSource(tree.roots, "off").collect(FakeClock().now()).facts["wslconfig"]


def test_a_process_read_as_it_exits_has_no_cgroup_not_the_root(tree):
    """An exiting process has no memory left (an empty command line) and
    the kernel has moved it to the root cgroup: /proc says "/", which is
    not where it ran (a victim read so was blamed on the host)."""
    from memguard.probes.procevents import describe
    for pid, cmdline in [(20, b"hog\0grow\0"), (21, b"")]:
        tree.write(f"proc/{pid}/stat", STAT.replace("4711 (cc1plus (x) y)", f"{pid} (hog)"))
        tree.write(f"proc/{pid}/cgroup", "4:memory:/\n" if not cmdline else "4:memory:/mgtest-a\n")
        tree.write(f"proc/{pid}/cmdline", cmdline.decode())
        tree.write(f"proc/{pid}/status", f"Name:\thog\nUid:\t0\t0\t0\t0\n")
    running, exiting = describe(tree.roots, 20), describe(tree.roots, 21)
    assert (running.cgroup, running.cmdline) == ("/mgtest-a", "hog grow")
    assert (exiting.cgroup, exiting.cmdline) == (None, "[hog]")

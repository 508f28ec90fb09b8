"""The incident store: atomic writes, crash recovery, retention (issues 3 and 11)."""

import errno
import os
import select
import signal
import stat
import subprocess
import sys
import textwrap
import time

import pytest

from memguard.incidents.store import (WRITE_POINTS, CorruptIncidentError, IncidentStore,
                                      check_id)
from tests.kernel import NOBODY

DAY = 86400.0
ID = "20261125T101530.123Z-4711-oom"


class Crash(Exception):
    """The process 'dies' at a write point (raised by the test hook)."""


def crash_at(point):
    def hook(at, path):
        if at == point:
            raise Crash(point)
    return hook


def doc(version, size=0):
    return {"id": ID, "kind": "oom_kill", "version": version, "victims": [{"pid": 4711}],
            "padding": "v" * size}


def temps(directory):
    return sorted(n for n in os.listdir(directory) if n.startswith(".tmp-"))


class Clock:
    def __init__(self, t=1_700_000_000.0):
        self.t = t

    def __call__(self):
        return self.t


@pytest.fixture
def store(tmp_path):
    return IncidentStore(str(tmp_path / "incidents"))


def test_round_trip(store):
    document = {"id": ID, "cmdline": "python train.py --lr 3e-4", "ratio": 0.5,
                "none": None, "text": "héllo ✓", "nested": {"a": [1, 2]}}
    path = store.write(ID, document)
    assert path == os.path.join(store.directory, ID + ".json")
    assert store.load(ID) == document
    with open(path, "rb") as f:
        raw = f.read()
    assert raw.endswith(b"\n") and "héllo ✓".encode() in raw
    assert store.ids() == [ID]
    assert temps(store.directory) == []


def test_a_rewrite_of_the_same_id_replaces_the_whole_file(store):
    store.write(ID, doc(1, size=10_000))
    store.write(ID, doc(2))
    assert store.load(ID) == doc(2)
    assert store.ids() == [ID] and temps(store.directory) == []


def test_files_are_0600_and_the_directory_0700(tmp_path):
    old = os.umask(0)  # even with a permissive umask
    try:
        store = IncidentStore(str(tmp_path / "state" / "incidents"))
        path = store.write(ID, doc(1))
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(store.directory).st_mode) == 0o700


def test_the_temporary_file_is_0600_from_its_creation(store):
    modes = {}

    def hook(point, path):
        modes[point] = stat.S_IMODE(os.stat(path).st_mode)

    IncidentStore(store.directory, hook=hook).write(ID, doc(1))
    assert list(modes) == list(WRITE_POINTS)
    assert set(modes.values()) == {0o600}


@pytest.mark.parametrize("point", WRITE_POINTS)
def test_issue_11_a_crash_at_any_point_of_a_rewrite_leaves_a_whole_version(tmp_path, point):
    directory = str(tmp_path / "incidents")
    IncidentStore(directory).write("20261125T000000.000Z-1-oom", doc(0))   # an older neighbour
    IncidentStore(directory).write(ID, doc(1, size=50_000))
    with pytest.raises(Crash):
        IncidentStore(directory, hook=crash_at(point)).write(ID, doc(2, size=60_000))

    # Restart: what the dead process left is one whole version, old or new.
    store = IncidentStore(directory)
    found = store.load(ID)
    assert found == (doc(2, size=60_000) if point == "renamed" else doc(1, size=50_000))
    left = temps(directory)
    assert len(left) == (0 if point == "renamed" else 1)
    assert store.recover() == len(left)
    assert temps(directory) == []
    assert store.ids() == [ID, "20261125T000000.000Z-1-oom"]   # nothing sealed lost
    assert store.load(ID) == found
    assert store.load("20261125T000000.000Z-1-oom") == doc(0)


@pytest.mark.parametrize("point", ["opened", "written", "fsynced", "before_rename"])
def test_a_first_write_that_dies_before_the_rename_leaves_no_incident(tmp_path, point):
    directory = str(tmp_path / "incidents")
    with pytest.raises(Crash):
        IncidentStore(directory, hook=crash_at(point)).write(ID, doc(1))
    store = IncidentStore(directory)
    assert store.ids() == []
    with pytest.raises(FileNotFoundError):
        store.load(ID)
    assert store.recover() == 1 and os.listdir(directory) == []


def test_remove(store):
    store.write(ID, doc(1))
    assert store.remove(ID) is True and store.ids() == []
    assert store.remove(ID) is False
    with pytest.raises(ValueError):
        store.remove("../x")


def test_recover_with_nothing_to_do_returns_zero(store):
    store.write(ID, doc(1))
    assert store.recover() == 0 and store.ids() == [ID]


@pytest.mark.parametrize("point", ["opened", "written", "fsynced", "before_rename"])
def test_a_full_disk_removes_the_temporary_file_and_keeps_the_old_version(tmp_path, point):
    def full(at, path):
        if at == point:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    directory = str(tmp_path / "incidents")
    IncidentStore(directory).write(ID, doc(1))
    with pytest.raises(OSError) as e:
        IncidentStore(directory, hook=full).write(ID, doc(2))
    assert e.value.errno == errno.ENOSPC
    assert directory in str(e.value) and "full" in str(e.value)
    assert temps(directory) == []
    assert IncidentStore(directory).load(ID) == doc(1)


def _child(script: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
    code = "import sys\nsys.path[:0] = %r\n" % sys.path + textwrap.dedent(script)
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=60, **kwargs)


def test_a_write_that_fails_in_the_kernel_part_way_keeps_the_old_version(tmp_path):
    # RLIMIT_FSIZE makes write(2) fail with EFBIG after 64 KiB: the real
    # failing-write path, as ENOSPC would take it, without filling a disk.
    directory = str(tmp_path / "incidents")
    IncidentStore(directory).write(ID, doc(1))
    result = _child(f"""
        import resource, signal
        from memguard.incidents.store import IncidentStore
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
        try:
            IncidentStore({directory!r}).write({ID!r}, {{"padding": "x" * 200_000}})
        except OSError as e:
            print(e.errno, e)
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{errno.EFBIG} "), result.stdout
    assert directory in result.stdout
    assert temps(directory) == []
    assert IncidentStore(directory).load(ID) == doc(1)


def test_a_directory_that_is_not_writable_is_named_in_the_error(public_dir):
    directory = str(public_dir / "incidents")
    IncidentStore(directory)
    if os.geteuid() == 0:
        # Root writes anywhere: the child drops to nobody, who owns the
        # directory, so that only its mode refuses the write (not tmp_path:
        # nobody could not even reach that, under pytest's 0700 directory).
        os.chown(directory, NOBODY, NOBODY)
    os.chmod(directory, 0o500)
    try:
        result = _child(f"""
            import os
            from memguard.incidents.store import IncidentStore
            store = IncidentStore({directory!r})
            if os.geteuid() == 0:
                os.setgid({NOBODY}); os.setuid({NOBODY})
            try:
                store.write({ID!r}, {{}})
            except PermissionError as e:
                print("PermissionError", e)
        """)
    finally:
        os.chmod(directory, 0o700)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("PermissionError"), result.stdout
    assert directory in result.stdout and "writable" in result.stdout
    assert os.listdir(directory) == []


def test_a_directory_path_that_is_a_file_is_refused_by_name(tmp_path):
    path = tmp_path / "incidents"
    path.write_text("not a directory")
    with pytest.raises(NotADirectoryError, match=str(path)):
        IncidentStore(str(path))


@pytest.mark.parametrize("bad", ["../x", "", ".hidden", "a/b", "/etc/passwd", "..", ".",
                                 ".tmp-x", "a b", "a\0b", "x" * 129, "é", None])
def test_bad_ids_are_rejected(store, bad):
    for call in (lambda: check_id(bad), lambda: store.write(bad, {}), lambda: store.load(bad)):
        with pytest.raises(ValueError, match="bad incident id"):
            call()
    assert os.listdir(store.directory) == []


def test_good_ids_are_accepted():
    for good in (ID, "a", "A_b-c.d", "-starts-with-dash", "x" * 128):
        assert check_id(good) == good


def test_what_json_cannot_hold_is_refused_before_the_disk_is_touched(store):
    with pytest.raises(ValueError):
        store.write(ID, {"ratio": float("nan")})
    with pytest.raises(TypeError):
        store.write(ID, {"pids": {1, 2}})
    assert os.listdir(store.directory) == []


def test_list_is_newest_first_with_the_top_level_scalars(store):
    for i, t in enumerate(["20261125T101530.123Z-1-oom", "20261126T000000.000Z-2-oom",
                           "20261124T235959.999Z-3-oom"]):
        store.write(t, {"id": t, "kind": "oom_kill", "n": i, "victims": [{"pid": i}]})
    listing = store.list()
    assert [s.id for s in listing.incidents] == store.ids() == [
        "20261126T000000.000Z-2-oom", "20261125T101530.123Z-1-oom", "20261124T235959.999Z-3-oom"]
    first = listing.incidents[0]
    assert first.fields == {"id": "20261126T000000.000Z-2-oom", "kind": "oom_kill", "n": 1}
    assert first.size_bytes == os.path.getsize(first.path)
    assert listing.corrupt == ()


def test_a_corrupt_file_is_skipped_and_counted_in_list(store):
    store.write("20261125T000000.000Z-1-oom", doc(1))
    broken = {"20261125T000001.000Z-2-oom": b'{"id": "trunc',          # partial write of old
              "20261125T000002.000Z-3-oom": b"",                       # empty
              "20261125T000003.000Z-4-oom": b"\xff\xfe not utf-8",
              "20261125T000004.000Z-5-oom": b"[1, 2]\n"}               # not an object
    for name, data in broken.items():
        with open(os.path.join(store.directory, name + ".json"), "wb") as f:
            f.write(data)
    with open(os.path.join(store.directory, "README"), "w") as f:   # not an incident at all
        f.write("x")
    listing = store.list()
    assert [s.id for s in listing.incidents] == ["20261125T000000.000Z-1-oom"]
    assert sorted(listing.corrupt) == sorted(broken)
    with pytest.raises(CorruptIncidentError, match="20261125T000001.000Z-2-oom.json"):
        store.load("20261125T000001.000Z-2-oom")


def test_list_sees_every_change_since_the_last_listing(store):
    store.write("a-1", {"n": 1})
    store.write("a-2", {"n": 1})
    assert [s.fields for s in store.list().incidents] == [{"n": 1}, {"n": 1}]
    store.write("a-2", {"n": 2})                              # rewritten by the store
    with open(store.path("a-1"), "w") as f:                   # or by someone else
        f.write('{"n": ')
    store.write("a-3", {"n": 3})
    listing = store.list()
    assert [(s.id, s.fields) for s in listing.incidents] == [("a-3", {"n": 3}), ("a-2", {"n": 2})]
    assert listing.corrupt == ("a-1",)
    os.unlink(store.path("a-1"))
    assert store.list().corrupt == ()


def test_retention_by_count_keeps_the_newest(tmp_path):
    store = IncidentStore(str(tmp_path / "incidents"), max_count=3)
    ids = [f"20261125T0000{i:02d}.000Z-{i}-oom" for i in range(6)]
    for i in ids:
        store.write(i, doc(1))
    assert store.ids() == ids[:2:-1]    # the three newest, written last
    # An explicit prune with nothing to do removes nothing.
    assert store.prune() == []


def test_retention_by_count_applies_to_files_from_before_a_restart(tmp_path):
    directory = str(tmp_path / "incidents")
    ids = [f"20261125T0000{i:02d}.000Z-{i}-oom" for i in range(5)]
    for i in ids[:4]:
        IncidentStore(directory).write(i, doc(1))
    store = IncidentStore(directory, max_count=2)
    store.write(ids[4], doc(1))
    assert store.ids() == [ids[4], ids[3]]


def test_retention_by_age_on_the_injected_clock(tmp_path):
    clock = Clock()
    store = IncidentStore(str(tmp_path / "incidents"), max_age_seconds=90 * DAY, clock=clock, mono=clock)
    store.write("20261101T000000.000Z-1-oom", doc(1))
    clock.t += 30 * DAY
    store.write("20261201T000000.000Z-2-oom", doc(1))
    assert os.stat(store.path("20261201T000000.000Z-2-oom")).st_mtime == clock.t
    clock.t += 61 * DAY     # the first is now 91 days old, the second 61
    assert store.prune() == ["20261101T000000.000Z-1-oom"]
    assert store.ids() == ["20261201T000000.000Z-2-oom"]


def test_a_wall_clock_stepped_forward_does_not_age_what_this_store_wrote(tmp_path):
    """NTP corrects a clock that booted a year behind: what was written a
    minute before is not 'a year old'.  Incidents from before this store
    (another run) have only their mtime to go by."""
    wall, mono = Clock(), Clock(t=5000.0)
    directory = str(tmp_path / "incidents")
    IncidentStore(directory, max_age_seconds=90 * DAY, clock=wall, mono=mono).write("a-0", doc(1))  # a past run
    store = IncidentStore(directory, max_age_seconds=90 * DAY, clock=wall, mono=mono)
    store.write("a-1", doc(1))
    wall.t += 365 * DAY                  # stepped; a minute passes
    mono.t += 60
    store.write("a-2", doc(1))
    assert store.prune() == ["a-0"] and store.ids() == ["a-2", "a-1"]
    wall.t -= 2 * 365 * DAY              # and back, a year behind
    mono.t += 91 * DAY                   # 91 days pass
    assert store.prune() == ["a-2", "a-1"]


def test_age_is_checked_by_writes_once_an_hour(tmp_path):
    clock = Clock()
    store = IncidentStore(str(tmp_path / "incidents"), max_age_seconds=DAY, clock=clock, mono=clock)
    store.write("a-1", doc(1))
    clock.t += DAY + 60
    store.write("a-2", doc(1))           # first age pass of this store was at a-1: due
    assert store.ids() == ["a-2"]
    store.write("a-3", doc(1))
    clock.t += DAY + 60
    store.write("a-4", doc(1))           # an hour has passed: a-2, a-3 go
    assert store.ids() == ["a-4"]


def test_a_rewrite_refreshes_the_age(tmp_path):
    clock = Clock()
    store = IncidentStore(str(tmp_path / "incidents"), max_age_seconds=DAY, clock=clock, mono=clock)
    store.write(ID, doc(1))
    clock.t += DAY - 1
    store.write(ID, doc(2))
    clock.t += 2
    assert store.prune() == [] and store.load(ID) == doc(2)


_WRITER = """
    import os, sys
    from memguard.incidents.store import IncidentStore
    store = IncidentStore(sys.argv[1])
    payload = "p" * 50_000
    i = 0
    while True:
        store.write(f"20261125T0000{i % 7:02d}.000Z-{i % 7}-oom",
                    {"version": i, "payload": payload, "length": len(payload)})
        if i == 0:
            print("ready", flush=True)
        i += 1
"""


def test_issue_11_sigkill_while_writing_leaves_only_whole_files(tmp_path):
    directory = str(tmp_path / "incidents")
    code = "import sys\nsys.path[:0] = %r\n" % sys.path + textwrap.dedent(_WRITER)
    for round_ in range(6):
        child = subprocess.Popen([sys.executable, "-c", code, directory],
                                 stdout=subprocess.PIPE, text=True)
        try:
            ready, _, _ = select.select([child.stdout], [], [], 30)
            assert ready and child.stdout.readline() == "ready\n", "the writer did not start"
            time.sleep(0.005 * (round_ + 1))   # a different moment of a write each round
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=30)
            child.stdout.close()
        assert child.returncode == -signal.SIGKILL

        store = IncidentStore(directory)
        for incident_id in store.ids():
            document = store.load(incident_id)    # parses: never a half-written file
            assert len(document["payload"]) == document["length"] == 50_000
        left = temps(directory)                   # most rounds leave one
        assert store.recover() == len(left)
        assert temps(directory) == []
        assert store.list().corrupt == ()

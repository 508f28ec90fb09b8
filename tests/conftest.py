"""Fixtures for tests on the real kernel (helpers in tests/kernel.py).

``v1_cgroup`` and ``hog`` are factories: a test makes as many cgroups and
hogs as it needs, and teardown stops every hog, then removes every cgroup.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.kernel import (FAKE_NVML_SCENE, Capabilities, Hog, Nvml, V1MemoryCgroup, V2MemoryCgroup,
                          build_fake_nvml, build_hog, capabilities, filesystem_type, leftover_test_cgroups,
                          real_nvml, reachable_by_everyone, require)

MEMORY_FILESYSTEMS = ("tmpfs", "ramfs")


@pytest.fixture(scope="session")
def caps() -> Capabilities:
    return capabilities()


@pytest.fixture(scope="session")
def hog_binary(tmp_path_factory):
    """The hog compiled once per session (skips without a C compiler)."""
    require("cc")
    return build_hog(tmp_path_factory.mktemp("hog"))


@pytest.fixture(scope="session")
def fake_nvml(tmp_path_factory) -> Path:
    """The folder holding the fake libnvidia-ml.so.1 (tests/helpers/fake_nvml.c),
    compiled once per session and loaded into this process under its soname,
    so the real pynvml finds it (a daemon started by a test gets it through
    LD_LIBRARY_PATH)."""
    require("cc")
    import ctypes
    folder = tmp_path_factory.mktemp("nvml")
    library = build_fake_nvml(folder)
    fake = ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)
    if ctypes.CDLL("libnvidia-ml.so.1")._handle != fake._handle:
        pytest.fail("this process loaded the real libnvidia-ml.so.1 before the fake: the scripted GPU tests "
                    "would read the real GPU; run them in a pytest process of their own", pytrace=False)
    return folder


@pytest.fixture(scope="session")
def real_nvml_here() -> Nvml | str:
    """The real NVML driver, or why there is none (tests.kernel.real_nvml)."""
    return real_nvml()


@pytest.fixture(params=["real", "fake"])
def nvml(request, tmp_path) -> Nvml:
    """The NVML a test holds memguard against, once each: the real driver
    (a skip saying why where there is none) and the fake, scripted with
    FAKE_NVML_SCENE.  MEMGUARD_TEST_NVML=real or =fake runs only that one;
    =real fails where there is no driver.  The test's ``nvml`` property
    (and its output) says which it used."""
    forced = os.environ.get("MEMGUARD_TEST_NVML") or None
    if forced not in (None, "real", "fake"):
        pytest.fail(f"MEMGUARD_TEST_NVML={forced}: it takes real or fake", pytrace=False)
    if forced not in (None, request.param):
        raise pytest.skip.Exception(f"MEMGUARD_TEST_NVML={forced}", _use_item_location=True)
    if request.param == "fake":
        chosen = Nvml.fake(request.getfixturevalue("fake_nvml"), tmp_path / "nvml-state")
        chosen.script(*FAKE_NVML_SCENE)
    elif isinstance(chosen := request.getfixturevalue("real_nvml_here"), str):
        if forced == "real":
            pytest.fail(f"MEMGUARD_TEST_NVML=real, but {chosen}", pytrace=False)
        raise pytest.skip.Exception(chosen, _use_item_location=True)
    request.node.user_properties.append(("nvml", chosen.description))
    print(f"NVML: {chosen.description}")
    return chosen


def _cgroup_factory(cls, needs: tuple[str, ...]):
    """A fixture body: yields ``make(limit=None, **kwargs)``; at teardown removes
    what it made and asserts that no mgtest-* cgroup was left behind."""
    made = []
    before = None

    def make(limit: int | None = None, **kwargs):
        nonlocal before
        for name in needs:
            require(name)
        if before is None:
            before = set(leftover_test_cgroups())
        cgroup = cls(limit, **kwargs)
        made.append(cgroup)
        return cgroup

    yield make
    errors = []
    for cgroup in reversed(made):
        try:
            cgroup.close()
        except Exception as e:  # noqa: BLE001 - the others must still be removed
            errors.append(e)
    if errors:
        raise errors[0]
    if made:
        ours = [p for c in made for p in c.fs_paths if p.exists()]
        assert not ours, f"test cgroups left behind: {ours}"
        # Under pytest-xdist other workers' cgroups come and go: check only ours.
        if "PYTEST_XDIST_WORKER" not in os.environ:
            new = set(leftover_test_cgroups()) - before
            assert not new, f"mgtest-* cgroups left behind: {sorted(new)}"


@pytest.fixture
def v1_cgroup():
    """``v1_cgroup(limit_bytes, memsw_limit=None, unified=False)`` -> V1MemoryCgroup."""
    yield from _cgroup_factory(V1MemoryCgroup, ("root", "v1_memory"))


@pytest.fixture
def v2_cgroup():
    """``v2_cgroup(limit_bytes, swap_limit=None)`` -> V2MemoryCgroup."""
    yield from _cgroup_factory(V2MemoryCgroup, ("root", "v2_memory"))


@pytest.fixture
def hog(hog_binary, v1_cgroup, v2_cgroup):
    """``hog(cgroup, *args)`` -> a started Hog. Depends on the cgroup fixtures
    so that every hog is stopped before any cgroup is removed."""
    hogs = []

    def start(cgroup, *args) -> Hog:
        h = Hog(hog_binary, args, cgroup)
        hogs.append(h)
        return h

    yield start
    errors = []
    for h in hogs:
        try:
            h.close()
        except Exception as e:  # noqa: BLE001 - stop the others too
            errors.append(e)
    if errors:
        raise errors[0]


@pytest.fixture
def page_cache_dir(tmp_path):
    """A directory on a disk file system, so that written files are page cache:
    tmp_path unless it is on tmpfs; then a directory under /var/tmp."""
    if filesystem_type(tmp_path) not in MEMORY_FILESYSTEMS:
        yield tmp_path
        return
    d = Path(tempfile.mkdtemp(prefix="mgtest-", dir="/var/tmp"))
    try:
        yield d
    finally:
        shutil.rmtree(d)


@pytest.fixture
def public_dir():
    """A fresh directory under /tmp that every user can reach, removed
    afterwards: for what a test runs or reads as another uid. tmp_path will
    not do (pytest keeps it under /tmp/pytest-of-root, mode 0700), nor will
    the checkout (it may lie under /root, mode 0700)."""
    d = Path(tempfile.mkdtemp(prefix="mgtest-public-", dir="/tmp"))
    try:
        d.chmod(0o755)
        assert reachable_by_everyone(d), f"{d} is not reachable by other users"
        yield d
    finally:
        shutil.rmtree(d)

"""The real daemon on the fake libnvidia-ml.so.1 (issue 20): two GPUs
appear as domains in status and /metrics, and so do the MIG instances of
one; a GPU lost at run time and a wedged driver are shown and survived; a
scripted ramp warns the registered job whose process holds the memory.  The
daemon finds the fake through LD_LIBRARY_PATH, as it would find the real
one.  Where there is a real driver, the daemon is also held against what
NVML and nvidia-smi say of the real GPUs (the ``nvml`` fixture)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.daemon import Daemon, ctl
from tests.kernel import Hog, wait_until

pytest.importorskip("pynvml", reason="nvidia-ml-py is installed by `make test`; run that")

A100 = "device 0 42949672960 943718400 {used} 12 5 {state} GPU-11111111-2222-3333-4444-555555555555 NVIDIA A100-SXM4-40GB"
L4 = "device 1 25769803776 0 1073741824 30 10 v1 GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee NVIDIA L4"
# Two MIG instances of the A100 (which the first puts in MIG mode), in slots 0 and 2.
MIG0 = ("mig 0 0 10200547328 0 {used} ok MIG-aaaaaaaa-1111-2222-3333-444444444444 "
        "NVIDIA A100-SXM4-40GB MIG 2g.10gb")
MIG2 = ("mig 0 2 5100273664 0 1073741824 v1 MIG-bbbbbbbb-1111-2222-3333-444444444444 "
        "NVIDIA A100-SXM4-40GB MIG 1g.5gb")
# How far NVML's used memory may move between its reads and the daemon's on
# a real GPU at rest (a process starting between them, with its ~500 MiB
# CUDA context, shows in NVML's reads before and after).
TOLERANCE = 64 * 2**20


@pytest.fixture
def gpus(tmp_path, fake_nvml, monkeypatch):
    state = tmp_path / "nvml-state"
    state.write_text(A100.format(used=2**30, state="ok") + "\n" + L4 + "\n")
    monkeypatch.setenv("LD_LIBRARY_PATH", str(fake_nvml))
    monkeypatch.setenv("FAKE_NVML_STATE", str(state))
    d = Daemon(str(tmp_path), "--no-probes", config="sampling:\n  interval: 250ms\nwsl:\n  read_timeout: 1s\n")
    yield d, state
    assert d.stop() == 0, d.log()


def gpu_domains(status: dict) -> dict:
    return {d["name"]: d for d in status["domains"] if d["kind"] == "gpu"}


def test_the_daemon_shows_each_gpu_and_survives_a_lost_one_and_a_wedged_driver(gpus):
    daemon, state = gpus
    status = daemon.wait_for_tick(lambda s: len(gpu_domains(s)) == 2 and s)
    domains = gpu_domains(status)
    assert domains["gpu:0"]["limit_bytes"] == 42949672960 - 943718400
    assert domains["gpu:1"]["used_bytes"] == 2**30
    (source,) = [s for s in status["sources"] if s["name"] == "gpu"]
    assert source["state"] == "active"
    assert status["facts"]["gpu"]["devices"]["gpu:0"]["uuid"] == "GPU-11111111-2222-3333-4444-555555555555"
    metrics = daemon.metrics()
    assert 'memguard_gpu_up{domain="gpu:0"} 1.0' in metrics
    assert 'memguard_domain_limit_bytes{domain="gpu:1",kind="gpu"} 2.5769803776e+10' in metrics

    state.write_text(A100.format(used=2**30, state="lost") + "\n" + L4 + "\n")
    wait_until(lambda: 'memguard_gpu_up{domain="gpu:0"} 0.0' in daemon.metrics(), timeout=10,
               what="the lost GPU in /metrics")
    status = daemon.status()
    assert status["facts"]["gpu"]["devices"]["gpu:0"]["error"] == "GPU is lost"
    assert set(gpu_domains(status)) == {"gpu:0", "gpu:1"}, "a lost GPU stays a domain (tracked) while it is lost"

    state.write_text(A100.format(used=2**30, state="hang") + "\n" + L4 + "\n")
    wait_until(lambda: "timed out" in (next(s for s in daemon.status()["sources"] if s["name"] == "gpu")["reason"]
                                       or ""), timeout=15, what="the wedged driver's read to time out")
    assert daemon.status()["domains"], "the daemon goes on answering"


def test_the_daemon_shows_mig_instances_in_status_profile_and_metrics(gpus):
    daemon, state = gpus
    state.write_text("\n".join((A100.format(used=6 * 2**30, state="ok"), MIG0.format(used=4 * 2**30), MIG2, L4,
                                "mig-process 0 0 4242 4294967296")) + "\n")
    status = daemon.wait_for_tick(lambda s: len(gpu_domains(s)) == 4 and s)
    domains = gpu_domains(status)
    assert (domains["gpu:0/mig:0"]["limit_bytes"], domains["gpu:0/mig:0"]["used_bytes"]) == (10200547328, 4 * 2**30)
    assert domains["gpu:0/mig:2"]["limit_bytes"] == 5100273664
    devices = status["facts"]["gpu"]["devices"]
    assert devices["gpu:0"]["mig_devices"] == ["gpu:0/mig:0", "gpu:0/mig:2"]
    assert (devices["gpu:0/mig:0"]["parent"], devices["gpu:0/mig:0"]["uuid"]) == \
        ("gpu:0", "MIG-aaaaaaaa-1111-2222-3333-444444444444")
    assert "gpu:0/mig:2" in ctl(daemon.socket, "status").stdout
    profile = json.loads(ctl(daemon.socket, "--json", "profile", "--past", "--duration", "10",
                             "--domain", "gpu:0/mig:0").stdout)
    assert list(profile["domains"]) == ["gpu:0/mig:0"]
    metrics = daemon.metrics()
    for line in ('memguard_domain_limit_bytes{domain="gpu:0/mig:0",kind="gpu"} 1.0200547328e+10',
                 'memguard_gpu_info{domain="gpu:0/mig:2",name="NVIDIA A100-SXM4-40GB MIG 1g.5gb",'
                 'uuid="MIG-bbbbbbbb-1111-2222-3333-444444444444"} 1.0',
                 'memguard_gpu_up{domain="gpu:0/mig:0"} 1.0',
                 'memguard_gpu_process_memory_bytes{domain="gpu:0/mig:0",job="",pid="4242"} 4.294967296e+09',
                 'memguard_gpu_utilization_ratio{domain="gpu:1"} 0.3'):
        assert line in metrics, line
    assert 'memguard_gpu_utilization_ratio{domain="gpu:0' not in metrics, "none in MIG mode"


def test_the_daemon_shows_every_device_nvml_lists_with_its_figures(nvml, tmp_path, monkeypatch):
    """Each GPU and MIG device NVML lists is a domain in status and
    /metrics, with NVML's figures and processes; and on the real driver,
    each GPU and MIG device nvidia-smi -L lists, by UUID."""
    for name, value in nvml.env.items():
        monkeypatch.setenv(name, value)
    before = nvml.devices()
    d = Daemon(str(tmp_path), "--no-probes", config="sampling:\n  interval: 250ms\n")
    try:
        try:
            status = d.wait_for_tick(lambda s: set(gpu_domains(s)) == set(before) and s)
        except AssertionError:
            (source,) = [s for s in d.status()["sources"] if s["name"] == "gpu"]
            raise AssertionError(f"NVML lists {sorted(before)}; the gpu source: {source}\n{d.log()}") from None
        metrics = d.metrics()
    finally:
        assert d.stop() == 0, d.log()
    after = nvml.devices()
    devices = status["facts"]["gpu"]["devices"]
    for name, domain in gpu_domains(status).items():
        was, now = before[name], after[name]
        assert domain["limit_bytes"] == was["total"] - (was["reserved"] or 0), name
        assert min(was["used"], now["used"]) - TOLERANCE <= domain["used_bytes"] \
            <= max(was["used"], now["used"]) + TOLERANCE, name
        assert devices[name]["uuid"] == was["uuid"] and f'memguard_gpu_up{{domain="{name}"}} 1.0' in metrics
        assert set(was["pids"]) & set(now["pids"]) <= {p["pid"] for p in devices[name]["processes"]}, \
            f"{name}: the processes NVML listed before and after"
    if nvml.kind == "real" and shutil.which("nvidia-smi"):
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60).stdout
        gpus = {f"gpu:{i}": uuid for i, uuid in re.findall(r"^GPU (\d+): .*\(UUID: (GPU-[^)]+)\)", listed, re.M)}
        assert gpus == {n: device["uuid"] for n, device in devices.items() if "parent" not in device}, listed
        assert set(re.findall(r"\(UUID: (MIG-[^)]+)\)", listed)) == \
            {device["uuid"] for device in devices.values() if "parent" in device}, listed


# A training process registered for SIGUSR1, which says so when it comes.
TRAINER = ("import signal, sys, time\n"
           "signal.signal(signal.SIGUSR1, lambda *a: print('warned', flush=True))\n"
           "print('ready', flush=True)\n"
           "time.sleep(120)\n")


def test_a_scripted_gpu_ramp_warns_the_job_whose_process_holds_it(tmp_path, fake_nvml, monkeypatch):
    state = tmp_path / "nvml-state"
    monkeypatch.setenv("LD_LIBRARY_PATH", str(fake_nvml))
    monkeypatch.setenv("FAKE_NVML_STATE", str(state))
    trainer = Hog(Path("/usr/bin/env"), ["MEMGUARD_JOB=train,warning=USR1", sys.executable, "-c", TRAINER])
    try:
        trainer.wait_line("ready", timeout=10)
        state.write_text(A100.format(used=2**30, state="ok") + "\n" + L4 + "\n" + f"process 0 {trainer.pid} {2**30}\n")
        rules = tmp_path / "gpu.yaml"
        rules.write_text("rules:\n  - name: gpu-full\n    match: {kind: gpu}\n    when: usage_ratio > 0.9\n")
        d = Daemon(str(tmp_path), "--no-probes", config=f"sampling:\n  interval: 250ms\nrules:\n  files: ['{rules}']\n")
        try:
            d.wait_for_tick(lambda s: any(j["id"] == f"train-{trainer.pid}" and j["gpu_bytes"] for j in s["jobs"]))
            for gib in (10, 20, 30, 38):     # of the 39.1 GiB allocations can reach
                state.write_text(A100.format(used=gib * 2**30, state="ok") + "\n" + L4 + "\n"
                                 + f"process 0 {trainer.pid} {gib * 2**30}\n")
                d.wait_for_tick(lambda s: gpu_domains(s)["gpu:0"]["used_bytes"] == gib * 2**30)
            trainer.wait_line("warned", timeout=10)
            status = d.status()
            (firing,) = status["rules"]["firing"]
            assert (firing["rule"], firing["domain"]) == ("gpu-full", "gpu:0")
        finally:
            assert d.stop() == 0, d.log()
    finally:
        trainer.close()


def test_a_cuda_oom_reported_by_a_job_is_an_incident_shown_like_a_kill(gpus):
    """memguard.client.report_gpu_oom with the allocator's figures (those
    torch.cuda.memory_stats gives; PyTorch itself is not needed here)."""
    import json

    from memguard import client
    from tests.e2e.daemon import ctl
    daemon, _ = gpus
    daemon.wait_for_tick(lambda s: len(gpu_domains(s)) == 2)
    stats = {"allocated_bytes": 30 * 2**30, "reserved_bytes": 38 * 2**30, "active_bytes": 30 * 2**30,
             "inactive_split_bytes": 2**30, "num_alloc_retries": 3, "num_ooms": 1}
    message = ("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 39.56 GiB of which "
               "1.12 GiB is free.")
    incident = client.report_gpu_oom(message, device=0, stats=stats, summary="|  PyTorch CUDA memory summary  |",
                                     socket_path=daemon.socket)
    assert incident is not None
    doc = json.loads(ctl(daemon.socket, "--json", "incident", "show", incident).stdout)
    assert (doc["kind"], doc["domain"], doc["allocator"]["fragmentation"]) == ("gpu_oom", "gpu:0", 0.2105)
    assert doc["gpu"]["uuid"] == "GPU-11111111-2222-3333-4444-555555555555"
    text = ctl(daemon.socket, "incident", "show", incident).stdout
    assert "CUDA out of memory in pid" in text and "on gpu:0 (NVIDIA A100-SXM4-40GB)" in text
    assert "21% of its reserved memory unused" in text and "Tried to allocate 2.00 GiB" in text
    listing = json.loads(ctl(daemon.socket, "--json", "incidents").stdout)["incidents"]
    assert [i["fields"]["kind"] for i in listing] == ["gpu_oom"]
    assert client.report_gpu_oom("x", socket_path=daemon.socket + ".none") is None, "no daemon: no error"


def test_a_jobs_allocator_figures_reach_status_and_metrics(gpus):
    """The test process registers as a job and sends its (scripted)
    allocator figures: status and /metrics show them."""
    from memguard import client
    daemon, _ = gpus
    with client.register("trainer", socket_path=daemon.socket) as reg:
        assert client.report_allocator(device=0, stats={"allocated_bytes": 6 * 2**30, "reserved_bytes": 8 * 2**30,
                                                        "num_alloc_retries": 2}, socket_path=daemon.socket)
        status = daemon.wait_for_tick(lambda s: any(j["allocator"] for j in s["jobs"]))
        (job,) = [j for j in status["jobs"] if j["id"] == reg.job]
        assert job["allocator"]["gpu:0"]["fragmentation"] == 0.25
        metrics = daemon.metrics()
        assert f'memguard_gpu_allocator_fragmentation_ratio{{domain="gpu:0",job="{reg.job}"}} 0.25' in metrics
        assert f'memguard_gpu_allocator_bytes{{domain="gpu:0",job="{reg.job}",kind="reserved"}}' in metrics
    assert not client.report_allocator(device=0, stats={"allocated_bytes": "lots"}, socket_path=daemon.socket), \
        "refused: not numbers"

"""A CUDA OOM reported with the allocator's memory snapshot (issue 20): the
incident says which code holds the memory and whether the failure was
fragmentation.  No GPU here: the snapshot is built in the structure
torch.cuda.memory._snapshot()'s docstring gives (PyTorch 2.13), not
captured; the summary is the same code a real one goes through."""

from __future__ import annotations

import json
import socket

import pytest

from memguard import client
from memguard.api import protocol
from tests.e2e.daemon import Daemon, ctl

MiB = 2**20
TORCH = "/usr/lib/python3/dist-packages/torch/nn/modules/linear.py"


def frames(*where):
    return [{"filename": f, "line": n, "name": fn} for f, n, fn in where]


# One 2 GiB segment: a 1.5 GiB activation allocated in forward(), 128 MiB of
# weights from build(), and two free 192 MiB pieces between them; a later
# 320 MiB request found no block that large.
SNAPSHOT = {
    "segments": [{
        "address": 0x7f0000000000, "total_size": 2048 * MiB, "stream": 0, "segment_type": "large",
        "allocated_size": 1664 * MiB, "active_size": 1664 * MiB,
        "blocks": [
            {"size": 1536 * MiB, "requested_size": 1536 * MiB, "address": 0x7f0000000000,
             "state": "active_allocated",
             "frames": frames((TORCH, 125, "forward"), ("/home/ana/train.py", 42, "forward"))},
            {"size": 192 * MiB, "requested_size": 0, "address": 0x7f0060000000, "state": "inactive", "frames": []},
            {"size": 128 * MiB, "requested_size": 128 * MiB, "address": 0x7f006c000000,
             "state": "active_allocated", "frames": frames(("/home/ana/train.py", 17, "build"))},
            {"size": 192 * MiB, "requested_size": 0, "address": 0x7f0074000000, "state": "inactive", "frames": []},
        ]}],
    "device_traces": [[{"action": "segment_alloc", "addr": 0x7f0000000000, "size": 2048 * MiB, "frames": []},
                       {"action": "oom", "size": 320 * MiB, "frames": []}]],
}


def test_the_summary_names_the_code_and_the_fragmentation():
    s = client.snapshot_summary(SNAPSHOT)
    assert (s["segments"], s["reserved_bytes"], s["allocated_bytes"]) == (1, 2048 * MiB, 1664 * MiB)
    assert (s["free_bytes"], s["largest_free_bytes"], s["failed_bytes"]) == (384 * MiB, 192 * MiB, 320 * MiB)
    assert s["sites"] == [{"site": "/home/ana/train.py:42 forward", "bytes": 1536 * MiB, "blocks": 1},
                          {"site": "/home/ana/train.py:17 build", "bytes": 128 * MiB, "blocks": 1}]
    bare = client.snapshot_summary({"segments": [{"total_size": MiB, "allocated_size": MiB, "blocks": [
        {"size": MiB, "state": "active_allocated", "frames": []}]}]})
    assert bare["failed_bytes"] is None and bare["sites"][0]["site"].startswith("unknown (no history recorded")


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(str(tmp_path), "--no-probes", config="sampling:\n  interval: 250ms\n")
    yield d
    assert d.stop() == 0, d.log()


def test_a_cuda_oom_with_its_snapshot_is_explained(daemon, tmp_path):
    daemon.wait_for_tick(lambda s: s)
    incident = client.report_gpu_oom("CUDA out of memory. Tried to allocate 320.00 MiB.", device=0,
                                     stats={"allocated_bytes": 1664 * MiB, "reserved_bytes": 2048 * MiB},
                                     snapshot=SNAPSHOT, socket_path=daemon.socket)
    doc = json.loads(ctl(daemon.socket, "--json", "incident", "show", incident).stdout)
    assert doc["snapshot"]["sites"][0]["site"] == "/home/ana/train.py:42 forward"
    assert doc["headline"].endswith("320.0MiB failed while the cache held 384.0MiB free, none of it in one block "
                                    "(largest 192.0MiB): fragmentation."), doc["headline"]
    text = ctl(daemon.socket, "incident", "show", incident).stdout
    assert "Its memory snapshot: 1 segments, 1.6GiB allocated of 2.0GiB reserved" in text, text
    assert "1.5GiB in 1 blocks: /home/ana/train.py:42 forward" in text, text

    # Without CUDA no snapshot can be taken: the report still goes, without one.
    incident = client.report_gpu_oom("CUDA out of memory.", device=0, stats={}, snapshot=str(tmp_path / "s.pickle"),
                                      socket_path=daemon.socket)
    doc = json.loads(ctl(daemon.socket, "--json", "incident", "show", incident).stdout)
    assert doc["snapshot"] is None and not (tmp_path / "s.pickle").exists()


@pytest.mark.parametrize("snapshot", [
    {"segments": -1}, {"sites": [{"site": "x" * 513, "bytes": 1, "blocks": 1}]}, {"path": "relative.pickle"},
    {"whatever": 1}, [1, 2]])
def test_a_malformed_snapshot_is_refused_naming_the_field(daemon, snapshot):
    daemon.wait_for_tick(lambda s: s)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(daemon.socket)
        sock.sendall(protocol.request("gpu_oom", {"device": 0, "message": "x", "stats": {}, "snapshot": snapshot}))
        answer = json.loads(sock.makefile().readline())
    assert not answer["ok"] and "params.snapshot" in answer["error"]["message"], answer

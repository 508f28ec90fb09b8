"""memguard.client against the real daemon: a registration ends cleanly."""

from __future__ import annotations

import threading
import time

import pytest

from memguard import client
from tests.e2e.daemon import Daemon


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(str(tmp_path), "--no-probes")
    yield d
    assert d.stop() == 0, d.log()


def test_close_waits_for_the_registrations_threads(daemon, monkeypatch):
    # A thread still in recv() when the interpreter finalizes is ended by
    # pthread_exit, which aborts a process that loaded PyTorch
    # (pytorch/pytorch#38228): close() must leave none behind.
    monkeypatch.setenv("MEMGUARD_SOCKET", daemon.socket)
    reporting = threading.Event()

    def slow_report(**kw):      # a report under way when the program closes
        reporting.set()
        time.sleep(0.5)
        return True
    monkeypatch.setattr(client, "report_allocator", slow_report)
    reg = client.register("closing", on_warning=lambda e: None, gpu_stats_every=0.01)
    assert reg.active and reporting.wait(5)
    assert {t.name for t in threading.enumerate()} >= {"memguard-client", "memguard-client-gpu"}
    reg.close()
    assert not [t.name for t in threading.enumerate() if t.name.startswith("memguard-client")]

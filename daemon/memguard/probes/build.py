"""The probes the daemon runs: the list of them is here, in one explicit place.

Kept out of the package's ``__init__`` so that the BPF child
(``python -m memguard.probes.bpf_child``) imports nothing but the standard
library and ``bcc``.
"""

from __future__ import annotations

import sys

from ..config import Config
from ..roots import Roots
from .base import Probe
from .bpf import BpfProbe
from .kmsg import KmsgProbe
from .memcg import MemcgProbe
from .procevents import ProcEventsProbe
from .tracefs import TracefsProbe


def build_probes(config: Config, roots: Roots, kmsg_resume_seq: int | None = None) -> list[Probe]:
    """The probes the config turns on, fastest first (the first to see a kill
    opens its incident)."""
    p = config.probes
    probes: list[Probe] = []
    if p.bpf:
        probes.append(BpfProbe(python=p.bpf_python or sys.executable))
    if p.tracefs:
        probes.append(TracefsProbe(tracing=roots.sys_path("kernel", "tracing"), instance=p.tracefs_instance,
                                   mount=p.mount_tracefs, proc_cgroups=roots.proc_path("cgroups")))
    if p.kmsg:
        probes.append(KmsgProbe(path=f"{roots.dev}/kmsg", resume_seq=kmsg_resume_seq))
    if p.memcg_events:
        probes.append(MemcgProbe(fast_above=config.sampling.fast_above))
    if p.proc_events:
        probes.append(ProcEventsProbe(roots))
    return probes

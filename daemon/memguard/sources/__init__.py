"""Polled sources.  The list of them is here, in one explicit place."""

from __future__ import annotations

from ..config import Config
from ..roots import Roots
from . import wsl
from .base import Reading, Source, Unavailable
from .cgroups import CgroupSource
from .gpu import GpuSource
from .meminfo import HostSource
from .processes import ProcessSource
from .psi import PsiSource

__all__ = ["Reading", "Source", "Unavailable", "build_sources", "host_domain"]


def host_domain(roots: Roots) -> str:
    """``wsl`` inside a WSL2 VM (host and VM are one pool of memory), else ``host``."""
    return "wsl" if wsl.detect(roots) else "host"


def build_sources(config: Config, roots: Roots) -> tuple[list[Source], list[Source]]:
    """(sources read on every tick on the loop, sources run off the loop at
    their own cadence because a read can block)."""
    host = host_domain(roots)
    cg = config.cgroups
    tick = [
        HostSource(roots, host),
        PsiSource(roots, host),
        CgroupSource(roots, host_domain=host, include=cg.include, exclude=cg.exclude,
                     max_tracked=cg.max_tracked,
                     discovery_interval=config.sampling.discovery_interval),
    ]
    slow = [
        ProcessSource(roots, top=config.processes.top),
        wsl.WslSource(roots, config.wsl.wslconfig),
    ]
    if config.gpu.enabled and roots == Roots():
        slow.append(GpuSource())      # NVML reads this machine's driver: not for a fixture tree's roots
    return tick, slow

"""Pressure stall information: /proc/pressure/memory and per-cgroup memory.pressure.

Kernel docs: Documentation/accounting/psi.rst.  Since 4.20, when built with
CONFIG_PSI and not disabled (``psi=0``, or CONFIG_PSI_DEFAULT_DISABLED without
``psi=1``).  The file::

    some avg10=0.00 avg60=0.00 avg300=0.00 total=0
    full avg10=0.00 avg60=0.00 avg300=0.00 total=0
"""

from __future__ import annotations

import errno

from ..clock import Instant
from ..model import PSI, Pressure
from ..roots import Roots, read_text
from .base import Reading, Unavailable


def parse_psi(text: str) -> PSI:
    """Parse a PSI file.  Raises ValueError naming what is missing or malformed."""
    lines: dict[str, Pressure] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        kind, _, rest = line.partition(" ")
        if kind not in ("some", "full"):
            raise ValueError(f"unexpected PSI line {line!r}")
        fields = dict(item.split("=", 1) for item in rest.split())
        try:
            lines[kind] = Pressure(
                float(fields["avg10"]), float(fields["avg60"]),
                float(fields["avg300"]), int(fields["total"]),
            )
        except KeyError as e:
            raise ValueError(f"PSI line {kind!r} lacks field {e.args[0]}") from None
    if "some" not in lines:
        raise ValueError("PSI file lacks the 'some' line")
    return PSI(lines["some"], lines.get("full"))


class PsiSource:
    """Host-wide memory pressure, merged into the host (or wsl) domain."""

    name = "psi"

    def __init__(self, roots: Roots, host_domain: str = "host") -> None:
        self.path = roots.proc_path("pressure", "memory")
        self.host_domain = host_domain

    def collect(self, now: Instant) -> Reading:
        try:
            text = read_text(self.path)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.EOPNOTSUPP):
                raise Unavailable(
                    f"{self.path} is missing: the kernel lacks CONFIG_PSI or PSI is off; "
                    "boot with psi=1 (Linux >= 4.20). The default WSL2 kernel has no PSI."
                ) from None
            raise
        return Reading(pressure={self.host_domain: parse_psi(text)})

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


# The lines and fields we read; a kernel may add others (see parse_psi).
LINES = ("some", "full")
FIELDS = ("avg10", "avg60", "avg300", "total")


def parse_psi(text: str, source: str = "PSI file") -> PSI:
    """Parse a PSI file; *source* (its path) names it in errors.

    Returns the 'some' and 'full' lines' figures; ``full`` is None when there
    is no 'full' line (/proc/pressure/cpu before 5.13 had none). Other lines,
    and fields other than avg10/avg60/avg300/total, are skipped: a later
    kernel may add them, and prometheus/procfs's parsePSIStats skips them
    too. Raises ValueError naming *source*, the line and the field when
    'some' is missing, or a 'some'/'full' line lacks a field or holds a
    value that is not a number or not ``key=value``.
    """
    lines: dict[str, Pressure] = {}
    for line in text.splitlines():
        kind, _, rest = line.strip().partition(" ")
        if kind in LINES:
            lines[kind] = _pressure(kind, rest, source)
    if "some" not in lines:
        raise ValueError(f"{source}: the 'some' line is missing")
    return PSI(lines["some"], lines.get("full"))


def _pressure(kind: str, rest: str, source: str) -> Pressure:
    fields = {}
    for item in rest.split():
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"{source}: the {kind!r} line has {item!r} where key=value belongs")
        fields[key] = value
    values: list[float | int] = []
    for name in FIELDS:
        if name not in fields:
            raise ValueError(f"{source}: the {kind!r} line lacks field {name}")
        try:
            values.append(int(fields[name]) if name == "total" else float(fields[name]))
        except ValueError:
            raise ValueError(f"{source}: the {kind!r} line's {name}={fields[name]!r} "
                             "is not a number") from None
    return Pressure(*values)


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
        return Reading(pressure={self.host_domain: parse_psi(text, self.path)})

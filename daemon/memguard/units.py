"""Durations and sizes as people write them: ``250ms``, ``2s``, ``5m``, ``512MiB``.

Used by the config loader and (later) rule literals, so a value means the same
everywhere.  Binary (KiB, MiB, GiB) and decimal (kB, MB, GB) suffixes are both
accepted and mean what they say; a bare number of bytes is allowed.
"""

from __future__ import annotations

import re

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "t": 1000**4, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}
_NUMBER_UNIT = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*")


def parse_duration(text: str | int | float) -> float:
    """Seconds in *text* ("250ms", "2s", "1.5m", or a bare number of seconds).

    Raises ValueError naming what was expected.
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value, unit = float(text), "s"
    else:
        m = _NUMBER_UNIT.fullmatch(str(text))
        if not m or m.group(2) not in _DURATION_UNITS and m.group(2) != "":
            raise ValueError(f"expected a duration such as 250ms, 2s, 5m, 1h or 90d, got {text!r}")
        value, unit = float(m.group(1)), m.group(2) or "s"
    if value < 0:
        raise ValueError(f"a duration cannot be negative, got {text!r}")
    return value * _DURATION_UNITS[unit]


def parse_size(text: str | int) -> int:
    """Bytes in *text* ("512MiB", "8GB", "4096").  Raises ValueError."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise ValueError(f"a size cannot be negative, got {text}")
        return text
    m = _NUMBER_UNIT.fullmatch(str(text))
    unit = m.group(2).lower() if m else None
    if not m or unit not in _SIZE_UNITS:
        raise ValueError(f"expected a size such as 512MiB, 8GB or 4096, got {text!r}")
    return int(float(m.group(1)) * _SIZE_UNITS[unit])


def format_bytes(n: int | float | None) -> str:
    """Human form for tables: 1.5GiB, 512MiB, 12KiB, '-' for None."""
    if n is None:
        return "-"
    for unit, scale in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if abs(n) >= scale:
            return f"{n / scale:.1f}{unit}"
    return f"{int(n)}B"

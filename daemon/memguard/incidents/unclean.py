"""The incident of a host that stopped while memory was running out.

A WSL2 VM killed from the Windows side, or a host frozen by thrashing and
reset, leaves no kernel OOM line: the only trace is that memguardd's last
heartbeat (written every few seconds with the boot id and the domains near
their limit) was not marked clean, and the boot id has changed since.
"""

from __future__ import annotations

from ..clock import Instant
from .build import INCIDENT_SCHEMA_VERSION, incident_id, rfc3339


def unclean_stop_incident(beat: dict | None, boot_id: str | None, now: Instant) -> dict | None:
    """An incident document when *beat* (the last heartbeat) says the previous
    boot ended without a clean stop while a domain was near its limit; None
    otherwise (a clean stop, the same boot, or nothing near a limit)."""
    if not beat or beat.get("clean") or not beat.get("near_limit"):
        return None
    if boot_id is None or beat.get("boot_id") in (None, boot_id):
        return None
    wall = float(beat.get("wall", now.wall))
    return {
        "schema_version": INCIDENT_SCHEMA_VERSION,
        "id": incident_id(wall, None, "unclean"),
        "kind": "unclean_stop",
        "state": "sealed",
        "time": rfc3339(wall),
        "detected": rfc3339(now.wall),
        "found_late": True,
        "previous_boot_id": beat.get("boot_id"),
        "near_limit": beat["near_limit"],
        "domain": beat["near_limit"][0]["domain"],
        "explanation": (
            "The machine (or WSL VM) stopped without memguardd shutting down cleanly, "
            "while these domains were near their memory limit. No kernel OOM report was "
            "left: a WSL2 VM that runs out of memory can be killed from the Windows side, "
            "and a host thrashing without swap can hang until it is reset."),
        "victims": [], "probes": [], "missing": ["kernel_report"],
    }

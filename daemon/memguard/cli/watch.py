"""memguardctl watch: what memguardd pushes (api/watch.py), one line each."""

from __future__ import annotations

import datetime

from .render import one_line


def render_event(event: dict) -> str:
    """One line for a person: when, what, where, and what it means."""
    when = datetime.datetime.fromtimestamp(event.get("time", 0)).strftime("%H:%M:%S")
    where = event.get("domain") or "?"
    if event.get("job"):
        where += f" job {event['job']}"
    kind = event.get("type")
    if kind == "rule":
        what = event.get("event") or "?"
        tail = []
        if event.get("tto_seconds") is not None and what != "cleared":
            tail.append(f"out of memory in {event['tto_seconds']:.0f}s")
        if event.get("usage_ratio") is not None:
            tail.append(f"{100 * event['usage_ratio']:.0f}% of its limit")
        return f"{when} {what:<8} {where}: {event.get('rule')}" + (f", {', '.join(tail)}" if tail else "")
    if kind == "action":
        pids = ", ".join(f"pid {t['pid']} {t.get('result', '')}".strip() for t in event.get("targets", ()) if "pid" in t)
        dry = " (dry run)" if event.get("dry_run") else ""
        return (f"{when} action   {where}: {event.get('kind')} {event.get('result')}{dry} (rule {event.get('rule')})"
                + (f": {pids}" if pids else ""))
    if kind == "incident":
        return f"{when} incident {event.get('id')}: {one_line(event.get('headline') or event.get('kind') or '')}"
    return f"{when} {one_line(str(event))}"

"""memguardctl top: a live full-screen view of what memguardd sees.

It samples nothing itself: every refresh is one ``status`` request (and,
every few, an ``incidents`` one), so the view costs the host what
``memguardctl status`` costs.  Drawn with curses (the standard library's
binding of ncurses): it runs over SSH and in any terminal terminfo knows,
in 80x24 as well as larger, with no dependency to install; rich draws
static tables well but has no input handling, and textual's application
framework is more than a table and a few keys need.

The frame is built by :func:`frame`, a pure function of the documents and
the view's state, so ``--once`` prints the same frame without curses and
the tests read it as text.

Keys: ``s`` sorts by the next column (time to OOM, use, growth, name),
``/`` filters domains by a substring (Enter applies, Esc clears), the
arrows choose an incident and Enter opens it (Esc or ``q`` back), ``q``
quits.
"""

from __future__ import annotations

import dataclasses
import time

from ..units import format_bytes
from .render import _duration, one_line

SORTS = ("tto", "use", "growth", "name")
BAR = 10


@dataclasses.dataclass
class View:
    sort: str = "tto"
    filter: str = ""
    selected: int = 0           # index into the incidents shown
    editing: str | None = None  # the filter being typed


def _key(sort: str):
    def tto(d):
        t = (d.get("prediction") or {}).get("tto_seconds")
        return (t is None, t if t is not None else 0, d["name"])
    return {"tto": tto,
            "use": lambda d: (-(d.get("usage_ratio") or 0), d["name"]),
            "growth": lambda d: (-((d.get("prediction") or {}).get("rate_bytes_per_second") or 0), d["name"]),
            "name": lambda d: d["name"]}[sort]


def _bar(ratio: float | None, width: int = BAR) -> str:
    if ratio is None:
        return "[" + " " * width + "]"
    filled = min(width, max(0, round(ratio * width)))
    return "[" + "#" * filled + "." * (width - filled) + "]"


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[:max(0, width - 1)] + "~"


def frame(status: dict, incidents: list[dict], view: View, width: int = 80, height: int = 24) -> list[str]:
    """The screen as lines of at most *width* characters, at most *height* of them."""
    width = max(width, 40)
    name_w = max(12, width - 57)      # what the other columns leave
    health = "healthy" if status.get("healthy", True) else "DEGRADED: " + "; ".join(status.get("degraded", []))
    out = [_fit(f"memguardd {status.get('version', '?')}  up {_duration(status.get('uptime_seconds', 0))}  "
                f"every {status.get('interval_seconds', 0):g}s  {health}", width),
           _fit(f"sort: {view.sort} (s)  filter: {view.filter or '-'} (/)  incidents: arrows, Enter  quit: q", width),
           ""]
    if view.editing is not None:
        out[1] = _fit(f"filter domains: {view.editing}_   (Enter applies, Esc clears)", width)
    domains = [d for d in status.get("domains", []) if view.filter.lower() in d["name"].lower()]
    domains.sort(key=_key(view.sort))
    out.append(_fit(f"{'DOMAIN':<{name_w}} {'USE':<{BAR + 2}} {'%':>4} {'LIMIT':>9} {'TTO':>7} {'GROWTH':>9} RISK", width))
    firing = {(f["domain"]) for f in status.get("rules", {}).get("firing", [])}
    for d in domains:
        p = d.get("prediction") or {}
        tto = p.get("tto_seconds")
        rate = p.get("rate_bytes_per_second") or 0
        ratio = d.get("usage_ratio")
        mark = "!" if d["name"] in firing else " "
        out.append(_fit(f"{_fit(one_line(d['name']), name_w - 1):<{name_w - 1}}{mark} {_bar(ratio)} "
                        f"{'-' if ratio is None else f'{100 * ratio:.0f}':>4} "
                        f"{format_bytes(d.get('limit_bytes')) if d.get('limit_bytes') else '-':>9} "
                        f"{_duration(tto) if tto is not None else '-':>7} "
                        f"{(format_bytes(rate) + '/s') if rate > 0 else '-':>9} {d.get('risk', '-')}", width))
    jobs = status.get("jobs", [])
    if jobs:
        out += ["", _fit(f"{'JOB':<18} {'DOMAIN':<18} {'RSS':>9}  LAST ACTION", width)]
        for j in jobs:
            last = j.get("last_action")
            act = f"{last['kind']} {last['result']} {_duration(last['seconds_ago'])} ago" if last else "-"
            if j.get("frozen"):
                act = f"{len(j['frozen'])} frozen, " + act
            out.append(_fit(f"{_fit(one_line(j['id']), 18):<18} {_fit(one_line(j.get('domain') or '-'), 18):<18} "
                            f"{format_bytes(j.get('rss_bytes')) if j.get('rss_bytes') is not None else '-':>9}  {act}",
                            width))
    rules = status.get("rules", {}).get("firing", [])
    if rules:
        out += ["", "RULES FIRING"]
        out += [_fit(f"  {r['severity']:<8} {r['rule']} on {one_line(r['domain'])}"
                     + (f" (job {r['job']})" if r.get("job") else "")
                     + f" for {_duration(r['since_seconds'])}", width) for r in rules]
    out += ["", "LATEST INCIDENTS" if incidents else "no incidents"]
    for i, inc in enumerate(incidents):
        f = inc["fields"]
        pointer = ">" if i == view.selected else " "
        out.append(_fit(f"{pointer} {f.get('time', '-')[:19]} {f.get('kind', '-'):<14} "
                        f"{one_line(f.get('domain') or '-')}  {one_line(f.get('victim') or '')}", width))
    if len(out) > height:
        out = out[:height - 1] + [_fit(f"... {len(out) - height + 1} more lines (a taller terminal shows them)", width)]
    return out


def run(fetch_status, fetch_incidents, fetch_incident, interval: float = 1.0, sort: str = "tto") -> int:
    """The live view until q; *fetch_** ask the daemon (cli/main.py)."""
    import curses

    def loop(screen) -> int:
        curses.curs_set(0)
        screen.timeout(int(interval * 1000))
        view = View(sort=sort)
        incidents, listed_at, opened = [], 0.0, None
        while True:
            if time.monotonic() - listed_at > 5 * interval:
                incidents, listed_at = fetch_incidents()[:5], time.monotonic()
            height, width = screen.getmaxyx()
            lines = (opened[:height] if opened is not None
                     else frame(fetch_status(), incidents, view, width - 1, height))
            screen.erase()
            for y, line in enumerate(lines[:height]):
                screen.addnstr(y, 0, line, width - 1)
            screen.refresh()
            key = screen.getch()
            if key == -1:
                continue
            if opened is not None:
                if key in (27, ord("q")):
                    opened = None
                continue
            if view.editing is not None:
                if key in (10, 13, curses.KEY_ENTER):
                    view.filter, view.editing = view.editing, None
                elif key == 27:
                    view.filter, view.editing = "", None
                elif key in (curses.KEY_BACKSPACE, 127, 8):
                    view.editing = view.editing[:-1]
                elif 32 <= key < 127:
                    view.editing += chr(key)
                continue
            if key == ord("q"):
                return 0
            if key == ord("s"):
                view.sort = SORTS[(SORTS.index(view.sort) + 1) % len(SORTS)]
            elif key == ord("/"):
                view.editing = view.filter
            elif key == curses.KEY_DOWN:
                view.selected = min(view.selected + 1, max(0, len(incidents) - 1))
            elif key == curses.KEY_UP:
                view.selected = max(view.selected - 1, 0)
            elif key in (10, 13, curses.KEY_ENTER) and incidents:
                opened = fetch_incident(incidents[view.selected]["id"]).splitlines()
    return curses.wrapper(loop)
